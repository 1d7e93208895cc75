//! Sender threads: turns exporters' datagrams into `sendmmsg` batches at a paced rate.
//!
//! Owns the sockets, the clock, pacing, the count/duration bounds, `--drop-every`, and the
//! per-exporter and total counters that end up in the JSON report. Each exporter lives on
//! exactly one thread, so its flow sequence is produced in order. One unconnected socket per
//! thread sends for all of that thread's exporters: each message carries an `IP_PKTINFO` /
//! `IPV6_PKTINFO` control message naming the exporter's source address, so a batch can mix
//! exporters and 10,000 exporters need no extra file descriptors.
//!
//! With `--hostile-rate`, [`run`] also starts the [`crate::hostile`] sender thread with the
//! valid ones and stops it when they have finished; it shares their start, deadline, target
//! and [`sys`], and gets a copy of each exporter's identity and clock to imitate.
//!
//! All `unsafe` code of the crate lives in [`sys`].

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::hostile;
use crate::traffic::{Built, Exporter, Pool, Profile, Version, MAX_DATAGRAM};
use nfpg_wire::v5::encode as v5;

/// Datagrams, flows, packets and bytes: what every counter in the report adds up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub datagrams: u64,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl Totals {
    pub fn add_built(&mut self, b: &Built) {
        self.datagrams += 1;
        self.flows += b.flows;
        self.packets += b.packets;
        self.bytes += b.bytes;
    }

    pub fn add(&mut self, o: &Totals) {
        self.datagrams += o.datagrams;
        self.flows += o.flows;
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

/// One exporter's line in the report. `datagrams..bytes` count what was sent;
/// `next_seq - first_seq` (wrapping) also counts what was dropped on purpose: flows for v5
/// and IPFIX, datagrams for v9.
#[derive(Debug, Clone, Serialize)]
pub struct ExporterReport {
    pub address: String,
    pub engine_id: u8,
    /// v9 source id / IPFIX observation domain (engine_type × 256 + engine_id); absent for v5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<u32>,
    /// v9/IPFIX: datagrams built with the template sets in front (sent or dropped on purpose).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_datagrams: Option<u64>,
    pub datagrams: u64,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub first_seq: u32,
    pub next_seq: u32,
    pub dropped_on_purpose: Totals,
}

/// Everything one run of the generator produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub started_at_unix_ms: u64,
    pub ended_at_unix_ms: u64,
    pub elapsed: Duration,
    pub sent: Totals,
    pub dropped_on_purpose: Totals,
    pub exporters: Vec<ExporterReport>,
    /// The mode actually used (bind falls back to pktinfo without enough descriptors).
    pub source_mode: SourceMode,
    /// What the `--hostile-rate` thread sent; `None` when it is off.
    pub hostile: Option<hostile::Report>,
}

/// How exporters get their source addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// One socket per thread; each message names its source with IP(V6)_PKTINFO.
    Pktinfo,
    /// One socket per exporter, bound to its address and connected to the target; each
    /// `sendmmsg` batch then holds datagrams of one exporter. Raises RLIMIT_NOFILE as needed.
    Bind,
}

/// How a run is bounded and paced.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: SocketAddr,
    pub threads: usize,
    /// Datagrams per second over all threads (built ones, sent or dropped); 0 = flat out.
    pub rate: u64,
    /// Datagrams to build in total.
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// Datagrams per `sendmmsg` call.
    pub batch: usize,
    /// Every k-th datagram of each exporter is built but not sent; 0 = never.
    pub drop_every: u64,
    pub source_mode: SourceMode,
    /// Records in the replayed [`Pool`]; 0 = every record drawn as it goes out.
    pub pool: usize,
    pub profile: Profile,
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Source addresses for `n` exporters: 127.1.0.1, 127.1.0.2, … for an IPv4 target;
/// fd00:6e66::1, … (sent with IPV6_FREEBIND) for an IPv6 one.
pub fn default_exporters(n: usize, target: &SocketAddr) -> Result<Vec<IpAddr>> {
    if target.is_ipv4() {
        if n > 0x00fe_0000 {
            bail!("at most {} IPv4 exporters fit in 127.1.0.1..", 0x00fe_0000);
        }
        let base = u32::from(std::net::Ipv4Addr::new(127, 1, 0, 1));
        Ok((0..n as u32)
            .map(|i| IpAddr::V4((base + i).into()))
            .collect())
    } else {
        let base = u128::from("fd00:6e66::1".parse::<std::net::Ipv6Addr>()?);
        Ok((0..n as u128)
            .map(|i| IpAddr::V6((base + i).into()))
            .collect())
    }
}

struct Lane {
    addr: IpAddr,
    state: Exporter,
    first_seq: u32,
    sent: Totals,
    dropped: Totals,
    /// Datagrams this lane still has to build under `--count`.
    quota: u64,
}

struct WorkerOut {
    sent: Totals,
    dropped: Totals,
    lanes: Vec<Lane>,
}

/// Most datagrams one sender thread is assumed able to build per second flat out (`--rate 0`):
/// ten times the measured single-thread rate. Only bounds how far an exporter's sequence can
/// advance in a `--duration` run, for the impostors' sequence numbers.
const FLAT_OUT_DPS: f64 = 2_000_000.0;

/// An upper bound on the datagrams (sent or dropped on purpose) one exporter builds during the
/// run: its `--count` quota, or the most its thread builds before the deadline. Without
/// `--count` the thread's exporters take strict turns when each message picks the next one
/// (pktinfo) or when every batch is full (bind, flat out), so one exporter gets at most its
/// share of that plus a batch.
fn datagram_bound(plan: &Plan, quota: u64, thread_lanes: usize, n: usize, mode: SourceMode) -> u64 {
    let by_time = plan.duration.map(|d| {
        let rate = if plan.rate > 0 {
            plan.rate as f64 * thread_lanes as f64 / n as f64
        } else {
            FLAT_OUT_DPS
        };
        let thread = (rate * d.as_secs_f64()).ceil() as u64 + 1;
        if plan.count.is_none() && (mode == SourceMode::Pktinfo || plan.rate == 0) {
            thread.div_ceil(thread_lanes.max(1) as u64) + plan.batch as u64
        } else {
            thread
        }
    });
    match (plan.count, by_time) {
        (Some(_), Some(t)) => quota.min(t),
        (Some(_), None) => quota,
        (None, Some(t)) => t,
        (None, None) => u64::MAX,
    }
}

/// How far one datagram advances an exporter's sequence number, at most.
fn seq_per_datagram(profile: &Profile) -> u64 {
    match profile.version {
        Version::V5 => profile.records.clamp(1, v5::MAX_RECORDS) as u64,
        Version::V9 => 1,
        Version::Ipfix => profile.records.clamp(1, crate::templated::MAX_RECORDS) as u64,
    }
}

/// Runs the generator: builds `addrs.len()` exporters, spreads them over threads and sends;
/// with `hostile`, also the hostile thread, from the start until the valid senders finish.
pub fn run(plan: &Plan, addrs: &[IpAddr], hostile: Option<&hostile::Plan>) -> Result<RunResult> {
    if addrs.is_empty() {
        bail!("no exporters");
    }
    for a in addrs {
        if a.is_ipv4() != plan.target.is_ipv4() {
            bail!(
                "exporter {a} and target {} are of different address families",
                plan.target
            );
        }
    }
    let threads = plan.threads.clamp(1, addrs.len());
    let mut mode = plan.source_mode;
    if mode == SourceMode::Bind {
        if let Err(e) = sys::raise_nofile(addrs.len() as u64 + 64) {
            eprintln!("nfpg-loadgen: cannot open a socket per exporter ({e}); using pktinfo");
            mode = SourceMode::Pktinfo;
        }
    }
    let batch = plan.batch.clamp(1, 1024);
    // Drawn before the clock starts, so the first datagrams are not late.
    let pool = (plan.pool > 0).then(|| Arc::new(Pool::draw(plan.profile.seed, plan.pool)));
    let started = SystemTime::now();
    let started_ms = unix_ms(started);
    let n = addrs.len() as u64;

    let mut per_thread: Vec<Vec<Lane>> = (0..threads).map(|_| Vec::new()).collect();
    let mut victims = Vec::new();
    for (i, &addr) in addrs.iter().enumerate() {
        let mut state = Exporter::new(&plan.profile, i, started_ms);
        if let Some(pool) = &pool {
            state.replay(pool.clone(), plan.profile.seed);
        }
        let quota = match plan.count {
            Some(c) => c / n + u64::from((i as u64) < c % n),
            None => u64::MAX,
        };
        if hostile.is_some() {
            let t = i % threads;
            let thread_lanes = addrs.len() / threads + usize::from(t < addrs.len() % threads);
            let span = datagram_bound(plan, quota, thread_lanes, addrs.len(), mode)
                .saturating_mul(seq_per_datagram(&plan.profile));
            victims.push(hostile::Victim {
                addr,
                engine_type: state.engine_type,
                engine_id: state.engine_id,
                sampling_interval: state.sampling_interval,
                uptime_at_zero: state.uptime_at_zero,
                clock_zero_ms: state.clock_zero_ms,
                seq: hostile::seq_window(state.seq, span)
                    .with_context(|| format!("impostors of exporter {addr}"))?,
            });
        }
        per_thread[i % threads].push(Lane {
            addr,
            first_seq: state.seq,
            state,
            sent: Totals::default(),
            dropped: Totals::default(),
            quota,
        });
    }

    let t0 = Instant::now();
    let deadline = plan.duration.map(|d| t0 + d);
    let stop = AtomicBool::new(false);
    let (outs, hostile_out): (Vec<Result<WorkerOut>>, _) = std::thread::scope(|s| {
        // Started first so that it shares the valid senders' whole run.
        let hostile_thread = hostile.map(|h| {
            let cfg = hostile::SendCfg {
                target: plan.target,
                batch,
                t0,
                deadline,
                stop: &stop,
            };
            s.spawn(move || hostile::run(h, victims, &cfg))
        });
        let handles: Vec<_> = per_thread
            .into_iter()
            .map(|lanes| {
                let cfg = WorkerCfg {
                    target: plan.target,
                    rate: plan.rate as f64 * lanes.len() as f64 / n as f64,
                    deadline,
                    t0,
                    batch,
                    records: plan.profile.records,
                    drop_every: plan.drop_every,
                    mode,
                };
                s.spawn(move || worker(lanes, &cfg))
            })
            .collect();
        let outs = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("sender thread panicked")))
            })
            .collect();
        // Every valid sender has stopped: so does the hostile one.
        stop.store(true, Ordering::Release);
        let hostile_out = hostile_thread.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("hostile sender thread panicked")))
        });
        (outs, hostile_out)
    });
    let elapsed = t0.elapsed();
    let ended_ms = unix_ms(SystemTime::now());

    let mut sent = Totals::default();
    let mut dropped = Totals::default();
    let mut lanes = Vec::with_capacity(addrs.len());
    for out in outs {
        let out = out?;
        sent.add(&out.sent);
        dropped.add(&out.dropped);
        lanes.extend(out.lanes);
    }
    let hostile = hostile_out.transpose()?;
    lanes.sort_by_key(|l| l.state.index);
    let templated = plan.profile.version.templated().is_some();
    let exporters = lanes
        .into_iter()
        .map(|l| ExporterReport {
            address: l.addr.to_string(),
            engine_id: l.state.engine_id,
            source_id: templated.then_some(l.state.domain),
            template_datagrams: templated.then_some(l.state.template_datagrams),
            datagrams: l.sent.datagrams,
            flows: l.sent.flows,
            packets: l.sent.packets,
            bytes: l.sent.bytes,
            first_seq: l.first_seq,
            next_seq: l.state.seq,
            dropped_on_purpose: l.dropped,
        })
        .collect();
    Ok(RunResult {
        started_at_unix_ms: started_ms,
        ended_at_unix_ms: ended_ms,
        elapsed,
        sent,
        dropped_on_purpose: dropped,
        exporters,
        source_mode: mode,
        hostile,
    })
}

pub(crate) fn open_socket(target: &SocketAddr) -> Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(*target),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .context("creating UDP socket")?;
    // A larger send buffer keeps a blocked collector from stalling batches mid-way; failure
    // only costs speed.
    let _ = sock.set_send_buffer_size(4 << 20);
    if target.is_ipv6() {
        sys::set_ipv6_freebind(&sock).context("setting IPV6_FREEBIND")?;
    }
    Ok(sock)
}

/// A socket sending as `src`: bound to it and connected to `target`.
fn open_bound(src: IpAddr, target: &SocketAddr) -> Result<Socket> {
    let sock = open_socket(target)?;
    let _ = sock.set_send_buffer_size(1 << 20);
    sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
        .with_context(|| format!("binding to {src}"))?;
    sock.connect(&SockAddr::from(*target))
        .with_context(|| format!("connecting {src} to {target}"))?;
    Ok(sock)
}

/// Sleeps until `until` or at most `cap`, whichever is sooner.
pub(crate) fn nap(until: Instant, cap: Duration) {
    let now = Instant::now();
    if until > now {
        std::thread::sleep((until - now).min(cap));
    }
}

/// What one sender thread needs besides its exporters.
struct WorkerCfg {
    target: SocketAddr,
    /// This thread's share of the rate, datagrams/s; 0 = flat out.
    rate: f64,
    deadline: Option<Instant>,
    t0: Instant,
    batch: usize,
    records: usize,
    drop_every: u64,
    mode: SourceMode,
}

fn worker(mut lanes: Vec<Lane>, cfg: &WorkerCfg) -> Result<WorkerOut> {
    let WorkerCfg {
        target,
        rate,
        deadline,
        t0,
        batch,
        records,
        drop_every,
        mode,
    } = *cfg;
    let one_lane_per_batch = mode == SourceMode::Bind;
    // Either one shared socket plus a control message per lane, or a socket per lane. The
    // controls are kept apart from `lanes` (which the send loop mutates) because messages
    // point into them.
    let (shared, own, controls) = match mode {
        SourceMode::Pktinfo => (
            Some(open_socket(&target)?),
            Vec::new(),
            lanes
                .iter()
                .map(|l| sys::Control::pktinfo(l.addr))
                .collect(),
        ),
        SourceMode::Bind => (
            None,
            lanes
                .iter()
                .map(|l| open_bound(l.addr, &target))
                .collect::<Result<Vec<_>>>()?,
            Vec::new(),
        ),
    };
    let dest = SockAddr::from(target);
    let no_control = sys::Control::none();
    let mut bufs = vec![[0u8; MAX_DATAGRAM]; batch];
    // (lane, built) of each message in the batch, for counting once the kernel took it.
    let mut slots: Vec<(usize, Built)> = Vec::with_capacity(batch);
    let mut mmsg = sys::Batch::new(batch);
    let mut sent = Totals::default();
    let mut dropped = Totals::default();
    let mut remaining: u64 = lanes.iter().map(|l| l.quota).fold(0, u64::saturating_add);
    let mut built_total: u64 = 0;
    // Pace in slices of about 1 ms worth of datagrams (at least one, at most a batch).
    let slice = ((rate / 1000.0).ceil() as usize).clamp(1, batch);
    let mut cur = 0usize;

    while remaining > 0 && !lanes.is_empty() {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        let mut n = batch.min(usize::try_from(remaining).unwrap_or(batch));
        if rate > 0.0 {
            let allowed = (rate * (now - t0).as_secs_f64()) as u64;
            let ready = allowed.saturating_sub(built_total);
            if ready < slice.min(n) as u64 {
                // Wake when the next slice is due, but never past the deadline.
                let due = t0 + Duration::from_secs_f64((built_total + slice as u64) as f64 / rate);
                nap(
                    deadline.map_or(due, |d| d.min(due)),
                    Duration::from_millis(2),
                );
                continue;
            }
            n = n.min(usize::try_from(ready).unwrap_or(n));
        }

        let now_ms = unix_ms(SystemTime::now());
        slots.clear();
        let mut built_here = 0;
        // Skip lanes whose --count quota is used up.
        let mut tries = 0;
        while lanes[cur].quota == 0 && tries < lanes.len() {
            cur = (cur + 1) % lanes.len();
            tries += 1;
        }
        let batch_lane = cur;
        while built_here < n {
            if one_lane_per_batch {
                if lanes[batch_lane].quota == 0 {
                    break;
                }
            } else {
                let mut tries = 0;
                while lanes[cur].quota == 0 && tries < lanes.len() {
                    cur = (cur + 1) % lanes.len();
                    tries += 1;
                }
                if lanes[cur].quota == 0 {
                    break;
                }
            }
            let li = if one_lane_per_batch { batch_lane } else { cur };
            if !one_lane_per_batch {
                cur = (cur + 1) % lanes.len();
            }
            let lane = &mut lanes[li];
            lane.quota -= 1;
            let buf = &mut bufs[slots.len()];
            let b = lane.state.build(buf, records, now_ms);
            built_here += 1;
            if drop_every > 0 && lane.state.datagrams_built.is_multiple_of(drop_every) {
                lane.dropped.add_built(&b);
                dropped.add_built(&b);
            } else {
                slots.push((li, b));
            }
        }
        if built_here == 0 {
            break;
        }
        if one_lane_per_batch {
            cur = (batch_lane + 1) % lanes.len();
        }
        let sock = match &shared {
            Some(s) => s,
            None => &own[batch_lane],
        };
        built_total += built_here as u64;
        remaining = remaining.saturating_sub(built_here as u64);

        for (i, (li, b)) in slots.iter().enumerate() {
            match mode {
                SourceMode::Pktinfo => mmsg.set(i, &bufs[i][..b.len], Some(&dest), &controls[*li]),
                SourceMode::Bind => mmsg.set(i, &bufs[i][..b.len], None, &no_control),
            }
        }
        let mut off = 0;
        let mut stalls = 0u32;
        while off < slots.len() {
            match mmsg.send(sock, off, slots.len() - off) {
                Ok(k) => {
                    for (li, b) in &slots[off..off + k] {
                        lanes[*li].sent.add_built(b);
                        sent.add_built(b);
                    }
                    off += k;
                    stalls = 0;
                }
                // A connected socket reports an earlier datagram's ICMP port unreachable on
                // the next send, which it did not send; nothing listening is not an error here.
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) && stalls < 10_000 => {
                    stalls += 1;
                }
                Err(e) if sys::is_transient(&e) && stalls < 10_000 => {
                    stalls += 1;
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(e) => return Err(e).context(format!("sendmmsg to {target}")),
            }
        }
    }
    Ok(WorkerOut {
        sent,
        dropped,
        lanes,
    })
}

/// Result of replaying a capture.
#[derive(Debug, Clone)]
pub struct ReplayResult {
    pub started_at_unix_ms: u64,
    pub ended_at_unix_ms: u64,
    pub elapsed: Duration,
    pub sent: Totals,
    pub non_v5_datagrams: u64,
    pub rewritten: u64,
}

/// Sends captured payloads in order, paced at `rate` datagrams/s (0 = flat out), optionally
/// stamping v5 headers with the current time. Bounded by the payload count.
pub fn replay(
    payloads: &mut [Vec<u8>],
    target: SocketAddr,
    rate: u64,
    rewrite_time: bool,
) -> Result<ReplayResult> {
    let started_ms = unix_ms(SystemTime::now());
    let t0 = Instant::now();
    let sock = Socket::new(
        Domain::for_address(target),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .context("creating UDP socket")?;
    let dest = SockAddr::from(target);
    let none = sys::Control::none();
    let batch = 64usize;
    let mut mmsg = sys::Batch::new(batch);
    let mut sent = Totals::default();
    let mut non_v5 = 0u64;
    let mut rewritten = 0u64;
    let mut next = 0usize;
    let rate = rate as f64;
    let slice = ((rate / 1000.0).ceil() as usize).clamp(1, batch);

    while next < payloads.len() {
        let mut n = batch.min(payloads.len() - next);
        if rate > 0.0 {
            let allowed = (rate * t0.elapsed().as_secs_f64()) as u64;
            let ready = allowed.saturating_sub(next as u64);
            if ready < slice.min(n) as u64 {
                let due = t0 + Duration::from_secs_f64((next + slice) as f64 / rate);
                nap(due, Duration::from_millis(2));
                continue;
            }
            n = n.min(usize::try_from(ready).unwrap_or(n));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let chunk = &mut payloads[next..next + n];
        if rewrite_time {
            for p in chunk.iter_mut() {
                if v5::rewrite_time(p, now.as_secs() as u32, now.subsec_nanos()) {
                    rewritten += 1;
                }
            }
        }
        for (i, p) in chunk.iter().enumerate() {
            mmsg.set(i, p, Some(&dest), &none);
        }
        let mut off = 0;
        let mut stalls = 0u32;
        while off < n {
            match mmsg.send(&sock, off, n - off) {
                Ok(k) => {
                    for p in &chunk[off..off + k] {
                        sent.datagrams += 1;
                        match v5::peek(p) {
                            Some(s) => {
                                sent.flows += u64::from(s.count);
                                sent.packets += s.packets;
                                sent.bytes += s.bytes;
                            }
                            None => non_v5 += 1,
                        }
                    }
                    off += k;
                    stalls = 0;
                }
                Err(e) if sys::is_transient(&e) && stalls < 10_000 => {
                    stalls += 1;
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(e) => return Err(e).context(format!("sendmmsg to {target}")),
            }
        }
        next += n;
    }
    Ok(ReplayResult {
        started_at_unix_ms: started_ms,
        ended_at_unix_ms: unix_ms(SystemTime::now()),
        elapsed: t0.elapsed(),
        sent,
        non_v5_datagrams: non_v5,
        rewritten,
    })
}

/// The crate's only `unsafe` code: `sendmmsg` message arrays and packet-info control messages.
#[allow(unsafe_code)]
pub(crate) mod sys {
    use std::io;
    use std::mem::size_of;
    use std::net::IpAddr;
    use std::os::fd::AsRawFd;

    use socket2::{SockAddr, Socket};

    /// A ready-made control message choosing a source address, or none.
    pub struct Control {
        /// u64 words keep the buffer aligned for `cmsghdr`.
        buf: [u64; 8],
        len: usize,
    }

    impl Control {
        pub fn none() -> Self {
            Control {
                buf: [0; 8],
                len: 0,
            }
        }

        /// `IP_PKTINFO` / `IPV6_PKTINFO` with `ipi_spec_dst` / `ipi6_addr` = `src`.
        pub fn pktinfo(src: IpAddr) -> Self {
            let mut c = Control::none();
            let (level, kind, data_len) = match src {
                IpAddr::V4(_) => (
                    libc::IPPROTO_IP,
                    libc::IP_PKTINFO,
                    size_of::<libc::in_pktinfo>(),
                ),
                IpAddr::V6(_) => (
                    libc::IPPROTO_IPV6,
                    libc::IPV6_PKTINFO,
                    size_of::<libc::in6_pktinfo>(),
                ),
            };
            // SAFETY: CMSG_SPACE only computes a size from its argument.
            let space = unsafe { libc::CMSG_SPACE(data_len as u32) } as usize;
            assert!(space <= size_of::<[u64; 8]>(), "control buffer too small");
            // SAFETY: a zeroed msghdr is valid; it points at `c.buf`, which is `space` bytes or
            // more and 8-byte aligned, so CMSG_FIRSTHDR returns a pointer inside `c.buf` (not
            // null, since msg_controllen >= size_of::<cmsghdr>()), and CMSG_DATA points
            // `data_len` bytes inside the same space. The writes are unaligned-safe.
            unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_control = c.buf.as_mut_ptr().cast();
                msg.msg_controllen = space as _;
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = level;
                (*cmsg).cmsg_type = kind;
                (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
                let data = libc::CMSG_DATA(cmsg);
                match src {
                    IpAddr::V4(a) => {
                        let info = libc::in_pktinfo {
                            ipi_ifindex: 0,
                            ipi_spec_dst: libc::in_addr {
                                s_addr: u32::from_ne_bytes(a.octets()),
                            },
                            ipi_addr: libc::in_addr { s_addr: 0 },
                        };
                        std::ptr::write_unaligned(data.cast::<libc::in_pktinfo>(), info);
                    }
                    IpAddr::V6(a) => {
                        let info = libc::in6_pktinfo {
                            ipi6_addr: libc::in6_addr {
                                s6_addr: a.octets(),
                            },
                            ipi6_ifindex: 0,
                        };
                        std::ptr::write_unaligned(data.cast::<libc::in6_pktinfo>(), info);
                    }
                }
            }
            c.len = space;
            c
        }
    }

    /// Reusable `mmsghdr` + `iovec` arrays for one `sendmmsg` batch.
    pub struct Batch {
        msgs: Vec<libc::mmsghdr>,
        iovs: Vec<libc::iovec>,
    }

    impl Batch {
        pub fn new(n: usize) -> Self {
            Batch {
                // SAFETY: mmsghdr and iovec are plain C structs for which all-zero is valid.
                msgs: (0..n).map(|_| unsafe { std::mem::zeroed() }).collect(),
                // SAFETY: as above.
                iovs: (0..n).map(|_| unsafe { std::mem::zeroed() }).collect(),
            }
        }

        /// Points message `i` at `data`, `dest` and `control`. The pointers are only read by
        /// [`Batch::send`], whose borrow rules make the caller keep these alive and unmoved
        /// (they are borrowed again there).
        pub fn set(&mut self, i: usize, data: &[u8], dest: Option<&SockAddr>, control: &Control) {
            self.iovs[i] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            let h = &mut self.msgs[i].msg_hdr;
            // A connected socket sends without a destination address.
            (h.msg_name, h.msg_namelen) = match dest {
                Some(d) => (d.as_ptr() as *mut libc::c_void, d.len()),
                None => (std::ptr::null_mut(), 0),
            };
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = if control.len == 0 {
                std::ptr::null_mut()
            } else {
                control.buf.as_ptr() as *mut libc::c_void
            };
            h.msg_controllen = control.len as _;
            h.msg_flags = 0;
        }

        /// Sends messages `off..off + n`; returns how many the kernel took.
        ///
        /// Callers set every message in that range with [`Batch::set`] in the same loop
        /// iteration, from buffers they do not touch until this returns.
        pub fn send(&mut self, sock: &Socket, off: usize, n: usize) -> io::Result<usize> {
            assert!(off + n <= self.msgs.len(), "batch range out of bounds");
            // SAFETY: the range is in bounds (checked above); every message in it was filled by
            // `set` with pointers to live buffers, the destination address and a control
            // message, which the callers (`worker`, `replay`, `hostile::run`) keep alive and
            // unmoved across this call; the kernel only reads them.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.msgs.as_mut_ptr().add(off),
                    n as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            }
        }
    }

    /// Errors worth a short wait and a retry: full buffers and interrupted calls.
    pub fn is_transient(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR | libc::ENOMEM)
        )
    }

    /// Raises the soft RLIMIT_NOFILE to at least `want` (up to the hard limit).
    pub fn raise_nofile(want: u64) -> io::Result<()> {
        // SAFETY: a zeroed rlimit is valid; getrlimit writes into the live local.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: RLIMIT_NOFILE is a valid resource; `lim` is a live, writable rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur >= want as libc::rlim_t {
            return Ok(());
        }
        if lim.rlim_max < want as libc::rlim_t {
            return Err(io::Error::other(format!(
                "{want} file descriptors needed, hard limit is {}",
                lim.rlim_max
            )));
        }
        lim.rlim_cur = want as libc::rlim_t;
        // SAFETY: as above; setrlimit only reads `lim`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Lets an IPv6 socket send from addresses not configured on any interface.
    pub fn set_ipv6_freebind(sock: &Socket) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: valid fd, option value points at a live c_int of the stated length.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_FREEBIND,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}
