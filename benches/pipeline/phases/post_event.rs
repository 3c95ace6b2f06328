//! Phase (a), `ingest`: `POST /event` under wrk with no worker running: requests/s,
//! non-2xx answers, the queue's count checked against wrk's, and the API process's
//! memory idle (`VmRSS`) and at peak (`VmHWM`).

use std::path::Path;
use std::time::Duration;

use crate::harness::Bench;
use crate::numbers::grouped;
use crate::processes::memory_mb;
use crate::queue_watch::settled_count;
use crate::settings::QUEUE;
use crate::systems::{Part, System};
use crate::wrk::{self, WRK_CONNECTIONS};

/// Pause after an API answers before its idle memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(1);

/// One system's `POST /event` load in one round.
pub struct IngestRun {
    pub requests_per_sec: f64,
    pub non_2xx: u64,
    pub queue_check_passed: bool,
    pub idle_rss_mb: f64,
    pub peak_rss_mb: f64,
}

impl Bench {
    /// Loads `system`'s API with wrk's `post_event.lua` for the run's seconds.
    pub async fn post_event_load(&mut self, system: System, round: usize) -> IngestRun {
        let script = self.settings.wrk_script.clone();
        self.post_event_load_with(system, round, &script, "post").await
    }

    /// Loads `system`'s API with the wrk `script` for the run's seconds (`kind` names its logs).
    pub async fn post_event_load_with(&mut self, system: System, round: usize, script: &Path, kind: &str) -> IngestRun {
        let label = format!("r{round}-{kind}-{}", system.name());
        let database = self.fresh_database(&label);
        let mut deployment = self.deploy(system, Part::Api, &database, &label).await;
        tokio::time::sleep(IDLE_SETTLE).await;
        let idle_rss_mb = memory_mb(deployment.api_pid(), "VmRSS");
        let url = format!("{}/event", deployment.base_url());
        let wrk = wrk::run(&url, script, self.settings.wrk_seconds).await;
        let queued = settled_count(&database.collection(QUEUE)).await;
        deployment.assert_running();
        let peak_rss_mb = memory_mb(deployment.api_pid(), "VmHWM");
        drop(deployment);
        database.drop().await.expect("drop the database");

        let acknowledged = wrk.requests - wrk.non_2xx;
        let at_most = wrk.requests + WRK_CONNECTIONS + wrk.timeouts;
        let queue_check_passed = (acknowledged..=at_most).contains(&queued);
        self.progress(format!(
            "{} POST /event ({kind}): {} req/s ({} requests in {:.1} s, {} non-2xx{}); memory {:.1} MB idle, {:.1} MB peak",
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
}
