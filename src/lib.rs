//! nfpg: a NetFlow collector that stores every flow record in PostgreSQL.
//!
//! Data path: [`recv`] (one socket per shard) → [`v5`] decode into [`batch::FlowBatch`]
//! columns → [`pipeline`] queues → writer threads encoding [`copy`] tuples into PostgreSQL.
pub mod batch;
pub mod copy;
pub mod recv;
pub mod v5;
