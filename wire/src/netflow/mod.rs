//! NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) decoding: pure building blocks for a collector
//! that keeps the template state itself.
//!
//! The two formats share one shape — a header, then sets (v9 "FlowSets"), each a 4-byte set
//! header (id, length including the header) and a body — so one module serves both, told
//! apart by [`Version`]. What a collector does with a datagram:
//!
//! 1. [`parse_header`] checks the header and returns it with the sets' bytes.
//! 2. [`sets`] walks the sets: [`Set::Templates`] and [`Set::OptionsTemplates`] go to
//!    [`parse_templates`] / [`parse_options_templates`], which return definitions and
//!    withdrawals ([`TemplateRecord`]); [`Set::Data`] names the template its records follow.
//! 3. A template is compiled once into a [`Plan`] (which column each field fills and how);
//!    [`decode_data`] appends a data set's records to [`crate::columns::Columns`] with it.
//!    Data sets of options templates go to [`decode_options`] instead, for sampling
//!    ([`OptionsRecord`]) and the exporter's boot time (IPFIX `systemInitTimeMilliseconds`).
//!
//! Templates, which exporter and observation domain they belong to, data sets that arrive
//! before their template and the sampling state live in the collector: nothing here keeps
//! state between calls. [`Template::to_bytes`] / [`Template::from_bytes`] give templates a
//! stable stored form.
//!
//! Offsets in [`DecodeError`]s count bytes from the start of the datagram for the header and
//! the set walk, and from the start of the set body for everything that takes a set body
//! (turn them into datagram offsets with [`DecodeError::shifted`] and the offset [`sets`]
//! yields with each set).
//!
//! [`encode`] builds v9 and IPFIX datagrams for the tests and the load generator; it shares
//! no code with the decoder.
#![forbid(unsafe_code)]

mod data;
pub mod encode;
mod error;
mod options;
mod plan;
mod template;

#[cfg(test)]
mod tests;

pub use data::{decode_data, max_records, no_sampling, validate_data, DataContext, DataOutcome};
pub use error::{DecodeError, TemplateProblem};
pub use options::{decode_options, v9_scope, OptionsRecord, ScopeField};
pub use plan::{Op, Plan, Target, TimeKind};
pub use template::{
    parse_options_templates, parse_templates, FieldSpec, Template, TemplateRecord, MAX_FIELDS,
    VARIABLE_LENGTH,
};

/// Length of the NetFlow v9 header.
pub const V9_HEADER_LEN: usize = 20;
/// Length of the IPFIX message header.
pub const IPFIX_HEADER_LEN: usize = 16;
/// Length of a set header (id, length).
pub const SET_HEADER_LEN: usize = 4;
/// Template ids below this are set ids or reserved; data sets have ids from 256.
pub const MIN_DATA_SET_ID: u16 = 256;

/// Which of the two formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// NetFlow v9, RFC 3954 (version field 9).
    V9,
    /// IPFIX, RFC 7011 (version field 10).
    Ipfix,
}

impl Version {
    /// The header's version number: 9 or 10.
    pub fn number(self) -> u8 {
        match self {
            Version::V9 => 9,
            Version::Ipfix => 10,
        }
    }

    /// The header length: 20 (v9) or 16 (IPFIX).
    pub fn header_len(self) -> usize {
        match self {
            Version::V9 => V9_HEADER_LEN,
            Version::Ipfix => IPFIX_HEADER_LEN,
        }
    }
}

/// A v9 or IPFIX header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// 9 or 10.
    pub version: Version,
    /// v9: the records (template, options template and data records together) the exporter
    /// says the datagram holds; exporters disagree on what they count, so it is not checked.
    /// IPFIX: 0.
    pub count: u16,
    /// IPFIX: the message length (equal to the datagram's, checked). v9: the datagram's
    /// length (at most 65,535).
    pub length: u16,
    /// v9: sysUpTime, ms since the exporter booted. IPFIX has no uptime in its header.
    pub sys_uptime_ms: Option<u32>,
    /// Export time, seconds since the Unix epoch.
    pub export_secs: u32,
    /// v9: datagrams sent by this source id; IPFIX: data records sent in this observation
    /// domain before this message (both wrapping).
    pub sequence: u32,
    /// v9 source id / IPFIX observation domain id.
    pub domain: u32,
}

impl Header {
    /// The export time in ms since the Unix epoch (the header has whole seconds only).
    pub fn export_ms(&self) -> i64 {
        i64::from(self.export_secs) * 1000
    }
}

#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks a datagram's header and returns it with the bytes of its sets.
///
/// Rejects: fewer bytes than the header ([`DecodeError::TooShort`]; fewer than 2 bytes is
/// reported against the 16-byte IPFIX header), a version other than 9 or 10, and an IPFIX
/// message length that differs from the datagram length. The sets themselves are checked by
/// [`sets`].
pub fn parse_header(data: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    if data.len() < 2 {
        return Err(DecodeError::TooShort {
            len: data.len(),
            need: IPFIX_HEADER_LEN,
        });
    }
    let version = match be16(data, 0) {
        9 => Version::V9,
        10 => Version::Ipfix,
        version => return Err(DecodeError::BadVersion { version }),
    };
    let need = version.header_len();
    if data.len() < need {
        return Err(DecodeError::TooShort {
            len: data.len(),
            need,
        });
    }
    let header = match version {
        Version::V9 => Header {
            version,
            count: be16(data, 2),
            length: u16::try_from(data.len()).unwrap_or(u16::MAX),
            sys_uptime_ms: Some(be32(data, 4)),
            export_secs: be32(data, 8),
            sequence: be32(data, 12),
            domain: be32(data, 16),
        },
        Version::Ipfix => {
            let length = be16(data, 2);
            if usize::from(length) != data.len() {
                return Err(DecodeError::LengthMismatch {
                    length,
                    actual: data.len(),
                });
            }
            Header {
                version,
                count: 0,
                length,
                sys_uptime_ms: None,
                export_secs: be32(data, 4),
                sequence: be32(data, 8),
                domain: be32(data, 12),
            }
        }
    };
    Ok((header, &data[need..]))
}

/// One set of a message, its header stripped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Set<'a> {
    /// Template set: v9 FlowSet id 0, IPFIX set id 2. Body for [`parse_templates`].
    Templates(&'a [u8]),
    /// Options template set: v9 id 1, IPFIX id 3. Body for [`parse_options_templates`].
    OptionsTemplates(&'a [u8]),
    /// Data set (id ≥ 256): records of template `template_id`, possibly followed by padding.
    Data { template_id: u16, body: &'a [u8] },
    /// A reserved set id (v9: 2..=255; IPFIX: 0, 1 and 4..=255). RFC 7011 says to ignore it;
    /// it is handed out so the collector can count it.
    Reserved { id: u16, body: &'a [u8] },
}

/// The sets of a message body (what [`parse_header`] returns after the header).
///
/// Yields each set with the datagram offset of its body (for [`DecodeError::shifted`]).
/// A set header cut short, a set length below 4 or one running past the end is an error
/// ([`DecodeError::BadSetLength`], datagram offset of the set header), after which the
/// iterator ends. Set lengths include any padding the exporter added.
pub fn sets(version: Version, body: &[u8]) -> Sets<'_> {
    Sets {
        version,
        body,
        pos: 0,
        base: version.header_len(),
        done: false,
    }
}

/// Iterator returned by [`sets`].
#[derive(Clone, Debug)]
pub struct Sets<'a> {
    version: Version,
    body: &'a [u8],
    pos: usize,
    base: usize,
    done: bool,
}

impl<'a> Iterator for Sets<'a> {
    type Item = Result<(usize, Set<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.body.len() {
            return None;
        }
        let rest = &self.body[self.pos..];
        let offset = self.base + self.pos;
        let length = if rest.len() >= SET_HEADER_LEN {
            be16(rest, 2)
        } else {
            0
        };
        let len = usize::from(length);
        if len < SET_HEADER_LEN || len > rest.len() {
            self.done = true;
            return Some(Err(DecodeError::BadSetLength {
                offset,
                length,
                room: rest.len(),
            }));
        }
        let id = be16(rest, 0);
        let body = &rest[SET_HEADER_LEN..len];
        self.pos += len;
        let set = match (self.version, id) {
            (Version::V9, 0) | (Version::Ipfix, 2) => Set::Templates(body),
            (Version::V9, 1) | (Version::Ipfix, 3) => Set::OptionsTemplates(body),
            (_, id) if id >= MIN_DATA_SET_ID => Set::Data {
                template_id: id,
                body,
            },
            (_, id) => Set::Reserved { id, body },
        };
        Some(Ok((offset + SET_HEADER_LEN, set)))
    }
}

impl std::iter::FusedIterator for Sets<'_> {}
