//! Phase (c), `drain`: one worker draining a queue of generated events (a live
//! backlog, or a 30-day history), timed from its start until the queue is empty
//! and `events` holds them all.

use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};

use crate::dataset::{EventGenerator, Timestamps, fill};
use crate::harness::Bench;
use crate::numbers::grouped;
use crate::settings::{EVENTS, QUEUE};
use crate::systems::{Part, System};

/// One system's drain of one queue in one round.
pub struct DrainRun {
    /// From the worker's start until the queue was empty with every event moved;
    /// `None` if that did not happen.
    pub elapsed: Option<Duration>,
    pub events_after: u64,
}

impl Bench {
    /// Queues the run's number of drain events, timed as `timestamps` says, and times
    /// `system`'s worker moving them all to `events`.
    pub async fn drain(&mut self, system: System, round: usize, timestamps: Timestamps) -> DrainRun {
        let kind = if timestamps == Timestamps::History { "history" } else { "live" };
        let label = format!("r{round}-drain-{kind}-{}", system.name());
        let database = self.fresh_database(&label);
        let expected = self.settings.drain_events as u64;
        fill(&database.collection(QUEUE), self.settings.drain_events, &mut EventGenerator::with(timestamps)).await;
        let started = Instant::now();
        let mut deployment = self.deploy(system, Part::Worker, &database, &label).await;
        let elapsed = self.wait_until_drained(&database, expected, started, &mut deployment).await;
        drop(deployment);
        let events_after = database.collection::<Document>(EVENTS).count_documents(doc! {}).await.expect("count");
        database.drop().await.expect("drop the database");
        self.progress(format!(
            "{} drain of {} ({kind}): {}; events afterwards: {} ({})",
            system.name(),
            grouped(expected as f64),
            elapsed.map_or("did not finish".to_string(), |t| format!(
                "{:.2} s, {} events/s",
                t.as_secs_f64(),
                grouped(expected as f64 / t.as_secs_f64())
            )),
            grouped(events_after as f64),
            if events_after == expected { "exact" } else { "WRONG" },
        ));
        DrainRun { elapsed, events_after }
    }
}
