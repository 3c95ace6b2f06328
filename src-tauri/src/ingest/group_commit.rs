//! Queue writer: group commit of accepted events into the queue collection.
//!
//! Request handlers validate an event and hand its document to the writer, which
//! gathers everything waiting into one `insert_many` and answers each request only
//! once that insert is acknowledged (journaled). One round trip and one journal
//! flush then serve many requests: the API's throughput no longer hangs on the
//! database's per-insert latency.
//!
//! What waits is bounded: at most [`MAX_WAITING`] submissions and
//! [`MAX_WAITING_BYTES`] of documents (beyond either a request is refused at
//! once, so overload answers 503 instead of filling memory while the database is
//! slow), and at most [`MAX_INSERTS_IN_FLIGHT`] inserts run at once, each for at
//! most [`INSERT_TIMEOUT`]. A database error fails exactly the submissions of the
//! insert that failed.
//!
//! A submission whose requester stopped waiting (its request timed out and was
//! answered 503, or the client went away) is skipped, never inserted later: a
//! 503 must not leave behind an event the client will send again. Once its
//! insert has started, its outcome is the insert's: a requester giving up then
//! cannot know whether it was stored, which is what `event_id` is for (a retry
//! with the same id is stored once).
//!
//! A duplicate `(site_id, event_id)` (a retry of an event still queued) is not a
//! failure: the event is in the queue, once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mongodb::Collection;
use mongodb::bson::{Document, RawDocumentBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::debug;

use crate::storage::{StoreError, only_duplicate_keys};

/// Submissions allowed to wait for an insert; more are refused as overload.
pub const MAX_WAITING: usize = 8192;
/// Bytes of documents (as BSON) allowed to wait or be in flight; more are
/// refused as overload. Bounds the API's memory while the database is slow
/// (8,192 waiting batches of 1 MiB would otherwise be 8 GiB).
pub const MAX_WAITING_BYTES: usize = 64 * 1024 * 1024;
/// Longest an `insert_many` may take before its submissions are failed: a stuck
/// database must not hold the writer's slots for ever. (The driver has no
/// server-side time limit for inserts; the insert is abandoned on our side, so
/// its outcome is unknown to the requesters, as for any timeout.)
pub const INSERT_TIMEOUT: Duration = Duration::from_secs(5);
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

/// How an insert went, as told to each of its submissions.
#[derive(Debug, Clone)]
enum InsertOutcome {
    /// Acknowledged (journaled): every document is in the queue, once.
    Stored,
    /// The server failed it.
    Failed(Arc<mongodb::error::Error>),
    /// It did not finish within the insert timeout: its outcome is unknown.
    TimedOut(Duration),
}

/// Documents of one request, and where to say how their insert went.
struct Submission {
    documents: Vec<RawDocumentBuf>,
    done: oneshot::Sender<InsertOutcome>,
    /// Its share of [`WriterLimits::max_waiting_bytes`], given back once its insert is over.
    bytes: OwnedSemaphorePermit,
}

impl Submission {
    /// True when its requester stopped waiting: it must not be inserted.
    fn is_abandoned(&self) -> bool {
        self.done.is_closed()
    }
}

/// How much the writer may hold back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterLimits {
    /// Submissions allowed to wait; more are refused.
    pub max_waiting: usize,
    /// Inserts running at once.
    pub max_inserts_in_flight: usize,
    /// Bytes of documents allowed to wait (or be in flight); more are refused.
    pub max_waiting_bytes: usize,
    /// Longest one insert may take.
    pub insert_timeout: Duration,
}

impl Default for WriterLimits {
    fn default() -> Self {
        WriterLimits {
            max_waiting: MAX_WAITING,
            max_inserts_in_flight: MAX_INSERTS_IN_FLIGHT,
            max_waiting_bytes: MAX_WAITING_BYTES,
            insert_timeout: INSERT_TIMEOUT,
        }
    }
}

/// What the writer has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// `insert_many` calls made (successful or not).
    pub inserts: u64,
    /// Documents they carried.
    pub documents: u64,
    /// Submissions skipped because their requester had stopped waiting.
    pub abandoned: u64,
}

/// Running totals shared by the handle and the task.
#[derive(Debug, Default)]
struct Totals {
    inserts: AtomicU64,
    documents: AtomicU64,
    abandoned: AtomicU64,
}

/// A handle for submitting documents to the group-commit writer; cheap to clone.
/// The writer task ends once every handle is dropped and its inserts are done.
#[derive(Debug, Clone)]
pub struct QueueWriter {
    submissions: mpsc::Sender<Submission>,
    /// Permits for the bytes waiting: one per byte of BSON.
    bytes: Arc<Semaphore>,
    max_waiting_bytes: usize,
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
        let max_waiting_bytes = limits.max_waiting_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let queue = queue.clone_with_type::<RawDocumentBuf>();
        let inserts = InsertSettings { in_flight: limits.max_inserts_in_flight.max(1), timeout: limits.insert_timeout };
        tokio::spawn(write_loop(queue, receiver, inserts, totals.clone()));
        QueueWriter { submissions, bytes: Arc::new(Semaphore::new(max_waiting_bytes)), max_waiting_bytes, totals }
    }

    /// How many inserts (and documents) the writer has made so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            inserts: self.totals.inserts.load(Ordering::Relaxed),
            documents: self.totals.documents.load(Ordering::Relaxed),
            abandoned: self.totals.abandoned.load(Ordering::Relaxed),
        }
    }

    /// Stores `documents` in the queue, all in the same `insert_many`, and returns
    /// once that insert is acknowledged. Refuses at once when the writer is
    /// overloaded (too many submissions or bytes waiting). Dropping the returned
    /// future before its insert starts withdraws the submission.
    pub async fn write(&self, documents: Vec<Document>) -> Result<(), QueueWriteError> {
        let documents = documents
            .iter()
            .map(RawDocumentBuf::from_document)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Refused(format!("cannot encode a queue document: {e}")))?;
        let size: usize = documents.iter().map(|d| d.as_bytes().len()).sum();
        // One submission bigger than the whole allowance still goes, alone.
        let wanted = u32::try_from(size.clamp(1, self.max_waiting_bytes)).unwrap_or(u32::MAX);
        let bytes = self.bytes.clone().try_acquire_many_owned(wanted).map_err(|error| match error {
            tokio::sync::TryAcquireError::NoPermits => QueueWriteError::Overloaded,
            tokio::sync::TryAcquireError::Closed => QueueWriteError::Stopped,
        })?;
        let (done, outcome) = oneshot::channel();
        self.submissions.try_send(Submission { documents, done, bytes }).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => QueueWriteError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => QueueWriteError::Stopped,
        })?;
        match outcome.await {
            Ok(InsertOutcome::Stored) => Ok(()),
            Ok(InsertOutcome::Failed(error)) => Err(StoreError::Operation(Arc::unwrap_or_clone(error)).into()),
            Ok(InsertOutcome::TimedOut(limit)) => Err(StoreError::Timeout(limit).into()),
            Err(_) => Err(QueueWriteError::Stopped),
        }
    }
}

/// How the writer runs its inserts.
#[derive(Debug, Clone, Copy)]
struct InsertSettings {
    /// Inserts running at once.
    in_flight: usize,
    /// Longest one may take.
    timeout: Duration,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission").field("documents", &self.documents.len()).finish()
    }
}

/// Takes everything waiting (whole submissions, up to [`MAX_DOCUMENTS_PER_INSERT`]
/// documents unless one submission alone holds more; abandoned ones skipped) and
/// inserts it, with at most `settings.in_flight` inserts running.
async fn write_loop(
    queue: Collection<RawDocumentBuf>,
    mut receiver: mpsc::Receiver<Submission>,
    settings: InsertSettings,
    totals: Arc<Totals>,
) {
    let in_flight = settings.in_flight;
    let inserts = Arc::new(Semaphore::new(in_flight));
    let skip = |submission: &Submission| {
        let abandoned = submission.is_abandoned();
        if abandoned {
            totals.abandoned.fetch_add(1, Ordering::Relaxed);
        }
        abandoned
    };
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
        if skip(&first) {
            continue;
        }
        let mut gathered_documents = first.documents.len();
        let mut group = vec![first];
        while gathered_documents < MAX_DOCUMENTS_PER_INSERT {
            let Ok(next) = receiver.try_recv() else { break };
            if skip(&next) {
                continue;
            }
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
            insert_group(&queue, group, settings.timeout).await;
            drop(slot);
        });
    }
    // Let the inserts still running finish before the task ends.
    let _ = inserts.acquire_many(in_flight as u32).await;
}

/// One `insert_many` for a group of submissions (at most `timeout` long); each
/// learns the outcome.
async fn insert_group(queue: &Collection<RawDocumentBuf>, group: Vec<Submission>, timeout: Duration) {
    let mut documents = Vec::with_capacity(group.iter().map(|s| s.documents.len()).sum());
    let mut waiting = Vec::with_capacity(group.len());
    let mut permits = Vec::with_capacity(group.len());
    for submission in group {
        documents.extend(submission.documents);
        waiting.push(submission.done);
        permits.push(submission.bytes);
    }
    debug!(documents = documents.len(), requests = waiting.len(), "queue insert");
    // Unordered: the server may apply the documents in any order, and one
    // failing does not stop the others. Any failure is reported to every
    // submission of the group, whose outcome is then uncertain. Duplicates of
    // `(site_id, event_id)` are retries of events already queued: stored, once.
    let outcome = match tokio::time::timeout(timeout, queue.insert_many(documents).ordered(false)).await {
        Ok(Ok(_)) => InsertOutcome::Stored,
        Ok(Err(error)) if only_duplicate_keys(&error) => InsertOutcome::Stored,
        Ok(Err(error)) => InsertOutcome::Failed(Arc::new(error)),
        Err(_) => InsertOutcome::TimedOut(timeout),
    };
    drop(permits);
    for done in waiting {
        // The request may have given up waiting (timeout, client gone): nothing to tell.
        let _ = done.send(outcome.clone());
    }
}
