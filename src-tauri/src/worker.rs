//! Worker: moves events from the queue collection into `events` in batches, and
//! keeps the stats rollups (see `rollups`) in step.
//!
//! A batch is read in `_id` order and, where the deployment runs transactions
//! (a replica set, Atlas, SecantusDB), moved in one transaction: insert into
//! `events` with `processed_at` (keeping each queue entry's `_id`), rollup
//! updates, delete from the queue. A crash or a concurrent worker therefore
//! never counts a batch twice nor loses one; a conflicting worker's transaction
//! is retried on a fresh read.
//!
//! On a standalone `mongod` (no transactions) the batch is moved idempotently
//! instead: a re-run meets the same `_id`s, refused by the `_id` index and
//! ignored, so `events` stays exact; the rollups are marked not ready and stats
//! read `events` directly.
//!
//! A worker killed in the middle of a transaction leaves it open on the server,
//! holding its documents until the server's transaction lifetime (60 s by
//! default) runs out. So each worker registers its current session in
//! `workers` with a heartbeat; a worker whose transaction conflicts ends the
//! sessions of registered workers whose heartbeat stopped ([`DEAD_AFTER`]).
//!
//! Polling is a plain `find` (no tailable cursor, which Atlas's free tier lacks);
//! a full batch is followed by the next at once.
//!
//! A worker moves [`LANES`] batches side by side, each in its own transaction:
//! while one waits on the database, the other keeps it busy (measured: one
//! lane at a time left a third of a 2-core machine idle). Lanes read in turn,
//! each past the batches still in flight, so their batches never overlap; each
//! lane counts into its own rollup shard (see `rollups`), so their
//! transactions do not conflict.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, DateTime, Document, RawDocument, RawDocumentBuf, doc};
use mongodb::error::TRANSIENT_TRANSACTION_ERROR;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::counters::PipelineCounters;
use crate::retention;
use crate::rollups::{self, KnownVisitors, RollupDeltas, VisitorDigest};
use crate::store::{Store, StoreError, only_duplicate_keys};

/// Longest pause between retries while the database is unavailable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Attempts at a batch whose transaction conflicts with another worker's before
/// this worker leaves the queue to that one until its next poll. Batches share
/// rollup documents (a site's counters), so workers on one queue take turns
/// rather than move batches side by side; more workers add availability, not speed.
const MAX_TRANSACTION_ATTEMPTS: u32 = 5;
/// The collection where running workers register their session and heartbeat.
pub const WORKERS_COLLECTION: &str = "workers";
/// How often a running worker beats.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A worker whose heartbeat is older than this is taken as dead: its session
/// (and any transaction it left open) is ended by the next worker it blocks.
/// Erring is harmless: a live worker whose session is ended retries its batch.
pub const DEAD_AFTER: Duration = Duration::from_secs(2);

/// How long a lane keeps its session (registered once) before starting a new one.
const SESSION_REUSE: Duration = Duration::from_secs(60);
/// Batches one worker moves side by side (see the module's doc). Two keep the
/// database of a 2-core machine busy; three measured no faster.
pub const LANES: u32 = 2;
/// Every this many reads, the reading lane first waits until no batch is in
/// flight and reads from the queue's head: entries queued late with `_id`s
/// below a batch in flight (another API process's clock behind) are then
/// moved too, however long the backlog lasts.
const HEAD_READ_EVERY: u64 = 64;

/// How this deployment lets a batch be moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveMode {
    /// In one transaction, rollups included.
    Transactional,
    /// Without transactions: idempotent by `_id`, rollups not kept.
    Idempotent,
}

/// The batch mover. Several may run at once, in any processes: see docs/deployment.md.
#[derive(Debug, Clone)]
pub struct Worker {
    store: Store,
    batch_size: u32,
    poll_interval: Duration,
    counters: Arc<PipelineCounters>,
    /// Found out (and the rollups made ready) before the first batch.
    mode: Arc<OnceCell<MoveMode>>,
    /// This worker's entry in [`WORKERS_COLLECTION`].
    id: ObjectId,
    /// Days events are kept (`RETENTION_DAYS`), if not for ever.
    retention_days: Option<u32>,
    /// Where the next batch is looked for.
    head: Arc<std::sync::Mutex<HeadWindow>>,
    /// Visitors already recorded in the rollups, so batches skip their lookup.
    known_visitors: Arc<KnownVisitors>,
    /// What the lanes share to keep their batches apart.
    lanes: Arc<Lanes>,
    /// Each lane's session, registered in [`WORKERS_COLLECTION`], with when it started.
    sessions: Arc<std::sync::Mutex<HashMap<u32, (ClientSession, std::time::Instant)>>>,
    /// Set while an outage reported by a lane lasts (see `run_lane`).
    outage: Arc<AtomicBool>,
}

impl Worker {
    /// A worker over `store` moving up to `batch_size` events per batch.
    pub fn new(store: Store, batch_size: u32, poll_interval: Duration, counters: Arc<PipelineCounters>) -> Worker {
        Worker {
            store,
            batch_size,
            poll_interval,
            counters,
            mode: Arc::default(),
            id: ObjectId::new(),
            retention_days: None,
            head: Arc::default(),
            known_visitors: Arc::default(),
            lanes: Arc::default(),
            sessions: Arc::default(),
            outage: Arc::default(),
        }
    }

    /// The same worker, also deleting events older than `days` (see [`retention`]).
    pub fn with_retention(mut self, days: Option<u32>) -> Worker {
        self.retention_days = days;
        self
    }

    /// Deletes the events older than the retention period, if one is set, and
    /// returns how many went.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let Some(days) = self.retention_days else { return Ok(0) };
        let transactional = self.mode().await? == MoveMode::Transactional;
        retention::ensure_indexes(&self.store).await?;
        retention::purge_before(&self.store, retention::cutoff(DateTime::now(), days), transactional).await
    }

    /// How this worker moves batches on its deployment. The first call asks the
    /// server, and either makes the rollups ready (rebuilding them from `events`
    /// if needed) or marks them not ready.
    pub async fn mode(&self) -> Result<MoveMode, StoreError> {
        let mode = self
            .mode
            .get_or_try_init(|| async {
                if self.store.supports_transactions().await? {
                    let owner = format!("worker pid {} at {}", std::process::id(), DateTime::now());
                    rollups::make_ready(&self.store, &owner).await?;
                    self.reap_dead_workers().await?;
                    info!("batches move in transactions, with the stats rollups");
                    Ok::<_, StoreError>(MoveMode::Transactional)
                } else {
                    warn!(
                        "this MongoDB deployment runs no transactions (a standalone mongod): stats are computed \
                         from all events on each request, exact but slower as they grow. Run mongod as a replica \
                         set (one node is enough) for fast stats"
                    );
                    rollups::mark_not_ready(&self.store).await?;
                    Ok(MoveMode::Idempotent)
                }
            })
            .await?;
        Ok(*mode)
    }

    /// Runs until `shutdown` is cancelled, moving batches in [`LANES`] lanes. A
    /// batch that has started is always finished first, so stopping never
    /// leaves one half done. Database errors never end the loop: the worker
    /// backs off (up to [`MAX_BACKOFF`]), logging the outage once and the
    /// recovery once.
    pub async fn run(self, shutdown: CancellationToken) {
        info!("Worker running...");
        info!(
            queue = self.store.queue().name(),
            batch_size = self.batch_size,
            poll_ms = self.poll_interval.as_millis() as u64,
            "Queue Ready"
        );
        let heartbeat = tokio::spawn(self.clone().beat(shutdown.clone()));
        let lanes: Vec<_> =
            (0..LANES).map(|lane| tokio::spawn(self.clone().run_lane(lane, shutdown.clone()))).collect();
        for lane in lanes {
            let _ = lane.await;
        }
        let _ = heartbeat.await;
        if let Err(error) = self.workers().delete_one(doc! { "_id": self.id }).await {
            debug!(%error, "could not remove this worker's registration; it will be reaped as dead");
        }
        info!("worker stopped");
    }

    /// One lane's loop. Lane 0 also purges expired events. The lanes meet the same
    /// outages: the first lane to meet one reports it, and the first of the lanes
    /// that met it to get through again reports its end (lane 0 alone could still
    /// be backing off, or be stopped, when another lane has resumed).
    async fn run_lane(self, lane: u32, shutdown: CancellationToken) {
        let purges = lane == 0;
        let mut backoff: Option<Duration> = None;
        let mut last_purge: Option<tokio::time::Instant> = None;
        while !shutdown.is_cancelled() {
            if purges
                && self.retention_days.is_some()
                && last_purge.is_none_or(|at| at.elapsed() >= retention::PURGE_EVERY)
            {
                if let Err(error) = self.purge_expired().await {
                    warn!(%error, "retention: could not delete old events; retrying at the next purge");
                }
                last_purge = Some(tokio::time::Instant::now());
            }
            let pause = match self.process_lane_batch(lane).await {
                Ok(moved) => {
                    if backoff.take().is_some() && self.outage.swap(false, Ordering::SeqCst) {
                        info!("database reachable again, worker resumed");
                    }
                    if moved == self.batch_size as usize {
                        continue; // a full batch: more is probably waiting
                    }
                    self.poll_interval
                }
                Err(error) => {
                    let next = match backoff {
                        None => {
                            if !self.outage.swap(true, Ordering::SeqCst) {
                                warn!(%error, "worker cannot reach the database; retrying with backoff until it answers");
                            }
                            self.poll_interval.max(Duration::from_millis(100))
                        }
                        Some(previous) => {
                            debug!(%error, lane, "worker still cannot reach the database");
                            (previous * 2).min(MAX_BACKOFF)
                        }
                    };
                    backoff = Some(next);
                    next
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Keeps this worker's heartbeat fresh until `shutdown`, so that no other
    /// worker takes it for dead while it waits between polls.
    async fn beat(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let workers = self.workers();
            let beat = workers.update_one(doc! { "_id": self.id }, doc! { "$set": { "heartbeat": DateTime::now() } });
            if let Err(error) = beat.await {
                debug!(%error, "heartbeat not recorded");
            }
        }
    }

    fn workers(&self) -> mongodb::Collection<Document> {
        self.store.database().collection(WORKERS_COLLECTION)
    }

    /// Records `session` as lane `lane`'s current one, with a fresh heartbeat.
    async fn register(&self, session: &ClientSession, lane: u32) -> Result<(), StoreError> {
        let entry = doc! {
            format!("sessions.{lane}"): session.id().clone(),
            "heartbeat": DateTime::now(),
            "pid": i64::from(std::process::id()),
        };
        self.workers().update_one(doc! { "_id": self.id }, doc! { "$set": entry }).upsert(true).await?;
        Ok(())
    }

    /// Ends the sessions of registered workers whose heartbeat stopped (killed
    /// processes), which aborts any transaction they left open, and forgets them.
    async fn reap_dead_workers(&self) -> Result<(), StoreError> {
        let dead_before = DateTime::from_millis(DateTime::now().timestamp_millis() - DEAD_AFTER.as_millis() as i64);
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

    /// Moves one batch from the queue to `events` and returns how many events it
    /// held (0 when the queue is empty, or when other workers kept winning it).
    pub async fn process_batch(&self) -> Result<usize, StoreError> {
        self.process_lane_batch(0).await
    }

    /// [`Worker::process_batch`] in lane `lane` (below [`LANES`]): batches of
    /// different lanes may be moved at the same time.
    pub async fn process_lane_batch(&self, lane: u32) -> Result<usize, StoreError> {
        let mode = self.mode().await?;
        let started = std::time::Instant::now();
        let moved = match mode {
            MoveMode::Transactional => self.move_batch_in_transaction(lane).await?,
            MoveMode::Idempotent => self.move_batch_idempotently(lane).await?,
        };
        if moved > 0 {
            self.counters.add_batch(moved as u64, started.elapsed());
        }
        Ok(moved)
    }

    /// Reads the next batch for lane `lane` and claims it: past the batches in
    /// flight in other lanes (from the queue's head when none is, and every
    /// [`HEAD_READ_EVERY`] reads or after a batch failed, once none is). The
    /// claim lasts until the returned [`Claim`] is dropped.
    async fn read_claimed(
        &self,
        session: Option<&mut ClientSession>,
        lane: u32,
    ) -> Result<(Vec<RawDocumentBuf>, Claim), StoreError> {
        let mut reads = self.lanes.reads.lock().await;
        *reads += 1;
        if *reads % HEAD_READ_EVERY == 0 || self.lanes.head_read_due.swap(false, Ordering::SeqCst) {
            // Wait until no batch is in flight (no new one starts: reads are ours).
            drop(self.lanes.in_flight.write().await);
        }
        let in_flight = self.lanes.in_flight.clone().read_owned().await;
        let after = self.lanes.claims().values().max().copied();
        let batch = self.read_batch(session, after).await?;
        let last = batch.last().and_then(|entry| entry.get_object_id("_id").ok());
        if let Some(last) = last {
            self.lanes.claims().insert(lane, id_number(last));
        }
        Ok((batch, Claim { lanes: self.lanes.clone(), lane, settled: false, _in_flight: in_flight }))
    }

    /// Reads the next batch, in `_id` order (inside `session`'s transaction when
    /// given), past `after` if given, bounded by the [`HeadWindow`]; a bounded
    /// read that comes back short widens the window and reads again, so a batch
    /// is full unless the whole queue is shorter.
    ///
    /// Entries are read as raw BSON: they go to `events` as read, plus one
    /// field, so decoding and re-encoding them would only cost time (measured).
    async fn read_batch(
        &self,
        mut session: Option<&mut ClientSession>,
        after: Option<u128>,
    ) -> Result<Vec<RawDocumentBuf>, StoreError> {
        let queue = self.store.queue().clone_with_type::<RawDocumentBuf>();
        loop {
            let window = *self.head.lock().unwrap_or_else(|e| e.into_inner());
            let limit = i64::from(self.batch_size).saturating_mul(READ_FACTOR);
            let find = queue.find(window.filter(after)).sort(doc! { "_id": 1 }).limit(limit).batch_size(limit as u32);
            let mut read: Vec<RawDocumentBuf> = match session.as_deref_mut() {
                Some(session) => find.session(&mut *session).await?.stream(session).try_collect().await?,
                None => find.await?.try_collect().await?,
            };
            let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
            head.learn(&read, self.batch_size as usize, DateTime::now());
            if read.len() < self.batch_size as usize && window.upper.is_some() {
                continue; // cut short by the window, which is now wider
            }
            read.truncate(self.batch_size as usize);
            return Ok(read);
        }
    }

    /// Moves a batch in one transaction, retrying it (on a fresh read) when it
    /// conflicts with another worker's.
    ///
    /// The lane's session is kept for the next batches (for up to
    /// [`SESSION_REUSE`]), so that it is registered once, not once per batch; a
    /// failed batch drops it.
    async fn move_batch_in_transaction(&self, lane: u32) -> Result<usize, StoreError> {
        let kept = self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&lane);
        let (mut session, started) = match kept {
            Some((session, started)) if started.elapsed() < SESSION_REUSE => (session, started),
            _ => {
                let session = self.store.client().start_session().await?;
                self.register(&session, lane).await?;
                (session, std::time::Instant::now())
            }
        };
        let moved = self.move_batch_with(&mut session, lane).await;
        if moved.is_ok() {
            self.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(lane, (session, started));
        }
        moved
    }

    /// [`Worker::move_batch_in_transaction`] with the lane's session.
    async fn move_batch_with(&self, session: &mut ClientSession, lane: u32) -> Result<usize, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            session.start_transaction().write_concern(self.store.durable_write_concern().clone()).await?;
            let (batch, mut claim) = match self.read_claimed(Some(&mut *session), lane).await {
                Ok(read) => read,
                Err(error) => {
                    let _ = session.abort_transaction().await;
                    return Err(error);
                }
            };
            let outcome = match self.move_within(&mut *session, batch, lane).await {
                Ok(batch) if batch.moved == 0 => {
                    claim.settle();
                    session.abort_transaction().await?;
                    return Ok(0);
                }
                Ok(batch) => session.commit_transaction().await.map_err(TransactionError::from).map(|()| {
                    claim.settle();
                    self.known_visitors.remember(batch.visitors);
                    batch.moved
                }),
                Err(error) => {
                    // The server may have aborted it already; nothing else to undo.
                    let _ = session.abort_transaction().await;
                    Err(error)
                }
            };
            drop(claim);
            match outcome {
                Ok(moved) => return Ok(moved),
                Err(TransactionError::Conflict(reason)) if attempt < MAX_TRANSACTION_ATTEMPTS => {
                    self.counters.add_batch_conflict();
                    debug!(attempt, reason, "batch transaction conflicted with another worker; retrying");
                    // The other may be a dead worker's abandoned transaction.
                    self.reap_dead_workers().await?;
                    // Jitter, so that two conflicting workers do not meet again at once.
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    let jitter = u64::from(now.subsec_nanos());
                    tokio::time::sleep(Duration::from_millis(jitter % 10 * u64::from(attempt.min(5)))).await;
                }
                Err(TransactionError::Conflict(reason)) => {
                    self.counters.add_batch_conflict();
                    debug!(reason, "another worker is moving the queue; leaving it to that one until the next poll");
                    return Ok(0);
                }
                Err(TransactionError::AlreadyMoved(ids)) => {
                    // Then the rest of the batch, on a fresh read.
                    self.discard_already_moved(ids).await?;
                }
                Err(TransactionError::Store(error)) => return Err(error),
            }
        }
    }

    /// The work of one batch transaction after its read: insert, delete, count
    /// (into `lane`'s shard), record the visitors. Returns what to do once committed.
    async fn move_within(
        &self,
        session: &mut ClientSession,
        mut batch: Vec<RawDocumentBuf>,
        lane: u32,
    ) -> Result<MovedBatch, TransactionError> {
        if batch.is_empty() {
            return Ok(MovedBatch::empty());
        }
        let moved = batch.len();
        let ids = prepare_for_events(&mut batch);
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
        let head = doc! { "_id": { "$gte": first, "$lte": last } };
        let deleted = self.store.queue().delete_many(head).session(&mut *session).await?;
        if deleted.deleted_count != moved as u64 {
            // Another worker moved some of these since our read, or the range
            // held more than the batch: start again from a fresh read.
            return Err(TransactionError::Conflict("the queue's head changed under the batch".into()));
        }
        let db = self.store.database();
        deltas.add_counts(db, Some(&mut *session), lane).await?;
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
        let visitors = match deltas.record_visitors(db, Some(session), Some(&self.known_visitors)).await {
            Ok(visitors) => visitors,
            // A new visitor recorded by a concurrent batch (of another worker,
            // or one this worker could not remember): retry.
            Err(StoreError::Operation(error)) if only_duplicate_keys(&error) => {
                return Err(TransactionError::Conflict("a visitor recorded by a concurrent batch".into()));
            }
            Err(error) => return Err(error.into()),
        };
        Ok(MovedBatch { moved, visitors, _visitors_turn: Some(visitors_turn) })
    }

    /// Drops from the queue the entries of `ids` that are already in `events`:
    /// left by an idempotent (transaction-less) move that crashed before its
    /// delete, on a database since moved to a replica set; the rollups, rebuilt
    /// from `events` then, already count them.
    async fn discard_already_moved(&self, ids: Vec<Bson>) -> Result<(), StoreError> {
        let present: Vec<Bson> = self
            .store
            .events()
            .find(doc! { "_id": { "$in": ids } })
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .into_iter()
            .filter_map(|event| event.get("_id").cloned())
            .collect();
        warn!(
            events = present.len(),
            "queue entries already in events (from an earlier crash): removed from the queue"
        );
        self.store.queue().delete_many(doc! { "_id": { "$in": present } }).await?;
        Ok(())
    }

    /// Moves a batch without a transaction: insert (duplicates of a re-run
    /// ignored), then delete.
    async fn move_batch_idempotently(&self, lane: u32) -> Result<usize, StoreError> {
        let (mut batch, mut claim) = self.read_claimed(None, lane).await?;
        if batch.is_empty() {
            claim.settle();
            return Ok(0);
        }
        let moved = batch.len();
        let ids = prepare_for_events(&mut batch);
        let events = self.store.events().clone_with_type::<RawDocumentBuf>();
        match events.insert_many(&batch).ordered(false).await {
            Ok(_) => {}
            Err(error) if only_duplicate_keys(&error) => {
                debug!("batch was partly moved before (a re-run): existing events kept as they are");
            }
            Err(error) => return Err(error.into()),
        }
        self.store.queue().delete_many(doc! { "_id": { "$in": ids } }).await?;
        claim.settle();
        Ok(moved)
    }
}

/// What a worker's lanes share to keep their batches apart.
#[derive(Debug, Default)]
struct Lanes {
    /// Serialises the lanes' reads, and counts them.
    reads: tokio::sync::Mutex<u64>,
    /// Held shared by each batch in flight; taken alone to wait until none is.
    in_flight: Arc<tokio::sync::RwLock<()>>,
    /// The last queue `_id` (as a number) of each lane's batch in flight.
    claims: std::sync::Mutex<HashMap<u32, u128>>,
    /// A batch did not complete: its entries may lie below a later lane's
    /// claim, so the next read starts at the head.
    head_read_due: AtomicBool,
    /// Held by a batch from recording its visitors until it has committed.
    visitors: Arc<tokio::sync::Mutex<()>>,
}

impl Lanes {
    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u128>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A batch moved within its transaction, not yet committed.
struct MovedBatch {
    /// Events moved.
    moved: usize,
    /// The visitors it recorded, to remember once committed.
    visitors: Vec<VisitorDigest>,
    /// The lanes' turn at recording visitors, held until the commit is done.
    _visitors_turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl MovedBatch {
    fn empty() -> MovedBatch {
        MovedBatch { moved: 0, visitors: Vec::new(), _visitors_turn: None }
    }
}

/// A lane's batch in flight. Dropping it ends the claim; a batch that was not
/// [settled](Claim::settle) (moved, or found empty) makes the next read start
/// at the queue's head.
struct Claim {
    lanes: Arc<Lanes>,
    lane: u32,
    settled: bool,
    _in_flight: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl Claim {
    /// The batch is done with: moved (committed), or there was none.
    fn settle(&mut self) {
        self.settled = true;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.lanes.claims().remove(&self.lane);
        if !self.settled {
            self.lanes.head_read_due.store(true, Ordering::SeqCst);
        }
    }
}

/// Readies a batch read from the queue for `events` (logging it): stamps each
/// entry with one `processed_at`, and returns their `_id`s in order.
fn prepare_for_events(batch: &mut [RawDocumentBuf]) -> Vec<Bson> {
    info!(events = batch.len(), "Processing batch...");
    let processed_at = DateTime::now();
    for event in batch.iter_mut() {
        stamp_processed_at(event, processed_at);
    }
    batch.iter().filter_map(|event| id_of(event)).collect()
}

/// Adds `processed_at` to a queue entry read as raw BSON (replacing one the
/// entry may already hold: not from our API, but a field must not appear twice).
fn stamp_processed_at(event: &mut RawDocumentBuf, at: DateTime) {
    if matches!(event.get("processed_at"), Ok(Some(_)))
        && let Ok(mut document) = event.to_document()
    {
        document.insert("processed_at", at);
        if let Ok(stamped) = RawDocumentBuf::from_document(&document) {
            *event = stamped;
            return;
        }
    }
    event.append("processed_at", at);
}

/// A queue entry's `_id`.
fn id_of(event: &RawDocument) -> Option<Bson> {
    let id = event.get("_id").ok()??;
    Bson::try_from(id.to_raw_bson()).ok()
}

/// How many batches' worth of entries one read may return at most (the extra
/// ones tell how well the window fits; they are not moved).
const READ_FACTOR: i64 = 2;
/// An `_id` this far in the future (by its timestamp) is past any real entry.
const FUTURE_SLACK_SECS: u32 = 3600;

/// Where the worker looks for the queue's head.
///
/// Some databases (SecantusDB among them) apply `sort` and `limit` only after
/// reading every matching entry, so "the oldest BATCH_SIZE" of a long queue
/// costs the whole queue (measured: 0.8-1.3 s per read at 300,000 queued,
/// 8 ms for the same 1,000 entries read by an `_id` range). The worker
/// therefore reads `_id <= upper`, with `upper` about one batch's worth of
/// `_id`s past the last batch, learned from what it reads. There is no lower
/// bound, so entries that arrive late with older `_id`s are still found (first).
/// Once `upper` is past the present, the window is dropped: the queue is short.
#[derive(Debug, Clone, Copy, Default)]
struct HeadWindow {
    /// The highest `_id` (as a 96-bit number) the next read takes; none: all.
    upper: Option<u128>,
    /// How far past the last batch the window reaches.
    span: u128,
}

impl HeadWindow {
    /// The filter of the next read: within the window, and past `after` if given.
    fn filter(&self, after: Option<u128>) -> Document {
        let mut range = Document::new();
        if let Some(after) = after {
            range.insert("$gt", object_id(after));
        }
        if let Some(upper) = self.upper {
            range.insert("$lte", object_id(upper));
        }
        if range.is_empty() {
            doc! {}
        } else {
            doc! { "_id": range }
        }
    }

    /// Sets the next window from a read (sorted by `_id`) and the batch size.
    fn learn(&mut self, read: &[RawDocumentBuf], batch_size: usize, now: DateTime) {
        let ids: Option<Vec<u128>> = read.iter().map(|d| d.get_object_id("_id").ok().map(id_number)).collect();
        let Some(ids) = ids else {
            // Not ObjectIds (written by something else): no window.
            *self = HeadWindow::default();
            return;
        };
        let bounded = self.upper.is_some();
        let next = match (ids.first(), ids.len() < batch_size) {
            // Empty: if bounded, widen (the queue may go on past the window).
            (None, _) => match self.upper {
                Some(upper) => {
                    self.span = self.span.max(1).saturating_mul(2);
                    upper.saturating_add(self.span)
                }
                None => return,
            },
            (Some(&first), short) => {
                let last = ids[ids.len().min(batch_size) - 1];
                // The span a batch covered, with room to spare (a window of
                // exactly that span holds one entry short of a batch); wider
                // when the window came back short, narrower when it held far more.
                let covered = (last - first).max(1);
                let span = if short && bounded {
                    self.span.max(covered) * 2
                } else if ids.len() >= batch_size * 2 {
                    covered + covered / 4
                } else {
                    covered + covered / 2
                };
                self.span = span;
                last.saturating_add(span)
            }
        };
        let future = u128::from(now.timestamp_millis().max(0) as u64 / 1000 + u64::from(FUTURE_SLACK_SECS));
        if next >> 64 > future {
            *self = HeadWindow::default();
        } else {
            self.upper = Some(next);
        }
    }
}

/// An ObjectId as a number, so windows can be added to it.
fn id_number(id: ObjectId) -> u128 {
    id.bytes().iter().fold(0u128, |n, b| (n << 8) | u128::from(*b))
}

/// The ObjectId of a number (its low 96 bits).
fn object_id(n: u128) -> ObjectId {
    let bytes = n.to_be_bytes();
    let mut id = [0u8; 12];
    id.copy_from_slice(&bytes[4..]);
    ObjectId::from_bytes(id)
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
        if let Some(command) = command
            && error.contains_label(TRANSIENT_TRANSACTION_ERROR)
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

    fn entry(id: impl Into<Bson>) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&doc! { "_id": id.into() }).expect("a valid document")
    }

    fn ids(n: usize) -> Vec<RawDocumentBuf> {
        (0..n).map(|_| entry(ObjectId::new())).collect()
    }

    #[test]
    fn processed_at_is_added_once() {
        let at = DateTime::from_millis(1_000);
        for queued in [doc! { "_id": 1, "path": "/" }, doc! { "_id": 2, "processed_at": "old", "path": "/" }] {
            let mut event = RawDocumentBuf::from_document(&queued).unwrap();
            stamp_processed_at(&mut event, at);
            let stamped = event.to_document().unwrap();
            assert_eq!(stamped.get_datetime("processed_at"), Ok(&at));
            assert_eq!(event.iter().filter(|e| e.as_ref().is_ok_and(|(k, _)| *k == "processed_at")).count(), 1);
            assert_eq!(stamped.get_str("path"), Ok("/"));
        }
    }

    #[test]
    fn object_ids_round_trip_through_numbers() {
        let id = ObjectId::new();
        assert_eq!(object_id(id_number(id)), id);
        assert!(id_number(ObjectId::new()) > id_number(id), "later ids are larger numbers");
    }

    #[test]
    fn the_window_follows_the_head_and_drops_once_past_the_present() {
        let now = DateTime::now();
        let mut window = HeadWindow::default();
        assert_eq!(window.filter(None), doc! {}, "unbounded at first");

        // A full read of a long queue: bound the next read past the batch.
        let read = ids(20);
        window.learn(&read, 10, now);
        let upper = window.upper.expect("bounded after a full read");
        assert!(upper > id_number(read[9].get_object_id("_id").unwrap()));

        // A short read in a bounded window: widen.
        let span = window.span;
        window.learn(&ids(3), 10, now);
        assert!(window.span >= span * 2);

        // An empty bounded read keeps widening until past the present, then drops.
        for _ in 0..200 {
            if window.upper.is_none() {
                break;
            }
            window.learn(&[], 10, now);
        }
        assert!(window.upper.is_none(), "dropped once the window reaches the future");
    }

    #[test]
    fn a_steady_queue_takes_one_read_per_batch() {
        // Entries evenly spaced, as a queue filled at a steady rate; the first
        // read is unbounded, every later batch must come from a single read.
        let base = id_number(ObjectId::new());
        let queue: Vec<u128> = (0..10_000u128).map(|i| base + i * 7919).collect();
        let batch_size = 100;
        let mut window = HeadWindow::default();
        let (mut head, mut reads) = (0, 0);
        for batch in 0..50 {
            let reads_before = reads;
            loop {
                reads += 1;
                let read: Vec<RawDocumentBuf> = queue[head..]
                    .iter()
                    .take_while(|&&id| window.upper.is_none_or(|upper| id <= upper))
                    .take(batch_size * READ_FACTOR as usize)
                    .map(|&id| entry(object_id(id)))
                    .collect();
                let bounded = window.upper.is_some();
                window.learn(&read, batch_size, DateTime::now());
                if read.len() >= batch_size || !bounded {
                    break;
                }
            }
            head += batch_size;
            if batch > 0 {
                assert_eq!(reads - reads_before, 1, "batch {batch} needed a second read");
            }
        }
    }

    #[test]
    fn ids_that_are_not_object_ids_turn_the_window_off() {
        let mut window = HeadWindow { upper: Some(1), span: 1 };
        window.learn(&[entry("custom")], 10, DateTime::now());
        assert_eq!(window.filter(None), doc! {});
    }
}
