//! Visits and the daily rollups kept by the worker (docs/visits.md §2, §3):
//! through `POST /events` with explicit timestamps and users (or queue
//! documents written as ingestion writes them, for the enrichment fields this
//! branch's API does not set yet), checked against the stored visits, an
//! independent sessionising in this file, and `daily_figures`.

use std::collections::{BTreeMap, HashSet};

use analytics_desk::rollups::daily::{self, DailyFigures, daily_figures};
use analytics_desk::rollups::visits::VISITS;
use analytics_desk::worker::retention;
use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::helpers::{Sent, TestApp, spawn_app};

const MINUTE: i64 = 60_000;

fn at(rfc3339: &str) -> i64 {
    DateTime::parse_rfc3339_str(rfc3339).unwrap().timestamp_millis()
}

fn sent(site: &str, path: &str, user: &str, millis: i64) -> Sent {
    (site.into(), "page_view".into(), path.into(), user.into(), millis)
}

/// Posts `events` one request each (so each is its own batch when drained
/// in between) or together.
async fn post(app: &TestApp, events: &[Sent]) {
    app.post_in_batches(events, 100).await;
}

/// Queues documents as ingestion writes them (with enrichment fields the API
/// of this branch does not add yet: `source`, `anonymous`).
async fn queue_raw(app: &TestApp, events: Vec<Document>) {
    let documents: Vec<Document> = events
        .into_iter()
        .map(|mut event| {
            event.insert("_id", ObjectId::new());
            event.entry("event_type".to_string()).or_insert("page_view".into());
            event
        })
        .collect();
    app.store.queue().insert_many(documents).await.unwrap();
}

async fn visits_of(app: &TestApp, site: &str) -> Vec<Document> {
    let visits = app.store.database().collection::<Document>(VISITS);
    visits.find(doc! { "site_id": site }).sort(doc! { "start": 1 }).await.unwrap().try_collect().await.unwrap()
}

async fn events_of(app: &TestApp, site: &str) -> Vec<Document> {
    let find = app.store.events().find(doc! { "site_id": site }).sort(doc! { "timestamp": 1, "_id": 1 });
    find.await.unwrap().try_collect().await.unwrap()
}

/// The figures of whole days `from..to` computed plainly over `visits`.
async fn plain_figures(app: &TestApp, site: &str, from: Option<i64>, to: Option<i64>) -> DailyFigures {
    let mut figures = DailyFigures::default();
    let mut visitors = HashSet::new();
    for visit in visits_of(app, site).await {
        let start = visit.get_datetime("start").unwrap().timestamp_millis();
        if from.is_some_and(|from| start < from) || to.is_some_and(|to| start >= to) {
            continue;
        }
        figures.visits += 1;
        figures.bounces += u64::from(visit.get_bool("bounced").unwrap());
        figures.duration_ms += visit.get_i64("duration_ms").unwrap() as u64;
        figures.visit_pageviews += visit.get_i64("pageviews").unwrap() as u64;
        visitors.insert(visit.get_str("user_id").unwrap().to_string());
    }
    figures.visitors = visitors.len() as u64;
    figures
}

async fn figures(app: &TestApp, site: &str, from: Option<i64>, to: Option<i64>) -> DailyFigures {
    daily_figures(&app.store, site, from.map(DateTime::from_millis), to.map(DateTime::from_millis)).await.unwrap()
}

#[tokio::test]
async fn a_visitors_events_within_thirty_minutes_are_one_visit_and_a_longer_gap_starts_another() {
    let app = spawn_app().await;
    let t = at("2026-03-01T10:00:00Z");
    post(
        &app,
        &[
            sent("s", "/a", "u1", t),
            sent("s", "/b", "u1", t + 10 * MINUTE),
            ("s".into(), "signup".into(), "/c".into(), "u1".into(), t + 29 * MINUTE),
            sent("s", "/again", "u1", t + 59 * MINUTE),
            sent("s", "/other", "u2", t + 5 * MINUTE),
        ],
    )
    .await;
    app.drain_queue().await;
    let visits = visits_of(&app, "s").await;
    assert_eq!(visits.len(), 3, "{visits:#?}");
    let first = &visits[0];
    assert_eq!(
        (first.get_str("user_id"), first.get_str("entry_page"), first.get_str("exit_page")),
        (Ok("u1"), Ok("/a"), Ok("/c"))
    );
    assert_eq!((first.get_i64("events"), first.get_i64("pageviews")), (Ok(3), Ok(2)));
    assert_eq!((first.get_i64("duration_ms"), first.get_bool("bounced")), (Ok(29 * MINUTE), Ok(false)));
    assert_eq!(visits[2].get_str("entry_page"), Ok("/again"), "30 minutes after the last event: a new visit");
    assert_eq!(visits[2].get_bool("bounced"), Ok(true));
    for event in events_of(&app, "s").await {
        let visit = visits.iter().find(|v| v.get_object_id("_id") == event.get_object_id("visit_id"));
        assert!(visit.is_some(), "every event carries its visit: {event}");
    }
    let day = at("2026-03-01T00:00:00Z");
    let want = plain_figures(&app, "s", None, None).await;
    assert_eq!((want.visits, want.visitors, want.bounces), (3, 2, 2));
    assert_eq!(figures(&app, "s", None, None).await, want);
    assert_eq!(figures(&app, "s", Some(day), Some(day + daily::DAY_MS)).await, want);
    assert_eq!(figures(&app, "s", Some(day + daily::DAY_MS), None).await, DailyFigures::default());
}

#[tokio::test]
async fn a_late_event_bridging_two_visits_merges_them_and_one_before_a_visit_moves_its_entry() {
    let app = spawn_app().await;
    let t = at("2026-03-01T10:00:00Z");
    queue_raw(
        &app,
        vec![
            doc! { "site_id": "s", "path": "/a", "user_id": "u", "timestamp": DateTime::from_millis(t), "source": "A" },
        ],
    )
    .await;
    app.drain_queue().await;
    post(&app, &[sent("s", "/b", "u", t + 50 * MINUTE)]).await;
    app.drain_queue().await;
    let before = visits_of(&app, "s").await;
    assert_eq!(before.len(), 2);
    let kept = before[0].get_object_id("_id").unwrap();

    // 25 minutes from both: one visit, the earlier one's id, on every event.
    post(&app, &[sent("s", "/m", "u", t + 25 * MINUTE)]).await;
    app.drain_queue().await;
    let after = visits_of(&app, "s").await;
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(after[0].get_object_id("_id"), Ok(kept));
    assert_eq!((after[0].get_i64("events"), after[0].get_str("exit_page")), (Ok(3), Ok("/b")));
    let events = events_of(&app, "s").await;
    assert!(events.iter().all(|e| e.get_object_id("visit_id") == Ok(kept)), "{events:#?}");
    assert!(events.iter().all(|e| e.get_str("source") == Ok("A")), "the visit's source on every event: {events:#?}");

    // Earlier than the visit: its entry page and attributes move, on its events too.
    queue_raw(
        &app,
        vec![doc! {
            "site_id": "s", "path": "/early", "user_id": "u", "timestamp": DateTime::from_millis(t - 20 * MINUTE),
            "source": "Early", "device": "mobile",
        }],
    )
    .await;
    app.drain_queue().await;
    let after = visits_of(&app, "s").await;
    assert_eq!(after.len(), 1);
    assert_eq!((after[0].get_str("entry_page"), after[0].get_str("source")), (Ok("/early"), Ok("Early")));
    assert_eq!(after[0].get_i64("duration_ms"), Ok(70 * MINUTE));
    let events = events_of(&app, "s").await;
    assert_eq!(events.len(), 4);
    for event in &events {
        assert_eq!((event.get_str("source"), event.get_str("device")), (Ok("Early"), Ok("mobile")), "{event}");
        assert_eq!(event.get_object_id("visit_id"), Ok(kept));
    }
    let day = at("2026-03-01T00:00:00Z");
    assert_eq!(
        figures(&app, "s", Some(day), Some(day + daily::DAY_MS)).await,
        plain_figures(&app, "s", None, None).await
    );
    assert_eq!(figures(&app, "s", None, None).await.visits, 1);
}

#[tokio::test]
async fn an_anonymous_visitor_on_two_days_is_carried_and_counted_once_over_both() {
    let app = spawn_app().await;
    let day1 = at("2026-03-01T00:00:00Z");
    let day2 = day1 + daily::DAY_MS;
    let day3 = day2 + daily::DAY_MS;
    let anonymous = |path: &str, millis: i64| {
        doc! { "site_id": "s", "path": path, "user_id": "anon", "anonymous": true, "timestamp": DateTime::from_millis(millis) }
    };
    queue_raw(&app, vec![anonymous("/late", day2 - 40 * MINUTE), anonymous("/early", day2 + 10 * MINUTE)]).await;
    post(&app, &[sent("s", "/x", "known", day1 + 60 * MINUTE), sent("s", "/y", "known", day2 + 60 * MINUTE)]).await;
    app.drain_queue().await;

    assert_eq!(visits_of(&app, "s").await.len(), 4);
    let rows: Vec<Document> = app
        .store
        .database()
        .collection::<Document>(daily::DAILY)
        .find(doc! { "site_id": "s" })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let sum = |field: &str, day: i64| -> i64 {
        rows.iter()
            .filter(|r| r.get_datetime("day").unwrap().timestamp_millis() == day)
            .map(|r| r.get_i64(field).unwrap())
            .sum()
    };
    assert_eq!((sum("visitors_anonymous", day1), sum("visitors_anonymous", day2)), (1, 1));
    assert_eq!(
        (sum("carried", day1), sum("carried", day2)),
        (0, 1),
        "the anonymous id also had a visit the day before"
    );
    let both = figures(&app, "s", Some(day1), Some(day3)).await;
    assert_eq!((both.visits, both.visitors), (4, 2), "each visitor once over both days");
    assert_eq!(both, plain_figures(&app, "s", Some(day1), Some(day3)).await);
    for (from, to) in [(day1, day2), (day2, day3)] {
        assert_eq!(
            figures(&app, "s", Some(from), Some(to)).await,
            plain_figures(&app, "s", Some(from), Some(to)).await
        );
    }

    // A late event bridging the two visits across midnight: one visit, started on day 1.
    queue_raw(&app, vec![anonymous("/bridge", day2 - 15 * MINUTE)]).await;
    app.drain_queue().await;
    assert_eq!(visits_of(&app, "s").await.len(), 3);
    assert_eq!(
        figures(&app, "s", Some(day1), Some(day3)).await,
        plain_figures(&app, "s", Some(day1), Some(day3)).await
    );
    let presences = app.store.database().collection::<Document>(daily::DAILY_VISITORS);
    let anon_days = presences.count_documents(doc! { "user_id": "anon" }).await.unwrap();
    assert_eq!(anon_days, 1, "the second day's presence went with its visit");
    let day2_only = figures(&app, "s", Some(day2), Some(day3)).await;
    assert_eq!((day2_only.visits, day2_only.visitors), (1, 1), "only `known` starts a visit on day 2");
}

/// Visits of `events` sessionised here, independently: per (site, user), by
/// (timestamp, `_id`), split where two are 30 minutes apart or more. Returns
/// (site, user, start, end, events) per visit.
fn sessionised(events: &[Document]) -> Vec<(String, String, i64, i64, i64)> {
    let mut by_visitor: BTreeMap<(String, String), Vec<(i64, ObjectId)>> = BTreeMap::new();
    for event in events {
        let visitor = (event.get_str("site_id").unwrap().to_string(), event.get_str("user_id").unwrap().to_string());
        let at = event.get_datetime("timestamp").unwrap().timestamp_millis();
        by_visitor.entry(visitor).or_default().push((at, event.get_object_id("_id").unwrap()));
    }
    let mut visits = Vec::new();
    for ((site, user), mut times) in by_visitor {
        times.sort();
        let mut current: Option<(i64, i64, i64)> = None;
        for (at, _) in times {
            match current {
                Some((start, end, n)) if at - end < 30 * MINUTE => current = Some((start, at, n + 1)),
                Some(done) => {
                    visits.push((site.clone(), user.clone(), done.0, done.1, done.2));
                    current = Some((at, at, 1));
                }
                None => current = Some((at, at, 1)),
            }
        }
        let done = current.unwrap();
        visits.push((site, user, done.0, done.1, done.2));
    }
    visits.sort();
    visits
}

async fn stored_visits(app: &TestApp) -> Vec<(String, String, i64, i64, i64)> {
    let visits = app.store.database().collection::<Document>(VISITS);
    let all: Vec<Document> = visits.find(doc! {}).await.unwrap().try_collect().await.unwrap();
    let mut shapes: Vec<_> = all
        .iter()
        .map(|v| {
            (
                v.get_str("site_id").unwrap().to_string(),
                v.get_str("user_id").unwrap().to_string(),
                v.get_datetime("start").unwrap().timestamp_millis(),
                v.get_datetime("end").unwrap().timestamp_millis(),
                v.get_i64("events").unwrap(),
            )
        })
        .collect();
    shapes.sort();
    shapes
}

/// Every stored event's `visit_id` names a visit of its user spanning it.
async fn assert_every_event_carries_the_visit_spanning_it(app: &TestApp, stored_events: &[Document]) {
    let visits = app.store.database().collection::<Document>(VISITS);
    let all: Vec<Document> = visits.find(doc! {}).await.unwrap().try_collect().await.unwrap();
    for event in stored_events {
        let visit = all.iter().find(|v| v.get_object_id("_id") == event.get_object_id("visit_id")).expect("its visit");
        assert_eq!(visit.get_str("user_id"), event.get_str("user_id"));
        let at = event.get_datetime("timestamp").unwrap();
        assert!(visit.get_datetime("start").unwrap() <= at && at <= visit.get_datetime("end").unwrap());
    }
}

#[tokio::test]
async fn live_batches_answered_from_a_workers_memory_keep_the_visits_of_all_events_at_once() {
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let app = spawn_app().await;
    let start = at("2026-03-01T22:30:00Z");
    // Live traffic over three hours across midnight: eight visitors, a page
    // every few minutes, some pausing past 30 minutes, some events a few
    // minutes late (they move a visit's entry or bridge two visits).
    let mut events: Vec<Sent> = Vec::new();
    for visitor in 0..8 {
        let mut time = start + rng.random_range(0..20) * MINUTE;
        while time < start + 180 * MINUTE {
            events.push(sent("s", &format!("/p{}", rng.random_range(0..4)), &format!("u{visitor}"), time));
            time += if rng.random_bool(0.1) { rng.random_range(31..50) } else { rng.random_range(1..6) } * MINUTE;
        }
    }
    let mut arrivals: Vec<(i64, Sent)> =
        events.into_iter().map(|event| (event.4 + if rng.random_bool(0.1) { 8 * MINUTE } else { 0 }, event)).collect();
    arrivals.sort_by_key(|(arrival, _)| *arrival);
    let events: Vec<Sent> = arrivals.into_iter().map(|(_, event)| event).collect();
    // One worker moves the stream as it arrives; now and then another moves
    // a batch (after which the first must not trust its memory).
    let (first, other) = (app.worker(15), app.worker(15));
    let (mut first_batches, mut others_batches) = (0, 0);
    for (n, chunk) in events.chunks(15).enumerate() {
        app.post_in_batches(chunk, 15).await;
        let (worker, batches) = if n % 7 == 6 { (&other, &mut others_batches) } else { (&first, &mut first_batches) };
        for _ in 0..100 {
            match worker.process_batch().await.expect("batch moved") {
                0 => break,
                _ => *batches += 1,
            }
        }
    }
    assert_eq!(app.queue_count().await, 0, "every chunk moved before the next came");
    assert!(others_batches > 0);
    let from_memory = first.batches_with_visits_from_memory();
    assert!(
        from_memory >= first_batches / 2,
        "the first worker's batches mostly found their visits in memory ({from_memory} of {first_batches})"
    );
    assert!(from_memory < first_batches, "its first batch, and those after the other's, loaded from the database");

    let stored_events = app.processed().await;
    assert_eq!(stored_events.len(), events.len());
    assert_eq!(stored_visits(&app).await, sessionised(&stored_events), "the visits of all events at once");
    assert_every_event_carries_the_visit_spanning_it(&app, &stored_events).await;
    let day = at("2026-03-02T00:00:00Z");
    for (from, to) in [(None, None), (Some(day - daily::DAY_MS), Some(day)), (Some(day), None)] {
        assert_eq!(figures(&app, "s", from, to).await, plain_figures(&app, "s", from, to).await, "{from:?}..{to:?}");
    }
}

#[tokio::test]
async fn racing_workers_in_small_batches_keep_the_visits_of_all_events_at_once_and_retention_removes_old_ones() {
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let app = spawn_app().await;
    let start = at("2026-03-01T20:00:00Z");
    // Few visitors over eight hours across midnight, in random order: late
    // events, merges and visits over two days, in every batch.
    let events: Vec<Sent> = (0..400)
        .map(|_| {
            let user = format!("u{}", rng.random_range(0..6));
            sent(
                if rng.random_bool(0.8) { "s" } else { "t" },
                &format!("/p{}", rng.random_range(0..4)),
                &user,
                start + rng.random_range(0..8 * 60) * MINUTE,
            )
        })
        .collect();
    app.post_in_batches(&events, 50).await;

    // Two workers, the first with both its lanes: batches side by side.
    let (a, b) = (app.worker(7), app.worker(7));
    let drain = |worker: analytics_desk::worker::Worker, lane: Option<u32>| async move {
        let mut moved = 0;
        loop {
            let batch = match lane {
                Some(lane) => worker.process_lane_batch(lane).await,
                None => worker.process_batch().await,
            };
            match batch.expect("batch moved") {
                0 => return moved,
                n => moved += n,
            }
        }
    };
    let (moved_a0, moved_a1, moved_b) = tokio::join!(drain(a.clone(), Some(0)), drain(a, Some(1)), drain(b, None));
    let (moved_a, moved_b) = (moved_a0 + moved_a1, moved_b);
    // A worker that met too many conflicts leaves the rest: finish it.
    app.drain_queue().await;
    assert!(moved_a + moved_b <= events.len());
    assert_eq!(app.events_count().await as usize, events.len());

    let stored_events = app.processed().await;
    assert_eq!(stored_visits(&app).await, sessionised(&stored_events), "the visits of all events at once");
    assert_every_event_carries_the_visit_spanning_it(&app, &stored_events).await;
    let day = at("2026-03-01T00:00:00Z");
    for site in ["s", "t"] {
        for (from, to) in [(None, None), (Some(day), Some(day + daily::DAY_MS)), (Some(day + daily::DAY_MS), None)] {
            assert_eq!(
                figures(&app, site, from, to).await,
                plain_figures(&app, site, from, to).await,
                "{site} {from:?}..{to:?}"
            );
        }
    }

    // A rebuild from `events` (in chunks in no particular order) gives the same visits and days.
    let visits_collection = app.store.database().collection::<Document>(VISITS);
    visits_collection.delete_many(doc! { "events": { "$gt": 2 } }).await.unwrap();
    analytics_desk::rollups::mark_not_ready(&app.store).await.unwrap();
    let options = analytics_desk::rollups::RebuildOptions { chunk: 37, ..Default::default() };
    analytics_desk::rollups::make_ready_with(&app.store, "test", &options).await.unwrap();
    assert_eq!(stored_visits(&app).await, sessionised(&stored_events), "rebuilt from events");
    let rebuilt: Vec<Document> = visits_collection.find(doc! {}).await.unwrap().try_collect().await.unwrap();
    for event in app.processed().await {
        let visit = rebuilt.iter().find(|v| v.get_object_id("_id") == event.get_object_id("visit_id"));
        assert!(visit.is_some_and(|v| v.get_str("user_id") == event.get_str("user_id")), "relabelled: {event}");
    }
    for site in ["s", "t"] {
        for (from, to) in [(None, None), (Some(day), Some(day + daily::DAY_MS)), (Some(day + daily::DAY_MS), None)] {
            let plain = plain_figures(&app, site, from, to).await;
            assert_eq!(figures(&app, site, from, to).await, plain, "rebuilt: {site} {from:?}..{to:?}");
        }
    }

    // Retention: visits starting before the cutoff go, with their share of the days.
    let cutoff = DateTime::parse_rfc3339_str("2026-03-01T23:00:00Z").unwrap();
    retention::purge_before(&app.store, cutoff, true).await.unwrap();
    let left = stored_visits(&app).await;
    assert!(left.iter().all(|v| v.2 >= cutoff.timestamp_millis()), "no visit starting before the cutoff is left");
    let starting_later = sessionised(&stored_events).into_iter().filter(|v| v.2 >= cutoff.timestamp_millis()).count();
    assert_eq!(left.len(), starting_later);
    for site in ["s", "t"] {
        for (from, to) in [(None, None), (Some(day), Some(day + daily::DAY_MS)), (Some(day + daily::DAY_MS), None)] {
            assert_eq!(
                figures(&app, site, from, to).await,
                plain_figures(&app, site, from, to).await,
                "after retention: {site}"
            );
        }
    }
}
