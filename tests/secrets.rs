//! Issue 10, must show 2 (with the table in `store::db`'s tests): a database password never
//! reaches a log line.
//!
//! A role on the private test server gets a password with `@`, `%`, `:`, a space, quotes and
//! a backslash. The real `nfpg run` is given it four ways: a URL `DATABASE_URL`, a key/value
//! `DATABASE_URL`, `DB_PASSWORD` and `PGPASSWORD`. Each run starts while the role still has
//! another password (a failed connection, logged), gets the right one while running (the
//! replayer reconnects and replays what was spooled), and the first run also lives through a
//! server restart. The flows sent are stored, so the password really worked; then no line of
//! nfpg's stdout, stderr or log file holds the password, raw, URL-encoded or escaped.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// `@`, `%` (followed by hex digits, as if encoded), `:`, a space, both quotes, a backslash.
const SECRET: &str = "Nf9@zq w%7Ek'X:\"Lm\\v";

/// Every form in which the secret could show up, plus pieces of it long enough to be telling.
fn secret_forms() -> Vec<String> {
    vec![
        SECRET.to_string(),
        url_encode(SECRET),
        url_encode(SECRET).to_lowercase(),
        kv_escape(SECRET),
        sql_literal(SECRET),
        "Nf9@zq".to_string(),
        "Nf9%40zq".to_string(),
        "w%7Ek".to_string(),
        "w%257Ek".to_string(),
        "X:\"Lm".to_string(),
    ]
}

/// `line` with every form of the secret replaced, so a failing test never prints it either.
fn masked(line: &str) -> String {
    secret_forms()
        .iter()
        .fold(line.to_string(), |l, f| l.replace(f, "<SECRET>"))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn kv_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A running `nfpg run` with its output collected.
struct Run {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    addr: std::net::SocketAddr,
    _spool: tempfile::TempDir,
}

impl Run {
    /// Starts nfpg with these environment variables (and no other database settings) and
    /// waits until it listens.
    fn start(name: &str, schema: &str, env: &[(&str, &str)], log_file: &std::path::Path) -> Run {
        let port = free_port();
        let spool = tempfile::Builder::new()
            .prefix("nfpg-spool")
            .tempdir()
            .expect("spool dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nfpg"));
        cmd.arg("run")
            .args(["--listen", "127.0.0.1", "--port", &port.to_string()])
            .args(["--flush-interval", "0.2", "--stats-interval", "1"])
            .args([
                "--exporter-interval",
                "0.5",
                "--shards",
                "1",
                "--writers",
                "1",
            ])
            .args(["--schema", schema])
            .arg("--spool-dir")
            .arg(spool.path())
            .arg("--log-file")
            .arg(log_file);
        for var in [
            "DATABASE_URL",
            "DB_HOST",
            "DB_PORT",
            "DB_NAME",
            "DB_USER",
            "DB_PASSWORD",
            "PGPASSWORD",
            "DB_SCHEMA",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .envs(env.iter().copied())
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nfpg");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for (stream, out) in [
            (
                Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
                "stderr",
            ),
            (Box::new(child.stdout.take().unwrap()), "stdout"),
        ] {
            let lines = lines.clone();
            let tx = tx.clone();
            let name = name.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("listening on udp") {
                        let _ = tx.send(());
                    }
                    eprintln!("[nfpg {name} {out}] {}", masked(&line));
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let mut run = Run {
            child: Some(child),
            lines,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            _spool: spool,
        };
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let log = run.masked_log();
            run.kill();
            panic!("{name}: nfpg did not start listening:\n{log}");
        }
        run
    }

    fn masked_log(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|l| masked(l))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and a clean exit; every line it wrote (stdout and stderr) once its output is
    /// closed.
    fn stop(mut self) -> Vec<String> {
        let mut child = self.child.take().unwrap();
        send_signal(child.id() as i32, libc::SIGTERM);
        let status = child.wait().expect("wait for nfpg");
        assert!(
            status.success(),
            "nfpg exited with {status}:\n{}",
            self.masked_log()
        );
        // The reader threads end with the pipes; give them a moment to push the last lines.
        std::thread::sleep(Duration::from_millis(200));
        let lines = self.lines.lock().unwrap().clone();
        lines
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `n` datagrams of 10 flows each from a fresh exporter.
fn send(to: std::net::SocketAddr, seq0: u32, n: u32) {
    let sock = exporter_socket("127.0.0.1");
    let now = now_secs();
    let datagrams: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let recs: Vec<Rec> = (0..10).map(|j| rec(i * 10 + j)).collect();
            v5_datagram(now, 1_000_000, seq0 + i * 10, 0, 0, &recs)
        })
        .collect();
    send_paced(&sock, to, &datagrams);
}

#[test]
fn the_database_password_is_in_no_log_line() {
    let mut db = TestDb::start();
    let socket_dir = db
        .db
        .server
        .as_ref()
        .expect("a private server")
        .socket_dir()
        .display()
        .to_string();
    let logs = tempfile::tempdir().expect("log dir");
    let url = format!(
        "postgres://nfpg_u1:{}@/netflow_db?host={socket_dir}&port=5432",
        url_encode(SECRET)
    );
    let kv = format!(
        "host={socket_dir} port=5432 dbname=netflow_db user=nfpg_u2 password='{}'",
        kv_escape(SECRET)
    );
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("url", vec![("DATABASE_URL", url.as_str())]),
        ("key-value", vec![("DATABASE_URL", kv.as_str())]),
        (
            "DB_PASSWORD",
            vec![
                ("DB_HOST", socket_dir.as_str()),
                ("DB_PORT", "5432"),
                ("DB_NAME", "netflow_db"),
                ("DB_USER", "nfpg_u3"),
                ("DB_PASSWORD", SECRET),
            ],
        ),
        (
            "PGPASSWORD",
            vec![
                ("DB_HOST", socket_dir.as_str()),
                ("DB_NAME", "netflow_db"),
                ("DB_USER", "nfpg_u4"),
                ("PGPASSWORD", SECRET),
            ],
        ),
    ];
    for (i, (name, env)) in cases.iter().enumerate() {
        let n = i + 1;
        let (role, schema) = (format!("nfpg_u{n}"), format!("secrets{n}"));
        let started = std::time::Instant::now();
        // The role exists, with another password: nfpg's first connection fails.
        db.client()
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD 'not-it-{n}';
                 GRANT CREATE ON DATABASE netflow_db TO {role};"
            ))
            .expect("create role");
        let log_file = logs.path().join(format!("{name}.log"));
        let run = Run::start(name, &schema, env, &log_file);
        assert!(
            wait_until(Duration::from_secs(10), || run
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("password authentication failed"))),
            "{name}: the first connection did not fail:\n{}",
            run.masked_log()
        );
        send(run.addr, 0, 5);
        // Now the password nfpg has is the role's: the replayer gets in and replays.
        db.client()
            .batch_execute(&format!(
                "ALTER ROLE {role} PASSWORD {}",
                sql_literal(SECRET)
            ))
            .expect("set the password");
        let count = |db: &TestDb| db.count(&format!("SELECT count(*) FROM {schema}.flows"));
        let stored = |db: &TestDb, want: i64| {
            wait_until(Duration::from_secs(20), || {
                db.client()
                    .query_opt(
                        "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'flows'",
                        &[&schema],
                    )
                    .unwrap()
                    .is_some()
                    && count(db) == want
            })
        };
        assert!(
            stored(&db, 50),
            "{name}: flows sent before the password was right were not stored:\n{}",
            run.masked_log()
        );
        send(run.addr, 50, 5);
        assert!(
            stored(&db, 100),
            "{name}: flows were not stored:\n{}",
            run.masked_log()
        );
        if n == 1 {
            // A restart: every connection is made again.
            db.restart(Duration::from_millis(300));
            send(run.addr, 100, 5);
            assert!(
                stored(&db, 150),
                "{name}: flows sent across a restart were not stored:\n{}",
                run.masked_log()
            );
        }
        let mut lines = run.stop();
        let file = std::fs::read_to_string(&log_file).expect("the log file");
        assert!(
            file.contains("password authentication failed"),
            "{name}: the log file has the failed connection"
        );
        lines.extend(file.lines().map(str::to_string));
        let forms = secret_forms();
        let leaks: Vec<String> = lines
            .iter()
            .filter(|l| forms.iter().any(|f| l.contains(f.as_str())))
            .map(|l| masked(l))
            .collect();
        assert!(
            leaks.is_empty(),
            "{name}: the password is in {} log line(s):\n{}",
            leaks.len(),
            leaks.join("\n")
        );
        eprintln!(
            "{name}: {} lines, none with the password ({:.1} s)",
            lines.len(),
            started.elapsed().as_secs_f64()
        );
    }
}
