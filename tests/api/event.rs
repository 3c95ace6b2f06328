//! `POST /event`: the contract, and every kind of bad input refused with nothing stored.

use mongodb::bson::{Bson, DateTime};
use serde_json::{Value, json};

use crate::helpers::{assert_json_error, event_json, spawn_app};

#[tokio::test]
async fn a_valid_event_is_queued_with_the_contract_fields() {
    let app = spawn_app().await;
    let before = DateTime::now();

    let response = app.post_event(event_json("site-001", "/pricing", "user-123")).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "status": "queued" }));
    let queued = app.queued().await;
    assert_eq!(queued.len(), 1);
    let event = &queued[0];
    let keys: Vec<&str> = event.keys().map(String::as_str).collect();
    // The seed's fields, and `channel` (always set by enrichment: `Direct` without a source).
    assert_eq!(keys, ["_id", "site_id", "event_type", "path", "user_id", "timestamp", "ingested_at", "channel"]);
    assert_eq!(event.get_str("channel").unwrap(), "Direct");
    assert!(matches!(event.get("_id"), Some(Bson::ObjectId(_))));
    assert_eq!(event.get_str("site_id").unwrap(), "site-001");
    assert_eq!(event.get_str("event_type").unwrap(), "page_view");
    assert_eq!(event.get_str("path").unwrap(), "/pricing");
    assert_eq!(event.get_str("user_id").unwrap(), "user-123");
    let ingested_at = *event.get_datetime("ingested_at").unwrap();
    assert!(ingested_at >= before && ingested_at <= DateTime::now());
    assert_eq!(event.get_datetime("timestamp").unwrap(), &ingested_at, "no timestamp given: the server's time");
    assert_eq!(app.events_count().await, 0, "the API does no processing");
}

#[tokio::test]
async fn a_given_timestamp_is_stored_as_that_instant() {
    let app = spawn_app().await;
    let body = json!({ "site_id": "s", "event_type": "signup", "path": "/", "user_id": "u", "timestamp": "2024-05-01T14:30:00.125+02:00" });

    assert_eq!(app.post_event(body.to_string()).await.status(), 200);

    let event = &app.queued().await[0];
    assert_eq!(
        event.get_datetime("timestamp").unwrap(),
        &DateTime::parse_rfc3339_str("2024-05-01T12:30:00.125Z").unwrap()
    );
    assert!(event.get_datetime("ingested_at").unwrap() > event.get_datetime("timestamp").unwrap());
}

#[tokio::test]
async fn text_plain_bodies_from_beacons_are_accepted() {
    let app = spawn_app().await;
    let response = app.post_event_as("text/plain;charset=UTF-8", event_json("s", "/", "u")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.queue_count().await, 1);
}

#[tokio::test]
async fn every_bad_body_gets_a_json_4xx_and_stores_nothing() {
    let app = spawn_app().await;
    let valid = json!({ "site_id": "s", "event_type": "page_view", "path": "/", "user_id": "u" });
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        body.to_string()
    };

    let mut cases: Vec<(String, Vec<u8>, u16, String)> = Vec::new();
    let mut case =
        |name: &str, body: Vec<u8>, status: u16, needle: &str| cases.push((name.into(), body, status, needle.into()));
    for field in ["site_id", "event_type", "path", "user_id", "event_id"] {
        // Without user_id (or with null) the server derives an anonymous one: see
        // ingest/anonymous_id.rs; without event_id, the event is simply not deduplicated.
        if !["user_id", "event_id"].contains(&field) {
            case(&format!("{field} missing"), without(field).into(), 400, &format!("{field} is required"));
            case(&format!("{field} null"), with(field, Value::Null).into(), 400, &format!("{field} is required"));
        }
        case(
            &format!("{field} number"),
            with(field, json!(42)).into(),
            400,
            &format!("{field} must be a string, got a number"),
        );
        case(
            &format!("{field} array"),
            with(field, json!(["a"])).into(),
            400,
            &format!("{field} must be a string, got an array"),
        );
        case(
            &format!("{field} operator"),
            with(field, json!({ "$gt": "" })).into(),
            400,
            &format!("{field} must be a string, got an object"),
        );
        case(
            &format!("{field} bool"),
            with(field, json!(true)).into(),
            400,
            &format!("{field} must be a string, got a boolean"),
        );
        case(&format!("{field} empty"), with(field, json!("")).into(), 400, &format!("{field} must not be empty"));
        case(&format!("{field} blank"), with(field, json!(" \t ")).into(), 400, &format!("{field} must not be empty"));
        case(
            &format!("{field} NUL"),
            with(field, json!("a\u{0}b")).into(),
            400,
            &format!("{field} must not contain control characters"),
        );
        case(
            &format!("{field} huge"),
            with(field, json!("x".repeat(5000))).into(),
            400,
            &format!("{field} is too long"),
        );
    }
    case(
        "timestamp garbage",
        with("timestamp", json!("next tuesday")).into(),
        400,
        "timestamp must be an RFC 3339 date-time",
    );
    case(
        "timestamp number",
        with("timestamp", json!(1714557600)).into(),
        400,
        "timestamp must be a string, got a number",
    );
    case(
        "timestamp operator",
        with("timestamp", json!({ "$gt": "" })).into(),
        400,
        "timestamp must be a string, got an object",
    );
    for (name, far) in
        [("year 1", "0001-01-01T00:00:00Z"), ("1999", "1999-12-31T23:59:59Z"), ("year 9999", "9999-12-31T23:59:59Z")]
    {
        case(
            &format!("timestamp {name}"),
            with("timestamp", json!(far)).into(),
            400,
            "is outside the accepted window: from 2000-01-01T00:00:00Z to one day ahead of the server's clock",
        );
    }
    let two_days_ahead =
        mongodb::bson::DateTime::from_millis(mongodb::bson::DateTime::now().timestamp_millis() + 2 * 86_400_000);
    case(
        "timestamp two days ahead",
        with("timestamp", json!(two_days_ahead.try_to_rfc3339_string().unwrap())).into(),
        400,
        "is outside the accepted window",
    );
    case("unknown field", with("$where", json!("1")).into(), 400, "unknown field `$where`");
    case(
        "duplicate key",
        br#"{"site_id":"a","site_id":"b","event_type":"e","path":"/","user_id":"u"}"#.to_vec(),
        400,
        "duplicate field `site_id`",
    );
    case("empty body", Vec::new(), 400, "not valid JSON");
    case("truncated JSON", br#"{"site_id":"s","#.to_vec(), 400, "not valid JSON");
    case("array body", br#"[{"site_id":"s"}]"#.to_vec(), 400, "must be a JSON object");
    case("string body", br#""site_id""#.to_vec(), 400, "must be a JSON object");
    case(
        "invalid UTF-8",
        b"{\"site_id\":\"\xc3\x28\",\"event_type\":\"e\",\"path\":\"/\",\"user_id\":\"u\"}".to_vec(),
        400,
        "not valid UTF-8",
    );
    case(
        "deep nesting",
        format!(r#"{{"site_id":{}1{}}}"#, "[".repeat(1000), "]".repeat(1000)).into(),
        400,
        "recursion limit",
    );
    case("oversized body", with("path", json!("/".repeat(20_000))).into(), 413, "larger than 16384 bytes");

    for (name, body, status, needle) in cases {
        let response = app.post_event(body).await;
        assert_eq!(response.status(), status, "{name}");
        let message = assert_json_error(response, status, &needle).await;
        assert!(!message.is_empty(), "{name}");
    }
    assert_eq!(app.queue_count().await, 0, "a refused event leaves nothing behind");
    assert_eq!(app.events_count().await, 0);
}

#[tokio::test]
async fn wrong_content_types_are_refused() {
    let app = spawn_app().await;
    for content_type in ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"] {
        let response = app.post_event_as(content_type, event_json("s", "/", "u")).await;
        assert_json_error(response, 415, "Content-Type must be application/json").await;
    }
    let no_type = app.http.post(app.url("/event")).body(event_json("s", "/", "u")).send().await.unwrap();
    assert_json_error(no_type, 415, "Content-Type must be application/json").await;
    assert_eq!(app.queue_count().await, 0);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let app = spawn_app().await;
    assert_json_error(app.http.get(app.url("/event")).send().await.unwrap(), 405, "method not allowed").await;
    assert_json_error(app.http.get(app.url("/nope")).send().await.unwrap(), 404, "no such endpoint: /nope").await;
}

#[tokio::test]
async fn concurrent_events_are_each_stored_once() {
    let app = spawn_app().await;
    let posts = (0..200).map(|i| app.post_event(event_json("site-c", &format!("/p{}", i % 7), &format!("u{i}"))));
    let responses = futures_util::future::join_all(posts).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(app.queue_count().await, 200);
}
