//! The site data the desktop's tabs read and change through the controller:
//! sites, stats, goals, the CSV export, the quarantine's requeue and backups.
//! Each launches the managed database first when needed (the tabs work with
//! the service stopped) and then calls the engine's own function, so the window
//! and the API never disagree. Apart from `controller.rs`, which owns the
//! service's life cycle.

use std::io::Write;
use std::path::{Path, PathBuf};

use tracing::info;

use crate::desktop::backup::{self, BackupOutcome};
use crate::desktop::controller::Controller;
use crate::sites::{self, SiteGoals};
use crate::stats::export::{self, ExportRequest};
use crate::stats::{SiteStats, SiteSummary};
use crate::worker::quarantine;

impl Controller {
    /// The sites with processed events (launching the managed database if needed).
    pub async fn sites(&self) -> Result<Vec<SiteSummary>, String> {
        self.engine_with_database().await?.sites().await.map_err(|e| e.to_string())
    }

    /// A site's stats, read directly from the database.
    pub async fn site_stats(&self, site_id: &str) -> Result<SiteStats, String> {
        self.engine_with_database().await?.site_stats(site_id).await.map_err(|e| e.to_string())
    }

    /// Saves `site_id`'s export (all time, by day: the CSV of `GET
    /// /stats/export.csv`, made by the same function) in the export dir, under a
    /// name no file there has yet; returns the file's path.
    pub async fn export_site_csv(&self, site_id: &str) -> Result<PathBuf, String> {
        let engine = self.engine_with_database().await?;
        let store = engine.store().await.map_err(|e| e.to_string())?;
        let csv = export::site_csv(store, &ExportRequest::all_time(site_id)).await.map_err(|e| e.to_string())?;
        let dir = self.export_dir();
        let path = save_new_file(dir, &export::file_name(site_id), csv.as_bytes())
            .map_err(|e| format!("cannot save the export in {}: {e}", dir.display()))?;
        info!(path = %path.display(), "site exported");
        Ok(path)
    }

    /// A site's goals (launching the managed database if needed): what `GET
    /// /sites/{site_id}/goals` answers, for the dashboard's goal settings.
    pub async fn site_goals(&self, site_id: &str) -> Result<SiteGoals, String> {
        let engine = self.engine_with_database().await?;
        let store = engine.store().await.map_err(|e| e.to_string())?;
        sites::site_goals(store, site_id).await.map_err(|e| e.to_string())
    }

    /// Replaces a site's goals with `goals` (a list as in `PUT
    /// /sites/{site_id}/goals`' body, by the same rules); returns them as saved.
    pub async fn set_site_goals(&self, site_id: &str, goals: serde_json::Value) -> Result<SiteGoals, String> {
        let engine = self.engine_with_database().await?;
        let store = engine.store().await.map_err(|e| e.to_string())?;
        let body = serde_json::json!({ "goals": goals }).to_string();
        let saved = sites::replace_goals(store, site_id, body.as_bytes()).await.map_err(|e| e.to_string())?;
        info!(site_id, goals = saved.goals.len(), "site goals saved");
        Ok(saved)
    }

    /// Moves every entry set aside in the quarantine back into the queue (the
    /// "Requeue" button), once the cause is fixed; returns how many moved.
    pub async fn requeue_quarantine(&self) -> Result<u64, String> {
        let engine = self.engine_with_database().await?;
        let store = engine.store().await.map_err(|e| e.to_string())?;
        let requeued = quarantine::requeue(store).await.map_err(|e| format!("cannot requeue the quarantine: {e}"))?;
        info!(requeued, "quarantined entries requeued");
        Ok(requeued)
    }

    /// Backs up everything to a new file in the export dir (see [`backup::back_up`]).
    pub async fn back_up(&self) -> Result<BackupOutcome, String> {
        backup::back_up(&self.engine_with_database().await?, self.export_dir()).await
    }

    /// Restores the backup at `path` (see [`backup::restore`]).
    pub async fn restore_backup(&self, path: &str) -> Result<BackupOutcome, String> {
        backup::restore(&self.engine_with_database().await?, path).await
    }
}

/// Writes `contents` to a new file in `dir` (created if missing) named `name`,
/// or `stem (2).ext`, `stem (3).ext`… when taken, as browsers name downloads:
/// an earlier export is never overwritten.
fn save_new_file(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let (stem, extension) = name.rsplit_once('.').unwrap_or((name, ""));
    for attempt in 1..=1000 {
        let candidate = match attempt {
            1 => name.to_string(),
            n if extension.is_empty() => format!("{stem} ({n})"),
            n => format!("{stem} ({n}).{extension}"),
        };
        let path = dir.join(candidate);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(contents)?;
                return Ok(path);
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("{name} and 999 numbered copies exist")))
}
