//! Test harness: a private PostgreSQL per test (the same mechanism `nfpg run` uses), the real
//! `nfpg` binary as a child process, UDP senders on loopback, and NetFlow v5 datagrams.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nfpg::config::DbTarget;
use nfpg::store::db::{open_database, Database};

pub fn fixture(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    assert!(p.is_file(), "fixture {} missing", p.display());
    p
}

/// Sends `sig` to `pid`, a child process of this test.
#[allow(unsafe_code)]
pub fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory preconditions; the callers pass their own children's
    // pids, which cannot be reused while the child is not yet reaped.
    unsafe { libc::kill(pid, sig) };
}

/// Fails the test with the install hint when a Debian tool is missing.
pub fn require_tool(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: apt-get install {package} (the CI script does)"
    );
}

/// A private PostgreSQL server with the `netflow_db` database, stopped when dropped.
pub struct TestDb {
    pub db: Database,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nfpg-t")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let db = open_database(&DbTarget::Private {
            dir: dir.path().to_path_buf(),
            dbname: "netflow_db".into(),
        })
        .expect("starting a private PostgreSQL (is the postgresql package installed?)");
        TestDb { db, _dir: dir }
    }

    pub fn conninfo(&self) -> &str {
        &self.db.conninfo
    }

    /// A value of the connection string (`host`: the socket directory, `user`, …).
    pub fn conninfo_value(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        self.conninfo()
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {key} in the test database's conninfo"))
            .to_string()
    }

    pub fn client(&self) -> postgres::Client {
        nfpg::store::db::connect(&self.db.conninfo).expect("connect")
    }

    /// Stops the server, waits `pause`, starts it again on the same directory and socket.
    pub fn restart(&mut self, pause: Duration) {
        let server = self.db.server.as_mut().expect("a private server");
        server.stop().expect("stop PostgreSQL");
        std::thread::sleep(pause);
        self.db.server = Some(
            nfpg::store::pgserver::PgServer::start(self._dir.path()).expect("restart PostgreSQL"),
        );
    }

    /// Stops the server (an outage until [`TestDb::start_server`]).
    pub fn stop_server(&mut self) {
        self.db
            .server
            .as_mut()
            .expect("a private server")
            .stop()
            .expect("stop PostgreSQL");
    }

    /// Starts the server again on the same directory and socket.
    pub fn start_server(&mut self) {
        self.db.server = Some(
            nfpg::store::pgserver::PgServer::start(self._dir.path()).expect("restart PostgreSQL"),
        );
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).expect(sql).get(0)
    }
}

/// A UDP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `nfpg run` child process.
pub struct Nfpg {
    child: Option<Child>,
    /// The spool directory this run got (unless the caller passed `--spool-dir`).
    pub spool: Option<tempfile::TempDir>,
    pub port: u16,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// The final statistics `nfpg` prints on stdout at exit.
pub type Summary = serde_json::Value;

impl Nfpg {
    /// Starts nfpg on a free port of 127.0.0.1 with `extra` arguments, waits until it listens.
    pub fn start(db: &TestDb, extra: &[&str]) -> Self {
        Self::start_with(Some(db.conninfo()), "127.0.0.1", extra)
    }

    pub fn start_with(conninfo: Option<&str>, listen: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nfpg"));
        cmd.arg("run")
            .args(["--listen", listen, "--port", &port.to_string()])
            .args(
                [
                    ("--flush-interval", "0.2"),
                    ("--stats-interval", "1"),
                    ("--exporter-interval", "0.5"),
                ]
                .iter()
                // The caller's own value wins.
                .filter(|(flag, _)| !extra.contains(flag))
                .flat_map(|(flag, v)| [*flag, *v]),
            )
            .args(extra)
            .env_remove("DB_HOST")
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(c) = conninfo {
            cmd.args(["--database-url", c]);
        }
        // Every run its own spool, so tests running side by side never share one.
        let spool = if extra.contains(&"--spool-dir") {
            None
        } else {
            let d = tempfile::Builder::new()
                .prefix("nfpg-spool")
                .tempdir()
                .expect("spool dir");
            cmd.arg("--spool-dir").arg(d.path());
            Some(d)
        };
        let mut child = cmd.spawn().expect("spawn nfpg");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("listening on udp") {
                    let _ = tx.send(());
                }
                eprintln!("[nfpg] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!(
                "nfpg did not start listening:\n{}",
                stderr.lock().unwrap().join("\n")
            );
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Nfpg {
            child: Some(child),
            spool,
            port,
            addr,
            stderr,
        }
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        send_signal(self.pid(), sig);
    }

    /// SIGKILL: no clean stop at all.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9 nfpg");
            c.wait().expect("reap nfpg");
        }
    }

    /// SIGTERM, wait for a clean exit (status 0), return the final statistics.
    pub fn stop(mut self) -> Summary {
        self.signal(libc::SIGTERM);
        let child = self.child.take().unwrap();
        let out = child.wait_with_output().expect("wait for nfpg");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "nfpg exited with {}:\n{}",
            out.status,
            self.log()
        );
        let line = stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no summary on stdout:\n{}", self.log()));
        serde_json::from_str(line).expect("summary JSON")
    }
}

impl Drop for Nfpg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A sender bound to a loopback address, to act as one exporter.
pub fn exporter_socket(ip: &str) -> UdpSocket {
    UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"))
}

/// One v5 record for [`v5_datagram`].
#[derive(Clone, Copy, Debug)]
pub struct Rec {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub packets: u32,
    pub bytes: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

pub fn rec(i: u32) -> Rec {
    Rec {
        src: [10, 0, (i >> 8) as u8, i as u8],
        dst: [192, 0, 2, (i % 250) as u8],
        packets: 1 + i % 50,
        bytes: 40 * (1 + i % 50) + i % 7,
        sport: 1024 + (i % 60000) as u16,
        dport: [80, 443, 53, 22][(i % 4) as usize],
        proto: if i % 4 == 2 { 17 } else { 6 },
    }
}

/// A NetFlow v5 datagram: header fields and records, times relative to `unix_secs`.
pub fn v5_datagram(
    unix_secs: u32,
    uptime: u32,
    sequence: u32,
    engine_id: u8,
    sampling: u16,
    recs: &[Rec],
) -> Vec<u8> {
    use nfpg_wire::v5::encode::{datagram, Header, Record};
    let header = Header {
        sys_uptime: uptime,
        unix_secs,
        unix_nsecs: 0,
        flow_sequence: sequence,
        engine_type: 0,
        engine_id,
        sampling_interval: sampling,
    };
    let records: Vec<Record> = recs
        .iter()
        .map(|r| Record {
            src_addr: r.src,
            dst_addr: r.dst,
            input: 1,
            output: 2,
            packets: r.packets,
            octets: r.bytes,
            first: uptime.wrapping_sub(2000),
            last: uptime.wrapping_sub(1000),
            src_port: r.sport,
            dst_port: r.dport,
            tcp_flags: 0x1b,
            protocol: r.proto,
            src_mask: 24,
            dst_mask: 24,
            ..Record::default()
        })
        .collect();
    datagram(&header, &records)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

pub fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// Polls `f` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Sends datagrams paced so loopback never overflows the receive buffer in a test.
pub fn send_paced(sock: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>]) {
    for (i, d) in datagrams.iter().enumerate() {
        sock.send_to(d, to).expect("send");
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Scrapes nfpg's /metrics: every series by name, plus per-family sums keyed `name:sum`
/// (or `name:reason` for the malformed reasons).
pub fn scrape(addr: &str) -> std::collections::BTreeMap<String, f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let mut sums: std::collections::BTreeMap<String, f64> = Default::default();
    for line in body
        .split("\r\n\r\n")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        let v: f64 = value.parse().unwrap();
        sums.insert(name.to_string(), v);
        // Also sum over labels other than reason/exporter, keyed by name{reason}.
        let base = name.split('{').next().unwrap();
        let reason = name
            .split("reason=\"")
            .nth(1)
            .map(|r| r.split('"').next().unwrap());
        let key = match reason {
            Some(r) => format!("{base}:{r}"),
            None => format!("{base}:sum"),
        };
        *sums.entry(key).or_default() += v;
    }
    sums
}

/// The workspace's loadgen binary next to nfpg's (built by `cargo test --workspace`; built
/// here if this test runs alone).
pub fn loadgen() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_nfpg")).with_file_name("nfpg-loadgen");
    if !path.is_file() {
        let profile = if cfg!(debug_assertions) {
            vec![]
        } else {
            vec!["--release"]
        };
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "nfpg-loadgen"])
            .args(profile)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build -p nfpg-loadgen");
        assert!(status.success());
    }
    path
}

/// Runs loadgen with `args`; returns its JSON report and exit code.
pub fn run_loadgen(args: &[&str]) -> (serde_json::Value, i32) {
    let out = Command::new(loadgen())
        .args(args)
        .output()
        .expect("run nfpg-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "loadgen report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out.status.code().unwrap_or(-1))
}

/// A TCP port free on 127.0.0.1 right now (for the metrics listener).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP proxy on 127.0.0.1 to the private server's unix socket `socket`/.s.PGSQL.`pg_port`
/// that, once, cuts a connection right after the client sent `COMMIT` for a transaction in
/// which it sent `trigger` (the server commits; the client never hears it). Returns the
/// proxy's port and how many connections it cut.
pub fn cut_after_commit_proxy(
    socket: PathBuf,
    pg_port: u16,
    trigger: &'static [u8],
) -> (u16, Arc<std::sync::atomic::AtomicU32>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cuts = Arc::new(AtomicU32::new(0));
    let cut_done = Arc::new(AtomicBool::new(false));
    let c = cuts.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server =
                std::os::unix::net::UnixStream::connect(socket.join(format!(".s.PGSQL.{pg_port}")))
                    .unwrap();
            let (cuts, cut_done) = (c.clone(), cut_done.clone());
            let mut c_in = client.try_clone().unwrap();
            let mut s_out = server.try_clone().unwrap();
            let (mut s_in, mut c_out) = (server, client);
            let cut = Arc::new(AtomicBool::new(false));
            let cut2 = cut.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let mut seen = false;
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let data = &buf[..n];
                    seen |= data.windows(trigger.len()).any(|w| w == trigger);
                    let commit = data.windows(7).any(|w| w == b"COMMIT\0");
                    if seen && commit && !cut_done.swap(true, Ordering::SeqCst) {
                        cut2.store(true, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(300));
                        cuts.fetch_add(1, Ordering::SeqCst);
                        let _ = c_in.shutdown(std::net::Shutdown::Both);
                        let _ = s_out.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                }
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 || cut.load(Ordering::SeqCst) {
                        break;
                    }
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (port, cuts)
}
