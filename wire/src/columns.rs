//! Flow columns: what every decoder appends to.
//!
//! [`Columns`] is a struct of arrays: one vector per flow field, plus one [`DatagramInfo`] per
//! decoded datagram holding the header fields its flows share. Decoders only `extend`
//! vectors whose capacity the owner reserved ([`Columns::with_capacity`]), so decoding
//! allocates nothing as long as the owner checks [`Columns::has_room_for`] first.
//!
//! Addresses are `u128` in IPv6 form; IPv4 addresses are IPv4-mapped (`::ffff:a.b.c.d`), so
//! v5 (IPv4 only) and v9/IPFIX (both families) share one column type.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most flows one datagram can carry (NetFlow v5 allows 30); an owner seals its columns
/// before a datagram could overflow them.
pub const MAX_FLOWS_PER_DATAGRAM: usize = 30;

/// An address in column form.
pub fn addr_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Back from the column form; IPv4-mapped addresses come back as IPv4.
pub fn u128_to_addr(v: u128) -> IpAddr {
    let v6 = Ipv6Addr::from(v);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// An IPv4 address (as the wire's u32) in column form.
#[inline]
pub fn v4_to_u128(v4: u32) -> u128 {
    0xffff_0000_0000u128 | u128::from(v4)
}

/// The IPv4 address of a column-form address, when it is IPv4-mapped.
#[inline]
pub fn as_v4(v: u128) -> Option<Ipv4Addr> {
    Ipv6Addr::from(v).to_ipv4_mapped()
}

/// Bits of [`Columns::present`]: which optional fields a row has. A field whose bit is clear
/// is stored as NULL (the exporter's template did not carry it); the value in its column is
/// then a placeholder (zero).
pub mod present {
    pub const NEXT_HOP: u32 = 1 << 0;
    pub const SRC_PORT: u32 = 1 << 1;
    pub const DST_PORT: u32 = 1 << 2;
    pub const TCP_FLAGS: u32 = 1 << 3;
    pub const TOS: u32 = 1 << 4;
    pub const INPUT_IF: u32 = 1 << 5;
    pub const OUTPUT_IF: u32 = 1 << 6;
    pub const SRC_AS: u32 = 1 << 7;
    pub const DST_AS: u32 = 1 << 8;
    pub const SRC_MASK: u32 = 1 << 9;
    pub const DST_MASK: u32 = 1 << 10;
    pub const DIRECTION: u32 = 1 << 11;
    pub const END_REASON: u32 = 1 << 12;
    pub const VLAN: u32 = 1 << 13;
    pub const MPLS_LABEL: u32 = 1 << 14;
    pub const ICMP_TYPE: u32 = 1 << 15;
    pub const POST_NAT_SRC_ADDR: u32 = 1 << 16;
    pub const POST_NAT_DST_ADDR: u32 = 1 << 17;
    pub const POST_NAT_SRC_PORT: u32 = 1 << 18;
    pub const POST_NAT_DST_PORT: u32 = 1 << 19;
    /// Not a field the exporter sent: the collector found the row's times far from its
    /// arrival and stores it with `time_suspect` set. Decoders never set it.
    pub const TIME_SUSPECT: u32 = 1 << 20;
    /// Every field a v5 record carries.
    pub const V5: u32 = NEXT_HOP
        | SRC_PORT
        | DST_PORT
        | TCP_FLAGS
        | TOS
        | INPUT_IF
        | OUTPUT_IF
        | SRC_AS
        | DST_AS
        | SRC_MASK
        | DST_MASK;
}

/// Where a row's sampling interval came from (stored with the row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SamplingSource {
    /// The exporter said nothing about sampling (interval 0).
    None = 0,
    /// The v5 header's sampling field.
    V5Header = 1,
    /// A field of the data record itself (v9/IPFIX samplingInterval, 34).
    DataRecord = 2,
    /// Options data for the record's sampler id (v9 FLOW_SAMPLER_ID 48, IPFIX selectorId 302).
    OptionsSampler = 3,
    /// Options data for the whole exporter / observation domain (no sampler id).
    OptionsExporter = 4,
    /// IPFIX samplingPacketInterval / samplingPacketSpace (305/306): 1 in (interval+space)/interval.
    PacketInterval = 5,
    /// The operator's per-exporter override.
    Override = 6,
}

/// What the receiver knows about a datagram before decoding it.
#[derive(Clone, Copy, Debug)]
pub struct DatagramMeta {
    /// The exporter's address (the datagram's source), column form.
    pub exporter: u128,
    /// Receive time, µs since the Unix epoch.
    pub received_us: i64,
}

/// Header fields of one decoded datagram, shared by its flows `first_flow..first_flow+count`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatagramInfo {
    pub exporter: u128,
    pub received_us: i64,
    pub first_flow: u32,
    pub count: u16,
    pub version: u8,
    /// v9 source id or IPFIX observation domain (0 for v5).
    pub source_id: u32,
    pub engine_type: u8,
    pub engine_id: u8,
    /// Sampling mode (top 2 bits of the v5 field).
    pub sampling_mode: u8,
    /// Sampling interval (low 14 bits of the v5 field); 0 = unsampled.
    pub sampling_interval: u16,
    pub sys_uptime_ms: u32,
    /// Header time, ms since the Unix epoch.
    pub export_ms: i64,
    pub sequence: u32,
    /// Rows of a v9/IPFIX data set that was held for its template and decoded later: not a
    /// datagram of its own (the exporter statistics count its flows, not a datagram or a
    /// sequence number).
    pub held: bool,
}

/// Decoded flows in columns.
#[derive(Debug)]
pub struct Columns {
    capacity: usize,
    pub flow_start_ms: Vec<i64>,
    pub flow_end_ms: Vec<i64>,
    pub src_addr: Vec<u128>,
    pub dst_addr: Vec<u128>,
    pub next_hop: Vec<u128>,
    pub src_port: Vec<u16>,
    pub dst_port: Vec<u16>,
    pub protocol: Vec<u8>,
    pub tcp_flags: Vec<u8>,
    pub tos: Vec<u8>,
    pub input_if: Vec<u32>,
    pub output_if: Vec<u32>,
    pub packets: Vec<u64>,
    pub bytes: Vec<u64>,
    pub src_as: Vec<u32>,
    pub dst_as: Vec<u32>,
    pub src_mask: Vec<u8>,
    pub dst_mask: Vec<u8>,
    /// Which optional fields each row has ([`present`] bits).
    pub present: Vec<u32>,
    /// 0 ingress, 1 egress (flowDirection, 61).
    pub direction: Vec<u8>,
    /// flowEndReason (136).
    pub end_reason: Vec<u8>,
    pub vlan: Vec<u16>,
    /// The top MPLS label (20 bits).
    pub mpls_label: Vec<u32>,
    /// ICMP type × 256 + code, when exported as a field of its own (v9/IPFIX 32, 139).
    pub icmp_type: Vec<u16>,
    pub post_nat_src: Vec<u128>,
    pub post_nat_dst: Vec<u128>,
    pub post_nat_src_port: Vec<u16>,
    pub post_nat_dst_port: Vec<u16>,
    /// 1 in N packets sampled; 0 = unsampled or unknown.
    pub sampling_interval: Vec<u32>,
    /// [`SamplingSource`] of `sampling_interval`.
    pub sampling_source: Vec<u8>,
    pub datagrams: Vec<DatagramInfo>,
}

impl Columns {
    /// Columns with room for `capacity` flows (at least one full datagram).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(MAX_FLOWS_PER_DATAGRAM);
        Self {
            capacity,
            flow_start_ms: Vec::with_capacity(capacity),
            flow_end_ms: Vec::with_capacity(capacity),
            src_addr: Vec::with_capacity(capacity),
            dst_addr: Vec::with_capacity(capacity),
            next_hop: Vec::with_capacity(capacity),
            src_port: Vec::with_capacity(capacity),
            dst_port: Vec::with_capacity(capacity),
            protocol: Vec::with_capacity(capacity),
            tcp_flags: Vec::with_capacity(capacity),
            tos: Vec::with_capacity(capacity),
            input_if: Vec::with_capacity(capacity),
            output_if: Vec::with_capacity(capacity),
            packets: Vec::with_capacity(capacity),
            bytes: Vec::with_capacity(capacity),
            src_as: Vec::with_capacity(capacity),
            dst_as: Vec::with_capacity(capacity),
            src_mask: Vec::with_capacity(capacity),
            dst_mask: Vec::with_capacity(capacity),
            present: Vec::with_capacity(capacity),
            direction: Vec::with_capacity(capacity),
            end_reason: Vec::with_capacity(capacity),
            vlan: Vec::with_capacity(capacity),
            mpls_label: Vec::with_capacity(capacity),
            icmp_type: Vec::with_capacity(capacity),
            post_nat_src: Vec::with_capacity(capacity),
            post_nat_dst: Vec::with_capacity(capacity),
            post_nat_src_port: Vec::with_capacity(capacity),
            post_nat_dst_port: Vec::with_capacity(capacity),
            sampling_interval: Vec::with_capacity(capacity),
            sampling_source: Vec::with_capacity(capacity),
            // A datagram carries at least one flow, so `capacity` datagram records always suffice.
            datagrams: Vec::with_capacity(capacity),
        }
    }

    /// Rows the v9/IPFIX-only columns (`direction` … `post_nat_dst_port`) hold: they are filled
    /// lazily, so a batch of v5 rows never writes them. Rows at or past this index have none of
    /// those fields (their `present` bits are clear), and nothing reads them there.
    #[inline]
    pub fn extras_len(&self) -> usize {
        self.direction.len()
    }

    /// Pads the v9/IPFIX-only columns with zeros up to [`Columns::len`]: a decoder that fills
    /// them calls this before appending its rows.
    #[inline]
    pub fn pad_extras(&mut self) {
        let n = self.len();
        if self.direction.len() == n {
            return;
        }
        self.direction.resize(n, 0);
        self.end_reason.resize(n, 0);
        self.vlan.resize(n, 0);
        self.mpls_label.resize(n, 0);
        self.icmp_type.resize(n, 0);
        self.post_nat_src.resize(n, 0);
        self.post_nat_dst.resize(n, 0);
        self.post_nat_src_port.resize(n, 0);
        self.post_nat_dst_port.resize(n, 0);
    }

    /// Whether the columns are consistent (a decoder's invariant; tests and debug builds check
    /// it): every column holds [`Columns::len`] rows, except the v9/IPFIX-only ones, which hold
    /// [`Columns::extras_len`] rows each, no more than that.
    pub fn is_aligned(&self) -> bool {
        let n = self.len();
        let e = self.extras_len();
        let full = [
            self.flow_end_ms.len(),
            self.src_addr.len(),
            self.dst_addr.len(),
            self.next_hop.len(),
            self.src_port.len(),
            self.dst_port.len(),
            self.protocol.len(),
            self.tcp_flags.len(),
            self.tos.len(),
            self.input_if.len(),
            self.output_if.len(),
            self.packets.len(),
            self.bytes.len(),
            self.src_as.len(),
            self.dst_as.len(),
            self.src_mask.len(),
            self.dst_mask.len(),
            self.present.len(),
            self.sampling_interval.len(),
            self.sampling_source.len(),
        ];
        let extras = [
            self.end_reason.len(),
            self.vlan.len(),
            self.mpls_label.len(),
            self.icmp_type.len(),
            self.post_nat_src.len(),
            self.post_nat_dst.len(),
            self.post_nat_src_port.len(),
            self.post_nat_dst_port.len(),
        ];
        e <= n && full.iter().all(|&l| l == n) && extras.iter().all(|&l| l == e)
    }

    /// Flows held.
    #[inline]
    pub fn len(&self) -> usize {
        self.flow_start_ms.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.flow_start_ms.is_empty()
    }

    /// Flow capacity reserved at creation.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `flows` more flows (in one more datagram) fit without growing any vector.
    #[inline]
    pub fn has_room_for(&self, flows: usize) -> bool {
        self.len() + flows <= self.capacity && self.datagrams.len() < self.datagrams.capacity()
    }

    /// Sum of packets and bytes of the flows of datagram `d`.
    pub fn totals_of(&self, d: &DatagramInfo) -> (u64, u64) {
        let range = d.first_flow as usize..d.first_flow as usize + usize::from(d.count);
        (
            self.packets[range.clone()].iter().sum(),
            self.bytes[range].iter().sum(),
        )
    }

    /// Drops rows from `rows` on and datagram records from `datagrams` on (undoes a partly
    /// decoded datagram).
    pub fn truncate(&mut self, rows: usize, datagrams: usize) {
        self.flow_start_ms.truncate(rows);
        self.flow_end_ms.truncate(rows);
        self.src_addr.truncate(rows);
        self.dst_addr.truncate(rows);
        self.next_hop.truncate(rows);
        self.src_port.truncate(rows);
        self.dst_port.truncate(rows);
        self.protocol.truncate(rows);
        self.tcp_flags.truncate(rows);
        self.tos.truncate(rows);
        self.input_if.truncate(rows);
        self.output_if.truncate(rows);
        self.packets.truncate(rows);
        self.bytes.truncate(rows);
        self.src_as.truncate(rows);
        self.dst_as.truncate(rows);
        self.src_mask.truncate(rows);
        self.dst_mask.truncate(rows);
        self.present.truncate(rows);
        self.direction.truncate(rows);
        self.end_reason.truncate(rows);
        self.vlan.truncate(rows);
        self.mpls_label.truncate(rows);
        self.icmp_type.truncate(rows);
        self.post_nat_src.truncate(rows);
        self.post_nat_dst.truncate(rows);
        self.post_nat_src_port.truncate(rows);
        self.post_nat_dst_port.truncate(rows);
        self.sampling_interval.truncate(rows);
        self.sampling_source.truncate(rows);
        self.datagrams.truncate(datagrams);
    }

    /// Empties the columns, keeping their capacity.
    pub fn clear(&mut self) {
        self.flow_start_ms.clear();
        self.flow_end_ms.clear();
        self.src_addr.clear();
        self.dst_addr.clear();
        self.next_hop.clear();
        self.src_port.clear();
        self.dst_port.clear();
        self.protocol.clear();
        self.tcp_flags.clear();
        self.tos.clear();
        self.input_if.clear();
        self.output_if.clear();
        self.packets.clear();
        self.bytes.clear();
        self.src_as.clear();
        self.dst_as.clear();
        self.src_mask.clear();
        self.dst_mask.clear();
        self.present.clear();
        self.direction.clear();
        self.end_reason.clear();
        self.vlan.clear();
        self.mpls_label.clear();
        self.icmp_type.clear();
        self.post_nat_src.clear();
        self.post_nat_dst.clear();
        self.post_nat_src_port.clear();
        self.post_nat_dst_port.clear();
        self.sampling_interval.clear();
        self.sampling_source.clear();
        self.datagrams.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_forms_round_trip() {
        for s in [
            "10.1.2.3",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::1",
            "::1",
            "::",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(u128_to_addr(addr_to_u128(ip)), ip, "{s}");
        }
        assert_eq!(
            v4_to_u128(0x0a010203),
            addr_to_u128("10.1.2.3".parse().unwrap())
        );
    }

    #[test]
    fn clear_keeps_capacity() {
        let mut c = Columns::with_capacity(100);
        let cap = c.src_addr.capacity();
        c.src_addr.push(1);
        c.flow_start_ms.push(1);
        assert_eq!(c.len(), 1);
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.src_addr.capacity(), cap);
    }
}
