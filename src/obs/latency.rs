//! Latency and batch-fill histograms per pipeline stage (HdrHistogram).
//!
//! Each shard and writer thread holds [`Recorders`]: one histogram per stage, behind a mutex
//! that only the collector ever contends for (once per `--hist-interval`, for the time of a
//! pointer swap). A thread records a few times per batch (a writer's per-datagram latencies
//! under one lock per COPY, [`Recorders::record_many`]). The collector owns [`Latency`]:
//! every interval it swaps each thread's histogram for a cleared spare, adds it into the
//! interval, clears it and uses it as the spare for the next thread; it appends the interval
//! to the `--hist-log` interval log (V2 + deflate, readable by HdrHistogram's
//! `HistogramLogProcessor` and plotter), and adds it to the totals reported in the
//! statistics line, on SIGUSR1 and at exit.
//!
//! Nothing is allocated after start. `hdrhistogram::sync`, used before, gave every recorder a
//! new histogram (180 KiB: 1 µs to an hour at 3 digits) at every interval and freed the old
//! one on the collector's thread: on a VM whose freed memory goes back to the host, about 90
//! first-touch page faults a second at 50,000 datagrams/s, nearly all the collector's faults.
//!
//! Stages (tags in the log), in µs unless noted:
//! - `receive_to_seal`: first datagram of a batch received → batch sealed (one per batch)
//! - `queue_wait`: batch sealed → a writer takes it (one per batch)
//! - `copy`: one COPY statement, start to commit (one per COPY)
//! - `end_to_end`: datagram received → its rows committed (one per flow)
//! - `batch_fill`: flows per batch (a count, not a time)
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

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

/// One stage's histogram of one thread, shared with the collector.
type Slot = Arc<Mutex<Histogram<u64>>>;

fn lock(slot: &Slot) -> MutexGuard<'_, Histogram<u64>> {
    // A thread that panicked while recording left a histogram that is still whole.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// One histogram per stage, for one thread.
pub struct Recorders {
    r: Vec<Slot>,
}

impl Recorders {
    /// Records one value (saturating at the histogram's bound).
    #[inline]
    pub fn record(&mut self, stage: Stage, value: u64) {
        lock(&self.r[stage as usize]).saturating_record(value.max(1));
    }

    /// Records `count` occurrences of one value.
    #[inline]
    pub fn record_n(&mut self, stage: Stage, value: u64, count: u64) {
        lock(&self.r[stage as usize]).saturating_record_n(value.max(1), count);
    }

    /// Records each `(value, count)`, under one lock.
    #[inline]
    pub fn record_many(&mut self, stage: Stage, values: impl IntoIterator<Item = (u64, u64)>) {
        let mut h = lock(&self.r[stage as usize]);
        for (value, count) in values {
            h.saturating_record_n(value.max(1), count);
        }
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
    /// Every thread's histograms, one per stage; a thread's go once it dropped its
    /// [`Recorders`] and what they held was collected.
    threads: Mutex<Vec<Vec<Slot>>>,
    /// Per stage: a cleared histogram to swap in for a thread's.
    spare: Vec<Histogram<u64>>,
    /// Per stage: the last interval.
    last: Vec<Histogram<u64>>,
    total: Vec<Histogram<u64>>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

fn per_stage() -> Vec<Histogram<u64>> {
    Stage::ALL.iter().map(|_| new_histogram()).collect()
}

impl Latency {
    pub fn new() -> Self {
        Self {
            threads: Mutex::new(Vec::new()),
            spare: per_stage(),
            last: per_stage(),
            total: per_stage(),
        }
    }

    /// Recorders for one more thread.
    pub fn recorders(&self) -> Recorders {
        let r: Vec<Slot> = Stage::ALL
            .iter()
            .map(|_| Arc::new(Mutex::new(new_histogram())))
            .collect();
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r.clone());
        Recorders { r }
    }

    /// Collects what the recorders saw since the last call, adds it to the totals and
    /// returns it, one histogram per stage. Allocates nothing; holds each thread's lock for
    /// a swap.
    pub fn interval(&mut self) -> &[Histogram<u64>] {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        for h in &mut self.last {
            h.reset();
        }
        for slots in threads.iter() {
            for ((slot, spare), last) in slots.iter().zip(&mut self.spare).zip(&mut self.last) {
                {
                    let mut live = lock(slot);
                    if live.is_empty() {
                        continue;
                    }
                    std::mem::swap(&mut *live, spare);
                }
                // Same bounds: adding cannot fail.
                let _ = last.add(&*spare);
                spare.reset();
            }
        }
        // A thread that has ended (its recorders dropped) had everything collected just now.
        threads.retain(|slots| slots.iter().any(|s| Arc::strong_count(s) > 1));
        drop(threads);
        for (total, last) in self.total.iter_mut().zip(&self.last) {
            let _ = total.add(last);
        }
        &self.last
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
        drop(b); // a dropped thread's histograms are collected all the same
        let first = lat.interval();
        assert_eq!(first[Stage::EndToEnd as usize].len(), 1000);
        assert_eq!(first[Stage::BatchFill as usize].len(), 20);
        let s = lat.summary();
        assert_eq!(s.end_to_end_us.count, 1000);
        assert_eq!(s.end_to_end_us.max, 1000);
        assert!((495..=505).contains(&s.end_to_end_us.p50));
        assert_eq!(s.batch_fill_flows.p50, 30);
        // ... and then forgotten; the live thread's stay.
        assert_eq!(lat.threads.lock().unwrap().len(), 1);
        let second = lat.interval();
        assert!(
            second.iter().all(|h| h.is_empty()),
            "intervals do not repeat"
        );
        // A live thread records on into the next interval, a datagram's flows at a time.
        a.record_many(Stage::EndToEnd, [(5_000, 30), (0, 2), (7_000, 1)]);
        a.record_duration(Stage::Copy, Duration::from_millis(3));
        let third = lat.interval();
        let e2e = &third[Stage::EndToEnd as usize];
        assert_eq!(e2e.len(), 33);
        assert_eq!(e2e.min(), 1, "0 is recorded as 1 µs");
        assert_eq!(e2e.count_at(5_000), 30);
        assert_eq!(third[Stage::Copy as usize].len(), 1);
        assert!(third[Stage::BatchFill as usize].is_empty());
        let s = lat.summary();
        assert_eq!(s.end_to_end_us.count, 1033);
        assert_eq!(s.copy_us.count, 1);
        assert_eq!(s.batch_fill_flows.count, 20);
    }
}
