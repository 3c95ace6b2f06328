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
//! `stats`, `visibility`; all by default), and `BENCH_QUICK=1` for a smoke run (1 round, 3 s of wrk, 10k
//! events for stats, a drain of 20k); explicit knobs win over `BENCH_QUICK`.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

mod dataset;
mod harness;
mod numbers;
mod phases;
mod processes;
mod queue_watch;
mod settings;
mod systems;
mod wrk;

use dataset::{INSERT_BATCH_DOCS, Timestamps};
use harness::Bench;
use numbers::{grouped, median, milliseconds, percentile, ratio, shown, yes_no};
use phases::batch_ingest::BatchRun;
use phases::drain::DrainRun;
use phases::post_event::IngestRun;
use phases::stats::{STATS_SAMPLES, STATS_WARMUPS, StatsRun};
use phases::visibility::VisibilityRun;
use processes::load_average;
use settings::{BATCH_SIZE, POLL_MS, Settings};
use systems::{BySystem, System};
use wrk::{WRK_CONNECTIONS, WRK_THREADS};

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

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// Reads one memory figure of an ingest run, in MB.
type RssOf = fn(&IngestRun) -> f64;

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

impl Bench {
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
