//! The `nfpg` command: parses the configuration, sets up logging and signals, and runs the
//! collector or one of its commands.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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
    let _ = dotenvy::dotenv();
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
        None => cli.run,
    };
    let _guard = match init_logging(&run_args.log) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("nfpg: cannot open the log file: {e}");
            std::process::exit(1);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while stopping exits at once.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone());
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let result = if run_args.test {
        inspect::test_mode(&run_args)
    } else {
        collector::run(&run_args, stop).and_then(|summary| {
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

fn migrate(args: &nfpg::config::DbArgs) -> Result<()> {
    let schema = db::Schema::new(&args.schema)?;
    let database = collector::open_database(&args.target())?;
    let mut client = db::connect(&database.conninfo)?;
    let applied = db::migrate(&mut client, &schema)?;
    db::maintain_partitions(&mut client, &schema, 3)?;
    if applied.is_empty() {
        println!("schema {} is up to date", schema.name());
    } else {
        println!("applied: {}", applied.join(", "));
    }
    Ok(())
}
