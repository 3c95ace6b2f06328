//! The port helper `analytics-bind-port` as the package runs it: it refuses what
//! it must not bind (with its message and exit code), hands back a socket that
//! accepts connections, works for a normal user (`nobody`) only once it holds
//! `cap_net_bind_service`, and lets `analytics-service` run as `nobody` serve
//! `/health` on a port below 1024. Tests run as root (root can `setcap` and
//! become `nobody`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use analytics_desk::http::port_helper::{self, AskError, exit_code};

const HELPER: &str = env!("CARGO_BIN_EXE_analytics-bind-port");
const SERVICE: &str = env!("CARGO_BIN_EXE_analytics-service");
const NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

/// A port below 1024 that nothing listens on now (not 1000, which the app's own tests use).
fn free_low_port() -> u16 {
    for _ in 0..200 {
        let port = 600 + (rand::random::<u16>() % 390);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 600 and 989");
}

/// Runs `command` with a Unix socket as standard input; returns its output and our end.
fn run_with_channel(mut command: Command) -> (Output, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let output = command
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (output, ours)
}

/// A directory `nobody` can enter, with a copy of each program in `programs`.
fn nobody_dir(programs: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for program in programs {
        let copy = dir.path().join(Path::new(program).file_name().unwrap());
        std::fs::copy(program, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// `setcap cap_net_bind_service=+ep` on `program`; fails the test, saying why,
/// when the file system cannot hold file capabilities.
fn grant_capability(program: &Path) {
    let output = Command::new("setcap")
        .arg("cap_net_bind_service=+ep")
        .arg(program)
        .output()
        .unwrap_or_else(|e| panic!("cannot run setcap ({e}): install libcap2-bin (scripts/setup.sh does)"));
    let shown = Command::new("getcap").arg(program).output().unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&shown.stdout).contains("cap_net_bind_service"),
        "setcap on {} did not hold: the temporary directory's file system may not support file capabilities \
         (security.* extended attributes); set TMPDIR to one that does. setcap said: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A script that runs the helper copy at `helper` as `nobody`: what the engine
/// does as a normal user, through [`port_helper::ask_helper`].
fn as_nobody(dir: &Path, helper: &Path) -> PathBuf {
    let script = dir.join("helper-as-nobody");
    let text = format!("#!/bin/sh\nexec /usr/bin/setpriv {} {} \"$@\"\n", NOBODY.join(" "), helper.display());
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Accepts one connection on `listener` and checks bytes go both ways.
fn assert_serves(listener: TcpListener, addr: SocketAddr) {
    listener.set_nonblocking(false).unwrap();
    let mut client = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    client.write_all(b"ping").unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    accepted.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = [0u8; 4];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
}

#[test]
fn the_helper_refuses_high_ports_and_addresses_not_allowed_with_a_clear_message() {
    for (address, port, says) in [
        ("127.0.0.1", "1024", "PORT 1024 is refused: this helper binds only ports 1 to 1023"),
        ("127.0.0.1", "8000", "PORT 8000 is refused"),
        ("10.1.2.3", "1000", "ADDRESS 10.1.2.3 is refused: this helper binds only loopback addresses"),
        ("0.0.0.0", "1000", "ADDRESS 0.0.0.0 is refused"),
        ("localhost", "1000", "ADDRESS `localhost` is not an IP address"),
    ] {
        let mut command = Command::new(HELPER);
        command.args([address, port]);
        let (output, ours) = run_with_channel(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(exit_code::REFUSED.into()), "{address} {port}: {stderr}");
        assert!(stderr.contains(says), "{address} {port}: {stderr}");
        // Nothing was sent (the helper has exited, so anything sent would be queued):
        // at its end, or empty while a child forked by a test in parallel still holds its copy.
        ours.set_nonblocking(true).unwrap();
        let read = (&ours).read(&mut [0u8; 1]);
        assert!(!matches!(read, Ok(n) if n > 0), "{address} {port}: something was sent");
        assert!(read.is_ok() || read.is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock));
    }
    // No Unix socket to answer on: refused before anything is bound.
    let output = Command::new(HELPER).args(["127.0.0.1", "999"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(output.status.code(), Some(exit_code::FAILED.into()));
    assert!(String::from_utf8_lossy(&output.stderr).contains("standard input must be a Unix socket"));
}

#[tokio::test]
async fn the_helper_hands_back_a_listening_socket_that_accepts_connections() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_low_port()).into();
    let listener = port_helper::ask_helper(Path::new(HELPER), addr).await.unwrap();
    assert_eq!(listener.local_addr().unwrap(), addr);
    assert_serves(listener, addr);
}

#[tokio::test]
async fn as_nobody_the_helper_binds_a_low_port_only_with_the_capability() {
    let with = nobody_dir(&[HELPER]);
    let helper = with.path().join("analytics-bind-port");
    grant_capability(&helper);
    let addr: SocketAddr = ([127, 0, 0, 1], free_low_port()).into();
    let listener = port_helper::ask_helper(&as_nobody(with.path(), &helper), addr).await.unwrap();
    assert_serves(listener, addr);

    let without = nobody_dir(&[HELPER]);
    let bare = without.path().join("analytics-bind-port");
    let addr: SocketAddr = ([127, 0, 0, 1], free_low_port()).into();
    match port_helper::ask_helper(&as_nobody(without.path(), &bare), addr).await {
        Err(AskError::NoCapability { message, .. }) => {
            assert!(message.contains("lacks the cap_net_bind_service capability"), "{message}");
            assert!(message.contains(&format!("sudo setcap cap_net_bind_service=+ep {}", bare.display())), "{message}");
        }
        other => panic!("expected the capability to be missing, got {other:?}"),
    }
}

#[tokio::test]
async fn analytics_service_as_nobody_serves_health_on_a_low_port_through_the_helper() {
    let dir = nobody_dir(&[SERVICE, HELPER]);
    grant_capability(&dir.path().join("analytics-bind-port"));
    let port = free_low_port();
    let mut child = Command::new("setpriv")
        .args(NOBODY)
        .arg(dir.path().join("analytics-service"))
        .arg("api")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("MONGO_URL", common::fresh_database_url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/health");
    let healthy = common::eventually(Duration::from_secs(30), || async {
        http.get(&url).send().await.is_ok_and(|response| response.status() == 200)
    })
    .await;
    let exited = child.try_wait().unwrap();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    assert!(healthy, "no /health on port {port} ({exited:?}): {}", String::from_utf8_lossy(&output.stderr));
}
