//! The committed v9 and IPFIX expectations are tshark's decoding: `fixtures/make-expected.py`
//! rebuilds them from the captures with the real tshark and they must come out byte for byte;
//! and their totals are those nfdump reports for the same captures.

mod common;

use std::net::IpAddr;
use std::process::Command;

use common::{fixture, require_tool};

const CSVS: [&str; 2] = ["softflowd-v9.expected.csv", "softflowd-ipfix.expected.csv"];

/// The header and rows of a committed CSV, each row a map from column name to cell.
fn table(name: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            assert_eq!(cells.len(), header.len(), "{name}: {l}");
            header
                .iter()
                .zip(cells)
                .map(|(h, c)| (h.to_string(), c.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn expected_csvs_are_tsharks_decoding() {
    require_tool("tshark", "tshark");
    require_tool("python3", "python3");
    let out = tempfile::tempdir().unwrap();
    let script = fixture("make-expected.py");
    let run = Command::new("python3")
        .arg(&script)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("run fixtures/make-expected.py");
    assert!(
        run.status.success(),
        "make-expected.py failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for name in CSVS {
        let made = std::fs::read(out.path().join(name)).unwrap();
        let committed = std::fs::read(fixture(name)).unwrap();
        assert!(
            made == committed,
            "{name}: tshark's decoding differs from the committed file; \
             run python3 fixtures/make-expected.py and review the diff"
        );
    }
}

#[test]
fn expected_csvs_have_nfdumps_totals() {
    for name in CSVS {
        let rows = table(name);
        let sum = |col: &str| -> u64 { rows.iter().map(|r| r[col].parse::<u64>().unwrap()).sum() };
        assert_eq!(rows.len(), 688, "{name}: flows");
        assert_eq!(sum("packets"), 3_918, "{name}: packets");
        assert_eq!(sum("bytes"), 2_079_064, "{name}: bytes");
        let v6 = rows.iter().filter(|r| r["ip_version"] == "6").count();
        assert_eq!(v6, 6, "{name}: IPv6 flows");
        for r in &rows {
            // Addresses are written as Rust displays them, so a decoder's output compares as text.
            for col in ["exporter", "src_addr", "dst_addr"] {
                let ip: IpAddr = r[col].parse().unwrap();
                assert_eq!(ip.to_string(), r[col], "{name}: {col}");
                if col != "exporter" {
                    assert_eq!(ip.is_ipv6(), r["ip_version"] == "6", "{name}: {col}");
                }
            }
            let (start, end): (u64, u64) = (
                r["flow_start_ms"].parse().unwrap(),
                r["flow_end_ms"].parse().unwrap(),
            );
            assert!(start <= end, "{name}: flow ends before it starts");
        }
    }
}

#[test]
fn v9_and_ipfix_exports_carry_the_same_flows() {
    let key = |r: &std::collections::BTreeMap<String, String>| {
        [
            "template_id",
            "src_addr",
            "dst_addr",
            "src_port",
            "dst_port",
            "icmp_type",
            "protocol",
            "tcp_flags",
            "tos",
            "packets",
            "bytes",
            "direction",
            "flow_end_reason",
        ]
        .map(|c| r[c].clone())
    };
    let v9 = table(CSVS[0]);
    let ipfix = table(CSVS[1]);
    assert_eq!(v9.len(), ipfix.len());
    for (a, b) in v9.iter().zip(&ipfix) {
        assert_eq!(key(a), key(b));
        // The same traffic, so the same times: v9's header clock is whole seconds plus
        // sysUptime, IPFIX's systemInitTimeMilliseconds is exact, so v9 runs up to 1 s early.
        for col in ["flow_start_ms", "flow_end_ms"] {
            let (t9, t10): (i64, i64) = (a[col].parse().unwrap(), b[col].parse().unwrap());
            assert!(
                (0..1000).contains(&(t10 - t9)),
                "{col}: v9 {t9}, IPFIX {t10} (frame {})",
                a["frame"]
            );
        }
    }
}
