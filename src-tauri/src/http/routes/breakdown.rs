//! The routes over visits of issue #14 that are not `/stats` itself:
//! `GET /stats/breakdown` (JSON or CSV) and `GET /stats/realtime`. Each checks
//! the token, parses its query and calls one stats function.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use mongodb::bson::DateTime;

use super::stats::within_stats_timeout;
use crate::http::error::ApiError;
use crate::http::openapi::{BadRequest, HostNotAllowed, StatsTimeLimit, Unauthorized, Unavailable};
use crate::http::query::{StatsQuery, parse_query};
use crate::http::report_query::{BreakdownQuery, FiltersQuery, Format, RealtimeQuery};
use crate::http::state::ApiState;
use crate::stats::breakdown::{self, Breakdown, BreakdownRequest, breakdown_csv};
use crate::stats::export::CSV_CONTENT_TYPE;
use crate::stats::realtime::{self, Realtime};

/// `GET /stats/breakdown?site_id=…&dimension=…[&from][&to][&filters][&limit][&page][&format=csv]`:
/// a dimension's values with their figures, one page at a time.
///
/// Rows by visitors descending, then value ascending. Visit-level dimensions
/// (`source`, `channel`, `country`, `entry_page`, ...) give `visitors, visits,
/// pageviews, events, bounce_rate, visit_duration` over the visits starting in
/// the range; event-level ones (`page`, `hostname`, `event_type`, `prop:<key>`)
/// give `visitors, pageviews, events` over its events; `goal` gives one row per
/// goal with `visitors, conversions, conversion_rate`. A missing value is the
/// row `(none)` (`Direct / None` for `source`, `Direct` for `channel`).
/// `format=csv` answers the same rows as a CSV download.
#[utoipa::path(
    get,
    path = "/stats/breakdown",
    tag = "stats",
    params(StatsQuery, FiltersQuery, BreakdownQuery),
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "One page of rows (JSON, or CSV with format=csv)", body = Breakdown),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = HostNotAllowed),
        (status = 503, response = Unavailable),
        (status = 504, response = StatsTimeLimit),
    )
)]
pub async fn stats_breakdown(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, QueryRejection>,
    filters: Result<Query<FiltersQuery>, QueryRejection>,
    breakdown_query: Result<Query<BreakdownQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.token.authorize(&headers)?;
    let filter = parse_query(query)?.filter()?;
    let filters = parse_query(filters)?.filters()?;
    let (dimension, limit, page, format) = parse_query(breakdown_query)?.parts()?;
    let request = BreakdownRequest { filter, filters, dimension, limit, page };
    let rows = within_stats_timeout(breakdown::breakdown(&state.store, &request)).await?;
    if format == Format::Json {
        return Ok(Json(rows).into_response());
    }
    let name = csv_file_name(&request.filter.site_id, &rows.dimension);
    let disposition = header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .expect("file names hold only safe characters");
    let content_type = header::HeaderValue::from_static(CSV_CONTENT_TYPE);
    let csv = breakdown_csv(&request.dimension, &rows);
    Ok(([(header::CONTENT_TYPE, content_type), (header::CONTENT_DISPOSITION, disposition)], csv).into_response())
}

/// `<site>-<dimension>.csv`, reduced to characters safe in a header and a file system.
fn csv_file_name(site_id: &str, dimension: &str) -> String {
    let safe = |text: &str| -> String {
        text.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') { c } else { '_' }).collect()
    };
    format!("{}-{}.csv", safe(site_id), safe(dimension))
}

/// `GET /stats/realtime?site_id=…[&filters=…]`: the visitors of the last 5
/// minutes and the pages they are on (each visitor's latest event).
#[utoipa::path(
    get,
    path = "/stats/realtime",
    tag = "stats",
    params(RealtimeQuery, FiltersQuery),
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "Current visitors and their pages", body = Realtime),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = HostNotAllowed),
        (status = 503, response = Unavailable),
        (status = 504, response = StatsTimeLimit),
    )
)]
pub async fn stats_realtime(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<RealtimeQuery>, QueryRejection>,
    filters: Result<Query<FiltersQuery>, QueryRejection>,
) -> Result<Json<Realtime>, ApiError> {
    state.token.authorize(&headers)?;
    let site_id = parse_query(query)?.site_id()?;
    let filters = parse_query(filters)?.filters()?;
    Ok(Json(within_stats_timeout(realtime::realtime(&state.store, &site_id, &filters, DateTime::now())).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_file_names_are_safe() {
        assert_eq!(csv_file_name("site-001", "prop:plan"), "site-001-prop_plan.csv");
        assert_eq!(csv_file_name("a/b\"", "source"), "a_b_-source.csv");
    }
}
