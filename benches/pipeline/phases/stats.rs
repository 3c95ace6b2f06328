//! Phase (d), `stats`: `GET /stats` latency over a number of events of one site,
//! each answer checked against the figures the harness computed from the events it
//! generated (ours must be exact; the seed's total and unique users must match).
//! Ours is filled through the real path (queue, then our worker), the seed's
//! straight into `events`.

use std::time::Instant;

use crate::dataset::{EventGenerator, SITE, fill, stats_difference};
use crate::harness::Bench;
use crate::numbers::{grouped, median, milliseconds, percentile, shown};
use crate::settings::{EVENTS, QUEUE};
use crate::systems::{Part, System};

/// Calls of `GET /stats` made before the timed ones.
pub const STATS_WARMUPS: usize = 2;
/// Timed calls of `GET /stats` per system and size.
pub const STATS_SAMPLES: usize = 20;

/// One system's `GET /stats` calls over one number of events.
#[derive(Default)]
pub struct StatsRun {
    pub latencies_ms: Vec<f64>,
    /// The first difference from the expected figures, or the error, if any.
    pub problem: Option<String>,
}

impl Bench {
    /// Fills a fresh database of `system` with `size` events, then times and checks
    /// its `GET /stats`.
    pub async fn stats_at_scale(&mut self, system: System, size: usize) -> StatsRun {
        let label = format!("stats-{size}-{}", system.name());
        let database = self.fresh_database(&label);
        let mut generator = EventGenerator::new();
        let fill_started = Instant::now();
        let (tally, deployment) = match system {
            System::Seed => {
                // The seed's stats aggregate raw events: they can go straight into `events`.
                let tally = fill(&database.collection(EVENTS), size, &mut generator).await;
                self.progress(format!(
                    "seed: {} events inserted in {:.1} s",
                    grouped(size as f64),
                    fill_started.elapsed().as_secs_f64()
                ));
                (tally, self.deploy(system, Part::Api, &database, &label).await)
            }
            System::Ours => {
                // Ours may keep aggregates up to date as its worker moves batches:
                // fill through the queue and let our worker move everything.
                let tally = fill(&database.collection(QUEUE), size, &mut generator).await;
                self.progress(format!(
                    "ours: {} events queued in {:.1} s",
                    grouped(size as f64),
                    fill_started.elapsed().as_secs_f64()
                ));
                let started = Instant::now();
                let mut deployment = self.deploy(system, Part::All, &database, &label).await;
                match self.wait_until_drained(&database, size as u64, started, &mut deployment).await {
                    Some(t) => self.progress(format!(
                        "ours: the worker moved them in {:.1} s ({} events/s)",
                        t.as_secs_f64(),
                        grouped(size as f64 / t.as_secs_f64())
                    )),
                    None => self.progress("ours: the worker did not move every event; measuring anyway"),
                }
                (tally, deployment)
            }
        };
        let expected = tally.expected_stats();
        let base = deployment.base_url().to_string();
        let mut latencies_ms = Vec::new();
        let mut problem = None;
        for call in 0..STATS_WARMUPS + STATS_SAMPLES {
            let sent = Instant::now();
            let answer = self.fetch_stats(&base, SITE).await;
            let elapsed_ms = sent.elapsed().as_secs_f64() * 1e3;
            match answer {
                Ok(stats) => {
                    if call >= STATS_WARMUPS {
                        latencies_ms.push(elapsed_ms);
                    }
                    if problem.is_none() {
                        problem = stats_difference(&stats, &expected, system == System::Ours);
                    }
                }
                Err(error) => {
                    problem = Some(error);
                    break;
                }
            }
        }
        drop(deployment);
        database.drop().await.expect("drop the database");
        let checked = if system == System::Ours { "exact" } else { "total and unique users match" };
        self.progress(format!(
            "{} GET /stats over {}: p50 {} ms, p90 {} ms; {}",
            system.name(),
            grouped(size as f64),
            shown(median(&latencies_ms), milliseconds),
            shown(percentile(&latencies_ms, 0.9), milliseconds),
            problem.as_deref().map_or(checked.to_string(), |p| format!("NOT {checked}: {p}")),
        ));
        StatsRun { latencies_ms, problem }
    }
}
