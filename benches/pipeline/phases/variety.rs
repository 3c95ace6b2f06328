//! Phase (f), `variety` (issue #13, item 9): hostile variety on one site.
//! 100,000 events, each with its own path and user, over 5,000 event types, are
//! queued and moved by our worker; then our API alone (a fresh process) answers
//! `GET /stats` 2 + 20 times, each answer checked (total, unique users, top
//! paths), and its peak resident memory (`VmHWM`) is read. Targets: p50 ≤ 50 ms,
//! peak RSS ≤ 300 MB.
//!
//! With `BENCH_BASELINE_BINARY` set (an `analytics-service` built from older
//! code, e.g. before this item), the same is measured with that binary's API
//! over the same database, first, so both medians come from one run. The rollup
//! layout did not change, so the older API reads what our worker wrote.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use mongodb::Database;
use mongodb::bson::{DateTime, Document, doc};

use crate::dataset::{INSERT_BATCH_DOCS, PathCount, SITE, SiteStats, stats_difference};
use crate::harness::Bench;
use crate::numbers::{grouped, median, milliseconds, percentile, shown};
use crate::phases::stats::{STATS_SAMPLES, STATS_WARMUPS};
use crate::processes::{ChildProcess, free_port, memory_mb};
use crate::settings::{OUR_BINARY, QUEUE};
use crate::systems::{Part, System};

/// Events of the site, each with its own path and user.
pub const VARIETY_EVENTS: usize = 100_000;
/// Distinct event types among them.
pub const VARIETY_TYPES: usize = 5_000;
/// Target: `GET /stats` p50, ms.
pub const TARGET_P50_MS: f64 = 50.0;
/// Target: the API's peak resident memory, MB.
pub const TARGET_PEAK_RSS_MB: f64 = 300.0;

/// One API binary's figures over the variety data set.
pub struct VarietyFigures {
    /// Which binary: `ours` or `baseline`.
    pub name: &'static str,
    pub latencies_ms: Vec<f64>,
    /// `VmHWM` of the API process after the calls, MB.
    pub peak_rss_mb: f64,
    /// Bytes of one answer.
    pub answer_bytes: usize,
    /// The first difference from the expected figures, or the error, if any.
    pub problem: Option<String>,
}

/// The phase's result: the baseline's figures (when asked for), then ours.
#[derive(Default)]
pub struct VarietyRun {
    pub figures: Vec<VarietyFigures>,
}

impl VarietyRun {
    /// The report's section: p50, p90, peak RSS beside the targets.
    pub fn report(&self) -> String {
        let mut out = format!(
            "\n### Hostile variety: GET /stats over {} events, each its own path and user, {} types, one site \
             ({STATS_SAMPLES} calls after {STATS_WARMUPS} warm-ups, a fresh API process each)\n\n\
             | API | p50 ms | p90 ms | peak RSS MB | answer bytes | exact? |\n|---|---|---|---|---|---|\n",
            grouped(VARIETY_EVENTS as f64),
            grouped(VARIETY_TYPES as f64),
        );
        for f in &self.figures {
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} | {} | {} |\n",
                f.name,
                shown(median(&f.latencies_ms), milliseconds),
                shown(percentile(&f.latencies_ms, 0.9), milliseconds),
                f.peak_rss_mb,
                grouped(f.answer_bytes as f64),
                f.problem.as_deref().unwrap_or("yes"),
            ));
        }
        out.push_str(&format!("| target | ≤ {TARGET_P50_MS:.0} | | ≤ {TARGET_PEAK_RSS_MB:.0} | | exact |\n"));
        out
    }
}

/// The variety events: event `i` on path `/v{i}`, by user `vu{i}`, of type
/// `t{i % 5000}`, at a time spread over 30 days.
fn variety_event(i: usize, now_ms: i64) -> Document {
    let spread_ms = 30 * 24 * 3_600_000_i64;
    doc! {
        "site_id": SITE,
        "event_type": format!("t{}", i % VARIETY_TYPES),
        "path": format!("/v{i}"),
        "user_id": format!("vu{i}"),
        "timestamp": DateTime::from_millis(now_ms - (i as i64 * 7_919) % spread_ms),
        "ingested_at": DateTime::from_millis(now_ms),
    }
}

/// What `/stats` must answer: every path once, so the top 10 are the 10 first
/// paths in byte order.
fn expected_stats() -> SiteStats {
    let mut paths: Vec<String> = (0..VARIETY_EVENTS).map(|i| format!("/v{i}")).collect();
    paths.sort();
    let top_paths = paths.into_iter().take(10).map(|path| PathCount { path, count: 1 }).collect();
    SiteStats { total_events: VARIETY_EVENTS as u64, unique_users: VARIETY_EVENTS as u64, top_paths }
}

impl Bench {
    /// Runs the phase (see the module's documentation).
    pub async fn hostile_variety(&mut self) -> VarietyRun {
        let label = "variety";
        let database = self.fresh_database(label);
        let queue = database.collection::<Document>(QUEUE);
        let now_ms = DateTime::now().timestamp_millis();
        let filled = Instant::now();
        for start in (0..VARIETY_EVENTS).step_by(INSERT_BATCH_DOCS) {
            let batch: Vec<Document> =
                (start..(start + INSERT_BATCH_DOCS).min(VARIETY_EVENTS)).map(|i| variety_event(i, now_ms)).collect();
            queue.insert_many(batch).await.expect("insert_many while filling");
        }
        self.progress(format!(
            "variety: {} events queued in {:.1} s",
            grouped(VARIETY_EVENTS as f64),
            filled.elapsed().as_secs_f64()
        ));
        let started = Instant::now();
        let mut worker = self.deploy(System::Ours, Part::Worker, &database, &format!("{label}-worker")).await;
        match self.wait_until_drained(&database, VARIETY_EVENTS as u64, started, &mut worker).await {
            Some(t) => self.progress(format!("variety: our worker moved them in {:.1} s", t.as_secs_f64())),
            None => self.progress("variety: the worker did not move every event; measuring anyway"),
        }
        drop(worker);

        let mut run = VarietyRun::default();
        if let Ok(baseline) = std::env::var("BENCH_BASELINE_BINARY") {
            run.figures.push(self.variety_stats("baseline", PathBuf::from(baseline), &database).await);
        }
        run.figures.push(self.variety_stats("ours", PathBuf::from(OUR_BINARY), &database).await);
        database.drop().await.expect("drop the database");
        run
    }

    /// Starts `binary`'s API alone on `database`, times and checks its `/stats`,
    /// reads its peak memory, and stops it.
    async fn variety_stats(&self, name: &'static str, binary: PathBuf, database: &Database) -> VarietyFigures {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut command = Command::new(&binary);
        command.arg("api").current_dir(&self.logs_dir);
        for variable in ["API_TOKEN", "ALLOWED_SITES"] {
            command.env_remove(variable);
        }
        command
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("MONGO_URL", self.database_url(database))
            .env("QUEUE_NAME", QUEUE)
            .env("RUST_LOG", "warn");
        let log = self.logs_dir.join(format!("variety-{name}-api.log"));
        let mut api = ChildProcess::spawn(&format!("{name} api"), command, &log);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            api.assert_running();
            let probe = self.http.get(format!("{base}/health")).send().await;
            if probe.is_ok_and(|response| response.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "{name} api did not answer at {base}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let expected = expected_stats();
        let mut latencies_ms = Vec::new();
        let mut problem = None;
        let mut answer_bytes = 0;
        for call in 0..STATS_WARMUPS + STATS_SAMPLES {
            let sent = Instant::now();
            let answer = self.http.get(format!("{base}/stats")).query(&[("site_id", SITE)]).send().await;
            let body = match answer {
                Ok(response) if response.status().is_success() => response.text().await.unwrap_or_default(),
                Ok(response) => {
                    problem = Some(format!("answered {}", response.status()));
                    break;
                }
                Err(error) => {
                    problem = Some(format!("GET /stats failed: {error}"));
                    break;
                }
            };
            let elapsed_ms = sent.elapsed().as_secs_f64() * 1e3;
            if call >= STATS_WARMUPS {
                latencies_ms.push(elapsed_ms);
            }
            answer_bytes = body.len();
            if problem.is_none() {
                problem = match serde_json::from_str::<SiteStats>(&body) {
                    Ok(stats) => stats_difference(&stats, &expected, true),
                    Err(error) => Some(format!("unreadable answer: {error}")),
                };
            }
        }
        let peak_rss_mb = memory_mb(api.pid(), "VmHWM");
        drop(api);
        let figures = VarietyFigures { name, latencies_ms, peak_rss_mb, answer_bytes, problem };
        self.progress(format!(
            "variety: {name} GET /stats p50 {} ms (target ≤ {TARGET_P50_MS:.0}), p90 {} ms, API peak RSS {:.0} MB \
             (target ≤ {TARGET_PEAK_RSS_MB:.0}), answer {} bytes; {}",
            shown(median(&figures.latencies_ms), milliseconds),
            shown(percentile(&figures.latencies_ms, 0.9), milliseconds),
            figures.peak_rss_mb,
            grouped(figures.answer_bytes as f64),
            figures.problem.as_deref().map_or("exact".to_string(), |p| format!("NOT exact: {p}")),
        ));
        figures
    }
}
