//! The server loop: opening the port (with errors that say how to fix it),
//! serving connections with the limits that keep slow or abusive clients from
//! exhausting the service, and the graceful stop.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tracing::{debug, warn};

/// Limits that keep slow or abusive clients from exhausting the service.
#[derive(Debug, Clone, Copy)]
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
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_in_flight: 1024,
            body_read_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
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
        /// This program's path, for the setcap command.
        exe: String,
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
            },
            io::ErrorKind::AddrInUse => BindError::InUse { addr },
            io::ErrorKind::AddrNotAvailable => BindError::NotAvailable { addr },
            _ => BindError::Other { addr, source },
        }
    }
}

/// Opens the listening socket.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|e| BindError::from_io(addr, e))
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
        // Handlers see the peer as axum's `ConnectInfo` (anonymous visitor ids need it).
        let service = Extension(ConnectInfo(peer)).layer(router.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        warn!("requests still in flight after {SHUTDOWN_GRACE:?}; closing them");
    }
    Ok(())
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
    fn port_in_use_error_says_so() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let message = BindError::from_io(addr, io::Error::from(io::ErrorKind::AddrInUse)).to_string();
        assert!(message.contains("already in use"), "{message}");
    }
}
