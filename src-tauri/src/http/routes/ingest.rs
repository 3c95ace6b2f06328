//! The ingestion routes: `POST /event`, `POST /events` and their CORS
//! preflights. Each reads the body, hands it to [`Ingest`](crate::ingest::Ingest)
//! and shapes the answer; the events received and refused are counted here,
//! where every refusal (the HTTP layer's too) is seen.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::{Extension, Json};
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::openapi::{BadRequest, Forbidden, PayloadTooLarge, RequestTimeout, Unavailable, UnsupportedMediaType};
use crate::http::state::ApiState;
use crate::ingest::{self, EventBody, Ignored, MAX_BATCH_BODY_BYTES, MAX_BODY_BYTES, Sender, Submitted};
use crate::telemetry::counters::PipelineCounters;

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
pub async fn event_preflight() -> StatusCode {
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
pub async fn events_preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// The answer to an accepted `POST /event` or `POST /events`.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Queued {
    /// `queued`: the events are stored in the queue (journaled); `ignored`:
    /// a bot sent them, or they were excluded, nothing is stored (202).
    #[schema(value_type = String, example = "queued")]
    pub status: &'static str,
    /// Why they were ignored: `bot`, or `excluded` (`EXCLUDED_IPS`, or the
    /// browser excluded itself at `/exclude-me`); absent when queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "bot")]
    pub reason: Option<&'static str>,
    /// How many events a batch stored (absent for `POST /event`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// How many events of a batch were ignored (present only when some were).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<usize>,
}

impl Queued {
    /// The answer and its status: 200 when queued, 202 when ignored. `batch`:
    /// the answer to `POST /events`, which always says how many were queued.
    fn answer(submitted: Submitted, batch: bool) -> (StatusCode, Json<Queued>) {
        match submitted {
            Submitted::Queued(count) => (
                StatusCode::OK,
                Json(Queued { status: "queued", reason: None, count: batch.then_some(count), ignored: None }),
            ),
            Submitted::Ignored { reason, count } => (
                StatusCode::ACCEPTED,
                Json(Queued {
                    status: "ignored",
                    reason: Some(match reason {
                        Ignored::Bot(_) => "bot",
                        Ignored::Excluded(_) => "excluded",
                    }),
                    count: batch.then_some(0),
                    ignored: batch.then_some(count),
                }),
            ),
        }
    }
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
        (status = 202, description = "Sent by a bot (crawler or headless browser), or excluded (`EXCLUDED_IPS`, \
                                      `/exclude-me`): not stored, counted in `analytics_events_dropped_total`",
            body = Queued,
            example = json!({ "status": "ignored", "reason": "bot" })),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 503, response = Unavailable),
    )
)]
pub async fn record_event(
    State(state): State<ApiState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    let outcome = async {
        check_json_content_type(&headers)?;
        let body = read_body(body, MAX_BODY_BYTES)?;
        let submitted = state.ingest.submit_event(&body, sender(&peer, &headers)).await?;
        Ok(Queued::answer(submitted, false))
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
        (status = 202, description = "Sent by a bot (crawler or headless browser), or excluded (`EXCLUDED_IPS`, \
                                      `/exclude-me`): none stored, all counted in `analytics_events_dropped_total`",
            body = Queued,
            example = json!({ "status": "ignored", "reason": "bot", "count": 0, "ignored": 2 })),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 503, response = Unavailable),
    )
)]
pub async fn record_events(
    State(state): State<ApiState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    // A body that does not read as an array counts as one event in the metrics.
    let mut submitted = 1;
    let outcome = async {
        check_json_content_type(&headers)?;
        let body = read_body(body, MAX_BATCH_BODY_BYTES)?;
        let elements = ingest::event::split_batch(&body).map_err(ingest::SubmitError::from)?;
        submitted = elements.len();
        let submitted = state.ingest.submit_batch(elements, sender(&peer, &headers)).await?;
        Ok(Queued::answer(submitted, true))
    }
    .await;
    count_submission(&state.counters, submitted, &outcome);
    outcome
}

/// Who sent the request, for the anonymous ids.
fn sender<'a>(peer: &Option<Extension<ConnectInfo<SocketAddr>>>, headers: &'a HeaderMap) -> Sender<'a> {
    Sender { peer: peer.as_ref().map(|Extension(ConnectInfo(address))| address.ip()), headers }
}

/// Counts `events` submitted to the API, and refused if `outcome` is an error.
pub fn count_submission<T>(counters: &PipelineCounters, events: usize, outcome: &Result<T, ApiError>) {
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

/// Accepts `application/json`, `*/*+json` and `text/plain` (what a browser's
/// `sendBeacon` sends for a string body); also the rule of `PUT /sites/{site_id}/goals`.
pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
