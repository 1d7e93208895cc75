//! Fuzz target `netflow_wire`: one v9/IPFIX message through the building blocks of
//! `nfpg_wire::netflow` (header, sets, templates, plans, data, options).
//! The body is `nfpg_wire::fuzzing::netflow_wire`, shared with the corpus replay that `cargo test` runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nfpg_wire::fuzzing::netflow_wire(data));
