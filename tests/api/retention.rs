//! Retention's purge: in bounded chunks, cancelled by a stop without waiting
//! for it, and an hour that cannot be purged leaves the later hours purged.

use std::time::{Duration, Instant};

use analytics_desk::rollups::{self, HOUR_MS};
use analytics_desk::stats::{self, StatsFilter};
use analytics_desk::worker::retention::{self, PurgeLimits};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};
use tokio_util::sync::CancellationToken;

use crate::common::eventually;
use crate::helpers::{TestApp, spawn_app};

const DAY_MS: i64 = 24 * HOUR_MS;

/// An event as `events` holds it.
fn event(site: &str, path: &str, user: &str, millis: i64) -> Document {
    let at = DateTime::from_millis(millis);
    doc! {
        "_id": ObjectId::new(), "site_id": site, "event_type": "page_view", "path": path, "user_id": user,
        "timestamp": at, "ingested_at": at, "processed_at": at,
    }
}

/// Writes `events` straight into `events` (as a version before rollups did):
/// the worker rebuilds the rollups from them when it starts.
async fn insert_events(app: &TestApp, events: Vec<Document>) {
    for chunk in events.chunks(5_000) {
        app.store.events().insert_many(chunk.to_vec()).await.unwrap();
    }
}

/// The hour starting `hours` hours after the start of the day `days` days ago.
fn old_hour(days: i64, hours: i64) -> i64 {
    let now = DateTime::now().timestamp_millis();
    (now - days * DAY_MS).div_euclid(DAY_MS) * DAY_MS + hours * HOUR_MS
}

async fn count(app: &TestApp, filter: Document) -> u64 {
    app.store.events().count_documents(filter).await.unwrap()
}

/// Fast (rollups) and plain (events) stats of `site` agree.
async fn assert_exact(app: &TestApp, site: &str) {
    let filter = StatsFilter::site(site);
    let fast = stats::fast_site_stats(&app.store, &filter).await.unwrap();
    let plain = stats::plain_site_stats(&app.store, &filter).await.unwrap();
    assert_eq!(fast, plain, "rollups and events of {site} agree");
}

#[tokio::test]
async fn stopping_the_worker_does_not_wait_for_a_long_purge() {
    const HOURS: i64 = 100;
    const PER_HOUR: i64 = 100;
    let app = spawn_app().await;
    let start = old_hour(60, 0);
    let events = (0..HOURS * PER_HOUR)
        .map(|i| event("old", &format!("/p{}", i % 7), &format!("u{}", i % 50), start + (i % HOURS) * HOUR_MS + i))
        .collect();
    insert_events(&app, events).await;
    let total = (HOURS * PER_HOUR) as u64;
    let worker = app.worker(100).with_retention(Some(30)).with_purge_chunk(25);

    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    assert!(
        eventually(Duration::from_secs(120), || async { app.events_count().await < total }).await,
        "the purge started"
    );
    let asked = Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(60), running).await.expect("the worker stopped").unwrap();
    let took = asked.elapsed();

    let left = app.events_count().await;
    eprintln!("stop took {took:?}; {left} of {total} expired events left");
    assert!(left > 0, "the stop waited for the whole purge ({took:?})");
    assert!(rollups::are_ready(&app.store).await.unwrap());
    assert_exact(&app, "old").await;
}

#[tokio::test]
async fn a_purge_goes_in_chunks_of_the_set_size_and_stays_exact_mid_hour() {
    let app = spawn_app().await;
    let hour = old_hour(60, 5);
    // 100 events in one hour, queued, moved by both lanes: each shard holds part of the hour.
    let queued: Vec<Document> = (0..100)
        .map(|i| {
            let mut e = event("chunked", &format!("/p{}", i % 3), &format!("u{}", i % 10), hour + i);
            e.remove("processed_at");
            e
        })
        .collect();
    app.store.queue().insert_many(queued).await.unwrap();
    let worker = app.worker(20);
    while app.queue_count().await > 0 {
        let (a, b) = tokio::join!(worker.process_lane_batch(0), worker.process_lane_batch(1));
        a.unwrap();
        b.unwrap();
    }
    let cutoff = DateTime::from_millis(hour + HOUR_MS);
    let limits = PurgeLimits { chunk: 30, ..PurgeLimits::default() };

    // Stopped after its first chunk: a third of the hour gone, the rollups exact.
    let stop = CancellationToken::new();
    let first = retention::purge(&app.store, cutoff, true, &limits, &stop, |_| stop.cancel()).await.unwrap();
    assert_eq!((first.deleted, first.chunks, first.cancelled), (30, 1, true));
    assert_eq!(app.events_count().await, 70);
    assert_exact(&app, "chunked").await;

    let rest = retention::purge(&app.store, cutoff, true, &limits, &CancellationToken::new(), |_| {}).await.unwrap();
    assert_eq!((rest.deleted, rest.chunks, rest.failed_hours), (70, 3, 0), "30 + 30 + 10");
    assert_eq!(app.events_count().await, 0);
    assert_exact(&app, "chunked").await;
}

#[tokio::test]
async fn an_hour_whose_purge_fails_does_not_block_later_hours() {
    let app = spawn_app().await;
    let first = old_hour(60, 0);
    let mut events: Vec<Document> = (0..5).map(|i| event("poisoned", "/", "u", first + i)).collect();
    for hour in 1..=3 {
        events.extend((0..5).map(|i| event("fine", "/", &format!("u{i}"), first + hour * HOUR_MS + i)));
    }
    events.push(event("fine", "/", "u", DateTime::now().timestamp_millis()));
    insert_events(&app, events).await;
    let worker = app.worker(100).with_retention(Some(30));
    worker.mode().await.expect("rollups rebuilt from events");
    // A corrupt rollup: the oldest hour's subtraction from it fails.
    let sites = app.store.database().collection::<Document>(rollups::SITES);
    let corrupted = sites.update_many(doc! { "site_id": "poisoned" }, doc! { "$set": { "count": "corrupt" } }).await;
    assert!(corrupted.unwrap().modified_count > 0);

    let started = Instant::now();
    let purged = tokio::time::timeout(Duration::from_secs(60), worker.purge_expired()).await;
    let purged = purged.expect("the purge ended though one hour cannot be purged");
    eprintln!("purge with one failing hour took {:?}", started.elapsed());

    assert_eq!(count(&app, doc! { "site_id": "fine" }).await, 1, "the later hours were purged (purge: {purged:?})");
    assert_eq!(
        count(&app, doc! { "site_id": "poisoned" }).await,
        5,
        "the failed hour is kept whole, for the next purge"
    );
    assert_eq!(purged.expect("the purge reports what it did"), 15);
    assert_exact(&app, "fine").await;
}
