//! The app's data folder (the managed database's files, under the OS data
//! directory) opened in the system's file manager, for the Settings tab's
//! **Open folder** button: `xdg-open` on Linux and BSDs, `open` on macOS,
//! `explorer` on Windows.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why the folder could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum OpenFolderError {
    /// The folder could not be created.
    #[error("cannot create the data folder {path}: {source}")]
    Create {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file manager could not be started.
    #[error("cannot open {path} with {program} ({source}): open it in your file manager")]
    Launch {
        /// The folder.
        path: PathBuf,
        /// The program tried.
        program: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The program that opens a folder in this system's file manager.
pub fn opener() -> &'static str {
    if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    }
}

/// Opens `path` (created first, so a fresh install has something to show) in
/// the file manager with `program`, without waiting for it.
pub fn open_with(program: &'static str, path: &Path) -> Result<(), OpenFolderError> {
    std::fs::create_dir_all(path).map_err(|source| OpenFolderError::Create { path: path.to_path_buf(), source })?;
    let mut child = Command::new(program)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| OpenFolderError::Launch { path: path.to_path_buf(), program, source })?;
    // Reap it in the background so it leaves no zombie.
    std::thread::spawn(move || child.wait());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_is_created_and_a_missing_opener_is_said_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("analytics-desk");
        let error = open_with("analytics-desk-no-such-opener", &folder).unwrap_err().to_string();
        assert!(folder.is_dir(), "created before opening");
        assert!(error.contains("analytics-desk-no-such-opener") && error.contains("open it in your file manager"));
        open_with("true", &folder).expect("an opener that exists is started");
    }
}
