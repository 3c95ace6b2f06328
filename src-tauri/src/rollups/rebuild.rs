//! The rollups' marker (`stats_meta`, `_id: "rollups"`): whether stats may read
//! them, and the rebuild from `events` that one worker does (under a lease)
//! while the others wait.

use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, RawDocumentBuf, doc};
use mongodb::{ClientSession, Database};
use tracing::{info, warn};

use super::{COLLECTIONS, META, REBUILD_LEASE, RollupDeltas};
use crate::storage::{Store, StoreError, is_duplicate_key};

/// Events read from `events` per step of a rebuild.
const REBUILD_CHUNK: usize = 20_000;

/// What stats may read from the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The rollups hold exactly what `events` holds.
    pub ready: bool,
    /// The all-time visitors hold exactly the visitors of `events` (false once
    /// retention deleted events: some visitors may have none left).
    pub all_time_visitors: bool,
}

/// Reads the rollups' marker.
pub async fn readiness(store: &Store) -> Result<Readiness, StoreError> {
    let meta = store.database().collection::<Document>(META).find_one(doc! { "_id": "rollups" }).await?;
    let ready = meta.as_ref().is_some_and(|meta| meta.get_str("state") == Ok("ready"));
    let all_time_visitors = ready && meta.is_some_and(|meta| meta.get_bool("visitors_partial") != Ok(true));
    Ok(Readiness { ready, all_time_visitors })
}

/// True when the rollups hold exactly what `events` holds, so stats may read them.
pub async fn are_ready(store: &Store) -> Result<bool, StoreError> {
    Ok(readiness(store).await?.ready)
}

/// Notes, within `session`'s transaction, that the all-time visitors may hold
/// visitors whose events were deleted.
pub async fn mark_visitors_partial(db: &Database, session: &mut ClientSession) -> Result<(), StoreError> {
    db.collection::<Document>(META)
        .update_one(doc! { "_id": "rollups" }, doc! { "$set": { "visitors_partial": true } })
        .session(session)
        .await?;
    Ok(())
}

/// Marks the rollups as not ready: a worker that cannot use transactions calls
/// this before moving anything, so stats are computed from `events` from then on.
pub async fn mark_not_ready(store: &Store) -> Result<(), StoreError> {
    store.database().collection::<Document>(META).delete_one(doc! { "_id": "rollups" }).await?;
    Ok(())
}

/// Returns once the rollups are ready, rebuilding them from `events` first if
/// they are not (and no other worker is already at it: then this one waits).
/// `owner` names this worker in the marker.
pub async fn make_ready(store: &Store, owner: &str) -> Result<(), StoreError> {
    let meta = store.database().collection::<Document>(META);
    let mut waiting_logged = false;
    loop {
        if are_ready(store).await? {
            return Ok(());
        }
        let now = DateTime::now();
        let lease_until = DateTime::from_millis(now.timestamp_millis() + lease_millis());
        // Become the builder if there is none, or if the last one's lease ran out.
        // A "ready" or leased marker fails the filter and the upsert then
        // collides with it on `_id`: somebody else holds it.
        let claim = meta
            .update_one(
                doc! { "_id": "rollups", "state": "building", "lease_until": { "$lt": now } },
                doc! { "$set": { "state": "building", "owner": owner, "lease_until": lease_until } },
            )
            .upsert(true)
            .await;
        match claim {
            Ok(_) => {
                rebuild(store, owner).await?;
                let done = meta
                    .update_one(
                        doc! { "_id": "rollups", "state": "building", "owner": owner },
                        doc! {
                            "$set": { "state": "ready", "built_at": DateTime::now() },
                            "$unset": { "lease_until": "", "visitors_partial": "" },
                        },
                    )
                    .await?;
                if done.matched_count == 1 {
                    return Ok(());
                }
                warn!("rollup rebuild took longer than its lease and was taken over; waiting for the new builder");
            }
            Err(error) if is_duplicate_key(&error) => {
                if !waiting_logged {
                    info!("another worker is rebuilding the stats rollups; waiting for it");
                    waiting_logged = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Recomputes every rollup from `events`, renewing `owner`'s claim after each
/// chunk. Runs while no worker moves batches.
async fn rebuild(store: &Store, owner: &str) -> Result<(), StoreError> {
    let db = store.database();
    for collection in COLLECTIONS {
        db.collection::<Document>(collection).delete_many(doc! {}).await?;
    }
    let total = store.events().estimated_document_count().await?;
    if total > 0 {
        info!(events = total, "building the stats rollups from existing events (once)");
    }
    let projection = doc! { "site_id": 1, "event_type": 1, "path": 1, "user_id": 1, "timestamp": 1 };
    let events = store.events().clone_with_type::<RawDocumentBuf>();
    let mut cursor = events.find(doc! {}).projection(projection).await?;
    let mut chunk = Vec::with_capacity(REBUILD_CHUNK);
    let limits = store.write_limits().await?;
    loop {
        let next = cursor.try_next().await?;
        let end = next.is_none();
        chunk.extend(next);
        if chunk.len() == REBUILD_CHUNK || (end && !chunk.is_empty()) {
            RollupDeltas::of(chunk.iter().map(|event| &**event)).apply(db, None, None, 0, &limits).await?;
            chunk.clear();
            let lease_until = DateTime::from_millis(DateTime::now().timestamp_millis() + lease_millis());
            let renewed = db
                .collection::<Document>(META)
                .update_one(
                    doc! { "_id": "rollups", "state": "building", "owner": owner },
                    doc! { "$set": { "lease_until": lease_until } },
                )
                .await?;
            if renewed.matched_count == 0 {
                // Taken over (this builder stalled past its lease): stop writing.
                return Err(StoreError::Refused("rollup rebuild taken over by another worker".into()));
            }
        }
        if end {
            break;
        }
    }
    if total > 0 {
        info!("stats rollups built");
    }
    Ok(())
}

fn lease_millis() -> i64 {
    REBUILD_LEASE.as_millis() as i64
}
