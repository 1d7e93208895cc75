//! The replayer thread: probes the database while it is down, and replays the spool's
//! segments in order once it is up, while the writers carry on with live traffic.
//!
//! Consecutive segments are joined into one COPY of up to 100,000 rows, each segment's marker
//! inserted in the same transaction; if that COPY is refused, or one of the markers is already
//! there, each segment is replayed on its own as below.
//!
//! Every replayed COPY also tells the sink its rows' arrival times (read from the tuples), so
//! rows that arrived before the hourly aggregates' watermark are aggregated in the transaction
//! that stores them (`PgSink`).
//!
//! A segment is committed with its own marker (and the instance name it carries), so a segment whose rows are already in the
//! database (a COPY whose reply was lost, or a replay interrupted by a crash after COMMIT and
//! before the file was removed) is skipped, not stored twice. When PostgreSQL refuses rows,
//! the segment is split: the row PostgreSQL named (or, when it named none, each half) is
//! tried alone, and every range is committed with a marker of its own
//! (`part = (first + 1) << 32 | end`), so splitting is exactly-once too. A single row that is
//! still refused goes to the dead-letter directory with the error; every other row is stored.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use crossbeam_utils::CachePadded;

use super::copy::{self, HEADER, TRAILER};
use super::db::{prepare_schema, Schema};
use super::health::Health;
use super::spool::{read_header, Segment, Spool};
use super::writer::{Committed, PgSink, Sink, WriteError};
use crate::flow::handoff::Handoff;
use crate::obs::stats::SpoolCounters;

/// Most rows replayed in one COPY: consecutive segments are joined up to this.
const GROUP_ROWS: u64 = 100_000;

/// Longest pause between probes of a database that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct Replayer {
    pub spool: Arc<Spool>,
    pub conninfo: String,
    pub schema: Schema,
    pub health: Arc<Health>,
    pub counters: Arc<CachePadded<SpoolCounters>>,
    /// The live hand-off: while its writers are behind ([`Handoff::writers_behind`]), the
    /// replayer waits, so live batches get the database first and a replay never adds to
    /// the load that made the writers fall behind (which spilled more, which replayed more).
    pub live: Option<Arc<Handoff>>,
}

/// The marker part of rows `first..end` of a segment.
pub fn part_of(first: usize, end: usize) -> i64 {
    ((first as i64 + 1) << 32) | end as i64
}

/// What replaying one segment did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub rows: u64,
    pub dead_lettered: u64,
}

fn write_error(e: anyhow::Error) -> WriteError {
    match e.downcast_ref::<postgres::Error>() {
        Some(pe) => super::writer::classify(pe),
        None => WriteError::Unavailable(format!("{e:#}")),
    }
}

impl Replayer {
    /// Connects, applies migrations the first time, and says whether writes can go ahead.
    fn probe(&self, sink: &mut PgSink, schema_ready: &mut bool) -> Result<(), WriteError> {
        if !*schema_ready {
            prepare_schema(&self.conninfo, &self.schema).map_err(write_error)?;
            *schema_ready = true;
        }
        sink.client()?
            .simple_query("SELECT 1")
            .map_err(|e| super::writer::classify(&e))?;
        Ok(())
    }

    /// This database's segments, oldest first (read once per pass over the directory, not
    /// once per segment: a long outage leaves thousands).
    fn list_own(&self) -> VecDeque<std::path::PathBuf> {
        match self.spool.list() {
            Ok(l) => l
                .into_iter()
                .filter(|p| {
                    read_header(p)
                        .map(|h| h.identity == *self.spool.identity())
                        .unwrap_or(false)
                })
                .collect(),
            Err(e) => {
                tracing::warn!("listing the spool: {e:#}");
                VecDeque::new()
            }
        }
    }

    /// Replays `segs` (of one shape) as one COPY; on anything but a clean commit, one by one.
    fn replay_group(&self, sink: &mut PgSink, segs: &[Segment]) -> Result<Replayed, WriteError> {
        if segs.len() > 1 {
            let mut buf = Vec::with_capacity(
                segs.iter().map(|s| s.tuples.len()).sum::<usize>() + HEADER.len() + TRAILER.len(),
            );
            buf.extend_from_slice(HEADER);
            for s in segs {
                buf.extend_from_slice(&s.tuples);
            }
            buf.extend_from_slice(TRAILER);
            let markers: Vec<_> = segs
                .iter()
                .map(|s| (s.header.marker, s.header.rows as usize))
                .collect();
            // Their arrival times: rows that arrived before the aggregates' watermark are
            // added to the aggregates in the same transaction.
            sink.set_received_range(copy::received_range(
                &buf[HEADER.len()..buf.len() - TRAILER.len()],
            ));
            // A group holds one instance's segments (see `run`).
            sink.set_marker_instance(&segs[0].header.instance);
            match sink.write_group(&buf, segs[0].header.shape, &markers) {
                Ok(Committed::Now) => {
                    return Ok(Replayed {
                        rows: segs.iter().map(|s| s.header.rows).sum(),
                        dead_lettered: 0,
                    })
                }
                // A marker already there, or rows refused: each segment on its own below, with
                // its own marker.
                Ok(Committed::Already) | Err(WriteError::Rejected { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut out = Replayed::default();
        for s in segs {
            let r = self.replay(sink, s)?;
            out.rows += r.rows;
            out.dead_lettered += r.dead_lettered;
        }
        Ok(out)
    }

    /// Replays one segment: every row committed exactly once or dead-lettered.
    pub fn replay(&self, sink: &mut dyn Sink, seg: &Segment) -> Result<Replayed, WriteError> {
        let offsets = seg
            .row_offsets()
            .map_err(|e| WriteError::Unavailable(format!("{e:#}")))?;
        let n = offsets.len() - 1;
        let marker = seg.header.marker;
        // The marker as it was first tried: with the instance that tried it.
        sink.set_marker_instance(&seg.header.instance);
        let mut out = Replayed::default();
        let mut buf = Vec::with_capacity(seg.tuples.len() + HEADER.len() + TRAILER.len());
        let mut todo = vec![(0usize, n)];
        while let Some((a, b)) = todo.pop() {
            let part = if (a, b) == (0, n) { 0 } else { part_of(a, b) };
            buf.clear();
            buf.extend_from_slice(HEADER);
            buf.extend_from_slice(&seg.tuples[offsets[a]..offsets[b]]);
            buf.extend_from_slice(TRAILER);
            sink.set_received_range(copy::received_range(&seg.tuples[offsets[a]..offsets[b]]));
            match sink.write_copy(&buf, seg.header.shape, b - a, marker, part) {
                Ok(_) => out.rows += (b - a) as u64,
                Err(WriteError::Rejected { row, message }) => {
                    if b - a == 1 {
                        let tuples = &seg.tuples[offsets[a]..offsets[b]];
                        let path = self
                            .spool
                            .dead_letter(marker, seg.header.shape, a, tuples, 1, &message)
                            .map_err(|e| WriteError::Unavailable(format!("{e:#}")))?;
                        tracing::warn!(
                            "a row of {} refused by PostgreSQL, kept in {}: {message}",
                            seg.path.display(),
                            path.display()
                        );
                        out.dead_lettered += 1;
                        continue;
                    }
                    // The refused row alone, the rows around it as ranges; without a row
                    // number, the two halves. Ranges are pushed last-first so they run in order.
                    match row.filter(|r| (1..=b - a).contains(r)).map(|r| a + r - 1) {
                        Some(k) => {
                            if k + 1 < b {
                                todo.push((k + 1, b));
                            }
                            todo.push((k, k + 1));
                            if k > a {
                                todo.push((a, k));
                            }
                        }
                        None => {
                            let mid = a + (b - a) / 2;
                            todo.push((mid, b));
                            todo.push((a, mid));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Runs until `stop` is set.
    pub fn run(self, stop: Arc<AtomicBool>) {
        let mut sink = PgSink::new(&self.conninfo, &self.schema);
        let mut schema_ready = false;
        let mut backoff = Duration::from_millis(200);
        let mut queue: VecDeque<std::path::PathBuf> = VecDeque::new();
        let pause = |d: Duration| {
            let until = std::time::Instant::now() + d;
            while std::time::Instant::now() < until && !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        while !stop.load(Relaxed) {
            if !self.health.is_up() {
                match self.probe(&mut sink, &mut schema_ready) {
                    Ok(()) => {
                        self.health.mark_up();
                        backoff = Duration::from_millis(200);
                    }
                    Err(e) => {
                        self.health.note(&e, false);
                        pause(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            if self.live.as_ref().is_some_and(|h| h.writers_behind()) {
                pause(Duration::from_millis(50));
                continue;
            }
            if queue.is_empty() {
                queue = self.list_own();
                if queue.is_empty() {
                    pause(Duration::from_millis(100));
                    continue;
                }
            }
            // The oldest segments, as many as make one COPY of up to GROUP_ROWS rows of one shape
            // and one instance.
            let mut group: Vec<Segment> = Vec::new();
            let mut rows = 0u64;
            while let Some(path) = queue.front() {
                let seg = match self.spool.read(path) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("spool segment unreadable, left in place: {e:#}");
                        queue.pop_front();
                        continue;
                    }
                };
                if !group.is_empty()
                    && (seg.header.shape != group[0].header.shape
                        || seg.header.instance != group[0].header.instance
                        || rows + seg.header.rows > GROUP_ROWS)
                {
                    break;
                }
                rows += seg.header.rows;
                group.push(seg);
                queue.pop_front();
            }
            if group.is_empty() {
                continue;
            }
            match self.replay_group(&mut sink, &group) {
                Ok(done) => {
                    for seg in &group {
                        if let Err(e) = self.spool.remove(seg) {
                            tracing::error!("{e:#}");
                        }
                    }
                    self.counters.rows_replayed.fetch_add(done.rows, Relaxed);
                    self.counters
                        .rows_dead_lettered
                        .fetch_add(done.dead_lettered, Relaxed);
                    self.counters
                        .segments_replayed
                        .fetch_add(group.len() as u64, Relaxed);
                }
                Err(e) => {
                    // Not replayed: the same segments come first again once it is back.
                    queue.clear();
                    self.health.mark_down(&e);
                    pause(backoff);
                }
            }
        }
    }
}
