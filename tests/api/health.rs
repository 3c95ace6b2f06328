//! `GET /health`: 200 with the database's ping, the worker's state and the queue
//! depth; 503 with the reason as soon as the database is gone, and back after.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, Proxy, eventually};
use crate::helpers::{TestApp, event_json, spawn_app, spawn_app_on, spawn_app_with, test_config};

async fn health(app: &TestApp) -> (u16, Value) {
    let response = app.http.get(app.url("/health")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn health_reports_the_database_the_worker_and_the_queue_depth() {
    let app = spawn_app().await;
    assert_eq!(
        health(&app).await,
        (
            200,
            json!({ "status": "ok", "database": "ok", "worker": "not in this process", "queue_depth": 0, "quarantined": 0 })
        )
    );

    for path in ["/a", "/b"] {
        assert_eq!(app.post_event(event_json("s", path, "u")).await.status(), 200);
    }
    assert_eq!(health(&app).await.1["queue_depth"], 2);

    app.engine.start_worker().await.unwrap();
    let drained = eventually(Duration::from_secs(10), || async {
        health(&app).await
            == (
                200,
                json!({ "status": "ok", "database": "ok", "worker": "running", "queue_depth": 0, "quarantined": 0 }),
            )
    });
    assert!(drained.await, "running, and the queue drained: {:?}", health(&app).await);

    app.engine.stop_worker().await;
    assert_eq!(health(&app).await.1["worker"], "stopped", "stopped after running here");
}

#[tokio::test]
async fn health_needs_no_token() {
    let app = spawn_app_with(|c| c.api_token = Some("health-token-0123456789".into())).await;
    assert_eq!(health(&app).await.0, 200);
}

#[tokio::test]
async fn health_answers_503_with_the_reason_while_the_database_is_gone() {
    let target = common::single_host(common::server_url()).expect("a single-host mongodb:// test server");
    let proxy = Proxy::start(target).await;
    let database = common::fresh_database_url().rsplit('/').next().unwrap().to_string();
    let app = spawn_app_on(test_config(&format!("mongodb://{}/{database}?directConnection=true", proxy.addr))).await;
    assert_eq!(health(&app).await.0, 200);

    proxy.cut();
    let started = Instant::now();
    let (status, body) = health(&app).await;
    assert!(started.elapsed() < Duration::from_secs(4), "answered in {:?}, not a hang", started.elapsed());
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["database"], "unreachable");
    assert_eq!(body["worker"], "not in this process");
    assert!(!body["reason"].as_str().unwrap().is_empty(), "{body}");
    assert!(body.get("queue_depth").is_none(), "{body}");

    proxy.restore();
    let back = eventually(Duration::from_secs(30), || async { health(&app).await.0 == 200 });
    assert!(back.await, "healthy again once the database is back");
}
