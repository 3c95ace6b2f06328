//! The API's errors: every refusal is a JSON `{"error": "..."}` with its status,
//! in words that name the field or the fix; database details go to the log only.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mongodb::bson::DateTime;
use tracing::{debug, warn};
use utoipa::ToSchema;

use crate::ingest::{BatchError, SubmitError};
use crate::storage::StoreError;
use crate::telemetry::counters::RefusalReason;

/// An error answered to a client, as `{"error": message}` with its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The ingestion stage refused the events (invalid, site not allowed, no anonymous id).
    #[error(transparent)]
    Submit(SubmitError),
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
    /// A path segment or a settings body is not acceptable (the message names
    /// the field and the fix); nothing was saved.
    #[error("{0}")]
    Invalid(String),
    /// The database could not be used: nothing was stored.
    // The details (addresses, driver messages) go to the log, not to clients.
    #[error("database unavailable, nothing was acknowledged; retry shortly")]
    Unavailable(StoreError),
    /// A stats query ran past its time limit: the database stopped it (504).
    #[error(
        "stats query stopped at its time limit ({0:?}): the database dropped the work; narrow the range \
         (from/to) or retry later"
    )]
    StatsTimeLimit(std::time::Duration),
    /// No route here.
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// The route exists with other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `/stats` without the right token.
    #[error("missing or wrong API token: send the header Authorization: Bearer <API_TOKEN>")]
    Unauthorized,
    /// A read route asked under a `Host` name this server does not answer to
    /// (the guard against DNS rebinding).
    #[error(
        "this server does not answer to the name {0:?}: reach it as localhost or by IP address, or add the name to PUBLIC_HOSTS (comma-separated) in its configuration"
    )]
    HostNotAllowed(String),
    /// Too many requests in flight: refused without being read.
    #[error("server busy: too many requests at once, nothing was stored; retry shortly")]
    Overloaded,
    /// The API is stopping and no longer stores events.
    #[error("server shutting down, nothing was stored; retry shortly")]
    ShuttingDown,
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

impl From<SubmitError> for ApiError {
    /// What a client is told of a refused submission: the outages and the
    /// shutdown in the API's words (and logged as such), the rest as ingestion says.
    fn from(error: SubmitError) -> ApiError {
        match error {
            SubmitError::Overloaded => ApiError::Overloaded,
            SubmitError::Unavailable(error) => ApiError::Unavailable(error),
            SubmitError::ShuttingDown => ApiError::ShuttingDown,
            refused => ApiError::Submit(refused),
        }
    }
}

impl ApiError {
    /// Why events were refused, for the metrics (`None` for errors no event submission meets).
    pub fn refusal_reason(&self) -> Option<RefusalReason> {
        Some(match self {
            ApiError::Submit(error) => submit_refusal_reason(error),
            ApiError::BadQuery(_) => RefusalReason::Invalid,
            ApiError::Body { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => RefusalReason::TooLarge,
            ApiError::Body { .. } => RefusalReason::Timeout,
            ApiError::UnsupportedMediaType(_) => RefusalReason::UnsupportedType,
            ApiError::Overloaded => RefusalReason::Overloaded,
            ApiError::Unavailable(_) => RefusalReason::Unavailable,
            ApiError::ShuttingDown => RefusalReason::ShuttingDown,
            ApiError::NotFound(_)
            | ApiError::Invalid(_)
            | ApiError::MethodNotAllowed
            | ApiError::Unauthorized
            | ApiError::HostNotAllowed(_)
            | ApiError::StatsTimeLimit(_) => return None,
        })
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Submit(error) => submit_status(error),
            ApiError::BadQuery(_) | ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Body { status, .. } => *status,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) | ApiError::Overloaded | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::StatsTimeLimit(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::HostNotAllowed(_) => StatusCode::FORBIDDEN,
        }
    }
}

/// The metrics' reason for a refused submission.
fn submit_refusal_reason(error: &SubmitError) -> RefusalReason {
    match error {
        SubmitError::InvalidBatch(BatchError::TooMany(_)) => RefusalReason::TooLarge,
        SubmitError::Invalid(_) | SubmitError::InvalidBatch(_) => RefusalReason::Invalid,
        SubmitError::InBatch { error, .. } => submit_refusal_reason(error),
        SubmitError::SiteNotAllowed(_) => RefusalReason::SiteNotAllowed,
        SubmitError::Overloaded => RefusalReason::Overloaded,
        SubmitError::Unavailable(_) => RefusalReason::Unavailable,
        SubmitError::ShuttingDown => RefusalReason::ShuttingDown,
        SubmitError::AnonymousId(_) => RefusalReason::AnonymousId,
    }
}

/// The status of a refused submission.
fn submit_status(error: &SubmitError) -> StatusCode {
    match error {
        SubmitError::InvalidBatch(BatchError::TooMany(_)) => StatusCode::PAYLOAD_TOO_LARGE,
        SubmitError::Invalid(_) | SubmitError::InvalidBatch(_) => StatusCode::BAD_REQUEST,
        SubmitError::InBatch { error, .. } => submit_status(error),
        SubmitError::SiteNotAllowed(_) => StatusCode::FORBIDDEN,
        SubmitError::Overloaded
        | SubmitError::Unavailable(_)
        | SubmitError::ShuttingDown
        | SubmitError::AnonymousId(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Unavailable(error) = &self {
            log_unavailable(error);
        }
        let index = match &self {
            ApiError::Submit(SubmitError::InBatch { index, .. }) => Some(*index),
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
