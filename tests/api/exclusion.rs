//! Excluding a person's own visits (issue #16 item 8): `EXCLUDED_IPS` (an
//! address, a range, matched after `TRUSTED_PROXIES`) and the `/exclude-me`
//! page's cookie. An excluded event is answered like a bot's, stores nothing,
//! and is counted by reason in `/metrics`.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

fn event() -> String {
    json!({"site_id": "s", "event_type": "page_view", "path": "/"}).to_string()
}

/// `POST /event` with extra headers.
async fn post_event_with(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.http.post(app.url("/event")).header("content-type", "text/plain");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(event()).send().await.unwrap()
}

/// `analytics_events_dropped_total` for `reason` (0 before the first drop).
async fn dropped(app: &TestApp, reason: &str) -> f64 {
    let sample = format!("analytics_events_dropped_total{{reason=\"{reason}\"}}");
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().filter_map(|line| line.strip_prefix(&sample)?.trim().parse::<f64>().ok()).next().unwrap_or(0.0)
}

async fn assert_ignored(response: reqwest::Response) {
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"status": "ignored", "reason": "excluded"}));
}

#[tokio::test]
async fn an_excluded_address_or_range_stores_nothing_and_is_counted() {
    // The test client connects from 127.0.0.1.
    for excluded in ["127.0.0.1", "10.0.0.0/8, 127.0.0.0/8"] {
        let app = spawn_app_with(|c| c.excluded_ips = excluded.parse().unwrap()).await;
        assert_ignored(post_event_with(&app, &[]).await).await;
        let batch = format!("[{},{}]", event(), event());
        let response = app.post_events(batch).await;
        assert_eq!(response.status(), 202);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"status": "ignored", "reason": "excluded", "count": 0, "ignored": 2})
        );
        assert_eq!(app.queue_count().await, 0, "{excluded}: nothing stored");
        assert_eq!(dropped(&app, "excluded_ip").await, 3.0, "{excluded}");
    }
}

#[tokio::test]
async fn a_client_outside_the_excluded_ranges_is_stored() {
    let app = spawn_app_with(|c| c.excluded_ips = "10.0.0.0/8, 2001:db8::/32".parse().unwrap()).await;
    assert_eq!(post_event_with(&app, &[]).await.status(), 200);
    assert_eq!(app.queue_count().await, 1);
    assert_eq!(dropped(&app, "excluded_ip").await, 0.0);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_matched() {
    let app = spawn_app_with(|c| {
        c.trusted_proxies = "127.0.0.1".parse().unwrap();
        c.excluded_ips = "203.0.113.0/24".parse().unwrap();
    })
    .await;
    assert_ignored(post_event_with(&app, &[("x-forwarded-for", "203.0.113.9")]).await).await;
    // A client claiming an excluded address left of the proxy's entry is not believed.
    let claimed = post_event_with(&app, &[("x-forwarded-for", "203.0.113.9, 198.51.100.1")]).await;
    assert_eq!(claimed.status(), 200);
    assert_eq!(post_event_with(&app, &[]).await.status(), 200, "the proxy itself is not excluded");
    assert_eq!((app.queue_count().await, dropped(&app, "excluded_ip").await), (2, 1.0));

    // Without trusting the proxy, the header is ignored: the peer is matched.
    let untrusted = spawn_app_with(|c| c.excluded_ips = "203.0.113.0/24".parse().unwrap()).await;
    assert_eq!(post_event_with(&untrusted, &[("x-forwarded-for", "203.0.113.9")]).await.status(), 200);
    assert_eq!(untrusted.queue_count().await, 1);
}

#[tokio::test]
async fn an_event_carrying_the_exclusion_cookie_stores_nothing() {
    let app = spawn_app().await;
    assert_ignored(post_event_with(&app, &[("cookie", "theme=dark; ad_exclude=1")]).await).await;
    assert_eq!(post_event_with(&app, &[("cookie", "ad_exclude=0")]).await.status(), 200);
    assert_eq!((app.queue_count().await, dropped(&app, "excluded_browser").await), (1, 1.0));
}

#[tokio::test]
async fn the_exclude_me_page_sets_and_clears_the_flag() {
    let app = spawn_app().await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let origin = format!("http://{}", app.address);

    let page = app.http.get(app.url("/exclude-me")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("default-src 'none'") && !policy.contains("unsafe-inline"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"data-excluded="false""#) && html.contains("Exclude this browser"), "{html}");
    assert!(!html.contains("<script"), "no script on the page");
    assert!(html.contains("localStorage.analytics_desk_ignore"), "the tracker's own flag is explained");

    let set = |value: &'static str, origin: String| {
        no_redirects
            .post(app.url("/exclude-me"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", origin)
            .body(format!("exclude={value}"))
            .send()
    };
    let excluded = set("1", origin.clone()).await.unwrap();
    assert_eq!(excluded.status(), 303);
    assert_eq!(excluded.headers()["location"], "/exclude-me");
    let cookie = excluded.headers()["set-cookie"].to_str().unwrap();
    for part in ["ad_exclude=1", "Max-Age=31536000", "Path=/", "SameSite=Lax", "HttpOnly"] {
        assert!(cookie.contains(part), "{part} in {cookie}");
    }
    let shown = app.http.get(app.url("/exclude-me")).header("cookie", "ad_exclude=1").send().await.unwrap();
    let html = shown.text().await.unwrap();
    assert!(html.contains(r#"data-excluded="true""#) && html.contains("Count this browser again"), "{html}");

    let cleared = set("0", origin.clone()).await.unwrap();
    assert_eq!(cleared.status(), 303);
    let cookie = cleared.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("ad_exclude=;") && cookie.contains("Max-Age=0"), "{cookie}");

    // Another site's form cannot flip it; a bad value is refused; neither sets a cookie.
    let forged = set("1", "http://evil.example".into()).await.unwrap();
    assert!(forged.headers().get("set-cookie").is_none());
    crate::helpers::assert_json_error(forged, 400, "another site").await;
    let bad = set("yes", origin).await.unwrap();
    assert!(bad.headers().get("set-cookie").is_none());
    crate::helpers::assert_json_error(bad, 400, "exclude must be 1").await;
}
