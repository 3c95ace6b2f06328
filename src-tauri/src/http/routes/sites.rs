//! A site's settings routes: `GET /sites/{site_id}/goals` and `PUT
//! /sites/{site_id}/goals`. Each checks the token, calls one [`crate::sites`]
//! function and shapes the answer; the `Host` check applies (see `host_check`).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;

use crate::http::error::ApiError;
use crate::http::openapi::{
    BadRequest, HostNotAllowed, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::http::routes::ingest::check_json_content_type;
use crate::http::state::ApiState;
use crate::sites::{self, SiteError, SiteGoals};
use crate::storage::StoreError;

/// Largest body of `PUT /sites/{site_id}/goals`: 100 goals of the longest pattern and name, with room.
pub const MAX_GOALS_BODY_BYTES: usize = 512 * 1024;
/// Longest wait for the database when reading or saving a site's settings.
pub const SETTINGS_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /sites/{site_id}/goals`: the site's goals, `[]` when it has none.
#[utoipa::path(
    get,
    path = "/sites/{site_id}/goals",
    tag = "sites",
    params(("site_id" = String, Path, description = "The site", example = "site-001")),
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "The site's goals", body = SiteGoals,
            example = json!({ "site_id": "site-001", "goals": [{ "event_type": "signup", "name": "signup" },
                                                               { "page": "/blog/*", "name": "Visit /blog/*" }] })),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = HostNotAllowed),
        (status = 503, response = Unavailable),
    )
)]
pub async fn get_goals(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(site_id): Path<String>,
) -> Result<Json<SiteGoals>, ApiError> {
    state.token.authorize(&headers)?;
    Ok(Json(within_settings_timeout(sites::site_goals(&state.store, &site_id)).await?))
}

/// `PUT /sites/{site_id}/goals` with `{"goals": [...]}`: replaces the site's
/// goals; answers them as saved (names filled in).
///
/// A goal is `{"event_type": "signup"}` (each event of that type converts) or
/// `{"page": "/blog/*"}` (each page view of a matching path converts; `*` is any
/// run of characters, the pattern matches the whole path), with an optional
/// `name` (default: the event type, or `Visit <page>`; unique per site). At most
/// 100 goals, patterns of at most 2048 bytes, no control characters. A body with
/// any bad goal is refused whole: nothing is saved.
#[utoipa::path(
    put,
    path = "/sites/{site_id}/goals",
    tag = "sites",
    params(("site_id" = String, Path, description = "The site", example = "site-001")),
    request_body(content = GoalsBody, content_type = "application/json",
        description = "JSON (as `application/json`, or `text/plain` as for `/event`)",
        example = json!({ "goals": [{ "event_type": "signup" }, { "page": "/blog/*", "name": "Read the blog" }] })),
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "The goals saved", body = SiteGoals),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = HostNotAllowed),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 503, response = Unavailable),
    )
)]
pub async fn put_goals(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(site_id): Path<String>,
    body: Bytes,
) -> Result<Json<SiteGoals>, ApiError> {
    state.token.authorize(&headers)?;
    check_json_content_type(&headers)?;
    Ok(Json(within_settings_timeout(sites::replace_goals(&state.store, &site_id, &body)).await?))
}

/// The body of `PUT /sites/{site_id}/goals` (for the document: [`sites::parse_goals`] reads it).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct GoalsBody {
    /// The site's goals, replacing all it had.
    goals: Vec<NewGoal>,
}

/// A goal as sent: exactly one of `event_type` and `page`; `name` may be left out.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct NewGoal {
    /// A custom event name (at most 64 bytes).
    #[schema(example = "signup")]
    event_type: Option<String>,
    /// A path pattern starting with `/` (`*`: any run of characters; at most 2048 bytes).
    #[schema(example = "/blog/*")]
    page: Option<String>,
    /// The display name (at most 256 bytes), unique among the site's goals.
    name: Option<String>,
}

/// Runs a settings read or write within [`SETTINGS_TIMEOUT`]: a bad site id or
/// bad goals are a 400, a database failure (or this wait ending) a 503.
async fn within_settings_timeout<T>(work: impl Future<Output = Result<T, SiteError>>) -> Result<T, ApiError> {
    match tokio::time::timeout(SETTINGS_TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(SiteError::Store(error))) => Err(ApiError::Unavailable(error)),
        Ok(Err(invalid)) => Err(ApiError::Invalid(invalid.to_string())),
        Err(_) => Err(ApiError::Unavailable(StoreError::Timeout(SETTINGS_TIMEOUT))),
    }
}
