//! The desktop app's **Back up…** and **Restore…** (the controller behind the
//! `back_up` and `restore_backup` commands), without a window.

use std::path::Path;
use std::time::Duration;

use analytics_desk::desktop::controller::{Controller, DesktopPaths, Part};

use crate::common::{self, eventually};
use crate::helpers::event_json;

/// A controller over a fresh database, with its files in `dir`.
fn controller(dir: &Path) -> (Controller, u16) {
    let port = common::free_port();
    let dotenv = format!("PORT={port}\nMONGO_URL={}\nPOLL_MS=20\n", common::fresh_database_url());
    common::write_file(dir, ".env", &dotenv);
    let paths = DesktopPaths {
        settings_file: dir.join("config/settings.json"),
        database_dir: dir.join("data/db"),
        seed_dir: dir.to_path_buf(),
        sidecar_dir: None,
        export_dir: dir.join("Downloads"),
    };
    (Controller::new(paths), port)
}

#[tokio::test]
async fn back_up_saves_a_new_file_each_time_and_restore_brings_the_events_back() {
    let (source_dir, target_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (source, port) = controller(source_dir.path());
    source.start(Part::All).await.unwrap();
    let http = reqwest::Client::new();
    for i in 0..6 {
        let body = event_json("desk-backup", &format!("/p{}", i % 2), &format!("u{i}"));
        let response = http
            .post(format!("http://127.0.0.1:{port}/event"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(eventually(Duration::from_secs(10), || async { source.tick().await.events_processed == 6 }).await);

    let first = source.back_up().await.unwrap();
    let second = source.back_up().await.unwrap();
    assert_eq!(first.events, 6);
    assert!(first.path.starts_with(&source_dir.path().join("Downloads/analytics-desk-backup-").display().to_string()));
    assert!(first.path.ends_with(".ndjson.gz") && second.path.ends_with(" (2).ndjson.gz"), "{second:?}");
    assert!(first.message.contains("Backed up 6 events") && first.message.contains("no passwords or tokens"));
    source.stop(Part::All).await;

    let (target, _) = controller(target_dir.path());
    let relative = target.restore_backup("Downloads/backup.ndjson.gz").await.unwrap_err();
    assert!(relative.contains("Backup file: give the full path"), "{relative}");
    let restored = target.restore_backup(&first.path).await.unwrap();
    assert_eq!((restored.events, restored.skipped), (6, 0));
    assert!(restored.message.contains("start the service"), "stopped worker: {}", restored.message);

    target.start(Part::All).await.unwrap();
    let moved = eventually(Duration::from_secs(10), || async {
        target.sites().await.is_ok_and(|sites| sites.first().is_some_and(|site| site.events == 6))
    });
    assert!(moved.await, "the worker moved the restored events");
    let again = target.restore_backup(&second.path).await.unwrap();
    assert_eq!((again.events, again.skipped), (0, 6), "restoring again adds nothing");
    assert!(again.message.starts_with("Restored 0 events; skipped 6 already stored"), "{}", again.message);
    target.stop(Part::All).await;
}
