//! The desktop's two fixes for a refused port below 1024, through the
//! Controller: the snapshot's structured `port_error`, "Allow port N" (with a
//! stand-in for `pkexec` that records its arguments) and "Use port 8000
//! instead" (another free port here). Tests run as root, so the refusal is made
//! by dropping `CAP_NET_BIND_SERVICE` from the test's own thread (a
//! current-thread runtime binds on it); programs it runs get it back.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use analytics_desk::PartStatus;
use analytics_desk::desktop::controller::{Controller, DesktopPaths, Part};
use analytics_desk::desktop::port_access;
use analytics_desk::http::port_helper::PortError;
use rustix::thread::{CapabilitySet, capabilities, set_capabilities};

use crate::common;

const HELPER: &str = env!("CARGO_BIN_EXE_analytics-bind-port");

/// A controller with its app directory (sidecars) in `dir/app`, on `port`.
fn controller(dir: &Path, port: u16) -> Controller {
    common::write_file(dir, ".env", &format!("PORT={port}\nMONGO_URL={}\nPOLL_MS=20\n", common::fresh_database_url()));
    std::fs::create_dir_all(dir.join("app")).unwrap();
    Controller::new(DesktopPaths {
        settings_file: dir.join("config/settings.json"),
        database_dir: dir.join("data/db"),
        seed_dir: dir.to_path_buf(),
        sidecar_dir: Some(dir.join("app")),
        export_dir: dir.join("Downloads"),
    })
}

/// From here on this thread binds like a normal user: no `CAP_NET_BIND_SERVICE`
/// in its effective set (its children, run as root, have it again).
fn drop_bind_privilege() {
    let mut sets = capabilities(None).unwrap();
    sets.effective.remove(CapabilitySet::NET_BIND_SERVICE);
    set_capabilities(None, sets).unwrap();
    assert!(std::net::TcpListener::bind(("127.0.0.1", low_port())).is_err(), "the thread still binds low ports");
}

fn low_port() -> u16 {
    600 + rand::random::<u16>() % 390
}

/// A port below 1024 nothing listens on (checked while this thread may still bind it).
fn free_low_port() -> u16 {
    (0..200).map(|_| low_port()).find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()).unwrap()
}

fn script(path: &Path, body: &str) -> PathBuf {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

#[tokio::test]
async fn allow_port_runs_pkexec_setcap_on_the_helper_then_starts_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_low_port();
    let controller = controller(dir.path(), port);
    let helper = dir.path().join("app/analytics-bind-port");
    drop_bind_privilege();

    // No helper beside the app: the refusal says so, and Allow has nothing to run.
    let error = controller.start(Part::All).await.unwrap_err();
    assert!(error.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{error}");
    assert_eq!(controller.snapshot().await.port_error, Some(PortError { port, helper: None }));

    // A helper lacking the capability (a stand-in answering as the real one does).
    script(&helper, "echo 'analytics-bind-port: this helper lacks the cap_net_bind_service capability' >&2; exit 3");
    controller.start(Part::All).await.unwrap_err();
    let snapshot = controller.snapshot().await;
    assert_eq!(snapshot.port_error, Some(PortError { port, helper: Some(helper.display().to_string()) }));
    assert!(matches!(snapshot.api, PartStatus::Failed { .. }));

    // The user closes the password dialog: nothing changes, the buttons stay.
    let refusing = script(&dir.path().join("pkexec-refused"), "exit 126");
    let refused = port_access::allow_port(&controller, &refusing).await.unwrap_err();
    assert!(refused.contains("password dialog was closed or refused"), "{refused}");
    assert!(refused.contains(&format!("sudo setcap cap_net_bind_service=+ep {}", helper.display())), "{refused}");
    assert!(controller.snapshot().await.port_error.is_some());

    // Allowed: the stand-in records its arguments and "gives the capability" by
    // putting the real helper in place (run as root, it binds).
    let recorded = dir.path().join("pkexec-args");
    let pkexec = script(
        &dir.path().join("pkexec"),
        &format!("printf '%s\\n' \"$@\" > {}\ncp {HELPER} \"$3\"", recorded.display()),
    );
    port_access::allow_port(&controller, &pkexec).await.unwrap();
    let args = std::fs::read_to_string(&recorded).unwrap();
    assert_eq!(args, format!("setcap\ncap_net_bind_service=+ep\n{}\n", helper.display()));
    let snapshot = controller.snapshot().await;
    assert!(matches!(snapshot.api, PartStatus::Running { addr: Some(a) } if a.port() == port), "{snapshot:?}");
    assert_eq!((snapshot.port_error, snapshot.last_error), (None, None));
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health")).await.unwrap();
    assert_eq!(health.status(), 200, "served on the socket the helper handed back");
    controller.shutdown().await;
}

#[tokio::test]
async fn allow_port_without_a_helper_or_pkexec_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller(dir.path(), free_low_port());
    let recorded = dir.path().join("ran");
    let pkexec = script(&dir.path().join("pkexec"), &format!("touch {}", recorded.display()));
    let error = port_access::allow_port(&controller, &pkexec).await.unwrap_err();
    assert!(error.contains("the port helper is not installed at"), "{error}");
    assert!(!recorded.exists(), "nothing is run without a helper");

    script(&dir.path().join("app/analytics-bind-port"), "exit 3");
    let error = port_access::allow_port(&controller, &dir.path().join("no-such-pkexec")).await.unwrap_err();
    assert!(error.contains("is not installed (install the pkexec package)"), "{error}");
    assert_eq!(controller.snapshot().await.api, PartStatus::Stopped, "no start without the capability step");
}

#[tokio::test]
async fn use_port_saves_the_new_port_and_starts_there() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_low_port();
    let controller = controller(dir.path(), port);
    drop_bind_privilege();
    controller.start(Part::All).await.unwrap_err();
    assert_eq!(controller.snapshot().await.port_error.map(|e| e.port), Some(port));

    let other = common::free_port();
    port_access::use_port(&controller, other).await.unwrap();
    assert_eq!(controller.settings_view().await.values["PORT"], other.to_string(), "saved");
    let snapshot = controller.snapshot().await;
    assert!(matches!(snapshot.api, PartStatus::Running { addr: Some(a) } if a.port() == other), "{snapshot:?}");
    assert_eq!(snapshot.worker, PartStatus::Running { addr: None });
    assert_eq!((snapshot.port_error, snapshot.last_error), (None, None));
    controller.shutdown().await;
}

#[tokio::test]
async fn an_address_the_helper_refuses_is_said_plainly_without_a_setcap_that_would_not_help() {
    let port = free_low_port();
    drop_bind_privilege();
    // The real helper (run as root here, so holding the capability) refuses every address but loopback.
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
    let error = analytics_desk::http::bind_with_helper(addr, Some(Path::new(HELPER))).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&format!("cannot listen on 0.0.0.0:{port}")), "{message}");
    assert!(message.contains("the port helper, which refused") && message.contains("0.0.0.0"), "{message}");
    assert!(!message.contains("setcap"), "a capability would not help here: {message}");
    assert_eq!(error.port_error(), Some(PortError { port, helper: None }), "only Use port 8000 is offered");
}
