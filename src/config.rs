//! Command line and configuration: flags, then environment, then a `.env` file, then defaults.
//!
//! The original collector's variable names are accepted as they were (`DB_HOST`, `DB_PORT`,
//! `DB_NAME`, `DB_USER`, `DB_PASSWORD`, `DB_SCHEMA`, `NETFLOW_PORT`, `BATCH_SIZE`,
//! `FLUSH_INTERVAL`, `LOG_LEVEL`, `LOG_FILE`), plus `DATABASE_URL` and `NFPG_*` for what is
//! new. `main` loads `.env` into the environment before parsing, without overriding variables
//! already set, which gives the order above.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ingest::recv::Backend;

#[derive(Parser, Debug)]
#[command(
    name = "nfpg",
    version,
    about = "NetFlow collector: receives NetFlow v5 over UDP and stores every record in PostgreSQL",
    long_about = "NetFlow collector: receives NetFlow v5 over UDP and stores every record in \
        PostgreSQL.\n\nWith no subcommand, `nfpg` runs the collector (same as `nfpg run`). With no \
        database configured (DATABASE_URL or DB_HOST), it starts a private PostgreSQL server from \
        the server programs installed on this machine and stops it on exit.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
// Parsed once per process: the size of the `run` variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the collector (the default).
    Run(RunArgs),
    /// Apply the SQL migrations and exit.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Print the exporters table: per exporter flows, loss from sequence numbers, rate, last seen.
    Exporters {
        #[command(flatten)]
        db: DbArgs,
    },
    /// The busiest sources, destinations, pairs, applications, exporters, ports or ASes among
    /// the flows that started in the last --last, by estimated bytes (sampling upscaled).
    Top {
        /// The window: flows that started this long ago or later (30s, 5m, 1h, 2d).
        #[arg(long, default_value = "1h", value_parser = crate::store::analysis::parse_duration)]
        last: Duration,
        /// What to group by (port and as read raw flows only).
        #[arg(long, value_enum, default_value = "src")]
        by: crate::store::analysis::TopBy,
        /// Rows shown.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Sources with more than --min-flows estimated flows in the last --window (scans,
    /// floods), with their distinct destinations and destination ports.
    Anomalies {
        /// The window: flows that started this long ago or later (30s, 5m, 1h, 2d).
        #[arg(long, default_value = "5m", value_parser = crate::store::analysis::parse_duration)]
        window: Duration,
        /// List sources with more estimated flows than this.
        #[arg(long, default_value_t = 1000)]
        min_flows: u64,
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print percentile tables from a --hist-log file; optionally draw latency by percentile.
    Hist {
        /// The interval log written by `nfpg run --hist-log`.
        file: PathBuf,
        /// Write an SVG plot of latency by percentile here.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Title of the plot.
        #[arg(long, default_value = "nfpg latency by percentile")]
        title: String,
    },
    /// Run nfpg's private PostgreSQL on its own until SIGTERM/SIGINT; print one JSON line
    /// (socket_dir, data_dir, url_template, settings) once it accepts connections.
    Server {
        /// Directory of the private server (created on first use).
        #[arg(long)]
        data_dir: PathBuf,
        /// Create this database if it does not exist (repeatable).
        #[arg(long = "create-db", value_name = "NAME")]
        create_db: Vec<String>,
        #[command(flatten)]
        log: LogArgs,
    },
    /// List the spool: segments waiting for replay (and the database each is for), dead
    /// letters with their errors, and the COPY statement that loads a segment by hand.
    Spool {
        /// The spool directory [default: spool/ in the data directory].
        #[arg(long, env = "NFPG_SPOOL_DIR")]
        spool_dir: Option<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print, as one JSON object, the flows table's columns, the counters with their help, the
    /// malformed reasons and the keys of the final JSON summary.
    Describe,
}

#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// PostgreSQL connection (postgres://user:pass@host:port/db, or key=value pairs). Takes
    /// precedence over the DB_* settings. `nfpg run` and `nfpg migrate` take it more than
    /// once: several database endpoints, each a complete nfpg database, with the flows spread
    /// over them (the first also holds the exporter statistics and templates; the other
    /// commands read the first only).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, action = clap::ArgAction::Append)]
    pub database_url: Vec<String>,
    /// Several database endpoints in one value, separated by `;` (URLs; a `;` inside one is
    /// written %3B). Used when no --database-url is given.
    #[arg(
        long,
        env = "NFPG_DATABASE_URLS",
        hide_env_values = true,
        value_delimiter = ';'
    )]
    pub database_urls: Vec<String>,
    /// Database host (a path means a unix socket directory). Without it and without
    /// DATABASE_URL, nfpg starts its own private server.
    #[arg(long, env = "DB_HOST")]
    pub db_host: Option<String>,
    #[arg(long, env = "DB_PORT", default_value_t = 5432)]
    pub db_port: u16,
    #[arg(long, env = "DB_NAME", default_value = "netflow_db")]
    pub db_name: String,
    #[arg(long, env = "DB_USER", default_value = "netflow_user")]
    pub db_user: String,
    #[arg(long, env = "DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<String>,
    /// Schema for nfpg's tables (a plain identifier).
    #[arg(long = "schema", env = "DB_SCHEMA", default_value = "netflow")]
    pub schema: String,
    /// Directory of the private PostgreSQL server used when no database is configured
    /// [default: /var/lib/nfpg as root, else ~/.local/share/nfpg].
    #[arg(long, env = "NFPG_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

pub use crate::store::db::DbTarget;

impl DbArgs {
    /// The configured connection strings: `--database-url` (repeatable, or `DATABASE_URL`),
    /// else `--database-urls` / `NFPG_DATABASE_URLS`; empty ones left out.
    fn urls(&self) -> Vec<String> {
        let given = if self.database_url.iter().any(|u| !u.trim().is_empty()) {
            &self.database_url
        } else {
            &self.database_urls
        };
        given
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Every database endpoint: the URLs given, or the one target of [`DbArgs::target`].
    pub fn targets(&self) -> Vec<DbTarget> {
        let urls = self.urls();
        if urls.len() > 1 {
            return urls.into_iter().map(DbTarget::Configured).collect();
        }
        vec![self.target()]
    }

    /// The database (the first endpoint when several are given).
    pub fn target(&self) -> DbTarget {
        if let Some(url) = self.urls().into_iter().next() {
            return DbTarget::Configured(url);
        }
        if let Some(host) = self.db_host.as_deref().filter(|h| !h.trim().is_empty()) {
            let mut s = format!(
                "host={} port={} dbname={} user={}",
                quote(host),
                self.db_port,
                quote(&self.db_name),
                quote(&self.db_user)
            );
            if let Some(p) = &self.db_password {
                s.push_str(&format!(" password={}", quote(p)));
            }
            return DbTarget::Configured(s);
        }
        DbTarget::Private {
            dir: self.data_dir.clone().unwrap_or_else(default_data_dir),
            dbname: self.db_name.clone(),
        }
    }
}

/// Quotes a value for a key=value connection string.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn default_data_dir() -> PathBuf {
    if crate::sys::is_root() {
        return PathBuf::from("/var/lib/nfpg");
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("nfpg");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/nfpg"),
        None => PathBuf::from(".nfpg"),
    }
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log level: error, warn, info, debug, trace (the original's WARNING and CRITICAL work).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Also write the log to this file.
    #[arg(long, env = "LOG_FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Balance {
    /// The kernel's SO_REUSEPORT hash of the 4-tuple: one exporter, one shard.
    Hash,
    /// A classic BPF program picks a random shard per datagram: one busy exporter is spread
    /// over all shards (v9/IPFIX: templates are shared, but a redefinition can race the data
    /// right behind it on another shard).
    Spread,
    /// A classic BPF program picks the shard pinned to the CPU that is processing the
    /// datagram (its NIC queue's interrupt or RPS CPU): no inter-processor interrupts to wake
    /// the shard or to free the datagram's buffer. An exporter stays on one shard while the
    /// NIC steers it to one CPU (the v9/IPFIX caveat of `spread` when it moves).
    Cpu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SinkKind {
    /// PostgreSQL, with binary COPY.
    Pg,
    /// Discard after decoding and encoding (measures the receive path without a database).
    Null,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Address to listen on (`::` listens on IPv6 and IPv4).
    #[arg(long, env = "NFPG_LISTEN", default_value = "0.0.0.0")]
    pub listen: IpAddr,
    /// UDP port.
    #[arg(short, long, env = "NETFLOW_PORT", default_value_t = 2055)]
    pub port: u16,
    /// Receive threads, each with its own SO_REUSEPORT socket, pinned to a core
    /// [default: one per core].
    #[arg(long, env = "NFPG_SHARDS")]
    pub shards: Option<usize>,
    /// How datagrams are spread over shards.
    #[arg(long, env = "NFPG_BALANCE", value_enum, default_value = "hash")]
    pub balance: Balance,
    /// Writer threads, each with its own database connection. More writers than cores pays:
    /// while one waits on a commit or gathers its next COPY, another's backend works
    /// (BENCHMARKS.md, "Scaling: shards and writers").
    #[arg(long, env = "NFPG_WRITERS", default_value_t = 4)]
    pub writers: usize,
    /// Receive path: io_uring, recvmmsg, or the best the kernel supports.
    #[arg(long = "recv", env = "NFPG_RECV", value_enum, default_value = "auto")]
    pub recv: Backend,
    /// Datagrams per receive call.
    #[arg(long, env = "NFPG_RECV_BATCH", default_value_t = 64)]
    pub recv_batch: usize,
    /// Socket receive buffer in bytes (the kernel caps it at net.core.rmem_max unless nfpg
    /// has CAP_NET_ADMIN).
    #[arg(long, env = "NFPG_RCVBUF", default_value_t = 32 << 20)]
    pub rcvbuf: usize,
    /// Flows per batch handed to a writer. A batch of 8192 v5 flows holds 384 KiB of records;
    /// smaller batches cost more CPU per datagram (more hand-offs and writer wake-ups: 2048
    /// took 18 % more at 50,000 datagrams/s) and more COPY statements, larger ones add
    /// latency at low rates per shard and go cold in cache.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 8192)]
    pub batch_size: usize,
    /// Seconds after which a batch is written even if not full (fractions allowed).
    #[arg(long, env = "FLUSH_INTERVAL", default_value_t = 1.0)]
    pub flush_interval: f64,
    /// Batches waiting for writers at most (256 of 8192 flows: 2,097,152 flows, two seconds
    /// at a million flows a second). From three quarters of it the spill thread takes the
    /// surplus to the spool; when it is full all the same, shards spool themselves (or,
    /// without a spool, wait), and what arrives meanwhile waits in the sockets' buffers. Each
    /// batch is reserved at start and mapped only when first filled (idle: about 70 MB
    /// resident, 40 MB with 64); a full queue holds about 100 MB of v5 records, 360 MB of
    /// v9/IPFIX columns. 256 rather than 64: PostgreSQL's COPYs stall for 1-2 s at times
    /// under load, and 64 batches (half a second at 1 M flows/s) sent those stalls to disk
    /// (see BENCHMARKS.md).
    #[arg(long, env = "NFPG_QUEUE_DEPTH", default_value_t = 256)]
    pub queue_depth: usize,
    /// Most flows in one COPY statement.
    #[arg(long, env = "NFPG_COPY_ROWS", default_value_t = 100_000)]
    pub copy_rows: usize,
    /// Seconds a writer waits, counted from when a batch was sealed, for more batches to
    /// write in the same COPY (fewer, larger COPYs cost PostgreSQL less; 0 writes each batch
    /// as soon as a writer is free). Adds at most this much to the latency.
    #[arg(long, env = "NFPG_COPY_GATHER", default_value_t = 0.05)]
    pub copy_gather: f64,
    /// Seconds between statistics lines in the log.
    #[arg(long, env = "NFPG_STATS_INTERVAL", default_value_t = 30.0)]
    pub stats_interval: f64,
    /// Seconds between updates of the exporters table.
    #[arg(long, env = "NFPG_EXPORTER_INTERVAL", default_value_t = 5.0)]
    pub exporter_interval: f64,
    /// Where decoded batches go.
    #[arg(long, env = "NFPG_SINK", value_enum, default_value = "pg")]
    pub sink: SinkKind,
    /// Test mode (the original's --test): wait up to 5 s for one datagram, print its first
    /// record, store it, exit.
    #[arg(short, long)]
    pub test: bool,
    /// Append per-stage latency histograms to this HdrHistogram interval log (V2, deflate;
    /// readable by `nfpg hist` and HdrHistogram's HistogramLogProcessor; values in µs).
    #[arg(long, env = "NFPG_HIST_LOG")]
    pub hist_log: Option<PathBuf>,
    /// Seconds per histogram interval.
    #[arg(long, env = "NFPG_HIST_INTERVAL", default_value_t = 10.0)]
    pub hist_interval: f64,
    /// Serve Prometheus metrics over HTTP: a port (loopback only, e.g. 9108) or an address
    /// and port (e.g. 0.0.0.0:9108 to let other hosts scrape); off by default.
    #[arg(long, env = "NFPG_METRICS", value_parser = parse_listen_addr)]
    pub metrics: Option<std::net::SocketAddr>,
    /// NetFlow v9/IPFIX data that arrives before its template is held, per exporter and
    /// observation domain, up to this many bytes (suffixes K, M, G) ...
    #[arg(long, env = "NFPG_TEMPLATE_HOLD_BYTES", default_value = "4M", value_parser = parse_bytes)]
    pub template_hold_bytes: u64,
    /// ... and for at most this many seconds (routers resend templates every few minutes).
    #[arg(long, env = "NFPG_TEMPLATE_HOLD_SECS", default_value_t = 900.0)]
    pub template_hold_secs: f64,
    /// Sampling interval for exporters that send none: CIDR=N, comma separated (e.g.
    /// 192.0.2.0/24=1000,2001:db8::1/128=512). Used only where the exporter's own data or
    /// options data give no interval; stored with sampling_source 6.
    #[arg(long, env = "NFPG_SAMPLING_OVERRIDE", value_delimiter = ',', value_parser = parse_override)]
    pub sampling_override: Vec<(Cidr, u32)>,
    /// Accept datagrams only from these exporters: addresses or CIDR blocks, comma separated
    /// (e.g. 192.0.2.0/24,2001:db8::/32). Others are counted (not_allowed, and per source in
    /// a bounded list of the busiest) and dropped before decoding. Default: every address.
    #[arg(long, env = "NFPG_ALLOW_EXPORTERS", value_delimiter = ',')]
    pub allow_exporters: Vec<Cidr>,
    /// Most exporters tracked for per-exporter statistics and loss; idle ones are evicted
    /// (exporters_evicted), and datagrams of new ones are not tracked while it is full
    /// (their flows are still stored).
    #[arg(long, env = "NFPG_MAX_EXPORTERS", default_value_t = crate::obs::exporters::DEFAULT_MAX_EXPORTERS)]
    pub max_exporters: usize,
    /// Seconds of silence after which an exporter's statistics leave memory (they are in
    /// the exporters table by then).
    #[arg(long, env = "NFPG_EXPORTER_IDLE", default_value_t = 3600.0)]
    pub exporter_idle: f64,
    /// Most rows written to the exporters table per update (the rest follow next time).
    #[arg(long, env = "NFPG_EXPORTER_ROWS", default_value_t = crate::obs::exporters::DEFAULT_ROWS_PER_UPDATE)]
    pub exporter_rows: usize,
    /// Most v9/IPFIX templates kept over all exporters; new ones beyond are refused and
    /// counted (templates_refused).
    #[arg(long, env = "NFPG_MAX_TEMPLATES", default_value_t = crate::decode::netflow::DEFAULT_MAX_TEMPLATES)]
    pub max_templates: usize,
    /// Flows that start or end more than this many seconds after they arrived (the
    /// exporter's clock is ahead) are stored with time_suspect set and counted
    /// (flows_time_suspect) ...
    #[arg(long, env = "NFPG_MAX_AHEAD", default_value_t = 86_400.0)]
    pub max_ahead: f64,
    /// ... as are flows that ended more than this many seconds before they arrived.
    #[arg(long, env = "NFPG_MAX_BEHIND", default_value_t = 7.0 * 86_400.0)]
    pub max_behind: f64,
    /// Malformed-datagram samples stored at most per shard per second (every malformed
    /// datagram is counted whether sampled or not).
    #[arg(long, env = "NFPG_MALFORMED_SAMPLES", default_value_t = 100)]
    pub malformed_samples: u32,
    /// Days malformed-datagram samples are kept.
    #[arg(long, env = "NFPG_MALFORMED_KEEP_DAYS", default_value_t = 7)]
    pub malformed_keep_days: u32,
    /// Days of raw flows kept: day partitions older than this are dropped by the
    /// housekeeper (a partition drop, never DELETE). 0 keeps them forever.
    #[arg(long, env = "NFPG_RETENTION_DAYS", default_value_t = 0)]
    pub retention_days: u32,
    /// Days of hourly aggregates kept (usually longer than --retention-days); 0 keeps them
    /// forever.
    #[arg(long, env = "NFPG_AGGREGATE_RETENTION_DAYS", default_value_t = 0)]
    pub aggregate_retention_days: u32,
    /// Day partitions created ahead of the clock (flows and aggregates).
    #[arg(long, env = "NFPG_PARTITIONS_AHEAD", default_value_t = 3)]
    pub partitions_ahead: u32,
    /// Seconds between updates of the hourly aggregates; 0 turns them off.
    #[arg(long, env = "NFPG_AGGREGATE_INTERVAL", default_value_t = 60.0)]
    pub aggregate_interval: f64,
    /// Seconds a flow row may take from its arrival to its commit and still be aggregated
    /// by the periodic update (rows replayed from the spool are aggregated as they are
    /// replayed).
    #[arg(long, env = "NFPG_AGGREGATE_LAG", default_value_t = 120.0)]
    pub aggregate_lag: f64,
    /// Serve the read-only dashboard over HTTP: a port (loopback only, e.g. 9109) or an
    /// address and port; the same address as --metrics shares that listener. Off by default.
    #[arg(long, env = "NFPG_DASHBOARD", value_parser = parse_listen_addr)]
    pub dashboard: Option<std::net::SocketAddr>,
    /// Directory of the durable spool, where flows wait on disk while PostgreSQL cannot take
    /// them [default: spool/ in the data directory].
    #[arg(long, env = "NFPG_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool may hold; rows beyond it are dropped and counted
    /// (rows_spool_full). Suffixes K, M, G, T (powers of 1024). 10 GiB holds about 45 million
    /// flows: 7.5 minutes at 100,000 flows/s.
    #[arg(long, env = "NFPG_SPOOL_MAX", default_value = "10G", value_parser = parse_bytes)]
    pub spool_max: u64,
    /// Seconds a clean stop (SIGTERM) may spend writing to PostgreSQL; what is left then goes
    /// to the spool. Well inside the shipped unit's TimeoutStopSec=60.
    #[arg(long, env = "NFPG_STOP_TIMEOUT", default_value_t = 20.0)]
    pub stop_timeout: f64,
    /// Write the final statistics as JSON to this file at exit (they are always printed to
    /// stdout).
    #[arg(long, env = "NFPG_SUMMARY_FILE")]
    pub summary_file: Option<PathBuf>,
    /// This collector's name where several write into one database: stored with its exporter
    /// statistics, v9/IPFIX templates, COPY markers, spool segments and aggregate updates.
    /// Letters, digits, '.', '_', '-'; at most 63 [default: the host name].
    #[arg(long, env = "NFPG_INSTANCE", value_parser = parse_instance)]
    pub instance: Option<String>,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

pub use crate::addr::Cidr;

/// A port alone means loopback: `9108` is `127.0.0.1:9108`.
pub fn parse_listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|e| format!("{s:?}: expected a port or ADDRESS:PORT ({e})"))
}

/// An instance name: 1 to 63 of letters, digits, `.`, `_`, `-`.
pub fn parse_instance(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty()
        || s.len() > 63
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "{s:?}: an instance name is 1 to 63 letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(s.to_string())
}

/// The default instance name: the host name, with any character an instance name may not
/// hold replaced by `-` ("nfpg" when there is none).
pub fn default_instance() -> String {
    let name: String = crate::sys::host_name()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    if name.is_empty() {
        "nfpg".into()
    } else {
        name
    }
}

/// `CIDR=N` of `--sampling-override`.
pub fn parse_override(s: &str) -> Result<(Cidr, u32), String> {
    let (net, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected CIDR=N, e.g. 192.0.2.0/24=1000"))?;
    let n: u32 = n
        .trim()
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?}: the interval must be a whole number above 0"))?;
    Ok((net.parse()?, n))
}

/// A byte count with an optional K/M/G/T suffix (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches(['i', 'I']);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a byte count (e.g. 10G, 512M, 1000000)"))
}

impl DbArgs {
    /// The spool directory when none is given: `spool/` in the data directory.
    pub fn default_spool_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(default_data_dir)
            .join("spool")
    }
}

impl RunArgs {
    /// `--instance`, else the host name.
    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(default_instance)
    }

    /// The spool directory: `--spool-dir`, else `spool/` in the data directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| self.db.default_spool_dir())
    }

    pub fn template_hold_age(&self) -> Duration {
        secs(self.template_hold_secs, 900.0)
    }

    pub fn stop_timeout(&self) -> Duration {
        secs(self.stop_timeout, 20.0)
    }

    pub fn flush_interval(&self) -> Duration {
        secs(self.flush_interval, 1.0)
    }
    pub fn stats_interval(&self) -> Duration {
        secs(self.stats_interval, 30.0)
    }
    pub fn hist_interval(&self) -> Duration {
        secs(self.hist_interval, 10.0)
    }
    pub fn exporter_interval(&self) -> Duration {
        secs(self.exporter_interval, 5.0)
    }
    pub fn exporter_idle(&self) -> Duration {
        secs(self.exporter_idle, 3600.0)
    }
    /// Zero when the aggregates are off (`--aggregate-interval 0`).
    pub fn aggregate_interval(&self) -> Duration {
        if self.aggregate_interval.is_finite() && self.aggregate_interval > 0.0 {
            Duration::from_secs_f64(self.aggregate_interval)
        } else {
            Duration::ZERO
        }
    }
    pub fn aggregate_lag(&self) -> Duration {
        if self.aggregate_lag.is_finite() && self.aggregate_lag >= 0.0 {
            Duration::from_secs_f64(self.aggregate_lag)
        } else {
            Duration::from_secs(120)
        }
    }
    /// (most µs ahead of arrival, most µs behind) a flow's times may be without a flag.
    pub fn time_window_us(&self) -> (i64, i64) {
        (
            secs(self.max_ahead, 86_400.0).as_micros() as i64,
            secs(self.max_behind, 7.0 * 86_400.0).as_micros() as i64,
        )
    }
    pub fn shard_count(&self) -> usize {
        self.shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}

fn secs(v: f64, default: f64) -> Duration {
    Duration::from_secs_f64(if v.is_finite() && v > 0.0 { v } else { default })
}

/// Maps the original's level names (Python logging) onto tracing's.
pub fn tracing_level(name: &str) -> &'static str {
    match name.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "warn" | "warning" => "warn",
        "error" | "critical" | "fatal" => "error",
        _ => "info",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("nfpg").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn bare_nfpg_runs_with_defaults() {
        let cli = parse(&[
            "--port",
            "9995",
            "--db-host",
            "db.example",
            "--db-password",
            "it's",
        ]);
        assert!(cli.command.is_none());
        assert_eq!(cli.run.port, 9995);
        assert_eq!(
            cli.run.db.target(),
            DbTarget::Configured(
                "host='db.example' port=5432 dbname='netflow_db' user='netflow_user' password='it\\'s'".into()
            )
        );
    }

    #[test]
    fn database_url_wins_and_private_is_the_fallback() {
        let cli = parse(&[
            "run",
            "--database-url",
            "postgres://a@b/c",
            "--db-host",
            "x",
        ]);
        let Some(Command::Run(run)) = cli.command else {
            panic!("run")
        };
        assert_eq!(
            run.db.target(),
            DbTarget::Configured("postgres://a@b/c".into())
        );
        let cli = parse(&["run", "--data-dir", "/tmp/x"]);
        let Some(Command::Run(run)) = cli.command else {
            panic!("run")
        };
        if std::env::var_os("DATABASE_URL").is_none() && std::env::var_os("DB_HOST").is_none() {
            assert_eq!(
                run.db.target(),
                DbTarget::Private {
                    dir: "/tmp/x".into(),
                    dbname: "netflow_db".into()
                }
            );
        }
    }

    #[test]
    fn several_database_urls_are_endpoints() {
        let cli = parse(&[
            "run",
            "--database-url",
            "postgres://a@b/c",
            "--database-url",
            "postgres://a@d,e/c",
        ]);
        let Some(Command::Run(run)) = cli.command else {
            panic!("run")
        };
        assert_eq!(
            run.db.targets(),
            vec![
                DbTarget::Configured("postgres://a@b/c".into()),
                DbTarget::Configured("postgres://a@d,e/c".into())
            ]
        );
        assert_eq!(
            run.db.target(),
            DbTarget::Configured("postgres://a@b/c".into())
        );
        let cli = parse(&["run", "--database-urls", "postgres://x/1; postgres://y/2"]);
        let Some(Command::Run(run)) = cli.command else {
            panic!("run")
        };
        if std::env::var_os("DATABASE_URL").is_none() {
            assert_eq!(
                run.db.targets(),
                vec![
                    DbTarget::Configured("postgres://x/1".into()),
                    DbTarget::Configured("postgres://y/2".into())
                ]
            );
        }
    }

    #[test]
    fn instance_names() {
        let cli = parse(&["run", "--instance", "collector-a.pop1"]);
        let Some(Command::Run(run)) = cli.command else {
            panic!("run")
        };
        assert_eq!(run.instance_name(), "collector-a.pop1");
        for bad in ["", "a b", "x;y", &"a".repeat(64)] {
            assert!(parse_instance(bad).is_err(), "{bad}");
        }
        let d = default_instance();
        assert!(parse_instance(&d).is_ok(), "{d}");
    }

    #[test]
    fn sampling_overrides_and_blocks() {
        let (net, n) = parse_override("192.0.2.0/24=1000").unwrap();
        assert_eq!(n, 1000);
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.1".parse().unwrap()));
        let (one, _) = parse_override("2001:db8::1=512").unwrap();
        assert!(one.contains("2001:db8::1".parse().unwrap()));
        assert!(!one.contains("2001:db8::2".parse().unwrap()));
        assert!(parse_override("10.0.0.0/33=5").is_err());
        assert!(parse_override("10.0.0.0/8=0").is_err());
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("10.1.1.1".parse().unwrap()));
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("10G"), Ok(10 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn python_level_names() {
        assert_eq!(tracing_level("WARNING"), "warn");
        assert_eq!(tracing_level("CRITICAL"), "error");
        assert_eq!(tracing_level("INFO"), "info");
    }
}
