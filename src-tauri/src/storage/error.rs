//! The database errors every stage shares: [`StoreError`] and the server's
//! error codes the stages act on (a duplicate key, an existing collection).

use std::time::Duration;

use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};

/// MongoDB's code for a duplicate `_id` (or unique key).
pub const DUPLICATE_KEY: i32 = 11000;

/// A failure to reach or use the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No server answered at the configured URL.
    #[error("database unreachable at {url}: {source}")]
    Unreachable {
        /// `MONGO_URL`, password masked.
        url: String,
        /// What the driver reported.
        #[source]
        source: MongoError,
    },
    /// A database operation failed.
    #[error("database error: {0}")]
    Operation(#[from] MongoError),
    /// A database operation took longer than allowed.
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    /// The server refused some statements of a write command.
    #[error("database refused a write: {0}")]
    Refused(String),
    /// The server refused some statements of a write command as too large
    /// (one of [`TOO_LARGE_CODES`]): a smaller batch may pass.
    #[error("database refused a write as too large: {0}")]
    TooLarge(String),
}

/// The server's code for creating a collection that exists.
pub const NAMESPACE_EXISTS: i32 = 48;

/// True when a write (or a command) was refused for a duplicate key.
pub fn is_duplicate_key(error: &MongoError) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// True when a collection could not be created because it exists.
pub fn is_namespace_exists(error: &MongoError) -> bool {
    matches!(error.kind.as_ref(), ErrorKind::Command(e) if e.code == NAMESPACE_EXISTS)
}

/// True when an `insert_many` failed only because some documents already exist:
/// the worker treats those as already moved (a batch re-run after a crash).
pub fn only_duplicate_keys(error: &MongoError) -> bool {
    match error.kind.as_ref() {
        ErrorKind::InsertMany(failure) => {
            failure.write_concern_error.is_none()
                && failure.write_errors.as_ref().is_some_and(|errors| errors.iter().all(|e| e.code == DUPLICATE_KEY))
        }
        _ => false,
    }
}

/// Server codes that say a write is too large for one command or transaction:
/// `BSONObjectTooLarge`, `TransactionTooLarge`, `TransactionTooLargeForCache`.
/// Retrying the same batch can never help (mongod may still label them
/// transient), but a smaller batch can.
pub const TOO_LARGE_CODES: [i32; 3] = [10334, 257, 388];

/// True when the server (or the driver) refused a write for its size: a
/// smaller batch may pass where this one never will.
pub fn is_too_large(error: &StoreError) -> bool {
    let error = match error {
        StoreError::TooLarge(_) => return true,
        StoreError::Operation(error) => error,
        _ => return false,
    };
    match error.kind.as_ref() {
        ErrorKind::Command(e) => TOO_LARGE_CODES.contains(&e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => TOO_LARGE_CODES.contains(&e.code),
        ErrorKind::InsertMany(failure) => {
            failure.write_errors.iter().flatten().any(|e| TOO_LARGE_CODES.contains(&e.code))
        }
        ErrorKind::InvalidArgument { .. } => true,
        _ => false,
    }
}

/// Server codes of a passing state, not of the data: the primary changing or
/// stepping down, a shutdown, the network, a time limit, a conflict, a lock,
/// a missing privilege (a configuration to fix, not an entry to set aside).
const PASSING_CODES: [i32; 23] = [
    6, 7, 89, 9001, 134, 262, 50, 64, 91, 189, 10107, 13435, 10058, 11600, 11602, 13436, 112, 24, 251, 13, 18, 11601,
    46,
];

/// True when a failure says nothing about the batch itself (the database
/// unreachable, busy, changing primary, or a conflict): the worker backs off
/// and retries the same batch. False when the server refused the batch's data
/// (a write refused, a document or command too large, a type it cannot apply),
/// which a retry meets again: the worker then shrinks the batch, and sets aside
/// an entry that still fails alone (see `worker::quarantine`). Anything not
/// known to be about the data counts as transient, so an outage never sets
/// entries aside.
pub fn is_transient(error: &StoreError) -> bool {
    use mongodb::error::{RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR};
    let error = match error {
        StoreError::Unreachable { .. } | StoreError::Timeout(_) => return true,
        StoreError::Refused(_) | StoreError::TooLarge(_) => return false,
        StoreError::Operation(error) => error,
    };
    let codes: Vec<i32> = match error.kind.as_ref() {
        ErrorKind::Command(e) => vec![e.code],
        ErrorKind::Write(WriteFailure::WriteError(e)) => vec![e.code],
        ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
            failure.write_errors.iter().flatten().map(|e| e.code).collect()
        }
        // The driver refused to send it (a document over the size limit) or to encode it.
        ErrorKind::InvalidArgument { .. } | ErrorKind::BsonSerialization(_) => return false,
        _ => return true,
    };
    if codes.iter().any(|code| TOO_LARGE_CODES.contains(code)) {
        return false;
    }
    error.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || error.contains_label(RETRYABLE_WRITE_ERROR)
        || codes.is_empty()
        || codes.iter().any(|code| PASSING_CODES.contains(code))
}
