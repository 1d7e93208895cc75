//! Writer threads: sealed batches from the queue into PostgreSQL with binary COPY, or into
//! the spool when that cannot happen now.
//!
//! Each writer owns one connection. It takes every batch waiting (up to `max_rows` flows),
//! encodes them into one buffer with [`super::copy`] and gives the buffer a marker
//! `(writer, seq)` that is never used for anything else. While the database is up it makes
//! one attempt: `COPY … FROM STDIN (FORMAT binary)` in a transaction that also inserts the
//! marker into `nfpg_copies`. If that fails for any reason (connection lost, server shutting
//! down, rows refused, disk full, bad password), the buffer goes to the [`Spool`] with its
//! marker, the batches return to the pool at once, and for the errors that mean "not now"
//! the database is marked down so the following buffers go straight to the spool until the
//! replayer ([`super::replay`]) sees it back. So a writer never waits on PostgreSQL for
//! longer than one statement, and shards never wait on writers.
//!
//! Exactly once: the marker commits with the rows. A COPY whose reply was lost may have
//! committed; its buffer is spooled with the same marker, and replay meets the marker's
//! primary key (`nfpg_copies_pkey`, and only that constraint) and skips it. The marker
//! carries the collector's instance name (`--instance`), so collectors sharing a database
//! never meet each other's markers. Exporter statistics are counted once per batch, when its
//! rows are committed or spooled.
//!
//! Several database endpoints (`--database-url` given more than once): each writer holds one
//! sink per endpoint and sends its COPYs to them in turn, skipping endpoints marked down. A
//! COPY that fails on one endpoint before its COMMIT was sent (nothing committed there) is
//! tried on the next endpoint that is up; one whose COMMIT got no reply
//! ([`WriteError::InDoubt`]) or whose rows were refused goes to that endpoint's spool, since
//! only that database can tell (by the marker) whether it committed. With every endpoint down
//! a COPY goes to the spool of the endpoint whose turn it was.
//!
//! The `Sink` seam also gives the benchmarks a null sink.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use crossbeam_utils::CachePadded;
use postgres::Client;

use super::copy::{self, Piece, Shape};
use super::db::{self, Schema};
use super::health::Health;
use super::spool::{Marker, Spool, SpoolError};
use crate::flow::batch::{DatagramInfo, FlowBatch};
use crate::flow::handoff::{Batch, Handoff};
use crate::obs::exporters::ExporterTable;
use crate::obs::latency::{Recorders, Stage};
use crate::obs::stats::{SpoolCounters, WriterCounters};

/// Most batches one writer takes from the queue for one COPY (the pool is sized for it).
pub const MAX_BATCHES_PER_COPY: usize = 16;
/// Longest an idle writer sleeps before it looks at the stop flag again.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// Longest one statement of a writer may run before the server cancels it (a stuck COPY then
/// fails and its data is spooled instead of holding the writer).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The marker table's primary key: a unique violation on it, and only on it, means "this
/// COPY is already committed".
pub const MARKER_CONSTRAINT: &str = "nfpg_copies_pkey";

/// Where a writer puts encoded COPY streams.
pub trait Sink: Send {
    /// Commits one binary COPY stream (header, tuples, trailer) of `rows` rows in `shape`
    /// with the marker `(marker, part)`.
    fn write_copy(
        &mut self,
        data: &[u8],
        shape: Shape,
        rows: usize,
        marker: Marker,
        part: i64,
    ) -> Result<Committed, WriteError>;
    /// [`Sink::write_copy`] of a stream given in pieces (the header, each batch's v5 rows or
    /// encoded columns, the trailer), so the writer need not put them into one buffer first.
    fn write_copy_parts(
        &mut self,
        parts: &[Piece<'_>],
        shape: Shape,
        rows: usize,
        marker: Marker,
        part: i64,
    ) -> Result<Committed, WriteError> {
        self.write_copy(&copy::concat(parts), shape, rows, marker, part)
    }
    /// Stores malformed samples (rare; not on the hot path).
    fn write_samples(&mut self, batches: &[Batch]) -> Result<usize, WriteError>;
    /// The instance name the markers of the following COPYs carry (a replayed segment keeps
    /// the one it was first tried with).
    fn set_marker_instance(&mut self, _instance: &str) {}
    /// The arrival times (µs since the Unix epoch, first and last) of the rows of the next
    /// COPY, for the hourly aggregates (see [`PgSink`]); `None`: not known.
    fn set_received_range(&mut self, _range: Option<(i64, i64)>) {}
}

/// How a COPY ended when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    /// Committed now.
    Now,
    /// An earlier attempt with the same marker had committed (its reply was lost).
    Already,
}

/// Why a write did not commit, classified by what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Not now: the connection is gone or cannot be made, the server is shutting down or
    /// starting, a statement timed out, the disk is full, the server is read-only. Spool and
    /// try again later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The server refused rows of this COPY. `row` is the 1-based tuple PostgreSQL named in
    /// the error's context ("COPY flows, line N"), when it named one.
    #[error("rows refused: {message}")]
    Rejected { row: Option<usize>, message: String },
    /// Configuration: bad password, no such database, schema or table, no permission.
    /// Nothing works until an operator acts; spool and retry with back-off.
    #[error("database configuration error: {0}")]
    Config(String),
    /// The connection broke after COMMIT was sent and before its reply, or the server ended
    /// the session in reply (FATAL): the COPY may have committed. Only its own database can tell (by the marker), so it is spooled for that
    /// database, never sent to another.
    #[error("database connection lost while committing (the COPY may have committed): {0}")]
    InDoubt(String),
}

impl WriteError {
    /// Whether the database should be treated as down (writers spool without trying).
    pub fn is_down(&self) -> bool {
        !matches!(self, WriteError::Rejected { .. })
    }
}

/// Classifies a PostgreSQL error (see [`WriteError`]).
pub fn classify(e: &postgres::Error) -> WriteError {
    let Some(db) = e.as_db_error() else {
        return WriteError::Unavailable(e.to_string());
    };
    let code = db.code().code();
    let message = format!("{}: {}", code, db.message());
    match &code[..2] {
        // Data exceptions and integrity constraint violations: these rows are refused.
        "22" | "23" => WriteError::Rejected {
            row: db.where_().and_then(copy_line),
            message: match db.detail() {
                Some(d) => format!("{message} ({d})"),
                None => message,
            },
        },
        // Invalid authorization, invalid catalog (database), invalid schema name.
        "28" | "3D" | "3F" => WriteError::Config(message),
        // Insufficient privilege, undefined table or column.
        "42" if matches!(code, "42501" | "42P01" | "42703" | "42704") => {
            WriteError::Config(message)
        }
        _ => WriteError::Unavailable(message),
    }
}

/// The tuple number in a COPY error's context, "COPY flows, line 17[, column …]".
fn copy_line(context: &str) -> Option<usize> {
    let rest = &context[context.find("line ")? + 5..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Writes to PostgreSQL on one connection, made on first use and again after it breaks.
pub struct PgSink {
    conninfo: String,
    schema: Schema,
    /// The COPY statement of each shape, in the order of [`Shape::ALL`].
    copy_sql: [String; 4],
    marker_sql: String,
    guard_sql: String,
    /// How rows behind the aggregates' watermark are added to them (see [`OwnRows`]).
    own: OwnRows,
    /// Whether this connection has its temporary table [`OWN_ROWS_TABLE`].
    own_table: bool,
    /// The instance name of the markers (see [`Sink::set_marker_instance`]).
    instance: String,
    /// Arrival times of the next COPY's rows (see [`Sink::set_received_range`]).
    received: Option<(i64, i64)>,
    client: Option<Client>,
}

/// The temporary table (one per connection, emptied at every commit) that receives a second
/// copy of a COPY's rows when some arrived behind the aggregates' watermark, so that they are
/// aggregated from there (migrations/0016_own_rows_aggregation.sql says why).
pub const OWN_ROWS_TABLE: &str = "pg_temp.nfpg_own_rows";

/// The statements that add a COPY's rows behind the watermark to the hourly aggregates.
struct OwnRows {
    /// Makes [`OWN_ROWS_TABLE`] with flows' columns.
    create_sql: String,
    /// The COPY of each shape into it, in the order of [`Shape::ALL`].
    copy_sql: [String; 4],
    /// Adds its rows received in [$1, $2).
    add_sql: String,
    /// Without the table (no TEMP privilege): finds the rows in flows by xmin, which scans
    /// the partition's unsummarized tail.
    by_xmin_sql: String,
}

/// The statements of one COPY transaction.
struct CopySql<'a> {
    marker: &'a str,
    copy: &'a str,
    guard: &'a str,
    /// The COPY into [`OWN_ROWS_TABLE`] and the addition from it, or (None) the addition
    /// by xmin.
    own_copy: Option<&'a str>,
    own_add: &'a str,
}

/// How one COPY transaction failed.
enum CopyFail {
    /// PostgreSQL answered with an error (or the connection closed while waiting for it).
    Pg(postgres::Error),
    /// The stream broke while sending the data.
    Io(std::io::Error),
    /// COMMIT failed without an answer from the server: it may have committed.
    Commit(postgres::Error),
}

impl PgSink {
    /// A sink for `conninfo`; its markers carry the instance '' until
    /// [`PgSink::with_instance`] or [`Sink::set_marker_instance`] names one.
    pub fn new(conninfo: &str, schema: &Schema) -> Self {
        Self {
            conninfo: conninfo.to_string(),
            copy_sql: Shape::ALL.map(|shape| copy::copy_statement(&schema.quoted(), shape)),
            marker_sql: schema.render(
                "INSERT INTO {schema}.nfpg_copies (writer, seq, part, rows, instance) VALUES ($1, $2, $3, $4, $5)",
            ),
            guard_sql: schema.render("SELECT {schema}.flow_aggregates_guard()"),
            own: OwnRows {
                create_sql: schema.render(&format!(
                    "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS \
                     SELECT * FROM {{schema}}.flows WITH NO DATA",
                    OWN_ROWS_TABLE.trim_start_matches("pg_temp.")
                )),
                copy_sql: Shape::ALL.map(|shape| copy::copy_statement_into(OWN_ROWS_TABLE, shape)),
                add_sql: schema.render(&format!(
                    "SELECT {{schema}}.add_own_rows_to_flow_aggregates('{OWN_ROWS_TABLE}'::regclass, $1, $2)"
                )),
                by_xmin_sql: schema.render(
                    "SELECT {schema}.add_own_rows_to_flow_aggregates('{schema}.flows'::regclass, $1, $2)",
                ),
            },
            own_table: false,
            schema: schema.clone(),
            received: None,
            instance: String::new(),
            client: None,
        }
    }

    /// The same sink with markers carrying `instance`.
    pub fn with_instance(mut self, instance: &str) -> Self {
        self.instance = instance.to_string();
        self
    }

    /// One COPY in a transaction that first records its markers in `nfpg_copies` and takes
    /// the aggregates' guard (migrations/0013_aggregates.sql): the watermark then stays put
    /// until this commits, and rows that arrived before it (`received`, Unix µs) are added
    /// to the hourly aggregates here, in the same transaction: copied a second time into
    /// [`OWN_ROWS_TABLE`] and added from there (0016).
    fn copy_once(
        client: &mut Client,
        sql: CopySql,
        (instance, markers): (&str, &[[i64; 4]]),
        parts: &[Piece<'_>],
        received: Option<(i64, i64)>,
    ) -> Result<(), CopyFail> {
        let mut tx = client.transaction().map_err(CopyFail::Pg)?;
        for m in markers {
            tx.execute(sql.marker, &[&m[0], &m[1], &m[2], &m[3], &instance])
                .map_err(CopyFail::Pg)?;
        }
        let watermark: SystemTime = tx.query_one(sql.guard, &[]).map_err(CopyFail::Pg)?.get(0);
        copy_parts(&mut tx, sql.copy, parts)?;
        if let Some((first, last)) = received {
            let first = UNIX_EPOCH + Duration::from_micros(first.max(0) as u64);
            let after_last = UNIX_EPOCH + Duration::from_micros(last.max(0) as u64 + 1);
            let upto = after_last.min(watermark);
            if first < upto {
                if let Some(own_copy) = sql.own_copy {
                    copy_parts(&mut tx, own_copy, parts)?;
                }
                tx.execute(sql.own_add, &[&first, &upto])
                    .map_err(CopyFail::Pg)?;
            }
        }
        // An ERROR the server sent means it did not commit. No answer, or a FATAL (the server
        // ending the session, e.g. shutting down, which can come after the commit itself),
        // means it may have.
        tx.commit().map_err(|e| {
            let refused = e
                .as_db_error()
                .is_some_and(|d| d.parsed_severity() == Some(postgres::error::Severity::Error));
            if refused {
                CopyFail::Pg(e)
            } else {
                CopyFail::Commit(e)
            }
        })
    }

    /// The connection, made now if there is none (with its [`OWN_ROWS_TABLE`] where the role
    /// may make temporary tables).
    pub fn client(&mut self) -> Result<&mut Client, WriteError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
        }
        match &mut self.client {
            Some(c) => Ok(c),
            slot => {
                let mut c = db::connect(&self.conninfo).map_err(|e| {
                    match e.downcast_ref::<postgres::Error>() {
                        Some(pe) => classify(pe),
                        None => WriteError::Unavailable(format!("{e:#}")),
                    }
                })?;
                c.batch_execute(&format!(
                    "SET statement_timeout = {}",
                    STATEMENT_TIMEOUT.as_millis()
                ))
                .map_err(|e| classify(&e))?;
                self.own_table = match c.batch_execute(&self.own.create_sql) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(
                            "no temporary table for rows replayed behind the aggregates' \
                             watermark ({e}); they are found by xmin instead, which is slower"
                        );
                        false
                    }
                };
                Ok(slot.insert(c))
            }
        }
    }

    fn fail(&mut self, e: &postgres::Error) -> WriteError {
        let w = classify(e);
        if w.is_down() || self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
        }
        w
    }
}

impl PgSink {
    /// One COPY of `data` in `shape`, committed with the marker rows `markers`
    /// (`[writer, seq, part, rows]`): the body of [`Sink::write_copy`] and [`PgSink::write_group`].
    fn commit_marked(
        &mut self,
        parts: &[Piece<'_>],
        shape: Shape,
        markers: &[[i64; 4]],
    ) -> Result<Committed, WriteError> {
        self.client()?;
        // `Shape::ALL` lists the shapes in declaration order.
        let copy_sql = &self.copy_sql[shape as usize];
        let Some(client) = self.client.as_mut() else {
            return Err(WriteError::Unavailable("not connected".into()));
        };
        let sql = CopySql {
            marker: &self.marker_sql,
            copy: copy_sql,
            guard: &self.guard_sql,
            own_copy: self
                .own_table
                .then(|| self.own.copy_sql[shape as usize].as_str()),
            own_add: if self.own_table {
                &self.own.add_sql
            } else {
                &self.own.by_xmin_sql
            },
        };
        let received = self.received.take();
        match Self::copy_once(client, sql, (&self.instance, markers), parts, received) {
            Ok(()) => Ok(Committed::Now),
            Err(CopyFail::Pg(e))
                if e.as_db_error()
                    .is_some_and(|d| d.constraint() == Some(MARKER_CONSTRAINT)) =>
            {
                Ok(Committed::Already)
            }
            Err(CopyFail::Pg(e)) => Err(self.fail(&e)),
            Err(CopyFail::Io(e)) => {
                self.client = None;
                Err(WriteError::Unavailable(e.to_string()))
            }
            Err(CopyFail::Commit(e)) => {
                self.client = None;
                Err(WriteError::InDoubt(e.to_string()))
            }
        }
    }

    /// Commits the rows of several spooled COPYs as one: one stream (`data`) and, in the same
    /// transaction, each one's whole marker `(marker, 0)` with its row count. `Already` means
    /// one of the markers was committed before and nothing was written now: the caller
    /// replays them one by one.
    pub fn write_group(
        &mut self,
        data: &[u8],
        shape: Shape,
        markers: &[(Marker, usize)],
    ) -> Result<Committed, WriteError> {
        let ms: Vec<[i64; 4]> = markers
            .iter()
            .map(|(m, rows)| [m.writer, m.seq, 0, *rows as i64])
            .collect();
        self.commit_marked(&[Piece::Bytes(data)], shape, &ms)
    }
}

impl Sink for PgSink {
    fn write_copy(
        &mut self,
        data: &[u8],
        shape: Shape,
        rows: usize,
        marker: Marker,
        part: i64,
    ) -> Result<Committed, WriteError> {
        self.write_copy_parts(&[Piece::Bytes(data)], shape, rows, marker, part)
    }

    fn write_copy_parts(
        &mut self,
        parts: &[Piece<'_>],
        shape: Shape,
        rows: usize,
        marker: Marker,
        part: i64,
    ) -> Result<Committed, WriteError> {
        let m = [marker.writer, marker.seq, part, rows as i64];
        let r = self.commit_marked(parts, shape, &[m]);
        if r == Ok(Committed::Already) {
            tracing::info!(
                writer = marker.writer,
                seq = marker.seq,
                part,
                "COPY already committed by an earlier attempt whose reply was lost; not written twice"
            );
        }
        r
    }

    fn set_received_range(&mut self, range: Option<(i64, i64)>) {
        self.received = range;
    }

    fn set_marker_instance(&mut self, instance: &str) {
        if self.instance != instance {
            self.instance = instance.to_string();
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
            Err(e) => Err(self.fail(&e)),
        }
    }
}

/// A sink that discards everything: measures the pipeline without a database. It still
/// streams every COPY as a database sink does (v5 rows encoded into tuples), and drops the
/// chunks.
pub struct NullSink;

impl Sink for NullSink {
    fn write_copy(
        &mut self,
        _data: &[u8],
        _shape: Shape,
        _rows: usize,
        _marker: Marker,
        _part: i64,
    ) -> Result<Committed, WriteError> {
        Ok(Committed::Now)
    }
    fn write_copy_parts(
        &mut self,
        parts: &[Piece<'_>],
        _shape: Shape,
        _rows: usize,
        _marker: Marker,
        _part: i64,
    ) -> Result<Committed, WriteError> {
        let _ = copy::stream(parts, |chunk| {
            std::hint::black_box(chunk);
            Ok::<(), std::convert::Infallible>(())
        });
        Ok(Committed::Now)
    }
    fn write_samples(&mut self, batches: &[Batch]) -> Result<usize, WriteError> {
        Ok(batches.iter().map(|b| b.malformed.len()).sum())
    }
}

/// One COPY of `parts` (the binary header, tuples, trailer) by `sql` in `tx`.
fn copy_parts(
    tx: &mut postgres::Transaction<'_>,
    sql: &str,
    parts: &[Piece<'_>],
) -> Result<(), CopyFail> {
    let mut w = tx.copy_in(sql).map_err(CopyFail::Pg)?;
    // On error the writer is dropped without finish() (the COPY aborts) and the transaction
    // rolls back: nothing commits. `CopyInWriter` copies what it is given into a buffer of
    // its own and sends that buffer away whole: given a batch at once, it took a fresh
    // allocation of the batch's size each time (new pages, zeroed by the kernel: 4 % of the
    // collector's CPU at 18,000 datagrams/s). In chunks, the buffer is one size, reused while
    // hot.
    copy::stream(parts, |chunk| w.write_all(chunk).map_err(CopyFail::Io))?;
    w.finish().map_err(CopyFail::Pg)?;
    Ok(())
}

/// A fresh marker writer id: random per writer and process, so no two writers anywhere
/// share one.
pub fn new_marker_writer() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as i64
}

pub struct WriterConfig {
    pub id: usize,
    /// This thread's latency recorders.
    pub recorders: Recorders,
    /// Most flows in one COPY.
    pub max_rows: usize,
    /// How long after a batch is sealed its COPY may wait for more batches (see the
    /// private `gather` of this module).
    pub gather: Duration,
}

/// What a writer shares with the rest of the collector.
#[derive(Clone)]
pub struct WriterShared {
    pub handoff: Arc<Handoff>,
    pub counters: Arc<CachePadded<WriterCounters>>,
    pub spool_counters: Arc<CachePadded<SpoolCounters>>,
    pub exporters: Arc<Mutex<ExporterTable>>,
    /// Set once the shards have stopped: drain the queue and return.
    pub shards_done: Arc<AtomicBool>,
    /// Set when the stop budget is spent: spool instead of writing.
    pub spool_only: Arc<AtomicBool>,
    /// The database endpoints, in the order of the writer's sinks (one with a single
    /// database).
    pub routes: Vec<Route>,
}

/// One database endpoint as writers and the shards' overflow see it.
#[derive(Clone)]
pub struct Route {
    /// Whether it takes writes now.
    pub health: Arc<Health>,
    /// Its spool; None only with the null sink.
    pub spool: Option<Arc<Spool>>,
}

/// The endpoint indexes in turn, starting at `first` (modulo their number).
pub(crate) fn in_turn(routes: &[Route], first: usize) -> impl Iterator<Item = usize> + '_ {
    let n = routes.len().max(1);
    (0..routes.len()).map(move |k| (first + k) % n)
}

/// Feeds the exporter table the datagrams of `batches` (once per batch: when its rows were
/// committed or spooled).
pub fn observe_exporters<'a>(
    exporters: &Mutex<ExporterTable>,
    batches: impl IntoIterator<Item = &'a FlowBatch>,
) {
    let mut table = exporters.lock().unwrap_or_else(|p| p.into_inner());
    for b in batches {
        for (d, (packets, bytes)) in b.datagrams() {
            table.observe(d, packets, bytes);
        }
    }
}

/// Puts an encoded COPY stream into the spool; counts what happened. Returns whether the
/// rows are now on disk.
pub fn spool_copy(
    spool: &Spool,
    counters: &SpoolCounters,
    marker: Marker,
    shape: Shape,
    parts: &[Piece<'_>],
    rows: usize,
) -> bool {
    // The parts are the header, the rows of each batch and the trailer, or one whole COPY
    // stream; the spool keeps the tuples.
    let written = match parts {
        [Piece::Bytes(head), tuples @ .., Piece::Bytes(tail)]
            if *head == copy::HEADER && *tail == copy::TRAILER =>
        {
            spool.write(marker, shape, tuples, rows as u64)
        }
        _ => {
            let joined = copy::concat(parts);
            let tuples = &joined[copy::HEADER.len()..joined.len() - copy::TRAILER.len()];
            spool.write(marker, shape, &[Piece::Bytes(tuples)], rows as u64)
        }
    };
    match written {
        Ok(_) => {
            counters.rows_spooled.fetch_add(rows as u64, Relaxed);
            counters.segments_spooled.fetch_add(1, Relaxed);
            true
        }
        Err(e @ SpoolError::Full { .. }) => {
            counters.rows_spool_full.fetch_add(rows as u64, Relaxed);
            tracing::error!(
                rows,
                "rows dropped: {e} (raise --spool-max or free the disk)"
            );
            false
        }
        Err(e) => {
            counters.rows_spool_failed.fetch_add(rows as u64, Relaxed);
            tracing::error!(rows, "rows dropped: {e}");
            false
        }
    }
}

/// First and last arrival (Unix µs) of the rows of `datagrams`.
fn received_range<'a>(datagrams: impl Iterator<Item = &'a DatagramInfo>) -> Option<(i64, i64)> {
    datagrams
        .filter(|d| d.count > 0)
        .map(|d| d.received_us)
        .fold(None, |r, t| match r {
            None => Some((t, t)),
            Some((lo, hi)) => Some((lo.min(t), hi.max(t))),
        })
}

/// The two COPYs a writer makes of its batches.
#[derive(Clone, Copy)]
enum Part {
    /// The v5 rows the shards kept, encoded as they are streamed.
    V5,
    /// The flows in columns, encoded by the writer.
    Columns,
}

/// Runs a writer until `shards_done` is set and the queue is empty. `sinks` has one sink per
/// endpoint, in the order of `sh.routes`.
pub fn run(mut cfg: WriterConfig, mut sinks: Vec<Box<dyn Sink>>, sh: WriterShared) {
    assert_eq!(sinks.len(), sh.routes.len(), "one sink per endpoint");
    let mut batches: Vec<Batch> = Vec::with_capacity(MAX_BATCHES_PER_COPY);
    let mut buf: Vec<u8> = Vec::with_capacity(cfg.max_rows.min(1 << 20) * copy::MAX_ROW_BYTES / 2);
    let marker_writer = new_marker_writer();
    let mut next_seq: i64 = 0;
    loop {
        let rows = gather(&sh, &mut batches, &mut cfg, MAX_BATCHES_PER_COPY);
        if batches.is_empty() {
            if sh.shards_done.load(Relaxed) && sh.handoff.depth() == 0 {
                break;
            }
            // Sleeps until a shard queues a batch; the timeout bounds how late a stop is seen.
            sh.handoff.wait_full(IDLE_WAIT);
            continue;
        }
        // Whose turn it is: the writers start apart and each moves on with every COPY.
        let first = cfg.id.wrapping_add(next_seq as usize) % sh.routes.len().max(1);
        // The v5 rows (encoded as they are streamed) and the other flows encoded now: one COPY
        // each (their column lists differ), each with its own marker.
        let tuple_rows: usize = batches.iter().map(|b| b.v5.rows).sum();
        let column_rows: usize = batches.iter().map(|b| b.flows.len()).sum();
        let mut all_stored = true;
        let mut all_committed = true;
        for kind in [Part::V5, Part::Columns] {
            let (part_rows, shape) = match kind {
                Part::V5 if tuple_rows > 0 => (tuple_rows, copy::V5_SHAPE),
                Part::Columns if column_rows > 0 => (
                    column_rows,
                    copy::encode_copy(batches.iter().map(|b| &b.flows), &mut buf),
                ),
                _ => continue,
            };
            let mut parts: Vec<Piece> = Vec::with_capacity(batches.len() + 2);
            match kind {
                Part::V5 => {
                    parts.push(Piece::Bytes(copy::HEADER));
                    parts.extend(
                        batches
                            .iter()
                            .filter(|b| b.v5.rows > 0)
                            .map(|b| Piece::V5(&b.v5)),
                    );
                    parts.push(Piece::Bytes(copy::TRAILER));
                }
                Part::Columns => parts.push(Piece::Bytes(&buf)),
            }
            let datagrams = || {
                batches.iter().flat_map(move |b| match kind {
                    Part::V5 => b.v5.datagrams.iter(),
                    Part::Columns => b.flows.datagrams.iter(),
                })
            };
            let marker = Marker {
                writer: marker_writer,
                seq: next_seq,
            };
            let copy_started = Instant::now();
            let mut result = Err(WriteError::Unavailable("database down".into()));
            // The endpoint whose spool takes the COPY if no endpoint commits it.
            let mut spool_at = first;
            if !sh.spool_only.load(Relaxed) {
                let range = received_range(datagrams());
                for i in in_turn(&sh.routes, first) {
                    let route = &sh.routes[i];
                    if !route.health.is_up() {
                        continue;
                    }
                    spool_at = i;
                    sinks[i].set_received_range(range);
                    let r = sinks[i].write_copy_parts(&parts, shape, part_rows, marker, 0);
                    let Err(e) = &r else {
                        result = r;
                        break;
                    };
                    sh.counters.write_errors.fetch_add(1, Relaxed);
                    if e.is_down() {
                        route.health.mark_down(e);
                    } else {
                        tracing::warn!(
                            writer = cfg.id,
                            rows = part_rows,
                            "COPY refused, spooled for replay (which keeps every row it can and dead-letters the rest): {e}"
                        );
                    }
                    // Nothing committed there: the next endpoint up may take it. Otherwise
                    // (refused rows, a COMMIT without reply) it is that database's.
                    let elsewhere = matches!(e, WriteError::Unavailable(_) | WriteError::Config(_));
                    result = r;
                    if !elsewhere {
                        break;
                    }
                }
            }
            next_seq += 1;
            match result {
                Ok(_) => {
                    cfg.recorders
                        .record_duration(Stage::Copy, copy_started.elapsed());
                    let committed_us = unix_now_us();
                    cfg.recorders.record_many(
                        Stage::EndToEnd,
                        datagrams().map(|d| {
                            let waited = (committed_us - d.received_us).max(1) as u64;
                            (waited, u64::from(d.count))
                        }),
                    );
                    sh.counters
                        .rows_written
                        .fetch_add(part_rows as u64, Relaxed);
                    sh.counters.copies.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    all_committed = false;
                    let spool = sh.routes.get(spool_at).and_then(|r| r.spool.as_ref());
                    let stored = match spool {
                        Some(spool) => {
                            spool_copy(spool, &sh.spool_counters, marker, shape, &parts, part_rows)
                        }
                        None => false,
                    };
                    if !stored {
                        all_stored = false;
                        if spool.is_none() {
                            // With a spool, its counters say why the rows were dropped.
                            sh.counters
                                .rows_dropped
                                .fetch_add(part_rows as u64, Relaxed);
                        }
                    }
                }
            }
        }
        if rows > 0 {
            if all_committed {
                sh.counters
                    .batches_written
                    .fetch_add(batches.len() as u64, Relaxed);
            }
            // Once per batch, when all its rows were committed or spooled.
            if all_stored {
                observe_exporters(&sh.exporters, batches.iter().map(|b| &**b));
            }
        }
        let samples: usize = batches.iter().map(|b| b.malformed.len()).sum();
        let up = in_turn(&sh.routes, first).find(|&i| sh.routes[i].health.is_up());
        match up {
            _ if samples == 0 => {}
            None => {
                sh.counters
                    .malformed_samples_skipped
                    .fetch_add(samples as u64, Relaxed);
            }
            Some(i) => match sinks[i].write_samples(&batches) {
                Ok(n) => {
                    sh.counters
                        .malformed_samples_written
                        .fetch_add(n as u64, Relaxed);
                }
                Err(e) => {
                    sh.counters.write_errors.fetch_add(1, Relaxed);
                    sh.counters
                        .malformed_samples_skipped
                        .fetch_add(samples as u64, Relaxed);
                    tracing::warn!(writer = cfg.id, "malformed samples not stored: {e}");
                }
            },
        }
        for b in batches.drain(..) {
            sh.handoff.give_back(b);
        }
    }
}

/// Takes sealed batches for one COPY into `batches` (empty on entry): every one queued, up to
/// `max_batches` and `cfg.max_rows` flows, and while the COPY is smaller than that, those
/// sealed until `cfg.gather` after the first one was. Returns the flows taken (none when
/// nothing was queued: the caller sleeps on the doorbell).
///
/// Why wait: a COPY has a fixed cost in PostgreSQL (a transaction with its marker row, the
/// aggregates' guard, and per COPY one tuple slot per row of the insert buffer, made and
/// dropped). Writers that keep up would otherwise write one 2,048-flow batch per COPY:
/// measured at 17,000 datagrams/s, 2,492 rows per COPY, and PostgreSQL spending 5 % of its
/// CPU making and dropping those slots. The wait is counted from the first batch's sealing,
/// so a batch that already waited in the queue that long is not held further.
fn gather(
    sh: &WriterShared,
    batches: &mut Vec<Batch>,
    cfg: &mut WriterConfig,
    max_batches: usize,
) -> usize {
    let mut rows = 0;
    let mut deadline: Option<Instant> = None;
    loop {
        while batches.len() < max_batches && rows < cfg.max_rows {
            let Some(b) = sh.handoff.pop_full() else {
                break;
            };
            let sealed = match b.sealed_at {
                Some(sealed) => {
                    cfg.recorders
                        .record_duration(Stage::QueueWait, sealed.elapsed());
                    sealed
                }
                None => Instant::now(),
            };
            deadline.get_or_insert(sealed + cfg.gather);
            rows += b.len();
            batches.push(b);
        }
        let Some(until) = deadline else {
            return rows;
        };
        if batches.len() >= max_batches || rows >= cfg.max_rows || sh.shards_done.load(Relaxed) {
            return rows;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return rows;
        }
        sh.handoff.wait_full(left);
    }
}

fn unix_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::latency::Latency;

    /// A writer with a queue and nothing else (no database routes).
    fn parts(gather: Duration) -> (WriterShared, WriterConfig, Arc<Latency>) {
        let latency = Arc::new(Latency::new());
        let sh = WriterShared {
            handoff: Arc::new(Handoff::new(8, 8, 4)),
            counters: Arc::default(),
            spool_counters: Arc::default(),
            exporters: Arc::default(),
            shards_done: Arc::default(),
            spool_only: Arc::default(),
            routes: Vec::new(),
        };
        let cfg = WriterConfig {
            id: 0,
            recorders: latency.recorders(),
            max_rows: 100,
            gather,
        };
        (sh, cfg, latency)
    }

    /// Queues a batch of `rows` flows (v5 rows, counted only) sealed now.
    fn queue(sh: &WriterShared, rows: usize) {
        let mut b = sh.handoff.take_empty().expect("a free batch");
        b.v5.rows = rows;
        b.sealed_at = Some(Instant::now());
        assert!(sh.handoff.push_full(b).is_ok());
    }

    #[test]
    fn a_copy_gathers_the_batches_sealed_within_the_window() {
        let (sh, mut cfg, _l) = parts(Duration::from_secs(5));
        queue(&sh, 10);
        let late = {
            let sh = sh.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                queue(&sh, 20);
            })
        };
        let mut batches = Vec::new();
        let started = Instant::now();
        // Up to two batches: returns as soon as the second arrives, well before the window ends.
        assert_eq!(gather(&sh, &mut batches, &mut cfg, 2), 30);
        assert_eq!(batches.len(), 2);
        assert!(started.elapsed() < Duration::from_secs(4));
        late.join().unwrap();
    }

    #[test]
    fn the_window_ends_the_gathering_and_counts_from_the_sealing() {
        let (sh, mut cfg, _l) = parts(Duration::from_millis(400));
        queue(&sh, 10);
        std::thread::sleep(Duration::from_millis(450));
        // Sealed longer ago than the window: written at once, alone.
        let mut batches = Vec::new();
        let started = Instant::now();
        assert_eq!(gather(&sh, &mut batches, &mut cfg, 16), 10);
        assert!(started.elapsed() < Duration::from_millis(300));
        // A fresh batch waits out the window for company that does not come.
        batches.clear();
        queue(&sh, 5);
        let started = Instant::now();
        assert_eq!(gather(&sh, &mut batches, &mut cfg, 16), 5);
        assert!(started.elapsed() >= Duration::from_millis(300));
        // Nothing queued: returns at once with nothing.
        batches.clear();
        assert_eq!(gather(&sh, &mut batches, &mut cfg, 16), 0);
        assert!(batches.is_empty());
    }

    #[test]
    fn a_stop_or_the_row_limit_ends_the_gathering_at_once() {
        let (sh, mut cfg, _l) = parts(Duration::from_secs(30));
        queue(&sh, 60);
        queue(&sh, 60);
        queue(&sh, 60);
        let mut batches = Vec::new();
        // max_rows 100: the second batch reaches it, the third waits for the next COPY.
        assert_eq!(gather(&sh, &mut batches, &mut cfg, 16), 120);
        batches.clear();
        sh.shards_done.store(true, Relaxed);
        let started = Instant::now();
        assert_eq!(gather(&sh, &mut batches, &mut cfg, 16), 60);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn copy_context_gives_the_row() {
        assert_eq!(copy_line("COPY flows, line 17"), Some(17));
        assert_eq!(
            copy_line("COPY flows, line 3, column protocol: \"300\""),
            Some(3)
        );
        assert_eq!(copy_line("SQL statement"), None);
    }
}
