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
//!
//! It prints progress as it goes, then a table of medians, ratios (ours / seed) and
//! the issue's targets, also written to `$CARGO_TARGET_DIR/bench-results.md`. Service
//! logs are kept in `$CARGO_TARGET_DIR/bench-logs/`; their warnings are summed up at
//! the end. Every process it starts is stopped when it ends, panics, or is killed.
//!
//! Run: `scripts/bench.sh` (installs wrk and Node.js, prepares the seed, sets the paths
//! below), or `cargo bench --bench pipeline` with `SECANTUSD` (the `secantusd-rs`
//! binary), `SEED_APP_DIR` (the seed with its `node_modules`) and optionally
//! `WRK_SCRIPT` (default `../shared/tools/post_event.lua` from the repo root) set.
//! Knobs: `BENCH_ROUNDS` (3), `BENCH_SECONDS` (10 per wrk run), `BENCH_STATS_SIZES`
//! (`10k,100k,1M`), `BENCH_PHASES` (a comma list of `ingest`, `batch`, `drain`,
//! `stats`, `visibility`; all by default), and `BENCH_QUICK=1` for a smoke run (1 round, 3 s of wrk, 10k
//! events for stats, a drain of 20k); explicit knobs win over `BENCH_QUICK`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use mongodb::options::{CollectionOptions, WriteConcern};
use mongodb::{Client, Collection, Database};
use rand::Rng;
use reqwest::StatusCode;
use serde_json::json;

mod dataset;
mod numbers;
mod processes;
mod settings;
mod systems;
mod wrk;

use dataset::{EventGenerator, INSERT_BATCH_DOCS, SITE, SiteStats, Timestamps, fill, stats_difference};
use numbers::{grouped, median, milliseconds, percentile, ratio, shown, yes_no};
use processes::{DatabaseServer, Deployment, load_average, memory_mb};
use settings::{BATCH_SIZE, EVENTS, OUR_BINARY, POLL_MS, QUEUE, Settings};
use systems::{BySystem, Part, System};
use wrk::{WRK_CONNECTIONS, WRK_THREADS};

/// Events per request in the generated wrk script for `POST /events`.
const EVENTS_PER_BATCH_REQUEST: u64 = 100;
const STATS_WARMUPS: usize = 2;
const STATS_SAMPLES: usize = 20;
const VISIBILITY_SAMPLES: usize = 20;
const VISIBILITY_POLL: Duration = Duration::from_millis(5);
const VISIBILITY_LIMIT: Duration = Duration::from_secs(10);
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
/// Pause after an API answers before its idle memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(1);

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

/// The number of documents once it has stopped changing (requests still in
/// flight when wrk stopped may land a little later), within 10 s.
async fn settled_count(collection: &Collection<Document>) -> u64 {
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

/// A wrk script posting arrays of [`EVENTS_PER_BATCH_REQUEST`] events to `/events`,
/// with paths and users varying as in `post_event.lua`.
fn batch_wrk_script() -> String {
    format!(
        r#"-- Generated by benches/pipeline/main.rs: POST /events with arrays of {n} events.
local counter = 0
request = function()
  local events = {{}}
  for i = 1, {n} do
    counter = counter + 1
    events[i] = string.format('{{"site_id":"{SITE}","event_type":"page_view","path":"/p%d","user_id":"user%d"}}', counter % 50, counter % 997)
  end
  return wrk.format("POST", "/events", {{["Content-Type"] = "application/json"}}, "[" .. table.concat(events, ",") .. "]")
end
"#,
        n = EVENTS_PER_BATCH_REQUEST
    )
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// Reads one memory figure of an ingest run, in MB.
type RssOf = fn(&IngestRun) -> f64;

struct IngestRun {
    requests_per_sec: f64,
    non_2xx: u64,
    queue_check_passed: bool,
    idle_rss_mb: f64,
    peak_rss_mb: f64,
}

struct BatchRun {
    events_per_sec: f64,
    non_2xx: u64,
    queue_check_passed: bool,
}

struct DrainRun {
    /// From the worker's start until the queue was empty with every event moved;
    /// `None` if that did not happen.
    elapsed: Option<Duration>,
    events_after: u64,
}

#[derive(Default)]
struct StatsRun {
    latencies_ms: Vec<f64>,
    /// The first difference from the expected figures, or the error, if any.
    problem: Option<String>,
}

#[derive(Default)]
struct VisibilityRun {
    latencies_ms: Vec<f64>,
    missed: usize,
}

#[derive(Default)]
struct Results {
    ingest: BySystem<Vec<IngestRun>>,
    raw_insert_journaled: Vec<f64>,
    raw_insert_default: Vec<f64>,
    /// Why our `POST /events` could not be measured, if it could not.
    batch_unavailable: Option<String>,
    batch: Vec<BatchRun>,
    /// Drains of a live backlog, then of a 30-day history.
    drain_live: BySystem<Vec<DrainRun>>,
    drain_history: BySystem<Vec<DrainRun>>,
    stats: Vec<(usize, BySystem<StatsRun>)>,
    visibility: BySystem<VisibilityRun>,
}

// ---------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------

struct Bench {
    settings: Settings,
    started: Instant,
    server: DatabaseServer,
    mongo: Client,
    http: reqwest::Client,
    target_dir: PathBuf,
    logs_dir: PathBuf,
    databases_made: u32,
    /// The machine's load average when the run started (other work skews figures).
    load_at_start: String,
}

impl Bench {
    async fn start(settings: Settings) -> Bench {
        let target_dir = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| {
            Path::new(OUR_BINARY).ancestors().nth(2).expect("the binary is in <target>/<profile>/").to_path_buf()
        });
        let logs_dir = target_dir.join("bench-logs");
        let _ = fs::remove_dir_all(&logs_dir);
        fs::create_dir_all(&logs_dir).expect("create the logs dir");
        let started = Instant::now();
        let server = DatabaseServer::start(&settings.secantusd, &logs_dir);
        let mongo = Client::with_uri_str(server.url("admin")).await.expect("connect to secantusd-rs");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("HTTP client");
        let load_at_start = load_average();
        let bench =
            Bench { settings, started, server, mongo, http, target_dir, logs_dir, databases_made: 0, load_at_start };
        bench.progress(format!(
            "secantusd-rs on port {}; ours: {OUR_BINARY}; seed: {}; {} round(s), wrk {} s, drain {}, stats at {:?}",
            bench.server.port,
            bench.settings.seed_app_dir.display(),
            bench.settings.rounds,
            bench.settings.wrk_seconds,
            grouped(bench.settings.drain_events as f64),
            bench.settings.stats_sizes,
        ));
        bench
    }

    fn progress(&self, message: impl std::fmt::Display) {
        println!("[{:7.1}s] {message}", self.started.elapsed().as_secs_f64());
    }

    /// A database of its own for one measurement.
    fn fresh_database(&mut self, label: &str) -> Database {
        self.databases_made += 1;
        self.mongo.database(&format!("bench_{:03}_{}", self.databases_made, label.replace('-', "_")))
    }

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
        if self.settings.runs("visibility") {
            self.progress("== visibility of one event in /stats, service idle");
            for system in [System::Seed, System::Ours] {
                *results.visibility.get_mut(system) = self.visibility(system).await;
            }
        }
        results
    }

    // -- processes ----------------------------------------------------------

    /// Starts `part` of `system` on `database`, and waits until its API answers.
    async fn deploy(&self, system: System, part: Part, database: &Database, label: &str) -> Deployment {
        let url = self.server.url(database.name());
        Deployment::start(system, part, &url, label, &self.logs_dir, &self.settings.seed_app_dir, &self.http).await
    }

    async fn fetch_stats(&self, base: &str, site_id: &str) -> Result<SiteStats, String> {
        let response = self
            .http
            .get(format!("{base}/stats"))
            .query(&[("site_id", site_id)])
            .send()
            .await
            .map_err(|e| format!("GET /stats failed: {e}"))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| format!("GET /stats body: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!("GET /stats answered {status}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET /stats answered {body}: {e}"))
    }

    /// Polls the queue's length (collection metadata, confirmed by exact counts)
    /// every [`DRAIN_POLL`] once it is short, and rarely before (see
    /// [`DRAIN_POLL_LONG`]: half the time the queue is predicted to take to get
    /// short, at most a second), until the queue is empty and `events` holds at least `expected` documents;
    /// gives up when the queue has stayed empty for 2 s with events missing, or
    /// after `limit`. Returns the time since `started`, if it drained.
    async fn wait_until_drained(
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

    // -- (a) POST /event ------------------------------------------------------

    async fn post_event_load(&mut self, system: System, round: usize) -> IngestRun {
        let label = format!("r{round}-post-{}", system.name());
        let database = self.fresh_database(&label);
        let mut deployment = self.deploy(system, Part::Api, &database, &label).await;
        tokio::time::sleep(IDLE_SETTLE).await;
        let idle_rss_mb = memory_mb(deployment.api_pid(), "VmRSS");
        let url = format!("{}/event", deployment.base_url());
        let wrk = wrk::run(&url, &self.settings.wrk_script, self.settings.wrk_seconds).await;
        let queued = settled_count(&database.collection(QUEUE)).await;
        deployment.assert_running();
        let peak_rss_mb = memory_mb(deployment.api_pid(), "VmHWM");
        drop(deployment);
        database.drop().await.expect("drop the database");

        let acknowledged = wrk.requests - wrk.non_2xx;
        let at_most = wrk.requests + WRK_CONNECTIONS + wrk.timeouts;
        let queue_check_passed = (acknowledged..=at_most).contains(&queued);
        self.progress(format!(
            "{} POST /event: {} req/s ({} requests in {:.1} s, {} non-2xx{}); memory {:.1} MB idle, {:.1} MB peak",
            system.name(),
            grouped(wrk.requests_per_sec),
            grouped(wrk.requests as f64),
            wrk.seconds,
            wrk.non_2xx,
            wrk.socket_errors.map(|errors| format!(", socket errors: {errors}")).unwrap_or_default(),
            idle_rss_mb,
            peak_rss_mb,
        ));
        self.progress(format!(
            "  queue check: {} queued for {} answered 2xx, at most {} (completed + {WRK_CONNECTIONS} in flight + {} \
             timed out): {}",
            grouped(queued as f64),
            grouped(acknowledged as f64),
            grouped(at_most as f64),
            wrk.timeouts,
            if queue_check_passed { "ok" } else { "FAILED" },
        ));
        IngestRun {
            requests_per_sec: wrk.requests_per_sec,
            non_2xx: wrk.non_2xx,
            queue_check_passed,
            idle_rss_mb,
            peak_rss_mb,
        }
    }

    // -- (b) batch ingest -----------------------------------------------------

    /// The database's own rate for `insert_many` of [`INSERT_BATCH_DOCS`] queue-shaped
    /// documents, one batch after another, in documents per second.
    async fn raw_insert_rate(&mut self, journaled: bool, round: usize) -> f64 {
        let concern = if journaled { "j:true" } else { "default" };
        let database = self.fresh_database(&format!("r{round}-raw-insert-{}", if journaled { "j" } else { "default" }));
        let options = CollectionOptions::builder()
            .write_concern(journaled.then(|| WriteConcern::builder().journal(true).build()))
            .build();
        let collection = database.collection_with_options::<Document>(QUEUE, options);
        let mut generator = EventGenerator::new();
        let batch: Vec<Document> = (0..INSERT_BATCH_DOCS).map(|_| generator.next_event()).collect();
        let limit = Duration::from_secs(self.settings.raw_insert_seconds);
        let started = Instant::now();
        let mut inserted = 0;
        while started.elapsed() < limit {
            collection.insert_many(&batch).await.expect("raw insert_many");
            inserted += batch.len();
        }
        let rate = inserted as f64 / started.elapsed().as_secs_f64();
        database.drop().await.expect("drop the database");
        self.progress(format!("database raw insert_many ({concern}): {} docs/s", grouped(rate)));
        rate
    }

    /// Our `POST /events` under wrk, or why it cannot be measured.
    async fn batch_ingest(&mut self, round: usize) -> Result<BatchRun, String> {
        let label = format!("r{round}-batch-ours");
        let database = self.fresh_database(&label);
        let deployment = self.deploy(System::Ours, Part::Api, &database, &label).await;
        let base = deployment.base_url().to_string();
        let probe = json!([{ "site_id": SITE, "event_type": "page_view", "path": "/probe", "user_id": "probe" }]);
        let response = self.http.post(format!("{base}/events")).json(&probe).send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let unavailable = match status {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Some(format!("not available ({status})")),
            status if !status.is_success() => Some(format!("not usable: a one-event array got {status}: {body}")),
            _ => None,
        };
        if let Some(reason) = unavailable {
            drop(deployment);
            database.drop().await.expect("drop the database");
            self.progress(format!("ours POST /events: {reason}"));
            return Err(reason);
        }
        let queue = database.collection::<Document>(QUEUE);
        let before = queue.count_documents(doc! {}).await.expect("count");
        let script = self.logs_dir.join("post_events_batch.lua");
        fs::write(&script, batch_wrk_script()).expect("write the batch wrk script");
        let wrk = wrk::run(&format!("{base}/events"), &script, self.settings.wrk_seconds).await;
        let queued = settled_count(&queue).await - before;
        drop(deployment);
        database.drop().await.expect("drop the database");

        let acknowledged = (wrk.requests - wrk.non_2xx) * EVENTS_PER_BATCH_REQUEST;
        let at_most = (wrk.requests + WRK_CONNECTIONS + wrk.timeouts) * EVENTS_PER_BATCH_REQUEST;
        let queue_check_passed = (acknowledged..=at_most).contains(&queued);
        let events_per_sec = acknowledged as f64 / wrk.seconds;
        self.progress(format!(
            "ours POST /events: {} events/s ({} requests of {EVENTS_PER_BATCH_REQUEST}, {} non-2xx); queue check: {} \
             queued for {} acknowledged: {}",
            grouped(events_per_sec),
            grouped(wrk.requests as f64),
            wrk.non_2xx,
            grouped(queued as f64),
            grouped(acknowledged as f64),
            if queue_check_passed { "ok" } else { "FAILED" },
        ));
        Ok(BatchRun { events_per_sec, non_2xx: wrk.non_2xx, queue_check_passed })
    }

    // -- (c) drain ------------------------------------------------------------

    async fn drain(&mut self, system: System, round: usize, timestamps: Timestamps) -> DrainRun {
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

    // -- (d) stats at scale ---------------------------------------------------

    async fn stats_at_scale(&mut self, system: System, size: usize) -> StatsRun {
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

    // -- (e) visibility -------------------------------------------------------

    async fn visibility(&mut self, system: System) -> VisibilityRun {
        let label = format!("visibility-{}", system.name());
        let database = self.fresh_database(&label);
        let deployment = self.deploy(system, Part::All, &database, &label).await;
        let base = deployment.base_url().to_string();
        // One event through the whole path first, so that start-up is not measured.
        if let Err(error) = self.time_to_visible(&base, "visibility-warmup").await {
            self.progress(format!("{} warm-up event: {error}", system.name()));
        }
        let mut run = VisibilityRun::default();
        let mut rng = rand::rng();
        for sample in 0..VISIBILITY_SAMPLES {
            // A random pause, so that events land at every point of the worker's poll cycle.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..POLL_MS))).await;
            let site_id = format!("visibility-{}-{sample}-{:08x}", system.name(), rng.random::<u32>());
            match self.time_to_visible(&base, &site_id).await {
                Ok(ms) => run.latencies_ms.push(ms),
                Err(error) => {
                    run.missed += 1;
                    self.progress(format!("{} visibility sample {sample}: {error}", system.name()));
                }
            }
        }
        let idle_rss: Vec<String> = deployment
            .processes
            .iter()
            .map(|process| format!("{} {:.1} MB", process.name, memory_mb(process.pid(), "VmRSS")))
            .collect();
        drop(deployment);
        database.drop().await.expect("drop the database");
        self.progress(format!(
            "{} visibility: p50 {} ms, p90 {} ms, {} missed (target ≤ {} ms); memory after, idle: {}",
            system.name(),
            shown(median(&run.latencies_ms), milliseconds),
            shown(percentile(&run.latencies_ms, 0.9), milliseconds),
            run.missed,
            POLL_MS + 100,
            idle_rss.join(", "),
        ));
        run
    }

    /// Posts one event of `site_id` and returns the milliseconds from its
    /// acknowledgement until `GET /stats` counts it.
    async fn time_to_visible(&self, base: &str, site_id: &str) -> Result<f64, String> {
        let event = json!({ "site_id": site_id, "event_type": "page_view", "path": "/visible", "user_id": "u1" });
        let response = self.http.post(format!("{base}/event")).json(&event).send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.text().await.map_err(|e| e.to_string())?;
        if status != StatusCode::OK {
            return Err(format!("POST /event answered {status}: {body}"));
        }
        let acknowledged = Instant::now();
        loop {
            if self.fetch_stats(base, site_id).await?.total_events >= 1 {
                return Ok(acknowledged.elapsed().as_secs_f64() * 1e3);
            }
            if acknowledged.elapsed() > VISIBILITY_LIMIT {
                return Err(format!("not visible after {VISIBILITY_LIMIT:?}"));
            }
            tokio::time::sleep(VISIBILITY_POLL).await;
        }
    }

    // -- report -------------------------------------------------------------

    async fn finish(&self, results: &Results) {
        let report = self.report(results);
        println!("\n{report}");
        let path = self.target_dir.join("bench-results.md");
        fs::write(&path, &report).expect("write bench-results.md");
        self.summarize_logs();
        self.progress(format!("results written to {}; logs in {}", path.display(), self.logs_dir.display()));
    }

    fn report(&self, results: &Results) -> String {
        let settings = &self.settings;
        let visibility_target = (POLL_MS + 100) as f64;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## Benchmark: ours vs seed (issue #4)\n\n{} round(s), medians over rounds; wrk -t{WRK_THREADS} \
             -c{WRK_CONNECTIONS} -d{}s; BATCH_SIZE={BATCH_SIZE}, POLL_MS={POLL_MS}; one secantusd-rs; {} cores; \
             load average (1, 5, 15 min) {} at the start, {} at the end.\n",
            settings.rounds,
            settings.wrk_seconds,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            self.load_at_start,
            load_average(),
        );
        let _ = writeln!(out, "| Figure | seed (median) | ours (median) | ratio | target | met? |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        let mut row = |figure: &str, seed: String, ours: String, ratio: Option<f64>, target: &str, met: &str| {
            let ratio = shown(ratio, |r| format!("{r:.2}×"));
            let _ = writeln!(out, "| {figure} | {seed} | {ours} | {ratio} | {target} | {met} |");
        };

        let ingest = |system: System, figure: fn(&IngestRun) -> f64| {
            median(&results.ingest.get(system).iter().map(figure).collect::<Vec<_>>())
        };
        let (seed_post, ours_post) =
            (ingest(System::Seed, |r| r.requests_per_sec), ingest(System::Ours, |r| r.requests_per_sec));
        let post_ratio = ratio(ours_post, seed_post);
        let non_2xx = |system: System| results.ingest.get(system).iter().map(|r| r.non_2xx).sum::<u64>();
        let checks = |system: System| {
            let runs = results.ingest.get(system);
            (runs.iter().filter(|r| r.queue_check_passed).count(), runs.len())
        };
        let (ours_passed, ours_runs) = checks(System::Ours);
        let (seed_passed, seed_runs) = checks(System::Seed);
        let ingest_ran = settings.runs("ingest");
        if ingest_ran {
            row(
                "POST /event, requests/s",
                shown(seed_post, grouped),
                shown(ours_post, grouped),
                post_ratio,
                "≥ 10× seed",
                yes_no(post_ratio.is_some_and(|r| r >= 10.0)),
            );
            row(
                "POST /event: non-2xx answers (all rounds); queue holds what was acknowledged",
                format!("{}; {seed_passed}/{seed_runs} rounds", non_2xx(System::Seed)),
                format!("{}; {ours_passed}/{ours_runs} rounds", non_2xx(System::Ours)),
                None,
                "every answer a 200 after the insert",
                yes_no(non_2xx(System::Ours) == 0 && ours_passed == ours_runs),
            );
        }

        let raw_journaled = median(&results.raw_insert_journaled);
        let batch_rate = median(&results.batch.iter().map(|r| r.events_per_sec).collect::<Vec<_>>());
        let batch_ratio = ratio(batch_rate, raw_journaled);
        let batch_clean = results.batch.iter().all(|r| r.non_2xx == 0 && r.queue_check_passed);
        if settings.runs("batch") {
            row(
                "Batch ingest (POST /events), events/s",
                "n/a".to_string(),
                results.batch_unavailable.clone().unwrap_or_else(|| shown(batch_rate, grouped)),
                batch_ratio,
                &format!("≥ 50% of raw insert_many j:true ({}/s)", shown(raw_journaled, grouped)),
                yes_no(batch_ratio.is_some_and(|r| r >= 0.5) && batch_clean),
            );
        }

        let drain_rate = |runs: &[DrainRun]| {
            let rates: Vec<f64> =
                runs.iter().filter_map(|r| r.elapsed).map(|t| settings.drain_events as f64 / t.as_secs_f64()).collect();
            // A run that did not finish counts as a rate of 0.
            let unfinished = runs.len() - rates.len();
            median(&rates.into_iter().chain(std::iter::repeat_n(0.0, unfinished)).collect::<Vec<_>>())
        };
        // (what, runs, target text, the ratio to reach: none for a reference row)
        let drains = [
            ("a live backlog (last hour)", &results.drain_live, "≥ 5× seed, every event moved once", Some(5.0)),
            ("a 30-day history", &results.drain_history, "(shown for reference)", None),
        ];
        for (what, runs, target, wanted_ratio) in drains {
            if runs.ours.is_empty() && runs.seed.is_empty() {
                continue;
            }
            let exact = runs.ours.iter().all(|r| r.events_after == settings.drain_events as u64);
            let (seed, ours) = (drain_rate(&runs.seed), drain_rate(&runs.ours));
            let drain_ratio = ratio(ours, seed);
            let met = if let Some(wanted) = wanted_ratio {
                yes_no(drain_ratio.is_some_and(|r| r >= wanted) && exact)
            } else if exact {
                "exact"
            } else {
                "**WRONG**"
            };
            row(
                &format!("Drain of {} queued events of {what}, events/s", grouped(settings.drain_events as f64)),
                shown(seed, grouped),
                shown(ours, grouped),
                drain_ratio,
                target,
                met,
            );
        }

        let stats_p50 = |run: &StatsRun| median(&run.latencies_ms);
        if let Some((size, largest)) = results.stats.iter().max_by_key(|(size, _)| *size) {
            let all_exact = results.stats.iter().all(|(_, runs)| runs.ours.problem.is_none());
            let (seed_p50, ours_p50) = (stats_p50(&largest.seed), stats_p50(&largest.ours));
            let at_target_size = *size >= 1_000_000;
            row(
                &format!("GET /stats p50 over {} events, ms", grouped(*size as f64)),
                shown(seed_p50, milliseconds),
                shown(ours_p50, milliseconds),
                ratio(ours_p50, seed_p50),
                "≤ 20 ms over 1,000,000, exact",
                if at_target_size { yes_no(ours_p50.is_some_and(|p| p <= 20.0) && all_exact) } else { "n/a (not 1M)" },
            );
        }

        let visibility_rows: &[(&str, f64)] =
            if settings.runs("visibility") { &[("p50", 0.5), ("p90", 0.9)] } else { &[] };
        for &(label, fraction) in visibility_rows {
            let at = |system: System| percentile(&results.visibility.get(system).latencies_ms, fraction);
            let missed = results.visibility.ours.missed;
            row(
                &format!("Event visible in /stats after its 200, {label} ms"),
                shown(at(System::Seed), milliseconds),
                shown(at(System::Ours), milliseconds),
                ratio(at(System::Ours), at(System::Seed)),
                &format!("≤ POLL_MS + 100 = {visibility_target} ms"),
                yes_no(at(System::Ours).is_some_and(|ms| ms <= visibility_target) && missed == 0),
            );
        }

        if ingest_ran {
            let memory: [(&str, RssOf, f64); 2] = [
                ("Memory of the API process idle (RSS), MB", |r| r.idle_rss_mb, 50.0),
                ("Memory of the API process under the POST load (peak RSS), MB", |r| r.peak_rss_mb, 200.0),
            ];
            for (label, of, limit_mb) in memory {
                let (seed, ours) = (ingest(System::Seed, of), ingest(System::Ours, of));
                row(
                    label,
                    shown(seed, |mb| format!("{mb:.1}")),
                    shown(ours, |mb| format!("{mb:.1}")),
                    ratio(ours, seed),
                    &format!("≤ {limit_mb:.0} MB"),
                    yes_no(ours.is_some_and(|mb| mb <= limit_mb)),
                );
            }
        }

        if settings.runs("batch") {
            let _ = writeln!(
                out,
                "\n### Database raw batched insert rate (insert_many of {INSERT_BATCH_DOCS} documents)\n"
            );
            let _ = writeln!(out, "| write concern | docs/s (median) | our batch ingest / it |");
            let _ = writeln!(out, "|---|---|---|");
            for (concern, rates) in
                [("j:true (ours)", &results.raw_insert_journaled), ("default", &results.raw_insert_default)]
            {
                let raw = median(rates);
                let _ = writeln!(
                    out,
                    "| {concern} | {} | {} |",
                    shown(raw, grouped),
                    shown(ratio(batch_rate, raw), |r| format!("{:.0}%", r * 100.0))
                );
            }
        }

        let _ =
            writeln!(out, "\n### GET /stats as events grow ({STATS_SAMPLES} calls after {STATS_WARMUPS} warm-ups)\n");
        let _ = writeln!(
            out,
            "| events | seed p50 ms | seed p90 ms | ours p50 ms | ours p90 ms | ours / seed p50 | ours exact? | seed total & unique |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for (size, runs) in &results.stats {
            let p90 = |run: &StatsRun| percentile(&run.latencies_ms, 0.9);
            let verdict = |run: &StatsRun, good: &str| match &run.problem {
                None => good.to_string(),
                Some(problem) => format!("no: {problem}"),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                grouped(*size as f64),
                shown(stats_p50(&runs.seed), milliseconds),
                shown(p90(&runs.seed), milliseconds),
                shown(stats_p50(&runs.ours), milliseconds),
                shown(p90(&runs.ours), milliseconds),
                shown(ratio(stats_p50(&runs.ours), stats_p50(&runs.seed)), |r| format!("{r:.3}×")),
                verdict(&runs.ours, "exact"),
                verdict(&runs.seed, "match"),
            );
        }
        out
    }

    /// Prints, per service log, how many lines are warnings or errors, and the first few.
    fn summarize_logs(&self) {
        let mut entries: Vec<PathBuf> =
            fs::read_dir(&self.logs_dir).expect("read the logs dir").filter_map(|e| Some(e.ok()?.path())).collect();
        entries.sort();
        let mut quiet = true;
        for path in entries.iter().filter(|p| p.extension().is_some_and(|ext| ext == "log")) {
            let text = fs::read_to_string(path).unwrap_or_default();
            let flagged: Vec<&str> = text
                .lines()
                .filter(|line| ["WARN", "ERROR", "Error", "panicked"].iter().any(|word| line.contains(word)))
                .collect();
            if flagged.is_empty() {
                continue;
            }
            quiet = false;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            println!("log {name}: {} warning/error line(s), first:", flagged.len());
            for line in flagged.iter().take(3) {
                println!("    {}", line.chars().take(300).collect::<String>());
            }
        }
        if quiet {
            println!("no warnings or errors in the service logs");
        }
    }
}
