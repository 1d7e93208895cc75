//! The `nfpg` command: parses the configuration, sets up logging and signals, and runs the
//! collector or one of its commands.

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter};

use nfpg::config::{tracing_level, Cli, Command, LogArgs};
use nfpg::{cmd, collector};

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
    // Before the allocator reserves anything large (see the function's doc).
    nfpg::sys::no_transparent_huge_pages();
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
            if let Err(e) = cmd::migrate::run(&dbargs) {
                eprintln!("nfpg migrate: {e:#}");
                std::process::exit(1);
            }
            return;
        }
        Some(Command::Exporters { db: dbargs }) => {
            exit_on_error("nfpg exporters", cmd::exporters::run(&dbargs));
            return;
        }
        Some(Command::Top {
            last,
            by,
            limit,
            json,
            db,
        }) => {
            exit_on_error("nfpg top", cmd::top::run(&db, last, by, limit, json));
            return;
        }
        Some(Command::Anomalies {
            window,
            min_flows,
            json,
            db,
        }) => {
            exit_on_error(
                "nfpg anomalies",
                cmd::anomalies::run(&db, window, min_flows, json),
            );
            return;
        }
        Some(Command::Hist { file, plot, title }) => {
            exit_on_error("nfpg hist", cmd::hist::hist(&file, plot.as_deref(), &title));
            return;
        }
        Some(Command::Server {
            data_dir,
            create_db,
            log,
        }) => {
            let _guard = init_logging(&log).ok().flatten();
            // The flag only: the server is always stopped before exiting, never left behind.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                let _ = signal_hook::flag::register(sig, stop.clone());
            }
            exit_on_error(
                "nfpg server",
                cmd::server::run(&data_dir, &create_db, &stop),
            );
            return;
        }
        Some(Command::Spool { spool_dir, db }) => {
            let dir = spool_dir.unwrap_or_else(|| db.default_spool_dir());
            exit_on_error("nfpg spool", cmd::spool::run(&dir, &db.schema));
            return;
        }
        Some(Command::Describe) => {
            exit_on_error("nfpg describe", cmd::describe::run());
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
        cmd::test_mode::test_mode(&run_args)
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
