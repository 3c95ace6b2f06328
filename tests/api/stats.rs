//! `GET /stats`: the exact contract, checked against an independent computation.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::StreamExt;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

use crate::helpers::{assert_json_error, event_json, spawn_app};

#[tokio::test]
async fn stats_count_events_users_and_rank_paths_with_ties_by_path() {
    let app = spawn_app().await;
    for (path, user) in [("/b", "u1"), ("/a", "u2"), ("/b", "u1"), ("/a", "u3"), ("/c", "u1")] {
        assert_eq!(app.post_event(event_json("site-001", path, user)).await.status(), 200);
    }
    app.post_event(event_json("other-site", "/zzz", "u9")).await;
    app.drain_queue().await;

    let stats = app.event_stats("site-001").await;

    assert_eq!(
        stats,
        json!({
            "total_events": 5,
            "unique_users": 3,
            "top_paths": [{ "path": "/a", "count": 2 }, { "path": "/b", "count": 2 }, { "path": "/c", "count": 1 }],
            "events_by_type": [{ "event_type": "page_view", "count": 5 }]
        })
    );
}

#[tokio::test]
async fn stats_count_only_processed_events() {
    let app = spawn_app().await;
    app.post_event(event_json("site-q", "/", "u")).await;
    assert_eq!(app.event_stats("site-q").await["total_events"], 0, "still in the queue");
    app.drain_queue().await;
    assert_eq!(app.event_stats("site-q").await["total_events"], 1);
}

#[tokio::test]
async fn an_unknown_site_has_zeros() {
    let app = spawn_app().await;
    assert_eq!(
        app.event_stats("nobody").await,
        json!({ "total_events": 0, "unique_users": 0, "top_paths": [], "events_by_type": [] })
    );
}

#[tokio::test]
async fn a_missing_or_empty_site_id_is_a_400() {
    let app = spawn_app().await;
    for query in ["/stats", "/stats?site_id=", "/stats?site_id=%20%20", "/stats?other=1"] {
        let response = app.http.get(app.url(query)).send().await.unwrap();
        assert_json_error(response, 400, "site_id is required").await;
    }
    let response = app.http.get(app.url("/stats?site_id=a&site_id=b")).send().await.unwrap();
    assert_json_error(response, 400, "invalid query").await;
}

#[tokio::test]
async fn an_operator_in_the_query_is_a_plain_site_name() {
    let app = spawn_app().await;
    app.post_event(event_json("real", "/", "u")).await;
    app.drain_queue().await;
    // `site_id[$ne]=x` is how Express's qs would smuggle an operator; here it is no site.
    let response = app.http.get(app.url("/stats?site_id[$ne]=x")).send().await.unwrap();
    assert_json_error(response, 400, "site_id is required").await;
    assert_eq!(app.event_stats("{\"$ne\":\"x\"}").await["total_events"], 0);
}

/// Expected stats computed in memory from the events as sent.
fn expected_stats(events: &[(String, String, String)], site: &str) -> Value {
    let of_site: Vec<_> = events.iter().filter(|(s, _, _)| s == site).collect();
    let users: HashSet<&str> = of_site.iter().map(|(_, _, u)| u.as_str()).collect();
    let mut paths: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, path, _) in &of_site {
        *paths.entry(path.as_str()).or_default() += 1;
    }
    let mut ranked: Vec<(&str, u64)> = paths.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top: Vec<Value> = ranked.iter().take(10).map(|(p, c)| json!({ "path": p, "count": c })).collect();
    let by_type: Vec<Value> =
        if of_site.is_empty() { vec![] } else { vec![json!({ "event_type": "page_view", "count": of_site.len() })] };
    json!({ "total_events": of_site.len(), "unique_users": users.len(), "top_paths": top, "events_by_type": by_type })
}

#[tokio::test]
async fn stats_match_an_independent_computation_over_random_events() {
    let app = spawn_app().await;
    let sites = ["alpha", "beta", "gamma", "delta"];
    let mut rng = rand::rng();
    // Skewed paths (so ranks and ties both occur) and a limited set of users.
    let events: Vec<(String, String, String)> = (0..3000)
        .map(|_| {
            let site = sites.choose(&mut rng).unwrap().to_string();
            let path = format!("/page/{}", rng.random_range(0..6) * rng.random_range(0..6));
            let user = format!("user-{}", rng.random_range(0..400));
            (site, path, user)
        })
        .collect();

    let statuses: Vec<u16> = futures_util::stream::iter(&events)
        .map(|(site, path, user)| async { app.post_event(event_json(site, path, user)).await.status().as_u16() })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200));
    app.drain_queue().await;

    let mut totals: HashMap<&str, u64> = HashMap::new();
    for site in sites {
        let actual = app.event_stats(site).await;
        assert_eq!(actual, expected_stats(&events, site), "site {site}");
        totals.insert(site, actual["total_events"].as_u64().unwrap());
    }
    assert_eq!(totals.values().sum::<u64>(), 3000);
}
