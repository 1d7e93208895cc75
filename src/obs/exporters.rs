//! Per-exporter statistics and flow loss from sequence numbers.
//!
//! Writers feed the header of every datagram they committed ([`ExporterTable::observe`],
//! under one lock per COPY, not per datagram); the housekeeper writes the changes to the
//! `exporters` table every few seconds as deltas, so several collectors can share a row.
//!
//! Loss: a v5 header's `flow_sequence` counts the flows the exporter sent before this
//! datagram. Within one exporter *epoch* (between restarts) every datagram covers the
//! sequence interval `[seq, seq + count)`; sequences are unwrapped from u32 relative to the
//! highest seen, so wrap-around and reordering (one exporter spread over several shards, or
//! queued out of order) need no special case. Lost = span of the epoch − flows received.
//! A restart (the exporter's boot time, `export time − sys_uptime`, jumps forward by more
//! than [`RESTART_JUMP_MS`]) closes the epoch: its loss is kept and a new epoch starts, so
//! the reset of the counter is not counted as loss. A jump of exactly 2³² ms is the uptime
//! counter wrapping, not a restart.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;

use crate::flow::batch::{u128_to_addr, DatagramInfo};

/// A boot-time jump larger than this means the exporter restarted.
pub const RESTART_JUMP_MS: i64 = 10_000;
const UPTIME_WRAP_MS: i64 = 1 << 32;
/// Unwrapped sequences start here, so datagrams older than the first one seen fit below it.
const SEQ_BASE: i64 = 1 << 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExporterKey {
    pub exporter: u128,
    pub engine_type: u8,
    pub engine_id: u8,
    /// v9 source id / IPFIX observation domain (0 for v5).
    pub source_id: u32,
}

/// One epoch of an exporter's sequence numbers.
#[derive(Clone, Copy, Debug)]
struct Epoch {
    lo: i64,
    hi: i64,
    received: i64,
    boot_ms: i64,
}

impl Epoch {
    fn lost(&self) -> i64 {
        (self.hi - self.lo - self.received).max(0)
    }
}

/// Epochs kept per exporter, so datagrams of the epoch before a restart that arrive late
/// (reordered over shards and writers) still land in their own epoch.
const EPOCHS_KEPT: usize = 4;

/// Whether two boot-time estimates belong to the same exporter run: equal within
/// [`RESTART_JUMP_MS`], or one uptime wrap (2³² ms) apart.
fn same_boot(a: i64, b: i64) -> bool {
    let d = b - a;
    d.abs() <= RESTART_JUMP_MS
        || (d - UPTIME_WRAP_MS).abs() <= RESTART_JUMP_MS
        || (d + UPTIME_WRAP_MS).abs() <= RESTART_JUMP_MS
}

/// Sequence-number loss accounting for one exporter.
#[derive(Clone, Debug, Default)]
pub struct SequenceTracker {
    /// The most recent epochs, oldest first.
    epochs: Vec<Epoch>,
    lost_in_closed_epochs: i64,
    restarts: u64,
    last_sequence: u32,
}

impl SequenceTracker {
    pub fn observe(&mut self, sequence: u32, count: u16, boot_ms: i64) {
        let count = i64::from(count);
        self.last_sequence = sequence;
        let found = self
            .epochs
            .iter()
            .rposition(|e| same_boot(e.boot_ms, boot_ms));
        let e = match found {
            Some(i) => &mut self.epochs[i],
            None => {
                if !self.epochs.is_empty() {
                    self.restarts += 1;
                }
                if self.epochs.len() == EPOCHS_KEPT {
                    let oldest = self.epochs.remove(0);
                    self.lost_in_closed_epochs += oldest.lost();
                }
                let start = SEQ_BASE + i64::from(sequence);
                self.epochs.push(Epoch {
                    lo: start,
                    hi: start + count,
                    received: count,
                    boot_ms,
                });
                return;
            }
        };
        if boot_ms - e.boot_ms > RESTART_JUMP_MS {
            e.boot_ms = boot_ms; // the uptime counter wrapped
        }
        // Signed distance from the highest sequence seen, modulo 2³².
        let delta = i64::from(sequence.wrapping_sub(e.hi as u32) as i32);
        let start = e.hi + delta;
        e.lo = e.lo.min(start);
        e.hi = e.hi.max(start + count);
        e.received += count;
    }

    /// Flows lost so far, over all epochs.
    pub fn lost(&self) -> u64 {
        (self.lost_in_closed_epochs + self.epochs.iter().map(Epoch::lost).sum::<i64>()) as u64
    }

    pub fn restarts(&self) -> u64 {
        self.restarts
    }
}

/// Cumulative figures for one exporter since this collector started.
#[derive(Clone, Debug, Default)]
pub struct ExporterStats {
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    pub datagrams: u64,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub version: u8,
    pub sampling_interval: u16,
    pub sampling_mode: u8,
    pub sequence: SequenceTracker,
    /// The figures already written to the database (deltas are written).
    flushed: Flushed,
    /// The datagram rate last written, so a silent exporter's rate is written back to 0.
    last_rate: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flushed {
    datagrams: u64,
    flows: u64,
    packets: u64,
    bytes: u64,
    lost: u64,
    restarts: u64,
}

/// One row of changes for the `exporters` table.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExporterDelta {
    pub exporter: IpAddr,
    pub engine_type: i16,
    pub engine_id: i16,
    #[serde(default)]
    pub source_id: i64,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    pub datagrams: i64,
    pub flows: i64,
    pub packets: i64,
    pub bytes: i64,
    pub lost: i64,
    pub restarts: i64,
    pub last_sequence: i64,
    pub version: i16,
    pub sampling_interval: i32,
    pub sampling_mode: i16,
    /// Datagrams per second since the previous update.
    pub datagrams_per_s: f64,
    /// Carried over from an earlier run (not part of this run's running totals).
    #[serde(default)]
    pub carried: bool,
}

#[derive(Default)]
pub struct ExporterTable {
    map: HashMap<ExporterKey, ExporterStats>,
    last_take: Option<std::time::Instant>,
    /// Deltas an earlier run could not write, written with the next ones.
    carried: Vec<ExporterDelta>,
}

impl ExporterTable {
    /// Records one committed datagram and the packet and byte totals of its flows.
    pub fn observe(&mut self, d: &DatagramInfo, packets: u64, bytes: u64) {
        let key = ExporterKey {
            exporter: d.exporter,
            engine_type: d.engine_type,
            engine_id: d.engine_id,
            source_id: d.source_id,
        };
        let s = self.map.entry(key).or_insert_with(|| ExporterStats {
            first_seen_us: d.received_us,
            ..Default::default()
        });
        if d.held {
            // Rows of a data set held for its template: its datagram was counted when it came.
            s.flows += u64::from(d.count);
            s.packets += packets;
            s.bytes += bytes;
            return;
        }
        s.first_seen_us = s.first_seen_us.min(d.received_us);
        s.last_seen_us = s.last_seen_us.max(d.received_us);
        s.datagrams += 1;
        s.flows += u64::from(d.count);
        s.packets += packets;
        s.bytes += bytes;
        s.version = d.version;
        s.sampling_interval = d.sampling_interval;
        s.sampling_mode = d.sampling_mode;
        // What the sequence number counts: v5 flows, v9 datagrams (per source id), IPFIX data
        // records (per observation domain). IPFIX headers carry no uptime, so restarts show
        // only as the sequence jumping back.
        let (span, boot_ms) = match d.version {
            9 => (1, d.export_ms - i64::from(d.sys_uptime_ms)),
            10 => (d.count, 0),
            _ => (d.count, d.export_ms - i64::from(d.sys_uptime_ms)),
        };
        s.sequence.observe(d.sequence, span, boot_ms);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ExporterKey, &ExporterStats)> {
        self.map.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds deltas an earlier run could not write; the next [`ExporterTable::take_deltas`]
    /// returns them first.
    pub fn carry(&mut self, deltas: Vec<ExporterDelta>) {
        self.carried.extend(
            deltas
                .into_iter()
                .map(|d| ExporterDelta { carried: true, ..d }),
        );
    }

    /// Changes since the last call, marked as written. If writing them fails, pass them to
    /// [`ExporterTable::unflush`] so the next call includes them again.
    pub fn take_deltas(&mut self) -> Vec<ExporterDelta> {
        let now = std::time::Instant::now();
        let secs = self
            .last_take
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        self.last_take = Some(now);
        let mut out = std::mem::take(&mut self.carried);
        for (k, s) in &mut self.map {
            let now = Flushed {
                datagrams: s.datagrams,
                flows: s.flows,
                packets: s.packets,
                bytes: s.bytes,
                lost: s.sequence.lost(),
                restarts: s.sequence.restarts(),
            };
            let f = s.flushed;
            let rate = if secs > 0.0 {
                (now.datagrams - f.datagrams) as f64 / secs
            } else {
                0.0
            };
            if now == f && s.last_rate == 0.0 {
                continue;
            }
            s.last_rate = rate;
            out.push(ExporterDelta {
                exporter: u128_to_addr(k.exporter),
                engine_type: i16::from(k.engine_type),
                engine_id: i16::from(k.engine_id),
                source_id: i64::from(k.source_id),
                first_seen_us: s.first_seen_us,
                last_seen_us: s.last_seen_us,
                datagrams: (now.datagrams - f.datagrams) as i64,
                flows: (now.flows - f.flows) as i64,
                packets: (now.packets - f.packets) as i64,
                bytes: (now.bytes - f.bytes) as i64,
                lost: now.lost as i64 - f.lost as i64,
                restarts: (now.restarts - f.restarts) as i64,
                last_sequence: i64::from(s.sequence.last_sequence),
                version: i16::from(s.version),
                sampling_interval: i32::from(s.sampling_interval),
                sampling_mode: i16::from(s.sampling_mode),
                datagrams_per_s: rate,
                carried: false,
            });
            s.flushed = now;
        }
        out
    }

    /// Undoes [`ExporterTable::take_deltas`] for rows that were not written.
    pub fn unflush(&mut self, deltas: &[ExporterDelta]) {
        for d in deltas {
            if d.carried {
                self.carried.push(d.clone());
                continue;
            }
            let key = ExporterKey {
                exporter: crate::flow::batch::addr_to_u128(d.exporter),
                engine_type: d.engine_type as u8,
                engine_id: d.engine_id as u8,
                source_id: d.source_id as u32,
            };
            if let Some(s) = self.map.get_mut(&key) {
                s.flushed.datagrams -= d.datagrams as u64;
                s.flushed.flows -= d.flows as u64;
                s.flushed.packets -= d.packets as u64;
                s.flushed.bytes -= d.bytes as u64;
                s.flushed.lost = (s.flushed.lost as i64 - d.lost) as u64;
                s.flushed.restarts -= d.restarts as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seq: &[(u32, u16, i64)]) -> SequenceTracker {
        let mut t = SequenceTracker::default();
        for &(s, c, boot) in seq {
            t.observe(s, c, boot);
        }
        t
    }

    #[test]
    fn no_loss_in_order() {
        let t = run(&[(0, 30, 0), (30, 30, 0), (60, 10, 1), (70, 30, 0)]);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn skipped_ranges_are_exact() {
        // 30..60 and 100..130 never arrive.
        let t = run(&[(0, 30, 0), (60, 30, 0), (90, 10, 0), (130, 5, 0)]);
        assert_eq!(t.lost(), 60);
    }

    #[test]
    fn reordering_is_not_loss() {
        let t = run(&[(60, 30, 0), (0, 30, 0), (90, 30, 0), (30, 30, 0)]);
        assert_eq!(t.lost(), 0);
        // Until the late datagram arrives it counts as lost, then no more.
        let mut t = run(&[(0, 30, 0), (60, 30, 0)]);
        assert_eq!(t.lost(), 30);
        t.observe(30, 30, 0);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn u32_wrap_is_not_loss() {
        let s = u32::MAX - 29;
        let t = run(&[(s - 30, 30, 0), (s, 30, 0), (0, 30, 0), (30, 30, 0)]);
        assert_eq!(t.lost(), 0);
        let t = run(&[(s, 30, 0), (30, 30, 0)]);
        assert_eq!(t.lost(), 30);
    }

    #[test]
    fn restart_is_not_loss_but_keeps_earlier_loss() {
        // Epoch 1 loses 30 (30..60); the exporter reboots 60 s later and starts again at 0.
        let t = run(&[
            (0, 30, 0),
            (60, 30, 0),
            (0, 30, 60_000),
            (30, 30, 60_000),
            (90, 30, 60_000),
        ]);
        assert_eq!(t.restarts(), 1);
        assert_eq!(t.lost(), 30 + 30);
    }

    #[test]
    fn late_datagrams_of_the_previous_epoch_are_not_loss() {
        // Reordered across a restart: epoch-1 datagrams arrive after epoch 2 began.
        let t = run(&[
            (100, 10, 0),
            (0, 10, 90_000),
            (110, 10, 0),
            (10, 10, 90_000),
            (120, 10, 0),
        ]);
        assert_eq!((t.restarts(), t.lost()), (1, 0));
    }

    #[test]
    fn uptime_wrap_is_not_a_restart() {
        let wrap = 1i64 << 32;
        let t = run(&[(0, 30, 0), (30, 30, wrap + 3), (60, 30, wrap)]);
        assert_eq!((t.restarts(), t.lost()), (0, 0));
    }

    #[test]
    fn deltas_add_up_to_totals() {
        let mut table = ExporterTable::default();
        let d = |seq, rx| DatagramInfo {
            exporter: 7,
            received_us: rx,
            count: 30,
            version: 5,
            sequence: seq,
            ..Default::default()
        };
        table.observe(&d(0, 10), 5, 500);
        table.observe(&d(60, 20), 5, 500);
        let first = table.take_deltas();
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].flows, first[0].lost, first[0].bytes),
            (60, 30, 1000)
        );
        // Nothing changed: one more row only to write the rate back to 0, then nothing.
        let idle = table.take_deltas();
        assert!(idle
            .iter()
            .all(|d| d.flows == 0 && d.datagrams_per_s == 0.0));
        assert!(table.take_deltas().is_empty(), "nothing changed");
        table.observe(&d(30, 30), 5, 500);
        let second = table.take_deltas();
        assert_eq!((second[0].flows, second[0].lost), (30, -30));
        table.unflush(&second);
        let again = table.take_deltas();
        assert_eq!(
            (again[0].flows, again[0].lost),
            (second[0].flows, second[0].lost)
        );
    }
}
