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
//!
//! Rooms: [`lanes`] keeps the lanes' batches apart, [`head_window`] finds the
//! queue's head cheaply, [`batch`] readies a batch for `events`,
//! [`transactional`] and [`idempotent`] move it, [`sessions`] registers each
//! worker's sessions and ends those of dead workers, and [`retention`] deletes
//! expired events.
//!
//! A batch the database refuses for its data (too large for one transaction or
//! command, or holding an entry it cannot store) would be refused again on
//! every retry: [`batch_limit`] halves the batches until one moves, and an
//! entry refused alone [`POISON_ATTEMPTS`] times is set aside in
//! [`quarantine`], so the queue behind it keeps moving.

mod batch;
mod batch_limit;
mod head_window;
mod idempotent;
mod lanes;
pub mod quarantine;
mod rank_fold;
pub mod retention;
mod sessions;
mod transactional;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mongodb::ClientSession;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, DateTime};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::rollups::recent_visits::RecentVisits;
use crate::rollups::{self, KnownVisitors};
use crate::storage::{Store, StoreError, is_too_large, is_transient};
use crate::telemetry::counters::PipelineCounters;
use batch_limit::BatchLimit;
use head_window::HeadWindow;
use lanes::Lanes;
use retention::PurgeReport;

pub use sessions::{DEAD_AFTER, HEARTBEAT, WORKERS_COLLECTION};

/// Longest pause between retries while the database is unavailable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Attempts at a batch whose transaction conflicts with another worker's before
/// this worker leaves the queue to that one until its next poll. Batches share
/// rollup documents (a site's counters), so workers on one queue take turns
/// rather than move batches side by side; more workers add availability, not speed.
const MAX_TRANSACTION_ATTEMPTS: u32 = 5;
/// Times an entry is refused on its own, for a reason that is not transient,
/// before it is set aside in the [`quarantine`].
pub const POISON_ATTEMPTS: u32 = 3;
/// Most attempts in one call of [`Worker::process_lane_batch`]: enough to halve
/// the largest batch allowed down to one entry and set a few entries aside;
/// the lane's loop then goes on.
const MAX_ROUNDS: u32 = 64;
/// Batches one worker moves side by side (see the module's doc). Two keep the
/// database of a 2-core machine busy; three measured no faster.
pub const LANES: u32 = 2;

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
    /// The visits this worker wrote lately, so batches skip loading them.
    recent_visits: Arc<RecentVisits>,
    /// What the lanes share to keep their batches apart.
    lanes: Arc<Lanes>,
    /// Each lane's session, registered in [`WORKERS_COLLECTION`], with when it started.
    sessions: Arc<std::sync::Mutex<HashMap<u32, (ClientSession, std::time::Instant)>>>,
    /// Set while an outage reported by a lane lasts (see `run_lane`).
    outage: Arc<AtomicBool>,
    /// How far this worker's clock is off the true time, in milliseconds
    /// (0 but in tests, which emulate a host with a wrong clock).
    clock_skew_ms: i64,
    /// Events deleted per transaction by a purge (see [`retention`]).
    purge_chunk: usize,
    /// How many entries the next batch takes (see [`batch_limit`]).
    limit: Arc<BatchLimit>,
}

/// A batch that did not move: why, and the `_id`s it held (none when it
/// failed before its read).
#[derive(Debug)]
pub(super) struct BatchFailure {
    /// What the database said.
    pub(super) error: StoreError,
    /// The batch's queue `_id`s, in order.
    pub(super) ids: Vec<Bson>,
}

impl From<StoreError> for BatchFailure {
    fn from(error: StoreError) -> Self {
        BatchFailure { error, ids: Vec::new() }
    }
}

impl From<mongodb::error::Error> for BatchFailure {
    fn from(error: mongodb::error::Error) -> Self {
        StoreError::from(error).into()
    }
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
            recent_visits: Arc::default(),
            lanes: Arc::default(),
            sessions: Arc::default(),
            outage: Arc::default(),
            clock_skew_ms: 0,
            purge_chunk: retention::PURGE_CHUNK,
            limit: Arc::new(BatchLimit::new(batch_size)),
        }
    }

    /// The same worker, its purges deleting at most `events` per transaction
    /// (see [`retention::PURGE_CHUNK`]): smaller chunks make shorter
    /// transactions and quicker stops, at the cost of more round trips.
    pub fn with_purge_chunk(mut self, events: usize) -> Worker {
        self.purge_chunk = events.max(1);
        self
    }

    /// Test-only: the same worker on a host whose clock is `skew_ms` off, to
    /// show that liveness does not depend on the hosts' clocks.
    #[doc(hidden)]
    pub fn with_clock_skew(mut self, skew_ms: i64) -> Worker {
        self.clock_skew_ms = skew_ms;
        self
    }

    /// Test-only: how many of this worker's batches found their stored
    /// visits in its memory (see `rollups::recent_visits`).
    #[doc(hidden)]
    pub fn batches_with_visits_from_memory(&self) -> u64 {
        self.recent_visits.answered()
    }

    /// This worker's entry (`_id`) in [`WORKERS_COLLECTION`], so that tools and
    /// tests can find it.
    pub fn registration_id(&self) -> ObjectId {
        self.id
    }

    /// The time on this worker's host (its clock, skew included).
    fn local_now(&self) -> DateTime {
        DateTime::from_millis(DateTime::now().timestamp_millis() + self.clock_skew_ms)
    }

    /// The same worker, also deleting events older than `days` (see [`retention`]).
    pub fn with_retention(mut self, days: Option<u32>) -> Worker {
        self.retention_days = days;
        self
    }

    /// Deletes the events older than the retention period, if one is set, and
    /// returns how many went.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(self.purge_expired_until(&CancellationToken::new()).await?.deleted)
    }

    /// [`Worker::purge_expired`], stopping between two chunks once `cancel`
    /// is cancelled (so a stop never waits for a whole purge).
    pub async fn purge_expired_until(&self, cancel: &CancellationToken) -> Result<PurgeReport, StoreError> {
        let Some(days) = self.retention_days else { return Ok(PurgeReport::default()) };
        let transactional = self.mode().await? == MoveMode::Transactional;
        retention::ensure_indexes(&self.store).await?;
        let limits = retention::PurgeLimits { chunk: self.purge_chunk, ..Default::default() };
        let cutoff = retention::cutoff(self.local_now(), days);
        retention::purge(&self.store, cutoff, transactional, &limits, cancel, |_| {}).await
    }

    /// Purges every [`retention::PURGE_EVERY`] until `shutdown`, which also
    /// stops a purge under way after its current chunk.
    async fn purge_periodically(self, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.purge_expired_until(&shutdown).await {
                warn!(%error, "retention: could not delete old events; retrying at the next purge");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(retention::PURGE_EVERY) => {}
            }
        }
    }

    /// How this worker moves batches on its deployment. The first call asks the
    /// server, and either makes the rollups ready (rebuilding them from `events`
    /// if needed) or marks them not ready.
    pub async fn mode(&self) -> Result<MoveMode, StoreError> {
        let mode = self
            .mode
            .get_or_try_init(|| async {
                if self.store.supports_transactions().await? {
                    let owner = format!("worker pid {} at {}", std::process::id(), self.local_now());
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
        let purges = self.retention_days.map(|_| tokio::spawn(self.clone().purge_periodically(shutdown.clone())));
        let lanes: Vec<_> =
            (0..LANES).map(|lane| tokio::spawn(self.clone().run_lane(lane, shutdown.clone()))).collect();
        for lane in lanes {
            let _ = lane.await;
        }
        let _ = heartbeat.await;
        if let Some(purges) = purges {
            let _ = purges.await;
        }
        self.unregister().await;
        info!("worker stopped");
    }

    /// One lane's loop. The lanes meet the same
    /// outages: the first lane to meet one reports it, and the first of the lanes
    /// that met it to get through again reports its end (lane 0 alone could still
    /// be backing off, or be stopped, when another lane has resumed).
    async fn run_lane(self, lane: u32, shutdown: CancellationToken) {
        let mut backoff: Option<Duration> = None;
        while !shutdown.is_cancelled() {
            let pause = match self.process_lane_batch(lane).await {
                Ok(moved) => {
                    if backoff.take().is_some() && self.outage.swap(false, Ordering::SeqCst) {
                        self.counters.add_worker_recovery();
                        info!("database reachable again, worker resumed");
                    }
                    if moved == self.batch_size as usize || (moved > 0 && self.limit.is_shrunk()) {
                        continue; // a full batch: more is probably waiting
                    }
                    self.poll_interval
                }
                Err(error) => {
                    let next = match backoff {
                        None => {
                            if !self.outage.swap(true, Ordering::SeqCst) {
                                self.counters.add_worker_outage();
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

    /// Moves one batch from the queue to `events` and returns how many events it
    /// held (0 when the queue is empty, or when other workers kept winning it).
    pub async fn process_batch(&self) -> Result<usize, StoreError> {
        self.process_lane_batch(0).await
    }

    /// [`Worker::process_batch`] in lane `lane` (below [`LANES`]): batches of
    /// different lanes may be moved at the same time.
    pub async fn process_lane_batch(&self, lane: u32) -> Result<usize, StoreError> {
        let mode = self.mode().await?;
        for _ in 0..MAX_ROUNDS {
            let started = std::time::Instant::now();
            let outcome = match mode {
                MoveMode::Transactional => self.move_batch_in_transaction(lane).await,
                MoveMode::Idempotent => self.move_batch_idempotently(lane).await,
            };
            let BatchFailure { error, ids } = match outcome {
                Ok(moved) => {
                    if moved > 0 {
                        self.counters.add_batch(moved as u64, started.elapsed());
                        self.limit.moved(moved);
                    }
                    return Ok(moved);
                }
                Err(failure) if failure.ids.is_empty() || is_transient(&failure.error) => return Err(failure.error),
                Err(failure) => failure,
            };
            if let [id] = ids.as_slice() {
                self.refused_alone(id, &error, mode).await?;
            } else {
                let next = self.limit.shrink_below(ids.len(), is_too_large(&error));
                self.counters.add_batch_split();
                warn!(%error, events = ids.len(), next, "the database refused a batch; retrying in smaller batches");
            }
        }
        Ok(0)
    }

    /// The entry `id` was refused on its own for `error`: after
    /// [`POISON_ATTEMPTS`] refusals in a row, it is set aside in the
    /// [`quarantine`], so the entries behind it move.
    async fn refused_alone(&self, id: &Bson, error: &StoreError, mode: MoveMode) -> Result<(), StoreError> {
        let strikes = self.limit.strike(id);
        if strikes < POISON_ATTEMPTS {
            debug!(%error, %id, strikes, "the database refused a queue entry on its own; trying it again");
            return Ok(());
        }
        let reason = error.to_string();
        if quarantine::set_aside(&self.store, id, &reason, mode == MoveMode::Transactional).await? {
            self.counters.add_quarantined(1);
            warn!(
                %id, error = %reason,
                "a queue entry the database refuses to move was set aside in {}; fix the cause, then requeue it \
                 (analytics-service quarantine requeue)",
                quarantine::QUARANTINE_COLLECTION
            );
        }
        self.limit.forgive(id);
        Ok(())
    }
}
