//! A shard: one receive thread with its own socket, receiver and column batch.
//!
//! The loop receives a batch of datagrams, decodes each into the shard's current
//! [`crate::flow::batch::FlowBatch`] (NetFlow v5 from IPv4 exporters checked and kept as their
//! records with [`crate::flow::copy::v5_rows`], the rest decoded into columns), and seals the
//! batch onto the writers' queue when it cannot take another
//! datagram or when `flush_interval` has passed since its first datagram. Counters are added
//! once per receive call. Datagrams from sources not on the allow-list are counted (and their
//! busiest sources kept) and dropped before decoding. Malformed datagrams are counted by
//! reason, sampled into the batch (token bucket per exporter, and one for the whole shard)
//! and logged at most once per `LOG_EVERY`. Decoded flows whose times lie far from their
//! arrival are flagged (`time_suspect`) and counted.
//!
//! On stop the shard drains what its socket already holds, seals its last batch and returns.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_utils::CachePadded;

use super::recv::{Datagram, Receiver};
use crate::addr::AllowList;
use crate::decode::{self, Decoder, Failure, Fault};
use crate::flow::batch::{addr_to_u128, as_v4, DatagramMeta, MalformedSample, SAMPLE_BYTES};
use crate::flow::copy;
use crate::flow::handoff::{Batch, Handoff, Overflow};
use crate::flow::reason::Reason;
use crate::obs::latency::{Recorders, Stage};
use crate::obs::stats::ShardCounters;
use crate::obs::top::TopSources;
use nfpg_wire::columns::{present, Columns};

/// At most one malformed-datagram log line per shard per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Longest a receive call blocks, so stop requests are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How often the shard re-reads its socket's drop count from /proc.
const DROP_CHECK_EVERY: Duration = Duration::from_secs(1);
/// On stop, how long a shard keeps draining a socket that is still being sent to.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// Malformed samples per exporter: burst, then one per `SAMPLE_REFILL`.
const SAMPLE_BURST: f32 = 10.0;
const SAMPLE_REFILL: Duration = Duration::from_secs(1);
/// Exporters tracked by the sampler before it starts over (bounds its memory).
const SAMPLER_MAX_EXPORTERS: usize = 16_384;

pub struct ShardConfig {
    pub id: usize,
    /// This thread's latency recorders.
    pub recorders: Recorders,
    pub flush_interval: Duration,
    /// Pin the thread to this core.
    pub core: Option<core_affinity::CoreId>,
    /// Takes sealed batches when the writers' queue is full; `None`: wait for room.
    pub overflow: Option<Box<dyn Overflow>>,
    /// v9/IPFIX state shared by all shards.
    pub netflow: std::sync::Arc<decode::netflow::Shared>,
    /// Sources datagrams are accepted from.
    pub allow: AllowList,
    /// (most µs ahead, most µs behind) of its arrival a flow's times may lie unflagged.
    pub time_window_us: (i64, i64),
    /// Malformed samples this shard keeps at most per second, over all exporters.
    pub samples_per_s: u32,
}

/// Rate limit for malformed samples: per exporter, and for the whole shard (so a flood from
/// many addresses, each with a fresh bucket, still stores a bounded number).
struct Sampler {
    buckets: HashMap<u128, (f32, Instant)>,
    /// Shard-wide: tokens, last refill, tokens per second.
    total: (f32, Instant, f32),
}

impl Sampler {
    fn new(per_s: u32) -> Self {
        let per_s = per_s as f32;
        Self {
            buckets: HashMap::with_capacity(1024),
            total: (per_s, Instant::now(), per_s),
        }
    }

    fn allow(&mut self, exporter: u128, now: Instant) -> bool {
        let (tokens, last, rate) = &mut self.total;
        *tokens = (*tokens + now.duration_since(*last).as_secs_f32() * *rate).min(*rate);
        *last = now;
        if *tokens < 1.0 {
            return false;
        }
        if self.buckets.len() >= SAMPLER_MAX_EXPORTERS && !self.buckets.contains_key(&exporter) {
            self.buckets.clear();
        }
        let (tokens, last) = self.buckets.entry(exporter).or_insert((SAMPLE_BURST, now));
        let refill = now.duration_since(*last).as_secs_f32() / SAMPLE_REFILL.as_secs_f32();
        *tokens = (*tokens + refill).min(SAMPLE_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            self.total.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why the latest malformed datagram was rejected, for the rate-limited log line.
#[derive(Clone, Copy, Debug)]
enum Rejected {
    Decode(Fault),
    /// The kernel cut the datagram at this length (larger than the receive buffer).
    Truncated(usize),
}

impl Rejected {
    fn reason(&self) -> Reason {
        match self {
            Rejected::Decode(e) => e.reason(),
            Rejected::Truncated(_) => Reason::Truncated,
        }
    }

    /// The offending value, kept with a malformed sample.
    fn detail(&self) -> u32 {
        match self {
            Rejected::Decode(e) => e.detail(),
            Rejected::Truncated(len) => *len as u32,
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Decode(e) => e.fmt(f),
            Rejected::Truncated(len) => {
                write!(f, "datagram truncated by the receive buffer at {len} bytes")
            }
        }
    }
}

/// What the shard counted since the last flush to its shared counters.
#[derive(Default)]
struct Local {
    datagrams: u64,
    decoded: u64,
    flows: u64,
    malformed: [u64; Reason::COUNT],
    malformed_since_log: u64,
    last_error: Option<(Rejected, SocketAddr)>,
    not_allowed: u64,
    time_suspect: u64,
}

struct State<'a> {
    handoff: &'a Handoff,
    counters: &'a ShardCounters,
    batch: Batch,
    flush_interval: Duration,
    sampler: Sampler,
    local: Local,
    last_log: Instant,
    id: usize,
    recorders: Recorders,
    overflow: Option<Box<dyn Overflow>>,
    decoder: Decoder,
    allow: AllowList,
    /// Busiest sources of not-allowed datagrams, published with the counters when changed.
    not_allowed_sources: TopSources,
    time_window_us: (i64, i64),
}

impl State<'_> {
    /// Decodes one datagram into the current batch, or counts and samples it as malformed.
    fn on_datagram(&mut self, d: Datagram<'_>, received_us: i64, now: Instant) {
        self.local.datagrams += 1;
        let exporter = addr_to_u128(d.source.ip());
        if !self.allow.allows(exporter) {
            self.local.not_allowed += 1;
            self.not_allowed_sources.add(exporter, 1);
            return;
        }
        if !self.batch.has_room_for(decode::MAX_FLOWS) {
            self.seal(now);
        }
        let datagrams_before = self.batch.flows.datagrams.len();
        let meta = DatagramMeta {
            exporter,
            received_us,
        };
        // NetFlow v5 from an IPv4 exporter: straight to COPY tuples (no columns).
        let v5_from = match (d.data.get(..2), as_v4(exporter)) {
            (Some([0, 5]), Some(v4)) if !d.truncated => Some(u32::from(v4)),
            _ => None,
        };
        let result = if let Some(v4) = v5_from {
            match copy::v5_rows(d.data, v4, &meta, self.time_window_us, &mut self.batch.v5) {
                Ok((n, flagged)) => {
                    self.local.time_suspect += flagged;
                    Ok(n)
                }
                Err(e) => Err(Rejected::Decode(Fault::V5(e))),
            }
        } else if d.truncated {
            Err(Rejected::Truncated(d.data.len()))
        } else {
            match self.decoder.datagram(d.data, &meta, &mut self.batch.flows) {
                Err(Failure::NoRoom(_)) => {
                    // A v9/IPFIX datagram larger than what is left: a fresh batch holds it
                    // (the decoder checked it fits in a whole one).
                    self.seal(now);
                    let r = self.decoder.datagram(d.data, &meta, &mut self.batch.flows);
                    if r.is_ok() {
                        self.local.time_suspect +=
                            flag_times(&mut self.batch.flows, 0, self.time_window_us);
                    }
                    r
                }
                Ok(n) => {
                    self.local.time_suspect +=
                        flag_times(&mut self.batch.flows, datagrams_before, self.time_window_us);
                    Ok(n)
                }
                r => r,
            }
            .map_err(|e| match e {
                Failure::Fault(f) => Rejected::Decode(f),
                Failure::NoRoom(n) => Rejected::Decode(Fault::TooManyRecords(n)),
            })
        };
        match result {
            Ok(n) => {
                self.local.decoded += 1;
                self.local.flows += u64::from(n);
                if self.batch.opened_at.is_none() {
                    self.batch.opened_at = Some(now);
                }
            }
            Err(e) => {
                self.malformed(e, d, exporter, received_us, now);
            }
        }
        if self.decoder.has_released() {
            self.decode_released(now);
        }
    }

    /// Decodes the data sets a template this shard just learned released from the hold.
    fn decode_released(&mut self, now: Instant) {
        loop {
            let before = self.batch.flows.datagrams.len();
            match self.decoder.released(&mut self.batch.flows) {
                Ok(None) => break,
                Ok(Some(n)) => {
                    self.local.time_suspect +=
                        flag_times(&mut self.batch.flows, before, self.time_window_us);
                    self.local.flows += u64::from(n);
                    if n > 0 && self.batch.opened_at.is_none() {
                        self.batch.opened_at = Some(now);
                    }
                }
                Err(Failure::NoRoom(_)) => self.seal(now),
                Err(Failure::Fault(f)) => {
                    tracing::warn!(shard = self.id, "a held data set could not be decoded: {f}");
                }
            }
        }
    }

    /// Counts, samples and remembers (for the log) a datagram that was not decoded.
    fn malformed(
        &mut self,
        e: Rejected,
        d: Datagram<'_>,
        exporter: u128,
        received_us: i64,
        now: Instant,
    ) {
        {
            {
                let reason = e.reason();
                self.local.malformed[reason as usize] += 1;
                self.local.malformed_since_log += 1;
                self.local.last_error = Some((e, d.source));
                if self.batch.has_room_for_sample() && self.sampler.allow(exporter, now) {
                    let mut head = [0u8; SAMPLE_BYTES];
                    let n = d.data.len().min(SAMPLE_BYTES);
                    head[..n].copy_from_slice(&d.data[..n]);
                    self.batch.malformed.push(MalformedSample {
                        exporter,
                        received_us,
                        reason,
                        detail: e.detail(),
                        length: d.data.len() as u32,
                        head_len: n as u8,
                        head,
                    });
                    if self.batch.opened_at.is_none() {
                        self.batch.opened_at = Some(now);
                    }
                }
            }
        }
    }

    /// Queues the current batch (if it holds anything) and takes an empty one.
    fn seal(&mut self, now: Instant) {
        if self.batch.is_empty() {
            return;
        }
        let (fresh, _) = match self.handoff.take_empty() {
            Some(b) => (b, Duration::ZERO),
            None => self.handoff.take_empty_wait(),
        };
        let mut sealed = std::mem::replace(&mut self.batch, fresh);
        sealed.sealed_at = Some(now);
        if let Some(opened) = sealed.opened_at {
            self.recorders
                .record_duration(Stage::ReceiveToSeal, now.saturating_duration_since(opened));
        }
        self.recorders.record(Stage::BatchFill, sealed.len() as u64);
        self.counters.batches.fetch_add(1, Relaxed);
        let sealed = match self.handoff.push_full(sealed) {
            Ok(()) => return,
            Err(sealed) => sealed,
        };
        self.counters.queue_full.fetch_add(1, Relaxed);
        match self.overflow.as_mut() {
            Some(o) => {
                o.absorb(&sealed);
                self.handoff.give_back(sealed);
            }
            None => {
                self.handoff.push_full_wait(sealed);
            }
        }
    }

    fn flush_counters(&mut self, rx: &dyn Receiver) {
        let l = &mut self.local;
        if l.datagrams > 0 {
            self.counters.datagrams.fetch_add(l.datagrams, Relaxed);
            self.counters
                .decoded_datagrams
                .fetch_add(l.decoded, Relaxed);
            self.counters.flows.fetch_add(l.flows, Relaxed);
            for (c, n) in self.counters.malformed.iter().zip(l.malformed.iter_mut()) {
                if *n > 0 {
                    c.fetch_add(*n, Relaxed);
                    *n = 0;
                }
            }
            l.datagrams = 0;
            l.decoded = 0;
            l.flows = 0;
        }
        if l.time_suspect > 0 {
            self.counters
                .flows_time_suspect
                .fetch_add(l.time_suspect, Relaxed);
            l.time_suspect = 0;
        }
        if l.not_allowed > 0 {
            self.counters.not_allowed.fetch_add(l.not_allowed, Relaxed);
            l.not_allowed = 0;
            self.counters
                .not_allowed_sources
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone_from(&self.not_allowed_sources);
        }
        if let Some(drops) = rx.kernel_drops() {
            self.counters.kernel_drops.store(drops, Relaxed);
        }
        // Running totals kept by the backend: stored, not added.
        let health = rx.health();
        self.counters
            .ring_exhausted
            .store(health.ring_exhausted, Relaxed);
        self.counters
            .unparsed_completions
            .store(health.unparsed, Relaxed);
    }

    fn maybe_log(&mut self, now: Instant) {
        if self.local.malformed_since_log > 0 && now.duration_since(self.last_log) >= LOG_EVERY {
            if let Some((e, from)) = self.local.last_error {
                tracing::warn!(
                    shard = self.id,
                    count = self.local.malformed_since_log,
                    "malformed datagrams since the last report; latest from {from}: {e}"
                );
            }
            self.local.malformed_since_log = 0;
            self.last_log = now;
        }
    }
}

/// Flags (and counts) the rows of the datagrams from index `from` on whose start or end lies
/// more than `ahead` µs after the datagram's arrival, or whose end more than `behind` µs
/// before it.
fn flag_times(cols: &mut Columns, from: usize, (ahead, behind): (i64, i64)) -> u64 {
    let mut flagged = 0;
    for d in cols.datagrams.get(from..).unwrap_or(&[]) {
        let rx_ms = d.received_us / 1000;
        let (hi, lo) = (rx_ms + ahead / 1000, rx_ms - behind / 1000);
        let rows = d.first_flow as usize..d.first_flow as usize + usize::from(d.count);
        for i in rows {
            let (start, end) = (cols.flow_start_ms[i], cols.flow_end_ms[i]);
            if start > hi || end > hi || end < lo {
                cols.present[i] |= present::TIME_SUSPECT;
                flagged += 1;
            }
        }
    }
    flagged
}

fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Runs a shard until `stop` is set, then drains its socket and returns.
pub fn run(
    mut cfg: ShardConfig,
    mut rx: Box<dyn Receiver>,
    handoff: Arc<Handoff>,
    counters: Arc<CachePadded<ShardCounters>>,
    stop: Arc<AtomicBool>,
) {
    if let Some(core) = cfg.core {
        if !core_affinity::set_for_current(core) {
            // Worth a warning: `--balance cpu` routes by the core a shard should be on.
            tracing::warn!(shard = cfg.id, "could not pin to core {}", core.id);
        }
    }
    let (batch, _) = handoff.take_empty_wait();
    let mut st = State {
        handoff: &handoff,
        counters: &counters,
        batch,
        flush_interval: cfg.flush_interval,
        sampler: Sampler::new(cfg.samples_per_s),
        local: Local::default(),
        last_log: Instant::now() - LOG_EVERY,
        id: cfg.id,
        recorders: cfg.recorders,
        overflow: cfg.overflow.take(),
        decoder: Decoder::new(cfg.netflow.clone()),
        allow: cfg.allow.clone(),
        not_allowed_sources: TopSources::default(),
        time_window_us: cfg.time_window_us,
    };
    let mut drain_until: Option<Instant> = None;
    let mut last_drop_check = Instant::now();
    loop {
        let stopping = stop.load(Relaxed);
        if stopping && drain_until.is_none() {
            drain_until = Some(Instant::now() + DRAIN_LIMIT);
        }
        let wait = if stopping {
            Duration::ZERO
        } else {
            match st.batch.opened_at {
                Some(t) => st.flush_interval.saturating_sub(t.elapsed()).min(MAX_WAIT),
                None => MAX_WAIT,
            }
        };
        // A datagram's arrival is the kernel's receive time (SO_TIMESTAMPNS); where the kernel
        // gave none, the wall clock, read once per receive call. The monotonic clock (batch
        // ages) is read once per receive call too.
        let mut now_at: Option<Instant> = None;
        let mut wall_us: Option<i64> = None;
        let got = rx.recv(wait, &mut |d| {
            let now = *now_at.get_or_insert_with(Instant::now);
            let us = match d.received_us {
                Some(us) => us,
                None => *wall_us.get_or_insert_with(|| unix_us(SystemTime::now())),
            };
            st.on_datagram(d, us, now);
        });
        let now = Instant::now();
        match got {
            Ok(0) if stopping => break,
            Ok(_) if drain_until.is_some_and(|t| now >= t) => break,
            Ok(_) => {}
            Err(e) => {
                st.counters.receive_errors.fetch_add(1, Relaxed);
                tracing::error!(shard = cfg.id, "receive failed: {e}");
                std::thread::sleep(MAX_WAIT);
            }
        }
        if now.duration_since(last_drop_check) >= DROP_CHECK_EVERY {
            st.decoder.expire_held(now);
            rx.refresh_kernel_drops();
            last_drop_check = now;
        }
        st.flush_counters(rx.as_ref());
        if st
            .batch
            .opened_at
            .is_some_and(|t| now.duration_since(t) >= st.flush_interval)
        {
            st.seal(now);
        }
        st.maybe_log(now);
    }
    let now = Instant::now();
    st.seal(now);
    // Still being sent to after the drain time: count what the socket holds, without
    // decoding it, so the stop accounts for every datagram nfpg was handed.
    let mut left = 0u64;
    let until = Instant::now() + DRAIN_LIMIT;
    while Instant::now() < until {
        match rx.recv(Duration::ZERO, &mut |_| left += 1) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if left > 0 {
        counters.left_at_stop.fetch_add(left, Relaxed);
        tracing::warn!(
            shard = cfg.id,
            left,
            "datagrams still arriving at stop: counted as left_at_stop, not stored"
        );
    }
    rx.refresh_kernel_drops();
    st.flush_counters(rx.as_ref());
    st.maybe_log(now + LOG_EVERY);
    // Return the batch we still hold to the pool so the writers can finish cleanly.
    handoff.give_back(st.batch);
}
