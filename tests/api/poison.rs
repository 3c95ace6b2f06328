//! Batches holding an entry that can never move (quarantined). The batch too
//! big for one command or transaction has its own test binary (`tests/big_batches.rs`).

use mongodb::bson::{Document, doc};
use serde_json::json;

use std::time::Duration;

use analytics_desk::{rollups, worker};

use crate::common::eventually;
use crate::helpers::{TestApp, event_json, spawn_app, spawn_app_without_transactions};

/// Runs the worker's batches by hand until the queue is empty (bounded), and
/// returns how many events moved. A batch that fails fails the test.
async fn move_all(app: &TestApp, batch_size: u32) -> usize {
    let worker = app.worker(batch_size);
    let mut moved = 0;
    for _ in 0..10_000 {
        match worker.process_batch().await {
            Ok(0) if app.queue_count().await == 0 => return moved,
            Ok(n) => moved += n,
            Err(error) => panic!("a batch failed after {moved} events moved: {error}"),
        }
    }
    panic!("the queue did not drain within 10,000 batches ({moved} moved)");
}

/// Makes every event of `path` refused by the server: its counting documents
/// (in every lane's shard) hold a count that is not a number, which `$inc`
/// cannot add to. The queue entry itself is valid: only the database says no.
async fn corrupt_path_counts(app: &TestApp, site: &str, path: &str) -> Vec<String> {
    let paths = app.store.database().collection::<Document>(rollups::PATHS);
    let mut keys = Vec::new();
    for shard in 0..analytics_desk::worker::LANES {
        let id = rollups::shard_key(&[site, "page_view", path], shard);
        let document = doc! { "_id": &id, "count": "not a number", "site_id": site, "event_type": "page_view",
        "path": path, "shard": i64::from(shard) };
        paths.insert_one(document).await.unwrap();
        keys.push(id);
    }
    keys
}

#[tokio::test]
async fn an_entry_the_database_refuses_is_quarantined_its_neighbours_move_and_it_can_be_requeued() {
    let app = spawn_app().await;
    let site = "site-poison";
    // The rollups made ready first (on a fresh database they are built from
    // `events`, which empties them), so the corrupt count below stays.
    app.worker(10).mode().await.expect("rollups ready");
    let keys = corrupt_path_counts(&app, site, "/poison").await;
    for i in 0..30 {
        let path = if i == 17 { "/poison".to_string() } else { format!("/ok{}", i % 4) };
        assert_eq!(app.post_event(event_json(site, &path, &format!("u{i}"))).await.status(), 200);
    }
    let poison = app.queued().await.into_iter().find(|e| e.get_str("path") == Ok("/poison")).unwrap();

    app.engine.start_worker().await.expect("worker starts");
    let quarantine = app.store.database().collection::<Document>(worker::quarantine::QUARANTINE_COLLECTION);
    let settled = eventually(Duration::from_secs(60), || async {
        app.queue_count().await == 0 && quarantine.count_documents(doc! {}).await.unwrap() == 1
    })
    .await;
    assert!(
        settled,
        "queue never drained around the poison entry: {} queued, {} moved, {} quarantined",
        app.queue_count().await,
        app.events_count().await,
        quarantine.count_documents(doc! {}).await.unwrap()
    );

    // The neighbours moved, exactly; the bad entry is kept whole, with the reason.
    assert_eq!(app.events_count().await, 29);
    assert_eq!(app.stats(site).await["total_events"], 29);
    let set_aside = quarantine.find_one(doc! {}).await.unwrap().unwrap();
    assert_eq!(set_aside.get("_id"), poison.get("_id"));
    assert_eq!(set_aside.get_document("entry").unwrap(), &poison);
    assert!(!set_aside.get_str("error").unwrap().is_empty());
    let listed = worker::quarantine::list(&app.store, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].site_id.as_deref(), Some(site));

    // Counted in /metrics, shown in /health.
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "analytics_events_quarantined_total 1"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "analytics_quarantine_depth 1.0"), "{metrics}");
    let health: serde_json::Value = app.get_json("/health").await;
    assert_eq!(health["quarantined"], 1, "{health}");

    // Once the cause is fixed, a requeue moves it back (same _id) and it is counted once.
    let paths = app.store.database().collection::<Document>(rollups::PATHS);
    paths.delete_many(doc! { "_id": { "$in": keys } }).await.unwrap();
    assert_eq!(worker::quarantine::requeue(&app.store).await.unwrap(), 1);
    let moved = eventually(Duration::from_secs(30), || async { app.events_count().await == 30 }).await;
    assert!(moved, "the requeued entry did not move: {} queued", app.queue_count().await);
    assert_eq!(quarantine.count_documents(doc! {}).await.unwrap(), 0);
    let stats = app.stats(site).await;
    assert_eq!(stats["total_events"], 30);
    let poison_count = stats["top_paths"].as_array().unwrap().iter().find(|p| p["path"] == "/poison").cloned();
    assert_eq!(poison_count, Some(json!({ "path": "/poison", "count": 1 })));
    assert_eq!(worker::quarantine::requeue(&app.store).await.unwrap(), 0, "nothing left to requeue");
}

#[tokio::test]
async fn without_transactions_an_entry_the_database_refuses_is_quarantined_and_its_neighbours_move_once() {
    let app = spawn_app_without_transactions().await;
    let site = "site-validated";
    // An operator's rule on `events` that one queued entry breaks: the server
    // refuses that insert (DocumentValidationFailure), every time.
    let rule = doc! { "collMod": "events", "validator": { "path": { "$ne": "/poison" } } };
    app.store.database().run_command(rule).await.expect("validator set");
    for i in 0..12 {
        let path = if i == 5 { "/poison".to_string() } else { format!("/ok{i}") };
        assert_eq!(app.post_event(event_json(site, &path, "u")).await.status(), 200);
    }
    let poison = app.queued().await.into_iter().find(|e| e.get_str("path") == Ok("/poison")).unwrap();

    let moved = move_all(&app, 100).await;

    assert_eq!(moved, 11);
    assert_eq!((app.queue_count().await, app.events_count().await), (0, 11), "the neighbours moved, once each");
    assert_eq!(app.stats(site).await["total_events"], 11);
    let listed = worker::quarantine::list(&app.store, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, poison.get_object_id("_id").unwrap().to_hex());
    assert!(
        listed[0].error.contains("121") || listed[0].error.to_lowercase().contains("validation"),
        "{}",
        listed[0].error
    );

    let lift = doc! { "collMod": "events", "validator": {} };
    app.store.database().run_command(lift).await.expect("validator lifted");
    assert_eq!(worker::quarantine::requeue(&app.store).await.unwrap(), 1);
    assert_eq!(move_all(&app, 100).await, 1);
    assert_eq!(app.events_count().await, 12);
    let moved_back = app.store.events().find_one(doc! { "path": "/poison" }).await.unwrap().expect("moved");
    assert_eq!(moved_back.get("_id"), poison.get("_id"), "the same _id");
}
