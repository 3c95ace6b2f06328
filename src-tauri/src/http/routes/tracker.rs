//! Tracker: `GET /script.js`, the script a site includes to send page views
//! (on load and on single-page navigation) and custom events to `POST /event`,
//! and its opt-in extensions, each a small script of its own included after it:
//! `/script.outbound.js` (outbound link clicks), `/script.file-downloads.js`
//! (file downloads) and `/script.404.js` (on a site's "not found" page).
//!
//! Their sources (`tracker*.js` beside this file) are compiled in and served
//! without their comment lines and indentation (see [`Script::served`]): small,
//! and readable where they are kept. Served cacheable with an `ETag`, and
//! loadable from any site.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How long browsers and caches may reuse a script before asking again (an
/// hour, so a new version reaches every site within one); the ETag makes asking
/// again cheap.
const CACHE_CONTROL: &str = "public, max-age=3600";

/// The scripts served: the base tracker and its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// `/script.js`: page views and `window.analytics.track`.
    Base,
    /// `/script.outbound.js`: `Outbound Link: Click` with `{url}`.
    Outbound,
    /// `/script.file-downloads.js`: `File Download` with `{url}`.
    FileDownloads,
    /// `/script.404.js`: `404` with `{path}`.
    NotFound,
}

/// A script as served, and its ETag.
struct Compiled {
    body: String,
    etag: HeaderValue,
}

impl Script {
    /// Every script, in [`Script::index`] order.
    pub const ALL: [Script; 4] = [Script::Base, Script::Outbound, Script::FileDownloads, Script::NotFound];

    /// Where it is served.
    pub fn path(self) -> &'static str {
        match self {
            Script::Base => "/script.js",
            Script::Outbound => "/script.outbound.js",
            Script::FileDownloads => "/script.file-downloads.js",
            Script::NotFound => "/script.404.js",
        }
    }

    /// Its commented source.
    fn source(self) -> &'static str {
        match self {
            Script::Base => include_str!("tracker.js"),
            Script::Outbound => include_str!("tracker.outbound.js"),
            Script::FileDownloads => include_str!("tracker.file-downloads.js"),
            Script::NotFound => include_str!("tracker.404.js"),
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn compiled(self) -> &'static Compiled {
        static COMPILED: LazyLock<Vec<Compiled>> = LazyLock::new(|| Script::ALL.map(compile).into());
        &COMPILED[self.index()]
    }

    /// What is served: the source without comment lines, indentation and blank
    /// lines. Only whole lines are dropped, so the code itself is untouched (the
    /// sources keep no comment after code, and no string spanning lines).
    pub fn served(self) -> &'static str {
        &self.compiled().body
    }
}

/// A script's served body, and its strong ETag (a hash of that body).
fn compile(script: Script) -> Compiled {
    let body: String = script
        .source()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .map(|line| format!("{line}\n"))
        .collect();
    let digest = Sha256::digest(body.as_bytes());
    let hex: String = digest[..8].iter().map(|byte| format!("{byte:02x}")).collect();
    let etag = HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value");
    Compiled { body, etag }
}

/// The served base tracker (`/script.js`).
pub fn script() -> &'static str {
    Script::Base.served()
}

/// The tracker's routes, documented, to merge into the API's route table.
pub fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(serve_script))
        .routes(routes!(serve_outbound))
        .routes(routes!(serve_file_downloads))
        .routes(routes!(serve_not_found))
}

/// `GET /script.js` (and `HEAD`): the script, or a 304 when the client's copy
/// (`If-None-Match`) is current.
///
/// The tracker a site includes with `<script defer src=".../script.js" data-site="site-001">`:
/// page views on load and on single-page navigation, custom events through
/// `window.analytics.track(name, {props})`. Each event carries the page's `url`,
/// `screen_width` and a random `event_id`; the load's first page view also its
/// `referrer`. Loadable from any origin; cacheable for an hour.
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
    serve(Script::Base, &request_headers)
}

/// `GET /script.outbound.js`: the extension sending `Outbound Link: Click`
/// (props `{url}`) for clicks on links to other hosts. Include it after `/script.js`.
#[utoipa::path(
    get,
    path = "/script.outbound.js",
    tag = "ingestion",
    responses(
        (status = 200, description = "The script, cacheable as `/script.js`",
            body = String, content_type = "application/javascript; charset=utf-8"),
        (status = 304, description = "The client's copy (`If-None-Match`) is current"),
        (status = 503, response = crate::http::openapi::Unavailable),
    )
)]
async fn serve_outbound(request_headers: HeaderMap) -> Response {
    serve(Script::Outbound, &request_headers)
}

/// `GET /script.file-downloads.js`: the extension sending `File Download`
/// (props `{url}`) for clicks on links to files (pdf, zip, docx, mp4, ...).
/// Include it after `/script.js`.
#[utoipa::path(
    get,
    path = "/script.file-downloads.js",
    tag = "ingestion",
    responses(
        (status = 200, description = "The script, cacheable as `/script.js`",
            body = String, content_type = "application/javascript; charset=utf-8"),
        (status = 304, description = "The client's copy (`If-None-Match`) is current"),
        (status = 503, response = crate::http::openapi::Unavailable),
    )
)]
async fn serve_file_downloads(request_headers: HeaderMap) -> Response {
    serve(Script::FileDownloads, &request_headers)
}

/// `GET /script.404.js`: the extension sending `404` (props `{path}`), for a
/// site's "not found" page. Include it there, after `/script.js`.
#[utoipa::path(
    get,
    path = "/script.404.js",
    tag = "ingestion",
    responses(
        (status = 200, description = "The script, cacheable as `/script.js`",
            body = String, content_type = "application/javascript; charset=utf-8"),
        (status = 304, description = "The client's copy (`If-None-Match`) is current"),
        (status = 503, response = crate::http::openapi::Unavailable),
    )
)]
async fn serve_not_found(request_headers: HeaderMap) -> Response {
    serve(Script::NotFound, &request_headers)
}

/// `script`, or a 304 when the client's copy is current; with its caching and
/// cross-origin headers.
fn serve(script: Script, request_headers: &HeaderMap) -> Response {
    let compiled = script.compiled();
    let current = request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| etag_list_matches(value, &compiled.etag));
    let mut response = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/javascript; charset=utf-8")], compiled.body.as_str()).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, compiled.etag.clone());
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

    /// `body`'s size gzipped (default level, as a web server or proxy compresses it).
    fn gzipped_len(body: &str) -> usize {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(body.as_bytes()).unwrap();
        encoder.finish().unwrap().len()
    }

    #[test]
    fn the_served_scripts_are_small_and_have_no_comment_lines() {
        for script in Script::ALL {
            let served = script.served();
            let gzipped = gzipped_len(served);
            println!("{}: {} bytes, {gzipped} gzipped", script.path(), served.len());
            let limit = if script == Script::Base { 1024 } else { 512 };
            assert!(gzipped <= limit, "{} is {gzipped} bytes gzipped: keep it at most {limit}", script.path());
            assert!(served.lines().all(|line| !line.trim().is_empty() && !line.trim_start().starts_with("//")));
            assert!(served.starts_with("(function"), "{served}");
            assert!(served.len() < script.source().len(), "comments are dropped");
        }
        let base = script();
        for needle in ["data-", "sendBeacon", "keepalive", "pushState", "replaceState", "popstate", "analytics"] {
            assert!(base.contains(needle), "the script uses {needle}");
        }
        for needle in ["url:", "referrer:", "screen_width:", "event_id:", "props"] {
            assert!(base.contains(needle), "the script sends {needle}");
        }
        assert!(Script::Outbound.served().contains("'Outbound Link: Click'"));
        assert!(Script::FileDownloads.served().contains("'File Download'"));
        assert!(Script::NotFound.served().contains("'404'"));
    }

    #[test]
    fn each_script_has_its_own_etag() {
        let tags: std::collections::HashSet<_> = Script::ALL.iter().map(|s| s.compiled().etag.clone()).collect();
        assert_eq!(tags.len(), Script::ALL.len());
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
