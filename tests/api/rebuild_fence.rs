//! A rollup rebuild taken over by another builder (its lease ran out while it
//! was paused) never leaves counts inflated by the first builder's late writes.

use std::sync::Arc;
use std::time::Duration;

use analytics_desk::rollups::{self, RebuildOptions, RebuildPause};
use analytics_desk::stats::{self, StatsFilter};
use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};

use crate::helpers::spawn_app;

const SITES: [&str; 2] = ["north", "south"];

#[tokio::test]
async fn a_rebuild_taken_over_mid_chunk_never_leaves_inflated_counts() {
    let app = spawn_app().await;
    let now = DateTime::now().timestamp_millis();
    let events: Vec<Document> = (0..250)
        .map(|i| {
            let at = DateTime::from_millis(now - i * 60_000);
            doc! {
                "_id": ObjectId::new(), "site_id": SITES[i as usize % 2], "event_type": "page_view",
                "path": format!("/p{}", i % 4), "user_id": format!("u{}", i % 30), "timestamp": at, "processed_at": at,
            }
        })
        .collect();
    app.store.events().insert_many(events).await.unwrap();
    assert!(!rollups::are_ready(&app.store).await.unwrap());

    // Builder A claims the rebuild with a short lease and stops with its first chunk read.
    let pause = Arc::new(RebuildPause::default());
    let a_options = RebuildOptions { lease: Duration::from_millis(300), chunk: 100, pause: Some(pause.clone()) };
    let store = app.store.clone();
    let a = tokio::spawn(async move { rollups::make_ready_with(&store, "builder A", &a_options).await });
    tokio::time::timeout(Duration::from_secs(30), pause.reached.notified()).await.expect("A paused mid-chunk");

    // Builder B waits for A's lease to run out, takes over and finishes.
    let b_options = RebuildOptions { chunk: 100, ..RebuildOptions::default() };
    let b =
        tokio::time::timeout(Duration::from_secs(60), rollups::make_ready_with(&app.store, "builder B", &b_options));
    b.await.expect("B finished").expect("B rebuilt the rollups");
    assert!(rollups::are_ready(&app.store).await.unwrap());

    // A wakes up and goes on as if it still held the lease.
    pause.resume.notify_one();
    let a = tokio::time::timeout(Duration::from_secs(60), a).await.expect("A returned").unwrap();

    let sites = app.store.database().collection::<Document>(rollups::SITES);
    let counted: Vec<Document> = sites.find(doc! {}).await.unwrap().try_collect().await.unwrap();
    let total: u64 = counted.iter().map(|s| rollups::count_of(s.get("count"))).sum();
    assert_eq!(total, 250, "the rollups count each event once: {counted:?}");
    for site in SITES {
        let filter = StatsFilter::site(site);
        let fast = stats::fast_site_stats(&app.store, &filter).await.unwrap();
        assert_eq!(fast, stats::plain_site_stats(&app.store, &filter).await.unwrap(), "{site}");
    }
    a.expect("A, fenced off, found the rollups ready");
    assert!(rollups::are_ready(&app.store).await.unwrap());
}
