//! Worker: moves events from the queue collection into `events` in batches.
//!
//! A batch is read in `_id` order, inserted into `events` with `processed_at`
//! (keeping each queue entry's `_id`), then deleted from the queue. If the worker
//! dies between the insert and the delete, the next run meets the same `_id`s:
//! the duplicates are refused by the `_id` index and ignored, so no event is
//! counted twice and none is lost. Polling is a plain `find` (no tailable cursor,
//! which Atlas's free tier lacks); a full batch is followed by the next at once.

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::counters::PipelineCounters;
use crate::store::{Store, StoreError, only_duplicate_keys};

/// Longest pause between retries while the database is unavailable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The batch mover. Several may run at once, in any processes: see docs/deployment.md.
#[derive(Debug, Clone)]
pub struct Worker {
    store: Store,
    batch_size: u32,
    poll_interval: Duration,
    counters: Arc<PipelineCounters>,
}

impl Worker {
    /// A worker over `store` moving up to `batch_size` events per batch.
    pub fn new(store: Store, batch_size: u32, poll_interval: Duration, counters: Arc<PipelineCounters>) -> Worker {
        Worker { store, batch_size, poll_interval, counters }
    }

    /// Runs until `shutdown` is cancelled. A batch that has started is always
    /// finished first, so stopping never leaves one half done. Database errors
    /// never end the loop: the worker backs off (up to [`MAX_BACKOFF`]), logging the
    /// outage once and the recovery once.
    pub async fn run(self, shutdown: CancellationToken) {
        info!("Worker running...");
        info!(
            queue = self.store.queue().name(),
            batch_size = self.batch_size,
            poll_ms = self.poll_interval.as_millis() as u64,
            "Queue Ready"
        );
        let mut backoff: Option<Duration> = None;
        while !shutdown.is_cancelled() {
            let pause = match self.process_batch().await {
                Ok(moved) => {
                    if backoff.take().is_some() {
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
                            warn!(%error, "worker cannot reach the database; retrying with backoff until it answers");
                            self.poll_interval.max(Duration::from_millis(100))
                        }
                        Some(previous) => {
                            debug!(%error, "worker still cannot reach the database");
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
        info!("worker stopped");
    }

    /// Moves one batch from the queue to `events` and returns how many events it
    /// held (0 when the queue is empty).
    pub async fn process_batch(&self) -> Result<usize, StoreError> {
        let batch: Vec<Document> = self
            .store
            .queue()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .limit(i64::from(self.batch_size))
            .await?
            .try_collect()
            .await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let moved = batch.len();
        info!(events = moved, "Processing batch...");

        let ids: Vec<_> = batch.iter().filter_map(|event| event.get("_id").cloned()).collect();
        let processed_at = DateTime::now();
        let events = batch.into_iter().map(|mut event| {
            event.insert("processed_at", processed_at);
            event
        });
        match self.store.events().insert_many(events).ordered(false).await {
            Ok(_) => {}
            Err(error) if only_duplicate_keys(&error) => {
                debug!("batch was partly moved before (a re-run): existing events kept as they are");
            }
            Err(error) => return Err(error.into()),
        }
        self.store.queue().delete_many(doc! { "_id": { "$in": ids } }).await?;
        self.counters.add_batch(moved as u64);
        Ok(moved)
    }
}
