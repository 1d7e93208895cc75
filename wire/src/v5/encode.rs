//! NetFlow v5 wire encoding: the one encoder of the workspace, used by `nfpg-loadgen`, the
//! tests and the benches.
//!
//! Owns the byte layout of a v5 datagram: the 24-byte header and the 48-byte records, all
//! big-endian. It does no I/O and no randomness: callers decide the field values and move the
//! bytes. It is written independently of the decoder in [`super`] (it shares no code or
//! constants with it, and its tests decode with their own reader), so a bug in one does not
//! hide the same bug in the other.

/// Length of the v5 header in bytes.
pub const HEADER_LEN: usize = 24;
/// Length of one v5 flow record in bytes.
pub const RECORD_LEN: usize = 48;
/// Most records one v5 datagram may carry.
pub const MAX_RECORDS: usize = 30;
/// Largest v5 datagram in bytes.
pub const MAX_DATAGRAM: usize = HEADER_LEN + MAX_RECORDS * RECORD_LEN;

/// The v5 header fields, minus `version` (always 5) and `count` (taken from the records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Milliseconds since the exporter booted (wraps every 49.7 days).
    pub sys_uptime: u32,
    pub unix_secs: u32,
    pub unix_nsecs: u32,
    /// Flows this exporter sent before this datagram (wrapping).
    pub flow_sequence: u32,
    pub engine_type: u8,
    pub engine_id: u8,
    /// Top 2 bits: sampling mode; low 14 bits: interval.
    pub sampling_interval: u16,
}

/// One whole datagram in a new vector (tests and set-up code; the load generator's hot loop
/// uses [`encode`] into its own buffer).
pub fn datagram(h: &Header, records: &[Record]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + RECORD_LEN * records.len()];
    let n = encode(&mut out, h, records);
    out.truncate(n);
    out
}

/// Builds the `sampling_interval` field: mode 1 (deterministic) when `interval > 0`.
pub fn sampling_field(interval: u16) -> u16 {
    if interval == 0 {
        0
    } else {
        (1 << 14) | (interval & 0x3fff)
    }
}

/// One v5 flow record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub next_hop: [u8; 4],
    pub input: u16,
    pub output: u16,
    pub packets: u32,
    pub octets: u32,
    /// sys_uptime (ms) at the first packet of the flow.
    pub first: u32,
    /// sys_uptime (ms) at the last packet of the flow.
    pub last: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub protocol: u8,
    pub tos: u8,
    pub src_as: u16,
    pub dst_as: u16,
    pub src_mask: u8,
    pub dst_mask: u8,
}

/// Writes the header for `count` records into `out[..24]`.
///
/// # Panics
/// If `out` is shorter than [`HEADER_LEN`] (a caller bug, not input-dependent).
pub fn write_header(out: &mut [u8], h: &Header, count: u16) {
    let o = &mut out[..HEADER_LEN];
    o[0..2].copy_from_slice(&5u16.to_be_bytes());
    o[2..4].copy_from_slice(&count.to_be_bytes());
    o[4..8].copy_from_slice(&h.sys_uptime.to_be_bytes());
    o[8..12].copy_from_slice(&h.unix_secs.to_be_bytes());
    o[12..16].copy_from_slice(&h.unix_nsecs.to_be_bytes());
    o[16..20].copy_from_slice(&h.flow_sequence.to_be_bytes());
    o[20] = h.engine_type;
    o[21] = h.engine_id;
    o[22..24].copy_from_slice(&h.sampling_interval.to_be_bytes());
}

/// Writes one record into `out[..48]`.
///
/// # Panics
/// If `out` is shorter than [`RECORD_LEN`] (a caller bug, not input-dependent).
pub fn write_record(out: &mut [u8], r: &Record) {
    let o = &mut out[..RECORD_LEN];
    o[0..4].copy_from_slice(&r.src_addr);
    o[4..8].copy_from_slice(&r.dst_addr);
    o[8..12].copy_from_slice(&r.next_hop);
    o[12..14].copy_from_slice(&r.input.to_be_bytes());
    o[14..16].copy_from_slice(&r.output.to_be_bytes());
    o[16..20].copy_from_slice(&r.packets.to_be_bytes());
    o[20..24].copy_from_slice(&r.octets.to_be_bytes());
    o[24..28].copy_from_slice(&r.first.to_be_bytes());
    o[28..32].copy_from_slice(&r.last.to_be_bytes());
    o[32..34].copy_from_slice(&r.src_port.to_be_bytes());
    o[34..36].copy_from_slice(&r.dst_port.to_be_bytes());
    o[36] = 0; // pad1
    o[37] = r.tcp_flags;
    o[38] = r.protocol;
    o[39] = r.tos;
    o[40..42].copy_from_slice(&r.src_as.to_be_bytes());
    o[42..44].copy_from_slice(&r.dst_as.to_be_bytes());
    o[44] = r.src_mask;
    o[45] = r.dst_mask;
    o[46..48].copy_from_slice(&0u16.to_be_bytes()); // pad2
}

/// Encodes a whole datagram into `out` and returns its length (`24 + 48·records.len()`).
///
/// # Panics
/// If `records` holds more than [`MAX_RECORDS`] or `out` is too short (caller bugs).
pub fn encode(out: &mut [u8], h: &Header, records: &[Record]) -> usize {
    assert!(
        records.len() <= MAX_RECORDS,
        "v5 carries at most 30 records"
    );
    let len = HEADER_LEN + records.len() * RECORD_LEN;
    // Bounded by MAX_RECORDS above, so the cast cannot truncate.
    write_header(out, h, records.len() as u16);
    for (i, r) in records.iter().enumerate() {
        let at = HEADER_LEN + i * RECORD_LEN;
        write_record(&mut out[at..at + RECORD_LEN], r);
    }
    len
}

/// What [`peek`] reads from a datagram that looks like NetFlow v5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub count: u16,
    pub packets: u64,
    pub bytes: u64,
}

/// Reads the record count and packet/byte sums of a v5 datagram, or `None` if `buf` is not a
/// well-formed v5 datagram (wrong version, count 0 or > 30, length not `24 + 48·count`).
pub fn peek(buf: &[u8]) -> Option<Summary> {
    let version = u16::from_be_bytes([*buf.first()?, *buf.get(1)?]);
    let count = u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]);
    if version != 5 || count == 0 || usize::from(count) > MAX_RECORDS {
        return None;
    }
    if buf.len() != HEADER_LEN + usize::from(count) * RECORD_LEN {
        return None;
    }
    let mut packets = 0u64;
    let mut bytes = 0u64;
    for rec in buf[HEADER_LEN..].chunks_exact(RECORD_LEN) {
        packets += u64::from(u32::from_be_bytes([rec[16], rec[17], rec[18], rec[19]]));
        bytes += u64::from(u32::from_be_bytes([rec[20], rec[21], rec[22], rec[23]]));
    }
    Some(Summary {
        count,
        packets,
        bytes,
    })
}

/// Overwrites unix_secs/unix_nsecs of a v5 datagram in place; the uptime fields stay, so the
/// flows keep their offsets from the header time. Returns false if `buf` is not v5.
pub fn rewrite_time(buf: &mut [u8], unix_secs: u32, unix_nsecs: u32) -> bool {
    if peek(buf).is_none() {
        return false;
    }
    buf[8..12].copy_from_slice(&unix_secs.to_be_bytes());
    buf[12..16].copy_from_slice(&unix_nsecs.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Header, Record) {
        let h = Header {
            sys_uptime: 0x0102_0304,
            unix_secs: 0x6000_0000,
            unix_nsecs: 0x0000_0789,
            flow_sequence: 0xffff_fffe,
            engine_type: 1,
            engine_id: 2,
            sampling_interval: sampling_field(100),
        };
        let r = Record {
            src_addr: [10, 0, 0, 1],
            dst_addr: [192, 0, 2, 7],
            next_hop: [10, 255, 0, 1],
            input: 3,
            output: 4,
            packets: 5,
            octets: 600,
            first: 0x0101_0000,
            last: 0x0102_0000,
            src_port: 40000,
            dst_port: 443,
            tcp_flags: 0x1b,
            protocol: 6,
            tos: 0xb8,
            src_as: 64512,
            dst_as: 15169,
            src_mask: 8,
            dst_mask: 24,
        };
        (h, r)
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
            .collect()
    }

    #[test]
    fn one_record_datagram_matches_hex() {
        let (h, r) = sample();
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = encode(&mut buf, &h, &[r]);
        let expected = hex("0005 0001 01020304 60000000 00000789 fffffffe 01 02 4064
             0a000001 c0000207 0aff0001 0003 0004 00000005 00000258
             01010000 01020000 9c40 01bb 00 1b 06 b8 fc00 3b41 08 18 0000");
        assert_eq!(&buf[..n], &expected[..]);
    }

    /// A decoder written only for this test, from the field table, not from `encode`.
    fn decode(buf: &[u8]) -> (Header, Vec<Record>) {
        let be16 = |o: usize| u16::from_be_bytes([buf[o], buf[o + 1]]);
        let be32 = |o: usize| u32::from_be_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        assert_eq!(be16(0), 5);
        let count = usize::from(be16(2));
        assert_eq!(buf.len(), 24 + 48 * count);
        let h = Header {
            sys_uptime: be32(4),
            unix_secs: be32(8),
            unix_nsecs: be32(12),
            flow_sequence: be32(16),
            engine_type: buf[20],
            engine_id: buf[21],
            sampling_interval: be16(22),
        };
        let recs = (0..count)
            .map(|i| {
                let b = 24 + 48 * i;
                let ip = |o: usize| [buf[b + o], buf[b + o + 1], buf[b + o + 2], buf[b + o + 3]];
                assert_eq!(buf[b + 36], 0, "pad1");
                assert_eq!(be16(b + 46), 0, "pad2");
                Record {
                    src_addr: ip(0),
                    dst_addr: ip(4),
                    next_hop: ip(8),
                    input: be16(b + 12),
                    output: be16(b + 14),
                    packets: be32(b + 16),
                    octets: be32(b + 20),
                    first: be32(b + 24),
                    last: be32(b + 28),
                    src_port: be16(b + 32),
                    dst_port: be16(b + 34),
                    tcp_flags: buf[b + 37],
                    protocol: buf[b + 38],
                    tos: buf[b + 39],
                    src_as: be16(b + 40),
                    dst_as: be16(b + 42),
                    src_mask: buf[b + 44],
                    dst_mask: buf[b + 45],
                }
            })
            .collect();
        (h, recs)
    }

    #[test]
    fn decodes_back() {
        let (h, r) = sample();
        let recs: Vec<Record> = (0..30u32)
            .map(|i| Record {
                packets: i + 1,
                octets: (i + 1) * 100,
                src_port: i as u16,
                ..r
            })
            .collect();
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = encode(&mut buf, &h, &recs);
        assert_eq!(n, MAX_DATAGRAM);
        let (h2, recs2) = decode(&buf[..n]);
        assert_eq!(h2, h);
        assert_eq!(recs2, recs);
        let s = peek(&buf[..n]).expect("v5");
        assert_eq!(s.count, 30);
        assert_eq!(s.packets, (1..=30).sum::<u64>());
        assert_eq!(s.bytes, 100 * (1..=30).sum::<u64>());
    }

    #[test]
    fn peek_rejects_bad_lengths_and_versions() {
        let (h, r) = sample();
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = encode(&mut buf, &h, &[r, r]);
        assert!(peek(&buf[..n - 1]).is_none());
        assert!(peek(&buf[..3]).is_none());
        buf[1] = 9;
        assert!(peek(&buf[..n]).is_none());
    }

    #[test]
    fn rewrite_time_keeps_uptimes() {
        let (h, r) = sample();
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = encode(&mut buf, &h, &[r]);
        assert!(rewrite_time(&mut buf[..n], 7, 8));
        let (h2, recs) = decode(&buf[..n]);
        assert_eq!((h2.unix_secs, h2.unix_nsecs), (7, 8));
        assert_eq!(h2.sys_uptime, h.sys_uptime);
        assert_eq!(recs[0], r);
    }
}
