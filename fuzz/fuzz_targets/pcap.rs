//! Fuzz target `pcap`: capture files (`nfpg_wire::pcap::udp_packets`).
//! The body is `nfpg_wire::fuzzing::pcap`, shared with the corpus replay that `cargo test` runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nfpg_wire::fuzzing::pcap(data));
