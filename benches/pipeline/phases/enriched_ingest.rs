//! Phase (h), `ingest_enriched` (issue #14): `POST /event` as the tracker sends
//! it (URL with UTM tags, referrer, screen width, `event_id`, four browsers'
//! User-Agents: `post_event_enriched.lua`), so every event is enriched; ours
//! only, beside the same round's plain `POST /event` rate (target ≥ 90% of it).
//! Before #14 is merged the API refuses the new fields: one probe request
//! first, and the phase is reported "not available" rather than measured.

use std::path::{Path, PathBuf};

use crate::harness::Bench;
use crate::phases::post_event::IngestRun;
use crate::systems::{Part, System};

/// Target: the enriched rate over today's plain one.
pub const TARGET_SHARE: f64 = 0.9;

/// The wrk script of this phase, beside this crate's sources.
pub fn enriched_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pipeline/post_event_enriched.lua")
}

impl Bench {
    /// One enriched load of ours, or why it could not run.
    pub async fn enriched_post_event_load(&mut self, round: usize) -> Result<IngestRun, String> {
        let label = format!("r{round}-enriched-probe");
        let database = self.fresh_database(&label);
        let deployment = self.deploy(System::Ours, Part::Api, &database, &label).await;
        let body = serde_json::json!({
            "site_id": "site-001", "event_type": "page_view", "path": "/p1", "user_id": "probe",
            "url": "https://site-001.example/p1?utm_source=newsletter", "referrer": "https://www.google.com/search",
            "screen_width": 1440, "event_id": "probe-1",
        });
        let answer = self
            .http
            .post(format!("{}/event", deployment.base_url()))
            .header("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0")
            .json(&body)
            .send()
            .await;
        let refusal = match answer {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("{}: {}", response.status(), response.text().await.unwrap_or_default())),
            Err(error) => Some(error.to_string()),
        };
        drop(deployment);
        database.drop().await.expect("drop the database");
        if let Some(refusal) = refusal {
            let reason = format!("not available ({})", refusal.chars().take(160).collect::<String>());
            self.progress(format!("ours POST /event (enriched): {reason}"));
            return Err(reason);
        }
        Ok(self.post_event_load_with(System::Ours, round, &enriched_script(), "enriched").await)
    }
}
