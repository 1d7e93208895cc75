//! nfpg: a NetFlow collector that stores every flow record in PostgreSQL.
pub mod recv;
