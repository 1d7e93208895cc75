//! Latency and batch-fill histograms per pipeline stage (HdrHistogram).
//!
//! Each shard and writer thread holds [`Recorders`]: one `hdrhistogram::sync::Recorder` per
//! stage, written without locks (a recorder only synchronises when the collector asks for an
//! interval, once per `--hist-interval`). The collector owns [`Latency`]: every interval it
//! collects what the recorders saw, appends it to the `--hist-log` interval log (V2 +
//! deflate, readable by HdrHistogram's `HistogramLogProcessor` and plotter), and adds it to
//! the totals reported in the statistics line, on SIGUSR1 and at exit.
//!
//! Stages (tags in the log), in µs unless noted:
//! - `receive_to_seal`: first datagram of a batch received → batch sealed (one per batch)
//! - `queue_wait`: batch sealed → a writer takes it (one per batch)
//! - `copy`: one COPY statement, start to commit (one per COPY)
//! - `end_to_end`: datagram received → its rows committed (one per flow)
//! - `batch_fill`: flows per batch (a count, not a time)
#![forbid(unsafe_code)]

use std::time::Duration;

use hdrhistogram::sync::{Recorder, SyncHistogram};
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    ReceiveToSeal = 0,
    QueueWait = 1,
    Copy = 2,
    EndToEnd = 3,
    BatchFill = 4,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::ReceiveToSeal,
        Stage::QueueWait,
        Stage::Copy,
        Stage::EndToEnd,
        Stage::BatchFill,
    ];

    /// The tag in the interval log and the key in JSON summaries.
    pub fn tag(self) -> &'static str {
        match self {
            Stage::ReceiveToSeal => "receive_to_seal",
            Stage::QueueWait => "queue_wait",
            Stage::Copy => "copy",
            Stage::EndToEnd => "end_to_end",
            Stage::BatchFill => "batch_fill",
        }
    }

    /// Unit of the recorded values.
    pub fn unit(self) -> &'static str {
        match self {
            Stage::BatchFill => "flows",
            _ => "us",
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 hour at 3 significant digits; larger values saturate.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

/// One recorder per stage, for one thread.
pub struct Recorders {
    r: Vec<Recorder<u64>>,
}

impl Recorders {
    /// Records one value (saturating at the histogram's bound).
    #[inline]
    pub fn record(&mut self, stage: Stage, value: u64) {
        self.r[stage as usize].saturating_record(value.max(1));
    }

    /// Records `count` occurrences of one value.
    #[inline]
    pub fn record_n(&mut self, stage: Stage, value: u64, count: u64) {
        self.r[stage as usize].saturating_record_n(value.max(1), count);
    }

    /// Records a duration in µs.
    #[inline]
    pub fn record_duration(&mut self, stage: Stage, d: Duration) {
        self.record(stage, d.as_micros().min(u128::from(u64::MAX)) as u64);
    }
}

/// Percentiles of one stage.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Percentiles of every stage, as reported in summaries.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencySummary {
    pub receive_to_seal_us: Percentiles,
    pub queue_wait_us: Percentiles,
    pub copy_us: Percentiles,
    pub end_to_end_us: Percentiles,
    pub batch_fill_flows: Percentiles,
}

impl LatencySummary {
    pub fn of(hists: &[Histogram<u64>]) -> Self {
        Self {
            receive_to_seal_us: Percentiles::of(&hists[Stage::ReceiveToSeal as usize]),
            queue_wait_us: Percentiles::of(&hists[Stage::QueueWait as usize]),
            copy_us: Percentiles::of(&hists[Stage::Copy as usize]),
            end_to_end_us: Percentiles::of(&hists[Stage::EndToEnd as usize]),
            batch_fill_flows: Percentiles::of(&hists[Stage::BatchFill as usize]),
        }
    }

    /// One line for the log.
    pub fn line(&self) -> String {
        let f = |name: &str, p: &Percentiles, unit: &str| {
            format!(
                "{name}[{unit}] p50={} p90={} p99={} p99.9={} max={} n={}",
                p.p50, p.p90, p.p99, p.p999, p.max, p.count
            )
        };
        [
            f("receive_to_seal", &self.receive_to_seal_us, "us"),
            f("queue_wait", &self.queue_wait_us, "us"),
            f("copy", &self.copy_us, "us"),
            f("end_to_end", &self.end_to_end_us, "us"),
            f("batch_fill", &self.batch_fill_flows, "flows"),
        ]
        .join("; ")
    }
}

/// The collector's side: gathers intervals from all recorders and keeps the totals.
pub struct Latency {
    live: Vec<SyncHistogram<u64>>,
    total: Vec<Histogram<u64>>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Self {
            live: Stage::ALL
                .iter()
                .map(|_| new_histogram().into_sync())
                .collect(),
            total: Stage::ALL.iter().map(|_| new_histogram()).collect(),
        }
    }

    /// Recorders for one more thread.
    pub fn recorders(&self) -> Recorders {
        Recorders {
            r: self.live.iter().map(|h| h.recorder()).collect(),
        }
    }

    /// Collects what the recorders saw since the last call (waiting at most `wait` for busy
    /// threads), adds it to the totals and returns it, one histogram per stage.
    pub fn interval(&mut self, wait: Duration) -> Vec<Histogram<u64>> {
        let mut out = Vec::with_capacity(self.live.len());
        for (live, total) in self.live.iter_mut().zip(&mut self.total) {
            live.refresh_timeout(wait);
            let h: Histogram<u64> = (**live).clone();
            live.reset();
            let _ = total.add(&h);
            out.push(h);
        }
        out
    }

    /// Totals since start.
    pub fn totals(&self) -> &[Histogram<u64>] {
        &self.total
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_add_up_to_totals() {
        let mut lat = Latency::new();
        let mut a = lat.recorders();
        let mut b = lat.recorders();
        let t = std::thread::spawn(move || {
            for v in 1..=1000 {
                b.record(Stage::EndToEnd, v);
            }
            b
        });
        for _ in 0..10 {
            a.record_n(Stage::BatchFill, 30, 2);
        }
        let b = t.join().unwrap();
        drop((a, b)); // dropped recorders hand over what they hold
        let first = lat.interval(Duration::from_millis(100));
        assert_eq!(first[Stage::EndToEnd as usize].len(), 1000);
        assert_eq!(first[Stage::BatchFill as usize].len(), 20);
        let s = lat.summary();
        assert_eq!(s.end_to_end_us.count, 1000);
        assert_eq!(s.end_to_end_us.max, 1000);
        assert!((495..=505).contains(&s.end_to_end_us.p50));
        assert_eq!(s.batch_fill_flows.p50, 30);
        let second = lat.interval(Duration::from_millis(10));
        assert!(
            second.iter().all(|h| h.is_empty()),
            "intervals do not repeat"
        );
        assert_eq!(lat.summary().end_to_end_us.count, 1000);
    }
}
