//! The session registry: each running worker's entry in `workers` (its lanes'
//! sessions and a heartbeat), so that a worker blocked by a dead one's open
//! transaction can end that worker's sessions.

use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::{Bson, DateTime, Document, doc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Worker;
use crate::storage::StoreError;

/// The collection where running workers register their session and heartbeat.
pub const WORKERS_COLLECTION: &str = "workers";
/// How often a running worker beats.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A worker whose heartbeat is older than this is taken as dead: its session
/// (and any transaction it left open) is ended by the next worker it blocks.
/// Erring is harmless: a live worker whose session is ended retries its batch.
pub const DEAD_AFTER: Duration = Duration::from_secs(2);

/// How long a lane keeps its session (registered once) before starting a new one.
pub(super) const SESSION_REUSE: Duration = Duration::from_secs(60);

impl Worker {
    /// Keeps this worker's heartbeat fresh until `shutdown`, so that no other
    /// worker takes it for dead while it waits between polls.
    pub(super) async fn beat(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let workers = self.workers();
            let beat = workers.update_one(doc! { "_id": self.id }, doc! { "$set": { "heartbeat": self.local_now() } });
            if let Err(error) = beat.await {
                debug!(%error, "heartbeat not recorded");
            }
        }
    }

    fn workers(&self) -> mongodb::Collection<Document> {
        self.store.database().collection(WORKERS_COLLECTION)
    }

    /// Removes this worker's entry (it stopped cleanly); one left behind is
    /// reaped as dead by the next worker it blocks.
    pub(super) async fn unregister(&self) {
        if let Err(error) = self.workers().delete_one(doc! { "_id": self.id }).await {
            debug!(%error, "could not remove this worker's registration; it will be reaped as dead");
        }
    }

    /// Records `session` as lane `lane`'s current one, with a fresh heartbeat.
    pub(super) async fn register(&self, session: &ClientSession, lane: u32) -> Result<(), StoreError> {
        let entry = doc! {
            format!("sessions.{lane}"): session.id().clone(),
            "heartbeat": self.local_now(),
            "pid": i64::from(std::process::id()),
        };
        self.workers().update_one(doc! { "_id": self.id }, doc! { "$set": entry }).upsert(true).await?;
        Ok(())
    }

    /// Ends the sessions of registered workers whose heartbeat stopped (killed
    /// processes), which aborts any transaction they left open, and forgets them.
    pub async fn reap_dead_workers(&self) -> Result<(), StoreError> {
        let dead_before = DateTime::from_millis(self.local_now().timestamp_millis() - DEAD_AFTER.as_millis() as i64);
        let dead: Vec<Document> =
            self.workers().find(doc! { "heartbeat": { "$lt": dead_before } }).await?.try_collect().await?;
        for worker in dead {
            // One session per lane (`sessions`); `session`: a worker from before lanes.
            let mut sessions: Vec<Bson> =
                worker.get_document("sessions").map(|s| s.values().cloned().collect()).unwrap_or_default();
            sessions.extend(worker.get_document("session").ok().map(|s| Bson::Document(s.clone())));
            if !sessions.is_empty() {
                let admin = self.store.client().database("admin");
                if let Err(error) = admin.run_command(doc! { "killSessions": sessions }).await {
                    debug!(%error, "could not end a dead worker's session");
                    continue;
                }
            }
            info!(
                pid = worker.get_i64("pid").unwrap_or_default(),
                "ended the session of a worker that stopped beating"
            );
            self.workers().delete_one(doc! { "_id": worker.get("_id").cloned().unwrap_or(Bson::Null) }).await?;
        }
        Ok(())
    }
}
