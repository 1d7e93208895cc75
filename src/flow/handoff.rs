//! The hand-off between shards and writers: two bounded lock-free queues of batches.
//!
//! ```text
//!            take_empty()                push_full()
//!   empty ───────────────▶ shard ─────────────────────▶ full ──▶ writer ──┐
//!     ▲                                                                      │
//!     └──────────────────────────── give_back() (cleared) ◀──────────────────┘
//! ```
//!
//! Every batch is allocated once, at start; the steady state allocates nothing. The pool
//! holds `depth + shards + writers·per_copy` batches, so a shard finds an empty batch
//! whenever the full queue has room. When writers fall behind and the full queue is full,
//! the shard hands the batch to its [`Overflow`] (the store's spool writes it to disk) and
//! reuses it, counted as `queue_full`; without one (the null sink) it waits, and
//! back-pressure goes to the sockets' receive buffers, whose overflow the kernel counts.
//!
//! Writers with nothing to do sleep on a doorbell that every queued batch rings, so an idle
//! writer costs no wake-ups (it used to poll every 500 µs: 2,000 wake-ups a second per
//! writer, a fifth of the collector's CPU at 50,000 datagrams/s).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::batch::FlowBatch;

/// Where a shard puts a sealed batch when the writers' queue is full, instead of waiting.
/// The implementation owns what happens to the rows (stored or counted as dropped); the
/// shard clears the batch afterwards and carries on.
pub trait Overflow: Send {
    fn absorb(&mut self, batch: &FlowBatch);
}

/// Batches as they travel; boxed so moving one through a queue moves a pointer.
pub type Batch = Box<FlowBatch>;

pub struct Handoff {
    full: ArrayQueue<Batch>,
    /// The empty batches, a stack: the batch a writer handed back last is taken first, while
    /// its memory is still in a cache (a FIFO pool would cycle through every batch's
    /// megabyte, all of it cold by its turn).
    empty: Mutex<Vec<Batch>>,
    /// Rung (count raised, one sleeper woken) after every batch queued.
    bell: Mutex<u64>,
    rung: Condvar,
}

impl Handoff {
    /// A hand-off with a full queue of `depth` batches and a pool of `pool` batches of
    /// `batch_capacity` flows each, all allocated now.
    pub fn new(depth: usize, pool: usize, batch_capacity: usize) -> Self {
        let depth = depth.max(1);
        let pool = pool.max(depth + 1);
        let empty = (0..pool)
            .map(|_| Box::new(FlowBatch::with_capacity(batch_capacity)))
            .collect();
        Self {
            full: ArrayQueue::new(depth),
            empty: Mutex::new(empty),
            bell: Mutex::new(0),
            rung: Condvar::new(),
        }
    }

    /// An empty batch from the pool, if one is free.
    pub fn take_empty(&self) -> Option<Batch> {
        self.empty.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// An empty batch, waiting for a writer to return one. Returns how long it waited.
    pub fn take_empty_wait(&self) -> (Batch, Duration) {
        let started = Instant::now();
        loop {
            if let Some(b) = self.take_empty() {
                return (b, started.elapsed());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Queues a sealed batch for the writers; `Err` gives it back when the queue is full.
    pub fn push_full(&self, batch: Batch) -> Result<(), Batch> {
        self.full.push(batch)?;
        self.ring();
        Ok(())
    }

    fn ring(&self) {
        *self.bell.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.rung.notify_one();
    }

    /// Waits up to `timeout` until a sealed batch is queued; whether one is.
    pub fn wait_full(&self, timeout: Duration) -> bool {
        if !self.full.is_empty() {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let mut bell = self.bell.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Checked under the bell's lock: a batch queued after this check rings after
            // we sleep, so no wake-up is lost.
            if !self.full.is_empty() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let seen = *bell;
            let (guard, _) = self
                .rung
                .wait_timeout_while(bell, left, |n| *n == seen)
                .unwrap_or_else(|p| p.into_inner());
            bell = guard;
        }
    }

    /// Queues a sealed batch, waiting while the queue is full. Returns true if it had to wait.
    pub fn push_full_wait(&self, mut batch: Batch) -> bool {
        let mut waited = false;
        loop {
            match self.full.push(batch) {
                Ok(()) => {
                    self.ring();
                    return waited;
                }
                Err(b) => {
                    batch = b;
                    waited = true;
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
    }

    /// The oldest sealed batch, if any.
    pub fn pop_full(&self) -> Option<Batch> {
        self.full.pop()
    }

    /// Returns a written batch to the pool, cleared.
    pub fn give_back(&self, mut batch: Batch) {
        batch.clear();
        self.empty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(batch);
    }

    /// Sealed batches waiting for a writer.
    pub fn depth(&self) -> usize {
        self.full.len()
    }

    pub fn depth_capacity(&self) -> usize {
        self.full.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Random operation sequences against a VecDeque model: FIFO order, no batch lost or
    /// duplicated, the pool never runs dry while the full queue has room.
    #[test]
    fn behaves_like_a_fifo_model() {
        let h = Handoff::new(4, 4 + 2, 30);
        let mut model: VecDeque<i64> = VecDeque::new();
        let mut held: Vec<Batch> = Vec::new();
        let mut x: u32 = 12345;
        let mut next = 0i64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match x % 3 {
                0 if held.len() < 2 => {
                    let mut b = h.take_empty().expect("pool has a batch while we hold < 2");
                    b.flows.flow_start_ms.push(next);
                    next += 1;
                    held.push(b);
                }
                1 if !held.is_empty() => {
                    let b = held.remove(0);
                    let v = b.flows.flow_start_ms[0];
                    match h.push_full(b) {
                        Ok(()) => model.push_back(v),
                        Err(b) => {
                            assert_eq!(model.len(), 4, "only a full queue refuses");
                            held.insert(0, b);
                        }
                    }
                }
                _ => {
                    let got = h.pop_full().map(|b| {
                        let v = b.flows.flow_start_ms[0];
                        h.give_back(b);
                        v
                    });
                    assert_eq!(got, model.pop_front());
                }
            }
            assert_eq!(h.depth(), model.len());
        }
    }
}
