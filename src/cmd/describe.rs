//! `nfpg describe`: what nfpg's outputs are made of, as one JSON object, for tools that read
//! them (the benchmark harness): the flows table's columns in COPY order, the columns of the v5
//! COPY (what a batch of NetFlow v5 flows is written as), every counter with its
//! help text, the malformed reasons and the keys of the final JSON summary. Everything comes
//! from the declarations the collector itself uses, so a renamed column or counter shows here.

use anyhow::Result;
use serde_json::{json, Value};

use crate::flow::reason::Reason;
use crate::obs::stats::{
    DecodeTotals, ShardSnapshot, ShardTotals, Snapshot, SpoolTotals, WriterTotals,
};
use crate::store::copy::{FLOW_COLUMNS, V5_SHAPE};

/// The description as a JSON value.
pub fn describe() -> Result<Value> {
    let fields = |f: &[(&str, &str)]| -> Vec<[String; 2]> {
        f.iter()
            .map(|(name, help)| [name.to_string(), help.trim().to_string()])
            .collect()
    };
    // The summary is a `Snapshot`; its default, with one shard, shows every key (nested ones
    // included: malformed reasons, latency stages and percentiles, a shard's entry).
    let summary = serde_json::to_value(Snapshot {
        shards: vec![ShardSnapshot::default()],
        ..Snapshot::default()
    })?;
    let summary_keys: Vec<String> = summary
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    Ok(json!({
        "flow_columns": FLOW_COLUMNS,
        "v5_copy_columns": V5_SHAPE.columns(),
        "counters": {
            "shard": fields(ShardTotals::FIELDS),
            "writer": fields(WriterTotals::FIELDS),
            "spool": fields(SpoolTotals::FIELDS),
            "decode": fields(DecodeTotals::FIELDS),
        },
        "malformed_reasons": Reason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "summary_keys": summary_keys,
        "summary_default": summary,
    }))
}

/// Prints the description on one line.
pub fn run() -> Result<()> {
    println!("{}", serde_json::to_string(&describe()?)?);
    Ok(())
}
