//! Retention: deletes events older than `RETENTION_DAYS` (off by default), and
//! with them what the rollups counted of them, so stats stay exact.
//!
//! The worker purges every [`PURGE_EVERY`], in a task of its own: a long purge
//! holds no lane, and a stop waits at most for the chunk in flight. The cut is
//! the start of an hour. Each (site, hour) goes in chunks of at most
//! [`PurgeLimits::chunk`] events, each chunk in one transaction: its events
//! deleted and their counts taken off the hourly and all-time rollups (shard by
//! shard, never more than a shard counted of that hour); the hour's last chunk
//! also deletes its rollup rows and visitors. Stats are therefore exact after
//! every chunk, and a purge may stop between any two. A chunk that conflicts
//! with batches is retried [`PurgeLimits::attempts`] times; a (site, hour) that
//! still fails (a conflict that lasts, a corrupt rollup) is left for the next
//! purge, and the purge goes on with the later hours.
//!
//! A visitor seen in a deleted hour may have other events left, and presence
//! cannot be taken off, so after a purge the all-time unique users are read from
//! the hourly visitors instead (the rollups' marker says so).
//!
//! Without transactions the rollups are not used; the purge is a plain delete,
//! in chunks too.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::error::TRANSIENT_TRANSACTION_ERROR;
use mongodb::options::IndexOptions;
use mongodb::{ClientSession, Database, IndexModel};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::rollups::{self, HOUR_MS};
use crate::storage::{Store, StoreError};

/// Events deleted per transaction of a purge, unless the worker is told
/// otherwise: bounds each transaction and how long a stop waits for one.
pub const PURGE_CHUNK: usize = 1_000;

/// Attempts at a chunk whose transaction conflicts (with batches being moved)
/// before its (site, hour) is left for the next purge.
pub const PURGE_ATTEMPTS: u32 = 5;

/// How often the worker purges old events when retention is on.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);

/// How much a purge does at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeLimits {
    /// Most events deleted per transaction (per delete, without transactions).
    pub chunk: usize,
    /// Attempts at a conflicting chunk before its hour is left for the next purge.
    pub attempts: u32,
}

impl Default for PurgeLimits {
    fn default() -> Self {
        PurgeLimits { chunk: PURGE_CHUNK, attempts: PURGE_ATTEMPTS }
    }
}

/// What a purge did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    /// Events deleted.
    pub deleted: u64,
    /// Chunks committed (one transaction, or one delete, each).
    pub chunks: u64,
    /// (site, hour)s that could not be purged: left for the next purge.
    pub failed_hours: u64,
    /// True when the purge stopped early because it was cancelled.
    pub cancelled: bool,
}

/// The instant before which events are deleted when `days` are kept: the start
/// of the hour `days` days before `now`.
pub fn cutoff(now: DateTime, days: u32) -> DateTime {
    rollups::hour_of(DateTime::from_millis(now.timestamp_millis() - i64::from(days) * 24 * HOUR_MS))
}

/// Creates the index retention needs (events by time alone, for the plain
/// purge; the hourly rollups by hour and site, to walk the expired hours in order).
pub async fn ensure_indexes(store: &Store) -> Result<(), StoreError> {
    let by = |keys: Document, name: &str| {
        IndexModel::builder().keys(keys).options(IndexOptions::builder().name(name.to_string()).build()).build()
    };
    store.events().create_index(by(doc! { "timestamp": 1 }, "timestamp_1")).await?;
    let hourly = store.database().collection::<Document>(rollups::HOURLY_PATHS);
    hourly.create_index(by(doc! { "hour": 1, "site_id": 1 }, "hour_1_site_id_1")).await?;
    Ok(())
}

/// Deletes every event with a `timestamp` before `cutoff` (an hour boundary)
/// and returns how many went; `transactional` says whether the rollups are kept
/// (the worker's mode). Hours that fail are logged and left for the next purge.
pub async fn purge_before(store: &Store, cutoff: DateTime, transactional: bool) -> Result<u64, StoreError> {
    let never = CancellationToken::new();
    Ok(purge(store, cutoff, transactional, &PurgeLimits::default(), &never, |_| {}).await?.deleted)
}

/// [`purge_before`] in chunks of `limits`, stopping between two chunks once
/// `cancel` is cancelled; `after_chunk` sees the progress after each chunk.
/// An error is returned only when the database cannot be read at all.
pub async fn purge(
    store: &Store,
    cutoff: DateTime,
    transactional: bool,
    limits: &PurgeLimits,
    cancel: &CancellationToken,
    mut after_chunk: impl FnMut(&PurgeReport),
) -> Result<PurgeReport, StoreError> {
    let mut report = PurgeReport::default();
    if transactional {
        purge_hours(store, cutoff, limits, cancel, &mut report, &mut after_chunk).await?;
        purge_visits(store, cutoff, limits, cancel, &mut report).await?;
    } else {
        purge_plainly(store, cutoff, limits, cancel, &mut report, &mut after_chunk).await?;
    }
    if report.deleted > 0 || report.failed_hours > 0 {
        info!(
            events = report.deleted,
            failed_hours = report.failed_hours,
            cancelled = report.cancelled,
            before = %cutoff,
            "retention: deleted old events"
        );
    }
    Ok(report)
}

/// With rollups: deletes the visits starting before `cutoff` with their share
/// of the daily rollups, a chunk per transaction (their later events stay).
async fn purge_visits(
    store: &Store,
    cutoff: DateTime,
    limits: &PurgeLimits,
    cancel: &CancellationToken,
    report: &mut PurgeReport,
) -> Result<(), StoreError> {
    let mut session = store.client().start_session().await?;
    let write_limits = store.write_limits().await?;
    let mut attempt = 0;
    while !cancel.is_cancelled() {
        attempt += 1;
        session.start_transaction().write_concern(store.durable_write_concern().clone()).await?;
        let db = store.database();
        let outcome =
            match rollups::visits::delete_visits_before(db, &mut session, cutoff, limits.chunk, &write_limits).await {
                Ok(deleted) => session.commit_transaction().await.map(|()| deleted).map_err(StoreError::from),
                Err(error) => {
                    let _ = session.abort_transaction().await;
                    Err(error)
                }
            };
        match outcome {
            Ok(deleted) if deleted < limits.chunk => return Ok(()),
            Ok(_) => attempt = 0,
            Err(error)
                if attempt < limits.attempts
                    && (rollups::daily::is_concurrent_write(&error)
                        || matches!(&error, StoreError::Operation(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR))) =>
            {
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(error) => {
                report.failed_hours += 1;
                warn!(%error, "retention: could not delete old visits; retried at the next purge");
                return Ok(());
            }
        }
    }
    report.cancelled = true;
    Ok(())
}

/// Without rollups: deletes the expired events by `_id`, a chunk at a time.
async fn purge_plainly(
    store: &Store,
    cutoff: DateTime,
    limits: &PurgeLimits,
    cancel: &CancellationToken,
    report: &mut PurgeReport,
    after_chunk: &mut impl FnMut(&PurgeReport),
) -> Result<(), StoreError> {
    let expired = doc! { "timestamp": { "$lt": cutoff } };
    loop {
        if cancel.is_cancelled() {
            report.cancelled = true;
            return Ok(());
        }
        let find = store.events().find(expired.clone()).projection(doc! { "_id": 1 }).limit(limits.chunk as i64);
        let ids: Vec<Bson> =
            find.await?.try_collect::<Vec<Document>>().await?.iter().filter_map(|e| e.get("_id").cloned()).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let found = ids.len();
        report.deleted += store.events().delete_many(doc! { "_id": { "$in": ids } }).await?.deleted_count;
        report.chunks += 1;
        after_chunk(report);
        if found < limits.chunk {
            return Ok(());
        }
    }
}

/// With rollups: walks the expired (site, hour)s oldest first, each once, so
/// that one that fails is passed, not met again.
async fn purge_hours(
    store: &Store,
    cutoff: DateTime,
    limits: &PurgeLimits,
    cancel: &CancellationToken,
    report: &mut PurgeReport,
    after_chunk: &mut impl FnMut(&PurgeReport),
) -> Result<(), StoreError> {
    let hourly = store.database().collection::<Document>(rollups::HOURLY_PATHS);
    let mut passed: Option<(DateTime, String)> = None;
    loop {
        if cancel.is_cancelled() {
            report.cancelled = true;
            return Ok(());
        }
        let mut next = doc! { "hour": { "$lt": cutoff } };
        if let Some((hour, site)) = &passed {
            let later = vec![doc! { "hour": { "$gt": *hour } }, doc! { "hour": *hour, "site_id": { "$gt": site } }];
            next.insert("$or", later);
        }
        let Some(oldest) = hourly.find_one(next).sort(doc! { "hour": 1, "site_id": 1 }).await? else { return Ok(()) };
        let Ok(hour) = oldest.get_datetime("hour").copied() else { return Ok(()) };
        let site = match oldest.get_str("site_id") {
            Ok(site) => site.to_string(),
            Err(_) => {
                warn!(row = %oldest, "retention: an hourly rollup without a site; left as it is");
                report.failed_hours += 1;
                passed = Some((hour, String::new()));
                continue;
            }
        };
        if let Err(error) = purge_hour(store, &site, hour, limits, cancel, report, after_chunk).await {
            report.failed_hours += 1;
            warn!(%error, site, %hour, "retention: could not purge this hour; going on with the later ones, retried at the next purge");
        }
        passed = Some((hour, site));
    }
}

/// Deletes one site's events of one hour with their rollups, a chunk at a time.
async fn purge_hour(
    store: &Store,
    site: &str,
    hour: DateTime,
    limits: &PurgeLimits,
    cancel: &CancellationToken,
    report: &mut PurgeReport,
    after_chunk: &mut impl FnMut(&PurgeReport),
) -> Result<(), StoreError> {
    let mut session = store.client().start_session().await?;
    loop {
        if cancel.is_cancelled() {
            report.cancelled = true;
            return Ok(());
        }
        let chunk = purge_chunk(store, &mut session, site, hour, limits).await?;
        report.deleted += chunk.deleted;
        report.chunks += 1;
        after_chunk(report);
        if chunk.last {
            return Ok(());
        }
    }
}

/// One committed chunk of an hour.
struct Chunk {
    deleted: u64,
    /// The hour has no event left, and no rollup row.
    last: bool,
}

/// One chunk in one transaction, retried (at most `limits.attempts` times in
/// all) while it conflicts with batches being moved.
async fn purge_chunk(
    store: &Store,
    session: &mut ClientSession,
    site: &str,
    hour: DateTime,
    limits: &PurgeLimits,
) -> Result<Chunk, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        session.start_transaction().write_concern(store.durable_write_concern().clone()).await?;
        let outcome = match purge_chunk_within(store, session, site, hour, limits.chunk).await {
            Ok(chunk) => session.commit_transaction().await.map(|()| chunk).map_err(StoreError::from),
            Err(error) => {
                // The server may have aborted it already; nothing else to undo.
                let _ = session.abort_transaction().await;
                Err(error)
            }
        };
        match outcome {
            Err(StoreError::Operation(error))
                if attempt < limits.attempts && error.contains_label(TRANSIENT_TRANSACTION_ERROR) =>
            {
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            outcome => return outcome,
        }
    }
}

async fn purge_chunk_within(
    store: &Store,
    session: &mut ClientSession,
    site: &str,
    hour: DateTime,
    chunk: usize,
) -> Result<Chunk, StoreError> {
    let db = store.database();
    let end = DateTime::from_millis(hour.timestamp_millis() + HOUR_MS);
    let of_hour_events = doc! { "site_id": site, "timestamp": { "$gte": hour, "$lt": end } };
    let projection = doc! { "_id": 1, "event_type": 1, "path": 1 };
    let find = store.events().find(of_hour_events).projection(projection).limit(chunk as i64);
    let events: Vec<Document> = find.session(&mut *session).await?.stream(&mut *session).try_collect().await?;
    let last = events.len() < chunk;
    let hourly_paths = db.collection::<Document>(rollups::HOURLY_PATHS);
    let of_hour = doc! { "site_id": site, "hour": hour };
    let rows: Vec<Document> =
        hourly_paths.find(of_hour.clone()).session(&mut *session).await?.stream(&mut *session).try_collect().await?;

    // What comes off each hourly row: all of it with the hour's last chunk,
    // else the chunk's events, from the shards that counted them.
    let text = |document: &Document, field: &str| document.get_str(field).unwrap_or("").to_string();
    let takes: Vec<(&Document, i64)> = if last {
        rows.iter().map(|row| (row, rollups::count_of(row.get("count")) as i64)).collect()
    } else {
        let mut wanted: HashMap<(String, String), i64> = HashMap::new();
        for event in &events {
            *wanted.entry((text(event, "event_type"), text(event, "path"))).or_default() += 1;
        }
        let mut takes = Vec::new();
        for row in &rows {
            if let Some(want) = wanted.get_mut(&(text(row, "event_type"), text(row, "path"))) {
                let take = (*want).min(rollups::count_of(row.get("count")) as i64);
                if take > 0 {
                    takes.push((row, take));
                    *want -= take;
                }
            }
        }
        takes
    };

    // The all-time rollups counted the same, per shard: the hourly and
    // all-time shards are written by the same lane's batches.
    let mut paths: HashMap<(u32, String, String), i64> = HashMap::new();
    let mut totals: HashMap<u32, i64> = HashMap::new();
    for (row, take) in &takes {
        let shard = rollups::shard_of(row);
        *paths.entry((shard, text(row, "event_type"), text(row, "path"))).or_default() += take;
        *totals.entry(shard).or_default() += take;
    }
    let decrement = |id: Bson, count: i64| doc! { "q": { "_id": id }, "u": { "$inc": { "count": -count } } };
    let path_ids: Vec<Bson> =
        paths.keys().map(|(shard, kind, path)| Bson::String(rollups::shard_key(&[site, kind, path], *shard))).collect();
    let site_ids: Vec<Bson> = totals.keys().map(|shard| Bson::String(rollups::shard_key(&[site], *shard))).collect();
    let updates = paths
        .iter()
        .map(|((shard, kind, path), n)| decrement(rollups::shard_key(&[site, kind, path], *shard).into(), *n));
    update_all(db, session, rollups::PATHS, updates.collect()).await?;
    let updates = totals.iter().map(|(shard, n)| decrement(rollups::shard_key(&[site], *shard).into(), *n));
    update_all(db, session, rollups::SITES, updates.collect()).await?;
    // The ranks (unsharded) count the same events, over shards and hours.
    let mut taken: HashMap<(String, String), i64> = HashMap::new();
    for ((_, kind, path), n) in &paths {
        *taken.entry((kind.clone(), path.clone())).or_default() += n;
    }
    rollups::ranks::subtract(db, session, site, &taken).await?;
    // Counts that reached zero are no longer there at all.
    let gone = |ids: Vec<Bson>| doc! { "_id": { "$in": ids }, "count": { "$lte": 0 } };
    db.collection::<Document>(rollups::PATHS).delete_many(gone(path_ids)).session(&mut *session).await?;
    db.collection::<Document>(rollups::SITES).delete_many(gone(site_ids)).session(&mut *session).await?;

    if last {
        hourly_paths.delete_many(of_hour.clone()).session(&mut *session).await?;
        db.collection::<Document>(rollups::HOURLY_VISITORS).delete_many(of_hour).session(&mut *session).await?;
    } else {
        let row_id = |row: &Document| row.get("_id").cloned().unwrap_or(Bson::Null);
        let updates = takes.iter().map(|(row, take)| decrement(row_id(row), *take)).collect();
        update_all(db, session, rollups::HOURLY_PATHS, updates).await?;
        let row_ids: Vec<Bson> = takes.iter().map(|(row, _)| row_id(row)).collect();
        hourly_paths.delete_many(gone(row_ids)).session(&mut *session).await?;
    }
    let ids: Vec<Bson> = events.iter().filter_map(|event| event.get("_id").cloned()).collect();
    let deleted =
        store.events().delete_many(doc! { "_id": { "$in": ids } }).session(&mut *session).await?.deleted_count;
    rollups::mark_visitors_partial(db, session).await?;
    Ok(Chunk { deleted, last })
}

/// Runs one `update` command of `updates` within `session`'s transaction; a
/// statement the server refuses (a corrupt rollup) fails the whole.
async fn update_all(
    db: &Database,
    session: &mut ClientSession,
    collection: &str,
    updates: Vec<Document>,
) -> Result<(), StoreError> {
    if updates.is_empty() {
        return Ok(());
    }
    let reply = db.run_command(doc! { "update": collection, "updates": updates }).session(session).await?;
    if let Ok(errors) = reply.get_array("writeErrors")
        && !errors.is_empty()
    {
        return Err(StoreError::Refused(format!("retention: rollup update of {collection} refused: {errors:?}")));
    }
    Ok(())
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
