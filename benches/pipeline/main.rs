//! Side-by-side benchmark of issue #4: our `analytics-service` against the original
//! Node design (the "seed", `node server.js` and `node worker/processor.js`), on one
//! `secantusd-rs`, in one run, through the public interface only: the HTTP API, the
//! environment variables and the MongoDB collections. Each system gets a fresh
//! database for each measurement.
//!
//! In each of `BENCH_ROUNDS` rounds, seed and ours taking turns to go first:
//! - (a) `POST /event` under wrk (2 threads, 32 connections, `post_event.lua`) with no
//!   worker running: requests/s, non-2xx answers, the queue count checked against
//!   wrk's count, and the API process's memory idle (`VmRSS`) and at peak (`VmHWM`);
//! - (b) batch ingest through our `POST /events` (100 events per request, when the
//!   route exists), against the database's own rate for `insert_many` of 1000-document
//!   batches, journaled (`j: true`, as our service writes) and with the default
//!   write concern;
//! - (c) the drain of 200,000 queued events by one worker, from its start until the
//!   queue is empty and `events` holds them all: first a backlog of live traffic
//!   (timestamps in order over the last hour, as a queue fills while its worker is
//!   down or behind), then a 30-day history (timestamps at random, as an import).
//!
//! Then once: (d) `GET /stats` latency (p50, p90 of 20 calls after 2 warm-ups) over
//! 10k, 100k and 1M events of one site, each answer checked against the figures the
//! harness computed from the events it generated (ours must be exact; the seed's
//! total and unique users must match). Ours is filled through the real path (queue,
//! then our worker), the seed straight into `events`. (e) How long an acknowledged
//! event takes to show in `/stats` with the service idle.
//! (f) `variety` (issue #13, run after the stats, before visibility): `GET /stats`
//! p50 and the API's peak memory over 100,000 events of distinct paths and users
//! and 5,000 types (see `phases::variety`; `BENCH_BASELINE_BINARY` adds an older
//! binary's API beside ours, over the same data).
//! (g) `visits` (issue #14, after variety): at each stats size, realistic visitors
//! (`visitors`: ~1 distinct per 10 events, anonymous ids new every day) and the
//! stats API's new queries (all time, a whole day, breakdowns, a filter) timed
//! beside a plain aggregation over `events` (see `phases::visits`).
//! (h) `ingest_enriched` (issue #14, each round after ingest): `POST /event` as the
//! tracker sends it, so every event is enriched (see `phases::enriched_ingest`).
//! Routes and fields not there yet are reported "not available".
//!
//! It prints progress as it goes, then a table of medians, ratios (ours / seed) and
//! the targets, also written to `$CARGO_TARGET_DIR/bench-results.md`. Service
//! logs are kept in `$CARGO_TARGET_DIR/bench-logs/`; their warnings are summed up at
//! the end. Every process it starts is stopped when it ends, panics, or is killed.
//!
//! Run: `scripts/bench.sh` (installs wrk and Node.js, prepares the seed, sets the paths
//! below), or `cargo bench --bench pipeline` with `SECANTUSD` (the `secantusd-rs`
//! binary), `SEED_APP_DIR` (the seed with its `node_modules`) and optionally
//! `WRK_SCRIPT` (default `../shared/tools/post_event.lua` from the repo root) set.
//! Knobs: `BENCH_ROUNDS` (3), `BENCH_SECONDS` (10 per wrk run), `BENCH_STATS_SIZES`
//! (`10k,100k,1M`), `BENCH_PHASES` (a comma list of `ingest`, `batch`, `drain`,
//! `stats`, `visibility`, `variety`, `visits`, `ingest_enriched`; all by default), and `BENCH_QUICK=1` for a smoke run (1 round, 3 s of wrk, 10k
//! events for stats, a drain of 20k); explicit knobs win over `BENCH_QUICK`.
//!
//! This file holds `main` and the order of the phases. The modules, lowest first
//! (each imports only those above it in this list):
//! - `settings`, `systems`, `numbers`, `dataset`: the knobs, the two systems,
//!   percentiles and formatting, the generated events and the stats they must give;
//!   `visitors`: the realistic visitor traffic of issue #14 and its tally;
//! - `processes`: child processes, the database server, one system's deployment;
//! - `wrk`: running wrk and parsing what it reports;
//! - `harness`: [`Bench`], what every phase works through;
//! - `queue_watch`: the queue's count settling, a worker's drain timed;
//! - `phases`: one module per phase, each adding its method to [`Bench`];
//! - `report`: the results, the table made of them, the logs' summary.

mod dataset;
mod harness;
mod numbers;
mod phases;
mod processes;
mod queue_watch;
mod report;
mod settings;
mod systems;
mod visitors;
mod wrk;

use dataset::Timestamps;
use harness::Bench;
use numbers::grouped;
use report::Results;
use settings::Settings;
use systems::{BySystem, System};

fn main() {
    let settings = Settings::from_env();
    // One thread: every child process is started from it, which PR_SET_PDEATHSIG needs.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let mut bench = Bench::start(settings).await;
        let results = bench.run().await;
        bench.finish(&results).await;
    });
}

impl Bench {
    /// Runs the phases `BENCH_PHASES` names, in their order: per round, ingest, batch
    /// and drain, the systems taking turns to go first; then stats at each size;
    /// then visibility.
    async fn run(&mut self) -> Results {
        let mut results = Results::default();
        for round in 1..=self.settings.rounds {
            self.progress(format!("== round {round}/{}", self.settings.rounds));
            if self.settings.runs("ingest") {
                for system in System::in_turn(round) {
                    let run = self.post_event_load(system, round).await;
                    results.ingest.get_mut(system).push(run);
                }
            }
            if self.settings.runs("ingest_enriched") {
                let run = self.enriched_post_event_load(round).await;
                results.ingest_enriched.push(run);
            }
            if self.settings.runs("batch") {
                results.raw_insert_journaled.push(self.raw_insert_rate(true, round).await);
                results.raw_insert_default.push(self.raw_insert_rate(false, round).await);
                if results.batch_unavailable.is_none() {
                    match self.batch_ingest(round).await {
                        Ok(run) => results.batch.push(run),
                        Err(reason) => results.batch_unavailable = Some(reason),
                    }
                }
            }
            if self.settings.runs("drain") {
                for system in System::in_turn(round) {
                    let live = Timestamps::Live { count: self.settings.drain_events };
                    let run = self.drain(system, round, live).await;
                    results.drain_live.get_mut(system).push(run);
                }
                for system in System::in_turn(round) {
                    let run = self.drain(system, round, Timestamps::History).await;
                    results.drain_history.get_mut(system).push(run);
                }
            }
        }
        let stats_sizes = if self.settings.runs("stats") { self.settings.stats_sizes.clone() } else { Vec::new() };
        for &size in &stats_sizes {
            self.progress(format!("== GET /stats over {} events", grouped(size as f64)));
            let mut at_size = BySystem::default();
            for system in [System::Seed, System::Ours] {
                *at_size.get_mut(system) = self.stats_at_scale(system, size).await;
            }
            results.stats.push((size, at_size));
        }
        if self.settings.runs("variety") {
            self.progress("== hostile variety: GET /stats over 100,000 paths and users, 5,000 types");
            results.variety = Some(self.hostile_variety().await);
        }
        if self.settings.runs("visits") {
            for &size in &self.settings.stats_sizes.clone() {
                self.progress(format!(
                    "== visitors: the stats API over {} events of realistic visitors",
                    grouped(size as f64)
                ));
                let run = self.visits_at_scale(size).await;
                results.visits.push(run);
            }
        }
        if self.settings.runs("visibility") {
            self.progress("== visibility of one event in /stats, service idle");
            for system in [System::Seed, System::Ours] {
                *results.visibility.get_mut(system) = self.visibility(system).await;
            }
        }
        results
    }
}
