//! Fuzz target `v5`: NetFlow v5 datagrams (`nfpg_wire::v5::decode`).
//! The body is `nfpg_wire::fuzzing::v5`, shared with the corpus replay that `cargo test` runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nfpg_wire::fuzzing::v5(data));
