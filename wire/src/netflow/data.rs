//! Data sets of data templates into [`Columns`].

use super::error::DecodeError;
use super::plan::{column_bit, FixedOp, Op, Plan, Target, TimeKind};
use super::{be16, Header, Version, SET_HEADER_LEN};
use crate::columns::{v4_to_u128, Columns, DatagramInfo, DatagramMeta, SamplingSource};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: i64 = 2_208_988_800;

/// The longest set body: a set length is 16 bits and includes the 4-byte set header.
const MAX_SET_BODY: usize = u16::MAX as usize - SET_HEADER_LEN;

/// What the collector knows about the message a data set came in, and its sampling state.
pub struct DataContext<'a> {
    /// Export time from the header, ms since the Unix epoch ([`Header::export_ms`]).
    pub export_ms: i64,
    /// v9 header sysUpTime; `None` for IPFIX.
    pub sys_uptime_ms: Option<u32>,
    /// When the exporter booted, ms since the Unix epoch: IPFIX options data IE 160
    /// systemInitTimeMilliseconds ([`super::OptionsRecord::system_init_ms`]). IPFIX
    /// flowStart/EndSysUpTime (22/21) are relative to it.
    pub system_init_ms: Option<i64>,
    /// The exporter's address, column form.
    pub exporter: u128,
    /// Receive time, µs since the Unix epoch.
    pub received_us: i64,
    /// The header's sequence number.
    pub sequence: u32,
    /// v9 source id / IPFIX observation domain id.
    pub domain: u32,
    /// The collector's sampling state: given a record's sampler / selector id (48 or 302;
    /// `None` when the template has neither), the interval (1 in N) and where it came from
    /// ([`SamplingSource::OptionsSampler`], [`SamplingSource::OptionsExporter`],
    /// [`SamplingSource::Override`]), or `None` if unknown. Asked only for records that carry
    /// no interval of their own: once per data set without sampler ids, once per run of equal
    /// ids otherwise.
    pub sampling: &'a dyn Fn(Option<u64>) -> Option<(u32, SamplingSource)>,
}

/// A sampling lookup that knows nothing (every record's interval is its own or 0).
pub fn no_sampling(_sampler: Option<u64>) -> Option<(u32, SamplingSource)> {
    None
}

impl<'a> DataContext<'a> {
    /// The context of a message with header `h` (no system init time: set
    /// [`DataContext::system_init_ms`] from options data).
    pub fn new(
        h: &Header,
        meta: &DatagramMeta,
        sampling: &'a dyn Fn(Option<u64>) -> Option<(u32, SamplingSource)>,
    ) -> Self {
        DataContext {
            export_ms: h.export_ms(),
            sys_uptime_ms: h.sys_uptime_ms,
            system_init_ms: None,
            exporter: meta.exporter,
            received_us: meta.received_us,
            sequence: h.sequence,
            domain: h.domain,
            sampling,
        }
    }
}

/// What [`decode_data`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataOutcome {
    /// Rows appended (one [`DatagramInfo`] was appended with them when this is not 0).
    pub records: u16,
    /// Bytes after the last record, ignored as padding (fewer than
    /// [`Plan::min_record_len`]).
    pub padding: usize,
    /// Whether flow times fell back to the export time because the template uses
    /// flowStart/EndSysUpTime and neither a header uptime (v9) nor a system init time (IPFIX
    /// options data) was known.
    pub time_fallback: bool,
}

/// Most records a data set body of `body_len` bytes can hold with `plan`: check
/// `cols.has_room_for(max_records(..))` before [`decode_data`] to keep it allocation-free.
///
/// Unlike v5's 30 ([`crate::columns::MAX_FLOWS_PER_DATAGRAM`]), this is bounded only by the
/// set length: up to 65,531 records of 1 byte, 1,560 of softflowd's 42-byte IPv4 records in a
/// 65,535-byte set, 34 in a 1,500-byte datagram. Columns sized for v5 may be too small for one
/// v9/IPFIX data set: size them by the largest datagram expected.
pub fn max_records(plan: &Plan, body_len: usize) -> usize {
    body_len.min(MAX_SET_BODY) / plan.min_record_len()
}

/// Walks one record from `pos`, calling `f` for every decoded field; returns the position
/// after the record.
#[inline(always)]
fn walk(
    ops: &[Op],
    body: &[u8],
    start: usize,
    mut f: impl FnMut(&Op, &[u8]),
) -> Result<usize, DecodeError> {
    let mut pos = start;
    for op in ops {
        let room = body.len() - pos;
        let len = if op.variable {
            let Some(&first) = body.get(pos) else {
                return Err(DecodeError::VarLenPastEnd {
                    offset: pos,
                    len: 1,
                    room,
                });
            };
            if first < 255 {
                pos += 1;
                usize::from(first)
            } else {
                if room < 3 {
                    return Err(DecodeError::VarLenPastEnd {
                        offset: pos,
                        len: 3,
                        room,
                    });
                }
                pos += 3;
                usize::from(be16(body, pos - 2))
            }
        } else {
            usize::from(op.len)
        };
        if body.len() - pos < len {
            return Err(if op.variable {
                DecodeError::VarLenPastEnd {
                    offset: pos,
                    len,
                    room: body.len() - pos,
                }
            } else {
                DecodeError::TruncatedRecord {
                    offset: start,
                    need: pos - start + len,
                    room: body.len() - start,
                }
            });
        }
        if op.target != Target::Skip {
            f(op, &body[pos..pos + len]);
        }
        pos += len;
    }
    Ok(pos)
}

/// Checks a data set body against `plan` without decoding it: the number of records, or the
/// first record that does not fit. [`decode_data`] does this itself; a collector that wants
/// a whole datagram rejected when any of its sets is bad calls it for every data set first.
/// Records: as many as fit; fewer bytes than [`Plan::min_record_len`] left at the end are
/// padding.
pub fn validate_data(plan: &Plan, body: &[u8]) -> Result<usize, DecodeError> {
    if body.len() > MAX_SET_BODY {
        return Err(DecodeError::BadSetLength {
            offset: 0,
            length: u16::MAX,
            room: body.len(),
        });
    }
    let min = plan.min_record_len();
    if !plan.is_variable() {
        return Ok(body.len() / min);
    }
    let (mut pos, mut n) = (0, 0);
    while body.len() - pos >= min {
        pos = walk(plan.ops(), body, pos, |_, _| {})?;
        n += 1;
    }
    Ok(n)
}

/// A record's decoded fields.
#[derive(Clone, Copy, Default)]
struct Row {
    /// Bits of the columns written so far (a later zero does not overwrite them).
    written: u64,
    start: u64,
    end: u64,
    src: u128,
    dst: u128,
    next_hop: u128,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    tcp_flags: u8,
    tos: u8,
    input_if: u32,
    output_if: u32,
    packets: u64,
    bytes: u64,
    src_as: u32,
    dst_as: u32,
    src_mask: u8,
    dst_mask: u8,
    direction: u8,
    end_reason: u8,
    vlan: u16,
    mpls_label: u32,
    icmp_type: u16,
    post_nat_src: u128,
    post_nat_dst: u128,
    post_nat_src_port: u16,
    post_nat_dst_port: u16,
    sampling_interval: u64,
    random_interval: u64,
    sampler_id: u64,
    packet_interval: u64,
    packet_space: u64,
    // Computed by `Finisher::finish`:
    start_ms: i64,
    end_ms: i64,
    interval: u32,
    source: u8,
}

#[inline(always)]
fn uint(b: &[u8]) -> u64 {
    match *b {
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_be_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_be_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)),
    }
}

#[inline(always)]
fn sat<T: TryFrom<u64> + Bounded>(v: u64) -> T {
    T::try_from(v).unwrap_or(T::MAX)
}

trait Bounded {
    const MAX: Self;
}
impl Bounded for u8 {
    const MAX: u8 = u8::MAX;
}
impl Bounded for u16 {
    const MAX: u16 = u16::MAX;
}
impl Bounded for u32 {
    const MAX: u32 = u32::MAX;
}

#[inline(always)]
fn v6(b: &[u8]) -> u128 {
    b.iter().fold(0u128, |a, &x| (a << 8) | u128::from(x))
}

/// The one table of how each target's bytes `b` become a [`Row`] field: `with_target!(t,
/// set)` expands `set!(field, b => value)` for target `t`.
macro_rules! with_target {
    ($t:expr, $set:ident) => {
        match $t {
            Target::Skip => {}
            Target::Bytes => $set!(bytes, b => uint(b)),
            Target::Packets => $set!(packets, b => uint(b)),
            Target::Protocol => $set!(protocol, b => sat(uint(b))),
            Target::Tos => $set!(tos, b => sat(uint(b))),
            Target::TcpFlags => $set!(tcp_flags, b => (uint(b) & 0xff) as u8),
            Target::SrcPort => $set!(src_port, b => sat(uint(b))),
            Target::DstPort => $set!(dst_port, b => sat(uint(b))),
            Target::SrcV4 => $set!(src, b => v4_to_u128(uint(b) as u32)),
            Target::DstV4 => $set!(dst, b => v4_to_u128(uint(b) as u32)),
            Target::NextHopV4 => $set!(next_hop, b => v4_to_u128(uint(b) as u32)),
            Target::PostNatSrcV4 => $set!(post_nat_src, b => v4_to_u128(uint(b) as u32)),
            Target::PostNatDstV4 => $set!(post_nat_dst, b => v4_to_u128(uint(b) as u32)),
            Target::SrcV6 => $set!(src, b => v6(b)),
            Target::DstV6 => $set!(dst, b => v6(b)),
            Target::NextHopV6 => $set!(next_hop, b => v6(b)),
            Target::PostNatSrcV6 => $set!(post_nat_src, b => v6(b)),
            Target::PostNatDstV6 => $set!(post_nat_dst, b => v6(b)),
            Target::SrcMask => $set!(src_mask, b => sat(uint(b))),
            Target::DstMask => $set!(dst_mask, b => sat(uint(b))),
            Target::InputIf => $set!(input_if, b => sat(uint(b))),
            Target::OutputIf => $set!(output_if, b => sat(uint(b))),
            Target::SrcAs => $set!(src_as, b => sat(uint(b))),
            Target::DstAs => $set!(dst_as, b => sat(uint(b))),
            Target::IcmpType => $set!(icmp_type, b => sat(uint(b))),
            Target::Direction => $set!(direction, b => sat(uint(b))),
            Target::EndReason => $set!(end_reason, b => sat(uint(b))),
            Target::Vlan => $set!(vlan, b => sat(uint(b))),
            Target::MplsLabel => $set!(mpls_label, b => (uint(&b[..3]) >> 4) as u32),
            Target::PostNatSrcPort => $set!(post_nat_src_port, b => sat(uint(b))),
            Target::PostNatDstPort => $set!(post_nat_dst_port, b => sat(uint(b))),
            Target::Start => $set!(start, b => uint(b)),
            Target::End => $set!(end, b => uint(b)),
            Target::SamplingInterval => $set!(sampling_interval, b => uint(b)),
            Target::SamplerRandomInterval => $set!(random_interval, b => uint(b)),
            Target::SamplerId => $set!(sampler_id, b => uint(b)),
            Target::PacketInterval => $set!(packet_interval, b => uint(b)),
            Target::PacketSpace => $set!(packet_space, b => uint(b)),
        }
    };
}

impl Row {
    /// Decodes one field into the row.
    #[inline(always)]
    fn apply(&mut self, op: &Op, b: &[u8]) {
        if op.shared {
            let bit = column_bit(op.target);
            if self.written & bit != 0 && b.iter().all(|&x| x == 0) {
                return;
            }
            self.written |= bit;
        }
        macro_rules! one {
            ($field:ident, $b:ident => $e:expr) => {{
                let $b = b;
                self.$field = $e;
            }};
        }
        with_target!(op.target, one)
    }
}

/// Decodes field `f` of fixed-length records `recs` into `rows` (one row per record): the
/// target and length are matched once per field and chunk, not once per record.
#[inline(always)]
fn apply_column(rows: &mut [Row], recs: &[u8], rec_len: usize, f: &FixedOp) {
    let (off, len) = (f.offset, usize::from(f.op.len));
    if f.op.shared {
        let fields = recs.chunks_exact(rec_len).map(move |r| &r[off..off + len]);
        for (row, b) in rows.iter_mut().zip(fields) {
            row.apply(&f.op, b);
        }
        return;
    }
    match len {
        1 => fill::<1>(rows, recs, rec_len, off, f.op.target),
        2 => fill::<2>(rows, recs, rec_len, off, f.op.target),
        4 => fill::<4>(rows, recs, rec_len, off, f.op.target),
        8 => fill::<8>(rows, recs, rec_len, off, f.op.target),
        16 => fill::<16>(rows, recs, rec_len, off, f.op.target),
        _ => {
            let fields = recs.chunks_exact(rec_len).map(move |r| &r[off..off + len]);
            macro_rules! all {
                ($field:ident, $b:ident => $e:expr) => {
                    for (row, $b) in rows.iter_mut().zip(fields) {
                        row.$field = $e;
                    }
                };
            }
            with_target!(f.op.target, all)
        }
    }
}

/// [`apply_column`] for fields of `N` bytes (the length known at compile time).
#[inline(always)]
fn fill<const N: usize>(rows: &mut [Row], recs: &[u8], rec_len: usize, off: usize, t: Target) {
    let fields = recs
        .chunks_exact(rec_len)
        .map(move |r| -> &[u8] { &r[off..off + N] });
    macro_rules! all {
        ($field:ident, $b:ident => $e:expr) => {
            for (row, $b) in rows.iter_mut().zip(fields) {
                row.$field = $e;
            }
        };
    }
    with_target!(t, all)
}

/// ms since the Unix epoch of a 64-bit NTP timestamp (RFC 5905: seconds since 1900 and a
/// 32-bit binary fraction).
#[inline]
fn ntp_ms(v: u64) -> i64 {
    let secs = (v >> 32) as i64 - NTP_UNIX_OFFSET_S;
    secs * 1000 + (((v & 0xffff_ffff) * 1000) >> 32) as i64
}

/// `init_ms + stamp`, less as many 2³² ms uptime wraps as put it before the end of the export
/// second (`export_ms + 1000`): the uptime is an unsigned32 that wraps every 49.7 days, and a
/// flow cannot end after it was exported.
#[inline]
fn since_init(init_ms: i64, stamp: u32, export_ms: i64) -> i64 {
    const WRAP: i128 = 1 << 32;
    let t = i128::from(init_ms) + i128::from(stamp);
    let limit = i128::from(export_ms) + 1000;
    let t = if t >= limit {
        t - ((t - limit) / WRAP + 1) * WRAP
    } else {
        t
    };
    i64::try_from(t).unwrap_or(i64::MIN)
}

/// A flow time in ms since the Unix epoch, and whether it fell back to the export time.
#[inline]
fn time_ms(kind: TimeKind, raw: u64, version: Version, ctx: &DataContext<'_>) -> (i64, bool) {
    let ms = match kind {
        TimeKind::None => ctx.export_ms,
        TimeKind::Millis => i64::try_from(raw).unwrap_or(i64::MAX),
        TimeKind::Seconds => i64::try_from(raw).map_or(i64::MAX, |s| s.saturating_mul(1000)),
        TimeKind::NtpMicros => ntp_ms(raw & !0x7ff),
        TimeKind::NtpNanos => ntp_ms(raw),
        TimeKind::DeltaMicros => ctx.export_ms.saturating_sub((raw / 1000) as i64),
        TimeKind::SysUptime => {
            let stamp = raw as u32; // at most 4 bytes on the wire
            match (version, ctx.system_init_ms, ctx.sys_uptime_ms) {
                (Version::Ipfix, Some(init), _) | (Version::V9, Some(init), None) => {
                    since_init(init, stamp, ctx.export_ms)
                }
                (_, _, Some(up)) => ctx
                    .export_ms
                    .saturating_sub(i64::from(up.wrapping_sub(stamp))),
                (_, None, None) => return (ctx.export_ms, true),
            }
        }
    };
    (ms, false)
}

/// 1 in N from samplingPacketInterval / samplingPacketSpace: (interval + space) / interval,
/// rounded to the nearest integer.
#[inline]
fn packet_ratio(interval: u64, space: u64) -> u32 {
    let n = interval.saturating_add(space);
    sat((n.saturating_mul(2).saturating_add(interval)) / interval.saturating_mul(2))
}

/// Decodes the records of one data set into `cols`: one row per record in every column
/// (the columns stay aligned) and, when there was at least one record, one [`DatagramInfo`]
/// for them (version 9/10, `source_id` = domain, the header's sequence, export time and
/// uptime, `sampling_interval` = the first row's interval saturated to 16 bits; engine
/// fields and `sampling_mode` 0).
///
/// The whole set is checked first ([`validate_data`]): on error nothing is appended.
/// Allocation-free when `cols.has_room_for(max_records(plan, body.len()))`; otherwise the
/// columns grow.
///
/// Per row: flow start and end from the fields [`Plan::start_time`] / [`Plan::end_time`]
/// chose (uptime stamps: `export_ms − ((sys_uptime − stamp) mod 2³²)` in v9;
/// `system_init_ms + stamp − k·2³²` in IPFIX, k ≥ 0 the least that puts the time before
/// `export_ms + 1000`, since the uptime wraps as v9's does and the export time has whole
/// seconds only; with only one end present the other equals it; with none, the export time).
/// Sampling: the record's samplingInterval (34), else its
/// samplerRandomInterval (50) (both [`SamplingSource::DataRecord`]), else its
/// samplingPacketInterval/Space (305/306, [`SamplingSource::PacketInterval`]), else
/// `ctx.sampling(sampler id)`, else 0 / [`SamplingSource::None`]. Zero values count as
/// absent.
pub fn decode_data(
    plan: &Plan,
    ctx: &DataContext<'_>,
    body: &[u8],
    cols: &mut Columns,
) -> Result<DataOutcome, DecodeError> {
    let n = validate_data(plan, body)?;
    let mut out = DataOutcome::default();
    if n == 0 {
        out.padding = body.len();
        return Ok(out);
    }
    let first_flow = cols.len();
    let mut fin = Finisher::new(plan, ctx);
    // Records are decoded CHUNK at a time into rows on the stack, then each column is
    // extended once per chunk (one capacity check per column, tight copy loops).
    let mut rows = [Row::default(); CHUNK];
    let mut pos = 0;
    let mut count = 0usize;
    let fixed = plan.fixed_ops();
    let rec_len = plan.min_record_len();
    while count < n {
        let k = (n - count).min(CHUNK);
        let chunk = &mut rows[..k];
        chunk.fill(Row::default());
        if plan.is_variable() {
            for row in chunk.iter_mut() {
                // Validated above: cannot fail.
                pos = walk(plan.ops(), body, pos, |op, b| row.apply(op, b)).unwrap_or(body.len());
            }
        } else {
            let recs = &body[pos..pos + k * rec_len];
            for f in fixed {
                apply_column(chunk, recs, rec_len, f);
            }
            pos += k * rec_len;
        }
        for row in chunk.iter_mut() {
            fin.finish(row);
        }
        push_rows(cols, &rows[..k], plan.present());
        count += k;
    }
    out.records = n as u16; // n ≤ 65,531: the body is at most a set
    out.padding = body.len() - pos;
    out.time_fallback = fin.time_fallback;
    cols.datagrams.push(DatagramInfo {
        exporter: ctx.exporter,
        received_us: ctx.received_us,
        first_flow: first_flow as u32,
        count: out.records,
        version: plan.version().number(),
        source_id: ctx.domain,
        engine_type: 0,
        engine_id: 0,
        sampling_mode: 0,
        sampling_interval: sat(u64::from(rows[0].interval)),
        sys_uptime_ms: ctx.sys_uptime_ms.unwrap_or(0),
        export_ms: ctx.export_ms,
        sequence: ctx.sequence,
        held: false,
    });
    debug_assert!(cols.is_aligned());
    Ok(out)
}

/// Records decoded before their columns are extended.
const CHUNK: usize = 32;

/// Turns a row's raw time stamps and sampling fields into its flow times and interval.
struct Finisher<'c, 'a> {
    ctx: &'c DataContext<'a>,
    version: Version,
    start: TimeKind,
    end: TimeKind,
    lookup_once: Option<Option<(u32, SamplingSource)>>,
    last_lookup: Option<(u64, Option<(u32, SamplingSource)>)>,
    time_fallback: bool,
}

impl<'c, 'a> Finisher<'c, 'a> {
    fn new(plan: &Plan, ctx: &'c DataContext<'a>) -> Self {
        Finisher {
            ctx,
            version: plan.version(),
            start: plan.start_time(),
            end: plan.end_time(),
            lookup_once: (!plan.has_sampler_id()).then(|| (ctx.sampling)(None)),
            last_lookup: None,
            time_fallback: false,
        }
    }

    #[inline(always)]
    fn finish(&mut self, row: &mut Row) {
        let ctx = self.ctx;
        let ((s, sf), (e, ef)) = match (self.start, self.end) {
            (TimeKind::None, TimeKind::None) => ((ctx.export_ms, false), (ctx.export_ms, false)),
            (TimeKind::None, k) => {
                let e = time_ms(k, row.end, self.version, ctx);
                (e, e)
            }
            (k, TimeKind::None) => {
                let s = time_ms(k, row.start, self.version, ctx);
                (s, s)
            }
            (ks, ke) => (
                time_ms(ks, row.start, self.version, ctx),
                time_ms(ke, row.end, self.version, ctx),
            ),
        };
        self.time_fallback |= sf || ef;
        row.start_ms = s;
        row.end_ms = e;
        let (interval, source) = if row.sampling_interval > 0 {
            (sat(row.sampling_interval), SamplingSource::DataRecord)
        } else if row.random_interval > 0 {
            (sat(row.random_interval), SamplingSource::DataRecord)
        } else if row.packet_interval > 0 {
            (
                packet_ratio(row.packet_interval, row.packet_space),
                SamplingSource::PacketInterval,
            )
        } else {
            let found = match self.lookup_once {
                Some(once) => once,
                None => match self.last_lookup {
                    Some((id, found)) if id == row.sampler_id => found,
                    _ => {
                        let found = (ctx.sampling)(Some(row.sampler_id));
                        self.last_lookup = Some((row.sampler_id, found));
                        found
                    }
                },
            };
            found.unwrap_or((0, SamplingSource::None))
        };
        row.interval = interval;
        row.source = source as u8;
    }
}

/// Appends `rows` to every column.
#[inline(always)]
fn push_rows(c: &mut Columns, rows: &[Row], present: u32) {
    // The v9/IPFIX-only columns are filled lazily (v5 rows leave them short): catch up first.
    c.pad_extras();
    c.flow_start_ms.extend(rows.iter().map(|r| r.start_ms));
    c.flow_end_ms.extend(rows.iter().map(|r| r.end_ms));
    c.src_addr.extend(rows.iter().map(|r| r.src));
    c.dst_addr.extend(rows.iter().map(|r| r.dst));
    c.next_hop.extend(rows.iter().map(|r| r.next_hop));
    c.src_port.extend(rows.iter().map(|r| r.src_port));
    c.dst_port.extend(rows.iter().map(|r| r.dst_port));
    c.protocol.extend(rows.iter().map(|r| r.protocol));
    c.tcp_flags.extend(rows.iter().map(|r| r.tcp_flags));
    c.tos.extend(rows.iter().map(|r| r.tos));
    c.input_if.extend(rows.iter().map(|r| r.input_if));
    c.output_if.extend(rows.iter().map(|r| r.output_if));
    c.packets.extend(rows.iter().map(|r| r.packets));
    c.bytes.extend(rows.iter().map(|r| r.bytes));
    c.src_as.extend(rows.iter().map(|r| r.src_as));
    c.dst_as.extend(rows.iter().map(|r| r.dst_as));
    c.src_mask.extend(rows.iter().map(|r| r.src_mask));
    c.dst_mask.extend(rows.iter().map(|r| r.dst_mask));
    c.present.extend(std::iter::repeat_n(present, rows.len()));
    c.direction.extend(rows.iter().map(|r| r.direction));
    c.end_reason.extend(rows.iter().map(|r| r.end_reason));
    c.vlan.extend(rows.iter().map(|r| r.vlan));
    c.mpls_label.extend(rows.iter().map(|r| r.mpls_label));
    c.icmp_type.extend(rows.iter().map(|r| r.icmp_type));
    c.post_nat_src.extend(rows.iter().map(|r| r.post_nat_src));
    c.post_nat_dst.extend(rows.iter().map(|r| r.post_nat_dst));
    c.post_nat_src_port
        .extend(rows.iter().map(|r| r.post_nat_src_port));
    c.post_nat_dst_port
        .extend(rows.iter().map(|r| r.post_nat_dst_port));
    c.sampling_interval.extend(rows.iter().map(|r| r.interval));
    c.sampling_source.extend(rows.iter().map(|r| r.source));
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn uptime_since_init_wraps_before_the_export_second() {
        let (init, export) = (1_795_994_475_873, 1_795_994_477_000);
        assert_eq!(since_init(init, 1000, export), init + 1000);
        assert_eq!(
            since_init(init, 2126, export),
            1_795_994_477_999,
            "last ms of the second"
        );
        assert_eq!(since_init(init, 2127, export), init + 2127 - (1 << 32));
        // softflowd's file-reading stamps: one wrap back (fixtures/README.md).
        assert_eq!(since_init(init, 2_826_062_504, export), 1_794_525_571_081);
        assert_eq!(since_init(0, u32::MAX, 0), i64::from(u32::MAX) - (1 << 32));
    }

    #[test]
    fn ntp_and_ratio() {
        // 2000-01-01T00:00:00.5Z: 3,155,673,600 s after 1900, fraction one half.
        assert_eq!(
            ntp_ms((3_155_673_600u64 << 32) | 0x8000_0000),
            946_684_800_500
        );
        assert_eq!(packet_ratio(1, 0), 1);
        assert_eq!(packet_ratio(1, 99), 100);
        assert_eq!(packet_ratio(3, 7), 3); // 10/3 = 3.33
        assert_eq!(packet_ratio(2, 3), 3); // 5/2 = 2.5 rounds up
        assert_eq!(packet_ratio(u64::MAX, u64::MAX), 1);
    }
}
