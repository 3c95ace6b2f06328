//! Stats aggregated from `events` itself: the reference the fast path is
//! tested against, the answer when the rollups are not ready, and the raw
//! reads of a range's partial hours.

use std::collections::HashMap;

use mongodb::bson::{DateTime, Document, doc};

use super::queries::{Source, aggregate, distinct_users, event_counts, event_users, site_stats_from, time_limited};
use super::{SiteStats, StatsFilter};
use crate::rollups::count_of;
use crate::storage::{Store, StoreError};

/// A site's stats computed from `events` alone (by the server: see [`super::queries`]).
pub async fn plain_site_stats(store: &Store, filter: &StatsFilter) -> Result<SiteStats, StoreError> {
    plain_site_stats_matching(store, events_match(filter, filter.from, filter.to)).await
}

/// A site's stats over the events `matching` (a filtered request's, see
/// [`super::scope`]), computed from `events` alone.
pub(super) async fn plain_site_stats_matching(store: &Store, matching: Document) -> Result<SiteStats, StoreError> {
    let counts = Source { collection: store.events(), stages: event_counts(matching.clone()) };
    let users = Source { collection: store.events(), stages: event_users(matching) };
    site_stats_from(store, &counts, distinct_users(store, &users)).await
}

/// A site's events per UTC hour, computed from `events` alone.
pub async fn plain_hourly_counts(store: &Store, filter: &StatsFilter) -> Result<HashMap<i64, u64>, StoreError> {
    hourly_event_counts(store, &events_match(filter, filter.from, filter.to)).await
}

/// `{$gte: from, $lt: to}` with the bounds given, or nothing without either.
pub(super) fn range(from: Option<DateTime>, to: Option<DateTime>) -> Option<Document> {
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
pub(super) fn events_match(filter: &StatsFilter, from: Option<DateTime>, to: Option<DateTime>) -> Document {
    let mut matching = doc! { "site_id": &filter.site_id };
    if let Some(range) = range(from, to) {
        matching.insert("timestamp", range);
    }
    if let Some(kind) = &filter.event_type {
        matching.insert("event_type", kind);
    }
    matching
}

/// Events per UTC hour (as milliseconds) among the matching events.
pub(super) async fn hourly_event_counts(store: &Store, matching: &Document) -> Result<HashMap<i64, u64>, StoreError> {
    let pipeline = [
        doc! { "$match": matching },
        doc! { "$group": {
            "_id": { "$dateTrunc": { "date": "$timestamp", "unit": "hour" } },
            "count": { "$sum": 1 },
        } },
    ];
    let rows = aggregate(store, store.events(), pipeline.to_vec()).await?;
    Ok(rows
        .iter()
        .filter_map(|row| Some((row.get_datetime("_id").ok()?.timestamp_millis(), count_of(row.get("count")))))
        .collect())
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
        .max_time(store.stats_query_time_limit())
        .await
        .map_err(|error| time_limited(error, store.stats_query_time_limit()))?;
    Ok(first.and_then(|event| event.get_datetime("timestamp").ok().copied()))
}
