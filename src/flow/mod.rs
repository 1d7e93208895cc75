//! The flow stage: what moves between shards and writers.
//!
//! [`batch::FlowBatch`] (v5 flows as their records, other flows in columns, plus malformed
//! samples), [`copy`] (the binary COPY format both are written in: the shards call
//! [`copy::v5_rows`], the writers [`copy::stream`] and [`copy::encode_copy`]), [`handoff::Handoff`] (the bounded
//! lock-free queue that carries batches to the writers, and the pool they come back to) and
//! [`reason::Reason`] (why a datagram was not decoded). Depends only on `nfpg-wire`.

pub mod batch;
pub mod copy;
pub mod handoff;
pub mod reason;
