//! The replayer thread: probes the database while it is down, and replays the spool's
//! segments in order once it is up, while the writers carry on with live traffic.
//!
//! A segment is committed with its own marker, so a segment whose rows are already in the
//! database (a COPY whose reply was lost, or a replay interrupted by a crash after COMMIT and
//! before the file was removed) is skipped, not stored twice. When PostgreSQL refuses rows,
//! the segment is split: the row PostgreSQL named (or, when it named none, each half) is
//! tried alone, and every range is committed with a marker of its own
//! (`part = (first + 1) << 32 | end`), so splitting is exactly-once too. A single row that is
//! still refused goes to the dead-letter directory with the error; every other row is stored.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use crossbeam_utils::CachePadded;

use super::copy::{HEADER, TRAILER};
use super::db::{prepare_schema, Schema};
use super::health::Health;
use super::spool::{read_header, Segment, Spool};
use super::writer::{PgSink, Sink, WriteError};
use crate::obs::stats::SpoolCounters;

/// Longest pause between probes of a database that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct Replayer {
    pub spool: Arc<Spool>,
    pub conninfo: String,
    pub schema: Schema,
    pub health: Arc<Health>,
    pub counters: Arc<CachePadded<SpoolCounters>>,
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

    /// The oldest segment of this spool's database, if any.
    fn next_segment(&self) -> Option<std::path::PathBuf> {
        let list = match self.spool.list() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("listing the spool: {e:#}");
                return None;
            }
        };
        list.into_iter().find(|p| {
            read_header(p)
                .map(|h| h.identity == *self.spool.identity())
                .unwrap_or(false)
        })
    }

    /// Replays one segment: every row committed exactly once or dead-lettered.
    pub fn replay(&self, sink: &mut dyn Sink, seg: &Segment) -> Result<Replayed, WriteError> {
        let offsets = seg
            .row_offsets()
            .map_err(|e| WriteError::Unavailable(format!("{e:#}")))?;
        let n = offsets.len() - 1;
        let marker = seg.header.marker;
        let mut out = Replayed::default();
        let mut buf = Vec::with_capacity(seg.tuples.len() + HEADER.len() + TRAILER.len());
        let mut todo = vec![(0usize, n)];
        while let Some((a, b)) = todo.pop() {
            let part = if (a, b) == (0, n) { 0 } else { part_of(a, b) };
            buf.clear();
            buf.extend_from_slice(HEADER);
            buf.extend_from_slice(&seg.tuples[offsets[a]..offsets[b]]);
            buf.extend_from_slice(TRAILER);
            match sink.write_copy(&buf, b - a, marker, part) {
                Ok(_) => out.rows += (b - a) as u64,
                Err(WriteError::Rejected { row, message }) => {
                    if b - a == 1 {
                        let tuples = &seg.tuples[offsets[a]..offsets[b]];
                        let path = self
                            .spool
                            .dead_letter(marker, a, tuples, 1, &message)
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
            let Some(path) = self.next_segment() else {
                pause(Duration::from_millis(100));
                continue;
            };
            let seg = match self.spool.read(&path) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("spool segment unreadable, left in place: {e:#}");
                    pause(MAX_BACKOFF);
                    continue;
                }
            };
            match self.replay(&mut sink, &seg) {
                Ok(done) => {
                    if let Err(e) = self.spool.remove(&seg) {
                        tracing::error!("{e:#}");
                        pause(MAX_BACKOFF);
                        continue;
                    }
                    self.counters.rows_replayed.fetch_add(done.rows, Relaxed);
                    self.counters
                        .rows_dead_lettered
                        .fetch_add(done.dead_lettered, Relaxed);
                    self.counters.segments_replayed.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    self.health.mark_down(&e);
                    pause(backoff);
                }
            }
        }
    }
}
