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
            // A datagram carries at least one flow, so `capacity` datagram records always suffice.
            datagrams: Vec::with_capacity(capacity),
        }
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
