//! Prometheus metrics over HTTP (`--metrics ADDR`, off by default): `GET /metrics` returns
//! the text exposition format. It reads the same counters as the statistics line (per shard
//! and per writer), the queue depth, the latency percentiles of the last collection and the
//! per-exporter table; it never touches the hot path beyond those atomic loads.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};

use super::exporters::{ExporterStats, ExporterTable};
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

/// Binds `addr` and serves metrics from a background thread for the life of the process.
pub fn serve(addr: SocketAddr, sources: Sources) -> Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("binding the metrics endpoint {addr}"))?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("nfpg-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &sources) {
                    tracing::debug!("metrics request: {e}");
                }
            }
        })?;
    Ok(local)
}

fn answer(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut line)?;
    // Read the rest of the request head.
    let mut h = String::new();
    while reader.read_line(&mut h)? > 2 {
        h.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = if path == "/metrics" || path == "/" {
        ("200 OK", render(sources))
    } else {
        (
            "404 Not Found",
            "not found; metrics are at /metrics\n".to_string(),
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// A metric with its Prometheus type: name, type, help text, and how to read it.
type KindMetric<T> = (&'static str, &'static str, &'static str, fn(&T) -> f64);

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
            "1 while writers commit to PostgreSQL, 0 while they spool.",
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
    let table = src.exporters.lock().unwrap_or_else(|p| p.into_inner());
    let exporter_metrics: [KindMetric<ExporterStats>; 6] = [
        (
            "nfpg_exporter_datagrams_total",
            "counter",
            "Datagrams stored, per exporter.",
            |s| s.datagrams as f64,
        ),
        (
            "nfpg_exporter_flows_total",
            "counter",
            "Flows stored, per exporter.",
            |s| s.flows as f64,
        ),
        (
            "nfpg_exporter_packets_total",
            "counter",
            "Packets in stored flows, per exporter.",
            |s| s.packets as f64,
        ),
        (
            "nfpg_exporter_bytes_total",
            "counter",
            "Bytes in stored flows, per exporter.",
            |s| s.bytes as f64,
        ),
        (
            "nfpg_exporter_lost_flows_total",
            "counter",
            "Flows lost according to the exporter's sequence numbers.",
            |s| s.sequence.lost() as f64,
        ),
        (
            "nfpg_exporter_last_seen_seconds",
            "gauge",
            "Unix time of the exporter's latest stored datagram.",
            |s| s.last_seen_us as f64 / 1e6,
        ),
    ];
    for (name, kind, help, get) in exporter_metrics {
        family(&mut o, name, kind, help);
        for (k, s) in table.iter() {
            let _ = writeln!(
                o,
                "{name}{{exporter=\"{}\",engine=\"{}/{}\",domain=\"{}\"}} {}",
                u128_to_addr(k.exporter),
                k.engine_type,
                k.engine_id,
                k.source_id,
                get(s)
            );
        }
    }
    o
}
