//! The `analytics-service` binary as an operator runs it: configuration from a
//! `.env` file, the original README's curl examples, clear start-up errors, and a
//! graceful stop on SIGTERM.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_analytics-service");

/// Runs the binary in `dir` with a clean configuration environment plus `vars`.
fn service(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    command.current_dir(dir).args(args).env("RUST_LOG", "info");
    for name in ["PORT", "HOST", "MONGO_URL", "QUEUE_NAME", "BATCH_SIZE", "POLL_MS"] {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    command
}

fn run_to_end(mut command: Command) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap()
}

fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn runs_from_a_dotenv_file_and_answers_the_readme_examples() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let queue = "custom_queue";
    let url = common::fresh_database_url();
    common::write_file(
        dir.path(),
        ".env",
        &format!("PORT={port}\nMONGO_URL={url}\nQUEUE_NAME={queue}\nBATCH_SIZE=50\nPOLL_MS=50\n"),
    );
    let mut child = service(dir.path(), &["all"], &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let up = common::eventually(Duration::from_secs(30), || async {
        http.get(format!("{base}/stats?site_id=x")).send().await.is_ok()
    })
    .await;
    assert!(up, "the service listens on the PORT from .env");

    // curl -X POST http://localhost:1000/event -H "Content-Type: application/json" \
    //   -d '{"site_id":"site-001","event_type":"page_view","path":"/pricing","user_id":"user-123"}'
    let example =
        json!({ "site_id": "site-001", "event_type": "page_view", "path": "/pricing", "user_id": "user-123" });
    for _ in 0..2 {
        let response = http.post(format!("{base}/event")).json(&example).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.unwrap(), json!({ "status": "queued" }));
    }
    // curl "http://localhost:1000/stats?site_id=site-001"
    let expected = json!({
        "total_events": 2,
        "unique_users": 1,
        "top_paths": [{ "path": "/pricing", "count": 2 }],
        "events_by_type": [{ "event_type": "page_view", "count": 2 }]
    });
    let stats_match = common::eventually(Duration::from_secs(15), || async {
        let mut stats: Value =
            http.get(format!("{base}/stats?site_id=site-001")).send().await.unwrap().json().await.unwrap();
        // The event figures only: the visit figures (issue #14) are tested in tests/api/breakdown.rs.
        for visit_figure in ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration"] {
            stats.as_object_mut().map(|figures| figures.remove(visit_figure));
        }
        stats == expected
    })
    .await;
    assert!(stats_match, "the worker in the same process processed both events");

    terminate(&child);
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut logs = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut logs).unwrap();
        (status, logs)
    })
    .await
    .unwrap();
    let (status, logs) = status;
    assert!(status.success(), "graceful exit on SIGTERM: {status:?}\n{logs}");
    for line in [
        "Worker running...",
        "Queue Ready",
        "Processing batch...",
        &format!("API listening on http://127.0.0.1:{port}"),
        "stopped",
    ] {
        assert!(logs.contains(line), "log should contain {line:?}:\n{logs}");
    }
    // The operator's messages above stay; what the service did is read from the database.
    let database = mongodb::Client::with_uri_str(&url).await.unwrap().default_database().unwrap();
    let collections = database.list_collection_names().await.unwrap();
    assert!(
        collections.iter().any(|c| c == queue) && !collections.iter().any(|c| c == "events_queue"),
        "the QUEUE_NAME from .env is used: {collections:?}"
    );
}

#[test]
fn environment_variables_win_over_the_dotenv_file() {
    let dir = tempfile::tempdir().unwrap();
    common::write_file(dir.path(), ".env", "PORT=8080\nBATCH_SIZE=0\n");
    let output = run_to_end(service(dir.path(), &["worker"], &[("BATCH_SIZE", "abc")]));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid BATCH_SIZE=\"abc\""), "{stderr}");
}

#[test]
fn invalid_configuration_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("PORT", "0", "invalid PORT=\"0\": expected a whole number from 1 to 65535"),
        ("PORT", "http", "invalid PORT=\"http\""),
        ("BATCH_SIZE", "0", "invalid BATCH_SIZE=\"0\": expected a whole number from 1 to 100000"),
        ("POLL_MS", "0", "invalid POLL_MS=\"0\""),
        (
            "MONGO_URL",
            "postgres://u:pw@localhost/db",
            "invalid MONGO_URL=\"postgres://****@localhost/db\": expected a MongoDB connection string",
        ),
    ];
    for (var, value, expected) in cases {
        let output = run_to_end(service(dir.path(), &["all"], &[(var, value)]));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(expected), "{var}={value}: {stderr}");
    }
}

#[test]
fn an_unreachable_database_stops_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mongodb://app:secret@127.0.0.1:{}/analytics_db", common::free_port());
    let output = run_to_end(service(dir.path(), &["worker"], &[("MONGO_URL", &url)]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot start: database unreachable at mongodb://app:****@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

#[test]
fn a_privileged_port_as_a_normal_user_explains_the_fix() {
    // Ports below 1024 are privileged unless the kernel was told otherwise.
    let unprivileged_start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    assert!(unprivileged_start > 1000, "this kernel lets anyone bind port 1000; the check cannot be made here");

    let dir = tempfile::tempdir().unwrap();
    let mut command = if running_as_root() {
        // Root may bind anything: run the binary as `nobody` instead.
        let copy = dir.path().join("analytics-service");
        std::fs::copy(BINARY, &copy).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(copy).arg("api");
        c
    } else {
        let mut c = Command::new(BINARY);
        c.arg("api");
        c
    };
    // The port is opened before the database is contacted, so no database is needed.
    command
        .current_dir(dir.path())
        .env("PORT", "1000")
        .env_remove("HOST")
        .env("MONGO_URL", "mongodb://127.0.0.1:9/analytics_db");

    let output = run_to_end(command);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on 127.0.0.1:1000"), "{stderr}");
    assert!(stderr.contains("ports below 1024 need root or the CAP_NET_BIND_SERVICE capability"), "{stderr}");
    assert!(stderr.contains("PORT=8000"), "{stderr}");
    assert!(stderr.contains("sudo setcap cap_net_bind_service=+ep"), "{stderr}");
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

#[test]
fn sigterm_during_start_up_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing answers here: start-up waits for the database (about two seconds).
    let url = format!("mongodb://127.0.0.1:{}/analytics_db", common::free_port());
    let mut child = service(dir.path(), &["worker"], &[("MONGO_URL", &url)]).stderr(Stdio::piped()).spawn().unwrap();
    // The stop signals are handled from the start: wait until the process has its
    // SIGTERM handler (before, SIGTERM would kill it), then stop it at once.
    if !common::wait_until_it_catches_sigterm(child.id(), Duration::from_secs(30)) {
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        panic!("the service never handled SIGTERM: {:?}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    terminate(&child);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "clean exit: {:?}\n{stderr}", output.status);
    assert!(stderr.contains("stop requested during start-up"), "{stderr}");
}

#[tokio::test]
async fn quarantine_list_and_requeue_show_and_move_back_entries_set_aside() {
    use mongodb::bson::{Document, doc, oid::ObjectId};
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_database_url();
    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    let db = client.default_database().unwrap();
    let id = ObjectId::new();
    let entry = doc! { "_id": id, "site_id": "site-q", "event_type": "page_view", "path": "/", "user_id": "u" };
    let set_aside = doc! { "_id": id, "entry": entry.clone(), "error": "database refused a write: example",
    "quarantined_at": mongodb::bson::DateTime::now() };
    db.collection::<Document>("events_quarantine").insert_one(set_aside).await.unwrap();

    let listed = run_to_end(service(dir.path(), &["quarantine", "list"], &[("MONGO_URL", &url)]));
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.status.code(), Some(0), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(stdout.starts_with("1 entries in events_quarantine"), "{stdout}");
    assert!(stdout.contains(&id.to_hex()) && stdout.contains("site-q") && stdout.contains("example"), "{stdout}");

    let requeued = run_to_end(service(dir.path(), &["quarantine", "requeue"], &[("MONGO_URL", &url)]));
    assert_eq!(requeued.status.code(), Some(0), "{}", String::from_utf8_lossy(&requeued.stderr));
    assert_eq!(String::from_utf8_lossy(&requeued.stdout).trim(), "requeued 1 entries");
    let queued: Vec<Document> = {
        use futures_util::TryStreamExt;
        db.collection::<Document>("events_queue").find(doc! {}).await.unwrap().try_collect().await.unwrap()
    };
    assert_eq!(queued, vec![entry], "back in the queue as it was, same _id");
    assert_eq!(db.collection::<Document>("events_quarantine").count_documents(doc! {}).await.unwrap(), 0);
}
