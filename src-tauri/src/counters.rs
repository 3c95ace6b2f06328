//! Counters: running totals of the pipeline in this process (events queued by the
//! API, events moved by the worker, batches), shared by API, worker and status reports.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic totals since the engine was created; read them with [`PipelineCounters::snapshot`].
#[derive(Debug, Default)]
pub struct PipelineCounters {
    events_queued: AtomicU64,
    events_processed: AtomicU64,
    batches_processed: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CountersSnapshot {
    /// Events acknowledged as queued by this process's API.
    pub events_queued: u64,
    /// Events moved from the queue into `events` by this process's worker.
    pub events_processed: u64,
    /// Batches moved by this process's worker.
    pub batches_processed: u64,
}

impl PipelineCounters {
    /// Counts events acknowledged by the API.
    pub fn add_queued(&self, n: u64) {
        self.events_queued.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one batch of `n` events moved by the worker.
    pub fn add_batch(&self, n: u64) {
        self.events_processed.fetch_add(n, Ordering::Relaxed);
        self.batches_processed.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            events_queued: self.events_queued.load(Ordering::Relaxed),
            events_processed: self.events_processed.load(Ordering::Relaxed),
            batches_processed: self.batches_processed.load(Ordering::Relaxed),
        }
    }
}
