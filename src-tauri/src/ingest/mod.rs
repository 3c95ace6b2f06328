//! Ingest: what happens to an event between the request and the queue. In
//! order, in [`Ingest::submit_event`] (and [`Ingest::submit_batch`], element by
//! element): the body is parsed and validated ([`event`]), its site checked
//! against `ALLOWED_SITES`, an anonymous visitor id derived when it has no
//! `user_id` ([`anonymous_id`], from the client's address: [`client_ip`]), and
//! its queue document group-committed into the queue collection
//! ([`group_commit`]). Only then is it acknowledged.
//!
//! The HTTP layer only reads the request and shapes the answer.

pub mod anonymous_id;
pub mod client_ip;
pub mod enrich;
pub mod event;
pub mod group_commit;
pub mod late_visitors;
pub mod page_context;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document};
use serde_json::value::RawValue;
use tracing::warn;

use crate::config::Config;
use crate::storage::{Store, StoreError};
use crate::telemetry::counters::PipelineCounters;
use anonymous_id::{AnonymousVisitors, SaltError};
use group_commit::{QueueWriteError, QueueWriter};

pub use client_ip::client_ip;
pub use event::{BatchError, EventBody, EventError, MAX_BATCH_BODY_BYTES, MAX_BATCH_EVENTS, MAX_BODY_BYTES, NewEvent};

/// Longest wait for the queue insert (and for the day's salt) before refusing
/// the event as unavailable (server selection already gives up after two
/// seconds when no server answers at all).
pub const QUEUE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who sent a request, as far as ingestion needs to know: the TCP peer (unknown
/// when the router is driven without our serve loop) and the request's headers
/// (`User-Agent`, `X-Forwarded-For`). Used only to derive anonymous ids.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// The connection's peer address.
    pub peer: Option<IpAddr>,
    /// The request's headers.
    pub headers: &'a HeaderMap,
}

/// Why submitted events were not queued. Nothing of a refused submission is stored.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The body is not an acceptable event.
    #[error(transparent)]
    Invalid(#[from] EventError),
    /// The body of a batch is not acceptable as a whole.
    #[error(transparent)]
    InvalidBatch(#[from] BatchError),
    /// One element of a batch is refused, and so the whole batch.
    #[error("event {index}: {error}")]
    InBatch {
        /// The element's position in the array, from 0.
        index: usize,
        /// Why it is refused.
        error: Box<SubmitError>,
    },
    /// A site not in `ALLOWED_SITES`.
    #[error("site_id {0:?} is not accepted by this server (see ALLOWED_SITES)")]
    SiteNotAllowed(String),
    /// Too many submissions already wait for the queue insert.
    #[error("too many submissions waiting for the queue insert")]
    Overloaded,
    /// The database could not be used (or did not answer in time).
    #[error(transparent)]
    Unavailable(StoreError),
    /// The queue writer has stopped: the service is shutting down.
    #[error("the queue writer has stopped")]
    ShuttingDown,
    /// The stored daily salt is unusable, so no anonymous id can be derived.
    #[error("cannot derive an anonymous user_id, event not stored: {0}")]
    AnonymousId(SaltError),
}

/// The ingestion stage of one API process: cheap to clone, shared by every request.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// Sites accepted (`ALLOWED_SITES`), when restricted.
    allowed_sites: Option<Arc<HashSet<String>>>,
    /// Gives events sent without `user_id` an anonymous one.
    visitors: Arc<AnonymousVisitors>,
    /// Group-commits queue documents.
    queue_writer: QueueWriter,
    /// Counts the events queued.
    counters: Arc<PipelineCounters>,
}

impl Ingest {
    /// Ingestion into `store`'s queue under `config`'s rules (`ALLOWED_SITES`,
    /// `TRUSTED_PROXIES`), starting its queue writer on the current runtime.
    pub fn new(store: &Store, counters: Arc<PipelineCounters>, config: &Config) -> Ingest {
        Ingest {
            allowed_sites: config.allowed_sites.as_ref().map(|sites| Arc::new(sites.iter().cloned().collect())),
            visitors: Arc::new(AnonymousVisitors::new(store.database(), config.trusted_proxies.clone())),
            queue_writer: QueueWriter::spawn(store.queue().clone()),
            counters,
        }
    }

    /// Takes one event (the raw body of `POST /event`) from `sender`: parsed,
    /// site checked, anonymous id derived if needed, and queued. Returns once
    /// the queue insert is acknowledged (journaled).
    pub async fn submit_event(&self, body: &[u8], sender: Sender<'_>) -> Result<(), SubmitError> {
        let event = event::parse_event(body)?;
        self.check_site(&event.site_id)?;
        let document = self.queue_document(event, sender, DateTime::now()).await?;
        self.queue(vec![document]).await
    }

    /// Takes a batch (the elements of a `POST /events` body, from
    /// [`event::split_batch`]) from `sender`, all or nothing: every element
    /// parsed and every site checked before any anonymous id is derived (a
    /// refusal is cheap), then one insert for all. Returns how many were queued.
    pub async fn submit_batch(&self, elements: Vec<&RawValue>, sender: Sender<'_>) -> Result<usize, SubmitError> {
        let in_batch = |index: usize, error: SubmitError| SubmitError::InBatch { index, error: Box::new(error) };
        let events = elements
            .into_iter()
            .enumerate()
            .map(|(index, element)| event::parse_batch_element(element).map_err(|e| in_batch(index, e.into())))
            .collect::<Result<Vec<NewEvent>, SubmitError>>()?;
        for (index, event) in events.iter().enumerate() {
            self.check_site(&event.site_id).map_err(|e| in_batch(index, e))?;
        }
        let ingested_at = DateTime::now();
        let mut documents = Vec::with_capacity(events.len());
        for event in events {
            documents.push(self.queue_document(event, sender, ingested_at).await?);
        }
        let count = documents.len();
        self.queue(documents).await?;
        Ok(count)
    }

    /// Refuses a site not in `ALLOWED_SITES` (when set).
    fn check_site(&self, site_id: &str) -> Result<(), SubmitError> {
        match &self.allowed_sites {
            Some(allowed) if !allowed.contains(site_id) => Err(SubmitError::SiteNotAllowed(site_id.to_string())),
            _ => Ok(()),
        }
    }

    /// The queue document of a validated event, with an anonymous `user_id`
    /// derived when it has none.
    async fn queue_document(
        &self,
        mut event: NewEvent,
        sender: Sender<'_>,
        ingested_at: DateTime,
    ) -> Result<Document, SubmitError> {
        if event.user_id.is_none() {
            event.user_id = Some(self.anonymous_user_id(&event.site_id, sender, ingested_at).await?);
        }
        Ok(event.into_queue_document(ObjectId::new(), ingested_at)?)
    }

    /// The anonymous id of `sender` for `site_id` (see [`anonymous_id`]).
    async fn anonymous_user_id(&self, site_id: &str, sender: Sender<'_>, at: DateTime) -> Result<String, SubmitError> {
        let derived = self.visitors.user_id_at(site_id, sender.peer, sender.headers, at);
        match tokio::time::timeout(QUEUE_WRITE_TIMEOUT, derived).await {
            Ok(Ok(user_id)) => Ok(user_id),
            Ok(Err(SaltError::Store(error))) => Err(SubmitError::Unavailable(error)),
            Ok(Err(malformed)) => {
                warn!(error = %malformed, "cannot derive an anonymous user_id: refusing the event");
                Err(SubmitError::AnonymousId(malformed))
            }
            Err(_) => Err(SubmitError::Unavailable(StoreError::Timeout(QUEUE_WRITE_TIMEOUT))),
        }
    }

    /// Stores `documents` in the queue (one group-committed insert) and counts them.
    async fn queue(&self, documents: Vec<Document>) -> Result<(), SubmitError> {
        let count = documents.len() as u64;
        match tokio::time::timeout(QUEUE_WRITE_TIMEOUT, self.queue_writer.write(documents)).await {
            Ok(Ok(())) => {
                self.counters.add_queued(count);
                Ok(())
            }
            Ok(Err(QueueWriteError::Overloaded)) => Err(SubmitError::Overloaded),
            Ok(Err(QueueWriteError::Store(error))) => Err(SubmitError::Unavailable(error)),
            Ok(Err(QueueWriteError::Stopped)) => Err(SubmitError::ShuttingDown),
            Err(_) => Err(SubmitError::Unavailable(StoreError::Timeout(QUEUE_WRITE_TIMEOUT))),
        }
    }
}
