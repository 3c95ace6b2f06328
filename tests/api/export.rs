//! `GET /stats/export.csv`: a site's summary, top paths, event types and time
//! buckets as one well-formed CSV table, checked byte for byte.

use serde_json::json;

use crate::helpers::{TestApp, assert_json_error, spawn_app, spawn_app_with};

/// Four events of `shop` over three days (the middle one empty), with paths a
/// CSV must quote or defuse, and one event of another site.
async fn seed(app: &TestApp) {
    let events = json!([
        { "site_id": "shop", "event_type": "page_view", "path": "/pricing", "user_id": "u1", "timestamp": "2026-03-01T10:00:00Z" },
        { "site_id": "shop", "event_type": "page_view", "path": "/pricing", "user_id": "u2", "timestamp": "2026-03-01T11:30:00Z" },
        { "site_id": "shop", "event_type": "signup", "path": "/a,\"b\"", "user_id": "u1", "timestamp": "2026-03-03T09:00:00Z" },
        { "site_id": "shop", "event_type": "page_view", "path": "=cmd", "user_id": "u3", "timestamp": "2026-03-03T09:05:00Z" },
        { "site_id": "blog", "event_type": "page_view", "path": "/x", "user_id": "u9", "timestamp": "2026-03-02T09:00:00Z" },
    ]);
    assert_eq!(app.post_events(events.to_string()).await.status(), 200);
    app.drain_queue().await;
}

async fn export(app: &TestApp, query: &str) -> reqwest::Response {
    app.http.get(app.url(&format!("/stats/export.csv?{query}"))).send().await.unwrap()
}

#[tokio::test]
async fn the_export_is_one_csv_table_of_summary_paths_types_and_buckets() {
    let app = spawn_app().await;
    seed(&app).await;

    let response = export(&app, "site_id=shop&to=2026-03-04T00:00:00Z").await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(response.headers()["content-disposition"], "attachment; filename=\"shop-stats.csv\"");
    let csv = response.text().await.unwrap();
    assert_eq!(
        csv,
        "section,key,value\n\
         filter,site_id,shop\n\
         filter,from,2026-03-01T10:00:00Z\n\
         filter,to,2026-03-04T00:00:00Z\n\
         filter,interval,day\n\
         summary,total_events,4\n\
         summary,unique_users,3\n\
         path,/pricing,2\n\
         path,\"/a,\"\"b\"\"\",1\n\
         path,'=cmd,1\n\
         event_type,page_view,3\n\
         event_type,signup,1\n\
         bucket,2026-03-01T00:00:00Z,2\n\
         bucket,2026-03-02T00:00:00Z,0\n\
         bucket,2026-03-03T00:00:00Z,2\n"
    );

    // A CSV reader gets the quoted path back whole, and the buckets add up.
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert!(rows.iter().all(|row| row.len() == 3), "one rectangular table");
    assert!(rows.iter().any(|row| &row[1] == "/a,\"b\""));
    let sum =
        |section: &str| -> u64 { rows.iter().filter(|r| &r[0] == section).map(|r| r[2].parse::<u64>().unwrap()).sum() };
    assert_eq!(sum("bucket"), 4);
    assert_eq!(sum("event_type"), 4);
}

#[tokio::test]
async fn a_range_a_type_and_hourly_buckets_narrow_every_section() {
    let app = spawn_app().await;
    seed(&app).await;

    let response = export(
        &app,
        "site_id=shop&from=2026-03-01T10:30:00Z&to=2026-03-01T12:00:00Z&event_type=page_view&interval=hour",
    )
    .await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "section,key,value\n\
         filter,site_id,shop\n\
         filter,from,2026-03-01T10:30:00Z\n\
         filter,to,2026-03-01T12:00:00Z\n\
         filter,event_type,page_view\n\
         filter,interval,hour\n\
         summary,total_events,1\n\
         summary,unique_users,1\n\
         path,/pricing,1\n\
         event_type,page_view,1\n\
         bucket,2026-03-01T10:00:00Z,0\n\
         bucket,2026-03-01T11:00:00Z,1\n"
    );
}

#[tokio::test]
async fn an_unknown_site_exports_zeros_and_a_safe_file_name() {
    let app = spawn_app().await;
    let response = export(&app, "site_id=..%2Fnobody%22x&to=2026-03-04T00:00:00Z").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-disposition"], "attachment; filename=\"_nobody_x-stats.csv\"");
    let csv = response.text().await.unwrap();
    assert!(csv.contains("summary,total_events,0\nsummary,unique_users,0\n"), "{csv}");
    assert!(!csv.contains("\npath,"), "{csv}");
}

#[tokio::test]
async fn bad_queries_and_missing_tokens_are_refused() {
    let app = spawn_app().await;
    assert_json_error(export(&app, "").await, 400, "site_id is required").await;
    assert_json_error(export(&app, "site_id=s&interval=week").await, 400, "interval must be hour or day").await;
    assert_json_error(export(&app, "site_id=s&from=yesterday").await, 400, "from must be an RFC 3339").await;
    let long = "site_id=s&from=2000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&interval=hour";
    assert_json_error(export(&app, long).await, 400, "range too long").await;

    let guarded = spawn_app_with(|c| c.api_token = Some("export-token-0123456789".into())).await;
    assert_json_error(export(&guarded, "site_id=s").await, 401, "API token").await;
    let allowed = guarded
        .http
        .get(guarded.url("/stats/export.csv?site_id=s"))
        .bearer_auth("export-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
}
