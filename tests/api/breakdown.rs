//! The stats over visits (docs/visits.md section 4): `/stats`' visit figures
//! and comparison, `/stats/breakdown` (JSON and CSV), filters, the time
//! series' metrics and `/stats/realtime`, each checked against figures
//! computed by hand from a small data set.
//!
//! The data set is written straight into the test database's `visits` and
//! `events` collections in the shape of the contract (docs/visits.md sections
//! 1–2): a real database, not a mock. Once the worker keeps visits, the
//! tests marked "pipeline" should also be fed through `POST /events` and the
//! worker (the same events, with the enrichment headers), expecting the same figures.

use analytics_desk::sites::Goal;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_json_error, spawn_app};

fn at(text: &str) -> DateTime {
    DateTime::parse_rfc3339_str(text).unwrap()
}

/// One visit and its events: `(event_type, path, time, props)`; the visit's
/// figures are derived from its events as the worker derives them.
async fn visit(app: &TestApp, user: &str, attributes: Document, events: &[(&str, &str, &str, Option<Document>)]) {
    let ids: Vec<ObjectId> = events.iter().map(|_| ObjectId::new()).collect();
    let (first, last) = (&events[0], &events[events.len() - 1]);
    let (start, end) = (at(first.2), at(last.2));
    let pageviews = events.iter().filter(|e| e.0 == "page_view").count() as i64;
    let mut visit = doc! {
        "_id": ids[0], "site_id": "shop", "user_id": user, "sv": format!("shop|{user}"),
        "start": start, "end": end, "entry_page": first.1, "exit_page": last.1,
        "pageviews": pageviews, "events": events.len() as i64,
        "duration_ms": end.timestamp_millis() - start.timestamp_millis(),
        "bounced": events.len() == 1, "hostname": "shop.example",
    };
    visit.extend(attributes.clone());
    app.store.database().collection::<Document>("visits").insert_one(visit).await.unwrap();
    let documents = events.iter().zip(&ids).map(|((kind, path, time, props), id)| {
        let mut event = doc! {
            "_id": id, "site_id": "shop", "event_type": *kind, "path": *path, "user_id": user,
            "timestamp": at(time), "hostname": "shop.example", "visit_id": ids[0], "processed_at": at(time),
        };
        event.extend(attributes.clone());
        if let Some(props) = props {
            event.insert("props", props.clone());
        }
        event
    });
    app.store.events().insert_many(documents.collect::<Vec<_>>()).await.unwrap();
}

/// The data set: alice's two Google visits and bob's direct bounce on 10
/// March, carol's referral the day before; three goals.
async fn seed(app: &TestApp) {
    let google = doc! {
        "source": "Google", "channel": "Organic Search", "country": "DE", "browser": "Firefox", "device": "desktop",
    };
    // V1: 10:00–10:10, 2 pageviews, 3 events.
    let v1 = [
        ("page_view", "/", "2026-03-10T10:00:00Z", None),
        ("page_view", "/pricing", "2026-03-10T10:05:00Z", None),
        ("click", "/pricing", "2026-03-10T10:10:00Z", Some(doc! { "plan": "pro" })),
    ];
    visit(app, "alice", google.clone(), &v1).await;
    // V2: a bounce, no source.
    let direct = doc! { "channel": "Direct", "country": "FR", "browser": "Chrome", "device": "mobile" };
    visit(app, "bob", direct, &[("page_view", "/blog/a", "2026-03-10T10:30:00Z", None)]).await;
    // V3: 12:00–12:05, 1 pageview, 2 events.
    let v3 = [
        ("page_view", "/blog/b", "2026-03-10T12:00:00Z", None),
        ("signup", "/signup", "2026-03-10T12:05:00Z", Some(doc! { "plan": "free" })),
    ];
    visit(app, "alice", google, &v3).await;
    // V4: the day before, 1 minute, 2 pageviews.
    let referral = doc! { "source": "news.ycombinator.com", "channel": "Referral", "country": "US" };
    let v4 = [("page_view", "/", "2026-03-09T15:00:00Z", None), ("page_view", "/", "2026-03-09T15:01:00Z", None)];
    visit(app, "carol", referral, &v4).await;
    let goals = [Goal::event("signup"), Goal::page("/blog/*"), Goal::page("/nowhere")];
    analytics_desk::sites::save_goals(&app.store, "shop", &goals).await.unwrap();
}

async fn get(app: &TestApp, path: &str, query: &[(&str, &str)]) -> reqwest::Response {
    app.http.get(app.url(path)).query(query).send().await.unwrap()
}

async fn json(app: &TestApp, path: &str, query: &[(&str, &str)]) -> Value {
    let response = get(app, path, query).await;
    assert_eq!(response.status(), 200, "{path} {query:?}");
    response.json().await.unwrap()
}

/// `/stats` of 10 March with `filters` (none when empty).
async fn day_stats(app: &TestApp, filters: &str) -> Value {
    let mut query = vec![("site_id", "shop"), ("from", "2026-03-10T00:00:00Z"), ("to", "2026-03-11T00:00:00Z")];
    if !filters.is_empty() {
        query.push(("filters", filters));
    }
    json(app, "/stats", &query).await
}

/// The figures of `/stats` that a filter narrows, as `[total_events, unique_users,
/// visitors, visits, pageviews]`, then `[views_per_visit, bounce_rate]` and `visit_duration`.
fn figures(stats: &Value) -> (Vec<u64>, Vec<f64>, u64) {
    let n = |k: &str| stats[k].as_u64().unwrap_or_else(|| panic!("{k} in {stats}"));
    let f = |k: &str| stats[k].as_f64().unwrap();
    (
        vec![n("total_events"), n("unique_users"), n("visitors"), n("visits"), n("pageviews")],
        vec![f("views_per_visit"), f("bounce_rate")],
        n("visit_duration"),
    )
}

/// Pipeline: the same figures should hold once the worker builds the visits.
#[tokio::test]
async fn stats_add_the_visit_figures_and_the_compared_period() {
    let app = spawn_app().await;
    seed(&app).await;

    let stats = day_stats(&app, "").await;
    // Event figures as before: six events of alice and bob.
    assert_eq!(
        stats["top_paths"],
        json!([
            { "path": "/pricing", "count": 2 }, { "path": "/", "count": 1 }, { "path": "/blog/a", "count": 1 },
            { "path": "/blog/b", "count": 1 }, { "path": "/signup", "count": 1 },
        ])
    );
    assert_eq!(
        stats["events_by_type"],
        json!([
            { "event_type": "page_view", "count": 4 }, { "event_type": "click", "count": 1 },
            { "event_type": "signup", "count": 1 },
        ])
    );
    // 2 visitors, 3 visits, 4 pageviews; (2+1+1)/3 views per visit, 1 bounce in 3, (600+0+300)/3 s.
    assert_eq!(figures(&stats), (vec![6, 2, 2, 3, 4], vec![1.33, 33.3], 300));
    assert!(stats.get("comparison").is_none());

    let compared = json(
        &app,
        "/stats",
        &[
            ("site_id", "shop"),
            ("from", "2026-03-10T00:00:00Z"),
            ("to", "2026-03-11T00:00:00Z"),
            ("compare", "previous_period"),
        ],
    )
    .await;
    assert_eq!(
        compared["comparison"],
        json!({
            "from": "2026-03-09T00:00:00Z", "to": "2026-03-10T00:00:00Z", "total_events": 2, "unique_users": 1,
            "visitors": 1, "visits": 1, "pageviews": 2, "views_per_visit": 2.0, "bounce_rate": 0.0, "visit_duration": 60,
        })
    );
    let last_year = json(
        &app,
        "/stats",
        &[
            ("site_id", "shop"),
            ("from", "2026-03-10T00:00:00Z"),
            ("to", "2026-03-11T00:00:00Z"),
            ("compare", "year_over_year"),
        ],
    )
    .await;
    assert_eq!(last_year["comparison"]["from"], "2025-03-10T00:00:00Z");
    assert_eq!(last_year["comparison"]["visits"], 0);

    // All time, unfiltered: carol's visit joins.
    let all_time = json(&app, "/stats", &[("site_id", "shop")]).await;
    assert_eq!(figures(&all_time), (vec![8, 3, 3, 4, 6], vec![1.5, 25.0], 240));
}

/// Pipeline: as above.
#[tokio::test]
async fn filters_narrow_every_figure_on_the_right_collection() {
    let app = spawn_app().await;
    seed(&app).await;

    // Visit attribute: alice's visits and their five events.
    assert_eq!(figures(&day_stats(&app, "source==Google").await), (vec![5, 1, 1, 2, 3], vec![1.5, 0.0], 450));
    // A missing source is `Direct / None`, and `!=` keeps it.
    let direct = (vec![1, 1, 1, 1, 1], vec![1.0, 100.0], 0);
    assert_eq!(figures(&day_stats(&app, "source==Direct / None").await), direct);
    assert_eq!(figures(&day_stats(&app, "source!=Google").await), direct);
    // Event-level: the event, and the visit holding it.
    assert_eq!(figures(&day_stats(&app, "page==/blog/a").await), direct);
    // Wildcard and contains: bob's and alice's blog pages, in two visits.
    let blog = (vec![2, 2, 2, 2, 2], vec![1.0, 50.0], 150);
    assert_eq!(figures(&day_stats(&app, "page=~/blog/*").await), blog);
    assert_eq!(figures(&day_stats(&app, "page=~blog").await), blog);
    // A metacharacter is itself: no path holds a '.'.
    assert_eq!(figures(&day_stats(&app, "page=~.").await), (vec![0, 0, 0, 0, 0], vec![0.0, 0.0], 0));
    // Entry page: V3, and its two events.
    assert_eq!(figures(&day_stats(&app, "entry_page==/blog/b").await), (vec![2, 1, 1, 1, 1], vec![1.0, 0.0], 300));
    // Goal: the signup event, in V3.
    assert_eq!(figures(&day_stats(&app, "goal==signup").await), (vec![1, 1, 1, 1, 0], vec![1.0, 0.0], 300));
    // A property: the click, in V1.
    assert_eq!(figures(&day_stats(&app, "prop:plan==pro").await), (vec![1, 1, 1, 1, 0], vec![2.0, 0.0], 600));
    // Two filters: German events not on /pricing (e1, e5, e6), in V1 and V3.
    assert_eq!(
        figures(&day_stats(&app, "country==DE;page!~pricing").await),
        (vec![3, 1, 1, 2, 2], vec![1.5, 0.0], 450)
    );
    // Any of several values.
    assert_eq!(figures(&day_stats(&app, "country==FR|US").await), direct);
    // The filters narrow the top paths too.
    assert_eq!(
        day_stats(&app, "page=~/blog/*").await["top_paths"],
        json!([
            { "path": "/blog/a", "count": 1 }, { "path": "/blog/b", "count": 1 },
        ])
    );
}

/// A regression: an event-level filter keeps the visits holding a selected
/// event, and the selected events are the range's: a visit starting in the
/// range whose matching event comes after `to` is not selected.
#[tokio::test]
async fn an_event_level_filter_selects_visits_by_their_events_in_the_range() {
    let app = spawn_app().await;
    let v = [("page_view", "/", "2026-03-10T23:50:00Z", None), ("page_view", "/after", "2026-03-11T00:10:00Z", None)];
    visit(&app, "dave", doc! { "channel": "Direct" }, &v).await;
    assert_eq!(figures(&day_stats(&app, "page==/after").await), (vec![0, 0, 0, 0, 0], vec![0.0, 0.0], 0));
    assert_eq!(figures(&day_stats(&app, "page==/").await), (vec![1, 1, 1, 1, 1], vec![2.0, 0.0], 1200));
    let all_time = json(&app, "/stats", &[("site_id", "shop"), ("filters", "page==/after")]).await;
    assert_eq!(figures(&all_time), (vec![1, 1, 1, 1, 1], vec![2.0, 0.0], 1200), "the whole visit's figures");
}

async fn breakdown(app: &TestApp, dimension: &str, more: &[(&str, &str)]) -> Value {
    let mut query = vec![
        ("site_id", "shop"),
        ("from", "2026-03-10T00:00:00Z"),
        ("to", "2026-03-11T00:00:00Z"),
        ("dimension", dimension),
    ];
    query.extend_from_slice(more);
    json(app, "/stats/breakdown", &query).await
}

/// Pipeline: as above.
#[tokio::test]
async fn breakdowns_group_visits_events_and_goals() {
    let app = spawn_app().await;
    seed(&app).await;

    let visit_row = |value: &str, visitors, visits, pageviews, events, bounce_rate: f64, visit_duration| {
        json!({ "value": value, "visitors": visitors, "visits": visits, "pageviews": pageviews, "events": events,
                "bounce_rate": bounce_rate, "visit_duration": visit_duration })
    };
    let source = breakdown(&app, "source", &[]).await;
    assert_eq!(
        source,
        json!({ "dimension": "source", "page": 1, "rows": [
        visit_row("Direct / None", 1, 1, 1, 1, 100.0, 0), visit_row("Google", 1, 2, 3, 5, 0.0, 450),
    ] })
    );
    assert_eq!(
        breakdown(&app, "channel", &[]).await["rows"],
        json!([visit_row("Direct", 1, 1, 1, 1, 100.0, 0), visit_row("Organic Search", 1, 2, 3, 5, 0.0, 450),])
    );
    assert_eq!(
        breakdown(&app, "entry_page", &[]).await["rows"],
        json!([
            visit_row("/", 1, 1, 2, 3, 0.0, 600),
            visit_row("/blog/a", 1, 1, 1, 1, 100.0, 0),
            visit_row("/blog/b", 1, 1, 1, 2, 0.0, 300),
        ])
    );
    assert_eq!(breakdown(&app, "region", &[]).await["rows"], json!([visit_row("(none)", 2, 3, 4, 6, 33.3, 300)]));

    let event_row = |value: &str, visitors, pageviews, events| json!({ "value": value, "visitors": visitors, "pageviews": pageviews, "events": events });
    assert_eq!(
        breakdown(&app, "page", &[]).await["rows"],
        json!([
            event_row("/", 1, 1, 1),
            event_row("/blog/a", 1, 1, 1),
            event_row("/blog/b", 1, 1, 1),
            event_row("/pricing", 1, 1, 2),
            event_row("/signup", 1, 0, 1),
        ])
    );
    assert_eq!(
        breakdown(&app, "prop:plan", &[]).await["rows"],
        json!([event_row("(none)", 2, 4, 4), event_row("free", 1, 0, 1), event_row("pro", 1, 0, 1),])
    );
    assert_eq!(
        breakdown(&app, "event_type", &[]).await["rows"],
        json!([event_row("page_view", 2, 4, 4), event_row("click", 1, 0, 1), event_row("signup", 1, 0, 1),])
    );
    assert_eq!(breakdown(&app, "hostname", &[]).await["rows"], json!([event_row("shop.example", 2, 4, 6)]));

    // Goals: conversion rate = the goal's visitors / the day's 2 visitors.
    assert_eq!(
        breakdown(&app, "goal", &[]).await["rows"],
        json!([
            { "value": "Visit /blog/*", "visitors": 2, "conversions": 2, "conversion_rate": 100.0 },
            { "value": "signup", "visitors": 1, "conversions": 1, "conversion_rate": 50.0 },
            { "value": "Visit /nowhere", "visitors": 0, "conversions": 0, "conversion_rate": 0.0 },
        ])
    );

    // Filters narrow the rows: alice's Google visits' pages.
    assert_eq!(
        breakdown(&app, "page", &[("filters", "source==Google")]).await["rows"],
        json!([
            event_row("/", 1, 1, 1),
            event_row("/blog/b", 1, 1, 1),
            event_row("/pricing", 1, 1, 2),
            event_row("/signup", 1, 0, 1),
        ])
    );

    // Pages: two rows at a time, the server cutting them.
    let first = breakdown(&app, "page", &[("limit", "2")]).await;
    assert_eq!(first["rows"], json!([event_row("/", 1, 1, 1), event_row("/blog/a", 1, 1, 1)]));
    assert_eq!(first["next_page"], 2);
    let last = breakdown(&app, "page", &[("limit", "2"), ("page", "3")]).await;
    assert_eq!(last["rows"], json!([event_row("/signup", 1, 0, 1)]));
    assert_eq!(last["page"], 3);
    assert!(last.get("next_page").is_none());
}

/// Pipeline: as above.
#[tokio::test]
async fn a_breakdown_downloads_as_csv() {
    let app = spawn_app().await;
    seed(&app).await;

    let query = [("site_id", "shop"), ("from", "2026-03-10T00:00:00Z"), ("to", "2026-03-11T00:00:00Z")];
    let response =
        get(&app, "/stats/breakdown", &[&query[..], &[("dimension", "source"), ("format", "csv")]].concat()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(response.headers()["content-disposition"], "attachment; filename=\"shop-source.csv\"");
    assert_eq!(
        response.text().await.unwrap(),
        "source,visitors,visits,pageviews,events,bounce_rate,visit_duration\n\
         Direct / None,1,1,1,1,100,0\n\
         Google,1,2,3,5,0,450\n"
    );
    let filtered = [&query[..], &[("dimension", "goal"), ("format", "csv"), ("filters", "country==DE")]].concat();
    let goals = get(&app, "/stats/breakdown", &filtered).await.text().await.unwrap();
    assert_eq!(
        goals,
        "goal,visitors,conversions,conversion_rate\nVisit /blog/*,1,1,100\nsignup,1,1,100\nVisit /nowhere,0,0,0\n"
    );
}

/// The values of `/stats/timeseries` as `(count, value)` per bucket.
async fn series(app: &TestApp, query: &str) -> Vec<(u64, Value)> {
    let response = app.http.get(app.url(&format!("/stats/timeseries?site_id=shop&{query}"))).send().await.unwrap();
    assert_eq!(response.status(), 200, "{query}");
    let body: Value = response.json().await.unwrap();
    body["buckets"].as_array().unwrap().iter().map(|b| (b["count"].as_u64().unwrap(), b["value"].clone())).collect()
}

/// Pipeline: as above.
#[tokio::test]
async fn time_series_carry_each_metric() {
    let app = spawn_app().await;
    seed(&app).await;

    let hours = "interval=hour&from=2026-03-10T10:00:00Z&to=2026-03-10T13:00:00Z";
    let with = |metric: &str| format!("{hours}&metric={metric}");
    // Events per hour: 4 at 10h, none at 11h, 2 at 12h; value = the metric.
    assert_eq!(series(&app, hours).await, [(4, json!(4)), (0, json!(0)), (2, json!(2))]);
    assert_eq!(series(&app, &with("visits")).await, [(4, json!(2)), (0, json!(0)), (2, json!(1))]);
    assert_eq!(series(&app, &with("visitors")).await, [(4, json!(2)), (0, json!(0)), (2, json!(1))]);
    assert_eq!(series(&app, &with("pageviews")).await, [(4, json!(3)), (0, json!(0)), (2, json!(1))]);
    assert_eq!(series(&app, &with("bounce_rate")).await, [(4, json!(50)), (0, json!(0)), (2, json!(0))]);
    assert_eq!(series(&app, &with("visit_duration")).await, [(4, json!(300)), (0, json!(0)), (2, json!(300))]);
    let google = format!("{}&filters=source%3D%3DGoogle", with("visits"));
    assert_eq!(series(&app, &google).await, [(3, json!(1)), (0, json!(0)), (2, json!(1))]);

    // By minute: the click at 10:10 is an event, not a pageview.
    let minutes =
        series(&app, "interval=minute&metric=pageviews&from=2026-03-10T10:00:00Z&to=2026-03-10T10:11:00Z").await;
    assert_eq!(minutes.len(), 11);
    assert_eq!(minutes[0], (1, json!(1)));
    assert_eq!(minutes[5], (1, json!(1)));
    assert_eq!(minutes[10], (1, json!(0)));
    assert_eq!(minutes.iter().map(|b| b.0).sum::<u64>(), 3);
}

/// Pipeline: fed through the worker with current timestamps.
#[tokio::test]
async fn realtime_shows_who_is_on_which_page_now() {
    let app = spawn_app().await;
    let now = DateTime::now().timestamp_millis();
    let event = |user: &str, path: &str, seconds_ago: i64| {
        let time = DateTime::from_millis(now - seconds_ago * 1000);
        doc! { "site_id": "live", "event_type": "page_view", "path": path, "user_id": user, "timestamp": time }
    };
    let events = [
        event("dan", "/live", 60),
        event("dan", "/live2", 30),
        event("eve", "/live2", 120),
        event("gus", "/a", 240),
        event("old", "/old", 600),
    ];
    app.store.events().insert_many(events).await.unwrap();

    let live = json(&app, "/stats/realtime", &[("site_id", "live")]).await;
    assert_eq!(
        live,
        json!({ "visitors": 3, "pages": [{ "page": "/live2", "visitors": 2 }, { "page": "/a", "visitors": 1 }] })
    );
    let filtered = json(&app, "/stats/realtime", &[("site_id", "live"), ("filters", "page==/a")]).await;
    assert_eq!(filtered, json!({ "visitors": 1, "pages": [{ "page": "/a", "visitors": 1 }] }));
    assert_eq!(json(&app, "/stats/realtime", &[("site_id", "none")]).await, json!({ "visitors": 0, "pages": [] }));
}

#[tokio::test]
async fn bad_parameters_are_refused_naming_the_fix() {
    let app = spawn_app().await;
    let refused = |query: &'static str| {
        let app = &app;
        async move { app.http.get(app.url(query)).send().await.unwrap() }
    };
    let cases = [
        ("/stats?site_id=shop&filters=planet%3D%3DMars", "unknown dimension \"planet\""),
        ("/stats?site_id=shop&filters=source%3DGoogle", "has no operator"),
        ("/stats?site_id=shop&filters=source%3D%3D", "empty dimension or value"),
        ("/stats?site_id=shop&filters=prop%3Aa.b%3D%3Dc", "prop key"),
        ("/stats?site_id=shop&compare=previous_period", "compare needs both from and to"),
        (
            "/stats?site_id=shop&compare=last_week&from=2026-03-10T00:00:00Z&to=2026-03-11T00:00:00Z",
            "compare must be previous_period or year_over_year",
        ),
        ("/stats/breakdown?site_id=shop", "dimension is required"),
        ("/stats/breakdown?site_id=shop&dimension=planet", "dimension: unknown dimension"),
        ("/stats/breakdown?site_id=shop&dimension=page&limit=0", "limit must be a whole number from 1 to 1000"),
        ("/stats/breakdown?site_id=shop&dimension=page&page=0", "page must be a whole number from 1"),
        ("/stats/breakdown?site_id=shop&dimension=page&format=xml", "format must be json or csv"),
        ("/stats/timeseries?site_id=shop&metric=sessions", "metric must be visitors"),
        ("/stats/timeseries?site_id=shop&interval=week", "interval must be minute, hour or day"),
        (
            "/stats/timeseries?site_id=shop&interval=minute&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            "range too long",
        ),
        ("/stats/realtime", "site_id is required"),
    ];
    for (query, needle) in cases {
        assert_json_error(refused(query).await, 400, needle).await;
    }
    let many = vec!["os%3D%3DLinux"; 21].join("%3B");
    let response = app.http.get(app.url(&format!("/stats?site_id=shop&filters={many}"))).send().await.unwrap();
    assert_json_error(response, 400, "21 filters, at most 20").await;
}
