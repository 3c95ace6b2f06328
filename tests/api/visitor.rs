//! Anonymous visitors: an event without `user_id` gets a hash of the day's salt,
//! the site, the client's address and its User-Agent; `X-Forwarded-For` counts
//! only from trusted proxies; no address is stored; the salts live in `salts`.

use std::net::IpAddr;
use std::sync::Arc;

use analytics_desk::Config;
use analytics_desk::http::{self, ApiState};
use analytics_desk::ingest::anonymous_id::{
    self as visitor, AnonymousVisitors, DailySalts, LATE_VISITORS_COLLECTION, SALTS_COLLECTION, Salt,
};
use analytics_desk::{Engine, PartStatus};
use axum::body::Body;
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use serde_json::json;
use tower::ServiceExt;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const CHROME: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36";

/// An anonymous page view for `site_id`, sent with `user_agent` and, if given,
/// an `X-Forwarded-For`; returns the `user_id` the server stored for it.
async fn anonymous_view(app: &TestApp, site_id: &str, user_agent: &str, forwarded_for: Option<&str>) -> String {
    let before = app.queue_count().await;
    let mut request = app
        .http
        .post(app.url("/event"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", user_agent)
        .body(json!({ "site_id": site_id, "event_type": "page_view", "path": "/" }).to_string());
    if let Some(addresses) = forwarded_for {
        request = request.header("x-forwarded-for", addresses);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let queued = app.queued().await;
    assert_eq!(queued.len() as u64, before + 1);
    queued.last().unwrap().get_str("user_id").unwrap().to_string()
}

/// Today's salt as stored, checking the document's shape.
async fn todays_salt(app: &TestApp) -> Salt {
    let salts = app.store.database().collection::<Document>(SALTS_COLLECTION);
    let today = visitor::utc_day(DateTime::now());
    let stored = salts.find_one(doc! { "_id": &today }).await.unwrap().expect("today's salt is stored");
    let keys: Vec<&str> = stored.keys().map(String::as_str).collect();
    assert_eq!(keys, ["_id", "salt", "created_at"]);
    stored.get_datetime("created_at").expect("created_at is a date");
    match stored.get("salt") {
        Some(Bson::Binary(binary)) => binary.bytes.as_slice().try_into().expect("32 bytes"),
        other => panic!("salt is binary data: {other:?}"),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn expected_id(salt: &Salt, site_id: &str, client: &str, user_agent: &str) -> String {
    visitor::anonymous_user_id(salt, site_id, Some(client.parse::<IpAddr>().unwrap()), user_agent.as_bytes())
}

#[tokio::test]
async fn an_event_without_user_id_gets_a_stable_anonymous_id_per_site_and_browser() {
    let app = spawn_app().await;

    let first = anonymous_view(&app, "shop", FIREFOX, None).await;
    let again = anonymous_view(&app, "shop", FIREFOX, None).await;
    let other_site = anonymous_view(&app, "blog", FIREFOX, None).await;
    let other_browser = anonymous_view(&app, "shop", CHROME, None).await;

    assert!(first.len() >= 16 && first.chars().all(|c| c.is_ascii_hexdigit()), "a hex id: {first}");
    assert_eq!(first, again, "same site, address and browser on the same day: the same visitor");
    assert_ne!(first, other_site, "another site never sees the same id");
    assert_ne!(first, other_browser);
    let salt = todays_salt(&app).await;
    assert_eq!(first, expected_id(&salt, "shop", "127.0.0.1", FIREFOX), "the hash of salt, site, address and UA");

    // A client's own user_id is kept as sent.
    let named = json!({ "site_id": "shop", "event_type": "signup", "path": "/", "user_id": "user-123" });
    assert_eq!(app.post_event(named.to_string()).await.status(), 200);
    assert_eq!(app.queued().await.last().unwrap().get_str("user_id").unwrap(), "user-123");

    app.drain_queue().await;
    let stats = app.stats("shop").await;
    assert_eq!((stats["total_events"].as_u64(), stats["unique_users"].as_u64()), (Some(4), Some(3)));
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let app = spawn_app().await;

    let direct = anonymous_view(&app, "shop", FIREFOX, None).await;
    let claimed_a = anonymous_view(&app, "shop", FIREFOX, Some("198.51.100.1")).await;
    let claimed_b = anonymous_view(&app, "shop", FIREFOX, Some("198.51.100.2, 203.0.113.9")).await;

    assert_eq!(direct, claimed_a, "anyone can send X-Forwarded-For: without TRUSTED_PROXIES it is ignored");
    assert_eq!(direct, claimed_b);
    assert_eq!(direct, expected_id(&todays_salt(&app).await, "shop", "127.0.0.1", FIREFOX));
}

#[tokio::test]
async fn forwarded_for_is_honoured_from_a_trusted_proxy() {
    // The test client connects from 127.0.0.1: it plays the proxy.
    let app = spawn_app_with(|c| c.trusted_proxies = "127.0.0.1, 10.0.0.0/8".parse().unwrap()).await;

    let visitor_a = anonymous_view(&app, "shop", FIREFOX, Some("198.51.100.1")).await;
    let visitor_b = anonymous_view(&app, "shop", FIREFOX, Some("198.51.100.2")).await;
    // The client claimed 1.1.1.1; the proxies appended the real hops: the
    // rightmost address that is not a trusted proxy is the client.
    let through_two = anonymous_view(&app, "shop", FIREFOX, Some("1.1.1.1, 198.51.100.1, 10.1.2.3")).await;
    let proxy_itself = anonymous_view(&app, "shop", FIREFOX, None).await;

    let salt = todays_salt(&app).await;
    assert_ne!(visitor_a, visitor_b, "two clients behind one proxy are two visitors");
    assert_eq!(visitor_a, expected_id(&salt, "shop", "198.51.100.1", FIREFOX));
    assert_eq!(visitor_b, expected_id(&salt, "shop", "198.51.100.2", FIREFOX));
    assert_eq!(through_two, visitor_a);
    assert_eq!(proxy_itself, expected_id(&salt, "shop", "127.0.0.1", FIREFOX), "no header: the peer");
}

#[tokio::test]
async fn no_address_is_stored_anywhere() {
    let app = spawn_app_with(|c| c.trusted_proxies = "127.0.0.1".parse().unwrap()).await;
    let addresses = ["127.0.0.1", "198.51.100.77", "2001:db8::77"];

    anonymous_view(&app, "shop", FIREFOX, Some("198.51.100.77")).await;
    anonymous_view(&app, "shop", FIREFOX, Some("[2001:db8::77]:443")).await;
    anonymous_view(&app, "shop", FIREFOX, None).await;
    let queued: Vec<String> = app.queued().await.iter().map(|d| d.to_string()).collect();
    app.drain_queue().await;

    let database = app.store.database();
    let mut everything = queued;
    for name in database.list_collection_names().await.unwrap() {
        let documents: Vec<Document> =
            database.collection::<Document>(&name).find(doc! {}).await.unwrap().try_collect().await.unwrap();
        everything.extend(documents.iter().map(|d| format!("{name}: {d}")));
    }
    assert!(everything.iter().any(|d| d.starts_with("events:")), "the events were moved: {everything:#?}");
    for document in &everything {
        for address in addresses {
            assert!(!document.contains(address), "{address} stored in {document}");
        }
        // Only what enrichment derives from it (browser, version, os, device); never the User-Agent itself.
        assert!(!document.contains("Gecko/20100101"), "the User-Agent is not stored either: {document}");
    }
}

#[tokio::test]
async fn daily_salts_agree_across_processes_and_change_every_day() {
    let app = spawn_app().await;
    let database = app.store.database();
    let day = |date: &str| DateTime::parse_rfc3339_str(format!("{date}T12:00:00Z")).unwrap();

    // Several API processes asking for a new day at once: one salt wins for all.
    let processes: Vec<DailySalts> = (0..4).map(|_| DailySalts::new(database)).collect();
    let first_day =
        futures_util::future::try_join_all(processes.iter().map(|p| p.salt_on(day("2024-05-01")))).await.unwrap();
    assert!(first_day.iter().all(|salt| *salt == first_day[0]), "every process has the same salt");
    let restarted = DailySalts::new(database);
    assert_eq!(restarted.salt_on(day("2024-05-01")).await.unwrap(), first_day[0], "a restart reads it back");
    assert_eq!(
        processes[0].salt_on(DateTime::parse_rfc3339_str("2024-05-01T23:59:59Z").unwrap()).await.unwrap(),
        first_day[0]
    );

    let second_day = processes[1].salt_on(day("2024-05-02")).await.unwrap();
    assert_ne!(second_day, first_day[0], "a new day, a new salt");
    assert_eq!(restarted.salt_on(day("2024-05-02")).await.unwrap(), second_day);

    // Taking 05-03's salt deletes those older than the day before (05-02).
    let third_day = processes[2].salt_on(day("2024-05-03")).await.unwrap();
    assert!(third_day != first_day[0] && third_day != second_day);
    let salts = database.collection::<Document>(SALTS_COLLECTION);
    let ids: Vec<String> = salts
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect::<Vec<Document>>()
        .await
        .unwrap()
        .iter()
        .map(|d| d.get_str("_id").unwrap().to_string())
        .collect();
    assert_eq!(ids, ["2024-05-02", "2024-05-03"]);
}

#[tokio::test]
async fn an_unusable_stored_salt_is_a_503_not_a_silent_new_salt() {
    let app = spawn_app().await;
    let today = visitor::utc_day(DateTime::now());
    let salts = app.store.database().collection::<Document>(SALTS_COLLECTION);
    salts.insert_one(doc! { "_id": &today, "salt": "not binary", "created_at": DateTime::now() }).await.unwrap();

    let response = app
        .http
        .post(app.url("/event"))
        .header("content-type", "application/json")
        .body(json!({ "site_id": "shop", "event_type": "page_view", "path": "/" }).to_string())
        .send()
        .await
        .unwrap();
    crate::helpers::assert_json_error(response, 503, "cannot derive an anonymous user_id").await;
    assert_eq!(app.queue_count().await, 0);
    let named = json!({ "site_id": "shop", "event_type": "page_view", "path": "/", "user_id": "u" });
    assert_eq!(app.post_event(named.to_string()).await.status(), 200, "events with a user_id are unaffected");
}

#[tokio::test]
async fn the_router_without_our_serve_loop_still_derives_an_id_without_an_address() {
    // Driven directly (as a test or an embedding might), no peer is known:
    // the id is derived without one, and X-Forwarded-For is still not believed.
    let app = spawn_app().await;
    let config = Config { trusted_proxies: "127.0.0.1".parse().unwrap(), ..Config::default() };
    let state = ApiState::new(app.store.clone(), Arc::default(), &config);
    let request = axum::http::Request::post("/event")
        .header("content-type", "application/json")
        .header("user-agent", FIREFOX)
        .header("x-forwarded-for", "198.51.100.1")
        .body(Body::from(json!({ "site_id": "shop", "event_type": "page_view", "path": "/" }).to_string()))
        .unwrap();

    let response = http::router(state).oneshot(request).await.unwrap();

    assert_eq!(response.status(), 200);
    let stored = app.queued().await[0].get_str("user_id").unwrap().to_string();
    let salt = todays_salt(&app).await;
    assert_eq!(stored, visitor::anonymous_user_id(&salt, "shop", None, FIREFOX.as_bytes()));
}

fn at(time: &str) -> DateTime {
    DateTime::parse_rfc3339_str(time).unwrap()
}

fn browser(user_agent: &str) -> axum::http::HeaderMap {
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("user-agent", user_agent.parse().unwrap());
    headers
}

#[tokio::test]
async fn a_visit_across_midnight_stays_one_visitor_and_only_such_a_visit() {
    let app = spawn_app().await;
    let database = app.store.database();
    let process = || AnonymousVisitors::new(database, Default::default());
    let (api, firefox) = (process(), browser(FIREFOX));
    let (late, noon, new) = (Some(ip("198.51.100.1")), Some(ip("198.51.100.2")), Some(ip("198.51.100.3")));

    let seen_at_23_50 = api.user_id_at("shop", late, &firefox, at("2024-05-01T23:50:00Z")).await.unwrap();
    let seen_at_noon = api.user_id_at("shop", noon, &firefox, at("2024-05-01T12:00:00Z")).await.unwrap();

    // Just after midnight, in this process or in one started since, and later that day.
    let restarted = process();
    for (who, time) in
        [(&api, "2024-05-02T00:00:20Z"), (&restarted, "2024-05-02T00:10:00Z"), (&api, "2024-05-02T15:00:00Z")]
    {
        let id = who.user_id_at("shop", late, &firefox, at(time)).await.unwrap();
        assert_eq!(id, seen_at_23_50, "seen at 23:50, back at {time}: the same visitor");
    }
    let today = DailySalts::new(database).salt_on(at("2024-05-02T12:00:00Z")).await.unwrap();
    for (who, client) in [("not seen yesterday", new), ("seen at noon only", noon)] {
        let id = api.user_id_at("shop", client, &firefox, at("2024-05-02T00:10:00Z")).await.unwrap();
        assert_eq!(id, visitor::anonymous_user_id(&today, "shop", client, FIREFOX.as_bytes()), "{who}");
    }
    assert_ne!(
        api.user_id_at("shop", noon, &firefox, at("2024-05-02T00:10:00Z")).await.unwrap(),
        seen_at_noon,
        "a visit that ended yesterday is not continued"
    );
    let other_site = api.user_id_at("blog", late, &firefox, at("2024-05-02T00:10:00Z")).await.unwrap();
    assert_eq!(other_site, visitor::anonymous_user_id(&today, "blog", late, FIREFOX.as_bytes()), "per site");

    // What made it possible holds ids only, no address or User-Agent.
    let kept: Vec<Document> = database
        .collection::<Document>(LATE_VISITORS_COLLECTION)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(kept.len(), 1, "one visitor was seen late on 05-01: {kept:?}");
    let text = kept[0].to_string();
    assert!(text.contains(&seen_at_23_50) && !text.contains("198.51") && !text.contains("Firefox"), "{text}");
}

#[tokio::test]
async fn salts_and_late_visitors_expire_after_48_hours_even_when_no_api_runs() {
    let url = crate::common::fresh_database_url();
    let database = mongodb::Client::with_uri_str(&url)
        .await
        .unwrap()
        .database(&Config::default().with_mongo_url(&url).unwrap().database);
    let hours_ago = |hours: i64| DateTime::from_millis(DateTime::now().timestamp_millis() - hours * 3_600_000);
    let (salts, late) =
        (database.collection::<Document>(SALTS_COLLECTION), database.collection::<Document>(LATE_VISITORS_COLLECTION));
    let salt = Bson::Binary(mongodb::bson::Binary {
        subtype: mongodb::bson::spec::BinarySubtype::Generic,
        bytes: vec![7; 32],
    });
    salts.insert_one(doc! { "_id": "2020-01-01", "salt": salt.clone(), "created_at": hours_ago(49) }).await.unwrap();
    salts.insert_one(doc! { "_id": "2020-01-02", "salt": salt, "created_at": hours_ago(47) }).await.unwrap();
    late.insert_one(doc! { "_id": "2020-01-01:old", "created_at": hours_ago(49) }).await.unwrap();

    // The worker alone: no API ever takes a salt here.
    let engine = Engine::new(crate::helpers::test_config(&url));
    engine.start_worker().await.unwrap();
    assert!(matches!(engine.status().worker, PartStatus::Running { .. }));
    assert!(matches!(engine.status().api, PartStatus::Stopped));

    for collection in [&salts, &late] {
        let indexes: Vec<mongodb::IndexModel> = collection.list_indexes().await.unwrap().try_collect().await.unwrap();
        let ttl = indexes.iter().find(|index| index.keys == doc! { "created_at": 1 });
        let expiry = ttl.and_then(|index| index.options.as_ref()?.expire_after);
        assert_eq!(expiry, Some(std::time::Duration::from_secs(48 * 3600)), "{}: {indexes:?}", collection.name());
    }
    // The server's TTL monitor passes every 60 s (mongod and secantusd-rs alike).
    let started = std::time::Instant::now();
    let expired = crate::common::eventually(std::time::Duration::from_secs(150), || async {
        salts.count_documents(doc! { "_id": "2020-01-01" }).await.unwrap() == 0
            && late.count_documents(doc! {}).await.unwrap() == 0
    });
    assert!(expired.await, "the 49-hour-old salt and late visitor were deleted by the server");
    println!("expired after {:?}", started.elapsed());
    assert_eq!(salts.count_documents(doc! { "_id": "2020-01-02" }).await.unwrap(), 1, "a 47-hour-old salt is kept");
    engine.shutdown().await;
}
