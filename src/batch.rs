//! Column batches: the unit that moves from a shard to a writer.
//!
//! A [`FlowBatch`] is a struct of arrays: one preallocated vector per flow field, plus one
//! small record per datagram (the header fields every flow of that datagram shares) and a few
//! sampled malformed datagrams. Shards fill batches through the decoder, writers encode them
//! to binary COPY and hand them back empty; capacity is reserved once, so the steady state
//! allocates nothing.
//!
//! Addresses are `u128` in IPv6 form; IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`)
//! and written to PostgreSQL as IPv4 `inet`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

/// Most flows one datagram can carry (NetFlow v5 allows 30); a batch is sealed before a
/// datagram could overflow it.
pub const MAX_FLOWS_PER_DATAGRAM: usize = 30;
/// Bytes of a malformed datagram kept as a sample.
pub const SAMPLE_BYTES: usize = 64;
/// Malformed samples a batch carries at most (the rest are only counted).
pub const MAX_SAMPLES: usize = 64;

/// An address in the batch's column form.
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

/// What the shard knows about a datagram before decoding it.
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

/// A malformed datagram kept as evidence: its first bytes and why it was rejected.
#[derive(Clone, Copy, Debug)]
pub struct MalformedSample {
    pub exporter: u128,
    pub received_us: i64,
    pub reason: crate::v5::Reason,
    pub detail: u32,
    pub length: u32,
    pub head_len: u8,
    pub head: [u8; SAMPLE_BYTES],
}

/// One batch of decoded flows in columns.
#[derive(Debug)]
pub struct FlowBatch {
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
    pub malformed: Vec<MalformedSample>,
    /// When the first datagram of this batch was received (latency from receive to commit).
    pub opened_at: Option<Instant>,
    /// When the shard sealed it and queued it for a writer.
    pub sealed_at: Option<Instant>,
}

impl FlowBatch {
    /// A batch with room for `capacity` flows (at least one full datagram).
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
            malformed: Vec::with_capacity(MAX_SAMPLES),
            opened_at: None,
            sealed_at: None,
        }
    }

    /// Flows in the batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.flow_start_ms.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.flow_start_ms.is_empty() && self.malformed.is_empty()
    }

    /// Flow capacity reserved at creation.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `flows` more flows fit without growing any vector.
    #[inline]
    pub fn has_room_for(&self, flows: usize) -> bool {
        self.len() + flows <= self.capacity && self.datagrams.len() < self.datagrams.capacity()
    }

    /// Whether a malformed sample still fits.
    #[inline]
    pub fn has_room_for_sample(&self) -> bool {
        self.malformed.len() < MAX_SAMPLES
    }

    /// Empties the batch, keeping its capacity.
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
        self.malformed.clear();
        self.opened_at = None;
        self.sealed_at = None;
    }
}

/// Converts a column-form address to an `Ipv4Addr` when it is IPv4-mapped.
pub fn as_v4(v: u128) -> Option<Ipv4Addr> {
    Ipv6Addr::from(v).to_ipv4_mapped()
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
        let mut b = FlowBatch::with_capacity(100);
        let cap = b.src_addr.capacity();
        b.src_addr.push(1);
        b.flow_start_ms.push(1);
        assert_eq!(b.len(), 1);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.src_addr.capacity(), cap);
    }
}
