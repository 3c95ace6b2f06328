//! `GET /metrics`: the Prometheus text format, with numbers that follow the
//! events sent, refused, queued and processed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::common::{self, Proxy, eventually};
use crate::helpers::{TestApp, event_json, spawn_app, spawn_app_on, spawn_app_with, test_config};

const TOKEN: &str = "metrics-token-0123456789";

/// Scrapes `/metrics` (asserting a 200 in the Prometheus text format) and parses
/// it into `name{labels}` → value.
async fn scrape(app: &TestApp) -> BTreeMap<String, f64> {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    parse(&response.text().await.unwrap())
}

fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (sample, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
            (sample.to_string(), value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}")))
        })
        .collect()
}

fn value(metrics: &BTreeMap<String, f64>, sample: &str) -> f64 {
    *metrics.get(sample).unwrap_or_else(|| panic!("no {sample} in {metrics:#?}"))
}

fn http_count(route: &str, method: &str, status: &str) -> String {
    format!(
        "analytics_http_request_duration_seconds_count{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
    )
}

#[tokio::test]
async fn the_metrics_follow_events_through_the_pipeline() {
    let app = spawn_app().await;
    let fresh = scrape(&app).await;
    assert_eq!(value(&fresh, "analytics_events_received_total"), 0.0);
    assert_eq!(value(&fresh, "analytics_batch_duration_seconds_count"), 0.0);

    for i in 0..3 {
        assert_eq!(app.post_event(event_json("shop", &format!("/{i}"), "u")).await.status(), 200);
    }
    let batch = json!([0, 1, 2, 3].map(|i| json!({ "site_id": "shop", "event_type": "e", "path": format!("/b{i}") })));
    assert_eq!(app.post_events(batch.to_string()).await.status(), 200);
    assert_eq!(app.post_event(r#"{"site_id":"shop"}"#).await.status(), 400);
    let bad_batch = json!([{ "site_id": "s", "event_type": "e", "path": "/" }, {}, { "site_id": "s" }]);
    assert_eq!(app.post_events(bad_batch.to_string()).await.status(), 400);
    assert_eq!(app.post_event_as("text/html", event_json("shop", "/", "u")).await.status(), 415);
    assert_eq!(app.http.get(app.url("/nope")).send().await.unwrap().status(), 404);

    let queued = scrape(&app).await;
    assert_eq!(value(&queued, "analytics_events_received_total"), 12.0, "3 + 4 + 1 + 3 + 1");
    assert_eq!(value(&queued, "analytics_events_queued_total"), 7.0);
    assert_eq!(value(&queued, "analytics_events_refused_total{reason=\"invalid\"}"), 4.0, "1 event, a batch of 3");
    assert_eq!(value(&queued, "analytics_events_refused_total{reason=\"unsupported_type\"}"), 1.0);
    assert_eq!(value(&queued, "analytics_events_processed_total"), 0.0);
    assert_eq!(value(&queued, "analytics_queue_depth"), 7.0);
    assert_eq!(value(&queued, &http_count("/event", "POST", "2xx")), 3.0);
    assert_eq!(value(&queued, &http_count("/event", "POST", "4xx")), 2.0);
    assert_eq!(value(&queued, &http_count("/events", "POST", "2xx")), 1.0);
    assert_eq!(value(&queued, &http_count("/events", "POST", "4xx")), 1.0);
    assert_eq!(value(&queued, &http_count("unmatched", "GET", "4xx")), 1.0);
    assert_eq!(value(&queued, &http_count("/metrics", "GET", "2xx")), 1.0, "the first scrape");

    app.engine.start_worker().await.unwrap();
    let drained = eventually(Duration::from_secs(10), || async { app.engine.status().counters.events_processed == 7 });
    assert!(drained.await, "the worker moved the 7 events");
    app.engine.stop_worker().await;

    let processed = scrape(&app).await;
    assert_eq!(value(&processed, "analytics_events_processed_total"), 7.0);
    assert_eq!(value(&processed, "analytics_queue_depth"), 0.0);
    let batches = value(&processed, "analytics_batches_processed_total");
    assert!((1.0..=7.0).contains(&batches), "{batches}");
    assert_eq!(value(&processed, "analytics_batch_duration_seconds_count"), batches, "one duration per batch");
    assert!(value(&processed, "analytics_batch_duration_seconds_sum") > 0.0);
    assert_eq!(value(&processed, "analytics_batch_duration_seconds_bucket{le=\"+Inf\"}"), batches);
}

#[tokio::test]
async fn with_a_token_metrics_require_it() {
    let app = spawn_app_with(|c| c.api_token = Some(TOKEN.into())).await;
    let without = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let with = app.http.get(app.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(with.status(), 200);
    assert!(with.text().await.unwrap().contains("analytics_events_received_total 0"));
}

#[tokio::test]
async fn the_queue_depth_is_nan_while_the_database_is_gone_and_the_scrape_still_answers() {
    let target = common::single_host(common::server_url()).expect("a single-host mongodb:// test server");
    let proxy = Proxy::start(target).await;
    let database = common::fresh_database_url().rsplit('/').next().unwrap().to_string();
    let app = spawn_app_on(test_config(&format!("mongodb://{}/{database}?directConnection=true", proxy.addr))).await;
    assert_eq!(app.post_event(event_json("s", "/", "u")).await.status(), 200);
    assert_eq!(value(&scrape(&app).await, "analytics_queue_depth"), 1.0);

    proxy.cut();
    let started = std::time::Instant::now();
    let metrics = scrape(&app).await;
    assert!(started.elapsed() < Duration::from_secs(3), "answered in {:?}", started.elapsed());
    assert!(value(&metrics, "analytics_queue_depth").is_nan());
    assert_eq!(value(&metrics, "analytics_events_queued_total"), 1.0, "the counters are still there");
}
