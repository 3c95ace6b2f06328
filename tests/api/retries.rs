//! Safe retries: an event sent with an `event_id` is stored and counted once per
//! site, whenever its retry arrives (while it is queued, or after it was
//! processed), with transactions or without.

use serde_json::json;

use crate::helpers::{TestApp, spawn_app, spawn_app_without_transactions};

fn with_id(site: &str, path: &str, user: &str, event_id: &str) -> String {
    json!({ "site_id": site, "event_type": "page_view", "path": path, "user_id": user, "event_id": event_id })
        .to_string()
}

async fn post_ok(app: &TestApp, body: String) {
    let response = app.post_event(body).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

async fn posts_and_retries_count_once(app: TestApp) {
    // Sent, then retried while the first is still queued (alone, and in a batch).
    post_ok(&app, with_id("shop", "/a", "u1", "id-1")).await;
    post_ok(&app, with_id("shop", "/a", "u1", "id-1")).await;
    let batch = format!("[{},{}]", with_id("shop", "/a", "u1", "id-1"), with_id("shop", "/b", "u2", "id-2"));
    assert_eq!(app.post_events(batch).await.status(), 200);
    // The same id on another site is another event; no id at all, every time a new one.
    post_ok(&app, with_id("blog", "/a", "u1", "id-1")).await;
    for _ in 0..2 {
        post_ok(
            &app,
            json!({ "site_id": "shop", "event_type": "page_view", "path": "/c", "user_id": "u3" }).to_string(),
        )
        .await;
    }
    assert_eq!(app.queue_count().await, 5, "id-1 queued once for shop: {:?}", app.queued().await);

    app.drain_queue().await;
    assert_eq!(app.events_count().await, 5);
    // Retried again after the first were processed: refused by nothing, stored never.
    post_ok(&app, with_id("shop", "/a", "u1", "id-1")).await;
    post_ok(&app, with_id("shop", "/b", "u2", "id-2")).await;
    post_ok(&app, with_id("shop", "/d", "u4", "id-3")).await; // and one new event beside them
    app.drain_queue().await;

    assert_eq!(app.queue_count().await, 0, "the late retries left the queue: {:?}", app.queued().await);
    let processed = app.processed().await;
    let mut shop_ids: Vec<&str> = processed
        .iter()
        .filter(|e| e.get_str("site_id") == Ok("shop"))
        .filter_map(|e| e.get_str("event_id").ok())
        .collect();
    shop_ids.sort();
    assert_eq!(shop_ids, ["id-1", "id-2", "id-3"], "each event_id once: {processed:?}");
    assert_eq!(processed.len(), 6);
    let stats = app.stats("shop").await;
    assert_eq!(stats["total_events"], 5, "{stats}");
    assert_eq!(stats["unique_users"], 4, "{stats}");
}

#[tokio::test]
async fn an_event_id_is_stored_and_counted_once_whenever_its_retry_arrives() {
    posts_and_retries_count_once(spawn_app().await).await;
}

#[tokio::test]
async fn without_transactions_an_event_id_is_stored_once_too() {
    posts_and_retries_count_once(spawn_app_without_transactions().await).await;
}
