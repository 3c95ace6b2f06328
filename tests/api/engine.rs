//! The engine handle: status transitions, start-up errors, graceful shutdown, and
//! the API's 503 when the database goes away (and its recovery).

use std::time::{Duration, Instant};

use analytics_desk::{Engine, PartStatus, StartError};
use serde_json::Value;

use crate::common::{self, Proxy};
use crate::helpers::{assert_json_error, event_json, spawn_app, spawn_app_on, test_config};

#[tokio::test]
async fn parts_start_and_stop_independently_and_report_status() {
    let engine = Engine::new(test_config(&common::fresh_database_url()));
    assert_eq!((engine.status().api, engine.status().worker), (PartStatus::Stopped, PartStatus::Stopped));

    let addr = engine.start_api().await.unwrap();
    assert_eq!(engine.status().api, PartStatus::Running { addr: Some(addr) });
    assert_eq!(engine.status().worker, PartStatus::Stopped);
    assert_eq!(engine.start_api().await.unwrap(), addr, "starting twice keeps the running API");

    engine.start_worker().await.unwrap();
    assert_eq!(engine.status().worker, PartStatus::Running { addr: None });
    assert_eq!(engine.queue_depth().await.unwrap(), 0);

    engine.stop_api().await;
    assert_eq!(engine.status().api, PartStatus::Stopped);
    assert!(reqwest::get(format!("http://{addr}/stats?site_id=s")).await.is_err(), "nothing listens after stop");
    assert_eq!(engine.status().worker, PartStatus::Running { addr: None }, "the worker runs on");

    engine.stop_worker().await;
    assert_eq!(engine.status().worker, PartStatus::Stopped);
    assert_eq!(engine.site_stats("s").await.unwrap().total_events, 0, "stats readable with everything stopped");
}

#[tokio::test]
async fn a_port_in_use_fails_the_start_with_a_clear_reason() {
    let app = spawn_app().await;
    let mut config = test_config(&common::fresh_database_url());
    config.port = app.address.port();
    let engine = Engine::new(config);

    let error = engine.start_api().await.unwrap_err();

    assert!(matches!(error, StartError::Bind(_)));
    assert!(error.to_string().contains("already in use"), "{error}");
    assert!(matches!(engine.status().api, PartStatus::Failed { ref reason } if reason.contains("already in use")));
}

#[tokio::test]
async fn an_unreachable_database_fails_the_start_quickly_with_the_masked_url() {
    let url = format!("mongodb://admin:hunter2@127.0.0.1:{}/analytics_db", common::free_port());
    let engine = Engine::new(test_config(&url));
    let started = Instant::now();

    let error = engine.start_worker().await.unwrap_err();

    assert!(started.elapsed() < Duration::from_secs(15), "no hang: {:?}", started.elapsed());
    let message = error.to_string();
    assert!(message.starts_with("database unreachable at mongodb://admin:****@127.0.0.1:"), "{message}");
    assert!(!message.contains("hunter2"));
    assert!(matches!(engine.status().worker, PartStatus::Failed { .. }));
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_loses_no_acknowledged_event() {
    let app = spawn_app().await;
    let url = app.url("/event");
    let senders: Vec<_> = (0..8)
        .map(|n| {
            let (http, url) = (app.http.clone(), url.clone());
            tokio::spawn(async move {
                let mut acknowledged = 0u64;
                for i in 0..500 {
                    let sent = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(event_json("s", &format!("/{n}/{i}"), "u"))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => acknowledged += 1,
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        Err(_) => break, // the server stopped accepting
                    }
                }
                acknowledged
            })
        })
        .collect();
    assert!(
        common::eventually(Duration::from_secs(20), || async { app.engine.status().counters.events_queued >= 100 })
            .await
    );

    app.engine.shutdown().await;

    let mut acknowledged = 0;
    for sender in senders {
        acknowledged += sender.await.unwrap();
    }
    assert!(acknowledged >= 100);
    assert_eq!(app.queue_count().await, acknowledged, "every acknowledged event stored, nothing else");
}

#[tokio::test]
async fn the_api_answers_503_quickly_while_the_database_is_gone_and_recovers() {
    let Some(target) = common::single_host(common::server_url()) else {
        panic!("this test proxies a single-host mongodb:// URL; MONGO_TEST_URL is not one");
    };
    let proxy = Proxy::start(target).await;
    let database = common::fresh_database_url().rsplit('/').next().unwrap().to_string();
    let via_proxy = format!("mongodb://{}/{database}?directConnection=true", proxy.addr);
    let app = spawn_app_on(test_config(&via_proxy)).await;
    assert_eq!(app.post_event(event_json("s", "/before", "u")).await.status(), 200);

    proxy.cut();
    for _ in 0..3 {
        let started = Instant::now();
        let response = app.post_event(event_json("s", "/during", "u")).await;
        assert!(started.elapsed() < Duration::from_secs(8), "answered in {:?}, not a hang", started.elapsed());
        assert_json_error(response, 503, "database unavailable").await;
    }
    let stats = app.http.get(app.url("/stats?site_id=s")).send().await.unwrap();
    assert_json_error(stats, 503, "database unavailable").await;

    proxy.restore();
    let recovered = common::eventually(Duration::from_secs(30), || async {
        app.post_event(event_json("s", "/after", "u")).await.status() == 200
    })
    .await;
    assert!(recovered, "the API recovers by itself");
    let paths: Vec<String> = app.queued().await.iter().map(|e| e.get_str("path").unwrap().to_string()).collect();
    assert_eq!(paths.first().map(String::as_str), Some("/before"));
    assert!(!paths.iter().any(|p| p == "/during"), "nothing stored for a 503: {paths:?}");
    let body: Value = app.stats("s").await;
    assert_eq!(body["total_events"], 0);
}

#[tokio::test]
async fn indexes_are_created_at_start_up_idempotently() {
    let url = common::fresh_database_url();
    let first = Engine::new(test_config(&url));
    first.start_worker().await.unwrap();
    let second = Engine::new(test_config(&url));
    second.start_worker().await.expect("creating existing indexes again is fine");

    let store = second.store().await.unwrap();
    let mut names = store.events().list_index_names().await.unwrap();
    names.sort();
    assert_eq!(names, ["_id_", "site_id_event_id_unique", "site_id_timestamp"]);
    let mut names = store.queue().list_index_names().await.unwrap();
    names.sort();
    assert_eq!(names, ["_id_", "site_id_event_id_unique"]);
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn queue_and_event_writes_are_journaled() {
    let app = spawn_app().await;
    for collection in [app.store.queue(), app.store.events()] {
        assert_eq!(collection.write_concern().and_then(|c| c.journal), Some(true), "{}", collection.name());
    }
}
