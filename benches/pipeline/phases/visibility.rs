//! Phase (e), `visibility`: how long an acknowledged event takes to show in
//! `GET /stats` with the service idle, and its processes' memory afterwards.

use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::Bench;
use crate::numbers::{median, milliseconds, percentile, shown};
use crate::processes::memory_mb;
use crate::settings::POLL_MS;
use crate::systems::{Part, System};

/// Events timed per system (after one warm-up event).
const VISIBILITY_SAMPLES: usize = 20;
/// How often `GET /stats` is asked while waiting for an event.
const VISIBILITY_POLL: Duration = Duration::from_millis(5);
/// How long an event may take to show before it counts as missed.
const VISIBILITY_LIMIT: Duration = Duration::from_secs(10);

/// One system's visibility samples.
#[derive(Default)]
pub struct VisibilityRun {
    pub latencies_ms: Vec<f64>,
    pub missed: usize,
}

impl Bench {
    /// Times [`VISIBILITY_SAMPLES`] events of `system`, each from its `200` until
    /// `GET /stats` counts it.
    pub async fn visibility(&mut self, system: System) -> VisibilityRun {
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
}
