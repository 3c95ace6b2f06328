//! Rollups: per-site aggregates the worker keeps up to date as it moves each
//! batch, so that stats read a few small documents instead of scanning every event.
//!
//! Each document's `_id` is its key (the parts joined by a control character),
//! with the parts also stored as fields for the queries.
//!
//! The counting documents (`stats_sites`, `stats_paths`, `stats_hourly_paths`)
//! are split in shards, one per worker lane (see [`crate::worker`]): two batches moved
//! side by side then never update the same document, so their transactions do
//! not conflict. A count is the sum of its shards; every reader adds them up.
//! Shard 0 keeps the plain key (the layout before shards existed).
//!
//! | collection | one document per | holds |
//! |---|---|---|
//! | `stats_sites` | site | `count` |
//! | `stats_paths` | site, event type, path | `count` |
//! | `stats_visitors` | site, event type, user | (presence) |
//! | `stats_hourly_paths` | site, hour, event type, path | `count` |
//! | `stats_hourly_visitors` | site, hour, event type, user | (presence) |
//!
//! Hours are UTC hours of the event's `timestamp`; a time range that does not
//! start or end on an hour adds the raw events of its partial hours (see [`crate::stats`]).
//!
//! Exactness: a batch's rollup updates run in the same multi-document transaction
//! as its insert into `events` and its delete from the queue, so a batch counts
//! once or not at all, whatever crashes or re-runs. Deployments without
//! transactions (a standalone `mongod`) cannot keep that promise: there the
//! worker marks the rollups as not ready and stats are computed from `events`.
//! The marker (`stats_meta`, `_id: "rollups"`) also guards a rebuild from
//! `events` (a database written before rollups existed), which one worker does
//! while the others wait.
//!
//! This module holds the schema (collections, keys, shards, hours) and the
//! indexes; [`deltas`] what a batch adds, [`known_visitors`] the visitors a
//! worker need not look up again, [`rebuild`] the readiness marker and the
//! rebuild from `events`.

pub mod daily;
pub mod deltas;
pub mod known_visitors;
pub mod ranks;
pub mod rebuild;
pub mod recent_visits;
pub mod sessionize;
pub mod visits;

use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::{Database, IndexModel};

use crate::storage::StoreError;
use crate::storage::error::is_namespace_exists;

pub use deltas::RollupDeltas;
pub use known_visitors::{KnownVisitors, VisitorDigest};
pub use ranks::RankDeltas;
pub use rebuild::{
    Readiness, RebuildOptions, RebuildPause, are_ready, make_ready, make_ready_with, mark_not_ready,
    mark_visitors_partial, readiness,
};

/// Events per site.
pub const SITES: &str = "stats_sites";
/// Events per site, event type and path.
pub const PATHS: &str = "stats_paths";
/// Users seen per site and event type.
pub const VISITORS: &str = "stats_visitors";
/// Events per site, hour, event type and path.
pub const HOURLY_PATHS: &str = "stats_hourly_paths";
/// Users seen per site, hour and event type.
pub const HOURLY_VISITORS: &str = "stats_hourly_visitors";
/// Where the rollups' state is kept.
pub const META: &str = "stats_meta";

/// Every rollup collection (the ranks' included, see [`ranks`]).
pub const COLLECTIONS: [&str; 10] = [
    SITES,
    PATHS,
    VISITORS,
    HOURLY_PATHS,
    HOURLY_VISITORS,
    ranks::RANK_PATHS,
    ranks::RANK_TYPES,
    ranks::SITE_USERS,
    ranks::SITE_RANKS,
    ranks::PENDING,
];

/// The visits and their daily rollups (see [`visits`], [`daily`]): created
/// up front like the others, and rebuilt from `events` with them.
pub const VISIT_COLLECTIONS: [&str; 4] = [visits::VISITS, visits::VISIT_FENCES, daily::DAILY, daily::DAILY_VISITORS];

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// How long a rebuild's claim lasts unless renewed (after every chunk): a
/// builder that dies is replaced this long after its last sign of life.
pub const REBUILD_LEASE: Duration = Duration::from_secs(15);

/// The start of the UTC hour holding `time`.
pub fn hour_of(time: DateTime) -> DateTime {
    DateTime::from_millis(time.timestamp_millis().div_euclid(HOUR_MS) * HOUR_MS)
}

/// The first hour boundary at or after `time`.
pub fn next_hour_boundary(time: DateTime) -> DateTime {
    let hour = hour_of(time);
    if hour == time { hour } else { DateTime::from_millis(hour.timestamp_millis() + HOUR_MS) }
}

/// character, which no accepted field may hold, so distinct keys never collide.
pub fn key(parts: &[&str]) -> String {
    parts.join("\u{1f}")
}

/// The `_id` of shard `shard` of the counting document keyed by `parts`: the
/// plain key for shard 0, else one part more (so it cannot meet another key,
/// whose number of parts is fixed per collection).
pub fn shard_key(parts: &[&str], shard: u32) -> String {
    let mut key = key(parts);
    if shard > 0 {
        key.push('\u{1f}');
        key.push_str(&shard.to_string());
    }
    key
}

/// The shard a counting document belongs to (0 when it has no `shard` field:
/// written before shards existed).
pub fn shard_of(document: &Document) -> u32 {
    match document.get("shard") {
        Some(Bson::Int32(n)) => u32::try_from(*n).unwrap_or(0),
        Some(Bson::Int64(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// Creates the indexes the stats queries use (the rollups are keyed by `_id`),
/// and every rollup collection: a batch transaction that creates one on its
/// first write conflicts with the other lane's batch doing the same.
pub async fn ensure_indexes(db: &Database) -> Result<(), StoreError> {
    let existing = db.list_collection_names().await?;
    let all = COLLECTIONS.into_iter().chain(VISIT_COLLECTIONS);
    for collection in all.filter(|c| !existing.iter().any(|e| e == c)) {
        match db.create_collection(collection).await {
            Ok(()) => {}
            // Created meanwhile by another process starting up.
            Err(error) if is_namespace_exists(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let index = |keys: Document| IndexModel::builder().keys(keys).build();
    let indexes = [
        (PATHS, doc! { "site_id": 1, "event_type": 1 }),
        (VISITORS, doc! { "site_id": 1, "event_type": 1 }),
        (HOURLY_PATHS, doc! { "site_id": 1, "hour": 1 }),
        (HOURLY_VISITORS, doc! { "site_id": 1, "hour": 1 }),
        // The ranks' top N: a sort and limit the index answers (see [`ranks`]).
        (ranks::RANK_PATHS, doc! { "site_id": 1, "count": -1, "path": 1 }),
        (ranks::RANK_TYPES, doc! { "site_id": 1, "count": -1, "event_type": 1 }),
        // A site's total (and users) is the sum of its shards; its pending counts.
        (SITES, doc! { "site_id": 1 }),
        (ranks::SITE_RANKS, doc! { "site_id": 1 }),
        (ranks::PENDING, doc! { "site_id": 1 }),
        // A batch's visitors' visits near its events; a site's visits by start
        // (stats), and all by start (retention).
        (visits::VISITS, doc! { "sv": 1, "end": 1 }),
        (visits::VISITS, doc! { "site_id": 1, "start": 1 }),
        (visits::VISITS, doc! { "start": 1 }),
        (daily::DAILY, doc! { "site_id": 1, "day": 1 }),
        (daily::DAILY_VISITORS, doc! { "site_id": 1, "anonymous": 1, "day": 1 }),
    ];
    for (collection, keys) in indexes {
        db.collection::<Document>(collection).create_index(index(keys)).await?;
    }
    Ok(())
}

/// Reads a count, which the server may send as a 32- or 64-bit integer or a double.
pub fn count_of(value: Option<&Bson>) -> u64 {
    match value {
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Double(n)) if *n >= 0.0 => *n as u64,
        _ => 0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use mongodb::bson::RawDocumentBuf;

    use super::*;

    /// An event as the queue holds it, for the rollups' unit tests.
    pub(crate) fn event(site: &str, kind: &str, path: &str, user: &str, millis: i64) -> RawDocumentBuf {
        let event = doc! {
            "site_id": site, "event_type": kind, "path": path, "user_id": user,
            "timestamp": DateTime::from_millis(millis),
        };
        RawDocumentBuf::from_document(&event).expect("a valid document")
    }

    #[test]
    fn hours_are_utc_hour_starts() {
        let t = DateTime::from_millis(5 * HOUR_MS + 1234);
        assert_eq!(hour_of(t), DateTime::from_millis(5 * HOUR_MS));
        assert_eq!(next_hour_boundary(t), DateTime::from_millis(6 * HOUR_MS));
        let aligned = DateTime::from_millis(7 * HOUR_MS);
        assert_eq!((hour_of(aligned), next_hour_boundary(aligned)), (aligned, aligned));
        assert_eq!(hour_of(DateTime::from_millis(-1)), DateTime::from_millis(-HOUR_MS), "before 1970 too");
    }
}
