//! Batches the writers cannot take in time, to the spool: the spill thread, and the shards'
//! own [`Overflow`] for when even that is not fast enough.
//!
//! When the writers fall behind (PostgreSQL slower than the traffic for a while: a
//! checkpoint, a long query, a burst), sealed batches wait in the hand-off queue. Once it
//! holds [`Handoff::spill_at`] batches, the **spill thread** ([`run`]) takes the oldest
//! ones beyond that mark and writes them to the spool, several batches to a segment (one
//! fsync for all of them), with a marker of its own. The replayer stores them once the
//! database has room, exactly once like any segment. So a shard never waits for a disk:
//! fsyncs on a shard's thread stall its receive loop, and the socket buffer overflows
//! into kernel drops (seen in every benchmark step just beyond capacity before the thread
//! existed).
//!
//! Only when the queue is full all the same, because the disk takes less than the surplus,
//! does a shard write the batch itself through its [`SpoolOverflow`] (counted as
//! `queue_full`). Rows the spill thread moves are counted in `rows_spilled` as well as in
//! `rows_spooled`. Malformed-datagram samples riding in a spooled batch are not kept (the
//! per-reason counts of malformed datagrams stay exact; only that evidence is skipped).
//!
//! Reads batches from [`crate::flow::handoff`], writes segments through
//! [`super::spool`], returns the batches to the hand-off's pool.

use std::sync::{Arc, Mutex};

use crossbeam_utils::CachePadded;

use super::copy::{self, Piece};
use super::spool::Marker;
use super::writer::{in_turn, new_marker_writer, observe_exporters, spool_copy, Route};
use crate::flow::batch::FlowBatch;
use crate::flow::handoff::{Batch, Handoff, Overflow};
use crate::obs::exporters::ExporterTable;
use crate::obs::stats::SpoolCounters;

/// Most batches the spill thread writes to one segment.
pub const MAX_BATCHES_PER_SEGMENT: usize = 16;

/// Writes batches to the spool of an endpoint that is up, in turn, so they are replayed
/// soon (any in turn when none is), with markers of its own: the v5 tuples as they are and
/// the flows in columns encoded, a segment each.
pub struct SpoolOverflow {
    pub routes: Vec<Route>,
    pub counters: Arc<CachePadded<SpoolCounters>>,
    pub exporters: Arc<Mutex<ExporterTable>>,
    marker_writer: i64,
    next_seq: i64,
    buf: Vec<u8>,
}

impl SpoolOverflow {
    pub fn new(
        routes: Vec<Route>,
        counters: Arc<CachePadded<SpoolCounters>>,
        exporters: Arc<Mutex<ExporterTable>>,
    ) -> Self {
        Self {
            routes,
            counters,
            exporters,
            marker_writer: new_marker_writer(),
            next_seq: 0,
            buf: Vec::new(),
        }
    }

    /// Writes `batches` to one spool (a segment for their v5 tuples, one for their columns);
    /// returns the rows now on disk.
    pub fn spool(&mut self, batches: &[&FlowBatch]) -> u64 {
        let tuple_rows: usize = batches.iter().map(|b| b.v5.rows).sum();
        let column_rows: usize = batches.iter().map(|b| b.flows.len()).sum();
        if tuple_rows + column_rows == 0 {
            return 0;
        }
        let first = self.next_seq as usize % self.routes.len().max(1);
        let with_spool = |i: &usize| self.routes[*i].spool.is_some();
        let Some(at) = in_turn(&self.routes, first)
            .filter(with_spool)
            .find(|&i| self.routes[i].health.is_up())
            .or_else(|| in_turn(&self.routes, first).find(with_spool))
        else {
            return 0;
        };
        let Some(spool) = self.routes[at].spool.clone() else {
            return 0;
        };
        let mut stored = 0;
        let mut all = true;
        if tuple_rows > 0 {
            let marker = self.next_marker();
            let mut parts: Vec<Piece> = Vec::with_capacity(batches.len() + 2);
            parts.push(Piece::Bytes(copy::HEADER));
            parts.extend(batches.iter().map(|b| Piece::V5(&b.v5)));
            parts.push(Piece::Bytes(copy::TRAILER));
            let ok = spool_copy(
                &spool,
                &self.counters,
                marker,
                copy::V5_SHAPE,
                &parts,
                tuple_rows,
            );
            all &= ok;
            stored += if ok { tuple_rows } else { 0 };
        }
        if column_rows > 0 {
            let shape = copy::encode_copy(batches.iter().map(|b| &b.flows), &mut self.buf);
            let marker = self.next_marker();
            let ok = spool_copy(
                &spool,
                &self.counters,
                marker,
                shape,
                &[Piece::Bytes(&self.buf)],
                column_rows,
            );
            all &= ok;
            stored += if ok { column_rows } else { 0 };
        }
        if all {
            observe_exporters(&self.exporters, batches.iter().copied());
        }
        stored as u64
    }

    fn next_marker(&mut self) -> Marker {
        let marker = Marker {
            writer: self.marker_writer,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        marker
    }
}

impl Overflow for SpoolOverflow {
    fn absorb(&mut self, batch: &FlowBatch) {
        self.spool(&[batch]);
    }
}

/// Runs the spill thread until [`Handoff::close_spill`]: whenever the queue holds
/// [`Handoff::spill_at`] batches or more, takes the oldest beyond the mark (up to
/// [`MAX_BATCHES_PER_SEGMENT`] at a time) to the spool and returns them to the pool.
pub fn run(handoff: Arc<Handoff>, mut overflow: SpoolOverflow) {
    let mut batches: Vec<Batch> = Vec::with_capacity(MAX_BATCHES_PER_SEGMENT);
    while handoff.wait_spill() {
        while batches.len() < MAX_BATCHES_PER_SEGMENT {
            match handoff.pop_spill() {
                Some(b) => batches.push(b),
                None => break,
            }
        }
        if batches.is_empty() {
            continue;
        }
        let rows: usize = batches.iter().map(|b| b.len()).sum();
        let refs: Vec<&FlowBatch> = batches.iter().map(|b| &**b).collect();
        let stored = overflow.spool(&refs);
        drop(refs);
        overflow
            .counters
            .rows_spilled
            .fetch_add(stored, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(
            rows,
            stored,
            batches = batches.len(),
            "writers behind: spilled"
        );
        for b in batches.drain(..) {
            handoff.give_back(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::stats::SpoolGauges;
    use crate::store::health::Health;
    use crate::store::spool::{Identity, Spool};
    use std::sync::atomic::Ordering::Relaxed;

    /// A batch of one v5 datagram of `rows` flows whose source address ends in `tag`.
    fn batch(h: &Handoff, tag: u8, rows: usize) -> Batch {
        use nfpg_wire::v5::encode::{datagram, Header, Record};
        let mut b = h.take_empty().expect("a free batch");
        let record = Record {
            src_addr: [10, 0, 0, tag],
            packets: 1,
            octets: 100,
            ..Record::default()
        };
        let header = Header {
            sys_uptime: 1_000,
            unix_secs: 1_700_000_000,
            ..Header::default()
        };
        let data = datagram(&header, &vec![record; rows]);
        let meta = crate::flow::batch::DatagramMeta {
            exporter: crate::flow::batch::v4_to_u128(0x7f00_0001),
            received_us: 1_700_000_000_000_000,
        };
        let window = (i64::MAX / 4, i64::MAX / 4);
        copy::v5_rows(&data, 0x7f00_0001, &meta, window, &mut b.v5).expect("a v5 datagram");
        b
    }

    /// The tuples of `batches`' v5 rows, one after the other.
    fn tuples_of(batches: &[&Batch]) -> Vec<u8> {
        let pieces: Vec<Piece> = batches.iter().map(|b| Piece::V5(&b.v5)).collect();
        copy::concat(&pieces)
    }

    /// With 8 batches queued (the mark at 6), the thread takes the 3 oldest to one segment
    /// (one fsync), counts them as spilled and spooled, and returns them to the pool.
    #[test]
    fn the_spill_thread_takes_the_oldest_surplus_to_one_segment() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity {
            server: "host=localhost port=5432".into(),
            database: "flows".into(),
            schema: "netflow".into(),
        };
        let gauges = Arc::new(SpoolGauges::default());
        let spool = Arc::new(Spool::open(dir.path(), 1 << 20, identity, gauges.clone()).unwrap());
        let routes = vec![Route {
            health: Arc::new(Health::new(gauges)),
            spool: Some(spool.clone()),
        }];
        let counters: Arc<CachePadded<SpoolCounters>> = Arc::default();
        let handoff = Arc::new(Handoff::new(8, 8 + MAX_BATCHES_PER_SEGMENT, 4));
        let mut expected = Vec::new();
        for tag in 0..8u8 {
            let b = batch(&handoff, tag, 2);
            if tag < 3 {
                expected.extend(tuples_of(&[&b]));
            }
            assert!(handoff.push_full(b).is_ok());
        }
        let overflow = SpoolOverflow::new(routes, counters.clone(), Arc::default());
        let thread = {
            let h = handoff.clone();
            std::thread::spawn(move || run(h, overflow))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while counters.rows_spilled.load(Relaxed) < 6 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        handoff.close_spill();
        thread.join().unwrap();
        let c = counters.read();
        assert_eq!(
            (c.rows_spilled, c.rows_spooled, c.segments_spooled),
            (6, 6, 1)
        );
        assert_eq!(handoff.depth(), 5, "the writers' share stays queued");
        let segs = spool.list().unwrap();
        assert_eq!(segs.len(), 1);
        let seg = spool.read(&segs[0]).unwrap();
        assert_eq!(seg.header.rows, 6);
        assert!(seg.tuples == expected, "the oldest three, in order");
        assert_eq!(seg.tuples.len(), 6 * copy::V5_TUPLE_LEN);
        let next = handoff.pop_full().unwrap();
        assert_eq!(
            next.v5.records[3], 3,
            "the fourth batch is the writers' next"
        );
        // The pool has the spilled batches back: 16 spare + 3 returned, 1 taken above.
        let mut free = 0;
        while handoff.take_empty().is_some() {
            free += 1;
        }
        assert_eq!(free, MAX_BATCHES_PER_SEGMENT + 3);
    }
}
