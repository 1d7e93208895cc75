//! The binary end to end against a UDP socket the test reads: `--drop-every` accounting,
//! replay of the softflowd fixture, v9 and IPFIX runs decoded by nfpg-wire's decoder
//! (templates, late templates, sequences, sampling options), and the refusals (non-loopback
//! target, unbounded run, v5 limits).

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{loadgen, num};
use nfpg_wire::columns::{Columns, DatagramMeta, SamplingSource};
use nfpg_wire::netflow as nf;
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
    fails_with(&["--count", "1", "--records", "31"], "at most 30");
    fails_with(
        &["--count", "1", "--late-template", "2"],
        "--version 9 or 10",
    );
    fails_with(&["--count", "1", "--version", "7"], "not 5, 9 or 10");
}

/// `--hostile-rate` never spoofs an exporter's address, never runs with `--verify` (its
/// impostors are stored under the exporters' addresses) and refuses a run whose sequence span
/// leaves impostors no room.
#[test]
fn refuses_unsafe_hostile_runs() {
    let base = ["--target", "127.0.0.1:9", "--hostile-rate", "10"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(extra).copied().collect()
    };
    fails_with(
        &with(&["--count", "1", "--exporter-list", "127.1.0.1,127.64.0.7"]),
        "hostile sources",
    );
    fails_with(
        &with(&["--count", "1", "--hostile-sources", "0"]),
        "--hostile-sources",
    );
    fails_with(
        &with(&[
            "--count",
            "1",
            "--verify",
            "--database-url",
            "host=/nonexistent",
        ]),
        "cannot be used with",
    );
    fails_with(
        &with(&["--exporters", "1", "--duration", "100"]),
        "no impostor sequence",
    );
}

/// What nfpg-wire's v9/IPFIX decoder makes of one exporter's datagrams, in arrival order.
#[derive(Default)]
struct Decoded {
    flows: u64,
    packets: u64,
    bytes: u64,
    /// Per datagram: header sequence, whether it carried the flow template, flow records,
    /// length.
    datagrams: Vec<(u32, bool, u16, usize)>,
    /// Data sets held because their template had not come yet.
    held: usize,
    sampling: Vec<u32>,
    sampling_source: Vec<u8>,
    start_ms: Vec<i64>,
    end_ms: Vec<i64>,
}

/// Decodes `dgs` as a collector would: templates and options learned as they come, data sets
/// before their template held and decoded once it arrives.
fn decode_exporter(dgs: &[Vec<u8>], version: nf::Version) -> Decoded {
    use std::collections::HashMap;
    let mut plans: HashMap<u16, nf::Plan> = HashMap::new();
    let mut options: HashMap<u16, nf::Template> = HashMap::new();
    let mut init_ms: Option<i64> = None;
    let mut interval: Option<u32> = None;
    let mut held: Vec<(nf::Header, u16, Vec<u8>)> = Vec::new();
    let mut cols = Columns::with_capacity(1 << 16);
    let mut out = Decoded::default();

    fn data(
        plan: &nf::Plan,
        h: &nf::Header,
        body: &[u8],
        init_ms: Option<i64>,
        interval: Option<u32>,
        cols: &mut Columns,
    ) -> u16 {
        let meta = DatagramMeta {
            exporter: 1,
            received_us: 0,
        };
        let lookup = move |_: Option<u64>| interval.map(|i| (i, SamplingSource::OptionsExporter));
        let mut ctx = nf::DataContext::new(h, &meta, &lookup);
        ctx.system_init_ms = init_ms;
        let o = nf::decode_data(plan, &ctx, body, cols).expect("data set decodes");
        assert_eq!(o.padding, 0);
        assert!(!o.time_fallback, "flow times from uptime stamps");
        o.records
    }

    for d in dgs {
        let (h, body) = nf::parse_header(d).expect("header");
        assert_eq!(h.version, version);
        let mut with_template = false;
        let mut records = 0u16;
        for set in nf::sets(version, body) {
            let (_, set) = set.expect("set");
            match set {
                nf::Set::Templates(b) => {
                    for t in nf::parse_templates(version, b).expect("templates") {
                        let nf::TemplateRecord::Define(t) = t else {
                            panic!("withdrawal")
                        };
                        with_template = true;
                        let plan = nf::Plan::new(&t, version).expect("plan");
                        let (ready, wait): (Vec<_>, Vec<_>) =
                            held.drain(..).partition(|(_, id, _)| *id == t.id);
                        held = wait;
                        for (hh, _, b) in ready {
                            data(&plan, &hh, &b, init_ms, interval, &mut cols);
                        }
                        plans.insert(t.id, plan);
                    }
                }
                nf::Set::OptionsTemplates(b) => {
                    for t in nf::parse_options_templates(version, b).expect("options") {
                        let nf::TemplateRecord::Define(t) = t else {
                            panic!("withdrawal")
                        };
                        options.insert(t.id, t);
                    }
                }
                nf::Set::Data { template_id, body } => {
                    if let Some(t) = options.get(&template_id) {
                        for r in nf::decode_options(t, version, body).expect("options data") {
                            init_ms = r.system_init_ms.or(init_ms);
                            interval = r.interval().or(interval);
                        }
                    } else if let Some(plan) = plans.get(&template_id) {
                        records += data(plan, &h, body, init_ms, interval, &mut cols);
                    } else {
                        out.held += 1;
                        records += (body.len() / 42) as u16;
                        held.push((h, template_id, body.to_vec()));
                    }
                }
                nf::Set::Reserved { id, .. } => panic!("reserved set {id}"),
            }
        }
        out.datagrams
            .push((h.sequence, with_template, records, d.len()));
    }
    assert!(held.is_empty(), "data sets never decoded");
    out.flows = cols.len() as u64;
    out.packets = cols.packets.iter().sum();
    out.bytes = cols.bytes.iter().sum();
    out.sampling = cols.sampling_interval.clone();
    out.sampling_source = cols.sampling_source.clone();
    out.start_ms = cols.flow_start_ms.clone();
    out.end_ms = cols.flow_end_ms.clone();
    out
}

/// Runs the generator in `version` into a sink and decodes every exporter's datagrams.
fn templated_run(version: &str, extra: &[&str]) -> (serde_json::Value, HashMap<String, Decoded>) {
    let (sock, addr) = sink(false);
    let target = addr.to_string();
    let reader = std::thread::spawn(move || drain(&sock, 10_000));
    let mut args = vec![
        "--version",
        version,
        "--target",
        &target,
        "--exporters",
        "2",
        "--rate",
        "5000",
        "--seed",
        "5",
    ];
    args.extend_from_slice(extra);
    let report = loadgen(&args);
    let got = reader.join().expect("reader thread");
    assert_eq!(num(&report, &["version"]), version.parse::<u64>().unwrap());
    assert_eq!(got.len() as u64, num(&report, &["sent", "datagrams"]));
    let v = if version == "9" {
        nf::Version::V9
    } else {
        nf::Version::Ipfix
    };
    let mut by_src: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for (from, d) in got {
        by_src.entry(from.ip().to_string()).or_default().push(d);
    }
    let decoded = by_src
        .into_iter()
        .map(|(a, dgs)| (a, decode_exporter(&dgs, v)))
        .collect();
    (report, decoded)
}

#[test]
fn v9_and_ipfix_decode_to_the_reported_totals() {
    for version in ["9", "10"] {
        // 2 exporters × 45 datagrams of 34 records: templates (and sampling options) in
        // datagrams 0, 20 and 40 of each, which then hold fewer records.
        let (report, dec) = templated_run(
            version,
            &["--count", "90", "--records", "34", "--sampling", "100"],
        );
        let (t0, t1) = (
            num(&report, &["started_at_unix_ms"]) as i64,
            num(&report, &["ended_at_unix_ms"]) as i64,
        );
        let mut total = (0, 0, 0);
        for e in report["exporters"].as_array().expect("exporters") {
            let a = e["address"].as_str().expect("address");
            let d = &dec[a];
            assert_eq!(
                (d.flows, d.packets, d.bytes),
                (num(e, &["flows"]), num(e, &["packets"]), num(e, &["bytes"])),
                "v{version} {a}"
            );
            total = (total.0 + d.flows, total.1 + d.packets, total.2 + d.bytes);
            assert_eq!(d.held, 0);
            assert_eq!(num(e, &["template_datagrams"]), 3);
            let mut flows_before = 0u32;
            for (k, &(seq, with_template, records, len)) in d.datagrams.iter().enumerate() {
                assert!(len <= 1472, "v{version} {a} datagram {k}: {len} bytes");
                assert_eq!(with_template, k % 20 == 0, "v{version} {a} datagram {k}");
                let max = match (version, with_template) {
                    (_, false) => 34,
                    ("9", true) => 32,
                    _ => 31,
                };
                assert_eq!(records, max, "v{version} {a} datagram {k}");
                // v9 counts datagrams, IPFIX the flow records before the message.
                let want = if version == "9" {
                    k as u32
                } else {
                    flows_before
                };
                assert_eq!(seq, want, "v{version} {a} datagram {k} sequence");
                flows_before += u32::from(records);
            }
            assert_eq!(
                num(e, &["next_seq"]),
                u64::from(d.datagrams[44].0) + {
                    if version == "9" {
                        1
                    } else {
                        34
                    }
                }
            );
            assert!(
                d.sampling.iter().all(|&s| s == 100),
                "sampling from options"
            );
            assert!(d.sampling_source.iter().all(|&s| s == 4));
            for (s, e) in d.start_ms.iter().zip(&d.end_ms) {
                assert!(t0 - 62_000 <= *s && s <= e && *e <= t1 + 1000, "{s} {e}");
            }
        }
        assert_eq!(
            total,
            (
                num(&report, &["sent", "flows"]),
                num(&report, &["sent", "packets"]),
                num(&report, &["sent", "bytes"])
            )
        );
    }
}

#[test]
fn late_template_sends_data_first() {
    for version in ["9", "10"] {
        let (report, dec) = templated_run(
            version,
            &[
                "--count",
                "20",
                "--late-template",
                "3",
                "--template-every",
                "5",
            ],
        );
        assert_eq!(num(&report, &["late_template"]), 3);
        for e in report["exporters"].as_array().expect("exporters") {
            let a = e["address"].as_str().expect("address");
            let d = &dec[a];
            let carried: Vec<bool> = d.datagrams.iter().map(|x| x.1).collect();
            // Datagrams 3 and 8: the first template after 3 data datagrams, then every 5.
            let want: Vec<bool> = (0..10).map(|k| k == 3 || k == 8).collect();
            assert_eq!(carried, want, "v{version} {a}");
            assert_eq!(
                d.held, 3,
                "v{version} {a}: three data sets before the template"
            );
            assert_eq!(
                (d.flows, d.packets, d.bytes),
                (num(e, &["flows"]), num(e, &["packets"]), num(e, &["bytes"])),
                "v{version} {a}"
            );
        }
    }
}

#[test]
fn v5_and_templated_runs_carry_the_same_flows() {
    let mut totals = Vec::new();
    for version in ["5", "9", "10"] {
        let (sock, addr) = sink(false);
        let target = addr.to_string();
        let reader = std::thread::spawn(move || drain(&sock, 1000));
        let report = loadgen(&[
            "--version",
            version,
            "--target",
            &target,
            "--count",
            "40",
            "--seed",
            "3",
        ]);
        reader.join().expect("reader thread");
        totals.push(report["sent"].clone());
    }
    assert_eq!(totals[0], totals[1]);
    assert_eq!(totals[0], totals[2]);
}
