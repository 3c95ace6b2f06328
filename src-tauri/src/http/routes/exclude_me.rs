//! `/exclude-me`: the page where a person excludes their own browser from the
//! counts (issue #16 item 8), and undoes it. `POST` sets (or clears) the
//! exclusion cookie on this API's origin; the tracker's `sendBeacon` carries it
//! on same-site requests (`localhost:3000` → `localhost:1000`, `example.com` →
//! `analytics.example.com`), and ingestion drops those events
//! ([`crate::ingest::exclusion`]). For a site on another site than the API, the
//! page explains the tracker's own flag (`localStorage.analytics_desk_ignore`).
//!
//! The page is plain HTML with two forms: no script at all, and a strict
//! `Content-Security-Policy`. A form posted from another origin is refused, so
//! no other site can exclude (or include) its visitors.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::ApiError;
use crate::ingest::exclusion::{EXCLUSION_COOKIE, carries_exclusion_cookie};

/// Where the page is served.
pub const PATH: &str = "/exclude-me";
/// How long a browser stays excluded: a year (browsers cap cookies at 400 days).
pub const EXCLUSION_MAX_AGE_SECS: u64 = 365 * 24 * 3600;
/// The page's policy: nothing loads, forms post only here, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The page's routes, documented, to merge into the API's route table.
pub fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new().routes(routes!(exclude_me_page, set_exclusion))
}

/// `GET /exclude-me`: the page saying whether this browser is excluded, with
/// the button that changes it.
#[utoipa::path(
    get,
    path = "/exclude-me",
    tag = "ingestion",
    responses(
        (status = 200, description = "The page (HTML, no script): whether this browser is excluded (its \
                                      `ad_exclude` cookie), a button to exclude it or undo, and the tracker's \
                                      `localStorage.analytics_desk_ignore` flag for sites on another domain",
            body = String, content_type = "text/html; charset=utf-8"),
    )
)]
async fn exclude_me_page(headers: HeaderMap) -> Response {
    page(carries_exclusion_cookie(&headers))
}

/// `POST /exclude-me`: the page's form. `exclude=1` sets the exclusion cookie
/// (`ad_exclude=1`, a year, `SameSite=Lax`, `HttpOnly`), `exclude=0` clears it;
/// then back to the page (303).
#[utoipa::path(
    post,
    path = "/exclude-me",
    tag = "ingestion",
    request_body(description = "`exclude=1` or `exclude=0`", content_type = "application/x-www-form-urlencoded",
        content = String),
    responses(
        (status = 303, description = "Cookie set (or cleared); `Location: /exclude-me`"),
        (status = 400, response = crate::http::openapi::BadRequest),
    )
)]
async fn set_exclusion(headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(ApiError::Invalid(
            "a form from another site cannot change this browser's exclusion: open /exclude-me on this server and \
             use its button"
                .into(),
        ));
    }
    let exclude = url::form_urlencoded::parse(&body).find(|(name, _)| name == "exclude").map(|(_, value)| value);
    let cookie = match exclude.as_deref() {
        Some("1") => format!("{EXCLUSION_COOKIE}=1; Max-Age={EXCLUSION_MAX_AGE_SECS}; Path=/; SameSite=Lax; HttpOnly"),
        Some("0") => format!("{EXCLUSION_COOKIE}=; Max-Age=0; Path=/; SameSite=Lax; HttpOnly"),
        _ => return Err(ApiError::Invalid("exclude must be 1 (exclude this browser) or 0 (count it again)".into())),
    };
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, PATH)]).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII cookie"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// True unless the request's `Origin` names another host than its `Host` (a
/// form posted from elsewhere). Without `Origin` (not a browser) it is allowed:
/// the cookie only matters in a browser, and browsers send `Origin` with a POST.
/// An opaque `Origin: null` passes only when the browser itself says the post
/// came from this origin (`Sec-Fetch-Site: same-origin`).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    if origin.as_bytes() == b"null" {
        return headers.get("sec-fetch-site").is_some_and(|site| site.as_bytes() == b"same-origin");
    }
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")));
    matches!((origin_host, host), (Some(from), Some(host)) if from.eq_ignore_ascii_case(host))
}

/// The page, for a browser that is (or is not) excluded.
fn page(excluded: bool) -> Response {
    let (state, value, button) = if excluded {
        (
            "<strong>This browser is excluded</strong>: its visits to sites that send events here are not counted.",
            "0",
            "Count this browser again",
        )
    } else {
        ("<strong>This browser is counted</strong> like any visitor.", "1", "Exclude this browser")
    };
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Exclude your own visits · Analytics Desk</title></head>
<body>
<h1>Exclude your own visits</h1>
<p id="exclusion-state" data-excluded="{excluded}">{state}</p>
<form method="post" action="{PATH}"><input type="hidden" name="exclude" value="{value}"><button id="exclusion-toggle" type="submit">{button}</button></form>
<h2>How it works</h2>
<p>The button keeps a cookie (<code>{EXCLUSION_COOKIE}</code>) for this server in this browser, for a year.
The tracker sends it when your site and this server are on the same site: <code>localhost:3000</code> and
<code>localhost:1000</code>, or <code>example.com</code> and <code>analytics.example.com</code>.
Events that carry it are dropped, never stored.</p>
<p>If your site is on another domain, open your site, then your browser's console (F12), and run
<code>localStorage.analytics_desk_ignore = "true"</code>: the tracker on that site then sends nothing from this
browser. Undo it with <code>localStorage.removeItem("analytics_desk_ignore")</code>.</p>
<p>To exclude a whole network (your office, your home), add its addresses to <code>EXCLUDED_IPS</code>
in the settings.</p>
</body>
</html>
"#
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // `same-origin`, not `no-referrer`: under `no-referrer` browsers send
            // `Origin: null` with the page's own form post, which [`same_origin`] refuses.
            (header::REFERRER_POLICY, "same-origin"),
        ],
        html,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (header::HeaderName::from_static(name), value.parse().unwrap())).collect()
    }

    #[test]
    fn only_a_form_from_this_origin_may_change_the_exclusion() {
        assert!(same_origin(&headers(&[("host", "localhost:1000"), ("origin", "http://localhost:1000")])));
        assert!(same_origin(&headers(&[("host", "Stats.example.com"), ("origin", "https://stats.example.com")])));
        assert!(same_origin(&headers(&[("host", "localhost:1000")])), "no Origin: not a browser");
        assert!(!same_origin(&headers(&[("host", "localhost:1000"), ("origin", "http://localhost:3000")])));
        assert!(!same_origin(&headers(&[("host", "localhost:1000"), ("origin", "null")])));
        assert!(!same_origin(&headers(&[("origin", "null"), ("sec-fetch-site", "cross-site")])));
        assert!(
            same_origin(&headers(&[("host", "localhost:1000"), ("origin", "null"), ("sec-fetch-site", "same-origin")])),
            "an opaque origin the browser says is this one"
        );
        assert!(!same_origin(&headers(&[("origin", "http://localhost:1000")])), "no Host to compare");
    }
}
