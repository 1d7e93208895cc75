//! Prometheus metrics over HTTP (`--metrics PORT|ADDR`, off by default; a bare port listens
//! on loopback only): `GET /metrics` returns the text exposition format. It reads the same
//! counters as the statistics line (per shard and per writer), the queue depth, the latency
//! percentiles of the last collection and the per-exporter table; it never touches the hot
//! path beyond those atomic loads.
//!
//! Each connection is answered on its own thread (at most [`MAX_CLIENTS`] at once; beyond
//! that a client gets `503` at once), with read and write timeouts, so a slow or stalled
//! client cannot hold up other scrapes. The exporter table, which writers lock once per
//! COPY, is copied out under its lock (a few numbers per exporter) and rendered after it is
//! released.
//!
//! The same listener can answer other paths too: [`serve_with`] takes a [`Handler`] that is
//! asked first for every request (the dashboard uses it, on this listener or on its own).
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};

use super::exporters::{ExporterKey, ExporterStats, ExporterTable};
use super::latency::LatencySummary;
use super::stats::{Counters, DecodeTotals, ShardTotals, SpoolTotals, WriterTotals};
use crate::flow::batch::u128_to_addr;
use crate::flow::handoff::Handoff;
use crate::flow::reason::Reason;

/// What the endpoint reports.
#[derive(Clone)]
pub struct Sources {
    pub counters: Counters,
    pub handoff: Arc<Handoff>,
    pub exporters: Arc<Mutex<ExporterTable>>,
    pub latency: Arc<Mutex<LatencySummary>>,
}

/// Connections answered at once; more get `503 Service Unavailable` straight away.
pub const MAX_CLIENTS: usize = 8;
/// How long a client may take to send its request, and to take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read (a request line and a few headers).
const MAX_REQUEST_BYTES: u64 = 8192;

/// A request as a [`Handler`] sees it.
pub struct Request<'a> {
    /// The request target: path and query (`/api/top?by=src`).
    pub target: &'a str,
    /// The `Host` header, when the client sent one.
    pub host: Option<&'a str>,
}

/// An answer from a [`Handler`].
pub struct Response {
    /// Status line after the version: `200 OK`.
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

/// Answers the requests it knows (`Some`); `None` leaves the request to `/metrics` (when this
/// listener serves them) or to a `404`.
pub type Handler = Arc<dyn Fn(&Request<'_>) -> Option<Response> + Send + Sync>;

/// Binds `addr` and serves metrics from a background thread for the life of the process.
pub fn serve(addr: SocketAddr, sources: Sources) -> Result<SocketAddr> {
    serve_with(addr, Some(sources), None)
}

/// Binds `addr` and answers from a background thread for the life of the process: `handler`
/// first (when given), then `/metrics` from `metrics` (when given), else `404`.
pub fn serve_with(
    addr: SocketAddr,
    metrics: Option<Sources>,
    handler: Option<Handler>,
) -> Result<SocketAddr> {
    let what = if metrics.is_some() {
        "metrics"
    } else {
        "dashboard"
    };
    let listener =
        TcpListener::bind(addr).with_context(|| format!("binding the {what} endpoint {addr}"))?;
    let local = listener.local_addr()?;
    let busy = Arc::new(AtomicUsize::new(0));
    let routes = Arc::new((metrics, handler));
    std::thread::Builder::new()
        .name(format!("nfpg-{what}"))
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if busy.fetch_add(1, SeqCst) >= MAX_CLIENTS {
                    busy.fetch_sub(1, SeqCst);
                    let _ = refuse(stream);
                    continue;
                }
                let (routes, busy) = (routes.clone(), busy.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("nfpg-{what}-client"))
                    .spawn(move || {
                        if let Err(e) = answer(stream, routes.0.as_ref(), routes.1.as_ref()) {
                            tracing::debug!("{what} request: {e}");
                        }
                        busy.fetch_sub(1, SeqCst);
                    });
                if let Err(e) = spawned {
                    tracing::warn!("{what}: no thread for a client: {e}");
                }
            }
        })?;
    Ok(local)
}

/// Too many clients at once: a short answer, without waiting for the request. What the
/// client already sent is read first (without blocking), so closing does not reset the
/// connection before the client reads the answer.
fn refuse(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(true)?;
    let mut sink = [0u8; 1024];
    let mut drained = 0;
    while drained < MAX_REQUEST_BYTES {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => drained += n as u64,
            _ => break,
        }
    }
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(Duration::from_millis(200)))?;
    stream.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )?;
    stream.shutdown(std::net::Shutdown::Write)
}

fn answer(
    mut stream: TcpStream,
    sources: Option<&Sources>,
    handler: Option<&Handler>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_REQUEST_BYTES));
    reader.read_line(&mut line)?;
    // Read the rest of the request head, keeping the Host header.
    let mut host = None;
    let mut h = String::new();
    while reader.read_line(&mut h)? > 2 {
        if let Some((name, value)) = h.split_once(':') {
            if name.trim().eq_ignore_ascii_case("host") {
                host = Some(value.trim().to_string());
            }
        }
        h.clear();
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or(target);
    let request = Request {
        target,
        host: host.as_deref(),
    };
    let (status, content_type, body, extra) = match handler.and_then(|handler| handler(&request)) {
        Some(r) => (
            r.status,
            r.content_type,
            r.body,
            "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        ),
        None => match sources {
            Some(sources) if path == "/metrics" || (path == "/" && handler.is_none()) => {
                ("200 OK", "text/plain; version=0.0.4", render(sources), "")
            }
            Some(_) => (
                "404 Not Found",
                "text/plain; version=0.0.4",
                "not found; metrics are at /metrics\n".to_string(),
                "",
            ),
            None => (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "not found\n".to_string(),
                "",
            ),
        },
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One counter family per declared counter, one series per thread, labelled
/// `label="<index>"`; `values[thread][k]` is the k-th counter of `fields`.
fn counter_families(o: &mut String, fields: &[(&str, &str)], label: &str, values: &[Vec<u64>]) {
    for (k, (name, help)) in fields.iter().enumerate() {
        let name = format!("nfpg_{name}_total");
        family(o, &name, "counter", help.trim());
        for (i, v) in values.iter().enumerate() {
            if label.is_empty() {
                let _ = writeln!(o, "{name} {}", v[k]);
            } else {
                let _ = writeln!(o, "{name}{{{label}=\"{i}\"}} {}", v[k]);
            }
        }
    }
}

/// The text exposition of every metric.
pub fn render(src: &Sources) -> String {
    let mut o = String::with_capacity(4096);
    let shard_values: Vec<Vec<u64>> = src
        .counters
        .shards
        .iter()
        .map(|c| c.read().values())
        .collect();
    counter_families(&mut o, ShardTotals::FIELDS, "shard", &shard_values);
    family(
        &mut o,
        "nfpg_malformed_total",
        "counter",
        "Datagrams rejected, by reason.",
    );
    for (i, c) in src.counters.shards.iter().enumerate() {
        for r in Reason::ALL {
            let _ = writeln!(
                o,
                "nfpg_malformed_total{{shard=\"{i}\",reason=\"{}\"}} {}",
                r.as_str(),
                c.malformed[r as usize].load(Relaxed)
            );
        }
    }
    let writer_values: Vec<Vec<u64>> = src
        .counters
        .writers
        .iter()
        .map(|c| c.read().values())
        .collect();
    counter_families(&mut o, WriterTotals::FIELDS, "writer", &writer_values);
    let spool_values = [src.counters.spool.read().values()];
    counter_families(&mut o, SpoolTotals::FIELDS, "", &spool_values);
    let decode_values = [src.counters.decode.read().values()];
    counter_families(&mut o, DecodeTotals::FIELDS, "", &decode_values);
    let g = &src.counters.spool_gauges;
    for (name, help, v) in [
        (
            "nfpg_spool_bytes",
            "Bytes of spool segments waiting for replay.",
            g.bytes.load(Relaxed),
        ),
        (
            "nfpg_spool_segments",
            "Spool segments waiting for replay.",
            g.segments.load(Relaxed),
        ),
        (
            "nfpg_spool_foreign_segments",
            "Spool segments kept for another database (never replayed).",
            g.foreign_segments.load(Relaxed),
        ),
        (
            "nfpg_database_up",
            "1 while writers commit to PostgreSQL, 0 while they spool (several endpoints: how many are up).",
            g.database_up.load(Relaxed),
        ),
    ] {
        family(&mut o, name, "gauge", help);
        let _ = writeln!(o, "{name} {v}");
    }
    family(
        &mut o,
        "nfpg_queue_depth",
        "gauge",
        "Sealed batches waiting for a writer.",
    );
    let _ = writeln!(o, "nfpg_queue_depth {}", src.handoff.depth());
    family(
        &mut o,
        "nfpg_queue_capacity",
        "gauge",
        "Batches the queue holds before shards wait.",
    );
    let _ = writeln!(o, "nfpg_queue_capacity {}", src.handoff.depth_capacity());
    if let Some(v) = super::host::udp_rcvbuf_errors() {
        family(
            &mut o,
            "nfpg_host_udp_rcvbuf_errors_total",
            "counter",
            "UDP receive-buffer errors of the whole host (/proc/net/snmp).",
        );
        let _ = writeln!(o, "nfpg_host_udp_rcvbuf_errors_total {v}");
    }
    let lat = src
        .latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    family(
        &mut o,
        "nfpg_latency_microseconds",
        "summary",
        "Latency per stage since start (batch_fill: flows per batch).",
    );
    for (stage, p) in [
        ("receive_to_seal", &lat.receive_to_seal_us),
        ("queue_wait", &lat.queue_wait_us),
        ("copy", &lat.copy_us),
        ("end_to_end", &lat.end_to_end_us),
        ("batch_fill", &lat.batch_fill_flows),
    ] {
        for (q, v) in [
            ("0.5", p.p50),
            ("0.9", p.p90),
            ("0.99", p.p99),
            ("0.999", p.p999),
            ("1", p.max),
        ] {
            let _ = writeln!(
                o,
                "nfpg_latency_microseconds{{stage=\"{stage}\",quantile=\"{q}\"}} {v}"
            );
        }
        let _ = writeln!(
            o,
            "nfpg_latency_microseconds_count{{stage=\"{stage}\"}} {}",
            p.count
        );
    }
    // Copy out under the lock (writers take it once per COPY), render after.
    let (rows, tracked, evicted, untracked, unwritten) = {
        let table = src.exporters.lock().unwrap_or_else(|p| p.into_inner());
        let rows: Vec<(ExporterKey, [f64; 8])> = table
            .iter()
            .map(|(k, s)| (*k, exporter_values(s)))
            .collect();
        (
            rows,
            table.len(),
            table.evicted(),
            table.untracked_datagrams(),
            table.evicted_unwritten(),
        )
    };
    for (name, kind, help, v) in [
        (
            "nfpg_exporters_tracked",
            "gauge",
            "Exporters tracked now for per-exporter statistics (--max-exporters).",
            tracked as u64,
        ),
        (
            "nfpg_exporters_evicted_total",
            "counter",
            "Exporters dropped from the in-memory table: idle, or the longest silent while it was nearly full.",
            evicted,
        ),
        (
            "nfpg_exporters_untracked_datagrams_total",
            "counter",
            "Datagrams of exporters not tracked because the table was full (their flows are stored).",
            untracked,
        ),
        (
            "nfpg_exporters_evicted_unwritten_datagrams_total",
            "counter",
            "Datagrams whose per-exporter figures an eviction dropped before they were written (their flows are stored).",
            unwritten,
        ),
    ] {
        family(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {v}");
    }
    family(
        &mut o,
        "nfpg_not_allowed_source_datagrams",
        "gauge",
        "Datagrams from the busiest sources not on --allow-exporters (ten at most; an estimate that may be high by at most the error label).",
    );
    for (addr, n, err) in src.counters.not_allowed_top(10) {
        let _ = writeln!(
            o,
            "nfpg_not_allowed_source_datagrams{{source=\"{addr}\",error=\"{err}\"}} {n}"
        );
    }
    let exporter_metrics: [(&str, &str, &str); 8] = [
        (
            "nfpg_exporter_datagrams_total",
            "counter",
            "Datagrams stored, per exporter.",
        ),
        (
            "nfpg_exporter_flows_total",
            "counter",
            "Flows stored, per exporter.",
        ),
        (
            "nfpg_exporter_packets_total",
            "counter",
            "Packets in stored flows, per exporter.",
        ),
        (
            "nfpg_exporter_bytes_total",
            "counter",
            "Bytes in stored flows, per exporter.",
        ),
        (
            "nfpg_exporter_lost_flows_total",
            "counter",
            "Flows lost according to the exporter's sequence numbers.",
        ),
        (
            "nfpg_exporter_restarts_total",
            "counter",
            "Exporter restarts (or sequence resets) seen.",
        ),
        (
            "nfpg_exporter_suspect_datagrams_total",
            "counter",
            "Datagrams whose sequence number no real exporter run explains (spoofed or corrupt); not counted as loss.",
        ),
        (
            "nfpg_exporter_last_seen_seconds",
            "gauge",
            "Unix time of the exporter's latest stored datagram.",
        ),
    ];
    for (m, (name, kind, help)) in exporter_metrics.into_iter().enumerate() {
        family(&mut o, name, kind, help);
        for (k, v) in &rows {
            let _ = writeln!(
                o,
                "{name}{{exporter=\"{}\",engine=\"{}/{}\",domain=\"{}\"}} {}",
                u128_to_addr(k.exporter),
                k.engine_type,
                k.engine_id,
                k.source_id,
                v[m]
            );
        }
    }
    o
}

/// The per-exporter values, in the order of the exporter families.
fn exporter_values(s: &ExporterStats) -> [f64; 8] {
    [
        s.datagrams as f64,
        s.flows as f64,
        s.packets as f64,
        s.bytes as f64,
        s.sequence.lost() as f64,
        s.sequence.restarts() as f64,
        s.sequence.suspect_datagrams() as f64,
        s.last_seen_us as f64 / 1e6,
    ]
}
