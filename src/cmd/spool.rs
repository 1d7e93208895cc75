//! `nfpg spool`: what waits in the spool, read without taking its lock (it works while a
//! collector runs): segments in replay order with the database each is meant for, dead
//! letters with the error PostgreSQL gave, and how to load one by hand. With several database
//! endpoints each has a spool of its own in a `db-…` directory inside the spool directory;
//! those are listed too.

use std::path::Path;

use anyhow::Result;

use crate::store::copy::Shape;
use crate::store::db::Schema;
use crate::store::spool::{list_segments, read_header, ENDPOINT_DIR_PREFIX};

/// Prints the spool in `dir`, and the endpoints' spools inside it.
pub fn run(dir: &Path, schema: &str) -> Result<()> {
    let schema = Schema::new(schema)?;
    list(dir)?;
    let mut endpoints: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(ENDPOINT_DIR_PREFIX))
        })
        .collect();
    endpoints.sort();
    for d in &endpoints {
        println!();
        list(d)?;
    }
    println!(
        "\nA segment is a binary COPY file; PostgreSQL skips nfpg's header. To load one by hand\n\
         (as a superuser, or with pg_read_server_files; psql's \\copy works from a client), use\n\
         the column list of its shape:"
    );
    for shape in Shape::ALL {
        println!(
            "  {shape:?}: COPY {}.flows ({}) FROM '<file>' (FORMAT binary);",
            schema.quoted(),
            shape.columns().join(", ")
        );
    }
    println!(
        "Remove a segment only after it is loaded: nfpg replays what is left (exactly once only\n\
         for rows it commits itself)."
    );
    Ok(())
}

/// Prints the segments and dead letters of one spool directory.
fn list(dir: &Path) -> Result<()> {
    let mut total_rows = 0u64;
    let segments = list_segments(dir)?;
    println!("spool {}: {} segment(s)", dir.display(), segments.len());
    for p in &segments {
        match read_header(p) {
            Ok(h) => {
                total_rows += h.rows;
                println!(
                    "  {}  {} rows  {:?} columns  marker {}/{}/{}  for {}",
                    p.display(),
                    h.rows,
                    h.shape,
                    if h.instance.is_empty() {
                        "-"
                    } else {
                        &h.instance
                    },
                    h.marker.writer,
                    h.marker.seq,
                    h.identity
                );
            }
            Err(e) => println!("  {}  unreadable: {e:#}", p.display()),
        }
    }
    println!("{total_rows} rows waiting for replay");
    let dead = dir.join("dead");
    let letters = if dead.is_dir() {
        list_segments(&dead)?
    } else {
        Vec::new()
    };
    println!("dead letters ({}): {}", dead.display(), letters.len());
    for p in &letters {
        match read_header(p) {
            Ok(h) => println!(
                "  {}  {} row(s)  {}",
                p.display(),
                h.rows,
                h.error.as_deref().unwrap_or("")
            ),
            Err(e) => println!("  {}  unreadable: {e:#}", p.display()),
        }
    }
    Ok(())
}
