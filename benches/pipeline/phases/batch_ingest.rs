//! Phase (b), `batch`: our `POST /events` under wrk (arrays of events, when the
//! route exists), against the database's own rate for `insert_many` of
//! generated documents, journaled (`j: true`, as our service writes) and with the
//! default write concern.

use std::fs;
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use mongodb::options::{CollectionOptions, WriteConcern};
use reqwest::StatusCode;
use serde_json::json;

use crate::dataset::{EventGenerator, INSERT_BATCH_DOCS, SITE};
use crate::harness::Bench;
use crate::numbers::grouped;
use crate::queue_watch::settled_count;
use crate::settings::QUEUE;
use crate::systems::{Part, System};
use crate::wrk::{self, WRK_CONNECTIONS};

/// Events per request in the generated wrk script for `POST /events`.
const EVENTS_PER_BATCH_REQUEST: u64 = 100;

/// Our `POST /events` load in one round.
pub struct BatchRun {
    pub events_per_sec: f64,
    pub non_2xx: u64,
    pub queue_check_passed: bool,
}

impl Bench {
    /// The database's own rate for `insert_many` of [`INSERT_BATCH_DOCS`] queue-shaped
    /// documents, one batch after another, in documents per second.
    pub async fn raw_insert_rate(&mut self, journaled: bool, round: usize) -> f64 {
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
    pub async fn batch_ingest(&mut self, round: usize) -> Result<BatchRun, String> {
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
}

/// A wrk script posting arrays of [`EVENTS_PER_BATCH_REQUEST`] events to `/events`,
/// with paths and users varying as in `post_event.lua`.
fn batch_wrk_script() -> String {
    format!(
        r#"-- Generated by benches/pipeline/phases/batch_ingest.rs: POST /events with arrays of {n} events.
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
