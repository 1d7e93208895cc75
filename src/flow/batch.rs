//! Batches: the unit that moves from a shard to a writer.
//!
//! A [`FlowBatch`] is the decoders' [`Columns`] plus what the pipeline adds around them: a
//! few sampled malformed datagrams and the times the batch was opened and sealed. Shards fill
//! batches, writers encode them to binary COPY and hand them back empty; capacity is reserved
//! once, so the steady state allocates nothing.

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

/// One batch of decoded flows in columns, with its malformed samples.
#[derive(Debug)]
pub struct FlowBatch {
    pub flows: Columns,
    pub malformed: Vec<MalformedSample>,
    /// When the first datagram of this batch was received (latency from receive to commit).
    pub opened_at: Option<Instant>,
    /// When the shard sealed it and queued it for a writer.
    pub sealed_at: Option<Instant>,
}

impl FlowBatch {
    /// A batch with room for `capacity` flows (at least one full datagram).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            flows: Columns::with_capacity(capacity),
            malformed: Vec::with_capacity(MAX_SAMPLES),
            opened_at: None,
            sealed_at: None,
        }
    }

    /// Flows in the batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Neither flows nor malformed samples.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty() && self.malformed.is_empty()
    }

    /// Whether a malformed sample still fits.
    #[inline]
    pub fn has_room_for_sample(&self) -> bool {
        self.malformed.len() < MAX_SAMPLES
    }

    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        self.flows.clear();
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
