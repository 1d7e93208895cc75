//! The `nfpg` command: parses the configuration, sets up logging and signals, and runs the
//! collector or one of its commands.

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter};

use nfpg::config::{tracing_level, Cli, Command, LogArgs};
use nfpg::{collector, db, inspect};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Console logging on stderr, plus a file when LOG_FILE is set. `RUST_LOG` overrides the level.
fn init_logging(log: &LogArgs) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(tracing_level(&log.log_level)))
    };
    let console = fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter());
    let (file, guard) = match &log.log_file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            let (w, guard) = tracing_appender::non_blocking(f);
            (
                Some(
                    fmt::layer()
                        .with_ansi(false)
                        .with_writer(w)
                        .with_filter(filter()),
                ),
                Some(guard),
            )
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(console)
        .with(file)
        .init();
    Ok(guard)
}

fn main() {
    // `.env` fills in variables not already set: flags > environment > .env > defaults.
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        // Lines before the bad one are loaded; say so rather than run half-configured quietly.
        Err(e) => eprintln!(
            "nfpg: .env: {e} (values with spaces need quotes); the rest of .env is ignored"
        ),
    }
    let cli = Cli::parse();
    let run_args = match cli.command {
        Some(Command::Run(args)) => args,
        Some(Command::Migrate { db: dbargs, log }) => {
            let _guard = init_logging(&log).ok().flatten();
            if let Err(e) = migrate(&dbargs) {
                eprintln!("nfpg migrate: {e:#}");
                std::process::exit(1);
            }
            return;
        }
        Some(Command::Exporters { db: dbargs }) => {
            exit_on_error("nfpg exporters", exporters(&dbargs));
            return;
        }
        Some(Command::Hist { file, plot, title }) => {
            exit_on_error("nfpg hist", hist(&file, plot.as_deref(), &title));
            return;
        }
        None => cli.run,
    };
    let _guard = match init_logging(&run_args.log) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("nfpg: cannot open the log file: {e}");
            std::process::exit(1);
        }
    };
    let signals = collector::Signals::default();
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while stopping exits at once.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, signals.stop.clone());
        let _ = signal_hook::flag::register(sig, signals.stop.clone());
    }
    let _ = signal_hook::flag::register(signal_hook::consts::SIGUSR1, signals.report.clone());
    let result = if run_args.test {
        inspect::test_mode(&run_args)
    } else {
        collector::run(&run_args, signals).and_then(|summary| {
            let json = serde_json::to_string(&summary)?;
            println!("{json}");
            if let Some(path) = &run_args.summary_file {
                std::fs::write(path, format!("{json}\n"))?;
            }
            Ok(())
        })
    };
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("nfpg: {e:#}");
        std::process::exit(1);
    }
}

fn exit_on_error(what: &str, r: Result<()>) {
    if let Err(e) = r {
        eprintln!("{what}: {e:#}");
        std::process::exit(1);
    }
}

fn hist(file: &std::path::Path, plot: Option<&std::path::Path>, title: &str) -> Result<()> {
    let (merged, intervals) = nfpg::histreport::read_log(file)?;
    print!("{}", nfpg::histreport::table(&merged, intervals));
    if let Some(out) = plot {
        std::fs::write(out, nfpg::histreport::svg(&merged, title))?;
        println!("plot written to {}", out.display());
    }
    Ok(())
}

fn exporters(args: &nfpg::config::DbArgs) -> Result<()> {
    let schema = db::Schema::new(&args.schema)?;
    let database = collector::open_database(&args.target())?;
    let mut client = db::connect(&database.conninfo)?;
    let rows = client.query(
        &schema.render(
            "SELECT host(exporter), engine_type, engine_id, netflow_version, sampling_interval,
                    datagrams, flows, flows_lost,
                    CASE WHEN flows + flows_lost > 0 THEN 100.0 * flows_lost / (flows + flows_lost) ELSE 0 END::float8,
                    restarts, datagrams_per_s,
                    to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                    to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                    extract(epoch FROM now() - last_seen)::int8
             FROM {schema}.exporters ORDER BY flows DESC",
        ),
        &[],
    )?;
    println!(
        "{:<39} {:>7} {:>3} {:>5} {:>12} {:>14} {:>12} {:>7} {:>8} {:>9} {:<19} {:>9}",
        "exporter",
        "engine",
        "ver",
        "samp",
        "datagrams",
        "flows",
        "lost",
        "lost%",
        "restarts",
        "dgram/s",
        "last seen (UTC)",
        "silent s"
    );
    for r in &rows {
        println!(
            "{:<39} {:>7} {:>3} {:>5} {:>12} {:>14} {:>12} {:>7.3} {:>8} {:>9.1} {:<19} {:>9}",
            r.get::<_, String>(0),
            format!("{}/{}", r.get::<_, i16>(1), r.get::<_, i16>(2)),
            r.get::<_, Option<i16>>(3).unwrap_or(0),
            r.get::<_, Option<i32>>(4).unwrap_or(0),
            r.get::<_, i64>(5),
            r.get::<_, i64>(6),
            r.get::<_, i64>(7),
            r.get::<_, f64>(8),
            r.get::<_, i64>(9),
            r.get::<_, Option<f64>>(10).unwrap_or(0.0),
            r.get::<_, String>(12),
            r.get::<_, i64>(13),
        );
    }
    println!("{} exporters", rows.len());
    Ok(())
}

fn migrate(args: &nfpg::config::DbArgs) -> Result<()> {
    let schema = db::Schema::new(&args.schema)?;
    let database = collector::open_database(&args.target())?;
    let mut client = db::connect(&database.conninfo)?;
    let applied = db::migrate(&mut client, &schema)?;
    db::ensure_partitions(&mut client, &schema, 3)?;
    if applied.is_empty() {
        println!("schema {} is up to date", schema.name());
    } else {
        println!("applied: {}", applied.join(", "));
    }
    Ok(())
}
