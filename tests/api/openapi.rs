//! `GET /openapi.json`: the router and the document come from one route table
//! (`http::routes`), so the document lists exactly what is served; checked here
//! from outside: every documented operation answers (no 404/405), other methods
//! and paths do not, every reference resolves, and real answers have the
//! documented shapes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::helpers::{TestApp, event_json, spawn_app};

/// The routes and methods the API serves, as the README documents them.
const ROUTES: &[(&str, &[&str])] = &[
    ("/event", &["options", "post"]),
    ("/events", &["options", "post"]),
    ("/exclude-me", &["get", "post"]),
    ("/health", &["get"]),
    ("/metrics", &["get"]),
    ("/openapi.json", &["get"]),
    ("/script.js", &["get"]),
    ("/script.outbound.js", &["get"]),
    ("/script.file-downloads.js", &["get"]),
    ("/script.404.js", &["get"]),
    ("/sites", &["get"]),
    ("/sites/{site_id}/goals", &["get", "put"]),
    ("/stats", &["get"]),
    ("/stats/breakdown", &["get"]),
    ("/stats/export.csv", &["get"]),
    ("/stats/realtime", &["get"]),
    ("/stats/timeseries", &["get"]),
];

async fn document(app: &TestApp) -> Value {
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// Every `$ref` in `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                found.push(target.clone());
            }
            map.values().for_each(|v| references(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

/// Asserts `answer` has every property the schema requires and no other than it lists.
fn assert_shape(doc: &Value, schema: &str, answer: &Value) {
    let schema = &doc["components"]["schemas"][schema];
    let properties: BTreeSet<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    let keys: BTreeSet<&str> = answer.as_object().unwrap().keys().map(String::as_str).collect();
    for required in schema["required"].as_array().unwrap() {
        assert!(keys.contains(required.as_str().unwrap()), "{answer} lacks {required}");
    }
    assert!(keys.is_subset(&properties), "{answer} has fields the schema {schema} does not list");
}

#[tokio::test]
async fn the_document_lists_exactly_the_served_routes() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Analytics Desk");

    let documented: BTreeMap<String, Vec<String>> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let mut methods: Vec<String> = item.as_object().unwrap().keys().cloned().collect();
            methods.sort();
            (path.clone(), methods)
        })
        .collect();
    let expected: BTreeMap<String, Vec<String>> = ROUTES
        .iter()
        .map(|(path, methods)| (path.to_string(), methods.iter().map(|m| m.to_string()).collect()))
        .collect();
    assert_eq!(documented, expected);
    assert_eq!(
        analytics_desk::http::route_paths().iter().collect::<BTreeSet<_>>(),
        expected.keys().collect::<BTreeSet<_>>(),
        "the metrics' route labels are the documented paths"
    );

    // Every documented operation is served: whatever it thinks of an empty
    // request, it is neither "no such endpoint" nor "method not allowed".
    for (path, methods) in ROUTES {
        for method in *methods {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = app.http.request(method.clone(), app.url(path)).send().await.unwrap();
            assert!(![404, 405].contains(&response.status().as_u16()), "{method} {path}: {}", response.status());
        }
        // ...and no undocumented method is.
        let unserved = if methods.contains(&"put") { reqwest::Method::PATCH } else { reqwest::Method::PUT };
        let response = app.http.request(unserved.clone(), app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 405, "{unserved} {path}");
    }
    assert_eq!(app.http.get(app.url("/stats/other")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn every_reference_resolves_and_the_shapes_and_errors_are_documented() {
    let app = spawn_app().await;
    let doc = document(&app).await;

    let mut found = Vec::new();
    references(&doc, &mut found);
    assert!(!found.is_empty());
    for target in &found {
        let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("an external reference: {target}"));
        assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
    }
    let schemas: BTreeSet<&str> =
        doc["components"]["schemas"].as_object().unwrap().keys().map(String::as_str).collect();
    for name in [
        "Event",
        "ErrorBody",
        "Queued",
        "PathCount",
        "TypeCount",
        "Timeseries",
        "Bucket",
        "Interval",
        "SiteList",
        "SiteSummary",
        "SiteGoals",
        "Goal",
        "GoalsBody",
        "SiteReport",
        "Comparison",
        "Breakdown",
        "BreakdownRow",
        "Realtime",
        "PageVisitors",
        "Metric",
    ] {
        assert!(schemas.contains(name), "schema {name} missing from {schemas:?}");
    }
    assert_eq!(doc["components"]["schemas"]["Event"]["properties"]["path"]["maxLength"], 2048);
    assert_eq!(
        doc["components"]["securitySchemes"]["api_token"],
        json!({
            "type": "http", "scheme": "bearer",
            "description": "The server's `API_TOKEN`, when it has one: `Authorization: Bearer <API_TOKEN>`."
        })
    );

    // The statuses each route can answer, and who needs the token.
    let statuses = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"].as_object().unwrap().keys().cloned().collect()
    };
    let all_errors = ["200", "202", "400", "403", "408", "413", "415", "503"];
    assert_eq!(statuses("/event", "post"), all_errors);
    assert_eq!(statuses("/events", "post"), all_errors);
    assert_eq!(statuses("/stats", "get"), ["200", "400", "401", "403", "503", "504"]);
    assert_eq!(statuses("/stats/timeseries", "get"), ["200", "400", "401", "403", "503", "504"]);
    assert_eq!(statuses("/stats/export.csv", "get"), ["200", "400", "401", "403", "503", "504"]);
    assert_eq!(statuses("/sites", "get"), ["200", "400", "401", "403", "503", "504"]);
    assert_eq!(statuses("/stats/breakdown", "get"), ["200", "400", "401", "403", "503", "504"]);
    assert_eq!(statuses("/stats/realtime", "get"), ["200", "400", "401", "403", "503", "504"]);
    assert_eq!(statuses("/script.js", "get"), ["200", "304", "503"]);
    assert_eq!(statuses("/sites/{site_id}/goals", "get"), ["200", "400", "401", "403", "503"]);
    assert_eq!(statuses("/sites/{site_id}/goals", "put"), ["200", "400", "401", "403", "413", "415", "503"]);
    assert_eq!(statuses("/metrics", "get"), ["200", "401", "403", "503"]);
    assert_eq!(statuses("/openapi.json", "get"), ["200", "403", "503"]);
    assert_eq!(statuses("/health", "get"), ["200", "503"]);
    assert!(doc["paths"]["/health"]["get"].get("security").is_none(), "load balancers need no token");
    let guarded = [
        "/stats",
        "/stats/timeseries",
        "/stats/export.csv",
        "/stats/breakdown",
        "/stats/realtime",
        "/sites",
        "/metrics",
    ];
    let guarded = guarded.map(|path| (path, "get")).into_iter().chain([("/sites/{site_id}/goals", "put")]);
    for (path, method) in guarded {
        assert_eq!(doc["paths"][path][method]["security"], json!([{}, { "api_token": [] }]), "{path}");
    }
    assert!(doc["paths"]["/event"]["post"].get("security").is_none(), "sending events needs no token");
    let parameters: Vec<&str> = doc["paths"]["/stats/timeseries"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(parameters, ["site_id", "from", "to", "event_type", "filters", "metric", "interval"]);
    let parameters = |path: &str| -> Vec<String> {
        let list = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        list.iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(parameters("/stats"), ["site_id", "from", "to", "event_type", "filters", "compare"]);
    assert_eq!(
        parameters("/stats/breakdown"),
        ["site_id", "from", "to", "event_type", "filters", "dimension", "limit", "page", "format"]
    );
    assert_eq!(parameters("/stats/realtime"), ["site_id", "filters"]);
    let parameters: Vec<&str> = doc["paths"]["/sites"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(parameters, ["limit", "offset"], "/sites is paginated");
    let site_stats = &doc["components"]["schemas"]["SiteReport"]["properties"];
    assert!(site_stats.get("events_by_type_other").is_some(), "the cut of events_by_type is documented");
    for figure in ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration", "comparison"]
    {
        assert!(site_stats.get(figure).is_some(), "/stats documents {figure}");
    }
    assert!(doc["components"]["schemas"]["SiteList"]["properties"].get("next_offset").is_some());

    // Real answers have the documented shapes.
    let queued: Value = app.post_event(event_json("shop", "/a", "u")).await.json().await.unwrap();
    assert_shape(&doc, "Queued", &queued);
    let batch: Value = app
        .post_events(json!([json!({ "site_id": "shop", "event_type": "e", "path": "/" })]).to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_shape(&doc, "Queued", &batch);
    app.drain_queue().await;
    let stats = app.stats("shop").await;
    assert_shape(&doc, "SiteReport", &stats);
    assert_shape(&doc, "PathCount", &stats["top_paths"][0]);
    assert_shape(&doc, "TypeCount", &stats["events_by_type"][0]);
    let series: Value = app.get_json("/stats/timeseries?site_id=shop").await;
    assert_shape(&doc, "Timeseries", &series);
    assert_shape(&doc, "Bucket", &series["buckets"][0]);
    let rows: Value = app.get_json("/stats/breakdown?site_id=shop&dimension=page").await;
    assert_shape(&doc, "Breakdown", &rows);
    assert_shape(&doc, "BreakdownRow", &rows["rows"][0]);
    let live: Value = app.get_json("/stats/realtime?site_id=shop").await;
    assert_shape(&doc, "Realtime", &live);
    let sites: Value = app.get_json("/sites").await;
    assert_shape(&doc, "SiteList", &sites);
    assert_shape(&doc, "SiteSummary", &sites["sites"][0]);
    let goals: Value = app
        .http
        .put(app.url("/sites/shop/goals"))
        .header("content-type", "application/json")
        .body(json!({ "goals": [{ "page": "/blog/*" }] }).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_shape(&doc, "SiteGoals", &goals);
    assert_shape(&doc, "Goal", &goals["goals"][0]);
    let health: Value = app.get_json("/health").await;
    assert_shape(&doc, "Health", &health);
    let error: Value = app.post_events("[{}]").await.json().await.unwrap();
    assert_shape(&doc, "ErrorBody", &error);
    assert_eq!(error["index"], 0);
}
