//! What one worker's lanes share to move batches side by side without
//! overlapping: the reads taken in turn, each lane's claim past the others'
//! batches in flight, and the turn at recording visitors.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::{DateTime, RawDocumentBuf, doc};

use super::Worker;
use super::head_window::{READ_FACTOR, id_number};
use crate::rollups::VisitorDigest;
use crate::rollups::recent_visits::Written;
use crate::storage::StoreError;

/// Every this many reads, the reading lane first waits until no batch is in
/// flight and reads from the queue's head: entries queued late with `_id`s
/// below a batch in flight (another API process's clock behind) are then
/// moved too, however long the backlog lasts.
const HEAD_READ_EVERY: u64 = 64;

impl Worker {
    /// Reads the next batch for lane `lane` and claims it: past the batches in
    /// flight in other lanes (from the queue's head when none is, and every
    /// [`HEAD_READ_EVERY`] reads or after a batch failed, once none is). The
    /// claim lasts until the returned [`Claim`] is dropped.
    pub(super) async fn read_claimed(
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
        // What this batch takes: `BATCH_SIZE`, less while batches are refused (see `batch_limit`).
        let batch_size = self.limit.current();
        loop {
            let window = *self.head.lock().unwrap_or_else(|e| e.into_inner());
            let limit = i64::from(batch_size).saturating_mul(READ_FACTOR);
            let find = queue.find(window.filter(after)).sort(doc! { "_id": 1 }).limit(limit).batch_size(limit as u32);
            let mut read: Vec<RawDocumentBuf> = match session.as_deref_mut() {
                Some(session) => find.session(&mut *session).await?.stream(session).try_collect().await?,
                None => find.await?.try_collect().await?,
            };
            let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
            head.learn(&read, batch_size as usize, DateTime::now());
            if read.len() < batch_size as usize && window.upper.is_some() {
                continue; // cut short by the window, which is now wider
            }
            read.truncate(batch_size as usize);
            return Ok(read);
        }
    }
}

/// What a worker's lanes share to keep their batches apart.
#[derive(Debug, Default)]
pub(super) struct Lanes {
    /// Serialises the lanes' reads, and counts them.
    pub(super) reads: tokio::sync::Mutex<u64>,
    /// Held shared by each batch in flight; taken alone to wait until none is.
    pub(super) in_flight: Arc<tokio::sync::RwLock<()>>,
    /// The last queue `_id` (as a number) of each lane's batch in flight.
    pub(super) claims: std::sync::Mutex<HashMap<u32, u128>>,
    /// A batch did not complete: its entries may lie below a later lane's
    /// claim, so the next read starts at the head.
    pub(super) head_read_due: AtomicBool,
    /// Held by a batch from recording its visitors until it has committed.
    pub(super) visitors: Arc<tokio::sync::Mutex<()>>,
    /// A committed batch left rank counts pending: the next batch folds them first.
    pub(super) rank_fold_due: AtomicBool,
    /// Held by a batch transaction from its start to its commit: the batches
    /// of one worker then never change the same visitor's visits side by side
    /// (their transactions would conflict, see `rollups::visits`).
    pub(super) visits_turn: tokio::sync::Mutex<()>,
    /// Batch transactions that conflicted since the last commit: the longer
    /// another worker keeps the queue, the longer this one waits to retry.
    pub(super) conflict_streak: std::sync::atomic::AtomicU32,
}

impl Lanes {
    pub(super) fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u128>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A batch moved within its transaction, not yet committed.
pub(super) struct MovedBatch {
    /// Events moved.
    pub(super) moved: usize,
    /// The visitors it recorded, to remember once committed.
    pub(super) visitors: Vec<VisitorDigest>,
    /// The visits it wrote, for the worker's memory once committed.
    pub(super) visits: Written,
    /// The lanes' turn at recording visitors, held until the commit is done.
    pub(super) _visitors_turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl MovedBatch {
    pub(super) fn empty() -> MovedBatch {
        MovedBatch { moved: 0, visitors: Vec::new(), visits: Written::default(), _visitors_turn: None }
    }
}

/// A lane's batch in flight. Dropping it ends the claim; a batch that was not
/// [settled](Claim::settle) (moved, or found empty) makes the next read start
/// at the queue's head.
pub(super) struct Claim {
    lanes: Arc<Lanes>,
    lane: u32,
    settled: bool,
    _in_flight: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl Claim {
    /// The batch is done with: moved (committed), or there was none.
    pub(super) fn settle(&mut self) {
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
