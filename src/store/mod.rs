//! The store stage: everything that talks to PostgreSQL.
//!
//! [`writer`] (writer threads: sealed batches → binary COPY, exactly once), [`copy`] (the
//! binary COPY encoding), [`db`] (connecting, the schema name, migrations, partitions, the
//! database target), [`pgserver`] (the private server used when none is configured),
//! [`exporters`] (the exporters table's SQL), [`housekeeper`] (the background upkeep
//! thread), [`spool`] (the durable spool on disk), [`spill`] (batches the writers cannot take in
//! time, to the spool), [`replay`] (the thread that probes the
//! database and replays the spool) and [`health`] (whether the database takes writes now), [`aggregates`] (the hourly
//! aggregates and retention). Reads batches from [`crate::flow`], reports to [`crate::obs`].

pub mod aggregates;
pub mod analysis;
/// The binary COPY format lives with the batches (`crate::flow::copy`): the shards write v5
/// tuples in it too.
pub use crate::flow::copy;
pub mod db;
pub mod exporters;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod housekeeper;
pub mod original;
pub mod pgserver;
pub mod replay;
pub mod spill;
pub mod spool;
pub mod templates;
pub mod writer;
