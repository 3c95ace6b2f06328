//! The data every phase uses: events of one site generated from a fixed seed (the
//! same for both systems), the harness's own tally of them, the stats they must
//! give, and how an answer differs from those.

use std::collections::{HashMap, HashSet};

use mongodb::Collection;
use mongodb::bson::{DateTime, Document, doc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

/// The one site every generated event belongs to.
pub const SITE: &str = "site-001";
/// Documents per `insert_many` when the harness fills a collection or measures the
/// database's raw rate.
pub const INSERT_BATCH_DOCS: usize = 1000;
/// How many paths events are spread over (`/p0` … `/p49`).
const DISTINCT_PATHS: u32 = 50;
/// How many users events are spread over.
const DISTINCT_USERS: u32 = 1000;
/// How far back a history's events go: 30 days.
const TIMESTAMP_SPREAD_MS: i64 = 30 * 24 * 3600 * 1000;
/// How long the live backlog of the drain took to build up.
const LIVE_SPAN_MS: i64 = 3600 * 1000;
/// Every phase generates the same events from this seed, so both systems get the same data.
const DATA_SEED: u64 = 4;

/// When generated events happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamps {
    /// At random over the last 30 days: a history, as an import of old events
    /// would queue it (and as stats over time ranges need).
    History,
    /// In order over the last hour, `count` events: a backlog of live traffic,
    /// as a queue fills while its worker is down or behind.
    Live { count: usize },
}

/// Queue-shaped events of [`SITE`] (`site_id`, `event_type`, `path`, `user_id`,
/// `timestamp` as [`Timestamps`] says, `ingested_at`), the same sequence every
/// time ([`DATA_SEED`]).
/// Paths are skewed (low numbers more frequent), so top paths are meaningful.
pub struct EventGenerator {
    rng: StdRng,
    now_ms: i64,
    timestamps: Timestamps,
    made: usize,
}

impl EventGenerator {
    /// A 30-day history.
    pub fn new() -> EventGenerator {
        EventGenerator::with(Timestamps::History)
    }

    /// Events timed as `timestamps` says.
    pub fn with(timestamps: Timestamps) -> EventGenerator {
        EventGenerator {
            rng: StdRng::seed_from_u64(DATA_SEED),
            now_ms: DateTime::now().timestamp_millis(),
            timestamps,
            made: 0,
        }
    }

    /// The next event of the sequence.
    pub fn next_event(&mut self) -> Document {
        let path = self.rng.random_range(0..DISTINCT_PATHS).min(self.rng.random_range(0..DISTINCT_PATHS));
        let user = self.rng.random_range(0..DISTINCT_USERS);
        let age_ms = match self.timestamps {
            Timestamps::History => self.rng.random_range(0..TIMESTAMP_SPREAD_MS),
            Timestamps::Live { count } => {
                let left = count.saturating_sub(self.made) as i64;
                LIVE_SPAN_MS * left / count.max(1) as i64
            }
        };
        self.made += 1;
        doc! {
            "site_id": SITE,
            "event_type": "page_view",
            "path": format!("/p{path}"),
            "user_id": format!("user{user}"),
            "timestamp": DateTime::from_millis(self.now_ms - age_ms),
            "ingested_at": DateTime::from_millis(self.now_ms),
        }
    }
}

/// What `GET /stats` answers (fields it may add are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SiteStats {
    pub total_events: u64,
    pub unique_users: u64,
    pub top_paths: Vec<PathCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
/// One entry of `top_paths`.
pub struct PathCount {
    pub path: String,
    pub count: u64,
}

/// The harness's own count of the events it generated: the expected stats.
#[derive(Default)]
pub struct Tally {
    total: u64,
    users: HashSet<String>,
    paths: HashMap<String, u64>,
}

impl Tally {
    /// Counts one generated event.
    pub fn record(&mut self, event: &Document) {
        self.total += 1;
        self.users.insert(event.get_str("user_id").expect("generated user_id").to_string());
        *self.paths.entry(event.get_str("path").expect("generated path").to_string()).or_default() += 1;
    }

    /// The exact stats: top 10 paths by count descending, then path ascending.
    pub fn expected_stats(&self) -> SiteStats {
        let mut top_paths: Vec<PathCount> =
            self.paths.iter().map(|(path, &count)| PathCount { path: path.clone(), count }).collect();
        top_paths.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
        top_paths.truncate(10);
        SiteStats { total_events: self.total, unique_users: self.users.len() as u64, top_paths }
    }
}

/// How `got` differs from `expected` (top paths compared only if `with_top_paths`).
pub fn stats_difference(got: &SiteStats, expected: &SiteStats, with_top_paths: bool) -> Option<String> {
    let mut differences = Vec::new();
    if got.total_events != expected.total_events {
        differences.push(format!("total_events {} (expected {})", got.total_events, expected.total_events));
    }
    if got.unique_users != expected.unique_users {
        differences.push(format!("unique_users {} (expected {})", got.unique_users, expected.unique_users));
    }
    if with_top_paths && got.top_paths != expected.top_paths {
        let describe =
            |paths: &[PathCount]| paths.iter().map(|p| format!("{}={}", p.path, p.count)).collect::<Vec<_>>().join(" ");
        differences.push(format!(
            "top_paths [{}] (expected [{}])",
            describe(&got.top_paths),
            describe(&expected.top_paths)
        ));
    }
    (!differences.is_empty()).then(|| differences.join("; "))
}

/// Inserts `count` generated events into `collection` in batches of
/// [`INSERT_BATCH_DOCS`], and returns their tally.
pub async fn fill(collection: &Collection<Document>, count: usize, generator: &mut EventGenerator) -> Tally {
    let mut tally = Tally::default();
    let mut left = count;
    while left > 0 {
        let batch: Vec<Document> = (0..left.min(INSERT_BATCH_DOCS)).map(|_| generator.next_event()).collect();
        batch.iter().for_each(|event| tally.record(event));
        collection.insert_many(&batch).await.expect("insert_many while filling");
        left -= batch.len();
    }
    tally
}
