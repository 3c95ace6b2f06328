//! API: the HTTP surface (axum). `POST /event` validates a body and answers
//! `{"status":"queued"}` only once the queue insert is acknowledged; `POST /events`
//! does the same for a JSON array of events, all or nothing; `GET /stats`
//! serves a site's exact stats. Every error is a JSON `{"error": "..."}`.
//!
//! `/event` and `/events` are tracker endpoints: any web page may POST to them
//! (CORS). Nothing else is readable cross-origin, and with `API_TOKEN` set the
//! stats routes and `/metrics` require it (`/health`, for load balancers, does not).
//! `GET /script.js` serves the [`tracker`](crate::tracker) script; an event
//! without `user_id` gets an anonymous one ([`visitor`](crate::visitor)).
//! `GET /metrics` exposes the [`counters`](crate::counters) to Prometheus, and
//! `GET /openapi.json` documents every route ([`openapi`](crate::openapi)).

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::BoxError;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{Layer, ServiceBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::{debug, warn};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::config::Config;
use crate::counters::{METRICS_CONTENT_TYPE, PipelineCounters, RefusalReason};
use crate::export::{self, CSV_CONTENT_TYPE, ExportError, ExportRequest};
use crate::ingest::{self, BatchError, EventBody, IngestError, MAX_BATCH_BODY_BYTES, MAX_BODY_BYTES, NewEvent};
use crate::openapi::{
    ApiDoc, BadRequest, Forbidden, PayloadTooLarge, RequestTimeout, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::queue_writer::{QueueWriteError, QueueWriter};
use crate::stats::{self, Bucket, Interval, SiteStats, SiteSummary, StatsFilter};
use crate::store::{Store, StoreError};
use crate::tracker;
use crate::visitor::{AnonymousVisitors, SaltError};

/// Longest wait for the queue insert before answering 503 (server selection
/// already gives up after two seconds when no server answers at all).
pub const QUEUE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the stats queries.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for `GET /health`'s database checks (ping and queue depth together).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the queue depth shown by `GET /metrics`: a scrape must not hang on the database.
pub const METRICS_QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// Limits that keep slow or abusive clients from exhausting the service.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Requests handled at once; beyond it, requests are refused at once with a
    /// 503 instead of queueing (so a flood degrades to quick refusals and memory
    /// stays bounded).
    pub max_in_flight: usize,
    /// Longest wait for the next piece of a request body (slow senders get a 408).
    pub body_read_timeout: Duration,
    /// Longest a client may take to send a request's headers, and so how long an
    /// idle keep-alive connection stays open: a slow-headers client cannot hold a
    /// connection for ever.
    pub header_read_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_in_flight: 1024,
            body_read_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Longest graceful shutdown waits for requests in flight before closing anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The database.
    pub store: Store,
    /// This process's metrics: events received, refused and queued, HTTP latency
    /// (and the worker's, when it runs in this process).
    pub counters: Arc<PipelineCounters>,
    /// Who may read and write.
    pub access: Arc<AccessRules>,
    /// Group-commits accepted events into the queue.
    pub queue_writer: QueueWriter,
    /// Gives events sent without `user_id` an anonymous one.
    pub visitors: Arc<AnonymousVisitors>,
    /// How this process's worker is doing, for `GET /health`.
    pub worker: WorkerProbe,
}

impl ApiState {
    /// The state over `store`, starting its queue writer on the current runtime.
    pub fn new(
        store: Store,
        counters: Arc<PipelineCounters>,
        access: Arc<AccessRules>,
        visitors: Arc<AnonymousVisitors>,
    ) -> ApiState {
        let queue_writer = QueueWriter::spawn(store.queue().clone());
        ApiState { store, counters, access, queue_writer, visitors, worker: WorkerProbe::not_in_this_process() }
    }

    /// The same state, with `/health` asking `worker` about this process's worker.
    pub fn with_worker(self, worker: WorkerProbe) -> ApiState {
        ApiState { worker, ..self }
    }
}

/// The state of this process's worker, as `GET /health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, ToSchema)]
pub enum WorkerHealth {
    /// Moving batches.
    #[serde(rename = "running")]
    Running,
    /// Connecting to the database.
    #[serde(rename = "starting")]
    Starting,
    /// Stopped after running in this process.
    #[serde(rename = "stopped")]
    Stopped,
    /// Could not start, or stopped by itself (see the logs).
    #[serde(rename = "failed")]
    Failed,
    /// Never started in this process: workers run elsewhere (`analytics-service api`).
    #[serde(rename = "not in this process")]
    NotInThisProcess,
}

/// Asks whoever runs the worker how it is doing, so that the API needs no
/// knowledge of the engine. Cheap to clone.
#[derive(Clone)]
pub struct WorkerProbe(Arc<dyn Fn() -> WorkerHealth + Send + Sync>);

impl WorkerProbe {
    /// A probe calling `health`.
    pub fn new(health: impl Fn() -> WorkerHealth + Send + Sync + 'static) -> WorkerProbe {
        WorkerProbe(Arc::new(health))
    }

    /// The probe of a process that runs no worker.
    pub fn not_in_this_process() -> WorkerProbe {
        WorkerProbe::new(|| WorkerHealth::NotInThisProcess)
    }

    /// The worker's state now.
    pub fn health(&self) -> WorkerHealth {
        (self.0)()
    }
}

impl std::fmt::Debug for WorkerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WorkerProbe").field(&self.health()).finish()
    }
}

/// The API's access rules, from `API_TOKEN` and `ALLOWED_SITES`.
#[derive(Debug, Default)]
pub struct AccessRules {
    /// Required as `Authorization: Bearer …` by `/stats` when set.
    pub token: Option<String>,
    /// Sites `/event` accepts when set.
    pub allowed_sites: Option<HashSet<String>>,
}

impl AccessRules {
    /// The rules a configuration asks for.
    pub fn from_config(config: &Config) -> AccessRules {
        AccessRules {
            token: config.api_token.clone(),
            allowed_sites: config.allowed_sites.as_ref().map(|sites| sites.iter().cloned().collect()),
        }
    }

    /// Checks the `Authorization` header against the token, in constant time.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.token else { return Ok(()) };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) { Ok(()) } else { Err(ApiError::Unauthorized) }
    }
}

/// An error answered to a client, as `{"error": message}` with its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not an acceptable event.
    #[error(transparent)]
    InvalidEvent(#[from] IngestError),
    /// The body of `POST /events` is not an acceptable batch as a whole.
    #[error(transparent)]
    InvalidBatch(#[from] BatchError),
    /// One element of a batch is refused, and so the whole batch.
    #[error("event {index}: {error}")]
    InBatch {
        /// The element's position in the array, from 0.
        index: usize,
        /// Why it is refused.
        error: Box<ApiError>,
    },
    /// The body could not be read (too large, or broken off).
    #[error("{message}")]
    Body {
        /// 413 for too large, 408 when it stalled or broke off.
        status: StatusCode,
        /// What went wrong.
        message: String,
    },
    /// The content type is not JSON.
    #[error("Content-Type must be application/json (or text/plain holding JSON), got {0:?}")]
    UnsupportedMediaType(String),
    /// A query parameter is missing or malformed.
    #[error("{0}")]
    BadQuery(String),
    /// The database could not be used: nothing was stored.
    // The details (addresses, driver messages) go to the log, not to clients.
    #[error("database unavailable, nothing was acknowledged; retry shortly")]
    Unavailable(StoreError),
    /// No route here.
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// The route exists with other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `/stats` without the right token.
    #[error("missing or wrong API token: send the header Authorization: Bearer <API_TOKEN>")]
    Unauthorized,
    /// A site not in `ALLOWED_SITES`.
    #[error("site_id {0:?} is not accepted by this server (see ALLOWED_SITES)")]
    SiteNotAllowed(String),
    /// Too many requests in flight: refused without being read.
    #[error("server busy: too many requests at once, nothing was stored; retry shortly")]
    Overloaded,
    /// The API is stopping and no longer stores events.
    #[error("server shutting down, nothing was stored; retry shortly")]
    ShuttingDown,
    /// The stored daily salt is unusable, so no anonymous id can be derived.
    #[error("cannot derive an anonymous user_id, event not stored: {0}")]
    AnonymousId(SaltError),
}

/// Every error answer's body.
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(example = json!({ "error": "event 3: path is required", "index": 3 }))]
pub struct ErrorBody {
    /// What is wrong, in words that name the field or the fix.
    pub error: String,
    /// `POST /events` only: the position (from 0) of the element that made the batch refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl ApiError {
    /// Why events were refused, for the metrics (`None` for errors no event submission meets).
    fn refusal_reason(&self) -> Option<RefusalReason> {
        Some(match self {
            ApiError::InvalidEvent(_) | ApiError::BadQuery(_) => RefusalReason::Invalid,
            ApiError::InvalidBatch(BatchError::TooMany(_)) => RefusalReason::TooLarge,
            ApiError::InvalidBatch(_) => RefusalReason::Invalid,
            ApiError::InBatch { error, .. } => return error.refusal_reason(),
            ApiError::Body { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => RefusalReason::TooLarge,
            ApiError::Body { .. } => RefusalReason::Timeout,
            ApiError::UnsupportedMediaType(_) => RefusalReason::UnsupportedType,
            ApiError::SiteNotAllowed(_) => RefusalReason::SiteNotAllowed,
            ApiError::Overloaded => RefusalReason::Overloaded,
            ApiError::Unavailable(_) => RefusalReason::Unavailable,
            ApiError::ShuttingDown => RefusalReason::ShuttingDown,
            ApiError::AnonymousId(_) => RefusalReason::AnonymousId,
            ApiError::NotFound(_) | ApiError::MethodNotAllowed | ApiError::Unauthorized => return None,
        })
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidEvent(_) | ApiError::BadQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidBatch(BatchError::TooMany(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidBatch(_) => StatusCode::BAD_REQUEST,
            ApiError::InBatch { error, .. } => error.status(),
            ApiError::Body { status, .. } => *status,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::SiteNotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::Overloaded | ApiError::ShuttingDown | ApiError::AnonymousId(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Unavailable(error) = &self {
            log_unavailable(error);
        }
        let index = match &self {
            ApiError::InBatch { index, .. } => Some(*index),
            _ => None,
        };
        let mut response = (self.status(), Json(ErrorBody { error: self.to_string(), index })).into_response();
        match self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            }
            // The body was left unread, so the connection cannot carry another
            // request: say so, or a client would send its next one into a closed socket.
            ApiError::Body { .. } => {
                response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// Logs a database failure seen by a request: a warning at most every ten
/// seconds (an outage would otherwise write one per request), the rest at debug.
fn log_unavailable(error: &StoreError) {
    static LAST_WARNING_SECS: AtomicU64 = AtomicU64::new(0);
    let now = DateTime::now().timestamp_millis() as u64 / 1000;
    let last = LAST_WARNING_SECS.load(Ordering::Relaxed);
    if now >= last + 10 && LAST_WARNING_SECS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        warn!(%error, "database unavailable: answering 503 (further failures within 10 s are logged at debug level)");
    } else {
        debug!(%error, "answering 503");
    }
}

/// The service's routes over `state`, with the default [`ApiLimits`].
pub fn router(state: ApiState) -> Router {
    router_with_limits(state, ApiLimits::default())
}

/// Every route of the API with its documentation. The router and the OpenAPI
/// document are both made from this one list (see [`crate::openapi`]).
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
        .routes(routes!(record_event, event_preflight).layer(tracker_cors.clone()))
        // A batch may be larger than one event: this limit overrides the router's default.
        .routes(
            routes!(record_events, events_preflight)
                .layer(ServiceBuilder::new().layer(tracker_cors).layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES))),
        )
        .routes(routes!(site_stats))
        .routes(routes!(site_timeseries))
        .routes(routes!(export_csv))
        .routes(routes!(list_sites))
        .routes(routes!(health))
        .routes(routes!(metrics))
        .routes(routes!(openapi_document))
        .merge(tracker::routes())
}

/// The API's OpenAPI document: every route, its parameters, bodies and answers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The paths the API serves, as documented (each exactly as routed: no path
/// parameters), for labelling metrics without letting clients invent labels.
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
                count_submission::<()>(&counters, 1, &Err(ApiError::Overloaded));
            }
            ApiError::Overloaded
        }
    };
    routes
        .fallback(|uri: Uri| async move { ApiError::NotFound(uri.path().to_string()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(shed))
                .load_shed()
                .concurrency_limit(limits.max_in_flight),
        )
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
    let route = route_paths().iter().find(|route| *route == path).map_or("unmatched", String::as_str);
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    counters.observe_http(route, method.as_str(), response.status().as_u16(), started.elapsed());
    response
}

/// The answer of `GET /health`.
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(example = json!({ "status": "ok", "database": "ok", "worker": "running", "queue_depth": 0 }))]
pub struct Health {
    /// `ok`, or `unavailable` when the database does not answer.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
    /// `ok`, or `unreachable`.
    #[schema(value_type = String, example = "ok")]
    pub database: &'static str,
    /// Why the database is unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// This process's worker.
    pub worker: WorkerHealth,
    /// Events waiting in the queue (absent when it could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
}

/// `GET /health`: the database's ping, this process's worker and the queue
/// depth; for load balancers and uptime checks.
///
/// 200 while the database answers a ping (within 2 s), 503 with the reason
/// otherwise. The worker's state does not change the status: the API takes
/// events while the worker is stopped. Needs no token.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = Health),
        (status = 503, description = "The database does not answer (or the server is at its limit of requests in \
                                      flight, with an `ErrorBody`)", body = Health,
            example = json!({ "status": "unavailable", "database": "unreachable",
                              "reason": "the database did not answer a ping within 2s", "worker": "running" })),
    )
)]
async fn health(State(state): State<ApiState>) -> (StatusCode, Json<Health>) {
    let worker = state.worker.health();
    let checks = async {
        state.store.ping().await?;
        // The ping proved the database answers: a failed count is no outage.
        Ok::<_, StoreError>(state.store.queue_depth().await.ok())
    };
    let reason = match tokio::time::timeout(HEALTH_TIMEOUT, checks).await {
        Ok(Ok(queue_depth)) => {
            let health = Health { status: "ok", database: "ok", reason: None, worker, queue_depth };
            return (StatusCode::OK, Json(health));
        }
        Ok(Err(error)) => {
            // Addresses and driver messages stay in the log: /health needs no token.
            debug!(%error, "health check: database unreachable");
            "the database cannot be reached".to_string()
        }
        Err(_) => format!("the database did not answer a ping within {HEALTH_TIMEOUT:?}"),
    };
    let health =
        Health { status: "unavailable", database: "unreachable", reason: Some(reason), worker, queue_depth: None };
    (StatusCode::SERVICE_UNAVAILABLE, Json(health))
}

/// `GET /metrics`: this process's metrics in the Prometheus text format.
///
/// Events received, refused (by reason), queued and processed; batches and their
/// durations; the queue depth (read from the database at scrape time, within a
/// second; `NaN` when it did not answer); HTTP latency by route, method and
/// status class. Counters start at zero with the process: each API process (and
/// each worker run in it) counts its own.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "The metrics, Prometheus text format 0.0.4", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.access.authorize(&headers)?;
    let depth = tokio::time::timeout(METRICS_QUERY_TIMEOUT, state.store.queue_depth()).await;
    state.counters.set_queue_depth(depth.ok().and_then(Result::ok));
    Ok(([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], state.counters.encode()).into_response())
}

/// `GET /openapi.json`: this API's OpenAPI 3 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI 3 document of every route", content_type = "application/json"),
        (status = 503, response = Unavailable),
    )
)]
async fn openapi_document() -> Response {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| openapi().to_json().expect("the OpenAPI document serializes"));
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

/// `OPTIONS /event`: the CORS preflight of a browser about to send an event.
#[utoipa::path(
    options,
    path = "/event",
    tag = "ingestion",
    responses(
        (status = 200, description = "A CORS preflight, answered with `Access-Control-Allow-Origin: *` and the allowed \
                                      method and headers (cached a day)"),
        (status = 204, description = "An OPTIONS request that is not a CORS preflight"),
    )
)]
async fn event_preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `OPTIONS /events`: the CORS preflight of a browser about to send a batch.
#[utoipa::path(
    options,
    path = "/events",
    tag = "ingestion",
    responses(
        (status = 200, description = "A CORS preflight, answered with `Access-Control-Allow-Origin: *` and the allowed \
                                      method and headers (cached a day)"),
        (status = 204, description = "An OPTIONS request that is not a CORS preflight"),
    )
)]
async fn events_preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// The answer to an accepted `POST /event` or `POST /events`.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Queued {
    /// Always `queued`: the events are stored in the queue (journaled).
    #[schema(value_type = String, example = "queued")]
    pub status: &'static str,
    /// How many events a batch stored (absent for `POST /event`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

/// `POST /event`: validate, insert into the queue, and only then say "queued".
///
/// Any page may send it cross-origin; `text/plain` bodies (what `navigator.sendBeacon`
/// sends) are read as JSON. At most 16 KiB.
#[utoipa::path(
    post,
    path = "/event",
    tag = "ingestion",
    request_body(
        description = "One event",
        content((EventBody = "application/json"), (EventBody = "text/plain")),
    ),
    responses(
        (status = 200, description = "Stored in the queue (journaled)", body = Queued,
            example = json!({ "status": "queued" })),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 503, response = Unavailable),
    )
)]
async fn record_event(
    State(state): State<ApiState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Queued>, ApiError> {
    let outcome = async {
        check_json_content_type(&headers)?;
        let body = read_body(body, MAX_BODY_BYTES)?;
        let event = ingest::parse_event(&body)?;
        let peer = peer.map(|Extension(ConnectInfo(address))| address.ip());
        let document = queue_document(&state, event, peer, &headers, DateTime::now()).await?;
        queue(&state, vec![document]).await?;
        Ok(Json(Queued { status: "queued", count: None }))
    }
    .await;
    count_submission(&state.counters, 1, &outcome);
    outcome
}

/// `POST /events`: a JSON array of events, all validated (and their sites
/// checked) before any is stored; then one insert for all, and one answer.
///
/// 1 to 500 events, at most 1 MiB. One invalid element refuses the whole batch:
/// the error names it (`index`, from 0) and the field. CORS and `text/plain` as for `/event`.
#[utoipa::path(
    post,
    path = "/events",
    tag = "ingestion",
    request_body(
        description = "1 to 500 events",
        content((Vec<EventBody> = "application/json"), (Vec<EventBody> = "text/plain")),
    ),
    responses(
        (status = 200, description = "All stored in the queue (journaled), in one insert", body = Queued,
            example = json!({ "status": "queued", "count": 2 })),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 503, response = Unavailable),
    )
)]
async fn record_events(
    State(state): State<ApiState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Queued>, ApiError> {
    // A body that does not read as an array counts as one event in the metrics.
    let mut submitted = 1;
    let outcome = async {
        check_json_content_type(&headers)?;
        let body = read_body(body, MAX_BATCH_BODY_BYTES)?;
        let elements = ingest::split_batch(&body)?;
        submitted = elements.len();
        let in_batch = |index: usize, error: ApiError| ApiError::InBatch { index, error: Box::new(error) };
        let events = elements
            .into_iter()
            .enumerate()
            .map(|(index, element)| ingest::parse_batch_element(element).map_err(|e| in_batch(index, e.into())))
            .collect::<Result<Vec<NewEvent>, ApiError>>()?;
        // Every site checked before any anonymous id is derived: a refusal is cheap.
        for (index, event) in events.iter().enumerate() {
            check_site_allowed(&state, &event.site_id).map_err(|e| in_batch(index, e))?;
        }
        let peer = peer.map(|Extension(ConnectInfo(address))| address.ip());
        let ingested_at = DateTime::now();
        let mut documents = Vec::with_capacity(events.len());
        for event in events {
            documents.push(queue_document(&state, event, peer, &headers, ingested_at).await?);
        }
        let count = documents.len();
        queue(&state, documents).await?;
        Ok(Json(Queued { status: "queued", count: Some(count) }))
    }
    .await;
    count_submission(&state.counters, submitted, &outcome);
    outcome
}

/// Counts `events` submitted to the API, and refused if `outcome` is an error.
fn count_submission<T>(counters: &PipelineCounters, events: usize, outcome: &Result<T, ApiError>) {
    let events = events as u64;
    counters.add_received(events);
    if let Some(reason) = outcome.as_ref().err().and_then(ApiError::refusal_reason) {
        counters.add_refused(reason, events);
    }
}

/// The request body, or why it could not be read: over `limit` bytes (413), or
/// stalled past the read timeout or cut off by the client (408).
fn read_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::Body {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body is larger than {limit} bytes"),
        },
        _ => ApiError::Body {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!("request body not received in time: {}", rejection.body_text()),
        },
    })
}

/// Refuses a site not in `ALLOWED_SITES` (when set).
fn check_site_allowed(state: &ApiState, site_id: &str) -> Result<(), ApiError> {
    match &state.access.allowed_sites {
        Some(allowed) if !allowed.contains(site_id) => Err(ApiError::SiteNotAllowed(site_id.to_string())),
        _ => Ok(()),
    }
}

/// The queue document of a validated event from the client behind `peer`: its
/// site checked, and an anonymous `user_id` derived when it has none.
async fn queue_document(
    state: &ApiState,
    mut event: NewEvent,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    ingested_at: DateTime,
) -> Result<Document, ApiError> {
    check_site_allowed(state, &event.site_id)?;
    if event.user_id.is_none() {
        event.user_id = Some(anonymous_user_id(state, &event.site_id, peer, headers).await?);
    }
    Ok(event.into_queue_document(ObjectId::new(), ingested_at)?)
}

/// Stores `documents` in the queue (one group-committed insert) and counts them.
async fn queue(state: &ApiState, documents: Vec<Document>) -> Result<(), ApiError> {
    let count = documents.len() as u64;
    match tokio::time::timeout(QUEUE_WRITE_TIMEOUT, state.queue_writer.write(documents)).await {
        Ok(Ok(())) => {
            state.counters.add_queued(count);
            Ok(())
        }
        Ok(Err(QueueWriteError::Overloaded)) => Err(ApiError::Overloaded),
        Ok(Err(QueueWriteError::Store(error))) => Err(ApiError::Unavailable(error)),
        Ok(Err(QueueWriteError::Stopped)) => Err(ApiError::ShuttingDown),
        Err(_) => Err(ApiError::Unavailable(StoreError::Timeout(QUEUE_WRITE_TIMEOUT))),
    }
}

/// The anonymous id of the client behind `peer` for `site_id` (see [`crate::visitor`]).
async fn anonymous_user_id(
    state: &ApiState,
    site_id: &str,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    match tokio::time::timeout(QUEUE_WRITE_TIMEOUT, state.visitors.user_id(site_id, peer, headers)).await {
        Ok(Ok(user_id)) => Ok(user_id),
        Ok(Err(SaltError::Store(error))) => Err(ApiError::Unavailable(error)),
        Ok(Err(malformed)) => {
            warn!(error = %malformed, "cannot derive an anonymous user_id: answering 503");
            Err(ApiError::AnonymousId(malformed))
        }
        Err(_) => Err(ApiError::Unavailable(StoreError::Timeout(QUEUE_WRITE_TIMEOUT))),
    }
}

/// Accepts `application/json`, `*/*+json` and `text/plain` (what a browser's
/// `sendBeacon` sends for a string body).
fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = value.as_deref().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json"
        || essence == "text/plain"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(value.unwrap_or_default()))
    }
}

/// The filter of the stats routes; every field is checked by hand so that an
/// error names it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StatsQuery {
    /// The site.
    #[param(required = true, example = "site-001")]
    site_id: Option<String>,
    /// Only events at or after this instant (RFC 3339; in a URL, write `+` as `%2B`).
    #[param(format = DateTime, example = "2026-03-01T00:00:00Z")]
    from: Option<String>,
    /// Only events before this instant (exclusive).
    #[param(format = DateTime, example = "2026-04-01T00:00:00Z")]
    to: Option<String>,
    /// Only events of this type.
    #[param(example = "page_view")]
    event_type: Option<String>,
}

/// The bucket width of the time-series routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct IntervalQuery {
    /// `hour` (the default) or `day`, in UTC.
    #[param(value_type = Option<Interval>)]
    interval: Option<String>,
}

impl IntervalQuery {
    /// The interval asked for, `default` when none.
    fn interval(&self, default: Interval) -> Result<Interval, ApiError> {
        match self.interval.as_deref() {
            None => Ok(default),
            Some("hour") => Ok(Interval::Hour),
            Some("day") => Ok(Interval::Day),
            Some(other) => Err(ApiError::BadQuery(format!("interval must be hour or day, got {other:?}"))),
        }
    }
}

impl StatsQuery {
    /// The site, range and type asked for.
    fn filter(&self) -> Result<StatsFilter, ApiError> {
        let site_id = self
            .site_id
            .clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ApiError::BadQuery("site_id is required, as in /stats?site_id=site-001".into()))?;
        let from = self.from.as_deref().map(|v| instant("from", v)).transpose()?;
        let to = self.to.as_deref().map(|v| instant("to", v)).transpose()?;
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(ApiError::BadQuery("from must not be after to (to is exclusive)".into()));
        }
        let event_type = match self.event_type.as_deref() {
            Some(kind) if kind.trim().is_empty() => {
                return Err(ApiError::BadQuery("event_type must not be empty when given".into()));
            }
            kind => kind.map(str::to_string),
        };
        Ok(StatsFilter { site_id, from, to, event_type })
    }
}

/// Parses a query parameter holding an RFC 3339 date-time.
fn instant(name: &str, value: &str) -> Result<DateTime, ApiError> {
    DateTime::parse_rfc3339_str(value).map_err(|_| {
        ApiError::BadQuery(format!(
            "{name} must be an RFC 3339 date-time such as 2024-05-01T00:00:00Z, got {value:?} \
             (in a URL, write + as %2B)"
        ))
    })
}

/// Parses the query string, naming what is wrong.
fn parse_query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(q)| q).map_err(|rejection| ApiError::BadQuery(format!("invalid query: {}", rejection.body_text())))
}

/// Runs a stats computation within [`STATS_TIMEOUT`].
async fn within_stats_timeout<T>(work: impl Future<Output = Result<T, StoreError>>) -> Result<T, ApiError> {
    match tokio::time::timeout(STATS_TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ApiError::Unavailable(error)),
        Err(_) => Err(ApiError::Unavailable(StoreError::Timeout(STATS_TIMEOUT))),
    }
}

/// `GET /stats?site_id=…[&from=…][&to=…][&event_type=…]`: exact totals, unique
/// users, top paths and events per type.
///
/// Over processed events; an unknown site gives zeros. Top paths: the 10 most
/// visited, by count descending then path ascending.
#[utoipa::path(
    get,
    path = "/stats",
    tag = "stats",
    params(StatsQuery),
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "The site's figures", body = SiteStats),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
async fn site_stats(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<SiteStats>, ApiError> {
    state.access.authorize(&headers)?;
    let filter = parse_query(query)?.filter()?;
    Ok(Json(within_stats_timeout(stats::site_stats(&state.store, &filter)).await?))
}

/// The answer of `GET /stats/timeseries`.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Timeseries {
    /// The site.
    pub site_id: String,
    /// The buckets' width.
    pub interval: Interval,
    /// The range's start (RFC 3339).
    #[schema(format = DateTime)]
    pub from: String,
    /// The range's end, exclusive (RFC 3339).
    #[schema(format = DateTime)]
    pub to: String,
    /// Every bucket of the range in order, zeros included.
    pub buckets: Vec<Bucket>,
}

/// `GET /stats/timeseries?site_id=…&interval=hour|day[&from][&to][&event_type]`:
/// events per bucket. Without `to`, up to now; without `from`, the last 24 hours
/// (hourly) or 30 days (daily).
///
/// Buckets are UTC hours or days; the first and last count only what is inside
/// the range. At most 10,000 buckets.
#[utoipa::path(
    get,
    path = "/stats/timeseries",
    tag = "stats",
    params(StatsQuery, IntervalQuery),
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "Events per bucket", body = Timeseries),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
async fn site_timeseries(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, QueryRejection>,
    interval: Result<Query<IntervalQuery>, QueryRejection>,
) -> Result<Json<Timeseries>, ApiError> {
    state.access.authorize(&headers)?;
    let filter = parse_query(query)?.filter()?;
    let interval = parse_query(interval)?.interval(Interval::Hour)?;
    let to = filter.to.unwrap_or_else(DateTime::now);
    let default_span = if interval == Interval::Hour { 24 } else { 30 } * interval.millis();
    let from = filter.from.unwrap_or_else(|| DateTime::from_millis(to.timestamp_millis() - default_span));
    if from > to {
        return Err(ApiError::BadQuery("from must not be after to (to is exclusive)".into()));
    }
    if stats::bucket_count(interval, from, to) > stats::MAX_BUCKETS {
        return Err(ApiError::BadQuery(format!(
            "range too long: at most {} buckets; use interval=day or a shorter range",
            stats::MAX_BUCKETS
        )));
    }
    let buckets = within_stats_timeout(stats::timeseries(&state.store, &filter, interval, from, to)).await?;
    let rfc3339 = |t: DateTime| t.try_to_rfc3339_string().unwrap_or_default();
    Ok(Json(Timeseries { site_id: filter.site_id, interval, from: rfc3339(from), to: rfc3339(to), buckets }))
}

/// `GET /stats/export.csv?site_id=…[&from][&to][&event_type][&interval=day|hour]`:
/// the site's stats and time series as one CSV download.
///
/// Rows of `section,key,value`: the filter, the summary (`total_events`,
/// `unique_users`), the top paths, the events per type and every bucket (by day
/// unless `interval=hour`). Without `from`, the range starts at the site's first
/// event; without `to`, it ends now; every section covers that range. Text that
/// a spreadsheet would run as a formula gets a leading `'`.
#[utoipa::path(
    get,
    path = "/stats/export.csv",
    tag = "stats",
    params(StatsQuery, IntervalQuery),
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "The CSV, as an attachment named `<site>-stats.csv`", body = String,
            content_type = "text/csv; charset=utf-8",
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"<site>-stats.csv\"`")),
            example = "section,key,value\nfilter,site_id,site-001\nsummary,total_events,3\npath,/pricing,2\n"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
async fn export_csv(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, QueryRejection>,
    interval: Result<Query<IntervalQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.access.authorize(&headers)?;
    let filter = parse_query(query)?.filter()?;
    let interval = parse_query(interval)?.interval(Interval::Day)?;
    let request = ExportRequest { filter, interval };
    let csv = match tokio::time::timeout(STATS_TIMEOUT, export::site_csv(&state.store, &request)).await {
        Ok(Ok(csv)) => csv,
        Ok(Err(ExportError::Store(error))) => return Err(ApiError::Unavailable(error)),
        Ok(Err(too_long @ ExportError::TooManyBuckets { .. })) => return Err(ApiError::BadQuery(too_long.to_string())),
        Err(_) => return Err(ApiError::Unavailable(StoreError::Timeout(STATS_TIMEOUT))),
    };
    let disposition = format!("attachment; filename=\"{}\"", export::file_name(&request.filter.site_id));
    let disposition = header::HeaderValue::from_str(&disposition).expect("file names hold only safe characters");
    let content_type = header::HeaderValue::from_static(CSV_CONTENT_TYPE);
    Ok(([(header::CONTENT_TYPE, content_type), (header::CONTENT_DISPOSITION, disposition)], csv).into_response())
}

/// The answer of `GET /sites`.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SiteList {
    /// Every site with processed events, most events first (then by id).
    pub sites: Vec<SiteSummary>,
}

/// `GET /sites`: every site with processed events and its number of events.
#[utoipa::path(
    get,
    path = "/sites",
    tag = "stats",
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "The sites", body = SiteList),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
async fn list_sites(State(state): State<ApiState>, headers: HeaderMap) -> Result<Json<SiteList>, ApiError> {
    state.access.authorize(&headers)?;
    Ok(Json(SiteList { sites: within_stats_timeout(stats::sites(&state.store)).await? }))
}

/// Why the API could not listen, in words that say how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A port below 1024 without the privilege to bind it.
    #[error(
        "cannot listen on {addr}: on Linux, ports below 1024 need root or the CAP_NET_BIND_SERVICE capability. \
         Set PORT to 1024 or above (for example PORT=8000), or grant the capability once: \
         sudo setcap cap_net_bind_service=+ep {exe}"
    )]
    PrivilegedPort {
        /// The address asked for.
        addr: SocketAddr,
        /// This program's path, for the setcap command.
        exe: String,
    },
    /// Another program already listens there.
    #[error(
        "cannot listen on {addr}: the port is already in use by another program. Stop that program or set PORT to another port"
    )]
    InUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The host address is not one of this machine's.
    #[error(
        "cannot listen on {addr}: this machine has no such address. Set HOST to 127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)"
    )]
    NotAvailable {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Anything else the OS refused.
    #[error("cannot listen on {addr}: {source}")]
    Other {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl BindError {
    /// Explains an OS error from binding `addr`.
    pub fn from_io(addr: SocketAddr, source: io::Error) -> BindError {
        match source.kind() {
            io::ErrorKind::PermissionDenied if addr.port() < 1024 => BindError::PrivilegedPort {
                addr,
                exe: std::env::current_exe()
                    .map_or_else(|_| "/path/to/analytics-service".into(), |p| p.display().to_string()),
            },
            io::ErrorKind::AddrInUse => BindError::InUse { addr },
            io::ErrorKind::AddrNotAvailable => BindError::NotAvailable { addr },
            _ => BindError::Other { addr, source },
        }
    }
}

/// Opens the listening socket.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|e| BindError::from_io(addr, e))
}

/// Serves `router` on `listener` with the default [`ApiLimits`] until `shutdown`
/// is cancelled; see [`serve_with`].
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> io::Result<()> {
    serve_with(listener, router, ApiLimits::default(), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting and lets requests in flight finish (for at most [`SHUTDOWN_GRACE`]).
///
/// A loop of our own rather than `axum::serve`, because that sets no timer, and
/// without one hyper enforces no header-read timeout.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: ApiLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    // HTTP/1 only: browsers speak HTTP/2 only over TLS, which a TLS-terminating
    // proxy in front of us handles; and sniffing for HTTP/2 would wait on a
    // silent connection with no timeout at all.
    let mut builder = AutoBuilder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause, don't spin or die.
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Handlers see the peer as axum's `ConnectInfo` (anonymous visitor ids need it).
        let service = Extension(ConnectInfo(peer)).layer(router.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        warn!("requests still in flight after {SHUTDOWN_GRACE:?}; closing them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_port_error_says_why_and_how_to_fix() {
        let addr: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let message = BindError::from_io(addr, io::Error::from(io::ErrorKind::PermissionDenied)).to_string();
        assert!(message.contains("ports below 1024"), "{message}");
        assert!(message.contains("PORT=8000"), "{message}");
        assert!(message.contains("setcap cap_net_bind_service=+ep"), "{message}");
    }

    #[test]
    fn port_in_use_error_says_so() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let message = BindError::from_io(addr, io::Error::from(io::ErrorKind::AddrInUse)).to_string();
        assert!(message.contains("already in use"), "{message}");
    }

    #[test]
    fn content_types() {
        let with = |ct: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            check_json_content_type(&headers).is_ok()
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("text/plain;charset=UTF-8"));
        assert!(with("application/vnd.api+json"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("multipart/form-data; boundary=x"));
        assert!(check_json_content_type(&HeaderMap::new()).is_err());
    }
}
