//! Watching the queue through the database: its count settling after a load, and
//! a worker draining it (timed, without loading the database it measures).

use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use mongodb::{Collection, Database};

use crate::harness::Bench;
use crate::numbers::grouped;
use crate::processes::Deployment;
use crate::settings::{EVENTS, QUEUE};

/// How often a drain is checked once the queue is short (the finish is timed to this).
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How often a drain is checked while the queue is long: `secantusd-rs` counts
/// documents by reading them (~90 ms for 200,000, even `estimatedDocumentCount`),
/// so checking every 50 ms took about a core of the database it measured.
const DRAIN_POLL_LONG: Duration = Duration::from_secs(1);
/// How often a long queue is checked before its rate is known (the worker starting).
const DRAIN_POLL_STARTING: Duration = Duration::from_millis(250);
/// Queue length below which a drain is checked every [`DRAIN_POLL`].
const DRAIN_SHORT_QUEUE: u64 = 10_000;

/// The number of documents once it has stopped changing (requests still in
/// flight when wrk stopped may land a little later), within 10 s.
pub async fn settled_count(collection: &Collection<Document>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = collection.count_documents(doc! {}).await.expect("count");
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = collection.count_documents(doc! {}).await.expect("count");
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

impl Bench {
    /// Polls the queue's length (collection metadata, confirmed by exact counts)
    /// every [`DRAIN_POLL`] once it is short, and rarely before (see
    /// [`DRAIN_POLL_LONG`]: half the time the queue is predicted to take to get
    /// short, at most a second), until the queue is empty and `events` holds at least `expected` documents;
    /// gives up when the queue has stayed empty for 2 s with events missing, or
    /// after `limit`. Returns the time since `started`, if it drained.
    pub async fn wait_until_drained(
        &self,
        database: &Database,
        expected: u64,
        started: Instant,
        deployment: &mut Deployment,
    ) -> Option<Duration> {
        let queue = database.collection::<Document>(QUEUE);
        let events = database.collection::<Document>(EVENTS);
        let mut last_poll: Option<(Instant, u64)> = None;
        let limit = Duration::from_secs(60) + Duration::from_millis(expected * 2); // at least 500 events/s
        let mut next_report = started + Duration::from_secs(15);
        let mut empty_since: Option<Instant> = None;
        loop {
            deployment.assert_running();
            // The queue only: counting `events` too would double the load.
            let queued = queue.estimated_document_count().await.expect("queue count");
            if queued == 0 {
                let queued = queue.count_documents(doc! {}).await.expect("queue count");
                let moved = events.count_documents(doc! {}).await.expect("events count");
                if queued == 0 && moved >= expected {
                    return Some(started.elapsed());
                }
                if queued == 0 && empty_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(2) {
                    self.progress(format!("queue empty but only {} events of {}", grouped(moved as f64), expected));
                    return None;
                }
            }
            if started.elapsed() > limit {
                self.progress(format!("gave up after {limit:?}: {queued} still queued"));
                return None;
            }
            if Instant::now() > next_report {
                self.progress(format!("  … {} queued", grouped(queued as f64)));
                next_report += Duration::from_secs(15);
            }
            let now = Instant::now();
            let pause = match last_poll {
                Some((at, before)) if queued > DRAIN_SHORT_QUEUE && before > queued => {
                    let rate = (before - queued) as f64 / (now - at).as_secs_f64();
                    let until_short = (queued - DRAIN_SHORT_QUEUE) as f64 / rate;
                    Duration::from_secs_f64(until_short / 2.0).clamp(DRAIN_POLL, DRAIN_POLL_LONG)
                }
                _ if queued > DRAIN_SHORT_QUEUE => DRAIN_POLL_STARTING,
                _ => DRAIN_POLL,
            };
            last_poll = Some((now, queued));
            tokio::time::sleep(pause).await;
        }
    }
}
