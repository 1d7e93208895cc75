//! `tuning/grafana-dashboard.json`: a valid Grafana dashboard whose every panel's SQL runs
//! against nfpg's schema. Grafana's macros are replaced by the plain SQL they expand to, the
//! queries run against a private PostgreSQL with a few known rows, and the answers are
//! checked.

mod common;

use common::TestDb;
use serde_json::Value;

fn dashboard() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("tuning/grafana-dashboard.json");
    serde_json::from_str(&text).expect("the Grafana dashboard is valid JSON")
}

/// The arguments of the macro call that starts at `text[at..]` (after its `(`), and where the
/// call ends.
fn macro_args(text: &str, open: usize) -> (Vec<String>, usize) {
    let mut depth = 0;
    let mut args = vec![String::new()];
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            ')' => {
                depth -= 1;
                if depth == 0 {
                    let args = args.into_iter().map(|a| a.trim().to_string()).collect();
                    return (args, open + i + 1);
                }
            }
            ',' if depth == 1 => {
                args.push(String::new());
                continue;
            }
            _ => {}
        }
        args.last_mut().unwrap().push(c);
    }
    panic!("unclosed macro call in {text}");
}

/// Replaces every `name(...)` in `sql` with `f(args)`.
fn expand(sql: &str, name: &str, f: impl Fn(&[String]) -> String) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(i) = rest.find(name) {
        out.push_str(&rest[..i]);
        let open = i + name.len();
        assert_eq!(&rest[open..open + 1], "(", "{name} without arguments");
        let (args, end) = macro_args(rest, open);
        out.push_str(&f(&args));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Grafana's PostgreSQL macros as the SQL they stand for (a time range of the last six hours
/// and a one-minute interval), and the dashboard's variables.
fn grafana_to_sql(sql: &str) -> String {
    let sql = expand(sql, "$__timeGroupAlias", |a| {
        let secs = match a[1].trim_matches('\'') {
            "$__interval" => 60,
            "1h" => 3600,
            "1m" => 60,
            other => panic!("interval {other} not known to the test"),
        };
        format!(
            "floor(extract(epoch from {})/{secs})*{secs} AS \"time\"",
            a[0]
        )
    });
    let sql = expand(&sql, "$__timeFilter", |a| {
        format!(
            "{} BETWEEN now() - interval '6 hours' AND now() + interval '1 hour'",
            a[0]
        )
    });
    let sql = sql
        .replace("$__interval_ms", "60000")
        .replace("${schema}", "netflow");
    assert!(!sql.contains('$'), "a macro or variable left: {sql}");
    sql
}

#[test]
fn the_grafana_dashboard_is_well_formed() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(ds["name"], "DS");
    assert!(ds["query"].as_str().unwrap().contains("postgres"));
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 5);
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"], "${DS}", "{title}");
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        assert!(["timeseries", "table"].contains(&p["type"].as_str().unwrap()));
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["rawQuery"], true, "{title}");
            let format = t["format"].as_str().unwrap();
            assert!(["time_series", "table"].contains(&format), "{title}");
            let sql = t["rawSql"].as_str().unwrap();
            if format == "time_series" {
                assert!(sql.contains("$__timeGroupAlias("), "{title}: a time column");
            }
            assert!(
                sql.contains("${schema}."),
                "{title}: tables in the chosen schema"
            );
        }
    }
    let all: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["rawSql"].as_str().unwrap().to_string())
        .collect();
    for table in [
        "flows",
        "flow_aggregates_hourly",
        "exporters",
        "malformed_datagrams",
    ] {
        assert!(
            all.contains(&format!("${{schema}}.{table}\n"))
                || all.contains(&format!("${{schema}}.{table} ")),
            "a panel over {table}"
        );
    }
    assert!(all.contains("$__timeFilter(received_at)"));
    assert!(all.contains("est_bytes"));
}

#[test]
fn every_panel_query_runs_against_nfpgs_schema() {
    let db = TestDb::start();
    let schema = nfpg::store::db::Schema::new("netflow").unwrap();
    nfpg::store::db::prepare_schema(db.conninfo(), &schema).expect("migrations");
    let mut c = db.client();
    // Two sources: 10.0.0.1 sampled 1 in 100 (small raw counters, large estimate), 10.0.0.2
    // unsampled.
    c.batch_execute(
        "INSERT INTO netflow.flows (flow_start, flow_end, src_addr, dst_addr, src_port, dst_port,
             protocol, packets, bytes, exporter, sampling_interval, netflow_version, received_at)
         SELECT now() - interval '10 minutes', now() - interval '9 minutes', '10.0.0.1', '192.0.2.1',
                1024, 443, 6, 2, 1000, '127.0.0.2', 100, 5, now() - interval '5 minutes'
         FROM generate_series(1, 3);
         INSERT INTO netflow.flows (flow_start, flow_end, src_addr, dst_addr, src_port, dst_port,
             protocol, packets, bytes, exporter, sampling_interval, netflow_version, received_at)
         VALUES (now() - interval '10 minutes', now() - interval '9 minutes', '10.0.0.2', '192.0.2.1',
                 1024, 53, 17, 10, 50000, '127.0.0.3', 0, 5, now() - interval '5 minutes');
         INSERT INTO netflow.flow_aggregates_hourly (hour, exporter, src_addr, dst_addr, protocol,
             application_name, flows, packets, bytes, est_flows, est_packets, est_bytes)
         VALUES (date_trunc('hour', now()), '127.0.0.2', '10.0.0.1', '192.0.2.1', 6, 'HTTPS',
                 3, 6, 3000, 300, 600, 300000),
                (date_trunc('hour', now()), '127.0.0.3', '10.0.0.2', '192.0.2.1', 17, 'DNS',
                 1, 10, 50000, 1, 10, 50000);
         INSERT INTO netflow.exporters (exporter, engine_type, engine_id, first_seen, last_seen,
             datagrams, flows, flows_lost, suspect_datagrams)
         VALUES ('127.0.0.2', 0, 1, now() - interval '1 hour', now(), 10, 300, 100, 2),
                ('127.0.0.3', 0, 0, now() - interval '1 hour', now(), 1, 1, 0, 0);
         INSERT INTO netflow.malformed_datagrams (exporter, received_at, reason, detail, length, head)
         VALUES ('127.0.0.9', now() - interval '1 minute', 'bad_version', 99, 30, '\\x0063'),
                ('127.0.0.9', now() - interval '1 minute', 'bad_version', 99, 30, '\\x0063'),
                ('127.0.0.8', now() - interval '2 minutes', 'too_short', NULL, 3, '\\x0005');",
    )
    .expect("test rows");
    let d = dashboard();
    let mut answers = std::collections::BTreeMap::new();
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap().to_string();
        for t in p["targets"].as_array().unwrap() {
            let sql = grafana_to_sql(t["rawSql"].as_str().unwrap());
            let rows = c
                .simple_query(&sql)
                .unwrap_or_else(|e| panic!("{title}: {e}\n{sql}"));
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => Some(
                        (0..r.len())
                            .map(|i| r.get(i).unwrap_or("NULL").to_string())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect();
            assert!(!rows.is_empty(), "{title}: no rows from\n{sql}");
            answers.insert(title.clone(), rows);
        }
    }
    let find = |prefix: &str| {
        answers
            .iter()
            .find(|(k, _)| k.starts_with(prefix))
            .unwrap_or_else(|| panic!("a panel {prefix}"))
            .1
            .clone()
    };
    let top = find("Top talkers");
    assert_eq!(top[0][0], "10.0.0.1", "ranked by upscaled bytes");
    assert_eq!(top[0][1], "300000");
    let apps = find("Top applications");
    assert_eq!(
        (apps[0][0].as_str(), apps[0][1].as_str()),
        ("HTTPS", "300000")
    );
    let exporters = find("Exporters with loss");
    assert_eq!(exporters[0][0], "127.0.0.2");
    assert_eq!(exporters[0][5], "25.000", "100 lost of 400");
    let malformed = find("Malformed datagrams by reason");
    assert_eq!(malformed[0][..2], ["bad_version", "2"]);
    let flows = find("Flows stored per second");
    let per_s: f64 = flows.iter().map(|r| r[1].parse::<f64>().unwrap()).sum();
    assert!(
        (per_s - 4.0 / 60.0).abs() < 1e-9,
        "4 flows in one minute: {per_s}"
    );
    let traffic = find("Traffic");
    let bits: f64 = traffic.iter().map(|r| r[1].parse::<f64>().unwrap()).sum();
    assert!(
        (bits - (3.0 * 1000.0 * 100.0 + 50000.0) * 8.0 / 60.0).abs() < 1e-6,
        "upscaled bits/s: {bits}"
    );
}
