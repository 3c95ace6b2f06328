//! The operations routes: `GET /health` (the database, this process's worker,
//! the queue depth) and `GET /metrics` (Prometheus).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::debug;
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::openapi::{HostNotAllowed, Unauthorized, Unavailable};
use crate::http::state::{ApiState, WorkerHealth};
use crate::storage::StoreError;
use crate::telemetry::counters::METRICS_CONTENT_TYPE;
use crate::worker::quarantine;

/// Longest wait for `GET /health`'s database checks (ping and queue depth together).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the queue depth shown by `GET /metrics`: a scrape must not hang on the database.
pub const METRICS_QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// The answer of `GET /health`.
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(example = json!({ "status": "ok", "database": "ok", "worker": "running", "queue_depth": 0, "quarantined": 0 }))]
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
    /// Queue entries the database refused to move, set aside in
    /// `events_quarantine` for an operator to requeue (absent when it could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<u64>,
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
pub async fn health(State(state): State<ApiState>) -> (StatusCode, Json<Health>) {
    let worker = state.worker.health();
    let checks = async {
        state.store.ping().await?;
        // The ping proved the database answers: a failed count is no outage.
        Ok::<_, StoreError>((state.store.queue_depth().await.ok(), quarantine::count(&state.store).await.ok()))
    };
    let reason = match tokio::time::timeout(HEALTH_TIMEOUT, checks).await {
        Ok(Ok((queue_depth, quarantined))) => {
            let health = Health { status: "ok", database: "ok", reason: None, worker, queue_depth, quarantined };
            return (StatusCode::OK, Json(health));
        }
        Ok(Err(error)) => {
            // Addresses and driver messages stay in the log: /health needs no token.
            debug!(%error, "health check: database unreachable");
            "the database cannot be reached".to_string()
        }
        Err(_) => format!("the database did not answer a ping within {HEALTH_TIMEOUT:?}"),
    };
    let health = Health {
        status: "unavailable",
        database: "unreachable",
        reason: Some(reason),
        worker,
        queue_depth: None,
        quarantined: None,
    };
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
        (status = 403, response = HostNotAllowed),
        (status = 503, response = Unavailable),
    )
)]
pub async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.token.authorize(&headers)?;
    let depths = async { (state.store.queue_depth().await.ok(), quarantine::count(&state.store).await.ok()) };
    let (depth, quarantined) = tokio::time::timeout(METRICS_QUERY_TIMEOUT, depths).await.unwrap_or_default();
    state.counters.set_queue_depth(depth);
    state.counters.set_quarantine_depth(quarantined);
    Ok(([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], state.counters.encode()).into_response())
}
