//! `nfpg migrate`: applies the schema migrations and creates the coming days' partitions.

use anyhow::Result;

use crate::config::DbArgs;
use crate::store::db::{self, open_database, Schema};

/// Applies what is missing and says what it did.
pub fn run(args: &DbArgs) -> Result<()> {
    let schema = Schema::new(&args.schema)?;
    let database = open_database(&args.target())?;
    let mut client = db::connect(&database.conninfo)?;
    let applied = db::migrate(&mut client, &schema)?;
    db::ensure_partitions(&mut client, &schema, 3)?;
    if applied.is_empty() {
        println!("schema {} is up to date", schema.name());
    } else {
        println!("applied: {}", applied.join(", "));
    }
    Ok(())
}
