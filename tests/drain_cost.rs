//! The worker's drain rate of a live backlog (one site, 50 paths, ~1,000
//! users, timestamps in order over an hour, as `benches/pipeline`'s drain),
//! printed, never asserted: a figure to compare builds with (issue #14: what
//! keeping visits costs). Ignored by default (it keeps the database busy):
//! `cargo test --test drain_cost -- --ignored --nocapture`.

#[path = "common/mod.rs"]
mod common;
#[path = "api/helpers.rs"]
#[allow(dead_code)] // shared with the API tests, which use all of it
mod helpers;

use std::time::{Duration, Instant};

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};
use tokio_util::sync::CancellationToken;

use helpers::spawn_app;

const EVENTS: usize = 20_000;

#[tokio::test]
#[ignore = "a measurement: run it on purpose"]
async fn drain_rate_of_a_live_backlog_of_20000_events() {
    let app = spawn_app().await;
    let now = DateTime::now().timestamp_millis();
    let queued: Vec<Document> = (0..EVENTS)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(), "site_id": "site-001", "event_type": "page_view",
                "path": format!("/page/{}", i % 50), "user_id": format!("user-{}", (i * 7919) % 1000),
                "timestamp": DateTime::from_millis(now - 3_600_000 + (i as i64 * 3_600_000 / EVENTS as i64)),
            }
        })
        .collect();
    for chunk in queued.chunks(5_000) {
        app.store.queue().insert_many(chunk).await.unwrap();
    }
    let worker = app.worker(1000);
    let stop = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(stop.clone()));
    let drained = common::eventually(Duration::from_secs(600), || async {
        app.queue_count().await == 0 && app.events_count().await == EVENTS as u64
    })
    .await;
    let elapsed = started.elapsed();
    stop.cancel();
    let _ = running.await;
    assert!(drained, "the queue did not drain within 10 minutes");
    eprintln!(
        "[drain cost] {EVENTS} events drained in {:.2} s: {:.0} events/s",
        elapsed.as_secs_f64(),
        EVENTS as f64 / elapsed.as_secs_f64()
    );
}
