//! Worker liveness is judged on the database server's clock: a worker on a host
//! whose clock is hours off is neither reaped by a healthy one nor reaps it, and
//! a live worker whose entry was removed registers again on its next beat.

use std::time::Duration;

use analytics_desk::worker::WORKERS_COLLECTION;
use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};
use tokio_util::sync::CancellationToken;

use crate::common::eventually;
use crate::helpers::{TestApp, spawn_app};

const HOURS_3: i64 = 3 * 3_600_000;

async fn entries(app: &TestApp) -> Vec<Document> {
    let workers = app.store.database().collection::<Document>(WORKERS_COLLECTION);
    workers.find(doc! {}).await.unwrap().try_collect().await.unwrap()
}

async fn entry(app: &TestApp, id: ObjectId) -> Option<Document> {
    entries(app).await.into_iter().find(|e| e.get_object_id("_id") == Ok(id))
}

/// True when `id`'s entry holds at least one lane session.
async fn registered_with_sessions(app: &TestApp, id: ObjectId) -> bool {
    entry(app, id).await.is_some_and(|e| e.get_document("sessions").is_ok_and(|s| !s.is_empty()))
}

#[tokio::test]
async fn liveness_uses_the_servers_clock_so_skewed_hosts_neither_reap_nor_get_reaped() {
    let app = spawn_app().await;
    let healthy = app.worker(10);
    let behind = app.worker(10).with_clock_skew(-HOURS_3);
    let ahead = app.worker(10).with_clock_skew(HOURS_3);
    let stop = CancellationToken::new();
    let running: Vec<_> =
        [&healthy, &behind, &ahead].into_iter().map(|w| tokio::spawn(w.clone().run(stop.clone()))).collect();
    let ids = [
        ("healthy", healthy.registration_id()),
        ("3 h behind", behind.registration_id()),
        ("3 h ahead", ahead.registration_id()),
    ];
    for (name, id) in ids {
        assert!(
            eventually(Duration::from_secs(30), || registered_with_sessions(&app, id)).await,
            "the {name} worker registered its sessions"
        );
    }

    // Every worker looks for dead ones: none is, whatever its host's clock says.
    for worker in [&healthy, &behind, &ahead] {
        worker.reap_dead_workers().await.expect("reaping ran");
    }
    for (name, id) in ids {
        let entry = entry(&app, id).await;
        assert!(entry.is_some(), "the {name} worker was reaped though alive");
        // Heartbeats carry the server's time (this test runs on the server's host).
        let beat = *entry.unwrap().get_datetime("heartbeat").expect("a heartbeat");
        let off = (beat.timestamp_millis() - DateTime::now().timestamp_millis()).abs();
        assert!(off < 600_000, "the {name} worker's heartbeat is {off} ms off the server's clock");
    }

    // A live worker whose entry is removed (by a peer that erred) registers again.
    let (_, id) = ids[1];
    let workers = app.store.database().collection::<Document>(WORKERS_COLLECTION);
    workers.delete_one(doc! { "_id": id }).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || registered_with_sessions(&app, id)).await,
        "a reaped but live worker registered again, with its sessions, on its next beats"
    );

    stop.cancel();
    for task in running {
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("worker stopped").unwrap();
    }
    assert!(entries(&app).await.is_empty(), "stopped workers remove their entries");
}
