//! The port helper `analytics-bind-port`, both sides. A port below 1024 needs
//! `CAP_NET_BIND_SERVICE`; giving it to the whole WebKit/GTK app would put the
//! app in secure-execution mode, so a tiny helper holds it instead (the package
//! sets it): the helper checks the request, binds, hands the listening socket
//! back over a Unix socket (SCM_RIGHTS) and exits; the engine asks it only when
//! its own bind is refused for lack of the privilege.
//!
//! The helper side runs with a capability, so it trusts nothing it is given: it
//! reads no environment, takes exactly `ADDRESS PORT`, binds only ports 1–1023
//! on loopback (127.0.0.0/8, ::1) or on an address listed in the root-owned
//! [`BIND_ADDRESSES_FILE`], and sends only to the Unix socket on its standard input.

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};
use serde::Serialize;

/// The helper's program name: the package installs it as `/usr/bin/analytics-bind-port`
/// (with `cap_net_bind_service`), cargo builds it beside the other binaries.
pub const HELPER_NAME: &str = "analytics-bind-port";

/// Non-loopback addresses the helper may bind, one IP per line (`#` comments);
/// optional, and trusted only when owned by root and writable by no one else.
pub const BIND_ADDRESSES_FILE: &str = "/etc/analytics-desk/bind-addresses";

/// The listen backlog: the same as the server's own bind (tokio's, through mio:
/// the standard library's 128).
pub const BACKLOG: i32 = 128;

/// Longest the engine waits for the helper (it binds and exits at once).
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// The helper's exit codes, so the engine tells the cases apart without
/// reading its message.
pub mod exit_code {
    /// The request itself was refused (arguments, port, address).
    pub const REFUSED: u8 = 2;
    /// The bind was refused for lack of `CAP_NET_BIND_SERVICE`.
    pub const NO_CAPABILITY: u8 = 3;
    /// Another program listens there.
    pub const IN_USE: u8 = 4;
    /// This machine has no such address.
    pub const NOT_AVAILABLE: u8 = 5;
    /// Anything else (no Unix socket on standard input, other OS errors).
    pub const FAILED: u8 = 6;
}

/// Why the helper refused or failed, in words that say how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// Not exactly two arguments.
    #[error(
        "usage: {HELPER_NAME} ADDRESS PORT (a Unix socket as standard input receives the listening socket); got {0} arguments"
    )]
    Usage(usize),
    /// ADDRESS is not an IP address.
    #[error("ADDRESS `{0}` is not an IP address: give one such as 127.0.0.1 or ::1")]
    BadAddress(String),
    /// PORT is not a number from 0 to 65535.
    #[error("PORT `{0}` is not a port number: give one from 1 to 1023")]
    BadPort(String),
    /// PORT is 0 or 1024 and above: no privilege is needed, so the helper has no business binding it.
    #[error(
        "PORT {0} is refused: this helper binds only ports 1 to 1023 (bind other ports directly, no helper needed)"
    )]
    PortNotPrivileged(u16),
    /// The address is neither loopback nor listed.
    #[error(
        "ADDRESS {addr} is refused: this helper binds only loopback addresses (127.0.0.0/8, ::1) and those listed in {file} \
         (one IP per line, the file owned by root); add it there to allow it"
    )]
    AddressNotAllowed {
        /// The address asked for.
        addr: IpAddr,
        /// The list of allowed addresses.
        file: String,
    },
    /// The list exists but someone other than root could have written it.
    #[error(
        "{file} is ignored: it must be owned by root and writable by no one else \
         (sudo chown root:root {file} && sudo chmod 644 {file})"
    )]
    UntrustedList {
        /// The list of allowed addresses.
        file: String,
    },
    /// The bind was refused for lack of the capability.
    #[error(
        "cannot listen on {addr}: this helper lacks the cap_net_bind_service capability; grant it once: \
         sudo setcap cap_net_bind_service=+ep {helper}"
    )]
    NoCapability {
        /// The address asked for.
        addr: SocketAddr,
        /// The helper's path, for the setcap command.
        helper: String,
    },
    /// Any other bind failure (in use, no such address, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Standard input is not a Unix socket, or sending on it failed.
    #[error("cannot hand the listening socket back: standard input must be a Unix socket ({0})")]
    Channel(#[source] io::Error),
}

impl HelperError {
    /// The exit code for this refusal (see [`exit_code`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            HelperError::NoCapability { .. } => exit_code::NO_CAPABILITY,
            HelperError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse => exit_code::IN_USE,
            HelperError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrNotAvailable => {
                exit_code::NOT_AVAILABLE
            }
            HelperError::Bind { .. } | HelperError::Channel(_) => exit_code::FAILED,
            _ => exit_code::REFUSED,
        }
    }
}

// ---- the helper's side --------------------------------------------------------

/// The helper's whole work: checks `args` (`ADDRESS PORT`), binds, sends the
/// listening socket on `channel` (a Unix socket). `allowed_file` is
/// [`BIND_ADDRESSES_FILE`] in the binary; `helper` is its own path, for messages.
pub fn serve_request(
    args: &[OsString],
    allowed_file: &Path,
    channel: BorrowedFd<'_>,
    helper: &str,
) -> Result<SocketAddr, HelperError> {
    let addr = check_request(args, allowed_file)?;
    // Checked before binding, so a wrong caller learns it without a socket made for nothing.
    let local = rustix::net::getsockname(channel).map_err(|e| HelperError::Channel(e.into()))?;
    if local.address_family() != AddressFamily::UNIX {
        return Err(HelperError::Channel(io::Error::other("it is a socket, but not a Unix one")));
    }
    let listener = bind_listener(addr, helper)?;
    send_listener(channel, &listener).map_err(HelperError::Channel)?;
    Ok(addr)
}

/// Checks a request: exactly `ADDRESS PORT`, the port from 1 to 1023, the address
/// loopback or listed in `allowed_file` (trusted only if owned by root and
/// writable by no one else). Returns the address to bind.
pub fn check_request(args: &[OsString], allowed_file: &Path) -> Result<SocketAddr, HelperError> {
    let [address, port] = args else { return Err(HelperError::Usage(args.len())) };
    let shown = |s: &OsString| s.to_string_lossy().chars().take(100).collect::<String>();
    let ip: IpAddr =
        address.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| HelperError::BadAddress(shown(address)))?;
    let port: u16 = port.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| HelperError::BadPort(shown(port)))?;
    if port == 0 || port >= 1024 {
        return Err(HelperError::PortNotPrivileged(port));
    }
    if !is_loopback(ip) && !listed(ip, allowed_file)? {
        return Err(HelperError::AddressNotAllowed { addr: ip, file: allowed_file.display().to_string() });
    }
    Ok(SocketAddr::new(ip, port))
}

/// 127.0.0.0/8 and ::1 (an IPv4-mapped address is not loopback here: it must be listed).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// Whether `ip` is listed in `file`; a missing file lists nothing.
fn listed(ip: IpAddr, file: &Path) -> Result<bool, HelperError> {
    let untrusted = || HelperError::UntrustedList { file: file.display().to_string() };
    let opened = match std::fs::File::open(file) {
        Ok(opened) => opened,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(_) => return Err(untrusted()),
    };
    // The opened file's own metadata: no race with a swap of the path.
    let metadata = opened.metadata().map_err(|_| untrusted())?;
    if !metadata.is_file() || metadata.uid() != 0 || metadata.mode() & 0o022 != 0 {
        return Err(untrusted());
    }
    let mut text = String::new();
    opened.take(64 * 1024).read_to_string(&mut text).map_err(|_| untrusted())?;
    Ok(text
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .any(|line| line.parse::<IpAddr>().is_ok_and(|listed| listed == ip)))
}

/// Binds `addr` as the server's own bind does: `SO_REUSEADDR`, backlog [`BACKLOG`].
pub fn bind_listener(addr: SocketAddr, helper: &str) -> Result<OwnedFd, HelperError> {
    let failed = |source: rustix::io::Errno| {
        let source = io::Error::from(source);
        match source.kind() {
            io::ErrorKind::PermissionDenied => HelperError::NoCapability { addr, helper: helper.to_string() },
            _ => HelperError::Bind { addr, source },
        }
    };
    let family = if addr.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let socket = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None).map_err(failed)?;
    rustix::net::sockopt::set_socket_reuseaddr(&socket, true).map_err(failed)?;
    rustix::net::bind(&socket, &addr).map_err(failed)?;
    rustix::net::listen(&socket, BACKLOG).map_err(failed)?;
    Ok(socket)
}

/// Sends `listener` over `channel` (SCM_RIGHTS, with one byte of data).
pub fn send_listener(channel: BorrowedFd<'_>, listener: &OwnedFd) -> io::Result<()> {
    let fds = [listener.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    rustix::net::sendmsg(channel, &[IoSlice::new(b"L")], &mut control, SendFlags::NOSIGNAL)?;
    Ok(())
}

// ---- the engine's side --------------------------------------------------------

/// Where the engine looks for the helper by default: beside the running program
/// (where the package installs both, and where cargo builds both).
pub fn beside_current_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join(HELPER_NAME))
}

/// Why asking the helper gave no socket.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The helper lacks the capability (a `setcap` on it would fix it).
    #[error("the port helper {helper} lacks the capability: {message}")]
    NoCapability {
        /// The helper's path.
        helper: PathBuf,
        /// What it said.
        message: String,
    },
    /// Another program listens there.
    #[error("the port is in use")]
    InUse,
    /// This machine has no such address.
    #[error("this machine has no such address")]
    NotAvailable,
    /// The helper refused the request or failed otherwise.
    #[error("the port helper {helper} refused: {message}")]
    Refused {
        /// The helper's path.
        helper: PathBuf,
        /// What it said (or why it could not be run).
        message: String,
    },
}

/// Asks the helper at `helper` to bind `addr` and returns the listening socket
/// it hands back (non-blocking, ready for tokio).
pub async fn ask_helper(helper: &Path, addr: SocketAddr) -> Result<StdTcpListener, AskError> {
    let refused = |message: String| AskError::Refused { helper: helper.to_path_buf(), message };
    let (ours, theirs) = UnixStream::pair().map_err(|e| refused(format!("cannot make a Unix socket pair: {e}")))?;
    let child = tokio::process::Command::new(helper)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| refused(format!("cannot run it: {e}")))?;
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| refused(format!("no answer within {HELPER_TIMEOUT:?}")))?
        .map_err(|e| refused(format!("cannot wait for it: {e}")))?;
    let message = String::from_utf8_lossy(&output.stderr).trim().chars().take(2000).collect::<String>();
    match output.status.code().and_then(|code| u8::try_from(code).ok()) {
        Some(0) => {}
        Some(exit_code::NO_CAPABILITY) => {
            return Err(AskError::NoCapability { helper: helper.to_path_buf(), message });
        }
        Some(exit_code::IN_USE) => return Err(AskError::InUse),
        Some(exit_code::NOT_AVAILABLE) => return Err(AskError::NotAvailable),
        _ => return Err(refused(format!("{message} ({})", output.status))),
    }
    let listener = receive_listener(&ours).map_err(|e| refused(format!("no socket came back: {e}")))?;
    // Only a listening socket on the address asked for is served on.
    match listener.local_addr() {
        Ok(local) if local == addr => {}
        other => return Err(refused(format!("the socket it sent listens on {other:?}, not {addr}"))),
    }
    listener.set_nonblocking(true).map_err(|e| refused(format!("cannot use the socket: {e}")))?;
    Ok(listener)
}

/// Receives one descriptor sent with [`send_listener`] (already queued: the helper has exited).
fn receive_listener(channel: &UnixStream) -> io::Result<StdTcpListener> {
    channel.set_nonblocking(true)?;
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(channel, &mut [IoSliceMut::new(&mut byte)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut received: Option<OwnedFd> = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                received.get_or_insert(fd); // any extra descriptor is closed on drop
            }
        }
    }
    let fd = received.ok_or_else(|| io::Error::other("the message carried no descriptor"))?;
    let kind = rustix::net::sockopt::socket_type(&fd)?;
    if kind != SocketType::STREAM || !rustix::net::sockopt::socket_acceptconn(&fd)? {
        return Err(io::Error::other("the descriptor is not a listening TCP socket"));
    }
    Ok(StdTcpListener::from(fd))
}

/// What the desktop needs to offer its fixes when a port below 1024 is refused
/// (carried in [`super::BindError::PrivilegedPort`]): a structured case, so the
/// window never parses message text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortError {
    /// The port refused.
    pub port: u16,
    /// The helper a `setcap` would make work, when it exists and only lacks the
    /// capability (none: the helper is missing or refused the address).
    pub helper: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn requests_are_checked_before_anything_is_bound() {
        let none = Path::new("/nonexistent/bind-addresses");
        assert_eq!(check_request(&args(&["127.0.0.1", "1000"]), none).unwrap(), "127.0.0.1:1000".parse().unwrap());
        assert_eq!(check_request(&args(&["127.1.2.3", "80"]), none).unwrap(), "127.1.2.3:80".parse().unwrap());
        assert_eq!(check_request(&args(&["::1", "443"]), none).unwrap(), "[::1]:443".parse().unwrap());
        for (request, needle) in [
            (&["127.0.0.1"][..], "usage"),
            (&["127.0.0.1", "1000", "x"][..], "usage"),
            (&["localhost", "1000"][..], "ADDRESS `localhost`"),
            (&["127.0.0.1", "-1"][..], "PORT `-1`"),
            (&["127.0.0.1", "65536"][..], "PORT `65536`"),
            (&["127.0.0.1", "1024"][..], "PORT 1024 is refused"),
            (&["127.0.0.1", "0"][..], "PORT 0 is refused"),
            (&["0.0.0.0", "1000"][..], "ADDRESS 0.0.0.0 is refused"),
            (&["::ffff:127.0.0.1", "1000"][..], "is refused"),
            (&["10.1.2.3", "1000"][..], "ADDRESS 10.1.2.3 is refused"),
        ] {
            let error = check_request(&args(request), none).unwrap_err();
            assert!(error.to_string().contains(needle), "{request:?}: {error}");
            assert_eq!(error.exit_code(), exit_code::REFUSED);
        }
    }

    /// Tests run as root, so the files made here are root's, as the real list must be.
    #[test]
    fn listed_addresses_are_allowed_only_from_a_list_no_one_else_can_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bind-addresses");
        std::fs::write(&file, "# extra addresses\n10.1.2.3  # the LAN\n\nnot an address\n0.0.0.0\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(rustix::process::geteuid().as_raw(), 0, "this test needs root (the list must be owned by root)");
        assert_eq!(check_request(&args(&["10.1.2.3", "1000"]), &file).unwrap(), "10.1.2.3:1000".parse().unwrap());
        assert_eq!(check_request(&args(&["0.0.0.0", "999"]), &file).unwrap(), "0.0.0.0:999".parse().unwrap());
        let other = check_request(&args(&["10.9.9.9", "1000"]), &file).unwrap_err();
        assert!(matches!(other, HelperError::AddressNotAllowed { .. }), "{other}");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let untrusted = check_request(&args(&["10.1.2.3", "1000"]), &file).unwrap_err();
        assert!(untrusted.to_string().contains("must be owned by root and writable by no one else"), "{untrusted}");
        assert!(check_request(&args(&["127.0.0.1", "1000"]), &file).is_ok(), "loopback never reads the list");
    }
}
