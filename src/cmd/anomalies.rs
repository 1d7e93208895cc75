//! `nfpg anomalies`: sources with more than `--min-flows` estimated flows (counters × sampling
//! interval) that started in the last `--window`, most first, with how many distinct
//! destinations and destination ports each reached (many of either: a scan; few and many
//! flows: a flood), as an aligned table or, with `--json`, one JSON document. Raw flows only,
//! bounded by `received_at` so only the window's partitions are read.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::top::{table, totals_text, window_json, Align, UPSCALE_LINE};
use crate::config::DbArgs;
use crate::store::analysis::{self, format_duration, human_bytes, human_count, AnomalyReport};
use crate::store::db::{self, open_database, Schema};

/// Runs the query and prints the table, or the JSON document with `json`.
pub fn run(args: &DbArgs, window: Duration, min_flows: u64, json: bool) -> Result<()> {
    let schema = Schema::new(&args.schema)?;
    let database = open_database(&args.target())?;
    let mut client = db::connect(&database.conninfo)?;
    let min = i64::try_from(min_flows).unwrap_or(i64::MAX);
    let report = analysis::anomalies(&mut client, &schema, window, min)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(&report))?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The whole report as one JSON document.
pub fn to_json(r: &AnomalyReport) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = r
        .rows
        .iter()
        .map(|row| {
            let mut m = serde_json::Map::new();
            m.insert("src".into(), json!(row.src.to_string()));
            m.insert("destinations".into(), json!(row.destinations));
            m.insert("dst_ports".into(), json!(row.dst_ports));
            if let serde_json::Value::Object(c) = row.counts.json() {
                m.extend(c);
            }
            serde_json::Value::Object(m)
        })
        .collect();
    json!({
        "command": "anomalies",
        "window": window_json(&r.window),
        "min_flows": r.min_flows,
        "threshold": "est_flows > min_flows",
        "upscaled": true,
        "upscale": "est_* = counter × greatest(sampling_interval, 1); destinations and dst_ports as seen",
        "source": "flows",
        "rows": rows,
    })
}

/// The human form.
pub fn render(r: &AnomalyReport) -> String {
    let mut out = format!(
        "sources with more than {} est. flows that started in the last {} ({} to {})\n",
        r.min_flows,
        format_duration(r.window.last),
        r.window.from.utc,
        r.window.to.utc
    );
    out.push_str(UPSCALE_LINE);
    out.push_str("; destinations and dst ports as seen\n");
    out.push_str("source: raw flows\n");
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            vec![
                row.src.to_string(),
                human_count(row.counts.est_flows),
                human_count(row.counts.flows),
                human_count(i128::from(row.destinations)),
                human_count(i128::from(row.dst_ports)),
                human_count(row.counts.est_packets),
                human_bytes(row.counts.est_bytes),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            ("source", Align::Left),
            ("est. flows", Align::Right),
            ("flows", Align::Right),
            ("destinations", Align::Right),
            ("dst ports", Align::Right),
            ("est. packets", Align::Right),
            ("est. bytes", Align::Right),
        ],
        &rows,
    ));
    let mut total = analysis::Counts::default();
    for row in &r.rows {
        total.flows += row.counts.flows;
        total.est_flows += row.counts.est_flows;
        total.est_packets += row.counts.est_packets;
        total.est_bytes += row.counts.est_bytes;
    }
    out.push_str(&format!(
        "{} sources; together: {}\n",
        r.rows.len(),
        totals_text(&total)
    ));
    out
}
