//! Deterministic synthetic traffic: what each exporter puts in its datagrams.
//!
//! Owns the per-exporter state that the wire format needs (flow sequence, uptime clock,
//! engine id) and the field distributions (Zipf-like addresses and ports, a TCP/UDP/ICMP mix,
//! small-skewed packet counts). Everything comes from seeded xoshiro256** generators (one per
//! exporter, one for the [`Pool`]), so the same seed gives the same datagrams for the same
//! clock readings, no matter how exporters are spread over threads. `send` owns the clock and
//! the sockets.
//!
//! The same records go out as NetFlow v5 or, through [`crate::templated`], as NetFlow v9 or
//! IPFIX: the random stream does not depend on the format, so neither do the totals.
//!
//! Drawing a record costs about 120 ns (a dozen random draws, five `exp`), about 3.8 µs of
//! CPU per 30-flow datagram: at 24,000 datagrams/s that is 5 % of a 2-core machine taken from
//! the collector and PostgreSQL under test. So by default the sender draws a [`Pool`] of
//! records before it starts and replays it, each exporter from its own place in it, with the
//! flow times re-stamped against the exporter's uptime (`--pool 0` draws every record as it
//! goes out).

#![forbid(unsafe_code)]

use std::sync::Arc;

use nfpg_wire::v5::encode as v5;

use crate::templated::{self as tpl, Format, TemplateSets};

/// Largest datagram any format builds (v5: 1,464 bytes; v9/IPFIX: 1,472).
pub const MAX_DATAGRAM: usize = tpl::MAX_DATAGRAM;

/// The export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V5,
    V9,
    Ipfix,
}

impl Version {
    /// From the header's version number: 5, 9 or 10.
    pub fn from_number(n: u8) -> Option<Version> {
        match n {
            5 => Some(Version::V5),
            9 => Some(Version::V9),
            10 => Some(Version::Ipfix),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Version::V5 => 5,
            Version::V9 => 9,
            Version::Ipfix => 10,
        }
    }

    /// The template-based format, `None` for v5.
    pub fn templated(self) -> Option<Format> {
        match self {
            Version::V5 => None,
            Version::V9 => Some(Format::V9),
            Version::Ipfix => Some(Format::Ipfix),
        }
    }
}

/// splitmix64: turns a seed into well-mixed state words.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman and Vigna), small, fast and reproducible.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        Rng {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n); n must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift; the tiny bias does not matter for load generation.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [lo, hi] (inclusive).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// A Zipf-like (density ~ 1/x) rank in [0, n): rank 0 is the most frequent.
    pub fn zipf(&mut self, n: u64) -> u64 {
        let x = ((n as f64 + 1.0).ln() * self.unit()).exp() - 1.0;
        (x as u64).min(n - 1)
    }

    /// Picks an index from cumulative weights (last entry = total).
    fn pick(&mut self, cumulative: &[u32]) -> usize {
        let total = cumulative.last().copied().unwrap_or(1);
        let r = self.below(u64::from(total)) as u32;
        cumulative.iter().position(|&c| r < c).unwrap_or(0)
    }
}

/// Spreads ranks over an address block so popular hosts are not all adjacent.
fn scramble(rank: u64, bits: u32) -> u32 {
    let mask = (1u64 << bits) - 1;
    // Multiplying by an odd constant is a bijection mod 2^bits.
    ((rank.wrapping_mul(0x9e37_79b9) ^ 0x5bd1) & mask) as u32
}

/// An inside host in 10.0.0.0/8, Zipf-ranked over 65,536 hosts.
fn inside_addr(rng: &mut Rng) -> [u8; 4] {
    let host = scramble(rng.zipf(65_536), 24);
    let h = host.to_be_bytes();
    [10, h[1], h[2], h[3].max(1)]
}

/// An outside host in the documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24).
fn outside_addr(rng: &mut Rng) -> [u8; 4] {
    let rank = rng.zipf(3 * 254);
    let spread = u64::from(scramble(rank, 10)) % (3 * 254);
    let net = match spread / 254 {
        0 => [192, 0, 2],
        1 => [198, 51, 100],
        _ => [203, 0, 113],
    };
    [net[0], net[1], net[2], (spread % 254 + 1) as u8]
}

const TCP_PORTS: [u16; 12] = [443, 80, 22, 25, 993, 8080, 3306, 5432, 143, 110, 8443, 3389];
const TCP_PORT_WEIGHTS: [u32; 12] = [45, 65, 70, 73, 76, 79, 81, 83, 84, 85, 87, 88];
const UDP_PORTS: [u16; 7] = [53, 443, 123, 161, 514, 5353, 500];
const UDP_PORT_WEIGHTS: [u32; 7] = [50, 65, 72, 75, 77, 79, 80];
/// Cumulative OR of TCP flags seen in real flows: full sessions, SYN-only scans, RSTs, mid-flow.
const TCP_FLAGS: [u8; 7] = [0x1b, 0x1f, 0x02, 0x12, 0x10, 0x18, 0x14];
const TCP_FLAG_WEIGHTS: [u32; 7] = [50, 55, 65, 70, 85, 95, 100];
const PUBLIC_AS: [u16; 6] = [15169, 13335, 16509, 8075, 32934, 3356];

/// A server port: mostly well-known, sometimes a Zipf-ranked registered port.
fn server_port(rng: &mut Rng, protocol: u8) -> u16 {
    let (ports, weights): (&[u16], &[u32]) = if protocol == 6 {
        (&TCP_PORTS, &TCP_PORT_WEIGHTS)
    } else {
        (&UDP_PORTS, &UDP_PORT_WEIGHTS)
    };
    if rng.below(100) < 88 {
        ports[rng.pick(weights)]
    } else {
        1024 + rng.zipf(48_000) as u16
    }
}

/// Per-flow sizes: packets 1..=1000 skewed small, bytes = packets × (40..=1500).
fn sizes(rng: &mut Rng, protocol: u8) -> (u32, u32) {
    let u = rng.unit();
    let packets = ((1001f64).ln() * u * u * u).exp() as u32;
    let packets = packets.clamp(1, 1000);
    let mean_size = match protocol {
        1 => rng.range(64, 128) as u32,
        17 => rng.range(60, 1400) as u32,
        // TCP: small (ACK-heavy) or near-MTU (bulk).
        _ if rng.below(2) == 0 => rng.range(40, 120) as u32,
        _ => rng.range(900, 1500) as u32,
    };
    (packets, packets * mean_size)
}

/// One plausible flow record ending within the 2 s before `uptime` (an exporter's
/// sys_uptime, ms): the field distributions of every synthetic exporter, also used by
/// [`crate::hostile`] for its well-formed datagrams.
pub fn record(rng: &mut Rng, uptime: u32) -> v5::Record {
    let protocol = match rng.below(100) {
        0..=79 => 6,
        80..=96 => 17,
        _ => 1,
    };
    let (packets, octets) = sizes(rng, protocol);
    // Flow ends within the last 2 s and lasted up to ~58 s (short flows dominate), so the
    // whole flow lies within the minute before the header time.
    let end_age = rng.below(2_000) as u32;
    let u = rng.unit();
    let duration = if packets == 1 {
        0
    } else {
        (58_000.0 * u * u) as u32
    };
    let last = uptime.wrapping_sub(end_age);
    let first = last.wrapping_sub(duration);

    let inside = inside_addr(rng);
    let outside = outside_addr(rng);
    let outbound = rng.below(100) < 60;
    let (src_port, dst_port, tcp_flags) = match protocol {
        1 => (0, 0, 0),
        p => {
            let server = server_port(rng, p);
            let client = rng.range(32_768, 60_999) as u16;
            let flags = if p == 6 {
                TCP_FLAGS[rng.pick(&TCP_FLAG_WEIGHTS)]
            } else {
                0
            };
            if outbound {
                (client, server, flags)
            } else {
                (server, client, flags)
            }
        }
    };
    let (src_addr, dst_addr) = if outbound {
        (inside, outside)
    } else {
        (outside, inside)
    };
    let tos = match rng.below(100) {
        0..=89 => 0,
        90..=96 => 0x10,
        _ => 0xb8,
    };
    let public_as = PUBLIC_AS[rng.below(PUBLIC_AS.len() as u64) as usize];
    let (src_as, dst_as) = if outbound {
        (0, public_as)
    } else {
        (public_as, 0)
    };
    let input = 1 + rng.zipf(48) as u16;
    let output = 1 + rng.zipf(48) as u16;
    v5::Record {
        src_addr,
        dst_addr,
        next_hop: [10, 255, (output >> 8) as u8, output as u8],
        input,
        output,
        packets,
        octets,
        first,
        last,
        src_port,
        dst_port,
        tcp_flags,
        protocol,
        tos,
        src_as,
        dst_as,
        src_mask: if outbound {
            24
        } else {
            24 + rng.below(9) as u8
        },
        dst_mask: if outbound {
            24 + rng.below(9) as u8
        } else {
            24
        },
    }
}

/// Records drawn once, before sending, for every exporter to replay: see the module docs.
/// Their `first` and `last` are offsets from uptime 0 (what [`record`] gives for uptime 0),
/// so adding an uptime (wrapping) gives what [`record`] would have drawn for that uptime.
#[derive(Debug)]
pub struct Pool {
    records: Vec<v5::Record>,
}

/// Mixed into the seed for the pool's random stream, so it is not any exporter's.
const POOL_SALT: u64 = 0x706f_6f6c_5eed_0001;

impl Pool {
    /// `n` records (at least 1) drawn from `seed`.
    pub fn draw(seed: u64, n: usize) -> Self {
        let mut rng = Rng::new(seed ^ POOL_SALT);
        Pool {
            records: (0..n.max(1)).map(|_| record(&mut rng, 0)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Record `at` (mod the pool's size) re-stamped for `uptime`.
    fn at(&self, at: usize, uptime: u32) -> v5::Record {
        let mut r = self.records[at % self.records.len()];
        r.first = r.first.wrapping_add(uptime);
        r.last = r.last.wrapping_add(uptime);
        r
    }
}

/// The sys_uptime at wall clock `now_ms` of an exporter whose uptime read `uptime_at_zero`
/// at `clock_zero_ms` (wrapping like a real 32-bit counter).
pub fn uptime_at(uptime_at_zero: u32, clock_zero_ms: u64, now_ms: u64) -> u32 {
    let elapsed = now_ms.saturating_sub(clock_zero_ms);
    uptime_at_zero.wrapping_add(elapsed as u32)
}

/// The v9/IPFIX state of an exporter: its template sets and when to send them.
#[derive(Debug, Clone)]
struct Templated {
    format: Format,
    sampling: u16,
    every: u64,
    late: u64,
    /// Uptime wraps (2³² ms) before the time `sets` announces as IPFIX system init time.
    epoch: u64,
    sets: TemplateSets,
}

/// One synthetic exporter: its identity, wire counters and random stream.
#[derive(Debug, Clone)]
pub struct Exporter {
    pub index: usize,
    pub engine_type: u8,
    pub engine_id: u8,
    /// v5 header sampling field (mode bits included).
    pub sampling_interval: u16,
    /// v9 source id / IPFIX observation domain: engine_type × 256 + engine_id.
    pub domain: u32,
    /// The next datagram's sequence number: v5 and IPFIX count the flows sent (or dropped on
    /// purpose) before it, v9 the datagrams.
    pub seq: u32,
    /// sys_uptime at `clock_zero_ms`.
    pub uptime_at_zero: u32,
    /// Wall clock (Unix ms) at which this exporter's uptime equals `uptime_at_zero`.
    pub clock_zero_ms: u64,
    /// Datagrams built so far (sent or not).
    pub datagrams_built: u64,
    /// Datagrams built so far that carried the template sets (v9/IPFIX).
    pub template_datagrams: u64,
    templated: Option<Templated>,
    rng: Rng,
    /// The pool this exporter replays and its place in it; `None` draws every record.
    replay: Option<(Arc<Pool>, usize)>,
}

/// What every exporter shares.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub seed: u64,
    pub version: Version,
    pub records: usize,
    /// Sampling interval, 1 in N (0 = unsampled): the v5 header field (mode 1), or v9/IPFIX
    /// options data.
    pub sampling: u16,
    pub seq_start: u32,
    /// Fixed starting uptime for every exporter; `None` picks one per exporter (1 h .. 40 d).
    pub uptime_start: Option<u32>,
    pub engine_type: u8,
    /// v9/IPFIX: the template sets go out again every this many datagrams (0 = only once).
    pub template_every: u64,
    /// v9/IPFIX: data datagrams sent before the first template.
    pub late_template: u64,
}

impl Exporter {
    /// Exporter number `index`, clock anchored at `clock_zero_ms` (Unix ms).
    pub fn new(profile: &Profile, index: usize, clock_zero_ms: u64) -> Self {
        let mut rng = Rng::new(profile.seed ^ (index as u64).wrapping_mul(0xa076_1d64_78bd_642f));
        let picked = rng.range(3_600_000, 40 * 86_400_000) as u32;
        let engine_id = (index % 256) as u8;
        let mut e = Exporter {
            index,
            engine_type: profile.engine_type,
            engine_id,
            sampling_interval: v5::sampling_field(profile.sampling),
            domain: (u32::from(profile.engine_type) << 8) | u32::from(engine_id),
            seq: profile.seq_start,
            uptime_at_zero: profile.uptime_start.unwrap_or(picked),
            clock_zero_ms,
            datagrams_built: 0,
            template_datagrams: 0,
            templated: None,
            rng,
            replay: None,
        };
        e.templated = profile.version.templated().map(|format| Templated {
            format,
            sampling: profile.sampling,
            every: profile.template_every,
            late: profile.late_template,
            epoch: 0,
            sets: tpl::template_sets(format, e.domain, profile.sampling, e.init_ms(0)),
        });
        e
    }

    /// Uptime wraps (2³² ms) before wall clock `now_ms`.
    fn epoch_at(&self, now_ms: u64) -> u64 {
        (u64::from(self.uptime_at_zero) + now_ms.saturating_sub(self.clock_zero_ms)) >> 32
    }

    /// Unix ms at which the uptime counter read 0 after `epoch` wraps: the IPFIX
    /// systemInitTimeMilliseconds that flowStart/EndSysUpTime stamps of that epoch count from.
    /// Announcing the latest epoch's start keeps every stamp decodable: the collector takes
    /// `init + stamp` less whole 2³² ms until it is not after the export time.
    pub fn init_ms(&self, epoch: u64) -> u64 {
        (self.clock_zero_ms + (epoch << 32)).saturating_sub(u64::from(self.uptime_at_zero))
    }

    /// The exporter's sys_uptime at wall clock `now_ms` (wrapping like a real 32-bit counter).
    pub fn uptime_at(&self, now_ms: u64) -> u32 {
        uptime_at(self.uptime_at_zero, self.clock_zero_ms, now_ms)
    }

    /// Replays `pool` from now on instead of drawing records, starting at a place that
    /// depends only on the seed and this exporter's number (so exporters do not send the same
    /// records side by side, and the same seed gives the same datagrams).
    pub fn replay(&mut self, pool: Arc<Pool>, seed: u64) {
        let mut sm = seed ^ (self.index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let start = (splitmix64(&mut sm) % pool.len() as u64) as usize;
        self.replay = Some((pool, start));
    }

    fn record(&mut self, uptime: u32) -> v5::Record {
        match &mut self.replay {
            Some((pool, at)) => {
                let r = pool.at(*at, uptime);
                *at = (*at + 1) % pool.len();
                r
            }
            None => record(&mut self.rng, uptime),
        }
    }

    /// Builds this exporter's next datagram for wall clock `now_ms` into `out` (at least
    /// [`MAX_DATAGRAM`] bytes) and advances the sequence as if it were sent. Allocation-free
    /// (but for the IPFIX options data re-encoded once when the exporter's uptime wraps).
    pub fn build(&mut self, out: &mut [u8], records: usize, now_ms: u64) -> Built {
        if self.templated.is_some() {
            return self.build_templated(out, records, now_ms);
        }
        let records = records.clamp(1, v5::MAX_RECORDS);
        let uptime = self.uptime_at(now_ms);
        let header = v5::Header {
            sys_uptime: uptime,
            unix_secs: (now_ms / 1000) as u32,
            unix_nsecs: ((now_ms % 1000) * 1_000_000) as u32,
            flow_sequence: self.seq,
            engine_type: self.engine_type,
            engine_id: self.engine_id,
            sampling_interval: self.sampling_interval,
        };
        v5::write_header(out, &header, records as u16);
        let mut packets = 0u64;
        let mut bytes = 0u64;
        for i in 0..records {
            let r = self.record(uptime);
            packets += u64::from(r.packets);
            bytes += u64::from(r.octets);
            let at = v5::HEADER_LEN + i * v5::RECORD_LEN;
            v5::write_record(&mut out[at..at + v5::RECORD_LEN], &r);
        }
        self.seq = self.seq.wrapping_add(records as u32);
        self.datagrams_built += 1;
        Built {
            len: v5::HEADER_LEN + records * v5::RECORD_LEN,
            flows: records as u64,
            packets,
            bytes,
        }
    }

    /// [`Exporter::build`] for v9 and IPFIX: the header, the template sets when they are due,
    /// then one data set of `records` flows (fewer when the template sets leave no room for
    /// them in [`MAX_DATAGRAM`]).
    fn build_templated(&mut self, out: &mut [u8], records: usize, now_ms: u64) -> Built {
        let i = self.datagrams_built;
        let epoch = self.epoch_at(now_ms);
        let init = self.init_ms(epoch);
        let (domain, uptime) = (self.domain, self.uptime_at(now_ms));
        let Some(t) = self.templated.as_mut() else {
            unreachable!("build_templated without v9/IPFIX state");
        };
        let format = t.format;
        let mut with_templates = i >= t.late
            && if t.every == 0 {
                i == t.late
            } else {
                (i - t.late).is_multiple_of(t.every)
            };
        if format == Format::Ipfix && epoch != t.epoch {
            // The uptime wrapped: announce the new init time at once (allocates, once per
            // 49.7 days of exporter uptime).
            t.epoch = epoch;
            t.sets = tpl::template_sets(format, domain, t.sampling, init);
            with_templates |= i >= t.late;
        }
        let mut at = format.header_len();
        let mut header_records = 0u16;
        if with_templates {
            out[at..at + t.sets.bytes.len()].copy_from_slice(&t.sets.bytes);
            at += t.sets.bytes.len();
            header_records = t.sets.records;
            self.template_datagrams += 1;
        }
        let room = (MAX_DATAGRAM - at - tpl::SET_HEADER_LEN) / tpl::RECORD_LEN;
        let records = records.clamp(1, tpl::MAX_RECORDS).min(room);
        tpl::write_data_set_header(&mut out[at..], records);
        at += tpl::SET_HEADER_LEN;
        let mut packets = 0u64;
        let mut bytes = 0u64;
        for _ in 0..records {
            let r = self.record(uptime);
            packets += u64::from(r.packets);
            bytes += u64::from(r.octets);
            tpl::write_flow(&mut out[at..at + tpl::RECORD_LEN], &tpl::flow_of(&r));
            at += tpl::RECORD_LEN;
        }
        let header = tpl::Header {
            sys_uptime_ms: uptime,
            export_secs: (now_ms / 1000) as u32,
            sequence: self.seq,
            domain,
        };
        // `at` ≤ 1472 and records ≤ 34: both casts are exact.
        let size = match format {
            Format::V9 => header_records + records as u16,
            Format::Ipfix => at as u16,
        };
        tpl::write_header(out, format, &header, size);
        self.seq = self.seq.wrapping_add(match format {
            Format::V9 => 1,
            Format::Ipfix => records as u32,
        });
        self.datagrams_built += 1;
        Built {
            len: at,
            flows: records as u64,
            packets,
            bytes,
        }
    }
}

/// Size and totals of one built datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Built {
    pub len: usize,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(seed: u64) -> Profile {
        Profile {
            seed,
            version: Version::V5,
            records: 30,
            sampling: 0,
            seq_start: 0,
            uptime_start: None,
            engine_type: 0,
            template_every: 20,
            late_template: 0,
        }
    }

    fn stream(seed: u64, n: usize) -> Vec<u8> {
        let p = profile(seed);
        let mut exps: Vec<Exporter> = (0..4)
            .map(|i| Exporter::new(&p, i, 1_700_000_000_000))
            .collect();
        let mut all = Vec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        for k in 0..n {
            let e = &mut exps[k % 4];
            let b = e.build(&mut buf, 30, 1_700_000_000_000 + k as u64);
            all.extend_from_slice(&buf[..b.len]);
        }
        all
    }

    #[test]
    fn same_seed_same_bytes() {
        assert_eq!(stream(7, 50), stream(7, 50));
        assert_ne!(stream(7, 50), stream(8, 50));
    }

    #[test]
    fn sequence_and_time_fields() {
        let p = Profile {
            seq_start: u32::MAX - 10,
            uptime_start: Some(u32::MAX - 500),
            ..profile(1)
        };
        let mut e = Exporter::new(&p, 3, 1_000_000);
        let mut buf = [0u8; MAX_DATAGRAM];
        let b = e.build(&mut buf, 30, 1_001_234);
        assert_eq!(b.len, v5::MAX_DATAGRAM);
        let be32 = |b: &[u8], o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        assert_eq!(
            be32(&buf, 16),
            u32::MAX - 10,
            "first datagram carries seq_start"
        );
        assert_eq!(
            be32(&buf, 4),
            (u32::MAX - 500).wrapping_add(1234),
            "uptime wrapped"
        );
        assert_eq!(be32(&buf, 8), 1001);
        assert_eq!(be32(&buf, 12), 234_000_000);
        assert_eq!(buf[21], 3, "engine_id");
        for i in 0..30 {
            let at = 24 + 48 * i;
            let (first, last) = (be32(&buf, at + 24), be32(&buf, at + 28));
            let age_end = be32(&buf, 4).wrapping_sub(last);
            let age_start = be32(&buf, 4).wrapping_sub(first);
            assert!(age_end <= age_start && age_start < 60_000, "{first} {last}");
        }
        e.build(&mut buf, 30, 1_001_300);
        assert_eq!(
            be32(&buf, 16),
            (u32::MAX - 10).wrapping_add(30),
            "seq wraps"
        );
    }

    /// A pool's records re-stamped for an uptime are the records drawn for that uptime from
    /// the pool's stream, near a wrap of the uptime too; exporters replay it in turn from
    /// their own places, and their datagrams' totals are those records'.
    #[test]
    fn pool_replays_what_was_drawn() {
        let pool = Pool::draw(9, 100);
        for uptime in [0u32, 123_456, u32::MAX - 1_000] {
            let mut rng = Rng::new(9 ^ POOL_SALT);
            for k in 0..100 {
                assert_eq!(
                    pool.at(k, uptime),
                    record(&mut rng, uptime),
                    "{k} @ {uptime}"
                );
            }
        }
        let pool = Arc::new(pool);
        let (mut a, mut b) = (
            Exporter::new(&profile(9), 0, 1_000_000),
            Exporter::new(&profile(9), 1, 1_000_000),
        );
        a.replay(pool.clone(), 9);
        b.replay(pool.clone(), 9);
        let (sa, sb) = (a.replay.as_ref().unwrap().1, b.replay.as_ref().unwrap().1);
        assert_ne!(sa, sb, "exporters start at different places");
        let mut buf = [0u8; MAX_DATAGRAM];
        for d in 0..5 {
            let now = 1_000_000 + 10 * d as u64;
            let uptime = a.uptime_at(now);
            let built = a.build(&mut buf, 30, now);
            let want: Vec<v5::Record> = (0..30).map(|i| pool.at(sa + 30 * d + i, uptime)).collect();
            assert_eq!(
                built.packets,
                want.iter().map(|r| u64::from(r.packets)).sum::<u64>()
            );
            assert_eq!(
                built.bytes,
                want.iter().map(|r| u64::from(r.octets)).sum::<u64>()
            );
            for (i, r) in want.iter().enumerate() {
                let mut one = [0u8; v5::RECORD_LEN];
                v5::write_record(&mut one, r);
                let at = v5::HEADER_LEN + i * v5::RECORD_LEN;
                assert_eq!(
                    &buf[at..at + v5::RECORD_LEN],
                    &one[..],
                    "datagram {d} record {i}"
                );
            }
        }
    }

    #[test]
    fn protocol_mix_and_ports_look_real() {
        let mut e = Exporter::new(&profile(42), 0, 0);
        let (mut tcp, mut udp, mut icmp, mut https) = (0, 0, 0, 0);
        let n = 30_000;
        for _ in 0..n {
            let r = e.record(100_000_000);
            assert!((1..=1000).contains(&r.packets));
            assert!(r.octets >= 40 * r.packets && r.octets <= 1500 * r.packets);
            match r.protocol {
                6 => tcp += 1,
                17 => udp += 1,
                1 => {
                    icmp += 1;
                    assert_eq!((r.src_port, r.dst_port), (0, 0));
                }
                p => panic!("protocol {p}"),
            }
            if r.protocol == 6 && (r.dst_port == 443 || r.src_port == 443) {
                https += 1;
            }
        }
        let pct = |x: i32| x * 100 / n;
        assert!((77..=83).contains(&pct(tcp)), "tcp {tcp}");
        assert!((14..=20).contains(&pct(udp)), "udp {udp}");
        assert!((2..=4).contains(&pct(icmp)), "icmp {icmp}");
        assert!(https > tcp / 3, "443 dominates TCP");
    }

    /// The same seed gives the same flows in every format; only the framing differs.
    #[test]
    fn formats_share_the_random_stream() {
        let mut sums = Vec::new();
        for version in [Version::V5, Version::V9, Version::Ipfix] {
            let p = Profile {
                version,
                ..profile(11)
            };
            let mut e = Exporter::new(&p, 2, 1_700_000_000_000);
            let mut buf = [0u8; MAX_DATAGRAM];
            let mut t = Built::default();
            for k in 0..50 {
                let b = e.build(&mut buf, 30, 1_700_000_000_000 + k);
                assert!(b.len <= MAX_DATAGRAM);
                t.flows += b.flows;
                t.packets += b.packets;
                t.bytes += b.bytes;
            }
            sums.push(t);
        }
        assert_eq!(sums[0], sums[1]);
        assert_eq!(sums[0], sums[2]);
    }

    /// When an IPFIX exporter's uptime wraps, the next datagram announces the new init time,
    /// so stamps from both sides of the wrap decode to times within the last minute.
    #[test]
    fn ipfix_uptime_wrap_resends_the_init_time() {
        use nfpg_wire::columns::{Columns, DatagramMeta};
        use nfpg_wire::netflow as nf;
        let p = Profile {
            version: Version::Ipfix,
            uptime_start: Some(u32::MAX - 500),
            template_every: 0,
            ..profile(4)
        };
        let zero = 1_700_000_000_000u64;
        let mut e = Exporter::new(&p, 0, zero);
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut plan = None;
        let mut options = None;
        let mut init = None;
        for (k, dt) in [0u64, 100, 1_234, 2_000].into_iter().enumerate() {
            let now = zero + dt;
            let b = e.build(&mut buf, 30, now);
            let d = &buf[..b.len];
            let (h, body) = nf::parse_header(d).expect("header");
            let mut cols = Columns::with_capacity(64);
            let mut templates = false;
            for set in nf::sets(h.version, body) {
                match set.expect("set").1 {
                    nf::Set::OptionsTemplates(b) => {
                        templates = true;
                        let nf::TemplateRecord::Define(t) =
                            nf::parse_options_templates(h.version, b)
                                .expect("o")
                                .remove(0)
                        else {
                            panic!("withdrawal")
                        };
                        options = Some(t);
                    }
                    nf::Set::Templates(b) => {
                        let nf::TemplateRecord::Define(t) =
                            nf::parse_templates(h.version, b).expect("t").remove(0)
                        else {
                            panic!("withdrawal")
                        };
                        plan = Some(nf::Plan::new(&t, h.version).expect("plan"));
                    }
                    nf::Set::Data {
                        template_id: 257,
                        body,
                    } => {
                        let t = options.as_ref().expect("options template");
                        init = nf::decode_options(t, h.version, body).expect("o")[0].system_init_ms;
                    }
                    nf::Set::Data { body, .. } => {
                        let meta = DatagramMeta {
                            exporter: 1,
                            received_us: 0,
                        };
                        let mut ctx = nf::DataContext::new(&h, &meta, &nf::no_sampling);
                        ctx.system_init_ms = init;
                        nf::decode_data(plan.as_ref().expect("plan"), &ctx, body, &mut cols)
                            .expect("data");
                    }
                    other => panic!("{other:?}"),
                }
            }
            // Templates in the first datagram and the first after the wrap (at +501 ms).
            assert_eq!(templates, k == 0 || k == 2, "datagram {k}");
            let now = now as i64;
            for (s, t) in cols.flow_start_ms.iter().zip(&cols.flow_end_ms) {
                assert!(
                    now - 60_000 <= *s && s <= t && *t <= now,
                    "{k}: {s} {t} {now}"
                );
            }
        }
    }
}
