//! A private PostgreSQL server that nfpg starts when no database is configured.
//!
//! It owns a directory: `pgdata/` (the cluster, made by `initdb`), `run/` (the unix socket;
//! no TCP listener) and `postgres.log`. The server is started with `pg_ctl` and settings tuned
//! for ingest, used over its socket, and stopped when the [`PgServer`] is dropped. PostgreSQL
//! refuses to run as root, so as root it runs as the `postgres` system user. The test suite
//! uses the same type, so tests need no server running beforehand.
//!
//! It admits only nfpg. The directory and `run/` are mode 0700 (owned by the user the server
//! runs as), and at every start, before the server starts, nfpg rewrites the cluster's
//! `pg_hba.conf` and `pg_ident.conf`: the superuser `nfpg` logs in by peer authentication,
//! mapped only from the OS user running nfpg (and `postgres`, the server's own user, when that
//! is root); any other role needs its SCRAM password; nothing is accepted over TCP. Clusters
//! made by older nfpg versions (trust authentication) are locked the same way at their next
//! start.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The database superuser the private cluster is created with.
pub const SUPERUSER: &str = "nfpg";
/// Port number; with no TCP listener it only names the socket file `.s.PGSQL.5432`.
const PORT: u16 = 5432;

/// Settings for a cluster that mostly ingests. `synchronous_commit = off` may lose the last
/// few hundred ms of commits on an OS crash (never corrupts); `wal_level = minimal` skips WAL
/// for data loaded into tables created in the same transaction and needs no replicas.
const INGEST_SETTINGS: &str = "\
shared_buffers = '256MB'
wal_level = minimal
max_wal_senders = 0
synchronous_commit = off
wal_buffers = '64MB'
max_wal_size = '8GB'
min_wal_size = '1GB'
checkpoint_timeout = '15min'
checkpoint_completion_target = 0.9
max_connections = 100
log_min_messages = warning
log_checkpoints = off
";

/// The peer-authentication map (pg_ident.conf) naming the OS users that may log in as
/// [`SUPERUSER`].
const IDENT_MAP: &str = "nfpg";

/// A running private server; stopped on drop.
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    running: bool,
}

/// Where the PostgreSQL server programs are: `$PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian, Ubuntu), else `initdb` on `$PATH`.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
        bail!(
            "PG_BIN={} has no initdb.\n{HOW_TO_GET_A_DATABASE}",
            dir.display()
        );
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for p in std::env::split_paths(&paths) {
            if p.join("initdb").is_file() && p.join("pg_ctl").is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "no database is configured and no PostgreSQL server programs were found (initdb, pg_ctl).\n\
         {HOW_TO_GET_A_DATABASE}"
    )
}

/// What to do when nfpg can start no private server.
const HOW_TO_GET_A_DATABASE: &str =
    "Either install them (Debian/Ubuntu: `apt-get install postgresql`; \
    or set PG_BIN to their directory) and nfpg will start a private server, or point nfpg at an \
    existing server with DATABASE_URL=postgres://user:pass@host/db (or DB_HOST, DB_PORT, DB_NAME, \
    DB_USER, DB_PASSWORD).";

/// The uid and gid of the `postgres` system user, when we are root and must drop to it.
fn run_as_postgres() -> Result<Option<(u32, u32)>> {
    if !crate::sys::is_root() {
        return Ok(None);
    }
    let Some((uid, gid)) = crate::sys::user_ids("postgres") else {
        bail!(
            "running as root, and PostgreSQL refuses to run as root; there is no `postgres` user \
             to run it as (installing the postgresql package creates it), or run nfpg as another user"
        );
    };
    Ok(Some((uid, gid)))
}

/// The server runs as another user (`postgres`): every directory above `dir` must let it
/// through, or initdb fails with a bare "permission denied".
fn check_reachable(dir: &Path, uid: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for parent in dir.ancestors().skip(1) {
        let meta = fs::metadata(parent)?;
        let searchable = meta.mode() & 0o001 != 0 || meta.uid() == uid;
        if !searchable {
            bail!(
                "the private PostgreSQL runs as the postgres user, which cannot reach {}: {} is not \
                 searchable by others (mode {:o}). Choose a --data-dir under a directory such as \
                 /var/lib or /tmp, or chmod o+x {}",
                dir.display(),
                parent.display(),
                meta.mode() & 0o7777,
                parent.display()
            );
        }
    }
    Ok(())
}

impl PgServer {
    /// Creates (first time) and starts the private server in `dir`, waiting until it accepts
    /// connections.
    pub fn start(dir: &Path) -> Result<Self> {
        let bin = find_bin_dir()?;
        let run_as = run_as_postgres()?;
        // The server needs none of the capabilities nfpg may have been given (systemd's
        // AmbientCapabilities would pass them on to it).
        crate::sys::clear_ambient_capabilities();
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        if let Some((uid, _)) = run_as {
            check_reachable(&dir, uid)?;
        }
        let mut server = PgServer {
            dir,
            bin,
            run_as,
            running: false,
        };
        let run = server.socket_dir();
        fs::create_dir_all(&run)?;
        server.make_private(&server.dir)?;
        server.make_private(&run)?;
        let socket = run.join(format!(".s.PGSQL.{PORT}"));
        if socket.as_os_str().len() > 100 {
            bail!(
                "socket path {} is too long for a unix socket; use a shorter --data-dir",
                socket.display()
            );
        }
        if !server.data_dir().join("PG_VERSION").is_file() {
            server.initdb()?;
        }
        if server.data_dir().join("postmaster.pid").is_file()
            && server.pg_ctl(&["status"], None).is_ok()
        {
            // Another nfpg (a running collector, when this is `nfpg exporters`) started it:
            // use it, and leave stopping it to its owner.
            tracing::info!(
                "using the private PostgreSQL already running in {}",
                server.dir.display()
            );
            return Ok(server);
        }
        fs::write(server.data_dir().join("nfpg.conf"), server.settings())?;
        server.give_to_postgres(&server.data_dir().join("nfpg.conf"))?;
        // The server is stopped: what is written now is what it reads when it starts.
        server.write_auth()?;
        server
            .pg_ctl(
                &["start", "-w", "-t", "120", "-l"],
                Some(&server.dir.join("postgres.log")),
            )
            .with_context(|| {
                format!(
                    "starting PostgreSQL; see {}",
                    server.dir.join("postgres.log").display()
                )
            })?;
        server.running = true;
        Ok(server)
    }

    /// The cluster directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// A libpq-style connection string for `dbname` on this server.
    pub fn connection_string(&self, dbname: &str) -> String {
        format!(
            "host={} port={PORT} user={SUPERUSER} dbname={dbname}",
            self.socket_dir().display()
        )
    }

    fn settings(&self) -> String {
        format!(
            "# Written by nfpg at every start; edit postgresql.conf to override.\n\
             listen_addresses = ''\nport = {PORT}\nunix_socket_directories = '{}'\n\
             unix_socket_permissions = 0700\npassword_encryption = scram-sha-256\n{INGEST_SETTINGS}",
            self.socket_dir().display()
        )
    }

    /// The OS users that may log in as [`SUPERUSER`]: the one running nfpg and, when nfpg is
    /// root, `postgres`, the user the server runs as.
    fn peer_users(&self) -> Result<Vec<String>> {
        let me = crate::sys::euid();
        let mut users = vec![crate::sys::user_name(me).with_context(|| {
            format!("uid {me} has no user name; PostgreSQL cannot run without one")
        })?];
        if let Some((uid, _)) = self.run_as {
            users.push(
                crate::sys::user_name(uid)
                    .with_context(|| format!("uid {uid} has no user name"))?,
            );
        }
        users.dedup();
        Ok(users)
    }

    /// Writes `pg_hba.conf` and `pg_ident.conf` (mode 0600): [`SUPERUSER`] by peer
    /// authentication from [`PgServer::peer_users`] only, other roles with a SCRAM password,
    /// unix socket only.
    fn write_auth(&self) -> Result<()> {
        let hba = format!(
            "# Written by nfpg at every start: only nfpg gets in. Edits here are overwritten.\n\
             # The superuser {SUPERUSER} by peer authentication, mapped in pg_ident.conf from the\n\
             # OS user running nfpg; any other role with its password (SCRAM). No TCP.\n\
             # TYPE  DATABASE  USER  METHOD\n\
             local   all       {SUPERUSER}  peer map={IDENT_MAP}\n\
             local   all       all   scram-sha-256\n"
        );
        let mut ident = format!(
            "# Written by nfpg at every start: the OS users that may log in as {SUPERUSER}.\n\
             # MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n"
        );
        for user in self.peer_users()? {
            ident.push_str(&format!(
                "{IDENT_MAP} {} {SUPERUSER}\n",
                ident_token(&user)?
            ));
        }
        for (name, text) in [("pg_hba.conf", hba), ("pg_ident.conf", ident)] {
            let path = self.data_dir().join(name);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
            self.give_to_postgres(&path)?;
        }
        Ok(())
    }

    fn initdb(&self) -> Result<()> {
        let pgdata = self.data_dir();
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(&pgdata).args([
            "-U",
            SUPERUSER,
            // Replaced by nfpg's own pg_hba.conf before the first start (`write_auth`).
            "--auth-local=peer",
            "--auth-host=reject",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let conf = pgdata.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf)?;
        text.push_str("\ninclude_if_exists = 'nfpg.conf'\n");
        fs::write(&conf, text)?;
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.dir)
            .env_remove("PGDATA")
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn pg_ctl(&self, args: &[&str], log: Option<&Path>) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(self.data_dir()).args(args);
        if let Some(log) = log {
            cmd.arg(log);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl")?;
        if !out.status.success() {
            bail!(
                "pg_ctl {} failed: {}{}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// As root, hands a path we created to the `postgres` user so the server can use it.
    fn give_to_postgres(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }

    /// A directory of the server's, owned by the user the server runs as and closed to
    /// everyone else (mode 0700), whoever runs nfpg.
    fn make_private(&self, dir: &Path) -> Result<()> {
        self.give_to_postgres(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).with_context(|| {
            format!(
                "making {} private (mode 0700); it must belong to the user running nfpg",
                dir.display()
            )
        })
    }

    /// Stops the server (fast shutdown: open sessions are ended, committed data is kept).
    pub fn stop(&mut self) -> Result<()> {
        if self.running {
            self.running = false;
            self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"], None)?;
        }
        Ok(())
    }
}

/// A user name as a pg_ident.conf token: bare when plain, else double-quoted.
fn ident_token(name: &str) -> Result<String> {
    if name.is_empty() || name.contains(['"', '\n', '\r']) {
        bail!("user name {name:?} cannot be written into pg_ident.conf");
    }
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with(['+', '/']);
    Ok(if plain {
        name.to_string()
    } else {
        format!("\"{name}\"")
    })
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("stopping the private PostgreSQL server: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ident_tokens() {
        assert_eq!(ident_token("nfpg").unwrap(), "nfpg");
        assert_eq!(ident_token("john.doe-1").unwrap(), "john.doe-1");
        assert_eq!(ident_token("ad user").unwrap(), "\"ad user\"");
        assert_eq!(ident_token("/x").unwrap(), "\"/x\"");
        assert!(ident_token("a\"b").is_err());
        assert!(ident_token("").is_err());
    }
}
