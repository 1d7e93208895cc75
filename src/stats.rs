//! Counters of every pipeline stage and the statistics line.
//!
//! Each shard and writer owns a cache-padded block of atomics that only it writes, added to
//! once per receive batch or per COPY (never per flow). The statistics thread reads them
//! into a [`Snapshot`], logs a line every interval, and prints the final one as JSON at exit.
//! Every datagram ends in exactly one of: decoded, malformed (by reason), or still queued in
//! the kernel when we stopped; every decoded flow in: written, or dropped by a writer (with
//! the error logged).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use serde::Serialize;

use crate::v5::Reason;

#[derive(Default)]
pub struct ShardCounters {
    pub datagrams: AtomicU64,
    pub decoded_datagrams: AtomicU64,
    pub flows: AtomicU64,
    pub malformed: [AtomicU64; Reason::COUNT],
    /// The kernel's running total of drops on this shard's socket.
    pub kernel_drops: AtomicU64,
    /// Times the shard found the full queue at capacity and waited.
    pub queue_full: AtomicU64,
    pub batches: AtomicU64,
}

#[derive(Default)]
pub struct WriterCounters {
    pub rows_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub copies: AtomicU64,
    pub write_errors: AtomicU64,
    pub rows_dropped: AtomicU64,
    pub samples_written: AtomicU64,
}

/// All counters, shared between the threads that write them and the one that reports.
#[derive(Clone)]
pub struct Counters {
    pub shards: Vec<Arc<CachePadded<ShardCounters>>>,
    pub writers: Vec<Arc<CachePadded<WriterCounters>>>,
    /// The host's UDP receive-buffer errors when the collector started.
    rcvbuf_errors_at_start: Option<u64>,
}

impl Counters {
    pub fn new(shards: usize, writers: usize) -> Self {
        Self {
            shards: (0..shards).map(|_| Arc::default()).collect(),
            writers: (0..writers).map(|_| Arc::default()).collect(),
            rcvbuf_errors_at_start: crate::recv::socket::udp_rcvbuf_errors(),
        }
    }

    pub fn snapshot(&self, queue_depth: usize) -> Snapshot {
        let mut s = Snapshot {
            queue_depth,
            ..Default::default()
        };
        for (i, c) in self.shards.iter().enumerate() {
            let shard = ShardSnapshot {
                shard: i,
                datagrams: c.datagrams.load(Relaxed),
                flows: c.flows.load(Relaxed),
                malformed: c.malformed.iter().map(|m| m.load(Relaxed)).sum(),
                kernel_drops: c.kernel_drops.load(Relaxed),
                queue_full: c.queue_full.load(Relaxed),
            };
            s.datagrams += shard.datagrams;
            s.decoded_datagrams += c.decoded_datagrams.load(Relaxed);
            s.flows += shard.flows;
            s.kernel_drops += shard.kernel_drops;
            s.queue_full += shard.queue_full;
            s.batches += c.batches.load(Relaxed);
            for r in Reason::ALL {
                s.malformed.add(r, c.malformed[r as usize].load(Relaxed));
            }
            s.shards.push(shard);
        }
        for c in &self.writers {
            s.rows_written += c.rows_written.load(Relaxed);
            s.copies += c.copies.load(Relaxed);
            s.write_errors += c.write_errors.load(Relaxed);
            s.rows_dropped += c.rows_dropped.load(Relaxed);
            s.malformed_samples_written += c.samples_written.load(Relaxed);
        }
        s.host_udp_rcvbuf_errors = crate::recv::socket::udp_rcvbuf_errors()
            .zip(self.rcvbuf_errors_at_start)
            .map(|(now, start)| now.saturating_sub(start));
        s
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct MalformedByReason {
    pub total: u64,
    pub too_short: u64,
    pub bad_version: u64,
    pub bad_count: u64,
    pub bad_length: u64,
    pub truncated: u64,
}

impl MalformedByReason {
    fn add(&mut self, r: Reason, n: u64) {
        self.total += n;
        *match r {
            Reason::TooShort => &mut self.too_short,
            Reason::BadVersion => &mut self.bad_version,
            Reason::BadCount => &mut self.bad_count,
            Reason::BadLength => &mut self.bad_length,
            Reason::Truncated => &mut self.truncated,
        } += n;
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub datagrams: u64,
    pub flows: u64,
    pub malformed: u64,
    pub kernel_drops: u64,
    pub queue_full: u64,
}

/// Totals at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Datagrams received by all shards.
    pub datagrams: u64,
    /// Of those, decoded (the rest are malformed).
    pub decoded_datagrams: u64,
    /// Flows decoded.
    pub flows: u64,
    pub malformed: MalformedByReason,
    /// Datagrams the kernel dropped on our sockets (receive buffers full).
    pub kernel_drops: u64,
    /// UDP receive-buffer errors of the whole host since this collector started
    /// (/proc/net/snmp): all sockets, ours and others'.
    pub host_udp_rcvbuf_errors: Option<u64>,
    pub queue_full: u64,
    /// Batches sealed by the shards.
    pub batches: u64,
    pub queue_depth: usize,
    pub rows_written: u64,
    pub copies: u64,
    pub write_errors: u64,
    /// Flows decoded but not written (a writer gave up on a batch; logged as an error).
    pub rows_dropped: u64,
    pub malformed_samples_written: u64,
    pub shards: Vec<ShardSnapshot>,
    /// Percentiles per stage since start (filled in by the collector).
    pub latency: crate::latency::LatencySummary,
}
