//! Issue 10, must show 1: the private PostgreSQL admits only the user running nfpg.
//!
//! `nfpg server` runs as an ordinary user (`nobody`); then, with real processes and the real
//! `psql`:
//! (a) that user connects with the printed connection string;
//! (b) another ordinary user (`daemon`) cannot: the data directory is 0700 (permission denied);
//! (c) root, whom file modes do not stop, is refused by authentication (peer mismatch), which
//!     proves the authentication layer and not only the directory modes;
//! (d) the data and socket directories are 0700, `pg_hba.conf` holds only the two local
//!     lines nfpg writes, and there is no TCP listener (`listen_addresses` is empty);
//! (e) a role other than nfpg gets in only with its password (SCRAM).
//!
//! A second test (any user) starts a cluster left with trust authentication and open
//! directories, as nfpg made them before: it is locked like a new one.
//!
//! Acting as two users needs root: CI runs as root (`.ci/run`), so it runs there. As anyone
//! else the test says `SKIPPED: needs root` on stderr and passes.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nfpg::store::pgserver::find_bin_dir;
use nfpg::sys::{is_root, user_ids};

/// `nfpg server`, stopped with SIGTERM when dropped (also when the test panics).
struct ServerGuard {
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl ServerGuard {
    /// SIGTERM, then waits up to 60 s for the exit; the exit status.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        common::send_signal(child.id() as i32, libc::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a `psql` run as `user` did.
struct Psql {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `psql -c sql` on `conninfo` as `user` (uid, gid), with a clean environment plus `env`.
fn psql(user: Option<(u32, u32)>, conninfo: &str, sql: &str, env: &[(&str, &str)]) -> Psql {
    let mut cmd = Command::new(find_bin_dir().expect("PostgreSQL programs").join("psql"));
    cmd.args([
        "-X",
        "-w",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        conninfo,
        "-c",
        sql,
    ])
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .env("LC_ALL", "C")
    .envs(env.iter().copied())
    .current_dir("/")
    .stdin(Stdio::null());
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().expect("run psql");
    Psql {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

#[test]
fn another_local_user_cannot_connect_to_the_private_server() {
    if !is_root() {
        eprintln!(
            "SKIPPED: needs root (acts as two users: nobody runs nfpg server, daemon and root try \
             to get in); CI runs as root, so it runs there"
        );
        return;
    }
    let owner = user_ids("nobody").expect("a `nobody` user");
    let other = user_ids("daemon").expect("a `daemon` user");

    // A directory `nobody` owns and others may pass through, so that what stops `daemon` is
    // nfpg's own modes; the binary is copied in (the build directory may be closed to nobody).
    let base = tempfile::Builder::new()
        .prefix("nfpg-lock")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let own = |p: &Path, mode: u32| {
        std::os::unix::fs::chown(p, Some(owner.0), Some(owner.1)).expect("chown");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    own(base.path(), 0o755);
    let bin = base.path().join("nfpg");
    std::fs::copy(env!("CARGO_BIN_EXE_nfpg"), &bin).expect("copy nfpg");
    own(&bin, 0o755);
    let data = base.path().join("data");

    let mut child = Command::new(&bin)
        .arg("server")
        .arg("--data-dir")
        .arg(&data)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("RUST_LOG", "info")
        .current_dir(base.path())
        .uid(owner.0)
        .gid(owner.1)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nfpg server as nobody");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut server = ServerGuard {
        child: Some(child),
        stderr: Arc::new(Mutex::new(Vec::new())),
    };
    let lines = server.stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[nfpg server] {line}");
            lines.lock().unwrap().push(line);
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("no JSON line from nfpg server:\n{}", server.log()));
    let info: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}\n{}", server.log()));
    let conninfo = info["url_template"]
        .as_str()
        .expect("url_template")
        .replace("{db}", "postgres");
    let socket_dir = PathBuf::from(info["socket_dir"].as_str().expect("socket_dir"));
    let pgdata = PathBuf::from(info["data_dir"].as_str().expect("data_dir"));

    // Every check runs; the failures are reported together.
    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };

    // (a) The user running nfpg gets in.
    let a = psql(Some(owner), &conninfo, "SELECT 1", &[]);
    check(
        a.ok && a.stdout == "1",
        format!(
            "(a) nobody, who runs nfpg, could not connect: {} {}",
            a.stdout, a.stderr
        ),
    );

    // (b) Another ordinary user does not even reach the socket.
    let b = psql(Some(other), &conninfo, "SELECT 1", &[]);
    eprintln!("(b) daemon: {}", b.stderr);
    check(
        !b.ok && b.stderr.contains("Permission denied"),
        format!(
            "(b) daemon was not stopped by permissions: ok={} {} {}",
            b.ok, b.stdout, b.stderr
        ),
    );

    // (c) Root passes any file mode; authentication refuses it.
    let c = psql(None, &conninfo, "SELECT 1", &[]);
    eprintln!("(c) root: {}", c.stderr);
    check(
        !c.ok && c.stderr.contains("Peer authentication failed"),
        format!(
            "(c) root was not refused by authentication: ok={} {} {}",
            c.ok, c.stdout, c.stderr
        ),
    );

    // (d) Modes, owners, the authentication rules the server loaded, no TCP.
    for (dir, want) in [
        (&data, 0o700),
        (&socket_dir, 0o700),
        (&pgdata, 0o700),
        (&pgdata.join("pg_hba.conf"), 0o600),
        (&pgdata.join("pg_ident.conf"), 0o600),
    ] {
        let got = mode(dir);
        check(
            got == want,
            format!("(d) {} has mode {got:o}, want {want:o}", dir.display()),
        );
        let uid = std::fs::metadata(dir).unwrap().uid();
        check(
            uid == owner.0,
            format!("(d) {} belongs to uid {uid}, not nobody", dir.display()),
        );
    }
    let rules = psql(
        Some(owner),
        &conninfo,
        "SELECT type, database, user_name, auth_method, options, error \
         FROM pg_hba_file_rules ORDER BY line_number",
        &[],
    );
    check(
        rules.ok
            && rules.stdout
                == "local|{all}|{nfpg}|peer|{map=nfpg}|\nlocal|{all}|{all}|scram-sha-256||",
        format!("(d) pg_hba rules: {} {}", rules.stdout, rules.stderr),
    );
    let ident = psql(
        Some(owner),
        &conninfo,
        "SELECT map_name, sys_name, pg_username FROM pg_ident_file_mappings",
        &[],
    );
    check(
        ident.ok && ident.stdout == "nfpg|nobody|nfpg",
        format!("(d) pg_ident mappings: {} {}", ident.stdout, ident.stderr),
    );
    let listen = psql(Some(owner), &conninfo, "SHOW listen_addresses", &[]);
    check(
        listen.ok && listen.stdout.is_empty(),
        format!(
            "(d) listen_addresses is {:?} {}, want ''",
            listen.stdout, listen.stderr
        ),
    );

    // (e) Another role: its password, or nothing.
    let created = psql(
        Some(owner),
        &conninfo,
        "CREATE ROLE reader LOGIN PASSWORD 'reader-pw-7'",
        &[],
    );
    check(created.ok, format!("(e) CREATE ROLE: {}", created.stderr));
    let as_reader = conninfo.replace("user=nfpg", "user=reader");
    let without = psql(None, &as_reader, "SELECT 1", &[]);
    check(
        !without.ok && without.stderr.contains("no password supplied"),
        format!(
            "(e) reader got in without a password: ok={} {}",
            without.ok, without.stderr
        ),
    );
    let wrong = psql(None, &as_reader, "SELECT 1", &[("PGPASSWORD", "nope")]);
    check(
        !wrong.ok && wrong.stderr.contains("password authentication failed"),
        format!(
            "(e) reader got in with a wrong password: ok={} {}",
            wrong.ok, wrong.stderr
        ),
    );
    let right = psql(
        None,
        &as_reader,
        "SELECT 1",
        &[("PGPASSWORD", "reader-pw-7")],
    );
    check(
        right.ok && right.stdout == "1",
        format!(
            "(e) reader with its password: {} {}",
            right.stdout, right.stderr
        ),
    );

    let status = server.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "nfpg server exited with {status:?}:\n{}",
        server.log()
    );
    assert!(
        failures.is_empty(),
        "the private server let in more than nfpg:\n{}",
        failures.join("\n")
    );
}

/// Clusters made by nfpg before issue 10 trusted every local connection: the next start
/// locks them like new ones (the files are rewritten before the server starts, and the
/// directories closed). Runs as any user.
#[test]
fn a_cluster_that_trusted_everyone_is_locked_at_its_next_start() {
    use nfpg::store::pgserver::PgServer;
    let dir = tempfile::Builder::new()
        .prefix("nfpg-t")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let mut server = PgServer::start(dir.path()).expect("start PostgreSQL");
    server.stop().expect("stop PostgreSQL");
    // What an older nfpg left: trust for all, open directories.
    let hba = server.data_dir().join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n",
    )
    .expect("write pg_hba.conf");
    std::fs::write(server.data_dir().join("pg_ident.conf"), "").expect("write pg_ident.conf");
    for d in [dir.path().to_path_buf(), server.socket_dir()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    drop(server);

    let server = PgServer::start(dir.path()).expect("start PostgreSQL again");
    let mut client =
        nfpg::store::db::connect(&server.connection_string("postgres")).expect("connect");
    let rules: Vec<(String, String)> = client
        .query(
            "SELECT type, auth_method FROM pg_hba_file_rules ORDER BY line_number",
            &[],
        )
        .expect("pg_hba_file_rules")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rules,
        [
            ("local".to_string(), "peer".to_string()),
            ("local".to_string(), "scram-sha-256".to_string())
        ]
    );
    assert_eq!(mode(&hba), 0o600);
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&server.socket_dir()), 0o700);
}
