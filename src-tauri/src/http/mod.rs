//! HTTP: the axum server, the only door into the engine. Routes are thin: each
//! parses its request, calls one engine function and shapes the answer.
//!
//! - [`routes`]: one file per group: ingestion (`POST /event`, `POST /events`),
//!   the tracker script (`GET /script.js`), the `/exclude-me` page, stats (`/stats`, `/stats/timeseries`,
//!   `/stats/export.csv`, `/sites`; `/stats/breakdown`, `/stats/realtime`), a
//!   site's settings (`/sites/{site_id}/goals`) and operations (`/health`, `/metrics`);
//! - [`state`]: what the routes share; [`access`]: the `API_TOKEN` check;
//!   [`query`]: the stats routes' parameters ([`report_query`]: issue #14's);
//!   [`error`]: every refusal as `{"error": "..."}`; [`openapi`]: the OpenAPI document's frame;
//! - [`server`]: the port, the serve loop and its limits; [`connection_gate`]:
//!   the caps on connections; [`lingering_close`]: closing so that a refused
//!   client sees its answer; [`body_deadline`]: a body's total deadline;
//!   [`port_helper`]: the `analytics-bind-port` helper for ports below 1024;
//! - [`host_check`]: the `Host` check of the read routes (DNS rebinding);
//! - this module: the route table, from which both the router and the OpenAPI
//!   document (`GET /openapi.json`) are made, and the latency middleware.
//!
//! `/event` and `/events` are tracker endpoints: any web page may POST to them
//! (CORS). Nothing else is readable cross-origin but the script.

pub mod access;
pub mod body_deadline;
pub mod connection_gate;
pub mod error;
pub mod host_check;
pub mod lingering_close;
pub mod openapi;
pub mod port_helper;
pub mod query;
pub mod report_query;
pub mod routes;
pub mod server;
pub mod state;

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::BoxError;
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::ingest::{MAX_BATCH_BODY_BYTES, MAX_BODY_BYTES};
use crate::telemetry::counters::PipelineCounters;
use openapi::{ApiDoc, HostNotAllowed, Unavailable};
use routes::{breakdown, exclude_me, ingest, operations, sites, stats, tracker};

pub use error::{ApiError, ErrorBody};
pub use server::{ApiLimits, BindError, SHUTDOWN_GRACE, bind, bind_with_helper, serve, serve_with};
pub use state::{ApiState, WorkerHealth, WorkerProbe};

/// The service's routes over `state`, with the default [`ApiLimits`].
pub fn router(state: ApiState) -> Router {
    router_with_limits(state, ApiLimits::default())
}

/// Every route of the API with its documentation. The router and the OpenAPI
/// document are both made from this one list (see [`openapi`]).
fn routes() -> OpenApiRouter<ApiState> {
    // Browsers on any site may send events (preflight answered, cached a day);
    // no other route sends CORS headers (but /script.js), so no page can read stats.
    let tracker_cors = CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::POST])
        .allow_headers([header::CONTENT_TYPE])
        .max_age(Duration::from_secs(86_400));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        // The layer wraps each method's handler, so preflights need an OPTIONS
        // route to reach it (the CORS layer answers them itself).
        .routes(routes!(ingest::record_event, ingest::event_preflight).layer(tracker_cors.clone()))
        // A batch may be larger than one event: this limit overrides the router's default.
        .routes(
            routes!(ingest::record_events, ingest::events_preflight)
                .layer(ServiceBuilder::new().layer(tracker_cors).layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES))),
        )
        .routes(routes!(stats::site_stats))
        .routes(routes!(stats::site_timeseries))
        .routes(routes!(stats::export_csv))
        .routes(routes!(breakdown::stats_breakdown))
        .routes(routes!(breakdown::stats_realtime))
        .routes(routes!(stats::list_sites))
        // A site's goals: up to 100 patterns of 2 KB, past the default body limit.
        .routes(routes!(sites::get_goals, sites::put_goals).layer(DefaultBodyLimit::max(sites::MAX_GOALS_BODY_BYTES)))
        .routes(routes!(operations::health))
        .routes(routes!(operations::metrics))
        .routes(routes!(openapi_document))
        .merge(tracker::routes())
        .merge(exclude_me::routes())
}

/// The API's OpenAPI document: every route, its parameters, bodies and answers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The paths the API serves, as documented (`/sites/{site_id}/goals` with its
/// parameter), for labelling metrics without letting clients invent labels.
pub fn route_paths() -> &'static [String] {
    static PATHS: LazyLock<Vec<String>> = LazyLock::new(|| openapi().paths.paths.into_keys().collect());
    &PATHS
}

/// The service's routes over `state`, with explicit limits.
pub fn router_with_limits(state: ApiState, limits: ApiLimits) -> Router {
    let (routes, _) = routes().split_for_parts();
    // A shed request never reaches its handler: count the event it carried here.
    let counters = state.counters.clone();
    let shed = move |method: Method, uri: Uri, _: BoxError| {
        let counters = counters.clone();
        async move {
            if method == Method::POST && INGESTION_PATHS.contains(&uri.path()) {
                ingest::count_submission::<()>(&counters, 1, &Err(ApiError::Overloaded));
            }
            ApiError::Overloaded
        }
    };
    routes
        .fallback(|uri: Uri| async move { ApiError::NotFound(uri.path().to_string()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout))
        .layer(middleware::from_fn_with_state(limits.body_deadline, body_deadline::limit_body_time))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(shed))
                .load_shed()
                .concurrency_limit(limits.max_in_flight),
        )
        // Before the cap: a refused Host takes no request slot.
        .layer(middleware::from_fn_with_state(state.hosts.clone(), host_check::check_host))
        .layer(TraceLayer::new_for_http())
        // Outermost, so that requests refused by the layers above are timed too.
        .layer(middleware::from_fn_with_state(state.counters.clone(), observe_request))
        .with_state(state)
}

/// The routes whose `POST`s submit events.
const INGESTION_PATHS: [&str; 2] = ["/event", "/events"];

/// Times a request into the HTTP latency histogram, labelled by its route (or
/// `unmatched`), method and status class.
async fn observe_request(State(counters): State<Arc<PipelineCounters>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let route = route_paths().iter().find(|route| route_matches(route, path)).map_or("unmatched", String::as_str);
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    counters.observe_http(route, method.as_str(), response.status().as_u16(), started.elapsed());
    response
}

/// True when `path` is served by the documented `route`, whose `{parameter}`
/// segments stand for any one non-empty segment.
fn route_matches(route: &str, path: &str) -> bool {
    if !route.contains('{') {
        return route == path;
    }
    let (mut routes, mut paths) = (route.split('/'), path.split('/'));
    loop {
        match (routes.next(), paths.next()) {
            (None, None) => return true,
            (Some(want), Some(got)) if want.starts_with('{') && want.ends_with('}') && !got.is_empty() => {}
            (Some(want), Some(got)) if want == got => {}
            _ => return false,
        }
    }
}

/// `GET /openapi.json`: this API's OpenAPI 3 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI 3 document of every route", content_type = "application/json"),
        (status = 403, response = HostNotAllowed),
        (status = 503, response = Unavailable),
    )
)]
async fn openapi_document() -> Response {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| openapi().to_json().expect("the OpenAPI document serializes"));
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

#[cfg(test)]
mod tests {
    use super::route_matches;

    #[test]
    fn parameter_segments_match_any_one_segment() {
        assert!(route_matches("/stats", "/stats"));
        assert!(!route_matches("/stats", "/stats/x"));
        assert!(route_matches("/sites/{site_id}/goals", "/sites/site-001/goals"));
        assert!(!route_matches("/sites/{site_id}/goals", "/sites//goals"));
        assert!(!route_matches("/sites/{site_id}/goals", "/sites/a/b/goals"));
        assert!(!route_matches("/sites/{site_id}/goals", "/sites/a/goals/x"));
        assert!(!route_matches("/sites/{site_id}/goals", "/sites/a"));
    }
}
