//! Database connection settings, schema name handling and migrations.
//!
//! Migrations are the SQL files in `migrations/`, embedded at build time and applied in order
//! under an advisory lock (several collectors may start at once), each in its own transaction,
//! recorded in `<schema>.nfpg_migrations`. The schema name is validated and quoted: the
//! original collector formatted `DB_SCHEMA` straight into SQL.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

use postgres::{Client, NoTls};

/// How long a connection attempt may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The embedded migrations, in the order they apply.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_flows",
        include_str!("../../migrations/0001_flows.sql"),
    ),
    (
        "0002_exporters",
        include_str!("../../migrations/0002_exporters.sql"),
    ),
    (
        "0003_malformed",
        include_str!("../../migrations/0003_malformed.sql"),
    ),
    (
        "0004_app_names",
        include_str!("../../migrations/0004_app_names.sql"),
    ),
    (
        "0005_queries",
        include_str!("../../migrations/0005_queries.sql"),
    ),
    (
        "0006_exporter_rate",
        include_str!("../../migrations/0006_exporter_rate.sql"),
    ),
    (
        "0007_copy_markers",
        include_str!("../../migrations/0007_copy_markers.sql"),
    ),
    (
        "0008_copy_marker_parts",
        include_str!("../../migrations/0008_copy_marker_parts.sql"),
    ),
    (
        "0009_flow_fields_v9_ipfix",
        include_str!("../../migrations/0009_flow_fields_v9_ipfix.sql"),
    ),
    (
        "0010_templates",
        include_str!("../../migrations/0010_templates.sql"),
    ),
    (
        "0011_exporter_domain",
        include_str!("../../migrations/0011_exporter_domain.sql"),
    ),
];

/// Advisory lock key that serialises migrations across collectors ("nfpg" in ASCII).
const MIGRATION_LOCK: i64 = 0x6e66_7067;

/// A validated schema name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema(String);

impl Schema {
    /// Accepts a plain identifier: a letter or underscore, then letters, digits or
    /// underscores, at most 63 bytes (PostgreSQL's limit). Anything else is refused rather
    /// than escaped, so the name means the same in SQL, in logs and in `psql`.
    pub fn new(name: &str) -> Result<Self> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            bail!(
                "schema name {name:?} is not a plain identifier (letters, digits, _; at most 63; \
                 not starting with a digit)"
            );
        }
        Ok(Schema(name.to_string()))
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// The name as a SQL string literal (validation rules out quotes).
    pub fn literal(&self) -> String {
        format!("'{}'", self.0)
    }

    /// Replaces `{schema}` and `{schema_literal}` in a SQL text.
    pub fn render(&self, sql: &str) -> String {
        sql.replace("{schema_literal}", &self.literal())
            .replace("{schema}", &self.quoted())
    }
}

/// Opens a connection. The string is a libpq key=value string or a postgres:// URL; a host
/// that starts with `/` is a unix socket directory.
pub fn connect(conninfo: &str) -> Result<Client> {
    let mut config: postgres::Config = conninfo
        .parse()
        .context("parsing the database connection settings")?;
    // Never hang on a dead server or a silent network: a bounded connect, and TCP keepalives
    // that notice a peer gone mid-statement (unless the connection string set its own).
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.keepalives(true);
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(Duration::from_secs(10));
    }
    config
        .connect(NoTls)
        .with_context(|| format!("connecting to PostgreSQL ({})", redact(conninfo)))
}

/// The connection string without its password, for messages.
pub fn redact(conninfo: &str) -> String {
    let t = conninfo.trim_start();
    if let Some(scheme_end) = t.find("://").filter(|&i| t[..i].starts_with("postgres")) {
        return redact_url(t, scheme_end + 3);
    }
    redact_key_values(conninfo)
}

/// `postgres://user:password@host/db?…&password=…`: the password in the user info (which may
/// itself hold `@`, `:` or `%XX`) and any `password` query parameter.
fn redact_url(url: &str, authority: usize) -> String {
    let rest = &url[authority..];
    let query = rest.find('?').unwrap_or(rest.len());
    let mut out = url[..authority].to_string();
    match rest[..query].rfind('@') {
        Some(at) => {
            let creds = &rest[..at];
            match creds.find(':') {
                Some(colon) => {
                    out.push_str(&creds[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(creds),
            }
            out.push_str(&rest[at..query]);
        }
        None => out.push_str(&rest[..query]),
    }
    if query < rest.len() {
        out.push('?');
        let params: Vec<String> = rest[query + 1..]
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

/// `host=h password='it''s a secret' user=u`: libpq's key/value form, values bare or in single
/// quotes with backslash escapes, spaces allowed around `=`.
fn redact_key_values(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        // Copy whitespace.
        while i < b.len() && b[i].is_ascii_whitespace() {
            out.push(b[i] as char);
            i += 1;
        }
        // The key.
        let k0 = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[k0..i];
        out.push_str(key);
        // Spaces and the `=`.
        let mut j = i;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= b.len() || b[j] != b'=' {
            continue;
        }
        out.push_str(&s[i..=j]);
        i = j + 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            out.push(b[i] as char);
            i += 1;
        }
        // The value: quoted (with \' and \\ escapes) or bare.
        let v0 = i;
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
        }
        if key.eq_ignore_ascii_case("password") {
            out.push_str("***");
        } else {
            out.push_str(&s[v0..i]);
        }
    }
    out
}

/// Creates the schema and applies the migrations not yet recorded. Returns the names applied.
pub fn migrate(client: &mut Client, schema: &Schema) -> Result<Vec<String>> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = migrate_locked(client, schema);
    let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    let applied = result?;
    unlock?;
    Ok(applied)
}

fn migrate_locked(client: &mut Client, schema: &Schema) -> Result<Vec<String>> {
    client.batch_execute(&schema.render(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.nfpg_migrations (
             name text PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now());",
    ))?;
    let done: Vec<String> = client
        .query(
            &schema.render("SELECT name FROM {schema}.nfpg_migrations"),
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for (name, sql) in MIGRATIONS {
        if done.iter().any(|d| d == name) {
            continue;
        }
        let mut tx = client.transaction()?;
        tx.batch_execute(&schema.render(sql))
            .with_context(|| format!("applying migration {name}"))?;
        tx.execute(
            &schema.render("INSERT INTO {schema}.nfpg_migrations (name) VALUES ($1)"),
            &[name],
        )?;
        tx.commit()?;
        applied.push(name.to_string());
    }
    Ok(applied)
}

/// Creates yesterday's, today's and the next `days_ahead` days' flow partitions where missing.
/// Quick: run at start.
pub fn ensure_partitions(client: &mut Client, schema: &Schema, days_ahead: i32) -> Result<i32> {
    Ok(client
        .query_one(
            &schema.render(
                "SELECT {schema}.ensure_flow_partitions((now() AT TIME ZONE 'UTC')::date - 1, $1)",
            ),
            &[&(days_ahead + 2)],
        )?
        .get(0))
}

/// Adds the address and exporter B-trees to partitions of finished days. Can take minutes on
/// a large day, so the housekeeper runs it, never the start-up path.
pub fn index_closed_partitions(client: &mut Client, schema: &Schema) -> Result<i32> {
    Ok(client
        .query_one(
            &schema.render(
                "SELECT {schema}.index_closed_flow_partitions((now() AT TIME ZONE 'UTC')::date)",
            ),
            &[],
        )?
        .get(0))
}

/// Where the database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A configured server: this connection string.
    Configured(String),
    /// No server configured: start a private one in this directory, use this database.
    Private { dir: PathBuf, dbname: String },
}

/// A database ready for use: its connection string, and the private server if we run one
/// (dropping it stops the server).
pub struct Database {
    pub conninfo: String,
    pub server: Option<super::pgserver::PgServer>,
}

/// Resolves the database target, starting the private server when none is configured and
/// creating its database.
pub fn open_database(target: &DbTarget) -> Result<Database> {
    match target {
        DbTarget::Configured(conninfo) => Ok(Database {
            conninfo: conninfo.clone(),
            server: None,
        }),
        DbTarget::Private { dir, dbname } => {
            tracing::info!(
                "no database configured; starting a private PostgreSQL in {}",
                dir.display()
            );
            let server = super::pgserver::PgServer::start(dir)?;
            let mut admin = connect(&server.connection_string("postgres"))?;
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[dbname])?
                .is_some();
            if !exists {
                let quoted = format!("\"{}\"", dbname.replace('"', "\"\""));
                admin.batch_execute(&format!("CREATE DATABASE {quoted}"))?;
            }
            Ok(Database {
                conninfo: server.connection_string(dbname),
                server: Some(server),
            })
        }
    }
}

/// Applies migrations and creates the flow partitions for the coming days.
pub fn prepare_schema(conninfo: &str, schema: &Schema) -> Result<()> {
    let mut client = connect(conninfo)?;
    let applied = migrate(&mut client, schema)?;
    if !applied.is_empty() {
        tracing::info!("applied migrations: {}", applied.join(", "));
    }
    ensure_partitions(&mut client, schema, 3)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_validated() {
        for ok in ["netflow", "_x", "Flows2", &"a".repeat(63)] {
            assert!(Schema::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "net flow",
            "x;drop table y",
            "a\"b",
            "naïve",
            &"a".repeat(64),
        ] {
            assert!(Schema::new(bad).is_err(), "{bad}");
        }
        let s = Schema::new("nf").unwrap();
        assert_eq!(s.render("{schema}.t {schema_literal}"), "\"nf\".t 'nf'");
    }

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .trim_end_matches(".sql")
                    .to_string()
            })
            .collect();
        files.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|(n, _)| *n).collect();
        assert_eq!(files, embedded);
    }

    #[test]
    fn passwords_are_redacted() {
        // Every form a connection string takes; the secret never survives.
        let cases = [
            ("postgres://u:secret@h/db", "postgres://u:***@h/db"),
            (
                "postgresql://u:s3cr@t@h:5433/db",
                "postgresql://u:***@h:5433/db",
            ),
            ("postgres://u:p%40ss%3Aw@h/db", "postgres://u:***@h/db"),
            ("postgres://u:a:b@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u@h/db?password=secret",
                "postgres://u@h/db?password=***",
            ),
            (
                "postgres://h/db?sslmode=disable&password=secret&application_name=x",
                "postgres://h/db?sslmode=disable&password=***&application_name=x",
            ),
            ("postgres://h/db", "postgres://h/db"),
            (
                "host=h password=secret user=u",
                "host=h password=*** user=u",
            ),
            (
                "host=h password='a secret' user=u",
                "host=h password=*** user=u",
            ),
            (
                "host=h password='it\\'s a secret' user=u",
                "host=h password=*** user=u",
            ),
            (
                "host=h password = 'spaced out' user=u",
                "host=h password = *** user=u",
            ),
            ("host=h PASSWORD=secret", "host=h PASSWORD=***"),
            ("password=secret", "password=***"),
            ("host='/run/x y' dbname=d", "host='/run/x y' dbname=d"),
        ];
        for (input, want) in cases {
            let got = redact(input);
            assert_eq!(got, want, "{input}");
            for secret in ["secret", "s3cr", "p%40ss", "a:b", "spaced", "it\\'s"] {
                if !want.contains(secret) {
                    assert!(!got.contains(secret), "{input} -> {got}");
                }
            }
        }
    }
}
