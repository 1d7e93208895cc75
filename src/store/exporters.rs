//! The `exporters` table: per-exporter statistics as the housekeeper writes them (deltas
//! from [`crate::obs::exporters::ExporterTable`], added to this collector instance's row for
//! the exporter: several collectors share the table, one row each per exporter) and as
//! `nfpg exporters` reads them.
//!
//! Exactly once: each update commits a marker `(instance, flush)` in `nfpg_exporter_flushes`
//! with its rows. An update that fails in any way is kept as in doubt and, before anything
//! else is written, looked up by its marker: committed (its reply was lost) → done; not →
//! written again with the same marker. Adding deltas twice would inflate every counter.

use std::sync::Mutex;

use anyhow::Result;

use super::db::Schema;
use super::spool::{Identity, Spool};
use crate::obs::exporters::{ExporterDelta, ExporterTable, UnconfirmedFlush};

/// Writes at most `max_rows` exporter deltas with one statement (the rest wait for the next
/// call), so a table full of exporters costs bounded work per update. The rows are this
/// collector's, `instance`. An earlier update whose outcome is unknown is resolved first (see
/// the module documentation). Returns the rows written.
pub fn flush_exporters(
    client: &mut postgres::Client,
    schema: &Schema,
    table: &Mutex<ExporterTable>,
    max_rows: usize,
    instance: &str,
) -> Result<usize> {
    let lock = || table.lock().unwrap_or_else(|p| p.into_inner());
    let mut written = 0;
    let unresolved = lock().take_in_doubt();
    if let Some(flush) = unresolved {
        let done = client
            .query_opt(
                &schema.render(
                    "SELECT 1 FROM {schema}.nfpg_exporter_flushes WHERE instance = $1 AND flush = $2",
                ),
                &[&flush.instance, &flush.flush],
            )
            .map(|r| r.is_some());
        match done {
            Ok(true) => tracing::info!(
                "an exporters update whose reply was lost had committed; not added twice"
            ),
            Ok(false) => match write(client, schema, &flush) {
                Ok(()) => written += flush.deltas.len(),
                Err(e) => {
                    lock().set_in_doubt(flush);
                    return Err(e);
                }
            },
            Err(e) => {
                lock().set_in_doubt(flush);
                return Err(e.into());
            }
        }
    }
    let deltas = lock().take_deltas(max_rows);
    if deltas.is_empty() {
        return Ok(written);
    }
    let flush = UnconfirmedFlush {
        instance: instance.to_string(),
        flush: super::writer::new_marker_writer(),
        deltas,
    };
    match write(client, schema, &flush) {
        Ok(()) => Ok(written + flush.deltas.len()),
        Err(e) => {
            lock().set_in_doubt(flush);
            Err(e)
        }
    }
}

/// One update: its marker and its deltas added to the rows, in one transaction.
fn write(client: &mut postgres::Client, schema: &Schema, flush: &UnconfirmedFlush) -> Result<()> {
    let deltas = &flush.deltas;
    let col = |f: fn(&ExporterDelta) -> i64| deltas.iter().map(f).collect::<Vec<i64>>();
    let addrs: Vec<std::net::IpAddr> = deltas.iter().map(|d| d.exporter).collect();
    let et: Vec<i16> = deltas.iter().map(|d| d.engine_type).collect();
    let ei: Vec<i16> = deltas.iter().map(|d| d.engine_id).collect();
    let ver: Vec<i16> = deltas.iter().map(|d| d.version).collect();
    let si: Vec<i32> = deltas.iter().map(|d| d.sampling_interval).collect();
    let sm: Vec<i16> = deltas.iter().map(|d| d.sampling_mode).collect();
    let rate: Vec<f64> = deltas.iter().map(|d| d.datagrams_per_s).collect();
    let sql = schema.render(
        "INSERT INTO {schema}.exporters AS e (exporter, engine_type, engine_id, first_seen, last_seen,
             datagrams, flows, packets, bytes, flows_lost, restarts, last_sequence,
             netflow_version, sampling_interval, sampling_mode, datagrams_per_s, source_id,
             suspect_datagrams, instance)
         SELECT a, t, i, to_timestamp(fs::float8 / 1e6), to_timestamp(ls::float8 / 1e6),
                dg, fl, pk, by, lo, rs, sq, v, si, sm, r, d, sp, $19::text
         FROM unnest($1::inet[], $2::int2[], $3::int2[], $4::int8[], $5::int8[], $6::int8[],
                     $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[],
                     $13::int2[], $14::int4[], $15::int2[], $16::float8[], $17::int8[], $18::int8[])
              AS u(a, t, i, fs, ls, dg, fl, pk, by, lo, rs, sq, v, si, sm, r, d, sp)
         ON CONFLICT (instance, exporter, engine_type, engine_id, source_id) DO UPDATE SET
             first_seen = least(e.first_seen, excluded.first_seen),
             last_seen = greatest(e.last_seen, excluded.last_seen),
             datagrams = e.datagrams + excluded.datagrams,
             flows = e.flows + excluded.flows,
             packets = e.packets + excluded.packets,
             bytes = e.bytes + excluded.bytes,
             flows_lost = e.flows_lost + excluded.flows_lost,
             restarts = e.restarts + excluded.restarts,
             suspect_datagrams = e.suspect_datagrams + excluded.suspect_datagrams,
             last_sequence = excluded.last_sequence,
             netflow_version = excluded.netflow_version,
             sampling_interval = excluded.sampling_interval,
             sampling_mode = excluded.sampling_mode,
             datagrams_per_s = excluded.datagrams_per_s",
    );
    let mut tx = client.transaction()?;
    tx.execute(
        &schema
            .render("INSERT INTO {schema}.nfpg_exporter_flushes (instance, flush) VALUES ($1, $2)"),
        &[&flush.instance, &flush.flush],
    )?;
    tx.execute(
        &sql,
        &[
            &addrs,
            &et,
            &ei,
            &col(|d| d.first_seen_us),
            &col(|d| d.last_seen_us),
            &col(|d| d.datagrams),
            &col(|d| d.flows),
            &col(|d| d.packets),
            &col(|d| d.bytes),
            &col(|d| d.lost),
            &col(|d| d.restarts),
            &col(|d| d.last_sequence),
            &ver,
            &si,
            &sm,
            &rate,
            &col(|d| d.source_id),
            &col(|d| d.suspect),
            &flush.instance,
        ],
    )?;
    tx.commit()?;
    Ok(())
}

/// One exporter as `nfpg exporters` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExporterRow {
    pub exporter: String,
    pub engine_type: i16,
    pub engine_id: i16,
    pub version: i16,
    pub sampling_interval: i32,
    pub datagrams: i64,
    pub flows: i64,
    pub flows_lost: i64,
    pub lost_percent: f64,
    pub restarts: i64,
    pub datagrams_per_s: f64,
    pub last_seen_utc: String,
    pub silent_s: i64,
    /// v9 source id / IPFIX observation domain (0 for v5).
    pub source_id: i64,
    /// Datagrams whose sequence number no real exporter run explains (not counted as loss).
    pub suspect_datagrams: i64,
    /// The collector instance that counted this row ('' for rows from before instances).
    pub instance: String,
}

/// Every exporter as each collector instance saw it (one row per instance that heard it),
/// busiest first.
pub fn list(client: &mut postgres::Client, schema: &Schema) -> Result<Vec<ExporterRow>> {
    let rows = client.query(
        &schema.render(
            "SELECT host(exporter), engine_type, engine_id, netflow_version, sampling_interval,
                    datagrams, flows, flows_lost,
                    CASE WHEN flows + flows_lost > 0 THEN 100.0 * flows_lost / (flows + flows_lost) ELSE 0 END::float8,
                    restarts, datagrams_per_s,
                    to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                    to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                    extract(epoch FROM now() - last_seen)::int8, source_id,
                    suspect_datagrams, instance
             FROM {schema}.exporters ORDER BY flows DESC, instance",
        ),
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| ExporterRow {
            exporter: r.get(0),
            engine_type: r.get(1),
            engine_id: r.get(2),
            version: r.get::<_, Option<i16>>(3).unwrap_or(0),
            sampling_interval: r.get::<_, Option<i32>>(4).unwrap_or(0),
            datagrams: r.get(5),
            flows: r.get(6),
            flows_lost: r.get(7),
            lost_percent: r.get(8),
            restarts: r.get(9),
            datagrams_per_s: r.get::<_, Option<f64>>(10).unwrap_or(0.0),
            last_seen_utc: r.get(12),
            silent_s: r.get(13),
            source_id: r.get(14),
            suspect_datagrams: r.get(15),
            instance: r.get(16),
        })
        .collect())
}

/// Exporter statistics a stop could not write (the database was down), kept beside the spool
/// with the database they belong to, and written by the next run that targets it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    identity: Identity,
    deltas: Vec<ExporterDelta>,
    /// An update whose outcome was unknown at the stop: resolved by its marker at the next
    /// start.
    #[serde(default)]
    in_doubt: Option<UnconfirmedFlush>,
}

fn pending_path(spool: &Spool) -> std::path::PathBuf {
    spool.dir().join("exporters.pending.json")
}

/// Saves `deltas` and an update in doubt for the next run (merged with any already waiting
/// for this database).
pub fn save_pending(
    spool: &Spool,
    mut deltas: Vec<ExporterDelta>,
    mut in_doubt: Option<UnconfirmedFlush>,
) -> Result<()> {
    if deltas.is_empty() && in_doubt.is_none() {
        return Ok(());
    }
    let path = pending_path(spool);
    if let Ok(old) = std::fs::read(&path) {
        if let Ok(p) = serde_json::from_slice::<Pending>(&old) {
            if p.identity == *spool.identity() {
                deltas.extend(p.deltas);
                in_doubt = in_doubt.or(p.in_doubt);
            }
        }
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(&Pending {
            identity: spool.identity().clone(),
            deltas,
            in_doubt,
        })?,
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Takes the deltas (and the update in doubt) an earlier run left for this database (none for
/// another one's).
pub fn load_pending(spool: &Spool) -> (Vec<ExporterDelta>, Option<UnconfirmedFlush>) {
    let path = pending_path(spool);
    let Ok(bytes) = std::fs::read(&path) else {
        return (Vec::new(), None);
    };
    match serde_json::from_slice::<Pending>(&bytes) {
        Ok(p) if p.identity == *spool.identity() => {
            let _ = std::fs::remove_file(&path);
            tracing::info!(
                "{} exporter statistics row(s) from the previous run will be written",
                p.deltas.len()
            );
            (p.deltas, p.in_doubt)
        }
        Ok(p) => {
            tracing::warn!(
                "{} holds exporter statistics for {}, not this database: kept",
                path.display(),
                p.identity
            );
            (Vec::new(), None)
        }
        Err(e) => {
            tracing::warn!("{} unreadable, kept: {e}", path.display());
            (Vec::new(), None)
        }
    }
}
