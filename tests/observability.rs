//! Issue 5: latency histograms in an interval log, the metrics endpoint, exporter loss from
//! sequence numbers (skips, u32 wrap, restarts), and ten thousand exporters.

mod common;

use std::collections::BTreeMap;

use std::time::Duration;

use common::*;

/// Sends `n` valid datagrams of `per` flows from one exporter; returns the flows sent.
fn send_valid(nfpg: &Nfpg, ip: &str, n: u32, per: u32) -> u64 {
    let now = now_secs();
    let datagrams: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let recs: Vec<Rec> = (0..per).map(|j| rec(i * per + j)).collect();
            v5_datagram(now, 60_000, i * per, 0, 0, &recs)
        })
        .collect();
    send_paced(&exporter_socket(ip), nfpg.addr, &datagrams);
    u64::from(n * per)
}

/// Must show 1: the --hist-log interval log, read back with the hdrhistogram crate's interval
/// log reader, holds every stage with counts equal to what was sent.
#[test]
fn histogram_log_counts_every_flow() {
    let db = TestDb::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("latency.hlog");
    let nfpg = Nfpg::start(
        &db,
        &[
            "--hist-log",
            log.to_str().unwrap(),
            "--hist-interval",
            "0.3",
        ],
    );
    let flows = send_valid(&nfpg, "127.0.0.7", 700, 30) + send_valid(&nfpg, "127.0.0.8", 301, 7);
    assert!(wait_until(
        Duration::from_secs(20),
        || db.count("SELECT count(*) FROM netflow.flows") as u64 == flows
    ));
    // SIGUSR1 logs the percentiles now, without stopping.
    nfpg.signal(libc::SIGUSR1);
    assert!(wait_until(Duration::from_secs(5), || nfpg
        .log()
        .contains("latency: receive_to_seal")));
    let s = nfpg.stop();
    let (merged, intervals) = nfpg::obs::histreport::read_log(&log).unwrap();
    assert!(intervals >= 2, "several intervals: {intervals}");
    for stage in nfpg::obs::latency::Stage::ALL {
        assert!(
            merged.contains_key(stage.tag()),
            "stage {} in the log",
            stage.tag()
        );
    }
    assert_eq!(
        merged["end_to_end"].len(),
        flows,
        "one end-to-end sample per flow"
    );
    assert_eq!(merged["copy"].len(), s["copies"].as_u64().unwrap());
    let batches = s["batches"].as_u64().unwrap();
    assert!(batches > 0);
    assert_eq!(merged["receive_to_seal"].len(), batches);
    assert_eq!(merged["queue_wait"].len(), batches);
    assert_eq!(merged["batch_fill"].len(), batches);
    // The summary at exit agrees with the log.
    assert_eq!(s["latency"]["end_to_end_us"]["count"], flows);
    assert!(s["latency"]["end_to_end_us"]["p50"].as_u64().unwrap() > 0);
    // `nfpg hist` prints the table and draws the plot.
    let svg = dir.path().join("latency.svg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nfpg"))
        .args([
            "hist",
            log.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("end_to_end") && table.contains(&flows.to_string()),
        "{table}"
    );
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<path"));
}

/// Must show 2: the metrics endpoint, scraped, equals the exact totals sent; malformed
/// datagrams counted by reason.
#[test]
fn metrics_endpoint_counts_exactly() {
    let db = TestDb::start();
    let nfpg = Nfpg::start(&db, &["--metrics", "127.0.0.1:0", "--shards", "2"]);
    assert!(wait_until(Duration::from_secs(10), || nfpg
        .log()
        .contains("metrics on http://")));
    let log = nfpg.log();
    let addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("metrics address in the log")
        .to_string();
    let flows = send_valid(&nfpg, "127.0.0.9", 500, 30);
    let sock = exporter_socket("127.0.0.10");
    let good = v5_datagram(now_secs(), 1000, 0, 0, 0, &[rec(1)]);
    let mut bad_version = good.clone();
    bad_version[1] = 7;
    for _ in 0..13 {
        sock.send_to(&good[..20], nfpg.addr).unwrap();
    }
    for _ in 0..7 {
        sock.send_to(&bad_version, nfpg.addr).unwrap();
    }
    assert!(wait_until(Duration::from_secs(20), || {
        let m = scrape(&addr);
        m["nfpg_rows_written_total:sum"] as u64 == flows
            && m["nfpg_datagrams_total:sum"] as u64 == 520
    }));
    // Exporter rows are counted after their COPY commits; wait for that view too.
    assert!(wait_until(Duration::from_secs(5), || {
        scrape(&addr)
            .get("nfpg_exporter_flows_total{exporter=\"127.0.0.9\",engine=\"0/0\",domain=\"0\"}")
            == Some(&(flows as f64))
    }));
    let m = scrape(&addr);
    assert_eq!(m["nfpg_flows_total:sum"] as u64, flows);
    assert_eq!(m["nfpg_malformed_total:too_short"] as u64, 13);
    assert_eq!(m["nfpg_malformed_total:bad_version"] as u64, 7);
    assert_eq!(m["nfpg_malformed_total:bad_count"] as u64, 0);
    assert_eq!(m["nfpg_kernel_drops_total:sum"] as u64, 0);
    assert_eq!(m["nfpg_rows_dropped_total:sum"] as u64, 0);
    assert_eq!(
        m["nfpg_exporter_lost_flows_total{exporter=\"127.0.0.9\",engine=\"0/0\",domain=\"0\"}"],
        0.0
    );
    assert!(m.contains_key("nfpg_queue_depth"));
    let s = nfpg.stop();
    assert_eq!(s["flows"], flows);
}

/// Must show 3: an exporter that skips sequence ranges, wraps its u32 counter and restarts:
/// the loss reported is what was skipped, no more.
#[test]
fn exporter_loss_with_skips_wrap_and_restart() {
    let db = TestDb::start();
    let nfpg = Nfpg::start(&db, &["--shards", "2", "--balance", "spread"]);
    let sock = exporter_socket("127.0.0.11");
    let now = now_secs();
    let recs: Vec<Rec> = (0..10).map(rec).collect();
    let mut datagrams = Vec::new();
    let mut skipped = 0u64;
    // Epoch 1: booted 100 s ago; sequence starts 2,000 flows below the u32 wrap.
    let mut seq = u32::MAX - 1999;
    for i in 0..600u32 {
        if i % 50 == 25 {
            skipped += 10; // this datagram is "lost": its sequence range is skipped
        } else {
            datagrams.push(v5_datagram(now, 100_000 + i, seq, 1, 0, &recs));
        }
        seq = seq.wrapping_add(10);
    }
    // The exporter restarts (uptime from 0 again, boot time 100 s later) with sequence 0.
    seq = 0;
    for i in 0..300u32 {
        if i == 100 || i == 101 {
            skipped += 10;
        } else {
            datagrams.push(v5_datagram(now + 100, 500 + i, seq, 1, 0, &recs));
        }
        seq += 10;
    }
    send_paced(&sock, nfpg.addr, &datagrams);
    let sent_flows = datagrams.len() as u64 * 10;
    assert!(wait_until(
        Duration::from_secs(20),
        || db.count("SELECT count(*) FROM netflow.flows") as u64 == sent_flows
    ));
    nfpg.stop();
    let r = db
        .client()
        .query_one("SELECT flows, flows_lost, restarts FROM netflow.exporters WHERE host(exporter) = '127.0.0.11'", &[])
        .unwrap();
    assert_eq!(r.get::<_, i64>(0) as u64, sent_flows);
    assert_eq!(
        r.get::<_, i64>(1) as u64,
        skipped,
        "loss = exactly the skipped ranges"
    );
    assert_eq!(r.get::<_, i64>(2), 1, "one restart");
    // `nfpg exporters` shows the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nfpg"))
        .args(["exporters", "--database-url", db.conninfo()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("127.0.0.11 "))
        .unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[5], sent_flows.to_string(), "{line}");
    assert_eq!(cols[6], skipped.to_string(), "{line}");
    assert_eq!(cols[8], "1", "{line}");
    assert!(text.contains("1 exporters"));
}

/// Must show 4 (counts): 10,000 exporters at once, one exporters row each, every count exact.
#[test]
fn ten_thousand_exporters_each_counted_exactly() {
    let db = TestDb::start();
    let nfpg = Nfpg::start(&db, &[]);
    let loadgen =
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_nfpg")).with_file_name("nfpg-loadgen");
    assert!(
        loadgen.is_file(),
        "build the workspace first: cargo build -p nfpg-loadgen"
    );
    let out = std::process::Command::new(&loadgen)
        .args([
            "--target",
            &nfpg.addr.to_string(),
            "--exporters",
            "10000",
            "--count",
            "30000",
        ])
        .args([
            "--rate",
            "15000",
            "--records",
            "10",
            "--verify",
            "--verify-settle",
            "3",
        ])
        .args(["--database-url", db.conninfo()])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report}");
    let s = nfpg.stop();
    assert_eq!(s["datagrams"], 30000);
    let mut c = db.client();
    let r = c
        .query_one("SELECT count(*), min(flows), max(flows), sum(flows)::int8, sum(flows_lost)::int8, sum(datagrams)::int8 FROM netflow.exporters", &[])
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 10_000, "one row per exporter");
    assert_eq!(
        (r.get::<_, i64>(1), r.get::<_, i64>(2)),
        (30, 30),
        "3 datagrams x 10 flows each"
    );
    assert_eq!(r.get::<_, i64>(3), 300_000);
    assert_eq!(r.get::<_, i64>(4), 0);
    assert_eq!(r.get::<_, i64>(5), 30_000);
    // Each exporter's stored packets equal what loadgen says it sent.
    let stored: BTreeMap<String, i64> = c
        .query("SELECT host(exporter), packets FROM netflow.exporters", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for e in report["exporters"].as_array().unwrap() {
        assert_eq!(
            stored[e["address"].as_str().unwrap()],
            e["packets"].as_i64().unwrap()
        );
    }
}

/// An idle collector with the default settings (4 writers, a queue of 256 batches, a spool)
/// is a few tens of MB resident, not the size of its batch pool: the pool is reserved, and
/// only what is used is touched (with transparent huge pages, every touched byte brought in
/// 2 MiB and an idle nfpg was 480 MB; `nfpg::sys::no_transparent_huge_pages`).
#[test]
fn an_idle_collector_stays_small() {
    let db = TestDb::start();
    let nfpg = Nfpg::start(&db, &[]);
    std::thread::sleep(Duration::from_secs(1));
    let status = std::fs::read_to_string(format!("/proc/{}/status", nfpg.pid())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    assert!(
        rss_kb < 150 * 1024,
        "idle nfpg is {} MB resident",
        rss_kb / 1024
    );
    nfpg.stop();
}
