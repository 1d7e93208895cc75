//! End to end: real UDP datagrams into the `nfpg` binary, rows checked in a real PostgreSQL.

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The receive backends a test runs with; io_uring only where the kernel allows it.
fn backends() -> Vec<&'static str> {
    if nfpg::ingest::recv::uring_for_tests("e2e") {
        vec!["uring", "mmsg"]
    } else {
        vec!["mmsg"]
    }
}

const ROW_SQL: &str = "SELECT host(src_addr), host(dst_addr), host(next_hop), input_if, output_if, \
     packets, bytes, src_port, dst_port, tcp_flags, protocol, tos, src_as, dst_as, src_mask, dst_mask, \
     engine_type, engine_id, sampling_interval, \
     (extract(epoch FROM flow_start) * 1000)::int8, (extract(epoch FROM flow_end) * 1000)::int8 \
     FROM netflow.flows";

fn db_rows(db: &TestDb) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = db
        .client()
        .query(ROW_SQL, &[])
        .unwrap()
        .iter()
        .map(|r| {
            let mut v: Vec<String> = (0..3).map(|i| r.get::<_, String>(i)).collect();
            for i in 3..19 {
                v.push(match r.columns()[i].type_().name() {
                    "int2" => r.get::<_, i16>(i).to_string(),
                    "int4" => r.get::<_, i32>(i).to_string(),
                    _ => r.get::<_, i64>(i).to_string(),
                });
            }
            v.push(r.get::<_, i64>(19).to_string());
            v.push(r.get::<_, i64>(20).to_string());
            v
        })
        .collect();
    out.sort();
    out
}

/// The fixture's expected decoding, in the same column order as [`ROW_SQL`].
fn expected_rows() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(fixture("softflowd-v5.expected.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("column {name}"))
    };
    let hex = |s: &str| {
        u32::from_str_radix(s.trim_start_matches("0x"), 16)
            .unwrap()
            .to_string()
    };
    let mut out: Vec<Vec<String>> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let g = |n: &str| f[col(n)].to_string();
            vec![
                g("src_addr"),
                g("dst_addr"),
                g("next_hop"),
                g("input_if"),
                g("output_if"),
                g("packets"),
                g("octets"),
                g("src_port"),
                g("dst_port"),
                hex(f[col("tcp_flags")]),
                g("protocol"),
                hex(f[col("tos")]),
                g("src_as"),
                g("dst_as"),
                g("src_mask"),
                g("dst_mask"),
                g("engine_type"),
                g("engine_id"),
                g("samplerate"),
                g("flow_start_ms"),
                g("flow_end_ms"),
            ]
        })
        .collect();
    out.sort();
    out
}

fn fixture_datagrams() -> Vec<Vec<u8>> {
    let file = std::fs::read(fixture("softflowd-v5.pcap")).unwrap();
    nfpg_wire::pcap::udp_packets(&file)
        .unwrap()
        .into_iter()
        .map(|p| p.payload)
        .collect()
}

/// Must show 1: the softflowd capture replayed over UDP stores 682 rows equal to the decoding
/// tshark and nfdump agree on, field by field, times to the millisecond.
#[test]
fn softflowd_fixture_matches_expected_decoding() {
    let expected = expected_rows();
    assert_eq!(expected.len(), 682);
    for backend in backends() {
        let db = TestDb::start();
        let nfpg = Nfpg::start(&db, &["--recv", backend, "--shards", "2"]);
        let tx = exporter_socket("127.0.0.1");
        send_paced(&tx, nfpg.addr, &fixture_datagrams());
        assert!(
            wait_until(Duration::from_secs(20), || db
                .count("SELECT count(*) FROM netflow.flows")
                >= 682),
            "rows did not arrive ({backend})"
        );
        let summary = nfpg.stop();
        assert_eq!(summary["datagrams"], 23, "{backend}");
        assert_eq!(summary["flows"], 682);
        assert_eq!(summary["rows_written"], 682);
        assert_eq!(summary["malformed"]["total"], 0);
        let got = db_rows(&db);
        assert_eq!(got.len(), expected.len(), "{backend}");
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g, e, "row differs ({backend})");
        }
        let r = db
            .client()
            .query_one(
                "SELECT host(exporter), datagrams, flows, packets, bytes, flows_lost, netflow_version \
                 FROM netflow.exporters",
                &[],
            )
            .unwrap();
        assert_eq!(r.get::<_, String>(0), "127.0.0.1");
        assert_eq!(
            (
                r.get::<_, i64>(1),
                r.get::<_, i64>(2),
                r.get::<_, i64>(3),
                r.get::<_, i64>(4),
                r.get::<_, i64>(5)
            ),
            (23, 682, 3858, 2_036_135, 0)
        );
        assert_eq!(r.get::<_, i16>(6), 5);
        // Application names come from the data tables, by the original's rules.
        let apps: i64 = db.count(
            "SELECT count(*) FROM netflow.flows_with_app WHERE (dst_port = 443 AND application_name = 'HTTPS') \
             OR (dst_port = 25 AND application_name = 'SMTP') OR (protocol = 1 AND application_name = 'ICMP')",
        );
        let eligible: i64 = db.count("SELECT count(*) FROM netflow.flows WHERE dst_port IN (443, 25) AND protocol IN (6, 17) OR protocol = 1");
        assert_eq!(apps, eligible);
    }
}

/// A UDP tee: everything that arrives on `listen` is sent to each of `targets`; returns the
/// datagram count when no datagram came for `idle`.
fn tee(
    listen: UdpSocket,
    targets: Vec<std::net::SocketAddr>,
    idle: Duration,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        listen.set_read_timeout(Some(idle)).unwrap();
        let out = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 65536];
        let mut n = 0;
        while let Ok((len, _)) = listen.recv_from(&mut buf) {
            for t in &targets {
                out.send_to(&buf[..len], t).unwrap();
            }
            n += 1;
        }
        n
    })
}

fn nfdump_totals(dir: &std::path::Path) -> BTreeMap<String, u64> {
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(dir)
        .arg("-I")
        .output()
        .expect("run nfdump");
    assert!(
        out.status.success(),
        "nfdump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Must show 2: a live softflowd exporting traffic.pcap as v5; the same datagrams go to nfpg
/// and to nfdump's nfcapd; nfpg's stored totals equal nfdump's.
#[test]
fn live_softflowd_totals_equal_nfdump() {
    require_tool("softflowd", "softflowd");
    require_tool("nfcapd", "nfdump");
    let db = TestDb::start();
    let nfpg = Nfpg::start(&db, &[]);
    let work = tempfile::tempdir().unwrap();
    let nfcapd_port = free_port();
    let mut nfcapd = Command::new("nfcapd")
        .arg("-w")
        .arg(work.path())
        .args(["-b", "127.0.0.1", "-p", &nfcapd_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nfcapd");
    std::thread::sleep(Duration::from_millis(500));
    let tee_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tee_port = tee_sock.local_addr().unwrap().port();
    let tee = tee(
        tee_sock,
        vec![
            nfpg.addr,
            std::net::SocketAddr::from(([127, 0, 0, 1], nfcapd_port)),
        ],
        Duration::from_secs(3),
    );
    // softflowd 1.1.0 blocks in accept() on its control socket instead of exiting at the
    // capture's end when the socket path is longer than 12 bytes (seen here with strace), so
    // the path is kept short.
    let ctl = std::path::PathBuf::from(format!("/tmp/sf{:05}", tee_port));
    let sf = Command::new("timeout")
        .arg("60")
        .arg("softflowd")
        .arg("-r")
        .arg(fixture("traffic.pcap"))
        .args(["-n", &format!("127.0.0.1:{tee_port}"), "-v", "5", "-d"])
        .arg("-p")
        .arg(work.path().join("softflowd.pid"))
        .arg("-c")
        .arg(&ctl)
        .output()
        .expect("run softflowd");
    let _ = std::fs::remove_file(&ctl);
    assert!(
        sf.status.success(),
        "softflowd: {}",
        String::from_utf8_lossy(&sf.stderr)
    );
    let teed = tee.join().unwrap();
    assert!(teed > 0, "softflowd sent nothing");
    common::send_signal(nfcapd.id() as i32, libc::SIGTERM);
    nfcapd.wait().unwrap();
    let summary = nfpg.stop();
    let nfdump = nfdump_totals(work.path());
    assert!(nfdump["Flows"] > 0);
    assert_eq!(summary["datagrams"], teed as u64);
    assert_eq!(summary["rows_written"], nfdump["Flows"]);
    let r = db
        .client()
        .query_one(
            "SELECT count(*), sum(packets)::int8, sum(bytes)::int8 FROM netflow.flows",
            &[],
        )
        .unwrap();
    assert_eq!(r.get::<_, i64>(0) as u64, nfdump["Flows"]);
    assert_eq!(r.get::<_, i64>(1) as u64, nfdump["Packets"]);
    assert_eq!(r.get::<_, i64>(2) as u64, nfdump["Bytes"]);
    let lost = db.count("SELECT flows_lost FROM netflow.exporters");
    assert_eq!(
        lost as u64, nfdump["Sequence failures"],
        "no loss on loopback"
    );
}

/// Must show 3: every kind of malformed datagram, interleaved with valid ones from several
/// exporters: every valid record stored, every malformed datagram counted by its reason.
#[test]
fn malformed_datagrams_are_counted_by_reason_and_valid_ones_stored() {
    for backend in backends() {
        let db = TestDb::start();
        let nfpg = Nfpg::start(&db, &["--recv", backend]);
        let now = now_secs();
        let exporters = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
        let mut expected_flows = 0u64;
        let mut expected_bytes = 0u64;
        let mut per_exporter: BTreeMap<String, i64> = BTreeMap::new();
        let rounds = 40;
        let mut threads = Vec::new();
        for (e, ip) in exporters.iter().enumerate() {
            let mut datagrams = Vec::new();
            let mut seq = 0u32;
            for round in 0..rounds {
                let n = 1 + (round + e) % 30;
                let recs: Vec<Rec> = (0..n as u32).map(|i| rec(round as u32 * 100 + i)).collect();
                let good = v5_datagram(now, 1_000_000, seq, e as u8, 0, &recs);
                seq += n as u32;
                expected_flows += n as u64;
                expected_bytes += recs.iter().map(|r| u64::from(r.bytes)).sum::<u64>();
                *per_exporter.entry(ip.to_string()).or_default() += n as i64;
                datagrams.push(good.clone());
                // One of each malformed kind per round.
                // Version 7: neither 5 nor v9/IPFIX.
                let mut v7 = good.clone();
                v7[1] = 7;
                let mut zero = good.clone();
                zero[3] = 0;
                let mut many = good.clone();
                many[3] = 31;
                let mut short_body = good.clone();
                short_body.truncate(good.len() - 1);
                datagrams.push(good[..10].to_vec()); // too_short
                datagrams.push(v7); // bad_version
                datagrams.push(zero); // bad_count
                datagrams.push(many); // bad_count
                datagrams.push(short_body); // bad_length
                if round % 10 == 0 {
                    datagrams.push(vec![0u8; 12_000]); // truncated (larger than any buffer we read)
                }
            }
            let to = nfpg.addr;
            let ip = ip.to_string();
            threads.push(std::thread::spawn(move || {
                send_paced(&exporter_socket(&ip), to, &datagrams)
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        let n_exp = exporters.len() as u64;
        let malformed_expected = n_exp * rounds as u64 * 5 + n_exp * (rounds as u64 / 10);
        let total_expected = n_exp * rounds as u64 + malformed_expected;
        assert!(wait_until(Duration::from_secs(20), || db
            .count("SELECT count(*) FROM netflow.flows")
            as u64
            >= expected_flows));
        let s = nfpg.stop();
        assert_eq!(s["datagrams"], total_expected, "{backend}");
        assert_eq!(s["decoded_datagrams"], n_exp * rounds as u64);
        assert_eq!(s["kernel_drops"], 0);
        let m = &s["malformed"];
        assert_eq!(m["too_short"], n_exp * rounds as u64);
        assert_eq!(m["bad_version"], n_exp * rounds as u64);
        assert_eq!(m["bad_count"], 2 * n_exp * rounds as u64);
        assert_eq!(m["bad_length"], n_exp * rounds as u64);
        assert_eq!(m["truncated"], n_exp * rounds as u64 / 10);
        assert_eq!(m["total"], malformed_expected);
        assert_eq!(s["flows"], expected_flows);
        assert_eq!(s["rows_written"], expected_flows);
        let mut c = db.client();
        let r = c
            .query_one("SELECT count(*), sum(bytes)::int8 FROM netflow.flows", &[])
            .unwrap();
        assert_eq!(
            (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64),
            (expected_flows, expected_bytes)
        );
        let stored: BTreeMap<String, i64> = c
            .query(
                "SELECT host(exporter), count(*) FROM netflow.flows GROUP BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(stored, per_exporter);
        let in_table: BTreeMap<String, i64> = c
            .query("SELECT host(exporter), flows FROM netflow.exporters", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(in_table, per_exporter, "exporters table");
        assert_eq!(
            db.count("SELECT sum(flows_lost)::int8 FROM netflow.exporters"),
            0
        );
        // Samples: every reason from every exporter, and no more than the per-exporter burst.
        let samples = c
            .query("SELECT host(exporter), reason, count(*) FROM netflow.malformed_datagrams GROUP BY 1, 2", &[])
            .unwrap();
        let mut per_exp: BTreeMap<String, i64> = BTreeMap::new();
        for r in &samples {
            *per_exp.entry(r.get(0)).or_default() += r.get::<_, i64>(2);
        }
        assert_eq!(
            per_exp.len(),
            exporters.len(),
            "samples from every exporter"
        );
        for (e, n) in &per_exp {
            // Burst of 10 per shard plus at most one refill per second of the run.
            assert!(
                *n >= 5 && *n <= 40,
                "{e}: {n} samples: the rate limit should hold"
            );
        }
        assert_eq!(
            s["malformed_samples_written"].as_u64().unwrap() as i64,
            per_exp.values().sum::<i64>()
        );
    }
}

/// Must show 4: SIGTERM while datagrams are still arriving: every decoded flow is stored.
#[test]
fn sigterm_under_load_stores_every_decoded_flow() {
    let db = TestDb::start();
    let nfpg = Nfpg::start(&db, &["--shards", "2", "--writers", "2"]);
    let to = nfpg.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sock = exporter_socket("127.0.0.5");
            let recs: Vec<Rec> = (0..30).map(rec).collect();
            let now = now_secs();
            let mut sent = 0u32;
            // Bounded: at most 200,000 datagrams, or until told to stop.
            while sent < 200_000 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let d = v5_datagram(now, 5_000, sent * 30, 0, 0, &recs);
                let _ = sock.send_to(&d, to);
                sent += 1;
                if sent.is_multiple_of(32) {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            sent
        })
    };
    assert!(wait_until(Duration::from_secs(20), || db
        .count("SELECT count(*) FROM netflow.flows")
        > 3000));
    let summary = nfpg.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().unwrap() as u64;
    let flows = summary["flows"].as_u64().unwrap();
    assert!(flows >= 3000 && flows <= sent * 30);
    // Written live, or (when the writers fell behind) spooled by the shards and replayed
    // before the exit.
    assert_eq!(
        summary["rows_written"].as_u64().unwrap() + summary["rows_replayed"].as_u64().unwrap(),
        flows,
        "every decoded flow written: {summary}"
    );
    assert_eq!(summary["spool_segments"], 0, "nothing left in the spool");
    assert_eq!(summary["rows_dropped"], 0);
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.flows") as u64,
        flows,
        "stored = decoded"
    );
    assert_eq!(summary["datagrams"].as_u64().unwrap() * 30, flows);
    let exporters_flows = db.count("SELECT flows FROM netflow.exporters") as u64;
    assert_eq!(exporters_flows, flows);
}

/// The working default: no database configured, nfpg starts its own PostgreSQL in the data
/// directory, stores flows there, and stops it on exit; the data is there on the next start.
#[test]
fn private_database_when_none_is_configured() {
    let dir = tempfile::Builder::new()
        .prefix("nfpg-d")
        .tempdir_in("/tmp")
        .unwrap();
    let data_dir = dir.path().to_str().unwrap().to_string();
    let nfpg = Nfpg::start_with(None, "::", &["--data-dir", &data_dir]);
    let tx = exporter_socket("127.0.0.1");
    send_paced(&tx, nfpg.addr, &fixture_datagrams());
    let summary = nfpg.stop();
    assert_eq!(summary["rows_written"], 682);
    // The server was stopped with nfpg; start it again to look.
    let db = nfpg::store::db::open_database(&nfpg::config::DbTarget::Private {
        dir: dir.path().to_path_buf(),
        dbname: "netflow_db".into(),
    })
    .unwrap();
    let mut c = nfpg::store::db::connect(&db.conninfo).unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM netflow.flows", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 682);
    // IPv4 exporters reach a [::] listener and are stored as IPv4.
    let e: String = c
        .query_one("SELECT DISTINCT host(exporter) FROM netflow.flows", &[])
        .unwrap()
        .get(0);
    assert_eq!(e, "127.0.0.1");
}

/// The original collector's test mode: `nfpg --test` waits for one datagram, prints its first
/// record and stores it.
#[test]
fn test_mode_prints_and_stores_one_datagram() {
    let db = TestDb::start();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nfpg"))
        .args([
            "--test",
            "--listen",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--database-url",
            db.conninfo(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let datagram = fixture_datagrams().remove(0);
    let tx = exporter_socket("127.0.0.1");
    // Resend until the collector has taken one and exited (bounded: 8 s).
    for _ in 0..80 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tx.send_to(&datagram, ("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "first record: 10.1.2.244:45875 -> 192.0.2.20:25 protocol 6 packets 4 bytes 2025"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("2026-11-12 23:19:31.081 UTC"), "{stdout}");
    let n = db.count("SELECT count(*) FROM netflow.flows");
    assert_eq!(n, u16::from_be_bytes([datagram[2], datagram[3]]) as i64);
}

/// PostgreSQL goes away for two seconds while flows arrive: the writers reconnect and retry
/// the same data, the sockets and queue absorb the gap, and nothing is lost or duplicated.
#[test]
fn database_restart_loses_nothing() {
    let mut db = TestDb::start();
    let nfpg = Nfpg::start(&db, &["--writers", "2"]);
    let to = nfpg.addr;
    let sender = std::thread::spawn(move || {
        let sock = exporter_socket("127.0.0.12");
        let now = now_secs();
        let recs: Vec<Rec> = (0..10).map(rec).collect();
        // 3,000 datagrams over about 6 s.
        for i in 0..3000u32 {
            sock.send_to(&v5_datagram(now, 9_000, i * 10, 0, 0, &recs), to)
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        30_000u64
    });
    std::thread::sleep(Duration::from_secs(1));
    db.restart(Duration::from_secs(2));
    let flows = sender.join().unwrap();
    assert!(wait_until(
        Duration::from_secs(30),
        || db.count("SELECT count(*) FROM netflow.flows") as u64 >= flows
    ));
    let s = nfpg.stop();
    assert_eq!(s["datagrams"], 3000);
    assert_eq!(s["kernel_drops"], 0);
    assert!(
        s["write_errors"].as_u64().unwrap() > 0,
        "the outage was seen: {s}"
    );
    assert_eq!(s["rows_dropped"], 0);
    assert_eq!(s["rows_spool_full"], 0);
    // Written live, or spooled during the restart and replayed after it.
    assert_eq!(
        s["rows_written"].as_u64().unwrap() + s["rows_replayed"].as_u64().unwrap(),
        flows,
        "{s}"
    );
    assert_eq!(s["rows_spooled"], s["rows_replayed"]);
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.flows") as u64,
        flows,
        "no loss, no duplicates"
    );
    assert_eq!(
        db.count("SELECT flows FROM netflow.exporters") as u64,
        flows
    );
    assert_eq!(db.count("SELECT flows_lost FROM netflow.exporters"), 0);
}

/// Configuration order: flags, then environment, then `.env`, then defaults; the original
/// collector's variable names work.
#[test]
fn dotenv_and_environment_configure_the_collector() {
    let db = TestDb::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "# the original collector's names\nNETFLOW_PORT=9\nDB_SCHEMA=from_dotenv\nDATABASE_URL=\"{}\"\nFLUSH_INTERVAL=0.2\nLOG_LEVEL=INFO\n",
            db.conninfo()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nfpg"))
        .current_dir(dir.path())
        .env_remove("DB_SCHEMA")
        .env_remove("DATABASE_URL")
        .env("NETFLOW_PORT", port.to_string()) // the environment beats .env
        .env("NFPG_SPOOL_DIR", dir.path().join("spool"))
        .args(["run", "--listen", "127.0.0.1", "--shards", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tx = exporter_socket("127.0.0.1");
    let datagrams = fixture_datagrams();
    // Resend the first datagram until it is stored (bounded), then the rest.
    let stored = wait_until(Duration::from_secs(30), || {
        tx.send_to(&datagrams[0], ("127.0.0.1", port)).unwrap();
        db.client()
            .query_one("SELECT to_regclass('from_dotenv.flows') IS NOT NULL AND EXISTS (SELECT 1 FROM from_dotenv.flows)", &[])
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false)
    });
    common::send_signal(child.id() as i32, libc::SIGTERM);
    let status = child.wait().unwrap();
    assert!(
        stored,
        "flows stored in the schema named by .env, on the port named by the environment"
    );
    assert!(status.success());
}

/// Without PostgreSQL server programs and without a configured database, nfpg exits with a
/// message that says how to install one or how to point it at a server.
#[test]
fn missing_server_programs_say_what_to_do() {
    let dir = tempfile::Builder::new()
        .prefix("nfpg-n")
        .tempdir_in("/tmp")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nfpg"))
        .env_remove("DATABASE_URL")
        .env_remove("DB_HOST")
        .env("PG_BIN", dir.path())
        .args([
            "run",
            "--listen",
            "127.0.0.1",
            "--port",
            &free_port().to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("pg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apt-get install postgresql"), "{err}");
    assert!(err.contains("DATABASE_URL="), "{err}");
}
