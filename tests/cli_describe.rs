//! `nfpg describe` and `nfpg server`, the two commands tools (the benchmark harness) use to
//! reuse nfpg's own declarations and private PostgreSQL instead of copies.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[test]
fn describe_lists_columns_counters_and_summary_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_nfpg"))
        .arg("describe")
        .output()
        .expect("run nfpg describe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");

    let names = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .expect(key)
            .iter()
            .map(|c| c.as_str().expect("column name").to_string())
            .collect()
    };
    let cols = names("flow_columns");
    assert_eq!(cols, nfpg::store::copy::FLOW_COLUMNS);
    let v5 = names("v5_copy_columns");
    assert_eq!(v5, nfpg::store::copy::V5_SHAPE.columns());
    assert_eq!(
        v5.len(),
        27,
        "a v5 record's 25 fields, sampling_source, time_suspect"
    );

    for (kind, fields) in [
        ("shard", nfpg::obs::stats::ShardTotals::FIELDS),
        ("writer", nfpg::obs::stats::WriterTotals::FIELDS),
    ] {
        let got = v["counters"][kind].as_array().expect("counters");
        assert_eq!(got.len(), fields.len(), "{kind} counters");
        for (pair, (name, _)) in got.iter().zip(fields) {
            assert_eq!(pair[0].as_str(), Some(*name));
            let help = pair[1].as_str().expect("help text");
            assert!(!help.trim().is_empty(), "{kind} counter {name} has no help");
        }
    }

    let reasons: Vec<&str> = v["malformed_reasons"]
        .as_array()
        .expect("malformed_reasons")
        .iter()
        .map(|r| r.as_str().expect("reason"))
        .collect();
    let want: Vec<&str> = nfpg::flow::reason::Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(reasons, want);

    let keys: Vec<&str> = v["summary_keys"]
        .as_array()
        .expect("summary_keys")
        .iter()
        .map(|k| k.as_str().expect("key"))
        .collect();
    for k in [
        "rows_written",
        "datagrams",
        "kernel_drops",
        "malformed",
        "shards",
        "latency",
    ] {
        assert!(keys.contains(&k), "summary_keys lacks {k}: {keys:?}");
    }
}

/// The postmaster with this pid has exited (gone, or a zombie about to be reaped by init).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn server_prints_its_description_serves_and_stops_on_sigterm() {
    let dir = tempfile::Builder::new()
        .prefix("nfpg-srv")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nfpg"))
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args([
            "--create-db",
            "bench_a",
            "--create-db",
            "bench_a",
            "--log-level",
            "warn",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn nfpg server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(line) if !line.trim().is_empty() => line,
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nfpg server printed no description line: {other:?}");
        }
    };
    let v: Value = serde_json::from_str(&line).expect("a JSON line");
    let template = v["url_template"].as_str().expect("url_template");
    assert!(template.contains("{db}"), "{template}");
    let socket_dir = Path::new(v["socket_dir"].as_str().expect("socket_dir"));
    assert!(
        template.contains(&*socket_dir.to_string_lossy()),
        "{template}"
    );
    let data_dir = Path::new(v["data_dir"].as_str().expect("data_dir"));
    assert!(data_dir.join("PG_VERSION").is_file());
    // Unix socket only, and the ingest settings nfpg writes.
    assert_eq!(v["settings"]["listen_addresses"], "", "{v}");
    assert_eq!(v["settings"]["synchronous_commit"], "off", "{v}");

    for db in ["postgres", "bench_a"] {
        let mut client = nfpg::store::db::connect(&template.replace("{db}", db)).expect("connect");
        let one: i32 = client.query_one("SELECT 1", &[]).expect("query").get(0);
        assert_eq!(one, 1);
    }

    let pid_file = data_dir.join("postmaster.pid");
    let postmaster: u32 = std::fs::read_to_string(&pid_file)
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster pid");
    common::send_signal(child.id() as i32, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nfpg server did not stop within 90 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "nfpg server exited with {status}");
    assert!(!pid_file.exists(), "postmaster.pid left behind");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process_gone(postmaster) {
        assert!(
            Instant::now() < deadline,
            "postmaster {postmaster} still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
