//! Local database: the MongoDB-wire server the desktop app launches itself when
//! `MONGO_URL` points at this machine and nothing answers there. It runs `mongod`
//! if the machine has one, else SecantusDB's `secantusd-rs` (shipped beside the
//! app as a sidecar). Always a separate process: SecantusDB is GPL-2.0 and is
//! never linked into our binaries.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpStream;
use tokio::process::Command;
use tracing::{info, warn};

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

/// True when something accepts TCP connections on `port` of loopback.
pub async fn answers(port: u16) -> bool {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    matches!(tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await, Ok(Ok(_)))
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
    /// Starts `program` on `port` of loopback with its data in `data_path`, and
    /// waits until it accepts connections.
    pub async fn start(
        kind: ServerKind,
        program: &Path,
        port: u16,
        data_path: &Path,
    ) -> Result<ManagedDatabase, LocalDbError> {
        let name = program.display().to_string();
        let spawn_error = |source| LocalDbError::Spawn { program: name.clone(), source };
        std::fs::create_dir_all(data_path).map_err(spawn_error)?;
        let version = version_of(program).await;
        let mut command = std::process::Command::new(program);
        match kind {
            ServerKind::Mongod => command.args(["--bind_ip", "127.0.0.1", "--port", &port.to_string(), "--dbpath"]),
            // --sync-on-commit: without it secantusd-rs acknowledges journaled
            // writes before they reach the disk, and a crash could lose events
            // already answered "queued" (seen in tests/faults.rs).
            ServerKind::Secantus => command.args([
                "--port",
                &port.to_string(),
                "--cache-size",
                "512M",
                "--sync-on-commit",
                "--storage-path",
            ]),
        };
        command.arg(data_path);
        let log = std::fs::File::create(data_path.with_extension("log")).map_err(spawn_error)?;
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let (pid, exited) = spawn_watched(command).map_err(spawn_error)?;
        let database = ManagedDatabase { pid, exited, kind, version, data_path: data_path.to_path_buf(), port };
        info!(program = %name, port, data = %data_path.display(), "starting the local database");

        let deadline = Instant::now() + START_TIMEOUT;
        while !answers(port).await {
            let detail = match database.exited.borrow().clone() {
                Some(status) => {
                    Some(format!("it exited ({status}); see {}", data_path.with_extension("log").display()))
                }
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
