//! Storage: the MongoDB connection ([`Store`]), the queue and events
//! collections and the events' index, the database errors every stage shares
//! ([`error`]), and the local database the desktop app launches ([`local_db`]).
//!
//! Every database timeout lives here, so that no caller can hang on an unreachable
//! server: the driver gives up selecting a server after [`SERVER_SELECTION_TIMEOUT`].
//! Storage knows nothing of the stages above it: each owner of a collection
//! (the rollups, retention, the salts) ensures its own indexes.

pub mod error;
pub mod local_db;
pub mod port_owner;

use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, CollectionOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, Database, IndexModel};

use crate::config::{Config, EVENTS_COLLECTION};

pub use error::{StoreError, is_duplicate_key, is_too_large, is_transient, only_duplicate_keys};

/// How long an operation waits for a usable server before failing; keeps the
/// API's "database unavailable" answer within a couple of seconds.
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The unique index on `{site_id, event_id}` of the queue and of `events`.
pub const EVENT_ID_INDEX: &str = "site_id_event_id_unique";

/// A connected handle on the service's database; cheap to clone (the driver's
/// client is reference-counted), one per process is enough.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    durable: WriteConcern,
    db: Database,
    queue: Collection<Document>,
    events: Collection<Document>,
    stats_query_time_limit: Duration,
    /// The server's write limits, asked once (see [`Store::write_limits`]).
    limits: std::sync::Arc<tokio::sync::OnceCell<WriteLimits>>,
}

impl Store {
    /// Connects to `MONGO_URL` and checks the server answers a ping.
    pub async fn connect(config: &Config) -> Result<Store, StoreError> {
        let unreachable = |source| StoreError::Unreachable { url: config.masked_mongo_url(), source };
        let mut options = ClientOptions::parse(&config.mongo_url).await.map_err(unreachable)?;
        options.app_name = Some("analytics-desk".to_string());
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout = Some(CONNECT_TIMEOUT);
        let durable = durable_write_concern(options.write_concern.clone());
        let client = Client::with_options(options).map_err(unreachable)?;
        let db = client.database(&config.database);
        let collection = |name: &str| {
            db.collection_with_options(name, CollectionOptions::builder().write_concern(durable.clone()).build())
        };
        let store = Store {
            queue: collection(&config.queue_name),
            events: collection(EVENTS_COLLECTION),
            client,
            durable,
            db,
            stats_query_time_limit: config.stats_query_time_limit,
            limits: Default::default(),
        };
        store.ping().await.map_err(|e| match e {
            StoreError::Operation(source) => unreachable(source),
            other => other,
        })?;
        Ok(store)
    }

    /// The queue collection (`QUEUE_NAME`): events accepted by the API, not yet
    /// processed. Writes are journaled (see [`durable_write_concern`]).
    pub fn queue(&self) -> &Collection<Document> {
        &self.queue
    }

    /// The `events` collection: processed events, each with `processed_at`.
    /// Writes are journaled, so a batch is durable in `events` before it leaves the queue.
    pub fn events(&self) -> &Collection<Document> {
        &self.events
    }

    /// The database itself.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The driver's client (for sessions and transactions).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The `maxTimeMS` of every stats query ([`Config::stats_query_time_limit`]):
    /// the server stops a query's work past it, even when its client is gone.
    pub fn stats_query_time_limit(&self) -> Duration {
        self.stats_query_time_limit
    }

    /// The write concern of every write: the URL's, journaled.
    pub fn durable_write_concern(&self) -> &WriteConcern {
        &self.durable
    }

    /// True when the deployment runs multi-document transactions: a replica set
    /// (even of one node, as SecantusDB presents itself) or a sharded cluster.
    /// A standalone `mongod` does not.
    pub async fn supports_transactions(&self) -> Result<bool, StoreError> {
        let hello = self.db.run_command(doc! { "hello": 1 }).await?;
        Ok(hello.contains_key("setName") || hello.get_str("msg") == Ok("isdbgrid"))
    }

    /// The server's limits on one write command (from `hello`, asked once): the
    /// commands built by hand (the rollups' `update`s) are split to fit them;
    /// the driver splits its own `insert_many`.
    pub async fn write_limits(&self) -> Result<WriteLimits, StoreError> {
        let limits = self
            .limits
            .get_or_try_init(|| async {
                let hello = self.db.run_command(doc! { "hello": 1 }).await?;
                Ok::<_, StoreError>(WriteLimits::from_hello(&hello))
            })
            .await?;
        Ok(*limits)
    }

    /// Asks the server for a ping.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    /// Number of events waiting in the queue (from collection metadata: cheap,
    /// meant for live display).
    pub async fn queue_depth(&self) -> Result<u64, StoreError> {
        Ok(self.queue.estimated_document_count().await?)
    }

    /// Creates the indexes of the collections storage owns; creating an existing
    /// index is a no-op, so this runs at every start-up.
    ///
    /// - `events {site_id, timestamp}`: per-site time ranges (the partial hours
    ///   the fast stats read raw, and every query of the plain stats). The
    ///   original service's `{site_id, path}` and `{site_id, user_id}` are not
    ///   made: stats read the rollups, and each index slows every insert;
    /// - the queue is read in `_id` order, which its default index already serves;
    /// - `{site_id, event_id}`, unique, on both, over the events sent with an
    ///   `event_id` only (partial): a retry of a queued event is refused by the
    ///   queue's, one of a processed event by `events`' (see [`crate::worker`]).
    ///
    /// The rollups ensure theirs ([`crate::rollups::ensure_indexes`]).
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let index = |keys: Document, name: &str| {
            IndexModel::builder().keys(keys).options(IndexOptions::builder().name(name.to_string()).build()).build()
        };
        let one_per_event_id = || {
            let options = IndexOptions::builder()
                .name(EVENT_ID_INDEX.to_string())
                .unique(true)
                .partial_filter_expression(doc! { "event_id": { "$exists": true } })
                .build();
            IndexModel::builder().keys(doc! { "site_id": 1, "event_id": 1 }).options(options).build()
        };
        self.events
            .create_indexes([index(doc! { "site_id": 1, "timestamp": 1 }, "site_id_timestamp"), one_per_event_id()])
            .await?;
        self.queue.create_index(one_per_event_id()).await?;
        Ok(())
    }

    /// Closes the driver's connections.
    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }
}

/// Room left in a command for its own fields (the session, the transaction,
/// the write concern, the collection's name) beside its statements.
const COMMAND_MARGIN: usize = 64 * 1024;

/// The server's limits on one write command, as `hello` reports them (the
/// driver reads the same): a command built by hand that breaks one is refused
/// whole, so the commands that carry a batch's statements are split to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimits {
    /// `maxBsonObjectSize`: the largest document, a command included.
    pub max_bson_object_size: usize,
    /// `maxMessageSizeBytes`: the largest message on the wire.
    pub max_message_size: usize,
    /// `maxWriteBatchSize`: the most statements in one write command.
    pub max_write_batch_size: usize,
}

impl Default for WriteLimits {
    /// MongoDB's own values, used when `hello` does not say.
    fn default() -> Self {
        WriteLimits {
            max_bson_object_size: 16 * 1024 * 1024,
            max_message_size: 48_000_000,
            max_write_batch_size: 100_000,
        }
    }
}

impl WriteLimits {
    /// The limits a `hello` reply reports (MongoDB's defaults for those it omits).
    pub fn from_hello(hello: &Document) -> WriteLimits {
        let number = |field: &str| match hello.get(field) {
            Some(mongodb::bson::Bson::Int32(n)) => usize::try_from(*n).ok().filter(|n| *n > 0),
            Some(mongodb::bson::Bson::Int64(n)) => usize::try_from(*n).ok().filter(|n| *n > 0),
            Some(mongodb::bson::Bson::Double(n)) if *n >= 1.0 => Some(*n as usize),
            _ => None,
        };
        let default = WriteLimits::default();
        WriteLimits {
            max_bson_object_size: number("maxBsonObjectSize").unwrap_or(default.max_bson_object_size),
            max_message_size: number("maxMessageSizeBytes").unwrap_or(default.max_message_size),
            max_write_batch_size: number("maxWriteBatchSize").unwrap_or(default.max_write_batch_size),
        }
    }

    /// The bytes the statements of one command may take: the smaller of the
    /// object and message limits, less room for the command's own fields.
    pub fn command_budget(&self) -> usize {
        self.max_bson_object_size.min(self.max_message_size).saturating_sub(COMMAND_MARGIN).max(1)
    }
}

/// The URL's write concern (its `w`, `wtimeoutMS`) with journaling required:
/// "queued" must mean the event survives the database process crashing, not
/// merely that it reached the server's memory.
pub fn durable_write_concern(configured: Option<WriteConcern>) -> WriteConcern {
    let mut concern = configured.unwrap_or_default();
    concern.journal = Some(true);
    concern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_limits_come_from_hello_with_mongodbs_defaults() {
        let hello = doc! { "maxBsonObjectSize": 1000_i32, "maxWriteBatchSize": 10_i64 };
        let limits = WriteLimits::from_hello(&hello);
        assert_eq!((limits.max_bson_object_size, limits.max_write_batch_size), (1000, 10));
        assert_eq!(limits.max_message_size, 48_000_000);
        assert_eq!(limits.command_budget(), 1, "never zero, even under the margin");
        assert_eq!(WriteLimits::from_hello(&doc! {}), WriteLimits::default());
        assert_eq!(WriteLimits::default().command_budget(), 16 * 1024 * 1024 - COMMAND_MARGIN);
    }

    #[test]
    fn writes_are_journaled_and_keep_the_urls_acknowledgement() {
        let majority = WriteConcern::builder().w(mongodb::options::Acknowledgment::Majority).build();
        let durable = durable_write_concern(Some(majority));
        assert_eq!((durable.w, durable.journal), (Some(mongodb::options::Acknowledgment::Majority), Some(true)));
        assert_eq!(durable_write_concern(None).journal, Some(true));
    }
}
