//! A map every shard reads on its hot path without a lock, and any shard may change.
//!
//! Templates and sampling rates change rarely (a router resends the same templates every few
//! minutes) and are read for every datagram. So writers copy the map, change the copy and
//! publish it as a new immutable snapshot, bumping a generation counter; each reader keeps its
//! own `Arc` of the last snapshot and takes the lock only when the generation moved. The hot
//! path is one atomic load and a hash lookup.
//!
//! ```text
//!   shard A: insert(k, v) ──▶ lock ─ clone map ─ insert ─ publish Arc ─ generation += 1
//!   shard B: reader.get(k) ──▶ generation unchanged? ─ yes ─▶ lookup in its own Arc
//!                                                   └─ no ──▶ lock, take the new Arc
//! ```

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The shared side: the current snapshot and its generation.
pub struct SharedMap<K, V> {
    current: Mutex<Arc<HashMap<K, Arc<V>>>>,
    generation: AtomicU64,
}

impl<K: Eq + Hash + Clone, V> Default for SharedMap<K, V> {
    fn default() -> Self {
        Self {
            current: Mutex::new(Arc::new(HashMap::new())),
            generation: AtomicU64::new(0),
        }
    }
}

impl<K: Eq + Hash + Clone, V> SharedMap<K, V> {
    /// Changes the map with `f` (on a copy) and publishes the result. Returns what `f` returned.
    pub fn update<R>(&self, f: impl FnOnce(&mut HashMap<K, Arc<V>>) -> R) -> R {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut next: HashMap<K, Arc<V>> = (**cur).clone();
        let r = f(&mut next);
        *cur = Arc::new(next);
        // Release: a reader that sees the new generation also sees the new snapshot.
        self.generation.fetch_add(1, Ordering::Release);
        r
    }

    /// Inserts or replaces one entry.
    pub fn insert(&self, k: K, v: V) {
        self.update(|m| {
            m.insert(k, Arc::new(v));
        });
    }

    /// Entries in the current snapshot (takes the lock; not for the hot path).
    pub fn len(&self) -> usize {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the current snapshot is empty (takes the lock).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current snapshot (takes the lock; for readers outside the hot path).
    pub fn snapshot(&self) -> Arc<HashMap<K, Arc<V>>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// One reader's view (one per shard).
pub struct Reader<K, V> {
    generation: u64,
    map: Arc<HashMap<K, Arc<V>>>,
}

impl<K: Eq + Hash + Clone, V> Reader<K, V> {
    pub fn new(shared: &SharedMap<K, V>) -> Self {
        Self {
            generation: shared.generation(),
            map: shared.snapshot(),
        }
    }

    /// The entry for `k` in the newest snapshot.
    #[inline]
    pub fn get(&mut self, shared: &SharedMap<K, V>, k: &K) -> Option<&Arc<V>> {
        let g = shared.generation();
        if g != self.generation {
            self.map = shared.snapshot();
            self.generation = g;
        }
        self.map.get(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_updates_and_keep_old_snapshots_alive() {
        let shared: SharedMap<u32, String> = SharedMap::default();
        let mut a = Reader::new(&shared);
        assert!(a.get(&shared, &1).is_none());
        shared.insert(1, "one".into());
        let held = a.get(&shared, &1).cloned().unwrap();
        shared.insert(1, "uno".into());
        assert_eq!(
            *held, "one",
            "an entry in use is not changed under the reader"
        );
        assert_eq!(**a.get(&shared, &1).unwrap(), "uno");
        shared.update(|m| m.remove(&1));
        assert!(a.get(&shared, &1).is_none());
    }

    #[test]
    fn concurrent_writers_lose_no_update() {
        let shared: Arc<SharedMap<u32, u32>> = Arc::default();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = shared.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        s.insert(t * 1000 + i, i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(shared.snapshot().len(), 1000);
        assert_eq!(shared.generation(), 1000);
    }
}
