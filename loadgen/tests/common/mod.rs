//! Helpers shared by the integration tests: running the built binary and reading its report.

#![allow(dead_code)] // each test file uses a different subset

use std::process::Command;

use serde_json::Value;

/// Runs `nfpg-loadgen` with `args`, asserts it exited 0, and parses its JSON report.
pub fn loadgen(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_nfpg-loadgen"))
        .args(args)
        .output()
        .expect("running nfpg-loadgen");
    assert!(
        out.status.success(),
        "nfpg-loadgen {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

/// A report field as u64, failing the test with the path if it is missing.
pub fn num(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("report has no number at {path:?}: {v}"))
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("binding an ephemeral UDP port")
        .port()
}
