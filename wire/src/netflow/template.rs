//! Template and options template records (RFC 3954 §5.2 and §6.1, RFC 7011 §3.4).

use super::error::{DecodeError, TemplateProblem};
use super::{be16, be32, Version, MIN_DATA_SET_ID, SET_HEADER_LEN};

/// A field length of 65535 marks an IPFIX variable-length field (RFC 7011 §7): each record
/// then carries the length, in 1 byte, or 255 and then 2 bytes.
pub const VARIABLE_LENGTH: u16 = 65535;

/// Most fields a template can have: 4 bytes per field specifier in a set of at most 65,535
/// bytes. Longer field counts are malformed.
pub const MAX_FIELDS: usize = (65535 - SET_HEADER_LEN - 4) / 4;

/// One field specifier of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldSpec {
    /// Information element id (IPFIX: without the enterprise bit 0x8000). In the scope part of
    /// a v9 options template, the scope type (1 System, 2 Interface, 3 Line Card, 4 Cache,
    /// 5 Template).
    pub id: u16,
    /// Private enterprise number (IPFIX enterprise-specific element); 0 = IANA.
    pub enterprise: u32,
    /// Length in bytes in each record; [`VARIABLE_LENGTH`] (IPFIX) = given per record.
    pub len: u16,
}

impl FieldSpec {
    /// An IANA field.
    pub const fn iana(id: u16, len: u16) -> Self {
        FieldSpec {
            id,
            enterprise: 0,
            len,
        }
    }

    /// Whether the length is given per record (only IPFIX has such fields; in v9 65535 is just
    /// a length no record can have).
    pub fn is_variable(&self, version: Version) -> bool {
        version == Version::Ipfix && self.len == VARIABLE_LENGTH
    }
}

/// A data template or options template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Template {
    /// Template id (≥ 256), the set id of the data sets it describes.
    pub id: u16,
    /// Options templates: how many of the first `fields` are scope fields (v9 may say 0);
    /// data templates: 0.
    pub scope_count: u16,
    /// The fields in record order.
    pub fields: Vec<FieldSpec>,
}

/// What one record of a template set or options template set says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateRecord {
    /// A new or replacing definition.
    Define(Template),
    /// IPFIX template withdrawal (field count 0) of one template id.
    Withdraw { id: u16 },
    /// IPFIX withdrawal of all data templates (template id 2 in a template set) or of all
    /// options templates (template id 3 in an options template set) of this observation domain.
    WithdrawAll,
}

/// Magic and format version of [`Template::to_bytes`].
const STORED_MAGIC: [u8; 2] = [b'T', 1];
const STORED_HEAD: usize = 8;
const STORED_FIELD: usize = 8;

impl Template {
    /// Whether this is an options template (it has scope fields or came from an options set).
    pub fn is_options(&self) -> bool {
        self.scope_count > 0
    }

    /// The stored form: `'T'`, format 1, id, scope count, field count (u16 each), then per
    /// field id (u16), length (u16), enterprise (u32), all big-endian. Stable: a later format
    /// gets a new format byte and [`Template::from_bytes`] keeps reading this one.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STORED_HEAD + STORED_FIELD * self.fields.len());
        out.extend_from_slice(&STORED_MAGIC);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.scope_count.to_be_bytes());
        let n = u16::try_from(self.fields.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        for f in self.fields.iter().take(usize::from(n)) {
            out.extend_from_slice(&f.id.to_be_bytes());
            out.extend_from_slice(&f.len.to_be_bytes());
            out.extend_from_slice(&f.enterprise.to_be_bytes());
        }
        out
    }

    /// Reads [`Template::to_bytes`]'s form back. Anything else (wrong magic or format, wrong
    /// length, no fields, more scope fields than fields) is [`TemplateProblem::BadEncoding`].
    pub fn from_bytes(b: &[u8]) -> Result<Template, DecodeError> {
        let bad = |template_id| DecodeError::BadTemplate {
            offset: 0,
            template_id,
            problem: TemplateProblem::BadEncoding,
        };
        if b.len() < STORED_HEAD || b[..2] != STORED_MAGIC {
            return Err(bad(0));
        }
        let id = be16(b, 2);
        let scope_count = be16(b, 4);
        let n = usize::from(be16(b, 6));
        if n == 0 || usize::from(scope_count) > n || b.len() != STORED_HEAD + STORED_FIELD * n {
            return Err(bad(id));
        }
        let fields = b[STORED_HEAD..]
            .chunks_exact(STORED_FIELD)
            .map(|c| FieldSpec {
                id: be16(c, 0),
                len: be16(c, 2),
                enterprise: be32(c, 4),
            })
            .collect();
        Ok(Template {
            id,
            scope_count,
            fields,
        })
    }
}

/// Whether the rest of a set is padding: too short for the smallest record header, or zeros
/// (some exporters pad with more than 3 bytes).
fn is_padding(rest: &[u8], min: usize) -> bool {
    rest.len() < min || rest.iter().all(|&b| b == 0)
}

/// Reads `count` field specifiers starting at `pos`; returns them and the position after.
fn parse_fields(
    version: Version,
    body: &[u8],
    mut pos: usize,
    count: usize,
    record_at: usize,
    template_id: u16,
) -> Result<(Vec<FieldSpec>, usize), DecodeError> {
    let too_many = DecodeError::BadTemplate {
        offset: record_at,
        template_id,
        problem: TemplateProblem::TooManyFields,
    };
    // Every specifier takes at least 4 bytes: check before allocating.
    if count > MAX_FIELDS || body.len() - pos < 4 * count {
        return Err(too_many);
    }
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        if body.len() - pos < 4 {
            return Err(too_many);
        }
        let raw = be16(body, pos);
        let len = be16(body, pos + 2);
        pos += 4;
        let (id, enterprise) = if version == Version::Ipfix && raw & 0x8000 != 0 {
            if body.len() - pos < 4 {
                return Err(too_many);
            }
            let e = be32(body, pos);
            pos += 4;
            (raw & 0x7fff, e)
        } else {
            (raw, 0)
        };
        fields.push(FieldSpec {
            id,
            enterprise,
            len,
        });
    }
    Ok((fields, pos))
}

/// Parses the body of a template set (v9 FlowSet id 0, IPFIX set id 2).
///
/// v9 records: template id, field count (≥ 1), then (type, length) per field. IPFIX records
/// add the enterprise bit (a 4-byte enterprise number follows the specifier) and withdrawals:
/// field count 0 withdraws the template, template id 2 with count 0 withdraws all data
/// templates. Bytes after the last record that are fewer than 4 or all zero are padding.
/// Template ids below 256 (other than that withdrawal) are [`TemplateProblem::BadId`]; on any
/// error the whole set is rejected.
pub fn parse_templates(version: Version, body: &[u8]) -> Result<Vec<TemplateRecord>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while !is_padding(&body[pos..], 4) {
        let at = pos;
        let id = be16(body, pos);
        let count = be16(body, pos + 2);
        pos += 4;
        let err = |problem| DecodeError::BadTemplate {
            offset: at,
            template_id: id,
            problem,
        };
        if count == 0 {
            match version {
                Version::V9 => return Err(err(TemplateProblem::NoFields)),
                Version::Ipfix if id == 2 => out.push(TemplateRecord::WithdrawAll),
                Version::Ipfix if id >= MIN_DATA_SET_ID => {
                    out.push(TemplateRecord::Withdraw { id })
                }
                Version::Ipfix => return Err(err(TemplateProblem::BadId)),
            }
            continue;
        }
        if id < MIN_DATA_SET_ID {
            return Err(err(TemplateProblem::BadId));
        }
        let (fields, next) = parse_fields(version, body, pos, usize::from(count), at, id)?;
        pos = next;
        out.push(TemplateRecord::Define(Template {
            id,
            scope_count: 0,
            fields,
        }));
    }
    Ok(out)
}

/// Parses the body of an options template set (v9 FlowSet id 1, IPFIX set id 3).
///
/// v9 (RFC 3954 §6.1): template id, option scope length and option length **in bytes** (each
/// a multiple of 4; together not 0), then the scope fields (scope type, length) and the option
/// fields (type, length). IPFIX (RFC 7011 §3.4.2.2): template id, field count, scope field
/// count (1..=field count), then the field specifiers, scope fields first; field count 0 is a
/// withdrawal (4 bytes, no scope count), template id 3 with count 0 withdraws all options
/// templates. Scope problems are [`DecodeError::BadScope`]. Padding as in [`parse_templates`].
pub fn parse_options_templates(
    version: Version,
    body: &[u8],
) -> Result<Vec<TemplateRecord>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0;
    let min_head = match version {
        Version::V9 => 6,
        Version::Ipfix => 4,
    };
    while !is_padding(&body[pos..], min_head) {
        let at = pos;
        let id = be16(body, pos);
        let err = |problem| DecodeError::BadTemplate {
            offset: at,
            template_id: id,
            problem,
        };
        let (scope_count, count, fields_at) = match version {
            Version::V9 => {
                let scope_len = be16(body, pos + 2);
                let opt_len = be16(body, pos + 4);
                if !scope_len.is_multiple_of(4) || !opt_len.is_multiple_of(4) {
                    return Err(DecodeError::BadScope {
                        offset: at,
                        template_id: id,
                        scope: scope_len,
                        total: opt_len,
                    });
                }
                if scope_len == 0 && opt_len == 0 {
                    return Err(err(TemplateProblem::NoFields));
                }
                (scope_len / 4, scope_len / 4 + opt_len / 4, pos + 6)
            }
            Version::Ipfix => {
                let count = be16(body, pos + 2);
                if count == 0 {
                    match id {
                        3 => out.push(TemplateRecord::WithdrawAll),
                        id if id >= MIN_DATA_SET_ID => out.push(TemplateRecord::Withdraw { id }),
                        _ => return Err(err(TemplateProblem::BadId)),
                    }
                    pos += 4;
                    continue;
                }
                if body.len() - pos < 6 {
                    return Err(err(TemplateProblem::TooManyFields));
                }
                let scope = be16(body, pos + 4);
                if scope == 0 || scope > count {
                    return Err(DecodeError::BadScope {
                        offset: at,
                        template_id: id,
                        scope,
                        total: count,
                    });
                }
                (scope, count, pos + 6)
            }
        };
        if id < MIN_DATA_SET_ID {
            return Err(err(TemplateProblem::BadId));
        }
        let (fields, next) = parse_fields(version, body, fields_at, usize::from(count), at, id)?;
        pos = next;
        out.push(TemplateRecord::Define(Template {
            id,
            scope_count,
            fields,
        }));
    }
    Ok(out)
}
