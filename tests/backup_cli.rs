//! `analytics-service backup FILE` and `restore FILE` as an operator runs them:
//! a summary line, a second restore that adds nothing, and a damaged file
//! refused with exit status 1, a clear message and nothing stored.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use analytics_desk::storage::Store;
use analytics_desk::{Config, Engine};
use mongodb::bson::doc;
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_analytics-service");

/// Runs the binary in `dir` against the database at `url`.
fn service(dir: &Path, url: &str, args: &[&str]) -> Output {
    let mut command = Command::new(BINARY);
    command.current_dir(dir).args(args).env("MONGO_URL", url).env("RUST_LOG", "warn");
    for name in ["PORT", "HOST", "QUEUE_NAME", "BATCH_SIZE", "POLL_MS", "API_TOKEN"] {
        command.env_remove(name);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn store(url: &str) -> Store {
    let config = Config::default().with_mongo_url(url).unwrap();
    Store::connect(&config).await.unwrap()
}

#[tokio::test]
async fn backup_then_restore_through_the_cli_and_a_damaged_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source_url = common::fresh_database_url();
    // Twelve events of one site through the API (left queued: the backup takes them too).
    let config = Config { port: 0, ..Config::default() }.with_mongo_url(&source_url).unwrap();
    let engine = Engine::new(config);
    let address = engine.start_api().await.unwrap();
    let events: Vec<_> = (0..12)
        .map(|i| json!({ "site_id": "cli-site", "event_type": "page_view", "path": format!("/p{}", i % 3), "user_id": format!("u{}", i % 4) }))
        .collect();
    let response = reqwest::Client::new().post(format!("http://{address}/events")).json(&events).send().await.unwrap();
    assert_eq!(response.status(), 200);
    engine.shutdown().await;

    let backup = service(dir.path(), &source_url, &["backup", "backup.ndjson.gz"]);
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    assert!(text(&backup.stdout).starts_with("backed up 12 events, 0 sites, "), "{}", text(&backup.stdout));
    assert!(dir.path().join("backup.ndjson.gz").is_file());

    let target_url = common::fresh_database_url();
    let restore = service(dir.path(), &target_url, &["restore", "backup.ndjson.gz"]);
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    assert!(text(&restore.stdout).starts_with("restored 12 events (queued"), "{}", text(&restore.stdout));
    let again = service(dir.path(), &target_url, &["restore", "backup.ndjson.gz"]);
    assert!(
        text(&again.stdout).contains("restored 0 events (queued: the worker adds them to the figures), skipped 12")
    );
    let target = store(&target_url).await;
    assert_eq!(target.queue().count_documents(doc! {}).await.unwrap(), 12);

    // A file cut short: refused, nothing stored.
    let bytes = std::fs::read(dir.path().join("backup.ndjson.gz")).unwrap();
    std::fs::write(dir.path().join("cut.gz"), &bytes[..bytes.len() / 2]).unwrap();
    let empty_url = common::fresh_database_url();
    let refused = service(dir.path(), &empty_url, &["restore", "cut.gz"]);
    assert_eq!(refused.status.code(), Some(1));
    let message = text(&refused.stderr);
    assert!(message.contains("cut.gz is damaged") && message.contains("nothing was restored"), "{message}");
    let empty = store(&empty_url).await;
    assert_eq!(empty.queue().count_documents(doc! {}).await.unwrap(), 0);

    // A missing file names the file.
    let missing = service(dir.path(), &empty_url, &["restore", "nowhere.gz"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot read nowhere.gz"), "{}", text(&missing.stderr));
}
