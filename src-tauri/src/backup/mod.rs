//! Backup and restore: every raw event (processed, and queued but not yet
//! moved), every site with its goals and the engine's settings (no secrets)
//! in one gzip'd NDJSON file ([`format`]), written with bounded memory
//! ([`write`]) and restored into an empty or existing database ([`restore`]),
//! skipping what is already there. The CLI (`analytics-service backup|restore`)
//! and the desktop app both call these; issue #17's raw export reuses the format.

pub mod format;
pub mod restore;
pub mod write;

use std::path::PathBuf;

use crate::config::Config;
use crate::storage::StoreError;

pub use format::{Counts, FORMAT_NAME, FORMAT_VERSION, Header, Kind};
pub use restore::{RestoreSummary, restore_backup};
pub use write::{Scope, write_backup};

/// One engine setting as a backup holds it: its environment name and value.
/// Secrets are never among them (see [`settings_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The environment variable's name (`RETENTION_DAYS`, ...).
    pub key: String,
    /// Its value as the environment would give it.
    pub value: String,
}

/// The settings of `config` a backup records, so a restored machine can be set
/// up the same way: `API_TOKEN` is left out and `MONGO_URL`'s password masked,
/// so a backup file never holds a secret.
pub fn settings_of(config: &Config) -> Vec<Setting> {
    let joined = |items: &[String]| items.join(",");
    let mut settings = vec![
        ("HOST", config.host.to_string()),
        ("PORT", config.port.to_string()),
        ("MONGO_URL", config.masked_mongo_url()),
        ("QUEUE_NAME", config.queue_name.clone()),
        ("BATCH_SIZE", config.batch_size.to_string()),
        ("POLL_MS", config.poll_interval.as_millis().to_string()),
        ("PUBLIC_HOSTS", joined(&config.public_hosts)),
    ];
    if let Some(sites) = &config.allowed_sites {
        settings.push(("ALLOWED_SITES", joined(sites)));
    }
    if let Some(days) = config.retention_days {
        settings.push(("RETENTION_DAYS", days.to_string()));
    }
    settings.push(("TRUSTED_PROXIES", config.trusted_proxies.to_string()));
    settings.push(("EXCLUDED_IPS", config.excluded_ips.to_string()));
    if let Some(city_db) = &config.data_sets.geoip_city_db {
        settings.push(("GEOIP_DB", city_db.display().to_string()));
    }
    settings.into_iter().map(|(key, value)| Setting { key: key.to_string(), value }).collect()
}

/// Why a backup could not be written or restored. Every restore error met
/// before the first write (a foreign, damaged or truncated file) means nothing
/// was stored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("write", "read").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The file is not an Analytics Desk backup.
    #[error("{path} is not an Analytics Desk backup ({reason}): nothing was restored")]
    NotABackup {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The file is a backup, but damaged: a line that does not parse, or
    /// compressed data cut short or corrupt.
    #[error("the backup {path} is damaged at line {line}: {reason}; nothing was restored")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The line (1 is the header).
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The site given to `--site` is not one an event could have.
    #[error("--site {0}")]
    InvalidSite(&'static str),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<mongodb::error::Error> for BackupError {
    fn from(error: mongodb::error::Error) -> Self {
        BackupError::Store(error.into())
    }
}
