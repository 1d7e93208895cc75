//! `--hostile-rate`: a paced flood of hostile datagrams alongside the valid exporters.
//!
//! Owns the hostile traffic: the spoofed source addresses (127.64.0.1, 127.64.0.2, … for an
//! IPv4 target, fd00:6e67::1, … for an IPv6 one), the check that they never overlap the valid
//! exporters, the deterministic stream of hostile datagrams ([`Generator`]: kinds in the fixed
//! repeating [`PATTERN`], contents from a seeded [`Rng`]), the sender thread that paces them
//! into `sendmmsg` batches with an `IP_PKTINFO` / `IPV6_PKTINFO` source per message ([`run`]),
//! and the `"hostile"` object of the report ([`Report`]). The kinds:
//!
//! - `spoofed`: a well-formed v5 datagram (30 records, current time, random uptime, sequence
//!   and engine id) from a random spoofed source;
//! - `malformed`: garbage from a random spoofed source, rotating through [`MALFORMATIONS`]
//!   (every one is rejected by `nfpg_wire`'s decoders; the unit tests check it);
//! - `future`: a well-formed v5 datagram from a random spoofed source whose header time is
//!   [`FUTURE_SECS`] ahead, so every flow lies more than a day after its arrival;
//! - `impostor`: a well-formed v5 datagram from a valid exporter's address (round robin) with
//!   its engine type, engine id and sampling field, a flow sequence at least 2²⁴ away from
//!   every sequence number that exporter can send during the run ([`seq_window`]), and, every
//!   other round per exporter, the exporter's own uptime clock (the same boot), else a random
//!   one.
//!
//! The thread is started with the valid senders and stopped when they finish (or at the
//! `--duration` deadline), so it is bounded exactly as they are. What the kernel accepted is
//! counted per kind; nothing here touches the valid exporters' counters. All `unsafe` code
//! stays in `send::sys`.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use socket2::SockAddr;

use crate::send::{self, sys, Totals};
use crate::templated::{self as tpl, Format};
use crate::traffic::{self, Built, Rng, MAX_DATAGRAM};
use nfpg_wire::v5::encode as v5;

/// Default number of spoofed source addresses.
pub const DEFAULT_SOURCES: u32 = 4096;
/// Most spoofed source addresses: 127.64.0.1 ..= 127.128.0.0 for an IPv4 target.
pub const MAX_SOURCES: u32 = 1 << 22;
/// The first spoofed source for an IPv4 target.
pub const FIRST_V4: Ipv4Addr = Ipv4Addr::new(127, 64, 0, 1);
/// The first spoofed source for an IPv6 target (next to the valid fd00:6e66::/32 ones).
pub const FIRST_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6e67, 0, 0, 0, 0, 0, 1);
/// How far ahead of the current time a `future` datagram's header is: two days.
pub const FUTURE_SECS: u32 = 2 * 86_400;
/// Records in every well-formed hostile datagram.
pub const RECORDS: usize = 30;
/// Least distance (mod 2³²) between an impostor's flow sequence and any sequence number the
/// exporter it imitates can send during the run.
pub const SEQ_MARGIN: u64 = 1 << 24;
/// Impostor sequences spread at most this far either side of the middle of the free range.
pub const SEQ_SPREAD: u64 = 1 << 30;
/// Uptimes of random boots: 1 hour to 40 days, as the valid exporters pick theirs.
const UPTIME_RANGE: (u64, u64) = (3_600_000, 40 * 86_400_000);

/// What a hostile datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Spoofed,
    Malformed,
    Future,
    Impostor,
}

/// The kinds in the order they repeat: datagram `k` of the run is `PATTERN[k % 4]`.
pub const PATTERN: [Kind; 4] = [Kind::Spoofed, Kind::Malformed, Kind::Future, Kind::Impostor];

/// How a `malformed` datagram is broken. Named after the reason nfpg counts it under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformation {
    /// v5 header with count 30, but room for fewer records (24 + 48·k + j bytes, k < 30).
    BadLength,
    /// A v5-shaped datagram whose version is 7 or 0xffff (alternately).
    BadVersion,
    /// 1–23 bytes, starting with version 5 when there are two or more.
    TooShort,
    /// A v9 header, then a data set whose length is below 4 or runs past the end (alternately).
    BadSetLength,
}

/// The malformations in the order they rotate: the `m`-th malformed datagram of the run is
/// `MALFORMATIONS[m % 4]`.
pub const MALFORMATIONS: [Malformation; 4] = [
    Malformation::BadLength,
    Malformation::BadVersion,
    Malformation::TooShort,
    Malformation::BadSetLength,
];

/// The command line's hostile settings.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Hostile datagrams per second (> 0).
    pub rate: u64,
    /// Spoofed source addresses.
    pub sources: u32,
    pub seed: u64,
}

/// Spoofed source `i` (0-based) for a target of this family.
pub fn source(i: u32, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4((u32::from(FIRST_V4) + i).into())
    } else {
        IpAddr::V6((u128::from(FIRST_V6) + u128::from(i)).into())
    }
}

/// An address as a number comparable across families (IPv4 in its IPv4-mapped form).
fn ordinal(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Checks `sources` and that no valid exporter address is one of the spoofed sources.
pub fn check_sources(sources: u32, target: &SocketAddr, valid: &[IpAddr]) -> Result<()> {
    if sources == 0 || sources > MAX_SOURCES {
        bail!("--hostile-sources {sources} is outside 1..={MAX_SOURCES}");
    }
    let v4 = target.is_ipv4();
    let (first, last) = (source(0, v4), source(sources - 1, v4));
    let range = ordinal(first)..=ordinal(last);
    if let Some(a) = valid.iter().find(|a| range.contains(&ordinal(**a))) {
        bail!(
            "exporter {a} is one of the hostile sources {first}..={last}; \
             choose other exporters or fewer --hostile-sources"
        );
    }
    Ok(())
}

/// The flow sequences an impostor may use: `lo`, `lo + 1`, …, `lo + width` (wrapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqWindow {
    pub lo: u32,
    pub width: u32,
}

/// The impostor sequences for an exporter whose sequence starts at `first` and advances by at
/// most `span` during the run: centred opposite the middle of `first..=first + span`, at most
/// [`SEQ_SPREAD`] either side, and at least [`SEQ_MARGIN`] from every number in that range
/// (mod 2³²). Fails when the range leaves no such room.
pub fn seq_window(first: u32, span: u64) -> Result<SeqWindow> {
    let Some(free) = (1u64 << 32)
        .checked_sub(span)
        .and_then(|f| f.checked_sub(2 * SEQ_MARGIN))
    else {
        bail!(
            "an exporter may advance its sequence by up to {span} in this run, which leaves no \
             impostor sequence 2^24 away from all of it; bound the run with --rate, --count or \
             a shorter --duration, or use more exporters"
        );
    };
    let half = (free / 2).min(SEQ_SPREAD);
    let centre = u64::from(first) + span / 2 + (1 << 31);
    Ok(SeqWindow {
        lo: (centre - half) as u32,
        width: (2 * half) as u32,
    })
}

/// A valid exporter as the impostors imitate it.
#[derive(Debug, Clone, Copy)]
pub struct Victim {
    pub addr: IpAddr,
    pub engine_type: u8,
    pub engine_id: u8,
    /// The v5 header's sampling field the exporter sends.
    pub sampling_interval: u16,
    /// The exporter's uptime clock: `uptime_at_zero` at Unix ms `clock_zero_ms`.
    pub uptime_at_zero: u32,
    pub clock_zero_ms: u64,
    pub seq: SeqWindow,
}

/// One datagram built by [`Generator::build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Made {
    pub kind: Kind,
    /// The source address it is sent from.
    pub source: IpAddr,
    /// `impostor`: the victim's index.
    pub victim: Option<usize>,
    pub malformation: Option<Malformation>,
    /// `impostor`: sent with the victim's own uptime clock.
    pub same_boot: bool,
    /// Length and the flows, packets and bytes it carries (zero for `malformed`).
    pub built: Built,
}

/// The deterministic stream of hostile datagrams (no I/O, no clock: the caller passes the
/// time). The same seed, sources, victims and clock readings give the same bytes.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: Rng,
    sources: u32,
    v4: bool,
    victims: Vec<Victim>,
    /// Datagrams built so far, malformed ones and impostors among them.
    built: u64,
    malformed: u64,
    impostors: u64,
}

impl Generator {
    pub fn new(plan: &Plan, v4: bool, victims: Vec<Victim>) -> Self {
        Generator {
            rng: Rng::new(plan.seed ^ 0x6e66_7067_686f_7374),
            sources: plan.sources.max(1),
            v4,
            victims,
            built: 0,
            malformed: 0,
            impostors: 0,
        }
    }

    fn spoofed_source(&mut self) -> IpAddr {
        source(self.rng.below(u64::from(self.sources)) as u32, self.v4)
    }

    fn random_uptime(&mut self) -> u32 {
        self.rng.range(UPTIME_RANGE.0, UPTIME_RANGE.1) as u32
    }

    /// Writes a v5 header and [`RECORDS`] plausible records ending before `h.sys_uptime`.
    fn v5(&mut self, out: &mut [u8], h: &v5::Header) -> Built {
        v5::write_header(out, h, RECORDS as u16);
        let mut b = Built {
            len: v5::HEADER_LEN + RECORDS * v5::RECORD_LEN,
            flows: RECORDS as u64,
            packets: 0,
            bytes: 0,
        };
        for i in 0..RECORDS {
            let r = traffic::record(&mut self.rng, h.sys_uptime);
            b.packets += u64::from(r.packets);
            b.bytes += u64::from(r.octets);
            let at = v5::HEADER_LEN + i * v5::RECORD_LEN;
            v5::write_record(&mut out[at..at + v5::RECORD_LEN], &r);
        }
        b
    }

    /// A well-formed v5 datagram of a random spoofed exporter, stamped `unix_secs`.
    fn stranger(&mut self, out: &mut [u8], unix_secs: u32, unix_nsecs: u32) -> Built {
        let h = v5::Header {
            sys_uptime: self.random_uptime(),
            unix_secs,
            unix_nsecs,
            flow_sequence: self.rng.next_u64() as u32,
            engine_type: 0,
            engine_id: self.rng.below(256) as u8,
            sampling_interval: 0,
        };
        self.v5(out, &h)
    }

    fn malformed(&mut self, out: &mut [u8], how: Malformation, round: u64, secs: u32) -> usize {
        match how {
            Malformation::BadLength => {
                let mut b = self.stranger(out, secs, 0);
                let keep = self.rng.below(30) as usize;
                let partial = self.rng.below(v5::RECORD_LEN as u64) as usize;
                b.len = v5::HEADER_LEN + keep * v5::RECORD_LEN + partial;
                b.len
            }
            Malformation::BadVersion => {
                let b = self.stranger(out, secs, 0);
                let version: u16 = if round.is_multiple_of(2) { 7 } else { 0xffff };
                out[..2].copy_from_slice(&version.to_be_bytes());
                b.len
            }
            Malformation::TooShort => {
                let len = self.rng.range(1, v5::HEADER_LEN as u64 - 1) as usize;
                for chunk in out[..len].chunks_mut(8) {
                    let r = self.rng.next_u64().to_le_bytes();
                    chunk.copy_from_slice(&r[..chunk.len()]);
                }
                if len >= 2 {
                    out[..2].copy_from_slice(&5u16.to_be_bytes());
                }
                len
            }
            Malformation::BadSetLength => {
                let header = tpl::Header {
                    sys_uptime_ms: self.random_uptime(),
                    export_secs: secs,
                    sequence: self.rng.next_u64() as u32,
                    domain: self.rng.below(1 << 16) as u32,
                };
                tpl::write_header(out, Format::V9, &header, 1);
                let at = Format::V9.header_len();
                let body = self.rng.range(4, 200) as usize;
                let room = tpl::SET_HEADER_LEN + body;
                // Below the set header's own 4 bytes, or past the end of the datagram.
                let length = if round.is_multiple_of(2) {
                    self.rng.below(tpl::SET_HEADER_LEN as u64) as u16
                } else {
                    (room as u64 + self.rng.range(1, 60_000)) as u16
                };
                let id = self.rng.range(256, 511) as u16;
                out[at..at + 2].copy_from_slice(&id.to_be_bytes());
                out[at + 2..at + 4].copy_from_slice(&length.to_be_bytes());
                let data = at + tpl::SET_HEADER_LEN;
                for chunk in out[data..data + body].chunks_mut(8) {
                    let r = self.rng.next_u64().to_le_bytes();
                    chunk.copy_from_slice(&r[..chunk.len()]);
                }
                at + room
            }
        }
    }

    /// Builds the next hostile datagram for wall clock `now_ms` into `out` (at least
    /// [`MAX_DATAGRAM`] bytes). Allocation-free.
    pub fn build(&mut self, out: &mut [u8], now_ms: u64) -> Made {
        let kind = PATTERN[(self.built % PATTERN.len() as u64) as usize];
        self.built += 1;
        let secs = (now_ms / 1000) as u32;
        let nsecs = ((now_ms % 1000) * 1_000_000) as u32;
        let plain = |kind, source, built| Made {
            kind,
            source,
            victim: None,
            malformation: None,
            same_boot: false,
            built,
        };
        match kind {
            Kind::Spoofed => {
                let source = self.spoofed_source();
                let built = self.stranger(out, secs, nsecs);
                plain(kind, source, built)
            }
            Kind::Future => {
                let source = self.spoofed_source();
                let built = self.stranger(out, secs.wrapping_add(FUTURE_SECS), nsecs);
                plain(kind, source, built)
            }
            Kind::Malformed => {
                let m = self.malformed;
                self.malformed += 1;
                let how = MALFORMATIONS[(m % MALFORMATIONS.len() as u64) as usize];
                let round = m / MALFORMATIONS.len() as u64;
                let source = self.spoofed_source();
                let len = self.malformed(out, how, round, secs);
                Made {
                    malformation: Some(how),
                    ..plain(
                        kind,
                        source,
                        Built {
                            len,
                            ..Built::default()
                        },
                    )
                }
            }
            Kind::Impostor => {
                let j = self.impostors;
                self.impostors += 1;
                let n = self.victims.len() as u64;
                if n == 0 {
                    // No exporter to imitate (not reachable from `run`): a spoofed one instead.
                    let source = self.spoofed_source();
                    let built = self.stranger(out, secs, nsecs);
                    return plain(Kind::Spoofed, source, built);
                }
                let vi = (j % n) as usize;
                // Each exporter's impostors alternate: its own boot, a random one, …
                let same_boot = (j / n).is_multiple_of(2);
                let v = self.victims[vi];
                let sys_uptime = if same_boot {
                    traffic::uptime_at(v.uptime_at_zero, v.clock_zero_ms, now_ms)
                } else {
                    self.random_uptime()
                };
                let offset = self.rng.below(u64::from(v.seq.width) + 1) as u32;
                let h = v5::Header {
                    sys_uptime,
                    unix_secs: secs,
                    unix_nsecs: nsecs,
                    flow_sequence: v.seq.lo.wrapping_add(offset),
                    engine_type: v.engine_type,
                    engine_id: v.engine_id,
                    sampling_interval: v.sampling_interval,
                };
                let built = self.v5(out, &h);
                Made {
                    victim: Some(vi),
                    same_boot,
                    ..plain(kind, v.addr, built)
                }
            }
        }
    }
}

/// `"malformed"` in the report: the total and each malformation, under the name of the reason
/// nfpg counts it as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MalformedReport {
    pub datagrams: u64,
    pub bad_length: u64,
    pub bad_version: u64,
    pub too_short: u64,
    pub bad_set_length: u64,
}

/// `"impostor"` in the report: totals, how many used the victim's own boot, and per victim
/// (only victims that got at least one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImpostorReport {
    pub datagrams: u64,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub same_boot: u64,
    pub random_boot: u64,
    pub by_exporter: BTreeMap<String, Totals>,
}

/// The report's `"hostile"` object: what the kernel accepted, per kind.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rate: u64,
    pub sources: u32,
    pub first_source: String,
    pub last_source: String,
    pub seed: u64,
    pub datagrams: u64,
    pub spoofed: Totals,
    pub malformed: MalformedReport,
    pub future: Totals,
    pub impostor: ImpostorReport,
    /// Which boot the impostors claim: "mixed" (each exporter's alternate between its own
    /// uptime clock and a random one; counts in `impostor.same_boot` / `random_boot`).
    pub impostor_boot: &'static str,
}

impl Report {
    pub fn new(plan: &Plan, v4: bool) -> Self {
        Report {
            rate: plan.rate,
            sources: plan.sources,
            first_source: source(0, v4).to_string(),
            last_source: source(plan.sources.max(1) - 1, v4).to_string(),
            seed: plan.seed,
            datagrams: 0,
            spoofed: Totals::default(),
            malformed: MalformedReport::default(),
            future: Totals::default(),
            impostor: ImpostorReport::default(),
            impostor_boot: "mixed",
        }
    }

    /// Counts one datagram the kernel accepted.
    pub fn add(&mut self, m: &Made, victims: &[Victim]) {
        self.datagrams += 1;
        match m.kind {
            Kind::Spoofed => self.spoofed.add_built(&m.built),
            Kind::Future => self.future.add_built(&m.built),
            Kind::Malformed => {
                let r = &mut self.malformed;
                r.datagrams += 1;
                match m.malformation {
                    Some(Malformation::BadLength) => r.bad_length += 1,
                    Some(Malformation::BadVersion) => r.bad_version += 1,
                    Some(Malformation::TooShort) => r.too_short += 1,
                    Some(Malformation::BadSetLength) | None => r.bad_set_length += 1,
                }
            }
            Kind::Impostor => {
                let r = &mut self.impostor;
                r.datagrams += 1;
                r.flows += m.built.flows;
                r.packets += m.built.packets;
                r.bytes += m.built.bytes;
                if m.same_boot {
                    r.same_boot += 1;
                } else {
                    r.random_boot += 1;
                }
                if let Some(v) = m.victim.and_then(|i| victims.get(i)) {
                    r.by_exporter
                        .entry(v.addr.to_string())
                        .or_default()
                        .add_built(&m.built);
                }
            }
        }
    }
}

/// What the hostile thread shares with the valid senders.
pub struct SendCfg<'a> {
    pub target: SocketAddr,
    /// Datagrams per `sendmmsg` call.
    pub batch: usize,
    /// The run's start (pacing counts from it) and `--duration` deadline.
    pub t0: Instant,
    pub deadline: Option<Instant>,
    /// Set once every valid sender has finished.
    pub stop: &'a AtomicBool,
}

/// The hostile sender thread: paces `plan.rate` datagrams/s from one unconnected socket, each
/// message with its own source address, until `cfg.stop` is set or the deadline passes.
pub fn run(plan: &Plan, victims: Vec<Victim>, cfg: &SendCfg) -> Result<Report> {
    let target = cfg.target;
    let v4 = target.is_ipv4();
    let sock = send::open_socket(&target)?;
    let dest = SockAddr::from(target);
    let batch = cfg.batch.clamp(1, 1024);
    let mut report = Report::new(plan, v4);
    let mut gen = Generator::new(plan, v4, victims);
    let mut bufs = vec![[0u8; MAX_DATAGRAM]; batch];
    let mut controls: Vec<sys::Control> = (0..batch).map(|_| sys::Control::none()).collect();
    let mut made: Vec<Made> = Vec::with_capacity(batch);
    let mut mmsg = sys::Batch::new(batch);
    let rate = plan.rate.max(1) as f64;
    // Pace in slices of about 1 ms worth of datagrams, as the valid senders do.
    let slice = ((rate / 1000.0).ceil() as usize).clamp(1, batch);
    let mut built_total = 0u64;

    loop {
        if cfg.stop.load(Ordering::Acquire) {
            break;
        }
        let now = Instant::now();
        if cfg.deadline.is_some_and(|d| now >= d) {
            break;
        }
        let allowed = (rate * (now - cfg.t0).as_secs_f64()) as u64;
        let ready = allowed.saturating_sub(built_total);
        if ready < slice as u64 {
            let due = cfg.t0 + Duration::from_secs_f64((built_total + slice as u64) as f64 / rate);
            send::nap(
                cfg.deadline.map_or(due, |d| d.min(due)),
                Duration::from_millis(2),
            );
            continue;
        }
        let n = batch.min(usize::try_from(ready).unwrap_or(batch));
        let now_ms = send::unix_ms(SystemTime::now());
        made.clear();
        for (buf, control) in bufs.iter_mut().zip(controls.iter_mut()).take(n) {
            let m = gen.build(buf, now_ms);
            *control = sys::Control::pktinfo(m.source);
            made.push(m);
        }
        built_total += n as u64;
        for (i, m) in made.iter().enumerate() {
            mmsg.set(i, &bufs[i][..m.built.len], Some(&dest), &controls[i]);
        }
        let mut off = 0;
        let mut stalls = 0u32;
        while off < n {
            match mmsg.send(&sock, off, n - off) {
                Ok(k) => {
                    for m in &made[off..off + k] {
                        report.add(m, &gen.victims);
                    }
                    off += k;
                    stalls = 0;
                }
                // An earlier datagram's ICMP error, reported instead of sending this one.
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) && stalls < 10_000 => {
                    stalls += 1;
                }
                Err(e) if sys::is_transient(&e) && stalls < 10_000 => {
                    stalls += 1;
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(e) => return Err(e).context(format!("hostile sendmmsg to {target}")),
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfpg_wire::columns::{Columns, DatagramMeta};
    use nfpg_wire::netflow as nf;

    const NOW_MS: u64 = 1_700_000_000_123;

    /// How many of the first `total` items of a round robin over `N` slots fall on each slot.
    fn round_robin_counts<const N: usize>(total: u64) -> [u64; N] {
        std::array::from_fn(|i| total / N as u64 + u64::from((i as u64) < total % N as u64))
    }

    fn victims(n: usize) -> Vec<Victim> {
        (0..n)
            .map(|i| Victim {
                addr: IpAddr::V4((u32::from(Ipv4Addr::new(127, 1, 0, 1)) + i as u32).into()),
                engine_type: 3,
                engine_id: i as u8,
                sampling_interval: 0,
                uptime_at_zero: 5_000_000 + i as u32,
                clock_zero_ms: NOW_MS - 10_000,
                seq: seq_window(1000, 30 * 1_000_000).expect("window"),
            })
            .collect()
    }

    fn plan() -> Plan {
        Plan {
            rate: 1000,
            sources: 4096,
            seed: 7,
        }
    }

    /// Decodes a datagram the way nfpg dispatches it: v9/IPFIX by their version, v5 otherwise.
    /// Returns the flows decoded, or the error.
    fn decode(d: &[u8]) -> std::result::Result<Columns, String> {
        let meta = DatagramMeta {
            exporter: 1,
            received_us: 0,
        };
        let mut cols = Columns::with_capacity(64);
        match d.get(..2) {
            Some([0, 9]) | Some([0, 10]) => {
                let (h, body) = nf::parse_header(d).map_err(|e| e.to_string())?;
                for set in nf::sets(h.version, body) {
                    set.map_err(|e| e.to_string())?;
                }
                Ok(cols)
            }
            _ => nfpg_wire::v5::decode(d, &meta, &mut cols)
                .map(|_| cols)
                .map_err(|e| e.to_string()),
        }
    }

    #[test]
    fn kinds_decode_or_fail_as_intended() {
        let vs = victims(3);
        let mut g = Generator::new(&plan(), true, vs.clone());
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut seen_malformed = Vec::new();
        for k in 0..400u64 {
            let now = NOW_MS + k;
            let m = g.build(&mut buf, now);
            assert_eq!(m.kind, PATTERN[(k % 4) as usize]);
            let d = &buf[..m.built.len];
            assert!(d.len() <= MAX_DATAGRAM);
            match m.kind {
                Kind::Malformed => {
                    let how = m.malformation.expect("malformation");
                    seen_malformed.push(how);
                    let e = decode(d).expect_err("malformed must not decode");
                    // Every decoder nfpg has rejects it, whichever one is tried.
                    assert!(nfpg_wire::v5::validate(d).is_err(), "{how:?}");
                    let netflow_rejects = match nf::parse_header(d) {
                        Err(_) => true,
                        Ok((h, body)) => nf::sets(h.version, body).any(|s| s.is_err()),
                    };
                    assert!(netflow_rejects, "{how:?}");
                    let expected = match how {
                        Malformation::BadLength => "does not match",
                        Malformation::BadVersion => "is not 5",
                        Malformation::TooShort => "shorter than",
                        Malformation::BadSetLength => "set",
                    };
                    assert!(e.contains(expected), "{how:?}: {e}");
                    if how == Malformation::BadSetLength {
                        let (_, body) = nf::parse_header(d).expect("a valid v9 header");
                        let first = nf::sets(nf::Version::V9, body).next().expect("a set");
                        assert!(
                            matches!(first, Err(nf::DecodeError::BadSetLength { .. })),
                            "{first:?}"
                        );
                    }
                    if how == Malformation::TooShort {
                        assert!((1..=23).contains(&d.len()));
                    }
                }
                _ => {
                    let cols = decode(d).expect("well-formed v5");
                    assert_eq!(cols.len(), RECORDS);
                    let info = &cols.datagrams[0];
                    let sum = |v: &[u64]| v.iter().sum::<u64>();
                    assert_eq!(sum(&cols.packets), m.built.packets);
                    assert_eq!(sum(&cols.bytes), m.built.bytes);
                    let arrival = now as i64;
                    for (s, e) in cols.flow_start_ms.iter().zip(&cols.flow_end_ms) {
                        assert!(s <= e);
                        if m.kind == Kind::Future {
                            assert!(*s > arrival + 86_400_000, "{s} vs {arrival}");
                        } else {
                            assert!(arrival - 61_000 <= *s && *e <= arrival, "{s} {e}");
                        }
                    }
                    match m.kind {
                        Kind::Impostor => {
                            let v = &vs[m.victim.expect("victim")];
                            assert_eq!(m.source, v.addr);
                            assert_eq!((info.engine_type, info.engine_id), (3, v.engine_id));
                            let off = info.sequence.wrapping_sub(v.seq.lo);
                            assert!(off <= v.seq.width);
                            let own = traffic::uptime_at(v.uptime_at_zero, v.clock_zero_ms, now);
                            if m.same_boot {
                                assert_eq!(info.sys_uptime_ms, own);
                            }
                        }
                        _ => assert_eq!(info.engine_type, 0),
                    }
                }
            }
            if m.kind != Kind::Impostor {
                check_spoofed(m.source, true);
            }
        }
        assert_eq!(seen_malformed.len(), 100);
        for (i, how) in seen_malformed.iter().enumerate() {
            assert_eq!(*how, MALFORMATIONS[i % 4]);
        }
    }

    fn check_spoofed(a: IpAddr, v4: bool) {
        let first = ordinal(source(0, v4));
        let o = ordinal(a);
        assert!(o >= first && o < first + 4096, "{a}");
        if let IpAddr::V4(v) = a {
            assert!(v.is_loopback());
        }
    }

    #[test]
    fn pattern_totals_are_exact_and_reproducible() {
        let vs = victims(3);
        let run = |total: u64| {
            let mut g = Generator::new(&plan(), true, vs.clone());
            let mut r = Report::new(&plan(), true);
            let mut buf = [0u8; MAX_DATAGRAM];
            let mut bytes = Vec::new();
            for k in 0..total {
                let m = g.build(&mut buf, NOW_MS + k * 7);
                r.add(&m, &vs);
                bytes.extend_from_slice(&buf[..m.built.len]);
            }
            (r, bytes)
        };
        for total in [0u64, 1, 2, 3, 4, 5, 37, 1001] {
            let (r, bytes) = run(total);
            let [spoofed, malformed, future, impostor] = round_robin_counts::<4>(total);
            assert_eq!(r.datagrams, total);
            assert_eq!(r.spoofed.datagrams, spoofed);
            assert_eq!(r.spoofed.flows, spoofed * RECORDS as u64);
            assert_eq!(r.malformed.datagrams, malformed);
            let [bl, bv, ts, bs] = round_robin_counts::<4>(malformed);
            assert_eq!(
                (
                    r.malformed.bad_length,
                    r.malformed.bad_version,
                    r.malformed.too_short,
                    r.malformed.bad_set_length
                ),
                (bl, bv, ts, bs)
            );
            assert_eq!(r.future.datagrams, future);
            assert_eq!(r.future.flows, future * RECORDS as u64);
            assert_eq!(r.impostor.datagrams, impostor);
            assert_eq!(r.impostor.flows, impostor * RECORDS as u64);
            let per = round_robin_counts::<3>(impostor);
            for (i, v) in vs.iter().enumerate() {
                let got = r
                    .impostor
                    .by_exporter
                    .get(&v.addr.to_string())
                    .map_or(0, |t| t.datagrams);
                assert_eq!(got, per[i], "{}", v.addr);
                // Exporter i's impostors alternate same/random boot, starting with same.
            }
            let same: u64 = per.iter().map(|&p| p.div_ceil(2)).sum();
            assert_eq!(r.impostor.same_boot, same);
            assert_eq!(r.impostor.random_boot, impostor - same);
            let sum = |f: fn(&Totals) -> u64| r.impostor.by_exporter.values().map(f).sum::<u64>();
            assert_eq!(sum(|t| t.flows), r.impostor.flows);
            assert_eq!(sum(|t| t.packets), r.impostor.packets);
            assert_eq!(sum(|t| t.bytes), r.impostor.bytes);
            // The same seed and clock give the same bytes.
            assert_eq!(run(total).1, bytes);
        }
        let json = serde_json::to_value(run(8).0).expect("json");
        assert_eq!(json["impostor_boot"], "mixed");
        assert_eq!(json["spoofed"]["datagrams"], 2);
        assert_eq!(json["malformed"]["datagrams"], 2);
        assert_eq!(json["impostor"]["by_exporter"]["127.1.0.1"]["datagrams"], 1);
    }

    #[test]
    fn sources_never_overlap_valid_exporters() {
        let target: SocketAddr = "127.0.0.1:2055".parse().expect("addr");
        let valid = send::default_exporters(10_000, &target).expect("exporters");
        check_sources(DEFAULT_SOURCES, &target, &valid).expect("defaults do not overlap");
        check_sources(MAX_SOURCES, &target, &valid).expect("the largest range does not either");
        assert_eq!(source(0, true), IpAddr::V4(Ipv4Addr::new(127, 64, 0, 1)));
        assert_eq!(source(1, true), IpAddr::V4(Ipv4Addr::new(127, 64, 0, 2)));
        assert_eq!(
            source(MAX_SOURCES - 1, true),
            IpAddr::V4(Ipv4Addr::new(127, 128, 0, 0))
        );
        assert!(source(MAX_SOURCES - 1, true).is_loopback());
        for (list, sources) in [
            (vec!["127.64.0.1"], 1),
            (vec!["127.1.0.1", "127.64.16.0"], 4096),
            (vec!["127.64.16.0"], 4096),
        ] {
            let list: Vec<IpAddr> = list.iter().map(|a| a.parse().expect("ip")).collect();
            let e = check_sources(sources, &target, &list).expect_err("overlap");
            assert!(e.to_string().contains("hostile sources"), "{e}");
        }
        let list = ["127.64.16.1".parse().expect("ip")];
        check_sources(4096, &target, &list).expect("just past the range");
        assert!(check_sources(0, &target, &[]).is_err());
        assert!(check_sources(MAX_SOURCES + 1, &target, &[]).is_err());
        // The most default exporters there can be (127.1.0.1 ..= 127.254.255.255) do overlap.
        let huge = send::default_exporters(0x00fe_0000, &target).expect("exporters");
        assert!(check_sources(1, &target, &huge).is_err());
        let v6: SocketAddr = "[::1]:2055".parse().expect("addr");
        let valid6 = send::default_exporters(10_000, &v6).expect("exporters");
        check_sources(MAX_SOURCES, &v6, &valid6).expect("v6");
        // Every spoofed source the generator picks is in the range.
        let mut g = Generator::new(&plan(), true, victims(2));
        let mut buf = [0u8; MAX_DATAGRAM];
        for k in 0..2000 {
            let m = g.build(&mut buf, NOW_MS + k);
            if m.kind == Kind::Impostor {
                assert!(victims(2).iter().any(|v| v.addr == m.source));
            } else {
                check_spoofed(m.source, true);
                assert!(!valid.contains(&m.source));
            }
        }
    }

    #[test]
    fn impostor_sequences_stay_far_from_the_valid_ones() {
        let far = |first: u32, span: u64, seq: u32| {
            let off = u64::from(seq.wrapping_sub(first));
            off >= span + SEQ_MARGIN && off <= (1u64 << 32) - SEQ_MARGIN
        };
        let max_span = (1u64 << 32) - 2 * SEQ_MARGIN;
        for first in [0u32, 1, 0x8000_0000, u32::MAX - 5, 123_456_789] {
            for span in [
                0u64,
                30,
                30 * 1_000_000,
                1 << 30,
                3 << 30,
                max_span - 1,
                max_span,
            ] {
                let w = seq_window(first, span).expect("window");
                assert!(far(first, span, w.lo), "{first} {span} {w:?}");
                assert!(
                    far(first, span, w.lo.wrapping_add(w.width)),
                    "{first} {span}"
                );
                assert!(
                    u64::from(w.lo.wrapping_sub(first)) + u64::from(w.width)
                        <= (1u64 << 32) - SEQ_MARGIN
                );
                assert!(u64::from(w.width) <= 2 * SEQ_SPREAD);
                if span < 1 << 28 {
                    assert_eq!(u64::from(w.width), 2 * SEQ_SPREAD, "full spread when room");
                }
            }
            assert!(seq_window(first, max_span + 1).is_err());
            assert!(seq_window(first, u64::MAX).is_err());
        }
    }
}
