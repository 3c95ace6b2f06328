//! `POST /events`: a JSON array of events, validated whole (an error names the
//! element and the field), stored in one insert, answered once.

use mongodb::bson::DateTime;
use serde_json::{Value, json};

use crate::helpers::{assert_json_error, spawn_app, spawn_app_with};

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

fn view(site_id: &str, path: &str, user_id: &str) -> Value {
    json!({ "site_id": site_id, "event_type": "page_view", "path": path, "user_id": user_id })
}

#[tokio::test]
async fn a_batch_is_stored_whole_and_answered_once_with_its_count() {
    let app = spawn_app().await;
    let before = DateTime::now();
    let batch = json!([
        view("shop", "/a", "u1"),
        { "site_id": "shop", "event_type": "signup", "path": "/b", "user_id": "u2", "timestamp": "2024-05-01T12:00:00Z" },
        view("blog", "/c", "u3"),
    ]);

    let response = app.post_events(batch.to_string()).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "status": "queued", "count": 3 }));
    let queued = app.queued().await;
    let rows: Vec<(&str, &str, &str, &str)> = queued
        .iter()
        .map(|e| {
            let field = |name| e.get_str(name).unwrap();
            (field("site_id"), field("event_type"), field("path"), field("user_id"))
        })
        .collect();
    assert_eq!(
        rows,
        [("shop", "page_view", "/a", "u1"), ("shop", "signup", "/b", "u2"), ("blog", "page_view", "/c", "u3")]
    );
    let ingested_at = *queued[0].get_datetime("ingested_at").unwrap();
    assert!(ingested_at >= before && ingested_at <= DateTime::now());
    assert!(queued.iter().all(|e| e.get_datetime("ingested_at").unwrap() == &ingested_at), "one batch, one instant");
    assert_eq!(
        queued[1].get_datetime("timestamp").unwrap(),
        &DateTime::parse_rfc3339_str("2024-05-01T12:00:00Z").unwrap()
    );
    assert_eq!(queued[0].get_datetime("timestamp").unwrap(), &ingested_at, "no timestamp: the server's time");
}

#[tokio::test]
async fn anonymous_elements_get_the_ids_a_single_event_would_get() {
    let app = spawn_app().await;
    let anonymous = |site: &str| json!({ "site_id": site, "event_type": "page_view", "path": "/" });
    let single = app
        .http
        .post(app.url("/event"))
        .header("content-type", "application/json")
        .header("user-agent", BROWSER)
        .body(anonymous("shop").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 200);

    let batch = app
        .http
        .post(app.url("/events"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", BROWSER)
        .body(json!([anonymous("shop"), anonymous("blog"), view("shop", "/", "named")]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 200);

    let ids: Vec<String> = app.queued().await.iter().map(|e| e.get_str("user_id").unwrap().to_string()).collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[1], ids[0], "same site, client and browser as the single event: the same visitor");
    assert_ne!(ids[2], ids[0], "another site, another id");
    assert_eq!(ids[3], "named");
}

#[tokio::test]
async fn one_bad_element_refuses_the_batch_naming_its_index_and_field() {
    let app = spawn_app().await;
    let valid = view("s", "/", "u");
    let cases: Vec<(Value, usize, &str)> = vec![
        (json!({ "site_id": "s", "event_type": "page_view", "user_id": "u" }), 3, "event 3: path is required"),
        (
            json!({ "site_id": "s", "event_type": 7, "path": "/", "user_id": "u" }),
            0,
            "event 0: event_type must be a string, got a number",
        ),
        (
            json!({ "site_id": { "$gt": "" }, "event_type": "e", "path": "/" }),
            1,
            "event 1: site_id must be a string, got an object",
        ),
        (
            json!({ "site_id": "s", "event_type": "e", "path": "/", "user_id": "" }),
            2,
            "event 2: user_id must not be empty",
        ),
        (
            json!({ "site_id": "s", "event_type": "e", "path": "/", "timestamp": "soon" }),
            4,
            "event 4: timestamp must be an RFC 3339 date-time",
        ),
        (
            json!({ "site_id": "s", "event_type": "e", "path": "/", "extra": 1 }),
            1,
            "event 1: invalid event: unknown field `extra`",
        ),
        (json!("page_view"), 2, "event 2: invalid event: the event must be a JSON object"),
        (json!([valid.clone()]), 0, "event 0: invalid event: the event must be a JSON object"),
    ];
    for (bad, index, expected) in cases {
        let mut batch = vec![valid.clone(); 5];
        batch[index] = bad.clone();

        let response = app.post_events(json!(batch).to_string()).await;

        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["index"], json!(index), "{body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.starts_with(expected), "{message:?} should start with {expected:?}");
        assert_eq!(body.as_object().unwrap().len(), 2, "error and index only: {body}");
    }
    // A duplicate key can only be shown in raw JSON.
    let raw = r#"[{"site_id":"a","event_type":"e","path":"/","user_id":"u"},{"site_id":"a","site_id":"b","event_type":"e","path":"/","user_id":"u"}]"#;
    let body: Value = app.post_events(raw).await.json().await.unwrap();
    assert_eq!(body["index"], 1);
    assert!(body["error"].as_str().unwrap().contains("duplicate field `site_id`"), "{body}");

    assert_eq!(app.queue_count().await, 0, "nothing of a refused batch is stored");
}

#[tokio::test]
async fn a_batch_must_be_a_non_empty_array_within_the_limits() {
    let app = spawn_app().await;
    assert_json_error(app.post_events("[]").await, 400, "the batch is empty").await;
    assert_json_error(app.post_events(view("s", "/", "u").to_string()).await, 400, "must be a JSON array of events")
        .await;
    assert_json_error(app.post_events("[{").await, 400, "not valid JSON").await;
    let over = json!(vec![view("s", "/", "u"); 501]).to_string();
    assert_json_error(app.post_events(over).await, 413, "too many events in one batch: 501, at most 500").await;
    let huge = json!(vec![view("s", &"/".repeat(2048), "u"); 500]).to_string();
    assert!(huge.len() > 1024 * 1024);
    assert_json_error(app.post_events(huge).await, 413, "larger than 1048576 bytes").await;
    assert_json_error(app.post_events_as("application/x-www-form-urlencoded", "[]").await, 415, "Content-Type").await;
    assert_eq!(app.queue_count().await, 0);

    // 500 events of 1.5 KB: far over the 16 KiB of a single event, within a batch's limit.
    let full: Vec<Value> = (0..500).map(|i| view("s", &format!("/{i}/{}", "x".repeat(1500)), "u")).collect();
    let full = json!(full).to_string();
    assert!(full.len() > 16 * 1024 && full.len() < 1024 * 1024);
    let response = app.post_events(full).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "status": "queued", "count": 500 }));
    assert_eq!(app.queue_count().await, 500);
}

#[tokio::test]
async fn a_site_not_allowed_refuses_the_batch_naming_the_element() {
    let app = spawn_app_with(|c| c.allowed_sites = Some(vec!["shop".into()])).await;
    let response = app.post_events(json!([view("shop", "/", "u"), view("spam", "/", "u")]).to_string()).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "error": "event 1: site_id \"spam\" is not accepted by this server (see ALLOWED_SITES)", "index": 1 })
    );
    assert_eq!(app.queue_count().await, 0);
}

#[tokio::test]
async fn browsers_may_send_batches_cross_origin() {
    let app = spawn_app().await;
    let preflight = app.preflight("/events").await;
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");

    let post = app
        .http
        .post(app.url("/events"))
        .header("origin", "https://shop.example")
        .header("content-type", "text/plain")
        .body(json!([view("shop", "/", "u")]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    assert_eq!(post.headers()["access-control-allow-origin"], "*");
}
