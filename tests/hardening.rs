//! Issue 10, hostile input: the exporter allow-list, flows whose clocks lie, the bounded
//! exporter table, the metrics endpoint under stalled and concurrent clients, and a spoofed
//! flood (`nfpg-loadgen --hostile-rate`). Real nfpg, real PostgreSQL, real UDP datagrams.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// `n` v5 datagrams of `per` flows from `ip`, exported at `unix_secs`, sequence numbers in
/// order from 0.
fn datagrams(n: u32, per: u32, unix_secs: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let recs: Vec<Rec> = (0..per).map(|j| rec(i * per + j)).collect();
            v5_datagram(unix_secs, 60_000 + i, i * per, 0, 0, &recs)
        })
        .collect()
}

/// Datagrams from sources outside --allow-exporters are counted, named and dropped before
/// decoding (garbage among them is not "malformed": it was never decoded); the allowed
/// exporter's flows are all stored.
#[test]
fn allow_list_drops_others_before_decoding_and_names_them() {
    let db = TestDb::start();
    let port = free_tcp_port().to_string();
    let nfpg = Nfpg::start(
        &db,
        &[
            "--allow-exporters",
            "127.0.0.21/32,10.0.0.0/8",
            "--metrics",
            &port,
        ],
    );
    send_paced(
        &exporter_socket("127.0.0.21"),
        nfpg.addr,
        &datagrams(40, 10, now_secs()),
    );
    let mut others = datagrams(25, 10, now_secs());
    others.push(vec![0xff; 7]); // garbage: dropped as not allowed, never decoded
    send_paced(&exporter_socket("127.0.0.22"), nfpg.addr, &others);
    send_paced(
        &exporter_socket("127.0.0.23"),
        nfpg.addr,
        &datagrams(7, 10, now_secs()),
    );
    assert!(wait_until(Duration::from_secs(20), || db
        .count("SELECT count(*) FROM netflow.flows")
        == 400));
    // A bare port listens on loopback.
    let m = scrape(&format!("127.0.0.1:{port}"));
    assert!(wait_until(Duration::from_secs(5), || scrape(&format!(
        "127.0.0.1:{port}"
    ))["nfpg_not_allowed_total:sum"]
        == 33.0));
    assert!(m.contains_key("nfpg_not_allowed_source_datagrams{source=\"127.0.0.22\",error=\"0\"}"));
    let m = scrape(&format!("127.0.0.1:{port}"));
    assert_eq!(
        m["nfpg_not_allowed_source_datagrams{source=\"127.0.0.22\",error=\"0\"}"],
        26.0
    );
    assert_eq!(
        m["nfpg_not_allowed_source_datagrams{source=\"127.0.0.23\",error=\"0\"}"],
        7.0
    );
    let s = nfpg.stop();
    assert_eq!(s["datagrams"], 73);
    assert_eq!(s["not_allowed"], 33);
    assert_eq!(s["decoded_datagrams"], 40);
    assert_eq!(s["malformed"]["total"], 0);
    assert_eq!(
        s["not_allowed_top"],
        serde_json::json!([
            {"source": "127.0.0.22", "datagrams": 26, "error": 0},
            {"source": "127.0.0.23", "datagrams": 7, "error": 0},
        ])
    );
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.flows WHERE host(exporter) <> '127.0.0.21'"),
        0
    );
}

/// Flows dated two days ahead of their arrival, or ended a month before it, are stored with
/// time_suspect set and counted; the analysis functions leave them out.
#[test]
fn flows_with_lying_clocks_are_stored_flagged_and_left_out_of_the_analysis() {
    let db = TestDb::start();
    let nfpg = Nfpg::start(&db, &[]);
    let now = now_secs();
    let sock = exporter_socket("127.0.0.31");
    send_paced(&sock, nfpg.addr, &datagrams(20, 10, now));
    let ahead = exporter_socket("127.0.0.32");
    send_paced(&ahead, nfpg.addr, &datagrams(5, 10, now + 2 * 86_400));
    let behind = exporter_socket("127.0.0.33");
    send_paced(&behind, nfpg.addr, &datagrams(3, 10, now - 30 * 86_400));
    assert!(wait_until(Duration::from_secs(20), || db
        .count("SELECT count(*) FROM netflow.flows")
        == 280));
    let s = nfpg.stop();
    assert_eq!(s["flows_time_suspect"], 80);
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.flows WHERE time_suspect"),
        80
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM netflow.flows WHERE time_suspect IS NULL \
             AND host(exporter) = '127.0.0.31'"
        ),
        200
    );
    // Without the flag, the flows two days ahead would count as "in the last hour".
    assert_eq!(
        db.count("SELECT coalesce(sum(flows), 0)::int8 FROM netflow.top_talkers(1, 100000)"),
        200
    );
    assert_eq!(
        db.count("SELECT coalesce(sum(flows), 0)::int8 FROM netflow.anomalies(60, 0)"),
        200
    );
}

/// With --max-exporters 50, 80 exporters: 50 tracked, the other 30 exporters' datagrams
/// counted as untracked; every flow stored; one exporters row per tracked exporter.
#[test]
fn the_exporter_table_is_bounded() {
    let db = TestDb::start();
    let nfpg = Nfpg::start(&db, &["--max-exporters", "50", "--exporter-interval", "60"]);
    let now = now_secs();
    for i in 1..=80 {
        let sock = exporter_socket(&format!("127.0.1.{i}"));
        send_paced(&sock, nfpg.addr, &datagrams(2, 5, now));
    }
    assert!(wait_until(Duration::from_secs(20), || db
        .count("SELECT count(*) FROM netflow.flows")
        == 800));
    let s = nfpg.stop();
    assert_eq!(s["exporters_tracked"], 50);
    assert_eq!(s["exporters_untracked_datagrams"], 60);
    assert_eq!(db.count("SELECT count(*) FROM netflow.exporters"), 50);
    assert_eq!(
        db.count("SELECT sum(datagrams)::int8 FROM netflow.exporters"),
        100
    );
}

/// One GET of /metrics with a deadline; the status code, or None if it did not answer.
fn get_status(addr: &str, deadline: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(deadline)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_whitespace().nth(1)?.parse().ok()
}

/// Clients that connect and send nothing (or half a request) do not hold up other scrapes,
/// and a crowd of concurrent scrapes is each answered (200, or 503 beyond the limit).
#[test]
fn metrics_endpoint_survives_stalled_and_concurrent_clients() {
    let db = TestDb::start();
    let port = free_tcp_port();
    let nfpg = Nfpg::start(&db, &["--metrics", &port.to_string()]);
    let addr = format!("127.0.0.1:{port}");
    let mut stalled: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    stalled[0].write_all(b"GET /metr").unwrap();
    // Answered while three clients hang (each would hold it for 5 s on one thread).
    assert_eq!(get_status(&addr, Duration::from_secs(3)), Some(200));
    let crowd: Vec<_> = (0..24)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || get_status(&addr, Duration::from_secs(15)))
        })
        .collect();
    let codes: Vec<Option<u16>> = crowd.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        codes.iter().all(|c| matches!(c, Some(200) | Some(503))),
        "{codes:?}"
    );
    assert!(codes.contains(&Some(200)), "{codes:?}");
    drop(stalled);
    assert!(nfpg
        .log()
        .contains(&format!("metrics on http://127.0.0.1:{port}/metrics")));
    nfpg.stop();
}

/// Malformed samples are kept `--malformed-keep-days`: the housekeeper's prune removes exactly
/// the older ones (in batches), and nothing else.
#[test]
fn malformed_samples_past_their_keep_time_are_pruned() {
    use nfpg::store::db::{migrate, Schema};
    let db = TestDb::start();
    let schema = Schema::new("netflow").unwrap();
    let mut c = db.client();
    migrate(&mut c, &schema).unwrap();
    c.batch_execute(
        "INSERT INTO netflow.malformed_datagrams (exporter, received_at, reason, length, head)
         SELECT '127.0.0.9', now() - make_interval(days => d) + interval '1 hour', 'too_short', 3, '\\x00'
         FROM generate_series(1, 30) AS d",
    )
    .unwrap();
    let removed = nfpg::store::housekeeper::prune_malformed(&mut c, &schema, 7).unwrap();
    // Days 8..30 are past a 7-day keep time (day 7 is an hour short of it).
    assert_eq!(removed, 23);
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.malformed_datagrams"),
        7
    );
}

/// Resident memory of a process, in KiB (`VmRSS` in /proc).
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Must show 3: a spoofed flood (4,096 forged source addresses, datagrams with random
/// sequence numbers under the valid exporters' own addresses, malformed and future-dated
/// datagrams) beside four valid exporters that skip one datagram in a hundred: every valid
/// flow is stored, each valid exporter's flows_lost is exactly what it skipped (the forged
/// sequence numbers land in suspect_datagrams, not in loss), every datagram is accounted
/// for, and memory stops growing once the exporter table is full. The rate here suits a
/// debug build on two cores; README's "Hostile input" has the same run at full speed.
#[test]
fn spoofed_flood_leaves_valid_exporters_exact() {
    let db = TestDb::start();
    let nfpg = Nfpg::start(&db, &["--max-exporters", "1500"]);
    let pid = nfpg.pid();
    let target = nfpg.addr.to_string();
    let run = std::thread::spawn(move || {
        run_loadgen(&[
            "--target",
            &target,
            "--exporters",
            "4",
            "--rate",
            "1500",
            "--duration",
            "10",
            "--drop-every",
            "100",
            "--hostile-rate",
            "1500",
            "--hostile-sources",
            "4096",
            "--source-mode",
            "pktinfo",
        ])
    });
    std::thread::sleep(Duration::from_secs(4));
    let rss_mid = rss_kib(pid);
    let (report, code) = run.join().unwrap();
    assert_eq!(code, 0, "{report}");
    let rss_end = rss_kib(pid);
    let h = &report["hostile"];
    let n = |v: &serde_json::Value| v.as_i64().unwrap();
    let valid_flows = n(&report["sent"]["flows"]);
    let stored_expected = valid_flows
        + n(&h["spoofed"]["flows"])
        + n(&h["future"]["flows"])
        + n(&h["impostor"]["flows"]);
    assert!(
        wait_until(Duration::from_secs(30), || db
            .count("SELECT count(*) FROM netflow.flows")
            == stored_expected),
        "stored {} of {stored_expected}",
        db.count("SELECT count(*) FROM netflow.flows")
    );
    let s = nfpg.stop();
    // Every datagram accounted for.
    assert_eq!(s["kernel_drops"], 0);
    assert_eq!(
        s["datagrams"].as_i64().unwrap(),
        n(&report["sent"]["datagrams"]) + n(&h["datagrams"])
    );
    assert_eq!(s["malformed"]["total"], h["malformed"]["datagrams"]);
    assert_eq!(s["flows_time_suspect"], h["future"]["flows"]);
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.flows WHERE time_suspect"),
        n(&h["future"]["flows"])
    );
    // The table stayed within --max-exporters while 4,096 forged sources came and went.
    assert!(s["exporters_tracked"].as_u64().unwrap() <= 1500, "{s}");
    // Each valid exporter: its own flows and the impostors' are stored; its loss is exactly
    // the datagrams it skipped (but the last, if skipped: nothing after it shows the gap).
    let mut c = db.client();
    for (i, e) in report["exporters"].as_array().unwrap().iter().enumerate() {
        let addr = e["address"].as_str().unwrap();
        let imp = &h["impostor"]["by_exporter"][addr];
        let imp_flows = imp["flows"].as_i64().unwrap_or(0);
        let imp_datagrams = imp["datagrams"].as_i64().unwrap_or(0);
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM netflow.flows WHERE host(exporter) = '{addr}'"
            )),
            n(&e["flows"]) + imp_flows,
            "{addr}"
        );
        let built = n(&e["datagrams"]) + n(&e["dropped_on_purpose"]["datagrams"]);
        let trailing = if built % 100 == 0 { 30 } else { 0 };
        let expected_lost = n(&e["dropped_on_purpose"]["flows"]) - trailing;
        let r = c
            .query_one(
                "SELECT flows, flows_lost, restarts, suspect_datagrams FROM netflow.exporters
                 WHERE host(exporter) = $1 AND engine_id = $2",
                &[&addr, &(i as i16)],
            )
            .unwrap();
        let (flows, lost, restarts, suspect): (i64, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(flows, n(&e["flows"]) + imp_flows, "{addr}");
        assert_eq!(lost, expected_lost, "{addr}: flows_lost");
        assert_eq!(restarts, 0, "{addr}: restarts");
        assert_eq!(suspect, imp_datagrams, "{addr}: suspect datagrams");
    }
    eprintln!("nfpg RSS: {rss_mid} KiB 4 s into the flood, {rss_end} KiB at its end");
    // Memory: the second half of the flood adds nothing that stays (batches, queues and
    // the bounded tables were full-sized by then).
    assert!(
        rss_end <= rss_mid + 16 * 1024,
        "RSS grew from {rss_mid} KiB to {rss_end} KiB during the flood"
    );
}
