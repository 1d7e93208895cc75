//! The housekeeper thread: keeps day partitions ahead of the clock, indexes closed days,
//! drops day partitions past their retention, keeps the hourly aggregates current, prunes old
//! COPY markers and malformed-datagram samples, evicts idle exporters from
//! memory once their figures are written, and writes the exporters table and the v9/IPFIX templates learned
//! every `--exporter-interval`, while the database is up.
//!
//! With several database endpoints there is one housekeeper per endpoint: each keeps its own
//! database's partitions, aggregates and retention; only the first endpoint's (`stats`)
//! writes the exporter statistics and templates. Collectors sharing one database take turns
//! at partition upkeep ([`db::with_upkeep_lock`]).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::aggregates;
use super::db::{self, Schema};
use super::exporters::flush_exporters;
use super::health::Health;
use super::templates::{self, TemplateChange};
use crate::decode::netflow::Shared as NetflowShared;
use crate::obs::exporters::ExporterTable;

/// What the housekeeper keeps and how often.
pub struct Housekeeper {
    pub conninfo: String,
    pub schema: Schema,
    /// This collector's instance name (stored with exporter rows, templates, aggregates).
    pub instance: String,
    /// Whether this housekeeper writes the exporter statistics and templates (the first
    /// endpoint's does; the others keep only their database's upkeep).
    pub stats: bool,
    pub table: Arc<Mutex<ExporterTable>>,
    /// Between updates of the exporters table.
    pub interval: Duration,
    /// Most exporter rows written per update.
    pub exporter_rows: usize,
    /// Silence after which an exporter leaves the in-memory table.
    pub exporter_idle: Duration,
    /// Days malformed-datagram samples are kept.
    pub malformed_keep_days: u32,
    /// Days of flows and of aggregates kept (0: forever).
    pub retention_days: u32,
    pub aggregate_retention_days: u32,
    /// Day partitions made ahead of the clock.
    pub partitions_ahead: u32,
    /// Between updates of the hourly aggregates (zero: off), and how long after its arrival a
    /// flow is aggregated.
    pub aggregate_interval: Duration,
    pub aggregate_lag: Duration,
    pub stop: Arc<AtomicBool>,
    pub health: Arc<Health>,
    pub netflow: Arc<NetflowShared>,
}

/// Malformed samples deleted at most per statement (a short transaction each).
const MALFORMED_DELETE_BATCH: i64 = 10_000;

impl Housekeeper {
    /// Keeps partitions ahead of the clock and the exporters table current, until `stop`.
    pub fn run(self) {
        let mut client: Option<postgres::Client> = None;
        // First partition upkeep and retention ten seconds after start (not on the start-up
        // path), then hourly.
        let mut next_partitions = Instant::now() + Duration::from_secs(10);
        let mut last_flush = Instant::now();
        let mut next_aggregate = Instant::now() + self.aggregate_interval;
        while !self.stop.load(Relaxed) {
            thread::sleep(Duration::from_millis(100));
            if last_flush.elapsed() < self.interval {
                continue;
            }
            last_flush = Instant::now();
            // While the database is down the replayer probes it and says so; the exporter
            // deltas wait in memory (and go beside the spool at stop).
            if !self.health.is_up() {
                continue;
            }
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = db::connect(&self.conninfo)
                    .map_err(|e| tracing::warn!("housekeeper: {e:#}"))
                    .ok();
            }
            let Some(c) = client.as_mut() else { continue };
            if self.stats {
                self.write_stats(c);
            }
            if !self.aggregate_interval.is_zero() && Instant::now() >= next_aggregate {
                next_aggregate = Instant::now() + self.aggregate_interval;
                let span = Duration::from_secs(3600);
                match aggregates::update(c, &self.schema, self.aggregate_lag, span, &self.instance)
                {
                    Ok(n) => tracing::debug!("{n} flow(s) added to the hourly aggregates"),
                    Err(e) => tracing::warn!("updating the hourly aggregates: {e:#}"),
                }
            }
            if Instant::now() >= next_partitions {
                next_partitions = Instant::now() + Duration::from_secs(3600);
                self.hourly(c);
            }
        }
    }

    /// The exporters table and the templates learned since the last call.
    fn write_stats(&self, c: &mut postgres::Client) {
        match flush_exporters(
            c,
            &self.schema,
            &self.table,
            self.exporter_rows,
            &self.instance,
        ) {
            Ok(_) => {
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64);
                let idle = self.exporter_idle.as_micros() as i64;
                let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
                let n = t.evict(now_us, idle);
                if n > 0 {
                    tracing::debug!("{n} idle exporter(s) left the in-memory table");
                }
            }
            Err(e) => tracing::warn!("updating the exporters table: {e:#}"),
        }
        write_templates(c, &self.schema, &self.netflow, &self.instance);
    }

    /// Partitions ahead, old COPY markers and malformed samples out, closed days indexed.
    fn hourly(&self, c: &mut postgres::Client) {
        let schema = &self.schema;
        if let Err(e) = db::ensure_partitions(c, schema, self.partitions_ahead as i32) {
            tracing::warn!("creating flow partitions: {e:#}");
        }
        if let Err(e) = aggregates::ensure_partitions(c, schema, self.partitions_ahead) {
            tracing::warn!("creating aggregate partitions: {e:#}");
        }
        match aggregates::apply_retention(
            c,
            schema,
            self.retention_days,
            self.aggregate_retention_days,
        ) {
            Ok((0, 0)) => {}
            Ok((f, a)) => {
                tracing::info!("retention: dropped {f} flow and {a} aggregate day partition(s)")
            }
            Err(e) => tracing::warn!("applying retention: {e:#}"),
        }
        if let Err(e) = c.execute(
            &schema.render(
                "DELETE FROM {schema}.nfpg_copies WHERE committed_at < now() - interval '1 day'",
            ),
            &[],
        ) {
            tracing::warn!("pruning COPY markers: {e:#}");
        }
        if let Err(e) = c.execute(
            &schema.render(
                "DELETE FROM {schema}.nfpg_exporter_flushes WHERE committed_at < now() - interval '1 day'",
            ),
            &[],
        ) {
            tracing::warn!("pruning exporter update markers: {e:#}");
        }
        match prune_malformed(c, schema, self.malformed_keep_days) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!("removed {n} malformed-datagram sample(s) past their keep time")
            }
            Err(e) => tracing::warn!("pruning malformed-datagram samples: {e:#}"),
        }
        match db::index_closed_partitions(c, schema) {
            Ok(0) => {}
            Ok(n) => tracing::info!("indexed {n} closed day partition(s) for address lookups"),
            Err(e) => tracing::warn!("indexing closed flow partitions: {e:#}"),
        }
    }
}

/// Deletes malformed-datagram samples older than `keep_days`, in short batches. Returns how
/// many.
pub fn prune_malformed(
    c: &mut postgres::Client,
    schema: &Schema,
    keep_days: u32,
) -> Result<u64, postgres::Error> {
    let sql = schema.render(
        "DELETE FROM {schema}.malformed_datagrams WHERE id IN (
             SELECT id FROM {schema}.malformed_datagrams
             WHERE received_at < now() - make_interval(days => $1) LIMIT $2)",
    );
    let mut total = 0;
    loop {
        let n = c.execute(&sql, &[&(keep_days as i32), &MALFORMED_DELETE_BATCH])?;
        total += n;
        if n < MALFORMED_DELETE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Writes the template changes the shards queued as `instance`'s (requeued when the write
/// fails).
pub fn write_templates(
    c: &mut postgres::Client,
    schema: &Schema,
    netflow: &NetflowShared,
    instance: &str,
) {
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
    if let Err(e) = templates::write(c, schema, &rows, instance) {
        tracing::warn!("storing v9/IPFIX templates: {e:#}");
        netflow.requeue(changes);
    }
}
