//! The stats routes: `GET /stats`, `/stats/timeseries`, `/stats/export.csv` and
//! `/sites`. Each checks the token, parses its query and calls one stats function.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use mongodb::bson::DateTime;
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::openapi::{BadRequest, HostNotAllowed, StatsTimeLimit, Unauthorized, Unavailable};
use crate::http::query::{IntervalQuery, SitesQuery, StatsQuery, parse_query};
use crate::http::report_query::{CompareQuery, FiltersQuery, SeriesQuery};
use crate::http::state::ApiState;
use crate::stats::export::{self, CSV_CONTENT_TYPE, ExportError, ExportRequest};
use crate::stats::series::{Metric, metric_timeseries};
use crate::stats::visit_figures::{SiteReport, site_report};
use crate::stats::{self, Bucket, Interval, SiteSummary};
use crate::storage::StoreError;

/// Longest wait for the stats queries.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a stats computation within [`STATS_TIMEOUT`]; a query the database
/// stopped at its own time limit (or this wait ending) is a 504.
pub async fn within_stats_timeout<T>(work: impl Future<Output = Result<T, StoreError>>) -> Result<T, ApiError> {
    match tokio::time::timeout(STATS_TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(stats_error(error)),
        Err(_) => Err(ApiError::StatsTimeLimit(STATS_TIMEOUT)),
    }
}

/// A stats query's failure as answered: past its time limit a 504, else a 503.
fn stats_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Timeout(limit) => ApiError::StatsTimeLimit(limit),
        other => ApiError::Unavailable(other),
    }
}

/// `GET /stats?site_id=…[&from=…][&to=…][&event_type=…][&filters=…][&compare=…]`:
/// exact totals, unique users, top paths, events per type, and the visit figures.
///
/// Over processed events; an unknown site gives zeros. Top paths: the 10 most
/// visited, by count descending then path ascending. Event types: the 20 most
/// counted (same order); past 20, `events_by_type_other` says how many types
/// were left out and how many events they hold. Visit figures (`visitors`,
/// `visits`, `views_per_visit`, `bounce_rate`, `visit_duration`) count the
/// visits starting in the range, `pageviews` the `page_view` events in it.
/// `filters` narrow every figure; `compare` adds the compared period's figures.
#[utoipa::path(
    get,
    path = "/stats",
    tag = "stats",
    params(StatsQuery, FiltersQuery, CompareQuery),
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "The site's figures", body = SiteReport),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = HostNotAllowed),
        (status = 503, response = Unavailable),
        (status = 504, response = StatsTimeLimit),
    )
)]
pub async fn site_stats(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, QueryRejection>,
    filters: Result<Query<FiltersQuery>, QueryRejection>,
    compare: Result<Query<CompareQuery>, QueryRejection>,
) -> Result<Json<SiteReport>, ApiError> {
    state.token.authorize(&headers)?;
    let filter = parse_query(query)?.filter()?;
    let filters = parse_query(filters)?.filters()?;
    let compare = parse_query(compare)?.compare(&filter)?;
    Ok(Json(within_stats_timeout(site_report(&state.store, &filter, &filters, compare)).await?))
}

/// The answer of `GET /stats/timeseries`.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Timeseries {
    /// The site.
    pub site_id: String,
    /// The buckets' width.
    pub interval: Interval,
    /// What each bucket's `value` counts.
    pub metric: Metric,
    /// The range's start (RFC 3339).
    #[schema(format = DateTime)]
    pub from: String,
    /// The range's end, exclusive (RFC 3339).
    #[schema(format = DateTime)]
    pub to: String,
    /// Every bucket of the range in order, zeros included.
    pub buckets: Vec<Bucket>,
}

/// `GET /stats/timeseries?site_id=…&interval=minute|hour|day[&metric][&from][&to][&event_type][&filters]`:
/// events and a metric per bucket. Without `to`, up to now; without `from`, the
/// last 60 minutes (by minute), 24 hours (hourly) or 30 days (daily).
///
/// Buckets are UTC minutes, hours or days; the first and last count only what
/// is inside the range. At most 10,000 buckets. Each bucket's `count` is its
/// events, its `value` the `metric` (default `events`): visit metrics count the
/// visits starting in the bucket.
#[utoipa::path(
    get,
    path = "/stats/timeseries",
    tag = "stats",
    params(StatsQuery, FiltersQuery, SeriesQuery),
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "Events per bucket", body = Timeseries),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = HostNotAllowed),
        (status = 503, response = Unavailable),
        (status = 504, response = StatsTimeLimit),
    )
)]
pub async fn site_timeseries(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, QueryRejection>,
    filters: Result<Query<FiltersQuery>, QueryRejection>,
    series: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<Json<Timeseries>, ApiError> {
    state.token.authorize(&headers)?;
    let filter = parse_query(query)?.filter()?;
    let filters = parse_query(filters)?.filters()?;
    let series = parse_query(series)?;
    let (interval, metric) = (series.interval()?, series.metric()?);
    let to = filter.to.unwrap_or_else(DateTime::now);
    let default_span = match interval {
        Interval::Minute => 60,
        Interval::Hour => 24,
        Interval::Day => 30,
    } * interval.millis();
    let from = filter.from.unwrap_or_else(|| DateTime::from_millis(to.timestamp_millis() - default_span));
    if from > to {
        return Err(ApiError::BadQuery("from must not be after to (to is exclusive)".into()));
    }
    if stats::bucket_count(interval, from, to) > stats::MAX_BUCKETS {
        return Err(ApiError::BadQuery(format!(
            "range too long: at most {} buckets; use a wider interval (hour, day) or a shorter range",
            stats::MAX_BUCKETS
        )));
    }
    let series = metric_timeseries(&state.store, &filter, &filters, interval, metric, from, to);
    let buckets = within_stats_timeout(series).await?;
    let rfc3339 = |t: DateTime| t.try_to_rfc3339_string().unwrap_or_default();
    Ok(Json(Timeseries { site_id: filter.site_id, interval, metric, from: rfc3339(from), to: rfc3339(to), buckets }))
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
        (status = 403, response = HostNotAllowed),
        (status = 503, response = Unavailable),
        (status = 504, response = StatsTimeLimit),
    )
)]
pub async fn export_csv(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, QueryRejection>,
    interval: Result<Query<IntervalQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.token.authorize(&headers)?;
    let filter = parse_query(query)?.filter()?;
    let interval = parse_query(interval)?.interval(Interval::Day)?;
    let request = ExportRequest { filter, interval };
    let csv = match tokio::time::timeout(STATS_TIMEOUT, export::site_csv(&state.store, &request)).await {
        Ok(Ok(csv)) => csv,
        Ok(Err(ExportError::Store(error))) => return Err(stats_error(error)),
        Ok(Err(too_long @ ExportError::TooManyBuckets { .. })) => return Err(ApiError::BadQuery(too_long.to_string())),
        Err(_) => return Err(ApiError::StatsTimeLimit(STATS_TIMEOUT)),
    };
    let disposition = format!("attachment; filename=\"{}\"", export::file_name(&request.filter.site_id));
    let disposition = header::HeaderValue::from_str(&disposition).expect("file names hold only safe characters");
    let content_type = header::HeaderValue::from_static(CSV_CONTENT_TYPE);
    Ok(([(header::CONTENT_TYPE, content_type), (header::CONTENT_DISPOSITION, disposition)], csv).into_response())
}

/// The answer of `GET /sites`: one page.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SiteList {
    /// The page's sites with processed events, most events first (then by id).
    pub sites: Vec<SiteSummary>,
    /// The `offset` of the next page; `null` on the last page.
    pub next_offset: Option<u64>,
}

/// `GET /sites[?limit=…][&offset=…]`: the sites with processed events and their
/// number of events, one page at a time.
///
/// At most `limit` sites (default 100, at most 1000) from position `offset`;
/// follow `next_offset` until it is `null`. Without parameters, the first 100
/// (every site, for deployments with no more).
#[utoipa::path(
    get,
    path = "/sites",
    tag = "stats",
    params(SitesQuery),
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "One page of sites", body = SiteList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = HostNotAllowed),
        (status = 503, response = Unavailable),
        (status = 504, response = StatsTimeLimit),
    )
)]
pub async fn list_sites(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<SitesQuery>, QueryRejection>,
) -> Result<Json<SiteList>, ApiError> {
    state.token.authorize(&headers)?;
    let (offset, limit) = parse_query(query)?.page()?;
    let page = within_stats_timeout(stats::sites_page(&state.store, offset, limit)).await?;
    Ok(Json(SiteList { sites: page.sites, next_offset: page.next_offset }))
}
