//! How the stats ask the database: every query under the store's time limit
//! (`maxTimeMS`, so a query nobody waits for any more stops on the server too),
//! and the figures of `/stats` computed by the server itself: top paths and top
//! event types by `$group`, `$sort` and `$limit` (in one pass), the types past
//! the top ones summed, distinct users counted by `$group` and `$count`. Whatever a site
//! holds (100,000 paths, 5,000 types), the API receives a few dozen rows.

use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{Error as MongoError, ErrorKind};

use super::{OtherTypes, PathCount, SiteStats, TOP_EVENT_TYPES, TOP_PATHS, TypeCount};
use crate::rollups::count_of;
use crate::storage::{Store, StoreError};

/// The server's code for an operation stopped at its `maxTimeMS`.
const MAX_TIME_MS_EXPIRED: i32 = 50;

/// Runs `pipeline` on `collection` within the store's stats time limit.
pub(super) async fn aggregate(
    store: &Store,
    collection: &Collection<Document>,
    pipeline: Vec<Document>,
) -> Result<Vec<Document>, StoreError> {
    let limit = store.stats_query_time_limit();
    let rows = async { collection.aggregate(pipeline).max_time(limit).await?.try_collect::<Vec<Document>>().await };
    rows.await.map_err(|error| time_limited(error, limit))
}

/// Counts the documents matching on `collection` within the store's stats time limit.
pub(super) async fn count(
    store: &Store,
    collection: &Collection<Document>,
    matching: Document,
) -> Result<u64, StoreError> {
    let limit = store.stats_query_time_limit();
    collection.count_documents(matching).max_time(limit).await.map_err(|error| time_limited(error, limit))
}

/// A driver error as a [`StoreError`]: a query the server stopped at its time
/// limit becomes [`StoreError::Timeout`], which the API answers with a 504.
pub(super) fn time_limited(error: MongoError, limit: Duration) -> StoreError {
    match error.kind.as_ref() {
        ErrorKind::Command(e) if e.code == MAX_TIME_MS_EXPIRED => StoreError::Timeout(limit),
        _ => StoreError::Operation(error),
    }
}

/// Documents read by running `stages` on `collection`: counting documents
/// (`{event_type, path, count}`, a pair possibly in several: they add up) or
/// user documents (`{user_id}`, a user possibly in several).
pub(super) struct Source<'a> {
    /// Where the stages start.
    pub(super) collection: &'a Collection<Document>,
    /// The stages giving the documents.
    pub(super) stages: Vec<Document>,
}

impl Source<'_> {
    fn then(&self, more: impl IntoIterator<Item = Document>) -> Vec<Document> {
        self.stages.iter().cloned().chain(more).collect()
    }
}

/// A site's stats from counting documents and a count of users, every figure
/// computed by the server.
pub(super) async fn site_stats_from(
    store: &Store,
    counts: &Source<'_>,
    unique_users: impl Future<Output = Result<u64, StoreError>>,
) -> Result<SiteStats, StoreError> {
    let (counted, unique_users) = tokio::try_join!(paths_and_types(store, counts), unique_users)?;
    let (top_paths, total_events, events_by_type, events_by_type_other) = counted;
    Ok(SiteStats { total_events, unique_users, top_paths, events_by_type, events_by_type_other })
}

/// From one pass over the counting documents (grouped by type and path
/// first, so what follows works on the distinct pairs, not on every event):
/// the [`TOP_PATHS`] most counted paths (count descending, then path
/// ascending: the original service's `$sort` on count, its ties made
/// stable), the total of events, the [`TOP_EVENT_TYPES`] most counted types
/// (count descending, then type ascending) and what the cut left out. One
/// pass, not one per figure: over raw events (a filtered request) each pass
/// reads every event of the range.
async fn paths_and_types(
    store: &Store,
    counts: &Source<'_>,
) -> Result<(Vec<PathCount>, u64, Vec<TypeCount>, Option<OtherTypes>), StoreError> {
    let pipeline = counts.then([
        doc! { "$group": {
            "_id": { "event_type": "$event_type", "path": "$path" }, "count": { "$sum": "$count" },
        } },
        doc! { "$facet": {
            "paths": [
                { "$group": { "_id": "$_id.path", "count": { "$sum": "$count" } } },
                { "$sort": { "count": -1, "_id": 1 } },
                { "$limit": TOP_PATHS as i64 },
            ],
            "types": [
                { "$group": { "_id": "$_id.event_type", "count": { "$sum": "$count" } } },
                { "$sort": { "count": -1, "_id": 1 } },
                { "$limit": TOP_EVENT_TYPES as i64 },
            ],
            "all": [
                { "$group": { "_id": "$_id.event_type", "count": { "$sum": "$count" } } },
                { "$group": { "_id": Bson::Null, "types": { "$sum": 1 }, "events": { "$sum": "$count" } } },
            ],
        } },
    ]);
    let rows = aggregate(store, counts.collection, pipeline).await?;
    let Some(row) = rows.first() else { return Ok((Vec::new(), 0, Vec::new(), None)) };
    let documents = |field| row.get_array(field).map(|a| a.iter().filter_map(Bson::as_document).collect::<Vec<_>>());
    let top_paths = documents("paths")
        .unwrap_or_default()
        .into_iter()
        .map(|p| PathCount { path: text(p.get("_id")), count: count_of(p.get("count")) })
        .collect();
    let top: Vec<TypeCount> = documents("types")
        .unwrap_or_default()
        .into_iter()
        .map(|t| TypeCount { event_type: text(t.get("_id")), count: count_of(t.get("count")) })
        .collect();
    let all = documents("all").unwrap_or_default();
    let (types, events) = all.first().map_or((0, 0), |a| (count_of(a.get("types")), count_of(a.get("events"))));
    let listed: u64 = top.iter().map(|t| t.count).sum();
    let other = (types > top.len() as u64)
        .then(|| OtherTypes { types: types - top.len() as u64, count: events.saturating_sub(listed) });
    Ok((top_paths, events, top, other))
}

/// The number of distinct `user_id`s among user documents.
pub(super) async fn distinct_users(store: &Store, users: &Source<'_>) -> Result<u64, StoreError> {
    let pipeline = users.then([doc! { "$group": { "_id": "$user_id" } }, doc! { "$count": "n" }]);
    let rows = aggregate(store, users.collection, pipeline).await?;
    Ok(rows.first().map_or(0, |row| count_of(row.get("n"))))
}

/// The stages turning the raw events matching into counting documents, a
/// missing or non-string field read as `""` (as the rollups key it).
pub(super) fn event_counts(matching: Document) -> Vec<Document> {
    vec![
        doc! { "$match": matching },
        doc! { "$project": {
            "_id": 0, "event_type": as_text("event_type"), "path": as_text("path"), "count": { "$literal": 1 },
        } },
    ]
}

/// The stages turning the raw events matching into user documents.
pub(super) fn event_users(matching: Document) -> Vec<Document> {
    vec![doc! { "$match": matching }, doc! { "$project": { "_id": 0, "user_id": as_text("user_id") } }]
}

/// A stage appending the documents of `stages` run on collection `name`.
pub(super) fn union_with(name: &str, stages: Vec<Document>) -> Document {
    doc! { "$unionWith": { "coll": name, "pipeline": stages } }
}

/// The expression reading `field` as a string, `""` when it is not one.
fn as_text(field: &str) -> Document {
    let value = format!("${field}");
    doc! { "$cond": [{ "$eq": [{ "$type": &value }, "string"] }, &value, ""] }
}

/// A string field as the stats show it: a missing or non-string value reads as
/// empty (as the rollups key it).
pub(super) fn text(value: Option<&Bson>) -> String {
    match value {
        Some(Bson::String(s)) => s.clone(),
        _ => String::new(),
    }
}
