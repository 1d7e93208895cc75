//! The dashboard (`--dashboard`), in a real browser: headless Chromium from the distribution's
//! package, driven over the W3C WebDriver protocol by chromedriver (a small client below, on
//! std::net and serde_json). While exporters send known datagrams, the page must show the
//! totals sent, the top talker with its sampling-upscaled bytes, the exporter with the loss
//! its sequence numbers say, and the malformed datagrams by reason.
//!
//! Without chromium and chromedriver installed the browser test is skipped with a loud
//! message, unless NFPG_REQUIRE_BROWSER is set (CI sets it), when it fails. The HTTP test
//! (shared listener, routes, Host check) needs no browser.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    exporter_socket, free_tcp_port, now_secs, send_paced, v5_datagram, wait_until, Nfpg, Rec,
    TestDb,
};
use serde_json::{json, Value};

/// One HTTP/1.1 exchange (`Connection: close`): status, headers and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    body: Option<&Value>,
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read the head, then the body by its length: chromedriver keeps the connection open.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before an HTTP head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut payload = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("status code");
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while payload.len() < len {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed mid-body");
            payload.extend_from_slice(&buf[..n]);
        }
        payload.truncate(len);
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        while !payload.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed mid-body");
            payload.extend_from_slice(&buf[..n]);
        }
        payload = dechunk(&payload);
    } else {
        s.read_to_end(&mut payload).unwrap();
    }
    (status, head, payload)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = String::from_utf8_lossy(&data[..eol]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A chromedriver child process and one browser session, both ended when dropped.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: Option<String>,
    profile: tempfile::TempDir,
}

impl Browser {
    fn start(chromium: &str, chromedriver: &str) -> Self {
        let port = free_tcp_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::Builder::new()
            .prefix("nfpg-chromium")
            .tempdir()
            .unwrap();
        let mut b = Browser {
            driver,
            addr,
            session: None,
            profile,
        };
        assert!(
            wait_until(Duration::from_secs(30), || {
                TcpStream::connect(addr).is_ok() && b.call("GET", "/status", None)["ready"] == true
            }),
            "chromedriver did not become ready"
        );
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1700",
            &format!("--user-data-dir={}", b.profile.path().display()),
        ];
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": chromium, "args": args }
                }
            }
        });
        let v = b.call("POST", "/session", Some(&caps));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b.session = Some(id);
        b
    }

    /// A WebDriver command; returns its `value`, failing the test on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let host = self.addr.to_string();
        let (status, _, payload) = http(self.addr, method, path, &host, body);
        let v: Value = serde_json::from_slice(&payload)
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}: {payload:?}"));
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session.as_deref().unwrap())
    }

    fn goto(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(&json!({ "url": url })),
        );
    }

    fn run(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    fn screenshot(&self) -> Vec<u8> {
        let v = self.call("GET", &self.session_path("/screenshot"), None);
        base64_decode(v.as_str().expect("base64 PNG"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = http(
                self.addr,
                "DELETE",
                &format!("/session/{id}"),
                &self.addr.to_string(),
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn which(names: &[&str]) -> Option<String> {
    let paths = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&paths) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p.display().to_string());
            }
        }
    }
    None
}

/// Reads what the page shows: the numbers by their element ids, the tables' rows as text.
const READ_PAGE: &str = r##"
const text = (sel) => { const e = document.querySelector(sel); return e ? e.textContent : null; };
const value = (sel) => { const e = document.querySelector(sel); return e ? e.dataset.value ?? null : null; };
const rows = (id) => [...document.querySelectorAll(`#${id} tbody tr:not(.empty)`)].map(
    (tr) => Object.fromEntries([...tr.children].map((td) => [td.className || "cell", td.textContent])));
return {
  flows: text("#total-flows"), flows_value: value("#total-flows"),
  datagrams: text("#total-datagrams"),
  rows_written: text("#total-rows-written"),
  malformed: text("#total-malformed"),
  malformed_total: text("#malformed-total"),
  bad_version: text("#malformed-bad_version"),
  too_short: text("#malformed-too_short"),
  db: text("#db-status"),
  status: text("#status"),
  top_src: rows("top-src"), top_src_value: value("#top-src tbody tr .est-bytes"),
  top_app: rows("top-app"),
  exporters: rows("exporters"),
  errors: [...document.querySelectorAll(".error")].map((e) => e.textContent).filter((t) => t),
  polylines: document.querySelectorAll("#chart-ingest polyline").length,
  upscaled_note: document.body.textContent.includes("sampling-upscaled"),
  foreign: performance.getEntriesByType("resource").map((e) => e.name)
      .filter((n) => !n.startsWith(location.origin)),
};
"##;

/// "1,234" → 1234.
fn number(v: &Value) -> Option<f64> {
    v.as_str()?.replace(',', "").trim().parse().ok()
}

fn records(src: [u8; 4], bytes: u32, dport: u16, n: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec {
            src,
            dst: [192, 0, 2, 1 + i as u8],
            packets: 10,
            bytes,
            sport: 40000 + i as u16,
            dport,
            proto: 6,
        })
        .collect()
}

#[test]
fn dashboard_in_a_real_browser_shows_what_was_sent() {
    let chromium = which(&["chromium", "chromium-browser"]);
    let chromedriver = which(&["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        if std::env::var_os("NFPG_REQUIRE_BROWSER").is_some() {
            panic!(
                "chromium/chromedriver not installed and NFPG_REQUIRE_BROWSER is set: \
                 apt-get install chromium chromium-driver (scripts/setup.sh does)"
            );
        }
        eprintln!(
            "SKIPPED: chromium/chromedriver not installed (apt-get install chromium \
             chromium-driver); set NFPG_REQUIRE_BROWSER=1 to make this a failure"
        );
        return;
    };
    let db = TestDb::start();
    let port = free_tcp_port();
    let nfpg = Nfpg::start(&db, &["--dashboard", &port.to_string()]);
    assert!(
        nfpg.log()
            .contains(&format!("dashboard on http://127.0.0.1:{port}/")),
        "{}",
        nfpg.log()
    );
    let url = format!("http://127.0.0.1:{port}/");

    // What the exporters will send, known in advance.
    let now = now_secs();
    // A: unsampled, 60 datagrams of 10 flows, two of them never sent (20 flows lost):
    // 5 flows of 100,000 bytes from 10.1.0.1 to HTTPS, 5 of 1,000 bytes from 10.1.0.2.
    let mut a_recs = records([10, 1, 0, 1], 100_000, 443, 5);
    a_recs.extend(records([10, 1, 0, 2], 1_000, 22, 5));
    let mut from_a = Vec::new();
    for i in 0..60u32 {
        if i != 20 && i != 40 {
            from_a.push(v5_datagram(now, 100_000 + i, i * 10, 1, 0, &a_recs));
        }
    }
    // B: sampled 1 in 100, 20 datagrams of 10 flows of 5,000 bytes from 10.2.0.1 to HTTP:
    // 1,000,000 bytes as exported, 100,000,000 upscaled, so it ranks above 10.1.0.1
    // (29,000,000) only when the dashboard upscales.
    let sampling = nfpg_wire::v5::encode::sampling_field(100);
    let b_recs = records([10, 2, 0, 1], 5_000, 80, 10);
    let from_b: Vec<Vec<u8>> = (0..20u32)
        .map(|i| v5_datagram(now, 50_000 + i, i * 10, 2, sampling, &b_recs))
        .collect();
    // C: garbage: 7 datagrams of version 99, 3 too short for any header.
    let mut bad_version = v5_datagram(now, 1, 0, 3, 0, &a_recs[..1]);
    bad_version[..2].copy_from_slice(&99u16.to_be_bytes());
    let mut from_c = vec![bad_version; 7];
    from_c.extend(std::iter::repeat_n(vec![0u8, 5], 3));
    let sent_flows = (from_a.len() + from_b.len()) as u64 * 10;
    let sent_datagrams = (from_a.len() + from_b.len() + from_c.len()) as u64;
    let (a_sent, a_lost) = (from_a.len() as u64 * 10, 20u64);

    let browser = Browser::start(&chromium, &chromedriver);
    browser.goto(&url);
    let first = browser.run(READ_PAGE);
    assert_eq!(
        first["foreign"],
        json!([]),
        "the page loads nothing from elsewhere"
    );

    // The exporters send over about eight seconds while the page refreshes.
    let to = nfpg.addr;
    let sender = std::thread::spawn(move || {
        let (a, b, c) = (
            exporter_socket("127.0.0.21"),
            exporter_socket("127.0.0.22"),
            exporter_socket("127.0.0.23"),
        );
        let steps = 16;
        for step in 0..steps {
            let part = |v: &Vec<Vec<u8>>| {
                let (lo, hi) = (v.len() * step / steps, v.len() * (step + 1) / steps);
                v[lo..hi].to_vec()
            };
            send_paced(&a, to, &part(&from_a));
            send_paced(&b, to, &part(&from_b));
            send_paced(&c, to, &part(&from_c));
            std::thread::sleep(Duration::from_millis(500));
        }
    });

    let expected_top_est = 100_000_000.0;
    let expected_second_est = 29_000_000.0;
    let mut seen_flows = std::collections::BTreeSet::new();
    let started = Instant::now();
    let mut page;
    let done = loop {
        page = browser.run(READ_PAGE);
        if let Some(f) = number(&page["flows"]) {
            seen_flows.insert(f as u64);
        }
        let top = &page["top_src"];
        let a_row = page["exporters"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["key"] == "127.0.0.21"))
            .cloned()
            .unwrap_or(Value::Null);
        let ok = number(&page["flows"]) == Some(sent_flows as f64)
            && number(&page["datagrams"]) == Some(sent_datagrams as f64)
            && number(&page["rows_written"]) == Some(sent_flows as f64)
            && number(&page["malformed"]) == Some(10.0)
            && number(&page["malformed_total"]) == Some(10.0)
            && number(&page["bad_version"]) == Some(7.0)
            && number(&page["too_short"]) == Some(3.0)
            && top[0]["key"] == "10.2.0.1"
            && number(&top[0]["est-bytes"]) == Some(expected_top_est)
            && top[1]["key"] == "10.1.0.1"
            && number(&top[1]["est-bytes"]) == Some(expected_second_est)
            && page["top_app"][0]["key"] == "HTTP"
            && number(&page["top_app"][0]["est-bytes"]) == Some(expected_top_est)
            && number(&a_row["flows"]) == Some(a_sent as f64)
            && number(&a_row["flows-lost"]) == Some(a_lost as f64);
        if ok {
            break true;
        }
        if started.elapsed() > Duration::from_secs(90) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    sender.join().unwrap();
    let shot = browser.screenshot();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let _ = std::fs::create_dir_all(&target);
    let png = target.join("dashboard.png");
    if std::fs::write(&png, &shot).is_ok() {
        eprintln!("screenshot: {}", png.display());
    }
    assert!(
        done,
        "the page never showed what was sent ({sent_flows} flows, {sent_datagrams} datagrams, \
         top 10.2.0.1 = {expected_top_est}, 127.0.0.21 lost {a_lost}):\n{page:#}\n{}",
        nfpg.log()
    );
    // Shown as read: the upscaled row says so, the loss in percent, the live updates.
    assert_eq!(page["top_src"][0]["sampling"], "1 in 100");
    assert_eq!(page["top_src"][1]["sampling"], "unsampled");
    assert_eq!(page["top_src_value"], "100000000");
    assert_eq!(page["upscaled_note"], true);
    let a_row = page["exporters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "127.0.0.21")
        .unwrap();
    let pct = 100.0 * a_lost as f64 / (a_sent + a_lost) as f64;
    assert_eq!(a_row["lost-pct"], format!("{pct:.2}"), "{a_row}");
    assert_eq!(page["flows_value"], sent_flows.to_string());
    assert_eq!(page["db"], "up");
    assert_eq!(page["errors"], json!([]), "no error shown");
    assert!(
        seen_flows.iter().any(|&f| f > 0 && f < sent_flows),
        "the page showed the totals growing while flows arrived: {seen_flows:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || browser.run(READ_PAGE)
            ["polylines"]
            .as_u64()
            .unwrap_or(0)
            >= 1),
        "the ingest chart draws lines"
    );
    drop(browser);
    let summary = nfpg.stop();
    assert_eq!(summary["rows_written"], sent_flows);
}

/// The dashboard and `/metrics` on one listener; the JSON routes; a foreign Host refused.
#[test]
fn dashboard_shares_the_metrics_listener() {
    let db = TestDb::start();
    let port = free_tcp_port();
    let p = port.to_string();
    let nfpg = Nfpg::start(&db, &["--metrics", &p, "--dashboard", &p]);
    let log = nfpg.log();
    assert!(
        log.contains(&format!("metrics on http://127.0.0.1:{port}/metrics")),
        "{log}"
    );
    assert!(
        log.contains(&format!("dashboard on http://127.0.0.1:{port}/")),
        "{log}"
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let host = addr.to_string();
    let get = |path: &str| http(addr, "GET", path, &host, None);

    let (status, head, body) = get("/metrics");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("nfpg_queue_depth"));
    assert!(head.contains("text/plain"));
    let (status, head, body) = get("/");
    assert_eq!(status, 200);
    assert!(head.contains("text/html"));
    let html = String::from_utf8_lossy(&body);
    assert!(html.contains("id=\"total-flows\"") && html.contains("/dashboard.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
    let (status, head, body) = get("/dashboard.js");
    assert_eq!(status, 200);
    assert!(head.contains("javascript"));
    assert!(String::from_utf8_lossy(&body).contains("function lineChart"));

    // Flows, then the JSON routes agree with what was sent.
    let sock = exporter_socket("127.0.0.31");
    let recs = records([10, 3, 0, 1], 700, 443, 10);
    let datagrams: Vec<Vec<u8>> = (0..5u32)
        .map(|i| v5_datagram(now_secs(), 1000 + i, i * 10, 0, 0, &recs))
        .collect();
    send_paced(&sock, nfpg.addr, &datagrams);
    let json_of = |path: &str| -> (u16, Value) {
        let (status, head, body) = get(path);
        assert!(head.contains("application/json"), "{path}: {head}");
        (status, serde_json::from_slice(&body).unwrap())
    };
    assert!(wait_until(Duration::from_secs(20), || {
        json_of("/api/summary").1["totals"]["rows_written"] == 50
    }));
    assert!(wait_until(Duration::from_secs(20), || {
        let (s, v) = json_of("/api/top?by=src&last=5m");
        s == 200 && v["rows"][0]["key"] == "10.3.0.1" && v["rows"][0]["est_bytes"] == 35_000
    }));
    let (_, top) = json_of("/api/top?by=app&last=1h&n=3");
    assert_eq!(top["sampling_upscaled"], true);
    assert_eq!(top["rows"][0]["key"], "HTTPS");
    assert!(wait_until(Duration::from_secs(3), || {
        json_of("/api/history").1["samples"]
            .as_array()
            .is_some_and(|s| s.len() >= 2)
    }));
    let (_, hist) = json_of("/api/history");
    let last = hist["samples"].as_array().unwrap().last().unwrap().clone();
    let (_, newer) = json_of(&format!("/api/history?since={}", last["t_ms"]));
    assert!(newer["samples"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["t_ms"].as_u64() > last["t_ms"].as_u64()));
    let (_, malformed) = json_of("/api/malformed");
    assert_eq!(malformed["total"], 0);
    assert!(wait_until(Duration::from_secs(20), || {
        json_of("/api/exporters").1["rows"][0]["exporter"] == "127.0.0.31"
    }));
    let (status, _) = json_of("/api/top?by=nothing");
    assert_eq!(status, 400);
    let (status, _) = json_of("/api/top?last=forever");
    assert_eq!(status, 400);
    let (status, _) = json_of("/api/nothing");
    assert_eq!(status, 404);

    // DNS rebinding: a page from elsewhere reaching the loopback listener by another name.
    let (status, _, _) = http(addr, "GET", "/api/summary", "evil.example:80", None);
    assert_eq!(status, 403);
    let (status, _, _) = http(addr, "GET", "/", &format!("localhost:{port}"), None);
    assert_eq!(status, 200);
    nfpg.stop();
}
