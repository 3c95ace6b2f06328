//! The server loop: opening the port (with errors that say how to fix it),
//! serving connections with the limits that keep slow or abusive clients from
//! exhausting the service, and the graceful stop.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tracing::{debug, info, warn};

use super::connection_gate::{ConnectionGate, ConnectionRefused};
use super::lingering_close::LingeringClose;
use super::port_helper::{self, AskError, PortError};
use crate::config::{Config, TrustedProxies};

/// Limits that keep slow or abusive clients from exhausting the service.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Requests handled at once; beyond it, requests are refused at once with a
    /// 503 instead of queueing (so a flood degrades to quick refusals and memory
    /// stays bounded).
    pub max_in_flight: usize,
    /// Longest wait for the next piece of a request body (slow senders get a 408).
    pub body_read_timeout: Duration,
    /// Longest a client may take to send a request's headers, and so how long an
    /// idle keep-alive connection stays open: a slow-headers client cannot hold a
    /// connection for ever.
    pub header_read_timeout: Duration,
    /// Longest a request body may take in all, from the request's arrival: the
    /// read timeout restarts with every piece, so without it a body trickling a
    /// byte now and then holds its connection for hours (a 408 at the deadline).
    pub body_deadline: Duration,
    /// Most connections open at once; beyond it new ones get a 503 and are closed.
    pub max_connections: usize,
    /// Most connections open at once from one client address (an IPv6 /64), so
    /// that one client cannot take them all.
    pub max_connections_per_client: usize,
    /// Peers held only to the total cap: the proxies in front of the service
    /// (`TRUSTED_PROXIES`), whose connections carry many clients each.
    pub trusted_proxies: TrustedProxies,
}

impl Default for ApiLimits {
    fn default() -> Self {
        let config = Config::default();
        ApiLimits {
            max_in_flight: 1024,
            body_read_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_deadline: config.body_deadline,
            max_connections: config.max_connections,
            max_connections_per_client: config.max_connections_per_client,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

impl ApiLimits {
    /// The defaults, with what `config` sets (`BODY_DEADLINE_SECS`,
    /// `MAX_CONNECTIONS`, `MAX_CONNECTIONS_PER_CLIENT`, `TRUSTED_PROXIES`).
    pub fn from_config(config: &Config) -> ApiLimits {
        ApiLimits {
            body_deadline: config.body_deadline,
            max_connections: config.max_connections,
            max_connections_per_client: config.max_connections_per_client,
            trusted_proxies: config.trusted_proxies.clone(),
            ..ApiLimits::default()
        }
    }
}

/// Longest graceful shutdown waits for requests in flight before closing anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the API could not listen, in words that say how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A port below 1024 without the privilege to bind it.
    #[error(
        "cannot listen on {addr}: on Linux, ports below 1024 need root or the CAP_NET_BIND_SERVICE capability. \
         Set PORT to 1024 or above (for example PORT=8000), or grant the capability once: \
         sudo setcap cap_net_bind_service=+ep {exe}"
    )]
    PrivilegedPort {
        /// The address asked for.
        addr: SocketAddr,
        /// The program to give the capability, for the setcap command: this
        /// program, or the port helper when one exists and lacks only that.
        exe: String,
        /// The port helper a `setcap` would make work (found, lacking only the
        /// capability): what the desktop's "Allow" button needs. Not in the
        /// message, which stays the CLI's.
        helper: Option<PathBuf>,
    },
    /// A port below 1024 the port helper refused to bind (an address it does
    /// not allow, such as 0.0.0.0): no capability would change that.
    #[error(
        "cannot listen on {addr}: ports below 1024 go through the port helper, which refused: {message}. \
         Set PORT to 1024 or above (for example PORT=8000), or HOST to 127.0.0.1"
    )]
    HelperRefused {
        /// The address asked for.
        addr: SocketAddr,
        /// What the helper said.
        message: String,
    },
    /// Another program already listens there.
    #[error(
        "cannot listen on {addr}: the port is already in use by another program. Stop that program or set PORT to another port"
    )]
    InUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The host address is not one of this machine's.
    #[error(
        "cannot listen on {addr}: this machine has no such address. Set HOST to 127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)"
    )]
    NotAvailable {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Anything else the OS refused.
    #[error("cannot listen on {addr}: {source}")]
    Other {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl BindError {
    /// Explains an OS error from binding `addr`.
    pub fn from_io(addr: SocketAddr, source: io::Error) -> BindError {
        match source.kind() {
            io::ErrorKind::PermissionDenied if addr.port() < 1024 => BindError::PrivilegedPort {
                addr,
                exe: std::env::current_exe()
                    .map_or_else(|_| "/path/to/analytics-service".into(), |p| p.display().to_string()),
                helper: None,
            },
            io::ErrorKind::AddrInUse => BindError::InUse { addr },
            io::ErrorKind::AddrNotAvailable => BindError::NotAvailable { addr },
            _ => BindError::Other { addr, source },
        }
    }

    /// The structured case the desktop offers fixes for: a port below 1024 refused.
    pub fn port_error(&self) -> Option<PortError> {
        match self {
            BindError::PrivilegedPort { addr, helper, .. } => {
                Some(PortError { port: addr.port(), helper: helper.as_ref().map(|p| p.display().to_string()) })
            }
            // Another port helps; allowing this one would not ("Use port 8000" only).
            BindError::HelperRefused { addr, .. } => Some(PortError { port: addr.port(), helper: None }),
            _ => None,
        }
    }
}

/// Opens the listening socket.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|e| BindError::from_io(addr, e))
}

/// Opens the listening socket; when a port below 1024 is refused for lack of
/// the privilege and `helper` exists, asks it (see [`super::port_helper`]) and
/// serves on the socket it hands back. Otherwise the error is [`bind`]'s.
pub async fn bind_with_helper(addr: SocketAddr, helper: Option<&Path>) -> Result<TcpListener, BindError> {
    let error = match TcpListener::bind(addr).await {
        Ok(listener) => return Ok(listener),
        Err(error) => BindError::from_io(addr, error),
    };
    let BindError::PrivilegedPort { addr, exe, .. } = error else { return Err(error) };
    let Some(helper) = helper.filter(|path| path.is_file()) else {
        return Err(BindError::PrivilegedPort { addr, exe, helper: None });
    };
    match port_helper::ask_helper(helper, addr).await {
        Ok(listener) => {
            info!(%addr, helper = %helper.display(), "listening through the port helper");
            TcpListener::from_std(listener).map_err(|e| BindError::Other { addr, source: e })
        }
        Err(AskError::InUse) => Err(BindError::InUse { addr }),
        Err(AskError::NotAvailable) => Err(BindError::NotAvailable { addr }),
        Err(refusal) => {
            warn!(%addr, %refusal, "the port helper could not bind");
            if let AskError::Refused { message, .. } = refusal {
                return Err(BindError::HelperRefused { addr, message });
            }
            // The helper is what needs the capability (never the desktop app: a
            // WebKit/GTK program with one runs in secure-execution mode).
            let exe = helper.display().to_string();
            Err(BindError::PrivilegedPort { addr, exe, helper: Some(helper.to_path_buf()) })
        }
    }
}

/// Serves `router` on `listener` with the default [`ApiLimits`] until `shutdown`
/// is cancelled; see [`serve_with`].
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> io::Result<()> {
    serve_with(listener, router, ApiLimits::default(), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting and lets requests in flight finish (for at most [`SHUTDOWN_GRACE`]).
///
/// A loop of our own rather than `axum::serve`, because that sets no timer, and
/// without one hyper enforces no header-read timeout.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: ApiLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    // HTTP/1 only: browsers speak HTTP/2 only over TLS, which a TLS-terminating
    // proxy in front of us handles; and sniffing for HTTP/2 would wait on a
    // silent connection with no timeout at all.
    let mut builder = AutoBuilder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let gate = ConnectionGate::new(limits.max_connections, limits.max_connections_per_client, limits.trusted_proxies);
    warn_if_descriptors_short(limits.max_connections);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause, don't spin or die.
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let permit = match gate.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refused) => {
                refuse(stream, peer, refused);
                continue;
            }
        };
        // Handlers see the peer as axum's `ConnectInfo` (anonymous visitor ids need it).
        let service = Extension(ConnectInfo(peer)).layer(router.clone());
        let io = TokioIo::new(LingeringClose::new(stream));
        let connection = builder.serve_connection(io, TowerToHyperService::new(service));
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "connection ended with an error");
            }
            // Held until the connection (and its lingering close) is over.
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        warn!("requests still in flight after {SHUTDOWN_GRACE:?}; closing them");
    }
    Ok(())
}

/// Answers a connection over a cap with a 503 saying which, and closes it.
/// Without waiting: what the client already sent is read and discarded, so that
/// the close sends the end of the stream rather than a reset destroying the answer.
fn refuse(stream: TcpStream, peer: SocketAddr, refused: ConnectionRefused) {
    log_refused(peer, refused);
    let body = serde_json::json!({ "error": refused.to_string() }).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
         retry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
    let mut scratch = [0u8; 8192];
    for _ in 0..8 {
        if !matches!(stream.try_read(&mut scratch), Ok(n) if n > 0) {
            break;
        }
    }
}

/// Logs a refused connection: a warning at most every ten seconds (a flood
/// would otherwise write one per connection), the rest at debug level.
fn log_refused(peer: SocketAddr, refused: ConnectionRefused) {
    static LAST_WARNING_SECS: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = LAST_WARNING_SECS.load(Ordering::Relaxed);
    if now >= last + 10 && LAST_WARNING_SECS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        warn!(%peer, %refused, "connection refused (MAX_CONNECTIONS / MAX_CONNECTIONS_PER_CLIENT); further refusals within 10 s are logged at debug level");
    } else {
        debug!(%peer, %refused, "connection refused");
    }
}

/// Warns when the process may open fewer files than `max_connections` needs
/// (each connection is a descriptor): accepting then fails before the cap does.
fn warn_if_descriptors_short(max_connections: usize) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let needed = max_connections as libc::rlim_t + 64;
    if limit.rlim_cur < needed {
        warn!(
            open_files = limit.rlim_cur,
            max_connections,
            "this process may open only {} files but MAX_CONNECTIONS is {max_connections}: raise the limit \
             (ulimit -n, or LimitNOFILE= in a systemd unit) to at least {needed}, or lower MAX_CONNECTIONS",
            limit.rlim_cur
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_port_error_says_why_and_how_to_fix() {
        let addr: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let message = BindError::from_io(addr, io::Error::from(io::ErrorKind::PermissionDenied)).to_string();
        assert!(message.contains("ports below 1024"), "{message}");
        assert!(message.contains("PORT=8000"), "{message}");
        assert!(message.contains("setcap cap_net_bind_service=+ep"), "{message}");
    }

    #[test]
    fn only_a_privileged_port_refusal_is_a_port_error() {
        let low: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let refused = BindError::from_io(low, io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(refused.port_error(), Some(PortError { port: 1000, helper: None }));
        let with_helper = BindError::PrivilegedPort { addr: low, exe: "/x".into(), helper: Some("/usr/bin/h".into()) };
        assert_eq!(with_helper.port_error().unwrap().helper.as_deref(), Some("/usr/bin/h"));
        assert_eq!(BindError::from_io(low, io::Error::from(io::ErrorKind::AddrInUse)).port_error(), None);
        let high: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        assert_eq!(BindError::from_io(high, io::Error::from(io::ErrorKind::PermissionDenied)).port_error(), None);
    }

    #[test]
    fn port_in_use_error_says_so() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let message = BindError::from_io(addr, io::Error::from(io::ErrorKind::AddrInUse)).to_string();
        assert!(message.contains("already in use"), "{message}");
    }
}
