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
    (
        "0012_hostile_input",
        include_str!("../../migrations/0012_hostile_input.sql"),
    ),
    (
        "0013_aggregates",
        include_str!("../../migrations/0013_aggregates.sql"),
    ),
    (
        "0014_original_views",
        include_str!("../../migrations/0014_original_views.sql"),
    ),
    (
        "0015_instances",
        include_str!("../../migrations/0015_instances.sql"),
    ),
    (
        "0016_own_rows_aggregation",
        include_str!("../../migrations/0016_own_rows_aggregation.sql"),
    ),
    (
        "0017_flows_times_brin",
        include_str!("../../migrations/0017_flows_times_brin.sql"),
    ),
];

/// Advisory lock key that serialises migrations across collectors ("nfpg" in ASCII). A
/// session lock, taken before the schema or the migrations table is looked at and released
/// after the last migration commits: a second collector (or `nfpg migrate`) starting at the
/// same moment waits for it, then finds every migration recorded and applies none. Advisory
/// locks are per database, so collectors of other databases on the same server never wait.
pub const MIGRATION_LOCK: i64 = 0x6e66_7067;

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
/// that starts with `/` is a unix socket directory. As with libpq, `PGPASSWORD` is the password
/// when the string gives none.
pub fn connect(conninfo: &str) -> Result<Client> {
    let mut config: postgres::Config = conninfo
        .parse()
        .map_err(|e: postgres::Error| parse_error(conninfo, &e))?;
    if config.get_password().is_none() {
        if let Some(p) = env_password() {
            config.password(p);
        }
    }
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

/// `PGPASSWORD`, libpq's password for connection strings that give none (empty = unset).
fn env_password() -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    std::env::var_os("PGPASSWORD")
        .map(OsStringExt::into_vec)
        .filter(|p| !p.is_empty())
}

/// The message for a connection string the driver could not parse. The driver quotes the
/// piece it stumbled on (`unknown option `…``), which in a mistyped string may be part of a
/// password: when the string holds one, the quoted pieces are left out.
fn parse_error(conninfo: &str, e: &postgres::Error) -> anyhow::Error {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    let lower = conninfo.to_ascii_lowercase();
    let has_secret =
        lower.contains("password") || (is_url(conninfo) && redact_url(conninfo) != conninfo);
    let msg = if has_secret {
        let mut out = String::new();
        for (i, piece) in msg.split('`').enumerate() {
            out.push_str(if i % 2 == 0 { piece } else { "`…`" });
        }
        scrub(&out, &secrets_of(conninfo))
    } else {
        msg
    };
    anyhow::anyhow!("parsing the database connection settings: {msg}")
}

/// The connection string without its password, for messages.
///
/// Both forms are handled as libpq and the driver read them, erring on the side of hiding:
/// URLs (`postgres://user:pass@host/db?password=…`, with `@`, `:`, `?`, `%XX` in the password)
/// and key/value strings (values bare or single-quoted, backslash escapes, spaces around `=`).
/// Values of keys that are not connection settings known to be harmless are hidden too (a
/// mistyped or misquoted password must not show), and finally any occurrence of the password
/// the driver parses from the string, or of `PGPASSWORD`, raw or encoded, becomes `***`.
pub fn redact(conninfo: &str) -> String {
    let structural = if is_url(conninfo) {
        redact_url(conninfo)
    } else {
        redact_key_values(conninfo)
    };
    scrub(&structural, &secrets_of(conninfo))
}

/// Connection settings whose values are never secret (libpq's keywords, less the passwords).
const PLAIN_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "passfile",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "keepalives_retries",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "gsslib",
    "gssdelegation",
    "sslmode",
    "sslnegotiation",
    "requiressl",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "require_auth",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

/// What a key's value shows as: itself, or hidden.
fn is_plain_key(key: &str) -> bool {
    PLAIN_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// Whether the string is a URL (`scheme://…`, any scheme, any case) rather than key/value.
fn is_url(s: &str) -> bool {
    let t = s.trim_start();
    t.find("://").is_some_and(|i| {
        i > 0
            && t[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// The passwords a string may carry to the server: what the driver parses from it (its
/// reading of a URL may differ from libpq's) and `PGPASSWORD`.
fn secrets_of(conninfo: &str) -> Vec<Vec<u8>> {
    let mut secrets = Vec::new();
    if let Ok(cfg) = conninfo.parse::<postgres::Config>() {
        if let Some(p) = cfg.get_password().filter(|p| !p.is_empty()) {
            secrets.push(p.to_vec());
        }
    }
    secrets.extend(env_password());
    secrets
}

/// `msg` with every occurrence of each secret, raw, percent-encoded (either case) or
/// backslash-escaped as in a key/value string, replaced by `***`.
fn scrub(msg: &str, secrets: &[Vec<u8>]) -> String {
    let mut out = msg.to_string();
    for secret in secrets {
        let raw = String::from_utf8_lossy(secret).into_owned();
        let upper = percent_encode(secret);
        let lower = upper.to_ascii_lowercase();
        let escaped = raw.replace('\\', "\\\\").replace('\'', "\\'");
        for form in [raw, upper, lower, escaped] {
            if !form.is_empty() {
                out = out.replace(&form, "***");
            }
        }
    }
    out
}

/// Every byte but RFC 3986's unreserved characters as `%XX`.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` sequences decoded (lossily), for comparing URL parameter names.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scheme://user:password@host/db?…&password=…`. Two readings of where a password is, both
/// hidden: the user info, from the first `:` to the last `@` (libpq and the driver disagree
/// on which `@` ends it, and a password may hold `@`, `:`, `/`, `?` unencoded), and the value
/// of each `password` query parameter (name compared decoded and in any case). Parameters
/// that are not known settings are hidden whole.
fn redact_url(url: &str) -> String {
    let lead = url.len() - url.trim_start().len();
    let start = lead + url[lead..].find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    // Byte ranges of `rest` to hide.
    let mut hide: Vec<(usize, usize)> = Vec::new();
    if let Some(at) = rest.rfind('@') {
        if let Some(colon) = rest[..at].find(':') {
            hide.push((colon + 1, at));
        }
    }
    if let Some(q) = rest.find('?') {
        let mut p = q + 1;
        // Whether the parameter before was hidden: a word with no `=` after one is the rest
        // of a password that held an unencoded `&`.
        let mut after_hidden = false;
        for param in rest[q + 1..].split('&') {
            match param.split_once('=') {
                Some((k, _)) if is_plain_key(&percent_decode(k)) => after_hidden = false,
                Some((k, _)) if is_password_key(&percent_decode(k)) => {
                    hide.push((p + k.len() + 1, p + param.len()));
                    after_hidden = true;
                }
                Some(_) => {
                    hide.push((p, p + param.len()));
                    after_hidden = true;
                }
                None if after_hidden => hide.push((p, p + param.len())),
                None => {}
            }
            p += param.len() + 1;
        }
    }
    // Overlapping or touching ranges become one `***`.
    hide.retain(|&(a, b)| b > a);
    hide.sort();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (a, b) in hide {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let mut out = url[..start].to_string();
    let mut pos = 0;
    for (a, b) in merged {
        out.push_str(&rest[pos..a]);
        out.push_str("***");
        pos = b;
    }
    out.push_str(&rest[pos..]);
    out
}

/// libpq's password keys (`sslpassword` unlocks a client key).
fn is_password_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

/// `host=h password='it''s a secret' user=u`: libpq's key/value form, values bare or in single
/// quotes, backslash escapes in both, spaces allowed around `=`. Values of password keys are
/// hidden; so are keys that are not known settings with their values, and words with no `=`
/// after a hidden value (in a mistyped string they may be pieces of a password).
fn redact_key_values(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    // Whether the value before was hidden: a word with no `=` after one may be the rest of a
    // password with an unquoted space.
    let mut after_hidden = false;
    while i < b.len() {
        // Copy whitespace.
        while i < b.len() && b[i].is_ascii_whitespace() {
            out.push(b[i] as char);
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        // The key.
        let k0 = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[k0..i];
        let plain = is_plain_key(key);
        // Spaces and the `=`.
        let mut j = i;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= b.len() || b[j] != b'=' {
            // A word with no `=`: malformed, and maybe a piece of a password.
            out.push_str(if after_hidden && !key.is_empty() {
                "***"
            } else {
                key
            });
            continue;
        }
        out.push_str(if plain || is_password_key(key) {
            key
        } else {
            "***"
        });
        out.push_str(&s[i..=j]);
        i = j + 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            out.push(b[i] as char);
            i += 1;
        }
        // The value: quoted (with backslash escapes) or bare (backslash escapes a space too).
        let v0 = i;
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = i.min(b.len());
        }
        // Keep `i` on a char boundary after an escaped multibyte character.
        while !s.is_char_boundary(i) {
            i += 1;
        }
        if plain {
            out.push_str(&s[v0..i]);
        } else {
            out.push_str("***");
        }
        after_hidden = !plain;
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

/// Runs `f` in a transaction that holds the schema's upkeep lock (`upkeep_lock_key()`,
/// migrations/0015_instances.sql), so collectors sharing a database create, index and drop
/// day partitions one at a time (two `CREATE TABLE`s of one name at once can fail on a
/// catalog index rather than with "already exists"). `wait` false: when another instance
/// holds the lock, returns `Ok(None)` at once (it is doing the same work).
pub fn with_upkeep_lock<T>(
    client: &mut Client,
    schema: &Schema,
    wait: bool,
    f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut tx = client.transaction()?;
    if wait {
        tx.execute(
            &schema.render("SELECT pg_advisory_xact_lock({schema}.upkeep_lock_key())"),
            &[],
        )?;
    } else {
        let got: bool = tx
            .query_one(
                &schema.render("SELECT pg_try_advisory_xact_lock({schema}.upkeep_lock_key())"),
                &[],
            )?
            .get(0);
        if !got {
            return Ok(None);
        }
    }
    let out = f(&mut tx)?;
    tx.commit()?;
    Ok(Some(out))
}

/// Creates yesterday's, today's and the next `days_ahead` days' flow partitions where missing
/// (waiting for another collector doing the same). Quick: run at start.
pub fn ensure_partitions(client: &mut Client, schema: &Schema, days_ahead: i32) -> Result<i32> {
    let sql = schema
        .render("SELECT {schema}.ensure_flow_partitions((now() AT TIME ZONE 'UTC')::date - 1, $1)");
    Ok(with_upkeep_lock(client, schema, true, |tx| {
        Ok(tx.query_one(&sql, &[&(days_ahead + 2)])?.get(0))
    })?
    .unwrap_or(0))
}

/// Adds the address and exporter B-trees to partitions of finished days. Can take minutes on
/// a large day, so the housekeeper runs it, never the start-up path; skipped (0) while
/// another collector's upkeep holds the lock.
pub fn index_closed_partitions(client: &mut Client, schema: &Schema) -> Result<i32> {
    let sql = schema
        .render("SELECT {schema}.index_closed_flow_partitions((now() AT TIME ZONE 'UTC')::date)");
    Ok(with_upkeep_lock(client, schema, false, |tx| {
        Ok(tx.query_one(&sql, &[])?.get(0))
    })?
    .unwrap_or(0))
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
            super::original::apply_env_password(&mut admin);
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

    /// Every form a connection string takes, and what it shows in messages. Each row: the
    /// string, what `redact` makes of it, and the secret(s) in it that must not survive.
    const REDACTIONS: &[(&str, &str, &[&str])] = &[
        // URLs: password in the user info, with `@`, `:`, `%XX`, `/`, `?` in it.
        (
            "postgres://u:secret@h/db",
            "postgres://u:***@h/db",
            &["secret"],
        ),
        (
            "postgresql://u:s3cr@t@h:5433/db",
            "postgresql://u:***@h:5433/db",
            &["s3cr", "cr@t"],
        ),
        (
            "postgres://u:p%40ss%3Aw@h/db",
            "postgres://u:***@h/db",
            &["p%40ss", "ss%3Aw"],
        ),
        ("postgres://u:a:b@h/db", "postgres://u:***@h/db", &["a:b"]),
        (
            "postgres://u:pa/ss@h/db",
            "postgres://u:***@h/db",
            &["pa/ss"],
        ),
        (
            "postgres://u:pa?ss@h/db",
            "postgres://u:***@h/db",
            &["pa?ss"],
        ),
        ("postgres://u:@h/db", "postgres://u:@h/db", &[]),
        ("postgres://u@h/db", "postgres://u@h/db", &[]),
        ("postgres://h/db", "postgres://h/db", &[]),
        (
            "POSTGRES://u:secret@h/db",
            "POSTGRES://u:***@h/db",
            &["secret"],
        ),
        (
            "  postgres://u:secret@h/db",
            "  postgres://u:***@h/db",
            &["secret"],
        ),
        // URLs: `password=` anywhere in the query, any case, name percent-encoded.
        (
            "postgres://u@h/db?password=secret",
            "postgres://u@h/db?password=***",
            &["secret"],
        ),
        (
            "postgres://h/db?sslmode=disable&password=secret&application_name=x",
            "postgres://h/db?sslmode=disable&password=***&application_name=x",
            &["secret"],
        ),
        (
            "postgres://h/db?PassWord=secret&user=u",
            "postgres://h/db?PassWord=***&user=u",
            &["secret"],
        ),
        (
            "postgres://h/db?pass%77ord=secret",
            "postgres://h/db?pass%77ord=***",
            &["secret"],
        ),
        (
            "postgres://h/db?password=p%40ss%20w",
            "postgres://h/db?password=***",
            &["p%40ss", "%20w"],
        ),
        (
            "postgres://h/db?sslpassword=secret",
            "postgres://h/db?sslpassword=***",
            &["secret"],
        ),
        // A password with `@` in the query, and a port: hidden, with more around it.
        (
            "postgres://h:5432/db?password=p@ss",
            "postgres://h:***",
            &["p@ss"],
        ),
        // A misquoted `&` in a password; a mistyped name.
        (
            "postgres://h/db?password=se&cret",
            "postgres://h/db?password=***&***",
            &["se", "cret"],
        ),
        (
            "postgres://h/db?passwrd=secret",
            "postgres://h/db?***",
            &["secret"],
        ),
        (
            "postgres://u:secret@/db?host=/run/nfpg&port=5432",
            "postgres://u:***@/db?host=/run/nfpg&port=5432",
            &["secret"],
        ),
        // Key/value: bare, quoted, escaped quotes, spaces around `=`, first or last key.
        (
            "host=h password=secret user=u",
            "host=h password=*** user=u",
            &["secret"],
        ),
        (
            "host=h password='a secret' user=u",
            "host=h password=*** user=u",
            &["a secret"],
        ),
        (
            "host=h password='it\\'s a secret' user=u",
            "host=h password=*** user=u",
            &["it\\'s", "s a secret"],
        ),
        (
            "host=h password='back\\\\slash' user=u",
            "host=h password=*** user=u",
            &["back", "slash"],
        ),
        (
            "host=h password = 'spaced out' user=u",
            "host=h password = *** user=u",
            &["spaced", "out"],
        ),
        (
            "host=h password= secret user=u",
            "host=h password= *** user=u",
            &["secret"],
        ),
        (
            "host=h password =secret",
            "host=h password =***",
            &["secret"],
        ),
        ("host=h PASSWORD=secret", "host=h PASSWORD=***", &["secret"]),
        ("password=secret host=h", "password=*** host=h", &["secret"]),
        (
            "password='s3cr@t%40:x' host=h",
            "password=*** host=h",
            &["s3cr@t", "%40:x"],
        ),
        ("host=h password=secret", "host=h password=***", &["secret"]),
        ("password=secret", "password=***", &["secret"]),
        (
            "host=h password=sec\\ ret user=u",
            "host=h password=*** user=u",
            &["sec", "ret"],
        ),
        (
            "host=h password='unterminated secret",
            "host=h password=***",
            &["unterminated", "secret"],
        ),
        (
            "host=h sslpassword=secret",
            "host=h sslpassword=***",
            &["secret"],
        ),
        // Mistyped: an unquoted space in a password, a misspelt key.
        (
            "host=h password=sec ret user=u",
            "host=h password=*** *** user=u",
            &["sec", "ret"],
        ),
        (
            "host=h password=a bc=d user=u",
            "host=h password=*** ***=*** user=u",
            &["bc=d"],
        ),
        ("host=h passwrd=secret", "host=h ***=***", &["secret"]),
        // Nothing secret: left as it is.
        ("host='/run/x y' dbname=d", "host='/run/x y' dbname=d", &[]),
        (
            "host=/tmp/nfpg-t1/run port=5432 user=nfpg dbname=netflow_db",
            "host=/tmp/nfpg-t1/run port=5432 user=nfpg dbname=netflow_db",
            &[],
        ),
        ("", "", &[]),
    ];

    #[test]
    fn passwords_are_redacted() {
        for &(input, want, secrets) in REDACTIONS {
            let got = redact(input);
            assert_eq!(got, want, "{input}");
            for secret in secrets {
                assert!(!got.contains(secret), "{input} -> {got}: {secret} survived");
            }
        }
    }

    #[test]
    fn the_password_the_driver_reads_is_hidden_wherever_it_is() {
        // The driver ends the user info at the first `@`, so `h` reads as a password here
        // only to it; the structural pass hides the rest.
        assert_eq!(redact("postgres://u:pw@x@h/db"), "postgres://u:***@h/db");
        // A key/value value the driver unescapes: neither form survives anywhere.
        let got = redact("host=/run/it's password=it\\'s");
        assert!(!got.contains("it\\'s"), "{got}");
        let secrets = vec![b"p@ss w%rd".to_vec()];
        assert_eq!(
            scrub("a p@ss w%rd b p%40ss%20w%25rd c p%40ss%20w%25rd", &secrets),
            "a *** b *** c ***"
        );
        assert_eq!(scrub("nothing here", &secrets), "nothing here");
    }

    #[test]
    fn parse_errors_do_not_quote_pieces_of_a_password() {
        let e = "host=h password=sec ret=x"
            .parse::<postgres::Config>()
            .unwrap_err();
        let msg = format!("{:#}", parse_error("host=h password=sec ret=x", &e));
        assert!(!msg.contains("ret"), "{msg}");
        // Without a password the driver's words are kept.
        let e = "host=h sslmod=disable"
            .parse::<postgres::Config>()
            .unwrap_err();
        let msg = format!("{:#}", parse_error("host=h sslmod=disable", &e));
        assert!(msg.contains("sslmod"), "{msg}");
    }
}
