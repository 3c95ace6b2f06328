//! `spawn_app`: an engine with its API on a free port, over a database of its own.

use std::net::SocketAddr;
use std::time::Duration;

use analytics_desk::storage::Store;
use analytics_desk::telemetry::counters::PipelineCounters;
use analytics_desk::worker::Worker;
use analytics_desk::{Config, Engine};
use mongodb::bson::{Document, doc};
use serde_json::Value;

use crate::common;

/// A running API (worker not started) and direct access to its database.
pub struct TestApp {
    pub address: SocketAddr,
    pub engine: Engine,
    pub store: Store,
    pub http: reqwest::Client,
}

/// The configuration of a test app on `mongo_url`: a free port, fast polling.
pub fn test_config(mongo_url: &str) -> Config {
    let config = Config { port: 0, poll_interval: Duration::from_millis(20), ..Config::default() };
    config.with_mongo_url(mongo_url).expect("test URL is valid")
}

/// Starts the API on a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the API on a fresh database, after `adjust` changes the configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(&common::fresh_database_url());
    adjust(&mut config);
    spawn_app_on(config).await
}

/// Starts the API on a fresh database of a server without transactions (as a
/// standalone `mongod`).
pub async fn spawn_app_without_transactions() -> TestApp {
    let url = common::with_database(common::standalone_server_url(), &format!("test_{:016x}", rand::random::<u64>()));
    spawn_app_on(test_config(&url)).await
}

/// Starts the API with exactly `config`.
pub async fn spawn_app_on(config: Config) -> TestApp {
    let engine = Engine::new(config);
    let address = engine.start_api().await.expect("API starts");
    let store = engine.store().await.expect("database reachable").clone();
    TestApp { address, engine, store, http: reqwest::Client::new() }
}

/// The body of the original README's example event.
pub fn event_json(site_id: &str, path: &str, user_id: &str) -> String {
    serde_json::json!({ "site_id": site_id, "event_type": "page_view", "path": path, "user_id": user_id }).to_string()
}

/// An event as the stats tests send it: site, event type, path, user, and its
/// timestamp in milliseconds.
pub type Sent = (String, String, String, String, i64);

impl TestApp {
    /// Sends `events` through `POST /events`, `per_request` at a time, asserting each batch is accepted.
    pub async fn post_in_batches(&self, events: &[Sent], per_request: usize) {
        for chunk in events.chunks(per_request) {
            let body: Vec<Value> = chunk
                .iter()
                .map(|(site, kind, path, user, millis)| {
                    serde_json::json!({
                        "site_id": site, "event_type": kind, "path": path, "user_id": user,
                        "timestamp": mongodb::bson::DateTime::from_millis(*millis).try_to_rfc3339_string().unwrap(),
                    })
                })
                .collect();
            let response = self.post_events(serde_json::to_string(&body).unwrap()).await;
            assert_eq!(response.status(), 200, "batch accepted");
        }
    }

    /// `GET path` answered as JSON (whatever the status).
    pub async fn get_json(&self, path: &str) -> Value {
        self.http.get(self.url(path)).send().await.unwrap().json().await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A browser's CORS preflight for a cross-origin JSON `POST` to `path`.
    pub async fn preflight(&self, path: &str) -> reqwest::Response {
        self.http
            .request(reqwest::Method::OPTIONS, self.url(path))
            .header("origin", "https://shop.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /event` with a JSON content type.
    pub async fn post_event(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.post_event_as("application/json", body).await
    }

    /// `POST /event` with the given content type.
    pub async fn post_event_as(&self, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(self.url("/event"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /events` (a batch) with a JSON content type.
    pub async fn post_events(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.post_events_as("application/json", body).await
    }

    /// `POST /events` with the given content type.
    pub async fn post_events_as(&self, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        let request = self.http.post(self.url("/events")).header("content-type", content_type).body(body);
        request.send().await.expect("request sent")
    }

    /// `GET /stats?site_id=…` as JSON, asserting a 200.
    pub async fn stats(&self, site_id: &str) -> Value {
        let response = self.http.get(self.url("/stats")).query(&[("site_id", site_id)]).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// `GET /stats?site_id=…` with only the event figures (`total_events`,
    /// `unique_users`, `top_paths`, `events_by_type[_other]`): the visit
    /// figures of issue #14 left out, for the tests of the event figures.
    pub async fn event_stats(&self, site_id: &str) -> Value {
        let mut stats = self.stats(site_id).await;
        let figures = stats.as_object_mut().expect("an object");
        for visit_figure in ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration"] {
            figures.remove(visit_figure);
        }
        stats
    }

    /// A worker over this app's database, to move batches by hand.
    pub fn worker(&self, batch_size: u32) -> Worker {
        Worker::new(
            self.store.clone(),
            batch_size,
            Duration::from_millis(20),
            std::sync::Arc::new(PipelineCounters::default()),
        )
    }

    /// Moves every queued event into `events`.
    pub async fn drain_queue(&self) {
        let worker = self.worker(1000);
        while worker.process_batch().await.expect("batch moved") > 0 {}
    }

    pub async fn queued(&self) -> Vec<Document> {
        all(self.store.queue()).await
    }

    pub async fn processed(&self) -> Vec<Document> {
        all(self.store.events()).await
    }

    pub async fn queue_count(&self) -> u64 {
        self.store.queue().count_documents(doc! {}).await.unwrap()
    }

    pub async fn events_count(&self) -> u64 {
        self.store.events().count_documents(doc! {}).await.unwrap()
    }
}

async fn all(collection: &mongodb::Collection<Document>) -> Vec<Document> {
    use futures_util::TryStreamExt;
    collection.find(doc! {}).sort(doc! { "_id": 1 }).await.unwrap().try_collect().await.unwrap()
}

/// Asserts a response is an error with `status` and a JSON `{"error": "..."}`
/// body containing `needle`; returns the message.
pub async fn assert_json_error(response: reqwest::Response, status: u16, needle: &str) -> String {
    assert_eq!(response.status(), status, "status");
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body: Value = response.json().await.expect("JSON body");
    let message = body["error"].as_str().unwrap_or_else(|| panic!("no error string in {body}")).to_string();
    assert!(message.contains(needle), "error {message:?} should contain {needle:?}");
    assert_eq!(body.as_object().unwrap().len(), 1, "only the error field: {body}");
    message
}

/// Opens a `POST /event` whose handler is reading its body (the server said
/// `100 Continue`), and stalls it: the request holds an ingestion slot.
pub async fn stalled_event(server: SocketAddr) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
    let head = "POST /event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\
                Expect: 100-continue\r\n\r\n";
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(head.as_bytes()).await.unwrap();
    let expected = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut interim = vec![0; expected.len()];
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut interim)).await;
    assert!(read.is_ok_and(|r| r.is_ok()), "no answer to the stalled client's headers");
    assert_eq!(interim, expected, "the handler reads the body");
    stream.write_all(b"{\"site").await.unwrap();
    stream
}
