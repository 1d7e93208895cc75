//! Issue 8, must show 1: PostgreSQL stopped for 60 s while `nfpg-loadgen` sends 100,000
//! flows/s steadily, then started: stored = sent, nothing twice; the spool grew and emptied,
//! and the metrics showed it while it happened. In a file of its own so that it runs alone
//! (it sends 6.5 million flows).

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_60_second_outage_at_100k_flows_per_second_loses_nothing() {
    let mut db = TestDb::start();
    let metrics = format!("127.0.0.1:{}", free_tcp_port());
    let nfpg = Nfpg::start(&db, &["--metrics", &metrics]);
    let target = nfpg.addr.to_string();
    let url = db.conninfo().to_string();
    // 4 exporters × 30 records × 3,334 datagrams/s ≈ 100,000 flows/s for 65 s.
    let sender = std::thread::spawn(move || {
        run_loadgen(&[
            "--target",
            &target,
            "--exporters",
            "4",
            "--records",
            "30",
            "--rate",
            "3334",
            "--duration",
            "65",
            "--seed",
            "8",
            "--verify",
            "--verify-timeout",
            "240",
            "--verify-settle",
            "3",
            "--database-url",
            &url,
        ])
    });
    std::thread::sleep(Duration::from_secs(2));
    db.stop_server();
    let down_at = Instant::now();
    // Live during the outage: the database is down, the spool grows, nothing is dropped.
    let mut seen_growing = Vec::new();
    while down_at.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(10));
        let m = scrape(&metrics);
        assert_eq!(m["nfpg_database_up"], 0.0);
        assert_eq!(m["nfpg_rows_spool_full_total"], 0.0);
        seen_growing.push(m["nfpg_spool_bytes"]);
    }
    db.start_server();
    assert!(
        seen_growing.windows(2).all(|w| w[1] > w[0]) && seen_growing[0] > 0.0,
        "the spool grew during the outage: {seen_growing:?}"
    );
    let (report, code) = sender.join().unwrap();
    assert_eq!(code, 0, "loadgen --verify: stored = sent: {report}");
    // The spool empties once the replay is done.
    assert!(
        wait_until(Duration::from_secs(120), || scrape(&metrics)
            ["nfpg_spool_segments"]
            == 0.0),
        "spool emptied"
    );
    let m = scrape(&metrics);
    assert_eq!(m["nfpg_database_up"], 1.0);
    let s = nfpg.stop();
    let sent = report["sent"]["flows"].as_u64().unwrap();
    assert_eq!(s["datagrams"], report["sent"]["datagrams"]);
    assert_eq!(s["kernel_drops"], 0, "{s}");
    assert_eq!(s["flows"].as_u64().unwrap(), sent);
    let spooled = s["rows_spooled"].as_u64().unwrap();
    assert!(
        spooled > 5_000_000,
        "most of the outage went to the spool: {s}"
    );
    assert_eq!(s["rows_replayed"].as_u64().unwrap(), spooled);
    assert_eq!(
        s["rows_written"].as_u64().unwrap() + spooled,
        sent,
        "every flow written live or replayed: {s}"
    );
    assert_eq!(s["spool_bytes"], 0);
    // No duplicates: the count equals what was sent, as do the sums --verify compared.
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.flows") as u64,
        sent,
        "each flow stored once"
    );
}
