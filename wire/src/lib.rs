//! nfpg's wire formats, with no I/O, no database, no threads and no allocator choice: bytes
//! in, columns out (and back, for the load generator and the tests).
//!
//! - [`columns`]: the flow columns every decoder fills ([`columns::Columns`], a struct of
//!   arrays) and the per-datagram header record.
//! - [`v5`]: the NetFlow v5 decoder; [`v5::encode`] is the one v5 encoder, used by
//!   `nfpg-loadgen`, the tests and the benches.
//! - [`netflow`]: NetFlow v9 and IPFIX: header, sets, templates, compiled plans, data and
//!   options records; [`netflow::encode`] builds v9/IPFIX datagrams for tests and load.
//! - [`pcap`]: a reader for classic pcap and pcapng captures (UDP datagrams only).
//!
//! The collector (`nfpg`) wraps [`columns::Columns`] in its batch type; nothing here knows
//! about batches, queues or PostgreSQL.
#![forbid(unsafe_code)]

pub mod columns;
#[doc(hidden)]
pub mod fuzzing;
pub mod netflow;
pub mod pcap;
pub mod v5;
