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
//!
//! Datagrams are checked before they count (anyone can send a datagram with an exporter's
//! address): a datagram belongs to an epoch only when its boot time matches (the exporter's
//! boot time, `export time − sys_uptime`, within [`RESTART_JUMP_MS`]; a jump of exactly 2³²
//! ms is the uptime counter wrapping) and its sequence lies within [`SEQ_SLACK`] +
//! [`MAX_UNITS_PER_S`] × (seconds between its arrival and that of the epoch's highest) of the
//! epoch's highest sequence: no exporter sends faster than that, and reordering in the network
//! and in nfpg's queues stays far inside the slack. Any other datagram opens a *candidate*
//! epoch, which only datagrams ahead of it (or within the slack behind) join. A candidate
//! that [`CONFIRM`] datagrams reach is real: an exporter restart (or a counter reset, which
//! IPFIX shows only as the sequence jumping back) is counted in `restarts` and its loss
//! counted; a candidate pushed out before that was a lie (spoofed, or corrupted in transit)
//! and its datagrams are counted in `suspect_datagrams`, never as loss. So a spoofed datagram
//! cannot add 2³¹ lost flows, and a real restart is not loss either. Random spoofed sequence
//! numbers confirm a candidate only by landing, twice, within a window of a few million of one
//! another out of 2³²: possible, rarely, and then the damage is bounded by that window.
#![forbid(unsafe_code)]

use std::net::IpAddr;

// A keyed hash (seeded at random per process, as std's) at a fraction of SipHash's cost: a
// writer looks up every datagram's exporter here (SipHash was ~2.5 % of the collector's CPU).
use foldhash::HashMap;

use crate::flow::batch::{u128_to_addr, DatagramInfo};

/// A boot-time jump larger than this means the exporter restarted.
pub const RESTART_JUMP_MS: i64 = 10_000;
/// Sequence distance always plausible from an epoch's highest sequence (reordering).
pub const SEQ_SLACK: i64 = 1 << 16;
/// The fastest any exporter counts its sequence (flows per second for v5 and IPFIX,
/// datagrams per second for v9): far above any router's export rate.
pub const MAX_UNITS_PER_S: i64 = 2_000_000;
/// Datagrams that make a candidate epoch real.
pub const CONFIRM: u64 = 3;
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
    /// Arrival time (µs) of the datagram that set `hi`.
    hi_received_us: i64,
    datagrams: u64,
    /// [`CONFIRM`] plausible datagrams joined it: a real epoch, not a lie.
    confirmed: bool,
}

impl Epoch {
    fn lost(&self) -> i64 {
        (self.hi - self.lo - self.received).max(0)
    }

    /// Where `sequence` lies (unwrapped) if it plausibly belongs here, arriving at `received_us`.
    fn place(&self, sequence: u32, received_us: i64) -> Option<i64> {
        // Signed distance from the highest sequence seen, modulo 2³².
        let delta = i64::from(sequence.wrapping_sub(self.hi as u32) as i32);
        let us = (received_us - self.hi_received_us)
            .unsigned_abs()
            .min(1 << 40) as i64;
        let window = SEQ_SLACK + MAX_UNITS_PER_S * us / 1_000_000;
        let back = if self.confirmed { window } else { SEQ_SLACK };
        (-back <= delta && delta <= window).then_some(self.hi + delta)
    }
}

/// Epochs (confirmed and candidates) kept per exporter, so datagrams of the epoch before a
/// restart that arrive late (reordered over shards and writers) still land in their own
/// epoch, and a burst of spoofed datagrams does not push the real epoch out.
const EPOCHS_KEPT: usize = 8;

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
    /// The most recent epochs and candidates, oldest first.
    epochs: Vec<Epoch>,
    lost_in_closed_epochs: i64,
    /// Epochs confirmed so far (the first is the exporter's run when we met it).
    confirmed: u64,
    /// Datagrams of candidates evicted without a second datagram.
    suspect: u64,
    last_sequence: u32,
}

impl SequenceTracker {
    /// Accounts one datagram: `count` sequence units from `sequence`, from an exporter that
    /// booted at `boot_ms` (exporter clock), arriving at `received_us` (our clock).
    pub fn observe(&mut self, sequence: u32, count: u16, boot_ms: i64, received_us: i64) {
        let count = i64::from(count);
        let found = self.epochs.iter().enumerate().rev().find_map(|(i, e)| {
            if !same_boot(e.boot_ms, boot_ms) {
                return None;
            }
            e.place(sequence, received_us).map(|start| (i, start))
        });
        let Some((i, start)) = found else {
            self.open_candidate(sequence, count, boot_ms, received_us);
            return;
        };
        self.last_sequence = sequence;
        let e = &mut self.epochs[i];
        if boot_ms - e.boot_ms > RESTART_JUMP_MS {
            e.boot_ms = boot_ms; // the uptime counter wrapped
        }
        e.lo = e.lo.min(start);
        if start + count > e.hi {
            e.hi = start + count;
            e.hi_received_us = received_us;
        }
        e.received += count;
        e.datagrams += 1;
        if !e.confirmed && e.datagrams >= CONFIRM {
            e.confirmed = true;
            self.confirmed += 1;
        }
    }

    fn open_candidate(&mut self, sequence: u32, count: i64, boot_ms: i64, received_us: i64) {
        if self.epochs.len() == EPOCHS_KEPT {
            // Push out the oldest candidate, else the oldest epoch (its loss is kept).
            let i = self.epochs.iter().position(|e| !e.confirmed).unwrap_or(0);
            let old = self.epochs.remove(i);
            if old.confirmed {
                self.lost_in_closed_epochs += old.lost();
            } else {
                self.suspect += old.datagrams;
            }
        }
        let start = SEQ_BASE + i64::from(sequence);
        self.epochs.push(Epoch {
            lo: start,
            hi: start + count,
            received: count,
            boot_ms,
            hi_received_us: received_us,
            datagrams: 1,
            confirmed: false,
        });
    }

    /// Flows lost so far, over all confirmed epochs.
    pub fn lost(&self) -> u64 {
        let open: i64 = self
            .epochs
            .iter()
            .filter(|e| e.confirmed)
            .map(Epoch::lost)
            .sum();
        (self.lost_in_closed_epochs + open) as u64
    }

    /// Restarts (or counter resets) seen: confirmed epochs after the first.
    pub fn restarts(&self) -> u64 {
        self.confirmed.saturating_sub(1)
    }

    /// Datagrams whose sequence fitted no epoch and that nothing confirmed: lone candidates
    /// pushed out, and those still waiting once the exporter has a confirmed epoch.
    pub fn suspect_datagrams(&self) -> u64 {
        let waiting: u64 = if self.confirmed > 0 {
            self.epochs
                .iter()
                .filter(|e| !e.confirmed)
                .map(|e| e.datagrams)
                .sum()
        } else {
            0
        };
        self.suspect + waiting
    }

    /// The sequence number of the latest datagram that fitted an epoch.
    pub fn last_sequence(&self) -> u32 {
        self.last_sequence
    }
}

/// Exporters tracked at most by default (`--max-exporters`).
pub const DEFAULT_MAX_EXPORTERS: usize = 50_000;
/// Rows of the exporters table written at most per update by default.
pub const DEFAULT_ROWS_PER_UPDATE: usize = 2_000;

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
    /// When `flushed` was last taken, for the rate.
    flushed_at: Option<std::time::Instant>,
    /// The datagram rate last written, so a silent exporter's rate is written back to 0.
    last_rate: f64,
}

impl ExporterStats {
    fn current(&self) -> Flushed {
        Flushed {
            datagrams: self.datagrams,
            flows: self.flows,
            packets: self.packets,
            bytes: self.bytes,
            lost: self.sequence.lost(),
            restarts: self.sequence.restarts(),
            suspect: self.sequence.suspect_datagrams(),
        }
    }

    /// Whether the database row lacks something this entry knows.
    fn pending(&self) -> bool {
        self.current() != self.flushed || self.last_rate != 0.0
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flushed {
    datagrams: u64,
    flows: u64,
    packets: u64,
    bytes: u64,
    lost: u64,
    restarts: u64,
    suspect: u64,
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
    /// Datagrams whose sequence number no real exporter run explains (see the module docs).
    #[serde(default)]
    pub suspect: i64,
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

/// Every exporter this collector has heard from (up to a limit), with its running totals.
pub struct ExporterTable {
    map: HashMap<ExporterKey, ExporterStats>,
    /// Deltas an earlier run could not write, written with the next ones.
    carried: Vec<ExporterDelta>,
    limit: usize,
    /// Exporters dropped from the table: idle, or the longest silent when it was nearly full.
    evicted: u64,
    /// Datagrams from exporters not tracked because the table was full (their flows are
    /// stored; only the per-exporter figures are missing).
    untracked_datagrams: u64,
    /// Datagrams whose per-exporter figures an eviction dropped before they were written.
    evicted_unwritten: u64,
    /// An update of the exporters table whose outcome is unknown (see [`UnconfirmedFlush`]).
    in_doubt: Option<UnconfirmedFlush>,
}

/// Deltas sent to the exporters table in an update whose reply never came: it may have
/// committed. The update carries a marker (`instance`, `flush`) committed with it, which the
/// next update looks up before writing these deltas again, so none is added twice.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UnconfirmedFlush {
    pub instance: String,
    pub flush: i64,
    pub deltas: Vec<ExporterDelta>,
}

impl Default for ExporterTable {
    fn default() -> Self {
        Self::with_limit(DEFAULT_MAX_EXPORTERS)
    }
}

impl ExporterTable {
    /// A table tracking at most `limit` exporters.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            map: HashMap::default(),
            carried: Vec::new(),
            limit: limit.max(1),
            evicted: 0,
            untracked_datagrams: 0,
            evicted_unwritten: 0,
            in_doubt: None,
        }
    }

    /// Keeps an update whose outcome is unknown until the next one resolves it (one at a
    /// time: an update is only tried once the one before is resolved).
    pub fn set_in_doubt(&mut self, flush: UnconfirmedFlush) {
        self.in_doubt = Some(flush);
    }

    /// Takes the update whose outcome is unknown, if any.
    pub fn take_in_doubt(&mut self) -> Option<UnconfirmedFlush> {
        self.in_doubt.take()
    }

    /// Records one committed datagram and the packet and byte totals of its flows.
    pub fn observe(&mut self, d: &DatagramInfo, packets: u64, bytes: u64) {
        let key = ExporterKey {
            exporter: d.exporter,
            engine_type: d.engine_type,
            engine_id: d.engine_id,
            source_id: d.source_id,
        };
        if self.map.len() >= self.limit && !self.map.contains_key(&key) {
            if !d.held {
                self.untracked_datagrams += 1;
            }
            return;
        }
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
        s.sequence.observe(d.sequence, span, boot_ms, d.received_us);
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

    /// Exporters evicted so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Datagrams not tracked per exporter because the table was full.
    pub fn untracked_datagrams(&self) -> u64 {
        self.untracked_datagrams
    }

    /// Datagrams whose per-exporter figures an eviction dropped unwritten.
    pub fn evicted_unwritten(&self) -> u64 {
        self.evicted_unwritten
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

    /// Changes since they were last taken, at most `max_rows` rows (those with the most new
    /// datagrams first, so a flood of one-datagram sources cannot starve the real exporters;
    /// the rest come next time), marked as written. If writing them surely failed (nothing
    /// committed), pass them to [`ExporterTable::unflush`] so a later call includes them
    /// again; if the write may have committed, keep them with
    /// [`ExporterTable::set_in_doubt`] (what `store::exporters::flush_exporters` does).
    pub fn take_deltas(&mut self, max_rows: usize) -> Vec<ExporterDelta> {
        let now = std::time::Instant::now();
        let n_carried = self.carried.len().min(max_rows);
        let mut out: Vec<ExporterDelta> = self.carried.drain(..n_carried).collect();
        let mut changed: Vec<(&ExporterKey, &mut ExporterStats)> =
            self.map.iter_mut().filter(|(_, s)| s.pending()).collect();
        let room = max_rows - out.len();
        if changed.len() > room {
            changed.sort_by_key(|(_, s)| {
                (
                    std::cmp::Reverse(s.datagrams - s.flushed.datagrams),
                    s.flushed_at,
                )
            });
            changed.truncate(room);
        }
        for (k, s) in changed {
            let now_f = s.current();
            let f = s.flushed;
            let secs = s
                .flushed_at
                .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
            let rate = if secs > 0.0 {
                (now_f.datagrams - f.datagrams) as f64 / secs
            } else {
                0.0
            };
            s.last_rate = rate;
            s.flushed_at = Some(now);
            out.push(ExporterDelta {
                exporter: u128_to_addr(k.exporter),
                engine_type: i16::from(k.engine_type),
                engine_id: i16::from(k.engine_id),
                source_id: i64::from(k.source_id),
                first_seen_us: s.first_seen_us,
                last_seen_us: s.last_seen_us,
                datagrams: (now_f.datagrams - f.datagrams) as i64,
                flows: (now_f.flows - f.flows) as i64,
                packets: (now_f.packets - f.packets) as i64,
                bytes: (now_f.bytes - f.bytes) as i64,
                lost: now_f.lost as i64 - f.lost as i64,
                restarts: (now_f.restarts - f.restarts) as i64,
                suspect: now_f.suspect as i64 - f.suspect as i64,
                last_sequence: i64::from(s.sequence.last_sequence()),
                version: i16::from(s.version),
                sampling_interval: i32::from(s.sampling_interval),
                sampling_mode: i16::from(s.sampling_mode),
                datagrams_per_s: rate,
                carried: false,
            });
            s.flushed = now_f;
        }
        out
    }

    /// Every pending change, however many (for the final flush at stop).
    pub fn take_all_deltas(&mut self) -> Vec<ExporterDelta> {
        self.take_deltas(usize::MAX)
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
                s.flushed.suspect = (s.flushed.suspect as i64 - d.suspect) as u64;
            }
        }
    }

    /// Drops exporters silent for `idle_us` (by `now_us`) whose figures are all written; then,
    /// while the table is over 90 % full, down to 80 %: those with the fewest datagrams first
    /// (a flood of forged sources sends one each; a real exporter keeps sending), the longest
    /// silent among equals, counting what they had not written yet (`evicted_unwritten`). Their sequence
    /// state goes with them: an evicted exporter that comes back starts a new epoch (no loss
    /// is counted across the gap). Returns how many were evicted.
    pub fn evict(&mut self, now_us: i64, idle_us: i64) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, s| s.pending() || now_us - s.last_seen_us < idle_us);
        if self.map.len() * 10 > self.limit * 9 {
            let target = self.limit * 8 / 10;
            let mut order: Vec<(ExporterKey, bool, u64, i64)> = self
                .map
                .iter()
                .map(|(k, s)| (*k, s.pending(), s.datagrams, s.last_seen_us))
                .collect();
            order.sort_by_key(|&(k, _, datagrams, seen)| (datagrams, seen, k));
            let excess = self.map.len().saturating_sub(target);
            for (k, pending, _, _) in order.into_iter().take(excess) {
                if let Some(s) = self.map.remove(&k) {
                    if pending {
                        self.evicted_unwritten += s.datagrams - s.flushed.datagrams;
                    }
                }
            }
        }
        let n = before - self.map.len();
        self.evicted += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seq: &[(u32, u16, i64)]) -> SequenceTracker {
        let mut t = SequenceTracker::default();
        for &(s, c, boot) in seq {
            t.observe(s, c, boot, 0);
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
        let mut t = run(&[(0, 30, 0), (60, 30, 0), (90, 30, 0)]);
        assert_eq!(t.lost(), 30);
        t.observe(30, 30, 0, 0);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn u32_wrap_is_not_loss() {
        let s = u32::MAX - 29;
        let t = run(&[(s - 30, 30, 0), (s, 30, 0), (0, 30, 0), (30, 30, 0)]);
        assert_eq!(t.lost(), 0);
        let t = run(&[(s, 30, 0), (30, 30, 0), (60, 30, 0)]);
        assert_eq!(t.lost(), 30);
    }

    #[test]
    fn restart_is_not_loss_but_keeps_earlier_loss() {
        // Epoch 1 loses 30 (30..60); the exporter reboots 60 s later and starts again at 0.
        let t = run(&[
            (0, 30, 0),
            (60, 30, 0),
            (90, 30, 0),
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
            (20, 10, 90_000),
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
        table.observe(&d(90, 25), 5, 500);
        let first = table.take_deltas(100);
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].flows, first[0].lost, first[0].bytes),
            (90, 30, 1500)
        );
        // Nothing changed: one more row only to write the rate back to 0, then nothing.
        let idle = table.take_deltas(100);
        assert!(idle
            .iter()
            .all(|d| d.flows == 0 && d.datagrams_per_s == 0.0));
        assert!(table.take_deltas(100).is_empty(), "nothing changed");
        table.observe(&d(30, 30), 5, 500);
        let second = table.take_deltas(100);
        assert_eq!((second[0].flows, second[0].lost), (30, -30));
        table.unflush(&second);
        let again = table.take_deltas(100);
        assert_eq!(
            (again[0].flows, again[0].lost),
            (second[0].flows, second[0].lost)
        );
    }

    /// A real exporter (30 flows a datagram, 10 ms apart) with spoofed datagrams mixed in:
    /// random sequence numbers and boot times under its address.
    #[test]
    fn spoofed_sequences_are_suspect_not_loss() {
        let mut t = SequenceTracker::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut spoofed = 0;
        for i in 0..10_000u32 {
            let rx = i64::from(i) * 10_000;
            // Skip one datagram in a thousand: 10 skipped, of which the last is not yet
            // known to be lost (nothing came after it): 9 lost datagrams, 270 flows.
            if i % 1000 != 999 {
                t.observe(i * 30, 30, 5_000, rx);
            }
            if i % 7 == 0 {
                // Anywhere but within 2^24 of the real sequence (no exporter jumps that far in
                // 10 ms), with the same boot time or a random one.
                let off = (1u32 << 24) + (rnd() % ((1u64 << 32) - (1 << 25))) as u32;
                let seq = (i * 30).wrapping_add(off);
                let boot = if i % 2 == 0 {
                    5_000
                } else {
                    rnd() as i64 >> 20
                };
                t.observe(seq, 30, boot, rx);
                spoofed += 1;
            }
        }
        assert_eq!(t.lost(), 270);
        assert_eq!(t.restarts(), 0);
        assert_eq!(t.suspect_datagrams(), spoofed);
    }

    #[test]
    fn long_silence_allows_a_large_jump() {
        // 100 s of silence: 1e6 flows missed is plausible (1e4 flows/s), and counted as loss.
        let start = [(0, 30, 0, 0), (30, 30, 0, 1_000), (60, 30, 0, 2_000)];
        let t = run_rx(&[&start[..], &[(1_000_090, 30, 0, 100_000_000)]].concat());
        assert_eq!((t.lost(), t.suspect_datagrams()), (1_000_000, 0));
        // The same jump 1 ms later is not.
        let t = run_rx(&[&start[..], &[(1_000_090, 30, 0, 3_000)]].concat());
        assert_eq!((t.lost(), t.suspect_datagrams()), (0, 1));
    }

    #[test]
    fn ipfix_counter_reset_is_a_restart() {
        // IPFIX has no uptime (boot 0): the sequence going back far is a new run once a
        // second datagram follows it.
        let big = 500_000_000;
        let t = run_rx(&[
            (big, 30, 0, 0),
            (big + 30, 30, 0, 10),
            (big + 60, 30, 0, 15),
            (0, 30, 0, 20),
            (30, 30, 0, 30),
            (90, 30, 0, 40),
        ]);
        assert_eq!((t.restarts(), t.lost(), t.suspect_datagrams()), (1, 30, 0));
    }

    fn run_rx(seq: &[(u32, u16, i64, i64)]) -> SequenceTracker {
        let mut t = SequenceTracker::default();
        for &(s, c, boot, rx) in seq {
            t.observe(s, c, boot, rx);
        }
        t
    }

    fn info(exporter: u128, seq: u32, rx: i64) -> DatagramInfo {
        DatagramInfo {
            exporter,
            received_us: rx,
            count: 30,
            version: 5,
            sequence: seq,
            ..Default::default()
        }
    }

    #[test]
    fn table_is_bounded_and_evicts_the_idle() {
        let mut table = ExporterTable::with_limit(10);
        for e in 0..25u128 {
            table.observe(&info(e, 0, 1_000), 1, 1);
        }
        assert_eq!((table.len(), table.untracked_datagrams()), (10, 15));
        // Idle but not written: kept, except that a full table sheds down to 80 %.
        assert_eq!(table.evict(1_000_000_000, 1), 2);
        assert_eq!(table.evicted_unwritten(), 2);
        assert!(!table.iter().any(|(k, _)| k.exporter < 2));
        assert_eq!(table.take_deltas(4).len(), 4, "bounded work per update");
        assert_eq!(table.take_deltas(100).len(), 4);
        // Exporter 3 keeps talking; the others fall silent.
        table.observe(&info(3, 30, 60_000_000), 1, 1);
        assert_eq!(table.evict(61_000_000, 30_000_000), 7);
        assert_eq!((table.len(), table.evicted()), (1, 9));
        assert!(table.iter().all(|(k, _)| k.exporter == 3));
        table.observe(&info(20, 0, 61_000_000), 1, 1);
        assert_eq!(table.len(), 2, "room again for new exporters");
    }

    #[test]
    fn a_full_table_sheds_the_longest_silent() {
        let mut table = ExporterTable::with_limit(10);
        for e in 0..10u128 {
            table.observe(&info(e, 0, e as i64 * 1_000_000), 1, 1);
        }
        table.take_deltas(100);
        table.take_deltas(100); // rates back to 0: nothing pending
                                // None idle for an hour, but the table is full: down to 8, oldest first.
        assert_eq!(table.evict(20_000_000, 3_600_000_000), 2);
        let mut left: Vec<u128> = table.iter().map(|(k, _)| k.exporter).collect();
        left.sort();
        assert_eq!(left, (2..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_flood_of_unwritten_sources_is_shed_and_counted_not_the_busy_exporters() {
        let mut table = ExporterTable::with_limit(100);
        // Two real exporters, 50 datagrams each.
        for seq in 0..50 {
            table.observe(&info(1, seq * 30, 1_000), 1, 1);
            table.observe(&info(2, seq * 30, 1_000), 1, 1);
        }
        // 98 forged sources, one datagram each, none written yet.
        for e in 1000..1098u128 {
            table.observe(&info(e, 0, 2_000), 1, 1);
        }
        // Busiest first: the real exporters are written even with room for only two rows.
        let rows = table.take_deltas(2);
        let mut got: Vec<IpAddr> = rows.iter().map(|d| d.exporter).collect();
        got.sort();
        assert_eq!(got, vec![u128_to_addr(1), u128_to_addr(2)]);
        // Full: down to 80, shedding 20 one-datagram sources (unwritten: counted).
        assert_eq!(table.evict(3_000, 3_600_000_000), 20);
        assert_eq!(table.evicted_unwritten(), 20);
        assert!(table.iter().any(|(k, _)| k.exporter == 1));
        assert!(table.iter().any(|(k, _)| k.exporter == 2));
    }
}
