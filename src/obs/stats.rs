//! Counters of every pipeline stage, declared once.
//!
//! Each counter is one line in a `counters!` block below: its name and its help text.
//! From that one line come the atomic a thread adds to, the field of the JSON summary, the
//! `name=value` in the statistics line and the Prometheus family `nfpg_<name>_total` with
//! its help text. Malformed datagrams are counted per [`Reason`], whose names are declared
//! once in [`crate::flow::reason`].
//!
//! Each shard and writer owns a cache-padded block of atomics that only it writes, added to
//! once per receive batch or per COPY (never per flow). The collector's statistics loop reads
//! them into a [`Snapshot`], logs a line every interval, and prints the final one as JSON at
//! exit. Every datagram ends in exactly one of: decoded, malformed (by reason), not allowed
//! (its source is not on --allow-exporters), or still queued in the kernel when we stopped;
//! every decoded flow in: written, or dropped by a writer (with the error logged).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use serde::ser::SerializeMap;
use serde::Serialize;

use crate::flow::reason::Reason;

/// Declares a block of counters written by one kind of thread: `$atomics` (one `AtomicU64`
/// per counter) and `$totals` (the same fields as plain numbers, read at one moment), with
/// each counter's help text taken from its doc comment.
macro_rules! counters {
    (
        $(#[doc = $doc:literal])*
        $atomics:ident => $totals:ident {
            $( $( #[doc = $help:literal] )+ $name:ident, )*
        }
        $( extra { $( #[doc = $xdoc:literal] $xname:ident : $xty:ty, )* } )?
    ) => {
        $(#[doc = $doc])*
        #[derive(Default)]
        pub struct $atomics {
            $( $( #[doc = $help] )+ pub $name: AtomicU64, )*
            $( $( #[doc = $xdoc] pub $xname: $xty, )* )?
        }

        /// The counters' values at one moment (see the atomics' type for each field).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct $totals {
            $( $( #[doc = $help] )+ pub $name: u64, )*
        }

        impl $atomics {
            /// Reads every counter (relaxed: each value is exact, the set is not one instant).
            pub fn read(&self) -> $totals {
                $totals { $( $name: self.$name.load(Relaxed), )* }
            }
        }

        impl $totals {
            /// (name, help) of every counter, in declaration order.
            pub const FIELDS: &'static [(&'static str, &'static str)] =
                &[ $( (stringify!($name), concat!($($help),+)), )* ];

            /// Adds another thread's totals.
            pub fn add(&mut self, o: &Self) {
                $( self.$name += o.$name; )*
            }

            /// Every value, in declaration order (the order of `FIELDS`).
            pub fn values(&self) -> Vec<u64> {
                vec![ $( self.$name, )* ]
            }

            /// Calls `f(name, value)` for every counter, in declaration order.
            pub fn each(&self, mut f: impl FnMut(&'static str, u64)) {
                $( f(stringify!($name), self.$name); )*
            }
        }
    };
}

counters! {
    /// Counters one shard writes (labelled `shard` in the metrics).
    ShardCounters => ShardTotals {
        /// Datagrams received.
        datagrams,
        /// Datagrams decoded (the rest are malformed).
        decoded_datagrams,
        /// Flows decoded.
        flows,
        /// Datagrams the kernel dropped on this shard's socket (receive buffer full).
        kernel_drops,
        /// Times the shard found the writers' queue full (even with the spill thread taking
        /// the surplus to the spool): it spooled the batch itself, or without a spool waited.
        queue_full,
        /// Batches sealed and queued for the writers.
        batches,
        /// Datagrams still arriving when a stop's drain time ran out: counted, not decoded.
        left_at_stop,
        /// Receive calls that failed (logged; the shard retries after a pause).
        receive_errors,
        /// Times io_uring found every receive buffer in use and the receive was re-armed. The
        /// datagrams wait in the socket buffer meanwhile (kernel_drops counts any it cannot
        /// hold), so a steady count under load is normal, not loss.
        ring_exhausted,
        /// io_uring completions whose message header could not be parsed (datagram lost).
        unparsed_completions,
        /// Datagrams from sources not on --allow-exporters, dropped before decoding.
        not_allowed,
        /// Flows stored with time_suspect set: their times lie more than --max-ahead after
        /// their arrival, or their end more than --max-behind before it.
        flows_time_suspect,
    }
    extra {
        /// Malformed datagrams, indexed by `Reason as usize`.
        malformed: [AtomicU64; Reason::COUNT],
        /// The busiest sources of `not_allowed` datagrams (published by the shard).
        not_allowed_sources: std::sync::Mutex<crate::obs::top::TopSources>,
    }
}

counters! {
    /// Counters one writer writes (labelled `writer` in the metrics).
    WriterCounters => WriterTotals {
        /// Flow rows committed to PostgreSQL.
        rows_written,
        /// Batches whose rows were committed.
        batches_written,
        /// COPY statements committed.
        copies,
        /// Failed write attempts (each retried or, after the last, dropped).
        write_errors,
        /// Decoded rows a writer could neither commit nor spool, without a spool to say why.
        rows_dropped,
        /// Malformed datagrams sampled into the database.
        malformed_samples_written,
        /// Malformed samples not stored because the database was down (the per-reason
        /// counts stay exact; only the evidence is skipped).
        malformed_samples_skipped,
    }
}

counters! {
    /// Counters of the durable spool, added to by shards, writers and the replayer.
    SpoolCounters => SpoolTotals {
        /// Rows written to spool segments (database unreachable, COPY failing, writers behind).
        rows_spooled,
        /// Spool segments written.
        segments_spooled,
        /// Rows the spill thread moved from the writers' queue to the spool because the
        /// writers were behind (also counted in rows_spooled).
        rows_spilled,
        /// Rows committed to PostgreSQL from the spool.
        rows_replayed,
        /// Spool segments replayed and removed.
        segments_replayed,
        /// Rows PostgreSQL refused, written to the spool's dead-letter directory.
        rows_dead_lettered,
        /// Rows dropped because the spool was full (--spool-max).
        rows_spool_full,
        /// Rows dropped because a spool segment could not be written (disk error).
        rows_spool_failed,
    }
}

counters! {
    /// Counters of NetFlow v9/IPFIX template and options handling, added to by the shards.
    DecodeCounters => DecodeTotals {
        /// Templates learned (first definition for an exporter, domain and id).
        templates_learned,
        /// Templates redefined with a different layout.
        templates_changed,
        /// Templates the exporter withdrew.
        templates_withdrawn,
        /// New templates refused because --max-templates were already kept (their data is held
        /// and then given up).
        templates_refused,
        /// Templates that cannot be used (e.g. a field of an impossible length); their data is
        /// held until a usable definition comes.
        templates_unusable,
        /// Fields of learned templates that nfpg does not store (enterprise or unmapped ids).
        template_fields_ignored,
        /// Options data records read (sampling, exporter boot time).
        options_records,
        /// Options data sets that could not be read.
        options_malformed,
        /// Data sets held because their template was not known yet.
        sets_held,
        /// Held data sets decoded once their template arrived.
        held_sets_decoded,
        /// Held data sets given up: held longer than --template-hold-secs.
        held_sets_expired,
        /// Held data sets given up: more than --template-hold-bytes held for the exporter.
        held_sets_overflow,
        /// Sets with a reserved set id, skipped.
        reserved_sets,
    }
}

/// What the spool holds now and whether the database is reachable; set by the store.
#[derive(Default)]
pub struct SpoolGauges {
    /// Bytes of segments waiting for replay.
    pub bytes: AtomicU64,
    /// Segments waiting for replay.
    pub segments: AtomicU64,
    /// Segments kept for another database (or unreadable): never replayed.
    pub foreign_segments: AtomicU64,
    /// 1 while writers commit to PostgreSQL, 0 while they spool (with several database
    /// endpoints: how many take writes).
    pub database_up: AtomicU64,
}

impl ShardCounters {
    /// Malformed datagrams of this shard, by reason.
    pub fn malformed(&self) -> Malformed {
        let mut m = Malformed::default();
        for r in Reason::ALL {
            m.by_reason[r as usize] = self.malformed[r as usize].load(Relaxed);
        }
        m
    }
}

/// Malformed datagrams by reason; serialized as `{"total": n, "<reason>": n, …}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Malformed {
    pub by_reason: [u64; Reason::COUNT],
}

impl Malformed {
    pub fn total(&self) -> u64 {
        self.by_reason.iter().sum()
    }

    pub fn get(&self, r: Reason) -> u64 {
        self.by_reason[r as usize]
    }

    fn add(&mut self, o: &Self) {
        for (a, b) in self.by_reason.iter_mut().zip(o.by_reason) {
            *a += b;
        }
    }
}

impl Serialize for Malformed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(Reason::COUNT + 1))?;
        m.serialize_entry("total", &self.total())?;
        for r in Reason::ALL {
            m.serialize_entry(r.as_str(), &self.get(r))?;
        }
        m.end()
    }
}

/// All counters, shared between the threads that write them and those that report.
#[derive(Clone)]
pub struct Counters {
    pub shards: Vec<Arc<CachePadded<ShardCounters>>>,
    pub writers: Vec<Arc<CachePadded<WriterCounters>>>,
    pub spool: Arc<CachePadded<SpoolCounters>>,
    pub spool_gauges: Arc<SpoolGauges>,
    pub decode: Arc<CachePadded<DecodeCounters>>,
    /// The host's UDP receive-buffer errors when the collector started.
    rcvbuf_errors_at_start: Option<u64>,
}

/// One shard's part of a [`Snapshot`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShardSnapshot {
    pub shard: usize,
    #[serde(flatten)]
    pub totals: ShardTotals,
    /// Malformed datagrams of this shard, all reasons.
    pub malformed: u64,
}

/// One source of a top list.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SourceCount {
    pub source: std::net::IpAddr,
    pub datagrams: u64,
    /// Most by which `datagrams` may be too high.
    pub error: u64,
}

/// Totals at one moment: every counter summed over its threads, plus the gauges.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    #[serde(flatten)]
    pub shard: ShardTotals,
    #[serde(flatten)]
    pub writer: WriterTotals,
    #[serde(flatten)]
    pub spool: SpoolTotals,
    #[serde(flatten)]
    pub decode: DecodeTotals,
    /// Bytes of spool segments waiting for replay.
    pub spool_bytes: u64,
    /// Spool segments waiting for replay.
    pub spool_segments: u64,
    /// Spool segments kept for another database, never replayed.
    pub spool_foreign_segments: u64,
    /// Whether writers were committing to PostgreSQL (not spooling) at this moment.
    pub database_up: bool,
    pub malformed: Malformed,
    /// UDP receive-buffer errors of the whole host since this collector started
    /// (/proc/net/snmp): all sockets, ours and others'.
    pub host_udp_rcvbuf_errors: Option<u64>,
    /// Sealed batches waiting for a writer.
    pub queue_depth: usize,
    pub shards: Vec<ShardSnapshot>,
    /// The busiest sources of `not_allowed` datagrams, busiest first (at most ten; a count
    /// may be over by at most its `error`).
    pub not_allowed_top: Vec<SourceCount>,
    /// Exporters tracked now for per-exporter statistics (filled in by the collector).
    pub exporters_tracked: u64,
    /// Exporters evicted from the table (idle, or the longest silent while it was full).
    pub exporters_evicted: u64,
    /// Datagrams of exporters not tracked because the table was full (flows stored).
    pub exporters_untracked_datagrams: u64,
    /// Datagrams whose per-exporter figures an eviction dropped unwritten (flows stored).
    pub exporters_evicted_unwritten_datagrams: u64,
    /// Percentiles per stage since start (filled in by the collector at exit).
    pub latency: crate::obs::latency::LatencySummary,
}

impl Counters {
    pub fn new(shards: usize, writers: usize) -> Self {
        Self {
            shards: (0..shards).map(|_| Arc::default()).collect(),
            writers: (0..writers).map(|_| Arc::default()).collect(),
            spool: Arc::default(),
            spool_gauges: Arc::default(),
            decode: Arc::default(),
            rcvbuf_errors_at_start: crate::obs::host::udp_rcvbuf_errors(),
        }
    }

    /// The `k` busiest sources of `not_allowed` datagrams over all shards: (address,
    /// datagrams, most by which that count may be high).
    pub fn not_allowed_top(&self, k: usize) -> Vec<(std::net::IpAddr, u64, u64)> {
        let mut top = crate::obs::top::TopSources::default();
        for c in &self.shards {
            top.merge(
                &c.not_allowed_sources
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()),
            );
        }
        top.top(k)
    }

    pub fn snapshot(&self, queue_depth: usize) -> Snapshot {
        let mut s = Snapshot {
            queue_depth,
            ..Default::default()
        };
        for (i, c) in self.shards.iter().enumerate() {
            let totals = c.read();
            let malformed = c.malformed();
            s.shard.add(&totals);
            s.malformed.add(&malformed);
            s.shards.push(ShardSnapshot {
                shard: i,
                totals,
                malformed: malformed.total(),
            });
        }
        s.not_allowed_top = self
            .not_allowed_top(10)
            .into_iter()
            .map(|(source, datagrams, error)| SourceCount {
                source,
                datagrams,
                error,
            })
            .collect();
        for c in &self.writers {
            s.writer.add(&c.read());
        }
        s.spool = self.spool.read();
        s.decode = self.decode.read();
        let g = &self.spool_gauges;
        s.spool_bytes = g.bytes.load(Relaxed);
        s.spool_segments = g.segments.load(Relaxed);
        s.spool_foreign_segments = g.foreign_segments.load(Relaxed);
        s.database_up = g.database_up.load(Relaxed) >= 1;
        s.host_udp_rcvbuf_errors = crate::obs::host::udp_rcvbuf_errors()
            .zip(self.rcvbuf_errors_at_start)
            .map(|(now, start)| now.saturating_sub(start));
        s
    }
}

impl Snapshot {
    /// The statistics line: every counter as `name=value`, then the gauges and the rates of
    /// decoding and writing since `prev`.
    pub fn line(&self, prev: &Snapshot, secs: f64, queue_capacity: usize) -> String {
        let mut o = String::with_capacity(512);
        let mut put = |name: &str, v: u64| {
            let _ = write!(o, "{name}={v} ");
        };
        self.shard.each(&mut put);
        self.writer.each(&mut put);
        self.spool.each(&mut put);
        self.decode.each(&mut put);
        put("malformed", self.malformed.total());
        let secs = secs.max(1e-9);
        let _ = write!(
            o,
            "spool={}B/{}seg database_up={} host_rcvbuf_errors={} queue={}/{} rate={:.0} flows/s written={:.0} rows/s",
            self.spool_bytes,
            self.spool_segments,
            self.database_up,
            self.host_udp_rcvbuf_errors
                .map_or("n/a".to_string(), |v| v.to_string()),
            self.queue_depth,
            queue_capacity,
            self.shard.flows.saturating_sub(prev.shard.flows) as f64 / secs,
            self.writer
                .rows_written
                .saturating_sub(prev.writer.rows_written) as f64
                / secs,
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_threads_and_serializes_flat() {
        let c = Counters::new(2, 1);
        c.shards[0].datagrams.fetch_add(3, Relaxed);
        c.shards[1].datagrams.fetch_add(4, Relaxed);
        c.shards[1].malformed[Reason::BadCount as usize].fetch_add(2, Relaxed);
        c.writers[0].rows_written.fetch_add(90, Relaxed);
        let s = c.snapshot(1);
        assert_eq!(s.shard.datagrams, 7);
        assert_eq!(s.malformed.total(), 2);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["datagrams"], 7);
        assert_eq!(v["rows_written"], 90);
        assert_eq!(v["malformed"]["total"], 2);
        assert_eq!(v["malformed"]["bad_count"], 2);
        assert_eq!(v["shards"][1]["datagrams"], 4);
        assert_eq!(v["shards"][1]["malformed"], 2);
        let line = s.line(&Snapshot::default(), 1.0, 8);
        assert!(line.contains("datagrams=7 "), "{line}");
        assert!(line.contains("rows_written=90 "), "{line}");
    }

    #[test]
    fn every_counter_has_help_and_a_unique_name() {
        let mut names: Vec<&str> = ShardTotals::FIELDS
            .iter()
            .chain(WriterTotals::FIELDS)
            .chain(SpoolTotals::FIELDS)
            .chain(DecodeTotals::FIELDS)
            .map(|(n, help)| {
                assert!(!help.trim().is_empty(), "{n} has no help text");
                *n
            })
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a counter name is declared twice");
    }
}
