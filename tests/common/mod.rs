//! Shared by the integration tests: a real MongoDB-wire server, a database per
//! test, and a TCP proxy that can make the database vanish.
//!
//! The server is `MONGO_TEST_URL` when set (a real `mongod`, a replica set, Atlas);
//! otherwise one SecantusDB `secantusd-rs` per test binary, started on a free
//! port with a temporary storage dir, and stopped (its dir removed) when the test
//! binary exits, however it exits.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The base URL of the test database server (no database name chosen yet).
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("MONGO_TEST_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => start_secantus(),
    })
}

/// The base URL of a server without transactions, as a standalone `mongod` is:
/// `MONGO_TEST_STANDALONE_URL` when set, otherwise a SecantusDB server started
/// with `--standalone` (it then presents itself as a standalone server).
pub fn standalone_server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("MONGO_TEST_STANDALONE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            static SERVER: OnceLock<LocalServer> = OnceLock::new();
            SERVER.get_or_init(|| LocalServer::start_with(&["--standalone"])).url()
        }
    })
}

/// A URL on the test server with a database of its own, so tests run in parallel.
pub fn fresh_database_url() -> String {
    let name = format!("test_{:016x}", rand::random::<u64>());
    with_database(server_url(), &name)
}

/// Replaces (or adds) the database path of a MongoDB URL.
pub fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").expect("URL has a scheme") + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map(|i| &tail[i..]).unwrap_or("");
    format!("{}{authority}/{database}{query}", &url[..scheme_end])
}

/// `host:port` of a single-host `mongodb://` URL, for the proxy.
pub fn single_host(url: &str) -> Option<String> {
    let parts = analytics_desk::config::url_parts(url).filter(|p| p.scheme == "mongodb" && !p.hosts.contains(','))?;
    let host = parts.hosts;
    Some(if host.contains(':') { host.to_string() } else { format!("{host}:27017") })
}

/// A free TCP port on loopback (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `secantusd-rs` binary: `SECANTUSD_BIN`, else what `scripts/install-secantus.sh`
/// installs into (or finds in) the cache dir.
pub fn secantus_binary() -> PathBuf {
    if let Ok(path) = std::env::var("SECANTUSD_BIN") {
        return PathBuf::from(path);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/install-secantus.sh");
    let output = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().expect("run install-secantus.sh");
    assert!(output.status.success(), "scripts/install-secantus.sh failed; install secantusd-rs or set MONGO_TEST_URL");
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim().lines().last().unwrap())
}

/// A database server process owned by the tests; killed and its data removed
/// when dropped, or when the test process exits (its watchdog shell sees stdin close).
pub struct LocalServer {
    pub port: u16,
    watchdog: Child,
}

impl LocalServer {
    /// Starts `secantusd-rs` on a free port and waits until it accepts connections.
    pub fn start() -> LocalServer {
        LocalServer::start_with(&[])
    }

    /// [`LocalServer::start`] with extra server options `args`.
    pub fn start_with(args: &[&str]) -> LocalServer {
        let binary = secantus_binary();
        let port = free_port();
        let storage = tempfile::Builder::new().prefix("analytics-desk-db-").tempdir().unwrap().keep();
        // The shell holds the server; when our end of its stdin closes (drop, exit,
        // crash), `cat` returns and the shell stops the server and removes its data.
        let script = r#"bin="$0" port="$1" storage="$2"; shift 2
"$bin" --port "$port" --storage-path "$storage" --cache-size 256M "$@" >"$storage.log" 2>&1 & pid=$!
cat >/dev/null; kill $pid 2>/dev/null; wait $pid; rm -rf "$storage" "$storage.log""#;
        let watchdog = Command::new("sh")
            .args(["-c", script])
            .arg(&binary)
            .arg(port.to_string())
            .arg(&storage)
            .args(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("start secantusd-rs");
        let deadline = Instant::now() + Duration::from_secs(60);
        while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "secantusd-rs did not listen on {port}; see {}.log", storage.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        LocalServer { port, watchdog }
    }

    /// `mongodb://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// Stops the server (and its watchdog) now.
    pub fn stop(mut self) {
        self.close();
    }

    fn close(&mut self) {
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.close();
    }
}

fn start_secantus() -> String {
    static SERVER: OnceLock<LocalServer> = OnceLock::new();
    // Kept in a static: never dropped, so it lives as long as the test binary.
    SERVER.get_or_init(LocalServer::start).url()
}

/// A TCP proxy in front of the database that the test can cut (every connection
/// dropped, new ones refused) and restore: "the database is gone" without
/// touching the shared server.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    /// True while stalled: connections stay open, no byte is forwarded.
    stalled: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    up: bool,
    connections: CancellationToken,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`).
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState { up: true, connections: CancellationToken::new() }));
        let shared = state.clone();
        let (stalled, stall) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                let (up, token) = {
                    let s = shared.lock().unwrap();
                    (s.up, s.connections.clone())
                };
                if !up {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let stall = stall.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else { return };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_server, to_server) = outbound.into_split();
                    tokio::select! {
                        _ = forward(from_client, to_server, stall.clone()) => {}
                        _ = forward(from_server, to_client, stall) => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        Proxy { addr, state, stalled, task }
    }

    /// Stops forwarding bytes, connections kept open: a database that stops
    /// answering (overloaded, a network partition that drops packets) rather
    /// than one that is gone. What is sent meanwhile is held and delivered on [`Proxy::resume`].
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards again after [`Proxy::stall`], the held bytes first.
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        let mut s = self.state.lock().unwrap();
        s.up = false;
        s.connections.cancel();
        s.connections = CancellationToken::new();
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.state.lock().unwrap().up = true;
    }
}

/// Copies `from` to `to`, holding the bytes while `stall` says so.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stall: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if stall.wait_for(|stalled| !stalled).await.is_err() {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        // Bytes read just as the stall began are held too.
        if stall.wait_for(|stalled| !stalled).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.lock().unwrap().connections.cancel();
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `contents` to `dir/name`.
pub fn write_file(dir: &std::path::Path, name: &str, contents: &str) {
    std::fs::File::create(dir.join(name)).unwrap().write_all(contents.as_bytes()).unwrap();
}

/// A free loopback port below the kernel's ephemeral range, so that no outgoing
/// connection can be given it while a server that must come back on it is down.
/// Falls back to [`free_port`] when the ephemeral range leaves no room below it.
pub fn free_port_outside_ephemeral_range() -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next().and_then(|low| low.parse::<u16>().ok()))
        .unwrap_or(32768);
    if ephemeral_start <= 11_000 {
        return free_port();
    }
    for _ in 0..200 {
        let port = 10_000 + rand::random::<u16>() % (ephemeral_start - 10_000);
        if StdTcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found between 10000 and {ephemeral_start}");
}

impl LocalServer {
    /// Starts `secantusd-rs` on `port` over `storage` (created if missing, reopened
    /// intact if it holds data), with the extra server options `args` (such as
    /// `--sync-on-commit`), and waits until it accepts connections. Unlike
    /// [`LocalServer::start`], the server is stopped with SIGKILL (a crash) and its
    /// data is never removed: the caller owns `storage` (a temp dir of its own) and
    /// may start a server on it again. Logs are appended to `<storage>.log`.
    pub fn start_at(port: u16, storage: &std::path::Path, args: &[&str]) -> LocalServer {
        let binary = secantus_binary();
        let mut log = storage.as_os_str().to_owned();
        log.push(".log");
        let log = PathBuf::from(log);
        // As in `start`, the shell dies with our end of its stdin; here it kills the
        // server outright, reaps it, and leaves the storage alone.
        let script = r#"bin="$0" port="$1" storage="$2" log="$3"; shift 3
"$bin" --port "$port" --storage-path "$storage" --cache-size 256M "$@" >>"$log" 2>&1 & pid=$!
cat >/dev/null; { kill -KILL $pid; wait $pid; } 2>/dev/null"#;
        let watchdog = Command::new("sh")
            .args(["-c", script])
            .arg(&binary)
            .arg(port.to_string())
            .arg(storage)
            .arg(&log)
            .args(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("start secantusd-rs");
        let mut server = LocalServer { port, watchdog };
        let deadline = Instant::now() + Duration::from_secs(60);
        while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                server.close();
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
                panic!("secantusd-rs did not listen on {port}; last lines of {}:\n{}", log.display(), tail.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Kills the server as a crash would (SIGKILL) and returns once it is gone.
    /// For a server from [`LocalServer::start_at`] the storage is kept, so
    /// `start_at` on the same port and storage brings the same data back; a
    /// server from [`LocalServer::start`] is stopped and its (private) data removed
    /// as when it is dropped.
    pub fn kill_keep_data(mut self) {
        self.close();
    }
}

/// Whether process `pid` has a handler installed for `signal` (its `SigCgt` mask
/// in `/proc/<pid>/status`): from then on the signal asks it to stop gracefully
/// instead of killing it. False once the process is gone.
pub fn catches_signal(pid: u32, signal: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(0);
    signal >= 1 && mask & (1 << (signal - 1)) != 0
}

/// Blocks until process `pid` catches SIGTERM ([`catches_signal`]), polling every
/// 5 ms for at most `limit`; returns whether it does.
pub fn wait_until_it_catches_sigterm(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if catches_signal(pid, libc::SIGTERM) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
