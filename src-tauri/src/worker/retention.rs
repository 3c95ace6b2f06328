//! Retention: deletes events older than `RETENTION_DAYS` (off by default), and
//! with them what the rollups counted of them, so stats stay exact.
//!
//! The worker runs a purge every [`PURGE_EVERY`]. The cut is the start of an
//! hour, and each (site, hour) goes in one transaction: its events deleted, its
//! hourly rollups deleted, and their counts taken off the all-time rollups.
//! A visitor seen in a deleted hour may have other events left, and presence
//! cannot be taken off, so after a purge the all-time unique users are read from
//! the hourly visitors instead (the rollups' marker says so).
//!
//! Without transactions the rollups are not used; the purge is a plain delete.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{ClientSession, IndexModel};
use tracing::info;

use crate::rollups::{self, HOUR_MS};
use crate::storage::{Store, StoreError};

/// Events deleted per transaction of a purge, unless the worker is told
/// otherwise: bounds each transaction and how long a stop waits for one.
pub const PURGE_CHUNK: usize = 1_000;

/// How often the worker purges old events when retention is on.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The instant before which events are deleted when `days` are kept: the start
/// of the hour `days` days before `now`.
pub fn cutoff(now: DateTime, days: u32) -> DateTime {
    rollups::hour_of(DateTime::from_millis(now.timestamp_millis() - i64::from(days) * 24 * HOUR_MS))
}

/// Creates the index retention needs (events by time alone, for the plain
/// purge; the hourly rollups by hour, to find the oldest).
pub async fn ensure_indexes(store: &Store) -> Result<(), StoreError> {
    let by = |field: &str| {
        IndexModel::builder()
            .keys(doc! { field: 1 })
            .options(IndexOptions::builder().name(format!("{field}_1")).build())
            .build()
    };
    store.events().create_index(by("timestamp")).await?;
    store.database().collection::<Document>(rollups::HOURLY_PATHS).create_index(by("hour")).await?;
    Ok(())
}

/// Deletes every event with a `timestamp` before `cutoff` (an hour boundary)
/// and returns how many went. `transactional` says whether the rollups are kept
/// (the worker's mode).
pub async fn purge_before(store: &Store, cutoff: DateTime, transactional: bool) -> Result<u64, StoreError> {
    if !transactional {
        let deleted = store.events().delete_many(doc! { "timestamp": { "$lt": cutoff } }).await?;
        return Ok(deleted.deleted_count);
    }
    let hourly = store.database().collection::<Document>(rollups::HOURLY_PATHS);
    let mut deleted = 0;
    loop {
        let oldest = hourly.find_one(doc! { "hour": { "$lt": cutoff } }).sort(doc! { "hour": 1 }).await?;
        let Some(oldest) = oldest else { break };
        let (Ok(site), Ok(hour)) = (oldest.get_str("site_id"), oldest.get_datetime("hour")) else {
            return Err(StoreError::Refused(format!("malformed hourly rollup: {oldest}")));
        };
        deleted += purge_hour(store, site, *hour).await?;
    }
    if deleted > 0 {
        info!(events = deleted, before = %cutoff, "retention: deleted old events");
    }
    Ok(deleted)
}

/// Deletes one site's events of one hour with their rollups, in one transaction
/// (retried while it conflicts with the worker).
async fn purge_hour(store: &Store, site: &str, hour: DateTime) -> Result<u64, StoreError> {
    let mut session = store.client().start_session().await?;
    loop {
        session.start_transaction().write_concern(store.durable_write_concern().clone()).await?;
        match purge_hour_within(store, &mut session, site, hour).await {
            Ok(deleted) => match session.commit_transaction().await {
                Ok(()) => return Ok(deleted),
                Err(error) if error.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR) => continue,
                Err(error) => return Err(error.into()),
            },
            Err(StoreError::Operation(error)) if error.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR) => {
                let _ = session.abort_transaction().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => {
                let _ = session.abort_transaction().await;
                return Err(error);
            }
        }
    }
}

async fn purge_hour_within(
    store: &Store,
    session: &mut ClientSession,
    site: &str,
    hour: DateTime,
) -> Result<u64, StoreError> {
    let db = store.database();
    let hourly_paths = db.collection::<Document>(rollups::HOURLY_PATHS);
    let of_hour = doc! { "site_id": site, "hour": hour };
    let rows: Vec<Document> =
        hourly_paths.find(of_hour.clone()).session(&mut *session).await?.stream(&mut *session).try_collect().await?;

    // What the all-time rollups counted of this hour, per shard: the hourly
    // and all-time shards are written by the same lane's batches.
    let mut paths: HashMap<(u32, String, String), i64> = HashMap::new();
    let mut totals: HashMap<u32, i64> = HashMap::new();
    for row in &rows {
        let count = rollups::count_of(row.get("count")) as i64;
        let shard = rollups::shard_of(row);
        let kind = row.get_str("event_type").unwrap_or("").to_string();
        let path = row.get_str("path").unwrap_or("").to_string();
        *paths.entry((shard, kind, path)).or_default() += count;
        *totals.entry(shard).or_default() += count;
    }
    let path_ids: Vec<Bson> =
        paths.keys().map(|(shard, kind, path)| Bson::String(rollups::shard_key(&[site, kind, path], *shard))).collect();
    let site_ids: Vec<Bson> = totals.keys().map(|shard| Bson::String(rollups::shard_key(&[site], *shard))).collect();
    let decrement = |id: String, count: i64| doc! { "q": { "_id": id }, "u": { "$inc": { "count": -count } } };
    if !paths.is_empty() {
        let updates: Vec<Document> = paths
            .iter()
            .map(|((shard, kind, path), count)| decrement(rollups::shard_key(&[site, kind, path], *shard), *count))
            .collect();
        db.run_command(doc! { "update": rollups::PATHS, "updates": updates }).session(&mut *session).await?;
        let updates: Vec<Document> =
            totals.iter().map(|(shard, total)| decrement(rollups::shard_key(&[site], *shard), *total)).collect();
        db.run_command(doc! { "update": rollups::SITES, "updates": updates }).session(&mut *session).await?;
    }
    // Counts that reached zero are no longer there at all.
    let gone = doc! { "count": { "$lte": 0 } };
    let mut paths_gone = gone.clone();
    paths_gone.insert("_id", doc! { "$in": path_ids });
    db.collection::<Document>(rollups::PATHS).delete_many(paths_gone).session(&mut *session).await?;
    let mut site_gone = gone;
    site_gone.insert("_id", doc! { "$in": site_ids });
    db.collection::<Document>(rollups::SITES).delete_many(site_gone).session(&mut *session).await?;

    hourly_paths.delete_many(of_hour.clone()).session(&mut *session).await?;
    db.collection::<Document>(rollups::HOURLY_VISITORS).delete_many(of_hour).session(&mut *session).await?;
    let end = DateTime::from_millis(hour.timestamp_millis() + HOUR_MS);
    let events = doc! { "site_id": site, "timestamp": { "$gte": hour, "$lt": end } };
    let deleted = store.events().delete_many(events).session(&mut *session).await?.deleted_count;
    rollups::mark_visitors_partial(db, session).await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_is_an_hour_boundary_days_back() {
        let now = DateTime::parse_rfc3339_str("2026-03-10T15:42:10Z").unwrap();
        assert_eq!(cutoff(now, 3), DateTime::parse_rfc3339_str("2026-03-07T15:00:00Z").unwrap());
    }
}
