//! loadgen's own totals agree with nfdump's reading of its output: nfcapd (nfdump 1.7)
//! receives a run, and `nfdump` reads back flows, packets and bytes in total and per exporter.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_udp_port, loadgen, num};

fn require(tool: &str) {
    match Command::new(tool).arg("-V").output() {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{tool}` is not installed; this test needs it: apt-get install nfdump")
        }
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

/// True once some socket listens on 127.0.0.1:`port` (UDP), per /proc/net/udp.
fn udp_listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(&want))
        })
        .unwrap_or(false)
}

/// Sends SIGTERM (nfcapd flushes its current file on it) and waits, bounded, for the exit.
#[allow(unsafe_code)]
fn terminate(child: &mut Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped), so it cannot name
    // an unrelated process.
    let r = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(r, 0, "SIGTERM to nfcapd");
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if child.try_wait().expect("waiting for nfcapd").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("nfcapd did not exit within 10 s of SIGTERM");
}

fn nfdump(args: &[&str]) -> String {
    let out = Command::new("nfdump")
        .args(args)
        .output()
        .expect("running nfdump");
    assert!(
        out.status.success(),
        "nfdump {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("nfdump prints UTF-8")
}

#[test]
fn totals_agree_with_nfcapd_and_nfdump() {
    require("nfcapd");
    require("nfdump");
    let dir = tempfile::tempdir().expect("temp dir");
    let flowdir = dir.path().to_str().expect("utf-8 temp path");
    let port = free_udp_port();
    let mut nfcapd = Command::new("nfcapd")
        .args(["-w", flowdir, "-p", &port.to_string(), "-b", "127.0.0.1"])
        .args(["-B", "8388608"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nfcapd");
    let until = Instant::now() + Duration::from_secs(10);
    while !udp_listening(port) {
        if Instant::now() > until || nfcapd.try_wait().ok().flatten().is_some() {
            let _ = nfcapd.kill();
            panic!("nfcapd did not start listening on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let target = format!("127.0.0.1:{port}");
    let report = loadgen(&[
        "--target",
        &target,
        "--exporters",
        "4",
        "--count",
        "2000",
        "--records",
        "30",
        "--seed",
        "1",
        "--rate",
        "20000",
    ]);
    // Let nfcapd drain its socket before it is told to stop.
    std::thread::sleep(Duration::from_millis(500));
    terminate(&mut nfcapd);

    assert_eq!(num(&report, &["sent", "datagrams"]), 2000);
    assert_eq!(num(&report, &["sent", "flows"]), 60_000);

    // Totals: `nfdump -I` prints "Flows: N", "Packets: N", "Bytes: N" lines.
    let info = nfdump(&["-R", flowdir, "-I"]);
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in nfdump -I output:\n{info}"))
    };
    assert_eq!(field("Flows"), num(&report, &["sent", "flows"]), "flows");
    assert_eq!(
        field("Packets"),
        num(&report, &["sent", "packets"]),
        "packets"
    );
    assert_eq!(field("Bytes"), num(&report, &["sent", "bytes"]), "bytes");
    assert_eq!(field("Sequence failures"), 0, "nfcapd saw sequence gaps");

    // Per exporter: statistics by router address as CSV (val = router, fl, ipkt, ibyt).
    let csv = nfdump(&[
        "-R",
        flowdir,
        "-q",
        "-N",
        "-n",
        "0",
        "-s",
        "router/flows",
        "-o",
        "csv",
    ]);
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().expect("csv header").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let (val, fl, pkt, byt) = (col("val"), col("fl"), col("ipkt"), col("ibyt"));
    let mut seen = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        let n = |i: usize| f[i].trim().parse::<u64>().expect("number in nfdump csv");
        seen.insert(f[val].trim().to_string(), (n(fl), n(pkt), n(byt)));
    }
    let exporters = report["exporters"].as_array().expect("exporters list");
    assert_eq!(
        seen.len(),
        exporters.len(),
        "exporters seen by nfdump: {seen:?}"
    );
    for e in exporters {
        let addr = e["address"].as_str().expect("address");
        let want = (num(e, &["flows"]), num(e, &["packets"]), num(e, &["bytes"]));
        assert_eq!(seen.get(addr), Some(&want), "exporter {addr}");
    }
}
