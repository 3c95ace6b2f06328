//! The harness every phase works through: the run's settings, its database server
//! and clients, where its results and logs go, and what phases share: progress
//! lines, a fresh database per measurement, deploying a system, reading its stats.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mongodb::{Client, Database};
use reqwest::StatusCode;

use crate::dataset::SiteStats;
use crate::numbers::grouped;
use crate::processes::{DatabaseServer, Deployment, load_average};
use crate::settings::{OUR_BINARY, Settings};
use crate::systems::{Part, System};

/// One run of the benchmark: what it needs from start to finish. The phases are
/// its methods, one module each (see `phases`).
pub struct Bench {
    pub settings: Settings,
    started: Instant,
    server: DatabaseServer,
    mongo: Client,
    pub http: reqwest::Client,
    /// Where `bench-results.md` is written.
    pub target_dir: PathBuf,
    /// The service logs (`<label>-<process>.log`) and the database's storage.
    pub logs_dir: PathBuf,
    databases_made: u32,
    /// The machine's load average when the run started (other work skews figures).
    pub load_at_start: String,
}

impl Bench {
    /// Starts the database server, connects to it, and prints what the run is.
    pub async fn start(settings: Settings) -> Bench {
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

    /// Prints a line of progress, with the seconds since the start.
    pub fn progress(&self, message: impl std::fmt::Display) {
        println!("[{:7.1}s] {message}", self.started.elapsed().as_secs_f64());
    }

    /// A database of its own for one measurement.
    pub fn fresh_database(&mut self, label: &str) -> Database {
        self.databases_made += 1;
        self.mongo.database(&format!("bench_{:03}_{}", self.databases_made, label.replace('-', "_")))
    }

    /// Starts `part` of `system` on `database`, and waits until its API answers.
    pub async fn deploy(&self, system: System, part: Part, database: &Database, label: &str) -> Deployment {
        let url = self.server.url(database.name());
        Deployment::start(system, part, &url, label, &self.logs_dir, &self.settings.seed_app_dir, &self.http).await
    }

    /// The URL of `database` on the run's server.
    pub fn database_url(&self, database: &Database) -> String {
        self.server.url(database.name())
    }

    /// `GET /stats` of `site_id`, parsed, or what went wrong.
    pub async fn fetch_stats(&self, base: &str, site_id: &str) -> Result<SiteStats, String> {
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
}
