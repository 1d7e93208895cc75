//! Why a datagram was not decoded: one list of reasons for the whole pipeline.
//!
//! The decoders' errors ([`nfpg_wire::v5::DecodeError`], [`nfpg_wire::netflow::DecodeError`])
//! map onto these; `Truncated` comes from the receive path (the kernel cut a datagram larger
//! than the buffer) before any decoder sees it, and `TooManyRecords` from the decode stage. The discriminant indexes the per-reason counters, and [`Reason::as_str`] is the
//! name used everywhere else (statistics, metrics labels, the `malformed_datagrams` table).

use nfpg_wire::netflow::DecodeError as NfError;
use nfpg_wire::v5::DecodeError;

/// Why a datagram was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// Shorter than its version's header.
    TooShort = 0,
    /// Version field is not 5, 9 or 10.
    BadVersion = 1,
    /// v5: count is 0 or above 30.
    BadCount = 2,
    /// v5: length is not 24 + 48·count.
    BadLength = 3,
    /// Larger than the receive buffer; the kernel cut it.
    Truncated = 4,
    /// IPFIX: the message length differs from the datagram's.
    LengthMismatch = 5,
    /// v9/IPFIX: a set shorter than its header or running past the end.
    BadSetLength = 6,
    /// v9/IPFIX: a template that cannot describe records.
    BadTemplate = 7,
    /// v9/IPFIX: an options template whose scope is impossible.
    BadOptionsScope = 8,
    /// v9/IPFIX: a field nfpg decodes with a length it cannot have.
    BadFieldLength = 9,
    /// v9/IPFIX: a record runs past the end of its set.
    TruncatedRecord = 10,
    /// IPFIX: a variable-length field runs past the end of its set.
    VarLenPastEnd = 11,
    /// v9/IPFIX: more records in one datagram than a whole batch holds.
    TooManyRecords = 12,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::TooShort,
        Reason::BadVersion,
        Reason::BadCount,
        Reason::BadLength,
        Reason::Truncated,
        Reason::LengthMismatch,
        Reason::BadSetLength,
        Reason::BadTemplate,
        Reason::BadOptionsScope,
        Reason::BadFieldLength,
        Reason::TruncatedRecord,
        Reason::VarLenPastEnd,
        Reason::TooManyRecords,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooShort => "too_short",
            Reason::BadVersion => "bad_version",
            Reason::BadCount => "bad_count",
            Reason::BadLength => "bad_length",
            Reason::Truncated => "truncated",
            Reason::LengthMismatch => "length_mismatch",
            Reason::BadSetLength => "bad_set_length",
            Reason::BadTemplate => "bad_template",
            Reason::BadOptionsScope => "bad_options_scope",
            Reason::BadFieldLength => "bad_field_length",
            Reason::TruncatedRecord => "truncated_record",
            Reason::VarLenPastEnd => "var_len_past_end",
            Reason::TooManyRecords => "too_many_records",
        }
    }
}

impl From<&NfError> for Reason {
    fn from(e: &NfError) -> Self {
        match e {
            NfError::TooShort { .. } => Reason::TooShort,
            NfError::BadVersion { .. } => Reason::BadVersion,
            NfError::LengthMismatch { .. } => Reason::LengthMismatch,
            NfError::BadSetLength { .. } => Reason::BadSetLength,
            NfError::BadTemplate { .. } => Reason::BadTemplate,
            NfError::BadScope { .. } => Reason::BadOptionsScope,
            NfError::BadFieldLength { .. } => Reason::BadFieldLength,
            NfError::TruncatedRecord { .. } => Reason::TruncatedRecord,
            NfError::VarLenPastEnd { .. } => Reason::VarLenPastEnd,
        }
    }
}

impl From<&DecodeError> for Reason {
    fn from(e: &DecodeError) -> Self {
        match e {
            DecodeError::TooShort { .. } => Reason::TooShort,
            DecodeError::BadVersion { .. } => Reason::BadVersion,
            DecodeError::BadCount { .. } => Reason::BadCount,
            DecodeError::BadLength { .. } => Reason::BadLength,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_indexes_match() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::COUNT);
        // Every v9/IPFIX reason has the wire crate's name.
        for n in NfError::REASONS {
            assert!(names.contains(&n), "{n}");
        }
    }
}
