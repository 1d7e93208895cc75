//! Why a datagram was not decoded: one list of reasons for the whole pipeline.
//!
//! The decoders' errors ([`nfpg_wire::v5::DecodeError`]) map onto these; `Truncated` comes from
//! the receive path (the kernel cut a datagram larger than the buffer) before any decoder
//! sees it. The discriminant indexes the per-reason counters, and [`Reason::as_str`] is the
//! name used everywhere else (statistics, metrics labels, the `malformed_datagrams` table).

use nfpg_wire::v5::DecodeError;

/// Why a datagram was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// Shorter than the 24-byte header.
    TooShort = 0,
    /// Version field is not 5 (v9 and IPFIX are not decoded yet).
    BadVersion = 1,
    /// Count is 0 or above 30.
    BadCount = 2,
    /// Length is not 24 + 48·count.
    BadLength = 3,
    /// Larger than the receive buffer; the kernel cut it.
    Truncated = 4,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::TooShort,
        Reason::BadVersion,
        Reason::BadCount,
        Reason::BadLength,
        Reason::Truncated,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooShort => "too_short",
            Reason::BadVersion => "bad_version",
            Reason::BadCount => "bad_count",
            Reason::BadLength => "bad_length",
            Reason::Truncated => "truncated",
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
        names.dedup();
        assert_eq!(names.len(), Reason::COUNT);
    }
}
