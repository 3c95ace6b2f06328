//! `analytics-service`: the engine without a window, for servers. Reads the same
//! environment and `.env` as the original Node service; `api` and `worker` can
//! run as separate processes on separate machines, `all` runs both;
//! `backup FILE` / `restore FILE` write and read a backup (see `analytics_desk::backup`).

use std::path::PathBuf;
use std::process::ExitCode;

use analytics_desk::backup::{self, BackupError, Scope};
use analytics_desk::engine::shutdown_signal;
use analytics_desk::worker::quarantine;
use analytics_desk::{Config, Engine, telemetry};
use clap::{Parser, Subcommand};
use tracing::info;

/// Local web analytics: ingestion API, queue worker and exact stats on MongoDB.
///
/// Configuration comes from the environment and a .env file in the working
/// directory: PORT (1000), HOST (127.0.0.1), MONGO_URL
/// (mongodb://localhost:27017/analytics_db), QUEUE_NAME (events_queue),
/// BATCH_SIZE (1000), POLL_MS (200). Logs go to stderr, filtered by RUST_LOG.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Clone, PartialEq, Eq)]
enum Command {
    /// Run the ingestion and stats API only.
    Api,
    /// Run the queue worker only.
    Worker,
    /// Run the API and the worker in one process.
    All,
    /// Queue entries the database refused to move, set aside by the worker.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Write every raw event (processed and queued), site, goal and setting
    /// (no secrets) to FILE: gzip'd NDJSON, replaced if it exists.
    Backup {
        /// The file to write (e.g. analytics-backup.ndjson.gz).
        file: PathBuf,
        /// Back up this site only.
        #[arg(long)]
        site: Option<String>,
    },
    /// Restore a backup written by `backup`: events already stored (same `_id`
    /// or `event_id`) are skipped, the rest queued for the worker; sites
    /// upserted; settings shown, not applied. A damaged file restores nothing.
    Restore {
        /// The backup file.
        file: PathBuf,
    },
}

/// What to do with the quarantine (`events_quarantine`).
#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum QuarantineCommand {
    /// List the entries set aside (oldest first, at most 100) with the reason.
    List,
    /// Move every entry set aside back into the queue (same ids), once the cause is fixed.
    Requeue,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("analytics-service: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    if let Command::Quarantine(action) = cli.command {
        return run_quarantine(action, Engine::new(config)).await;
    }
    if matches!(cli.command, Command::Backup { .. } | Command::Restore { .. }) {
        return run_backup(cli.command, Engine::new(config)).await;
    }
    info!(?config, "starting");
    let engine = Engine::new(config);

    let started = async {
        if matches!(cli.command, Command::Api | Command::All) {
            engine.start_api().await?;
        }
        if matches!(cli.command, Command::Worker | Command::All) {
            engine.start_worker().await?;
        }
        Ok::<_, analytics_desk::StartError>(())
    };
    // Listen for the stop signals from the start: a SIGTERM while start-up still
    // waits for the database must stop the process cleanly too.
    let signal = shutdown_signal();
    tokio::pin!(signal);
    tokio::select! {
        result = started => if let Err(error) = result {
            eprintln!("analytics-service: cannot start: {error}");
            engine.shutdown().await;
            return ExitCode::FAILURE;
        },
        _ = &mut signal => {
            info!("stop requested during start-up");
            engine.shutdown().await;
            info!("stopped");
            return ExitCode::SUCCESS;
        }
    }

    signal.await;
    info!("shutting down: finishing requests in flight and the current batch");
    engine.shutdown().await;
    info!("stopped");
    ExitCode::SUCCESS
}

/// Lists or requeues the quarantine, then exits: 0 done, 1 when the database failed.
async fn run_quarantine(action: QuarantineCommand, engine: Engine) -> ExitCode {
    let done = async {
        let store = engine.store().await?;
        match action {
            QuarantineCommand::List => {
                let total = quarantine::count(store).await?;
                let entries = quarantine::list(store, 100).await?;
                println!("{total} entries in {}", quarantine::QUARANTINE_COLLECTION);
                for entry in entries {
                    let at = entry.quarantined_at.try_to_rfc3339_string().unwrap_or_default();
                    let site = entry.site_id.as_deref().unwrap_or("-");
                    println!("{}\t{site}\t{at}\t{}", entry.id, entry.error);
                }
            }
            QuarantineCommand::Requeue => {
                let requeued = quarantine::requeue(store).await?;
                println!("requeued {requeued} entries");
            }
        }
        Ok::<_, analytics_desk::storage::StoreError>(())
    };
    let result = done.await;
    engine.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("analytics-service: quarantine: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes or restores a backup, printing a summary line, then exits: 0 done,
/// 1 when the file or the database failed (the message says which).
async fn run_backup(command: Command, engine: Engine) -> ExitCode {
    let settings = backup::settings_of(engine.config());
    let done = async {
        let store = engine.store().await?;
        match command {
            Command::Backup { file, site } => {
                let header = backup::write_backup(store, &file, &Scope { site }, &settings).await?;
                let counts = header.counts;
                println!(
                    "backed up {} events, {} sites, {} settings (no secrets) to {}",
                    counts.events,
                    counts.sites,
                    counts.settings,
                    file.display()
                );
            }
            Command::Restore { file } => {
                let summary = backup::restore_backup(store, &file).await?;
                println!(
                    "restored {} events (queued: the worker adds them to the figures), skipped {} already stored; \
                     {} sites upserted; {} settings in the file, not applied",
                    summary.events_restored,
                    summary.events_skipped,
                    summary.sites,
                    summary.settings.len()
                );
            }
            _ => unreachable!("only backup and restore come here"),
        }
        Ok::<_, BackupError>(())
    };
    let result = done.await;
    engine.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("analytics-service: {error}");
            ExitCode::FAILURE
        }
    }
}
