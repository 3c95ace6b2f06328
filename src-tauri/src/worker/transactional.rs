//! Moving a batch in one transaction (replica sets, Atlas, SecantusDB): insert
//! into `events`, delete from the queue, count into the lane's rollup shard and
//! record new visitors, all or nothing; a conflict is retried on a fresh read.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::{Bson, DateTime, Document, RawDocumentBuf, doc};
use mongodb::error::TRANSIENT_TRANSACTION_ERROR;
use tracing::{debug, info, warn};

use super::batch::{ids_of, prepare_for_events};
use super::lanes::MovedBatch;
use super::sessions::SESSION_REUSE;
use super::{BatchFailure, MAX_TRANSACTION_ATTEMPTS, Worker, retention};
use crate::rollups::recent_visits::FenceMark;
use crate::rollups::{self, RankDeltas, RollupDeltas};
use crate::storage::error::TOO_LARGE_CODES;
use crate::storage::{StoreError, only_duplicate_keys};

impl Worker {
    /// Moves a batch in one transaction, retrying it (on a fresh read) when it
    /// conflicts with another worker's.
    ///
    /// The lane's session is kept for the next batches (for up to
    /// [`SESSION_REUSE`]), so that it is registered once, not once per batch; a
    /// failed batch drops it.
    pub(super) async fn move_batch_in_transaction(&self, lane: u32) -> Result<usize, BatchFailure> {
        let kept = self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&lane);
        let (mut session, started) = match kept {
            Some((session, started)) if started.elapsed() < SESSION_REUSE => (session, started),
            _ => {
                let session = self.store.client().start_session().await?;
                self.register(&session, lane).await?;
                (session, std::time::Instant::now())
            }
        };
        self.fold_ranks_if_due(&mut session).await;
        let moved = self.move_batch_with(&mut session, lane).await;
        if moved.is_ok() {
            self.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(lane, (session, started));
        }
        moved
    }

    /// [`Worker::move_batch_in_transaction`] with the lane's session.
    async fn move_batch_with(&self, session: &mut ClientSession, lane: u32) -> Result<usize, BatchFailure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // One transaction of this worker at a time keeps visits (see `Lanes::visits_turn`).
            let _visits_turn = self.lanes.visits_turn.lock().await;
            session.start_transaction().write_concern(self.store.durable_write_concern().clone()).await?;
            // The visits fence before the read: while another worker's batch
            // holds it, this attempt costs one write, not a batch's work.
            let fence = match self.take_visits_fence(session).await {
                Ok(fence) => fence,
                Err(error) => {
                    let _ = session.abort_transaction().await;
                    match error {
                        TransactionError::Conflict(reason) => {
                            drop(_visits_turn);
                            if self.conflicted(attempt, &reason).await? {
                                continue;
                            }
                            return Ok(0);
                        }
                        TransactionError::Store(error) => return Err(error.into()),
                        TransactionError::AlreadyMoved(_) => unreachable!("the fence moves nothing"),
                    }
                }
            };
            let (batch, mut claim) = match self.read_claimed(Some(&mut *session), lane).await {
                Ok(read) => read,
                Err(error) => {
                    let _ = session.abort_transaction().await;
                    return Err(error.into());
                }
            };
            let ids = ids_of(&batch);
            let outcome = match self.move_within(&mut *session, batch, lane, fence).await {
                Ok(batch) if batch.moved == 0 => {
                    claim.settle();
                    session.abort_transaction().await?;
                    return Ok(0);
                }
                Ok(batch) => match session.commit_transaction().await {
                    Ok(()) => {
                        claim.settle();
                        self.known_visitors.remember(batch.visitors);
                        self.recent_visits.committed(batch.visits);
                        Ok(batch.moved)
                    }
                    Err(error) => {
                        // Committed or not, who knows: the memory of visits cannot tell.
                        self.recent_visits.forget();
                        Err(TransactionError::from(error))
                    }
                },
                Err(error) => {
                    // The server may have aborted it already; nothing else to undo.
                    let _ = session.abort_transaction().await;
                    Err(error)
                }
            };
            drop(claim);
            drop(_visits_turn);
            match outcome {
                Ok(moved) => {
                    self.lanes.conflict_streak.store(0, std::sync::atomic::Ordering::Relaxed);
                    self.lanes.rank_fold_due.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Ok(moved);
                }
                Err(TransactionError::Conflict(reason)) => {
                    if !self.conflicted(attempt, &reason).await? {
                        return Ok(0);
                    }
                }
                Err(TransactionError::AlreadyMoved(ids)) => {
                    // Then the rest of the batch, on a fresh read; if none was
                    // moved after all, the duplicate was another batch's: a conflict.
                    if self.discard_already_moved(ids).await? == 0
                        && !self.conflicted(attempt, "a duplicate key from a concurrent batch").await?
                    {
                        return Ok(0);
                    }
                }
                Err(TransactionError::Store(error)) => return Err(BatchFailure { error, ids }),
            }
        }
    }

    /// Takes the visits fence (see `rollups::visits`) in `session`'s
    /// transaction and returns its count; another batch holding it is a
    /// [`TransactionError::Conflict`].
    async fn take_visits_fence(&self, session: &mut ClientSession) -> Result<FenceMark, TransactionError> {
        match rollups::visits::take_fence(self.store.database(), session).await {
            Ok(fence) => Ok(fence),
            Err(error) if rollups::daily::is_concurrent_write(&error) => {
                Err(TransactionError::Conflict("the visits fence is held by another batch".into()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Counts a batch transaction that conflicted (attempt `attempt`) and
    /// returns whether to try again, after a pause, up to
    /// [`MAX_TRANSACTION_ATTEMPTS`]; then the queue is left to the other
    /// worker until the next poll.
    ///
    /// The pause grows with the conflicts met since this worker's last commit
    /// (not only this call's), with jitter: the other worker holds the visits
    /// fence for a whole batch (a second or more), so quick retries only cost
    /// it CPU (measured: four workers retried ~230 times a second and slowed
    /// the one moving the queue), while a pause capped at [`MAX_CONFLICT_PAUSE`]
    /// still takes over soon from a worker that stops.
    async fn conflicted(&self, attempt: u32, reason: &str) -> Result<bool, StoreError> {
        self.counters.add_batch_conflict();
        let streak = self.lanes.conflict_streak.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if attempt >= MAX_TRANSACTION_ATTEMPTS {
            debug!(reason, streak, "another worker is moving the queue; leaving it to that one until the next poll");
            return Ok(false);
        }
        debug!(attempt, streak, reason, "batch transaction conflicted with another worker; retrying");
        // The other may be a dead worker's abandoned transaction.
        self.reap_dead_workers().await?;
        tokio::time::sleep(conflict_pause(streak)).await;
        Ok(true)
    }

    /// The work of one batch transaction after its read: insert, delete, count
    /// (into `lane`'s shard), record the visitors. Returns what to do once committed.
    async fn move_within(
        &self,
        session: &mut ClientSession,
        mut batch: Vec<RawDocumentBuf>,
        lane: u32,
        fence: FenceMark,
    ) -> Result<MovedBatch, TransactionError> {
        if batch.is_empty() {
            return Ok(MovedBatch::empty());
        }
        let moved = batch.len();
        // Step times for the debug log (see below).
        let t0 = std::time::Instant::now();
        let ids = prepare_for_events(&mut batch);
        let db = self.store.database();
        let limits = self.store.write_limits().await?;
        // Before the insert: the events go in with their visit's id and attributes.
        let fenced = rollups::visits::Fenced { fence, recent: &self.recent_visits };
        let visits = match rollups::visits::keep_visits(db, session, &mut batch, lane, &limits, fenced).await {
            Ok((_, written)) => written,
            // A visit, visitor or day written by a concurrent batch: retry.
            Err(error) if rollups::daily::is_concurrent_write(&error) => {
                return Err(TransactionError::Conflict("visits written by a concurrent batch".into()));
            }
            // A new visit's `_id` (its first event's) already stored: that
            // event was moved before (an idempotent move's leftover, whose
            // visits a rebuild made); handled as the events' insert would be.
            Err(StoreError::Operation(error)) if only_duplicate_keys(&error) => {
                return Err(TransactionError::AlreadyMoved(ids));
            }
            Err(error) => return Err(error.into()),
        };
        let t_visits = t0.elapsed();
        let deltas = RollupDeltas::of(batch.iter().map(|event| &**event));
        let events = self.store.events().clone_with_type::<RawDocumentBuf>();
        match events.insert_many(&batch).session(&mut *session).await {
            Ok(_) => {}
            Err(error) if only_duplicate_keys(&error) => return Err(TransactionError::AlreadyMoved(ids)),
            Err(error) => return Err(error.into()),
        }
        // The batch is the head of the queue in this transaction's snapshot, so
        // the range of its `_id`s holds exactly it: a range delete is cheaper than
        // looking up each `_id`, and the count below catches any difference.
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else { return Ok(MovedBatch::empty()) };
        let t_insert = t0.elapsed();
        let head = doc! { "_id": { "$gte": first, "$lte": last } };
        let deleted = self.store.queue().delete_many(head).session(&mut *session).await?;
        if deleted.deleted_count != moved as u64 {
            // Another worker moved some of these since our read, or the range
            // held more than the batch: start again from a fresh read.
            return Err(TransactionError::Conflict("the queue's head changed under the batch".into()));
        }
        let t_delete = t0.elapsed();
        deltas.add_counts(db, Some(&mut *session), lane, &limits).await?;
        let t_counts = t0.elapsed();
        // Visitors last, one lane at a time until its commit: a lane then finds
        // the visitors the other just recorded among the known ones, instead of
        // inserting them again (its snapshot predates that commit) and conflicting.
        let visitors_turn = self.lanes.visitors.clone().lock_owned().await;
        // Retention deletes the hourly visitors of expired hours, in any
        // process: those near its cutoff are looked up, never remembered.
        let trusted_from = self.retention_days.map(|days| {
            let cutoff = retention::cutoff(DateTime::now(), days);
            DateTime::from_millis(cutoff.timestamp_millis() + 24 * rollups::HOUR_MS)
        });
        self.known_visitors.trust_hours_from(trusted_from);
        let visitors = match deltas.record_visitors(db, Some(&mut *session), Some(&self.known_visitors), &limits).await
        {
            Ok(visitors) => visitors,
            // A new visitor recorded by a concurrent batch (of another worker,
            // or one this worker could not remember): retry.
            Err(StoreError::Operation(error)) if only_duplicate_keys(&error) => {
                return Err(TransactionError::Conflict("a visitor recorded by a concurrent batch".into()));
            }
            Err(error) => return Err(error.into()),
        };
        // The ranks' counts wait as pending documents (folded after the commit),
        // the site's users are recorded like the visitors, in this turn.
        let ranks = RankDeltas::of(batch.iter().map(|event| &**event));
        let site_users = match ranks.add_pending(db, session, Some(&self.known_visitors), lane).await {
            Ok(site_users) => site_users,
            Err(StoreError::Operation(error)) if only_duplicate_keys(&error) => {
                return Err(TransactionError::Conflict("a site's user recorded by a concurrent batch".into()));
            }
            Err(error) => return Err(error.into()),
        };
        let visitors = visitors.into_iter().chain(site_users).collect();
        debug!(
            moved,
            visits_ms = t_visits.as_millis() as u64,
            insert_ms = (t_insert - t_visits).as_millis() as u64,
            delete_ms = (t_delete - t_insert).as_millis() as u64,
            counts_ms = (t_counts - t_delete).as_millis() as u64,
            visitors_ms = (t0.elapsed() - t_counts).as_millis() as u64,
            "batch moved within its transaction (not yet committed)"
        );
        Ok(MovedBatch { moved, visitors, visits, _visitors_turn: Some(visitors_turn) })
    }

    /// Drops from the queue the entries of `ids` that are already in `events`
    /// (returns how many):
    ///
    /// - by `_id`: left by an idempotent (transaction-less) move that crashed
    ///   before its delete, on a database since moved to a replica set; the
    ///   rollups, rebuilt from `events` then, already count them;
    /// - by `(site_id, event_id)`: a client's retry of an event processed
    ///   before the retry arrived (one still queued is refused by the queue's
    ///   own index); the first is stored and counted, the retry never is.
    async fn discard_already_moved(&self, ids: Vec<Bson>) -> Result<usize, StoreError> {
        let present: Vec<Bson> = self
            .store
            .events()
            .find(doc! { "_id": { "$in": &ids } })
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .into_iter()
            .filter_map(|event| event.get("_id").cloned())
            .collect();
        if !present.is_empty() {
            warn!(
                events = present.len(),
                "queue entries already in events (from an earlier crash): removed from the queue"
            );
            self.store.queue().delete_many(doc! { "_id": { "$in": &present } }).await?;
        }
        let retries = self.retries_already_stored(ids).await?;
        if !retries.is_empty() {
            info!(events = retries.len(), "retried events whose event_id is already stored: removed from the queue");
            self.store.queue().delete_many(doc! { "_id": { "$in": &retries } }).await?;
        }
        Ok(present.len() + retries.len())
    }

    /// The queue entries of `ids` whose `(site_id, event_id)` an event in
    /// `events` already holds (under another `_id`).
    async fn retries_already_stored(&self, ids: Vec<Bson>) -> Result<Vec<Bson>, StoreError> {
        let with_event_id = doc! { "_id": { "$in": ids }, "event_id": { "$exists": true } };
        let entries: Vec<Document> = self
            .store
            .queue()
            .find(with_event_id)
            .projection(doc! { "_id": 1, "site_id": 1, "event_id": 1 })
            .await?
            .try_collect()
            .await?;
        // Both are strings in every entry the API queues; others cannot be retries.
        let key =
            |d: &Document| Some((d.get_str("site_id").ok()?.to_string(), d.get_str("event_id").ok()?.to_string()));
        let mut by_site: HashMap<String, Vec<String>> = HashMap::new();
        for (site_id, event_id) in entries.iter().filter_map(key) {
            by_site.entry(site_id).or_default().push(event_id);
        }
        let mut stored = HashSet::new();
        for (site_id, event_ids) in by_site {
            let filter = doc! { "site_id": &site_id, "event_id": { "$in": event_ids } };
            let mut cursor = self.store.events().find(filter).projection(doc! { "event_id": 1 }).await?;
            while let Some(event) = cursor.try_next().await? {
                if let Ok(event_id) = event.get_str("event_id") {
                    stored.insert((site_id.clone(), event_id.to_string()));
                }
            }
        }
        Ok(entries
            .iter()
            .filter(|entry| key(entry).is_some_and(|k| stored.contains(&k)))
            .filter_map(|entry| entry.get("_id").cloned())
            .collect())
    }
}

/// The longest pause after a conflicting batch transaction (see [`Worker::conflicted`]).
const MAX_CONFLICT_PAUSE: Duration = Duration::from_millis(500);

/// The pause after the `streak`-th conflict in a row: doubling from 10 ms up
/// to [`MAX_CONFLICT_PAUSE`], a random one between half of it and all of it.
fn conflict_pause(streak: u32) -> Duration {
    let ceiling = (Duration::from_millis(5) * 2u32.pow(streak.clamp(1, 10))).min(MAX_CONFLICT_PAUSE);
    ceiling.mul_f64(rand::random_range(0.5..=1.0))
}

/// Why a batch transaction did not commit.
#[derive(Debug)]
enum TransactionError {
    /// Another worker touched the same documents: retry on a fresh read.
    Conflict(String),
    /// Some entries of the batch are already in `events`.
    AlreadyMoved(Vec<Bson>),
    /// The database failed.
    Store(StoreError),
}

impl From<StoreError> for TransactionError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Operation(error) => error.into(),
            other => TransactionError::Store(other),
        }
    }
}

impl From<mongodb::error::Error> for TransactionError {
    fn from(error: mongodb::error::Error) -> Self {
        // The driver also labels network failures inside a transaction as
        // transient; those are an outage (back off, warn), not a conflict.
        let command = match error.kind.as_ref() {
            mongodb::error::ErrorKind::Command(command) => Some(command),
            _ => None,
        };
        // Too large for one transaction: retrying the same batch cannot help
        // (mongod may label it transient), a smaller one can (see `batch_limit`).
        if let Some(command) = command
            && error.contains_label(TRANSIENT_TRANSACTION_ERROR)
            && !TOO_LARGE_CODES.contains(&command.code)
        {
            TransactionError::Conflict(command.code_name.clone())
        } else {
            TransactionError::Store(error.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_pauses_double_from_10_ms_up_to_the_cap_with_jitter() {
        for (streak, ceiling) in [(0, 10), (1, 10), (2, 20), (3, 40), (6, 320), (7, 500), (40, 500)] {
            let pause = conflict_pause(streak);
            let ceiling = Duration::from_millis(ceiling);
            assert!(pause >= ceiling / 2 && pause <= ceiling, "streak {streak}: {pause:?} outside {ceiling:?}");
        }
    }
}
