//! The session registry: each running worker's entry in `workers` (its lanes'
//! sessions and a heartbeat), so that a worker blocked by a dead one's open
//! transaction can end that worker's sessions.
//!
//! Liveness is judged on the database server's clock alone: heartbeats are
//! written with the server's time (`$currentDate`) and compared with it
//! (`$$NOW`), so a host whose clock is off neither looks dead nor takes the
//! others for dead. Each beat upserts the entry, so a live worker reaped by
//! mistake registers again (with its lanes' sessions) on its next beat.

use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::{Bson, Document, doc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Worker;
use crate::storage::StoreError;

/// The collection where running workers register their session and heartbeat.
pub const WORKERS_COLLECTION: &str = "workers";
/// How often a running worker beats.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A worker whose heartbeat is older than this (on the server's clock) is
/// taken as dead: its session (and any transaction it left open) is ended by
/// the next worker it blocks. Ten beats, so that a busy host or a slow
/// network does not pass for a dead worker; erring stays harmless: a live
/// worker whose session is ended retries its batch and registers again.
pub const DEAD_AFTER: Duration = Duration::from_millis(10 * HEARTBEAT.as_millis() as u64);

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
            if let Err(error) = self.record_heartbeat().await {
                debug!(%error, "heartbeat not recorded");
            }
        }
    }

    /// Writes this worker's heartbeat with the server's time, with the lanes'
    /// current sessions: an entry removed meanwhile (reaped by mistake) is
    /// written again whole.
    async fn record_heartbeat(&self) -> Result<(), StoreError> {
        let mut entry = doc! { "pid": i64::from(std::process::id()) };
        for (lane, (session, _)) in self.sessions.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            entry.insert(format!("sessions.{lane}"), session.id().clone());
        }
        let beat = doc! { "$set": entry, "$currentDate": { "heartbeat": true } };
        self.workers().update_one(doc! { "_id": self.id }, beat).upsert(true).await?;
        Ok(())
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
            "pid": i64::from(std::process::id()),
        };
        let update = doc! { "$set": entry, "$currentDate": { "heartbeat": true } };
        self.workers().update_one(doc! { "_id": self.id }, update).upsert(true).await?;
        Ok(())
    }

    /// Ends the sessions of registered workers whose heartbeat stopped (killed
    /// processes), which aborts any transaction they left open, and forgets them.
    /// "Stopped" is [`DEAD_AFTER`] on the server's clock, never this host's.
    pub async fn reap_dead_workers(&self) -> Result<(), StoreError> {
        let dead_after = DEAD_AFTER.as_millis() as i64;
        let dead_before =
            doc! { "$dateSubtract": { "startDate": "$$NOW", "unit": "millisecond", "amount": dead_after } };
        let stale = doc! { "$expr": { "$lt": ["$heartbeat", dead_before] } };
        let dead: Vec<Document> = self.workers().find(stale).await?.try_collect().await?;
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
            // Only the entry as read: one that beat meanwhile is alive and stays.
            let mut as_read = doc! { "_id": worker.get("_id").cloned().unwrap_or(Bson::Null) };
            as_read.insert("heartbeat", worker.get("heartbeat").cloned().unwrap_or(Bson::Null));
            self.workers().delete_one(as_read).await?;
        }
        Ok(())
    }
}
