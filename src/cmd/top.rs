//! `nfpg top`: the busiest sources, destinations, pairs, applications, exporters, destination
//! ports or source ASes among the flows that started in the last `--last`, by estimated bytes
//! (counters × sampling interval), as an aligned table or, with `--json`, one JSON document.
//!
//! Where the numbers come from is decided in [`crate::store::analysis`] and said in the
//! output: the hourly aggregates for the whole hours inside the window and raw flows for the
//! rest (exact, no rounding of the window to hours), or raw flows only when the window holds no
//! whole hour, the aggregates do not reach into it, or the key (`port`, `as`) is not in them.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::config::DbArgs;
use crate::store::analysis::{
    self, format_duration, human_bytes, human_count, Counts, Source, TopBy, TopReport,
};
use crate::store::db::{self, open_database, Schema};

/// Runs the query and prints the table, or the JSON document with `json`.
pub fn run(args: &DbArgs, last: Duration, by: TopBy, limit: u32, json: bool) -> Result<()> {
    let schema = Schema::new(&args.schema)?;
    let database = open_database(&args.target())?;
    let mut client = db::connect(&database.conninfo)?;
    let report = analysis::top(&mut client, &schema, last, by, i64::from(limit))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(&report))?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The window as JSON: `{"last": "6h", "seconds": 21600, "from": …, "to": …}`.
pub fn window_json(w: &analysis::Window) -> serde_json::Value {
    json!({
        "last": format_duration(w.last),
        "seconds": w.last.as_secs(),
        "from": w.from.utc,
        "to": w.to.utc,
    })
}

/// The whole report as one JSON document.
pub fn to_json(r: &TopReport) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = r
        .rows
        .iter()
        .map(|row| {
            let mut m = serde_json::Map::new();
            m.insert("key".into(), json!(row.key.to_string()));
            m.extend(row.key.json_fields());
            if let serde_json::Value::Object(c) = row.counts.json() {
                m.extend(c);
            }
            m.insert(
                "share_percent".into(),
                json!((row.share_percent * 1000.0).round() / 1000.0),
            );
            serde_json::Value::Object(m)
        })
        .collect();
    json!({
        "command": "top",
        "by": r.by.name(),
        "limit": r.limit,
        "window": window_json(&r.window),
        "upscaled": true,
        "upscale": "est_* = counter × greatest(sampling_interval, 1); rows ranked by est_bytes",
        "source": r.source.name(),
        "aggregates": r.aggregates.as_ref().map(|a| json!({
            "hours_from": a.from.utc,
            "hours_to": a.to.utc,
            "watermark": a.watermark.utc,
        })),
        "keys": r.keys,
        "totals": r.totals.json(),
        "rows": rows,
    })
}

/// Column alignment for [`table`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// An aligned text table: a header line, then the rows, columns two spaces apart.
pub fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, ((cell, (_, align)), w)) in cells.iter().zip(columns).zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = w - cell.chars().count();
            match align {
                Align::Left => {
                    s.push_str(cell);
                    // No trailing blanks after the last column.
                    if i + 1 < columns.len() {
                        s.push_str(&" ".repeat(pad));
                    }
                }
                Align::Right => {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(cell);
                }
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(columns.iter().map(|(h, _)| *h).collect());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The heading of a key column.
fn key_heading(by: TopBy) -> &'static str {
    match by {
        TopBy::Src => "source",
        TopBy::Dst => "destination",
        TopBy::Pair => "source -> destination",
        TopBy::App => "application",
        TopBy::Exporter => "exporter",
        TopBy::Port => "dst port",
        TopBy::As => "source AS",
    }
}

/// The line that says what `est.` means; shared with `nfpg anomalies`.
pub const UPSCALE_LINE: &str =
    "est. = counters × sampling interval (sampled exporters upscaled); flows = records stored";

/// A totals line: `1.23 k flows (est. 123 k), est. 1.23 GB`.
pub fn totals_text(c: &Counts) -> String {
    format!(
        "{} flows (est. {}), est. {} packets, est. {}",
        human_count(c.flows),
        human_count(c.est_flows),
        human_count(c.est_packets),
        human_bytes(c.est_bytes)
    )
}

/// The human form: what was counted, from where, then the table.
pub fn render(r: &TopReport) -> String {
    let mut out = format!(
        "top {} {} by est. bytes, flows that started in the last {} ({} to {})\n",
        r.limit,
        r.by.plural(),
        format_duration(r.window.last),
        r.window.from.utc,
        r.window.to.utc
    );
    out.push_str(UPSCALE_LINE);
    out.push('\n');
    match (&r.aggregates, r.by.in_aggregates()) {
        (_, false) => out.push_str(&format!(
            "source: raw flows (--by {} is not in the hourly aggregates)\n",
            r.by
        )),
        (None, true) => {
            out.push_str("source: raw flows (no whole hour of the window in the aggregates)\n")
        }
        (Some(a), true) => out.push_str(&format!(
            "source: hours from {} to {} from the hourly aggregates (arrivals before {}), \
             the rest from raw flows{}\n",
            a.from.utc,
            a.to.utc,
            a.watermark.utc,
            match r.source {
                Source::Aggregates => "; every row came from the aggregates",
                _ => "",
            }
        )),
    }
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            vec![
                row.key.to_string(),
                human_count(row.counts.flows),
                human_count(row.counts.est_flows),
                human_count(row.counts.est_packets),
                human_bytes(row.counts.est_bytes),
                format!("{:.1}%", row.share_percent),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            (key_heading(r.by), Align::Left),
            ("flows", Align::Right),
            ("est. flows", Align::Right),
            ("est. packets", Align::Right),
            ("est. bytes", Align::Right),
            ("share", Align::Right),
        ],
        &rows,
    ));
    out.push_str(&format!(
        "{} of {} {}; window total: {}\n",
        r.rows.len(),
        r.keys,
        r.by.plural(),
        totals_text(&r.totals)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &[("key", Align::Left), ("n", Align::Right)],
            &[
                vec!["a".into(), "1.23 k".into()],
                vec!["longer".into(), "5".into()],
            ],
        );
        assert_eq!(t, "key          n\na       1.23 k\nlonger       5\n");
    }
}
