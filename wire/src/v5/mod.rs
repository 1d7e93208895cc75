//! NetFlow v5 decoding: datagram bytes in, columns appended to [`crate::columns::Columns`].
//!
//! Pure and allocation-free: no I/O, no clock, no per-flow or per-datagram allocation (the
//! batch's vectors are reserved beforehand). A datagram is validated whole before anything is
//! appended, so a rejected datagram leaves the batch exactly as it was.
//!
//! Wire format (all big-endian): a 24-byte header — version, count (1..=30), sys_uptime (ms
//! since exporter boot), unix_secs, unix_nsecs, flow_sequence, engine_type, engine_id,
//! sampling (2 bits mode, 14 bits interval) — then `count` records of 48 bytes.
//!
//! Flow times: `header_ms − ((sys_uptime − first) mod 2³²)`. The uptime is a 32-bit
//! millisecond counter that wraps every 49.7 days, and exporters do send `first > sys_uptime`
//! (softflowd replaying a capture), so the difference is taken modulo 2³², as tshark and
//! nfdump do.
#![forbid(unsafe_code)]

pub mod encode;

use crate::columns::{present, v4_to_u128, Columns, DatagramInfo, DatagramMeta, SamplingSource};

pub const HEADER_LEN: usize = 24;
pub const RECORD_LEN: usize = 48;
pub const MAX_COUNT: u16 = 30;

/// A rejected datagram: the reason, the byte offset of the offending field, and the value
/// found there (the version, the count, or the length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {len} bytes is shorter than the 24-byte v5 header")]
    TooShort { len: usize },
    #[error("version {version} at offset 0 is not 5")]
    BadVersion { version: u16 },
    #[error("count {count} at offset 2 is outside 1..=30")]
    BadCount { count: u16 },
    #[error("length {len} does not match 24 + 48 x count {count} = {expected}")]
    BadLength {
        len: usize,
        count: u16,
        expected: usize,
    },
}

impl DecodeError {
    /// The offending value, kept with a malformed sample.
    pub fn detail(&self) -> u32 {
        match *self {
            DecodeError::TooShort { len } => len as u32,
            DecodeError::BadVersion { version } => u32::from(version),
            DecodeError::BadCount { count } => u32::from(count),
            DecodeError::BadLength { len, .. } => len as u32,
        }
    }
}

/// The big-endian u16 at `at` (the caller has checked the length).
#[inline(always)]
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The big-endian u32 at `at` (the caller has checked the length).
#[inline(always)]
pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks a datagram and returns its flow count without decoding it.
pub fn validate(data: &[u8]) -> Result<u16, DecodeError> {
    if data.len() < HEADER_LEN {
        return Err(DecodeError::TooShort { len: data.len() });
    }
    let version = be16(data, 0);
    if version != 5 {
        return Err(DecodeError::BadVersion { version });
    }
    let count = be16(data, 2);
    if count == 0 || count > MAX_COUNT {
        return Err(DecodeError::BadCount { count });
    }
    let expected = HEADER_LEN + RECORD_LEN * usize::from(count);
    if data.len() != expected {
        return Err(DecodeError::BadLength {
            len: data.len(),
            count,
            expected,
        });
    }
    Ok(count)
}

/// Flow time in ms since the Unix epoch from the header time and a record's uptime stamp.
#[inline(always)]
pub fn flow_time_ms(export_ms: i64, sys_uptime: u32, stamp: u32) -> i64 {
    export_ms - i64::from(sys_uptime.wrapping_sub(stamp))
}

/// The header of a datagram `validate` accepted with `count` records, as the record of the
/// datagram its flows come from (`first_flow`: where they start in their batch).
#[inline]
pub fn header(data: &[u8], count: u16, meta: &DatagramMeta, first_flow: u32) -> DatagramInfo {
    let sampling = be16(data, 22);
    DatagramInfo {
        exporter: meta.exporter,
        received_us: meta.received_us,
        first_flow,
        count,
        version: 5,
        source_id: 0,
        engine_type: data[20],
        engine_id: data[21],
        sampling_mode: (sampling >> 14) as u8,
        sampling_interval: sampling & 0x3fff,
        sys_uptime_ms: be32(data, 4),
        export_ms: i64::from(be32(data, 8)) * 1000 + i64::from(be32(data, 12) / 1_000_000),
        sequence: be32(data, 16),
        held: false,
    }
}

/// Where a v5 flow's sampling interval comes from: the header, when it gives one.
#[inline]
pub fn sampling_source(interval: u16) -> SamplingSource {
    if interval == 0 {
        SamplingSource::None
    } else {
        SamplingSource::V5Header
    }
}

/// Decodes one v5 datagram into `batch`, returning the number of flows appended.
///
/// The caller guarantees room (`batch.has_room_for(30)`); the decoder never grows a vector.
/// On error nothing is appended.
pub fn decode(data: &[u8], meta: &DatagramMeta, batch: &mut Columns) -> Result<u16, DecodeError> {
    let count = validate(data)?;
    debug_assert!(batch.has_room_for(usize::from(count)));
    let info = header(data, count, meta, batch.len() as u32);
    let (sys_uptime, export_ms) = (info.sys_uptime_ms, info.export_ms);
    batch.datagrams.push(info);
    // Column by column: each pass is a tight loop over at most 30 records that are already
    // in L1, and `extend` from an exact-size iterator checks capacity once per column rather
    // than once per value (18 columns × 30 pushes per datagram otherwise).
    let recs = || {
        data[HEADER_LEN..]
            .chunks_exact(RECORD_LEN)
            .map(|r| -> &[u8; RECORD_LEN] { r.try_into().unwrap_or(&[0; RECORD_LEN]) })
    };
    batch
        .src_addr
        .extend(recs().map(|r| v4_to_u128(be32(r, 0))));
    batch
        .dst_addr
        .extend(recs().map(|r| v4_to_u128(be32(r, 4))));
    batch
        .next_hop
        .extend(recs().map(|r| v4_to_u128(be32(r, 8))));
    batch
        .input_if
        .extend(recs().map(|r| u32::from(be16(r, 12))));
    batch
        .output_if
        .extend(recs().map(|r| u32::from(be16(r, 14))));
    batch.packets.extend(recs().map(|r| u64::from(be32(r, 16))));
    batch.bytes.extend(recs().map(|r| u64::from(be32(r, 20))));
    batch
        .flow_start_ms
        .extend(recs().map(|r| flow_time_ms(export_ms, sys_uptime, be32(r, 24))));
    batch
        .flow_end_ms
        .extend(recs().map(|r| flow_time_ms(export_ms, sys_uptime, be32(r, 28))));
    batch.src_port.extend(recs().map(|r| be16(r, 32)));
    batch.dst_port.extend(recs().map(|r| be16(r, 34)));
    // r[36] is padding.
    batch.tcp_flags.extend(recs().map(|r| r[37]));
    batch.protocol.extend(recs().map(|r| r[38]));
    batch.tos.extend(recs().map(|r| r[39]));
    batch.src_as.extend(recs().map(|r| u32::from(be16(r, 40))));
    batch.dst_as.extend(recs().map(|r| u32::from(be16(r, 42))));
    batch.src_mask.extend(recs().map(|r| r[44]));
    batch.dst_mask.extend(recs().map(|r| r[45]));
    let n = usize::from(count);
    batch.present.extend(std::iter::repeat_n(present::V5, n));
    let interval = u32::from(info.sampling_interval);
    let source = sampling_source(info.sampling_interval);
    batch
        .sampling_interval
        .extend(std::iter::repeat_n(interval, n));
    batch
        .sampling_source
        .extend(std::iter::repeat_n(source as u8, n));
    debug_assert!(batch.is_aligned());
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::u128_to_addr;

    /// One hand-assembled datagram: header + one record, every field distinct.
    const ONE: &str = concat!(
        "0005", "0001", "000007d8", "6b0c9d5b", "2c74b4e8", "00000011", "01", "02", "4064",
        "0a0102f4", "c0000214", "0a000001", "0003", "0004", "00000004", "000007e9", "a8729200",
        "a872920d", "b333", "0019", "00", "1b", "06", "20", "fde8", "fde9", "18", "1c", "0000",
    );

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn decodes_every_field() {
        let data = hex(ONE);
        assert_eq!(data.len(), 72);
        let mut b = Columns::with_capacity(30);
        let meta = DatagramMeta {
            exporter: v4_to_u128(0x7f000001),
            received_us: 42,
        };
        assert_eq!(decode(&data, &meta, &mut b), Ok(1));
        assert_eq!(u128_to_addr(b.src_addr[0]).to_string(), "10.1.2.244");
        assert_eq!(u128_to_addr(b.dst_addr[0]).to_string(), "192.0.2.20");
        assert_eq!(u128_to_addr(b.next_hop[0]).to_string(), "10.0.0.1");
        assert_eq!((b.input_if[0], b.output_if[0]), (3, 4));
        assert_eq!((b.packets[0], b.bytes[0]), (4, 2025));
        assert_eq!((b.src_port[0], b.dst_port[0]), (45875, 25));
        assert_eq!((b.tcp_flags[0], b.protocol[0], b.tos[0]), (0x1b, 6, 0x20));
        assert_eq!((b.src_as[0], b.dst_as[0]), (65000, 65001));
        assert_eq!((b.src_mask[0], b.dst_mask[0]), (24, 28));
        let d = b.datagrams[0];
        assert_eq!((d.engine_type, d.engine_id, d.sequence), (1, 2, 17));
        assert_eq!((d.sampling_mode, d.sampling_interval), (1, 100));
        // Header 1795988827.745 s; uptime 2008 ms; first 0xa8729200 > uptime: wraps.
        assert_eq!(d.export_ms, 1_795_988_827_745);
        let first = 0xa872_9200u32;
        assert_eq!(
            b.flow_start_ms[0],
            d.export_ms - i64::from(2008u32.wrapping_sub(first))
        );
        assert_eq!(b.flow_end_ms[0] - b.flow_start_ms[0], 13);
        assert_eq!(b.present[0], present::V5);
        assert_eq!((b.sampling_interval[0], b.sampling_source[0]), (100, 1));
        assert!(b.is_aligned());
    }

    #[test]
    fn uptime_arithmetic_wraps() {
        // Normal: first before uptime.
        assert_eq!(flow_time_ms(1_000_000, 5_000, 4_000), 999_000);
        // Exporter uptime wrapped after the flow started: first near u32::MAX, uptime small.
        assert_eq!(flow_time_ms(1_000_000, 100, u32::MAX - 899), 999_000);
    }

    #[test]
    fn rejects_whole_datagrams_by_reason() {
        let good = hex(ONE);
        let mut b = Columns::with_capacity(30);
        let meta = DatagramMeta {
            exporter: 1,
            received_us: 0,
        };
        let mut v9 = good.clone();
        v9[1] = 9;
        let mut zero = good.clone();
        zero[3] = 0;
        let mut many = good.clone();
        many[3] = 31;
        let mut two = good.clone();
        two[3] = 2;
        let long = [good.clone(), vec![0; 10]].concat();
        assert_eq!(
            decode(&good[..23], &meta, &mut b),
            Err(DecodeError::TooShort { len: 23 })
        );
        assert_eq!(
            decode(&v9, &meta, &mut b),
            Err(DecodeError::BadVersion { version: 9 })
        );
        assert_eq!(
            decode(&zero, &meta, &mut b),
            Err(DecodeError::BadCount { count: 0 })
        );
        assert_eq!(
            decode(&many, &meta, &mut b),
            Err(DecodeError::BadCount { count: 31 })
        );
        assert_eq!(
            decode(&two, &meta, &mut b),
            Err(DecodeError::BadLength {
                len: 72,
                count: 2,
                expected: 120
            })
        );
        assert!(matches!(
            decode(&long, &meta, &mut b),
            Err(DecodeError::BadLength { len: 82, .. })
        ));
        assert!(
            b.is_empty() && b.datagrams.is_empty(),
            "rejects append nothing"
        );
        assert_eq!(decode(&good, &meta, &mut b), Ok(1));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep over mutated datagrams.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut b = Columns::with_capacity(60);
        let meta = DatagramMeta {
            exporter: 1,
            received_us: 0,
        };
        let mut buf = hex(ONE);
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            buf.resize(len, (x >> 8) as u8);
            if len > 4 {
                buf[(x >> 16) as usize % len] = (x >> 24) as u8;
                if x & 1 == 0 {
                    buf[0] = 0;
                    buf[1] = 5;
                }
            }
            if decode(&buf, &meta, &mut b).is_ok() {
                b.clear();
            }
        }
    }
}
