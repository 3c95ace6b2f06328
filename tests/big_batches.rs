//! A batch too big for one command or one transaction (issue #13, item 1):
//! `BATCH_SIZE=10000` and 20,000 events with distinct 2 KiB paths must drain,
//! with exact stats. In its own test binary because it keeps the database busy
//! (half a minute): beside the API tests it would slow their requests.

#[path = "common/mod.rs"]
mod common;
#[path = "api/helpers.rs"]
#[allow(dead_code)] // shared with the API tests, which use all of it
mod helpers;

use mongodb::bson::{Document, doc};
use serde_json::json;

use analytics_desk::rollups;

use helpers::{TestApp, spawn_app_with};

/// Sends `n` events with distinct paths of `path_len` bytes through `POST
/// /events`, in requests under the 1 MiB body limit.
async fn enqueue_long_paths(app: &TestApp, site: &str, n: usize, path_len: usize) {
    let per_request = (900 * 1024 / (path_len + 100)).clamp(1, 500);
    let mut sent = 0;
    while sent < n {
        let events: Vec<_> = (sent..n.min(sent + per_request))
            .map(|i| {
                let prefix = format!("/{i:08}/");
                let path = format!("{prefix}{}", "x".repeat(path_len - prefix.len()));
                json!({ "site_id": site, "event_type": "page_view", "path": path, "user_id": format!("u{}", i % 7) })
            })
            .collect();
        sent += events.len();
        let response = app.post_events(serde_json::to_string(&events).unwrap()).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
}

/// Runs the worker's batches by hand until the queue is empty (bounded), and
/// returns how many events moved. A batch that fails fails the test.
async fn move_all(app: &TestApp, batch_size: u32) -> usize {
    let worker = app.worker(batch_size);
    let (mut moved, mut calls, mut slowest) = (0, 0, std::time::Duration::ZERO);
    for _ in 0..10_000 {
        let started = std::time::Instant::now();
        match worker.process_batch().await {
            Ok(0) if app.queue_count().await == 0 => {
                eprintln!(
                    "[big batches] {moved} moved in {calls} batches, the slowest (with its refused tries) {slowest:.1?}"
                );
                return moved;
            }
            Ok(n) => {
                moved += n;
                slowest = slowest.max(started.elapsed());
                calls += 1;
            }
            Err(error) => panic!("a batch failed after {moved} events moved: {error}"),
        }
    }
    panic!("the queue did not drain within 10,000 batches ({moved} moved)");
}

#[tokio::test]
async fn a_batch_of_10000_events_with_distinct_2_kib_paths_moves_with_exact_stats() {
    let _ = tracing_subscriber::fmt().with_env_filter("analytics_desk=warn").with_test_writer().try_init();
    let app = spawn_app_with(|config| config.batch_size = 10_000).await;
    let started = std::time::Instant::now();
    enqueue_long_paths(&app, "site-long", 20_000, 2048).await;
    assert_eq!(app.queue_count().await, 20_000);
    let sent = started.elapsed();

    let moved = move_all(&app, 10_000).await;
    eprintln!(
        "[big batches] 20,000 events of 2 KiB paths: sent in {sent:.1?}, moved in {:.1?}",
        started.elapsed() - sent
    );

    assert_eq!(moved, 20_000);
    assert_eq!((app.queue_count().await, app.events_count().await), (0, 20_000));
    let stats = app.stats("site-long").await;
    assert_eq!(stats["total_events"], 20_000);
    assert_eq!(stats["unique_users"], 7);
    assert_eq!(stats["events_by_type"], json!([{ "event_type": "page_view", "count": 20_000 }]));
    let top = stats["top_paths"].as_array().expect("top paths");
    assert!(!top.is_empty() && top.iter().all(|p| p["count"] == 1), "each path once");
    // Every path counted once in the rollups, none twice nor lost.
    let paths = app.store.database().collection::<Document>(rollups::PATHS);
    let counted: i64 = sum_counts(&paths, doc! { "site_id": "site-long" }).await;
    assert_eq!(counted, 20_000);
}

/// The sum of `count` over the documents of `collection` matching `filter`.
async fn sum_counts(collection: &mongodb::Collection<Document>, filter: Document) -> i64 {
    use futures_util::TryStreamExt;
    let pipeline = [doc! { "$match": filter }, doc! { "$group": { "_id": null, "n": { "$sum": "$count" } } }];
    let sums: Vec<Document> = collection.aggregate(pipeline).await.unwrap().try_collect().await.unwrap();
    sums.first().map(|s| s.get_i64("n").or_else(|_| s.get_i32("n").map(i64::from)).unwrap()).unwrap_or(0)
}
