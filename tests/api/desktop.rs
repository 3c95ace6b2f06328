//! The desktop app's logic (the controller behind its commands), without a
//! window: status transitions, the live snapshot, settings applied by restart,
//! and the managed local database.

use std::path::Path;
use std::time::Duration;

use analytics_desk::PartStatus;
use analytics_desk::config::desktop_settings::Values;
use analytics_desk::desktop::controller::{Controller, DesktopPaths, Part};
use analytics_desk::storage::local_db::{self, DatabaseState};

use crate::common::{self, eventually};
use crate::helpers::event_json;

fn paths(dir: &Path, sidecar_dir: Option<&Path>) -> DesktopPaths {
    DesktopPaths {
        settings_file: dir.join("config/settings.json"),
        database_dir: dir.join("data/db"),
        seed_dir: dir.to_path_buf(),
        sidecar_dir: sidecar_dir.map(Path::to_path_buf),
        export_dir: dir.join("Downloads"),
    }
}

/// A controller whose first run is seeded by a `.env` with these lines.
fn controller_with_env(dir: &Path, dotenv: &str) -> Controller {
    common::write_file(dir, ".env", dotenv);
    Controller::new(paths(dir, None))
}

fn values(pairs: &[(&str, &str)]) -> Values {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn start_and_stop_move_through_the_statuses_and_the_snapshot_follows_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let controller = controller_with_env(
        dir.path(),
        &format!("PORT={port}\nMONGO_URL={}\nPOLL_MS=20\n", common::fresh_database_url()),
    );
    let before = controller.snapshot().await;
    assert_eq!((before.api, before.worker), (PartStatus::Stopped, PartStatus::Stopped));
    assert_eq!(before.worker_batch_size, None);
    assert_eq!((before.queue_depth, before.api_url), (None, None));

    controller.start(Part::All).await.unwrap();
    let running = controller.tick().await;
    assert!(matches!(running.api, PartStatus::Running { addr: Some(a) } if a.port() == port));
    assert_eq!(running.worker, PartStatus::Running { addr: None });
    assert_eq!(running.worker_batch_size, Some(1000), "the running worker's batch size");
    assert_eq!(running.api_url, Some(format!("http://localhost:{port}")));
    assert_eq!(running.last_error, None);

    let http = reqwest::Client::new();
    for i in 0..5 {
        let response = http
            .post(format!("http://127.0.0.1:{port}/event"))
            .header("content-type", "application/json")
            .body(event_json("desk-site", &format!("/p{}", i % 2), "u"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let processed = eventually(Duration::from_secs(10), || async { controller.tick().await.events_processed == 5 });
    assert!(processed.await);
    let snapshot = controller.snapshot().await;
    assert_eq!((snapshot.events_queued, snapshot.total_events, snapshot.queue_depth), (5, Some(5), Some(0)));
    assert_eq!(controller.sites().await.unwrap()[0].events, 5);
    assert_eq!(controller.site_stats("desk-site").await.unwrap().top_paths[0].path, "/p0");

    controller.stop(Part::Worker).await;
    let half = controller.snapshot().await;
    assert_eq!((half.worker, half.worker_batch_size), (PartStatus::Stopped, None));
    assert!(matches!(half.api, PartStatus::Running { .. }), "stopping the worker leaves the API");
    controller.stop(Part::All).await;
    assert_eq!(controller.snapshot().await.api, PartStatus::Stopped);
}

#[tokio::test]
async fn a_start_error_is_reported_in_plain_words_and_kept_as_the_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let controller = controller_with_env(
        dir.path(),
        &format!("PORT={}\nMONGO_URL={}\n", taken.local_addr().unwrap().port(), common::fresh_database_url()),
    );

    let error = controller.start(Part::Api).await.unwrap_err();

    assert!(error.contains("already in use") && error.contains("set PORT to another port"), "{error}");
    let snapshot = controller.snapshot().await;
    assert_eq!(snapshot.last_error.as_deref(), Some(error.as_str()));
    assert!(matches!(snapshot.api, PartStatus::Failed { .. }));
}

#[tokio::test]
async fn saved_settings_are_validated_persisted_and_applied_by_restarting_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_database_url();
    let controller = controller_with_env(dir.path(), &format!("PORT={}\nMONGO_URL={url}\n", common::free_port()));
    controller.start(Part::All).await.unwrap();
    let mut edited = controller.settings_view().await.values;
    assert_eq!(edited["BATCH_SIZE"], "1000");

    edited.insert("BATCH_SIZE".into(), "0".into());
    let errors = controller.validate(edited.clone()).await;
    assert_eq!(errors["BATCH_SIZE"], "expected a whole number from 1 to 100000");
    let refused = controller.save_settings(edited.clone()).await.unwrap_err();
    assert!(refused.contains("BATCH_SIZE"), "{refused}");
    assert!(!dir.path().join("config/settings.json").exists(), "nothing saved when invalid");

    edited.insert("BATCH_SIZE".into(), "7".into());
    let outcome = controller.save_settings(edited.clone()).await.unwrap();

    assert_eq!(outcome.restarted, ["api", "worker"]);
    assert_eq!(controller.engine().config().batch_size, 7, "the running engine uses the new value");
    let snapshot = controller.snapshot().await;
    assert!(
        matches!(snapshot.api, PartStatus::Running { .. }) && matches!(snapshot.worker, PartStatus::Running { .. })
    );
    assert_eq!(snapshot.worker_batch_size, Some(7), "the restarted worker moves batches of the saved size");
    let saved = std::fs::read_to_string(dir.path().join("config/settings.json")).unwrap();
    assert!(saved.contains("\"BATCH_SIZE\": \"7\""), "{saved}");
    assert!(controller.save_settings(edited).await.unwrap().restarted.is_empty(), "unchanged: no restart");

    // A new controller (the next app start) reads the saved file, not the .env.
    let reopened = Controller::new(paths(dir.path(), None));
    assert_eq!(reopened.engine().config().batch_size, 7);
    controller.shutdown().await;
}

#[tokio::test]
async fn the_password_never_reaches_the_ui_and_is_kept_when_the_mask_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller_with_env(dir.path(), "MONGO_URL=mongodb://app:pa55@db.example.com:27017/site\n");
    let shown = controller.settings_view().await.values;
    assert_eq!(shown["MONGO_URL"], "mongodb://app:****@db.example.com:27017/site");
    assert_eq!(controller.snapshot().await.database.url, "mongodb://app:****@db.example.com:27017/site");

    let mut edited = shown;
    edited.insert("POLL_MS".into(), "500".into());
    let outcome = controller.save_settings(edited).await.unwrap();

    assert_eq!(outcome.values["MONGO_URL"], "mongodb://app:****@db.example.com:27017/site");
    assert_eq!(controller.engine().config().mongo_url, "mongodb://app:pa55@db.example.com:27017/site");
    assert_eq!(controller.snapshot().await.database.state, DatabaseState::External, "a remote database is the user's");
}

#[tokio::test]
async fn the_saved_password_is_never_sent_to_a_host_or_user_typed_in_the_ui() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller_with_env(dir.path(), "MONGO_URL=mongodb://app:pa55@db.example.com:27017/site\n");
    let mut edited = controller.settings_view().await.values;
    edited.insert("MONGO_URL".into(), "mongodb://app:****@attacker.example:27017/site".into());

    let errors = controller.validate(edited.clone()).await;
    let refused = controller.save_settings(edited).await.unwrap_err();

    assert!(errors["MONGO_URL"].contains("type the password again"), "{errors:?}");
    assert!(refused.contains("type the password again") && !refused.contains("pa55"), "{refused}");
    assert_eq!(controller.engine().config().mongo_url, "mongodb://app:pa55@db.example.com:27017/site");
    assert!(!dir.path().join("config/settings.json").exists(), "nothing saved");
}

#[tokio::test]
async fn the_managed_database_starts_when_nothing_answers_and_stops_with_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let secantus = common::secantus_binary();
    let port = common::free_port();
    common::write_file(
        dir.path(),
        ".env",
        &format!("PORT={}\nMONGO_URL=mongodb://127.0.0.1:{port}/analytics_db\n", common::free_port()),
    );
    let controller = Controller::new(paths(dir.path(), secantus.parent()));
    assert_eq!(controller.snapshot().await.database.state, DatabaseState::Stopped);

    controller.start(Part::Worker).await.unwrap();

    let database = controller.snapshot().await.database;
    assert_eq!(database.state, DatabaseState::Running);
    assert!(database.kind.is_some() && database.version.is_some(), "{database:?}");
    assert_eq!(database.data_path.as_deref(), Some(dir.path().join("data/db").to_str().unwrap()));
    assert!(local_db::answers(port).await);
    assert_eq!(controller.sites().await.unwrap(), [], "stats readable from the managed database");

    controller.shutdown().await;

    assert!(!local_db::answers(port).await, "stopped with the app");
    assert_eq!(controller.snapshot().await.database.state, DatabaseState::Stopped);
    assert_eq!(controller.snapshot().await.worker, PartStatus::Stopped);
}

#[tokio::test]
async fn validation_reports_only_the_invalid_fields() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller_with_env(dir.path(), "");
    let errors = controller.validate(values(&[("PORT", "99999"), ("QUEUE_NAME", "ok_queue")])).await;
    assert_eq!(errors.keys().collect::<Vec<_>>(), ["PORT"]);
}

#[tokio::test]
async fn export_csv_saves_the_sites_csv_in_the_downloads_dir_without_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let controller = controller_with_env(
        dir.path(),
        &format!("PORT={port}\nMONGO_URL={}\nPOLL_MS=20\n", common::fresh_database_url()),
    );
    controller.start(Part::All).await.unwrap();
    let http = reqwest::Client::new();
    let events: Vec<serde_json::Value> = ["/a", "/b", "/a"]
        .iter()
        .map(|path| {
            serde_json::json!({ "site_id": "desk/site", "event_type": "page_view", "path": path, "user_id": "u",
                                "timestamp": "2024-05-01T10:00:00Z" })
        })
        .collect();
    let sent = http
        .post(format!("http://127.0.0.1:{port}/events"))
        .header("content-type", "application/json")
        .body(serde_json::Value::from(events).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let processed = eventually(Duration::from_secs(10), || async { controller.tick().await.events_processed == 3 });
    assert!(processed.await);

    let first = controller.export_site_csv("desk/site").await.unwrap();
    let second = controller.export_site_csv("desk/site").await.unwrap();

    assert_eq!(first, dir.path().join("Downloads/desk_site-stats.csv"));
    assert_eq!(second, dir.path().join("Downloads/desk_site-stats (2).csv"), "an earlier export is kept");
    let saved = std::fs::read_to_string(&first).unwrap();
    let rows: Vec<&str> = saved.lines().filter(|line| !line.starts_with("filter,to,")).collect();
    assert_eq!(
        rows[..10],
        [
            "section,key,value",
            "filter,site_id,desk/site",
            "filter,from,2024-05-01T10:00:00Z",
            "filter,interval,day",
            "summary,total_events,3",
            "summary,unique_users,1",
            "path,/a,2",
            "path,/b,1",
            "event_type,page_view,3",
            "bucket,2024-05-01T00:00:00Z,3",
        ]
    );
    let later_days = &rows[10..];
    assert!(later_days.len() > 500, "a bucket for every day up to today");
    assert!(later_days.iter().all(|row| row.starts_with("bucket,") && row.ends_with(",0")), "{later_days:?}");
    // The same function as the HTTP endpoint: the same rows (but for the moment "to" was taken).
    let served = http
        .get(format!("http://127.0.0.1:{port}/stats/export.csv?site_id=desk%2Fsite"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served: Vec<&str> = served.lines().filter(|line| !line.starts_with("filter,to,")).collect();
    assert_eq!(rows[..10], served[..10]);
    controller.shutdown().await;
}

#[tokio::test]
async fn the_snapshot_shows_the_quarantine_and_requeue_moves_it_back_into_the_queue() {
    use mongodb::bson::{Document, doc, oid::ObjectId};
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_database_url();
    let controller = controller_with_env(dir.path(), &format!("PORT={}\nMONGO_URL={url}\n", common::free_port()));
    controller.start(Part::Api).await.unwrap();
    assert_eq!(controller.snapshot().await.quarantined, Some(0));

    let store = controller.engine().store().await.unwrap().clone();
    let quarantine = store.database().collection::<Document>(analytics_desk::worker::quarantine::QUARANTINE_COLLECTION);
    let entry = doc! { "_id": ObjectId::new(), "site_id": "s", "event_type": "page_view", "path": "/", "user_id": "u" };
    let set_aside = doc! { "_id": entry.get_object_id("_id").unwrap(), "entry": entry.clone(), "error": "refused",
    "quarantined_at": mongodb::bson::DateTime::now() };
    quarantine.insert_one(set_aside).await.unwrap();
    // The count comes from collection metadata: wait for it rather than assume.
    let shown = eventually(Duration::from_secs(10), || async { controller.snapshot().await.quarantined == Some(1) });
    assert!(shown.await, "the snapshot shows the entry set aside");

    assert_eq!(controller.requeue_quarantine().await, Ok(1));
    assert_eq!(controller.snapshot().await.quarantined, Some(0));
    assert_eq!(store.queue().find_one(doc! {}).await.unwrap(), Some(entry), "back in the queue, same _id");
    controller.stop(Part::All).await;
}

#[tokio::test]
async fn the_desktop_reads_and_replaces_a_sites_goals_by_the_apis_rules() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_database_url();
    let controller = controller_with_env(dir.path(), &format!("PORT={}\nMONGO_URL={url}\n", common::free_port()));
    assert_eq!(controller.site_goals("shop").await.unwrap().goals, []);

    let saved = controller.set_site_goals("shop", serde_json::json!([{ "page": "/blog/*" }])).await.unwrap();
    assert_eq!(saved.goals, [analytics_desk::sites::Goal::page("/blog/*")]);
    assert_eq!(controller.site_goals("shop").await.unwrap(), saved);

    let refused = controller.set_site_goals("shop", serde_json::json!([{ "page": "blog" }])).await.unwrap_err();
    assert!(refused.contains("goals[0]: page must be a path starting with /"), "{refused}");
    assert_eq!(controller.site_goals("shop").await.unwrap(), saved, "nothing changed");
    controller.shutdown().await;
}
