//! Local database: the MongoDB-wire server the desktop app launches itself when
//! `MONGO_URL` points at this machine and nothing answers there. It runs `mongod`
//! if the machine has one, else SecantusDB's `secantusd-rs` (shipped beside the
//! app as a sidecar). Always a separate process: SecantusDB is GPL-2.0 and is
//! never linked into our binaries.
//!
//! The server holds the app's data (events, the visitor salts) and has no
//! authentication, so it must be reachable from this machine only and be the
//! process we started: it gets `--host 127.0.0.1` and a config file of the
//! app's own (`secantusd-rs` would otherwise read a `secantusd.toml` from its
//! working directory, `~/.secantus/` or `/etc/secantus/`, which could bind it to
//! every interface), runs in its data directory, private to the user (`0700`,
//! its log `0600`), and is only used once the process answering on the port is
//! known to be it ([`super::port_owner`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::process::Command;
use tracing::{info, warn};

use super::port_owner;
use crate::config::{Config, url_parts};

/// How long a freshly started server may take to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to stop after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which server program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ServerKind {
    /// MongoDB's own `mongod`.
    #[serde(rename = "mongod")]
    Mongod,
    /// SecantusDB's `secantusd-rs`.
    #[serde(rename = "secantusd-rs")]
    Secantus,
}

/// The state of the database, as the UI shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseState {
    /// The user's own database: not managed by the app.
    External,
    /// The managed server is starting.
    Starting,
    /// The managed server runs.
    Running,
    /// No managed server runs (yet).
    Stopped,
    /// The managed server could not start.
    Failed,
}

/// What the UI shows about the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseStatus {
    /// Managed or not, and how it goes.
    pub state: DatabaseState,
    /// The managed server's program.
    pub kind: Option<ServerKind>,
    /// Its version line.
    pub version: Option<String>,
    /// Where it keeps its data.
    pub data_path: Option<String>,
    /// `MONGO_URL`, password masked.
    pub url: String,
    /// Why it failed.
    pub reason: Option<String>,
}

impl DatabaseStatus {
    /// The status before anything was started for `config`.
    pub fn initial(config: &Config) -> DatabaseStatus {
        let state = if local_port(config).is_some() { DatabaseState::Stopped } else { DatabaseState::External };
        DatabaseStatus {
            state,
            kind: None,
            version: None,
            data_path: None,
            url: config.masked_mongo_url(),
            reason: None,
        }
    }
}

/// Why the local database could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalDbError {
    /// Neither `mongod` nor `secantusd-rs` was found.
    #[error(
        "no database answers at {url} and no local database program was found: install MongoDB (mongod), \
         or put secantusd-rs beside the app, or set MONGO_URL to a running database"
    )]
    NoServerProgram {
        /// `MONGO_URL`, masked.
        url: String,
    },
    /// The program could not be run.
    #[error("cannot start the local database {program}: {source}")]
    Spawn {
        /// The program's path.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The program ran but did not accept connections in time.
    #[error("the local database {program} did not start within {timeout:?}: {detail}")]
    NotReady {
        /// The program's path.
        program: String,
        /// How long we waited.
        timeout: Duration,
        /// Exit status or "still not listening".
        detail: String,
    },
    /// Another program listens on the port (before the start, or instead of
    /// the server we started): it would receive the app's data, so it is not used.
    #[error(
        "port {port} is held by another program (listening on {addresses}), not by the local database the app \
         starts: refusing to use it, since it would receive the app's data. Stop that program, or set MONGO_URL \
         to another port"
    )]
    PortTaken {
        /// The port of `MONGO_URL`.
        port: u16,
        /// Where the other program listens.
        addresses: String,
    },
    /// The data directory or the server's own files could not be prepared.
    #[error("cannot prepare the local database's files at {path}: {source}")]
    Files {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The port of `MONGO_URL` when it names one host on this machine
/// (`localhost`, `127.0.0.1`, `[::1]`), the only case where we may start a server.
pub fn local_port(config: &Config) -> Option<u16> {
    let parts = url_parts(&config.mongo_url).filter(|p| p.scheme == "mongodb" && !p.hosts.contains(','))?;
    let host_port = parts.hosts;
    // `[::1]` has colons of its own: a port follows only the closing bracket.
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host_port.ends_with(']') => (host, port.parse().ok()?),
        _ => (host_port, 27017),
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]").then_some(port)
}

/// True when something accepts TCP connections on `port` of loopback: on
/// 127.0.0.1 or on [::1] (where `localhost` may lead first).
pub async fn answers(port: u16) -> bool {
    port_owner::accepts(IpAddr::V4(Ipv4Addr::LOCALHOST), port).await
        || port_owner::accepts(IpAddr::V6(Ipv6Addr::LOCALHOST), port).await
}

/// Finds a server program: `mongod` on the PATH first, else `secantusd-rs` in
/// `sidecar_dir` (beside the app), at `SECANTUSD_BIN`, in the scripts' cache, or on the PATH.
pub fn find_server(sidecar_dir: Option<&Path>) -> Option<(ServerKind, PathBuf)> {
    if let Some(mongod) = on_path("mongod") {
        return Some((ServerKind::Mongod, mongod));
    }
    let candidates = [
        sidecar_dir.map(|dir| dir.join("secantusd-rs")),
        std::env::var_os("SECANTUSD_BIN").map(PathBuf::from),
        directories::BaseDirs::new()
            .map(|d| d.cache_dir().join("analytics-desk/secantus-0.5.3-beta.196/bin/secantusd-rs")),
        on_path("secantusd-rs"),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file()).map(|p| (ServerKind::Secantus, p))
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// A database server process started by us. It never outlives the app: stopped
/// by [`ManagedDatabase::stop`], killed if dropped, and on Linux sent SIGTERM by
/// the kernel if the app dies without either (killed, crashed).
#[derive(Debug)]
pub struct ManagedDatabase {
    pid: u32,
    exited: tokio::sync::watch::Receiver<Option<String>>,
    /// Which program runs.
    pub kind: ServerKind,
    /// Its `--version` line.
    pub version: String,
    /// Its data directory.
    pub data_path: PathBuf,
    /// The loopback port it listens on.
    pub port: u16,
}

impl ManagedDatabase {
    /// Starts `program` on `port` of 127.0.0.1 with its data in `data_path`
    /// (made private to the user), and waits until it accepts connections.
    /// Refuses if another program listens on the port of 127.0.0.1 or [::1],
    /// before the start or instead of the started server.
    pub async fn start(
        kind: ServerKind,
        program: &Path,
        port: u16,
        data_path: &Path,
    ) -> Result<ManagedDatabase, LocalDbError> {
        let name = program.display().to_string();
        refuse_foreign_listeners(port, None).await?;
        let log_path = data_path.with_extension("log");
        let log = prepare_files(data_path, &log_path)?;
        let version = version_of(program).await;
        let command = server_command(kind, program, port, data_path, log)?;
        let spawn_error = |source| LocalDbError::Spawn { program: name.clone(), source };
        let (pid, exited) = spawn_watched(command).map_err(spawn_error)?;
        let database = ManagedDatabase { pid, exited, kind, version, data_path: data_path.to_path_buf(), port };
        info!(program = %name, port, data = %data_path.display(), "starting the local database");

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // Whoever else listens meanwhile (a squatter quicker than our
            // server, on 127.0.0.1 or [::1]) is refused, even once ours is up.
            if let Err(error) = refuse_foreign_listeners(port, Some(pid)).await {
                database.stop().await;
                return Err(error);
            }
            if port_owner::listens(pid, port).await {
                break;
            }
            let detail = match database.exited.borrow().clone() {
                Some(status) => Some(format!("it exited ({status}); see {}", log_path.display())),
                None if Instant::now() > deadline => Some("it is still not listening".to_string()),
                None => None,
            };
            if let Some(detail) = detail {
                database.stop().await;
                return Err(LocalDbError::NotReady { program: name, timeout: START_TIMEOUT, detail });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        info!(port, "local database ready");
        Ok(database)
    }

    /// Asks the server to stop (SIGTERM, so it closes its files cleanly) and
    /// waits; kills it if it does not stop in time.
    pub async fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let mut exited = self.exited.clone();
        match tokio::time::timeout(STOP_TIMEOUT, exited.wait_for(Option::is_some)).await {
            Ok(_) => info!("local database stopped"),
            Err(_) => {
                warn!("local database did not stop in time; killing it");
                self.signal(libc::SIGKILL);
            }
        }
        self.pid = 0; // stopped: nothing left for Drop
    }

    fn signal(&self, signal: libc::c_int) {
        if self.pid != 0 && self.exited.borrow().is_none() {
            // SAFETY: a plain syscall on our own child, which its watcher thread
            // has not reaped yet (it reaps only after the child exits).
            unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        }
    }
}

impl Drop for ManagedDatabase {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Errs when a process other than `ours` listens on `port` where this
/// machine's loopback connections would reach it.
async fn refuse_foreign_listeners(port: u16, ours: Option<u32>) -> Result<(), LocalDbError> {
    let foreign = port_owner::foreign_listeners(port, ours).await;
    if foreign.is_empty() {
        return Ok(());
    }
    let addresses = foreign.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    warn!(port, %addresses, "another program holds the local database's port");
    Err(LocalDbError::PortTaken { port, addresses })
}

/// Creates the data directory private to the user (`0700`, also when an
/// earlier version left it open) and opens the log, truncated, readable by the
/// user only (`0600`).
fn prepare_files(data_path: &Path, log_path: &Path) -> Result<std::fs::File, LocalDbError> {
    let files_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LocalDbError::Files { path, source }
    };
    std::fs::create_dir_all(data_path).map_err(files_error(data_path))?;
    set_private(data_path, 0o700).map_err(files_error(data_path))?;
    let log = private_file(log_path).map_err(files_error(log_path))?;
    Ok(log)
}

/// Opens `path` for writing, truncated, mode `0600` (also when it existed).
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    set_private(path, 0o600)?;
    Ok(file)
}

fn set_private(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// The server's command line, working directory and environment. For
/// `secantusd-rs` the app writes its own config file (beside the data,
/// `0600`) and passes it with `--config`, which turns off the search for
/// `secantusd.toml` elsewhere; the flags repeat what matters most, since flags
/// win over any file. Its `SECANTUS_*` environment variables (storage modes)
/// are removed: the app's config is the whole truth.
fn server_command(
    kind: ServerKind,
    program: &Path,
    port: u16,
    data_path: &Path,
    log: std::fs::File,
) -> Result<std::process::Command, LocalDbError> {
    let mut command = std::process::Command::new(program);
    let port_text = port.to_string();
    match kind {
        ServerKind::Mongod => {
            command.args(["--bind_ip", "127.0.0.1", "--port", &port_text, "--dbpath"]).arg(data_path);
        }
        ServerKind::Secantus => {
            let config_path = data_path.with_extension("secantusd.toml");
            let files_error = |source| LocalDbError::Files { path: config_path.clone(), source };
            let mut config = private_file(&config_path).map_err(files_error)?;
            std::io::Write::write_all(&mut config, secantus_config(port, data_path).as_bytes()).map_err(files_error)?;
            // --sync-on-commit: without it secantusd-rs acknowledges journaled
            // writes before they reach the disk, and a crash could lose events
            // already answered "queued" (seen in tests/faults.rs).
            command.arg("--config").arg(&config_path);
            command.args(["--host", "127.0.0.1", "--port", &port_text, "--cache-size", "512M", "--sync-on-commit"]);
            command.arg("--storage-path").arg(data_path);
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("SECANTUS_") {
                    command.env_remove(key);
                }
            }
        }
    }
    command.current_dir(data_path).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    Ok(command)
}

/// The app's `secantusd.toml`: loopback only, no test commands, durable commits.
fn secantus_config(port: u16, data_path: &Path) -> String {
    // A JSON string is a valid TOML basic string (same escapes).
    let storage_path = serde_json::to_string(&data_path.to_string_lossy()).expect("a string serializes");
    format!(
        "# Written by Analytics Desk at each start of its local database; edits are overwritten.\n\
         [server]\nhost = \"127.0.0.1\"\nport = {port}\nstorage_path = {storage_path}\n\
         enable_test_commands = false\n\n\
         [storage]\ncache_size = \"512M\"\nsync_on_commit = true\n"
    )
}

/// Spawns `command` from a thread of its own that waits for it and reports its
/// exit. The child is asked (Linux: `PR_SET_PDEATHSIG`) to get SIGTERM when that
/// thread ends, and the thread ends only with the child or with the whole process,
/// so the server cannot outlive the app even if the app is killed.
fn spawn_watched(
    mut command: std::process::Command,
) -> std::io::Result<(u32, tokio::sync::watch::Receiver<Option<String>>)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe, as pre_exec requires.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let (spawned_tx, spawned_rx) = std::sync::mpsc::channel();
    let (exited_tx, exited_rx) = tokio::sync::watch::channel(None);
    std::thread::Builder::new().name("local-database".into()).spawn(move || match command.spawn() {
        Err(error) => {
            let _ = spawned_tx.send(Err(error));
        }
        Ok(mut child) => {
            let _ = spawned_tx.send(Ok(child.id()));
            let status = child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
            let _ = exited_tx.send(Some(status));
        }
    })?;
    let pid = spawned_rx.recv().map_err(|_| std::io::Error::other("the watcher thread ended early"))??;
    Ok((pid, exited_rx))
}

async fn version_of(program: &Path) -> String {
    let output = Command::new(program).arg("--version").stdin(Stdio::null()).output().await;
    output
        .ok()
        .and_then(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown version".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> Config {
        Config::default().with_mongo_url(url).unwrap()
    }

    #[test]
    fn only_single_loopback_hosts_are_local() {
        assert_eq!(local_port(&with_url("mongodb://localhost:27017/analytics_db")), Some(27017));
        assert_eq!(local_port(&with_url("mongodb://127.0.0.1/analytics_db")), Some(27017));
        assert_eq!(local_port(&with_url("mongodb://u:p@127.0.0.1:27999/x")), Some(27999));
        assert_eq!(local_port(&with_url("mongodb://[::1]:28000/x")), Some(28000));
        assert_eq!(local_port(&with_url("mongodb://[::1]/x")), Some(27017));
        assert_eq!(local_port(&with_url("mongodb://db.example.com:27017/x")), None);
        assert_eq!(local_port(&with_url("mongodb://localhost:1,localhost:2/x")), None);
        assert_eq!(local_port(&with_url("mongodb+srv://u:p@cluster0.example.net/x")), None);
        assert_eq!(DatabaseStatus::initial(&with_url("mongodb://db.example.com/x")).state, DatabaseState::External);
        assert_eq!(DatabaseStatus::initial(&Config::default()).state, DatabaseState::Stopped);
    }
}
