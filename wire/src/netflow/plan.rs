//! A template compiled for decoding: one [`Op`] per field saying which column it fills.

use super::error::{DecodeError, TemplateProblem};
use super::template::{Template, MAX_FIELDS};
use super::Version;
use crate::columns::present;

/// Where one field of a data record goes. Integer targets read a big-endian unsigned value of
/// the field's length (1..=8 bytes, RFC 7011 reduced-size encoding) and saturate it to the
/// column's width; address targets need exactly 4 (IPv4) or 16 (IPv6) bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Target {
    /// Not decoded: unknown, enterprise-specific, variable-length, scope, or redundant (a
    /// total count when the delta count is there, a second time field for the same end).
    Skip,
    /// 1 octetDeltaCount (or 85 octetTotalCount when 1 is absent) → `bytes`.
    Bytes,
    /// 2 packetDeltaCount (or 86 packetTotalCount when 2 is absent) → `packets`.
    Packets,
    /// 4 protocolIdentifier.
    Protocol,
    /// 5 ipClassOfService.
    Tos,
    /// 6 tcpControlBits: the low 8 bits (IPFIX sends 2 bytes with the ECN-nonce bits).
    TcpFlags,
    /// 7 sourceTransportPort.
    SrcPort,
    /// 11 destinationTransportPort.
    DstPort,
    /// 8 sourceIPv4Address.
    SrcV4,
    /// 12 destinationIPv4Address.
    DstV4,
    /// 27 sourceIPv6Address.
    SrcV6,
    /// 28 destinationIPv6Address.
    DstV6,
    /// 15 ipNextHopIPv4Address (or 18 bgpNextHopIPv4Address when neither 15 nor 62 is there).
    NextHopV4,
    /// 62 ipNextHopIPv6Address (or 63 bgpNextHopIPv6Address when neither 15 nor 62 is there).
    NextHopV6,
    /// 9 sourceIPv4PrefixLength, 29 sourceIPv6PrefixLength.
    SrcMask,
    /// 13 destinationIPv4PrefixLength, 30 destinationIPv6PrefixLength.
    DstMask,
    /// 10 ingressInterface.
    InputIf,
    /// 14 egressInterface.
    OutputIf,
    /// 16 bgpSourceAsNumber.
    SrcAs,
    /// 17 bgpDestinationAsNumber.
    DstAs,
    /// 32 icmpTypeCodeIPv4, 139 icmpTypeCodeIPv6 (type × 256 + code).
    IcmpType,
    /// 61 flowDirection.
    Direction,
    /// 136 flowEndReason.
    EndReason,
    /// 58 vlanId, 243 dot1qVlanId.
    Vlan,
    /// 70 mplsTopLabelStackSection: the first 3 bytes, label = value >> 4.
    MplsLabel,
    /// 225 postNATSourceIPv4Address.
    PostNatSrcV4,
    /// 226 postNATDestinationIPv4Address.
    PostNatDstV4,
    /// 281 postNATSourceIPv6Address.
    PostNatSrcV6,
    /// 282 postNATDestinationIPv6Address.
    PostNatDstV6,
    /// 227 postNAPTSourceTransportPort.
    PostNatSrcPort,
    /// 228 postNAPTDestinationTransportPort.
    PostNatDstPort,
    /// The field chosen for the flow start ([`Plan::start_time`] says which kind).
    Start,
    /// The field chosen for the flow end ([`Plan::end_time`]).
    End,
    /// 34 samplingInterval (v9 SAMPLING_INTERVAL).
    SamplingInterval,
    /// 50 samplerRandomInterval (v9 FLOW_SAMPLER_RANDOM_INTERVAL).
    SamplerRandomInterval,
    /// 48 samplerId (v9 FLOW_SAMPLER_ID), 302 selectorId.
    SamplerId,
    /// 305 samplingPacketInterval.
    PacketInterval,
    /// 306 samplingPacketSpace.
    PacketSpace,
}

/// How a flow time field is encoded, in order of preference when a template has several for
/// the same end of the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeKind {
    /// No field: the time is the export time.
    None,
    /// 152/153 flowStart/EndMilliseconds: ms since the Unix epoch.
    Millis,
    /// 154/155 flowStart/EndMicroseconds: NTP timestamp (RFC 7011 §6.1.9; the low 11 bits of
    /// the fraction are ignored).
    NtpMicros,
    /// 156/157 flowStart/EndNanoseconds: NTP timestamp.
    NtpNanos,
    /// 150/151 flowStart/EndSeconds: s since the Unix epoch.
    Seconds,
    /// 158/159 flowStart/EndDeltaMicroseconds: µs before the export time.
    DeltaMicros,
    /// 22/21 flowStart/EndSysUpTime (v9 FIRST/LAST_SWITCHED): ms of exporter uptime (v9:
    /// against the header's sysUpTime; IPFIX: since systemInitTimeMilliseconds).
    SysUptime,
}

const START_FIELDS: [(u16, TimeKind); 6] = [
    (152, TimeKind::Millis),
    (154, TimeKind::NtpMicros),
    (156, TimeKind::NtpNanos),
    (150, TimeKind::Seconds),
    (158, TimeKind::DeltaMicros),
    (22, TimeKind::SysUptime),
];
const END_FIELDS: [(u16, TimeKind); 6] = [
    (153, TimeKind::Millis),
    (155, TimeKind::NtpMicros),
    (157, TimeKind::NtpNanos),
    (151, TimeKind::Seconds),
    (159, TimeKind::DeltaMicros),
    (21, TimeKind::SysUptime),
];

/// One field of the record layout: its target and length ([`super::VARIABLE_LENGTH`] for an
/// IPFIX variable-length field, always skipped). Consecutive fixed-length skipped fields are
/// merged into one op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// Where the field goes.
    pub target: Target,
    /// Bytes per record (merged skips: their sum).
    pub len: u16,
    /// Whether the length is given per record (IPFIX variable-length field).
    pub variable: bool,
    /// Whether another field of the template fills the same column (then a zero value does
    /// not overwrite a non-zero one).
    pub shared: bool,
}

/// A decoded field of a template without variable-length fields, at a fixed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FixedOp {
    pub(crate) op: Op,
    pub(crate) offset: usize,
}

/// The column a target fills, as a bit: IPv4 and IPv6 forms of one column share it.
#[inline(always)]
pub(crate) fn column_bit(t: Target) -> u64 {
    let t = match t {
        Target::SrcV6 => Target::SrcV4,
        Target::DstV6 => Target::DstV4,
        Target::NextHopV6 => Target::NextHopV4,
        Target::PostNatSrcV6 => Target::PostNatSrcV4,
        Target::PostNatDstV6 => Target::PostNatDstV4,
        t => t,
    };
    1u64 << (t as u8)
}

/// A template compiled for [`super::decode_data`]: built once per template definition, kept
/// by the collector next to the template.
///
/// Required columns a template lacks get 0 in every row: addresses `::`, protocol, packets
/// and bytes 0; flow times the export time ([`TimeKind::None`]). Optional columns the
/// template has set their [`crate::columns::present`] bit in every row ([`Plan::present`]);
/// the others stay NULL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    template_id: u16,
    version: Version,
    ops: Vec<Op>,
    /// The decoded fields with their offsets, when records have a fixed length.
    fixed: Vec<FixedOp>,
    min_len: usize,
    variable: bool,
    present: u32,
    ignored: u16,
    start: TimeKind,
    end: TimeKind,
    record_sampling: bool,
    sampler_id: bool,
}

/// The target of an IANA field id, before redundancy is resolved.
fn iana_target(id: u16) -> Option<Target> {
    use Target::*;
    Some(match id {
        1 | 85 => Bytes,
        2 | 86 => Packets,
        4 => Protocol,
        5 => Tos,
        6 => TcpFlags,
        7 => SrcPort,
        11 => DstPort,
        8 => SrcV4,
        12 => DstV4,
        27 => SrcV6,
        28 => DstV6,
        15 | 18 => NextHopV4,
        62 | 63 => NextHopV6,
        9 | 29 => SrcMask,
        13 | 30 => DstMask,
        10 => InputIf,
        14 => OutputIf,
        16 => SrcAs,
        17 => DstAs,
        32 | 139 => IcmpType,
        61 => Direction,
        136 => EndReason,
        58 | 243 => Vlan,
        70 => MplsLabel,
        225 => PostNatSrcV4,
        226 => PostNatDstV4,
        281 => PostNatSrcV6,
        282 => PostNatDstV6,
        227 => PostNatSrcPort,
        228 => PostNatDstPort,
        21 | 22 | 150..=159 => Start, // resolved to Start/End/Skip by the time choice
        34 => SamplingInterval,
        50 => SamplerRandomInterval,
        48 | 302 => SamplerId,
        305 => PacketInterval,
        306 => PacketSpace,
        _ => return None,
    })
}

/// Whether `len` is a length the target can be decoded from.
fn length_ok(t: Target, len: u16) -> bool {
    use Target::*;
    match t {
        SrcV4 | DstV4 | NextHopV4 | PostNatSrcV4 | PostNatDstV4 => len == 4,
        SrcV6 | DstV6 | NextHopV6 | PostNatSrcV6 | PostNatDstV6 => len == 16,
        MplsLabel => (3..=8).contains(&len),
        Skip => true,
        _ => (1..=8).contains(&len),
    }
}

fn present_bit(t: Target) -> u32 {
    use Target::*;
    match t {
        NextHopV4 | NextHopV6 => present::NEXT_HOP,
        SrcPort => present::SRC_PORT,
        DstPort => present::DST_PORT,
        TcpFlags => present::TCP_FLAGS,
        Tos => present::TOS,
        InputIf => present::INPUT_IF,
        OutputIf => present::OUTPUT_IF,
        SrcAs => present::SRC_AS,
        DstAs => present::DST_AS,
        SrcMask => present::SRC_MASK,
        DstMask => present::DST_MASK,
        Direction => present::DIRECTION,
        EndReason => present::END_REASON,
        Vlan => present::VLAN,
        MplsLabel => present::MPLS_LABEL,
        IcmpType => present::ICMP_TYPE,
        PostNatSrcV4 | PostNatSrcV6 => present::POST_NAT_SRC_ADDR,
        PostNatDstV4 | PostNatDstV6 => present::POST_NAT_DST_ADDR,
        PostNatSrcPort => present::POST_NAT_SRC_PORT,
        PostNatDstPort => present::POST_NAT_DST_PORT,
        _ => 0,
    }
}

impl Plan {
    /// Compiles a data template.
    ///
    /// Fields: the IANA elements listed on [`Target`]; enterprise-specific, unknown and
    /// variable-length fields are skipped and counted ([`Plan::ignored`]); so are the scope
    /// fields of an options template (whose data goes to [`super::decode_options`]).
    /// Redundant fields are skipped without being counted: 85/86 when 1/2 are there, 18/63 when
    /// 15 or 62 is, and all but one time field per end of the flow (the first kind in
    /// [`TimeKind`]'s order). When two fields fill one column (8 and 27, 32 and 139, 58 and
    /// 243, 48 and 302), a record's non-zero value wins over a zero one.
    ///
    /// Rejects: no fields or more than [`MAX_FIELDS`], records of 0 bytes or longer than a set
    /// ([`DecodeError::BadTemplate`]), and a decoded field of impossible length
    /// ([`DecodeError::BadFieldLength`]: an address not 4/16 bytes, an integer of 0 or more
    /// than 8 bytes, an MPLS label stack entry under 3 bytes).
    pub fn new(t: &Template, version: Version) -> Result<Plan, DecodeError> {
        let bad = |problem| DecodeError::BadTemplate {
            offset: 0,
            template_id: t.id,
            problem,
        };
        if t.fields.is_empty() {
            return Err(bad(TemplateProblem::NoFields));
        }
        if t.fields.len() > MAX_FIELDS {
            return Err(bad(TemplateProblem::TooManyFields));
        }
        let scope = usize::from(t.scope_count);
        let has = |id: u16| {
            t.fields.iter().enumerate().any(|(i, f)| {
                i >= scope && f.enterprise == 0 && f.id == id && !f.is_variable(version)
            })
        };
        let pick = |table: &[(u16, TimeKind)]| {
            table
                .iter()
                .find(|(id, _)| has(*id))
                .map_or((0, TimeKind::None), |&(id, k)| (id, k))
        };
        let (start_id, start) = pick(&START_FIELDS);
        let (end_id, end) = pick(&END_FIELDS);
        let (has_bytes, has_packets) = (has(1), has(2));
        let has_next_hop = has(15) || has(62);

        let mut ops: Vec<Op> = Vec::with_capacity(t.fields.len());
        let mut min_len = 0usize;
        let mut variable = false;
        let mut present = 0u32;
        let mut ignored = 0u16;
        let (mut record_sampling, mut sampler_id) = (false, false);
        for (i, f) in t.fields.iter().enumerate() {
            let var = f.is_variable(version);
            let mapped = if i < scope || f.enterprise != 0 || var {
                None
            } else {
                iana_target(f.id)
            };
            let target = match (mapped, f.id) {
                (None, _) => {
                    ignored = ignored.saturating_add(1);
                    Target::Skip
                }
                (Some(Target::Start), id) if id == start_id => Target::Start,
                (Some(Target::Start), id) if id == end_id => Target::End,
                (Some(Target::Start), _) => Target::Skip,
                (Some(_), 85) if has_bytes => Target::Skip,
                (Some(_), 86) if has_packets => Target::Skip,
                (Some(_), 18 | 63) if has_next_hop => Target::Skip,
                (Some(t), _) => t,
            };
            if !length_ok(target, f.len) {
                return Err(DecodeError::BadFieldLength {
                    template_id: t.id,
                    field: i as u16, // i < MAX_FIELDS
                    id: f.id,
                    len: f.len,
                });
            }
            present |= present_bit(target);
            match target {
                Target::SamplingInterval
                | Target::SamplerRandomInterval
                | Target::PacketInterval => record_sampling = true,
                Target::SamplerId => sampler_id = true,
                _ => {}
            }
            if var {
                variable = true;
                min_len += 1;
            } else {
                min_len += usize::from(f.len);
            }
            match ops.last_mut() {
                Some(last)
                    if target == Target::Skip
                        && !var
                        && last.target == Target::Skip
                        && !last.variable
                        && usize::from(last.len) + usize::from(f.len)
                            <= usize::from(u16::MAX - 1) =>
                {
                    last.len += f.len;
                }
                _ => ops.push(Op {
                    target,
                    len: f.len,
                    variable: var,
                    shared: false,
                }),
            }
        }
        if min_len == 0 {
            return Err(bad(TemplateProblem::EmptyRecord));
        }
        if min_len > usize::from(u16::MAX) - super::SET_HEADER_LEN {
            return Err(bad(TemplateProblem::RecordTooLong));
        }
        let mut seen = 0u64;
        let mut twice = 0u64;
        for op in ops.iter().filter(|o| o.target != Target::Skip) {
            let bit = column_bit(op.target);
            twice |= seen & bit;
            seen |= bit;
        }
        for op in &mut ops {
            op.shared = op.target != Target::Skip && twice & column_bit(op.target) != 0;
        }
        let mut fixed = Vec::new();
        if !variable {
            let mut offset = 0;
            for op in &ops {
                if op.target != Target::Skip {
                    fixed.push(FixedOp { op: *op, offset });
                }
                offset += usize::from(op.len);
            }
        }
        Ok(Plan {
            template_id: t.id,
            version,
            ops,
            fixed,
            min_len,
            variable,
            present,
            ignored,
            start,
            end,
            record_sampling,
            sampler_id,
        })
    }

    /// The template's id.
    pub fn template_id(&self) -> u16 {
        self.template_id
    }

    /// The format the template came in (variable-length fields exist in IPFIX only).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The record layout.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub(crate) fn fixed_ops(&self) -> &[FixedOp] {
        &self.fixed
    }

    /// Bytes of the shortest record (the record length when [`Plan::is_variable`] is false;
    /// variable-length fields count 1). Fewer bytes left at the end of a set are padding.
    pub fn min_record_len(&self) -> usize {
        self.min_len
    }

    /// Whether records have variable-length fields (so their length varies).
    pub fn is_variable(&self) -> bool {
        self.variable
    }

    /// The [`crate::columns::present`] bits every row of this template gets.
    pub fn present(&self) -> u32 {
        self.present
    }

    /// Fields of the template nfpg does not decode (unknown, enterprise-specific,
    /// variable-length, options scope); redundant fields are not counted.
    pub fn ignored(&self) -> u16 {
        self.ignored
    }

    /// Which field the flow start comes from.
    pub fn start_time(&self) -> TimeKind {
        self.start
    }

    /// Which field the flow end comes from.
    pub fn end_time(&self) -> TimeKind {
        self.end
    }

    /// Whether records carry their own sampling interval (34, 50 or 305/306).
    pub fn has_record_sampling(&self) -> bool {
        self.record_sampling
    }

    /// Whether records carry a sampler / selector id (48 or 302).
    pub fn has_sampler_id(&self) -> bool {
        self.sampler_id
    }
}
