//! The sub-commands other than `run`: the original's one-datagram test mode, `migrate`,
//! `exporters` and `hist`. Each is a small function over the stages below.

pub mod exporters;
pub mod hist;
pub mod migrate;
pub mod test_mode;
