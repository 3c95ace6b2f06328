//! Who may do what: CORS only on the tracker endpoint, the API token on `/stats`,
//! the allowed sites, and no exposed listener without a token.

use std::net::{IpAddr, Ipv4Addr};

use analytics_desk::{Engine, StartError};

use crate::common;
use crate::helpers::{assert_json_error, event_json, spawn_app, spawn_app_with, test_config};

const TOKEN: &str = "s3cret-token-0123456789";

#[tokio::test]
async fn browsers_may_post_events_cross_origin_but_not_read_stats() {
    let app = spawn_app().await;
    let preflight = app.preflight("/event").await;
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert!(preflight.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));

    let post = app
        .http
        .post(app.url("/event"))
        .header("origin", "https://shop.example")
        .header("content-type", "application/json")
        .body(event_json("shop", "/", "u"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    assert_eq!(post.headers()["access-control-allow-origin"], "*");

    let stats =
        app.http.get(app.url("/stats?site_id=shop")).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(stats.status(), 200);
    assert!(stats.headers().get("access-control-allow-origin").is_none(), "stats are not readable cross-origin");
}

#[tokio::test]
async fn with_a_token_stats_require_it_and_events_stay_open() {
    let app = spawn_app_with(|c| c.api_token = Some(TOKEN.into())).await;
    let stats = |auth: Option<&str>| {
        let mut request = app.http.get(app.url("/stats?site_id=s"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };

    let missing = stats(None).await.unwrap();
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_json_error(missing, 401, "missing or wrong API token").await;
    assert_json_error(stats(Some("Bearer wrong-token-000000000")).await.unwrap(), 401, "API token").await;
    assert_json_error(stats(Some(TOKEN)).await.unwrap(), 401, "API token").await;
    assert_eq!(stats(Some(&format!("Bearer {TOKEN}"))).await.unwrap().status(), 200);
    assert_eq!(app.post_event(event_json("s", "/", "u")).await.status(), 200, "ingestion needs no token");
}

#[tokio::test]
async fn only_allowed_sites_are_ingested() {
    let app = spawn_app_with(|c| c.allowed_sites = Some(vec!["shop".into(), "blog".into()])).await;

    assert_eq!(app.post_event(event_json("shop", "/", "u")).await.status(), 200);
    let refused = app.post_event(event_json("spam", "/", "u")).await;
    assert_json_error(refused, 403, "site_id \"spam\" is not accepted").await;

    let sites: Vec<String> = app.queued().await.iter().map(|e| e.get_str("site_id").unwrap().to_string()).collect();
    assert_eq!(sites, ["shop"], "the refused event left nothing behind");
}

#[tokio::test]
async fn listening_beyond_loopback_needs_a_token() {
    let mut config = test_config(&common::fresh_database_url());
    config.host = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    let error = Engine::new(config.clone()).start_api().await.unwrap_err();
    assert!(matches!(error, StartError::ExposedWithoutToken(_)));
    assert!(error.to_string().contains("Set API_TOKEN"), "{error}");

    config.api_token = Some(TOKEN.into());
    let engine = Engine::new(config);
    let addr = engine.start_api().await.expect("with a token it listens");
    assert!(addr.ip().is_unspecified());
    engine.shutdown().await;
}
