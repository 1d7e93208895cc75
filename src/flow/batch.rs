//! Batches: the unit that moves from a shard to a writer.
//!
//! A [`FlowBatch`] holds flows two ways. NetFlow v5 from IPv4 exporters (the bulk of most
//! networks' exports) arrives as [`V5Rows`]: the shard checks each datagram, flags its rows'
//! times and keeps its records as they are ([`super::copy::v5_rows`]); the writer encodes
//! them into binary COPY tuples as it sends them. Everything else (v9, IPFIX, v5 over IPv6)
//! is decoded into [`Columns`], which the writer encodes. Around them: a few sampled malformed datagrams and
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

/// NetFlow v5 rows as their 48-byte records, with the datagrams they came from. They become
/// binary COPY tuples ([`super::copy::V5_SHAPE`], about 246 bytes a row) only as they are
/// written ([`super::copy::Piece::V5`]), a chunk at a time into a buffer that stays in cache:
/// a batch holds a fifth of the bytes, and the shard no longer writes every row's tuple into a
/// batch whose memory is cold (at 50,000 datagrams/s that was a quarter of the collector's
/// CPU).
#[derive(Debug, Default)]
pub struct V5Rows {
    /// The records as the datagrams carried them, 48 bytes each; a datagram's `first_flow`
    /// counts records.
    pub records: Vec<u8>,
    /// One per datagram.
    pub datagrams: Vec<DatagramInfo>,
    /// One per datagram: what its tuples need beyond the header values in `datagrams`.
    pub encoding: Vec<V5Encoding>,
    /// Per datagram: its flows' packets and bytes (for the exporter statistics).
    pub totals: Vec<(u64, u64)>,
    pub rows: usize,
    /// Rows flagged `time_suspect` (each tuple one byte longer than the others).
    pub suspect: usize,
}

/// Per datagram of [`V5Rows`]: the exporter's IPv4 address and the flow times (ms since the
/// Unix epoch) beyond which a row is flagged `time_suspect`, as the shard decided them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V5Encoding {
    /// The exporter's address, big-endian.
    pub exporter_v4: u32,
    /// A flow starting or ending after this is suspect.
    pub latest_ms: i64,
    /// A flow ending before this is suspect.
    pub earliest_ms: i64,
}

impl V5Rows {
    /// Room for `flows` rows of `datagrams` datagrams, reserved now (pages are only mapped in
    /// when first written) so filling a batch never allocates.
    fn with_capacity(flows: usize, datagrams: usize) -> Self {
        Self {
            records: Vec::with_capacity(flows * nfpg_wire::v5::RECORD_LEN),
            datagrams: Vec::with_capacity(datagrams),
            encoding: Vec::with_capacity(datagrams),
            totals: Vec::with_capacity(datagrams),
            rows: 0,
            suspect: 0,
        }
    }

    /// Bytes of the binary COPY tuples these rows encode to (no header or trailer).
    pub fn encoded_len(&self) -> usize {
        self.rows * super::copy::V5_TUPLE_LEN + self.suspect
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.datagrams.clear();
        self.encoding.clear();
        self.totals.clear();
        self.rows = 0;
        self.suspect = 0;
    }
}

/// One batch of flows (v5 records and decoded columns), with its malformed samples.
#[derive(Debug)]
pub struct FlowBatch {
    /// Flows decoded into columns (everything but [`V5Rows`]).
    pub flows: Columns,
    /// NetFlow v5 flows from IPv4 exporters, as their records.
    pub v5: V5Rows,
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
            v5: V5Rows::with_capacity(flows.capacity(), flows.datagrams.capacity()),
            flows,
            malformed: Vec::with_capacity(MAX_SAMPLES),
            opened_at: None,
            sealed_at: None,
        }
    }

    /// Flows in the batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.flows.len() + self.v5.rows
    }

    /// Neither flows nor malformed samples.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty() && self.v5.rows == 0 && self.malformed.is_empty()
    }

    /// Whether `flows` more flows (of one datagram, in either form) fit.
    #[inline]
    pub fn has_room_for(&self, flows: usize) -> bool {
        self.flows.has_room_for(flows + self.v5.rows)
            && self.v5.datagrams.len() < self.v5.datagrams.capacity()
    }

    /// Every datagram of the batch with its flows' packets and bytes, both forms.
    pub fn datagrams(&self) -> impl Iterator<Item = (&DatagramInfo, (u64, u64))> {
        self.flows
            .datagrams
            .iter()
            .map(|d| (d, self.flows.totals_of(d)))
            .chain(self.v5.datagrams.iter().zip(self.v5.totals.iter().copied()))
    }

    /// Whether a malformed sample still fits.
    #[inline]
    pub fn has_room_for_sample(&self) -> bool {
        self.malformed.len() < MAX_SAMPLES
    }

    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        self.flows.clear();
        self.v5.clear();
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
