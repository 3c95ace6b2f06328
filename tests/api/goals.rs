//! A site's goals (`GET/PUT /sites/{site_id}/goals`): empty at first, replaced
//! whole and read back; a bad list refused with a 400 that names the goal,
//! saving nothing; the token and `Host` rules of the other non-tracker routes;
//! and each goal's MongoDB filter selecting in the database exactly the events
//! `Goal::matches` says convert it.

use analytics_desk::sites::{Goal, SITES_COLLECTION};
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_json_error, spawn_app, spawn_app_with};

const TOKEN: &str = "s3cret-token-0123456789";

fn goals_url(app: &TestApp, site: &str) -> String {
    app.url(&format!("/sites/{site}/goals"))
}

async fn get_goals(app: &TestApp, site: &str) -> Value {
    let response = app.http.get(goals_url(app, site)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn put_goals(app: &TestApp, site: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    let request = app.http.put(goals_url(app, site)).header("content-type", "application/json");
    request.body(body).send().await.unwrap()
}

/// Every document of the `sites` collection, by `_id`.
async fn stored_sites(app: &TestApp) -> Vec<Document> {
    let sites = app.store.database().collection::<Document>(SITES_COLLECTION);
    sites.find(doc! {}).sort(doc! { "_id": 1 }).await.unwrap().try_collect().await.unwrap()
}

#[tokio::test]
async fn goals_are_empty_at_first_then_replaced_whole_and_read_back() {
    let app = spawn_app().await;
    assert_eq!(get_goals(&app, "shop").await, json!({ "site_id": "shop", "goals": [] }));

    let body = json!({ "goals": [
        { "event_type": "signup" },
        { "page": "/blog/*" },
        { "page": "/thanks", "name": "Bought" },
    ] });
    let saved = put_goals(&app, "shop", body.to_string()).await;
    assert_eq!(saved.status(), 200);
    let expected = json!({ "site_id": "shop", "goals": [
        { "event_type": "signup", "name": "signup" },
        { "page": "/blog/*", "name": "Visit /blog/*" },
        { "page": "/thanks", "name": "Bought" },
    ] });
    assert_eq!(saved.json::<Value>().await.unwrap(), expected);
    assert_eq!(get_goals(&app, "shop").await, expected);
    assert_eq!(get_goals(&app, "other").await["goals"], json!([]), "another site has none");
    assert_eq!(stored_sites(&app).await.len(), 1, "one settings document");

    // Replaced, not merged; an empty list clears them.
    let replaced = put_goals(&app, "shop", json!({ "goals": [{ "event_type": "trial" }] }).to_string()).await;
    assert_eq!(replaced.status(), 200);
    assert_eq!(get_goals(&app, "shop").await["goals"], json!([{ "event_type": "trial", "name": "trial" }]));
    assert_eq!(put_goals(&app, "shop", r#"{"goals": []}"#).await.status(), 200);
    assert_eq!(get_goals(&app, "shop").await, json!({ "site_id": "shop", "goals": [] }));

    // A site id with characters a URL escapes is the same id both ways.
    let odd = "my site/ü";
    let escaped = "my%20site%2F%C3%BC";
    assert_eq!(put_goals(&app, escaped, r#"{"goals": [{"event_type": "x"}]}"#).await.status(), 200);
    assert_eq!(get_goals(&app, escaped).await["site_id"], odd);
    let stored: Vec<_> = stored_sites(&app).await.iter().map(|d| d.get_str("_id").unwrap().to_string()).collect();
    assert_eq!(stored, [odd, "shop"]);

    // The metrics label the route by its template, not by the site in the URL.
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"route="/sites/{site_id}/goals",method="PUT""#), "{metrics}");
    assert!(!metrics.contains("route=\"/sites/shop"), "{metrics}");
}

#[tokio::test]
async fn bad_goals_are_refused_with_a_400_naming_them_and_change_nothing() {
    let app = spawn_app().await;
    let kept = json!({ "goals": [{ "event_type": "signup" }] });
    assert_eq!(put_goals(&app, "shop", kept.to_string()).await.status(), 200);
    let before = stored_sites(&app).await;

    let too_many: Vec<Value> = (0..101).map(|i| json!({ "event_type": format!("e{i}") })).collect();
    let cases = [
        (json!({ "goals": [{ "event_type": "ok" }, {}] }).to_string(), "goals[1]: a goal needs event_type"),
        (json!({ "goals": [{ "event_type": "a", "page": "/a" }] }).to_string(), "not both"),
        (json!({ "goals": [{ "page": "blog/*" }] }).to_string(), "page must be a path starting with /"),
        (json!({ "goals": [{ "page": format!("/{}", "a".repeat(2048)) }] }).to_string(), "at most 2048"),
        (json!({ "goals": [{ "page": "/a\u{7}" }] }).to_string(), "page must not contain control characters"),
        (json!({ "goals": [{ "event_type": "a" }, { "event_type": "a" }] }).to_string(), "already another goal's"),
        (json!({ "goals": too_many }).to_string(), "too many goals: 101, at most 100"),
        (json!({ "goal": [] }).to_string(), "goals is missing"),
        ("{\"goals\": [".to_string(), "must be a JSON object"),
    ];
    for (body, needle) in cases {
        assert_json_error(put_goals(&app, "shop", body).await, 400, needle).await;
    }
    // A blank site id: the path segment is named.
    assert_json_error(put_goals(&app, "%20", kept.to_string()).await, 400, "site_id must not be blank").await;
    assert_json_error(app.http.get(goals_url(&app, "%20")).send().await.unwrap(), 400, "site_id").await;
    // Not JSON by its type, and past the body limit.
    let form = app.http.put(goals_url(&app, "shop")).header("content-type", "application/x-www-form-urlencoded");
    assert_json_error(form.body(kept.to_string()).send().await.unwrap(), 415, "application/json").await;
    let huge = format!("{{\"goals\": [{{\"page\": \"/{}\"}}]}}", "a".repeat(600 * 1024));
    assert_eq!(put_goals(&app, "shop", huge).await.status(), 413);

    assert_eq!(stored_sites(&app).await, before, "nothing changed");
    assert_eq!(get_goals(&app, "shop").await["goals"], json!([{ "event_type": "signup", "name": "signup" }]));
}

#[tokio::test]
async fn with_a_token_goals_need_it_both_to_read_and_to_write() {
    let app = spawn_app_with(|c| c.api_token = Some(TOKEN.into())).await;
    let body = json!({ "goals": [{ "event_type": "signup" }] }).to_string();
    for auth in [None, Some("Bearer wrong"), Some(TOKEN)] {
        let mut get = app.http.get(goals_url(&app, "shop"));
        let mut put = app.http.put(goals_url(&app, "shop")).header("content-type", "application/json");
        if let Some(auth) = auth {
            get = get.header("authorization", auth);
            put = put.header("authorization", auth);
        }
        assert_json_error(get.send().await.unwrap(), 401, "API_TOKEN").await;
        assert_json_error(put.body(body.clone()).send().await.unwrap(), 401, "API_TOKEN").await;
    }
    assert!(stored_sites(&app).await.is_empty(), "nothing saved without the token");

    let bearer = format!("Bearer {TOKEN}");
    let put = app.http.put(goals_url(&app, "shop")).header("content-type", "application/json");
    assert_eq!(put.header("authorization", &bearer).body(body).send().await.unwrap().status(), 200);
    let get = app.http.get(goals_url(&app, "shop")).header("authorization", &bearer).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.json::<Value>().await.unwrap()["goals"][0]["event_type"], "signup");
}

#[tokio::test]
async fn without_a_token_goals_refuse_a_foreign_host_name() {
    let app = spawn_app().await;
    let body = json!({ "goals": [{ "event_type": "signup" }] }).to_string();
    let get = app.http.get(goals_url(&app, "shop")).header("host", "evil.example");
    assert_json_error(get.send().await.unwrap(), 403, "PUBLIC_HOSTS").await;
    let put = app.http.put(goals_url(&app, "shop")).header("host", "evil.example");
    let put = put.header("content-type", "application/json").body(body.clone());
    assert_json_error(put.send().await.unwrap(), 403, "PUBLIC_HOSTS").await;
    assert!(stored_sites(&app).await.is_empty(), "nothing saved from a rebinding page");
    // The same request under a loopback name is served.
    let put = app.http.put(goals_url(&app, "shop")).header("host", "localhost");
    assert_eq!(put.header("content-type", "application/json").body(body).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn each_goals_filter_selects_in_the_database_the_events_it_matches() {
    let app = spawn_app().await;
    let paths = [
        "/",
        "/blog",
        "/blog/",
        "/blog/post",
        "/blog/a/b",
        "/en/blog/post",
        "/thanks",
        "/thanks/",
        "/file.pdf",
        "/fileXpdf",
        "/docs/guide.pdf",
        "/docs/a.pdfx",
        "/a(b)",
        "/a+b",
        "/a$b^",
        "/é/ü",
        "/a[1]",
    ];
    let mut events = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        for event_type in ["page_view", "signup"] {
            events.push(doc! { "_id": format!("{index}-{event_type}"), "site_id": "shop", "event_type": event_type, "path": *path });
        }
    }
    // Another site's events never count.
    events.push(doc! { "_id": "other", "site_id": "other", "event_type": "signup", "path": "/blog/post" });
    app.store.events().insert_many(&events).await.unwrap();

    let goals = [
        Goal::event("signup"),
        Goal::page("/blog/*"),
        Goal::page("/thanks"),
        Goal::page("/file.pdf"),
        Goal::page("/docs/*.pdf"),
        Goal::page("/a(b)"),
        Goal::page("/a+b"),
        Goal::page("/a$b^"),
        Goal::page("/é/*"),
        Goal::page("/a[1]"),
        Goal::page("*"),
    ];
    for goal in &goals {
        let mut filter = goal.filter();
        filter.insert("site_id", "shop");
        let mut found: Vec<String> = app
            .store
            .events()
            .find(filter)
            .await
            .unwrap()
            .try_collect::<Vec<Document>>()
            .await
            .unwrap()
            .iter()
            .map(|d| d.get_str("_id").unwrap().to_string())
            .collect();
        found.sort();
        let mut expected: Vec<String> = events
            .iter()
            .filter(|e| e.get_str("site_id").unwrap() == "shop")
            .filter(|e| goal.matches(e.get_str("event_type").unwrap(), e.get_str("path").unwrap()))
            .map(|e| e.get_str("_id").unwrap().to_string())
            .collect();
        expected.sort();
        assert!(!expected.is_empty(), "{goal:?} matches some event");
        assert_eq!(found, expected, "{goal:?}: the database and Goal::matches agree");
    }
}
