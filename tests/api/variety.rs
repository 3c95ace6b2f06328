//! Hostile variety (issue #13, item 9): many event types, many sites, ranges
//! with partial hours and slow queries must not make the stats read everything
//! into the API, nor hang; the figures stay exact.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mongodb::bson::{DateTime, Document, doc};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_json_error, spawn_app, spawn_app_with, spawn_app_without_transactions};

/// How many types `events_by_type` lists (the documented contract).
const TOP_EVENT_TYPES: usize = 20;

/// One event as sent: site, type, path, user, time (ms since the epoch).
use crate::helpers::Sent;

fn sent(site: &str, kind: &str, path: &str, user: &str, millis: i64) -> Sent {
    (site.to_string(), kind.to_string(), path.to_string(), user.to_string(), millis)
}

/// Posts `events` in batches and moves them all into `events`.
async fn post_and_drain(app: &TestApp, events: &[Sent]) {
    app.post_in_batches(events, 500).await;
    app.drain_queue().await;
}

/// `GET <path_and_query>` as JSON, asserting a 200.
async fn get_json(app: &TestApp, path_and_query: &str) -> Value {
    let response = app.http.get(app.url(path_and_query)).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path_and_query}");
    response.json().await.unwrap()
}

fn rfc3339(millis: i64) -> String {
    DateTime::from_millis(millis).try_to_rfc3339_string().unwrap()
}

const HOUR: i64 = 3_600_000;
/// 2026-03-01T00:00:00Z
const START: i64 = 1_772_323_200_000;

/// 35 types on one site, two by two with the same count (`t00` and `t01` one
/// event each, ..., `t34` 18), so the cut falls between two tied types.
fn many_types() -> Vec<Sent> {
    let mut events = Vec::new();
    for i in 0..35i64 {
        for n in 0..=(i / 2) {
            let kind = format!("t{i:02}");
            events.push(sent("typed", &kind, &format!("/p{}", n % 3), &format!("u{n}"), START + n * 60_000));
        }
    }
    events.push(sent("elsewhere", "t00", "/", "x", START));
    events
}

/// The expected `events_by_type` (top N) and what was cut (types, events).
fn expected_types(events: &[Sent], site: &str) -> (Vec<Value>, usize, u64) {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for (s, kind, ..) in events {
        if s == site {
            *counts.entry(kind).or_default() += 1;
        }
    }
    let mut ranked: Vec<(&str, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let cut = ranked.split_off(TOP_EVENT_TYPES.min(ranked.len()));
    let top = ranked.iter().map(|(t, c)| json!({ "event_type": t, "count": c })).collect();
    (top, cut.len(), cut.iter().map(|(_, c)| c).sum())
}

async fn assert_types_cut(app: &TestApp) {
    let events = many_types();
    post_and_drain(app, &events).await;
    let (top, cut_types, cut_events) = expected_types(&events, "typed");
    assert!(cut_types > 0, "the test cuts something");
    let total = events.iter().filter(|e| e.0 == "typed").count() as u64;
    // All time, and a range with partial hours at both ends (raw edges + hourly rollups).
    for query in [
        "/stats?site_id=typed".to_string(),
        format!("/stats?site_id=typed&from={}&to={}", rfc3339(START - HOUR / 2), rfc3339(START + 3 * HOUR + 1)),
    ] {
        let stats = get_json(app, &query).await;
        assert_eq!(stats["events_by_type"], Value::Array(top.clone()), "{query}");
        assert_eq!(
            stats["events_by_type_other"],
            json!({ "types": cut_types, "count": cut_events }),
            "the cut types and their events, {query}"
        );
        assert_eq!(stats["total_events"], total, "{query}");
        let listed: u64 =
            stats["events_by_type"].as_array().unwrap().iter().map(|t| t["count"].as_u64().unwrap()).sum();
        assert_eq!(listed + cut_events, total, "listed plus cut is every event, {query}");
    }
    // A site with few types: no `events_by_type_other` at all (the answer old clients knew).
    let few = get_json(app, "/stats?site_id=elsewhere").await;
    assert!(few.get("events_by_type_other").is_none(), "nothing cut, nothing said: {few}");
}

#[tokio::test]
async fn events_by_type_is_cut_to_the_top_types_with_the_rest_counted_exactly() {
    assert_types_cut(&spawn_app().await).await;
}

#[tokio::test]
async fn events_by_type_is_cut_the_same_way_without_rollups() {
    assert_types_cut(&spawn_app_without_transactions().await).await;
}

/// 23 sites with 1 to 5 events each (many ties), so pages cut through ties.
fn many_sites() -> Vec<Sent> {
    (0..23)
        .flat_map(|i: i64| {
            (0..=(i * 7 % 5)).map(move |n| sent(&format!("site-{i:02}"), "page_view", "/", "u", START + n * 1000))
        })
        .collect()
}

async fn assert_sites_paged(app: &TestApp) {
    let events = many_sites();
    post_and_drain(app, &events).await;
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for (site, ..) in &events {
        *counts.entry(site).or_default() += 1;
    }
    let mut expected: Vec<(&str, u64)> = counts.into_iter().collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let expected: Vec<Value> = expected.iter().map(|(s, c)| json!({ "site_id": s, "events": c })).collect();

    let mut listed: Vec<Value> = Vec::new();
    let mut query = "/sites?limit=7".to_string();
    for page in 0.. {
        assert!(page < 10, "pagination ends");
        let answer = get_json(app, &query).await;
        let sites = answer["sites"].as_array().unwrap();
        assert!(sites.len() <= 7, "a page holds at most limit sites: {}", sites.len());
        listed.extend(sites.iter().cloned());
        match answer["next_offset"].as_u64() {
            Some(next) => query = format!("/sites?limit=7&offset={next}"),
            None => {
                assert!(answer["next_offset"].is_null(), "the last page says so: {answer}");
                break;
            }
        }
    }
    let names: HashSet<&str> = listed.iter().map(|s| s["site_id"].as_str().unwrap()).collect();
    assert_eq!(names.len(), listed.len(), "no site listed twice");
    assert_eq!(listed, expected, "every site exactly once, most events first, ties by id");

    // Old clients (no parameters) get the first page, which here is everything.
    let all = get_json(app, "/sites").await;
    assert_eq!(all["sites"], Value::Array(expected));
    assert!(all["next_offset"].is_null());
}

#[tokio::test]
async fn sites_pages_list_every_site_exactly_once() {
    assert_sites_paged(&spawn_app().await).await;
}

#[tokio::test]
async fn sites_pages_list_every_site_exactly_once_without_rollups() {
    assert_sites_paged(&spawn_app_without_transactions().await).await;
}

#[tokio::test]
async fn sites_paging_parameters_out_of_bounds_are_400s_naming_them() {
    let app = spawn_app().await;
    for (query, needle) in [
        ("/sites?limit=0", "limit"),
        ("/sites?limit=1001", "limit"),
        ("/sites?limit=ten", "limit"),
        ("/sites?offset=-1", "offset"),
    ] {
        let response = app.http.get(app.url(query)).send().await.unwrap();
        assert_json_error(response, 400, needle).await;
    }
}

/// Users spread so that a range with partial hours meets each case: seen only
/// in a partial hour, in a partial and a whole hour, only in whole hours, only
/// outside the range, or on another site.
fn users_around_partial_hours() -> Vec<Sent> {
    let mut events = Vec::new();
    for u in 0..200i64 {
        let user = format!("user-{u}");
        let kind = if u % 3 == 0 { "signup" } else { "page_view" };
        let at = |hour: i64, minute: i64| START + hour * HOUR + minute * 60_000;
        match u % 5 {
            0 => events.push(sent("ranged", kind, "/a", &user, at(0, 45))), // first partial hour only
            1 => {
                events.push(sent("ranged", kind, "/a", &user, at(0, 50)));
                events.push(sent("ranged", kind, "/b", &user, at(2, 10))); // partial + whole
            }
            2 => events.push(sent("ranged", kind, "/b", &user, at(1 + u % 2, 5))), // whole hours only
            3 => {
                events.push(sent("ranged", kind, "/c", &user, at(3, 20))); // last partial hour
                events.push(sent("ranged", kind, "/c", &user, at(0, 10))); // and before the range
            }
            _ => {
                events.push(sent("ranged", kind, "/d", &user, at(0, 5))); // before the range only
                events.push(sent("other", kind, "/d", &user, at(1, 5)));
            }
        }
    }
    events
}

fn expected_users(events: &[Sent], from: i64, to: i64, kind: Option<&str>) -> usize {
    let users: HashSet<&str> = events
        .iter()
        .filter(|(site, k, _, _, at)| site == "ranged" && *at >= from && *at < to && kind.is_none_or(|t| t == k))
        .map(|(.., user, _)| user.as_str())
        .collect();
    users.len()
}

async fn assert_partial_hour_users(app: &TestApp) {
    let events = users_around_partial_hours();
    post_and_drain(app, &events).await;
    let (from, to) = (START + 30 * 60_000, START + 3 * HOUR + 30 * 60_000);
    for kind in [None, Some("signup"), Some("page_view")] {
        let mut query = format!("/stats?site_id=ranged&from={}&to={}", rfc3339(from), rfc3339(to));
        if let Some(kind) = kind {
            query.push_str(&format!("&event_type={kind}"));
        }
        let stats = get_json(app, &query).await;
        let expected = expected_users(&events, from, to, kind);
        assert!(expected > 50, "the case is not trivial");
        assert_eq!(stats["unique_users"], expected, "{query}");
    }
    // Within one hour, and from an hour boundary to a partial hour.
    for (from, to) in [(START + 5 * 60_000, START + 55 * 60_000), (START + HOUR, START + 3 * HOUR + 25 * 60_000)] {
        let query = format!("/stats?site_id=ranged&from={}&to={}", rfc3339(from), rfc3339(to));
        assert_eq!(get_json(app, &query).await["unique_users"], expected_users(&events, from, to, None), "{query}");
    }
}

#[tokio::test]
async fn unique_users_over_a_range_with_partial_hours_are_exact() {
    assert_partial_hour_users(&spawn_app().await).await;
}

#[tokio::test]
async fn unique_users_over_a_range_with_partial_hours_are_exact_without_rollups() {
    assert_partial_hour_users(&spawn_app_without_transactions().await).await;
}

#[tokio::test]
async fn a_stats_query_past_its_time_limit_is_a_504_not_a_hang() {
    let app = spawn_app_with(|config| config.stats_query_time_limit = Duration::from_millis(1)).await;
    post_and_drain(&app, &[sent("big", "page_view", "/", "u", START)]).await;
    // Many path rollups, written directly: no server groups 30,000 documents in 1 ms
    // (filtered by type: the all-time, unfiltered stats read the ranks, see tests/api/ranks.rs).
    let paths: Vec<Document> = (0..30_000)
        .map(|i| {
            doc! { "_id": format!("big\u{1f}page_view\u{1f}/p{i}"), "site_id": "big", "event_type": "page_view",
            "path": format!("/p{i}"), "count": 1_i64, "shard": 0_i64 }
        })
        .collect();
    app.store.database().collection::<Document>("stats_paths").insert_many(paths).await.unwrap();

    let started = std::time::Instant::now();
    let response = app
        .http
        .get(app.url("/stats?site_id=big&event_type=page_view"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("an answer");
    let message = assert_json_error(response, 504, "time limit").await;
    // The figure docs/reliability.md records (seen with --nocapture).
    eprintln!("504 after {:?}: {message}", started.elapsed());
}

#[tokio::test]
async fn the_desktop_list_of_sites_pages_through_more_than_one_page() {
    let app = spawn_app().await;
    post_and_drain(&app, &[sent("site-real", "page_view", "/", "u", START)]).await;
    // More sites than one page holds (stats::SITES_PAGE_MAX), written as site rollups.
    let many = analytics_desk::stats::SITES_PAGE_MAX as usize + 5;
    let sites: Vec<Document> = (0..many)
        .map(|i| doc! { "_id": format!("bulk-{i:05}"), "site_id": format!("bulk-{i:05}"), "count": 2_i64, "shard": 0_i64 })
        .collect();
    app.store.database().collection::<Document>("stats_sites").insert_many(sites).await.unwrap();

    let listed = analytics_desk::stats::sites(&app.store).await.unwrap();
    assert_eq!(listed.len(), many + 1, "every site, across pages");
    let names: HashSet<&str> = listed.iter().map(|s| s.site_id.as_str()).collect();
    assert_eq!(names.len(), listed.len(), "none twice");
    assert_eq!(listed[0].site_id, "bulk-00000", "most events first, then by id");
    assert_eq!(listed.last().unwrap().site_id, "site-real");
}
