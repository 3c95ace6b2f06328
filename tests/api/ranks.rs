//! The ranks (issue #13, item 9, the latency target): the all-time counts per
//! (site, path) and (site, event type) and the distinct users per site the
//! worker keeps, so that the all-time `/stats` is a sort and limit on an index.
//! They must hold exactly what `events` holds after batches (two lanes, two
//! workers), retention and a rebuild; and `/stats` read from them must equal
//! the plain aggregation over `events`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use analytics_desk::rollups::{self, ranks};
use analytics_desk::stats::{self, StatsFilter};
use analytics_desk::worker::retention;
use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};

use crate::helpers::{TestApp, spawn_app};

const HOUR: i64 = 3_600_000;
/// 2026-03-01T00:00:00Z
const START: i64 = 1_772_323_200_000;

/// One event as sent: site, type, path, user, time (ms since the epoch).
use crate::helpers::Sent;

/// Events on two sites over 6 hours: 30 types (more than the 20 listed),
/// paths tied two by two (so the top 10 cuts between ties), users shared
/// between sites and types.
fn events() -> Vec<Sent> {
    let mut events = Vec::new();
    for i in 0..30i64 {
        for n in 0..=(i / 2) {
            let path = format!("/p{:02}", (i + n) % 24 / 2 * 2 + n % 2);
            let at = START + ((i * 7 + n) % 6) * HOUR + n * 1000;
            events.push(("ranked".into(), format!("t{i:02}"), path, format!("u{}", (i * n) % 37), at));
        }
    }
    for n in 0..40i64 {
        events.push(("other".into(), "page_view".into(), format!("/o{}", n % 3), format!("u{}", n % 5), START + n));
    }
    events
}

/// Posts `events` in batches of 100 through the API.
async fn post(app: &TestApp, events: &[Sent]) {
    app.post_in_batches(events, 100).await;
}

/// Every document of `collection` for `site`.
async fn documents(app: &TestApp, collection: &str, site: &str) -> Vec<Document> {
    let collection = app.store.database().collection::<Document>(collection);
    collection.find(doc! { "site_id": site }).await.unwrap().try_collect().await.unwrap()
}

/// What the ranks should hold for `site`: counts per path, per type, the users.
type Expected = (HashMap<String, u64>, HashMap<String, u64>, HashSet<String>);

fn expected(events: &[Sent], site: &str) -> Expected {
    let (mut paths, mut types, mut users) = (HashMap::new(), HashMap::new(), HashSet::new());
    for (_, kind, path, user, _) in events.iter().filter(|e| e.0 == site) {
        *paths.entry(path.clone()).or_default() += 1;
        *types.entry(kind.clone()).or_default() += 1;
        users.insert(user.clone());
    }
    (paths, types, users)
}

/// Asserts the rank documents of `site` hold exactly the counts of `events`
/// (none at zero left), and its counters the number of types and, when
/// `users_exact`, of users.
async fn assert_ranks_hold(app: &TestApp, events: &[Sent], site: &str, users_exact: bool) {
    let (paths, types, users) = expected(events, site);
    let read = |docs: Vec<Document>, field: &str| -> HashMap<String, u64> {
        docs.iter().map(|d| (d.get_str(field).unwrap().to_string(), rollups::count_of(d.get("count")))).collect()
    };
    assert_eq!(read(documents(app, ranks::RANK_PATHS, site).await, "path"), paths, "path ranks of {site}");
    assert_eq!(read(documents(app, ranks::RANK_TYPES, site).await, "event_type"), types, "type ranks of {site}");
    // The types in one document, the users in one per lane shard.
    let site_ranks = documents(app, ranks::SITE_RANKS, site).await;
    let counter = |field| site_ranks.iter().map(|d| rollups::count_of(d.get(field))).sum::<u64>();
    assert_eq!(counter("types"), types.len() as u64, "types counted for {site}");
    if users_exact {
        assert_eq!(counter("users"), users.len() as u64, "users counted for {site}");
        let recorded: HashSet<String> = documents(app, ranks::SITE_USERS, site)
            .await
            .iter()
            .map(|d| d.get_str("user_id").unwrap().to_string())
            .collect();
        assert_eq!(recorded, users, "users recorded for {site}");
    }
}

/// Asserts the all-time `/stats` (from the ranks) equals the plain aggregation
/// over `events` and the figures counted here.
async fn assert_stats_agree(app: &TestApp, events: &[Sent], site: &str) {
    let filter = StatsFilter::site(site);
    let plain = stats::plain_site_stats(&app.store, &filter).await.unwrap();
    let served = stats::site_stats(&app.store, &filter).await.unwrap();
    assert_eq!(served, plain, "ranked stats of {site} equal the plain aggregation");
    let (paths, _, users) = expected(events, site);
    assert_eq!(served.total_events, events.iter().filter(|e| e.0 == site).count() as u64);
    assert_eq!(served.unique_users, users.len() as u64);
    let mut ranked: Vec<(&String, &u64)> = paths.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let top: Vec<(String, u64)> = served.top_paths.iter().map(|p| (p.path.clone(), p.count)).collect();
    let want: Vec<(String, u64)> = ranked.iter().take(10).map(|(p, n)| ((*p).clone(), **n)).collect();
    assert_eq!(top, want, "top paths, ties by path ascending");
    let http = app.event_stats(site).await;
    assert_eq!(http, serde_json::to_value(&served).unwrap(), "GET /stats serves the same");
}

/// Folds every pending count into the ranks (as the worker does after a batch).
async fn fold_all(app: &TestApp) {
    let mut session = app.store.client().start_session().await.unwrap();
    for _ in 0..1000 {
        session.start_transaction().await.unwrap();
        let (folded, _) = ranks::fold(app.store.database(), &mut session, None).await.unwrap();
        session.commit_transaction().await.unwrap();
        if folded == 0 {
            return;
        }
    }
    panic!("pending counts left after 1,000 folds");
}

async fn pending_count(app: &TestApp) -> u64 {
    app.store.database().collection::<Document>(ranks::PENDING).count_documents(doc! {}).await.unwrap()
}

#[tokio::test]
async fn ranks_stay_exact_through_batches_retention_and_a_rebuild() {
    let app = spawn_app().await;
    let events = events();
    post(&app, &events).await;
    // Small batches: many batches add to the same ranks.
    let worker = app.worker(37);
    while worker.process_batch().await.expect("batch moved") > 0 {}
    let readiness = rollups::readiness(&app.store).await.unwrap();
    assert!(readiness.ready && readiness.ranked, "a fresh database is ranked: {readiness:?}");
    assert_eq!(pending_count(&app).await, 0, "the worker folds each batch's counts after its commit");
    for site in ["ranked", "other"] {
        assert_ranks_hold(&app, &events, site, true).await;
        assert_stats_agree(&app, &events, site).await;
    }
    let served = stats::site_stats(&app.store, &StatsFilter::site("ranked")).await.unwrap();
    assert_eq!(served.events_by_type.len(), 20);
    assert_eq!(served.events_by_type_other.map(|o| o.types), Some(10), "30 types, 20 listed");

    // Retention: the first three hours go, a chunk of 7 events at a time.
    let cutoff = DateTime::from_millis(START + 3 * HOUR);
    let limits = retention::PurgeLimits { chunk: 7, ..retention::PurgeLimits::default() };
    let never = tokio_util::sync::CancellationToken::new();
    let report = retention::purge(&app.store, cutoff, true, &limits, &never, |_| {}).await.unwrap();
    let kept: Vec<Sent> = events.iter().filter(|e| e.4 >= cutoff.timestamp_millis()).cloned().collect();
    assert_eq!(report.deleted as usize, events.len() - kept.len());
    assert!(kept.len() < events.len() && !kept.is_empty());
    for site in ["ranked", "other"] {
        // Users cannot be taken off: stats read the hourly visitors now.
        assert_ranks_hold(&app, &kept, site, false).await;
        assert_stats_agree(&app, &kept, site).await;
    }

    // A rebuild from `events` builds the ranks again, users exact again.
    rollups::mark_not_ready(&app.store).await.unwrap();
    rollups::make_ready(&app.store, "test").await.unwrap();
    let readiness = rollups::readiness(&app.store).await.unwrap();
    assert!(readiness.ranked && readiness.all_time_visitors, "{readiness:?}");
    for site in ["ranked", "other"] {
        assert_ranks_hold(&app, &kept, site, true).await;
        assert_stats_agree(&app, &kept, site).await;
    }
}

#[tokio::test]
async fn two_workers_and_two_lanes_keep_the_ranks_exact() {
    let app = spawn_app().await;
    let mut events = events();
    // More users new to the site in every batch, met by both workers.
    for n in 0..600i64 {
        events.push(("ranked".into(), "page_view".into(), format!("/w{}", n % 50), format!("w{}", n % 200), START + n));
    }
    post(&app, &events).await;
    let (first, second) = (app.worker(25), app.worker(25));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (a, b, c) =
            tokio::join!(first.process_lane_batch(0), first.process_lane_batch(1), second.process_lane_batch(0));
        let moved = a.expect("lane 0") + b.expect("lane 1") + c.expect("second worker");
        if moved == 0 && app.queue_count().await == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the queue did not drain in time");
    }
    assert_eq!(app.events_count().await as usize, events.len(), "every event moved once");
    // Served exactly with whatever is still pending (a fold lost to the other
    // worker's), and, once folded, the ranks hold it all.
    stats_agree_then_ranks_hold_once_folded(&app, &events).await;
}

#[tokio::test]
async fn counts_still_pending_are_added_to_the_ranked_stats() {
    let app = spawn_app().await;
    let mut events = events();
    post(&app, &events).await;
    app.drain_queue().await;
    // A batch committed whose fold has not run (lost to another worker's, or
    // the worker stopped): new top paths, a type new to the site, new users.
    let late: Vec<Sent> = (0..60i64)
        .map(|n| {
            let (kind, path) = if n < 40 { ("late", "/late") } else { ("t29", "/p03") };
            ("ranked".into(), kind.into(), path.into(), format!("late{}", n % 7), START + 5 * HOUR + n)
        })
        .collect();
    let raw: Vec<mongodb::bson::RawDocumentBuf> = late
        .iter()
        .map(|(site, kind, path, user, millis)| {
            let event = doc! { "site_id": site, "event_type": kind, "path": path, "user_id": user,
            "timestamp": DateTime::from_millis(*millis) };
            mongodb::bson::RawDocumentBuf::from_document(&event).unwrap()
        })
        .collect();
    let db = app.store.database();
    let mut session = app.store.client().start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    app.store
        .events()
        .clone_with_type::<mongodb::bson::RawDocumentBuf>()
        .insert_many(&raw)
        .session(&mut session)
        .await
        .unwrap();
    let deltas = rollups::RollupDeltas::of(raw.iter().map(|e| &**e));
    let limits = app.store.write_limits().await.unwrap();
    deltas.apply(db, Some(&mut session), None, 0, &limits).await.unwrap();
    let ranked = rollups::RankDeltas::of(raw.iter().map(|e| &**e));
    ranked.add_pending(db, &mut session, None, 0).await.unwrap();
    session.commit_transaction().await.unwrap();
    events.extend(late);

    assert!(pending_count(&app).await > 0, "the late batch's counts are pending");
    let served = stats::site_stats(&app.store, &StatsFilter::site("ranked")).await.unwrap();
    assert_eq!(served.top_paths[0].path, "/late", "a pending path rises to the top");
    assert!(served.events_by_type.iter().any(|t| t.event_type == "late"), "a pending type, new to the site");
    assert_eq!(served.events_by_type_other.map(|o| o.types), Some(11), "31 types, 20 listed");
    stats_agree_then_ranks_hold_once_folded(&app, &events).await;
}

#[tokio::test]
async fn a_batch_over_many_sites_is_folded_whole_before_the_next() {
    let app = spawn_app().await;
    // 600 sites in one batch: 1,200 pending documents, more than one fold reads.
    let events: Vec<Sent> = (0..600i64)
        .map(|n| (format!("s{n:03}"), "page_view".into(), format!("/{}", n % 4), format!("u{n}"), START + n))
        .collect();
    post(&app, &events).await;
    let worker = app.worker(1000);
    assert_eq!(worker.process_batch().await.unwrap(), 600);
    assert_eq!(pending_count(&app).await, 1200, "the batch left its counts pending");
    assert_eq!(worker.process_batch().await.unwrap(), 0);
    assert_eq!(pending_count(&app).await, 0, "the next call folded them all");
    for site in ["s000", "s333", "s599"] {
        assert_ranks_hold(&app, &events, site, true).await;
        assert_stats_agree(&app, &events, site).await;
    }
}

/// Stats of both sites served exactly with whatever is still pending; then,
/// once everything is folded, the ranks hold it all and stats still agree.
async fn stats_agree_then_ranks_hold_once_folded(app: &TestApp, events: &[Sent]) {
    for site in ["ranked", "other"] {
        assert_stats_agree(app, events, site).await;
    }
    fold_all(app).await;
    for site in ["ranked", "other"] {
        assert_ranks_hold(app, events, site, true).await;
        assert_stats_agree(app, events, site).await;
    }
}
