//! Writer threads: sealed batches from the queue into PostgreSQL with binary COPY.
//!
//! Each writer owns one connection. It takes every batch waiting (up to `max_rows` flows),
//! encodes them into one buffer with [`super::copy`] and streams it as one `COPY … FROM
//! STDIN (FORMAT binary)`. After the COPY commits it stores the batches' malformed samples,
//! feeds their datagram headers to the [`ExporterTable`], and returns the batches to the pool.
//!
//! Errors: a lost connection is retried (reconnect with back-off) with the same buffer, so
//! nothing is lost while the database restarts; any other error is retried a few times and
//! then the rows are counted as dropped and logged. Each COPY commits together with a
//! (writer, sequence) row in `nfpg_copies`, so a retry after a commit whose reply was lost is
//! refused by the primary key instead of storing the rows twice: exactly once. The `Sink` seam lets a spool (or a null
//! sink for benchmarks) take batches instead of PostgreSQL.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_utils::CachePadded;
use postgres::Client;

use super::copy;
use super::db::{self, Schema};
use crate::flow::handoff::{Batch, Handoff};
use crate::obs::exporters::ExporterTable;
use crate::obs::latency::{Recorders, Stage};
use crate::obs::stats::WriterCounters;

/// Most batches one writer takes from the queue for one COPY (the pool is sized for it).
pub const MAX_BATCHES_PER_COPY: usize = 16;
/// Attempts for an error that is not a lost connection before the rows are dropped.
const MAX_ATTEMPTS: u32 = 5;
/// How long a writer keeps retrying a lost database after stop was requested.
const STOP_RETRY_LIMIT: Duration = Duration::from_secs(30);

/// Where a writer puts encoded batches.
pub trait Sink: Send {
    /// Writes one binary COPY stream (header, tuples, trailer) holding `rows` rows.
    fn write_copy(&mut self, data: &[u8], rows: usize) -> Result<(), WriteError>;
    /// Stores malformed samples (rare; not on the hot path).
    fn write_samples(&mut self, batches: &[Batch]) -> Result<usize, WriteError>;
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The connection is gone; reconnecting and retrying the same data is safe (the COPY
    /// did not commit).
    #[error("database connection lost: {0}")]
    Connection(String),
    /// The database refused the data.
    #[error("database error: {0}")]
    Other(String),
}

/// Writes to PostgreSQL, reconnecting when the connection drops.
pub struct PgSink {
    conninfo: String,
    schema: Schema,
    copy_sql: String,
    marker_sql: String,
    client: Option<Client>,
    /// Identifies this writer's COPYs in `nfpg_copies` (random per writer and process).
    writer_id: i64,
    /// Sequence number of the next COPY; advances only when one is known to be committed.
    next_seq: i64,
}

/// How one COPY transaction failed.
enum CopyFail {
    /// PostgreSQL answered with an error (or the connection closed while waiting for it).
    Pg(postgres::Error),
    /// The stream broke while sending the data.
    Io(std::io::Error),
}

impl PgSink {
    pub fn new(conninfo: &str, schema: &Schema) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Self::with_writer_id(conninfo, schema, h.finish() as i64)
    }

    /// A sink whose COPYs are marked with `writer_id`: a second sink with the same id (the
    /// same writer after reconnecting) will not commit the first one's COPYs again.
    pub fn with_writer_id(conninfo: &str, schema: &Schema, writer_id: i64) -> Self {
        Self {
            conninfo: conninfo.to_string(),
            copy_sql: copy::copy_statement(&schema.quoted()),
            marker_sql: schema
                .render("INSERT INTO {schema}.nfpg_copies (writer, seq, rows) VALUES ($1, $2, $3)"),
            schema: schema.clone(),
            client: None,
            writer_id,
            next_seq: 0,
        }
    }

    /// One COPY in a transaction that first records (writer, seq) in `nfpg_copies`. If an
    /// earlier attempt of the same COPY committed but its reply was lost with the connection,
    /// the marker's primary key refuses the retry before any row is written again.
    fn copy_once(
        client: &mut Client,
        marker_sql: &str,
        copy_sql: &str,
        marker: (i64, i64, i64),
        data: &[u8],
    ) -> Result<(), CopyFail> {
        let mut tx = client.transaction().map_err(CopyFail::Pg)?;
        tx.execute(marker_sql, &[&marker.0, &marker.1, &marker.2])
            .map_err(CopyFail::Pg)?;
        let mut w = tx.copy_in(copy_sql).map_err(CopyFail::Pg)?;
        // On error the writer is dropped without finish() (the COPY aborts) and the
        // transaction rolls back: nothing commits.
        w.write_all(data).map_err(CopyFail::Io)?;
        w.finish().map_err(CopyFail::Pg)?;
        tx.commit().map_err(CopyFail::Pg)
    }

    fn client(&mut self) -> Result<&mut Client, WriteError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
        }
        match &mut self.client {
            Some(c) => Ok(c),
            slot => {
                let c = db::connect(&self.conninfo)
                    .map_err(|e| WriteError::Connection(format!("{e:#}")))?;
                Ok(slot.insert(c))
            }
        }
    }

    fn classify(&mut self, e: postgres::Error) -> WriteError {
        let closed = e.is_closed()
            || self.client.as_ref().is_none_or(|c| c.is_closed())
            || e.as_db_error().is_none();
        if closed {
            self.client = None;
            WriteError::Connection(e.to_string())
        } else {
            WriteError::Other(format!(
                "{e}: {}",
                e.as_db_error().map_or("", |d| d.message())
            ))
        }
    }
}

impl Sink for PgSink {
    fn write_copy(&mut self, data: &[u8], rows: usize) -> Result<(), WriteError> {
        self.client()?;
        let Some(client) = self.client.as_mut() else {
            return Err(WriteError::Connection("not connected".into()));
        };
        let marker = (self.writer_id, self.next_seq, rows as i64);
        match Self::copy_once(client, &self.marker_sql, &self.copy_sql, marker, data) {
            Ok(()) => {
                self.next_seq += 1;
                Ok(())
            }
            Err(CopyFail::Pg(e))
                if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) =>
            {
                tracing::info!(
                    writer_id = self.writer_id,
                    seq = self.next_seq,
                    "COPY already committed by an earlier attempt whose reply was lost; not written twice"
                );
                self.next_seq += 1;
                Ok(())
            }
            Err(CopyFail::Pg(e)) => Err(self.classify(e)),
            Err(CopyFail::Io(e)) => {
                self.client = None;
                Err(WriteError::Connection(e.to_string()))
            }
        }
    }

    fn write_samples(&mut self, batches: &[Batch]) -> Result<usize, WriteError> {
        let sql = self.schema.render(
            "INSERT INTO {schema}.malformed_datagrams (exporter, received_at, reason, detail, length, head) \
             VALUES ($1, to_timestamp($2::float8 / 1e6), $3, $4, $5, $6)",
        );
        let client = self.client()?;
        let mut n = 0;
        let result = (|| {
            let mut tx = client.transaction()?;
            let stmt = tx.prepare(&sql)?;
            for b in batches {
                for s in &b.malformed {
                    tx.execute(
                        &stmt,
                        &[
                            &crate::flow::batch::u128_to_addr(s.exporter),
                            &(s.received_us as f64),
                            &s.reason.as_str(),
                            &i64::from(s.detail),
                            &(s.length as i32),
                            &&s.head[..usize::from(s.head_len)],
                        ],
                    )?;
                    n += 1;
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => Ok(n),
            Err(e) => Err(self.classify(e)),
        }
    }
}

/// A sink that discards everything: measures the pipeline without a database.
pub struct NullSink;

impl Sink for NullSink {
    fn write_copy(&mut self, _data: &[u8], _rows: usize) -> Result<(), WriteError> {
        Ok(())
    }
    fn write_samples(&mut self, batches: &[Batch]) -> Result<usize, WriteError> {
        Ok(batches.iter().map(|b| b.malformed.len()).sum())
    }
}

pub struct WriterConfig {
    pub id: usize,
    /// This thread's latency recorders.
    pub recorders: Recorders,
    /// Most flows in one COPY.
    pub max_rows: usize,
}

/// Runs a writer until `shards_done` is set and the queue is empty.
pub fn run(
    mut cfg: WriterConfig,
    mut sink: Box<dyn Sink>,
    handoff: Arc<Handoff>,
    counters: Arc<CachePadded<WriterCounters>>,
    exporters: Arc<Mutex<ExporterTable>>,
    shards_done: Arc<AtomicBool>,
) {
    let mut batches: Vec<Batch> = Vec::with_capacity(MAX_BATCHES_PER_COPY);
    let mut buf: Vec<u8> = Vec::with_capacity(cfg.max_rows.min(1 << 20) * copy::MAX_ROW_BYTES / 2);
    loop {
        let mut rows = 0;
        while batches.len() < batches.capacity() && rows < cfg.max_rows {
            match handoff.pop_full() {
                Some(b) => {
                    if let Some(sealed) = b.sealed_at {
                        cfg.recorders
                            .record_duration(Stage::QueueWait, sealed.elapsed());
                    }
                    rows += b.len();
                    batches.push(b);
                }
                None => break,
            }
        }
        if batches.is_empty() {
            if shards_done.load(Relaxed) && handoff.depth() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        if rows > 0 {
            copy::encode_copy(batches.iter().map(|b| &b.flows), &mut buf);
            let copy_started = Instant::now();
            if write_with_retry(sink.as_mut(), cfg.id, &buf, rows, &counters, &shards_done) {
                cfg.recorders
                    .record_duration(Stage::Copy, copy_started.elapsed());
                let committed_us = unix_now_us();
                for b in &batches {
                    for d in &b.flows.datagrams {
                        let waited = (committed_us - d.received_us).max(1) as u64;
                        cfg.recorders
                            .record_n(Stage::EndToEnd, waited, u64::from(d.count));
                    }
                }
                counters.rows_written.fetch_add(rows as u64, Relaxed);
                counters
                    .batches_written
                    .fetch_add(batches.len() as u64, Relaxed);
                counters.copies.fetch_add(1, Relaxed);
                let mut table = exporters.lock().unwrap_or_else(|p| p.into_inner());
                for b in &batches {
                    for d in &b.flows.datagrams {
                        let (packets, bytes) = b.flows.totals_of(d);
                        table.observe(d, packets, bytes);
                    }
                }
            } else {
                counters.rows_dropped.fetch_add(rows as u64, Relaxed);
            }
        }
        if batches.iter().any(|b| !b.malformed.is_empty()) {
            match sink.write_samples(&batches) {
                Ok(n) => {
                    counters
                        .malformed_samples_written
                        .fetch_add(n as u64, Relaxed);
                }
                Err(e) => {
                    counters.write_errors.fetch_add(1, Relaxed);
                    tracing::warn!(writer = cfg.id, "malformed samples not stored: {e}");
                }
            }
        }
        for b in batches.drain(..) {
            handoff.give_back(b);
        }
    }
}

fn unix_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Writes one COPY, retrying as described in the module doc. Returns whether it committed.
fn write_with_retry(
    sink: &mut dyn Sink,
    id: usize,
    data: &[u8],
    rows: usize,
    counters: &WriterCounters,
    stopping: &AtomicBool,
) -> bool {
    let mut attempts = 0;
    let mut backoff = Duration::from_millis(100);
    let mut stop_seen: Option<Instant> = None;
    loop {
        match sink.write_copy(data, rows) {
            Ok(()) => return true,
            Err(e) => {
                counters.write_errors.fetch_add(1, Relaxed);
                let give_up = match &e {
                    WriteError::Connection(_) => {
                        if stopping.load(Relaxed) {
                            stop_seen.get_or_insert_with(Instant::now).elapsed() > STOP_RETRY_LIMIT
                        } else {
                            false
                        }
                    }
                    WriteError::Other(_) => {
                        attempts += 1;
                        attempts >= MAX_ATTEMPTS
                    }
                };
                if give_up {
                    tracing::error!(writer = id, rows, "giving up on a batch, rows dropped: {e}");
                    return false;
                }
                tracing::warn!(writer = id, "write failed, retrying in {backoff:?}: {e}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Connects, so a writer fails at start rather than at its first batch.
pub fn connect_check(conninfo: &str) -> Result<()> {
    db::connect(conninfo)
        .map(|_| ())
        .context("writer connection")
}
