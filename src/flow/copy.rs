//! PostgreSQL binary COPY encoding: of flow [`Columns`] (the writers, [`encode_copy`]), and of
//! NetFlow v5 records as the shards keep them ([`v5_rows`], encoded as they are streamed:
//! [`Piece`], [`stream`]).
//!
//! The writer streams the bytes this module produces into `COPY flows (…) FROM STDIN
//! (FORMAT binary)`; the spool keeps the same tuples in its segments. Format: the 11-byte
//! signature, int32 flags, int32 extension length, then per row an int16 field count and per
//! field an int32 length and the value, then an int16 −1 trailer; all big-endian. `inet` is family (2 = IPv4, 3 = IPv6: PostgreSQL's own numbers,
//! not the OS's), prefix bits, is_cidr, address length, address. `timestamptz` is int64 µs
//! since 2000-01-01 UTC. Unsigned wire counters go to the next wider signed type, so none
//! can overflow.
//!
//! No unsafe code here; the private `shuffle` module (v5 tuples by byte shuffle: AVX-512
//! VBMI or SSSE3, [`Shuffle`]) has what it needs.

mod shuffle;
pub use shuffle::Shuffle;

use crate::flow::batch::{as_v4, Columns, DatagramMeta, V5Encoding, V5Rows};
use nfpg_wire::columns::present as p;
use nfpg_wire::v5::{self, be16, be32};

/// Signature, flags and header extension length.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
pub const PG_EPOCH_OFFSET_S: i64 = 946_684_800;

/// The flows table's columns in the order the encoder writes them.
pub const FLOW_COLUMNS: &[&str] = &[
    "flow_start",
    "flow_end",
    "src_addr",
    "dst_addr",
    "next_hop",
    "src_port",
    "dst_port",
    "protocol",
    "tcp_flags",
    "tos",
    "input_if",
    "output_if",
    "packets",
    "bytes",
    "src_as",
    "dst_as",
    "src_mask",
    "dst_mask",
    "exporter",
    "engine_type",
    "engine_id",
    "sampling_interval",
    "sampling_mode",
    "netflow_version",
    "received_at",
    "source_id",
    "direction",
    "end_reason",
    "vlan",
    "mpls_label",
    "icmp_type",
    "post_nat_src_addr",
    "post_nat_dst_addr",
    "post_nat_src_port",
    "post_nat_dst_port",
    "sampling_source",
];

/// Upper bound of one encoded row, for reserving the output buffer: 36 length words, six
/// `inet`s of IPv6 size, and every other field at 8 bytes.
pub const MAX_ROW_BYTES: usize = 2 + 36 * 4 + 6 * 20 + 30 * 8;

/// The column nfpg sets when a flow's times lie far from its arrival (see
/// `--max-ahead`/`--max-behind`); NULL otherwise.
pub const TIME_SUSPECT_COLUMN: &str = "time_suspect";

/// The columns of a [`Shape::Basic`] COPY: those a v5 record fills (the first 25) and the
/// sampling source.
pub const BASIC_COLUMNS: [&str; 26] = {
    let mut c = [""; 26];
    let mut i = 0;
    while i < 25 {
        c[i] = FLOW_COLUMNS[i];
        i += 1;
    }
    c[25] = FLOW_COLUMNS[FLOW_COLUMNS.len() - 1];
    c
};

/// A column list with `time_suspect` appended.
const fn with_flag<const N: usize, const M: usize>(cols: &[&'static str]) -> [&'static str; M] {
    let mut c = [""; M];
    let mut i = 0;
    while i < N {
        c[i] = cols[i];
        i += 1;
    }
    c[N] = TIME_SUSPECT_COLUMN;
    c
}

const BASIC_FLAGGED_COLUMNS: [&str; 27] = with_flag::<26, 27>(&BASIC_COLUMNS);
const FULL_FLAGGED_COLUMNS: [&str; 37] = with_flag::<36, 37>(FLOW_COLUMNS);

/// Which columns a COPY carries. A batch of v5 flows has nothing for the ten columns only
/// v9/IPFIX fill; leaving them out of the COPY (they stay NULL) spares PostgreSQL parsing ten
/// NULLs per row, so v5 ingest costs what it did before those columns existed. Likewise
/// `time_suspect` is sent only in a COPY that has a flagged row. The names are stored in
/// spool segments: they never change meaning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// [`BASIC_COLUMNS`]: every batch of only v5 datagrams.
    Basic,
    /// [`FLOW_COLUMNS`]: all of them.
    #[default]
    Full,
    /// [`Shape::Basic`] and `time_suspect`.
    BasicFlagged,
    /// [`Shape::Full`] and `time_suspect`.
    FullFlagged,
}

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 4] = [
        Shape::Basic,
        Shape::Full,
        Shape::BasicFlagged,
        Shape::FullFlagged,
    ];

    /// The shape for these batches: basic when every datagram is v5, flagged when a row's
    /// times are suspect.
    pub fn of<'a>(batches: impl IntoIterator<Item = &'a Columns> + Clone) -> Shape {
        let all_v5 = batches
            .clone()
            .into_iter()
            .all(|b| b.datagrams.iter().all(|d| d.version == 5));
        let flagged = batches
            .into_iter()
            .any(|b| b.present.iter().fold(0, |a, &p| a | p) & p::TIME_SUSPECT != 0);
        match (all_v5, flagged) {
            (true, false) => Shape::Basic,
            (false, false) => Shape::Full,
            (true, true) => Shape::BasicFlagged,
            (false, true) => Shape::FullFlagged,
        }
    }

    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Shape::Basic => &BASIC_COLUMNS,
            Shape::Full => FLOW_COLUMNS,
            Shape::BasicFlagged => &BASIC_FLAGGED_COLUMNS,
            Shape::FullFlagged => &FULL_FLAGGED_COLUMNS,
        }
    }

    fn full(self) -> bool {
        matches!(self, Shape::Full | Shape::FullFlagged)
    }

    fn flagged(self) -> bool {
        matches!(self, Shape::BasicFlagged | Shape::FullFlagged)
    }
}

/// `COPY schema.flows (…) FROM STDIN (FORMAT binary)` for a quoted schema name.
pub fn copy_statement(quoted_schema: &str, shape: Shape) -> String {
    copy_statement_into(&format!("{quoted_schema}.flows"), shape)
}

/// The COPY statement of `shape` into `table` (a relation with flows' columns).
pub fn copy_statement_into(table: &str, shape: Shape) -> String {
    format!(
        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
        shape.columns().join(", ")
    )
}

/// Converts ms since the Unix epoch to PostgreSQL's µs since 2000-01-01.
#[inline(always)]
pub fn pg_time_from_unix_ms(ms: i64) -> i64 {
    (ms - PG_EPOCH_OFFSET_S * 1000) * 1000
}

/// Converts µs since the Unix epoch to PostgreSQL's µs since 2000-01-01.
#[inline(always)]
pub fn pg_time_from_unix_us(us: i64) -> i64 {
    us - PG_EPOCH_OFFSET_S * 1_000_000
}

#[inline(always)]
fn i16_field(out: &mut Vec<u8>, v: i16) {
    out.extend_from_slice(&[0, 0, 0, 2]);
    out.extend_from_slice(&v.to_be_bytes());
}

#[inline(always)]
fn i32_field(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&[0, 0, 0, 4]);
    out.extend_from_slice(&v.to_be_bytes());
}

#[inline(always)]
fn i64_field(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&[0, 0, 0, 8]);
    out.extend_from_slice(&v.to_be_bytes());
}

#[inline(always)]
fn null_field(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

#[inline(always)]
fn inet_field(out: &mut Vec<u8>, addr: u128) {
    match as_v4(addr) {
        Some(v4) => {
            let o = v4.octets();
            out.extend_from_slice(&[0, 0, 0, 8, 2, 32, 0, 4, o[0], o[1], o[2], o[3]]);
        }
        None => {
            out.extend_from_slice(&[0, 0, 0, 20, 3, 128, 0, 16]);
            out.extend_from_slice(&addr.to_be_bytes());
        }
    }
}

/// One whole COPY stream into `out` (cleared first): the header, every flow of every
/// `batch` in order, the trailer, in the [`Shape`] these batches need (returned). Writers
/// frame one COPY around several batches this way.
pub fn encode_copy<'a>(
    batches: impl IntoIterator<Item = &'a Columns> + Clone,
    out: &mut Vec<u8>,
) -> Shape {
    let shape = Shape::of(batches.clone());
    out.clear();
    out.extend_from_slice(HEADER);
    for b in batches {
        encode_rows(b, shape, out);
    }
    out.extend_from_slice(TRAILER);
    shape
}

/// Appends every flow of `batch` as binary COPY tuples (no header or trailer; see
/// [`encode_copy`]).
pub fn encode_rows(batch: &Columns, shape: Shape, out: &mut Vec<u8>) {
    encode_rows_with(batch, shape, out, true);
}

/// [`encode_rows`], with the fixed-width v5 path switchable (off: every row takes the general
/// path; the tests compare the two byte for byte).
fn encode_rows_with(batch: &Columns, shape: Shape, out: &mut Vec<u8>, fixed: bool) {
    out.reserve(batch.len() * MAX_ROW_BYTES);
    let field_count = (shape.columns().len() as i16).to_be_bytes();
    let full = shape.full();
    let flagged = shape.flagged();
    for dg in &batch.datagrams {
        let received = pg_time_from_unix_us(dg.received_us);
        let start = dg.first_flow as usize;
        let source_id = i64::from(dg.source_id);
        let exporter_v4 = v4_bits(dg.exporter);
        for i in start..start + usize::from(dg.count) {
            let has = batch.present[i];
            if fixed && !full && has & !p::TIME_SUSPECT == p::V5 {
                if let (Some(src), Some(dst), Some(hop), Some(exp)) = (
                    v4_bits(batch.src_addr[i]),
                    v4_bits(batch.dst_addr[i]),
                    v4_bits(batch.next_hop[i]),
                    exporter_v4,
                ) {
                    let row = V5Row {
                        start: pg_time_from_unix_ms(batch.flow_start_ms[i]),
                        end: pg_time_from_unix_ms(batch.flow_end_ms[i]),
                        addrs: [src, dst, hop],
                        src_port: batch.src_port[i],
                        dst_port: batch.dst_port[i],
                        protocol: batch.protocol[i],
                        tcp_flags: batch.tcp_flags[i],
                        tos: batch.tos[i],
                        input_if: batch.input_if[i],
                        output_if: batch.output_if[i],
                        packets: i64::try_from(batch.packets[i]).unwrap_or(i64::MAX),
                        bytes: i64::try_from(batch.bytes[i]).unwrap_or(i64::MAX),
                        src_as: batch.src_as[i],
                        dst_as: batch.dst_as[i],
                        src_mask: batch.src_mask[i],
                        dst_mask: batch.dst_mask[i],
                        exporter: exp,
                        engine: [dg.engine_type, dg.engine_id],
                        sampling_interval: i32::try_from(batch.sampling_interval[i])
                            .unwrap_or(i32::MAX),
                        sampling_mode: dg.sampling_mode,
                        version: dg.version,
                        received,
                        sampling_source: batch.sampling_source[i],
                    };
                    if flagged {
                        row.put_flagged(has & p::TIME_SUSPECT != 0, out);
                    } else {
                        row.put_basic(out);
                    }
                    continue;
                }
            }
            // Optional fields: the value when the row has it, else NULL.
            macro_rules! opt {
                ($bit:expr, $write:expr) => {
                    if has & $bit != 0 {
                        $write
                    } else {
                        null_field(out)
                    }
                };
            }
            out.extend_from_slice(&field_count);
            i64_field(out, pg_time_from_unix_ms(batch.flow_start_ms[i]));
            i64_field(out, pg_time_from_unix_ms(batch.flow_end_ms[i]));
            inet_field(out, batch.src_addr[i]);
            inet_field(out, batch.dst_addr[i]);
            opt!(p::NEXT_HOP, inet_field(out, batch.next_hop[i]));
            opt!(p::SRC_PORT, i32_field(out, i32::from(batch.src_port[i])));
            opt!(p::DST_PORT, i32_field(out, i32::from(batch.dst_port[i])));
            i16_field(out, i16::from(batch.protocol[i]));
            opt!(p::TCP_FLAGS, i16_field(out, i16::from(batch.tcp_flags[i])));
            opt!(p::TOS, i16_field(out, i16::from(batch.tos[i])));
            opt!(p::INPUT_IF, i64_field(out, i64::from(batch.input_if[i])));
            opt!(p::OUTPUT_IF, i64_field(out, i64::from(batch.output_if[i])));
            // Counters above i64::MAX cannot be meant; saturate rather than wrap.
            i64_field(out, i64::try_from(batch.packets[i]).unwrap_or(i64::MAX));
            i64_field(out, i64::try_from(batch.bytes[i]).unwrap_or(i64::MAX));
            opt!(p::SRC_AS, i64_field(out, i64::from(batch.src_as[i])));
            opt!(p::DST_AS, i64_field(out, i64::from(batch.dst_as[i])));
            opt!(p::SRC_MASK, i16_field(out, i16::from(batch.src_mask[i])));
            opt!(p::DST_MASK, i16_field(out, i16::from(batch.dst_mask[i])));
            inet_field(out, dg.exporter);
            i16_field(out, i16::from(dg.engine_type));
            i16_field(out, i16::from(dg.engine_id));
            // int4: intervals above 2^31 are not real; saturate.
            i32_field(
                out,
                i32::try_from(batch.sampling_interval[i]).unwrap_or(i32::MAX),
            );
            i16_field(out, i16::from(dg.sampling_mode));
            i16_field(out, i16::from(dg.version));
            i64_field(out, received);
            if !full {
                i16_field(out, i16::from(batch.sampling_source[i]));
                if flagged {
                    opt!(p::TIME_SUSPECT, out.extend_from_slice(&[0, 0, 0, 1, 1]));
                }
                continue;
            }
            i64_field(out, source_id);
            opt!(p::DIRECTION, i16_field(out, i16::from(batch.direction[i])));
            opt!(
                p::END_REASON,
                i16_field(out, i16::from(batch.end_reason[i]))
            );
            opt!(p::VLAN, i32_field(out, i32::from(batch.vlan[i])));
            opt!(
                p::MPLS_LABEL,
                i32_field(out, (batch.mpls_label[i] & 0x000f_ffff) as i32)
            );
            opt!(p::ICMP_TYPE, i32_field(out, i32::from(batch.icmp_type[i])));
            opt!(p::POST_NAT_SRC_ADDR, inet_field(out, batch.post_nat_src[i]));
            opt!(p::POST_NAT_DST_ADDR, inet_field(out, batch.post_nat_dst[i]));
            opt!(
                p::POST_NAT_SRC_PORT,
                i32_field(out, i32::from(batch.post_nat_src_port[i]))
            );
            opt!(
                p::POST_NAT_DST_PORT,
                i32_field(out, i32::from(batch.post_nat_dst_port[i]))
            );
            i16_field(out, i16::from(batch.sampling_source[i]));
            if flagged {
                opt!(p::TIME_SUSPECT, out.extend_from_slice(&[0, 0, 0, 1, 1]));
            }
        }
    }
}

/// The IPv4 address of a v4-mapped `u128`, as a big-endian u32.
#[inline(always)]
fn v4_bits(addr: u128) -> Option<u32> {
    (addr >> 32 == 0xffff).then_some(addr as u32)
}

/// One [`Shape::Basic`] row whose optional fields are exactly a v5 record's and whose four
/// addresses are IPv4: every field then has a fixed width and place, so the row is a constant
/// template with the values written in place (`copy_encode/rows` of `cargo bench --bench
/// pipeline`: about 22 ns a row, against 40 when every field was appended on its own). Bytes identical to the
/// general path (tested).
struct V5Row {
    start: i64,
    end: i64,
    addrs: [u32; 3],
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    tcp_flags: u8,
    tos: u8,
    input_if: u32,
    output_if: u32,
    packets: i64,
    bytes: i64,
    src_as: u32,
    dst_as: u32,
    src_mask: u8,
    dst_mask: u8,
    exporter: u32,
    engine: [u8; 2],
    sampling_interval: i32,
    sampling_mode: u8,
    version: u8,
    received: i64,
    sampling_source: u8,
}

/// Bytes of a [`V5Row`]: the field count, 26 length words and the values.
const V5_ROW_LEN: usize = 242;

/// Bytes of one row of [`V5Rows`] encoded in [`V5_SHAPE`] with `time_suspect` NULL; a flagged
/// row (true) takes one more.
pub const V5_TUPLE_LEN: usize = V5_ROW_LEN + 4;

/// Widths of a [`V5Row`]'s 26 values, in [`BASIC_COLUMNS`] order (an IPv4 `inet` is 8 bytes:
/// family, bits, is_cidr, length, then the address).
const V5_WIDTHS: [usize; 26] = [
    8, 8, 8, 8, 8, 4, 4, 2, 2, 2, 8, 8, 8, 8, 8, 8, 2, 2, 8, 2, 2, 4, 2, 2, 8, 2,
];

/// Where each value of a [`V5Row`] starts: after the field count, each field's length word
/// and the values before it.
const V5_AT: [usize; 26] = {
    let mut at = [0; 26];
    let mut pos = 2;
    let mut i = 0;
    while i < 26 {
        at[i] = pos + 4;
        pos += 4 + V5_WIDTHS[i];
        i += 1;
    }
    at
};

/// A [`V5Row`] with every value zero: the field count (26, or 27 with `time_suspect` after
/// it, NULL or true), the length words and the constant head of each `inet` (IPv4, /32).
const fn v5_template<const N: usize>(suspect: Option<bool>) -> [u8; N] {
    let mut r = [0u8; N];
    let count: i16 = if suspect.is_some() { 27 } else { 26 };
    let c = count.to_be_bytes();
    r[0] = c[0];
    r[1] = c[1];
    let mut i = 0;
    while i < 26 {
        let len = (V5_WIDTHS[i] as i32).to_be_bytes();
        let at = V5_AT[i] - 4;
        r[at] = len[0];
        r[at + 1] = len[1];
        r[at + 2] = len[2];
        r[at + 3] = len[3];
        // The four inets (src, dst, next hop, exporter): family 2, 32 bits, not cidr, 4 bytes.
        if i == 2 || i == 3 || i == 4 || i == 18 {
            r[at + 4] = 2;
            r[at + 5] = 32;
            r[at + 6] = 0;
            r[at + 7] = 4;
        }
        i += 1;
    }
    match suspect {
        Some(true) => {
            r[V5_ROW_LEN + 3] = 1;
            r[V5_ROW_LEN + 4] = 1;
        }
        Some(false) => {
            r[V5_ROW_LEN] = 0xff;
            r[V5_ROW_LEN + 1] = 0xff;
            r[V5_ROW_LEN + 2] = 0xff;
            r[V5_ROW_LEN + 3] = 0xff;
        }
        None => {}
    }
    r
}

// The values end where the row does.
const _: () = assert!(V5_AT[25] + 2 == V5_ROW_LEN);

/// Where a v5 record's fields go in a [`V5Row`]: (value, record offset, bytes). Each is copied
/// to the end of its value, which is big-endian and at least as wide: a zero-extended copy.
/// The flow times are computed, the other values are the datagram's.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const V5_FROM_RECORD: [(usize, usize, usize); 16] = [
    (2, 0, 4),   // src_addr (after the inet head)
    (3, 4, 4),   // dst_addr
    (4, 8, 4),   // next_hop
    (5, 32, 2),  // src_port
    (6, 34, 2),  // dst_port
    (7, 38, 1),  // protocol
    (8, 37, 1),  // tcp_flags
    (9, 39, 1),  // tos
    (10, 12, 2), // input_if
    (11, 14, 2), // output_if
    (12, 16, 4), // packets
    (13, 20, 4), // bytes
    (14, 40, 2), // src_as
    (15, 42, 2), // dst_as
    (16, 44, 1), // src_mask
    (17, 45, 1), // dst_mask
];

/// For each byte of a v5 tuple (and the padding to [`shuffle::ROW`]): the record byte it
/// holds, or [`shuffle::KEEP`] (the datagram's template byte).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const V5_SOURCE: [u8; shuffle::ROW] = {
    let mut src = [shuffle::KEEP; shuffle::ROW];
    let mut i = 0;
    while i < V5_FROM_RECORD.len() {
        let (field, from, bytes) = V5_FROM_RECORD[i];
        let end = V5_AT[field] + V5_WIDTHS[field];
        let mut b = 0;
        while b < bytes {
            src[end - bytes + b] = (from + b) as u8;
            b += 1;
        }
        i += 1;
    }
    src
};

const V5_BASIC: [u8; V5_ROW_LEN] = v5_template(None);
const V5_FLAGGED_NULL: [u8; V5_ROW_LEN + 4] = v5_template(Some(false));
const V5_FLAGGED_TRUE: [u8; V5_ROW_LEN + 5] = v5_template(Some(true));

impl V5Row {
    /// Appends the row: its template (one copy of constant bytes), then each value written in
    /// place. Building the row elsewhere and copying it costs more: the copy's wide loads
    /// cannot be forwarded from the many narrow stores that built it.
    #[inline(always)]
    fn put(&self, template: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(template);
        // In bounds: the template just appended is at least V5_ROW_LEN long.
        self.write(&mut out[start..start + V5_ROW_LEN]);
    }

    /// Writes the values into `r`, a row's template.
    #[inline(always)]
    fn write(&self, r: &mut [u8]) {
        self.write_record(r);
        self.write_datagram(r);
    }

    /// Writes the values a record sets (the times and the 16 fields of [`V5_FROM_RECORD`]).
    #[inline(always)]
    fn write_record(&self, r: &mut [u8]) {
        let a = &V5_AT;
        r[a[0]..a[0] + 8].copy_from_slice(&self.start.to_be_bytes());
        r[a[1]..a[1] + 8].copy_from_slice(&self.end.to_be_bytes());
        r[a[2] + 4..a[2] + 8].copy_from_slice(&self.addrs[0].to_be_bytes());
        r[a[3] + 4..a[3] + 8].copy_from_slice(&self.addrs[1].to_be_bytes());
        r[a[4] + 4..a[4] + 8].copy_from_slice(&self.addrs[2].to_be_bytes());
        r[a[5]..a[5] + 4].copy_from_slice(&i32::from(self.src_port).to_be_bytes());
        r[a[6]..a[6] + 4].copy_from_slice(&i32::from(self.dst_port).to_be_bytes());
        r[a[7]..a[7] + 2].copy_from_slice(&i16::from(self.protocol).to_be_bytes());
        r[a[8]..a[8] + 2].copy_from_slice(&i16::from(self.tcp_flags).to_be_bytes());
        r[a[9]..a[9] + 2].copy_from_slice(&i16::from(self.tos).to_be_bytes());
        r[a[10]..a[10] + 8].copy_from_slice(&i64::from(self.input_if).to_be_bytes());
        r[a[11]..a[11] + 8].copy_from_slice(&i64::from(self.output_if).to_be_bytes());
        r[a[12]..a[12] + 8].copy_from_slice(&self.packets.to_be_bytes());
        r[a[13]..a[13] + 8].copy_from_slice(&self.bytes.to_be_bytes());
        r[a[14]..a[14] + 8].copy_from_slice(&i64::from(self.src_as).to_be_bytes());
        r[a[15]..a[15] + 8].copy_from_slice(&i64::from(self.dst_as).to_be_bytes());
        r[a[16]..a[16] + 2].copy_from_slice(&i16::from(self.src_mask).to_be_bytes());
        r[a[17]..a[17] + 2].copy_from_slice(&i16::from(self.dst_mask).to_be_bytes());
    }

    /// Writes the values the datagram sets (exporter to `sampling_source`).
    #[inline(always)]
    fn write_datagram(&self, r: &mut [u8]) {
        let a = &V5_AT;
        r[a[18] + 4..a[18] + 8].copy_from_slice(&self.exporter.to_be_bytes());
        r[a[19]..a[19] + 2].copy_from_slice(&i16::from(self.engine[0]).to_be_bytes());
        r[a[20]..a[20] + 2].copy_from_slice(&i16::from(self.engine[1]).to_be_bytes());
        r[a[21]..a[21] + 4].copy_from_slice(&self.sampling_interval.to_be_bytes());
        r[a[22]..a[22] + 2].copy_from_slice(&i16::from(self.sampling_mode).to_be_bytes());
        r[a[23]..a[23] + 2].copy_from_slice(&i16::from(self.version).to_be_bytes());
        r[a[24]..a[24] + 8].copy_from_slice(&self.received.to_be_bytes());
        r[a[25]..a[25] + 2].copy_from_slice(&i16::from(self.sampling_source).to_be_bytes());
    }

    /// Appends the [`Shape::Basic`] row.
    #[inline(always)]
    fn put_basic(&self, out: &mut Vec<u8>) {
        self.put(&V5_BASIC, out);
    }

    /// Appends the [`Shape::BasicFlagged`] row: one more field, `time_suspect` (true or
    /// NULL).
    #[inline(always)]
    fn put_flagged(&self, suspect: bool, out: &mut Vec<u8>) {
        if suspect {
            self.put(&V5_FLAGGED_TRUE, out);
        } else {
            self.put(&V5_FLAGGED_NULL, out);
        }
    }
}

/// The shape of [`V5Rows`]' tuples: a v5 row's columns and `time_suspect` (true or NULL), so
/// a flagged row needs no other shape.
pub const V5_SHAPE: Shape = Shape::BasicFlagged;

/// Appends the flows of one NetFlow v5 datagram from an IPv4 exporter (`exporter_v4`, as a
/// big-endian u32) to `t`: its records as they are, its header values and whether each flow's
/// times are suspect: starting or ending more than `ahead` µs after the arrival, or ending
/// more than `behind` µs before it. [`stream`] encodes them into the same tuples as
/// `nfpg_wire::v5::decode` followed by [`encode_rows`] in [`V5_SHAPE`] (tested). Returns
/// (flows, flagged flows).
pub fn v5_rows(
    data: &[u8],
    exporter_v4: u32,
    meta: &DatagramMeta,
    (ahead, behind): (i64, i64),
    t: &mut V5Rows,
) -> Result<(u16, u64), v5::DecodeError> {
    let count = v5::validate(data)?;
    let info = v5::header(data, count, meta, t.rows as u32);
    let rx_ms = meta.received_us / 1000;
    let enc = V5Encoding {
        exporter_v4,
        latest_ms: rx_ms + ahead / 1000,
        earliest_ms: rx_ms - behind / 1000,
    };
    let records = &data[v5::HEADER_LEN..v5::HEADER_LEN + usize::from(count) * v5::RECORD_LEN];
    shuffle::prefetch(
        t.records.as_ptr().wrapping_add(t.records.len()),
        records.len(),
    );
    let (young, old) = enc.age_edges(info.export_ms);
    let up = info.sys_uptime_ms;
    let (mut packets, mut bytes, mut flagged) = (0u64, 0u64, 0u64);
    for r in records.chunks_exact(v5::RECORD_LEN) {
        let start_age = i64::from(up.wrapping_sub(be32(r, 24)));
        let end_age = i64::from(up.wrapping_sub(be32(r, 28)));
        packets += u64::from(be32(r, 16));
        bytes += u64::from(be32(r, 20));
        flagged += u64::from(start_age.min(end_age) < young || end_age > old);
    }
    t.records.extend_from_slice(records);
    t.datagrams.push(info);
    t.encoding.push(enc);
    t.totals.push((packets, bytes));
    t.rows += usize::from(count);
    t.suspect += flagged as usize;
    Ok((count, flagged))
}

/// A v5 record's flow start and end, ms since the Unix epoch.
#[inline(always)]
fn v5_times(info: &nfpg_wire::columns::DatagramInfo, r: &[u8]) -> (i64, i64) {
    (
        v5::flow_time_ms(info.export_ms, info.sys_uptime_ms, be32(r, 24)),
        v5::flow_time_ms(info.export_ms, info.sys_uptime_ms, be32(r, 28)),
    )
}

impl V5Encoding {
    /// Whether a flow with these times (ms) is flagged `time_suspect`.
    #[inline(always)]
    fn suspect(&self, start: i64, end: i64) -> bool {
        start > self.latest_ms || end > self.latest_ms || end < self.earliest_ms
    }

    /// [`Self::suspect`] in a datagram's uptime terms, for `v5_rows`, which then need not turn
    /// every stamp into a time: a flow time is `export_ms - age`, `age` being the ms of uptime
    /// since the stamp (`v5::flow_time_ms`), so a time after `latest_ms` is an age below the
    /// first edge returned and one before `earliest_ms` an age above the second. The same
    /// comparisons exactly (no value nears i64's limits; tested at every edge).
    #[inline(always)]
    fn age_edges(&self, export_ms: i64) -> (i64, i64) {
        (export_ms - self.latest_ms, export_ms - self.earliest_ms)
    }
}

/// Appends the tuples of `t`'s datagrams `from..` to `out`, stopping after the datagram that
/// takes `out` to `limit` bytes or more. Returns the next datagram to encode. By byte shuffle
/// ([`shuffle`]) where the CPU can.
fn encode_v5(t: &V5Rows, from: usize, out: &mut Vec<u8>, limit: usize) -> usize {
    encode_v5_with(t, from, out, limit, Shuffle::best())
}

/// [`encode_v5`], by byte shuffle `how` (where the CPU can), else value by value.
/// `cargo bench --bench pipeline -- copy_encode/v5_tuples` (2-core Xeon VM, 8,190 rows of
/// 30-record datagrams, one run): 12.0 ns a row value by value, 7.5 by SSSE3 shuffle; in the
/// collector (`--sink null --balance cpu` at 50,000 datagrams/s, 2 alternating runs) 1.40 →
/// 1.24 µs of CPU a datagram. With 16 KiB chunks and VBMI (one run on 2026-12-04): 9.8 ns a
/// row value by value, 5.3 by SSSE3, 4.6 by VBMI.
fn encode_v5_with(
    t: &V5Rows,
    from: usize,
    out: &mut Vec<u8>,
    limit: usize,
    how: Option<Shuffle>,
) -> usize {
    for (k, (info, enc)) in t.datagrams.iter().zip(&t.encoding).enumerate().skip(from) {
        let first = info.first_flow as usize * v5::RECORD_LEN;
        let records = &t.records[first..first + usize::from(info.count) * v5::RECORD_LEN];
        let interval = info.sampling_interval;
        // The datagram's values; the record's are set per row (or shuffled in).
        let datagram = V5Row {
            start: 0,
            end: 0,
            addrs: [0; 3],
            src_port: 0,
            dst_port: 0,
            protocol: 0,
            tcp_flags: 0,
            tos: 0,
            input_if: 0,
            output_if: 0,
            packets: 0,
            bytes: 0,
            src_as: 0,
            dst_as: 0,
            src_mask: 0,
            dst_mask: 0,
            exporter: enc.exporter_v4,
            engine: [info.engine_type, info.engine_id],
            sampling_interval: i32::from(interval),
            sampling_mode: info.sampling_mode,
            version: 5,
            received: pg_time_from_unix_us(info.received_us),
            sampling_source: v5::sampling_source(interval) as u8,
        };
        let times = |r: &[u8]| {
            let (start, end) = v5_times(info, r);
            (
                pg_time_from_unix_ms(start),
                pg_time_from_unix_ms(end),
                enc.suspect(start, end),
            )
        };
        let shuffled = how
            .is_some_and(|how| shuffle::append(how, records, &v5_templates(&datagram), times, out));
        if !shuffled {
            out.reserve(usize::from(info.count) * (V5_TUPLE_LEN + 1));
            for r in records.chunks_exact(v5::RECORD_LEN) {
                let (start, end, suspect) = times(r);
                V5Row {
                    start,
                    end,
                    addrs: [be32(r, 0), be32(r, 4), be32(r, 8)],
                    src_port: be16(r, 32),
                    dst_port: be16(r, 34),
                    protocol: r[38],
                    tcp_flags: r[37],
                    tos: r[39],
                    input_if: u32::from(be16(r, 12)),
                    output_if: u32::from(be16(r, 14)),
                    packets: i64::from(be32(r, 16)),
                    bytes: i64::from(be32(r, 20)),
                    src_as: u32::from(be16(r, 40)),
                    dst_as: u32::from(be16(r, 42)),
                    src_mask: r[44],
                    dst_mask: r[45],
                    ..datagram
                }
                .put_flagged(suspect, out);
            }
        }
        if out.len() >= limit {
            return k + 1;
        }
    }
    t.datagrams.len()
}

/// Encodes `t`'s tuples as [`stream`] does (a [`CHUNK`] at a time into `buf`, reused), value
/// by value (`None`) or by byte shuffle `how` where the CPU can; returns the bytes encoded.
/// For the benchmark that compares the ways (`copy_encode/v5_tuples_*` of `cargo bench
/// --bench pipeline`).
#[doc(hidden)]
pub fn v5_tuples_with(t: &V5Rows, how: Option<Shuffle>, buf: &mut Vec<u8>) -> usize {
    let (mut next, mut total) = (0, 0);
    while next < t.datagrams.len() {
        buf.clear();
        next = encode_v5_with(t, next, buf, CHUNK, how);
        total += buf.len();
    }
    total
}

/// A datagram's two [`V5_SHAPE`] tuples with every record byte zero (`time_suspect` NULL,
/// then true), padded to [`shuffle::ROW`]. The constant templates already hold zero for the
/// record's values, so only the datagram's are written (`write` of all 26 was 3 % of the
/// collector's CPU at 50,000 datagrams/s).
fn v5_templates(datagram: &V5Row) -> [[u8; shuffle::ROW]; 2] {
    let mut t = [[0u8; shuffle::ROW]; 2];
    t[0][..V5_FLAGGED_NULL.len()].copy_from_slice(&V5_FLAGGED_NULL);
    t[1][..V5_FLAGGED_TRUE.len()].copy_from_slice(&V5_FLAGGED_TRUE);
    for row in &mut t {
        datagram.write_datagram(&mut row[..V5_ROW_LEN]);
    }
    t
}

/// Bytes handed on at a time by [`stream`]: small enough that the buffer v5 rows are encoded
/// into stays in the core's first-level data cache (48 KiB on the development VM's Xeon; a
/// chunk ends after the datagram that reaches this, so it is at most about 23 KiB), large
/// enough that a COPY takes few writes. `--sink null --balance cpu` at 50,000 datagrams/s,
/// two A/Bs of 5 alternating 15 s runs (medians, µs of CPU a datagram): 64 KiB (before)
/// 0.760 against 16 KiB 0.733; 8 KiB 0.733, 16 KiB 0.733, 32 KiB 0.760. At 64 KiB the
/// tuples' stores missed the first-level cache.
pub const CHUNK: usize = 16 << 10;

/// A piece of a binary COPY stream: bytes as they are (the header, the trailer, rows the
/// writer encoded from columns, tuples read back from the spool), or NetFlow v5 rows as the
/// shards kept them, encoded as the piece is streamed.
#[derive(Clone, Copy, Debug)]
pub enum Piece<'a> {
    Bytes(&'a [u8]),
    V5(&'a V5Rows),
}

impl Piece<'_> {
    /// Bytes the piece streams as.
    pub fn len(&self) -> usize {
        match self {
            Piece::Bytes(b) => b.len(),
            Piece::V5(t) => t.encoded_len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

thread_local! {
    /// Each thread's buffer for encoding v5 rows in [`stream`]: one size, reused while hot.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hands `pieces` to `emit` in order, in chunks of at most about [`CHUNK`] bytes (v5 rows
/// encoded on the way). Stops at the first error `emit` returns.
pub fn stream<E>(
    pieces: &[Piece<'_>],
    mut emit: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    // Taken, not borrowed, so a nested call (there is none) would only allocate.
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let result = (|| {
        for piece in pieces {
            match piece {
                Piece::Bytes(b) => {
                    for chunk in b.chunks(CHUNK) {
                        emit(chunk)?;
                    }
                }
                Piece::V5(t) => {
                    let mut next = 0;
                    while next < t.datagrams.len() {
                        buf.clear();
                        next = encode_v5(t, next, &mut buf, CHUNK);
                        emit(&buf)?;
                    }
                }
            }
        }
        Ok(())
    })();
    buf.clear();
    SCRATCH.with(|s| *s.borrow_mut() = buf);
    result
}

/// The pieces as one buffer (for what needs the stream whole: tests, rare paths).
pub fn concat(pieces: &[Piece<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pieces.iter().map(Piece::len).sum());
    let _ = stream(pieces, |c| {
        out.extend_from_slice(c);
        Ok::<(), std::convert::Infallible>(())
    });
    out
}

/// Index of `received_at` in every shape's column list.
const RECEIVED_AT_FIELD: usize = 24;

/// First and last `received_at` (µs since the Unix epoch) of binary COPY tuples (no header
/// or trailer), as the spool holds them; `None` when there are none or they do not parse.
pub fn received_range(tuples: &[u8]) -> Option<(i64, i64)> {
    let mut at = 0;
    let mut range: Option<(i64, i64)> = None;
    let be_i32 = |b: &[u8], at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    while at < tuples.len() {
        let fields = i16::from_be_bytes(tuples.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        let mut received = None;
        for f in 0..usize::try_from(fields).ok()? {
            let len = be_i32(tuples, at)?;
            at += 4;
            if len < 0 {
                continue;
            }
            let len = len as usize;
            if f == RECEIVED_AT_FIELD && len == 8 {
                let pg = i64::from_be_bytes(tuples.get(at..at + 8)?.try_into().ok()?);
                received = Some(pg + PG_EPOCH_OFFSET_S * 1_000_000);
            }
            at += len;
        }
        let t = received?;
        range = Some(match range {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
    }
    range
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::batch::{v4_to_u128, DatagramInfo};

    #[test]
    fn header_is_the_documented_signature() {
        assert_eq!(HEADER.len(), 19);
        assert_eq!(&HEADER[..11], b"PGCOPY\n\xff\r\n\0");
    }

    #[test]
    fn one_row_bytes() {
        let mut b = Columns::with_capacity(30);
        b.datagrams.push(DatagramInfo {
            exporter: v4_to_u128(0x7f000001),
            received_us: PG_EPOCH_OFFSET_S * 1_000_000 + 1,
            first_flow: 0,
            count: 1,
            version: 5,
            ..Default::default()
        });
        b.flow_start_ms.push(PG_EPOCH_OFFSET_S * 1000);
        b.flow_end_ms.push(PG_EPOCH_OFFSET_S * 1000 - 1);
        b.src_addr.push(v4_to_u128(0x0a000001));
        b.dst_addr.push(u128::from(
            "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap(),
        ));
        b.next_hop.push(v4_to_u128(0));
        for v in [&mut b.src_port, &mut b.dst_port] {
            v.push(65535);
        }
        for v in [
            &mut b.protocol,
            &mut b.tcp_flags,
            &mut b.tos,
            &mut b.src_mask,
            &mut b.dst_mask,
        ] {
            v.push(255);
        }
        for v in [
            &mut b.input_if,
            &mut b.output_if,
            &mut b.src_as,
            &mut b.dst_as,
        ] {
            v.push(u32::MAX);
        }
        b.packets.push(u64::from(u32::MAX));
        b.bytes.push(u64::MAX);
        b.present.push(nfpg_wire::columns::present::V5);
        b.sampling_interval.push(7);
        b.sampling_source.push(1);
        assert!(b.is_aligned());
        let mut framed = Vec::new();
        encode_copy([&b], &mut framed);
        assert_eq!(&framed[..HEADER.len()], HEADER);
        assert_eq!(&framed[framed.len() - 2..], TRAILER);
        let out = framed[HEADER.len()..framed.len() - 2].to_vec();
        assert!(out.len() <= MAX_ROW_BYTES);
        assert_eq!(
            &out[..2],
            &26i16.to_be_bytes(),
            "a v5 batch: the basic shape"
        );
        // flow_start = the PostgreSQL epoch exactly; flow_end one ms before it.
        assert_eq!(&out[2..14], &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&out[18..26], &(-1000i64).to_be_bytes());
        // src 10.0.0.1 as IPv4 inet, dst as IPv6 inet.
        assert_eq!(&out[26..38], &[0, 0, 0, 8, 2, 32, 0, 4, 10, 0, 0, 1]);
        assert_eq!(&out[38..46], &[0, 0, 0, 20, 3, 128, 0, 16]);
        // The tail: received_at (1 µs after the PostgreSQL epoch), then sampling_source 1.
        let mut tail = Vec::new();
        tail.extend_from_slice(&[0, 0, 0, 8]);
        tail.extend_from_slice(&1i64.to_be_bytes());
        tail.extend_from_slice(&[0, 0, 0, 2, 0, 1]);
        assert_eq!(&out[out.len() - tail.len()..], &tail[..]);
        // The same row as v9: the full shape, source_id 0 and the nine absent fields NULL.
        b.datagrams[0].version = 9;
        let mut full = Vec::new();
        assert_eq!(encode_copy([&b], &mut full), Shape::Full);
        let out = &full[HEADER.len()..full.len() - 2];
        assert_eq!(&out[..2], &(FLOW_COLUMNS.len() as i16).to_be_bytes());
        let mut tail = Vec::new();
        tail.extend_from_slice(&[0, 0, 0, 8]);
        tail.extend_from_slice(&0i64.to_be_bytes());
        for _ in 0..9 {
            tail.extend_from_slice(&(-1i32).to_be_bytes());
        }
        tail.extend_from_slice(&[0, 0, 0, 2, 0, 1]);
        assert_eq!(&out[out.len() - tail.len()..], &tail[..]);
    }

    #[test]
    fn received_range_reads_every_row() {
        use crate::flow::batch::{v4_to_u128, DatagramInfo};
        let mut b = Columns::with_capacity(30);
        for (i, rx) in [(0u32, 1_700_000_000_000_123i64), (1, 1_700_000_000_000_001)] {
            b.datagrams.push(DatagramInfo {
                exporter: v4_to_u128(0x7f000001),
                received_us: rx,
                first_flow: i,
                count: 1,
                version: 5,
                ..Default::default()
            });
            b.flow_start_ms.push(0);
            b.flow_end_ms.push(0);
            b.src_addr.push(0);
            b.dst_addr.push(0);
            b.next_hop.push(0);
            b.src_port.push(0);
            b.dst_port.push(0);
            b.protocol.push(6);
            b.tcp_flags.push(0);
            b.tos.push(0);
            b.input_if.push(0);
            b.output_if.push(0);
            b.packets.push(1);
            b.bytes.push(1);
            b.src_as.push(0);
            b.dst_as.push(0);
            b.src_mask.push(0);
            b.dst_mask.push(0);
            b.present.push(nfpg_wire::columns::present::TIME_SUSPECT);
            b.sampling_interval.push(0);
            b.sampling_source.push(0);
        }
        let mut framed = Vec::new();
        let shape = encode_copy([&b], &mut framed);
        assert_eq!(shape, Shape::BasicFlagged);
        let tuples = &framed[HEADER.len()..framed.len() - TRAILER.len()];
        assert_eq!(
            received_range(tuples),
            Some((1_700_000_000_000_001, 1_700_000_000_000_123))
        );
        assert_eq!(received_range(&[]), None);
        assert_eq!(received_range(&tuples[..10]), None);
    }

    /// xorshift32: varied but reproducible field values.
    fn xorshift(x: &mut u32) -> u32 {
        *x ^= *x << 13;
        *x ^= *x >> 17;
        *x ^= *x << 5;
        *x
    }

    /// A v5 datagram (the `d`th) of `n` records with varied values: exported at 1.7e9 + `d` s
    /// with an uptime of 2,000 s, its flows starting and ending up to `back` ms before that.
    fn varied_datagram(x: &mut u32, d: u32, n: usize, back: u32, sampled: bool) -> Vec<u8> {
        use nfpg_wire::v5::encode::{datagram, Header, Record};
        let mut next = || xorshift(x);
        let records: Vec<Record> = (0..n)
            .map(|_| Record {
                src_addr: next().to_be_bytes(),
                dst_addr: next().to_be_bytes(),
                next_hop: next().to_be_bytes(),
                input: next() as u16,
                output: next() as u16,
                packets: next(),
                octets: next(),
                first: 2_000_000 - next() % back,
                last: 2_000_000 - next() % back,
                src_port: next() as u16,
                dst_port: next() as u16,
                tcp_flags: next() as u8,
                protocol: next() as u8,
                tos: next() as u8,
                src_as: next() as u16,
                dst_as: next() as u16,
                src_mask: next() as u8,
                dst_mask: next() as u8,
            })
            .collect();
        let h = Header {
            sys_uptime: 2_000_000,
            unix_secs: 1_700_000_000 + d,
            unix_nsecs: next() % 1_000_000_000,
            flow_sequence: d * 30,
            engine_type: next() as u8,
            engine_id: next() as u8,
            sampling_interval: if sampled { next() as u16 } else { 0 },
        };
        datagram(&h, &records)
    }

    /// `v5_rows` flags exactly the flows `V5Encoding::suspect` flags from their times (it
    /// compares ages in uptime instead): one ms either side of each edge of the window, with
    /// the exporter's clock behind the collector's and ahead of it, and with stamps past the
    /// uptime (a wrapped counter).
    #[test]
    fn v5_rows_flags_at_the_window_edges() {
        use nfpg_wire::v5::encode::{datagram, Header, Record};
        // Flagged: starting or ending > 100 s after arrival, or ending > 1,000 s before it.
        let window = (100_000_000i64, 1_000_000_000i64);
        let export_ms = 1_700_000_000_123i64;
        for up in [3_000_000_000u32, 1_000, u32::MAX - 10] {
            // Arrival 50 s after the export time, and 200 s before it (the exporter's clock
            // ahead): the edges, as ages (ms of uptime before the export), are then
            // (none, 950 s) and (100 s, 1,200 s).
            for (rx_offset_ms, young, old) in [
                (50_000i64, 0i64, 950_000i64),
                (-200_000, 100_000, 1_200_000),
            ] {
                let h = Header {
                    sys_uptime: up,
                    unix_secs: 1_700_000_000,
                    unix_nsecs: 123_456_789,
                    ..Default::default()
                };
                let ages = [
                    young - 1,
                    young,
                    young + 1,
                    old - 1,
                    old,
                    old + 1,
                    0,
                    5_000,
                    1 << 31,
                    i64::from(u32::MAX),
                ];
                let stamps: Vec<u32> = ages
                    .iter()
                    .filter(|&&a| a >= 0)
                    .map(|&a| up.wrapping_sub(a as u32))
                    .collect();
                let records: Vec<Record> = stamps
                    .iter()
                    .flat_map(|&first| {
                        stamps.iter().map(move |&last| Record {
                            first,
                            last,
                            ..Default::default()
                        })
                    })
                    .collect();
                let meta = nfpg_wire::columns::DatagramMeta {
                    exporter: v4_to_u128(0x7f00_0001),
                    received_us: (export_ms + rx_offset_ms) * 1000,
                };
                let (mut flagged, mut expected) = (0u64, 0u64);
                for chunk in records.chunks(30) {
                    let bytes = datagram(&h, chunk);
                    let mut t = V5Rows::default();
                    let (_, f) = v5_rows(&bytes, 0x7f00_0001, &meta, window, &mut t).unwrap();
                    assert_eq!(t.suspect as u64, f);
                    flagged += f;
                    let (info, enc) = (&t.datagrams[0], &t.encoding[0]);
                    assert_eq!(info.export_ms, export_ms);
                    for r in t.records.chunks_exact(v5::RECORD_LEN) {
                        let (start, end) = v5_times(info, r);
                        expected += u64::from(enc.suspect(start, end));
                    }
                }
                assert_eq!(flagged, expected, "uptime {up}, arrival {rx_offset_ms}");
                assert!(expected > 0 && expected < records.len() as u64);
            }
        }
    }

    /// The fixed-width v5 rows are byte for byte what the general path writes: for decoded
    /// datagrams of varied values, in the basic and the flagged shape, with an IPv6 exporter
    /// and an IPv6 address in the mix (those rows take the general path).
    #[test]
    fn fixed_v5_rows_match_the_general_path() {
        let mut b = Columns::with_capacity(30 * 8);
        let mut x: u32 = 0x9e37_79b9;
        for d in 0..8u32 {
            let bytes = varied_datagram(&mut x, d, 30, 2_000_000, true);
            let exporter = if d == 5 {
                u128::from("2001:db8::5".parse::<std::net::Ipv6Addr>().unwrap())
            } else {
                v4_to_u128(0x7f01_0001 + d)
            };
            let meta = nfpg_wire::columns::DatagramMeta {
                exporter,
                received_us: 1_700_000_000_000_000 + i64::from(d),
            };
            nfpg_wire::v5::decode(&bytes, &meta, &mut b).unwrap();
        }
        b.dst_addr[7] = u128::from("2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap());
        for (shape, flag_every) in [(Shape::Basic, 0), (Shape::BasicFlagged, 3)] {
            if flag_every > 0 {
                for i in (0..b.len()).step_by(flag_every) {
                    b.present[i] |= p::TIME_SUSPECT;
                }
            }
            let (mut fast, mut general) = (Vec::new(), Vec::new());
            encode_rows_with(&b, shape, &mut fast, true);
            encode_rows_with(&b, shape, &mut general, false);
            let first = fast.iter().zip(&general).position(|(a, b)| a != b);
            assert_eq!(
                fast.len(),
                general.len(),
                "{shape:?}: first difference at {first:?}"
            );
            assert!(fast == general, "{shape:?}: the fixed rows differ");
            assert_eq!(Shape::of([&b]), shape);
        }
    }

    /// The shard's v5 path (records kept, encoded as streamed) writes the very bytes of
    /// decoding into columns, flagging times as the shard does, and encoding those in
    /// [`V5_SHAPE`], whatever the chunk boundaries; and it records the same datagrams with the
    /// same totals.
    #[test]
    fn v5_rows_stream_as_decode_then_encode() {
        let mut x: u32 = 0x1234_5678;
        // A window of ±(100 s ahead, 1,000 s behind): some flows fall outside it.
        let window = (100_000_000i64, 1_000_000_000i64);
        let mut cols = Columns::with_capacity(30 * 6);
        let mut t = V5Rows::default();
        let mut flagged_expected = 0u64;
        for d in 0..6u32 {
            let n = [30usize, 1, 17, 30, 2, 29][d as usize];
            let mut bytes = varied_datagram(&mut x, d, n, 1_500_000, d % 2 == 1);
            // Pad bytes set: they must not reach a tuple.
            for r in bytes[v5::HEADER_LEN..].chunks_exact_mut(v5::RECORD_LEN) {
                (r[36], r[46], r[47]) = (0xa5, 0x5a, 0xff);
            }
            let exporter_v4 = 0x7f01_0001 + d;
            let meta = nfpg_wire::columns::DatagramMeta {
                exporter: v4_to_u128(exporter_v4),
                // Arrival 50 s after the export time: flows ending > 1,000 s before it or
                // starting > 100 s after it are flagged.
                received_us: (1_700_000_000 + i64::from(d) + 50) * 1_000_000,
            };
            let before = cols.len();
            nfpg_wire::v5::decode(&bytes, &meta, &mut cols).unwrap();
            let rx_ms = meta.received_us / 1000;
            let (hi, lo) = (rx_ms + window.0 / 1000, rx_ms - window.1 / 1000);
            for i in before..cols.len() {
                let (s, e) = (cols.flow_start_ms[i], cols.flow_end_ms[i]);
                if s > hi || e > hi || e < lo {
                    cols.present[i] |= p::TIME_SUSPECT;
                    flagged_expected += 1;
                }
            }
            let (count, _) = v5_rows(&bytes, exporter_v4, &meta, window, &mut t).unwrap();
            assert_eq!(usize::from(count), n);
        }
        assert!(flagged_expected > 0 && (flagged_expected as usize) < cols.len());
        let mut expected = Vec::new();
        encode_rows_with(&cols, V5_SHAPE, &mut expected, false);
        assert_eq!(t.rows, cols.len());
        assert_eq!(t.encoded_len(), expected.len());
        let streamed = concat(&[Piece::V5(&t)]);
        assert!(streamed == expected, "tuples differ from decode + encode");
        // Chunks end only after a whole datagram, and every limit gives the same bytes, value
        // by value and by each byte shuffle this CPU has (x86-64 has SSSE3, CI's VBMI too).
        let ways = std::iter::once(None).chain(Shuffle::ALL.map(Some));
        for how in ways.filter(|h| h.is_none_or(Shuffle::available)) {
            for limit in [1, 250, 7_000, 1 << 20] {
                let (mut out, mut next, mut chunks) = (Vec::new(), 0, 0);
                while next < t.datagrams.len() {
                    let before = out.len();
                    next = encode_v5_with(&t, next, &mut out, before + limit, how);
                    chunks += 1;
                }
                assert!(out == expected, "limit {limit}, {how:?}");
                assert!(chunks <= t.datagrams.len() && (limit > 7_000 || chunks > 1));
            }
        }
        assert_eq!(t.suspect as u64, flagged_expected);
        let flagged: usize = (0..cols.len())
            .filter(|&i| cols.present[i] & p::TIME_SUSPECT != 0)
            .count();
        assert_eq!(flagged as u64, flagged_expected);
        assert_eq!(t.datagrams, cols.datagrams);
        let totals: Vec<(u64, u64)> = cols.datagrams.iter().map(|d| cols.totals_of(d)).collect();
        assert_eq!(t.totals, totals);
        // Malformed input is refused, nothing appended.
        let rows = t.rows;
        let meta = nfpg_wire::columns::DatagramMeta {
            exporter: 1,
            received_us: 0,
        };
        assert!(v5_rows(&[0, 5, 0, 1], 1, &meta, window, &mut t).is_err());
        assert_eq!((t.rows, t.datagrams.len(), t.encoding.len()), (rows, 6, 6));
        assert_eq!(t.records.len(), rows * v5::RECORD_LEN);
    }

    #[test]
    fn shapes_are_listed_in_declaration_order() {
        for (i, s) in Shape::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        assert_eq!(
            Shape::FullFlagged.columns().last(),
            Some(&TIME_SUSPECT_COLUMN)
        );
        assert_eq!(Shape::BasicFlagged.columns().len(), 27);
    }
}
