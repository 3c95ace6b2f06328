//! The desktop app's own preferences: how the app lives on the machine (in the
//! background, at login, first run), as opposed to the engine's [`Settings`]
//! (what the service does). Kept apart because they never restart the service and
//! the headless binary has none of them. Stored as JSON beside the settings file.
//!
//! [`Settings`]: crate::config::desktop_settings::Settings

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The app's preferences; a missing field takes its default, so older files load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Preferences {
    /// Closing the window keeps collecting (the app stays in the tray): on by
    /// default, since a closed window that stops collection loses visitors.
    pub keep_running_in_background: bool,
    /// Whether the user was told, once, that closing the window keeps collecting.
    pub background_notice_shown: bool,
    /// Launch the app when the user logs in (off until the user turns it on).
    pub start_on_login: bool,
    /// Start the service when the app opens (off until the user turns it on).
    pub start_service_on_open: bool,
    /// Whether the first-run flow was completed (or skipped).
    pub first_run_done: bool,
}

impl Default for Preferences {
    fn default() -> Preferences {
        Preferences {
            keep_running_in_background: true,
            background_notice_shown: false,
            start_on_login: false,
            start_service_on_open: false,
            first_run_done: false,
        }
    }
}

/// Why the preferences could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PreferencesError {
    /// The file could not be read or written.
    #[error("preferences file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not the JSON we write.
    #[error("preferences file {path} is damaged: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// Where the preferences live: beside the settings file.
pub fn file_beside(settings_file: &Path) -> PathBuf {
    settings_file.with_file_name("preferences.json")
}

impl Preferences {
    /// Reads the preferences; the defaults when the file does not exist yet.
    pub fn load(path: &Path) -> Result<Preferences, PreferencesError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| PreferencesError::Format { path: path.to_path_buf(), source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Preferences::default()),
            Err(source) => Err(PreferencesError::Io { path: path.to_path_buf(), source }),
        }
    }

    /// Writes the preferences (creating the directory), replaced atomically so a
    /// crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<(), PreferencesError> {
        let io_error = |source| PreferencesError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_error)?;
        }
        let temporary = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).expect("plain fields serialize");
        std::fs::write(&temporary, json).map_err(io_error)?;
        std::fs::rename(&temporary, path).map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_gives_the_defaults_and_a_saved_one_reads_back() {
        let dir = std::env::temp_dir().join(format!("prefs-{}", std::process::id()));
        let path = file_beside(&dir.join("settings.json"));
        let _ = std::fs::remove_file(&path);
        let defaults = Preferences::load(&path).unwrap();
        assert!(defaults.keep_running_in_background && !defaults.start_on_login && !defaults.first_run_done);

        let changed = Preferences { start_on_login: true, first_run_done: true, ..defaults };
        changed.save(&path).unwrap();
        assert_eq!(Preferences::load(&path).unwrap(), changed);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_older_file_without_some_fields_takes_their_defaults_and_a_damaged_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("prefs-old-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("preferences.json");
        std::fs::write(&path, r#"{"first_run_done": true}"#).unwrap();
        let loaded = Preferences::load(&path).unwrap();
        assert!(loaded.first_run_done && loaded.keep_running_in_background);
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(Preferences::load(&path), Err(PreferencesError::Format { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
