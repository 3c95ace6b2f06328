//! The quarantine ([`QUARANTINE_COLLECTION`]): queue entries the database
//! refuses to move even alone, set aside with the reason so the queue behind
//! them keeps moving; listed and requeued by an operator (`analytics-service
//! quarantine`, the desktop app's "Requeue" button) once the cause is fixed.
//!
//! Nothing is dropped: an entry leaves the queue only in the same transaction
//! that stores it here (where the deployment runs transactions), or after it
//! is stored here (without: a re-run meets its `_id` here and only finishes
//! the delete). Requeueing moves entries back the same way, with their `_id`s.

use futures_util::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::{Bson, DateTime, Document, doc};
use tracing::warn;

use crate::storage::{Store, StoreError, is_duplicate_key, only_duplicate_keys};

/// Where entries that cannot be moved are set aside: `{_id, entry, error,
/// quarantined_at}`, `_id` and `entry` as they were in the queue.
pub const QUARANTINE_COLLECTION: &str = "events_quarantine";

/// Entries moved back per transaction by [`requeue`].
const REQUEUE_CHUNK: i64 = 500;

/// A quarantined entry, as listed for an operator.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QuarantinedEntry {
    /// The queue entry's `_id` (as text).
    pub id: String,
    /// Its `site_id`, when it has a text one.
    pub site_id: Option<String>,
    /// Why the database refused to move it.
    pub error: String,
    /// When it was set aside.
    pub quarantined_at: DateTime,
}

/// Moves the queue entry `id` into the quarantine with `error`, in one
/// transaction when `transactional`. Returns false when the entry was no
/// longer queued (another worker moved or set it aside).
pub(super) async fn set_aside(store: &Store, id: &Bson, error: &str, transactional: bool) -> Result<bool, StoreError> {
    let mut session = store.client().start_session().await?;
    if transactional {
        session.start_transaction().write_concern(store.durable_write_concern().clone()).await?;
    }
    let outcome = set_aside_with(store, &mut session, id, error).await;
    match (&outcome, transactional) {
        (Ok(_), true) => session.commit_transaction().await?,
        (Err(_), true) => {
            let _ = session.abort_transaction().await;
        }
        _ => {}
    }
    outcome
}

async fn set_aside_with(
    store: &Store,
    session: &mut ClientSession,
    id: &Bson,
    error: &str,
) -> Result<bool, StoreError> {
    let Some(entry) = store.queue().find_one(doc! { "_id": id }).session(&mut *session).await? else {
        return Ok(false);
    };
    let quarantined = doc! { "_id": id, "entry": entry, "error": error, "quarantined_at": DateTime::now() };
    let quarantine = quarantine(store);
    match quarantine.insert_one(quarantined).session(&mut *session).await {
        Ok(_) => {}
        // Set aside before by a run that stopped before its delete (no transactions).
        Err(error) if is_duplicate_key(&error) => {}
        Err(error) => return Err(error.into()),
    }
    store.queue().delete_one(doc! { "_id": id }).session(&mut *session).await?;
    Ok(true)
}

/// How many entries are quarantined (from collection metadata: cheap).
pub async fn count(store: &Store) -> Result<u64, StoreError> {
    Ok(quarantine(store).estimated_document_count().await?)
}

/// Up to `limit` quarantined entries, oldest first.
pub async fn list(store: &Store, limit: i64) -> Result<Vec<QuarantinedEntry>, StoreError> {
    let found: Vec<Document> = quarantine(store)
        .find(doc! {})
        .sort(doc! { "quarantined_at": 1, "_id": 1 })
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    Ok(found
        .iter()
        .map(|quarantined| QuarantinedEntry {
            id: match quarantined.get("_id") {
                Some(Bson::ObjectId(id)) => id.to_hex(),
                Some(other) => other.to_string(),
                None => String::new(),
            },
            site_id: quarantined.get_document("entry").ok().and_then(|e| e.get_str("site_id").ok()).map(String::from),
            error: quarantined.get_str("error").unwrap_or_default().to_string(),
            quarantined_at: quarantined.get_datetime("quarantined_at").copied().unwrap_or(DateTime::MIN),
        })
        .collect())
}

/// Moves every entry quarantined so far back into the queue, with its `_id`,
/// for the worker to try again (entries set aside meanwhile stay). Each chunk
/// moves in one transaction where the deployment runs them; without, an entry
/// already back in the queue is not inserted twice. Returns how many moved.
pub async fn requeue(store: &Store) -> Result<u64, StoreError> {
    let transactional = store.supports_transactions().await?;
    let before = DateTime::now();
    let mut requeued = 0;
    loop {
        let chunk: Vec<Document> = quarantine(store)
            .find(doc! { "quarantined_at": { "$lte": before } })
            .sort(doc! { "_id": 1 })
            .limit(REQUEUE_CHUNK)
            .await?
            .try_collect()
            .await?;
        if chunk.is_empty() {
            return Ok(requeued);
        }
        let (ids, entries): (Vec<Bson>, Vec<Document>) =
            chunk.iter().filter_map(|q| Some((q.get("_id")?.clone(), q.get_document("entry").ok()?.clone()))).unzip();
        if ids.len() < chunk.len() {
            warn!(left = chunk.len() - ids.len(), "quarantined documents without an entry are left as they are");
        }
        if ids.is_empty() {
            return Ok(requeued);
        }
        let mut session = store.client().start_session().await?;
        if transactional {
            session.start_transaction().write_concern(store.durable_write_concern().clone()).await?;
        }
        let moved = async {
            match store.queue().insert_many(&entries).ordered(false).session(&mut session).await {
                Ok(_) => {}
                // Already back from a requeue that stopped before its delete.
                Err(error) if only_duplicate_keys(&error) => {}
                Err(error) => return Err(StoreError::from(error)),
            }
            let deleted = quarantine(store).delete_many(doc! { "_id": { "$in": &ids } }).session(&mut session).await?;
            Ok(deleted.deleted_count)
        }
        .await;
        match moved {
            Ok(deleted) => {
                if transactional {
                    session.commit_transaction().await?;
                }
                requeued += deleted;
            }
            Err(error) => {
                if transactional {
                    let _ = session.abort_transaction().await;
                }
                return Err(error);
            }
        }
    }
}

fn quarantine(store: &Store) -> mongodb::Collection<Document> {
    store.database().collection_with_options(
        QUARANTINE_COLLECTION,
        mongodb::options::CollectionOptions::builder().write_concern(store.durable_write_concern().clone()).build(),
    )
}
