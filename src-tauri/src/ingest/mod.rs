//! Ingest: what happens to an event between the request and the queue. In
//! order, in [`Ingest::submit_event`] (and [`Ingest::submit_batch`], element by
//! element): the body is parsed and validated ([`event`], [`page_context`]),
//! its site checked against `ALLOWED_SITES`, excluded visits dropped
//! ([`exclusion`]: `EXCLUDED_IPS`, the `/exclude-me` cookie) and a bot's events
//! dropped ([`enrich`]), each answered, counted and never stored, an anonymous visitor id
//! derived when it has no `user_id` ([`anonymous_id`], from the client's
//! address: [`client_ip`]), the enrichment fields added ([`enrich`]), and its
//! queue document group-committed into the queue collection
//! ([`group_commit`]). Only then is it acknowledged.
//!
//! The HTTP layer only reads the request and shapes the answer.

pub mod anonymous_id;
pub mod client_ip;
pub mod enrich;
pub mod event;
pub mod exclusion;
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
use crate::telemetry::counters::{DropReason, PipelineCounters};
use anonymous_id::{AnonymousVisitors, SaltError};
use enrich::bots::BotKind;
use enrich::{Client, Enricher};
use exclusion::{Excluded, Exclusion};
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

/// What became of submitted events that were accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// This many events are stored in the queue.
    Queued(usize),
    /// Sent by a bot, or excluded: this many events were dropped, nothing stored.
    Ignored {
        /// Why they were dropped.
        reason: Ignored,
        /// How many events were dropped.
        count: usize,
    },
}

/// Why accepted events were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// A bot sent them.
    Bot(BotKind),
    /// The sender's own visits, excluded (`EXCLUDED_IPS` or `/exclude-me`).
    Excluded(Excluded),
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
    /// Counts the events queued and dropped.
    counters: Arc<PipelineCounters>,
    /// Drops bots' events and enriches the others (data sets loaded once).
    enricher: Arc<Enricher>,
    /// Drops the visits of excluded addresses and browsers.
    exclusion: Arc<Exclusion>,
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
            enricher: Arc::new(Enricher::load(&config.data_sets)),
            exclusion: Arc::new(Exclusion::new(config.excluded_ips.clone())),
        }
    }

    /// Takes one event (the raw body of `POST /event`) from `sender`: parsed,
    /// site checked, dropped if a bot sent it, anonymous id derived if needed,
    /// enriched, and queued. Returns once the queue insert is acknowledged (journaled).
    pub async fn submit_event(&self, body: &[u8], sender: Sender<'_>) -> Result<Submitted, SubmitError> {
        let event = event::parse_event(body)?;
        self.check_site(&event.site_id)?;
        let client = self.client(sender);
        if let Some(reason) = self.drop_if_ignored(client, sender, 1) {
            return Ok(Submitted::Ignored { reason, count: 1 });
        }
        let document = self.queue_document(event, sender, client, DateTime::now()).await?;
        self.queue(vec![document]).await?;
        Ok(Submitted::Queued(1))
    }

    /// Takes a batch (the elements of a `POST /events` body, from
    /// [`event::split_batch`]) from `sender`, all or nothing: every element
    /// parsed and every site checked before any anonymous id is derived (a
    /// refusal is cheap), then one insert for all. Returns how many were queued,
    /// or, when a bot sent the batch (one request, one User-Agent), how many were dropped.
    pub async fn submit_batch(&self, elements: Vec<&RawValue>, sender: Sender<'_>) -> Result<Submitted, SubmitError> {
        let in_batch = |index: usize, error: SubmitError| SubmitError::InBatch { index, error: Box::new(error) };
        let events = elements
            .into_iter()
            .enumerate()
            .map(|(index, element)| event::parse_batch_element(element).map_err(|e| in_batch(index, e.into())))
            .collect::<Result<Vec<NewEvent>, SubmitError>>()?;
        for (index, event) in events.iter().enumerate() {
            self.check_site(&event.site_id).map_err(|e| in_batch(index, e))?;
        }
        let client = self.client(sender);
        if let Some(reason) = self.drop_if_ignored(client, sender, events.len()) {
            return Ok(Submitted::Ignored { reason, count: events.len() });
        }
        let ingested_at = DateTime::now();
        let mut documents = Vec::with_capacity(events.len());
        for event in events {
            documents.push(self.queue_document(event, sender, client, ingested_at).await?);
        }
        let count = documents.len();
        self.queue(documents).await?;
        Ok(Submitted::Queued(count))
    }

    /// What enrichment reads of the sender: its User-Agent and address (never stored).
    fn client<'a>(&self, sender: Sender<'a>) -> Client<'a> {
        let user_agent = sender.headers.get(axum::http::header::USER_AGENT).and_then(|value| value.to_str().ok());
        let ip = sender.peer.map(|peer| client_ip(peer, sender.headers, &self.visitors.trusted_proxies));
        Client { user_agent, ip }
    }

    /// Why `count` events from `client` are dropped (excluded first, then a
    /// bot's), counted by reason; `None` for a visitor's events.
    fn drop_if_ignored(&self, client: Client<'_>, sender: Sender<'_>, count: usize) -> Option<Ignored> {
        let ignored = match self.exclusion.check(client.ip, sender.headers) {
            Some(excluded) => Ignored::Excluded(excluded),
            None => Ignored::Bot(self.enricher.bot(client.user_agent)?),
        };
        let reason = match ignored {
            Ignored::Bot(BotKind::Crawler) => DropReason::Crawler,
            Ignored::Bot(BotKind::Headless) => DropReason::Headless,
            Ignored::Excluded(Excluded::Ip) => DropReason::ExcludedIp,
            Ignored::Excluded(Excluded::Browser) => DropReason::ExcludedBrowser,
        };
        self.counters.add_dropped(reason, count as u64);
        Some(ignored)
    }

    /// Refuses a site not in `ALLOWED_SITES` (when set).
    fn check_site(&self, site_id: &str) -> Result<(), SubmitError> {
        match &self.allowed_sites {
            Some(allowed) if !allowed.contains(site_id) => Err(SubmitError::SiteNotAllowed(site_id.to_string())),
            _ => Ok(()),
        }
    }

    /// The queue document of a validated event, with an anonymous `user_id`
    /// derived when it has none (and `anonymous: true`), and its enrichment fields.
    async fn queue_document(
        &self,
        mut event: NewEvent,
        sender: Sender<'_>,
        client: Client<'_>,
        ingested_at: DateTime,
    ) -> Result<Document, SubmitError> {
        let anonymous = event.user_id.is_none();
        if anonymous {
            event.user_id = Some(self.anonymous_user_id(&event.site_id, sender, ingested_at).await?);
        }
        let enrichment = self.enricher.fields(&event.context, client);
        let mut document = event.into_queue_document(ObjectId::new(), ingested_at)?;
        document.extend(enrichment);
        if anonymous {
            document.insert("anonymous", true);
        }
        Ok(document)
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
