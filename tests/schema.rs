//! The schema's upkeep functions against a real PostgreSQL: day partitions, the B-trees added
//! to closed days, retention by partition drop, and the application-name view.

mod common;

use nfpg::store::db::{ensure_partitions, index_closed_partitions, migrate, Schema};

#[test]
fn partitions_indexes_and_retention() {
    let db = common::TestDb::start();
    let schema = Schema::new("netflow").unwrap();
    let mut c = db.client();
    let applied = migrate(&mut c, &schema).unwrap();
    assert_eq!(applied.len(), nfpg::store::db::MIGRATIONS.len());
    assert!(
        migrate(&mut c, &schema).unwrap().is_empty(),
        "migrations apply once"
    );
    // Yesterday .. today + 3.
    assert_eq!(ensure_partitions(&mut c, &schema, 3).unwrap(), 5);
    assert_eq!(
        ensure_partitions(&mut c, &schema, 3).unwrap(),
        0,
        "idempotent"
    );
    // Ten days back too, as if the collector had run then.
    let made: i32 = c
        .query_one(
            "SELECT netflow.ensure_flow_partitions((now() AT TIME ZONE 'UTC')::date - 10, 3)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(made, 3);
    let parts = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
             WHERE p.relname = 'flows' AND p.relnamespace = 'netflow'::regnamespace",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(parts(&mut c), 5 + 3 + 1, "day partitions + default");
    // A row lands in today's partition, not the default one.
    c.batch_execute(
        "INSERT INTO netflow.flows (flow_start, flow_end, src_addr, dst_addr, protocol, packets, bytes, \
         exporter, netflow_version, received_at) \
         VALUES (now(), now(), '10.0.0.1', '10.0.0.2', 6, 1, 40, '127.0.0.1', 5, now())",
    )
    .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM netflow.flows_default"), 0);
    // One BRIN index over both times per partition (migrations/0017): a range on either
    // column, or on both, is a bitmap scan of it.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'netflow' \
             AND tablename = 'flows_' || to_char((now() AT TIME ZONE 'UTC')::date, 'YYYYMMDD') \
             AND indexdef LIKE '%USING brin (received_at, flow_start)'"
        ),
        1
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'netflow' \
             AND tablename LIKE 'flows%' AND indexdef LIKE '%USING brin%'"
        ),
        parts(&mut c) + 1,
        "one BRIN per partition and the parent's, no other"
    );
    c.batch_execute("SET enable_seqscan = off").unwrap();
    for cond in [
        "received_at >= now() - interval '1 minute'",
        "flow_start >= now() - interval '1 minute'",
        "received_at >= now() - interval '1 minute' AND flow_start < now()",
    ] {
        let plan: Vec<String> = c
            .query(
                &format!("EXPLAIN (COSTS OFF) SELECT count(*) FROM netflow.flows WHERE {cond}"),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("Bitmap Index Scan on flows_")
                && plan.contains("_received_at_flow_start_idx"),
            "{cond}: {plan}"
        );
    }
    c.batch_execute("RESET enable_seqscan").unwrap();
    // Closed days get the lookup B-trees; today's partition does not.
    let indexed = index_closed_partitions(&mut c, &schema).unwrap();
    assert_eq!(indexed, 4, "the three old days and yesterday");
    assert_eq!(
        index_closed_partitions(&mut c, &schema).unwrap(),
        0,
        "idempotent"
    );
    let today_btrees = db.count(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'netflow' \
         AND tablename = 'flows_' || to_char((now() AT TIME ZONE 'UTC')::date, 'YYYYMMDD') AND indexdef LIKE '%btree%'",
    );
    assert_eq!(today_btrees, 0);
    let old_btrees = db.count(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'netflow' AND indexdef LIKE '%btree (src_addr)%'",
    );
    assert_eq!(old_btrees, 4);
    // Retention: keep 5 days, the three old partitions go.
    let dropped: i32 = c
        .query_one("SELECT netflow.drop_flow_partitions_older_than(5)", &[])
        .unwrap()
        .get(0);
    assert_eq!(dropped, 3);
    assert_eq!(parts(&mut c), 5 + 1);
    assert_eq!(
        db.count("SELECT count(*) FROM netflow.flows"),
        1,
        "today's row stays"
    );
    // The original's naming rules, through the view and the data tables.
    for (proto, port, want) in [
        (6, 443, "HTTPS"),
        (17, 53, "DNS"),
        (6, 8081, "user-8081"),
        (17, 999, "system-999"),
        (1, 0, "ICMP"),
        (99, 0, "protocol-99"),
    ] {
        c.batch_execute(&format!(
            "UPDATE netflow.flows SET protocol = {proto}, dst_port = {port}"
        ))
        .unwrap();
        let got: String = c
            .query_one("SELECT application_name FROM netflow.flows_with_app", &[])
            .unwrap()
            .get(0);
        assert_eq!(got, want, "protocol {proto} port {port}");
    }
    // Top talkers and anomalies run.
    let top: i64 = c
        .query_one("SELECT count(*) FROM netflow.top_talkers(1)", &[])
        .unwrap()
        .get(0);
    assert_eq!(top, 1);
    let anomalies: i64 = c
        .query_one("SELECT count(*) FROM netflow.anomalies(5, 0)", &[])
        .unwrap()
        .get(0);
    assert_eq!(anomalies, 1);
}
