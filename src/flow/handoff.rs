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
//! holds `depth + shards + writers·per_copy + spill` batches, so a shard finds an empty
//! batch whenever the full queue has room.
//!
//! When writers fall behind, the queue is memory first and disk second: once it holds
//! [`Handoff::spill_at`] batches (three quarters of its depth), every push rings a second
//! bell, and the store's spill thread takes the oldest batches beyond that mark to the spool
//! ([`Handoff::pop_spill`]), so the shards never wait on a disk. Only when the queue is full
//! all the same (the disk slower than the surplus) does the shard hand the batch to its
//! [`Overflow`] itself (the store's spool writes it to disk) and reuse it, counted as
//! `queue_full`; without one (the null sink) it waits, and back-pressure goes to the
//! sockets' receive buffers, whose overflow the kernel counts.
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
    /// Queue length from which batches go to the spill thread.
    spill_at: usize,
    /// Rung after every batch queued at or beyond `spill_at`, and at close; whether closed.
    spill_bell: Mutex<bool>,
    spill_rung: Condvar,
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
            spill_at: (depth * 3 / 4).max(1),
            spill_bell: Mutex::new(false),
            spill_rung: Condvar::new(),
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
        if self.full.len() >= self.spill_at {
            let _closed = self.spill_bell.lock().unwrap_or_else(|p| p.into_inner());
            self.spill_rung.notify_one();
        }
        Ok(())
    }

    /// Whether the writers are behind: half the spill mark or more is queued (a writer that
    /// keeps up leaves a few batches at most). The replayer waits meanwhile.
    pub fn writers_behind(&self) -> bool {
        self.full.len() >= self.spill_at.div_ceil(2)
    }

    /// Queue length from which the spill thread takes batches to the spool.
    pub fn spill_at(&self) -> usize {
        self.spill_at
    }

    /// Waits until the queue holds [`Self::spill_at`] batches or more (true) or the hand-off
    /// is closed (false). No timeout: an idle spill thread costs no wake-ups.
    pub fn wait_spill(&self) -> bool {
        let mut closed = self.spill_bell.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Checked under the lock: a push that crosses the mark after this check
            // notifies after we sleep, so no wake-up is lost.
            if *closed {
                return false;
            }
            if self.full.len() >= self.spill_at {
                return true;
            }
            closed = self
                .spill_rung
                .wait(closed)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The oldest sealed batch, if the queue holds [`Self::spill_at`] batches or more.
    pub fn pop_spill(&self) -> Option<Batch> {
        if self.full.len() >= self.spill_at {
            self.full.pop()
        } else {
            None
        }
    }

    /// Ends [`Self::wait_spill`]: the shards have stopped, the writers take the rest.
    pub fn close_spill(&self) {
        *self.spill_bell.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.spill_rung.notify_all();
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

    /// The spill thread's side: nothing below the mark, the oldest batches from the mark on,
    /// a wait that ends when a push crosses the mark, and one that ends at close.
    #[test]
    fn spill_takes_the_oldest_batches_from_three_quarters_of_the_depth() {
        let h = std::sync::Arc::new(Handoff::new(8, 8 + 2, 4));
        assert_eq!(h.spill_at(), 6);
        let push = |v: i64| {
            let mut b = h.take_empty().unwrap();
            b.flows.flow_start_ms.push(v);
            assert!(h.push_full(b).is_ok());
        };
        for v in 0..5 {
            assert_eq!(
                h.writers_behind(),
                v >= 3,
                "behind from half the mark: {v} queued"
            );
            push(v);
        }
        assert!(h.pop_spill().is_none(), "5 queued, below the mark of 6");
        let waiter = {
            let h = h.clone();
            std::thread::spawn(move || h.wait_spill())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "waits below the mark");
        push(5);
        assert!(waiter.join().unwrap(), "the sixth push wakes it");
        push(6);
        let first = h.pop_spill().expect("7 queued");
        assert_eq!(first.flows.flow_start_ms, [0], "the oldest");
        h.give_back(first);
        assert_eq!(h.pop_spill().unwrap().flows.flow_start_ms, [1]);
        assert!(h.pop_spill().is_none(), "down to 5: below the mark again");
        assert_eq!(
            h.pop_full().unwrap().flows.flow_start_ms,
            [2],
            "writers take the rest"
        );
        let waiter = {
            let h = h.clone();
            std::thread::spawn(move || h.wait_spill())
        };
        std::thread::sleep(Duration::from_millis(50));
        h.close_spill();
        assert!(!waiter.join().unwrap(), "closed");
        assert!(!h.wait_spill(), "stays closed");
    }
}
