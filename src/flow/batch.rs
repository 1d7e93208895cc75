//! Batches: the unit that moves from a shard to a writer.
//!
//! A [`FlowBatch`] holds flows two ways. NetFlow v5 from IPv4 exporters (the bulk of most
//! networks' exports) arrives as [`Tuples`]: the shard turns each datagram straight into
//! binary COPY tuples while its bytes are in cache ([`super::copy::v5_tuples`]), and the
//! writer sends them as they are. Everything else (v9, IPFIX, v5 over IPv6) is decoded into
//! [`Columns`], which the writer encodes. Around them: a few sampled malformed datagrams and
//! the times the batch was opened and sealed. Shards fill batches, writers write them and hand
//! them back empty; capacity is kept, so the steady state allocates nothing.

use std::time::Instant;

pub use nfpg_wire::columns::{
    addr_to_u128, as_v4, u128_to_addr, v4_to_u128, Columns, DatagramInfo, DatagramMeta,
    MAX_FLOWS_PER_DATAGRAM,
};

use super::reason::Reason;

/// Bytes of a malformed datagram kept as a sample.
pub const SAMPLE_BYTES: usize = 64;
/// Malformed samples a batch carries at most (the rest are only counted).
pub const MAX_SAMPLES: usize = 64;

/// A malformed datagram kept as evidence: its first bytes and why it was rejected.
#[derive(Clone, Copy, Debug)]
pub struct MalformedSample {
    pub exporter: u128,
    pub received_us: i64,
    pub reason: Reason,
    pub detail: u32,
    pub length: u32,
    pub head_len: u8,
    pub head: [u8; SAMPLE_BYTES],
}

/// NetFlow v5 rows already in binary COPY form, with the datagrams they came from.
#[derive(Debug, Default)]
pub struct Tuples {
    /// The rows, one binary COPY tuple each, in [`super::copy::V5_SHAPE`].
    pub bytes: Vec<u8>,
    /// One per datagram; `first_flow` counts rows of these tuples.
    pub datagrams: Vec<DatagramInfo>,
    /// Per datagram: its flows' packets and bytes (for the exporter statistics).
    pub totals: Vec<(u64, u64)>,
    pub rows: usize,
}

impl Tuples {
    /// Room for `flows` rows of `datagrams` datagrams, reserved now (pages are only mapped in
    /// when first written) so filling a batch never allocates.
    fn with_capacity(flows: usize, datagrams: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(flows * super::copy::V5_TUPLE_MAX),
            datagrams: Vec::with_capacity(datagrams),
            totals: Vec::with_capacity(datagrams),
            rows: 0,
        }
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.datagrams.clear();
        self.totals.clear();
        self.rows = 0;
    }
}

/// One batch of flows (v5 tuples and decoded columns), with its malformed samples.
#[derive(Debug)]
pub struct FlowBatch {
    /// Flows decoded into columns (everything but [`Tuples`]).
    pub flows: Columns,
    /// NetFlow v5 flows already encoded.
    pub tuples: Tuples,
    pub malformed: Vec<MalformedSample>,
    /// When the first datagram of this batch was received (latency from receive to commit).
    pub opened_at: Option<Instant>,
    /// When the shard sealed it and queued it for a writer.
    pub sealed_at: Option<Instant>,
}

impl FlowBatch {
    /// A batch with room for `capacity` flows (at least one full datagram).
    pub fn with_capacity(capacity: usize) -> Self {
        let flows = Columns::with_capacity(capacity);
        Self {
            tuples: Tuples::with_capacity(flows.capacity(), flows.datagrams.capacity()),
            flows,
            malformed: Vec::with_capacity(MAX_SAMPLES),
            opened_at: None,
            sealed_at: None,
        }
    }

    /// Flows in the batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.flows.len() + self.tuples.rows
    }

    /// Neither flows nor malformed samples.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty() && self.tuples.rows == 0 && self.malformed.is_empty()
    }

    /// Whether `flows` more flows (of one datagram, in either form) fit.
    #[inline]
    pub fn has_room_for(&self, flows: usize) -> bool {
        self.flows.has_room_for(flows + self.tuples.rows)
            && self.tuples.datagrams.len() < self.tuples.datagrams.capacity()
    }

    /// Every datagram of the batch with its flows' packets and bytes, both forms.
    pub fn datagrams(&self) -> impl Iterator<Item = (&DatagramInfo, (u64, u64))> {
        self.flows
            .datagrams
            .iter()
            .map(|d| (d, self.flows.totals_of(d)))
            .chain(
                self.tuples
                    .datagrams
                    .iter()
                    .zip(self.tuples.totals.iter().copied()),
            )
    }

    /// Whether a malformed sample still fits.
    #[inline]
    pub fn has_room_for_sample(&self) -> bool {
        self.malformed.len() < MAX_SAMPLES
    }

    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        self.flows.clear();
        self.tuples.clear();
        self.malformed.clear();
        self.opened_at = None;
        self.sealed_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_keeps_capacity_and_samples_room() {
        let mut b = FlowBatch::with_capacity(100);
        b.flows.flow_start_ms.push(1);
        b.malformed.push(MalformedSample {
            exporter: 1,
            received_us: 0,
            reason: Reason::TooShort,
            detail: 3,
            length: 3,
            head_len: 0,
            head: [0; SAMPLE_BYTES],
        });
        assert!(!b.is_empty());
        b.clear();
        assert!(b.is_empty() && b.has_room_for_sample());
        assert_eq!(b.malformed.capacity(), MAX_SAMPLES);
    }
}
