//! The in-memory history the charts draw: a bounded ring of totals taken every second by a
//! sampler thread of the dashboard's own (the collector's loop is not involved). Rates are
//! differences between samples, so a missed or late sample only widens one interval.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::flow::handoff::Handoff;
use crate::obs::stats::{Counters, Snapshot};

/// How often the sampler records.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples kept: 15 minutes at one a second.
pub const SAMPLES_KEPT: usize = 900;

/// Totals at one moment (each a running total since start, except `queue_depth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Unix time of the sample, milliseconds.
    pub t_ms: u64,
    pub datagrams: u64,
    pub flows: u64,
    pub rows_written: u64,
    pub rows_spooled: u64,
    /// Datagrams the kernel dropped on nfpg's sockets.
    pub kernel_drops: u64,
    /// Malformed datagrams, all reasons.
    pub malformed: u64,
    /// Datagrams from sources not on --allow-exporters.
    pub not_allowed: u64,
    /// Decoded rows neither stored nor spooled (writer drops, spool full, spool failed).
    pub rows_lost: u64,
    /// Sealed batches waiting for a writer.
    pub queue_depth: u64,
}

impl Sample {
    /// The totals of `s`, stamped `t_ms`.
    pub fn of(s: &Snapshot, t_ms: u64) -> Self {
        Sample {
            t_ms,
            datagrams: s.shard.datagrams,
            flows: s.shard.flows,
            rows_written: s.writer.rows_written,
            rows_spooled: s.spool.rows_spooled,
            kernel_drops: s.shard.kernel_drops,
            malformed: s.malformed.total(),
            not_allowed: s.shard.not_allowed,
            rows_lost: s.writer.rows_dropped + s.spool.rows_spool_full + s.spool.rows_spool_failed,
            queue_depth: s.queue_depth as u64,
        }
    }
}

/// Per-second rates between two samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Seconds between the two samples (0: not enough history yet, every rate 0).
    pub window_s: f64,
    pub datagrams_per_s: f64,
    pub flows_per_s: f64,
    pub rows_written_per_s: f64,
    pub kernel_drops_per_s: f64,
    pub malformed_per_s: f64,
    pub not_allowed_per_s: f64,
    pub rows_lost_per_s: f64,
}

impl Rates {
    /// The rates from `a` to the later `b`.
    pub fn between(a: &Sample, b: &Sample) -> Self {
        let secs = b.t_ms.saturating_sub(a.t_ms) as f64 / 1000.0;
        if secs <= 0.0 {
            return Rates::default();
        }
        let r = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        Rates {
            window_s: secs,
            datagrams_per_s: r(a.datagrams, b.datagrams),
            flows_per_s: r(a.flows, b.flows),
            rows_written_per_s: r(a.rows_written, b.rows_written),
            kernel_drops_per_s: r(a.kernel_drops, b.kernel_drops),
            malformed_per_s: r(a.malformed, b.malformed),
            not_allowed_per_s: r(a.not_allowed, b.not_allowed),
            rows_lost_per_s: r(a.rows_lost, b.rows_lost),
        }
    }
}

/// A bounded ring of samples, oldest first.
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    capacity: usize,
}

impl History {
    /// An empty history keeping the latest `capacity` samples (at least 2).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        History {
            samples: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    /// Records the totals of `s`, stamped now.
    pub fn record(&self, s: &Snapshot) {
        self.push(Sample::of(s, unix_ms()));
    }

    /// Adds a sample, pushing out the oldest when full.
    pub fn push(&self, sample: Sample) {
        let mut q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == self.capacity {
            q.pop_front();
        }
        q.push_back(sample);
    }

    /// The samples taken after `t_ms` (all of them for 0), oldest first.
    pub fn since(&self, t_ms: u64) -> Vec<Sample> {
        let q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let start = q.partition_point(|s| s.t_ms <= t_ms);
        q.range(start..).copied().collect()
    }

    pub fn len(&self) -> usize {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Rates over about the last `window`: from the newest sample at least that old (else the
    /// oldest) to the newest.
    pub fn rates(&self, window: Duration) -> Rates {
        let q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let Some(last) = q.back() else {
            return Rates::default();
        };
        let cutoff = last.t_ms.saturating_sub(window.as_millis() as u64);
        let first = q
            .iter()
            .rev()
            .find(|s| s.t_ms <= cutoff)
            .or(q.front())
            .copied()
            .unwrap_or(*last);
        Rates::between(&first, last)
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the sampler: every `every`, a snapshot of `counters` (with the queue depth of
/// `handoff`) goes into `history`. Runs for the life of the process.
pub fn start_sampler(
    history: Arc<History>,
    counters: Counters,
    handoff: Arc<Handoff>,
    every: Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("nfpg-dashboard-sampler".into())
        .spawn(move || loop {
            history.record(&counters.snapshot(handoff.depth()));
            std::thread::sleep(every);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_ms: u64, flows: u64) -> Sample {
        Sample {
            t_ms,
            flows,
            ..Sample::default()
        }
    }

    #[test]
    fn ring_is_bounded_and_keeps_the_newest() {
        let h = History::new(3);
        for i in 1..=5 {
            h.push(at(i * 1000, i * 10));
        }
        assert_eq!(h.len(), 3);
        let all = h.since(0);
        assert_eq!(
            all.iter().map(|s| s.t_ms).collect::<Vec<_>>(),
            [3000, 4000, 5000]
        );
        assert_eq!(h.since(4000).len(), 1);
        assert!(h.since(5000).is_empty());
    }

    #[test]
    fn rates_over_a_window() {
        let h = History::new(100);
        assert_eq!(h.rates(Duration::from_secs(5)), Rates::default());
        for i in 0..=10 {
            h.push(at(i * 1000, i * 100));
        }
        let r = h.rates(Duration::from_secs(5));
        assert_eq!(r.window_s, 5.0);
        assert_eq!(r.flows_per_s, 100.0);
        // Less history than the window: from the oldest.
        let r = h.rates(Duration::from_secs(60));
        assert_eq!(r.window_s, 10.0);
    }

    #[test]
    fn a_sample_takes_the_snapshot_totals() {
        let c = Counters::new(1, 1);
        c.shards[0]
            .flows
            .fetch_add(7, std::sync::atomic::Ordering::Relaxed);
        let s = Sample::of(&c.snapshot(2), 5);
        assert_eq!((s.flows, s.queue_depth, s.t_ms), (7, 2, 5));
    }
}
