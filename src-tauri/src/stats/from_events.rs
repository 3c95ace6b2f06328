//! Stats aggregated from `events` itself: the reference the fast path is
//! tested against, the answer when the rollups are not ready, and the raw
//! reads of a range's partial hours.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Bson, DateTime, Document, doc};

use super::{SiteStats, StatsFilter, fold_counts};
use crate::rollups::count_of;
use crate::storage::{Store, StoreError};

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

/// Events per (type, path) among those matching.
pub(super) async fn type_path_counts(
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
pub(super) async fn hourly_event_counts(store: &Store, matching: &Document) -> Result<HashMap<i64, u64>, StoreError> {
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
pub(super) async fn distinct_count(collection: &Collection<Document>, matching: &Document) -> Result<u64, StoreError> {
    let pipeline = [doc! { "$match": matching }, doc! { "$group": { "_id": "$user_id" } }, doc! { "$count": "n" }];
    let rows: Vec<Document> = collection.aggregate(pipeline).await?.try_collect().await?;
    Ok(rows.first().map_or(0, |row| count_of(row.get("n"))))
}

/// The distinct `user_id`s among the matching documents.
pub(super) async fn distinct_users(
    collection: &Collection<Document>,
    matching: &Document,
) -> Result<Vec<String>, StoreError> {
    let pipeline = [doc! { "$match": matching }, doc! { "$group": { "_id": "$user_id" } }];
    let rows: Vec<Document> = collection.aggregate(pipeline).await?.try_collect().await?;
    Ok(rows.iter().map(|row| text(row.get("_id"))).collect())
}

/// A `(type, path, count)` row from a document holding `event_type` and `path`.
pub(super) fn type_path_row(row: &Document, count: Option<&Bson>) -> (String, String, u64) {
    (text(row.get("event_type")), text(row.get("path")), count_of(count))
}

/// A `(type, path, count)` row from a `$group` by `{event_type, path}`.
pub(super) fn grouped_type_path_row(row: &Document) -> (String, String, u64) {
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
