//! The HTTP side of the traffic tests: sending the generated events through
//! `POST /event`, setting goals, and comparing every answer of the stats API
//! (docs/visits.md §4, read as `serde_json::Value`) with the truth model.
//!
//! Counts are compared exactly. Rates are compared with the exact value within
//! half of the rounding the contract states (`bounce_rate` one decimal,
//! `visit_duration` whole seconds); `views_per_visit`'s rounding is not stated:
//! within 0.05.

use futures_util::StreamExt;
use mongodb::bson::DateTime;
use serde_json::{Value, json};

use super::enrichment::AGENTS;
use super::generator::Sent;
use super::truth::{Figures, Query, Row, Truth};
use crate::helpers::TestApp;

/// Most breakdown rows per page the checks ask for: small, so paging is exercised.
pub const PAGE_LIMIT: usize = 7;

fn rfc3339(millis: i64) -> String {
    DateTime::from_millis(millis).try_to_rfc3339_string().unwrap()
}

/// The query string of `q` (and `extra` parameters).
fn params(q: &Query, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut params = vec![("site_id".to_string(), q.site.clone())];
    if let Some(from) = q.from {
        params.push(("from".into(), rfc3339(from)));
    }
    if let Some(to) = q.to {
        params.push(("to".into(), rfc3339(to)));
    }
    if !q.filters.is_empty() {
        let filters: Vec<String> = q.filters.iter().map(|f| f.to_param()).collect();
        params.push(("filters".into(), filters.join(";")));
    }
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    params
}

/// `GET path?params` as JSON, asserting a 200.
pub async fn get_json(app: &TestApp, path: &str, params: &[(String, String)]) -> Value {
    let response = app.http.get(app.url(path)).query(params).send().await.expect("request sent");
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "GET {path} {params:?}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
}

/// Sends `events` through `POST /event`, 16 at a time (so in no fixed order),
/// each with its browser's `User-Agent` and its client's `X-Forwarded-For`.
/// A crawler's must be answered `202 ignored`, every other `200`.
pub async fn send(app: &TestApp, events: &[&Sent]) {
    let failures: Vec<String> = futures_util::stream::iter(events)
        .map(|sent| async move {
            let response = app
                .http
                .post(app.url("/event"))
                .header("content-type", "application/json")
                .header("user-agent", AGENTS[sent.agent].header)
                .header("x-forwarded-for", &sent.client_ip)
                .body(sent.body.to_string())
                .send()
                .await
                .expect("request sent");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let ok = if sent.is_bot() {
                status == 202 && body == json!({ "status": "ignored", "reason": "bot" })
            } else {
                status == 200
            };
            (!ok).then(|| format!("{status} {body} for {}", sent.body))
        })
        .buffer_unordered(16)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} events answered wrongly, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

/// `PUT /sites/{site}/goals` with `{"goals": [...]}` (the body's shape is
/// this test's reading of the contract), then `GET` gives them back, each
/// with its default display `name` (docs/visits.md §4: the event type, or
/// `Visit <page>`), which the breakdown's goal rows are named by.
pub async fn put_goals(app: &TestApp, site: &str, goals: &[super::truth::Goal]) {
    let body = json!({ "goals": goals.iter().map(|g| g.to_json()).collect::<Vec<_>>() });
    let path = format!("/sites/{site}/goals");
    let response = app.http.put(app.url(&path)).json(&body).send().await.unwrap();
    let status = response.status();
    assert!(status.is_success(), "PUT {path}: {status} {}", response.text().await.unwrap());
    let back = get_json(app, &path, &[]).await;
    let named: Vec<Value> = goals
        .iter()
        .map(|g| {
            let mut goal = g.to_json();
            goal["name"] = json!(super::truth::goal_name(g));
            goal
        })
        .collect();
    assert_eq!(back["goals"], json!(named), "the goals read back, with their default names");
}

fn number(answer: &Value, field: &str, context: &str) -> f64 {
    answer[field].as_f64().unwrap_or_else(|| panic!("{context}: no number {field} in {answer}"))
}

fn count(answer: &Value, field: &str, context: &str) -> u64 {
    answer[field].as_u64().unwrap_or_else(|| panic!("{context}: no count {field} in {answer}"))
}

/// The visit figures of `answer` (a `/stats` answer, a comparison or a breakdown row) equal `want`.
fn assert_visit_figures(answer: &Value, want: &Figures, context: &str) {
    assert_eq!(count(answer, "visitors", context), want.visitors, "{context}: visitors of {answer}");
    assert_eq!(count(answer, "visits", context), want.visits, "{context}: visits of {answer}");
    assert_eq!(count(answer, "pageviews", context), want.pageviews, "{context}: pageviews of {answer}");
    let bounce = number(answer, "bounce_rate", context);
    assert!(
        (bounce - want.bounce_rate()).abs() <= 0.05 + 1e-9,
        "{context}: bounce_rate {bounce}, exact {}",
        want.bounce_rate()
    );
    let duration = number(answer, "visit_duration", context);
    assert!(
        (duration - want.visit_duration()).abs() <= 0.5 + 1e-9,
        "{context}: visit_duration {duration}, exact {}",
        want.visit_duration()
    );
}

/// `GET /stats` of `q` equals the truth (and `compare=previous_period` its previous range).
pub async fn check_stats(app: &TestApp, truth: &Truth, q: &Query) {
    let context = format!("/stats {q:?}");
    let mut extra = Vec::new();
    if q.from.is_some() && q.to.is_some() {
        extra.push(("compare", "previous_period".to_string()));
    }
    let answer = get_json(app, "/stats", &params(q, &extra)).await;
    let want = truth.figures(q);
    assert_visit_figures(&answer, &want, &context);
    let per_visit = number(&answer, "views_per_visit", &context);
    assert!(
        (per_visit - want.views_per_visit()).abs() <= 0.05 + 1e-9,
        "{context}: views_per_visit {per_visit}, exact {}",
        want.views_per_visit()
    );
    if q.filters.is_empty() {
        assert_eq!(count(&answer, "total_events", &context), want.events, "{context}: total_events");
    }
    if let (Some(from), Some(to)) = (q.from, q.to) {
        let previous = Query { from: Some(from - (to - from)), to: Some(from), ..q.clone() };
        let comparison = &answer["comparison"];
        assert_eq!(
            comparison["from"].as_str().map(|s| DateTime::parse_rfc3339_str(s).unwrap().timestamp_millis()),
            previous.from,
            "{context}: comparison.from"
        );
        assert_eq!(
            comparison["to"].as_str().map(|s| DateTime::parse_rfc3339_str(s).unwrap().timestamp_millis()),
            previous.to,
            "{context}: comparison.to"
        );
        assert_visit_figures(comparison, &truth.figures(&previous), &format!("{context} previous period"));
    }
}

/// Every page of `GET /stats/breakdown?dimension=` of `q` ([`PAGE_LIMIT`] rows a page).
pub async fn breakdown_rows(app: &TestApp, q: &Query, dimension: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut page = 1u64;
    for _ in 0..1_000 {
        let extra =
            [("dimension", dimension.to_string()), ("limit", PAGE_LIMIT.to_string()), ("page", page.to_string())];
        let answer = get_json(app, "/stats/breakdown", &params(q, &extra)).await;
        assert_eq!(answer["dimension"], dimension);
        assert_eq!(answer["page"].as_u64(), Some(page));
        let got = answer["rows"].as_array().unwrap_or_else(|| panic!("no rows in {answer}"));
        assert!(got.len() <= PAGE_LIMIT, "a page holds at most limit rows");
        rows.extend(got.iter().cloned());
        match answer["next_page"].as_u64() {
            Some(next) => {
                assert_eq!((next, got.len()), (page + 1, PAGE_LIMIT), "a full page and the next one");
                page = next;
            }
            None => return rows,
        }
    }
    panic!("more than 1,000 pages of {dimension}");
}

/// Every row of the breakdown of `q` by `dimension`, in order, equals the truth's.
pub async fn check_breakdown(app: &TestApp, truth: &Truth, q: &Query, dimension: &str) {
    let context = format!("breakdown {dimension} {q:?}");
    let got = breakdown_rows(app, q, dimension).await;
    let want: Vec<Row> = truth.breakdown(q, dimension);
    let values =
        |rows: &[Value]| rows.iter().map(|r| r["value"].as_str().unwrap_or("?").to_string()).collect::<Vec<_>>();
    let wanted: Vec<String> = want.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values(&got), wanted, "{context}: the rows and their order");
    let visit_level = super::truth::VISIT_DIMENSIONS.contains(&dimension);
    for (row, want) in got.iter().zip(&want) {
        let context = format!("{context}, row {}", want.value);
        assert_eq!(count(row, "visitors", &context), want.figures.visitors, "{context}: visitors {row}");
        if dimension == "goal" {
            assert_eq!(count(row, "conversions", &context), want.figures.conversions, "{context}: conversions");
            let rate = number(row, "conversion_rate", &context);
            let exact = want.conversion_rate.unwrap();
            assert!((rate - exact).abs() <= 0.05 + 1e-9, "{context}: conversion_rate {rate}, exact {exact}");
        } else if visit_level {
            assert_visit_figures(row, &want.figures, &context);
            assert_eq!(count(row, "events", &context), want.figures.events, "{context}: events");
        } else {
            assert_eq!(count(row, "events", &context), want.figures.events, "{context}: events");
            if let Some(pageviews) = row["pageviews"].as_u64() {
                assert_eq!(pageviews, want.figures.pageviews, "{context}: pageviews");
            }
        }
    }
}

/// `GET /stats/timeseries?metric=&interval=` of `q` equals the truth's buckets.
pub async fn check_timeseries(app: &TestApp, truth: &Truth, q: &Query, interval: &str, metric: &str) {
    let context = format!("timeseries {interval} {metric} {q:?}");
    let bucket_ms = match interval {
        "minute" => 60_000,
        "hour" => 3_600_000,
        _ => 86_400_000,
    };
    let answer =
        get_json(app, "/stats/timeseries", &params(q, &[("interval", interval.into()), ("metric", metric.into())]))
            .await;
    let buckets = answer["buckets"].as_array().unwrap_or_else(|| panic!("{context}: no buckets in {answer}"));
    let want = truth.timeseries(q, bucket_ms);
    assert_eq!(buckets.len(), want.len(), "{context}: number of buckets");
    for (bucket, (start, figures)) in buckets.iter().zip(&want) {
        let at = bucket["start"].as_str().map(|s| DateTime::parse_rfc3339_str(s).unwrap().timestamp_millis());
        assert_eq!(at, Some(*start), "{context}: bucket start");
        assert_eq!(bucket["count"].as_u64(), Some(figures.events), "{context}: count at {start}");
        let value = number(bucket, "value", &context);
        let exact = figures.metric(metric);
        let tolerance = match metric {
            "bounce_rate" => 0.05,
            "visit_duration" => 0.5,
            _ => 0.0,
        };
        assert!((value - exact).abs() <= tolerance + 1e-9, "{context}: value {value} at {start}, exact {exact}");
    }
}

/// `GET /stats/realtime` of `site` equals the truth's at about `now` (the events checked are seconds old).
pub async fn check_realtime(app: &TestApp, truth: &Truth, site: &str, now: i64) {
    let answer = get_json(app, "/stats/realtime", &[("site_id".into(), site.into())]).await;
    let want = truth.realtime(site, now);
    assert_eq!(answer["visitors"].as_u64(), Some(want.visitors), "realtime visitors: {answer}");
    let pages = answer["pages"].as_array().unwrap_or_else(|| panic!("no pages in {answer}"));
    let got: std::collections::BTreeMap<String, u64> =
        pages.iter().map(|p| (p["page"].as_str().unwrap().to_string(), p["visitors"].as_u64().unwrap())).collect();
    assert_eq!(got, want.pages, "realtime pages");
}

/// `analytics_events_dropped_total`, summed over its reasons, from `/metrics`.
pub async fn dropped_total(app: &TestApp) -> u64 {
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with("analytics_events_dropped_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
