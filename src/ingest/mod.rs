//! The ingest stage: sockets, receive backends and the shard loop.
//!
//! [`recv`] owns the sockets and the one [`recv::Receiver`] interface with its io_uring and
//! recvmmsg backends; [`shard`] runs one pinned thread per socket that decodes into batches
//! (through [`crate::decode`]) and hands sealed batches to the writers over
//! [`crate::flow::handoff`]. Counters go to [`crate::obs::stats`].

pub mod recv;
pub mod shard;
