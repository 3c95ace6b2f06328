//! Issue #14's exactness test: seeded random traffic (two sites, three UTC
//! days, explicit and anonymous visitors, multi-page visits across hours and
//! midnight, referrers, UTM tags, browsers, countries, custom events, goals,
//! late beacons, a crawler) sent through `POST /event`, then every figure,
//! breakdown, filter, comparison, time series and realtime answer of the stats
//! API compared with an independent truth model (`truth`), under two racing
//! workers, a worker stopped and restarted, and retention.
//!
//! The HTTP tests use only the API of docs/visits.md. Each draws a random
//! seed (printed; `TRAFFIC_SEED=<n>` replays it). The truth model
//! and the generator are tested on their own (`truth_tests`, `generator`).

mod checks;
mod enrichment;
mod generator;
mod truth;
#[cfg(test)]
mod truth_tests;

use std::time::Duration;

use analytics_desk::worker::{Worker, retention};
use mongodb::bson::{DateTime, doc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use self::checks::{check_breakdown, check_realtime, check_stats, check_timeseries, dropped_total, put_goals, send};
use self::generator::{DAY_MS, DAYS, SITES, Sent, Traffic, generate, midnight_days_ago};
use self::truth::{Filter, Op, Query, Truth, VISIT_DIMENSIONS};
use crate::common::eventually;
use crate::helpers::{TestApp, spawn_app_with};

/// The event-level dimensions every breakdown check covers (with the visit-level ones).
const EVENT_DIMENSIONS: [&str; 6] = ["page", "hostname", "event_type", "goal", "prop:plan", "prop:file"];
/// The time-series metrics.
const METRICS: [&str; 6] = ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration"];

/// A fresh app trusting the test client as its proxy (so `X-Forwarded-For`
/// gives each anonymous visitor its address), with small batches.
async fn traffic_app() -> TestApp {
    spawn_app_with(|c| {
        c.trusted_proxies = "127.0.0.1".parse().unwrap();
        c.batch_size = 50;
    })
    .await
}

/// The seed of a test's traffic: `TRAFFIC_SEED` when set (to replay a
/// failure), else a random one; printed, so a failure shows it.
fn traffic_seed() -> u64 {
    let seed = std::env::var("TRAFFIC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("traffic seed {seed} (replay with TRAFFIC_SEED={seed})");
    seed
}

/// Today's traffic: the three whole days before today, from [`traffic_seed`].
fn todays_traffic() -> (u64, Traffic) {
    let seed = traffic_seed();
    (seed, generate(seed, midnight_days_ago(DAYS)))
}

/// Today's traffic (and its seed), its truth, and an app holding its sites' goals.
async fn traffic_with_its_app() -> (u64, Traffic, Truth, TestApp) {
    let (seed, traffic) = todays_traffic();
    let truth = Truth::new(traffic.events(), traffic.goals.clone());
    let app = traffic_app().await;
    for (site, goals) in &traffic.goals {
        put_goals(&app, site, goals).await;
    }
    (seed, traffic, truth, app)
}

fn on_time(traffic: &Traffic) -> Vec<&Sent> {
    traffic.sent.iter().filter(|s| !s.late).collect()
}

fn late(traffic: &Traffic) -> Vec<&Sent> {
    traffic.sent.iter().filter(|s| s.late).collect()
}

/// Moves the queue with two workers racing on it; returns how many each moved.
async fn race_two_workers(app: &TestApp) -> (usize, usize) {
    let drain = |worker: Worker| async move {
        let mut moved = 0;
        for _ in 0..100_000 {
            match worker.process_batch().await.expect("batch moved") {
                0 => return moved,
                n => moved += n,
            }
        }
        panic!("the queue never emptied")
    };
    tokio::join!(drain(app.worker(40)), drain(app.worker(40)))
}

/// The anonymous ids the server derived: one per (site, address, User-Agent),
/// as the truth keys them.
async fn assert_anonymous_ids_are_one_per_browser(app: &TestApp, truth: &Truth) {
    for site in SITES {
        let stored = app.store.events().distinct("user_id", doc! { "site_id": site, "anonymous": true }).await.unwrap();
        let want: std::collections::BTreeSet<&str> =
            truth.events.iter().filter(|e| e.site == site && e.anonymous).map(|e| e.visitor.as_str()).collect();
        assert_eq!(stored.len(), want.len(), "{site}: one anonymous id per address and browser");
    }
}

/// The filters checked, each alone and some combined: visit-level and
/// event-level, is / is not / contains / wildcard, several values.
fn filter_sets() -> Vec<Vec<Filter>> {
    vec![
        vec![Filter::new("source", Op::Is, &["Google"])],
        vec![Filter::new("channel", Op::Is, &["Organic Social", "Email"])],
        vec![Filter::new("country", Op::IsNot, &["DE"])],
        vec![Filter::new("browser", Op::Contains, &["fox"])],
        vec![Filter::new("source", Op::NotContains, &["oogle"])],
        vec![Filter::new("page", Op::Contains, &["/blog/*"])],
        vec![Filter::new("page", Op::Is, &["/pricing"])],
        vec![Filter::new("event_type", Op::Is, &["signup"])],
        vec![Filter::new("prop:plan", Op::Is, &["pro"])],
        vec![Filter::new("entry_page", Op::Is, &["/"])],
        vec![Filter::new("device", Op::Is, &["mobile"]), Filter::new("page", Op::Contains, &["/docs"])],
        vec![
            Filter::new("utm_campaign", Op::Is, &["spring"]),
            Filter::new("hostname", Op::IsNot, &["docs.alpha.example"]),
        ],
    ]
}

/// Every check of the stats API against `truth`: all time, whole days, two
/// days (the anonymous ids carried over midnight), ranges cut inside hours,
/// filters, every breakdown dimension, comparisons, time series.
async fn check_everything(app: &TestApp, truth: &Truth, first_day: i64, rng: &mut StdRng) {
    for site in SITES {
        let all = Query::site(site);
        check_stats(app, truth, &all).await;
        for day in 0..DAYS {
            check_stats(app, truth, &all.clone().range(first_day + day * DAY_MS, first_day + (day + 1) * DAY_MS)).await;
        }
        check_stats(app, truth, &all.clone().range(first_day + DAY_MS, first_day + 3 * DAY_MS)).await;
        for _ in 0..6 {
            let from = first_day + rng.random_range(0..DAYS * DAY_MS);
            let to = from + rng.random_range(60_000..DAY_MS);
            check_stats(app, truth, &all.clone().range(from, to)).await;
        }
        let second_day = all.clone().range(first_day + DAY_MS, first_day + 2 * DAY_MS);
        for filters in filter_sets() {
            for q in [&all, &second_day] {
                check_stats(app, truth, &Query { filters: filters.clone(), ..q.clone() }).await;
            }
        }
        for dimension in VISIT_DIMENSIONS.iter().chain(&EVENT_DIMENSIONS) {
            check_breakdown(app, truth, &all, dimension).await;
            check_breakdown(app, truth, &second_day, dimension).await;
        }
        let filtered = Query { filters: vec![Filter::new("channel", Op::IsNot, &["Direct"])], ..second_day.clone() };
        for dimension in ["source", "page", "country", "goal"] {
            check_breakdown(app, truth, &filtered, dimension).await;
        }
        for metric in METRICS {
            check_timeseries(app, truth, &second_day, "hour", metric).await;
            check_timeseries(app, truth, &all.clone().range(first_day, first_day + DAYS * DAY_MS), "day", metric).await;
        }
    }
}

#[tokio::test]
async fn traffic_figures_are_exact_with_two_racing_workers() {
    let (seed, traffic, truth, app) = traffic_with_its_app().await;

    send(&app, &on_time(&traffic)).await;
    let (a, b) = race_two_workers(&app).await;
    send(&app, &late(&traffic)).await;
    let (c, d) = race_two_workers(&app).await;

    assert_eq!(a + b + c + d, truth.events.len(), "every stored event moved once (bots never queued)");
    assert_eq!(app.events_count().await, truth.events.len() as u64);
    assert_eq!(dropped_total(&app).await, traffic.sent.iter().filter(|s| s.is_bot()).count() as u64, "bots dropped");
    assert_anonymous_ids_are_one_per_browser(&app, &truth).await;
    check_everything(&app, &truth, traffic.first_day, &mut StdRng::seed_from_u64(seed)).await;
}

#[tokio::test]
async fn traffic_figures_are_exact_when_the_worker_stops_and_restarts_midway() {
    let (seed, traffic, truth, app) = traffic_with_its_app().await;
    send(&app, &on_time(&traffic)).await;

    app.engine.start_worker().await.expect("worker starts");
    let started = eventually(Duration::from_secs(60), || async { app.events_count().await > 0 }).await;
    assert!(started, "the worker moved a first batch");
    app.engine.stop_worker().await;
    let moved_before_stop = app.events_count().await;
    send(&app, &late(&traffic)).await;
    app.engine.start_worker().await.expect("worker starts again");
    let total = truth.events.len() as u64;
    let drained = eventually(Duration::from_secs(120), || async {
        app.queue_count().await == 0 && app.events_count().await == total
    });
    assert!(drained.await, "the restarted worker moved the rest (stopped after {moved_before_stop})");
    app.engine.stop_worker().await;

    check_everything(&app, &truth, traffic.first_day, &mut StdRng::seed_from_u64(seed)).await;
}

#[tokio::test]
async fn traffic_figures_are_exact_after_retention() {
    let (_, traffic, mut truth, app) = traffic_with_its_app().await;
    send(&app, &on_time(&traffic)).await;
    send(&app, &late(&traffic)).await;
    app.drain_queue().await;

    // Two days kept: the cut falls inside the history (at the start of an hour).
    // The purge's cut is taken from the clock when it runs: purged again if an
    // hour began meanwhile, until before and after agree.
    let worker = app.worker(100).with_retention(Some(2));
    let mut cutoff = None;
    for _ in 0..3 {
        let before = retention::cutoff(DateTime::now(), 2);
        worker.purge_expired().await.expect("purge");
        if retention::cutoff(DateTime::now(), 2) == before {
            cutoff = Some(before.timestamp_millis());
            break;
        }
    }
    let cutoff = cutoff.expect("the cut stayed put during a purge");
    assert!(truth.events.iter().any(|e| e.millis < cutoff) && truth.events.iter().any(|e| e.millis >= cutoff));
    truth.apply_retention(cutoff);
    assert_eq!(
        app.events_count().await,
        truth.kept.iter().filter(|k| **k).count() as u64,
        "events before the cut deleted"
    );

    let first_kept_day = cutoff.div_euclid(DAY_MS) * DAY_MS + DAY_MS;
    for site in SITES {
        let all = Query::site(site);
        check_stats(&app, &truth, &all).await;
        check_stats(&app, &truth, &all.clone().range(first_kept_day, first_kept_day + DAY_MS)).await;
        check_stats(&app, &truth, &all.clone().range(cutoff, first_kept_day + DAY_MS)).await;
        for dimension in ["source", "channel", "country", "page", "entry_page", "goal"] {
            check_breakdown(&app, &truth, &all, dimension).await;
        }
        let filtered = Query::site(site).filter(Filter::new("source", Op::Is, &["Google", "Facebook"]));
        check_stats(&app, &truth, &filtered).await;
    }
}

#[tokio::test]
async fn realtime_counts_the_visitors_of_the_last_five_minutes() {
    let app = traffic_app().await;
    let now = DateTime::now().timestamp_millis();
    // Recent traffic (some older than 5 minutes, which must not count) for one site.
    let mut traffic = generate(traffic_seed(), 0);
    traffic.sent.retain(|s| s.event.site == "alpha" && !s.is_bot());
    traffic.sent.truncate(60);
    for (i, sent) in traffic.sent.iter_mut().enumerate() {
        // Each event its own millisecond (i * 100 ms < 30 s), so every visitor's
        // latest event is one: ties would be broken by arrival at the server,
        // which concurrent sends do not fix.
        let age = if i % 5 == 0 { 20 * 60_000 } else { (i as i64 % 4) * 30_000 + i as i64 * 100 };
        sent.event.millis = now - age;
        sent.body["timestamp"] = DateTime::from_millis(now - age).try_to_rfc3339_string().unwrap().into();
    }
    let truth = Truth::new(traffic.events(), traffic.goals.clone());
    send(&app, &traffic.sent.iter().collect::<Vec<_>>()).await;
    app.drain_queue().await;

    // The window moves on while the test runs; the check holds for 2.5 minutes
    // after `now`, far longer than it takes.
    let checked_at = DateTime::now().timestamp_millis();
    assert!(checked_at - now < 150_000, "the check ran in time");
    check_realtime(&app, &truth, "alpha", now).await;
    assert!(truth.realtime("alpha", now).visitors > 0);
    check_timeseries(&app, &truth, &Query::site("alpha").range(now - 30 * 60_000, now + 60_000), "minute", "visitors")
        .await;
}
