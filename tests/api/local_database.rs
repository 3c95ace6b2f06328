//! The local database the desktop app launches: bound to loopback whatever
//! config files lie around, its files private, and never confused with another
//! program answering on its port.

use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use analytics_desk::storage::local_db::{ManagedDatabase, ServerKind};

use crate::common;

/// Where the probe below (run in a process of its own) starts its database and
/// writes what it saw.
const PROBE_DIR: &str = "ANALYTICS_DESK_LOCAL_DB_PROBE_DIR";
const HOSTILE_CONFIG: &str = "[server]\nhost = \"0.0.0.0\"\n";

/// True when something accepts connections on `port` of 127.0.0.2: a server
/// bound to 127.0.0.1 does not, one bound to every address (0.0.0.0) does.
fn reachable_beyond_127_0_0_1(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::new(127, 0, 0, 2), port)).is_ok()
}

async fn start(program: &Path, port: u16, data: &Path) -> Result<ManagedDatabase, String> {
    ManagedDatabase::start(ServerKind::Secantus, program, port, data).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_secantusd_toml_in_the_working_directory_or_home_cannot_expose_the_database() {
    let secantus = common::secantus_binary();
    // secantusd-rs reads ./secantusd.toml, then ~/.secantus/secantusd.toml: one
    // run with both (the working directory's wins), one with HOME's alone.
    let mut failures = Vec::new();
    for (case, in_working_dir) in [("working directory", true), ("home", false)] {
        let dir = tempfile::tempdir().unwrap();
        let (cwd, home) = (dir.path().join("cwd"), dir.path().join("home"));
        std::fs::create_dir_all(home.join(".secantus")).unwrap();
        std::fs::create_dir_all(&cwd).unwrap();
        common::write_file(&home.join(".secantus"), "secantusd.toml", HOSTILE_CONFIG);
        if in_working_dir {
            common::write_file(&cwd, "secantusd.toml", HOSTILE_CONFIG);
        }
        // The working directory and HOME are the process's: the probe runs in one of its own.
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "local_database::probe_in_a_hostile_environment", "--ignored", "--nocapture"])
            .current_dir(&cwd)
            .env("HOME", &home)
            .env("SECANTUSD_BIN", &secantus)
            .env(PROBE_DIR, dir.path())
            .output()
            .unwrap();
        let seen = std::fs::read_to_string(dir.path().join("seen")).unwrap_or_default();
        if !output.status.success() || seen != "reachable beyond 127.0.0.1: false" {
            failures.push(format!(
                "config in the {case}: probe saw {seen:?}\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Run by the test above, in a process whose working directory and HOME hold a
/// `secantusd.toml` asking for 0.0.0.0 (does nothing when run otherwise).
#[tokio::test]
#[ignore = "run by a_secantusd_toml_in_the_working_directory_or_home_cannot_expose_the_database"]
async fn probe_in_a_hostile_environment() {
    let Some(dir) = std::env::var_os(PROBE_DIR).map(PathBuf::from) else { return };
    let program = PathBuf::from(std::env::var_os("SECANTUSD_BIN").unwrap());
    let port = common::free_port();
    let database = start(&program, port, &dir.join("data/db")).await.unwrap();
    let exposed = reachable_beyond_127_0_0_1(port);
    database.stop().await;
    std::fs::write(dir.join("seen"), format!("reachable beyond 127.0.0.1: {exposed}")).unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_is_private_and_so_are_the_log_and_config() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    // As an earlier version left them: open to everyone on the machine.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.with_extension("log"), "").unwrap();
    std::fs::set_permissions(data.with_extension("log"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let database = start(&common::secantus_binary(), common::free_port(), &data).await.unwrap();
    let modes = (mode(&data), mode(&data.with_extension("log")));
    let config = data.with_extension("secantusd.toml");
    let config_mode = config.exists().then(|| mode(&config));
    database.stop().await;

    assert_eq!(modes, (0o700, 0o600), "data dir and log (octal {:o}, {:o})", modes.0, modes.1);
    assert_eq!(config_mode, Some(0o600), "the app's own secantusd.toml, beside the data");
}

/// Starting beside `squatter` (holding `port`) fails, naming the port and why.
async fn assert_refused_beside(squatter: &TcpListener, port: u16) {
    let dir = tempfile::tempdir().unwrap();
    let result = start(&common::secantus_binary(), port, &dir.path().join("db")).await;
    match result {
        Ok(database) => {
            database.stop().await;
            panic!("started although {} holds port {port}", squatter.local_addr().unwrap());
        }
        Err(error) => {
            assert!(error.contains(&format!("port {port}")) && error.contains("another program"), "{error}");
        }
    }
}

#[tokio::test]
async fn a_program_already_listening_on_the_port_is_refused_not_mistaken_for_the_database() {
    let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = squatter.local_addr().unwrap().port();
    assert_refused_beside(&squatter, port).await;
}

#[tokio::test]
async fn a_program_listening_on_ipv6_loopback_is_refused_too() {
    // `localhost` may resolve to ::1 first: a program there would get the app's connections.
    let squatter = TcpListener::bind((Ipv6Addr::LOCALHOST, common::free_port())).unwrap();
    let port = squatter.local_addr().unwrap().port();
    assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok(), "127.0.0.1:{port} itself is free");
    assert_refused_beside(&squatter, port).await;
}

/// The program we start must itself be what answers: a server program that
/// hands the port to another process (here a wrapper script that runs the real
/// server as its child) is refused, as a squatter that bound the port between
/// our check and the server's start would be.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_server_answering_from_another_process_than_the_one_started_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("secantusd-wrapper");
    // SIGTERM (our stop) is passed on to the real server, and waited for.
    let script = format!(
        "#!/bin/sh\n'{}' \"$@\" & pid=$!\ntrap 'kill $pid; wait $pid; exit 0' TERM\nwait $pid\n",
        common::secantus_binary().display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let port = common::free_port();

    let result = start(&wrapper, port, &dir.path().join("db")).await;

    let error = match result {
        Ok(database) => {
            database.stop().await;
            panic!("a server answering from another process was taken for ours");
        }
        Err(error) => error,
    };
    assert!(error.contains(&format!("port {port}")) && error.contains("another program"), "{error}");
    let stopped = common::eventually(std::time::Duration::from_secs(20), || async {
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
    });
    assert!(stopped.await, "what we started was stopped, with its child");
}
