//! The flow stage: what moves between shards and writers.
//!
//! [`batch::FlowBatch`] (decoded columns plus malformed samples), [`handoff::Handoff`] (the
//! two bounded lock-free queues that carry batches to the writers and back) and
//! [`reason::Reason`] (why a datagram was not decoded). Depends only on `nfpg-wire`.

pub mod batch;
pub mod handoff;
pub mod reason;
