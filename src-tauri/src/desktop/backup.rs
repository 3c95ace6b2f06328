//! The desktop app's backup and restore (the Settings tab's **Back up…** and
//! **Restore…**): a backup goes to a new file in the export dir, named by the
//! day and never overwriting an earlier one; a restore reads the path the
//! user gives. Both run `crate::backup` and answer with what the window shows.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tracing::info;

use crate::backup::{self as engine_backup, Scope};
use crate::engine::{Engine, PartStatus};

/// What the window shows after a backup or a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupOutcome {
    /// The backup file written or read.
    pub path: String,
    /// Events written (backup) or queued for the worker (restore).
    pub events: u64,
    /// Events left out by a restore because they are already stored.
    pub skipped: u64,
    /// Sites written or upserted.
    pub sites: u64,
    /// One sentence saying all of it.
    pub message: String,
}

/// Writes a backup of every site (settings without secrets) to a new file in
/// `export_dir` (created if missing): `analytics-desk-backup-DAY.ndjson.gz`,
/// or `... (2).ndjson.gz` and so on when taken.
pub async fn back_up(engine: &Engine, export_dir: &Path) -> Result<BackupOutcome, String> {
    let store = engine.store().await.map_err(|e| e.to_string())?;
    let day = mongodb::bson::DateTime::now().try_to_rfc3339_string().unwrap_or_default();
    let name = format!("analytics-desk-backup-{}", day.get(..10).unwrap_or("today"));
    let path = reserve_new_file(export_dir, &name, ".ndjson.gz")
        .map_err(|e| format!("cannot save the backup in {}: {e}", export_dir.display()))?;
    let settings = engine_backup::settings_of(engine.config());
    let written = engine_backup::write_backup(store, &path, &Scope::default(), &settings).await;
    let header = written.map_err(|error| {
        let _ = std::fs::remove_file(&path);
        error.to_string()
    })?;
    let counts = header.counts;
    let message = format!(
        "Backed up {} events, {} sites and {} settings (no passwords or tokens) to {}",
        counts.events,
        counts.sites,
        counts.settings,
        path.display()
    );
    info!(path = %path.display(), events = counts.events, "backup saved");
    Ok(BackupOutcome {
        path: path.display().to_string(),
        events: counts.events,
        skipped: 0,
        sites: counts.sites,
        message,
    })
}

/// Restores the backup at `path` (an absolute path, as typed in the field):
/// what is already stored is skipped, the rest queued for the worker.
pub async fn restore(engine: &Engine, path: &str) -> Result<BackupOutcome, String> {
    let path = PathBuf::from(path.trim());
    if path.as_os_str().is_empty() || !path.is_absolute() {
        return Err("Backup file: give the full path of a backup, e.g. \
                    /home/you/Downloads/analytics-desk-backup-2026-01-31.ndjson.gz"
            .to_string());
    }
    let store = engine.store().await.map_err(|e| e.to_string())?;
    let summary = engine_backup::restore_backup(store, &path).await.map_err(|e| e.to_string())?;
    let worker_note = match (summary.events_restored, engine.status().worker) {
        (0, _) => "",
        (_, PartStatus::Running { .. }) => " (the worker is adding them to the figures)",
        _ => " (start the service to add them to the figures)",
    };
    let message = format!(
        "Restored {} events{worker_note}; skipped {} already stored; {} sites restored. \
         The {} settings in the file were not applied.",
        summary.events_restored,
        summary.events_skipped,
        summary.sites,
        summary.settings.len()
    );
    Ok(BackupOutcome {
        path: path.display().to_string(),
        events: summary.events_restored,
        skipped: summary.events_skipped,
        sites: summary.sites,
        message,
    })
}

/// Creates `dir/{stem}{extension}`, or `{stem} (N){extension}` when taken, and
/// returns its path: the backup then replaces this empty file, never an earlier backup.
fn reserve_new_file(dir: &Path, stem: &str, extension: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for attempt in 1..=1000 {
        let name = match attempt {
            1 => format!("{stem}{extension}"),
            n => format!("{stem} ({n}){extension}"),
        };
        let path = dir.join(name);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => return Ok(path),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("{stem}{extension} and 999 numbered copies exist"),
    ))
}
