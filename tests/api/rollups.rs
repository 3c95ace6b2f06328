//! The fast stats (rollups) against the plain aggregation over `events` and an
//! independent count made here: all time, random ranges cut anywhere in an hour,
//! event types, time series; with racing workers, a rebuild from `events`, and on
//! a deployment without transactions.

use std::collections::{BTreeMap, HashMap, HashSet};

use analytics_desk::rollups::{self, HOUR_MS};
use analytics_desk::stats::{self, PathCount, SiteStats, StatsFilter, TypeCount};
use analytics_desk::worker::retention;
use futures_util::StreamExt;
use mongodb::bson::DateTime;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_json_error, spawn_app, spawn_app_without_transactions};

const SITES: [&str; 3] = ["alpha", "beta", "gamma"];
const TYPES: [&str; 3] = ["page_view", "click", "signup"];

/// One event as sent.
#[derive(Debug, Clone)]
struct Sent {
    site: String,
    kind: String,
    path: String,
    user: String,
    millis: i64,
}

/// Random events over three days around a fixed instant (to the millisecond, so
/// ranges cut hours anywhere).
fn random_events(n: usize, rng: &mut StdRng) -> Vec<Sent> {
    let start = DateTime::parse_rfc3339_str("2026-03-01T00:00:00Z").unwrap().timestamp_millis();
    (0..n)
        .map(|_| Sent {
            site: SITES.choose(rng).unwrap().to_string(),
            kind: if rng.random_bool(0.7) { TYPES[0] } else { TYPES.choose(rng).unwrap() }.to_string(),
            path: format!("/p{}", rng.random_range(0..5) * rng.random_range(0..5)),
            user: format!("u{}", rng.random_range(0..150)),
            millis: start + rng.random_range(0..3 * 24 * HOUR_MS),
        })
        .collect()
}

/// Posts every event through the API, 32 at a time.
async fn post_all(app: &TestApp, events: &[Sent]) {
    let statuses: Vec<u16> = futures_util::stream::iter(events)
        .map(|e| async move {
            let body = json!({
                "site_id": e.site, "event_type": e.kind, "path": e.path, "user_id": e.user,
                "timestamp": DateTime::from_millis(e.millis).try_to_rfc3339_string().unwrap(),
            });
            app.post_event(body.to_string()).await.status().as_u16()
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let refused: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        refused.is_empty(),
        "every event accepted, but {} answered {:?}",
        refused.len(),
        &refused[..refused.len().min(10)]
    );
}

/// The events `filter` covers.
fn covered<'a>(events: &'a [Sent], filter: &StatsFilter) -> Vec<&'a Sent> {
    events
        .iter()
        .filter(|e| e.site == filter.site_id)
        .filter(|e| filter.from.is_none_or(|from| e.millis >= from.timestamp_millis()))
        .filter(|e| filter.to.is_none_or(|to| e.millis < to.timestamp_millis()))
        .filter(|e| filter.event_type.as_ref().is_none_or(|kind| &e.kind == kind))
        .collect()
}

/// The stats of `filter`, counted here.
fn expected(events: &[Sent], filter: &StatsFilter) -> SiteStats {
    let covered = covered(events, filter);
    let users: HashSet<&str> = covered.iter().map(|e| e.user.as_str()).collect();
    let mut paths: BTreeMap<&str, u64> = BTreeMap::new();
    let mut types: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &covered {
        *paths.entry(&e.path).or_default() += 1;
        *types.entry(&e.kind).or_default() += 1;
    }
    let mut top_paths: Vec<PathCount> =
        paths.into_iter().map(|(path, count)| PathCount { path: path.into(), count }).collect();
    top_paths.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
    top_paths.truncate(stats::TOP_PATHS);
    let mut events_by_type: Vec<TypeCount> =
        types.into_iter().map(|(kind, count)| TypeCount { event_type: kind.into(), count }).collect();
    events_by_type.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.event_type.cmp(&b.event_type)));
    SiteStats {
        total_events: covered.len() as u64,
        unique_users: users.len() as u64,
        top_paths,
        events_by_type,
        events_by_type_other: None,
    }
}

/// Events per UTC hour of `filter`, counted here.
fn expected_hours(events: &[Sent], filter: &StatsFilter) -> HashMap<i64, u64> {
    let mut hours = HashMap::new();
    for e in covered(events, filter) {
        *hours.entry(e.millis.div_euclid(HOUR_MS) * HOUR_MS).or_default() += 1;
    }
    hours
}

/// A random filter: all time, or a range cut anywhere (sometimes on an hour,
/// sometimes open at one end, sometimes inside one hour), with or without a type.
fn random_filter(events: &[Sent], rng: &mut StdRng) -> StatsFilter {
    let site = SITES.choose(rng).unwrap().to_string();
    let lo = events.iter().map(|e| e.millis).min().unwrap() - HOUR_MS;
    let hi = events.iter().map(|e| e.millis).max().unwrap() + HOUR_MS;
    let instant = |rng: &mut StdRng| {
        let t = rng.random_range(lo..hi);
        DateTime::from_millis(if rng.random_bool(0.25) { t.div_euclid(HOUR_MS) * HOUR_MS } else { t })
    };
    let (from, to) = match rng.random_range(0..6) {
        0 => (None, None),
        1 => (Some(instant(rng)), None),
        2 => (None, Some(instant(rng))),
        3 => {
            let from = instant(rng);
            (Some(from), Some(DateTime::from_millis(from.timestamp_millis() + rng.random_range(0..HOUR_MS))))
        }
        _ => {
            let (a, b) = (instant(rng), instant(rng));
            (Some(a.min(b)), Some(a.max(b)))
        }
    };
    let event_type = rng.random_bool(0.3).then(|| TYPES.choose(rng).unwrap().to_string());
    StatsFilter { site_id: site, from, to, event_type }
}

/// Fast, plain and the count made here agree on `filter`.
async fn assert_all_agree(app: &TestApp, events: &[Sent], filter: &StatsFilter) {
    let want = expected(events, filter);
    let fast = stats::fast_site_stats(&app.store, filter).await.unwrap();
    let plain = stats::plain_site_stats(&app.store, filter).await.unwrap();
    assert_eq!(plain, want, "plain aggregation, {filter:?}");
    assert_eq!(fast, want, "rollups, {filter:?}");
    let hours = expected_hours(events, filter);
    assert_eq!(stats::plain_hourly_counts(&app.store, filter).await.unwrap(), hours, "plain hours, {filter:?}");
    assert_eq!(stats::fast_hourly_counts(&app.store, filter).await.unwrap(), hours, "rollup hours, {filter:?}");
}

#[tokio::test]
async fn rollups_equal_the_plain_aggregation_and_an_independent_count_for_random_ranges() {
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let app = spawn_app().await;
    let events = random_events(2500, &mut rng);
    post_all(&app, &events).await;

    // Two workers racing on one queue: their transactions conflict and retry.
    let (a, b) = (app.worker(100), app.worker(100));
    let drain = |worker: analytics_desk::worker::Worker| async move {
        let mut moved = 0;
        loop {
            match worker.process_batch().await.expect("batch moved") {
                0 => return moved,
                n => moved += n,
            }
        }
    };
    let (moved_a, moved_b) = tokio::join!(drain(a), drain(b));
    assert_eq!(moved_a + moved_b, events.len(), "every event moved by exactly one of the two");
    assert!(rollups::are_ready(&app.store).await.unwrap());

    for site in SITES {
        assert_all_agree(&app, &events, &StatsFilter::site(site)).await;
    }
    for _ in 0..40 {
        assert_all_agree(&app, &events, &random_filter(&events, &mut rng)).await;
    }
    assert_sites_listed(&app, &events).await;
}

/// `stats::sites` lists each site of `events` once, with its count (its
/// shards added up), most events first.
async fn assert_sites_listed(app: &TestApp, events: &[Sent]) {
    let listed: Vec<(String, u64)> =
        stats::sites(&app.store).await.unwrap().into_iter().map(|s| (s.site_id, s.events)).collect();
    let mut want: Vec<(String, u64)> = SITES
        .iter()
        .map(|site| (site.to_string(), events.iter().filter(|e| e.site == *site).count() as u64))
        .filter(|(_, n)| *n > 0)
        .collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    assert_eq!(listed, want);
}

#[tokio::test]
async fn one_workers_lanes_move_batches_side_by_side_and_stay_exact_through_retention() {
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let app = spawn_app().await;
    let events = random_events(3000, &mut rng);
    post_all(&app, &events).await;

    // Both lanes of one worker at once, round after round, until the queue is empty.
    let counters = std::sync::Arc::new(analytics_desk::telemetry::counters::PipelineCounters::default());
    let worker = analytics_desk::worker::Worker::new(
        app.store.clone(),
        100,
        std::time::Duration::from_millis(20),
        counters.clone(),
    );
    let (mut moved, mut side_by_side) = (0, 0);
    loop {
        let (a, b) = tokio::join!(worker.process_lane_batch(0), worker.process_lane_batch(1));
        let (a, b) = (a.expect("lane 0 moved its batch"), b.expect("lane 1 moved its batch"));
        if a == 0 && b == 0 && app.queue_count().await == 0 {
            break;
        }
        if a == 100 && b == 100 {
            side_by_side += 1;
        }
        moved += a + b;
    }
    assert_eq!(moved, events.len(), "every event moved once");
    assert_eq!(app.events_count().await as usize, events.len());
    assert!(side_by_side >= 5, "lanes moved full batches in the same round only {side_by_side} times");
    // Each lane read past the other's batch: their transactions never met.
    assert_eq!(counters.batch_conflicts(), 0, "the lanes' batch transactions conflicted");
    // Each lane counted into its own shard.
    let paths = app.store.database().collection::<mongodb::bson::Document>(rollups::PATHS);
    for shard in [0, 1] {
        let in_shard = paths.count_documents(mongodb::bson::doc! { "shard": shard as i64 }).await.unwrap();
        assert!(in_shard > 0, "no path counted in shard {shard}");
    }

    for site in SITES {
        assert_all_agree(&app, &events, &StatsFilter::site(site)).await;
    }
    for _ in 0..20 {
        assert_all_agree(&app, &events, &random_filter(&events, &mut rng)).await;
    }

    // Retention takes each shard's share of an hour off that shard.
    let cutoff = DateTime::parse_rfc3339_str("2026-03-02T13:00:00Z").unwrap();
    let deleted = retention::purge_before(&app.store, cutoff, true).await.unwrap();
    let kept = kept(&events, cutoff);
    assert_eq!(deleted as usize, events.len() - kept.len());
    for site in SITES {
        assert_all_agree(&app, &kept, &StatsFilter::site(site)).await;
    }
    for _ in 0..10 {
        assert_all_agree(&app, &kept, &random_filter(&events, &mut rng)).await;
    }
    assert_sites_listed(&app, &kept).await;
}

#[tokio::test]
async fn rollups_are_rebuilt_once_from_events_written_before_them() {
    let mut rng = StdRng::seed_from_u64(7);
    let app = spawn_app().await;
    let events = random_events(600, &mut rng);
    post_all(&app, &events[..400]).await;
    // An older version moved these without rollups: events only, no marker.
    let queued = app.queued().await;
    app.store.events().insert_many(queued).await.unwrap();
    app.store.queue().delete_many(mongodb::bson::doc! {}).await.unwrap();
    assert!(!rollups::are_ready(&app.store).await.unwrap());
    post_all(&app, &events[400..]).await;

    // Two workers start at once: one rebuilds, the other waits for it.
    let (a, b) = (app.worker(1000), app.worker(1000));
    let (moved_a, moved_b) = tokio::join!(a.process_batch(), b.process_batch());
    assert_eq!(moved_a.unwrap() + moved_b.unwrap(), 200);
    app.drain_queue().await;

    assert!(rollups::are_ready(&app.store).await.unwrap());
    for site in SITES {
        assert_all_agree(&app, &events, &StatsFilter::site(site)).await;
    }
    for _ in 0..10 {
        assert_all_agree(&app, &events, &random_filter(&events, &mut rng)).await;
    }
}

#[tokio::test]
async fn without_transactions_stats_are_read_from_events_and_exact() {
    let mut rng = StdRng::seed_from_u64(11);
    let app = spawn_app_without_transactions().await;
    let events = random_events(500, &mut rng);
    post_all(&app, &events).await;
    app.drain_queue().await;
    assert!(!rollups::are_ready(&app.store).await.unwrap(), "no transactions: the rollups are not trusted");
    for _ in 0..10 {
        let filter = random_filter(&events, &mut rng);
        assert_eq!(stats::site_stats(&app.store, &filter).await.unwrap(), expected(&events, &filter), "{filter:?}");
    }
    let site = SITES[0];
    let http = app.stats(site).await;
    assert_eq!(http["total_events"], events.iter().filter(|e| e.site == site).count());
}

#[tokio::test]
async fn stats_and_timeseries_over_http_take_ranges_and_types() {
    let mut rng = StdRng::seed_from_u64(3);
    let app = spawn_app().await;
    let events = random_events(800, &mut rng);
    post_all(&app, &events).await;
    app.drain_queue().await;

    let (from, to) = ("2026-03-01T10:30:00Z", "2026-03-02T07:15:00.500Z");
    let filter = StatsFilter {
        site_id: "alpha".into(),
        from: Some(DateTime::parse_rfc3339_str(from).unwrap()),
        to: Some(DateTime::parse_rfc3339_str(to).unwrap()),
        event_type: Some("page_view".into()),
    };
    let query = [("site_id", "alpha"), ("from", from), ("to", to), ("event_type", "page_view")];
    let got: SiteStats = app.http.get(app.url("/stats")).query(&query).send().await.unwrap().json().await.unwrap();
    assert_eq!(got, expected(&events, &filter));

    let series: Value = app
        .http
        .get(app.url("/stats/timeseries"))
        .query(&[("interval", "hour")])
        .query(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let buckets = series["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 22, "10:00 to 07:00 next day, both partial ends included");
    assert_eq!(buckets[0]["start"], "2026-03-01T10:00:00Z");
    let hours = expected_hours(&events, &filter);
    for bucket in buckets {
        let start = DateTime::parse_rfc3339_str(bucket["start"].as_str().unwrap()).unwrap().timestamp_millis();
        assert_eq!(bucket["count"], hours.get(&start).copied().unwrap_or(0), "bucket {start}");
    }

    let daily: Value = app
        .http
        .get(app.url("/stats/timeseries"))
        .query(&[("site_id", "beta"), ("interval", "day"), ("from", "2026-03-01T00:00:00Z")])
        .query(&[("to", "2026-03-05T00:00:00Z")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let counts: Vec<u64> = daily["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).collect();
    let beta = events.iter().filter(|e| e.site == "beta").count() as u64;
    assert_eq!(counts.len(), 4);
    assert_eq!(counts.iter().sum::<u64>(), beta, "three days of events, nothing on the fourth");
    assert_eq!(counts[3], 0);

    let sites: Value = app.get_json("/sites").await;
    let listed: u64 = sites["sites"].as_array().unwrap().iter().map(|s| s["events"].as_u64().unwrap()).sum();
    assert_eq!(listed, events.len() as u64);
}

#[tokio::test]
async fn bad_ranges_and_intervals_are_400s_naming_the_parameter() {
    let app = spawn_app().await;
    let cases = [
        ("/stats?site_id=a&from=yesterday", "from must be an RFC 3339 date-time"),
        ("/stats?site_id=a&to=2026-13-01T00:00:00Z", "to must be an RFC 3339 date-time"),
        ("/stats?site_id=a&from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z", "from must not be after to"),
        ("/stats?site_id=a&event_type=", "event_type must not be empty"),
        ("/stats/timeseries?site_id=a&interval=week", "interval must be minute, hour or day"),
        ("/stats/timeseries?site_id=a&from=2000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "range too long"),
        ("/stats/timeseries?interval=day", "site_id is required"),
    ];
    for (query, message) in cases {
        let response = app.http.get(app.url(query)).send().await.unwrap();
        assert_json_error(response, 400, message).await;
    }
}

#[tokio::test]
async fn an_empty_range_has_zeros_and_from_equal_to_is_allowed() {
    let app = spawn_app().await;
    let query = [("site_id", "a"), ("from", "2026-03-01T00:00:00Z"), ("to", "2026-03-01T00:00:00Z")];
    let got: Value = app.http.get(app.url("/stats")).query(&query).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["total_events"], 0);
}

/// The events kept by a purge before `cutoff`.
fn kept(events: &[Sent], cutoff: DateTime) -> Vec<Sent> {
    events.iter().filter(|e| e.millis >= cutoff.timestamp_millis()).cloned().collect()
}

#[tokio::test]
async fn retention_deletes_old_events_with_their_rollups_and_stats_stay_exact() {
    let mut rng = StdRng::seed_from_u64(21);
    let app = spawn_app().await;
    let events = random_events(1500, &mut rng);
    post_all(&app, &events).await;
    app.drain_queue().await;

    let cutoff = DateTime::parse_rfc3339_str("2026-03-02T13:00:00Z").unwrap();
    let deleted = retention::purge_before(&app.store, cutoff, true).await.unwrap();
    let kept = kept(&events, cutoff);
    assert_eq!(deleted as usize, events.len() - kept.len());
    assert_eq!(app.events_count().await as usize, kept.len());
    assert!(!rollups::readiness(&app.store).await.unwrap().all_time_visitors, "visitors now read hourly");

    for site in SITES {
        assert_all_agree(&app, &kept, &StatsFilter::site(site)).await;
        let typed = StatsFilter { event_type: Some("click".into()), ..StatsFilter::site(site) };
        assert_all_agree(&app, &kept, &typed).await;
    }
    for _ in 0..15 {
        assert_all_agree(&app, &kept, &random_filter(&events, &mut rng)).await;
    }
    let listed: u64 = stats::sites(&app.store).await.unwrap().iter().map(|s| s.events).sum();
    assert_eq!(listed as usize, kept.len());
    assert_eq!(retention::purge_before(&app.store, cutoff, true).await.unwrap(), 0, "a second purge has nothing to do");
}

#[tokio::test]
async fn retention_without_transactions_deletes_old_events() {
    let mut rng = StdRng::seed_from_u64(22);
    let app = spawn_app_without_transactions().await;
    let events = random_events(400, &mut rng);
    post_all(&app, &events).await;
    app.drain_queue().await;
    let cutoff = DateTime::parse_rfc3339_str("2026-03-02T00:00:00Z").unwrap();
    retention::purge_before(&app.store, cutoff, false).await.unwrap();
    let kept = kept(&events, cutoff);
    for site in SITES {
        let filter = StatsFilter::site(site);
        assert_eq!(stats::site_stats(&app.store, &filter).await.unwrap(), expected(&kept, &filter));
    }
}

#[tokio::test]
async fn the_worker_purges_events_older_than_its_retention_days() {
    let app = spawn_app().await;
    let now = DateTime::now().timestamp_millis();
    let day = 24 * HOUR_MS;
    let sent: Vec<Sent> = [now - 10 * day, now - 6 * day, now - 4 * day, now - HOUR_MS]
        .into_iter()
        .map(|millis| Sent {
            site: "alpha".into(),
            kind: "page_view".into(),
            path: "/".into(),
            user: "u".into(),
            millis,
        })
        .collect();
    post_all(&app, &sent).await;
    app.drain_queue().await;
    let worker = app.worker(100).with_retention(Some(5));
    assert_eq!(worker.purge_expired().await.unwrap(), 2, "the events of 10 and 6 days ago");
    assert_eq!(stats::site_stats(&app.store, &StatsFilter::site("alpha")).await.unwrap().total_events, 2);
    assert_eq!(app.worker(100).purge_expired().await.unwrap(), 0, "no retention set: nothing deleted");
}
