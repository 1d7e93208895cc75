//! `nfpg-loadgen`: a NetFlow v5, v9 and IPFIX load source for nfpg, with exact totals.
//!
//! Owns the command line, the checks on it (loopback only, bounded runs), and the one JSON
//! report printed at the end. The work is in the modules: `traffic` (deterministic
//! exporters and field distributions), `templated` (v9/IPFIX datagrams in the sender's
//! buffers), `send` (paced `sendmmsg` threads and replay), `hostile` (`--hostile-rate`:
//! spoofed, malformed, future-dated and impostor datagrams alongside the valid exporters) and
//! `verify` (PostgreSQL comparison); the v5 encoding, the v9/IPFIX template encoding and the
//! capture reader are `nfpg-wire`'s.
//!
//! Exit status: 0 on success (and `--verify` found nothing lost), 1 if `--verify` found a
//! difference, 2 on any error.

mod hostile;
mod send;
mod templated;
mod traffic;
mod verify;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

use traffic::Version;

fn parse_version(s: &str) -> std::result::Result<Version, String> {
    s.parse::<u8>()
        .ok()
        .and_then(Version::from_number)
        .ok_or_else(|| format!("{s:?} is not 5, 9 or 10"))
}

/// Synthetic NetFlow v5, v9 or IPFIX load for nfpg: several exporters, paced, reproducible,
/// with exact totals printed as one JSON object at the end. Sends only to loopback.
#[derive(Parser, Debug)]
#[command(name = "nfpg-loadgen", disable_version_flag = true)]
struct Cli {
    /// Export format: 5 (NetFlow v5), 9 (NetFlow v9) or 10 (IPFIX). v9 and IPFIX use
    /// softflowd's IPv4 flow template (id 256, 42-byte records) and an options record (id
    /// 257): the sampling interval (34) when --sampling is set, and for IPFIX the system init
    /// time (160) that its flowStart/EndSysUpTime (22/21) count from.
    #[arg(long, default_value = "5", value_parser = parse_version)]
    version: Version,

    /// Collector address (loopback only): `127.x.y.z:port` or `[::1]:port`.
    #[arg(long, default_value = "127.0.0.1:2055")]
    target: SocketAddr,

    /// Sender threads; exporters are spread over them (exporter i on thread i mod N).
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// Datagrams per second over all threads; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,

    /// Stop after this many seconds (fractions allowed).
    #[arg(long)]
    duration: Option<f64>,

    /// Stop after building this many datagrams in total (sent + dropped on purpose).
    #[arg(long)]
    count: Option<u64>,

    /// Number of exporters, each its own source address 127.1.0.1, 127.1.0.2, …
    /// (fd00:6e66::1, … for an IPv6 target).
    #[arg(long, default_value_t = 4)]
    exporters: usize,

    /// Explicit exporter source addresses, comma separated (overrides --exporters).
    #[arg(long, value_delimiter = ',')]
    exporter_list: Vec<IpAddr>,

    /// Flow records per datagram: 1–30 for v5, 1–34 for v9/IPFIX (a datagram that also
    /// carries the template sets holds as many as fit in 1,472 bytes: at least 31).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u8).range(1..=34))]
    records: u8,

    /// v9/IPFIX: send the template sets again, at the start of a datagram, every N datagrams
    /// of each exporter (0 = only once) [default: 20].
    #[arg(long, value_name = "N")]
    template_every: Option<u64>,

    /// v9/IPFIX: send K data datagrams per exporter before its first template (the collector
    /// holds them until the template comes) [default: 0].
    #[arg(long, value_name = "K")]
    late_template: Option<u64>,

    /// Seed for every field distribution; the same seed gives the same datagrams.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Flow records drawn before sending and replayed by every exporter, each from its own
    /// place, with the times re-stamped (about 48 bytes each; the default takes 12 MiB and
    /// 30 ms to draw). Drawing a record costs about 120 ns, which at collector-capacity rates
    /// takes CPU from the collector under test; 0 draws every record as it goes out.
    #[arg(long, default_value_t = 262_144, value_name = "N")]
    pool: usize,

    /// First flow_sequence of every exporter (u32, wraps).
    #[arg(long, default_value_t = 0)]
    seq_start: u32,

    /// Starting sys_uptime in ms for every exporter (default: a seeded value per exporter
    /// between 1 hour and 40 days). Values near 4294967295 exercise the uptime wrap.
    #[arg(long)]
    uptime_start: Option<u32>,

    /// Sampling interval, 1 in N: v5 writes it in the header (mode 1; at most 16383), v9 and
    /// IPFIX in options data (scope System / observationDomainId, samplingInterval 34).
    #[arg(long, default_value_t = 0)]
    sampling: u16,

    /// engine_type written in every v5 header (engine_id is the exporter number mod 256); v9
    /// source id / IPFIX observation domain = engine_type × 256 + engine_id.
    #[arg(long, default_value_t = 0)]
    engine_type: u8,

    /// Build every K-th datagram of each exporter but do not send it (tests of loss
    /// detection); sequence numbers advance as if it had been sent.
    #[arg(long, default_value_t = 0)]
    drop_every: u64,

    /// How exporters get distinct source addresses: bind (one bound, connected socket per
    /// exporter; ~10% faster into a reading collector; falls back to pktinfo when
    /// RLIMIT_NOFILE cannot be raised) or pktinfo (one socket per thread, source per message).
    #[arg(long, value_enum, default_value = "bind")]
    source_mode: send::SourceMode,

    /// Datagrams per sendmmsg call.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch: u16,

    /// Hostile datagrams per second sent alongside the valid exporters (0 = none), in the
    /// repeating pattern spoofed, malformed, future, impostor: a valid v5 datagram from a
    /// spoofed source; garbage from a spoofed source (v5 cut short, unknown version, 1–23
    /// bytes, v9 set with an impossible length, in turn); a v5 datagram from a spoofed source
    /// dated 2 days ahead; a v5 datagram from a valid exporter's address with its engine
    /// type/id, a flow sequence at least 2^24 from any it sends in the run, and alternately its
    /// own uptime clock or a random one. Runs from one pktinfo socket, paced, until the valid
    /// senders stop; counted under "hostile" in the report, never in the exporters' lines.
    /// Refused when the exporters' own sequences could leave impostors no such room (a very
    /// long run of one fast exporter).
    #[arg(long, default_value_t = 0, value_name = "R", conflicts_with = "replay")]
    hostile_rate: u64,

    /// Spoofed source addresses of the hostile datagrams (at most 4194304): 127.64.0.1,
    /// 127.64.0.2, … (fd00:6e67::1, … for an IPv6 target); none may be an exporter's address.
    #[arg(long, default_value_t = hostile::DEFAULT_SOURCES, value_name = "N")]
    hostile_sources: u32,

    /// Seed of the hostile datagrams' contents and sources.
    #[arg(long, default_value_t = 7, value_name = "S")]
    hostile_seed: u64,

    /// Replay the UDP payloads of a pcap/pcapng file instead of generating traffic.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,

    /// With --replay: keep only UDP datagrams to this destination port.
    #[arg(long, requires = "replay")]
    replay_port: Option<u16>,

    /// With --replay: stamp v5 headers with the current time (uptime offsets are kept).
    #[arg(long, requires = "replay")]
    rewrite_time: bool,

    /// After sending, compare sent totals with the rows stored in PostgreSQL. Not with
    /// --hostile-rate: its impostor datagrams are stored under the valid exporters' addresses.
    #[arg(
        long,
        requires = "database_url",
        conflicts_with_all = ["replay", "hostile_rate"]
    )]
    verify: bool,

    /// PostgreSQL connection string (URL or key=value; a host starting with '/' is a
    /// unix socket directory).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Schema holding the flows table.
    #[arg(long, env = "DB_SCHEMA", default_value = "netflow")]
    schema: String,

    /// Seconds --verify waits for the stored totals to reach the sent ones.
    #[arg(long, default_value_t = 30.0)]
    verify_timeout: f64,

    /// Seconds without change in the stored totals after which --verify stops waiting.
    #[arg(long, default_value_t = 5.0)]
    verify_settle: f64,
}

fn seconds(name: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{name} must be a non-negative number"))
}

fn check_loopback(target: &SocketAddr) -> Result<()> {
    if !target.ip().is_loopback() {
        bail!(
            "--target {target} is not a loopback address; nfpg-loadgen only sends to 127.0.0.0/8 or ::1"
        );
    }
    Ok(())
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        count as f64 / s
    } else {
        0.0
    }
}

fn run_replay(cli: &Cli, file: &PathBuf) -> Result<Value> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let found = nfpg_wire::pcap::udp_packets(&bytes)
        .with_context(|| format!("parsing {}", file.display()))?;
    let mut payloads: Vec<Vec<u8>> = found
        .into_iter()
        .filter(|p| {
            cli.replay_port
                .is_none_or(|port| p.destination.port() == port)
        })
        .map(|p| p.payload)
        .collect();
    if let Some(c) = cli.count {
        payloads.truncate(usize::try_from(c).unwrap_or(usize::MAX));
    }
    let r = send::replay(&mut payloads, cli.target, cli.rate, cli.rewrite_time)?;
    Ok(json!({
        "replayed_from": file.display().to_string(),
        "started_at_unix_ms": r.started_at_unix_ms,
        "ended_at_unix_ms": r.ended_at_unix_ms,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "rate_dps": rate(r.sent.datagrams, r.elapsed),
        "sent": r.sent,
        "non_v5_datagrams": r.non_v5_datagrams,
        "time_rewritten": r.rewritten,
    }))
}

/// Returns the report and whether it is a success (false only for a failed --verify).
fn run(cli: &Cli) -> Result<(Value, bool)> {
    check_loopback(&cli.target)?;
    if let Some(file) = &cli.replay {
        return Ok((run_replay(cli, file)?, true));
    }
    if cli.count.is_none() && cli.duration.is_none() {
        bail!("give --count or --duration (or both) so the run is bounded");
    }
    if cli.verify {
        verify::check_schema(&cli.schema)?;
    }
    let templated = cli.version.templated().is_some();
    if !templated {
        if cli.records > 30 {
            bail!("--records {}: a v5 datagram holds at most 30", cli.records);
        }
        if cli.sampling > 0x3fff {
            bail!(
                "--sampling {}: the v5 header holds at most 16383",
                cli.sampling
            );
        }
        if cli.template_every.is_some() || cli.late_template.is_some() {
            bail!("--template-every and --late-template are for --version 9 or 10");
        }
    }
    let addrs = if cli.exporter_list.is_empty() {
        if cli.exporters == 0 {
            bail!("--exporters must be at least 1");
        }
        send::default_exporters(cli.exporters, &cli.target)?
    } else {
        for a in &cli.exporter_list {
            if let IpAddr::V4(v4) = a {
                if !v4.is_loopback() {
                    bail!("exporter {a} is not in 127.0.0.0/8");
                }
            }
        }
        cli.exporter_list.clone()
    };
    let hostile = if cli.hostile_rate > 0 {
        hostile::check_sources(cli.hostile_sources, &cli.target, &addrs)?;
        Some(hostile::Plan {
            rate: cli.hostile_rate,
            sources: cli.hostile_sources,
            seed: cli.hostile_seed,
        })
    } else {
        None
    };
    let plan = send::Plan {
        target: cli.target,
        threads: cli.threads.max(1),
        rate: cli.rate,
        count: cli.count,
        duration: cli.duration.map(|d| seconds("--duration", d)).transpose()?,
        batch: usize::from(cli.batch),
        drop_every: cli.drop_every,
        source_mode: cli.source_mode,
        pool: cli.pool,
        profile: traffic::Profile {
            seed: cli.seed,
            version: cli.version,
            records: usize::from(cli.records),
            sampling: cli.sampling,
            seq_start: cli.seq_start,
            uptime_start: cli.uptime_start,
            engine_type: cli.engine_type,
            template_every: cli.template_every.unwrap_or(20),
            late_template: cli.late_template.unwrap_or(0),
        },
    };
    let r = send::run(&plan, &addrs, hostile.as_ref())?;
    let mut report = json!({
        "version": cli.version.number(),
        "started_at_unix_ms": r.started_at_unix_ms,
        "ended_at_unix_ms": r.ended_at_unix_ms,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "rate_dps": rate(r.sent.datagrams + r.dropped_on_purpose.datagrams, r.elapsed),
        "sent_rate_dps": rate(r.sent.datagrams, r.elapsed),
        "sent": r.sent,
        "dropped_on_purpose": r.dropped_on_purpose,
        "source_mode": r.source_mode,
        "exporters": r.exporters,
    });
    if templated {
        report["template_every"] = json!(plan.profile.template_every);
        report["late_template"] = json!(plan.profile.late_template);
    }
    if let Some(h) = &r.hostile {
        report["hostile"] = serde_json::to_value(h)?;
    }
    let mut ok = true;
    if cli.verify {
        let url = cli
            .database_url
            .as_deref()
            .context("--verify needs --database-url or DATABASE_URL")?;
        let expected: Vec<(String, send::Totals)> = r
            .exporters
            .iter()
            .map(|e| {
                (
                    e.address.clone(),
                    // What the exporter generated: a datagram dropped on purpose stands for
                    // one lost on the way, so it counts as sent-and-lost here.
                    send::Totals {
                        datagrams: e.datagrams + e.dropped_on_purpose.datagrams,
                        flows: e.flows + e.dropped_on_purpose.flows,
                        packets: e.packets + e.dropped_on_purpose.packets,
                        bytes: e.bytes + e.dropped_on_purpose.bytes,
                    },
                )
            })
            .collect();
        let v = verify::verify(
            url,
            &cli.schema,
            r.started_at_unix_ms,
            &expected,
            seconds("--verify-timeout", cli.verify_timeout)?,
            seconds("--verify-settle", cli.verify_settle)?,
        )?;
        ok = v.ok;
        report["verify"] = serde_json::to_value(v)?;
    }
    Ok((report, ok))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok((report, ok)) => {
            use std::io::Write;
            // A reader that closed early (`| head`) is not an error of the run.
            let _ = writeln!(std::io::stdout(), "{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("nfpg-loadgen: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
