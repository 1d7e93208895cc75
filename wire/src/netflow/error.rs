//! Why a NetFlow v9 / IPFIX message, set, template or record was rejected.

use std::fmt;

/// What is wrong with a template (the `problem` of [`DecodeError::BadTemplate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateProblem {
    /// A v9 template with field count 0, or an options template with no fields at all.
    NoFields,
    /// The field count says more field specifiers than the set holds.
    TooManyFields,
    /// A template id below 256 that is not an "all templates" withdrawal.
    BadId,
    /// Every field has length 0: records would be empty.
    EmptyRecord,
    /// The fixed part of a record is longer than any set can be (65,531 bytes).
    RecordTooLong,
    /// A stored template ([`super::Template::from_bytes`]) is not in the stored format.
    BadEncoding,
}

impl TemplateProblem {
    fn as_str(self) -> &'static str {
        match self {
            TemplateProblem::NoFields => "has no fields",
            TemplateProblem::TooManyFields => "declares more fields than the set holds",
            TemplateProblem::BadId => "has a reserved id (< 256)",
            TemplateProblem::EmptyRecord => "describes empty records",
            TemplateProblem::RecordTooLong => "describes records longer than a set",
            TemplateProblem::BadEncoding => "is not a stored template",
        }
    }
}

impl fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected v9 / IPFIX message, set, template or record.
///
/// `offset` is a byte offset: in the datagram for [`super::parse_header`] and [`super::sets`];
/// in the set body for the functions that take a set body ([`super::parse_templates`],
/// [`super::decode_data`], …), which [`DecodeError::shifted`] turns into a datagram offset.
/// [`super::Plan::new`] works on a parsed template and names the field by its index instead.
/// Each variant has its own [`DecodeError::reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the header (v9: 20 bytes, IPFIX: 16).
    #[error("message of {len} bytes is shorter than the {need}-byte header")]
    TooShort { len: usize, need: usize },
    /// Version (offset 0) is neither 9 nor 10.
    #[error("version {version} at offset 0 is neither 9 nor 10")]
    BadVersion { version: u16 },
    /// IPFIX message length (offset 2) differs from the datagram's length.
    #[error("IPFIX message length {length} at offset 2 differs from the datagram length {actual}")]
    LengthMismatch { length: u16, actual: usize },
    /// A set header is cut short (`length` 0), its length is below 4, or it runs past the end.
    #[error(
        "set at offset {offset}: length {length} (header cut short if 0) with {room} bytes left"
    )]
    BadSetLength {
        offset: usize,
        length: u16,
        room: usize,
    },
    /// A template record that cannot be used.
    #[error("template {template_id} at offset {offset} {problem}")]
    BadTemplate {
        offset: usize,
        template_id: u16,
        problem: TemplateProblem,
    },
    /// An options template's scope: v9 scope or option length not a multiple of 4, IPFIX scope
    /// field count 0 or above the field count.
    #[error("options template {template_id} at offset {offset}: bad scope ({scope} of {total})")]
    BadScope {
        offset: usize,
        template_id: u16,
        scope: u16,
        total: u16,
    },
    /// A field nfpg decodes has a length it cannot have (an IPv4 address not 4 bytes, a counter
    /// of 0 or more than 8 bytes); `field` is its index in the template.
    #[error("template {template_id} field #{field} (id {id}) has length {len}")]
    BadFieldLength {
        template_id: u16,
        field: u16,
        id: u16,
        len: u16,
    },
    /// A record's fixed-length fields run past the end of the set.
    #[error("record at offset {offset} needs {need} bytes, {room} left in the set")]
    TruncatedRecord {
        offset: usize,
        need: usize,
        room: usize,
    },
    /// A variable-length field (or its length prefix) runs past the end of the set.
    #[error(
        "variable-length field at offset {offset} of {len} bytes runs past the set ({room} left)"
    )]
    VarLenPastEnd {
        offset: usize,
        len: usize,
        room: usize,
    },
}

impl DecodeError {
    /// A stable snake_case name per variant, for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooShort { .. } => "too_short",
            DecodeError::BadVersion { .. } => "bad_version",
            DecodeError::LengthMismatch { .. } => "length_mismatch",
            DecodeError::BadSetLength { .. } => "bad_set_length",
            DecodeError::BadTemplate { .. } => "bad_template",
            DecodeError::BadScope { .. } => "bad_options_scope",
            DecodeError::BadFieldLength { .. } => "bad_field_length",
            DecodeError::TruncatedRecord { .. } => "truncated_record",
            DecodeError::VarLenPastEnd { .. } => "var_len_past_end",
        }
    }

    /// Every reason name [`DecodeError::reason`] can return.
    pub const REASONS: [&'static str; 9] = [
        "too_short",
        "bad_version",
        "length_mismatch",
        "bad_set_length",
        "bad_template",
        "bad_options_scope",
        "bad_field_length",
        "truncated_record",
        "var_len_past_end",
    ];

    /// The byte offset of the problem (see the type's docs for what it is relative to);
    /// `None` for errors about the whole message or about a parsed template's field.
    pub fn offset(&self) -> Option<usize> {
        match *self {
            DecodeError::TooShort { .. } | DecodeError::BadVersion { .. } => Some(0),
            DecodeError::LengthMismatch { .. } => Some(2),
            DecodeError::BadSetLength { offset, .. }
            | DecodeError::BadTemplate { offset, .. }
            | DecodeError::BadScope { offset, .. }
            | DecodeError::TruncatedRecord { offset, .. }
            | DecodeError::VarLenPastEnd { offset, .. } => Some(offset),
            DecodeError::BadFieldLength { .. } => None,
        }
    }

    /// The same error with its offset moved by `by` bytes (a set body's offset in the
    /// datagram, as [`super::sets`] yields it); errors without a set-relative offset are kept.
    #[must_use]
    pub fn shifted(self, by: usize) -> Self {
        let mut e = self;
        match &mut e {
            DecodeError::BadSetLength { offset, .. }
            | DecodeError::BadTemplate { offset, .. }
            | DecodeError::BadScope { offset, .. }
            | DecodeError::TruncatedRecord { offset, .. }
            | DecodeError::VarLenPastEnd { offset, .. } => *offset += by,
            DecodeError::TooShort { .. }
            | DecodeError::BadVersion { .. }
            | DecodeError::LengthMismatch { .. }
            | DecodeError::BadFieldLength { .. } => {}
        }
        e
    }

    /// The offending value, kept with a malformed sample (as `v5::DecodeError::detail`).
    pub fn detail(&self) -> u32 {
        let sat = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        match *self {
            DecodeError::TooShort { len, .. } => sat(len),
            DecodeError::BadVersion { version } => u32::from(version),
            DecodeError::LengthMismatch { length, .. } => u32::from(length),
            DecodeError::BadSetLength { length, .. } => u32::from(length),
            DecodeError::BadTemplate { template_id, .. }
            | DecodeError::BadScope { template_id, .. } => u32::from(template_id),
            DecodeError::BadFieldLength { len, .. } => u32::from(len),
            DecodeError::TruncatedRecord { need, .. } => sat(need),
            DecodeError::VarLenPastEnd { len, .. } => sat(len),
        }
    }
}
