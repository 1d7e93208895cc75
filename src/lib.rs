//! nfpg: a NetFlow collector that stores every flow record in PostgreSQL.
//!
//! Data path: [`recv`] (one socket per [`shard`]) → [`v5`] decode into [`batch::FlowBatch`]
//! columns → [`pipeline`] queues → [`writer`] threads streaming [`copy`] tuples into
//! PostgreSQL. Around it: [`collector`] (start and orderly stop), [`config`], [`db`]
//! (migrations), [`pgserver`] (the private server used when none is configured),
//! [`exporters`] (per-exporter statistics and sequence loss), [`stats`].
pub mod batch;
pub mod collector;
pub mod config;
pub mod copy;
pub mod db;
pub mod exporters;
pub mod histreport;
pub mod inspect;
pub mod latency;
pub mod metrics;
pub mod pcap;
pub mod pgserver;
pub mod pipeline;
pub mod recv;
pub mod shard;
pub mod stats;
pub mod v5;
pub mod writer;
