//! The worker: batches moved exactly once, re-runs without duplicates, no sleep while a backlog remains.

use std::collections::HashSet;
use std::time::Duration;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, doc};

use crate::common::eventually;
use analytics_desk::rollups;
use analytics_desk::stats::{self, StatsFilter};

use crate::helpers::{event_json, spawn_app, spawn_app_with, spawn_app_without_transactions};

async fn enqueue(app: &crate::helpers::TestApp, n: usize, site: &str) {
    for i in 0..n {
        let status = app.post_event(event_json(site, &format!("/p{}", i % 5), &format!("u{i}"))).await.status();
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn batches_move_events_with_processed_at_and_empty_the_queue() {
    let app = spawn_app().await;
    enqueue(&app, 25, "site-w").await;
    let queued = app.queued().await;
    let worker = app.worker(10);
    let before = DateTime::now();

    let sizes = [
        worker.process_batch().await.unwrap(),
        worker.process_batch().await.unwrap(),
        worker.process_batch().await.unwrap(),
        worker.process_batch().await.unwrap(),
    ];

    assert_eq!(sizes, [10, 10, 5, 0]);
    assert_eq!(app.queue_count().await, 0);
    let processed = app.processed().await;
    assert_eq!(processed.len(), 25);
    for (original, moved) in queued.iter().zip(&processed) {
        let processed_at = *moved.get_datetime("processed_at").expect("processed_at set");
        assert!(processed_at >= before && processed_at <= DateTime::now());
        let mut without = moved.clone();
        without.remove("processed_at");
        // Its visit (docs/visits.md §2): the one field the worker adds beside `processed_at`.
        assert!(without.remove("visit_id").is_some(), "visit_id set");
        assert_eq!(&without, original, "every queue field kept, _id included");
    }
}

/// Leaves the queue as a worker that died between its insert and its delete
/// would: the first `moved` queued events also sit in `events`.
async fn tear_batch(app: &crate::helpers::TestApp, moved: usize) {
    let partly: Vec<_> = app
        .queued()
        .await
        .into_iter()
        .take(moved)
        .map(|mut e| {
            e.insert("processed_at", DateTime::now());
            e
        })
        .collect();
    app.store.events().insert_many(partly).await.unwrap();
}

#[tokio::test]
async fn without_transactions_a_batch_rerun_after_a_crash_adds_no_duplicates() {
    let app = spawn_app_without_transactions().await;
    enqueue(&app, 10, "site-r").await;
    // A worker that died after its insert and before its delete: 7 of the 10
    // already sit in `events`, all 10 are still queued.
    tear_batch(&app, 7).await;

    let moved = app.worker(100).process_batch().await.expect("duplicates are not an error");

    assert_eq!(moved, 10);
    assert_eq!(app.queue_count().await, 0);
    assert_eq!(app.events_count().await, 10, "each event once");
    let ids: HashSet<ObjectId> = app.processed().await.iter().map(|e| e.get_object_id("_id").unwrap()).collect();
    assert_eq!(ids.len(), 10);
    assert_eq!(app.stats("site-r").await["total_events"], 10);
}

#[tokio::test]
async fn a_torn_batch_left_without_transactions_is_finished_once_by_a_transactional_worker() {
    let app = spawn_app().await;
    enqueue(&app, 10, "site-t").await;
    // As left by a transaction-less worker that died between insert and delete,
    // on a database since moved to a replica set.
    tear_batch(&app, 7).await;

    app.drain_queue().await;

    assert!(rollups::are_ready(&app.store).await.unwrap(), "rollups rebuilt from the 7, then kept");
    assert_eq!((app.queue_count().await, app.events_count().await), (0, 10));
    let filter = StatsFilter::site("site-t");
    let fast = stats::fast_site_stats(&app.store, &filter).await.unwrap();
    assert_eq!(fast.total_events, 10, "each event counted once");
    assert_eq!(fast, stats::plain_site_stats(&app.store, &filter).await.unwrap());
}

#[tokio::test]
async fn a_full_batch_is_followed_at_once_not_after_poll_ms() {
    // With a one-minute poll, draining 4 batches takes seconds only if the worker
    // skips the sleep after each full batch.
    let app = spawn_app_with(|c| {
        c.batch_size = 10;
        c.poll_interval = Duration::from_secs(60);
    })
    .await;
    enqueue(&app, 35, "site-f").await;

    app.engine.start_worker().await.unwrap();

    assert!(
        eventually(Duration::from_secs(20), || async { app.queue_count().await == 0 }).await,
        "queue drained without sleeping"
    );
    assert_eq!(app.events_count().await, 35);
    assert_eq!(app.engine.status().counters.batches_processed, 4);
    app.engine.shutdown().await;
}

#[tokio::test]
async fn a_running_worker_makes_events_visible_in_stats() {
    let app = spawn_app().await;
    app.engine.start_worker().await.unwrap();
    enqueue(&app, 3, "site-live").await;

    let visible =
        eventually(Duration::from_secs(10), || async { app.stats("site-live").await["total_events"] == 3 }).await;

    assert!(visible);
    assert_eq!(app.queue_count().await, 0);
    let counters = app.engine.status().counters;
    assert_eq!((counters.events_queued, counters.events_processed), (3, 3));
    app.engine.shutdown().await;
}

#[tokio::test]
async fn stopping_the_worker_never_leaves_a_batch_half_done() {
    let app = spawn_app_with(|c| c.batch_size = 200).await;
    let docs: Vec<_> = (0..4000)
        .map(|i| doc! { "_id": mongodb::bson::oid::ObjectId::new(), "site_id": "s", "event_type": "e", "path": format!("/{}", i % 9), "user_id": "u", "timestamp": DateTime::now(), "ingested_at": DateTime::now() })
        .collect();
    app.store.queue().insert_many(docs).await.unwrap();

    app.engine.start_worker().await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async { app.engine.status().counters.batches_processed >= 2 }).await
    );
    app.engine.stop_worker().await;

    let queued: HashSet<ObjectId> = app.queued().await.iter().map(|e| e.get_object_id("_id").unwrap()).collect();
    let processed: HashSet<ObjectId> = app.processed().await.iter().map(|e| e.get_object_id("_id").unwrap()).collect();
    assert!(queued.is_disjoint(&processed), "an event both queued and processed: a batch was cut in the middle");
    assert_eq!(queued.len() + processed.len(), 4000);
    assert_eq!(processed.len() as u64, app.engine.status().counters.events_processed);
    assert!(!processed.is_empty());
}
