//! Counters: this process's pipeline metrics, in one Prometheus registry that the
//! API (events received, refused by reason and queued; HTTP latency) and the
//! worker (events processed, batches and their durations) record into, and that
//! `GET /metrics` encodes in the Prometheus text format. The desktop app and the
//! engine's status read the totals from it too ([`PipelineCounters::snapshot`]).
//!
//! Every label takes its value from a fixed set, so no client can grow the
//! registry by sending odd methods or paths.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`PipelineCounters::encode`]'s output: the Prometheus
/// text format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Why the API refused events: the `reason` label of `analytics_events_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// Not a valid event or batch (400).
    Invalid,
    /// The body, or the batch, is too large (413).
    TooLarge,
    /// The content type is not JSON (415).
    UnsupportedType,
    /// The site is not in `ALLOWED_SITES` (403).
    SiteNotAllowed,
    /// The body did not arrive in time (408).
    Timeout,
    /// Too many requests at once, or too many events waiting for the queue insert (503).
    Overloaded,
    /// The database could not be used (503).
    Unavailable,
    /// The stored daily salt is unusable: no anonymous id (503).
    AnonymousId,
    /// The API is shutting down (503).
    ShuttingDown,
}

impl RefusalReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Invalid => "invalid",
            RefusalReason::TooLarge => "too_large",
            RefusalReason::UnsupportedType => "unsupported_type",
            RefusalReason::SiteNotAllowed => "site_not_allowed",
            RefusalReason::Timeout => "timeout",
            RefusalReason::Overloaded => "overloaded",
            RefusalReason::Unavailable => "unavailable",
            RefusalReason::AnonymousId => "anonymous_id",
            RefusalReason::ShuttingDown => "shutting_down",
        }
    }
}

impl EncodeLabelValue for RefusalReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Why the API dropped events it accepted (answered `ignored`, nothing stored):
/// the `reason` label of `analytics_events_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Sent by a crawler (the crawler data set).
    Crawler,
    /// Sent by a headless or automated browser.
    Headless,
    /// From a client address in `EXCLUDED_IPS`.
    ExcludedIp,
    /// From a browser excluded by `/exclude-me` (its cookie).
    ExcludedBrowser,
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let value = match self {
            DropReason::Crawler => "crawler",
            DropReason::Headless => "headless",
            DropReason::ExcludedIp => "excluded_ip",
            DropReason::ExcludedBrowser => "excluded_browser",
        };
        std::fmt::Write::write_str(encoder, value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DropLabels {
    reason: DropReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    reason: RefusalReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    method: &'static str,
    status: &'static str,
}

/// Bucket bounds of the duration histograms, in seconds: 1 ms doubling up to ~33 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// This process's pipeline metrics since the engine was created; read the totals
/// with [`PipelineCounters::snapshot`], everything with [`PipelineCounters::encode`].
pub struct PipelineCounters {
    registry: Registry,
    events_received: Counter,
    events_refused: Family<RefusalLabels, Counter>,
    events_queued: Counter,
    events_dropped: Family<DropLabels, Counter>,
    events_processed: Counter,
    batches_processed: Counter,
    batch_conflicts: Counter,
    worker_outages: Counter,
    worker_recoveries: Counter,
    batch_duration: Histogram,
    http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    queue_depth: Gauge<f64, AtomicU64>,
    batch_splits: Counter,
    events_quarantined: Counter,
    quarantine_depth: Gauge<f64, AtomicU64>,
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

impl Default for PipelineCounters {
    fn default() -> Self {
        let counters = PipelineCounters {
            registry: Registry::with_prefix("analytics"),
            events_received: Counter::default(),
            events_refused: Family::default(),
            events_queued: Counter::default(),
            events_dropped: Family::default(),
            events_processed: Counter::default(),
            batches_processed: Counter::default(),
            batch_conflicts: Counter::default(),
            worker_outages: Counter::default(),
            worker_recoveries: Counter::default(),
            batch_duration: duration_histogram(),
            http_duration: Family::new_with_constructor(duration_histogram),
            queue_depth: Gauge::default(),
            batch_splits: Counter::default(),
            events_quarantined: Counter::default(),
            quarantine_depth: Gauge::default(),
        };
        let mut registry = counters.registry;
        registry.register(
            "events_received",
            "Events sent to POST /event and POST /events (a body that could not be read as events counts as one)",
            counters.events_received.clone(),
        );
        registry.register(
            "events_refused",
            "Events refused by the API, by reason (a refused batch counts all its events)",
            counters.events_refused.clone(),
        );
        registry.register(
            "events_dropped",
            "Events accepted but not stored, by reason: sent by bots (crawlers, headless browsers), or excluded \
             (excluded_ip: EXCLUDED_IPS; excluded_browser: the /exclude-me cookie)",
            counters.events_dropped.clone(),
        );
        registry.register(
            "events_queued",
            "Events stored in the queue and acknowledged by the API",
            counters.events_queued.clone(),
        );
        registry.register(
            "events_processed",
            "Events moved from the queue into events by this process's worker",
            counters.events_processed.clone(),
        );
        registry.register(
            "batches_processed",
            "Batches moved by this process's worker",
            counters.batches_processed.clone(),
        );
        registry.register(
            "batch_conflicts",
            "Batch transactions of this process's worker that conflicted with another's (another worker, or the \
             other lane): each is retried on a fresh read, or left to the other",
            counters.batch_conflicts.clone(),
        );
        registry.register(
            "worker_outages",
            "Times this process's worker lost the database (once per outage, whichever lane met it first)",
            counters.worker_outages.clone(),
        );
        registry.register(
            "worker_recoveries",
            "Times this process's worker got through to the database again after an outage",
            counters.worker_recoveries.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "Time the worker took to move one batch",
            counters.batch_duration.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route, method and status class",
            counters.http_duration.clone(),
        );
        registry.register(
            "queue_depth",
            "Events waiting in the queue, read from the database at scrape time (NaN when it did not answer)",
            counters.queue_depth.clone(),
        );
        registry.register(
            "batch_splits",
            "Batches the database refused for their data (too large, or holding an entry it cannot store), retried \
             in halves by this process's worker",
            counters.batch_splits.clone(),
        );
        registry.register(
            "events_quarantined",
            "Queue entries this process's worker set aside in events_quarantine: refused alone, again and again",
            counters.events_quarantined.clone(),
        );
        registry.register(
            "quarantine_depth",
            "Entries waiting in events_quarantine, read from the database at scrape time (NaN when it did not answer)",
            counters.quarantine_depth.clone(),
        );
        PipelineCounters { registry, ..counters }
    }
}

impl std::fmt::Debug for PipelineCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineCounters").field("totals", &self.snapshot()).finish_non_exhaustive()
    }
}

impl PipelineCounters {
    /// Counts events that reached the API (before validation).
    pub fn add_received(&self, n: u64) {
        self.events_received.inc_by(n);
    }

    /// Counts events the API refused, and why.
    pub fn add_refused(&self, reason: RefusalReason, n: u64) {
        self.events_refused.get_or_create(&RefusalLabels { reason }).inc_by(n);
    }

    /// Counts events dropped at ingestion (answered `ignored`), by reason.
    pub fn add_dropped(&self, reason: DropReason, n: u64) {
        self.events_dropped.get_or_create(&DropLabels { reason }).inc_by(n);
    }

    /// Counts events acknowledged by the API.
    pub fn add_queued(&self, n: u64) {
        self.events_queued.inc_by(n);
    }

    /// Counts one batch of `n` events moved by the worker in `duration`.
    pub fn add_batch(&self, n: u64, duration: Duration) {
        self.events_processed.inc_by(n);
        self.batches_processed.inc();
        self.batch_duration.observe(duration.as_secs_f64());
    }

    /// Counts one batch transaction that conflicted with another's.
    pub fn add_batch_conflict(&self) {
        self.batch_conflicts.inc();
    }

    /// Counts one outage of the database, as the worker reports it.
    pub fn add_worker_outage(&self) {
        self.worker_outages.inc();
    }

    /// Counts the worker's recovery from an outage.
    pub fn add_worker_recovery(&self) {
        self.worker_recoveries.inc();
    }

    /// Counts a batch refused for its data and retried in halves.
    pub fn add_batch_split(&self) {
        self.batch_splits.inc();
    }

    /// Counts queue entries set aside in the quarantine.
    pub fn add_quarantined(&self, n: u64) {
        self.events_quarantined.inc_by(n);
    }

    /// Sets the quarantine's size shown by the next [`PipelineCounters::encode`]
    /// (`None`: could not be read, shown as NaN).
    pub fn set_quarantine_depth(&self, depth: Option<u64>) {
        self.quarantine_depth.set(depth.map_or(f64::NAN, |depth| depth as f64));
    }

    /// Batch transactions that conflicted with another's so far.
    pub fn batch_conflicts(&self) -> u64 {
        self.batch_conflicts.get()
    }

    /// Records how long an HTTP request took. `route` is one of the API's routes
    /// (or a fixed word for none); the method and status are reduced to fixed sets.
    pub fn observe_http(&self, route: &'static str, method: &str, status: u16, duration: Duration) {
        let method = match method {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "POST" => "POST",
            "OPTIONS" => "OPTIONS",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            "PATCH" => "PATCH",
            _ => "other",
        };
        let status = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_duration.get_or_create(&HttpLabels { route, method, status }).observe(duration.as_secs_f64());
    }

    /// Sets the queue depth shown by the next [`PipelineCounters::encode`]; `None`
    /// when it could not be read (shown as NaN, so a stale number never passes for a current one).
    pub fn set_queue_depth(&self, depth: Option<u64>) {
        self.queue_depth.set(depth.map_or(f64::NAN, |depth| depth as f64));
    }

    /// Every metric in the Prometheus text format ([`METRICS_CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Reads the totals.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            events_queued: self.events_queued.get(),
            events_processed: self.events_processed.get(),
            batches_processed: self.batches_processed.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_encodes_every_metric_with_its_values() {
        let counters = PipelineCounters::default();
        counters.add_received(5);
        counters.add_refused(RefusalReason::Invalid, 2);
        counters.add_refused(RefusalReason::SiteNotAllowed, 1);
        counters.add_queued(2);
        counters.add_batch(2, Duration::from_millis(3));
        counters.add_batch_conflict();
        counters.observe_http("/event", "POST", 200, Duration::from_millis(1));
        counters.observe_http("unmatched", "BREW", 404, Duration::from_millis(1));
        counters.set_queue_depth(Some(7));

        let text = counters.encode();

        for line in [
            "# TYPE analytics_events_received_total counter",
            "analytics_events_received_total 5",
            "analytics_events_refused_total{reason=\"invalid\"} 2",
            "analytics_events_refused_total{reason=\"site_not_allowed\"} 1",
            "analytics_events_queued_total 2",
            "analytics_events_processed_total 2",
            "analytics_batches_processed_total 1",
            "analytics_batch_conflicts_total 1",
            "# TYPE analytics_batch_duration_seconds histogram",
            "analytics_batch_duration_seconds_count 1",
            "analytics_batch_duration_seconds_bucket{le=\"0.004\"} 1",
            "analytics_batch_duration_seconds_bucket{le=\"0.002\"} 0",
            "analytics_http_request_duration_seconds_count{route=\"/event\",method=\"POST\",status=\"2xx\"} 1",
            "analytics_http_request_duration_seconds_count{route=\"unmatched\",method=\"other\",status=\"4xx\"} 1",
            "# TYPE analytics_queue_depth gauge",
            "analytics_queue_depth 7.0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert_eq!(
            counters.snapshot(),
            CountersSnapshot { events_queued: 2, events_processed: 2, batches_processed: 1 }
        );

        counters.set_queue_depth(None);
        assert!(counters.encode().lines().any(|l| l == "analytics_queue_depth NaN"));
    }
}
