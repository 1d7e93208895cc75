//! `nfpg server --data-dir DIR`: runs nfpg's private PostgreSQL on its own, the same server
//! `nfpg run` starts when no database is configured ([`PgServer`]: unix socket only, ingest
//! settings, the `postgres` user when run as root), until SIGTERM or SIGINT.
//!
//! Once the server accepts connections (and the `--create-db` databases exist) it prints one
//! JSON line on stdout: `socket_dir`, `data_dir`, `url_template` (the connection string of
//! database `{db}`) and `settings` (what nfpg's configuration file sets, as the server reports
//! it). Tools such as the benchmark harness use it instead of starting a server of their own.
//!
//! The server admits only the OS user that ran `nfpg server` (and `postgres`, when that was
//! root): its directories are mode 0700 and the superuser logs in by peer authentication, so
//! the connection string works for that user's processes and for no other local user's.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::store::db;
use crate::store::pgserver::PgServer;

/// Starts the server, prints its description and serves until `stop` is set; then stops it.
pub fn run(data_dir: &Path, create_db: &[String], stop: &AtomicBool) -> Result<()> {
    let mut server = PgServer::start(data_dir)?;
    let line = describe(&server, create_db)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    drop(out);
    tracing::info!(
        "PostgreSQL serving on {}; SIGTERM or SIGINT stops it",
        server.socket_dir().display()
    );
    while !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop().context("stopping PostgreSQL")
}

/// Creates the requested databases and describes the server as one JSON line.
fn describe(server: &PgServer, create_db: &[String]) -> Result<String> {
    let mut admin = db::connect(&server.connection_string("postgres"))?;
    for name in create_db {
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[name])?
            .is_some();
        if !exists {
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            admin
                .batch_execute(&format!("CREATE DATABASE {quoted}"))
                .with_context(|| format!("creating database {name}"))?;
        }
    }
    // What nfpg's configuration file sets, in the server's own words (`SHOW` units).
    let mut settings = Map::new();
    for row in admin.query(
        "SELECT name, current_setting(name) FROM pg_settings \
         WHERE sourcefile LIKE '%/nfpg.conf' ORDER BY name",
        &[],
    )? {
        settings.insert(row.get(0), Value::String(row.get(1)));
    }
    let version: String = admin.query_one("SHOW server_version", &[])?.get(0);
    let line = json!({
        "socket_dir": server.socket_dir(),
        "data_dir": server.data_dir(),
        "url_template": server.connection_string("{db}"),
        "server_version": version,
        "settings": settings,
    });
    Ok(serde_json::to_string(&line)?)
}
