//! The original collector's world on nfpg (migration 0014, `src/store/original.rs`): the role
//! `netflow_user` logs in with `DB_PASSWORD` on the private server, finds the views
//! `netflow_flows`, `netflow_exporters`, `netflow_aggregates` and `netflow_debug_log` without
//! a schema prefix, reads the original's columns with their meanings, runs the original's two
//! queries as its documentation wrote them, and writes nothing.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{exporter_socket, now_secs, send_paced, v5_datagram, wait_until, Nfpg, Rec, TestDb};
use nfpg::store::db::{connect, migrate, Schema};
use postgres::error::SqlState;
use postgres::{Client, SimpleQueryMessage};

/// The password given in `DB_PASSWORD`: quotes, a backslash and a dollar-quote inside, so
/// any quoting mistake shows.
const PASSWORD: &str = "it's the 'original' pw \\ $pw$";

/// The original's top-talkers query, as its documentation gave it.
const TOP_TALKERS: &str = "\
SELECT src_ip, SUM(bytes) as total_bytes, SUM(packets) as total_packets, COUNT(*) as flow_count
FROM netflow_flows
WHERE flow_start >= NOW() - INTERVAL '1 hour'
GROUP BY src_ip
ORDER BY total_bytes DESC
LIMIT 10;";

/// The original's anomaly query, as its documentation gave it.
const ANOMALIES: &str = "\
SELECT src_ip, COUNT(DISTINCT dst_ip) as unique_destinations, SUM(bytes) as total_bytes, COUNT(*) as flow_count
FROM netflow_flows
WHERE flow_start >= NOW() - INTERVAL '5 minutes'
GROUP BY src_ip
HAVING COUNT(*) > 1000
ORDER BY flow_count DESC;";

/// A value for a key/value connection string.
fn kv_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A key/value connection string for `user` over the socket in `socket_dir`.
fn conninfo(socket_dir: &str, user: &str, password: Option<&str>) -> String {
    let mut s = format!(
        "host={} user={user} dbname=netflow_db",
        kv_quote(socket_dir)
    );
    if let Some(p) = password {
        s.push_str(&format!(" password={}", kv_quote(p)));
    }
    s
}

/// Every row of a query, every value as text (NULL as "NULL"), by the simple protocol: the
/// original's queries go to the server exactly as written.
fn rows(c: &mut Client, sql: &str) -> Vec<Vec<String>> {
    c.simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn one(c: &mut Client, sql: &str) -> String {
    let r = rows(c, sql);
    assert_eq!(r.len(), 1, "{sql}: {r:?}");
    r[0][0].clone()
}

/// Runs `sql` and expects PostgreSQL to refuse it for lack of privileges.
fn refused(c: &mut Client, sql: &str) {
    let e = c
        .batch_execute(sql)
        .expect_err(&format!("netflow_user may not: {sql}"));
    assert_eq!(
        e.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{sql}: {e}"
    );
}

/// The same for a write to a view: one that is not updatable is refused as such before its
/// privileges are checked (the tables under it are checked by [`refused`]).
fn refused_view(c: &mut Client, sql: &str) {
    let e = c
        .batch_execute(sql)
        .expect_err(&format!("netflow_user may not: {sql}"));
    assert!(
        e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)
            || e.code() == Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
        "{sql}: {e}"
    );
}

/// `n` records from `src` to `dst(i)`.
fn recs(
    n: u32,
    src: [u8; 4],
    dst: impl Fn(u32) -> [u8; 4],
    bytes: u32,
    packets: u32,
    proto: u8,
    dport: u16,
) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec {
            src,
            dst: dst(i),
            packets,
            bytes,
            sport: 40000 + i as u16,
            dport,
            proto,
        })
        .collect()
}

/// One exporter (address, engine): datagrams of 30 records with consecutive sequence numbers.
struct Exporter {
    sock: std::net::UdpSocket,
    engine: u8,
    sampling: u16,
    seq: u32,
}

impl Exporter {
    fn new(ip: &str, engine: u8, sampling: u16) -> Self {
        Exporter {
            sock: exporter_socket(ip),
            engine,
            sampling,
            seq: 0,
        }
    }

    /// Sends `records` with the header time `unix_secs` (flows start 2 s, end 1 s before it).
    fn send(&mut self, to: SocketAddr, unix_secs: u32, records: &[Rec]) {
        let datagrams: Vec<Vec<u8>> = records
            .chunks(30)
            .map(|chunk| {
                let d = v5_datagram(
                    unix_secs,
                    3_600_000,
                    self.seq,
                    self.engine,
                    self.sampling,
                    chunk,
                );
                self.seq += chunk.len() as u32;
                d
            })
            .collect();
        send_paced(&self.sock, to, &datagrams);
    }
}

/// The whole path: nfpg on its private server with `DB_PASSWORD` set; known flows from three
/// exporter addresses (one with two engines, one sampled), one malformed datagram; then, as
/// `netflow_user` with that password, the original's queries and the four views.
#[test]
fn the_original_world_as_netflow_user() {
    // Read by the nfpg child (its environment is this process's). Every test of this file
    // tolerates it: the password only ever goes to a private server's netflow_user.
    std::env::set_var("DB_PASSWORD", PASSWORD);
    let dir = tempfile::Builder::new()
        .prefix("nfpg-o")
        .tempdir_in("/tmp")
        .unwrap();
    let data_dir = dir.path().to_str().unwrap().to_string();
    let socket_dir = dir.path().join("run").to_str().unwrap().to_string();
    let nfpg = Nfpg::start_with(None, "127.0.0.1", &["--data-dir", &data_dir]);
    let to = nfpg.addr;
    let now = now_secs();

    // Exporter A (127.0.0.1, unsampled): a scanner, twelve talkers, a source two hours old.
    let mut a = Exporter::new("127.0.0.1", 0, 0);
    let scanner = [10, 9, 9, 9];
    a.send(
        to,
        now,
        &recs(
            1200,
            scanner,
            |i| [192, 0, 2, (i % 40) as u8],
            100,
            2,
            6,
            80,
        ),
    );
    for k in 1..=12u32 {
        a.send(
            to,
            now,
            &recs(
                5,
                [10, 1, 0, k as u8],
                |_| [192, 0, 2, 200],
                1000 * k,
                k,
                6,
                443,
            ),
        );
    }
    let old = [10, 7, 7, 7];
    a.send(
        to,
        now - 7200,
        &recs(30, old, |_| [192, 0, 2, 77], 1_000_000, 1000, 6, 8081),
    );
    a.send(
        to,
        now,
        &recs(2, [10, 3, 0, 1], |_| [192, 0, 2, 3], 50, 1, 1, 0),
    );
    // Exporter B (127.0.0.2): one source over two engines, DNS on one and NTP on the other.
    let mut b1 = Exporter::new("127.0.0.2", 1, 0);
    let mut b2 = Exporter::new("127.0.0.2", 2, 0);
    b1.send(
        to,
        now,
        &recs(10, [10, 2, 0, 1], |_| [192, 0, 2, 2], 777, 3, 17, 53),
    );
    b2.send(
        to,
        now,
        &recs(10, [10, 2, 0, 1], |_| [192, 0, 2, 2], 777, 3, 17, 123),
    );
    // Exporter C (127.0.0.3): sampled 1 in 100.
    let mut c3 = Exporter::new("127.0.0.3", 0, nfpg_wire::v5::encode::sampling_field(100));
    c3.send(
        to,
        now,
        &recs(3, [10, 3, 0, 1], |_| [192, 0, 2, 3], 50, 1, 1, 0),
    );
    // A malformed datagram from 127.0.0.4: version 7.
    let mut bad = v5_datagram(now, 3_600_000, 0, 0, 0, &recs(1, old, |_| old, 1, 1, 6, 1));
    bad[1] = 7;
    exporter_socket("127.0.0.4").send_to(&bad, to).unwrap();

    let total_flows: i64 = 1200 + 60 + 30 + 2 + 20 + 3;
    let mut su = connect(&conninfo(&socket_dir, "nfpg", None)).expect("superuser by peer");
    assert!(
        wait_until(Duration::from_secs(30), || {
            let n: i64 = su
                .query_one("SELECT count(*) FROM netflow.flows", &[])
                .unwrap()
                .get(0);
            let m: i64 = su
                .query_one("SELECT count(*) FROM netflow.malformed_datagrams", &[])
                .unwrap()
                .get(0);
            n == total_flows && m == 1
        }),
        "flows not stored:\n{}",
        nfpg.log()
    );
    // The exporters table is written every 0.5 s here; wait for the last totals.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let n: Option<i64> = su
                .query_one(
                    "SELECT sum(flows)::int8 FROM netflow.exporters WHERE exporter << '127.0.0.0/29'::inet AND exporter <> '127.0.0.4'",
                    &[],
                )
                .unwrap()
                .get(0);
            n == Some(total_flows)
        }),
        "exporter totals not written:\n{}",
        nfpg.log()
    );
    // The hourly aggregates up to now (nfpg's housekeeper does this on its own schedule).
    su.batch_execute(
        "SELECT netflow.update_flow_aggregates(now() + interval '1 minute', interval '7 days')",
    )
    .unwrap();

    // netflow_user: the wrong password is refused, DB_PASSWORD lets it in.
    assert!(connect(&conninfo(&socket_dir, "netflow_user", Some("not it"))).is_err());
    let mut user = connect(&conninfo(&socket_dir, "netflow_user", Some(PASSWORD)))
        .expect("netflow_user logs in with DB_PASSWORD");
    assert_eq!(one(&mut user, "SELECT current_user"), "netflow_user");
    assert_eq!(one(&mut user, "SHOW search_path"), "netflow, public");

    // The original's top talkers: the scanner (1200 × 100 bytes), then talkers 12 down to 4
    // (5 × 1000·k bytes); the source two hours old is outside the hour, the rest are smaller.
    let mut want_top = vec![vec![
        "10.9.9.9".to_string(),
        "120000".into(),
        "2400".into(),
        "1200".into(),
    ]];
    for k in (4..=12u32).rev() {
        want_top.push(vec![
            format!("10.1.0.{k}"),
            (5000 * k).to_string(),
            (5 * k).to_string(),
            "5".into(),
        ]);
    }
    assert_eq!(rows(&mut user, TOP_TALKERS), want_top);
    // The original's anomalies: only the scanner has more than 1000 flows in 5 minutes.
    let want_anomalies = vec![vec![
        "10.9.9.9".to_string(),
        "40".into(),
        "120000".into(),
        "1200".into(),
    ]];
    assert_eq!(rows(&mut user, ANOMALIES), want_anomalies);
    // Local time: in another session TimeZone the views' naive times move with it, and the
    // queries give the same rows.
    for tz in ["Asia/Kolkata", "America/New_York"] {
        user.batch_execute(&format!("SET TimeZone = '{tz}'"))
            .unwrap();
        assert_eq!(
            one(
                &mut user,
                &format!(
                    "SELECT (SELECT max(flow_start) FROM netflow_flows) \
                       = (SELECT max(flow_start) AT TIME ZONE '{tz}' FROM netflow.flows) \
                     AND (SELECT min(received_at) FROM netflow_flows) \
                       = (SELECT min(received_at) AT TIME ZONE '{tz}' FROM netflow.flows)"
                )
            ),
            "t",
            "{tz}"
        );
        assert_eq!(rows(&mut user, TOP_TALKERS), want_top, "{tz}");
        assert_eq!(rows(&mut user, ANOMALIES), want_anomalies, "{tz}");
    }
    user.batch_execute("RESET TimeZone").unwrap();

    // The views' columns, in the original's order, with their types.
    let columns = |c: &mut Client, view: &str| -> Vec<(String, String)> {
        c.query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'netflow' AND table_name = $1 ORDER BY ordinal_position",
            &[&view],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let ts = "timestamp without time zone";
    let want = |cols: &[(&str, &str)]| -> Vec<(String, String)> {
        cols.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    };
    assert_eq!(
        columns(&mut user, "netflow_flows"),
        want(&[
            ("id", "bigint"),
            ("flow_start", ts),
            ("flow_end", ts),
            ("src_ip", "inet"),
            ("dst_ip", "inet"),
            ("src_port", "integer"),
            ("dst_port", "integer"),
            ("protocol", "smallint"),
            ("packets", "bigint"),
            ("bytes", "bigint"),
            ("flow_duration_ms", "bigint"),
            ("exporter_ip", "inet"),
            ("input_snmp", "bigint"),
            ("output_snmp", "bigint"),
            ("tcp_flags", "smallint"),
            ("src_tos", "smallint"),
            ("dst_tos", "smallint"),
            ("src_as", "bigint"),
            ("dst_as", "bigint"),
            ("next_hop", "inet"),
            ("vlan_id", "integer"),
            ("application_name", "text"),
            ("bidirectional", "boolean"),
            ("netflow_version", "smallint"),
            ("received_at", ts),
            ("created_at", ts),
        ])
    );
    assert_eq!(
        columns(&mut user, "netflow_exporters"),
        want(&[
            ("exporter_ip", "inet"),
            ("exporter_name", "text"),
            ("first_seen", ts),
            ("last_seen", ts),
            ("total_flows", "bigint"),
            ("total_bytes", "bigint"),
            ("version", "integer"),
            ("sampling_rate", "integer"),
        ])
    );
    assert_eq!(
        columns(&mut user, "netflow_aggregates"),
        want(&[
            ("period_start", ts),
            ("period_end", ts),
            ("src_ip", "inet"),
            ("dst_ip", "inet"),
            ("protocol", "smallint"),
            ("total_bytes", "bigint"),
            ("total_packets", "bigint"),
            ("flow_count", "bigint"),
        ])
    );
    assert_eq!(
        columns(&mut user, "netflow_debug_log"),
        want(&[
            ("exporter_ip", "inet"),
            ("event_time", ts),
            ("event_type", "text"),
            ("message", "text"),
            ("packet_data", "bytea"),
            ("packet_length", "integer"),
        ])
    );

    // netflow_flows: every row, the original's meanings.
    assert_eq!(
        one(&mut user, "SELECT count(*) FROM netflow_flows"),
        total_flows.to_string()
    );
    assert_eq!(
        rows(
            &mut user,
            "SELECT count(*) FILTER (WHERE id IS NULL), \
                    count(*) FILTER (WHERE flow_duration_ms = 1000), \
                    count(*) FILTER (WHERE input_snmp = 1 AND output_snmp = 2), \
                    count(*) FILTER (WHERE src_tos = 0 AND dst_tos = 0 AND tcp_flags = 27), \
                    count(*) FILTER (WHERE NOT bidirectional AND netflow_version = 5), \
                    count(*) FILTER (WHERE created_at = received_at AND flow_end > flow_start), \
                    count(*) FILTER (WHERE abs(extract(epoch FROM localtimestamp - received_at)) < 300) \
             FROM netflow_flows"
        ),
        vec![vec![total_flows.to_string(); 7]]
    );
    assert_eq!(
        rows(
            &mut user,
            "SELECT application_name, count(*) FROM netflow_flows GROUP BY 1 ORDER BY 1"
        ),
        [
            ("DNS", 10),
            ("HTTP", 1200),
            ("HTTPS", 60),
            ("ICMP", 5),
            ("NTP", 10),
            ("user-8081", 30)
        ]
        .iter()
        .map(|(n, c)| vec![n.to_string(), c.to_string()])
        .collect::<Vec<_>>()
    );
    assert_eq!(
        rows(
            &mut user,
            "SELECT host(exporter_ip), count(*), sum(bytes) FROM netflow_flows GROUP BY 1 ORDER BY 1"
        ),
        vec![
            vec!["127.0.0.1".to_string(), "1292".into(), "30510100".into()],
            vec!["127.0.0.2".to_string(), "20".into(), "15540".into()],
            vec!["127.0.0.3".to_string(), "3".into(), "150".into()],
        ]
    );
    // The source two hours old: its local flow_start is two hours back.
    assert_eq!(
        one(
            &mut user,
            "SELECT count(*) FROM netflow_flows WHERE src_ip = '10.7.7.7' \
             AND flow_start BETWEEN localtimestamp - interval '2 hours 5 minutes' \
                                AND localtimestamp - interval '1 hour 55 minutes'"
        ),
        "30"
    );

    // netflow_exporters: one row per address, nfpg's rows summed; sampling 0 reads as 1.
    assert_eq!(
        rows(
            &mut user,
            "SELECT host(exporter_ip), exporter_name IS NULL, total_flows, total_bytes, version, \
                    sampling_rate, first_seen <= last_seen, \
                    abs(extract(epoch FROM localtimestamp - last_seen)) < 300 \
             FROM netflow_exporters WHERE exporter_ip <> '127.0.0.4' ORDER BY 1"
        ),
        vec![
            vec![
                "127.0.0.1".to_string(),
                "t".into(),
                "1292".into(),
                "30510100".into(),
                "5".into(),
                "1".into(),
                "t".into(),
                "t".into()
            ],
            vec![
                "127.0.0.2".to_string(),
                "t".into(),
                "20".into(),
                "15540".into(),
                "5".into(),
                "1".into(),
                "t".into(),
                "t".into()
            ],
            vec![
                "127.0.0.3".to_string(),
                "t".into(),
                "3".into(),
                "150".into(),
                "5".into(),
                "100".into(),
                "t".into(),
                "t".into()
            ],
        ]
    );
    assert_eq!(
        one(
            &mut su,
            "SELECT count(*) FROM netflow.exporters WHERE exporter = '127.0.0.2'"
        ),
        "2",
        "nfpg keeps one row per engine"
    );

    // netflow_aggregates: per hour, source, destination, protocol; summed over exporters and
    // application names.
    let agg: BTreeMap<String, Vec<String>> = rows(
        &mut user,
        "SELECT host(src_ip) || '>' || host(dst_ip) || '/' || protocol, \
                sum(total_bytes), sum(total_packets), sum(flow_count), count(*) \
         FROM netflow_aggregates GROUP BY 1",
    )
    .into_iter()
    .map(|mut r| (r.remove(0), r))
    .collect();
    let sums = |key: &str| agg.get(key).map(|r| r[..3].to_vec());
    assert_eq!(agg.len(), 40 + 12 + 3, "{agg:?}");
    assert_eq!(
        sums("10.9.9.9>192.0.2.0/6"),
        Some(vec!["3000".into(), "60".into(), "30".into()])
    );
    assert_eq!(
        sums("10.1.0.12>192.0.2.200/6"),
        Some(vec!["60000".into(), "60".into(), "5".into()])
    );
    assert_eq!(
        sums("10.2.0.1>192.0.2.2/17"),
        Some(vec!["15540".into(), "60".into(), "20".into()]),
        "DNS and NTP rows summed"
    );
    assert_eq!(
        sums("10.3.0.1>192.0.2.3/1"),
        Some(vec!["250".into(), "5".into(), "5".into()]),
        "two exporters summed (as exported, not upscaled)"
    );
    assert_eq!(
        rows(
            &mut user,
            "SELECT total_bytes, total_packets, flow_count, period_end - period_start, \
                    (SELECT min(flow_start) FROM netflow_flows WHERE src_ip = '10.7.7.7') \
                        >= period_start, \
                    (SELECT min(flow_start) FROM netflow_flows WHERE src_ip = '10.7.7.7') \
                        < period_end \
             FROM netflow_aggregates WHERE src_ip = '10.7.7.7'"
        ),
        vec![vec![
            "30000000".to_string(),
            "30000".into(),
            "30".into(),
            "01:00:00".into(),
            "t".into(),
            "t".into()
        ]]
    );

    // netflow_debug_log: the malformed datagram as a PARSE_ERROR; no PACKET_RECEIVED rows.
    assert_eq!(
        rows(
            &mut user,
            "SELECT host(exporter_ip), event_type, message, packet_length, \
                    length(packet_data), abs(extract(epoch FROM localtimestamp - event_time)) < 300 \
             FROM netflow_debug_log"
        ),
        vec![vec![
            "127.0.0.4".to_string(),
            "PARSE_ERROR".into(),
            "bad_version: 7".into(),
            bad.len().to_string(),
            "64".into(),
            "t".into()
        ]]
    );
    let head: Vec<u8> = user
        .query_one("SELECT packet_data FROM netflow_debug_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(head, bad[..64]);

    // netflow_user reads and never writes.
    refused_view(
        &mut user,
        "INSERT INTO netflow_flows (src_ip, dst_ip) VALUES ('10.0.0.1', '10.0.0.2')",
    );
    refused(
        &mut user,
        "INSERT INTO netflow.flows (flow_start, flow_end, src_addr, dst_addr, protocol, packets, \
         bytes, exporter, netflow_version, received_at) \
         VALUES (now(), now(), '10.0.0.1', '10.0.0.2', 6, 1, 40, '127.0.0.1', 5, now())",
    );
    refused_view(
        &mut user,
        "UPDATE netflow_exporters SET exporter_name = 'x'",
    );
    refused(&mut user, "DELETE FROM netflow.exporters");
    refused(&mut user, "UPDATE netflow.app_names SET name = 'x'");
    refused(&mut user, "TRUNCATE netflow.malformed_datagrams");
    refused(&mut user, "CREATE TABLE netflow.mine (x int)");
    refused(&mut user, "DROP VIEW netflow_flows");
    assert_eq!(
        one(&mut su, "SELECT count(*) FROM netflow.flows"),
        total_flows.to_string()
    );

    // The password is in no log: nfpg's (stderr and the summary), the server's.
    drop(user);
    drop(su);
    let log = nfpg.log();
    assert!(
        log.contains("netflow_user may log in with the password in DB_PASSWORD"),
        "{log}"
    );
    let summary = nfpg.stop();
    assert_eq!(summary["rows_written"], total_flows);
    let server_log = std::fs::read_to_string(dir.path().join("postgres.log")).unwrap_or_default();
    for (name, text) in [
        ("nfpg", log),
        ("summary", summary.to_string()),
        ("postgres", server_log),
    ] {
        assert!(
            !text.contains("original' pw") && !text.contains("original'' pw"),
            "{name}'s log holds the password"
        );
    }
}

/// Without CREATEROLE a migration leaves the role alone and still makes the views; a
/// superuser's makes the role NOLOGIN with read grants (also on tables made later) and its
/// search_path; a later migration of another schema by a plain role grants what it owns.
#[test]
fn the_role_without_and_with_the_right_to_make_it() {
    let db = TestDb::start();
    let mut su = db.client();
    // A DB_PASSWORD in this process's environment (the test above sets one) makes
    // open_database create the role; start from none.
    su.batch_execute(
        "DROP ROLE IF EXISTS netflow_user;
         CREATE ROLE nfpg_plain LOGIN PASSWORD 'plain-pw';
         GRANT CREATE ON DATABASE netflow_db TO nfpg_plain;",
    )
    .unwrap();
    let socket_dir = db.conninfo_value("host");
    let mut plain = connect(&conninfo(&socket_dir, "nfpg_plain", Some("plain-pw"))).unwrap();
    let role_exists = |su: &mut Client| {
        su.query_opt("SELECT 1 FROM pg_roles WHERE rolname = 'netflow_user'", &[])
            .unwrap()
            .is_some()
    };

    // A plain role: the migration applies, the views are there, no role is made.
    migrate(&mut plain, &Schema::new("plain").unwrap()).expect("migrations without CREATEROLE");
    assert!(!role_exists(&mut su));
    assert_eq!(
        one(
            &mut su,
            "SELECT count(*) FROM pg_views WHERE schemaname = 'plain' AND viewname LIKE 'netflow\\_%'"
        ),
        "4"
    );

    // A superuser: the role, NOLOGIN, reading everything in the schema, its search_path.
    migrate(&mut su, &Schema::new("netflow").unwrap()).unwrap();
    assert_eq!(
        one(
            &mut su,
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'netflow_user'"
        ),
        "f"
    );
    for view in [
        "netflow_flows",
        "netflow_exporters",
        "netflow_aggregates",
        "netflow_debug_log",
        "flows",
        "exporters",
    ] {
        assert_eq!(
            rows(
                &mut su,
                &format!(
                    "SELECT has_table_privilege('netflow_user', 'netflow.{view}', 'SELECT'), \
                            has_table_privilege('netflow_user', 'netflow.{view}', 'INSERT,UPDATE,DELETE,TRUNCATE')"
                )
            ),
            vec![vec!["t".to_string(), "f".into()]],
            "{view}"
        );
    }
    // Tables made later (a new day partition) are readable too: default privileges.
    su.batch_execute("SELECT netflow.ensure_flow_partitions(current_date + 40, 1)")
        .unwrap();
    assert_eq!(
        one(
            &mut su,
            "SELECT has_table_privilege('netflow_user', \
             format('netflow.flows_%s', to_char(current_date + 40, 'YYYYMMDD')), 'SELECT')"
        ),
        "t"
    );
    let search_path = |su: &mut Client| {
        one(
            su,
            "SELECT array_to_string(s.setconfig, ';') FROM pg_db_role_setting s \
             JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE d.datname = 'netflow_db' AND s.setrole = 'netflow_user'::regrole",
        )
    };
    assert_eq!(search_path(&mut su), "search_path=netflow, public");

    // A plain role migrating another schema once the role exists: it grants what it owns,
    // may not change the role's search_path, and the migration still applies.
    migrate(&mut plain, &Schema::new("plain2").unwrap()).expect("migrations without CREATEROLE");
    assert_eq!(
        one(
            &mut su,
            "SELECT has_table_privilege('netflow_user', 'plain2.netflow_flows', 'SELECT') \
                AND has_schema_privilege('netflow_user', 'plain2', 'USAGE') \
                AND NOT has_schema_privilege('netflow_user', 'plain2', 'CREATE')"
        ),
        "t"
    );
    assert_eq!(search_path(&mut su), "search_path=netflow, public");
}

/// `set_password`: any password, quotes and all, becomes exactly the role's password, and a
/// new one replaces the old.
#[test]
fn set_password_takes_any_password_exactly() {
    let db = TestDb::start();
    let mut su = db.client();
    let socket_dir = db.conninfo_value("host");
    let first = "o'hara \\ $pw$ %L '; DROP ROLE nfpg; --";
    nfpg::store::original::set_password(&mut su, first).unwrap();
    let mut user = connect(&conninfo(&socket_dir, "netflow_user", Some(first)))
        .expect("the password as given");
    assert_eq!(one(&mut user, "SELECT current_user"), "netflow_user");
    drop(user);
    assert_eq!(
        one(
            &mut su,
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'netflow_user'"
        ),
        "t"
    );
    nfpg::store::original::set_password(&mut su, "second").unwrap();
    assert!(connect(&conninfo(&socket_dir, "netflow_user", Some(first))).is_err());
    connect(&conninfo(&socket_dir, "netflow_user", Some("second"))).expect("the new password");
    // The superuser is still there (no piece of the first password ran as SQL).
    assert_eq!(
        one(
            &mut su,
            "SELECT count(*) FROM pg_roles WHERE rolname = 'nfpg'"
        ),
        "1"
    );
}
