//! Data that arrives before its template, held until the template comes.
//!
//! RFC 3954 §9: a collector SHOULD keep data records whose template it does not know yet. A
//! router may resend templates only every 10–15 minutes, so after a collector restart, or
//! when the first template datagram is lost or reordered, everything in between would be lost.
//! nfpg keeps such data sets per (exporter, observation domain), bounded by bytes and by
//! age (`--template-hold-bytes`, `--template-hold-secs`), and decodes them when the template
//! arrives (on whichever shard learns it). What is given up is counted with the reason:
//! too old (`held_sets_expired`) or no room (`held_sets_overflow`, the oldest go first).
//! Over all exporters the hold keeps at most [`TOTAL_BYTES`] (or one exporter's bound, if
//! larger): a flood of data sets from many (spoofed) addresses is refused once that is full,
//! counted as overflow, and cannot grow memory.
//!
//! Not on the hot path: a shard looks here only when a data set has no template, when it
//! learns a template, and once a second to expire; `is_empty` is one atomic load.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What is needed to decode a held data set later: its datagram's header fields.
#[derive(Clone, Debug)]
pub struct HeldSet {
    pub exporter: u128,
    pub domain: u32,
    pub template_id: u16,
    /// 9 or 10.
    pub version: u8,
    pub export_ms: i64,
    pub sys_uptime_ms: Option<u32>,
    pub sequence: u32,
    pub received_us: i64,
    pub held_at: Instant,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct ExporterHold {
    sets: VecDeque<HeldSet>,
    bytes: usize,
}

/// What [`Hold::hold`] and [`Hold::expire`] gave up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GivenUp {
    pub expired: u64,
    pub overflow: u64,
}

/// Bytes held over all exporters at most (unless one exporter's bound is larger).
pub const TOTAL_BYTES: usize = 64 << 20;

/// The held sets of every exporter.
pub struct Hold {
    by_exporter: Mutex<HashMap<(u128, u32), ExporterHold>>,
    sets: AtomicUsize,
    /// Bytes held over all exporters (changed under the `by_exporter` lock).
    total: AtomicUsize,
    max_bytes: usize,
    max_total: usize,
    max_age: Duration,
}

impl Hold {
    pub fn new(max_bytes_per_exporter: usize, max_age: Duration) -> Self {
        Self {
            by_exporter: Mutex::new(HashMap::new()),
            sets: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            max_bytes: max_bytes_per_exporter,
            max_total: TOTAL_BYTES.max(max_bytes_per_exporter),
            max_age,
        }
    }

    /// Nothing held anywhere (one atomic load).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.sets.load(Relaxed) == 0
    }

    /// Sets held now.
    pub fn len(&self) -> usize {
        self.sets.load(Relaxed)
    }

    /// Keeps `set` until its template arrives; makes room by giving up the exporter's oldest
    /// sets. A set larger than the whole bound is given up at once.
    pub fn hold(&self, set: HeldSet) -> GivenUp {
        let mut gave = GivenUp::default();
        if set.body.len() > self.max_bytes {
            gave.overflow += 1;
            return gave;
        }
        let mut map = self.by_exporter.lock().unwrap_or_else(|p| p.into_inner());
        let total = self.total.load(Relaxed);
        let mine = map.get(&(set.exporter, set.domain)).map_or(0, |e| e.bytes);
        // Full over all exporters, and this exporter's own sets cannot make room: refuse.
        if total + set.body.len() > self.max_total && mine < set.body.len() {
            gave.overflow += 1;
            return gave;
        }
        let e = map.entry((set.exporter, set.domain)).or_default();
        let mut freed = 0;
        while e.bytes + set.body.len() > self.max_bytes
            || total - freed + set.body.len() > self.max_total
        {
            let Some(old) = e.sets.pop_front() else { break };
            e.bytes -= old.body.len();
            freed += old.body.len();
            self.sets.fetch_sub(1, Relaxed);
            gave.overflow += 1;
        }
        self.total.store(total - freed + set.body.len(), Relaxed);
        e.bytes += set.body.len();
        e.sets.push_back(set);
        self.sets.fetch_add(1, Relaxed);
        gave
    }

    /// Takes the held sets of `(exporter, domain)` for `template_id`, oldest first.
    pub fn release(&self, exporter: u128, domain: u32, template_id: u16) -> Vec<HeldSet> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut map = self.by_exporter.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = map.get_mut(&(exporter, domain)) else {
            return Vec::new();
        };
        let (take, keep): (VecDeque<HeldSet>, VecDeque<HeldSet>) =
            e.sets.drain(..).partition(|s| s.template_id == template_id);
        e.sets = keep;
        e.bytes = e.sets.iter().map(|s| s.body.len()).sum();
        let taken: usize = take.iter().map(|s| s.body.len()).sum();
        self.total.fetch_sub(taken, Relaxed);
        if e.sets.is_empty() {
            map.remove(&(exporter, domain));
        }
        self.sets.fetch_sub(take.len(), Relaxed);
        take.into()
    }

    /// Gives up sets held longer than the age bound.
    pub fn expire(&self, now: Instant) -> GivenUp {
        let mut gave = GivenUp::default();
        if self.is_empty() {
            return gave;
        }
        let mut map = self.by_exporter.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| {
            while e
                .sets
                .front()
                .is_some_and(|s| now.duration_since(s.held_at) > self.max_age)
            {
                if let Some(old) = e.sets.pop_front() {
                    e.bytes -= old.body.len();
                    self.total.fetch_sub(old.body.len(), Relaxed);
                    gave.expired += 1;
                }
            }
            !e.sets.is_empty()
        });
        self.sets.fetch_sub(gave.expired as usize, Relaxed);
        gave
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(exporter: u128, id: u16, len: usize, at: Instant) -> HeldSet {
        HeldSet {
            exporter,
            domain: 0,
            template_id: id,
            version: 9,
            export_ms: 0,
            sys_uptime_ms: Some(0),
            sequence: 0,
            received_us: 0,
            held_at: at,
            body: vec![0; len],
        }
    }

    #[test]
    fn releases_by_template_in_order_and_bounds_bytes_and_age() {
        let t0 = Instant::now();
        let h = Hold::new(100, Duration::from_secs(10));
        assert!(h.is_empty());
        assert_eq!(h.hold(set(1, 256, 40, t0)), GivenUp::default());
        assert_eq!(h.hold(set(1, 257, 40, t0)), GivenUp::default());
        // Over 100 bytes for exporter 1: the oldest goes.
        assert_eq!(h.hold(set(1, 256, 40, t0)).overflow, 1);
        assert_eq!(h.hold(set(2, 256, 40, t0)), GivenUp::default());
        assert_eq!(h.len(), 3);
        let got = h.release(1, 0, 256);
        assert_eq!(got.len(), 1);
        assert_eq!(h.len(), 2);
        assert!(h.release(1, 0, 999).is_empty());
        // A set bigger than the bound is refused outright.
        assert_eq!(h.hold(set(3, 256, 101, t0)).overflow, 1);
        assert_eq!(h.expire(t0 + Duration::from_secs(11)).expired, 2);
        assert!(h.is_empty());
        assert_eq!(h.total.load(Relaxed), 0);
    }

    #[test]
    fn many_exporters_cannot_exceed_the_total() {
        let t0 = Instant::now();
        let h = Hold::new(TOTAL_BYTES / 4, Duration::from_secs(10));
        let big = TOTAL_BYTES / 8;
        let mut refused = 0;
        for e in 0..20 {
            refused += h.hold(set(e, 256, big, t0)).overflow;
        }
        // Eight fit; the other twelve exporters are refused.
        assert_eq!((h.len(), refused), (8, 12));
        assert!(h.total.load(Relaxed) <= TOTAL_BYTES);
        // An exporter already holding sets makes room from its own.
        assert_eq!(h.hold(set(0, 257, big, t0)).overflow, 1);
        assert_eq!(h.release(0, 0, 257).len(), 1);
        assert_eq!(h.total.load(Relaxed), 7 * big);
    }
}
