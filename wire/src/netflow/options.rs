//! Data sets of options templates: sampling parameters and the exporter's boot time.

use super::error::{DecodeError, TemplateProblem};
use super::template::Template;
use super::{be16, Version};

/// v9 scope types (RFC 3954 §6.1), the ids of a v9 options template's scope fields.
pub mod v9_scope {
    pub const SYSTEM: u16 = 1;
    pub const INTERFACE: u16 = 2;
    pub const LINE_CARD: u16 = 3;
    pub const CACHE: u16 = 4;
    pub const TEMPLATE: u16 = 5;
}

/// One scope field of an options data record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeField {
    /// v9: the scope type ([`v9_scope`]: 1 System, 2 Interface, 3 Line Card, 4 Cache,
    /// 5 Template). IPFIX: the information element, e.g. 143 meteringProcessId,
    /// 144 exportingProcessId, 149 observationDomainId, 10 ingressInterface, 302 selectorId,
    /// 48 samplerId.
    pub id: u16,
    /// IPFIX enterprise number (0 = IANA; always 0 in v9).
    pub enterprise: u32,
    /// The value as a big-endian unsigned number (an address in IPv6 column form when 16
    /// bytes; saturated when longer than 16 bytes; 0 for an empty variable-length field).
    pub value: u128,
}

/// What nfpg reads from one options data record. Fields the record lacks are `None`; other
/// option fields are skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptionsRecord {
    /// The scope fields, in template order.
    pub scope: Vec<ScopeField>,
    /// 48 samplerId (v9 FLOW_SAMPLER_ID) or 302 selectorId, as a scope field (IPFIX) or an
    /// option field: these parameters then belong to that sampler only.
    pub sampler_id: Option<u64>,
    /// 34 samplingInterval (v9 SAMPLING_INTERVAL): 1 in N.
    pub sampling_interval: Option<u32>,
    /// 35 samplingAlgorithm (v9 SAMPLING_ALGORITHM): 1 deterministic, 2 random.
    pub sampling_algorithm: Option<u8>,
    /// 49 samplerMode (v9 FLOW_SAMPLER_MODE).
    pub sampler_mode: Option<u8>,
    /// 50 samplerRandomInterval (v9 FLOW_SAMPLER_RANDOM_INTERVAL): 1 in N.
    pub sampler_random_interval: Option<u32>,
    /// 304 selectorAlgorithm.
    pub selector_algorithm: Option<u16>,
    /// 305 samplingPacketInterval: packets selected in a row.
    pub packet_interval: Option<u32>,
    /// 306 samplingPacketSpace: packets skipped in a row.
    pub packet_space: Option<u32>,
    /// 160 systemInitTimeMilliseconds: when the exporter booted, ms since the Unix epoch
    /// (what IPFIX flowStart/EndSysUpTime count from).
    pub system_init_ms: Option<i64>,
}

impl OptionsRecord {
    /// The sampling interval (1 in N) this record announces: samplingInterval, else
    /// samplerRandomInterval, else (packet interval + space) / packet interval rounded; zero
    /// values count as absent.
    pub fn interval(&self) -> Option<u32> {
        let nz = |v: Option<u32>| v.filter(|&v| v > 0);
        nz(self.sampling_interval)
            .or(nz(self.sampler_random_interval))
            .or_else(|| {
                let i = u64::from(nz(self.packet_interval)?);
                let n = i + u64::from(self.packet_space.unwrap_or(0));
                Some(u32::try_from((2 * n + i) / (2 * i)).unwrap_or(u32::MAX))
            })
    }

    /// Whether the record says anything about sampling.
    pub fn has_sampling(&self) -> bool {
        self.interval().is_some()
    }
}

fn uint(b: &[u8]) -> Option<u64> {
    (b.len() <= 8).then(|| b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
}

fn sat<T: TryFrom<u64>>(v: Option<u64>, max: T) -> Option<T> {
    v.map(|v| T::try_from(v).unwrap_or(max))
}

/// Decodes the data set `body` of options template `t` (RFC 3954 §6.2, RFC 7011 §3.4.2.2):
/// one [`OptionsRecord`] per record; bytes fewer than the shortest record at the end are
/// padding. A template with records of 0 bytes is [`TemplateProblem::EmptyRecord`]; a record
/// running past the set is [`DecodeError::TruncatedRecord`] or
/// [`DecodeError::VarLenPastEnd`] (offsets in `body`). Not for the hot path: it allocates.
pub fn decode_options(
    t: &Template,
    version: Version,
    body: &[u8],
) -> Result<Vec<OptionsRecord>, DecodeError> {
    let min_len: usize = t
        .fields
        .iter()
        .map(|f| {
            if f.is_variable(version) {
                1
            } else {
                usize::from(f.len)
            }
        })
        .sum();
    if min_len == 0 {
        return Err(DecodeError::BadTemplate {
            offset: 0,
            template_id: t.id,
            problem: TemplateProblem::EmptyRecord,
        });
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while body.len() - pos >= min_len {
        let start = pos;
        let mut rec = OptionsRecord::default();
        for (i, f) in t.fields.iter().enumerate() {
            let room = body.len() - pos;
            let len = if f.is_variable(version) {
                match body.get(pos).copied() {
                    None => {
                        return Err(DecodeError::VarLenPastEnd {
                            offset: pos,
                            len: 1,
                            room,
                        })
                    }
                    Some(255) if room < 3 => {
                        return Err(DecodeError::VarLenPastEnd {
                            offset: pos,
                            len: 3,
                            room,
                        })
                    }
                    Some(255) => {
                        pos += 3;
                        usize::from(be16(body, pos - 2))
                    }
                    Some(l) => {
                        pos += 1;
                        usize::from(l)
                    }
                }
            } else {
                usize::from(f.len)
            };
            if body.len() - pos < len {
                return Err(if f.is_variable(version) {
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
            let b = &body[pos..pos + len];
            pos += len;
            let scope = i < usize::from(t.scope_count);
            if scope {
                let value = if b.len() > 16 && b[..b.len() - 16].iter().any(|&x| x != 0) {
                    u128::MAX
                } else {
                    b.iter().fold(0u128, |a, &x| (a << 8) | u128::from(x))
                };
                rec.scope.push(ScopeField {
                    id: f.id,
                    enterprise: f.enterprise,
                    value,
                });
                if version == Version::V9 || f.enterprise != 0 {
                    continue;
                }
            } else if f.enterprise != 0 || f.is_variable(version) {
                continue;
            }
            let v = uint(b);
            match f.id {
                48 | 302 if v.is_some() => rec.sampler_id = v,
                34 if !scope => rec.sampling_interval = sat(v, u32::MAX),
                35 if !scope => rec.sampling_algorithm = sat(v, u8::MAX),
                49 if !scope => rec.sampler_mode = sat(v, u8::MAX),
                50 if !scope => rec.sampler_random_interval = sat(v, u32::MAX),
                304 if !scope => rec.selector_algorithm = sat(v, u16::MAX),
                305 if !scope => rec.packet_interval = sat(v, u32::MAX),
                306 if !scope => rec.packet_space = sat(v, u32::MAX),
                160 if !scope => rec.system_init_ms = sat(v, i64::MAX),
                _ => {}
            }
        }
        out.push(rec);
        if pos == start {
            break; // unreachable: min_len > 0
        }
    }
    Ok(out)
}
