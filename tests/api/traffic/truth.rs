//! The independent truth model of issue #14's figures: plain Rust over the
//! events the generator made, written from docs/visits.md (never from the
//! server's code). It sessionises by the contract's rule (a visit is a maximal
//! run of one visitor's events less than 30 minutes apart, by timestamp, ties
//! by arrival), then computes every figure, breakdown row, filter, goal,
//! time-series bucket and realtime answer the HTTP API must give.
//!
//! Where the contract leaves a choice open, the choice is written here once:
//! - a range selects visits by `start` and events by `timestamp`; an
//!   event-level filter keeps the visits (started in range) holding at least
//!   one selected event, and a selected event is in the range too;
//! - a visit-level breakdown row (`source`, `entry_page`, ...) groups the
//!   query's visits by their value: one row per value with a visit, its
//!   figures those of its visits, whole (`pageviews`, `events`: Σ over them);
//! - an event-level row (`page`, `hostname`, `event_type`, `prop:<key>`)
//!   groups the query's events (in range): visitors are the distinct visitors
//!   of its events; a missing value is `(none)` (`Direct / None` for
//!   `source`, `Direct` for `channel`);
//! - `!=` and `!~` match a missing value, `==` and `=~` never do; a value with
//!   `*` is a whole-value wildcard (`*` any run of characters, `/` included);
//! - a goal's row is named by [`goal_name`]; every goal of the site has one
//!   (0 when nothing converts); its visitors are the distinct visitors of its
//!   conversions (the query's matching events), its rate those over the
//!   query's visitors;
//! - `bounced` is a single-event visit (the contract's rule, not the issue's
//!   "one pageview").

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Minutes of silence that end a visit (docs/visits.md §2).
pub const VISIT_GAP_MS: i64 = 30 * 60 * 1000;
/// The window of `GET /stats/realtime`.
pub const REALTIME_MS: i64 = 5 * 60 * 1000;
/// The visit-level dimensions (carried by a visit's events).
pub const VISIT_DIMENSIONS: [&str; 17] = [
    "entry_page",
    "exit_page",
    "source",
    "referrer",
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "country",
    "region",
    "city",
    "browser",
    "browser_version",
    "os",
    "device",
];

/// One event as the truth sees it: what was sent, plus the enrichment the
/// table says ingestion makes of it.
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// Order of arrival: breaks timestamp ties, as the server's `_id` does.
    pub seq: u64,
    pub site: String,
    /// The `user_id` sent, or a key standing for the id the server derives
    /// (one per site, address and User-Agent).
    pub visitor: String,
    pub anonymous: bool,
    pub millis: i64,
    pub event_type: String,
    pub path: String,
    pub hostname: Option<String>,
    pub props: BTreeMap<String, String>,
    /// The event's own visit attributes (`source` … `device`); a visit takes its first event's.
    pub attrs: BTreeMap<&'static str, String>,
}

/// One visit, as the `visits` collection must hold it.
#[derive(Debug, Clone)]
pub struct Visit {
    pub site: String,
    pub visitor: String,
    pub start: i64,
    pub end: i64,
    pub entry_page: String,
    pub exit_page: String,
    pub pageviews: u64,
    pub events: u64,
    pub attrs: BTreeMap<&'static str, String>,
    /// False once retention deleted it (its later events stay).
    pub kept: bool,
}

impl Visit {
    /// The visit's value of a visit-level dimension.
    pub fn value(&self, dimension: &str) -> Option<String> {
        match dimension {
            "entry_page" => Some(self.entry_page.clone()),
            "exit_page" => Some(self.exit_page.clone()),
            other => self.attrs.get(other).cloned(),
        }
    }
}

/// A site's goal (docs/visits.md §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    EventType(String),
    Page(String),
}

impl Goal {
    /// The goal as `PUT /sites/{site}/goals` takes it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Goal::EventType(kind) => serde_json::json!({ "event_type": kind }),
            Goal::Page(pattern) => serde_json::json!({ "page": pattern }),
        }
    }

    fn matches(&self, event: &Event) -> bool {
        match self {
            Goal::EventType(kind) => &event.event_type == kind,
            Goal::Page(pattern) => event.event_type == "page_view" && wildcard(pattern, &event.path),
        }
    }
}

/// The `value` of a goal's breakdown row (the contract names none: the event
/// type, or `Visit <pattern>` as Plausible names page goals).
pub fn goal_name(goal: &Goal) -> String {
    match goal {
        Goal::EventType(kind) => kind.clone(),
        Goal::Page(pattern) => format!("Visit {pattern}"),
    }
}

/// A filter's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Is,
    IsNot,
    Contains,
    NotContains,
}

/// One filter of `filters=`.
#[derive(Debug, Clone)]
pub struct Filter {
    pub dimension: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Filter {
    pub fn new(dimension: &str, op: Op, values: &[&str]) -> Filter {
        Filter { dimension: dimension.into(), op, values: values.iter().map(|v| v.to_string()).collect() }
    }

    /// The filter as written in `filters=`.
    pub fn to_param(&self) -> String {
        let op = match self.op {
            Op::Is => "==",
            Op::IsNot => "!=",
            Op::Contains => "=~",
            Op::NotContains => "!~",
        };
        format!("{}{op}{}", self.dimension, self.values.join("|"))
    }

    fn matches(&self, value: Option<&str>) -> bool {
        let hit = |v: &String, value: &str| match self.op {
            Op::Is | Op::IsNot => v == value,
            Op::Contains | Op::NotContains if v.contains('*') => wildcard(v, value),
            Op::Contains | Op::NotContains => value.contains(v.as_str()),
        };
        let any = value.is_some_and(|value| self.values.iter().any(|v| hit(v, value)));
        match self.op {
            Op::Is | Op::Contains => any,
            Op::IsNot | Op::NotContains => !any,
        }
    }

    fn is_visit_level(&self) -> bool {
        VISIT_DIMENSIONS.contains(&self.dimension.as_str())
    }
}

/// A whole-value match where `*` is any run of characters.
pub fn wildcard(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || value.len() < first.len() + last.len() || !value.ends_with(last) {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// What a stats route is asked: a site, a range (`from` inclusive, `to` exclusive, ms) and filters.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub site: String,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub filters: Vec<Filter>,
}

impl Query {
    pub fn site(site: &str) -> Query {
        Query { site: site.into(), ..Query::default() }
    }

    pub fn range(mut self, from: i64, to: i64) -> Query {
        (self.from, self.to) = (Some(from), Some(to));
        self
    }

    pub fn filter(mut self, filter: Filter) -> Query {
        self.filters.push(filter);
        self
    }

    fn in_range(&self, millis: i64) -> bool {
        self.from.is_none_or(|from| millis >= from) && self.to.is_none_or(|to| millis < to)
    }
}

/// The figures of a query (or of a breakdown row, or a bucket).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub visitors: u64,
    pub visits: u64,
    pub pageviews: u64,
    pub events: u64,
    pub bounces: u64,
    pub duration_ms: i64,
    pub visit_pageviews: u64,
    /// Events matching the goal (goal rows only).
    pub conversions: u64,
}

impl Figures {
    /// Percent of bounced visits, exact (the API rounds to one decimal); 0 without visits.
    pub fn bounce_rate(&self) -> f64 {
        if self.visits == 0 { 0.0 } else { 100.0 * self.bounces as f64 / self.visits as f64 }
    }

    /// Mean visit duration in seconds, exact (the API rounds to whole seconds).
    pub fn visit_duration(&self) -> f64 {
        if self.visits == 0 { 0.0 } else { self.duration_ms as f64 / 1000.0 / self.visits as f64 }
    }

    /// Σ visit pageviews / visits, exact.
    pub fn views_per_visit(&self) -> f64 {
        if self.visits == 0 { 0.0 } else { self.visit_pageviews as f64 / self.visits as f64 }
    }

    /// The value of a time series' `metric=`.
    pub fn metric(&self, metric: &str) -> f64 {
        match metric {
            "visitors" => self.visitors as f64,
            "visits" => self.visits as f64,
            "pageviews" => self.pageviews as f64,
            "events" => self.events as f64,
            "bounce_rate" => self.bounce_rate(),
            "visit_duration" => self.visit_duration(),
            other => panic!("no metric {other}"),
        }
    }
}

/// One breakdown row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub value: String,
    pub figures: Figures,
    /// Goal rows: converting visitors / all visitors of the query, percent, exact.
    pub conversion_rate: Option<f64>,
}

/// What `GET /stats/realtime` must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realtime {
    pub visitors: u64,
    pub pages: BTreeMap<String, u64>,
}

/// The generated events, their visits, the sites' goals and what retention deleted.
pub struct Truth {
    pub events: Vec<Event>,
    pub visits: Vec<Visit>,
    /// The visit of each event (index into `visits`).
    pub visit_of: Vec<usize>,
    /// Events still stored (retention deletes those before its cutoff).
    pub kept: Vec<bool>,
    pub goals: HashMap<String, Vec<Goal>>,
}

impl Truth {
    /// Sessionises `events` by the contract's rule.
    pub fn new(events: Vec<Event>, goals: HashMap<String, Vec<Goal>>) -> Truth {
        let mut by_visitor: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            by_visitor.entry((&e.site, &e.visitor)).or_default().push(i);
        }
        let mut visits = Vec::new();
        let mut visit_of = vec![usize::MAX; events.len()];
        for indices in by_visitor.into_values() {
            let mut sorted = indices;
            sorted.sort_by_key(|&i| (events[i].millis, events[i].seq));
            let mut run: Vec<usize> = Vec::new();
            for i in sorted {
                if let Some(&last) = run.last()
                    && events[i].millis - events[last].millis >= VISIT_GAP_MS
                {
                    close_visit(&events, &mut run, &mut visits, &mut visit_of);
                }
                run.push(i);
            }
            close_visit(&events, &mut run, &mut visits, &mut visit_of);
        }
        let kept = vec![true; events.len()];
        Truth { events, visits, visit_of, kept, goals }
    }

    /// Applies retention: events before `cutoff` deleted, visits starting before it deleted.
    pub fn apply_retention(&mut self, cutoff: i64) {
        for (i, e) in self.events.iter().enumerate() {
            self.kept[i] &= e.millis >= cutoff;
        }
        for v in &mut self.visits {
            v.kept &= v.start >= cutoff;
        }
    }

    fn event_value(&self, i: usize, dimension: &str) -> Option<String> {
        let e = &self.events[i];
        match dimension {
            "page" => Some(e.path.clone()),
            "hostname" => e.hostname.clone(),
            "event_type" => Some(e.event_type.clone()),
            d if d.starts_with("prop:") => e.props.get(&d[5..]).cloned(),
            d => self.visits[self.visit_of[i]].value(d),
        }
    }

    /// The events and visits a query selects.
    fn select(&self, q: &Query) -> (Vec<usize>, Vec<usize>) {
        // An entry/exit page filter holds on a visit still stored (retention
        // keeps a deleted visit's later events, which then have no entry page).
        let visit_pages = q.filters.iter().any(|f| matches!(f.dimension.as_str(), "entry_page" | "exit_page"));
        let visit_ok = |v: usize| {
            let visit = &self.visits[v];
            (!visit_pages || visit.kept)
                && q.filters
                    .iter()
                    .filter(|f| f.is_visit_level())
                    .all(|f| f.matches(visit.value(&f.dimension).as_deref()))
        };
        let event_level = q.filters.iter().any(|f| !f.is_visit_level());
        let events: Vec<usize> = (0..self.events.len())
            .filter(|&i| self.kept[i] && self.events[i].site == q.site && q.in_range(self.events[i].millis))
            .filter(|&i| visit_ok(self.visit_of[i]))
            .filter(|&i| {
                q.filters
                    .iter()
                    .filter(|f| !f.is_visit_level())
                    .all(|f| f.matches(self.event_value(i, &f.dimension).as_deref()))
            })
            .collect();
        let holding: BTreeSet<usize> = events.iter().map(|&i| self.visit_of[i]).collect();
        let visits = (0..self.visits.len())
            .filter(|&v| self.visits[v].kept && self.visits[v].site == q.site && q.in_range(self.visits[v].start))
            .filter(|&v| visit_ok(v) && (!event_level || holding.contains(&v)))
            .collect();
        (events, visits)
    }

    /// `GET /stats`'s figures.
    pub fn figures(&self, q: &Query) -> Figures {
        let (events, visits) = self.select(q);
        let visitors: BTreeSet<&str> = visits.iter().map(|&v| self.visits[v].visitor.as_str()).collect();
        let mut figures = Figures {
            visitors: visitors.len() as u64,
            visits: visits.len() as u64,
            events: events.len() as u64,
            pageviews: events.iter().filter(|&&i| self.events[i].event_type == "page_view").count() as u64,
            ..Figures::default()
        };
        for &v in &visits {
            let visit = &self.visits[v];
            figures.bounces += u64::from(visit.events == 1);
            figures.duration_ms += visit.end - visit.start;
            figures.visit_pageviews += visit.pageviews;
        }
        figures
    }

    /// Every row of `GET /stats/breakdown?dimension=`, sorted (visitors desc, value asc).
    pub fn breakdown(&self, q: &Query, dimension: &str) -> Vec<Row> {
        let (events, visits) = self.select(q);
        let mut rows = Vec::new();
        if dimension == "goal" {
            let total = self.figures(q).visitors;
            for goal in self.goals.get(&q.site).into_iter().flatten() {
                let converted: Vec<usize> = events.iter().copied().filter(|&i| goal.matches(&self.events[i])).collect();
                let figures = self.event_row_figures(&converted);
                let rate = if total == 0 { 0.0 } else { 100.0 * figures.visitors as f64 / total as f64 };
                let figures = Figures { conversions: figures.events, ..figures };
                rows.push(Row { value: goal_name(goal), figures, conversion_rate: Some(rate) });
            }
        } else if VISIT_DIMENSIONS.contains(&dimension) {
            let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for &v in &visits {
                groups.entry(shown(dimension, self.visits[v].value(dimension))).or_default().push(v);
            }
            for (value, visits) in groups {
                rows.push(Row { value, figures: self.visit_row_figures(&visits), conversion_rate: None });
            }
        } else {
            let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for &i in &events {
                groups.entry(shown(dimension, self.event_value(i, dimension))).or_default().push(i);
            }
            for (value, events) in groups {
                rows.push(Row { value, figures: self.event_row_figures(&events), conversion_rate: None });
            }
        }
        rows.sort_by(|a, b| b.figures.visitors.cmp(&a.figures.visitors).then_with(|| a.value.cmp(&b.value)));
        rows
    }

    /// A visit-level row: the figures of its visits, whole (their pageviews
    /// and events too, wherever those fall).
    fn visit_row_figures(&self, visits: &[usize]) -> Figures {
        let visitors: BTreeSet<&str> = visits.iter().map(|&v| self.visits[v].visitor.as_str()).collect();
        let mut figures =
            Figures { visitors: visitors.len() as u64, visits: visits.len() as u64, ..Figures::default() };
        for &v in visits {
            let visit = &self.visits[v];
            figures.bounces += u64::from(visit.events == 1);
            figures.duration_ms += visit.end - visit.start;
            figures.visit_pageviews += visit.pageviews;
            figures.pageviews += visit.pageviews;
            figures.events += visit.events;
        }
        figures
    }

    /// An event-level row: its events, their pageviews and distinct visitors.
    fn event_row_figures(&self, events: &[usize]) -> Figures {
        let visitors: BTreeSet<&str> = events.iter().map(|&i| self.events[i].visitor.as_str()).collect();
        Figures {
            visitors: visitors.len() as u64,
            events: events.len() as u64,
            pageviews: events.iter().filter(|&&i| self.events[i].event_type == "page_view").count() as u64,
            ..Figures::default()
        }
    }

    /// The buckets of `GET /stats/timeseries` over `[from, to)`: (start, figures of the bucket's part of the range).
    pub fn timeseries(&self, q: &Query, bucket_ms: i64) -> Vec<(i64, Figures)> {
        let (from, to) = (q.from.expect("a time series needs from"), q.to.expect("and to"));
        let mut buckets = Vec::new();
        let mut start = from.div_euclid(bucket_ms) * bucket_ms;
        while start < to {
            let part = Query { from: Some(start.max(from)), to: Some((start + bucket_ms).min(to)), ..q.clone() };
            buckets.push((start, self.figures(&part)));
            start += bucket_ms;
        }
        buckets
    }

    /// `GET /stats/realtime` at `now`: visitors of the events in the last 5
    /// minutes, and the page each is on (the path of their latest event, by
    /// timestamp, ties by arrival), so each visitor counts on one page.
    pub fn realtime(&self, site: &str, now: i64) -> Realtime {
        let mut latest: BTreeMap<&str, &Event> = BTreeMap::new();
        let recent = (0..self.events.len())
            .filter(|&i| self.kept[i])
            .map(|i| &self.events[i])
            .filter(|e| e.site == site && e.millis > now - REALTIME_MS && e.millis <= now);
        for e in recent {
            let newest = latest.entry(&e.visitor).or_insert(e);
            if (e.millis, e.seq) > (newest.millis, newest.seq) {
                *newest = e;
            }
        }
        let mut pages: BTreeMap<String, u64> = BTreeMap::new();
        for e in latest.values() {
            *pages.entry(e.path.clone()).or_default() += 1;
        }
        Realtime { visitors: latest.len() as u64, pages }
    }
}

/// A value as a breakdown row shows it.
pub fn shown(dimension: &str, value: Option<String>) -> String {
    value.unwrap_or_else(|| match dimension {
        "source" => "Direct / None".into(),
        "channel" => "Direct".into(),
        _ => "(none)".into(),
    })
}

fn close_visit(events: &[Event], run: &mut Vec<usize>, visits: &mut Vec<Visit>, visit_of: &mut [usize]) {
    let (Some(&first), Some(&last)) = (run.first(), run.last()) else { return };
    let (first, last) = (&events[first], &events[last]);
    for &i in run.iter() {
        visit_of[i] = visits.len();
    }
    visits.push(Visit {
        site: first.site.clone(),
        visitor: first.visitor.clone(),
        start: first.millis,
        end: last.millis,
        entry_page: first.path.clone(),
        exit_page: last.path.clone(),
        pageviews: run.iter().filter(|&&i| events[i].event_type == "page_view").count() as u64,
        events: run.len() as u64,
        attrs: first.attrs.clone(),
        kept: true,
    });
    run.clear();
}
