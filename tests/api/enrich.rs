//! Enrichment at ingestion (docs/visits.md section 1), through the HTTP API:
//! a browser's event gets exactly the contract's fields and neither its
//! address nor its User-Agent; a bot's is answered `ignored`, stored nowhere,
//! and counted in `/metrics`.

use std::net::IpAddr;

use analytics_desk::config::DataSets;
use maxminddb::{PathElement, Reader, WithinOptions};
use mongodb::bson::{Bson, Document, doc};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const CHROME_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
const FIREFOX_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
                             (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const HEADLESS_CHROME: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 Safari/537.36";

/// An IPv4 address the bundled country database maps to a country, and the
/// country's code, read from the database itself (not hard-coded: the data set changes daily).
fn an_address_in_a_country() -> (IpAddr, String) {
    let path = DataSets::default().country_db;
    let reader = Reader::open_readfile(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/install-data-sets.sh", path.display()));
    let network = "81.0.0.0/8".parse().unwrap();
    for found in reader.within(network, WithinOptions::default()).unwrap().take(10_000) {
        let found = found.unwrap();
        let code: Option<String> = found.decode_path(&[PathElement::Key("country_code")]).unwrap();
        if let Some(code) = code.filter(|code| code.len() == 2 && code != "ZZ") {
            return (found.network().unwrap().ip(), code);
        }
    }
    panic!("no network of 81.0.0.0/8 has a country in {}", path.display());
}

/// `POST path` with `body`, the User-Agent `user_agent` and, if given, an `X-Forwarded-For`.
async fn post(
    app: &TestApp,
    path: &str,
    body: &Value,
    user_agent: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url(path))
        .header("content-type", "text/plain")
        .header("user-agent", user_agent)
        .body(body.to_string());
    if let Some(addresses) = forwarded_for {
        request = request.header("x-forwarded-for", addresses);
    }
    request.send().await.expect("request sent")
}

/// The value of `sample` in `/metrics`, 0 when absent.
async fn metric(app: &TestApp, sample: &str) -> f64 {
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().filter_map(|line| line.strip_prefix(sample)?.trim().parse::<f64>().ok()).next().unwrap_or(0.0)
}

/// The document's keys other than those every queued event has.
fn enrichment_keys(document: &Document) -> Vec<&str> {
    const BASE: [&str; 8] = ["_id", "site_id", "event_type", "path", "user_id", "timestamp", "ingested_at", "event_id"];
    document.keys().map(String::as_str).filter(|key| !BASE.contains(key)).collect()
}

/// Every string anywhere in a document, to look for what must never be stored.
fn strings(value: &Bson, found: &mut Vec<String>) {
    match value {
        Bson::String(text) => found.push(text.clone()),
        Bson::Document(document) => document.values().for_each(|v| strings(v, found)),
        Bson::Array(items) => items.iter().for_each(|v| strings(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn a_browser_event_gets_the_contracts_fields_and_never_its_address_nor_user_agent() {
    let app = spawn_app_with(|c| c.trusted_proxies = "127.0.0.1".parse().unwrap()).await;
    let (ip, country) = an_address_in_a_country();
    let body = json!({
        "site_id": "site-e", "event_type": "page_view", "path": "/pricing",
        "url": "https://Shop.Example.com/pricing?utm_source=google&utm_medium=cpc&utm_campaign=spring&utm_term=analytics&utm_content=hero",
        "referrer": "https://www.google.com/search?q=analytics", "screen_width": 1920,
        "props": {"plan": "pro", "seats": 3}, "event_id": "enrich-1",
    });
    let response = post(&app, "/event", &body, CHROME_WINDOWS, Some(&ip.to_string())).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let queued = app.queued().await;
    assert_eq!(queued.len(), 1);
    let event = &queued[0];
    let mut keys = enrichment_keys(event);
    keys.sort_unstable();
    let mut expected = vec![
        "anonymous",
        "browser",
        "browser_version",
        "channel",
        "country",
        "device",
        "hostname",
        "os",
        "props",
        "referrer",
        "source",
        "utm_campaign",
        "utm_content",
        "utm_medium",
        "utm_source",
        "utm_term",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected, "exactly the contract's fields: {event:?}");
    let expected_values = doc! {
        "path": "/pricing", "hostname": "shop.example.com", "referrer": "google.com/search", "source": "google",
        "channel": "Paid Search", "utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring",
        "utm_term": "analytics", "utm_content": "hero", "country": &country, "browser": "Chrome",
        "browser_version": "126", "os": "Windows", "device": "desktop", "anonymous": true,
        "props": {"plan": "pro", "seats": "3"},
    };
    for (key, value) in &expected_values {
        assert_eq!(event.get(key), Some(value), "{key} in {event:?}");
    }

    // Neither the address nor the User-Agent nor the full URL is stored, anywhere in the document.
    let mut stored = Vec::new();
    strings(&Bson::Document(event.clone()), &mut stored);
    for secret in [ip.to_string(), CHROME_WINDOWS.to_string(), body["url"].as_str().unwrap().to_string()] {
        assert!(!stored.iter().any(|s| s.contains(&secret)), "{secret} is stored: {event:?}");
    }
}

#[tokio::test]
async fn firefox_and_iphone_events_get_their_software_and_an_explicit_user_id_is_not_anonymous() {
    let app = spawn_app().await;
    let firefox = json!({"site_id": "s", "event_type": "page_view", "path": "/", "user_id": "u-1",
        "url": "https://example.com/", "referrer": "https://example.com/blog"});
    assert_eq!(post(&app, "/event", &firefox, FIREFOX_LINUX, None).await.status(), 200);
    let iphone = json!([{"site_id": "s", "event_type": "page_view", "path": "/a", "referrer": ""},
                       {"site_id": "s", "event_type": "signup", "path": "/a", "props": {"plan": "pro"}}]);
    let response = post(&app, "/events", &iphone, SAFARI_IPHONE, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"status": "queued", "count": 2}));

    let queued = app.queued().await;
    assert_eq!(queued.len(), 3);
    let firefox = &queued[0];
    assert_eq!(
        (
            firefox.get_str("browser"),
            firefox.get_str("browser_version"),
            firefox.get_str("os"),
            firefox.get_str("device")
        ),
        (Ok("Firefox"), Ok("128"), Ok("Linux"), Ok("desktop"))
    );
    assert_eq!(firefox.get_str("channel"), Ok("Direct"), "a self-referral is no source");
    for absent in ["referrer", "source", "anonymous", "country"] {
        assert!(!firefox.contains_key(absent), "{absent} is absent, not empty: {firefox:?}");
    }
    for event in &queued[1..] {
        assert_eq!(
            (event.get_str("browser"), event.get_str("os"), event.get_str("device")),
            (Ok("Safari"), Ok("iOS"), Ok("mobile"))
        );
        assert_eq!(event.get_bool("anonymous"), Ok(true));
        assert!(!event.contains_key("hostname"), "no url, no hostname");
    }
    assert_eq!(queued[2].get_document("props").unwrap(), &doc! {"plan": "pro"});
}

#[tokio::test]
async fn bots_are_answered_ignored_stored_nowhere_and_counted() {
    let app = spawn_app().await;
    let event = json!({"site_id": "s", "event_type": "page_view", "path": "/", "url": "https://example.com/"});
    let crawler = dropped_sample("crawler");
    let headless = dropped_sample("headless");

    let response = post(&app, "/event", &event, GOOGLEBOT, None).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"status": "ignored", "reason": "bot"}));
    let batch = json!([event.clone(), event.clone(), event.clone()]);
    let response = post(&app, "/events", &batch, HEADLESS_CHROME, None).await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ignored", "reason": "bot", "count": 0, "ignored": 3})
    );
    assert_eq!(app.queue_count().await, 0, "nothing of a bot is stored");
    assert_eq!(metric(&app, &crawler).await, 1.0);
    assert_eq!(metric(&app, &headless).await, 3.0);

    // Server-side senders are not bots: curl, reqwest (no User-Agent at all), python-requests.
    for agent in ["curl/8.5.0", "python-requests/2.32.3"] {
        assert_eq!(post(&app, "/event", &event, agent, None).await.status(), 200, "{agent}");
    }
    assert_eq!(app.post_event(event.to_string()).await.status(), 200, "no User-Agent");
    assert_eq!(app.queue_count().await, 3);
    assert_eq!(metric(&app, &crawler).await, 1.0, "unchanged");

    // A bot's invalid event is still refused as invalid: validation comes first.
    let invalid = post(&app, "/event", &json!({"site_id": "s"}), GOOGLEBOT, None).await;
    assert_eq!(invalid.status(), 400);
}

fn dropped_sample(reason: &str) -> String {
    format!("analytics_events_dropped_total{{reason=\"{reason}\"}}")
}

#[tokio::test]
async fn bad_page_context_is_refused_naming_the_field_and_stores_nothing() {
    let app = spawn_app().await;
    for (extra, needle) in [
        (json!({"url": "/relative"}), "url must be an absolute http(s) URL"),
        (json!({"screen_width": -5}), "screen_width must be a whole number"),
        (json!({"props": {"k": {"$gt": ""}}}), "props value of \"k\" must be a string"),
        (json!({"referrer": 7}), "referrer must be a string"),
    ] {
        let mut body = json!({"site_id": "s", "event_type": "page_view", "path": "/"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let response = post(&app, "/event", &body, CHROME_WINDOWS, None).await;
        crate::helpers::assert_json_error(response, 400, needle).await;
    }
    assert_eq!(app.queue_count().await, 0);
}

#[tokio::test]
async fn without_the_data_sets_events_are_still_accepted_with_less_enrichment() {
    let app = spawn_app_with(|c| {
        c.trusted_proxies = "127.0.0.1".parse().unwrap();
        c.data_sets.country_db = "/nonexistent/country.mmdb".into();
        c.data_sets.referrers = "/nonexistent/referrers.json".into();
    })
    .await;
    let (ip, _) = an_address_in_a_country();
    let body = json!({"site_id": "s", "event_type": "page_view", "path": "/",
        "referrer": "https://www.google.com/search?q=x"});
    let response = post(&app, "/event", &body, FIREFOX_LINUX, Some(&ip.to_string())).await;
    assert_eq!(response.status(), 200);
    let queued = app.queued().await;
    assert!(!queued[0].contains_key("country"), "no country database, no country: {:?}", queued[0]);
    assert_eq!(queued[0].get_str("source"), Ok("google.com"), "no referrer list: the referrer's domain");
    assert_eq!(queued[0].get_str("channel"), Ok("Referral"));
    assert_eq!(queued[0].get_str("browser"), Ok("Firefox"), "the User-Agent needs no data file");
}
