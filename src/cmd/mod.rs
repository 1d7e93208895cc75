//! The sub-commands other than `run`: the original's one-datagram test mode, `migrate`,
//! `exporters`, `hist`, `spool` (what waits on disk), `server` (the private PostgreSQL on its
//! own) and `describe` (what the
//! outputs are made of, for tools). Each is a small function over the stages below.

pub mod anomalies;
pub mod describe;
pub mod exporters;
pub mod hist;
pub mod migrate;
pub mod server;
pub mod spool;
pub mod test_mode;
pub mod top;
