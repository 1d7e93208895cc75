//! Fuzz target `spool_segment`: spool segment files (`nfpg::store::spool::parse_segment`).
//! The body is `nfpg::store::fuzzing::spool_segment`, shared with the corpus replay that `cargo test` runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nfpg::store::fuzzing::spool_segment(data));
