//! Issue 8: nothing lost. The real binary, a real PostgreSQL that the tests stop and start,
//! real UDP; every test ends with exact totals in the database.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Sends `n` datagrams of 10 flows from one exporter, about 1,000 a second; returns flows.
fn send(to: std::net::SocketAddr, ip: &str, first_seq: u32, n: u32) -> u64 {
    let sock = exporter_socket(ip);
    let now = now_secs();
    let recs: Vec<Rec> = (0..10).map(rec).collect();
    for i in 0..n {
        sock.send_to(
            &v5_datagram(now, 9_000, (first_seq + i) * 10, 0, 0, &recs),
            to,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    u64::from(n) * 10
}

fn flows(db: &TestDb) -> u64 {
    db.count("SELECT count(*) FROM netflow.flows") as u64
}

fn segments(dir: &Path) -> usize {
    nfpg::store::spool::list_segments(dir).unwrap().len()
}

fn wait_stored(db: &TestDb, n: u64) {
    let ok = wait_until(Duration::from_secs(60), || flows(db) >= n);
    assert!(ok, "stored {} of {n}", flows(db));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(flows(db), n, "stored exactly once");
}

/// Must show 2: kill -9 during an outage, 3 s after the last datagram; PostgreSQL and nfpg
/// restarted on the same spool: every flow stored exactly once.
#[test]
fn kill_9_during_an_outage_loses_nothing() {
    let mut db = TestDb::start();
    let spool = tempfile::tempdir().unwrap();
    let dir = spool.path().to_str().unwrap().to_string();
    let nfpg = Nfpg::start(&db, &["--spool-dir", &dir]);
    let before = send(nfpg.addr, "127.0.0.21", 0, 500);
    wait_stored(&db, before);
    db.stop_server();
    let during = send(nfpg.addr, "127.0.0.21", 500, 2000);
    std::thread::sleep(Duration::from_secs(3));
    assert!(segments(spool.path()) > 0, "the outage went to the spool");
    nfpg.kill9();
    db.start_server();
    let nfpg = Nfpg::start(&db, &["--spool-dir", &dir]);
    wait_stored(&db, before + during);
    let s = nfpg.stop();
    assert_eq!(segments(spool.path()), 0, "spool emptied");
    assert_eq!(s["rows_replayed"].as_u64().unwrap(), during);
    assert_eq!(s["spool_segments"], 0);
    assert_eq!(flows(&db), before + during);
}

/// Must show 5 and 8: SIGTERM during an outage keeps the spool; a start against another
/// database keeps it and says so; the next start against its own database replays it once.
#[test]
fn sigterm_during_an_outage_keeps_the_spool_for_its_own_database() {
    let mut db = TestDb::start();
    db.client()
        .batch_execute("CREATE DATABASE other_db")
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let dir = spool.path().to_str().unwrap().to_string();
    let nfpg = Nfpg::start(&db, &["--spool-dir", &dir, "--stop-timeout", "2"]);
    db.stop_server();
    let sent = send(nfpg.addr, "127.0.0.22", 0, 1000);
    let s = nfpg.stop();
    assert_eq!(s["flows"].as_u64().unwrap(), sent);
    assert_eq!(s["rows_spooled"].as_u64().unwrap(), sent, "{s}");
    let kept = segments(spool.path());
    assert!(kept > 0);
    db.start_server();

    // Database B: the segments stay, untouched, and are reported.
    let other = db.conninfo().replace("netflow_db", "other_db");
    assert_ne!(other, db.conninfo());
    let b = Nfpg::start_with(Some(&other), "127.0.0.1", &["--spool-dir", &dir]);
    std::thread::sleep(Duration::from_secs(2));
    let s = b.stop();
    assert_eq!(s["spool_foreign_segments"].as_u64().unwrap(), kept as u64);
    assert_eq!(s["rows_replayed"], 0);
    assert_eq!(segments(spool.path()), kept);
    let mut c = nfpg::store::db::connect(&other).unwrap();
    let in_b: i64 = c
        .query_one("SELECT count(*) FROM netflow.flows", &[])
        .unwrap()
        .get(0);
    assert_eq!(in_b, 0, "not replayed into database B");

    // Database A again: replayed once.
    let a = Nfpg::start(&db, &["--spool-dir", &dir]);
    wait_stored(&db, sent);
    let s = a.stop();
    assert_eq!(s["rows_replayed"].as_u64().unwrap(), sent);
    assert_eq!(segments(spool.path()), 0);
    assert_eq!(flows(&db), sent);
    // The exporter statistics the outage's stop could not write came along, once: counted
    // when the flows were spooled, not again when they were replayed.
    assert_eq!(
        db.count("SELECT flows FROM netflow.exporters") as u64,
        sent,
        "exporter statistics neither lost nor doubled"
    );
    assert_eq!(db.count("SELECT flows_lost FROM netflow.exporters"), 0);
}

/// Must show 3: a constraint refuses some rows. Every other row is stored, the refused
/// ones are in the dead-letter directory with the error, counts exact.
#[test]
fn refused_rows_are_dead_lettered_and_the_rest_stored() {
    let db = TestDb::start();
    let nfpg = Nfpg::start(&db, &[]);
    db.client()
        .batch_execute("ALTER TABLE netflow.flows ADD CONSTRAINT no_ssh CHECK (dst_port <> 22)")
        .unwrap();
    // rec(i) cycles destination ports 80, 443, 53, 22: a quarter of the rows are refused.
    let sent = send(nfpg.addr, "127.0.0.23", 0, 200);
    // Of the 10 records of each datagram, rec(3) and rec(7) have port 22.
    let refused = sent / 10 * 2;
    assert_eq!(refused, 400);
    let ok = wait_until(Duration::from_secs(90), || flows(&db) >= sent - refused);
    assert!(ok, "stored {}", flows(&db));
    let dead = nfpg.spool.as_ref().unwrap().path().join("dead");
    assert!(wait_until(Duration::from_secs(30), || segments(&dead)
        as u64
        == refused));
    let files = nfpg::store::spool::list_segments(&dead).unwrap();
    let seg = nfpg::store::spool::read_segment(&files[0]).unwrap();
    assert_eq!(seg.header.rows, 1);
    assert!(
        seg.header.error.as_deref().unwrap_or("").contains("no_ssh"),
        "{:?}",
        seg.header.error
    );
    let s = nfpg.stop();
    assert_eq!(flows(&db), sent - refused);
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.flows WHERE dst_port = 22"),
        0
    );
    assert_eq!(s["rows_dead_lettered"].as_u64().unwrap(), refused);
    assert_eq!(
        s["rows_written"].as_u64().unwrap() + s["rows_replayed"].as_u64().unwrap(),
        sent - refused,
        "{s}"
    );
}

/// Must show 6: the spool limit reached: what does not fit is dropped and counted exactly,
/// nfpg keeps running and recovers when the database is back.
#[test]
fn a_full_spool_drops_exactly_what_does_not_fit_and_recovers() {
    let mut db = TestDb::start();
    // A segment holds one batch (about 2,000 flows, 470 kB here): a few fit, most do not.
    let nfpg = Nfpg::start(&db, &["--spool-max", "2M", "--writers", "1"]);
    db.stop_server();
    let during = send(nfpg.addr, "127.0.0.24", 0, 3000);
    std::thread::sleep(Duration::from_secs(2));
    db.start_server();
    let back = wait_until(Duration::from_secs(30), || {
        nfpg.log().matches("database reachable").count() >= 2
    });
    assert!(back, "the replayer saw the database again:\n{}", nfpg.log());
    let after = send(nfpg.addr, "127.0.0.24", 3000, 300);
    std::thread::sleep(Duration::from_secs(3));
    let s = nfpg.stop();
    let spooled = s["rows_spooled"].as_u64().unwrap();
    let full = s["rows_spool_full"].as_u64().unwrap();
    assert!(full > 0 && spooled > 0, "{s}");
    assert_eq!(s["flows"].as_u64().unwrap(), during + after);
    assert_eq!(
        s["rows_written"].as_u64().unwrap() + spooled + full,
        during + after,
        "every flow written, spooled or counted as dropped: {s}"
    );
    assert_eq!(s["rows_replayed"].as_u64().unwrap(), spooled);
    assert_eq!(flows(&db), during + after - full);
}

/// Writers held up (the flows table locked by another session, so their COPY waits): the
/// queue fills to its spill mark and the spill thread takes the surplus to the spool, so the
/// shards never wait and the kernel drops nothing; once the lock is gone the writers and
/// the replayer store every flow exactly once, and the counters add up exactly.
#[test]
fn writers_held_up_spill_the_surplus_to_the_spool_and_lose_nothing() {
    let db = TestDb::start();
    // One datagram of 10 flows per batch; the mark at 48 of 64 queued batches.
    let nfpg = Nfpg::start(
        &db,
        &[
            "--batch-size",
            "10",
            "--queue-depth",
            "64",
            "--writers",
            "1",
            "--copy-gather",
            "0",
            "--flush-interval",
            "0.05",
        ],
    );
    // Every flow its own source address, so a flow stored twice would show.
    let sock = exporter_socket("127.0.0.26");
    let now = now_secs();
    let send_range = |from: u32, to: u32| {
        for i in from..to {
            let recs: Vec<Rec> = (0..10).map(|k| rec(i * 10 + k)).collect();
            sock.send_to(&v5_datagram(now, 9_000, i * 10, 0, 0, &recs), nfpg.addr)
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        u64::from(to - from) * 10
    };
    let before = send_range(0, 20);
    wait_stored(&db, before);
    let mut locker = db.client();
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE netflow.flows IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    // 300 batches at about 500 a second: far more than the queue holds.
    let during = send_range(20, 320);
    let spool = nfpg.spool.as_ref().unwrap().path().to_path_buf();
    assert!(
        wait_until(Duration::from_secs(10), || segments(&spool) > 0),
        "the surplus went to the spool:\n{}",
        nfpg.log()
    );
    tx.rollback().unwrap();
    wait_stored(&db, before + during);
    let s = nfpg.stop();
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    assert_eq!(n("kernel_drops"), 0, "{s}");
    assert_eq!(
        n("queue_full"),
        0,
        "the shard never had to spool itself: {s}"
    );
    // Every batch the spill thread took is spooled, and only those (no outage, no refusal).
    assert_eq!(n("rows_spooled"), n("rows_spilled"), "{s}");
    assert!(
        n("rows_spilled") >= 10 * 100,
        "at least the batches beyond 64 queued and 16 in the writer's COPY: {s}"
    );
    assert_eq!(n("rows_replayed"), n("rows_spooled"), "{s}");
    assert_eq!(
        n("rows_written") + n("rows_replayed"),
        before + during,
        "{s}"
    );
    assert_eq!(
        db.count("SELECT count(DISTINCT src_addr) FROM netflow.flows") as u64,
        before + during,
        "each flow once"
    );
}

/// The replayer gives live batches the database first: while the writers' queue is behind
/// (half the spill mark or more queued), a spooled segment waits; once the writers have
/// caught up it is stored, once.
#[test]
fn the_replayer_waits_while_the_writers_are_behind() {
    use nfpg::flow::handoff::Handoff;
    use nfpg::store::copy::{encode_rows, Shape};
    use nfpg::store::replay::Replayer;
    use nfpg::store::spool::{Identity, Marker, Spool};
    use nfpg_wire::columns::{Columns, DatagramMeta};

    let db = TestDb::start();
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(
        Spool::open(
            dir.path(),
            1 << 30,
            Identity::of(db.conninfo(), "netflow").unwrap(),
            Arc::default(),
        )
        .unwrap(),
    );
    let meta = DatagramMeta {
        exporter: nfpg_wire::columns::addr_to_u128("127.0.0.27".parse().unwrap()),
        received_us: now_us(),
    };
    let recs: Vec<Rec> = (0..10).map(rec).collect();
    let mut cols = Columns::with_capacity(10);
    nfpg_wire::v5::decode(
        &v5_datagram(now_secs(), 9_000, 0, 0, 0, &recs),
        &meta,
        &mut cols,
    )
    .unwrap();
    let mut tuples = Vec::new();
    encode_rows(&cols, Shape::Basic, &mut tuples);
    spool
        .write(
            Marker { writer: 77, seq: 1 },
            Shape::Basic,
            &[nfpg::store::copy::Piece::Bytes(&tuples)],
            10,
        )
        .unwrap();
    // A queue of 8 (spill mark 6): 3 batches queued is "behind".
    let live = Arc::new(Handoff::new(8, 8, 4));
    for _ in 0..3 {
        assert!(live.push_full(live.take_empty().unwrap()).is_ok());
    }
    assert!(live.writers_behind());
    let counters: Arc<crossbeam_utils::CachePadded<nfpg::obs::stats::SpoolCounters>> =
        Arc::default();
    let replayer = Replayer {
        spool: spool.clone(),
        conninfo: db.conninfo().to_string(),
        schema: nfpg::store::db::Schema::new("netflow").unwrap(),
        health: Arc::new(nfpg::store::health::Health::new(Arc::default())),
        counters: counters.clone(),
        live: Some(live.clone()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || replayer.run(stop))
    };
    // Connected (the schema is there) and still waiting.
    assert!(wait_until(Duration::from_secs(30), || db.count(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'netflow' AND tablename = 'flows'"
    ) == 1));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(counters.rows_replayed.load(Ordering::Relaxed), 0);
    assert_eq!(segments(dir.path()), 1);
    // The writers catch up: 2 queued is below half the mark.
    live.give_back(live.pop_full().unwrap());
    assert!(!live.writers_behind());
    assert!(wait_until(Duration::from_secs(30), || segments(dir.path()) == 0));
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    assert_eq!(counters.rows_replayed.load(Ordering::Relaxed), 10);
    assert_eq!(flows(&db), 10);
}

/// Must show 7: a login that fails at start (a role that does not exist; the private test
/// server trusts local users, so a wrong password alone would be accepted): a clear error
/// within seconds, flows spooled; after the fix and a restart every flow is stored.
#[test]
fn a_bad_login_at_start_is_reported_and_nothing_is_lost() {
    let db = TestDb::start();
    let spool = tempfile::tempdir().unwrap();
    let dir = spool.path().to_str().unwrap().to_string();
    let bad = format!("{} user=nobody_here", db.conninfo());
    let nfpg = Nfpg::start_with(Some(&bad), "127.0.0.1", &["--spool-dir", &dir]);
    assert!(
        nfpg.log().contains("database configuration error")
            || nfpg.log().contains("database not usable at start"),
        "{}",
        nfpg.log()
    );
    let sent = send(nfpg.addr, "127.0.0.25", 0, 500);
    std::thread::sleep(Duration::from_secs(1));
    let s = nfpg.stop();
    assert_eq!(s["rows_spooled"].as_u64().unwrap(), sent, "{s}");
    assert_eq!(s["database_up"], false);
    let nfpg = Nfpg::start(&db, &["--spool-dir", &dir]);
    wait_stored(&db, sent);
    nfpg.stop();
    assert_eq!(segments(spool.path()), 0);
}

/// A TCP proxy in front of the server's unix socket that cuts the connection once, right
/// after it forwarded a COMMIT, without passing the server's answer back.
fn cutting_proxy(socket: std::path::PathBuf, pg_port: u16) -> (u16, Arc<AtomicU32>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cuts = Arc::new(AtomicU32::new(0));
    let cut_done = Arc::new(AtomicBool::new(false));
    let c = cuts.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server =
                std::os::unix::net::UnixStream::connect(socket.join(format!(".s.PGSQL.{pg_port}")))
                    .unwrap();
            let (cuts, cut_done) = (c.clone(), cut_done.clone());
            let mut c_in = client.try_clone().unwrap();
            let mut s_out = server.try_clone().unwrap();
            let mut s_in = server;
            let mut c_out = client;
            let cut = Arc::new(AtomicBool::new(false));
            let cut2 = cut.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let mut copied = false;
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let data = &buf[..n];
                    copied |= data.windows(11).any(|w| w == b"FROM STDIN ");
                    let commit = data.windows(7).any(|w| w == b"COMMIT\0");
                    if copied && commit && !cut_done.swap(true, Ordering::SeqCst) {
                        // The server commits; the client never hears it.
                        cut2.store(true, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(300));
                        cuts.fetch_add(1, Ordering::SeqCst);
                        let _ = c_in.shutdown(std::net::Shutdown::Both);
                        let _ = s_out.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                }
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 || cut.load(Ordering::SeqCst) {
                        break;
                    }
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (port, cuts)
}

/// Must show 4: the connection cut after COMMIT was sent: the COPY is committed, the writer
/// never hears it, spools it with its marker; the replay meets the marker and stores
/// nothing twice.
#[test]
fn a_connection_cut_after_commit_stores_nothing_twice() {
    let db = TestDb::start();
    let server = db.db.server.as_ref().unwrap();
    let pg_port: u16 = db
        .conninfo()
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .unwrap()
        .parse()
        .unwrap();
    let (port, cuts) = cutting_proxy(server.socket_dir(), pg_port);
    let _ = TcpStream::connect(("127.0.0.1", port)).map(drop);
    let user = db
        .conninfo()
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("user="))
        .unwrap()
        .to_string();
    let url = format!("host=127.0.0.1 port={port} dbname=netflow_db user={user}");
    // Migrations run over the proxy too; the cut waits for the first COPY's commit.
    let nfpg = Nfpg::start_with(Some(&url), "127.0.0.1", &["--writers", "1"]);
    let sent = send(nfpg.addr, "127.0.0.26", 0, 300);
    wait_stored(&db, sent);
    std::thread::sleep(Duration::from_secs(2));
    let s = nfpg.stop();
    assert!(
        cuts.load(Ordering::SeqCst) >= 1,
        "the proxy cut a connection"
    );
    assert_eq!(flows(&db), sent, "not stored twice: {s}");
}
