//! The stats routes' query parameters, each checked by hand so that an error
//! names the parameter and the fix.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use mongodb::bson::DateTime;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use crate::stats::{Interval, SITES_PAGE_DEFAULT, SITES_PAGE_MAX, StatsFilter};

/// The filter of the stats routes; every field is checked by hand so that an
/// error names it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
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
pub struct IntervalQuery {
    /// `hour` (the default) or `day`, in UTC.
    #[param(value_type = Option<Interval>)]
    interval: Option<String>,
}

impl IntervalQuery {
    /// The interval asked for, `default` when none.
    pub fn interval(&self, default: Interval) -> Result<Interval, ApiError> {
        match self.interval.as_deref() {
            None => Ok(default),
            Some("hour") => Ok(Interval::Hour),
            Some("day") => Ok(Interval::Day),
            Some(other) => Err(ApiError::BadQuery(format!("interval must be hour or day, got {other:?}"))),
        }
    }
}

/// The page of `GET /sites` asked for.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SitesQuery {
    /// Most sites in the page: 1 to 1000, default 100.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000, example = 100)]
    limit: Option<String>,
    /// Sites to skip (from 0): the `next_offset` of the previous page.
    #[param(value_type = Option<u64>, minimum = 0, example = 0)]
    offset: Option<String>,
}

impl SitesQuery {
    /// The offset and limit asked for, checked.
    pub fn page(&self) -> Result<(u64, u64), ApiError> {
        let limit = match self.limit.as_deref() {
            None => SITES_PAGE_DEFAULT,
            Some(v) => v.parse::<u64>().ok().filter(|n| (1..=SITES_PAGE_MAX).contains(n)).ok_or_else(|| {
                ApiError::BadQuery(format!("limit must be a whole number from 1 to {SITES_PAGE_MAX}, got {v:?}"))
            })?,
        };
        let offset = match self.offset.as_deref() {
            None => 0,
            Some(v) => v.parse::<u64>().map_err(|_| {
                ApiError::BadQuery(format!("offset must be a whole number from 0 (a page's next_offset), got {v:?}"))
            })?,
        };
        Ok((offset, limit))
    }
}

impl StatsQuery {
    /// The site, range and type asked for.
    pub fn filter(&self) -> Result<StatsFilter, ApiError> {
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
pub fn parse_query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(q)| q).map_err(|rejection| ApiError::BadQuery(format!("invalid query: {}", rejection.body_text())))
}
