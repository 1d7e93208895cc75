//! The running collector: sets up the database, binds the shards' sockets, starts shard,
//! writer and housekeeping threads, reports statistics, and on SIGTERM/SIGINT stops in order
//! (shards drain their sockets → writers drain the queue → exporter statistics are written)
//! so that everything received and decoded is stored before it exits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::{Balance, DbTarget, RunArgs, SinkKind};
use crate::db::{self, Schema};
use crate::exporters::ExporterTable;
use crate::latency::{Latency, Stage};
use crate::pgserver::PgServer;
use crate::pipeline::Handoff;
use crate::recv::{self, socket};
use crate::shard::{self, ShardConfig};
use crate::stats::{Counters, Snapshot};
use crate::writer::{self, NullSink, PgSink, Sink, WriterConfig};

/// A database ready for use: its connection string, and the private server if we run one
/// (dropping it stops the server).
pub struct Database {
    pub conninfo: String,
    pub server: Option<PgServer>,
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
            let server = PgServer::start(dir)?;
            let mut admin = db::connect(&server.connection_string("postgres"))?;
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
    let mut client = db::connect(conninfo)?;
    let applied = db::migrate(&mut client, schema)?;
    if !applied.is_empty() {
        tracing::info!("applied migrations: {}", applied.join(", "));
    }
    db::ensure_partitions(&mut client, schema, 3)?;
    Ok(())
}

/// Writes exporter deltas with one statement.
pub fn flush_exporters(
    client: &mut postgres::Client,
    schema: &Schema,
    table: &Mutex<ExporterTable>,
) -> Result<usize> {
    let deltas = table
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take_deltas();
    if deltas.is_empty() {
        return Ok(0);
    }
    let col =
        |f: fn(&crate::exporters::ExporterDelta) -> i64| deltas.iter().map(f).collect::<Vec<i64>>();
    let addrs: Vec<std::net::IpAddr> = deltas.iter().map(|d| d.exporter).collect();
    let et: Vec<i16> = deltas.iter().map(|d| d.engine_type).collect();
    let ei: Vec<i16> = deltas.iter().map(|d| d.engine_id).collect();
    let ver: Vec<i16> = deltas.iter().map(|d| d.version).collect();
    let si: Vec<i32> = deltas.iter().map(|d| d.sampling_interval).collect();
    let sm: Vec<i16> = deltas.iter().map(|d| d.sampling_mode).collect();
    let rate: Vec<f64> = deltas.iter().map(|d| d.datagrams_per_s).collect();
    let sql = schema.render(
        "INSERT INTO {schema}.exporters AS e (exporter, engine_type, engine_id, first_seen, last_seen,
             datagrams, flows, packets, bytes, flows_lost, restarts, last_sequence,
             netflow_version, sampling_interval, sampling_mode, datagrams_per_s)
         SELECT a, t, i, to_timestamp(fs::float8 / 1e6), to_timestamp(ls::float8 / 1e6),
                dg, fl, pk, by, lo, rs, sq, v, si, sm, r
         FROM unnest($1::inet[], $2::int2[], $3::int2[], $4::int8[], $5::int8[], $6::int8[],
                     $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[],
                     $13::int2[], $14::int4[], $15::int2[], $16::float8[])
              AS u(a, t, i, fs, ls, dg, fl, pk, by, lo, rs, sq, v, si, sm, r)
         ON CONFLICT (exporter, engine_type, engine_id) DO UPDATE SET
             first_seen = least(e.first_seen, excluded.first_seen),
             last_seen = greatest(e.last_seen, excluded.last_seen),
             datagrams = e.datagrams + excluded.datagrams,
             flows = e.flows + excluded.flows,
             packets = e.packets + excluded.packets,
             bytes = e.bytes + excluded.bytes,
             flows_lost = e.flows_lost + excluded.flows_lost,
             restarts = e.restarts + excluded.restarts,
             last_sequence = excluded.last_sequence,
             netflow_version = excluded.netflow_version,
             sampling_interval = excluded.sampling_interval,
             sampling_mode = excluded.sampling_mode,
             datagrams_per_s = excluded.datagrams_per_s",
    );
    let result = client.execute(
        &sql,
        &[
            &addrs,
            &et,
            &ei,
            &col(|d| d.first_seen_us),
            &col(|d| d.last_seen_us),
            &col(|d| d.datagrams),
            &col(|d| d.flows),
            &col(|d| d.packets),
            &col(|d| d.bytes),
            &col(|d| d.lost),
            &col(|d| d.restarts),
            &col(|d| d.last_sequence),
            &ver,
            &si,
            &sm,
            &rate,
        ],
    );
    match result {
        Ok(_) => Ok(deltas.len()),
        Err(e) => {
            table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .unflush(&deltas);
            Err(e.into())
        }
    }
}

/// Keeps partitions ahead of the clock and the exporters table current.
fn housekeeper(
    conninfo: String,
    schema: Schema,
    table: Arc<Mutex<ExporterTable>>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) {
    let mut client: Option<postgres::Client> = None;
    // First partition upkeep a minute after start (not on the start-up path), then hourly.
    let mut next_partitions = Instant::now() + Duration::from_secs(60);
    let mut last_flush = Instant::now();
    while !stop.load(Relaxed) {
        thread::sleep(Duration::from_millis(100));
        if last_flush.elapsed() < interval {
            continue;
        }
        last_flush = Instant::now();
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = db::connect(&conninfo)
                .map_err(|e| tracing::warn!("housekeeper: {e:#}"))
                .ok();
        }
        let Some(c) = client.as_mut() else { continue };
        if let Err(e) = flush_exporters(c, &schema, &table) {
            tracing::warn!("updating the exporters table: {e:#}");
        }
        if Instant::now() >= next_partitions {
            next_partitions = Instant::now() + Duration::from_secs(3600);
            if let Err(e) = db::ensure_partitions(c, &schema, 3) {
                tracing::warn!("creating flow partitions: {e:#}");
            }
            if let Err(e) = c.execute(
                &schema.render("DELETE FROM {schema}.nfpg_copies WHERE committed_at < now() - interval '1 day'"),
                &[],
            ) {
                tracing::warn!("pruning COPY markers: {e:#}");
            }
            match db::index_closed_partitions(c, &schema) {
                Ok(0) => {}
                Ok(n) => tracing::info!("indexed {n} closed day partition(s) for address lookups"),
                Err(e) => tracing::warn!("indexing closed flow partitions: {e:#}"),
            }
        }
    }
}

fn log_stats(s: &Snapshot, prev: &Snapshot, elapsed: Duration, depth_cap: usize) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    tracing::info!(
        "stats: datagrams={} flows={} malformed={} kernel_drops={} host_rcvbuf_errors={} queue={}/{} \
         queue_full={} rows_written={} write_errors={} rows_dropped={} rate={:.0} flows/s written={:.0} rows/s",
        s.datagrams,
        s.flows,
        s.malformed.total,
        s.kernel_drops,
        s.host_udp_rcvbuf_errors.map_or("n/a".to_string(), |v| v.to_string()),
        s.queue_depth,
        depth_cap,
        s.queue_full,
        s.rows_written,
        s.write_errors,
        s.rows_dropped,
        (s.flows - prev.flows) as f64 / secs,
        (s.rows_written - prev.rows_written) as f64 / secs,
    );
}

/// Flags the signal handlers set.
#[derive(Clone, Default)]
pub struct Signals {
    /// SIGTERM, SIGINT: stop in order.
    pub stop: Arc<AtomicBool>,
    /// SIGUSR1: log the latency percentiles now.
    pub report: Arc<AtomicBool>,
}

/// The `--hist-log` writer: an HdrHistogram interval log, one histogram per stage per
/// interval, tagged with the stage name.
struct HistLog {
    file: std::io::BufWriter<std::fs::File>,
    serializer: hdrhistogram::serialization::V2DeflateSerializer,
    started: std::time::SystemTime,
    header_written: bool,
}

impl HistLog {
    fn create(path: &std::path::Path) -> Result<Self> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            file: std::io::BufWriter::new(file),
            serializer: hdrhistogram::serialization::V2DeflateSerializer::new(),
            started: std::time::SystemTime::now(),
            header_written: false,
        })
    }

    /// Appends one interval (`start` and `length` relative to the log's start time).
    fn write(
        &mut self,
        hists: &[hdrhistogram::Histogram<u64>],
        start: Duration,
        length: Duration,
    ) -> Result<()> {
        use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
        use std::io::Write;
        let mut builder = IntervalLogWriterBuilder::new();
        if !self.header_written {
            builder
                .add_comment(
                    "nfpg latency histograms: values in microseconds (batch_fill: flows per batch)",
                )
                .with_start_time(self.started)
                .with_base_time(self.started)
                .with_max_value_divisor(1000.0);
            self.header_written = true;
        }
        let mut w = builder.begin_log_with(&mut self.file, &mut self.serializer)?;
        for stage in Stage::ALL {
            let h = &hists[stage as usize];
            w.write_histogram(h, start, length, Tag::new(stage.tag()))
                .map_err(|e| anyhow::anyhow!("writing the histogram log: {e:?}"))?;
        }
        self.file.flush()?;
        Ok(())
    }
}

/// Runs the collector until `signals.stop` is set (the caller wires SIGTERM/SIGINT to it).
/// Returns the final statistics.
pub fn run(args: &RunArgs, signals: Signals) -> Result<Snapshot> {
    let stop = signals.stop.clone();
    let schema = Schema::new(&args.db.schema)?;
    let database = match args.sink {
        SinkKind::Pg => {
            let d = open_database(&args.db.target())?;
            prepare_schema(&d.conninfo, &schema)?;
            Some(d)
        }
        SinkKind::Null => None,
    };

    let shards = args.shard_count();
    let writers = args.writers.max(1);
    let listen = SocketAddr::new(args.listen, args.port);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut sockets = Vec::with_capacity(shards);
    for i in 0..shards {
        let bound = socket::bind_reuseport(listen, args.rcvbuf)
            .with_context(|| format!("binding UDP {listen}"))?;
        if i == 0 && bound.rcvbuf < args.rcvbuf {
            tracing::warn!(
                "socket receive buffer is {} bytes, not the {} asked for: the kernel caps it at \
                 net.core.rmem_max ({}). Raise it: sysctl -w net.core.rmem_max={} (see tuning/sysctl.conf)",
                bound.rcvbuf,
                args.rcvbuf,
                socket::rmem_max().map_or("?".into(), |v| v.to_string()),
                args.rcvbuf
            );
        }
        sockets.push(bound.socket);
    }
    if args.balance == Balance::Spread && shards > 1 {
        // After every socket of the group is bound: the program indexes the group's sockets.
        socket::attach_spread_cbpf(&sockets[0], shards as u32)
            .context("attaching the spread BPF program")?;
        tracing::info!("balance: spread (random shard per datagram)");
    }
    let mut receivers = Vec::with_capacity(shards);
    for (i, sock) in sockets.into_iter().enumerate() {
        let (rx, why) = recv::open(args.recv, sock, args.recv_batch)?;
        if i == 0 {
            tracing::info!("receive path: {why}");
        }
        receivers.push(rx);
    }
    tracing::info!(
        "listening on udp {listen} with {shards} shard(s), {writers} writer(s), batches of {} flows, flush every {:?}",
        args.batch_size,
        args.flush_interval()
    );

    let handoff = Arc::new(Handoff::new(
        args.queue_depth,
        args.queue_depth + shards * 2 + writers * writer::MAX_BATCHES_PER_COPY,
        args.batch_size,
    ));
    let counters = Counters::new(shards, writers);
    let mut latency = Latency::new();
    let latency_now = Arc::new(Mutex::new(latency.summary()));
    let mut hist_log = args.hist_log.as_deref().map(HistLog::create).transpose()?;
    let exporters = Arc::new(Mutex::new(ExporterTable::default()));
    let shards_stop = Arc::new(AtomicBool::new(false));
    let shards_done = Arc::new(AtomicBool::new(false));
    let house_stop = Arc::new(AtomicBool::new(false));

    let mut writer_threads = Vec::new();
    for id in 0..writers {
        let sink: Box<dyn Sink> = match &database {
            Some(d) => {
                writer::connect_check(&d.conninfo)?;
                Box::new(PgSink::new(&d.conninfo, &schema))
            }
            None => Box::new(NullSink),
        };
        let (h, c, e, done) = (
            handoff.clone(),
            counters.writers[id].clone(),
            exporters.clone(),
            shards_done.clone(),
        );
        let cfg = WriterConfig {
            id,
            recorders: latency.recorders(),
            max_rows: args.copy_rows.max(1),
        };
        writer_threads.push(
            thread::Builder::new()
                .name(format!("nfpg-writer-{id}"))
                .spawn(move || writer::run(cfg, sink, h, c, e, done))?,
        );
    }
    let house = database.as_ref().map(|d| {
        let (conninfo, schema, table, stop) = (
            d.conninfo.clone(),
            schema.clone(),
            exporters.clone(),
            house_stop.clone(),
        );
        let interval = args.exporter_interval();
        thread::Builder::new()
            .name("nfpg-housekeeper".into())
            .spawn(move || housekeeper(conninfo, schema, table, interval, stop))
    });
    let house = match house {
        Some(h) => Some(h?),
        None => None,
    };
    let mut shard_threads = Vec::new();
    for (id, rx) in receivers.into_iter().enumerate() {
        let cfg = ShardConfig {
            id,
            recorders: latency.recorders(),
            flush_interval: args.flush_interval(),
            core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
        };
        let (h, c, s) = (
            handoff.clone(),
            counters.shards[id].clone(),
            shards_stop.clone(),
        );
        shard_threads.push(
            thread::Builder::new()
                .name(format!("nfpg-shard-{id}"))
                .spawn(move || shard::run(cfg, rx, h, c, s))?,
        );
    }

    if let Some(addr) = args.metrics {
        let local = crate::metrics::serve(
            addr,
            crate::metrics::Sources {
                counters: counters.clone(),
                handoff: handoff.clone(),
                exporters: exporters.clone(),
                latency: latency_now.clone(),
            },
        )?;
        tracing::info!("metrics on http://{local}/metrics");
    }
    let started = Instant::now();
    let mut prev = counters.snapshot(0);
    let mut last_stats = Instant::now();
    let mut interval_start = Instant::now();
    // Collects one histogram interval: into the totals, and into the log when there is one.
    let mut collect =
        |latency: &mut Latency, interval_start: &mut Instant, wait: Duration| -> Result<()> {
            let hists = latency.interval(wait);
            *latency_now.lock().unwrap_or_else(|p| p.into_inner()) = latency.summary();
            let now = Instant::now();
            if let Some(log) = hist_log.as_mut() {
                log.write(
                    &hists,
                    interval_start.duration_since(started),
                    now.duration_since(*interval_start),
                )?;
            }
            *interval_start = now;
            Ok(())
        };
    while !stop.load(Relaxed) {
        thread::sleep(Duration::from_millis(50));
        if interval_start.elapsed() >= args.hist_interval() {
            collect(&mut latency, &mut interval_start, Duration::from_millis(20))?;
        }
        if signals.report.swap(false, Relaxed) {
            collect(&mut latency, &mut interval_start, Duration::from_millis(20))?;
            tracing::info!("latency: {}", latency.summary().line());
        }
        if last_stats.elapsed() >= args.stats_interval() {
            let s = counters.snapshot(handoff.depth());
            log_stats(&s, &prev, last_stats.elapsed(), handoff.depth_capacity());
            tracing::info!("latency: {}", latency.summary().line());
            prev = s;
            last_stats = Instant::now();
        }
    }

    tracing::info!("stopping: draining sockets and queues");
    shards_stop.store(true, Relaxed);
    for t in shard_threads {
        let _ = t.join();
    }
    shards_done.store(true, Relaxed);
    for t in writer_threads {
        let _ = t.join();
    }
    house_stop.store(true, Relaxed);
    if let Some(h) = house {
        let _ = h.join();
    }
    if let Some(d) = &database {
        let mut last_err = None;
        for _ in 0..3 {
            match db::connect(&d.conninfo)
                .and_then(|mut c| flush_exporters(&mut c, &schema, &exporters))
            {
                Ok(_) => {
                    last_err = None;
                    break;
                }
                Err(e) => {
                    last_err = Some(e);
                    thread::sleep(Duration::from_millis(500));
                }
            }
        }
        if let Some(e) = last_err {
            tracing::error!("final update of the exporters table failed: {e:#}");
        }
    }
    // Every recorder has been dropped with its thread; this interval holds the rest.
    collect(&mut latency, &mut interval_start, Duration::ZERO)?;
    let mut s = counters.snapshot(handoff.depth());
    s.latency = latency.summary();
    log_stats(&s, &prev, last_stats.elapsed(), handoff.depth_capacity());
    tracing::info!("latency: {}", s.latency.line());
    tracing::info!(
        "stopped after {:.1}s: {} datagrams, {} flows decoded, {} rows written, {} malformed",
        started.elapsed().as_secs_f64(),
        s.datagrams,
        s.flows,
        s.rows_written,
        s.malformed.total
    );
    drop(database);
    Ok(s)
}
