//! Tracker: `GET /script.js`, the script a site includes to send page views
//! (on load and on single-page navigation) and custom events to `POST /event`.
//!
//! Its source, `tracker.js` beside this file, is compiled in and served without its
//! comment lines and indentation (see [`script`]): small, and readable where it
//! is kept. Served cacheable with an `ETag`, and loadable from any site.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The tracker's commented source.
const SOURCE: &str = include_str!("tracker.js");

/// How long browsers and caches may reuse the script before asking again (an
/// hour, so a new version reaches every site within one); the ETag makes asking
/// again cheap.
const CACHE_CONTROL: &str = "public, max-age=3600";

/// The served script: [`SOURCE`] without comment lines, indentation and blank
/// lines. Only whole lines are dropped, so the code itself is untouched (the
/// source keeps no comment after code, and no string spanning lines).
pub fn script() -> &'static str {
    static SCRIPT: LazyLock<String> = LazyLock::new(|| {
        SOURCE
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("//"))
            .map(|line| format!("{line}\n"))
            .collect()
    });
    &SCRIPT
}

/// The script's strong ETag: a hash of what is served.
fn etag() -> &'static HeaderValue {
    static ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
        let digest = Sha256::digest(script().as_bytes());
        let hex: String = digest[..8].iter().map(|byte| format!("{byte:02x}")).collect();
        HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
    });
    &ETAG
}

/// The tracker's route, documented, to merge into the API's route table.
pub fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new().routes(routes!(serve_script))
}

/// `GET /script.js` (and `HEAD`): the script, or a 304 when the client's copy
/// (`If-None-Match`) is current.
///
/// The tracker a site includes with `<script defer src=".../script.js" data-site="site-001">`:
/// page views on load and on single-page navigation, custom events through
/// `window.analytics.track`. Loadable from any origin; cacheable for an hour.
#[utoipa::path(
    get,
    path = "/script.js",
    tag = "ingestion",
    responses(
        (status = 200, description = "The script, with an `ETag` and `Cache-Control: public, max-age=3600`",
            body = String, content_type = "application/javascript; charset=utf-8"),
        (status = 304, description = "The client's copy (`If-None-Match`) is current"),
        (status = 503, response = crate::http::openapi::Unavailable),
    )
)]
async fn serve_script(request_headers: HeaderMap) -> Response {
    let current = request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| etag_list_matches(value, etag()));
    let mut response = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/javascript; charset=utf-8")], script()).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag().clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    // A <script> tag needs neither, but they let a page load the script with
    // fetch, or under Cross-Origin-Embedder-Policy, from another origin.
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// True when an `If-None-Match` value (`*`, or a list of entity tags, weak or
/// strong) names `etag`; the comparison is the weak one RFC 9110 asks for here.
fn etag_list_matches(if_none_match: &str, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or_default();
    if_none_match.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_script_is_small_and_has_no_comment_lines() {
        let served = script();
        assert!(served.len() < 1024, "script.js is {} bytes: keep it under 1024", served.len());
        assert!(served.lines().all(|line| !line.trim().is_empty() && !line.trim_start().starts_with("//")));
        assert!(served.starts_with("(function"), "{served}");
        for needle in ["data-", "sendBeacon", "keepalive", "pushState", "replaceState", "popstate", "analytics"] {
            assert!(served.contains(needle), "the script uses {needle}");
        }
    }

    #[test]
    fn if_none_match_lists_are_compared_weakly() {
        let tag = HeaderValue::from_static("\"abc\"");
        assert!(etag_list_matches("\"abc\"", &tag));
        assert!(etag_list_matches("W/\"abc\"", &tag));
        assert!(etag_list_matches("\"x\", \"abc\"", &tag));
        assert!(etag_list_matches("*", &tag));
        assert!(!etag_list_matches("\"abcd\"", &tag));
        assert!(!etag_list_matches("abc", &tag));
        assert!(!etag_list_matches("", &tag));
    }
}
