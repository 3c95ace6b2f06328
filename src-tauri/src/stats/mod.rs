//! Stats: the exact per-site figures of `GET /stats`, `GET /stats/timeseries` and
//! `GET /sites`.
//!
//! When the rollups are ready (see [`crate::rollups`]) they are read from there: a few
//! small documents per site, plus the raw events of a time range's partial hours
//! at either end. Otherwise, and always in the `plain` functions, they are
//! computed from `events` itself; that plain aggregation is the reference the
//! fast path is tested against.
//!
//! Either way the server computes the figures (top paths, top types, distinct
//! users) and every query carries the store's time limit: see [`queries`].
//!
//! Issue #14's figures over visits (docs/visits.md section 4): [`filters`]
//! (the `filters=` grammar), [`scope`] (what a request covers on `visits` and
//! `events`), [`visit_figures`] (`/stats`' visit figures and comparison),
//! [`breakdown`], [`series`] (time series by metric), [`realtime`], and
//! [`goal_match`] (the site's goals as the stats read them).
//!
//! [`from_rollups`] holds the fast path (the all-time, unfiltered stats from
//! the ranks the worker keeps: [`from_ranks`]), [`from_events`] the plain aggregation
//! (and the raw reads the fast path makes of partial hours), [`queries`] how
//! both ask the server, [`export`] the CSV.

pub mod breakdown;
pub mod export;
pub mod filters;
pub mod from_events;
mod from_ranks;
pub mod from_rollups;
pub mod goal_match;
mod queries;
pub mod realtime;
pub mod scope;
pub mod series;
pub mod visit_figures;

use std::collections::{HashMap, HashSet};

use mongodb::bson::{DateTime, doc};
use serde::{Deserialize, Serialize};

use crate::rollups::{self, HOUR_MS, count_of};
use crate::storage::{Store, StoreError};

pub use from_events::{first_event_time, plain_hourly_counts, plain_site_stats};
use from_rollups::rollup_site_stats;
pub use from_rollups::{fast_hourly_counts, fast_site_stats};

/// How many paths `top_paths` lists.
pub const TOP_PATHS: usize = 10;
/// How many types `events_by_type` lists; the rest are summed in
/// `events_by_type_other`, so a site with thousands of types stays one small answer.
pub const TOP_EVENT_TYPES: usize = 20;
/// Sites per page of `GET /sites` when the client does not say.
pub const SITES_PAGE_DEFAULT: u64 = 100;
/// Most sites one page of `GET /sites` may hold.
pub const SITES_PAGE_MAX: u64 = 1000;
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
    /// Events per type, by count descending, then type ascending: the 20 most
    /// counted types (see `events_by_type_other` for the rest).
    #[serde(default)]
    pub events_by_type: Vec<TypeCount>,
    /// Present only when the site has more than 20 types: how many types were
    /// left out of `events_by_type` and how many events they hold
    /// (`total_events` = the listed counts + this `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_by_type_other: Option<OtherTypes>,
}

/// The event types cut from `events_by_type`, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OtherTypes {
    /// Number of types left out.
    pub types: u64,
    /// Events of those types.
    pub count: u64,
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
    /// One minute (`/stats/timeseries` only, for ranges of a few hours).
    Minute,
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
}

impl Interval {
    /// The bucket's length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Interval::Minute => 60_000,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bucket {
    /// The bucket's start, RFC 3339 in UTC.
    pub start: String,
    /// Events in the bucket (and in the asked range).
    pub count: u64,
    /// The asked `metric` in the bucket (`events` by default: the `count`);
    /// whole numbers are written without a fraction.
    #[serde(default, serialize_with = "whole_or_fraction")]
    pub value: f64,
}

/// Writes a whole `value` as an integer (`3`, not `3.0`), others as they are.
fn whole_or_fraction<S: serde::Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        serializer.serialize_i64(*value as i64)
    } else {
        serializer.serialize_f64(*value)
    }
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
        rollup_site_stats(store, filter, readiness.all_time_visitors, readiness.ranked).await
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

/// One page of the sites list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SitesPage {
    /// The page's sites, most events first (then by id).
    pub sites: Vec<SiteSummary>,
    /// The offset of the next page; `None` on the last one.
    pub next_offset: Option<u64>,
}

/// The sites with processed events from position `offset` (from 0), at most
/// `limit` of them (1 to [`SITES_PAGE_MAX`]), most events first then by id.
/// The server sorts and cuts: the API never holds more than one page.
pub async fn sites_page(store: &Store, offset: u64, limit: u64) -> Result<SitesPage, StoreError> {
    let limit = limit.clamp(1, SITES_PAGE_MAX);
    let ready = rollups::are_ready(store).await?;
    // With rollups, a site's count is the sum of its shards (see [`crate::rollups`]).
    let sites_rollup = store.database().collection(rollups::SITES);
    let (collection, count) =
        if ready { (&sites_rollup, doc! { "$sum": "$count" }) } else { (store.events(), doc! { "$sum": 1 }) };
    let mut pipeline =
        vec![doc! { "$group": { "_id": "$site_id", "count": count } }, doc! { "$sort": { "count": -1, "_id": 1 } }];
    if offset > 0 {
        pipeline.push(doc! { "$skip": i64::try_from(offset).unwrap_or(i64::MAX) });
    }
    // One more than asked: whether a next page exists, without counting the sites.
    pipeline.push(doc! { "$limit": (limit + 1) as i64 });
    let rows = queries::aggregate(store, collection, pipeline).await?;
    let more = rows.len() as u64 > limit;
    let sites = rows
        .iter()
        .take(limit as usize)
        .map(|row| SiteSummary { site_id: queries::text(row.get("_id")), events: count_of(row.get("count")) })
        .collect();
    Ok(SitesPage { sites, next_offset: more.then_some(offset + limit) })
}

/// Every site with processed events, most events first (then by id), read
/// page by page (the desktop app's list). A site gaining events meanwhile
/// may move between pages: it is listed at most once (or, rarely, shows at
/// the next refresh).
pub async fn sites(store: &Store) -> Result<Vec<SiteSummary>, StoreError> {
    let mut sites: Vec<SiteSummary> = Vec::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut offset = 0;
    loop {
        let page = sites_page(store, offset, SITES_PAGE_MAX).await?;
        for site in page.sites {
            if listed.insert(site.site_id.clone()) {
                sites.push(site);
            }
        }
        match page.next_offset {
            Some(next) => offset = next,
            None => return Ok(sites),
        }
    }
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
        .map(|start| {
            let count = counts.get(&start).copied().unwrap_or(0);
            Bucket {
                start: DateTime::from_millis(start).try_to_rfc3339_string().unwrap_or_default(),
                count,
                value: count as f64,
            }
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
