//! NetFlow v9 and IPFIX encoding, for the tests and the load generator.
//!
//! Builds whole datagrams — header, template sets, options template sets, withdrawals and data
//! sets — from plain structs ([`TemplateDef`], [`Value`], or [`Flow`] with
//! [`flow_template`]). It is written independently of the decoder in [`super`]: it shares no
//! code or constants with it, so each checks the other. It checks nothing about what it is
//! asked to encode beyond what it needs to stay in bounds: tests use it to build malformed
//! datagrams too.

use std::net::IpAddr;

/// A field length that makes an IPFIX field variable-length.
pub const VARIABLE: u16 = 0xffff;

/// One field specifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Information element id (v9 field type; scope type in a v9 options scope).
    pub id: u16,
    /// Bytes per record, or [`VARIABLE`].
    pub len: u16,
    /// IPFIX private enterprise number; non-zero sets the enterprise bit.
    pub enterprise: u32,
}

impl Field {
    /// An IANA field.
    pub const fn new(id: u16, len: u16) -> Self {
        Field {
            id,
            len,
            enterprise: 0,
        }
    }

    /// An enterprise-specific (IPFIX) field.
    pub const fn private(id: u16, len: u16, enterprise: u32) -> Self {
        Field {
            id,
            len,
            enterprise,
        }
    }
}

/// A template: `scope` is empty for a data template.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateDef {
    /// Template id, ≥ 256 for a usable template (not checked).
    pub id: u16,
    /// Scope fields of an options template, written first.
    pub scope: Vec<Field>,
    /// The other fields.
    pub fields: Vec<Field>,
}

impl TemplateDef {
    /// A data template.
    pub fn data(id: u16, fields: &[Field]) -> Self {
        TemplateDef {
            id,
            scope: Vec::new(),
            fields: fields.to_vec(),
        }
    }

    /// An options template.
    pub fn options(id: u16, scope: &[Field], fields: &[Field]) -> Self {
        TemplateDef {
            id,
            scope: scope.to_vec(),
            fields: fields.to_vec(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Field> {
        self.scope.iter().chain(self.fields.iter())
    }
}

/// A field value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Written big-endian in the field's length (high bytes dropped when it is shorter than 8;
    /// zero-extended when longer); a variable-length field gets 8 bytes.
    U(u64),
    /// Written as is (zero-padded or cut to a fixed length; with a length prefix when
    /// variable-length).
    Bytes(Vec<u8>),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::U(v)
    }
}

impl From<IpAddr> for Value {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Value::Bytes(a.octets().to_vec()),
            IpAddr::V6(a) => Value::Bytes(a.octets().to_vec()),
        }
    }
}

fn put_value(out: &mut Vec<u8>, f: &Field, v: &Value) {
    if f.len == VARIABLE {
        let bytes = match v {
            Value::U(u) => u.to_be_bytes().to_vec(),
            Value::Bytes(b) => b.clone(),
        };
        if bytes.len() < 255 {
            out.push(bytes.len() as u8);
        } else {
            out.push(255);
            out.extend_from_slice(&(bytes.len().min(0xffff) as u16).to_be_bytes());
        }
        out.extend_from_slice(&bytes[..bytes.len().min(0xffff)]);
        return;
    }
    let len = usize::from(f.len);
    match v {
        Value::U(u) => {
            let be = u.to_be_bytes();
            if len >= 8 {
                out.resize(out.len() + len - 8, 0);
                out.extend_from_slice(&be);
            } else {
                out.extend_from_slice(&be[8 - len..]);
            }
        }
        Value::Bytes(b) => {
            let n = b.len().min(len);
            out.extend_from_slice(&b[..n]);
            out.resize(out.len() + len - n, 0);
        }
    }
}

/// Which format a [`Message`] is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    V9 { sys_uptime_ms: u32 },
    Ipfix,
}

/// A datagram under construction: add sets in order, then [`Message::finish`].
#[derive(Clone, Debug)]
pub struct Message {
    format: Format,
    export_secs: u32,
    sequence: u32,
    domain: u32,
    pad: bool,
    records: u16,
    sets: Vec<u8>,
}

impl Message {
    /// A NetFlow v9 datagram.
    pub fn v9(sys_uptime_ms: u32, unix_secs: u32, sequence: u32, source_id: u32) -> Self {
        Message {
            format: Format::V9 { sys_uptime_ms },
            export_secs: unix_secs,
            sequence,
            domain: source_id,
            pad: false,
            records: 0,
            sets: Vec::new(),
        }
    }

    /// An IPFIX message.
    pub fn ipfix(export_secs: u32, sequence: u32, domain: u32) -> Self {
        Message {
            format: Format::Ipfix,
            export_secs,
            sequence,
            domain,
            pad: false,
            records: 0,
            sets: Vec::new(),
        }
    }

    /// Pads every following set with zeros to a multiple of 4 bytes.
    pub fn padded(mut self, pad: bool) -> Self {
        self.pad = pad;
        self
    }

    fn is_ipfix(&self) -> bool {
        self.format == Format::Ipfix
    }

    /// Appends a set with `id` and `body` as is (padding applied), counting `records`.
    pub fn raw_set(&mut self, id: u16, body: &[u8], records: u16) -> &mut Self {
        let pad = if self.pad {
            (4 - body.len() % 4) % 4
        } else {
            0
        };
        let len = 4 + body.len() + pad;
        self.sets.extend_from_slice(&id.to_be_bytes());
        self.sets
            .extend_from_slice(&(len.min(0xffff) as u16).to_be_bytes());
        self.sets.extend_from_slice(body);
        self.sets.resize(self.sets.len() + pad, 0);
        self.records = self.records.wrapping_add(records);
        self
    }

    fn put_spec(&self, out: &mut Vec<u8>, f: &Field) {
        if self.is_ipfix() && f.enterprise != 0 {
            out.extend_from_slice(&(f.id | 0x8000).to_be_bytes());
            out.extend_from_slice(&f.len.to_be_bytes());
            out.extend_from_slice(&f.enterprise.to_be_bytes());
        } else {
            out.extend_from_slice(&f.id.to_be_bytes());
            out.extend_from_slice(&f.len.to_be_bytes());
        }
    }

    /// A template set (v9 id 0, IPFIX id 2) with these data templates.
    pub fn templates(&mut self, ts: &[&TemplateDef]) -> &mut Self {
        let mut body = Vec::new();
        for t in ts {
            body.extend_from_slice(&t.id.to_be_bytes());
            body.extend_from_slice(&(t.fields.len() as u16).to_be_bytes());
            for f in &t.fields {
                self.put_spec(&mut body, f);
            }
        }
        let id = if self.is_ipfix() { 2 } else { 0 };
        self.raw_set(id, &body, ts.len() as u16)
    }

    /// An options template set (v9 id 1 with scope/option lengths in bytes; IPFIX id 3 with
    /// field and scope field counts).
    pub fn options_templates(&mut self, ts: &[&TemplateDef]) -> &mut Self {
        let mut body = Vec::new();
        for t in ts {
            body.extend_from_slice(&t.id.to_be_bytes());
            if self.is_ipfix() {
                let n = (t.scope.len() + t.fields.len()) as u16;
                body.extend_from_slice(&n.to_be_bytes());
                body.extend_from_slice(&(t.scope.len() as u16).to_be_bytes());
            } else {
                body.extend_from_slice(&(4 * t.scope.len() as u16).to_be_bytes());
                body.extend_from_slice(&(4 * t.fields.len() as u16).to_be_bytes());
            }
            for f in t.all() {
                self.put_spec(&mut body, f);
            }
        }
        let id = if self.is_ipfix() { 3 } else { 1 };
        self.raw_set(id, &body, ts.len() as u16)
    }

    /// IPFIX template withdrawals: one record (id, field count 0) per id, in a template set
    /// (`options` false; id 2 withdraws all data templates) or an options template set
    /// (`options` true; id 3 withdraws all options templates).
    pub fn withdrawals(&mut self, ids: &[u16], options: bool) -> &mut Self {
        let mut body = Vec::new();
        for id in ids {
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&[0, 0]);
        }
        self.raw_set(if options { 3 } else { 2 }, &body, ids.len() as u16)
    }

    /// A data set of template `t`: one record per entry of `records`, each holding one value
    /// per field (scope fields first for an options template).
    ///
    /// # Panics
    /// If a record's value count differs from the template's field count (a caller bug).
    pub fn data(&mut self, t: &TemplateDef, records: &[Vec<Value>]) -> &mut Self {
        let mut body = Vec::new();
        for r in records {
            assert_eq!(
                r.len(),
                t.scope.len() + t.fields.len(),
                "one value per field of template {}",
                t.id
            );
            for (f, v) in t.all().zip(r) {
                put_value(&mut body, f, v);
            }
        }
        self.raw_set(t.id, &body, records.len() as u16)
    }

    /// The datagram: header (v9 count = records of all sets; IPFIX length) and the sets.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.sets.len());
        match self.format {
            Format::V9 { sys_uptime_ms } => {
                out.extend_from_slice(&9u16.to_be_bytes());
                out.extend_from_slice(&self.records.to_be_bytes());
                out.extend_from_slice(&sys_uptime_ms.to_be_bytes());
                out.extend_from_slice(&self.export_secs.to_be_bytes());
            }
            Format::Ipfix => {
                let len = (16 + self.sets.len()).min(0xffff) as u16;
                out.extend_from_slice(&10u16.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&self.export_secs.to_be_bytes());
            }
        }
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.domain.to_be_bytes());
        out.extend_from_slice(&self.sets);
        out
    }
}

/// A flow, as the load generator makes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Both addresses must be of one family (the template's).
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub tcp_flags: u8,
    pub tos: u8,
    pub packets: u32,
    pub bytes: u32,
    pub input: u32,
    pub output: u32,
    /// flowDirection: 0 ingress, 1 egress.
    pub direction: u8,
    /// flowEndReason (RFC 5102: 1 idle timeout, 2 active timeout, 3 end of flow, …).
    pub end_reason: u8,
    /// Exporter uptime (ms) at the first and last packet (v9; IPFIX counts them from the
    /// system init time of its options data).
    pub first_ms: u32,
    pub last_ms: u32,
}

/// softflowd 1.1's data template for TCP/UDP flows (its templates 1024 and 2048): addresses
/// (8/12, or 27/28 when `ipv6`), flowStart/EndSysUpTime (22/21), octets (1), packets (2),
/// interfaces (10/14), direction (61), end reason (136), ports (7/11), protocol (4), TCP
/// flags (6), IP version (60), ToS (5): 42 bytes a record for IPv4, 66 for IPv6.
pub fn flow_template(id: u16, ipv6: bool) -> TemplateDef {
    let (a, src, dst) = if ipv6 { (16, 27, 28) } else { (4, 8, 12) };
    TemplateDef::data(
        id,
        &[
            Field::new(src, a),
            Field::new(dst, a),
            Field::new(22, 4),
            Field::new(21, 4),
            Field::new(1, 4),
            Field::new(2, 4),
            Field::new(10, 4),
            Field::new(14, 4),
            Field::new(61, 1),
            Field::new(136, 1),
            Field::new(7, 2),
            Field::new(11, 2),
            Field::new(4, 1),
            Field::new(6, 1),
            Field::new(60, 1),
            Field::new(5, 1),
        ],
    )
}

/// The values of `f` for [`flow_template`].
pub fn flow_values(f: &Flow) -> Vec<Value> {
    vec![
        f.src.into(),
        f.dst.into(),
        u64::from(f.first_ms).into(),
        u64::from(f.last_ms).into(),
        u64::from(f.bytes).into(),
        u64::from(f.packets).into(),
        u64::from(f.input).into(),
        u64::from(f.output).into(),
        u64::from(f.direction).into(),
        u64::from(f.end_reason).into(),
        u64::from(f.src_port).into(),
        u64::from(f.dst_port).into(),
        u64::from(f.protocol).into(),
        u64::from(f.tcp_flags).into(),
        Value::U(if f.src.is_ipv6() { 6 } else { 4 }),
        u64::from(f.tos).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
            .collect()
    }

    #[test]
    fn v9_template_and_data_match_hex() {
        let t = TemplateDef::data(300, &[Field::new(8, 4), Field::new(1, 4), Field::new(4, 1)]);
        let mut m = Message::v9(0x0102_0304, 0x6000_0000, 7, 0x0a0b_0c0d).padded(true);
        m.templates(&[&t]).data(
            &t,
            &[
                vec![
                    "10.0.0.1".parse::<IpAddr>().unwrap().into(),
                    1500.into(),
                    6.into(),
                ],
                vec![
                    Value::Bytes(vec![192, 0, 2, 1]),
                    Value::U(0x1_0000_0040),
                    Value::U(17),
                ],
            ],
        );
        let expected = hex("0009 0003 01020304 60000000 00000007 0a0b0c0d
             0000 0014 012c 0003 0008 0004 0001 0004 0004 0001
             012c 0018 0a000001 000005dc 06 c0000201 00000040 11 0000");
        assert_eq!(m.finish(), expected);
    }

    #[test]
    fn ipfix_options_enterprise_variable_and_withdrawals_match_hex() {
        let opt = TemplateDef::options(
            400,
            &[Field::new(144, 4)],
            &[Field::new(305, 4), Field::private(5, VARIABLE, 29305)],
        );
        let mut m = Message::ipfix(0x6000_0000, 9, 1);
        m.options_templates(&[&opt])
            .data(
                &opt,
                &[vec![
                    Value::U(1),
                    Value::U(100),
                    Value::Bytes(b"eth0".to_vec()),
                ]],
            )
            .withdrawals(&[300, 2], false);
        let expected = hex("000a 0047 60000000 00000009 00000001
             0003 001a 0190 0003 0001 0090 0004 0131 0004 8005 ffff 00007279
             0190 0011 00000001 00000064 04 65746830
             0002 000c 012c 0000 0002 0000");
        assert_eq!(m.finish(), expected);
    }

    #[test]
    fn long_variable_fields_use_three_byte_lengths() {
        let t = TemplateDef::data(256, &[Field::new(82, VARIABLE)]);
        let mut m = Message::ipfix(0, 0, 0);
        m.data(&t, &[vec![Value::Bytes(vec![7; 300])]]);
        let d = m.finish();
        assert_eq!(&d[16..23], &[1, 0, 0x01, 0x33, 255, 0x01, 0x2c]);
        assert_eq!(d.len(), 16 + 4 + 3 + 300);
    }

    #[test]
    fn flow_records_are_softflowd_sized() {
        let f = Flow {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            src_port: 1,
            dst_port: 2,
            protocol: 6,
            tcp_flags: 0x1b,
            tos: 0,
            packets: 3,
            bytes: 4,
            input: 5,
            output: 6,
            direction: 0,
            end_reason: 3,
            first_ms: 7,
            last_ms: 8,
        };
        let t = flow_template(1024, false);
        let mut m = Message::v9(0, 0, 0, 0);
        m.data(&t, &[flow_values(&f)]);
        assert_eq!(m.finish().len(), 20 + 4 + 42);
    }
}
