//! Issue 14: past one collector. Several nfpg instances into one database, migrations run by
//! several processes at once, and one collector writing to two database endpoints while one
//! of them is stopped. Real PostgreSQL servers, real UDP datagrams from `nfpg-loadgen` on
//! loopback, exact totals.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Per exporter address: (datagrams, flows, packets, bytes) as loadgen reports it sent them.
fn sent_by_exporter(report: &serde_json::Value) -> BTreeMap<String, [i64; 4]> {
    report["exporters"]
        .as_array()
        .expect("exporters in the loadgen report")
        .iter()
        .map(|e| {
            let n = |k: &str| e[k].as_i64().unwrap_or_else(|| panic!("{k} in {e}"));
            (
                e["address"].as_str().unwrap().to_string(),
                [n("datagrams"), n("flows"), n("packets"), n("bytes")],
            )
        })
        .collect()
}

/// Per exporter address: (rows, packets, bytes) of the flows stored in one database.
fn stored_by_exporter(c: &mut postgres::Client) -> BTreeMap<String, [i64; 3]> {
    c.query(
        "SELECT host(exporter), count(*)::int8, sum(packets)::int8, sum(bytes)::int8
         FROM netflow.flows GROUP BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), [r.get(1), r.get(2), r.get(3)]))
    .collect()
}

/// Brings the aggregates up to now and returns per exporter (flows, packets, bytes) from them.
fn aggregated_by_exporter(c: &mut postgres::Client) -> BTreeMap<String, [i64; 3]> {
    c.execute(
        "SELECT netflow.update_flow_aggregates(now() + interval '1 second', interval '1 day')",
        &[],
    )
    .unwrap();
    assert_eq!(
        c.query_one("SELECT count(*) FROM netflow.flow_aggregates_pending", &[])
            .unwrap()
            .get::<_, i64>(0),
        0,
        "nothing left pending"
    );
    c.query(
        "SELECT host(exporter), sum(flows)::int8, sum(packets)::int8, sum(bytes)::int8
         FROM netflow.flow_aggregates_hourly GROUP BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), [r.get(1), r.get(2), r.get(3)]))
    .collect()
}

/// Must show 1 and 2: two nfpg instances (`--instance collector-a`, `collector-b`) started at
/// the same moment on one fresh database (both run the migrations at once), each on its own
/// port; the load generator sends v5 from two exporters to one and NetFlow v9 from two others
/// to the other, at the same time. Per exporter, the rows stored, the exporters table (one row,
/// under the instance that heard it) and the hourly aggregates (kept by both instances'
/// housekeepers moving one watermark every second) equal what was sent; the templates and COPY
/// markers carry the instance that wrote them.
#[test]
fn two_instances_into_one_database_store_exact_totals() {
    let db = TestDb::start();
    let agg = ["--aggregate-interval", "1", "--aggregate-lag", "0"];
    let start = |name: &'static str| {
        let conninfo = db.conninfo().to_string();
        std::thread::spawn(move || {
            let mut args = vec!["--instance", name, "--writers", "2"];
            args.extend(agg);
            Nfpg::start_with(Some(&conninfo), "127.0.0.1", &args)
        })
    };
    let (a, b) = (start("collector-a"), start("collector-b"));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    for n in [&a, &b] {
        assert!(!n.log().contains("ERROR"), "{}", n.log());
    }
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.nfpg_migrations"),
        nfpg::store::db::MIGRATIONS.len() as i64,
        "every migration recorded once"
    );

    let send = |target: String, version: &'static str, list: &'static str, seed: &'static str| {
        let url = db.conninfo().to_string();
        std::thread::spawn(move || {
            run_loadgen(&[
                "--target",
                &target,
                "--version",
                version,
                "--exporter-list",
                list,
                "--count",
                "4000",
                "--rate",
                "2000",
                "--seed",
                seed,
                "--verify",
                "--verify-timeout",
                "60",
                "--verify-settle",
                "3",
                "--database-url",
                &url,
            ])
        })
    };
    let to_a = send(a.addr.to_string(), "5", "127.1.0.1,127.1.0.2", "41");
    let to_b = send(b.addr.to_string(), "9", "127.2.0.1,127.2.0.2", "42");
    let (ra, code_a) = to_a.join().unwrap();
    let (rb, code_b) = to_b.join().unwrap();
    assert_eq!(code_a, 0, "stored = sent for collector-a's exporters: {ra}");
    assert_eq!(code_b, 0, "stored = sent for collector-b's exporters: {rb}");
    // Both housekeepers move the one watermark (every second, no lag).
    assert!(
        wait_until(Duration::from_secs(10), || {
            db.count(
                "SELECT count(*) FROM netflow.flow_aggregates_watermark
                 WHERE moved_by IN ('collector-a', 'collector-b')",
            ) == 1
        }),
        "the instances move the aggregates' watermark"
    );
    let (sa, sb) = (a.stop(), b.stop());
    assert_eq!(sa["rows_written"], ra["sent"]["flows"], "{sa}");
    assert_eq!(sb["rows_written"], rb["sent"]["flows"], "{sb}");
    assert_eq!(sa["rows_spooled"], 0);
    assert_eq!(sb["rows_spooled"], 0);

    let mut c = db.client();
    let mut sent = sent_by_exporter(&ra);
    sent.extend(sent_by_exporter(&rb));
    assert_eq!(sent.len(), 4);
    let instance_of = |addr: &str| {
        if addr.starts_with("127.1.") {
            "collector-a"
        } else {
            "collector-b"
        }
    };
    // The flows: every record once.
    let stored = stored_by_exporter(&mut c);
    assert_eq!(stored.len(), 4, "{stored:?}");
    for (addr, [_, flows, packets, bytes]) in &sent {
        assert_eq!(stored[addr], [*flows, *packets, *bytes], "flows of {addr}");
    }
    // The exporters table: one row per exporter, under the instance that heard it, exact.
    let rows = c
        .query(
            "SELECT host(exporter), instance, datagrams, flows, packets, bytes, flows_lost
             FROM netflow.exporters ORDER BY 1",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 4, "one row per exporter");
    for r in &rows {
        let addr: String = r.get(0);
        let [datagrams, flows, packets, bytes] = sent[&addr];
        assert_eq!(r.get::<_, String>(1), instance_of(&addr), "{addr}");
        assert_eq!(r.get::<_, i64>(2), datagrams, "datagrams of {addr}");
        assert_eq!(r.get::<_, i64>(3), flows, "flows of {addr}");
        assert_eq!(r.get::<_, i64>(4), packets, "packets of {addr}");
        assert_eq!(r.get::<_, i64>(5), bytes, "bytes of {addr}");
        assert_eq!(r.get::<_, i64>(6), 0, "nothing lost from {addr}");
    }
    // v9 templates: stored by collector-b, for its two exporters.
    let t = c
        .query_one(
            "SELECT count(DISTINCT exporter), count(*), bool_and(instance = 'collector-b')
             FROM netflow.templates",
            &[],
        )
        .unwrap();
    assert_eq!(t.get::<_, i64>(0), 2);
    assert!(t.get::<_, i64>(1) >= 2);
    assert!(t.get::<_, bool>(2), "templates carry their instance");
    // COPY markers: each instance's own.
    let markers: BTreeMap<String, i64> = c
        .query(
            "SELECT instance, sum(rows)::int8 FROM netflow.nfpg_copies GROUP BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        markers,
        BTreeMap::from([
            (
                "collector-a".to_string(),
                ra["sent"]["flows"].as_i64().unwrap()
            ),
            (
                "collector-b".to_string(),
                rb["sent"]["flows"].as_i64().unwrap()
            ),
        ])
    );
    // The hourly aggregates: one hour's flows from both instances, each counted once.
    let agg = aggregated_by_exporter(&mut c);
    for (addr, [_, flows, packets, bytes]) in &sent {
        assert_eq!(
            agg[addr],
            [*flows, *packets, *bytes],
            "aggregates of {addr}"
        );
    }
    assert_eq!(agg.len(), 4);
}

/// Must show 2: four `nfpg migrate` processes at the same moment on a fresh database. The test
/// holds the migration lock until all four wait on it (seen in pg_locks), then lets go: one
/// applies every migration, the other three find them applied; each migration is recorded
/// once, and every process exits 0.
#[test]
fn migrations_run_by_several_processes_at_once_apply_once() {
    let db = TestDb::start();
    let mut hold = db.client();
    hold.execute(
        "SELECT pg_advisory_lock($1)",
        &[&nfpg::store::db::MIGRATION_LOCK],
    )
    .unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_nfpg"))
                .args(["migrate", "--database-url", db.conninfo()])
                .env_remove("DB_HOST")
                .env_remove("DATABASE_URL")
                .env("LOG_LEVEL", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn nfpg migrate")
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(30), || {
            db.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                == 4
        }),
        "all four wait on the migration lock"
    );
    // Nothing was created while they waited.
    assert_eq!(
        db.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'netflow'"),
        0
    );
    hold.execute(
        "SELECT pg_advisory_unlock($1)",
        &[&nfpg::store::db::MIGRATION_LOCK],
    )
    .unwrap();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait for nfpg migrate"))
        .collect();
    let mut applied = 0;
    let mut up_to_date = 0;
    for o in &outs {
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "nfpg migrate failed: {stdout}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        if stdout.starts_with("applied: 0001_flows,") && stdout.contains("0015_instances") {
            applied += 1;
        } else if stdout.trim() == "schema netflow is up to date" {
            up_to_date += 1;
        } else {
            panic!("unexpected output: {stdout}");
        }
    }
    assert_eq!((applied, up_to_date), (1, 3));
    let n = nfpg::store::db::MIGRATIONS.len() as i64;
    assert_eq!(db.count("SELECT count(*) FROM netflow.nfpg_migrations"), n);
    assert_eq!(
        db.count("SELECT count(DISTINCT name) FROM netflow.nfpg_migrations"),
        n
    );
}

/// Must show 3: one collector writing to two database endpoints (two PostgreSQL servers),
/// while loadgen sends 4 exporters' flows for 14 s: at 3 s the first endpoint stops (its
/// batches go to the second), at 6 s the second stops too (both down: the spool), at 9 s the
/// second is back, at 11 s the first. Nothing lost and nothing twice: the rows stored in the
/// two databases together equal what was sent, per exporter; what was spooled was replayed;
/// each database's aggregates cover its own rows, so the two together equal the sent totals;
/// the exporter statistics are in the first endpoint.
#[test]
fn two_endpoints_one_stopped_mid_run_loses_nothing() {
    let mut first = TestDb::start();
    let mut second = TestDb::start();
    let metrics = format!("127.0.0.1:{}", free_tcp_port());
    // Nfpg::start_with adds its --database-url after these: `first` is the first endpoint.
    let nfpg = Nfpg::start_with(
        Some(second.conninfo()),
        "127.0.0.1",
        &[
            "--database-url",
            first.conninfo(),
            "--instance",
            "edge-1",
            "--writers",
            "2",
            "--metrics",
            &metrics,
        ],
    );
    assert_eq!(scrape(&metrics)["nfpg_database_up"], 2.0);
    let target = nfpg.addr.to_string();
    let sender = std::thread::spawn(move || {
        run_loadgen(&[
            "--target",
            &target,
            "--exporters",
            "4",
            "--rate",
            "1000",
            "--duration",
            "14",
            "--seed",
            "14",
        ])
    });
    std::thread::sleep(Duration::from_secs(3));
    first.stop_server();
    std::thread::sleep(Duration::from_secs(3));
    second.stop_server();
    assert!(
        wait_until(Duration::from_secs(3), || scrape(&metrics)
            ["nfpg_database_up"]
            == 0.0),
        "both endpoints seen down"
    );
    std::thread::sleep(Duration::from_secs(1));
    second.start_server();
    std::thread::sleep(Duration::from_secs(2));
    first.start_server();
    let (report, code) = sender.join().unwrap();
    assert_eq!(code, 0, "{report}");
    assert!(
        wait_until(Duration::from_secs(60), || {
            let m = scrape(&metrics);
            m["nfpg_database_up"] == 2.0 && m["nfpg_spool_segments"] == 0.0
        }),
        "both endpoints back and the spool replayed: {:?}",
        scrape(&metrics)
    );
    let s = nfpg.stop();
    let sent_flows = report["sent"]["flows"].as_i64().unwrap();
    assert_eq!(s["datagrams"], report["sent"]["datagrams"], "{s}");
    assert_eq!(s["kernel_drops"], 0, "{s}");
    let spooled = s["rows_spooled"].as_i64().unwrap();
    assert!(spooled > 0, "both endpoints down: rows spooled: {s}");
    assert_eq!(s["rows_replayed"].as_i64().unwrap(), spooled, "{s}");
    assert_eq!(s["rows_dead_lettered"], 0);
    assert_eq!(
        s["rows_written"].as_i64().unwrap() + spooled,
        sent_flows,
        "every flow committed live or replayed: {s}"
    );

    let sent = sent_by_exporter(&report);
    let (mut c1, mut c2) = (first.client(), second.client());
    let (s1, s2) = (stored_by_exporter(&mut c1), stored_by_exporter(&mut c2));
    let total = |m: &BTreeMap<String, [i64; 3]>| m.values().map(|v| v[0]).sum::<i64>();
    assert!(
        total(&s1) > 0 && total(&s2) > 0,
        "both endpoints hold flows: {s1:?} {s2:?}"
    );
    // Across the two databases, each flow exactly once.
    assert_eq!(total(&s1) + total(&s2), sent_flows);
    let (a1, a2) = (
        aggregated_by_exporter(&mut c1),
        aggregated_by_exporter(&mut c2),
    );
    for (addr, [_, flows, packets, bytes]) in &sent {
        let both = |m: &BTreeMap<String, [i64; 3]>, k: usize| m.get(addr).map_or(0, |v| v[k]);
        let stored: Vec<i64> = (0..3).map(|k| both(&s1, k) + both(&s2, k)).collect();
        assert_eq!(stored, [*flows, *packets, *bytes], "flows of {addr}");
        let aggregated: Vec<i64> = (0..3).map(|k| both(&a1, k) + both(&a2, k)).collect();
        assert_eq!(
            aggregated,
            [*flows, *packets, *bytes],
            "aggregates of {addr}"
        );
    }
    // Exporter statistics: in the first endpoint, exact, under this instance.
    let rows = c1
        .query(
            "SELECT host(exporter), instance, flows, packets, bytes FROM netflow.exporters",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        let addr: String = r.get(0);
        let [_, flows, packets, bytes] = sent[&addr];
        assert_eq!(r.get::<_, String>(1), "edge-1");
        assert_eq!(
            [r.get::<_, i64>(2), r.get(3), r.get(4)],
            [flows, packets, bytes],
            "exporter statistics of {addr}"
        );
    }
    assert_eq!(
        c2.query_one("SELECT count(*) FROM netflow.exporters", &[])
            .unwrap()
            .get::<_, i64>(0),
        0,
        "the second endpoint holds flows only"
    );
}

/// The exporter statistics are added exactly once even when an update's reply is lost: the
/// connection is cut right after the COMMIT of an exporters update (the server commits, the
/// collector never hears it). The next update finds the first one's marker and does not add
/// its deltas again; the update after that adds only what is new. (A lost reply doubled
/// exporter counters before: the two-endpoint test above caught it when a server stopped.)
#[test]
fn an_exporters_update_whose_reply_was_lost_is_not_added_twice() {
    use nfpg::obs::exporters::{ExporterDelta, ExporterTable};
    use nfpg::store::db::{connect, migrate, Schema};
    use nfpg::store::exporters::flush_exporters;
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;

    let db = TestDb::start();
    let schema = Schema::new("netflow").unwrap();
    migrate(&mut db.client(), &schema).unwrap();
    let server = db.db.server.as_ref().unwrap();
    let kv = |key: &str| {
        db.conninfo()
            .split_whitespace()
            .find_map(|s| s.strip_prefix(key).map(str::to_string))
            .unwrap()
    };
    let pg_port: u16 = kv("port=").parse().unwrap();
    let (port, cuts) =
        cut_after_commit_proxy(server.socket_dir(), pg_port, b"nfpg_exporter_flushes");
    let url = format!(
        "host=127.0.0.1 port={port} dbname=netflow_db user={}",
        kv("user=")
    );
    let delta = |datagrams: i64| ExporterDelta {
        exporter: "192.0.2.9".parse().unwrap(),
        engine_type: 0,
        engine_id: 0,
        source_id: 0,
        first_seen_us: 1_700_000_000_000_000,
        last_seen_us: 1_700_000_000_000_000,
        datagrams,
        flows: 30 * datagrams,
        packets: 100 * datagrams,
        bytes: 10_000 * datagrams,
        lost: 0,
        restarts: 0,
        suspect: 0,
        last_sequence: 30 * datagrams,
        version: 5,
        sampling_interval: 0,
        sampling_mode: 0,
        datagrams_per_s: 1.0,
        carried: false,
    };
    let table = Mutex::new(ExporterTable::default());
    table.lock().unwrap().carry(vec![delta(7)]);
    let mut c = connect(&url).unwrap();
    let first = flush_exporters(&mut c, &schema, &table, 100, "inst");
    assert!(first.is_err(), "the reply never came: {first:?}");
    assert!(
        wait_until(Duration::from_secs(5), || cuts.load(Ordering::SeqCst) == 1),
        "the proxy cut the update"
    );
    let stored = || {
        db.count("SELECT coalesce(sum(datagrams), 0)::int8 FROM netflow.exporters WHERE instance = 'inst'")
    };
    assert_eq!(stored(), 7, "the server did commit it");
    // More comes in; the next update resolves the first by its marker, then adds the new.
    table.lock().unwrap().carry(vec![delta(5)]);
    let mut c = connect(&url).unwrap();
    assert_eq!(
        flush_exporters(&mut c, &schema, &table, 100, "inst").unwrap(),
        1
    );
    assert_eq!(stored(), 12, "7 once, then 5");
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.nfpg_exporter_flushes WHERE instance = 'inst'"),
        2
    );
    // Nothing left to resolve or write.
    assert_eq!(
        flush_exporters(&mut c, &schema, &table, 100, "inst").unwrap(),
        0
    );
    assert_eq!(stored(), 12);
}
