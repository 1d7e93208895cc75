//! The housekeeper thread: keeps day partitions ahead of the clock, indexes closed days,
//! prunes old COPY markers and writes the exporters table and the v9/IPFIX templates learned
//! every `--exporter-interval`, while the database is up.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::db::{self, Schema};
use super::exporters::flush_exporters;
use super::health::Health;
use super::templates::{self, TemplateChange};
use crate::decode::netflow::Shared as NetflowShared;
use crate::obs::exporters::ExporterTable;

/// Keeps partitions ahead of the clock and the exporters table current.
pub fn run(
    conninfo: String,
    schema: Schema,
    table: Arc<Mutex<ExporterTable>>,
    interval: Duration,
    stop: Arc<AtomicBool>,
    health: Arc<Health>,
    netflow: Arc<NetflowShared>,
) {
    let mut client: Option<postgres::Client> = None;
    // First partition upkeep a minute after start (not on the start-up path), then hourly.
    let mut next_partitions = Instant::now() + Duration::from_secs(60);
    let mut last_flush = Instant::now();
    while !stop.load(Relaxed) {
        thread::sleep(Duration::from_millis(100));
        if last_flush.elapsed() < interval {
            continue;
        }
        last_flush = Instant::now();
        // While the database is down the replayer probes it and says so; the exporter
        // deltas wait in memory (and go beside the spool at stop).
        if !health.is_up() {
            continue;
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = db::connect(&conninfo)
                .map_err(|e| tracing::warn!("housekeeper: {e:#}"))
                .ok();
        }
        let Some(c) = client.as_mut() else { continue };
        if let Err(e) = flush_exporters(c, &schema, &table) {
            tracing::warn!("updating the exporters table: {e:#}");
        }
        write_templates(c, &schema, &netflow);
        if Instant::now() >= next_partitions {
            next_partitions = Instant::now() + Duration::from_secs(3600);
            if let Err(e) = db::ensure_partitions(c, &schema, 3) {
                tracing::warn!("creating flow partitions: {e:#}");
            }
            if let Err(e) = c.execute(
                &schema.render("DELETE FROM {schema}.nfpg_copies WHERE committed_at < now() - interval '1 day'"),
                &[],
            ) {
                tracing::warn!("pruning COPY markers: {e:#}");
            }
            match db::index_closed_partitions(c, &schema) {
                Ok(0) => {}
                Ok(n) => tracing::info!("indexed {n} closed day partition(s) for address lookups"),
                Err(e) => tracing::warn!("indexing closed flow partitions: {e:#}"),
            }
        }
    }
}

/// Writes the template changes the shards queued (requeued when the write fails).
pub fn write_templates(c: &mut postgres::Client, schema: &Schema, netflow: &NetflowShared) {
    let changes = netflow.take_changes();
    if changes.is_empty() {
        return;
    }
    let rows: Vec<TemplateChange> = changes
        .iter()
        .map(|ch| TemplateChange {
            exporter: ch.key.exporter,
            domain: ch.key.domain,
            template_id: ch.key.id,
            version: ch.version,
            definition: ch.definition.clone(),
        })
        .collect();
    if let Err(e) = templates::write(c, schema, &rows) {
        tracing::warn!("storing v9/IPFIX templates: {e:#}");
        netflow.requeue(changes);
    }
}
