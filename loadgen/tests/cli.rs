//! The binary end to end against a UDP socket the test reads: `--drop-every` accounting,
//! replay of the softflowd fixture, and the refusals (non-loopback target, unbounded run).

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{loadgen, num};
use socket2::{Domain, Protocol, Socket, Type};

/// A receiving socket on 127.0.0.1 (or ::1) with a large buffer, so nothing is lost at
/// test rates.
fn sink(v6: bool) -> (UdpSocket, SocketAddr) {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    let _ = s.set_recv_buffer_size(8 << 20);
    let any: SocketAddr = if v6 { "[::1]:0" } else { "127.0.0.1:0" }
        .parse()
        .expect("addr");
    s.bind(&any.into()).expect("bind");
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let addr = s.local_addr().expect("local addr");
    (s, addr)
}

/// Reads datagrams until none arrive for 300 ms (bounded by `max`).
fn drain(s: &UdpSocket, max: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while out.len() < max {
        match s.recv_from(&mut buf) {
            Ok((n, from)) => out.push((from, buf[..n].to_vec())),
            Err(_) => break,
        }
    }
    out
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[test]
fn drop_every_skips_datagrams_but_advances_sequences() {
    drop_every_with("bind");
}

#[test]
fn drop_every_with_pktinfo_sources() {
    drop_every_with("pktinfo");
}

fn drop_every_with(mode: &str) {
    let (sock, addr) = sink(false);
    let target = addr.to_string();
    let reader = std::thread::spawn(move || drain(&sock, 10_000));
    // 1000 datagrams over 3 exporters: 334, 333, 333; every 7th of each is dropped.
    let report = loadgen(&[
        "--target",
        &target,
        "--exporters",
        "3",
        "--count",
        "1000",
        "--records",
        "5",
        "--drop-every",
        "7",
        "--rate",
        "20000",
        "--seed",
        "9",
        "--source-mode",
        mode,
    ]);
    let got = reader.join().expect("reader thread");

    let dropped = num(&report, &["dropped_on_purpose", "datagrams"]);
    let sent = num(&report, &["sent", "datagrams"]);
    assert_eq!(dropped, 334 / 7 + 333 / 7 + 333 / 7);
    assert_eq!(sent + dropped, 1000);
    assert_eq!(num(&report, &["sent", "flows"]), sent * 5);
    assert_eq!(num(&report, &["dropped_on_purpose", "flows"]), dropped * 5);
    assert_eq!(
        got.len() as u64,
        sent,
        "the sink received exactly what was sent"
    );

    // Per exporter: the sequence advanced over dropped flows too, and the receiver sees one
    // gap of 5 flows per dropped datagram.
    let mut by_src: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for (from, d) in got {
        by_src.entry(from.ip().to_string()).or_default().push(d);
    }
    for e in report["exporters"].as_array().expect("exporters") {
        let addr = e["address"].as_str().expect("address");
        let d = num(e, &["datagrams"]);
        let dd = num(e, &["dropped_on_purpose", "datagrams"]);
        let span = num(e, &["next_seq"]) - num(e, &["first_seq"]);
        assert_eq!(span, (d + dd) * 5, "{addr}");
        let recv = &by_src[addr];
        assert_eq!(recv.len() as u64, d, "{addr}");
        let mut expected = 0u32;
        let mut gaps = 0;
        for dg in recv {
            let seq = be32(dg, 16);
            if seq != expected {
                assert_eq!(seq, expected + 5, "{addr}: one datagram missing");
                gaps += 1;
            }
            expected = seq + 5;
        }
        assert_eq!(gaps, dd, "{addr}");
    }
}

#[test]
fn replays_the_softflowd_fixture_with_current_time() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/softflowd-v5.pcap");
    assert!(fixture.is_file(), "{} missing", fixture.display());
    let (sock, addr) = sink(false);
    let target = addr.to_string();
    let reader = std::thread::spawn(move || drain(&sock, 1000));
    let report = loadgen(&[
        "--replay",
        fixture.to_str().expect("utf-8 path"),
        "--replay-port",
        "9805",
        "--rewrite-time",
        "--target",
        &target,
        "--rate",
        "1000",
    ]);
    let got = reader.join().expect("reader thread");
    assert_eq!(num(&report, &["sent", "datagrams"]), 23);
    assert_eq!(num(&report, &["sent", "flows"]), 682);
    assert_eq!(num(&report, &["sent", "packets"]), 3858);
    assert_eq!(num(&report, &["sent", "bytes"]), 2_036_135);
    assert_eq!(got.len(), 23);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    for (_, d) in &got {
        assert_eq!(u16::from_be_bytes([d[0], d[1]]), 5);
        let secs = u64::from(be32(d, 8));
        assert!(now.abs_diff(secs) < 60, "header time rewritten to now");
    }
}

/// Every exporter arrives from its own source address, for 10,000 IPv4 exporters in both
/// source modes and for IPv6.
#[test]
fn ten_thousand_exporters_and_ipv6_sources() {
    for (v6, exporters, mode) in [
        (false, 10_000u64, "bind"),
        (false, 10_000, "pktinfo"),
        (true, 5, "bind"),
        (true, 5, "pktinfo"),
    ] {
        let (sock, addr) = sink(v6);
        let target = addr.to_string();
        let count = exporters.to_string();
        let reader = std::thread::spawn(move || drain(&sock, 20_000));
        let report = loadgen(&[
            "--target",
            &target,
            "--exporters",
            &count,
            "--count",
            &count,
            "--records",
            "1",
            "--rate",
            "10000",
            "--threads",
            "2",
            "--source-mode",
            mode,
        ]);
        let got = reader.join().expect("reader thread");
        assert_eq!(num(&report, &["sent", "datagrams"]), exporters, "{mode}");
        assert_eq!(got.len() as u64, exporters, "{mode} v6={v6}");
        let mut sources: Vec<String> = got.iter().map(|(a, _)| a.ip().to_string()).collect();
        sources.sort();
        sources.dedup();
        assert_eq!(sources.len() as u64, exporters, "{mode} v6={v6}");
        let listed = report["exporters"].as_array().expect("exporters");
        assert_eq!(listed.len() as u64, exporters);
        for e in listed {
            let a = e["address"].as_str().expect("address").to_string();
            assert!(sources.binary_search(&a).is_ok(), "{a} not seen");
            assert_eq!(num(e, &["next_seq"]) - num(e, &["first_seq"]), 1);
        }
    }
}

fn fails_with(args: &[&str], needle: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_nfpg-loadgen"))
        .args(args)
        .output()
        .expect("running nfpg-loadgen");
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn refuses_non_loopback_and_unbounded_runs() {
    fails_with(&["--target", "192.0.2.1:2055", "--count", "1"], "loopback");
    fails_with(&["--target", "127.0.0.1:9"], "--count or --duration");
    fails_with(
        &["--count", "1", "--exporter-list", "10.0.0.1"],
        "127.0.0.0/8",
    );
}
