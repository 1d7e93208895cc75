//! nfpg: a NetFlow collector that stores every flow record in PostgreSQL.
//!
//! The pipeline, in order (each folder depends only on those before it; ARCHITECTURE.md
//! has the map and the invariants):
//!
//! 1. [`ingest`]: one pinned [`ingest::shard`] thread per SO_REUSEPORT socket receives
//!    batches of datagrams through [`ingest::recv`] (io_uring or recvmmsg);
//! 2. [`decode`]: each datagram into columns, with the pure decoders of `nfpg-wire`;
//! 3. [`flow`]: sealed [`flow::batch::FlowBatch`]es travel to the writers over the
//!    lock-free [`flow::handoff`] queues;
//! 4. [`store`]: writer threads stream them into PostgreSQL with binary COPY, exactly once;
//! 5. [`obs`]: counters, latency histograms, metrics and per-exporter statistics, written by
//!    the stages above and read by the reporting side.
//!
//! At the top only wiring: [`config`] (the command line), [`collector`] (start and orderly
//! stop), [`cmd`] (the other sub-commands), and two leaves every stage may use: [`sys`] (the
//! few libc calls outside the receive backends) and [`addr`] (address blocks).

pub mod addr;
pub mod cmd;
pub mod collector;
pub mod config;
pub mod dashboard;
pub mod decode;
pub mod flow;
pub mod ingest;
pub mod obs;
pub mod store;
pub mod sys;
