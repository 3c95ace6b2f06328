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

use mongodb::Collection;
use mongodb::bson::Document;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::debug;

use crate::store::StoreError;

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

/// A handle for submitting documents to the group-commit writer; cheap to clone.
/// The writer task ends once every handle is dropped and its inserts are done.
#[derive(Debug, Clone)]
pub struct QueueWriter {
    submissions: mpsc::Sender<Submission>,
}

impl QueueWriter {
    /// Starts the writer task over `queue` (on the current tokio runtime).
    pub fn spawn(queue: Collection<Document>) -> QueueWriter {
        let (submissions, receiver) = mpsc::channel(MAX_WAITING);
        tokio::spawn(write_loop(queue, receiver));
        QueueWriter { submissions }
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
/// [`MAX_INSERTS_IN_FLIGHT`] inserts running.
async fn write_loop(queue: Collection<Document>, mut receiver: mpsc::Receiver<Submission>) {
    let inserts = Arc::new(Semaphore::new(MAX_INSERTS_IN_FLIGHT));
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
        let queue = queue.clone();
        tokio::spawn(async move {
            insert_group(&queue, group).await;
            drop(slot);
        });
    }
    // Let the inserts still running finish before the task ends.
    let _ = inserts.acquire_many(MAX_INSERTS_IN_FLIGHT as u32).await;
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
