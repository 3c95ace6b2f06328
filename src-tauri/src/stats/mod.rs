//! Stats: the exact per-site figures of `GET /stats`, `GET /stats/timeseries` and
//! `GET /sites`.
//!
//! When the rollups are ready (see `rollups`) they are read from there: a few
//! small documents per site, plus the raw events of a time range's partial hours
//! at either end. Otherwise, and always in the `plain` functions, they are
//! computed from `events` itself; that plain aggregation is the reference the
//! fast path is tested against.

pub mod export;

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Bson, DateTime, Document, doc};
use serde::{Deserialize, Serialize};

use crate::rollups::{self, HOUR_MS, count_of, hour_of, next_hour_boundary};
use crate::storage::{Store, StoreError};

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
        // A site's count is the sum of its shards (see `rollups`).
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

/// A site's stats computed from `events` alone.
pub async fn plain_site_stats(store: &Store, filter: &StatsFilter) -> Result<SiteStats, StoreError> {
    let matching = events_match(filter, filter.from, filter.to);
    let (rows, unique_users) =
        tokio::try_join!(type_path_counts(store.events(), &matching), distinct_count(store.events(), &matching))?;
    Ok(fold_counts(rows, unique_users))
}

/// A site's events per UTC hour, computed from `events` alone.
pub async fn plain_hourly_counts(store: &Store, filter: &StatsFilter) -> Result<HashMap<i64, u64>, StoreError> {
    hourly_event_counts(store, &events_match(filter, filter.from, filter.to)).await
}

/// A site's stats from the rollups (and the raw events of partial hours).
pub async fn fast_site_stats(store: &Store, filter: &StatsFilter) -> Result<SiteStats, StoreError> {
    let all_time_visitors = rollups::readiness(store).await?.all_time_visitors;
    rollup_site_stats(store, filter, all_time_visitors).await
}

/// [`fast_site_stats`] with the rollups' marker already read: `visitors_exact`
/// says whether the all-time visitors may be used (see `retention`).
async fn rollup_site_stats(store: &Store, filter: &StatsFilter, visitors_exact: bool) -> Result<SiteStats, StoreError> {
    let db = store.database();
    if filter.from.is_none() && filter.to.is_none() {
        // All time: the all-time rollups, no hours involved.
        let mut matching = doc! { "site_id": &filter.site_id };
        if let Some(kind) = &filter.event_type {
            matching.insert("event_type", kind);
        }
        let paths = db.collection::<Document>(rollups::PATHS);
        // After retention deleted events, only the hourly visitors are exact.
        let visitors =
            db.collection::<Document>(if visitors_exact { rollups::VISITORS } else { rollups::HOURLY_VISITORS });
        let rows = async {
            let rows: Vec<Document> = paths.find(matching.clone()).await?.try_collect().await?;
            Ok::<_, StoreError>(rows.iter().map(|row| type_path_row(row, row.get("count"))).collect::<Vec<_>>())
        };
        let users = async {
            if filter.event_type.is_some() && visitors_exact {
                Ok(visitors.count_documents(matching.clone()).await?)
            } else {
                distinct_count(&visitors, &matching).await
            }
        };
        let (rows, unique_users) = tokio::try_join!(rows, users)?;
        return Ok(fold_counts(rows, unique_users));
    }

    let split = HourSplit::of(filter.from, filter.to);
    let hourly_paths = db.collection::<Document>(rollups::HOURLY_PATHS);
    let hourly_visitors = db.collection::<Document>(rollups::HOURLY_VISITORS);
    let rows = async {
        let mut rows = Vec::new();
        if let Some(matching) = split.rollup_match(filter) {
            let pipeline = [
                doc! { "$match": matching },
                doc! { "$group": {
                    "_id": { "event_type": "$event_type", "path": "$path" },
                    "count": { "$sum": "$count" },
                } },
            ];
            let grouped: Vec<Document> = hourly_paths.aggregate(pipeline).await?.try_collect().await?;
            rows.extend(grouped.iter().map(grouped_type_path_row));
        }
        for (from, to) in &split.edges {
            rows.extend(type_path_counts(store.events(), &events_match(filter, *from, *to)).await?);
        }
        Ok::<_, StoreError>(rows)
    };
    let users = async {
        let rollup_match = split.rollup_match(filter);
        if split.edges.is_empty() {
            let Some(matching) = rollup_match else { return Ok(0) };
            return distinct_count(&hourly_visitors, &matching).await;
        }
        // Users of the whole hours and of the partial ones may overlap: union them.
        let mut users: HashSet<String> = HashSet::new();
        if let Some(matching) = rollup_match {
            users.extend(distinct_users(&hourly_visitors, &matching).await?);
        }
        for (from, to) in &split.edges {
            users.extend(distinct_users(store.events(), &events_match(filter, *from, *to)).await?);
        }
        Ok::<_, StoreError>(users.len() as u64)
    };
    let (rows, unique_users) = tokio::try_join!(rows, users)?;
    Ok(fold_counts(rows, unique_users))
}

/// A site's events per UTC hour from the rollups (and raw partial hours).
pub async fn fast_hourly_counts(store: &Store, filter: &StatsFilter) -> Result<HashMap<i64, u64>, StoreError> {
    let split = HourSplit::of(filter.from, filter.to);
    let mut hours = HashMap::new();
    if let Some(matching) = split.rollup_match(filter) {
        let pipeline =
            [doc! { "$match": matching }, doc! { "$group": { "_id": "$hour", "count": { "$sum": "$count" } } }];
        let hourly_paths = store.database().collection::<Document>(rollups::HOURLY_PATHS);
        let rows: Vec<Document> = hourly_paths.aggregate(pipeline).await?.try_collect().await?;
        for row in rows {
            if let Ok(hour) = row.get_datetime("_id") {
                *hours.entry(hour.timestamp_millis()).or_default() += count_of(row.get("count"));
            }
        }
    }
    for (from, to) in &split.edges {
        for (hour, count) in hourly_event_counts(store, &events_match(filter, *from, *to)).await? {
            *hours.entry(hour).or_default() += count;
        }
    }
    Ok(hours)
}

/// A time range cut at hour boundaries: the whole hours the hourly rollups
/// answer for, and the partial hours at either end, read from `events`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HourSplit {
    /// Whole hours `[start, end)` (open-ended where the range is), if any.
    whole_hours: Option<(Option<DateTime>, Option<DateTime>)>,
    /// Partial-hour ranges `[from, to)`.
    edges: Vec<(Option<DateTime>, Option<DateTime>)>,
}

impl HourSplit {
    fn of(from: Option<DateTime>, to: Option<DateTime>) -> HourSplit {
        let start = from.map(next_hour_boundary);
        let end = to.map(hour_of);
        if let (Some(start), Some(end)) = (start, end)
            && start >= end
        {
            // Within one hour (or across one boundary only): read it all raw.
            return HourSplit { whole_hours: None, edges: vec![(from, to)] };
        }
        let mut edges = Vec::new();
        if from != start {
            edges.push((from, start));
        }
        if to != end {
            edges.push((end, to));
        }
        HourSplit { whole_hours: Some((start, end)), edges }
    }

    /// The filter on hourly rollup documents for the whole hours.
    fn rollup_match(&self, filter: &StatsFilter) -> Option<Document> {
        let (start, end) = self.whole_hours?;
        let mut matching = doc! { "site_id": &filter.site_id };
        if let Some(range) = range(start, end) {
            matching.insert("hour", range);
        }
        if let Some(kind) = &filter.event_type {
            matching.insert("event_type", kind);
        }
        Some(matching)
    }
}

/// `{$gte: from, $lt: to}` with the bounds given, or nothing without either.
fn range(from: Option<DateTime>, to: Option<DateTime>) -> Option<Document> {
    let mut range = Document::new();
    if let Some(from) = from {
        range.insert("$gte", from);
    }
    if let Some(to) = to {
        range.insert("$lt", to);
    }
    (!range.is_empty()).then_some(range)
}

/// The filter on `events` for `filter`'s site and type over `[from, to)`.
fn events_match(filter: &StatsFilter, from: Option<DateTime>, to: Option<DateTime>) -> Document {
    let mut matching = doc! { "site_id": &filter.site_id };
    if let Some(range) = range(from, to) {
        matching.insert("timestamp", range);
    }
    if let Some(kind) = &filter.event_type {
        matching.insert("event_type", kind);
    }
    matching
}

/// Events per (type, path) among those matching.
async fn type_path_counts(
    events: &Collection<Document>,
    matching: &Document,
) -> Result<Vec<(String, String, u64)>, StoreError> {
    let pipeline = [
        doc! { "$match": matching },
        doc! { "$group": { "_id": { "event_type": "$event_type", "path": "$path" }, "count": { "$sum": 1 } } },
    ];
    let rows: Vec<Document> = events.aggregate(pipeline).await?.try_collect().await?;
    Ok(rows.iter().map(grouped_type_path_row).collect())
}

/// Events per UTC hour (as milliseconds) among the matching events.
async fn hourly_event_counts(store: &Store, matching: &Document) -> Result<HashMap<i64, u64>, StoreError> {
    let pipeline = [
        doc! { "$match": matching },
        doc! { "$group": {
            "_id": { "$dateTrunc": { "date": "$timestamp", "unit": "hour" } },
            "count": { "$sum": 1 },
        } },
    ];
    let rows: Vec<Document> = store.events().aggregate(pipeline).await?.try_collect().await?;
    Ok(rows
        .iter()
        .filter_map(|row| Some((row.get_datetime("_id").ok()?.timestamp_millis(), count_of(row.get("count")))))
        .collect())
}

/// Number of distinct `user_id`s among the matching documents.
async fn distinct_count(collection: &Collection<Document>, matching: &Document) -> Result<u64, StoreError> {
    let pipeline = [doc! { "$match": matching }, doc! { "$group": { "_id": "$user_id" } }, doc! { "$count": "n" }];
    let rows: Vec<Document> = collection.aggregate(pipeline).await?.try_collect().await?;
    Ok(rows.first().map_or(0, |row| count_of(row.get("n"))))
}

/// The distinct `user_id`s among the matching documents.
async fn distinct_users(collection: &Collection<Document>, matching: &Document) -> Result<Vec<String>, StoreError> {
    let pipeline = [doc! { "$match": matching }, doc! { "$group": { "_id": "$user_id" } }];
    let rows: Vec<Document> = collection.aggregate(pipeline).await?.try_collect().await?;
    Ok(rows.iter().map(|row| text(row.get("_id"))).collect())
}

/// A `(type, path, count)` row from a document holding `event_type` and `path`.
fn type_path_row(row: &Document, count: Option<&Bson>) -> (String, String, u64) {
    (text(row.get("event_type")), text(row.get("path")), count_of(count))
}

/// A `(type, path, count)` row from a `$group` by `{event_type, path}`.
fn grouped_type_path_row(row: &Document) -> (String, String, u64) {
    match row.get_document("_id") {
        Ok(key) => type_path_row(key, row.get("count")),
        Err(_) => (String::new(), String::new(), count_of(row.get("count"))),
    }
}

/// A string field as the stats show it: a missing or non-string value reads as
/// empty (as the rollups key it).
fn text(value: Option<&Bson>) -> String {
    match value {
        Some(Bson::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Totals, events per type and top paths from `(type, path, count)` rows (a
/// pair may appear in several rows: they add up).
fn fold_counts(rows: Vec<(String, String, u64)>, unique_users: u64) -> SiteStats {
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

/// When the first event `filter` matches happened (its `from` ignored, its `to`
/// kept): the start of "all time" for a range that must have one, such as an
/// export's time series. `None` when no event matches.
pub async fn first_event_time(store: &Store, filter: &StatsFilter) -> Result<Option<DateTime>, StoreError> {
    let first = store
        .events()
        .find_one(events_match(filter, None, filter.to))
        .sort(doc! { "timestamp": 1 })
        .projection(doc! { "timestamp": 1 })
        .await?;
    Ok(first.and_then(|event| event.get_datetime("timestamp").ok().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64, millis: i64) -> DateTime {
        DateTime::from_millis(hours * HOUR_MS + millis)
    }

    #[test]
    fn a_range_splits_into_whole_hours_and_partial_edges() {
        let split = HourSplit::of(Some(at(1, 500)), Some(at(5, 7)));
        assert_eq!(split.whole_hours, Some((Some(at(2, 0)), Some(at(5, 0)))));
        assert_eq!(split.edges, vec![(Some(at(1, 500)), Some(at(2, 0))), (Some(at(5, 0)), Some(at(5, 7)))]);

        let aligned = HourSplit::of(Some(at(1, 0)), Some(at(3, 0)));
        assert_eq!((aligned.whole_hours, aligned.edges.len()), (Some((Some(at(1, 0)), Some(at(3, 0)))), 0));

        let open = HourSplit::of(None, Some(at(3, 1)));
        assert_eq!(open.whole_hours, Some((None, Some(at(3, 0)))));
        assert_eq!(open.edges, vec![(Some(at(3, 0)), Some(at(3, 1)))]);

        let inside = HourSplit::of(Some(at(2, 10)), Some(at(2, 20)));
        assert_eq!((inside.whole_hours, inside.edges), (None, vec![(Some(at(2, 10)), Some(at(2, 20)))]));
        let across = HourSplit::of(Some(at(2, 10)), Some(at(3, 20)));
        assert_eq!(across.whole_hours, None, "no whole hour between 2:00:00.010 and 3:00:00.020");
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
