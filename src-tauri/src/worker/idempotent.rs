//! Moving a batch without transactions (a standalone `mongod`): insert, then
//! delete; a re-run meets the same `_id`s, refused by the `_id` index and
//! ignored, so `events` stays exact.
//!
//! Visits (`rollups::visits`) are not kept in this mode: without a
//! transaction a crash between their writes would count a visit twice or
//! lose it, and the rollups they feed are marked not ready here anyway. Events
//! moved this way carry no `visit_id`; figures of visits must then be
//! sessionised from `events` (a rebuild, once transactions are available,
//! makes the visits from them).

use mongodb::bson::{RawDocumentBuf, doc};
use tracing::debug;

use super::batch::prepare_for_events;
use super::{BatchFailure, Worker};
use crate::storage::{StoreError, only_duplicate_keys};

impl Worker {
    /// Moves a batch without a transaction: insert (duplicates of a re-run
    /// ignored), then delete.
    pub(super) async fn move_batch_idempotently(&self, lane: u32) -> Result<usize, BatchFailure> {
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
            Err(error) => return Err(BatchFailure { error: StoreError::from(error), ids }),
        }
        self.store.queue().delete_many(doc! { "_id": { "$in": ids } }).await?;
        claim.settle();
        Ok(moved)
    }
}
