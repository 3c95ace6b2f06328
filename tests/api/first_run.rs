//! The desktop's first-run flow through the controller (as its commands call
//! it), against a real database: a site added by name (idempotent, bad input
//! refused with nothing stored), its script tag from the API's real address,
//! and a test event sent over HTTP that the first-event check sees arrive.

use std::path::Path;
use std::time::Duration;

use analytics_desk::desktop::controller::{Controller, DesktopPaths, Part};
use analytics_desk::desktop::first_run::{self, FirstEvent, TEST_EVENT_PATH};
use analytics_desk::sites::SITES_COLLECTION;
use mongodb::bson::{Document, doc};

use crate::common::{self, eventually};
use crate::helpers::spawn_app_with;

/// A controller whose first run is seeded by a `.env` with a fresh database and a free port.
fn controller(dir: &Path) -> (Controller, u16) {
    let port = common::free_port();
    let dotenv = format!("PORT={port}\nMONGO_URL={}\nPOLL_MS=20\n", common::fresh_database_url());
    common::write_file(dir, ".env", &dotenv);
    let paths = DesktopPaths {
        settings_file: dir.join("config/settings.json"),
        database_dir: dir.join("data/db"),
        seed_dir: dir.to_path_buf(),
        sidecar_dir: None,
        export_dir: dir.join("Downloads"),
    };
    (Controller::new(paths), port)
}

async fn stored_sites(controller: &Controller) -> Vec<Document> {
    let engine = controller.engine_with_database().await.unwrap();
    let sites = engine.store().await.unwrap().database().collection::<Document>(SITES_COLLECTION);
    let mut cursor = sites.find(doc! {}).await.unwrap();
    let mut found = Vec::new();
    while cursor.advance().await.unwrap() {
        found.push(cursor.deserialize_current().unwrap());
    }
    found
}

#[tokio::test]
async fn a_site_is_added_by_name_once_and_keeps_its_first_name_and_its_goals() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _) = controller(dir.path());

    let shop = controller.add_site("  My Shop ", None).await.unwrap();
    assert_eq!((shop.site_id.as_str(), shop.name.as_str()), ("my-shop", "My Shop"));
    let again = controller.add_site("Another name", Some("my-shop")).await.unwrap();
    assert_eq!(again, shop, "adding it again changes nothing");

    controller.set_site_goals("blog", serde_json::json!([{ "event_type": "signup" }])).await.unwrap();
    let blog = controller.add_site("Blog", Some("blog")).await.unwrap();
    assert_eq!(blog.name, "Blog", "a site that only had goals gets its name");
    assert_eq!(controller.site_goals("blog").await.unwrap().goals.len(), 1, "and keeps its goals");

    let listed = controller.added_sites().await.unwrap();
    assert_eq!(listed.iter().map(|s| s.site_id.as_str()).collect::<Vec<_>>(), ["my-shop", "blog"], "oldest first");
    assert_eq!(stored_sites(&controller).await.len(), 2);
}

#[tokio::test]
async fn a_bad_name_or_site_id_is_refused_with_the_field_named_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, _) = controller(dir.path());

    let refusals = [
        (controller.add_site("   ", None).await, "name must not be blank"),
        (controller.add_site("!!!", None).await, "name has no letter or digit"),
        (controller.add_site(&"n".repeat(101), None).await, "name is too long"),
        (controller.add_site("Shop", Some("My Shop")).await, "site_id may hold only lowercase letters"),
        (controller.add_site("Shop", Some("-shop")).await, "site_id must start and end with a letter or a digit"),
    ];
    for (answer, expected) in refusals {
        let error = answer.unwrap_err();
        assert!(error.starts_with(expected), "{error:?} should start with {expected:?}");
    }
    assert_eq!(controller.site_id_for_name("Café Olé").unwrap(), "cafe-ole");
    assert!(controller.added_sites().await.unwrap().is_empty());
    assert!(stored_sites(&controller).await.is_empty(), "nothing stored");
}

#[tokio::test]
async fn the_test_event_goes_through_the_api_and_the_first_event_check_turns_true() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, port) = controller(dir.path());
    let site = controller.add_site("Shop", None).await.unwrap().site_id;

    let stopped = controller.send_test_event(&site).await.unwrap_err();
    assert!(stopped.contains("API is not running") && stopped.contains("Start"), "{stopped}");
    assert!(controller.site_script_tag(&site, false).await.unwrap_err().contains("API is not running"));

    // The API alone: the event waits in the queue, and has already arrived.
    controller.start(Part::Api).await.unwrap();
    let tag = controller.site_script_tag(&site, false).await.unwrap();
    assert_eq!(tag, format!(r#"<script defer data-site="shop" src="http://localhost:{port}/script.js"></script>"#));
    assert_eq!(controller.first_event(&site).await.unwrap(), FirstEvent { arrived: false, processed: false });

    controller.send_test_event(&site).await.unwrap();
    assert_eq!(controller.first_event(&site).await.unwrap(), FirstEvent { arrived: true, processed: false });
    assert_eq!(controller.first_event("other-site").await.unwrap(), FirstEvent::default(), "per site");

    controller.start(Part::Worker).await.unwrap();
    let processed = eventually(Duration::from_secs(10), || async {
        controller.first_event(&site).await.unwrap() == FirstEvent { arrived: true, processed: true }
    });
    assert!(processed.await, "the worker moved it into events");
    let engine = controller.engine();
    let stored = engine.store().await.unwrap().events().find_one(doc! { "site_id": &site }).await.unwrap().unwrap();
    assert_eq!(
        (stored.get_str("event_type").unwrap(), stored.get_str("path").unwrap()),
        ("page_view", TEST_EVENT_PATH)
    );
    controller.stop(Part::All).await;
}

#[tokio::test]
async fn a_refused_test_event_says_why_in_the_apis_words() {
    let app = spawn_app_with(|config| config.allowed_sites = Some(vec!["shop".into()])).await;
    let api_url = format!("http://{}", app.address);

    let refused = first_run::send_test_event(&api_url, "blog").await.unwrap_err().to_string();
    assert!(refused.starts_with("the API refused the test event (HTTP 403)") && refused.contains("blog"), "{refused}");
    first_run::send_test_event(&api_url, "shop").await.unwrap();
    assert!(first_run::first_event(&app.store, "shop").await.unwrap().arrived);
    assert!(!first_run::first_event(&app.store, "blog").await.unwrap().arrived, "nothing stored when refused");

    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let unreachable = first_run::send_test_event(&closed, "shop").await.unwrap_err().to_string();
    assert!(unreachable.starts_with(&format!("cannot reach the API at {closed}/event")), "{unreachable}");
}

#[tokio::test]
async fn a_test_event_the_api_drops_is_an_error_not_a_silent_success() {
    // This machine excluded (as a user might, to keep their own visits out):
    // the API answers 202 "ignored", and "waiting" would never turn green.
    let app = spawn_app_with(|config| config.excluded_ips = "127.0.0.0/8, ::1".parse().unwrap()).await;
    let api_url = format!("http://{}", app.address);

    let dropped = first_run::send_test_event(&api_url, "shop").await.unwrap_err().to_string();
    assert!(dropped.starts_with("the API ignored the test event (excluded)"), "{dropped}");
    assert!(dropped.contains("EXCLUDED_IPS"), "says where to look: {dropped}");
    assert!(!first_run::first_event(&app.store, "shop").await.unwrap().arrived, "nothing stored");
}
