//! Queue writer: group commit of accepted events into the queue collection.
//!
//! Request handlers validate an event and hand its document to the writer, which
//! gathers everything waiting into one `insert_many` and answers each request only
//! once that insert is acknowledged (journaled). One round trip and one journal
//! flush then serve many requests: the API's throughput no longer hangs on the
//! database's per-insert latency.
//!
//! The wait is bounded twice: at most [`MAX_WAITING`] submissions wait (beyond it
//! a request is refused at once, so overload answers 503 instead of queueing for
//! ever), and at most [`MAX_INSERTS_IN_FLIGHT`] inserts run at once. A database
//! error fails exactly the submissions of the insert that failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mongodb::Collection;
use mongodb::bson::Document;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::debug;

use crate::storage::StoreError;

/// Submissions allowed to wait for an insert; more are refused as overload.
pub const MAX_WAITING: usize = 8192;
/// Most documents gathered into one `insert_many`.
pub const MAX_DOCUMENTS_PER_INSERT: usize = 1000;
/// Inserts running at once: while they run, the next submissions gather into
/// the following insert, so batches grow with the load.
pub const MAX_INSERTS_IN_FLIGHT: usize = 4;

/// Why a submission was not stored.
#[derive(Debug, thiserror::Error)]
pub enum QueueWriteError {
    /// Too many submissions already waiting: nothing was stored.
    #[error("too many events waiting to be queued")]
    Overloaded,
    /// The insert holding this submission failed: nothing of it should be counted as stored.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer has stopped (the API is shutting down).
    #[error("the queue writer has stopped")]
    Stopped,
}

/// Documents of one request, and where to say how their insert went.
struct Submission {
    documents: Vec<Document>,
    done: oneshot::Sender<Result<(), Arc<mongodb::error::Error>>>,
}

/// How much the writer may hold back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterLimits {
    /// Submissions allowed to wait; more are refused.
    pub max_waiting: usize,
    /// Inserts running at once.
    pub max_inserts_in_flight: usize,
}

impl Default for WriterLimits {
    fn default() -> Self {
        WriterLimits { max_waiting: MAX_WAITING, max_inserts_in_flight: MAX_INSERTS_IN_FLIGHT }
    }
}

/// What the writer has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// `insert_many` calls made (successful or not).
    pub inserts: u64,
    /// Documents they carried.
    pub documents: u64,
}

/// Running totals shared by the handle and the task.
#[derive(Debug, Default)]
struct Totals {
    inserts: AtomicU64,
    documents: AtomicU64,
}

/// A handle for submitting documents to the group-commit writer; cheap to clone.
/// The writer task ends once every handle is dropped and its inserts are done.
#[derive(Debug, Clone)]
pub struct QueueWriter {
    submissions: mpsc::Sender<Submission>,
    totals: Arc<Totals>,
}

impl QueueWriter {
    /// Starts the writer task over `queue` (on the current tokio runtime).
    pub fn spawn(queue: Collection<Document>) -> QueueWriter {
        QueueWriter::spawn_with(queue, WriterLimits::default())
    }

    /// Starts the writer task over `queue` with explicit limits.
    pub fn spawn_with(queue: Collection<Document>, limits: WriterLimits) -> QueueWriter {
        let (submissions, receiver) = mpsc::channel(limits.max_waiting.max(1));
        let totals = Arc::new(Totals::default());
        tokio::spawn(write_loop(queue, receiver, limits.max_inserts_in_flight.max(1), totals.clone()));
        QueueWriter { submissions, totals }
    }

    /// How many inserts (and documents) the writer has made so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            inserts: self.totals.inserts.load(Ordering::Relaxed),
            documents: self.totals.documents.load(Ordering::Relaxed),
        }
    }

    /// Stores `documents` in the queue, all in the same `insert_many`, and returns
    /// once that insert is acknowledged. Refuses at once when the writer is overloaded.
    pub async fn write(&self, documents: Vec<Document>) -> Result<(), QueueWriteError> {
        let (done, outcome) = oneshot::channel();
        self.submissions.try_send(Submission { documents, done }).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => QueueWriteError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => QueueWriteError::Stopped,
        })?;
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(StoreError::Operation(Arc::unwrap_or_clone(error)).into()),
            Err(_) => Err(QueueWriteError::Stopped),
        }
    }
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission").field("documents", &self.documents.len()).finish()
    }
}

/// Takes everything waiting (whole submissions, up to [`MAX_DOCUMENTS_PER_INSERT`]
/// documents unless one submission alone holds more) and inserts it, with at most
/// `in_flight` inserts running.
async fn write_loop(
    queue: Collection<Document>,
    mut receiver: mpsc::Receiver<Submission>,
    in_flight: usize,
    totals: Arc<Totals>,
) {
    let inserts = Arc::new(Semaphore::new(in_flight));
    // A submission that did not fit in the previous insert starts the next one.
    let mut carried: Option<Submission> = None;
    loop {
        // Wait for an insert slot before gathering, so that while all slots are
        // busy the waiting submissions pile up into one bigger insert.
        let Ok(slot) = inserts.clone().acquire_owned().await else { break };
        let first = match carried.take() {
            Some(submission) => submission,
            None => match receiver.recv().await {
                Some(submission) => submission,
                None => break,
            },
        };
        let mut gathered_documents = first.documents.len();
        let mut group = vec![first];
        while gathered_documents < MAX_DOCUMENTS_PER_INSERT {
            let Ok(next) = receiver.try_recv() else { break };
            if gathered_documents + next.documents.len() > MAX_DOCUMENTS_PER_INSERT {
                carried = Some(next);
                break;
            }
            gathered_documents += next.documents.len();
            group.push(next);
        }
        totals.inserts.fetch_add(1, Ordering::Relaxed);
        totals.documents.fetch_add(gathered_documents as u64, Ordering::Relaxed);
        let queue = queue.clone();
        tokio::spawn(async move {
            insert_group(&queue, group).await;
            drop(slot);
        });
    }
    // Let the inserts still running finish before the task ends.
    let _ = inserts.acquire_many(in_flight as u32).await;
}

/// One `insert_many` for a group of submissions; each learns the outcome.
async fn insert_group(queue: &Collection<Document>, group: Vec<Submission>) {
    let mut documents = Vec::with_capacity(group.iter().map(|s| s.documents.len()).sum());
    let mut waiting = Vec::with_capacity(group.len());
    for submission in group {
        documents.extend(submission.documents);
        waiting.push(submission.done);
    }
    debug!(documents = documents.len(), requests = waiting.len(), "queue insert");
    // Unordered: the server may apply the documents in any order, and one
    // failing does not stop the others. Any failure is reported to every
    // submission of the group, whose outcome is then uncertain.
    let outcome = queue.insert_many(documents).ordered(false).await.map(|_| ()).map_err(Arc::new);
    for done in waiting {
        // The request may have given up waiting (timeout, client gone): nothing to tell.
        let _ = done.send(outcome.clone());
    }
}
