//! What a run is given: the fixed settings both systems run with (our binary, the
//! collection names, the workers' batch size and poll interval) and the knobs read
//! from the environment (`BENCH_*`, and the paths `scripts/bench.sh` sets).

use std::path::{Path, PathBuf};

/// Our service, built by cargo for this benchmark.
pub const OUR_BINARY: &str = env!("CARGO_BIN_EXE_analytics-service");
/// The queue collection, named explicitly (`QUEUE_NAME`) for both systems.
pub const QUEUE: &str = "events_queue";
/// Where processed events end up, for both systems.
pub const EVENTS: &str = "events";
/// `BATCH_SIZE` of both workers.
pub const BATCH_SIZE: u32 = 1000;
/// `POLL_MS` of both workers.
pub const POLL_MS: u64 = 200;

/// The knobs of one run, read from the environment (see the crate's documentation).
pub struct Settings {
    pub rounds: usize,
    pub wrk_seconds: u64,
    pub raw_insert_seconds: u64,
    pub drain_events: usize,
    pub stats_sizes: Vec<usize>,
    /// The phases to run (`BENCH_PHASES`); all when unset.
    phases: Option<Vec<String>>,
    pub secantusd: PathBuf,
    pub seed_app_dir: PathBuf,
    pub wrk_script: PathBuf,
}

impl Settings {
    /// Reads the knobs; panics on a bad value or a missing path.
    pub fn from_env() -> Settings {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|value| value == "1");
        let number = |name: &str, default: u64| match std::env::var(name) {
            Ok(value) => {
                value.trim().parse().unwrap_or_else(|_| panic!("{name} must be a whole number, got {value:?}"))
            }
            Err(_) => default,
        };
        let stats_sizes = match std::env::var("BENCH_STATS_SIZES") {
            Ok(list) => list.split(',').map(parse_size).collect(),
            Err(_) if quick => vec![10_000],
            Err(_) => vec![10_000, 100_000, 1_000_000],
        };
        let required_path = |name: &str| {
            PathBuf::from(std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set; scripts/bench.sh sets it")))
        };
        let settings = Settings {
            rounds: number("BENCH_ROUNDS", if quick { 1 } else { 3 }) as usize,
            wrk_seconds: number("BENCH_SECONDS", if quick { 3 } else { 10 }),
            raw_insert_seconds: if quick { 2 } else { 5 },
            drain_events: if quick { 20_000 } else { 200_000 },
            stats_sizes,
            phases: std::env::var("BENCH_PHASES")
                .ok()
                .map(|list| list.split(',').map(|phase| phase.trim().to_string()).collect()),
            secantusd: required_path("SECANTUSD"),
            seed_app_dir: required_path("SEED_APP_DIR"),
            wrk_script: std::env::var("WRK_SCRIPT")
                .map(PathBuf::from)
                .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/post_event.lua")),
        };
        if let Some(phases) = &settings.phases {
            let unknown: Vec<&String> = phases.iter().filter(|phase| !PHASES.contains(&phase.as_str())).collect();
            assert!(unknown.is_empty(), "BENCH_PHASES: unknown {unknown:?}; the phases are {PHASES:?}");
        }
        assert!(settings.rounds >= 1 && settings.wrk_seconds >= 1, "BENCH_ROUNDS and BENCH_SECONDS must be at least 1");
        assert!(
            settings.seed_app_dir.join("node_modules").is_dir(),
            "SEED_APP_DIR has no node_modules: run npm install"
        );
        assert!(settings.wrk_script.is_file(), "WRK_SCRIPT {} is not a file", settings.wrk_script.display());
        settings
    }

    /// Whether `phase` (one of [`PHASES`]) is to run.
    pub fn runs(&self, phase: &str) -> bool {
        self.phases.as_ref().is_none_or(|phases| phases.iter().any(|p| p == phase))
    }
}

/// The phases `BENCH_PHASES` may name.
const PHASES: [&str; 8] = ["ingest", "batch", "drain", "stats", "visibility", "variety", "visits", "ingest_enriched"];

/// `10000`, `10k` or `1M`.
fn parse_size(text: &str) -> usize {
    let text = text.trim();
    let (digits, factor) = match text.strip_suffix(['k', 'K']) {
        Some(digits) => (digits, 1_000),
        None => text.strip_suffix('M').map_or((text, 1), |digits| (digits, 1_000_000)),
    };
    digits.parse::<usize>().map(|n| n * factor).unwrap_or_else(|_| panic!("BENCH_STATS_SIZES: bad size {text:?}"))
}
