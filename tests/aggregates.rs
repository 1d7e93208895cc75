//! Issue 13: the hourly aggregates (exact sums, sampling upscale, late-arriving flows, rows
//! committed behind the watermark, idempotent updates) and retention (exactly the expired
//! day partitions dropped), on a real PostgreSQL with real datagrams.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use nfpg_wire::v5::encode::{datagram, sampling_field, Header, Record};

/// One v5 datagram of `n` records from record number `from`, exported at `unix_secs`, each
/// flow starting `age_ms` before the export.
fn dgram(unix_secs: u32, seq: u32, sampling: u16, from: u32, n: u32, age_ms: u32) -> Vec<u8> {
    let uptime = 50_000_000;
    let header = Header {
        sys_uptime: uptime,
        unix_secs,
        unix_nsecs: 0,
        flow_sequence: seq,
        engine_type: 0,
        engine_id: 0,
        sampling_interval: sampling_field(sampling),
    };
    let records: Vec<Record> = (from..from + n)
        .map(|i| Record {
            src_addr: [10, 0, 0, (i % 3 + 1) as u8],
            dst_addr: [192, 0, 2, (i % 2 + 1) as u8],
            packets: i + 1,
            octets: 100 * (i + 1),
            first: uptime - age_ms,
            last: uptime - age_ms + 500,
            src_port: 40_000,
            dst_port: if i % 4 == 0 { 51_234 } else { 443 },
            protocol: 6,
            ..Record::default()
        })
        .collect();
    datagram(&header, &records)
}

/// (hour, exporter, src, dst, protocol, application) → (flows, packets, bytes, est flows,
/// est packets, est bytes).
type Sums = BTreeMap<(i64, String, String, String, i16, String), [i64; 6]>;

/// What the aggregates should hold for records `from..from + n` of one datagram.
fn expect(
    sums: &mut Sums,
    exporter: &str,
    unix_secs: u32,
    sampling: i64,
    from: u32,
    n: u32,
    age_ms: u32,
) {
    let start_ms = i64::from(unix_secs) * 1000 - i64::from(age_ms);
    let hour = start_ms.div_euclid(3_600_000) * 3600;
    for i in from..from + n {
        let key = (
            hour,
            exporter.to_string(),
            format!("10.0.0.{}", i % 3 + 1),
            format!("192.0.2.{}", i % 2 + 1),
            6,
            if i % 4 == 0 { "user-51234" } else { "HTTPS" }.to_string(),
        );
        let up = sampling.max(1);
        let (p, b) = (i64::from(i + 1), i64::from(100 * (i + 1)));
        let e = sums.entry(key).or_default();
        for (k, v) in [1, p, b, up, p * up, b * up].into_iter().enumerate() {
            e[k] += v;
        }
    }
}

fn stored(db: &TestDb) -> Sums {
    db.client()
        .query(
            "SELECT extract(epoch FROM hour)::int8, host(exporter), host(src_addr), host(dst_addr),
                    protocol, application_name, sum(flows)::int8, sum(packets)::int8,
                    sum(bytes)::int8, sum(est_flows)::int8, sum(est_packets)::int8,
                    sum(est_bytes)::int8
             FROM netflow.flow_aggregates_hourly GROUP BY 1, 2, 3, 4, 5, 6",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)),
                [r.get(6), r.get(7), r.get(8), r.get(9), r.get(10), r.get(11)],
            )
        })
        .collect()
}

/// Known flows from an unsampled and a 1-in-100 exporter, some started three hours before
/// they arrive: the housekeeper's aggregates hold exactly the expected rows and sums, the
/// estimates upscaled, the late flows in their own hour; a further update changes nothing.
#[test]
fn hourly_aggregates_are_exact_upscaled_and_take_late_flows() {
    let db = TestDb::start();
    let nfpg = Nfpg::start(
        &db,
        &["--aggregate-interval", "0.5", "--aggregate-lag", "1"],
    );
    let now = now_secs();
    let mut sums = Sums::new();
    let a = exporter_socket("127.0.0.41");
    let b = exporter_socket("127.0.0.42");
    let mut da = Vec::new();
    let mut db_ = Vec::new();
    for d in 0..20u32 {
        // Exporter A: flows of the last seconds, and every fifth datagram flows that started
        // three hours ago (arriving late, as a long-lived flow's record does).
        let age = if d % 5 == 4 {
            3 * 3_600_000 + 2_000
        } else {
            2_000
        };
        da.push(dgram(now, d * 10, 0, d * 10, 10, age));
        expect(&mut sums, "127.0.0.41", now, 0, d * 10, 10, age);
        db_.push(dgram(now, d * 10, 100, d * 10, 10, 2_000));
        expect(&mut sums, "127.0.0.42", now, 100, d * 10, 10, 2_000);
    }
    send_paced(&a, nfpg.addr, &da);
    send_paced(&b, nfpg.addr, &db_);
    assert!(wait_until(Duration::from_secs(30), || db.count(
        "SELECT coalesce(sum(flows), 0)::int8 FROM netflow.flow_aggregates_hourly"
    ) == 400));
    assert_eq!(stored(&db), sums);
    let s = nfpg.stop();
    assert_eq!(s["rows_written"], 400);
    // Idempotent: another update (nothing new arrived) changes nothing.
    db.client()
        .execute(
            "SELECT netflow.update_flow_aggregates(now(), interval '1 day')",
            &[],
        )
        .unwrap();
    assert_eq!(stored(&db), sums);
    // The aggregates agree with the stored flows, row for row.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM (
                 SELECT date_trunc('hour', flow_start AT TIME ZONE 'UTC') AS h, exporter, src_addr,
                        dst_addr, protocol, count(*) AS n, sum(bytes) AS b
                 FROM netflow.flows GROUP BY 1, 2, 3, 4, 5
                 EXCEPT
                 SELECT hour AT TIME ZONE 'UTC', exporter, src_addr, dst_addr, protocol,
                        sum(flows), sum(bytes)
                 FROM netflow.flow_aggregates_hourly GROUP BY 1, 2, 3, 4, 5) d"
        ),
        0
    );
}

/// A COPY whose rows arrived before the watermark (a COPY committed late, or replayed from
/// the spool) adds them to the aggregates itself, in its own transaction: counted once.
#[test]
fn rows_committed_behind_the_watermark_are_aggregated_once() {
    use nfpg::flow::batch::{v4_to_u128, Columns};
    use nfpg::store::copy;
    use nfpg::store::db::{migrate, Schema};
    use nfpg::store::spool::Marker;
    use nfpg::store::writer::{PgSink, Sink};
    let db = TestDb::start();
    let schema = Schema::new("netflow").unwrap();
    let mut c = db.client();
    migrate(&mut c, &schema).unwrap();
    c.batch_execute("SELECT netflow.ensure_flow_partitions(current_date - 2, 5)")
        .unwrap();
    c.batch_execute("SELECT netflow.ensure_aggregate_partitions(current_date - 2, 5)")
        .unwrap();
    // The watermark passes the present.
    c.execute(
        "SELECT netflow.update_flow_aggregates(now(), interval '7 days')",
        &[],
    )
    .unwrap();
    // 50 flows that arrived an hour ago, committed only now.
    let rx_us = now_us() - 3_600_000_000;
    let mut cols = Columns::with_capacity(64);
    let d = dgram(now_secs() - 3600, 0, 0, 0, 30, 2_000);
    let meta = nfpg_wire::columns::DatagramMeta {
        exporter: v4_to_u128(0x7f00_0033),
        received_us: rx_us,
    };
    nfpg_wire::v5::decode(&d, &meta, &mut cols).unwrap();
    let d = dgram(now_secs() - 3600, 30, 0, 30, 20, 2_000);
    nfpg_wire::v5::decode(&d, &meta, &mut cols).unwrap();
    let mut data = Vec::new();
    let shape = copy::encode_copy([&cols], &mut data);
    let mut sink = PgSink::new(db.conninfo(), &schema);
    sink.set_received_range(Some((rx_us, rx_us)));
    sink.write_copy(&data, shape, 50, Marker { writer: 9, seq: 0 }, 0)
        .unwrap();
    let total = "SELECT coalesce(sum(flows), 0)::int8 FROM netflow.flow_aggregates_hourly";
    assert_eq!(db.count(total), 50);
    // The periodic update does not count them again.
    c.execute(
        "SELECT netflow.update_flow_aggregates(now(), interval '7 days')",
        &[],
    )
    .unwrap();
    assert_eq!(db.count(total), 50);
    assert_eq!(db.count("SELECT count(*) FROM netflow.flows"), 50);
}

/// Rows behind the watermark are added by the COPY that stores them: from a second copy in
/// the writer's temporary table (0016), or by xmin where the role may not make temporary
/// tables. Either way: exactly the rows behind the watermark (the others wait for the fold),
/// once per COPY on one connection (the table is emptied at every commit, and a COPY refused
/// as already committed adds nothing), and the sums equal the flows'.
#[test]
fn copies_behind_the_watermark_add_exactly_their_rows_with_or_without_a_temp_table() {
    use nfpg::flow::batch::{v4_to_u128, Columns};
    use nfpg::store::copy;
    use nfpg::store::db::{connect, migrate, Schema};
    use nfpg::store::spool::Marker;
    use nfpg::store::writer::{Committed, PgSink, Sink};
    let db = TestDb::start();
    let mut su = db.client();
    su.batch_execute(
        "CREATE ROLE nfpg_notemp LOGIN PASSWORD 'notemp-pw';
         GRANT CREATE ON DATABASE netflow_db TO nfpg_notemp;
         REVOKE TEMP ON DATABASE netflow_db FROM PUBLIC;",
    )
    .unwrap();
    let socket_dir = db.conninfo_value("host");
    let notemp = format!("host={socket_dir} user=nfpg_notemp password=notemp-pw dbname=netflow_db");
    let now_us = now_us();
    let hour_ago_us = now_us - 3_600_000_000;
    for (name, conninfo, temp) in [
        ("withtemp", db.conninfo().to_string(), true),
        ("notemp", notemp, false),
    ] {
        let schema = Schema::new(name).unwrap();
        let mut c = connect(&conninfo).unwrap();
        assert_eq!(
            c.query_one(
                "SELECT has_database_privilege(current_user, 'netflow_db', 'TEMP')",
                &[]
            )
            .unwrap()
            .get::<_, bool>(0),
            temp
        );
        migrate(&mut c, &schema).unwrap();
        c.batch_execute(&schema.render(
            "SELECT {schema}.ensure_flow_partitions(current_date - 2, 5);
             SELECT {schema}.ensure_aggregate_partitions(current_date - 2, 5);
             SELECT {schema}.update_flow_aggregates(now(), interval '7 days');",
        ))
        .unwrap();
        // Flows received at `rx_us`, `n` of them from record `from`.
        let encode = |parts: &[(i64, u32, u32)]| {
            let mut cols = Columns::with_capacity(128);
            for &(rx_us, from, n) in parts {
                let meta = nfpg_wire::columns::DatagramMeta {
                    exporter: v4_to_u128(0x7f00_0044),
                    received_us: rx_us,
                };
                let d = dgram(now_secs() - 3600, from, 0, from, n, 2_000);
                nfpg_wire::v5::decode(&d, &meta, &mut cols).unwrap();
            }
            let mut data = Vec::new();
            let shape = copy::encode_copy([&cols], &mut data);
            (data, shape)
        };
        let total = schema
            .render("SELECT coalesce(sum(flows), 0)::int8 FROM {schema}.flow_aggregates_hourly");
        let count =
            |c: &mut postgres::Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
        let mut sink = PgSink::new(&conninfo, &schema);
        // 50 flows received an hour ago: all behind the watermark.
        let (first, shape) = encode(&[(hour_ago_us, 0, 30), (hour_ago_us, 30, 20)]);
        sink.set_received_range(Some((hour_ago_us, hour_ago_us)));
        let m1 = Marker { writer: 7, seq: 0 };
        assert_eq!(
            sink.write_copy(&first, shape, 50, m1, 0),
            Ok(Committed::Now)
        );
        assert_eq!(count(&mut c, &total), 50, "{name}");
        // The writer's connection made its temporary table only where the role may.
        let own_tables = "SELECT count(*) FROM pg_class WHERE relname = 'nfpg_own_rows' \
                          AND relpersistence = 't' AND relowner = \
                          (SELECT oid FROM pg_roles WHERE rolname = current_user)";
        assert_eq!(count(&mut c, own_tables), i64::from(temp), "{name}");
        // On the same connection: 20 behind the watermark, 30 ahead of it (received "in ten
        // minutes"), which wait for the fold.
        let ahead_us = now_us + 600_000_000;
        let (second, shape) = encode(&[(hour_ago_us, 50, 20), (ahead_us, 70, 30)]);
        sink.set_received_range(Some((hour_ago_us, ahead_us)));
        let m2 = Marker { writer: 7, seq: 1 };
        assert_eq!(
            sink.write_copy(&second, shape, 50, m2, 0),
            Ok(Committed::Now)
        );
        assert_eq!(count(&mut c, &total), 70, "{name}");
        // The first COPY again (its reply lost, say): refused by its marker, adds nothing.
        sink.set_received_range(Some((hour_ago_us, hour_ago_us)));
        assert_eq!(
            sink.write_copy(&first, shape, 50, m1, 0),
            Ok(Committed::Already)
        );
        assert_eq!(count(&mut c, &total), 70, "{name}");
        c.batch_execute(&schema.render(
            "SELECT {schema}.update_flow_aggregates(now() + interval '1 hour', interval '7 days')",
        ))
        .unwrap();
        assert_eq!(count(&mut c, &total), 100, "{name}");
        assert_eq!(
            count(
                &mut c,
                &schema.render("SELECT count(*) FROM {schema}.flows")
            ),
            100
        );
        // Per key, the aggregates' sums are the flows' sums.
        assert_eq!(
            count(
                &mut c,
                &schema.render(
                    "SELECT count(*) FROM (
                         SELECT src_addr, dst_addr, count(*)::int8, sum(bytes)::int8
                         FROM {schema}.flows GROUP BY 1, 2
                         EXCEPT
                         SELECT src_addr, dst_addr, sum(flows)::int8, sum(bytes)::int8
                         FROM {schema}.flow_aggregates_hourly GROUP BY 1, 2) d"
                )
            ),
            0,
            "{name}"
        );
    }
}

/// The watermark moves (the range waits, pending), then a COPY of rows in that range begins
/// and adds them itself, then the range is folded: the fold sees the COPY's rows and leaves
/// them out, so they are counted once.
#[test]
fn a_copy_between_moving_the_watermark_and_folding_is_counted_once() {
    use nfpg::flow::batch::{v4_to_u128, Columns};
    use nfpg::store::copy;
    use nfpg::store::db::{migrate, Schema};
    use nfpg::store::spool::Marker;
    use nfpg::store::writer::{PgSink, Sink};
    let db = TestDb::start();
    let schema = Schema::new("netflow").unwrap();
    let mut c = db.client();
    migrate(&mut c, &schema).unwrap();
    c.batch_execute(
        "SELECT netflow.ensure_flow_partitions(current_date - 2, 5);
         SELECT netflow.ensure_aggregate_partitions(current_date - 2, 5);",
    )
    .unwrap();
    let rx_us = now_us();
    std::thread::sleep(Duration::from_millis(20));
    // The watermark passes rx_us; the range it passed waits to be folded.
    c.batch_execute("SELECT netflow.advance_flow_aggregates_watermark(now(), interval '7 days')")
        .unwrap();
    let mut cols = Columns::with_capacity(64);
    let meta = nfpg_wire::columns::DatagramMeta {
        exporter: v4_to_u128(0x7f00_0055),
        received_us: rx_us,
    };
    nfpg_wire::v5::decode(&dgram(now_secs(), 0, 0, 0, 30, 2_000), &meta, &mut cols).unwrap();
    let mut data = Vec::new();
    let shape = copy::encode_copy([&cols], &mut data);
    let mut sink = PgSink::new(db.conninfo(), &schema);
    sink.set_received_range(Some((rx_us, rx_us)));
    sink.write_copy(&data, shape, 30, Marker { writer: 3, seq: 0 }, 0)
        .unwrap();
    let total = "SELECT coalesce(sum(flows), 0)::int8 FROM netflow.flow_aggregates_hourly";
    assert_eq!(db.count(total), 30);
    c.batch_execute("SELECT netflow.fold_flow_aggregates()")
        .unwrap();
    assert_eq!(db.count(total), 30);
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.flow_aggregates_pending"),
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.flow_aggregates_own"),
        0
    );
}

/// Every update of the aggregates first summarizes the received_at BRIN ranges filled since
/// the last one, so its fold reads only the ranges of the rows it adds.
#[test]
fn each_update_summarizes_the_new_received_at_ranges() {
    use nfpg::store::aggregates::{summarize_arrivals, update};
    use nfpg::store::db::{migrate, Schema};
    let db = TestDb::start();
    let schema = Schema::new("netflow").unwrap();
    let mut c = db.client();
    migrate(&mut c, &schema).unwrap();
    c.batch_execute("SELECT netflow.ensure_flow_partitions(current_date - 1, 3)")
        .unwrap();
    let insert = "INSERT INTO netflow.flows (flow_start, flow_end, src_addr, dst_addr, protocol,
                      packets, bytes, exporter, netflow_version, received_at)
                  SELECT now(), now(), '10.0.0.1', '10.0.0.2', 6, 1, 100, '127.0.0.1', 5,
                         now() - interval '10 minutes'
                  FROM generate_series(1, 50000)";
    // 50,000 rows fill several 128-page ranges: summarized once, then none are new.
    c.batch_execute(insert).unwrap();
    assert!(summarize_arrivals(&mut c, &schema).unwrap() >= 2);
    assert_eq!(summarize_arrivals(&mut c, &schema).unwrap(), 0);
    // New ranges again; an update of the aggregates summarizes them.
    c.batch_execute(insert).unwrap();
    update(
        &mut c,
        &schema,
        Duration::ZERO,
        Duration::from_secs(3600),
        "t",
    )
    .unwrap();
    assert_eq!(summarize_arrivals(&mut c, &schema).unwrap(), 0);
}

/// With --retention-days 30 and --aggregate-retention-days 60, the housekeeper drops exactly
/// the day partitions past those ages and keeps the rest, and makes the days ahead.
#[test]
fn retention_drops_exactly_the_expired_partitions() {
    use nfpg::store::db::{migrate, Schema};
    let db = TestDb::start();
    let mut c = db.client();
    migrate(&mut c, &Schema::new("netflow").unwrap()).unwrap();
    c.batch_execute(
        "SELECT netflow.ensure_flow_partitions((now() AT TIME ZONE 'UTC')::date - 40, 41);
         SELECT netflow.ensure_aggregate_partitions((now() AT TIME ZONE 'UTC')::date - 70, 71);",
    )
    .unwrap();
    let days = |table: &str| -> Vec<i32> {
        let mut v: Vec<i32> = db
            .client()
            .query(
                "SELECT ((now() AT TIME ZONE 'UTC')::date - to_date(right(c.relname, 8), 'YYYYMMDD'))::int4
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent
                 WHERE p.relname = $1 AND c.relname ~ '_[0-9]{8}$'",
                &[&table],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        v.sort();
        v
    };
    assert_eq!(days("flows").last(), Some(&40));
    let nfpg = Nfpg::start(
        &db,
        &[
            "--retention-days",
            "30",
            "--aggregate-retention-days",
            "60",
            "--partitions-ahead",
            "4",
        ],
    );
    // The first upkeep runs ten seconds after start.
    assert!(wait_until(Duration::from_secs(30), || days("flows").last()
        == Some(&30)));
    assert!(wait_until(Duration::from_secs(10), || days(
        "flow_aggregates_hourly"
    )
    .last()
        == Some(&60)));
    nfpg.stop();
    // Days 31..40 and 61..70 gone, every younger day kept, four days ahead made.
    assert_eq!(days("flows"), (-4..=30).collect::<Vec<_>>());
    assert_eq!(
        days("flow_aggregates_hourly"),
        (-4..=60).collect::<Vec<_>>()
    );
}
