//! The rollups' marker (`stats_meta`, `_id: "rollups"`): whether stats may read
//! them, and the rebuild from `events` that one worker does (under a lease)
//! while the others wait. Each claim of the lease has an epoch, and every
//! write of the rebuild commits only in a transaction that renews that epoch's
//! claim: a builder taken over (paused past its lease) can no longer write, so
//! the rollups never count a chunk twice.

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, DateTime, Document, RawDocumentBuf, doc};
use mongodb::error::TRANSIENT_TRANSACTION_ERROR;
use mongodb::{ClientSession, Database};
use tracing::{info, warn};

use super::{COLLECTIONS, META, REBUILD_LEASE, RankDeltas, RollupDeltas, VISIT_COLLECTIONS};
use crate::storage::{Store, StoreError, is_duplicate_key};

/// Events read from `events` per step (one transaction) of a rebuild.
const REBUILD_CHUNK: usize = 5_000;

/// How a rebuild runs: [`make_ready`] uses the defaults; tests shorten the
/// lease and the chunk, and may pause a builder.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// How long a claim lasts unless renewed.
    pub lease: Duration,
    /// Events per step.
    pub chunk: usize,
    /// Test-only: where the builder stops before writing its first chunk.
    pub pause: Option<Arc<RebuildPause>>,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        RebuildOptions { lease: REBUILD_LEASE, chunk: REBUILD_CHUNK, pause: None }
    }
}

/// Test-only: a builder paused with its first chunk read and not yet written
/// (so a test can let its lease run out). It signals `reached`, then waits for `resume`.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct RebuildPause {
    /// Notified when the builder has paused.
    pub reached: tokio::sync::Notify,
    /// Notify to let the builder go on.
    pub resume: tokio::sync::Notify,
}

/// What stats may read from the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The rollups hold exactly what `events` holds.
    pub ready: bool,
    /// The all-time visitors hold exactly the visitors of `events` (false once
    /// retention deleted events: some visitors may have none left).
    pub all_time_visitors: bool,
    /// The ranks (see [`super::ranks`]) hold exactly what `events` holds: they
    /// were built by the last rebuild (a marker made ready before ranks existed
    /// has not, and stats then read the other rollups).
    pub ranked: bool,
}

/// Reads the rollups' marker.
pub async fn readiness(store: &Store) -> Result<Readiness, StoreError> {
    let meta = store.database().collection::<Document>(META).find_one(doc! { "_id": "rollups" }).await?;
    let ready = meta.as_ref().is_some_and(|meta| meta.get_str("state") == Ok("ready"));
    let all_time_visitors = ready && meta.as_ref().is_some_and(|meta| meta.get_bool("visitors_partial") != Ok(true));
    let ranked = ready && meta.is_some_and(|meta| meta.get_bool("ranked") == Ok(true));
    Ok(Readiness { ready, all_time_visitors, ranked })
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
    make_ready_with(store, owner, &RebuildOptions::default()).await
}

/// [`make_ready`] with a rebuild run as `options` say (tests).
#[doc(hidden)]
pub async fn make_ready_with(store: &Store, owner: &str, options: &RebuildOptions) -> Result<(), StoreError> {
    let meta = store.database().collection::<Document>(META);
    let mut waiting_logged = false;
    loop {
        if are_ready(store).await? {
            return Ok(());
        }
        let now = DateTime::now();
        let lease_until = DateTime::from_millis(now.timestamp_millis() + lease_millis(options));
        // This claim's epoch: every write of the rebuild checks it is still the
        // marker's, so a builder whose claim was taken over writes nothing more.
        let epoch = ObjectId::new();
        // Become the builder if there is none, or if the last one's lease ran out.
        // A "ready" or leased marker fails the filter and the upsert then
        // collides with it on `_id`: somebody else holds it.
        let claim = meta
            .update_one(
                doc! { "_id": "rollups", "state": "building", "lease_until": { "$lt": now } },
                doc! { "$set": { "state": "building", "owner": owner, "epoch": epoch, "lease_until": lease_until } },
            )
            .upsert(true)
            .await;
        match claim {
            Ok(_) => {
                match rebuild(store, epoch, options).await {
                    Ok(()) => {}
                    Err(RebuildError::TakenOver) => {
                        warn!("rollup rebuild outlived its lease and was taken over; waiting for the new builder");
                        continue;
                    }
                    Err(RebuildError::Store(error)) => return Err(error),
                }
                let done = meta
                    .update_one(
                        doc! { "_id": "rollups", "state": "building", "epoch": epoch },
                        doc! {
                            "$set": { "state": "ready", "built_at": DateTime::now(), "ranked": true },
                            "$unset": { "lease_until": "", "visitors_partial": "", "epoch": "" },
                        },
                    )
                    .await?;
                if done.matched_count == 1 {
                    return Ok(());
                }
                warn!("rollup rebuild outlived its lease and was taken over; waiting for the new builder");
            }
            // A fenced write of the builder holding the marker (duplicate key:
            // the marker is ready or leased): somebody else holds it.
            Err(error) if is_duplicate_key(&error) || is_write_conflict(&error) => {
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

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
enum RebuildError {
    /// Another builder claimed the rebuild (this one outlived its lease).
    #[error("rollup rebuild taken over by another worker")]
    TakenOver,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<mongodb::error::Error> for RebuildError {
    fn from(error: mongodb::error::Error) -> Self {
        RebuildError::Store(error.into())
    }
}

/// One fenced write of a rebuild.
enum Step<'a> {
    /// Deletes up to a chunk of a rollup collection's documents.
    Clear(&'a str),
    /// Adds a chunk of events' counts (and ranks), and merges them into the visits.
    Add(&'a RollupDeltas<'a>, &'a RankDeltas<'a>, &'a [RawDocumentBuf]),
}

/// Conflicting attempts at a fenced step before the rebuild gives up (the
/// worker then retries it from the start).
const FENCED_ATTEMPTS: u32 = 5;

/// Recomputes every rollup from `events`. Every write is fenced: it runs in a
/// transaction that first renews this claim (`epoch`) on the marker, so it
/// commits only while this builder holds the rebuild; a builder paused past
/// its lease and taken over gets [`RebuildError::TakenOver`] and has written
/// nothing since. Runs while no worker moves batches.
async fn rebuild(store: &Store, epoch: ObjectId, options: &RebuildOptions) -> Result<(), RebuildError> {
    let mut session = store.client().start_session().await?;
    for collection in COLLECTIONS.into_iter().chain(VISIT_COLLECTIONS) {
        while fenced(store, &mut session, epoch, options, &Step::Clear(collection)).await? == options.chunk {}
    }
    let total = store.events().estimated_document_count().await?;
    if total > 0 {
        info!(events = total, "building the stats rollups from existing events (once)");
    }
    // The rollups' fields and the visits' (which include them).
    let projection = super::visits::projection();
    let events = store.events().clone_with_type::<RawDocumentBuf>();
    let mut cursor = events.find(doc! {}).projection(projection).await?;
    let mut chunk = Vec::with_capacity(options.chunk);
    let mut pause = options.pause.clone();
    loop {
        let next = cursor.try_next().await?;
        let end = next.is_none();
        chunk.extend(next);
        if chunk.len() == options.chunk || (end && !chunk.is_empty()) {
            if let Some(pause) = pause.take() {
                pause.reached.notify_one();
                pause.resume.notified().await;
            }
            let deltas = RollupDeltas::of(chunk.iter().map(|event| &**event));
            let ranks = RankDeltas::of(chunk.iter().map(|event| &**event));
            fenced(store, &mut session, epoch, options, &Step::Add(&deltas, &ranks, &chunk)).await?;
            drop((deltas, ranks));
            chunk.clear();
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

/// Runs `step` fenced by `epoch` (see [`rebuild`]), retrying it while its
/// transaction conflicts. Returns how many documents a clear found.
async fn fenced(
    store: &Store,
    session: &mut ClientSession,
    epoch: ObjectId,
    options: &RebuildOptions,
    step: &Step<'_>,
) -> Result<usize, RebuildError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        session.start_transaction().write_concern(store.durable_write_concern().clone()).await?;
        let outcome = match fenced_within(store, session, epoch, options, step).await {
            Ok(found) => session.commit_transaction().await.map(|()| found).map_err(RebuildError::from),
            Err(error) => {
                let _ = session.abort_transaction().await;
                Err(error)
            }
        };
        match outcome {
            Err(RebuildError::Store(StoreError::Operation(error)))
                if attempt < FENCED_ATTEMPTS && error.contains_label(TRANSIENT_TRANSACTION_ERROR) =>
            {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            outcome => return outcome,
        }
    }
}

async fn fenced_within(
    store: &Store,
    session: &mut ClientSession,
    epoch: ObjectId,
    options: &RebuildOptions,
    step: &Step<'_>,
) -> Result<usize, RebuildError> {
    let db = store.database();
    let lease_until = DateTime::from_millis(DateTime::now().timestamp_millis() + lease_millis(options));
    let renewed = db
        .collection::<Document>(META)
        .update_one(
            doc! { "_id": "rollups", "state": "building", "epoch": epoch },
            doc! { "$set": { "lease_until": lease_until } },
        )
        .session(&mut *session)
        .await?;
    if renewed.matched_count == 0 {
        return Err(RebuildError::TakenOver);
    }
    match step {
        Step::Clear(name) => {
            let collection = db.collection::<Document>(name);
            let find = collection.find(doc! {}).projection(doc! { "_id": 1 }).limit(options.chunk as i64);
            let found: Vec<Document> = find.session(&mut *session).await?.stream(&mut *session).try_collect().await?;
            let ids: Vec<Bson> = found.iter().filter_map(|d| d.get("_id").cloned()).collect();
            if !ids.is_empty() {
                collection.delete_many(doc! { "_id": { "$in": ids } }).session(&mut *session).await?;
            }
            Ok(found.len())
        }
        Step::Add(deltas, ranks, events) => {
            let limits = store.write_limits().await?;
            deltas.apply(db, Some(&mut *session), None, 0, &limits).await?;
            ranks.apply(db, session).await?;
            super::visits::rebuild_chunk(db, session, events, &limits).await?;
            Ok(0)
        }
    }
}

/// True when a write met another transaction's uncommitted write.
fn is_write_conflict(error: &mongodb::error::Error) -> bool {
    const WRITE_CONFLICT: i32 = 112;
    error.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || matches!(error.kind.as_ref(), mongodb::error::ErrorKind::Command(e) if e.code == WRITE_CONFLICT)
        || matches!(
            error.kind.as_ref(),
            mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(e)) if e.code == WRITE_CONFLICT
        )
}

fn lease_millis(options: &RebuildOptions) -> i64 {
    options.lease.as_millis() as i64
}
