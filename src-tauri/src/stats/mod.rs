//! Stats: the exact per-site figures of `GET /stats`, `GET /stats/timeseries` and
//! `GET /sites`.
//!
//! When the rollups are ready (see [`crate::rollups`]) they are read from there: a few
//! small documents per site, plus the raw events of a time range's partial hours
//! at either end. Otherwise, and always in the `plain` functions, they are
//! computed from `events` itself; that plain aggregation is the reference the
//! fast path is tested against.
//!
//! [`from_rollups`] holds the fast path, [`from_events`] the plain aggregation
//! (and the raw reads the fast path makes of partial hours), [`export`] the CSV.

pub mod export;
pub mod from_events;
pub mod from_rollups;

use std::collections::HashMap;

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use serde::{Deserialize, Serialize};

use crate::rollups::{self, HOUR_MS, count_of};
use crate::storage::{Store, StoreError};

pub use from_events::{first_event_time, plain_hourly_counts, plain_site_stats};
use from_rollups::rollup_site_stats;
pub use from_rollups::{fast_hourly_counts, fast_site_stats};

/// How many paths `top_paths` lists.
pub const TOP_PATHS: usize = 10;
/// Most buckets one time series may hold.
pub const MAX_BUCKETS: i64 = 10_000;

/// Which events a figure covers: one site, optionally a time range (`from`
/// inclusive, `to` exclusive, on the events' `timestamp`) and one event type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsFilter {
    /// The site.
    pub site_id: String,
    /// Events at or after this instant.
    pub from: Option<DateTime>,
    /// Events before this instant.
    pub to: Option<DateTime>,
    /// Only events of this type.
    pub event_type: Option<String>,
}

impl StatsFilter {
    /// Every event of `site_id`.
    pub fn site(site_id: &str) -> StatsFilter {
        StatsFilter { site_id: site_id.to_string(), ..StatsFilter::default() }
    }
}

/// The answer of `GET /stats` for one site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteStats {
    /// Number of processed events of the site.
    pub total_events: u64,
    /// Number of distinct `user_id`s among them.
    pub unique_users: u64,
    /// The most visited paths, by count descending, then path ascending.
    pub top_paths: Vec<PathCount>,
    /// Events per type, by count descending, then type ascending.
    #[serde(default)]
    pub events_by_type: Vec<TypeCount>,
}

/// One row of `top_paths`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PathCount {
    /// The page path.
    pub path: String,
    /// Events recorded on it.
    pub count: u64,
}

/// One row of `events_by_type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TypeCount {
    /// The event type.
    pub event_type: String,
    /// Events of that type.
    pub count: u64,
}

/// The width of a time-series bucket (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
}

impl Interval {
    /// The bucket's length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Interval::Hour => HOUR_MS,
            Interval::Day => 24 * HOUR_MS,
        }
    }

    /// The start of the bucket holding `time`.
    pub fn bucket_of(self, time: DateTime) -> DateTime {
        DateTime::from_millis(time.timestamp_millis().div_euclid(self.millis()) * self.millis())
    }
}

/// One bucket of a time series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bucket {
    /// The bucket's start, RFC 3339 in UTC.
    pub start: String,
    /// Events in the bucket (and in the asked range).
    pub count: u64,
}

/// One site seen in `events`, with its number of events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteSummary {
    /// The site.
    pub site_id: String,
    /// Its processed events.
    pub events: u64,
}

/// A site's stats: from the rollups when they are ready, else from `events`.
pub async fn site_stats(store: &Store, filter: &StatsFilter) -> Result<SiteStats, StoreError> {
    let readiness = rollups::readiness(store).await?;
    if readiness.ready {
        rollup_site_stats(store, filter, readiness.all_time_visitors).await
    } else {
        plain_site_stats(store, filter).await
    }
}

/// A site's events per bucket over `[from, to)`, every bucket listed (zeros
/// included); the first and last buckets count only what is inside the range.
pub async fn timeseries(
    store: &Store,
    filter: &StatsFilter,
    interval: Interval,
    from: DateTime,
    to: DateTime,
) -> Result<Vec<Bucket>, StoreError> {
    let filter = StatsFilter { from: Some(from), to: Some(to), ..filter.clone() };
    let hourly = if rollups::are_ready(store).await? {
        fast_hourly_counts(store, &filter).await?
    } else {
        plain_hourly_counts(store, &filter).await?
    };
    Ok(fold_buckets(hourly, interval, from, to))
}

/// Every site with processed events, most events first (then by id).
pub async fn sites(store: &Store) -> Result<Vec<SiteSummary>, StoreError> {
    let rows: Vec<Document> = if rollups::are_ready(store).await? {
        // A site's count is the sum of its shards (see [`crate::rollups`]).
        let pipeline = [
            doc! { "$group": { "_id": "$site_id", "count": { "$sum": "$count" } } },
            doc! { "$sort": { "count": -1, "_id": 1 } },
        ];
        let sites = store.database().collection::<Document>(rollups::SITES);
        sites.aggregate(pipeline).await?.try_collect().await?
    } else {
        let pipeline = [
            doc! { "$group": { "_id": "$site_id", "count": { "$sum": 1 } } },
            doc! { "$sort": { "count": -1, "_id": 1 } },
        ];
        store.events().aggregate(pipeline).await?.try_collect().await?
    };
    Ok(rows
        .iter()
        .map(|row| SiteSummary {
            site_id: row.get_str("_id").unwrap_or_default().to_string(),
            events: count_of(row.get("count")),
        })
        .collect())
}

/// Totals, events per type and top paths from `(type, path, count)` rows (a
/// pair may appear in several rows: they add up).
pub(crate) fn fold_counts(rows: Vec<(String, String, u64)>, unique_users: u64) -> SiteStats {
    let mut total_events = 0;
    let mut by_type: HashMap<String, u64> = HashMap::new();
    let mut by_path: HashMap<String, u64> = HashMap::new();
    for (kind, path, count) in rows {
        total_events += count;
        *by_type.entry(kind).or_default() += count;
        *by_path.entry(path).or_default() += count;
    }
    let mut top_paths: Vec<PathCount> = by_path.into_iter().map(|(path, count)| PathCount { path, count }).collect();
    top_paths.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
    top_paths.truncate(TOP_PATHS);
    let mut events_by_type: Vec<TypeCount> =
        by_type.into_iter().map(|(event_type, count)| TypeCount { event_type, count }).collect();
    events_by_type.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.event_type.cmp(&b.event_type)));
    SiteStats { total_events, unique_users, top_paths, events_by_type }
}

/// Spreads per-hour counts over the buckets of `[from, to)`.
fn fold_buckets(hourly: HashMap<i64, u64>, interval: Interval, from: DateTime, to: DateTime) -> Vec<Bucket> {
    let step = interval.millis();
    let first = interval.bucket_of(from).timestamp_millis();
    let mut counts: HashMap<i64, u64> = HashMap::new();
    for (hour, count) in hourly {
        *counts.entry(interval.bucket_of(DateTime::from_millis(hour)).timestamp_millis()).or_default() += count;
    }
    (first..to.timestamp_millis())
        .step_by(step as usize)
        .map(|start| Bucket {
            start: DateTime::from_millis(start).try_to_rfc3339_string().unwrap_or_default(),
            count: counts.get(&start).copied().unwrap_or(0),
        })
        .collect()
}

/// The number of buckets `[from, to)` spans at `interval`.
pub fn bucket_count(interval: Interval, from: DateTime, to: DateTime) -> i64 {
    let first = interval.bucket_of(from).timestamp_millis();
    (to.timestamp_millis() - first + interval.millis() - 1).div_euclid(interval.millis()).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64, millis: i64) -> DateTime {
        DateTime::from_millis(hours * HOUR_MS + millis)
    }

    #[test]
    fn counts_fold_into_totals_types_and_top_paths() {
        let rows = vec![
            ("page_view".to_string(), "/b".to_string(), 3),
            ("page_view".to_string(), "/a".to_string(), 3),
            ("signup".to_string(), "/b".to_string(), 1),
            ("page_view".to_string(), "/a".to_string(), 1),
        ];
        let stats = fold_counts(rows, 2);
        assert_eq!(stats.total_events, 8);
        let paths: Vec<_> = stats.top_paths.iter().map(|p| (p.path.as_str(), p.count)).collect();
        assert_eq!(paths, [("/a", 4), ("/b", 4)], "ties by path ascending");
        assert_eq!(stats.events_by_type[0], TypeCount { event_type: "page_view".into(), count: 7 });
    }

    #[test]
    fn buckets_cover_the_range_with_zeros() {
        let hourly = HashMap::from([(HOUR_MS, 2), (3 * HOUR_MS, 5), (26 * HOUR_MS, 1)]);
        let hours = fold_buckets(hourly.clone(), Interval::Hour, at(1, 30), at(4, 0));
        assert_eq!(hours.iter().map(|b| b.count).collect::<Vec<_>>(), [2, 0, 5]);
        assert_eq!(hours[0].start, "1970-01-01T01:00:00Z");
        let days = fold_buckets(hourly, Interval::Day, at(0, 0), at(48, 0));
        assert_eq!(days.iter().map(|b| b.count).collect::<Vec<_>>(), [7, 1]);
        assert_eq!(bucket_count(Interval::Hour, at(1, 30), at(4, 0)), 3);
        assert_eq!(bucket_count(Interval::Day, at(0, 0), at(48, 0)), 2);
    }
}
