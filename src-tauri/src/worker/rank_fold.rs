//! Folding the ranks' pending counts a batch left (see
//! [`crate::rollups::ranks`]), at the start of the lane's next batch (or poll:
//! not between the commit and the batch's return, which the counters and the
//! callers wait for): one transaction of its own, started under the lanes'
//! turn so that two folds of this worker never overlap (and so never
//! conflict). A fold that fails leaves the pending counts to the next one:
//! readers add them meanwhile, so nothing is lost or counted twice.

use std::sync::atomic::Ordering;

use mongodb::ClientSession;
use tracing::debug;

use super::Worker;
use crate::rollups::ranks;
use crate::storage::StoreError;

/// Most folds before one batch (each of at most [`ranks::FOLD_LIMIT`] pending
/// documents and [`ranks::FOLD_KEYS`] keys): catches up after failed folds
/// without holding the turn for ever.
const FOLDS_PER_BATCH: usize = 16;

impl Worker {
    /// Folds pending rank counts into the ranks, in `session` (no transaction
    /// open), when a committed batch of this worker left some.
    pub(super) async fn fold_ranks_if_due(&self, session: &mut ClientSession) {
        if !self.lanes.rank_fold_due.swap(false, Ordering::Relaxed) {
            return;
        }
        let _turn = self.lanes.visitors.clone().lock_owned().await;
        for _ in 0..FOLDS_PER_BATCH {
            match self.fold_once(session).await {
                Ok(false) => return,
                Ok(true) => {}
                Err(error) => {
                    // Another worker's fold took them, or the database failed: the next fold retries.
                    debug!(%error, "rank fold did not commit; left to the next one");
                    break;
                }
            }
        }
        self.lanes.rank_fold_due.store(true, Ordering::Relaxed);
    }

    /// One fold in its transaction; true when more may be pending.
    async fn fold_once(&self, session: &mut ClientSession) -> Result<bool, StoreError> {
        session.start_transaction().write_concern(self.store.durable_write_concern().clone()).await?;
        match ranks::fold(self.store.database(), session, None).await {
            Ok((0, _)) => {
                session.abort_transaction().await?;
                Ok(false)
            }
            Ok((_, more)) => {
                session.commit_transaction().await?;
                Ok(more)
            }
            Err(error) => {
                let _ = session.abort_transaction().await;
                Err(error)
            }
        }
    }
}
