//! The `exporters` table: per-exporter statistics as the housekeeper writes them (deltas
//! from [`crate::obs::exporters::ExporterTable`], added to the row, so several collectors can
//! share one) and as `nfpg exporters` reads them.

use std::sync::Mutex;

use anyhow::Result;

use super::db::Schema;
use super::spool::{Identity, Spool};
use crate::obs::exporters::{ExporterDelta, ExporterTable};

/// Writes at most `max_rows` exporter deltas with one statement (the rest wait for the next
/// call), so a table full of exporters costs bounded work per update.
pub fn flush_exporters(
    client: &mut postgres::Client,
    schema: &Schema,
    table: &Mutex<ExporterTable>,
    max_rows: usize,
) -> Result<usize> {
    let deltas = table
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take_deltas(max_rows);
    if deltas.is_empty() {
        return Ok(0);
    }
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
             suspect_datagrams)
         SELECT a, t, i, to_timestamp(fs::float8 / 1e6), to_timestamp(ls::float8 / 1e6),
                dg, fl, pk, by, lo, rs, sq, v, si, sm, r, d, sp
         FROM unnest($1::inet[], $2::int2[], $3::int2[], $4::int8[], $5::int8[], $6::int8[],
                     $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[],
                     $13::int2[], $14::int4[], $15::int2[], $16::float8[], $17::int8[], $18::int8[])
              AS u(a, t, i, fs, ls, dg, fl, pk, by, lo, rs, sq, v, si, sm, r, d, sp)
         ON CONFLICT (exporter, engine_type, engine_id, source_id) DO UPDATE SET
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
    let result = client.execute(
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
        ],
    );
    match result {
        Ok(_) => Ok(deltas.len()),
        Err(e) => {
            table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .unflush(&deltas);
            Err(e.into())
        }
    }
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
}

/// Every exporter, busiest first.
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
                    suspect_datagrams
             FROM {schema}.exporters ORDER BY flows DESC",
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
        })
        .collect())
}

/// Exporter statistics a stop could not write (the database was down), kept beside the spool
/// with the database they belong to, and written by the next run that targets it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    identity: Identity,
    deltas: Vec<ExporterDelta>,
}

fn pending_path(spool: &Spool) -> std::path::PathBuf {
    spool.dir().join("exporters.pending.json")
}

/// Saves `deltas` for the next run (merged with any already waiting for this database).
pub fn save_pending(spool: &Spool, mut deltas: Vec<ExporterDelta>) -> Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let path = pending_path(spool);
    if let Ok(old) = std::fs::read(&path) {
        if let Ok(p) = serde_json::from_slice::<Pending>(&old) {
            if p.identity == *spool.identity() {
                deltas.extend(p.deltas);
            }
        }
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(&Pending {
            identity: spool.identity().clone(),
            deltas,
        })?,
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Takes the deltas an earlier run left for this database (none for another one's).
pub fn load_pending(spool: &Spool) -> Vec<ExporterDelta> {
    let path = pending_path(spool);
    let Ok(bytes) = std::fs::read(&path) else {
        return Vec::new();
    };
    match serde_json::from_slice::<Pending>(&bytes) {
        Ok(p) if p.identity == *spool.identity() => {
            let _ = std::fs::remove_file(&path);
            tracing::info!(
                "{} exporter statistics row(s) from the previous run will be written",
                p.deltas.len()
            );
            p.deltas
        }
        Ok(p) => {
            tracing::warn!(
                "{} holds exporter statistics for {}, not this database: kept",
                path.display(),
                p.identity
            );
            Vec::new()
        }
        Err(e) => {
            tracing::warn!("{} unreadable, kept: {e}", path.display());
            Vec::new()
        }
    }
}
