//! The busiest sources of something (datagrams from exporters not on the allow-list), in
//! bounded memory: the space-saving algorithm (Metwally et al., 2005) with a fixed number of
//! slots. Every source above `total / SLOTS` datagrams is in the list; a count may be over by
//! at most its `error` (what the slot held when the source took it), never under.
//!
//! Shards keep one each and publish a copy with their counters; the statistics and metrics
//! merge them.
#![forbid(unsafe_code)]

use std::net::IpAddr;

use crate::flow::batch::u128_to_addr;

/// Slots kept per list.
pub const SLOTS: usize = 32;

/// One tracked source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// Address in column form.
    pub source: u128,
    pub count: u64,
    /// Most by which `count` may be too high.
    pub error: u64,
}

/// The heaviest sources seen, at most [`SLOTS`] of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopSources {
    slots: Vec<Slot>,
}

impl TopSources {
    /// Counts `n` more for `source`.
    pub fn add(&mut self, source: u128, n: u64) {
        self.add_with_error(source, n, 0);
    }

    fn add_with_error(&mut self, source: u128, n: u64, error: u64) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.source == source) {
            s.count += n;
            s.error += error;
            return;
        }
        if self.slots.len() < SLOTS {
            self.slots.push(Slot {
                source,
                count: n,
                error,
            });
            return;
        }
        // Replace the smallest: the newcomer inherits its count as possible error.
        if let Some(min) = self.slots.iter_mut().min_by_key(|s| s.count) {
            *min = Slot {
                source,
                count: min.count + n,
                error: min.count + error,
            };
        }
    }

    /// Adds another list (e.g. another shard's).
    pub fn merge(&mut self, other: &TopSources) {
        for s in &other.slots {
            self.add_with_error(s.source, s.count, s.error);
        }
    }

    /// The `k` busiest, busiest first: (address, count, error).
    pub fn top(&self, k: usize) -> Vec<(IpAddr, u64, u64)> {
        let mut v = self.slots.clone();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.source.cmp(&b.source)));
        v.into_iter()
            .take(k)
            .map(|s| (u128_to_addr(s.source), s.count, s.error))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_sources_survive_a_flood_of_single_ones() {
        let mut t = TopSources::default();
        for i in 0..100_000u128 {
            // Two heavy sources among 100,000 that send once each.
            t.add(1_000_000 + i, 1);
            if i % 10 == 0 {
                t.add(1, 1);
            }
            if i % 20 == 0 {
                t.add(2, 1);
            }
        }
        let top = t.top(2);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].0, u128_to_addr(1));
        assert_eq!(top[1].0, u128_to_addr(2));
        // Never under; over by at most the recorded error.
        assert!(top[0].1 >= 10_000 && top[0].1 - top[0].2 <= 10_000);
        assert!(top[1].1 >= 5_000 && top[1].1 - top[1].2 <= 5_000);
        assert_eq!(t.slots.len(), SLOTS);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = TopSources::default();
        let mut b = TopSources::default();
        a.add(7, 5);
        b.add(7, 3);
        b.add(8, 1);
        a.merge(&b);
        assert_eq!(
            a.top(5),
            vec![(u128_to_addr(7), 8, 0), (u128_to_addr(8), 1, 0)]
        );
    }
}
