//! `nfpg top` and `nfpg anomalies` on a real PostgreSQL with known flows: the exact rows and
//! sums (sampling upscale included), from raw flows and from the hourly aggregates.
//!
//! Two exporters send live flows over UDP (one unsampled, one sampling 1 in 100 in the v5
//! header); a third exporter's flows are written straight into the flows table three hours in
//! the past, folded into the aggregates and then deleted from the flows table, so only the
//! aggregates can still answer for them; one of its flows arrives late (after the watermark)
//! and one suspect flow arrives now. The real binary answers, and every row is checked against
//! sums computed here.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use nfpg_wire::v5::encode::{datagram, sampling_field, Header, Record};

/// One known flow and how the expectations see it.
#[derive(Clone, Debug)]
struct Flow {
    exporter: &'static str,
    interval: i128,
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    dport: u16,
    src_as: u16,
    packets: u32,
    bytes: u32,
}

fn ip(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

/// The application name by the rule of `app_names` (the ports this test uses).
fn app(f: &Flow) -> String {
    let named = match (f.proto, f.dport) {
        (6 | 17, 80) => Some("HTTP"),
        (6 | 17, 443) => Some("HTTPS"),
        (6 | 17, 53) => Some("DNS"),
        (6 | 17, 22) => Some("SSH"),
        _ => None,
    };
    match named {
        Some(n) => n.into(),
        None if f.dport < 1024 => format!("system-{}", f.dport),
        None => format!("user-{}", f.dport),
    }
}

/// The key `nfpg top --by by` shows for a flow.
fn key(by: &str, f: &Flow) -> String {
    match by {
        "src" => ip(f.src),
        "dst" => ip(f.dst),
        "pair" => format!("{} -> {}", ip(f.src), ip(f.dst)),
        "app" => app(f),
        "exporter" => f.exporter.into(),
        "port" => format!("{}/{}", f.dport, if f.proto == 6 { "tcp" } else { "udp" }),
        "as" => format!("AS{}", f.src_as),
        _ => unreachable!(),
    }
}

/// flows, packets, bytes, est_flows, est_packets, est_bytes.
type Sums = [i128; 6];

fn add(s: &mut Sums, f: &Flow) {
    let (p, b, n) = (
        i128::from(f.packets),
        i128::from(f.bytes),
        f.interval.max(1),
    );
    let v = [1, p, b, n, p * n, b * n];
    for (a, x) in s.iter_mut().zip(v) {
        *a += x;
    }
}

fn expected(by: &str, flows: &[&Flow]) -> BTreeMap<String, Sums> {
    let mut m: BTreeMap<String, Sums> = BTreeMap::new();
    for f in flows {
        add(m.entry(key(by, f)).or_default(), f);
    }
    m
}

const FIELDS: [&str; 6] = [
    "flows",
    "packets",
    "bytes",
    "est_flows",
    "est_packets",
    "est_bytes",
];

fn sums_of(v: &serde_json::Value) -> Sums {
    let mut s = [0; 6];
    for (i, f) in FIELDS.iter().enumerate() {
        s[i] = i128::from(v[f].as_i64().unwrap_or_else(|| panic!("{f} in {v}")));
    }
    s
}

fn nfpg(db: &TestDb, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nfpg"))
        .args(args)
        .args(["--database-url", db.conninfo()])
        .env_remove("DB_HOST")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run nfpg");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "nfpg {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(db: &TestDb, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = nfpg(db, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Checks one `top --json` answer against the flows it should count.
fn check_top(doc: &serde_json::Value, by: &str, limit: usize, source: &str, flows: &[&Flow]) {
    let want = expected(by, flows);
    let ctx = format!("--by {by}: {doc:#}");
    assert_eq!(doc["command"], "top", "{ctx}");
    assert_eq!(doc["by"], by, "{ctx}");
    assert_eq!(doc["upscaled"], true, "{ctx}");
    assert_eq!(doc["source"], source, "{ctx}");
    assert_eq!(doc["keys"].as_u64().unwrap() as usize, want.len(), "{ctx}");
    let mut total = [0; 6];
    for s in want.values() {
        for (a, x) in total.iter_mut().zip(s) {
            *a += x;
        }
    }
    assert_eq!(sums_of(&doc["totals"]), total, "totals, {ctx}");
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), want.len().min(limit), "{ctx}");
    // Each row exact, with its share of the window's estimated bytes; ranked by estimated
    // bytes (then packets, flows; equal ones in key order, which is the database's).
    let mut ranked: Vec<Sums> = want.values().copied().collect();
    ranked.sort_by(|a, b| (b[5], b[4], b[3]).cmp(&(a[5], a[4], a[3])));
    let mut seen = Vec::new();
    for row in rows {
        let k = row["key"].as_str().unwrap();
        let s = want
            .get(k)
            .unwrap_or_else(|| panic!("unexpected key {k}, {ctx}"));
        assert_eq!(&sums_of(row), s, "{k}, {ctx}");
        let share = s[5] as f64 * 100.0 / total[5] as f64;
        assert!(
            (row["share_percent"].as_f64().unwrap() - share).abs() < 0.001,
            "{k} share, {ctx}"
        );
        seen.push(*s);
    }
    assert_eq!(seen, ranked[..rows.len()], "ranking, {ctx}");
}

#[test]
fn top_and_anomalies_count_exactly_from_flows_and_aggregates() {
    let db = TestDb::start();
    let collector = Nfpg::start(&db, &["--aggregate-interval", "0"]);
    let (a, b) = ("127.0.0.1", "127.0.0.2");
    let mut live: Vec<Flow> = Vec::new();
    let flow = |exporter, interval, src, dst, proto, dport, src_as, packets, bytes| Flow {
        exporter,
        interval,
        src,
        dst,
        proto,
        dport,
        src_as,
        packets,
        bytes,
    };
    // A scanner behind the unsampled exporter: 1200 flows, 200 destinations, 300 ports.
    for i in 0..1200u32 {
        live.push(flow(
            a,
            0,
            [10, 9, 9, 9],
            [192, 0, 2, (i % 200) as u8],
            6,
            2000 + (i % 300) as u16,
            64_500,
            1,
            100,
        ));
    }
    // A quiet source with 500 flows (below the anomaly threshold): web, DNS, port 999.
    for i in 0..500u32 {
        let (proto, dport) = [(6, 443), (6, 80), (17, 53), (6, 999)][(i % 4) as usize];
        live.push(flow(
            a,
            0,
            [10, 7, 7, 7],
            [198, 51, 100, (i % 5) as u8 + 1],
            proto,
            dport,
            64_501,
            10 + i % 7,
            5000 + 13 * i,
        ));
    }
    // 20 flows behind the exporter sampling 1 in 100: 2000 flows estimated.
    for i in 0..20u32 {
        live.push(flow(
            b,
            100,
            [10, 8, 8, 8],
            [203, 0, 113, (i % 4) as u8 + 1],
            6,
            22,
            64_502,
            3 + i,
            1500 * (i + 1),
        ));
    }
    let now = now_secs();
    for (exp, interval, engine) in [(a, 0u16, 1u8), (b, 100, 2)] {
        let recs: Vec<Record> = live
            .iter()
            .filter(|f| f.exporter == exp)
            .map(|f| Record {
                src_addr: f.src,
                dst_addr: f.dst,
                packets: f.packets,
                octets: f.bytes,
                first: 100_000 - 2000,
                last: 100_000 - 1000,
                src_port: 40_000,
                dst_port: f.dport,
                protocol: f.proto,
                src_as: f.src_as,
                dst_as: 64_999,
                ..Record::default()
            })
            .collect();
        let datagrams: Vec<Vec<u8>> = recs
            .chunks(30)
            .enumerate()
            .map(|(i, c)| {
                let h = Header {
                    sys_uptime: 100_000,
                    unix_secs: now,
                    flow_sequence: (i * 30) as u32,
                    engine_id: engine,
                    sampling_interval: sampling_field(interval),
                    ..Header::default()
                };
                datagram(&h, c)
            })
            .collect();
        send_paced(&exporter_socket(exp), collector.addr, &datagrams);
    }
    assert!(
        wait_until(Duration::from_secs(30), || db
            .count("SELECT count(*) FROM netflow.flows")
            == live.len() as i64),
        "flows stored: {}",
        db.count("SELECT count(*) FROM netflow.flows")
    );
    collector.stop();
    let mut c = db.client();
    assert_eq!(
        db.count(
            "SELECT count(*) FROM netflow.flows WHERE exporter = '127.0.0.2' \
             AND sampling_interval = 100 AND sampling_mode = 1"
        ),
        20
    );

    // Three flows of a third exporter (sampling 1 in 10), three hours ago, written straight
    // into the flows table (arrival a minute after the start), folded into the aggregates as a
    // replay does (their arrival is below the watermark), then deleted from the flows table
    // as a short --retention-days would: from now on only the aggregates hold them.
    let old: Vec<Flow> = (0..3u32)
        .map(|i| {
            flow(
                "127.0.0.3",
                10,
                [10, 5, 5, 5],
                [192, 0, 2, 250],
                6,
                443,
                64_503,
                100 + i,
                1_000_000 * (i + 1),
            )
        })
        .collect();
    let insert = |c: &mut postgres::Client, f: &Flow, start: &str, received: &str, suspect| {
        c.execute(
            &format!(
                "INSERT INTO netflow.flows (flow_start, flow_end, src_addr, dst_addr, dst_port,
                     protocol, packets, bytes, src_as, exporter, sampling_interval,
                     netflow_version, received_at, time_suspect)
                 SELECT {start}, {start}, $1::text::inet, $2::text::inet, $3, $4, $5, $6, $7, $8::text::inet, $9,
                        5, {received}, $10"
            ),
            &[
                &ip(f.src),
                &ip(f.dst),
                &i32::from(f.dport),
                &i16::from(f.proto),
                &i64::from(f.packets),
                &i64::from(f.bytes),
                &i64::from(f.src_as),
                &f.exporter,
                &(f.interval as i32),
                &suspect,
            ],
        )
        .expect("insert a flow");
    };
    let three_hours_ago = "date_trunc('hour', now()) - interval '3 hours' + interval '5 minutes'";
    for f in &old {
        insert(
            &mut c,
            f,
            three_hours_ago,
            &format!("{three_hours_ago} + interval '1 minute'"),
            None::<bool>,
        );
    }
    let folded: i64 = c
        .query_one(
            &format!(
                "SELECT netflow.add_to_flow_aggregates({three_hours_ago}, \
                 {three_hours_ago} + interval '2 minutes', false)"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(folded, 3);
    // The live flows, as the housekeeper would (it is off in this run).
    let updated: i64 = c
        .query_one(
            "SELECT netflow.update_flow_aggregates(now(), interval '7 days')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(updated, live.len() as i64);
    let deleted = c
        .execute(
            "DELETE FROM netflow.flows WHERE received_at < now() - interval '1 hour'",
            &[],
        )
        .unwrap();
    assert_eq!(deleted, 3);
    // After the watermark: a late flow of that hour (aggregated later: raw flows answer for
    // it), and a flow with a suspect time (never counted).
    let late = flow(
        "127.0.0.3",
        10,
        [10, 5, 5, 5],
        [192, 0, 2, 251],
        17,
        53,
        64_503,
        7,
        7_000,
    );
    insert(
        &mut c,
        &late,
        "date_trunc('hour', now()) - interval '3 hours' + interval '10 minutes'",
        "now()",
        None::<bool>,
    );
    let suspect = flow(a, 0, [10, 9, 9, 9], [192, 0, 2, 201], 6, 9999, 64_500, 1, 1);
    insert(
        &mut c,
        &suspect,
        "greatest(now() - interval '1 minute', date_trunc('hour', now()))",
        "now()",
        Some(true),
    );

    let live_refs: Vec<&Flow> = live.iter().collect();
    let mut long_refs = live_refs.clone();
    long_refs.extend(old.iter());
    long_refs.push(&late);
    let mut raw_long_refs = live_refs.clone();
    raw_long_refs.push(&late);

    for by in ["src", "dst", "pair", "app", "exporter", "port", "as"] {
        // 30 minutes: no whole hour, raw flows only.
        let doc = json(
            &db,
            &["top", "--last", "30m", "--by", by, "--limit", "1000"],
        );
        check_top(&doc, by, 1000, "flows", &live_refs);
        assert_eq!(doc["window"]["seconds"], 1800);
        assert!(doc["aggregates"].is_null());
        // Six hours: whole hours from the aggregates (the deleted flows are still counted),
        // the rest from raw flows; port and AS are not in the aggregates.
        let doc = json(&db, &["top", "--last", "6h", "--by", by, "--limit", "1000"]);
        if ["port", "as"].contains(&by) {
            check_top(&doc, by, 1000, "flows", &raw_long_refs);
            assert!(doc["aggregates"].is_null());
        } else {
            check_top(&doc, by, 1000, "both", &long_refs);
            assert!(doc["aggregates"]["hours_from"].is_string(), "{doc}");
        }
    }
    // The limit keeps the busiest; keys and totals still count every key.
    let doc = json(
        &db,
        &["top", "--last", "6h", "--by", "pair", "--limit", "3"],
    );
    check_top(&doc, "pair", 3, "both", &long_refs);
    // The default: --last 1h --by src --limit 10.
    let doc = json(&db, &["top"]);
    assert_eq!(
        (doc["by"].as_str(), doc["limit"].as_i64()),
        (Some("src"), Some(10))
    );
    assert_eq!(doc["window"]["last"], "1h");

    // Anomalies: more than 1000 estimated flows in 5 minutes. The sampled source is there by
    // its estimate (20 flows x 100); the suspect flow would have added a destination and a port.
    let doc = json(&db, &["anomalies", "--window", "5m", "--min-flows", "1000"]);
    assert_eq!(doc["command"], "anomalies");
    assert_eq!(doc["upscaled"], true);
    assert_eq!(doc["window"]["seconds"], 300);
    let rows = doc["rows"].as_array().unwrap();
    let srcs: Vec<&str> = rows.iter().map(|r| r["src"].as_str().unwrap()).collect();
    assert_eq!(srcs, ["10.8.8.8", "10.9.9.9"], "{doc:#}");
    let sampled: Vec<&Flow> = live.iter().filter(|f| f.src == [10, 8, 8, 8]).collect();
    let scanner: Vec<&Flow> = live.iter().filter(|f| f.src == [10, 9, 9, 9]).collect();
    assert_eq!(sums_of(&rows[0]), expected("src", &sampled)["10.8.8.8"]);
    assert_eq!(sums_of(&rows[0])[3], 2000);
    assert_eq!(
        (
            rows[0]["destinations"].as_i64(),
            rows[0]["dst_ports"].as_i64()
        ),
        (Some(4), Some(1))
    );
    assert_eq!(sums_of(&rows[1]), expected("src", &scanner)["10.9.9.9"]);
    assert_eq!(
        (
            rows[1]["destinations"].as_i64(),
            rows[1]["dst_ports"].as_i64()
        ),
        (Some(200), Some(300))
    );
    // Just below the scanner's 1200 it stays; at 1200 it goes ("more than").
    let doc = json(&db, &["anomalies", "--window", "5m", "--min-flows", "1199"]);
    assert_eq!(doc["rows"].as_array().unwrap().len(), 2);
    let doc = json(&db, &["anomalies", "--window", "5m", "--min-flows", "1200"]);
    assert_eq!(doc["rows"].as_array().unwrap().len(), 1);

    // The human tables: what was counted and how, aligned columns, SI units.
    let text = nfpg(&db, &["top", "--last", "30m", "--by", "src"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("top 10 sources by est. bytes"),
        "{text}"
    );
    assert!(
        text.contains("est. = counters × sampling interval"),
        "{text}"
    );
    assert!(text.contains("source: raw flows"), "{text}");
    let header = lines
        .iter()
        .position(|l| l.starts_with("source "))
        .expect(&text);
    let width = lines[header].len();
    // 10.8.8.8: 315 kB stored x 100 = 31.5 MB estimated; the scanner 120 kB.
    let row8 = lines
        .iter()
        .find(|l| l.starts_with("10.8.8.8"))
        .expect(&text);
    assert!(
        row8.contains("31.5 MB") && row8.contains("2.00 k"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("10.9.9.9") && l.contains("120 kB")),
        "{text}"
    );
    for l in &lines[header..header + 4] {
        assert_eq!(l.len(), width, "aligned:\n{text}");
    }
    assert!(lines[header + 4].starts_with("3 of 3 sources"), "{text}");
    let text = nfpg(&db, &["top", "--last", "6h", "--by", "app"]);
    assert!(text.contains("hourly aggregates"), "{text}");
    let text = nfpg(&db, &["anomalies", "--window", "5m"]);
    assert!(
        text.contains("sources with more than 1000 est. flows"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("10.9.9.9") && l.contains("1.20 k")),
        "{text}"
    );
}
