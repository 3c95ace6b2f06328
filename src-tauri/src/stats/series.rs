//! `GET /stats/timeseries` with `metric=` and `filters=`: each bucket keeps
//! `count` (events, as before) and adds `value`, the metric: `events`,
//! `pageviews` (by the events' `timestamp`), or `visitors`, `visits`,
//! `bounce_rate`, `visit_duration` (over the visits *starting* in the bucket).
//!
//! Unfiltered hourly and daily counts keep their fast path
//! ([`super::timeseries`]); minute buckets and filtered counts are grouped by
//! the server over `events` (`$dateTrunc`).

use std::collections::HashMap;

use mongodb::bson::{DateTime, Document, doc};

use super::filters::Filters;
use super::queries::aggregate;
use super::scope::{self, VISITS};
use super::visit_figures::VisitSums;
use super::{Bucket, Interval, StatsFilter};
use crate::rollups::count_of;
use crate::storage::{Store, StoreError};

/// What a time series' `value` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Distinct visitors of the visits starting in the bucket.
    Visitors,
    /// Visits starting in the bucket.
    Visits,
    /// `page_view` events in the bucket.
    Pageviews,
    /// Events in the bucket (the default: `value` = `count`).
    Events,
    /// Percent of the bucket's visits that bounced, one decimal.
    BounceRate,
    /// Mean duration of the bucket's visits, seconds.
    VisitDuration,
}

impl Metric {
    /// The metric named `name` in the API.
    pub fn parse(name: &str) -> Option<Metric> {
        Some(match name {
            "visitors" => Metric::Visitors,
            "visits" => Metric::Visits,
            "pageviews" => Metric::Pageviews,
            "events" => Metric::Events,
            "bounce_rate" => Metric::BounceRate,
            "visit_duration" => Metric::VisitDuration,
            _ => return None,
        })
    }
}

/// The buckets of `[from, to)` at `interval`, every one listed: events in
/// `count`, `metric` in `value`, over `filter` and `filters`.
pub async fn metric_timeseries(
    store: &Store,
    filter: &StatsFilter,
    filters: &Filters,
    interval: Interval,
    metric: Metric,
    from: DateTime,
    to: DateTime,
) -> Result<Vec<Bucket>, StoreError> {
    let range = StatsFilter { from: Some(from), to: Some(to), ..filter.clone() };
    // Without filters, resolving asks the database nothing.
    let scope = scope::resolve(store, &range, filters).await?;
    let mut buckets = if filters.is_empty() && interval != Interval::Minute {
        super::timeseries(store, &range, interval, from, to).await?
    } else {
        let counts = counts_by_bucket(store, &scope.events, interval).await?;
        fold(interval, from, to, |start| counts.get(&start).copied().unwrap_or(0))
    };
    let values: HashMap<i64, f64> = match metric {
        Metric::Events => return Ok(buckets),
        Metric::Pageviews => {
            let mut matching = scope.events.clone();
            matching.insert("event_type", "page_view");
            counts_by_bucket(store, &matching, interval).await?.into_iter().map(|(at, n)| (at, n as f64)).collect()
        }
        visit_metric => {
            let sums = visit_sums_by_bucket(store, &scope.visits, interval).await?;
            sums.into_iter()
                .map(|(at, sums)| {
                    let figures = sums.figures(0);
                    let value = match visit_metric {
                        Metric::Visitors => figures.visitors as f64,
                        Metric::Visits => figures.visits as f64,
                        Metric::BounceRate => figures.bounce_rate,
                        _ => figures.visit_duration as f64,
                    };
                    (at, value)
                })
                .collect()
        }
    };
    for bucket in &mut buckets {
        let start = DateTime::parse_rfc3339_str(&bucket.start).map_or(0, |t| t.timestamp_millis());
        bucket.value = values.get(&start).copied().unwrap_or(0.0);
    }
    Ok(buckets)
}

/// The unit of `$dateTrunc` for `interval`.
fn unit(interval: Interval) -> &'static str {
    match interval {
        Interval::Minute => "minute",
        Interval::Hour => "hour",
        Interval::Day => "day",
    }
}

/// The events `matching` per bucket start (milliseconds).
async fn counts_by_bucket(
    store: &Store,
    matching: &Document,
    interval: Interval,
) -> Result<HashMap<i64, u64>, StoreError> {
    let pipeline = vec![
        doc! { "$match": matching },
        doc! { "$group": {
            "_id": { "$dateTrunc": { "date": "$timestamp", "unit": unit(interval) } },
            "count": { "$sum": 1 },
        } },
    ];
    let rows = aggregate(store, store.events(), pipeline).await?;
    Ok(rows
        .iter()
        .filter_map(|row| Some((row.get_datetime("_id").ok()?.timestamp_millis(), count_of(row.get("count")))))
        .collect())
}

/// The sums of the visits `matching` per bucket of their `start`.
async fn visit_sums_by_bucket(
    store: &Store,
    matching: &Document,
    interval: Interval,
) -> Result<HashMap<i64, VisitSums>, StoreError> {
    let pipeline = vec![
        doc! { "$match": matching },
        doc! { "$group": {
            "_id": { "b": { "$dateTrunc": { "date": "$start", "unit": unit(interval) } }, "u": "$user_id" },
            "visits": { "$sum": 1 },
            "bounces": { "$sum": { "$cond": [{ "$eq": ["$bounced", true] }, 1, 0] } },
            "duration_ms": { "$sum": "$duration_ms" },
        } },
        doc! { "$group": {
            "_id": "$_id.b",
            "visitors": { "$sum": 1 },
            "visits": { "$sum": "$visits" },
            "bounces": { "$sum": "$bounces" },
            "duration_ms": { "$sum": "$duration_ms" },
        } },
    ];
    let rows = aggregate(store, &store.database().collection(VISITS), pipeline).await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let sums = VisitSums {
                visitors: count_of(row.get("visitors")),
                visits: count_of(row.get("visits")),
                bounces: count_of(row.get("bounces")),
                duration_ms: count_of(row.get("duration_ms")),
                visit_pageviews: 0,
            };
            Some((row.get_datetime("_id").ok()?.timestamp_millis(), sums))
        })
        .collect())
}

/// Every bucket of `[from, to)` with its count (`value` = the count).
fn fold(interval: Interval, from: DateTime, to: DateTime, count: impl Fn(i64) -> u64) -> Vec<Bucket> {
    let first = interval.bucket_of(from).timestamp_millis();
    (first..to.timestamp_millis())
        .step_by(interval.millis() as usize)
        .map(|start| {
            let count = count(start);
            Bucket {
                start: DateTime::from_millis(start).try_to_rfc3339_string().unwrap_or_default(),
                count,
                value: count as f64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_buckets_cover_the_range() {
        let from = DateTime::from_millis(90_000);
        let buckets = fold(Interval::Minute, from, DateTime::from_millis(240_000), |at| (at / 60_000) as u64);
        assert_eq!(buckets.iter().map(|b| b.count).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(buckets[0].start, "1970-01-01T00:01:00Z");
        assert_eq!(buckets[2].value, 3.0);
        assert_eq!(Metric::parse("bounce_rate"), Some(Metric::BounceRate));
        assert_eq!(Metric::parse("sessions"), None);
    }
}
