//! DNS rebinding: a web page whose name is made to resolve to 127.0.0.1 sends
//! its own name as `Host`. Without `API_TOKEN`, the read routes answer only
//! loopback names and addresses, and the names in `PUBLIC_HOSTS`; ingestion, the
//! tracker script and `/health` stay open.

use crate::helpers::{TestApp, assert_json_error, event_json, spawn_app, spawn_app_with};

/// The routes that read data (or the metrics), with a query they accept.
const READ_ROUTES: [&str; 5] =
    ["/stats?site_id=s", "/stats/timeseries?site_id=s", "/stats/export.csv?site_id=s", "/sites", "/metrics"];

/// `GET path` sent with `Host: host`.
async fn get_as(app: &TestApp, host: &str, path: &str) -> reqwest::Response {
    app.http.get(app.url(path)).header("host", host).send().await.unwrap()
}

#[tokio::test]
async fn without_a_token_read_routes_refuse_a_foreign_host_name() {
    let app = spawn_app().await;
    for path in READ_ROUTES {
        let message = assert_json_error(get_as(&app, "evil.example", path).await, 403, "PUBLIC_HOSTS").await;
        assert!(message.contains("evil.example"), "{message}");
    }
    // The attacker's name with our port, upper case, or a trailing dot: still refused.
    let port = app.address.port();
    for host in [format!("evil.example:{port}"), "EVIL.example".into(), "localhost.evil.example".into()] {
        assert_eq!(get_as(&app, &host, "/stats?site_id=s").await.status(), 403, "Host: {host}");
    }
}

#[tokio::test]
async fn loopback_names_and_addresses_are_answered() {
    let app = spawn_app().await;
    let port = app.address.port();
    let hosts = [
        "localhost".to_string(),
        format!("localhost:{port}"),
        "LocalHost".into(),
        format!("dashboard.localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "127.8.9.10".into(),
        format!("[::1]:{port}"),
        "[::1]".into(),
    ];
    for host in &hosts {
        for path in READ_ROUTES {
            assert_eq!(get_as(&app, host, path).await.status(), 200, "Host: {host} {path}");
        }
    }
}

#[tokio::test]
async fn ingestion_the_tracker_script_and_health_stay_open_to_any_host() {
    let app = spawn_app().await;
    let event = app.http.post(app.url("/event")).header("host", "shop.example").header("content-type", "text/plain");
    assert_eq!(event.body(event_json("s", "/", "u")).send().await.unwrap().status(), 200);
    let batch = app.http.post(app.url("/events")).header("host", "shop.example").header("content-type", "text/plain");
    assert_eq!(batch.body(format!("[{}]", event_json("s", "/b", "u"))).send().await.unwrap().status(), 200);
    assert_eq!(get_as(&app, "shop.example", "/script.js").await.status(), 200);
    assert_eq!(get_as(&app, "probe.internal", "/health").await.status(), 200, "probes send any name");
    assert_eq!(app.queue_count().await, 2);
}

#[tokio::test]
async fn public_hosts_are_answered_and_a_token_alone_replaces_the_check() {
    const TOKEN: &str = "s3cret-token-0123456789";
    let public = spawn_app_with(|c| c.public_hosts = vec!["stats.example.com".into()]).await;
    assert_eq!(get_as(&public, "stats.example.com", "/stats?site_id=s").await.status(), 200);
    assert_eq!(get_as(&public, "Stats.Example.com:443", "/sites").await.status(), 200);
    assert_eq!(get_as(&public, "localhost", "/sites").await.status(), 200, "loopback still answered");
    assert_json_error(get_as(&public, "evil.example", "/sites").await, 403, "PUBLIC_HOSTS").await;

    // A token: a rebinding page cannot send it, and exposed deployments (which
    // must have one) keep their names without new settings.
    let with_token = spawn_app_with(|c| c.api_token = Some(TOKEN.into())).await;
    let as_evil =
        |path: &str| with_token.http.get(with_token.url(path)).header("host", "evil.example").bearer_auth(TOKEN).send();
    assert_eq!(as_evil("/stats?site_id=s").await.unwrap().status(), 200);
    assert_eq!(as_evil("/metrics").await.unwrap().status(), 200);

    // A token and PUBLIC_HOSTS: both are checked.
    let both = spawn_app_with(|c| {
        c.api_token = Some(TOKEN.into());
        c.public_hosts = vec!["stats.example.com".into()];
    })
    .await;
    let request = |host: &str| both.http.get(both.url("/sites")).header("host", host).bearer_auth(TOKEN).send();
    assert_eq!(request("stats.example.com").await.unwrap().status(), 200);
    assert_json_error(request("evil.example").await.unwrap(), 403, "PUBLIC_HOSTS").await;
}
