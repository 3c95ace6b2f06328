//! The end of a run: what it measured ([`Results`]), the table of medians, ratios
//! and targets made of it (printed, and written to `bench-results.md`), and the
//! summary of the service logs' warnings.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use crate::dataset::INSERT_BATCH_DOCS;
use crate::harness::Bench;
use crate::numbers::{grouped, median, milliseconds, percentile, ratio, shown, yes_no};
use crate::phases::batch_ingest::BatchRun;
use crate::phases::drain::DrainRun;
use crate::phases::enriched_ingest::TARGET_SHARE;
use crate::phases::post_event::IngestRun;
use crate::phases::stats::{STATS_SAMPLES, STATS_WARMUPS, StatsRun};
use crate::phases::variety::VarietyRun;
use crate::phases::visibility::VisibilityRun;
use crate::phases::visits::VisitsRun;
use crate::processes::load_average;
use crate::settings::{BATCH_SIZE, POLL_MS};
use crate::systems::{BySystem, System};
use crate::wrk::{WRK_CONNECTIONS, WRK_THREADS};

/// Reads one memory figure of an ingest run, in MB.
type RssOf = fn(&IngestRun) -> f64;

/// Everything a run measured, per phase (empty for a phase that did not run).
#[derive(Default)]
pub struct Results {
    pub ingest: BySystem<Vec<IngestRun>>,
    pub raw_insert_journaled: Vec<f64>,
    pub raw_insert_default: Vec<f64>,
    /// Why our `POST /events` could not be measured, if it could not.
    pub batch_unavailable: Option<String>,
    pub batch: Vec<BatchRun>,
    /// Drains of a live backlog, then of a 30-day history.
    pub drain_live: BySystem<Vec<DrainRun>>,
    pub drain_history: BySystem<Vec<DrainRun>>,
    pub stats: Vec<(usize, BySystem<StatsRun>)>,
    pub visibility: BySystem<VisibilityRun>,
    /// Hostile variety (issue #13), when that phase ran.
    pub variety: Option<VarietyRun>,
    /// `POST /event` with enrichment (issue #14), per round, or why it could not run.
    pub ingest_enriched: Vec<Result<IngestRun, String>>,
    /// The stats API over realistic visitors (issue #14), per size.
    pub visits: Vec<VisitsRun>,
}

impl Bench {
    /// Prints the report and writes it to `bench-results.md`, then sums up the logs.
    pub async fn finish(&self, results: &Results) {
        let report = self.report(results);
        println!("\n{report}");
        let path = self.target_dir.join("bench-results.md");
        fs::write(&path, &report).expect("write bench-results.md");
        self.summarize_logs();
        self.progress(format!("results written to {}; logs in {}", path.display(), self.logs_dir.display()));
    }

    /// The report: the table of figures against their targets, then the raw insert
    /// rates and the stats at each size.
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
        if let Some(variety) = &results.variety {
            out.push_str(&variety.report());
        }
        out.push_str(&enriched_report(results));
        for run in &results.visits {
            out.push_str(&run.report());
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

/// The section of `POST /event` with enrichment: its median rate beside the
/// plain one of the same rounds (when the `ingest` phase ran too).
fn enriched_report(results: &Results) -> String {
    if results.ingest_enriched.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n### POST /event with enrichment (issue #14), ours\n\n");
    let rates: Vec<f64> =
        results.ingest_enriched.iter().filter_map(|r| r.as_ref().ok()).map(|r| r.requests_per_sec).collect();
    if let Some(Err(reason)) = results.ingest_enriched.iter().find(|r| r.is_err()) {
        let _ = writeln!(out, "{reason}");
    }
    if rates.is_empty() {
        return out;
    }
    let plain: Vec<f64> = results.ingest.ours.iter().map(|r| r.requests_per_sec).collect();
    let (enriched, plain) = (median(&rates), median(&plain));
    let _ = writeln!(
        out,
        "| enriched req/s | plain req/s | share | target |\n|---|---|---|---|\n| {} | {} | {} | ≥ {:.0}% |",
        shown(enriched, grouped),
        shown(plain, grouped),
        shown(ratio(enriched, plain), |r| format!("{:.0}%", r * 100.0)),
        TARGET_SHARE * 100.0,
    );
    out
}
