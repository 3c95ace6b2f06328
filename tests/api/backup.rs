//! Backup and restore (`analytics_desk::backup`): a round trip into an empty
//! database gives byte-equal figures, restoring twice adds nothing, queued
//! events are included, and a damaged or foreign file is refused whole.

use std::io::{Read, Write};
use std::path::Path;

use analytics_desk::backup::{self, BackupError, Scope};
use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const HOUR_MS: i64 = 3_600_000;

/// Events of two sites over two days: several visitors, each with visits
/// split by gaps over 30 minutes, referrers, a custom event and an `event_id`.
fn traffic(start: i64, round: i64) -> Vec<Value> {
    let mut events = Vec::new();
    for (site, visitors) in [("shop", 7), ("blog", 4)] {
        for visitor in 0..visitors {
            for visit in 0..3 {
                let at = start + (visitor * 5 + visit * 13 + round * 2) * HOUR_MS / 4;
                let referrer = ["https://www.google.com/", "https://news.ycombinator.com/x", ""][visit as usize];
                for (step, path) in ["/", "/pricing", "/blog/post"].iter().enumerate().take(1 + (visitor % 3) as usize)
                {
                    let timestamp = DateTime::from_millis(at + step as i64 * 60_000).try_to_rfc3339_string().unwrap();
                    events.push(json!({
                        "site_id": site, "event_type": "page_view", "path": path,
                        "user_id": format!("{site}-u{visitor}"), "timestamp": timestamp,
                        "url": format!("https://{site}.example{path}"), "referrer": referrer,
                        "event_id": format!("r{round}-v{visitor}-{visit}-{step}"),
                    }));
                }
                if visitor % 2 == 0 {
                    let timestamp = DateTime::from_millis(at + 5 * 60_000).try_to_rfc3339_string().unwrap();
                    events.push(json!({
                        "site_id": site, "event_type": "signup", "path": "/thanks",
                        "user_id": format!("{site}-u{visitor}"), "timestamp": timestamp,
                    }));
                }
            }
        }
    }
    events
}

/// Sends `events` through `POST /events`.
async fn send(app: &TestApp, events: &[Value]) {
    for chunk in events.chunks(200) {
        let response = app.post_events(Value::Array(chunk.to_vec()).to_string()).await;
        assert_eq!(response.status(), 200, "batch accepted");
    }
}

async fn put_goals(app: &TestApp, site: &str, goals: Value) {
    let url = app.url(&format!("/sites/{site}/goals"));
    let response = app.http.put(url).header("content-type", "application/json").body(goals.to_string()).send().await;
    assert_eq!(response.unwrap().status(), 200);
}

/// Every answer the round trip compares, as text: `/stats`, breakdowns by a
/// few dimensions (goals among them), the CSV export and the goals.
async fn figures(app: &TestApp, start: i64) -> Vec<(String, String)> {
    let from = DateTime::from_millis(start - 24 * HOUR_MS).try_to_rfc3339_string().unwrap();
    let to = DateTime::from_millis(start + 72 * HOUR_MS).try_to_rfc3339_string().unwrap();
    let mut answers = Vec::new();
    for site in ["shop", "blog"] {
        let range = format!("site_id={site}&from={from}&to={to}");
        let mut paths = vec![format!("/stats?site_id={site}"), format!("/stats?{range}")];
        for dimension in ["page", "source", "entry_page", "goal", "event_type"] {
            paths.push(format!("/stats/breakdown?{range}&dimension={dimension}"));
        }
        paths.push(format!("/stats/breakdown?{range}&dimension=page&format=csv"));
        paths.push(format!("/stats/export.csv?{range}&interval=hour"));
        paths.push(format!("/sites/{site}/goals"));
        for path in paths {
            let response = app.http.get(app.url(&path)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            answers.push((path, response.text().await.unwrap()));
        }
    }
    answers
}

async fn back_up(app: &TestApp, path: &Path) -> backup::Header {
    let settings = backup::settings_of(app.engine.config());
    backup::write_backup(&app.store, path, &Scope::default(), &settings).await.expect("backup written")
}

async fn site_documents(app: &TestApp) -> Vec<Document> {
    let sites = app.store.database().collection::<Document>("sites");
    sites.find(doc! {}).await.unwrap().try_collect().await.unwrap()
}

/// A database with moved events of two sites, goals, and events still queued.
async fn seeded_app(start: i64) -> (TestApp, usize) {
    let app = spawn_app().await;
    put_goals(&app, "shop", json!({ "goals": [{ "event_type": "signup" }, { "page": "/pricing" }] })).await;
    put_goals(&app, "blog", json!({ "goals": [{ "page": "/blog/*", "name": "Read" }] })).await;
    let moved = traffic(start, 0);
    send(&app, &moved).await;
    app.drain_queue().await;
    // Later events, still queued when the backup is written.
    let queued = traffic(start, 1);
    send(&app, &queued).await;
    assert_eq!(app.queue_count().await, queued.len() as u64, "not moved yet");
    (app, moved.len() + queued.len())
}

fn recent_start() -> i64 {
    let now = DateTime::now().timestamp_millis();
    now - now % HOUR_MS - 48 * HOUR_MS
}

#[tokio::test]
async fn a_restore_into_an_empty_database_gives_the_same_figures_byte_for_byte() {
    let start = recent_start();
    let (source, sent) = seeded_app(start).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.ndjson.gz");

    let header = back_up(&source, &file).await;
    assert_eq!(header.counts.events, sent as u64, "every event, moved and queued, once");
    assert_eq!(header.counts.sites, 2);
    assert!(header.counts.settings > 0);
    source.drain_queue().await;
    let before = figures(&source, start).await;

    let target = spawn_app().await;
    let summary = backup::restore_backup(&target.store, &file).await.expect("restored");
    assert_eq!((summary.events_restored, summary.events_skipped, summary.sites), (sent as u64, 0, 2));
    assert_eq!(target.queue_count().await, sent as u64, "restored events wait in the queue for the worker");
    target.drain_queue().await;
    let after = figures(&target, start).await;

    assert_eq!(target.events_count().await, source.events_count().await);
    for ((path, was), (_, is)) in before.iter().zip(&after) {
        assert_eq!(was, is, "{path} differs after the restore");
    }
    assert!(before.iter().any(|(path, text)| path.contains("goal") && text.contains("signup")), "goals counted");
    let stats: Value = serde_json::from_str(&before[0].1).unwrap();
    assert!(stats["visits"].as_u64().unwrap() > 10 && stats["total_events"].as_u64().unwrap() > 30, "{stats}");
    // The stored raw events are the same documents, `processed_at` aside.
    let strip = |mut events: Vec<Document>| {
        events.iter_mut().for_each(|event| drop(event.remove("processed_at")));
        events
    };
    assert_eq!(strip(target.processed().await), strip(source.processed().await));
}

#[tokio::test]
async fn restoring_twice_or_into_the_source_adds_nothing() {
    let start = recent_start();
    let (source, sent) = seeded_app(start).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.ndjson.gz");
    back_up(&source, &file).await;

    // Into the database it came from, with some events still queued: all skipped.
    let again = backup::restore_backup(&source.store, &file).await.unwrap();
    assert_eq!((again.events_restored, again.events_skipped), (0, sent as u64));
    source.drain_queue().await;
    assert_eq!(source.events_count().await, sent as u64);

    // Twice into another: once restored (the first time, partly moved), then nothing.
    let target = spawn_app().await;
    backup::restore_backup(&target.store, &file).await.unwrap();
    target.worker(100).process_batch().await.unwrap();
    let second = backup::restore_backup(&target.store, &file).await.unwrap();
    assert_eq!((second.events_restored, second.events_skipped), (0, sent as u64));
    target.drain_queue().await;
    let before = figures(&target, start).await;
    let third = backup::restore_backup(&target.store, &file).await.unwrap();
    assert_eq!(third.events_restored, 0);
    target.drain_queue().await;
    assert_eq!(target.events_count().await, sent as u64);
    assert_eq!(figures(&target, start).await, before, "figures unchanged");
    assert_eq!(figures(&source, start).await, before, "and those of the source");
}

#[tokio::test]
async fn a_backup_holds_no_secret_and_one_site_when_asked() {
    let app = spawn_app().await;
    send(&app, &traffic(recent_start(), 0)).await;
    put_goals(&app, "shop", json!({ "goals": [{ "event_type": "signup" }] })).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.ndjson.gz");
    let mut config = app.engine.config().clone();
    config.api_token = Some("a-very-secret-token-0123456789".into());
    config = config.with_mongo_url("mongodb://admin:hunter2secret@127.0.0.1:1/analytics_db").unwrap();
    let settings = backup::settings_of(&config);
    let scope = Scope { site: Some("shop".into()) };
    let header = backup::write_backup(&app.store, &file, &scope, &settings).await.unwrap();

    let text = gunzip(&file);
    assert!(!text.contains("hunter2secret") && !text.contains("a-very-secret-token"), "no secret in the file");
    assert!(!text.contains("API_TOKEN"));
    assert!(text.contains("MONGO_URL"), "the URL is kept, masked");
    for key in ["TRUSTED_PROXIES", "EXCLUDED_IPS", "PUBLIC_HOSTS"] {
        assert!(text.contains(key), "the setting {key} is recorded");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a backup holds every visitor's events: its owner's only");
    assert!(!text.contains("\"blog\""), "only the site asked for");
    let shop_events = traffic(recent_start(), 0).iter().filter(|e| e["site_id"] == "shop").count();
    assert_eq!(header.counts.events, shop_events as u64);
    assert_eq!((header.site.as_deref(), header.counts.sites), (Some("shop"), 1));
    let first_line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first_line["format"], backup::FORMAT_NAME);
    let event_line: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(event_line["kind"], "event");
    assert!(event_line["doc"]["_id"]["$oid"].is_string(), "canonical Extended JSON: {event_line}");
    assert!(event_line["doc"]["timestamp"]["$date"].is_object(), "dates exactly: {event_line}");
}

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    text
}

fn gzip(path: &Path, text: &str) {
    let mut out = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    out.write_all(text.as_bytes()).unwrap();
    out.finish().unwrap();
}

#[tokio::test]
async fn a_damaged_or_foreign_file_is_refused_with_a_clear_message_and_nothing_stored() {
    let (source, _) = seeded_app(recent_start()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.ndjson.gz");
    back_up(&source, &file).await;
    let text = gunzip(&file);
    let bytes = std::fs::read(&file).unwrap();
    let target = spawn_app().await;

    let write = |name: &str, contents: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    let cut = write("cut.gz", &bytes[..bytes.len() * 2 / 3]);
    let foreign = write("notes.txt", b"hello\n");
    let foreign_gzip = dir.path().join("other.gz");
    gzip(&foreign_gzip, "{\"some\":\"json\"}\n");
    let bad_line = dir.path().join("bad-line.gz");
    let mut lines: Vec<&str> = text.lines().collect();
    let middle = lines.len() / 2;
    lines[middle] = "{\"kind\":\"event\",\"doc\":{\"_id\":{\"$oid\":\"not-an-id\"}}}";
    gzip(&bad_line, &(lines.join("\n") + "\n"));
    let dropped = dir.path().join("dropped-lines.gz");
    gzip(&dropped, &(text.lines().take(middle).collect::<Vec<_>>().join("\n") + "\n"));

    for (path, needle) in [
        (&cut, "damaged"),
        (&foreign, "not an Analytics Desk backup (it is not gzip-compressed)"),
        (&foreign_gzip, "does not name the format analytics-desk-backup"),
        (&bad_line, &format!("damaged at line {}", middle + 1)),
        (&dropped, "the file ends early"),
    ] {
        let error = backup::restore_backup(&target.store, path).await.expect_err("refused");
        let message = error.to_string();
        assert!(message.contains(needle), "{}: {message}", path.display());
        assert!(message.contains("nothing was restored"), "{message}");
        assert!(matches!(error, BackupError::Damaged { .. } | BackupError::NotABackup { .. }));
    }
    assert_eq!(target.queue_count().await + target.events_count().await, 0, "no event stored");
    assert!(site_documents(&target).await.is_empty(), "no site stored");
}
