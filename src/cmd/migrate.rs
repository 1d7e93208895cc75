//! `nfpg migrate`: applies the schema migrations and creates the coming days' partitions, on
//! every database endpoint given. Safe to run while collectors start or run against the same
//! database: migrations take the migration lock ([`db::MIGRATION_LOCK`]).

use anyhow::Result;

use crate::config::DbArgs;
use crate::store::db::{self, open_database, Schema};

/// Applies what is missing on each endpoint and says what it did.
pub fn run(args: &DbArgs) -> Result<()> {
    let schema = Schema::new(&args.schema)?;
    let targets = args.targets();
    for target in &targets {
        let database = open_database(target)?;
        let mut client = db::connect(&database.conninfo)?;
        let applied = db::migrate(&mut client, &schema)?;
        db::ensure_partitions(&mut client, &schema, 3)?;
        let what = if applied.is_empty() {
            format!("schema {} is up to date", schema.name())
        } else {
            format!("applied: {}", applied.join(", "))
        };
        if targets.len() > 1 {
            println!("{}: {what}", db::redact(&database.conninfo));
        } else {
            println!("{what}");
        }
    }
    Ok(())
}
