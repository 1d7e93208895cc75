//! NetFlow v9 and IPFIX datagrams as softflowd sends them, written into the sender's buffers.
//!
//! The sets that do not change from datagram to datagram — the options template and its one
//! options data record, and the flow template — are encoded once per exporter with
//! `nfpg_wire::netflow::encode` ([`template_sets`]). What changes every datagram — the header
//! and the data set of flow records — is written here straight into the caller's buffer
//! ([`write_header`], [`write_data_set_header`], [`write_flow`]), so the hot loop allocates
//! nothing; the tests check that these bytes equal what `Message` builds for the same values.
//!
//! Flow records follow `encode::flow_template(256, false)`: softflowd's IPv4 template, 42
//! bytes a record. The options template (id 257) says, with scope System (v9, value = source
//! id) or observationDomainId (IPFIX, 149): samplingInterval (34) when `--sampling` is set, and
//! for IPFIX always systemInitTimeMilliseconds (160), the time the exporter's uptime clock read
//! 0, which IPFIX's flowStart/EndSysUpTime (22/21) count from.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr};

use nfpg_wire::netflow::encode::{flow_template, Field, Flow, Message, TemplateDef, Value};
use nfpg_wire::v5::encode as v5;

/// Largest datagram the generator builds: 1500-byte MTU less the IPv4 and UDP headers.
pub const MAX_DATAGRAM: usize = 1472;
/// Bytes of one flow record of [`FLOW_TEMPLATE_ID`].
pub const RECORD_LEN: usize = 42;
/// Template id of the flow records.
pub const FLOW_TEMPLATE_ID: u16 = 256;
/// Template id of the options record.
pub const OPTIONS_TEMPLATE_ID: u16 = 257;
/// Bytes of a set header.
pub const SET_HEADER_LEN: usize = 4;
/// Most flow records a datagram without templates holds: (1472 − 20 − 4) / 42.
pub const MAX_RECORDS: usize = 34;

/// v9 options scope type System (RFC 3954 §6.1).
const SCOPE_SYSTEM: u16 = 1;
/// IPFIX observationDomainId.
const IE_OBSERVATION_DOMAIN: u16 = 149;
/// samplingInterval (v9 SAMPLING_INTERVAL).
const IE_SAMPLING_INTERVAL: u16 = 34;
/// systemInitTimeMilliseconds.
const IE_SYSTEM_INIT_MS: u16 = 160;

/// NetFlow v9 or IPFIX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    V9,
    Ipfix,
}

impl Format {
    pub fn header_len(self) -> usize {
        match self {
            Format::V9 => 20,
            Format::Ipfix => 16,
        }
    }

    /// An empty `Message` of this format (only its sets are used).
    fn message(self, h: &Header) -> Message {
        match self {
            Format::V9 => Message::v9(h.sys_uptime_ms, h.export_secs, h.sequence, h.domain),
            Format::Ipfix => Message::ipfix(h.export_secs, h.sequence, h.domain),
        }
    }
}

/// The options template this exporter sends, if any: IPFIX always (for the init time), v9
/// only with sampling.
fn options_template(format: Format, sampling: u16) -> Option<TemplateDef> {
    let mut fields = Vec::new();
    if format == Format::Ipfix {
        fields.push(Field::new(IE_SYSTEM_INIT_MS, 8));
    }
    if sampling > 0 {
        fields.push(Field::new(IE_SAMPLING_INTERVAL, 4));
    }
    if fields.is_empty() {
        return None;
    }
    let scope = match format {
        Format::V9 => Field::new(SCOPE_SYSTEM, 4),
        Format::Ipfix => Field::new(IE_OBSERVATION_DOMAIN, 4),
    };
    Some(TemplateDef::options(OPTIONS_TEMPLATE_ID, &[scope], &fields))
}

/// The template sets an exporter puts at the start of a datagram, encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateSets {
    /// Options template set and options data set (when there is an options template), then
    /// the flow template set: the bytes after the header of a datagram that holds only them.
    pub bytes: Vec<u8>,
    /// Records in them (templates and options data), for the v9 header count.
    pub records: u16,
}

/// Encodes the template sets of one exporter: `domain` is the v9 source id / IPFIX
/// observation domain, `sampling` the interval (0 = none), `init_ms` the IPFIX system init
/// time (ignored for v9). Allocates: call it when an exporter starts, not per datagram.
pub fn template_sets(format: Format, domain: u32, sampling: u16, init_ms: u64) -> TemplateSets {
    let h = Header {
        domain,
        ..Header::default()
    };
    let mut m = format.message(&h);
    let mut records = 1;
    if let Some(opt) = options_template(format, sampling) {
        let mut values = vec![Value::U(u64::from(domain))];
        if format == Format::Ipfix {
            values.push(Value::U(init_ms));
        }
        if sampling > 0 {
            values.push(Value::U(u64::from(sampling)));
        }
        m.options_templates(&[&opt]).data(&opt, &[values]);
        records += 2;
    }
    m.templates(&[&flow_template(FLOW_TEMPLATE_ID, false)]);
    let all = m.finish();
    TemplateSets {
        bytes: all[format.header_len()..].to_vec(),
        records,
    }
}

/// The header fields that change per datagram (v9 `count` and IPFIX `length` are passed to
/// [`write_header`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// v9 only.
    pub sys_uptime_ms: u32,
    pub export_secs: u32,
    /// v9: datagrams of this source id before this one; IPFIX: flow records of this domain
    /// before this message.
    pub sequence: u32,
    /// v9 source id / IPFIX observation domain id.
    pub domain: u32,
}

/// Writes the header into `out[..format.header_len()]`; `size` is the v9 record count or the
/// IPFIX message length.
pub fn write_header(out: &mut [u8], format: Format, h: &Header, size: u16) {
    let (o, rest) = match format {
        Format::V9 => {
            let o = &mut out[..20];
            o[0..2].copy_from_slice(&9u16.to_be_bytes());
            o[2..4].copy_from_slice(&size.to_be_bytes());
            o[4..8].copy_from_slice(&h.sys_uptime_ms.to_be_bytes());
            (o, 8)
        }
        Format::Ipfix => {
            let o = &mut out[..16];
            o[0..2].copy_from_slice(&10u16.to_be_bytes());
            o[2..4].copy_from_slice(&size.to_be_bytes());
            (o, 4)
        }
    };
    o[rest..rest + 4].copy_from_slice(&h.export_secs.to_be_bytes());
    o[rest + 4..rest + 8].copy_from_slice(&h.sequence.to_be_bytes());
    o[rest + 8..rest + 12].copy_from_slice(&h.domain.to_be_bytes());
}

/// Writes the header of a data set of `records` flow records into `out[..4]`.
pub fn write_data_set_header(out: &mut [u8], records: usize) {
    let len = (SET_HEADER_LEN + records * RECORD_LEN) as u16;
    out[0..2].copy_from_slice(&FLOW_TEMPLATE_ID.to_be_bytes());
    out[2..4].copy_from_slice(&len.to_be_bytes());
}

fn v4(a: &IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(a) => a.octets(),
        // The flow template here is the IPv4 one; `flow_of` only makes IPv4 flows.
        IpAddr::V6(_) => [0; 4],
    }
}

/// Writes one IPv4 flow record of `flow_template(256, false)` into `out[..42]`.
pub fn write_flow(out: &mut [u8], f: &Flow) {
    let o = &mut out[..RECORD_LEN];
    o[0..4].copy_from_slice(&v4(&f.src));
    o[4..8].copy_from_slice(&v4(&f.dst));
    o[8..12].copy_from_slice(&f.first_ms.to_be_bytes());
    o[12..16].copy_from_slice(&f.last_ms.to_be_bytes());
    o[16..20].copy_from_slice(&f.bytes.to_be_bytes());
    o[20..24].copy_from_slice(&f.packets.to_be_bytes());
    o[24..28].copy_from_slice(&f.input.to_be_bytes());
    o[28..32].copy_from_slice(&f.output.to_be_bytes());
    o[32] = f.direction;
    o[33] = f.end_reason;
    o[34..36].copy_from_slice(&f.src_port.to_be_bytes());
    o[36..38].copy_from_slice(&f.dst_port.to_be_bytes());
    o[38] = f.protocol;
    o[39] = f.tcp_flags;
    o[40] = 4; // IP version
    o[41] = f.tos;
}

/// The v9/IPFIX flow for a record the v5 generator made: the same addresses, ports,
/// counters, interfaces and uptime stamps. softflowd's template has no next hop, AS numbers
/// or masks; it adds the direction (egress when the source is inside, 10.0.0.0/8) and the
/// end reason (3 end of flow for TCP flows with FIN or RST, else 2 active timeout for flows
/// over 50 s, else 1 idle timeout), both derived from the record, so the random stream is
/// the one v5 uses.
pub fn flow_of(r: &v5::Record) -> Flow {
    let end_reason = if r.protocol == 6 && r.tcp_flags & 0x05 != 0 {
        3
    } else if r.last.wrapping_sub(r.first) > 50_000 {
        2
    } else {
        1
    };
    Flow {
        src: IpAddr::V4(Ipv4Addr::from(r.src_addr)),
        dst: IpAddr::V4(Ipv4Addr::from(r.dst_addr)),
        src_port: r.src_port,
        dst_port: r.dst_port,
        protocol: r.protocol,
        tcp_flags: r.tcp_flags,
        tos: r.tos,
        packets: r.packets,
        bytes: r.octets,
        input: u32::from(r.input),
        output: u32::from(r.output),
        direction: u8::from(r.src_addr[0] == 10),
        end_reason,
        first_ms: r.first,
        last_ms: r.last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfpg_wire::netflow::encode::flow_values;

    fn flow(i: u32) -> Flow {
        flow_of(&v5::Record {
            src_addr: [10, 1, 2, i as u8],
            dst_addr: [192, 0, 2, 7],
            next_hop: [0; 4],
            input: 3,
            output: 4,
            packets: 10 + i,
            octets: 1000 * i,
            first: 100_000 + i,
            last: 160_000 + i,
            src_port: 40_000,
            dst_port: 443,
            tcp_flags: 0x1b,
            protocol: 6,
            tos: 0x10,
            src_as: 0,
            dst_as: 15169,
            src_mask: 24,
            dst_mask: 24,
        })
    }

    /// Header, templates and data written here are byte for byte what `Message` builds.
    #[test]
    fn datagrams_equal_the_wire_encoder() {
        for format in [Format::V9, Format::Ipfix] {
            for sampling in [0u16, 100] {
                let h = Header {
                    sys_uptime_ms: 3_600_123,
                    export_secs: 1_700_000_000,
                    sequence: 77,
                    domain: 0x0102,
                };
                let flows: Vec<Flow> = (0..5).map(flow).collect();
                let t = template_sets(format, h.domain, sampling, 1_699_996_400_000);
                let mut buf = [0u8; MAX_DATAGRAM];
                let mut at = format.header_len();
                buf[at..at + t.bytes.len()].copy_from_slice(&t.bytes);
                at += t.bytes.len();
                write_data_set_header(&mut buf[at..], flows.len());
                at += SET_HEADER_LEN;
                for f in &flows {
                    write_flow(&mut buf[at..], f);
                    at += RECORD_LEN;
                }
                let size = match format {
                    Format::V9 => t.records + flows.len() as u16,
                    Format::Ipfix => at as u16,
                };
                write_header(&mut buf, format, &h, size);

                let ft = flow_template(FLOW_TEMPLATE_ID, false);
                let mut m = format.message(&h);
                if let Some(opt) = options_template(format, sampling) {
                    let mut v = vec![Value::U(0x0102)];
                    if format == Format::Ipfix {
                        v.push(Value::U(1_699_996_400_000));
                    }
                    if sampling > 0 {
                        v.push(Value::U(100));
                    }
                    m.options_templates(&[&opt]).data(&opt, &[v]);
                }
                m.templates(&[&ft]);
                let values: Vec<Vec<Value>> = flows.iter().map(flow_values).collect();
                m.data(&ft, &values);
                assert_eq!(
                    &buf[..at],
                    &m.finish()[..],
                    "{format:?} sampling {sampling}"
                );
            }
        }
    }

    #[test]
    fn records_and_budget() {
        let t = flow_template(FLOW_TEMPLATE_ID, false);
        let len: u16 = t.fields.iter().map(|f| f.len).sum();
        assert_eq!(usize::from(len), RECORD_LEN);
        const { assert!(20 + SET_HEADER_LEN + MAX_RECORDS * RECORD_LEN <= MAX_DATAGRAM) };
        const { assert!(16 + SET_HEADER_LEN + (MAX_RECORDS + 1) * RECORD_LEN > MAX_DATAGRAM) };
        // With every template set, 30 records (the default) still fit.
        let ts = template_sets(Format::Ipfix, 1, 100, 1);
        assert!(16 + ts.bytes.len() + SET_HEADER_LEN + 30 * RECORD_LEN <= MAX_DATAGRAM);
    }
}
