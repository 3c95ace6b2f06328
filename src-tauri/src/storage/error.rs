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
