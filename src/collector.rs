//! Wiring: [`start`] builds the pipeline (database, sockets, shard, writer and housekeeping
//! threads, metrics) and returns a [`Running`] collector; [`Running::tick`] reports
//! statistics and latency while it runs; [`Running::stop`] stops in order (shards drain their
//! sockets → writers drain the queue → exporter statistics are written) so that everything
//! received and decoded is stored before it returns. What each stage does lives in its own
//! folder; this file only connects them.
//!
//! With several database endpoints (`--database-url` more than once) each endpoint gets its
//! own spool (a `db-…` directory inside the spool directory), health, replayer and
//! housekeeper; the writers spread their COPYs over the endpoints; the first endpoint also
//! receives the exporter statistics and templates.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::addr::AllowList;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::{Balance, RunArgs, SinkKind};
use crate::decode::hold::Hold;
use crate::decode::netflow::{Shared as NetflowShared, TemplateKey};
use crate::flow::handoff::Handoff;
use crate::flow::handoff::Overflow;
use crate::ingest::recv::{self, socket};
use crate::ingest::shard::{self, ShardConfig};
use crate::obs::exporters::ExporterTable;
use crate::obs::histlog::HistLog;
use crate::obs::latency::{Latency, LatencySummary};
use crate::obs::stats::{Counters, Snapshot};
use crate::store::db::{self, open_database, prepare_schema, Database, Schema};
use crate::store::health::Health;
use crate::store::replay::Replayer;
use crate::store::spill::{self, SpoolOverflow};
use crate::store::spool::{Identity, Spool};
use crate::store::writer::{self, NullSink, PgSink, Route, Sink, WriterConfig, WriterShared};
use crate::store::{exporters as exporters_sql, housekeeper, templates as templates_sql};

/// Flags the signal handlers set.
#[derive(Clone, Default)]
pub struct Signals {
    /// SIGTERM, SIGINT: stop in order.
    pub stop: Arc<AtomicBool>,
    /// SIGUSR1: log the latency percentiles now.
    pub report: Arc<AtomicBool>,
}

/// A started collector. Dropping it without [`Running::stop`] leaves its threads running
/// until the process exits.
pub struct Running {
    /// The database endpoints (none with the null sink); the first holds the exporter
    /// statistics and templates.
    databases: Vec<Database>,
    /// One per endpoint, in the same order (one without a spool with the null sink).
    routes: Vec<Route>,
    schema: Schema,
    instance: String,
    handoff: Arc<Handoff>,
    counters: Counters,
    exporters: Arc<Mutex<ExporterTable>>,
    latency: Latency,
    latency_now: Arc<Mutex<LatencySummary>>,
    hist_log: Option<HistLog>,
    shard_threads: Vec<JoinHandle<()>>,
    writer_threads: Vec<JoinHandle<()>>,
    /// The spill thread (with a spool): the writers' surplus to disk.
    spiller: Option<JoinHandle<()>>,
    house: Vec<JoinHandle<()>>,
    replayers: Vec<JoinHandle<()>>,
    netflow: Arc<NetflowShared>,
    replay_stop: Arc<AtomicBool>,
    spool_only: Arc<AtomicBool>,
    stop_timeout: Duration,
    shards_stop: Arc<AtomicBool>,
    shards_done: Arc<AtomicBool>,
    house_stop: Arc<AtomicBool>,
    stats_interval: Duration,
    hist_interval: Duration,
    started: Instant,
    interval_start: Instant,
    last_stats: Instant,
    prev: Snapshot,
}

/// Runs the collector until `signals.stop` is set (the caller wires SIGTERM/SIGINT to it).
/// Returns the final statistics.
pub fn run(args: &RunArgs, signals: Signals) -> Result<Snapshot> {
    let mut running = start(args)?;
    while !signals.stop.load(Relaxed) {
        thread::sleep(Duration::from_millis(50));
        running.tick(signals.report.swap(false, Relaxed))?;
    }
    running.stop()
}

/// Starts every thread of the pipeline and returns once the sockets are bound and the
/// writers connected.
pub fn start(args: &RunArgs) -> Result<Running> {
    let schema = Schema::new(&args.db.schema)?;
    let instance = args.instance_name();
    let counters = Counters::new(args.shard_count(), args.writers.max(1));
    let mut databases = Vec::new();
    let mut routes = Vec::new();
    match args.sink {
        SinkKind::Pg => {
            let targets = args.db.targets();
            let several = targets.len() > 1;
            for target in &targets {
                let d = open_database(target)?;
                let identity = Identity::of(&d.conninfo, schema.name())?;
                if routes
                    .iter()
                    .any(|r: &Route| r.spool.as_ref().is_some_and(|s| *s.identity() == identity))
                {
                    anyhow::bail!("the database {identity} is given twice");
                }
                let dir = if several {
                    args.spool_dir().join(identity.dir_name())
                } else {
                    args.spool_dir()
                };
                let label = if several {
                    format!("database {identity}")
                } else {
                    String::new()
                };
                let spool = Spool::open(
                    &dir,
                    args.spool_max,
                    identity,
                    counters.spool_gauges.clone(),
                )?
                .with_instance(&instance);
                tracing::info!(
                    "spool: {} (up to {} bytes over all endpoints) for {}",
                    spool.dir().display(),
                    spool.max_bytes(),
                    spool.identity()
                );
                let health = Arc::new(Health::labelled(counters.spool_gauges.clone(), &label));
                // A database that is down or misconfigured at start is not fatal: flows go to
                // the spool (or another endpoint) and the replayer keeps trying (and says why
                // in the log).
                match prepare_schema(&d.conninfo, &schema) {
                    Ok(()) => health.mark_up(),
                    Err(e) => tracing::error!("database not usable at start: {e:#}"),
                }
                databases.push(d);
                routes.push(Route {
                    health,
                    spool: Some(Arc::new(spool)),
                });
            }
        }
        SinkKind::Null => {
            let health = Arc::new(Health::new(counters.spool_gauges.clone()));
            health.mark_up();
            routes.push(Route {
                health,
                spool: None,
            });
        }
    }
    tracing::info!(
        "instance {instance}, {} database endpoint(s)",
        databases.len()
    );

    let shards = args.shard_count();
    let writers = args.writers.max(1);
    // The cores shards are pinned to, in turn ([`shard_core`]); `--balance cpu` routes by them.
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let receivers = bind_receivers(args, shards, &cores)?;

    let handoff = Arc::new(Handoff::new(
        args.queue_depth,
        args.queue_depth
            + shards * 2
            + writers * writer::MAX_BATCHES_PER_COPY
            + spill::MAX_BATCHES_PER_SEGMENT,
        args.batch_size,
    ));
    let latency = Latency::new();
    let latency_now = Arc::new(Mutex::new(latency.summary()));
    let hist_log = args.hist_log.as_deref().map(HistLog::create).transpose()?;
    let mut netflow = NetflowShared::new(
        Hold::new(
            usize::try_from(args.template_hold_bytes).unwrap_or(usize::MAX),
            args.template_hold_age(),
        ),
        args.sampling_override.clone(),
        counters.decode.clone(),
    );
    netflow.max_templates = args.max_templates;
    let netflow = Arc::new(netflow);
    if let (Some(d), true) = (databases.first(), routes[0].health.is_up()) {
        match db::connect(&d.conninfo)
            .and_then(|mut c| templates_sql::load(&mut c, &schema, &instance))
        {
            Ok(stored) => {
                let n = netflow.load(stored.into_iter().map(|t| {
                    (
                        TemplateKey {
                            exporter: t.exporter,
                            domain: t.domain,
                            id: t.template_id,
                        },
                        t.version,
                        t.definition,
                    )
                }));
                if n > 0 {
                    tracing::info!("{n} v9/IPFIX template(s) loaded from the database");
                }
            }
            Err(e) => tracing::warn!("loading stored templates: {e:#}"),
        }
    }
    let exporters = Arc::new(Mutex::new(ExporterTable::with_limit(args.max_exporters)));
    if let Some(spool) = &routes[0].spool {
        let (carried, in_doubt) = exporters_sql::load_pending(spool);
        let mut table = exporters.lock().unwrap_or_else(|p| p.into_inner());
        table.carry(carried);
        if let Some(flush) = in_doubt {
            table.set_in_doubt(flush);
        }
    }
    let shards_stop = Arc::new(AtomicBool::new(false));
    let shards_done = Arc::new(AtomicBool::new(false));
    let house_stop = Arc::new(AtomicBool::new(false));
    let replay_stop = Arc::new(AtomicBool::new(false));
    let spool_only = Arc::new(AtomicBool::new(false));

    let mut writer_threads = Vec::new();
    for id in 0..writers {
        let sinks: Vec<Box<dyn Sink>> = if databases.is_empty() {
            vec![Box::new(NullSink)]
        } else {
            databases
                .iter()
                .map(|d| -> Box<dyn Sink> {
                    Box::new(PgSink::new(&d.conninfo, &schema).with_instance(&instance))
                })
                .collect()
        };
        let shared = WriterShared {
            handoff: handoff.clone(),
            counters: counters.writers[id].clone(),
            spool_counters: counters.spool.clone(),
            exporters: exporters.clone(),
            shards_done: shards_done.clone(),
            spool_only: spool_only.clone(),
            routes: routes.clone(),
        };
        let cfg = WriterConfig {
            id,
            recorders: latency.recorders(),
            max_rows: args.copy_rows.max(1),
            gather: Duration::from_secs_f64(args.copy_gather.max(0.0)),
        };
        writer_threads.push(
            thread::Builder::new()
                .name(format!("nfpg-writer-{id}"))
                .spawn(move || writer::run(cfg, sinks, shared))?,
        );
    }
    let spiller = if routes.iter().any(|r| r.spool.is_some()) {
        let overflow =
            SpoolOverflow::new(routes.clone(), counters.spool.clone(), exporters.clone());
        let h = handoff.clone();
        Some(
            thread::Builder::new()
                .name("nfpg-spill".into())
                .spawn(move || spill::run(h, overflow))?,
        )
    } else {
        None
    };
    let mut replayers = Vec::new();
    let mut house = Vec::new();
    for (i, (d, route)) in databases.iter().zip(&routes).enumerate() {
        if let Some(spool) = &route.spool {
            let r = Replayer {
                spool: spool.clone(),
                conninfo: d.conninfo.clone(),
                schema: schema.clone(),
                health: route.health.clone(),
                counters: counters.spool.clone(),
                live: Some(handoff.clone()),
            };
            let stop = replay_stop.clone();
            replayers.push(
                thread::Builder::new()
                    .name(format!("nfpg-replayer-{i}"))
                    .spawn(move || r.run(stop))?,
            );
        }
        let keeper = housekeeper::Housekeeper {
            conninfo: d.conninfo.clone(),
            schema: schema.clone(),
            instance: instance.clone(),
            stats: i == 0,
            table: exporters.clone(),
            interval: args.exporter_interval(),
            exporter_rows: args.exporter_rows.max(1),
            exporter_idle: args.exporter_idle(),
            malformed_keep_days: args.malformed_keep_days,
            retention_days: args.retention_days,
            aggregate_retention_days: args.aggregate_retention_days,
            partitions_ahead: args.partitions_ahead,
            aggregate_interval: args.aggregate_interval(),
            aggregate_lag: args.aggregate_lag(),
            stop: house_stop.clone(),
            health: route.health.clone(),
            netflow: netflow.clone(),
        };
        house.push(
            thread::Builder::new()
                .name(format!("nfpg-housekeeper-{i}"))
                .spawn(move || keeper.run())?,
        );
    }
    let allow = AllowList::new(&args.allow_exporters);
    if !allow.is_open() {
        tracing::info!(
            "accepting datagrams only from {} address block(s) (--allow-exporters)",
            args.allow_exporters.len()
        );
    }
    let mut shard_threads = Vec::new();
    for (id, rx) in receivers.into_iter().enumerate() {
        let cfg = ShardConfig {
            id,
            recorders: latency.recorders(),
            flush_interval: args.flush_interval(),
            core: shard_core(&cores, id),
            overflow: routes
                .iter()
                .any(|r| r.spool.is_some())
                .then(|| -> Box<dyn Overflow> {
                    Box::new(SpoolOverflow::new(
                        routes.clone(),
                        counters.spool.clone(),
                        exporters.clone(),
                    ))
                }),
            netflow: netflow.clone(),
            allow: allow.clone(),
            time_window_us: args.time_window_us(),
            samples_per_s: args.malformed_samples,
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

    if args.metrics.is_some() || args.dashboard.is_some() {
        // One listener when both name the same address; the dashboard reads PostgreSQL itself.
        crate::dashboard::serve(
            args.metrics,
            args.dashboard,
            crate::obs::metrics::Sources {
                counters: counters.clone(),
                handoff: handoff.clone(),
                exporters: exporters.clone(),
                latency: latency_now.clone(),
            },
            databases
                .first()
                .map(|d| crate::dashboard::query::DbSource {
                    conninfo: d.conninfo.clone(),
                    schema: schema.clone(),
                }),
        )?;
    }
    // Logged once every thread runs and the metrics listener is bound: the ready signal.
    tracing::info!(
        "listening on udp {} with {shards} shard(s), {writers} writer(s), batches of {} flows, flush every {:?}",
        SocketAddr::new(args.listen, args.port),
        args.batch_size,
        args.flush_interval()
    );
    let prev = counters.snapshot(0);
    Ok(Running {
        databases,
        routes,
        schema,
        instance,
        handoff,
        counters,
        exporters,
        latency,
        latency_now,
        hist_log,
        shard_threads,
        writer_threads,
        spiller,
        house,
        replayers,
        netflow,
        replay_stop,
        spool_only,
        stop_timeout: args.stop_timeout(),
        shards_stop,
        shards_done,
        house_stop,
        stats_interval: args.stats_interval(),
        hist_interval: args.hist_interval(),
        started: Instant::now(),
        interval_start: Instant::now(),
        last_stats: Instant::now(),
        prev,
    })
}

/// The core shard `id` is pinned to: shards take the cores this process may run on in turn.
fn shard_core(cores: &[core_affinity::CoreId], id: usize) -> Option<core_affinity::CoreId> {
    (!cores.is_empty()).then(|| cores[id % cores.len()])
}

/// Binds one SO_REUSEPORT socket per shard (all to the same address), attaches the spread or
/// cpu program when asked, and opens a receiver on each.
fn bind_receivers(
    args: &RunArgs,
    shards: usize,
    cores: &[core_affinity::CoreId],
) -> Result<Vec<Box<dyn recv::Receiver>>> {
    let listen = SocketAddr::new(args.listen, args.port);
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
    // After every socket of the group is bound: the programs index the group's sockets.
    match args.balance {
        Balance::Spread if shards > 1 => {
            socket::attach_spread_cbpf(&sockets[0], shards as u32)
                .context("attaching the spread BPF program")?;
            tracing::info!("balance: spread (random shard per datagram)");
        }
        Balance::Cpu if shards > 1 => {
            let cpus: Vec<u32> = (0..shards)
                .map(|id| shard_core(cores, id).map_or(id as u32, |c| c.id as u32))
                .collect();
            socket::attach_cpu_cbpf(&sockets[0], &cpus).context("attaching the cpu BPF program")?;
            if cores.is_empty() {
                tracing::warn!(
                    "--balance cpu: this process's CPUs could not be read, so the shards are not \
                     pinned and a datagram processed on CPU c goes to shard c % {shards}"
                );
            } else if shards > cores.len() {
                tracing::warn!(
                    "--balance cpu with {shards} shards on {} cores: each core's datagrams go to \
                     the first shard pinned to it, so {} shard(s) get at most those of CPUs \
                     outside this process's set (use --shards {} or fewer)",
                    cores.len(),
                    shards - cores.len(),
                    cores.len()
                );
            }
            tracing::info!("balance: cpu (the shard pinned to the CPU processing the datagram, shards on CPUs {cpus:?})");
        }
        _ => {}
    }
    let mut receivers = Vec::with_capacity(shards);
    for (i, sock) in sockets.into_iter().enumerate() {
        let (rx, why) = recv::open(args.recv, sock, args.recv_batch)?;
        if i == 0 {
            tracing::info!("receive path: {why}");
        }
        receivers.push(rx);
    }
    Ok(receivers)
}

impl Running {
    /// The statistics so far.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.counters.snapshot(self.handoff.depth());
        let t = self.exporters.lock().unwrap_or_else(|p| p.into_inner());
        s.exporters_tracked = t.len() as u64;
        s.exporters_evicted = t.evicted();
        s.exporters_untracked_datagrams = t.untracked_datagrams();
        s.exporters_evicted_unwritten_datagrams = t.evicted_unwritten();
        s
    }

    /// Periodic reporting: closes a histogram interval and logs the statistics line when
    /// their intervals have passed; `report_now` (SIGUSR1) logs the latency percentiles now.
    pub fn tick(&mut self, report_now: bool) -> Result<()> {
        if self.interval_start.elapsed() >= self.hist_interval {
            self.collect()?;
        }
        if report_now {
            self.collect()?;
            tracing::info!("latency: {}", self.latency.summary().line());
        }
        if self.last_stats.elapsed() >= self.stats_interval {
            let s = self.snapshot();
            self.log_stats(&s);
            tracing::info!("latency: {}", self.latency.summary().line());
            self.prev = s;
            self.last_stats = Instant::now();
        }
        Ok(())
    }

    /// Collects one histogram interval: into the totals, and into the log when there is one.
    fn collect(&mut self) -> Result<()> {
        let hists = self.latency.interval();
        let now = Instant::now();
        if let Some(log) = self.hist_log.as_mut() {
            log.write(
                hists,
                self.interval_start.duration_since(self.started),
                now.duration_since(self.interval_start),
            )?;
        }
        *self.latency_now.lock().unwrap_or_else(|p| p.into_inner()) = self.latency.summary();
        self.interval_start = now;
        Ok(())
    }

    fn log_stats(&self, s: &Snapshot) {
        tracing::info!(
            "stats: {}",
            s.line(
                &self.prev,
                self.last_stats.elapsed().as_secs_f64(),
                self.handoff.depth_capacity()
            )
        );
    }

    /// Stops in order and returns the final statistics: shards drain their sockets and seal
    /// their last batches, writers drain the queue, the exporters table gets its last update.
    pub fn stop(mut self) -> Result<Snapshot> {
        tracing::info!("stopping: draining sockets and queues");
        let stop_started = Instant::now();
        self.shards_stop.store(true, Relaxed);
        for t in self.shard_threads.drain(..) {
            let _ = t.join();
        }
        // Nothing more arrives: the writers take the rest of the queue (or spool it when the
        // stop budget is spent).
        self.handoff.close_spill();
        if let Some(t) = self.spiller.take() {
            let _ = t.join();
        }
        self.shards_done.store(true, Relaxed);
        // Writers commit what they can within the stop budget, then spool the rest.
        while self.writer_threads.iter().any(|t| !t.is_finished())
            && stop_started.elapsed() < self.stop_timeout
        {
            thread::sleep(Duration::from_millis(20));
        }
        if self.writer_threads.iter().any(|t| !t.is_finished()) {
            tracing::warn!(
                "stop budget of {:?} spent: spooling what is left for the next start",
                self.stop_timeout
            );
            self.spool_only.store(true, Relaxed);
        }
        for t in self.writer_threads.drain(..) {
            let _ = t.join();
        }
        // What the shards or writers spooled while the database was up but busy goes in too,
        // within the same budget; what is left then stays in the spool for the next start.
        let replaying = |routes: &[Route]| {
            routes
                .iter()
                .any(|r| r.health.is_up() && r.spool.as_ref().is_some_and(|s| s.own_segments() > 0))
        };
        while replaying(&self.routes) && stop_started.elapsed() < self.stop_timeout {
            thread::sleep(Duration::from_millis(20));
        }
        let kept: u64 = self
            .routes
            .iter()
            .filter_map(|r| r.spool.as_ref())
            .map(|s| s.own_segments())
            .sum();
        if kept > 0 {
            tracing::info!("{kept} spool segment(s) kept for the next start");
        }
        self.replay_stop.store(true, Relaxed);
        for r in self.replayers.drain(..) {
            let _ = r.join();
        }
        self.house_stop.store(true, Relaxed);
        for h in self.house.drain(..) {
            let _ = h.join();
        }
        // Exporter statistics and templates go to the first endpoint.
        let mut exporters_written = self.databases.is_empty();
        let primary_up = self.routes.first().is_some_and(|r| r.health.is_up());
        if let Some(d) = self.databases.first().filter(|_| primary_up) {
            let mut last_err = None;
            for _ in 0..3 {
                match db::connect(&d.conninfo).and_then(|mut c| {
                    housekeeper::write_templates(
                        &mut c,
                        &self.schema,
                        &self.netflow,
                        &self.instance,
                    );
                    exporters_sql::flush_exporters(
                        &mut c,
                        &self.schema,
                        &self.exporters,
                        usize::MAX,
                        &self.instance,
                    )
                }) {
                    Ok(_) => {
                        last_err = None;
                        exporters_written = true;
                        break;
                    }
                    Err(e) => {
                        last_err = Some(e);
                        thread::sleep(Duration::from_millis(500));
                    }
                }
            }
            if let Some(e) = last_err {
                tracing::warn!("final update of the exporters table failed: {e:#}");
            }
        }
        if let (false, Some(spool)) = (
            exporters_written,
            self.routes.first().and_then(|r| r.spool.as_ref()),
        ) {
            let (deltas, in_doubt) = {
                let mut table = self.exporters.lock().unwrap_or_else(|p| p.into_inner());
                (table.take_all_deltas(), table.take_in_doubt())
            };
            match exporters_sql::save_pending(spool, deltas, in_doubt) {
                Ok(()) => tracing::info!(
                    "exporter statistics kept in {} for the next start",
                    spool.dir().display()
                ),
                Err(e) => tracing::error!("exporter statistics lost: {e:#}"),
            }
        }
        // Every thread has stopped; this interval holds the rest.
        self.collect()?;
        let mut s = self.snapshot();
        s.latency = self.latency.summary();
        self.log_stats(&s);
        tracing::info!("latency: {}", s.latency.line());
        tracing::info!(
            "stopped after {:.1}s: {} datagrams, {} flows decoded, {} rows written, {} malformed",
            self.started.elapsed().as_secs_f64(),
            s.shard.datagrams,
            s.shard.flows,
            s.writer.rows_written,
            s.malformed.total()
        );
        self.databases.clear();
        Ok(s)
    }
}
