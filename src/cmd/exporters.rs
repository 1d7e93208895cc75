//! `nfpg exporters`: the exporters table as an aligned listing (`suspect`: datagrams whose
//! sequence number no real exporter run explains, e.g. spoofed; not counted as lost; `instance`:
//! the collector that counted the row, one row per collector that heard the exporter).

use anyhow::Result;

use crate::config::DbArgs;
use crate::store::db::{self, open_database, Schema};
use crate::store::exporters;

/// Prints every exporter, busiest first.
pub fn run(args: &DbArgs) -> Result<()> {
    let schema = Schema::new(&args.schema)?;
    let database = open_database(&args.target())?;
    let mut client = db::connect(&database.conninfo)?;
    let rows = exporters::list(&mut client, &schema)?;
    println!(
        "{:<39} {:>14} {:>3} {:>5} {:>12} {:>14} {:>12} {:>7} {:>8} {:>9} {:<19} {:>9} {:>9} instance",
        "exporter",
        "engine/domain",
        "ver",
        "samp",
        "datagrams",
        "flows",
        "lost",
        "lost%",
        "restarts",
        "dgram/s",
        "last seen (UTC)",
        "silent s",
        "suspect",
    );
    for r in &rows {
        println!(
            "{:<39} {:>14} {:>3} {:>5} {:>12} {:>14} {:>12} {:>7.3} {:>8} {:>9.1} {:<19} {:>9} {:>9} {}",
            r.exporter,
            if r.source_id == 0 {
                format!("{}/{}", r.engine_type, r.engine_id)
            } else {
                format!("dom {}", r.source_id)
            },
            r.version,
            r.sampling_interval,
            r.datagrams,
            r.flows,
            r.flows_lost,
            r.lost_percent,
            r.restarts,
            r.datagrams_per_s,
            r.last_seen_utc,
            r.silent_s,
            r.suspect_datagrams,
            if r.instance.is_empty() {
                "-"
            } else {
                &r.instance
            },
        );
    }
    println!("{} exporters", rows.len());
    Ok(())
}
