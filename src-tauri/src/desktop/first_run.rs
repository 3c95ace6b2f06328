//! The first-run flow's logic (the window only shows it): a site's name made
//! into a `site_id` slug, the site added to the database, its `<script>` tag
//! built from the API's real origin, the check that its first event arrived
//! (queued or processed), and a test event sent through the running API over
//! HTTP, so that the whole path (HTTP, ingestion, queue, worker) is proven.

use std::time::Duration;

use mongodb::bson::doc;
use serde::Serialize;
use tracing::info;

use crate::desktop::controller::Controller;
use crate::sites;
use crate::sites::registry::{self, RegisteredSite};
use crate::storage::{Store, StoreError};

/// Longest `site_id` made from a name: long enough for any name, short enough to read.
pub const MAX_SLUG_CHARS: usize = 64;
/// The path the test event is sent with, so it is told apart in the stats.
pub const TEST_EVENT_PATH: &str = "/analytics-desk-test";
/// The test event's type: what the tracker sends for a page.
pub const TEST_EVENT_TYPE: &str = "page_view";
/// Longest wait for the API's answer to the test event.
const TEST_EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the database when checking for the first event (asked once a second).
const FIRST_EVENT_QUERY_TIMEOUT: Duration = Duration::from_millis(800);

/// Why a step of the first run could not be done; the message is what the user reads.
#[derive(Debug, thiserror::Error)]
pub enum FirstRunError {
    /// No `site_id` can be made from the name.
    #[error("name has no letter or digit to make a site_id from: type a name such as \"My shop\"")]
    NameWithoutSlug,
    /// The `site_id` is not a slug (or breaks the events' rule).
    #[error("site_id {0}")]
    InvalidSiteId(String),
    /// The step needs the API running.
    #[error("the API is not running: press Start first, so that the tag and the test event use its real address")]
    ApiNotRunning,
    /// The API could not be reached.
    #[error("cannot reach the API at {url}: {source}")]
    Unreachable {
        /// Where it was sent.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with a refusal.
    #[error("the API refused the test event (HTTP {status}): {reason}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's `error`, or its body.
        reason: String,
    },
    /// The API accepted the request but dropped the event (a bot, an excluded
    /// address such as this machine's in `EXCLUDED_IPS`): nothing will arrive.
    #[error("the API ignored the test event ({reason}): nothing was stored; check EXCLUDED_IPS in Settings")]
    Ignored {
        /// The API's `reason`.
        reason: String,
    },
}

/// Whether a site's first event has arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FirstEvent {
    /// An event of the site was acknowledged (in the queue) or already processed.
    pub arrived: bool,
    /// An event of the site was processed into `events`.
    pub processed: bool,
}

/// Makes a `site_id` from a site's name: lowercase ASCII letters and digits,
/// common accented Latin letters without their accents, `.` kept (domain
/// names), every other run of characters one `-`; no `-` or `.` at either end.
pub fn site_id_from_name(name: &str) -> Result<String, FirstRunError> {
    let mut slug = String::new();
    let mut separator = false;
    for c in name.chars().flat_map(char::to_lowercase) {
        let plain = without_accent(c);
        if plain.is_empty() {
            separator = true;
            continue;
        }
        if separator && !slug.is_empty() && !slug.ends_with('.') {
            slug.push('-');
        }
        separator = false;
        slug.push_str(plain);
    }
    let slug: String = slug.chars().take(MAX_SLUG_CHARS).collect();
    let slug = slug.trim_matches(['-', '.']).to_string();
    if slug.is_empty() {
        return Err(FirstRunError::NameWithoutSlug);
    }
    Ok(slug)
}

/// `c` (lowercase) as slug characters: itself if allowed, an accented Latin
/// letter without its accent, or nothing (a separator).
fn without_accent(c: char) -> &'static str {
    const PLAIN: &str = "abcdefghijklmnopqrstuvwxyz0123456789.";
    if let Some(at) = PLAIN.find(c) {
        return &PLAIN[at..at + 1];
    }
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => "a",
        'ç' => "c",
        'è' | 'é' | 'ê' | 'ë' => "e",
        'ì' | 'í' | 'î' | 'ï' => "i",
        'ñ' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => "o",
        'ù' | 'ú' | 'û' | 'ü' => "u",
        'ý' | 'ÿ' => "y",
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        _ => "",
    }
}

/// Checks a `site_id` typed by the user: a slug (lowercase letters, digits,
/// `-`, `.`, starting and ending with a letter or digit) that the events'
/// own rule ([`sites::check_site_id`]) accepts.
pub fn check_slug(site_id: &str) -> Result<(), FirstRunError> {
    sites::check_site_id(site_id)
        .map_err(|e| FirstRunError::InvalidSiteId(e.to_string().trim_start_matches("site_id ").to_string()))?;
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if let Some(bad) = site_id.chars().find(|c| !allowed(*c)) {
        return Err(FirstRunError::InvalidSiteId(format!(
            "may hold only lowercase letters, digits, '-' and '.' (such as my-shop): {bad:?} is not allowed"
        )));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(site_id.chars().next()) || !edge(site_id.chars().last()) {
        return Err(FirstRunError::InvalidSiteId("must start and end with a letter or a digit".into()));
    }
    Ok(())
}

/// The `<script>` tag a site's pages include: the tracker from the API's
/// origin (`api_url`, such as `http://localhost:1000`), with the site's id.
/// `include_localhost` adds `data-include-localhost`, without which the
/// tracker sends nothing from pages on localhost (a developer's own pages).
pub fn script_tag(api_url: &str, site_id: &str, include_localhost: bool) -> String {
    let origin = api_url.trim_end_matches('/');
    let localhost = if include_localhost { " data-include-localhost" } else { "" };
    format!(
        "<script defer data-site=\"{}\"{localhost} src=\"{}/script.js\"></script>",
        attribute(site_id),
        attribute(origin)
    )
}

/// `value` escaped for a double-quoted HTML attribute.
fn attribute(value: &str) -> String {
    value.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Sends one `page_view` of `site_id` at [`TEST_EVENT_PATH`] to the API at
/// `api_url` over HTTP, as a site's server would; Ok once the API queued it.
pub async fn send_test_event(api_url: &str, site_id: &str) -> Result<(), FirstRunError> {
    let url = format!("{}/event", api_url.trim_end_matches('/'));
    let unreachable = |source| FirstRunError::Unreachable { url: url.clone(), source };
    let client = reqwest::Client::builder()
        .timeout(TEST_EVENT_TIMEOUT)
        .user_agent(concat!("AnalyticsDesk/", env!("CARGO_PKG_VERSION"), " (test event)"))
        .build()
        .map_err(unreachable)?;
    let body = serde_json::json!({ "site_id": site_id, "event_type": TEST_EVENT_TYPE, "path": TEST_EVENT_PATH });
    let response = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let text = response.text().await.map_err(unreachable)?;
    if !status.is_success() {
        let reason = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|answer| answer.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(text);
        return Err(FirstRunError::Refused { status: status.as_u16(), reason });
    }
    let answer = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
    if answer.get("status").and_then(|s| s.as_str()) == Some("ignored") {
        let reason = answer.get("reason").and_then(|r| r.as_str()).unwrap_or("no reason given").to_string();
        return Err(FirstRunError::Ignored { reason });
    }
    Ok(())
}

/// Whether an event of `site_id` is in `events` or in the queue.
pub async fn first_event(store: &Store, site_id: &str) -> Result<FirstEvent, StoreError> {
    let filter = doc! { "site_id": site_id };
    let processed = store.events().find_one(filter.clone()).projection(doc! { "_id": 1 });
    let queued = store.queue().find_one(filter).projection(doc! { "_id": 1 });
    let bounded = |answer: Result<Result<Option<_>, mongodb::error::Error>, _>| match answer {
        Ok(found) => Ok(found?.is_some()),
        Err(_) => Err(StoreError::Timeout(FIRST_EVENT_QUERY_TIMEOUT)),
    };
    let (processed, queued) = tokio::join!(
        tokio::time::timeout(FIRST_EVENT_QUERY_TIMEOUT, processed),
        tokio::time::timeout(FIRST_EVENT_QUERY_TIMEOUT, queued)
    );
    let processed = bounded(processed)?;
    let arrived = processed || bounded(queued)?;
    Ok(FirstEvent { arrived, processed })
}

/// The first run's actions, on the controller that owns the engine and database.
impl Controller {
    /// The `site_id` a name gives (shown live as the user types).
    pub fn site_id_for_name(&self, name: &str) -> Result<String, String> {
        site_id_from_name(name).map_err(|e| e.to_string())
    }

    /// Adds a site named `name` with `site_id` (a slug; made from the name when
    /// none or blank); idempotent. A bad name or id stores nothing.
    pub async fn add_site(&self, name: &str, site_id: Option<&str>) -> Result<RegisteredSite, String> {
        registry::check_site_name(name).map_err(|e| e.to_string())?;
        let site_id = match site_id.map(str::trim).filter(|id| !id.is_empty()) {
            Some(id) => id.to_string(),
            None => site_id_from_name(name).map_err(|e| e.to_string())?,
        };
        check_slug(&site_id).map_err(|e| e.to_string())?;
        let engine = self.engine_with_database().await?;
        let store = engine.store().await.map_err(|e| e.to_string())?;
        let site = registry::register_site(store, &site_id, name).await.map_err(|e| e.to_string())?;
        info!(site_id = %site.site_id, "site added");
        Ok(site)
    }

    /// The sites added by name, oldest first.
    pub async fn added_sites(&self) -> Result<Vec<RegisteredSite>, String> {
        let engine = self.engine_with_database().await?;
        let store = engine.store().await.map_err(|e| e.to_string())?;
        registry::registered_sites(store).await.map_err(|e| e.to_string())
    }

    /// The `<script>` tag of `site_id`, from the running API's address.
    pub async fn site_script_tag(&self, site_id: &str, include_localhost: bool) -> Result<String, String> {
        check_slug(site_id).map_err(|e| e.to_string())?;
        let api_url = self.snapshot().await.api_url.ok_or_else(|| FirstRunError::ApiNotRunning.to_string())?;
        Ok(script_tag(&api_url, site_id, include_localhost))
    }

    /// Whether `site_id`'s first event arrived. Asked once a second, so it
    /// never launches anything: before the engine is connected, nothing arrived.
    pub async fn first_event(&self, site_id: &str) -> Result<FirstEvent, String> {
        let engine = self.engine();
        let Some(store) = engine.connected_store() else { return Ok(FirstEvent::default()) };
        first_event(store, site_id).await.map_err(|e| e.to_string())
    }

    /// Sends a test event of `site_id` through the running API over HTTP.
    pub async fn send_test_event(&self, site_id: &str) -> Result<(), String> {
        check_slug(site_id).map_err(|e| e.to_string())?;
        let api_url = self.snapshot().await.api_url.ok_or_else(|| FirstRunError::ApiNotRunning.to_string())?;
        send_test_event(&api_url, site_id).await.map_err(|e| e.to_string())?;
        info!(site_id, "test event sent");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_becomes_a_lowercase_slug() {
        let slug = |name: &str| site_id_from_name(name).unwrap();
        assert_eq!(slug("My Shop"), "my-shop");
        assert_eq!(slug("  Example.com  "), "example.com");
        assert_eq!(slug("Café Olé — 2024!"), "cafe-ole-2024");
        assert_eq!(slug("--Straße__Blog--"), "strasse-blog");
        assert_eq!(slug("a...b"), "a...b");
        assert_eq!(slug("shop. (beta)"), "shop.beta");
        assert_eq!(slug(&"abc ".repeat(20)).len(), MAX_SLUG_CHARS - 1, "cut at 64, then no '-' at the end");
        for nothing in ["", "   ", "!!!", "日本語", "-.-"] {
            assert!(matches!(site_id_from_name(nothing), Err(FirstRunError::NameWithoutSlug)), "{nothing:?}");
        }
    }

    #[test]
    fn every_made_slug_passes_the_slug_check() {
        for name in ["My Shop", "Café Olé — 2024!", "a.b-c", "x", "9 lives", "shop. (beta)"] {
            let slug = site_id_from_name(name).unwrap();
            check_slug(&slug).unwrap_or_else(|e| panic!("{name:?} → {slug:?}: {e}"));
        }
    }

    #[test]
    fn a_typed_site_id_must_be_a_slug_and_the_error_says_how() {
        assert!(check_slug("my-shop").is_ok() && check_slug("example.com").is_ok() && check_slug("7").is_ok());
        let error = |id: &str| check_slug(id).unwrap_err().to_string();
        assert!(error("").starts_with("site_id must not be blank"), "{}", error(""));
        assert!(error("My-Shop").contains("only lowercase letters, digits, '-' and '.'"), "{}", error("My-Shop"));
        assert!(error("my shop").contains("' ' is not allowed"), "{}", error("my shop"));
        assert!(error("-shop").contains("start and end with a letter or a digit"));
        assert!(error("shop.").contains("start and end with a letter or a digit"));
        assert!(error(&"a".repeat(129)).contains("at most 128"));
    }

    #[test]
    fn the_script_tag_names_the_site_and_the_api_origin() {
        assert_eq!(
            script_tag("http://localhost:1000", "my-shop", false),
            r#"<script defer data-site="my-shop" src="http://localhost:1000/script.js"></script>"#
        );
        assert_eq!(
            script_tag("http://127.0.0.1:8000/", "blog", true),
            r#"<script defer data-site="blog" data-include-localhost src="http://127.0.0.1:8000/script.js"></script>"#
        );
        assert_eq!(
            script_tag("http://h", r#"a"b<c>&"#, false),
            r#"<script defer data-site="a&quot;b&lt;c&gt;&amp;" src="http://h/script.js"></script>"#
        );
    }
}
