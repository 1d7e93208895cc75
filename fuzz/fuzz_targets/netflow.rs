//! Fuzz target `netflow`: sequences of v9/IPFIX (and any other) datagrams through the
//! collector's stateful `Decoder` (templates, hold, sampling table).
//! The body is `nfpg::decode::fuzzing::netflow`, shared with the corpus replay that `cargo test` runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nfpg::decode::fuzzing::netflow(data));
