//! The query parameters issue #14 adds to the stats routes (`filters`,
//! `compare`, `metric`, the breakdown's `dimension`, `limit`, `page` and
//! `format`), each checked by hand so that an error names the parameter and
//! the fix.

use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use crate::stats::breakdown::{BREAKDOWN_LIMIT_DEFAULT, BREAKDOWN_LIMIT_MAX};
use crate::stats::filters::{Dimension, Filters};
use crate::stats::series::Metric;
use crate::stats::visit_figures::Compare;
use crate::stats::{Interval, StatsFilter};

/// `filters=`: narrows every figure of a stats route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FiltersQuery {
    /// Filters joined by `;`: `dimension==value` (is), `!=` (is not), `=~` (contains, or a wildcard match
    /// when the value holds `*`), `!~` (does not); values joined by `|` mean any of them. At most 20.
    /// Dimensions: `page`, `entry_page`, `exit_page`, `hostname`, `event_type`, `goal`, `prop:<key>`,
    /// `source`, `referrer`, `channel`, `utm_source` … `utm_content`, `country`, `region`, `city`,
    /// `browser`, `browser_version`, `os`, `device`.
    #[param(example = "source==Google|Bing;page=~/blog/*")]
    filters: Option<String>,
}

impl FiltersQuery {
    /// The filters asked for (none without the parameter).
    pub fn filters(&self) -> Result<Filters, ApiError> {
        Filters::parse(self.filters.as_deref().unwrap_or_default()).map_err(|e| ApiError::BadQuery(e.to_string()))
    }
}

/// `compare=`: the period set beside the asked one.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompareQuery {
    /// `previous_period` (the same length just before `from`) or `year_over_year`; needs `from` and `to`.
    #[param(example = "previous_period")]
    compare: Option<String>,
}

impl CompareQuery {
    /// The comparison asked for, checked against the range of `filter`.
    pub fn compare(&self, filter: &StatsFilter) -> Result<Option<Compare>, ApiError> {
        let compare = match self.compare.as_deref() {
            None => return Ok(None),
            Some("previous_period") => Compare::PreviousPeriod,
            Some("year_over_year") => Compare::YearOverYear,
            Some(other) => {
                return Err(ApiError::BadQuery(format!(
                    "compare must be previous_period or year_over_year, got {other:?}"
                )));
            }
        };
        if filter.from.is_none() || filter.to.is_none() {
            return Err(ApiError::BadQuery("compare needs both from and to (the period to compare)".into()));
        }
        Ok(Some(compare))
    }
}

/// `metric=` and `interval=` of `GET /stats/timeseries`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// What each bucket's `value` counts: `events` (the default), `visitors`, `visits`, `pageviews`,
    /// `bounce_rate` or `visit_duration`.
    #[param(value_type = Option<Metric>)]
    metric: Option<String>,
    /// `minute`, `hour` (the default) or `day`, in UTC.
    #[param(value_type = Option<Interval>)]
    interval: Option<String>,
}

impl SeriesQuery {
    /// The metric asked for, `events` when none.
    pub fn metric(&self) -> Result<Metric, ApiError> {
        match self.metric.as_deref() {
            None => Ok(Metric::Events),
            Some(name) => Metric::parse(name).ok_or_else(|| {
                ApiError::BadQuery(format!(
                    "metric must be visitors, visits, pageviews, events, bounce_rate or visit_duration, got {name:?}"
                ))
            }),
        }
    }

    /// The interval asked for, `hour` when none.
    pub fn interval(&self) -> Result<Interval, ApiError> {
        match self.interval.as_deref() {
            None | Some("hour") => Ok(Interval::Hour),
            Some("minute") => Ok(Interval::Minute),
            Some("day") => Ok(Interval::Day),
            Some(other) => Err(ApiError::BadQuery(format!("interval must be minute, hour or day, got {other:?}"))),
        }
    }
}

/// The parameters of `GET /stats/breakdown` besides the range and filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BreakdownQuery {
    /// What to group by: a dimension of `filters` (`source`, `page`, `goal`, `prop:<key>`, ...).
    #[param(required = true, example = "source")]
    dimension: Option<String>,
    /// Rows per page: 1 to 1000, default 100.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000, example = 100)]
    limit: Option<String>,
    /// The page, from 1 (the previous answer's `next_page`).
    #[param(value_type = Option<u64>, minimum = 1, example = 1)]
    page: Option<String>,
    /// `json` (the default) or `csv`: the same rows as a CSV download.
    #[param(example = "csv")]
    format: Option<String>,
}

/// How a breakdown is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// A CSV download.
    Csv,
}

impl BreakdownQuery {
    /// The dimension, limit, page and format asked for, checked.
    pub fn parts(&self) -> Result<(Dimension, u64, u64, Format), ApiError> {
        let name = self.dimension.as_deref().filter(|d| !d.trim().is_empty()).ok_or_else(|| {
            ApiError::BadQuery("dimension is required, as in /stats/breakdown?site_id=site-001&dimension=source".into())
        })?;
        let dimension = Dimension::parse(name).map_err(|e| ApiError::BadQuery(format!("dimension: {e}")))?;
        let limit = match self.limit.as_deref() {
            None => BREAKDOWN_LIMIT_DEFAULT,
            Some(v) => v.parse::<u64>().ok().filter(|n| (1..=BREAKDOWN_LIMIT_MAX).contains(n)).ok_or_else(|| {
                ApiError::BadQuery(format!("limit must be a whole number from 1 to {BREAKDOWN_LIMIT_MAX}, got {v:?}"))
            })?,
        };
        let page = match self.page.as_deref() {
            None => 1,
            Some(v) => v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                ApiError::BadQuery(format!("page must be a whole number from 1 (a page's next_page), got {v:?}"))
            })?,
        };
        let format = match self.format.as_deref() {
            None | Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some(other) => return Err(ApiError::BadQuery(format!("format must be json or csv, got {other:?}"))),
        };
        Ok((dimension, limit, page, format))
    }
}

/// The site of `GET /stats/realtime`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RealtimeQuery {
    /// The site.
    #[param(required = true, example = "site-001")]
    site_id: Option<String>,
}

impl RealtimeQuery {
    /// The site asked for.
    pub fn site_id(&self) -> Result<String, ApiError> {
        self.site_id
            .clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ApiError::BadQuery("site_id is required, as in /stats/realtime?site_id=site-001".into()))
    }
}
