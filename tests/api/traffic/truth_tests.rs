//! The truth model checked on tiny hand-made cases (pure Rust, no server), so
//! that a failing traffic test points at the server, not at the model.

use std::collections::{BTreeMap, HashMap};

use super::truth::{Event, Filter, Goal, Op, Query, Truth, VISIT_GAP_MS, goal_name, wildcard};

const MIN: i64 = 60_000;
const DAY: i64 = 24 * 60 * MIN;

/// A page view of `visitor` on `site` at `minute`, from `source` (if any).
fn view(seq: u64, visitor: &str, minute: i64, path: &str, source: Option<&str>) -> Event {
    let mut attrs = BTreeMap::new();
    attrs.insert("channel", if source.is_some() { "Referral" } else { "Direct" }.to_string());
    if let Some(source) = source {
        attrs.insert("source", source.to_string());
    }
    Event {
        seq,
        site: "s".into(),
        visitor: visitor.into(),
        millis: DAY + minute * MIN,
        event_type: "page_view".into(),
        path: path.into(),
        hostname: Some("s.example".into()),
        attrs,
        ..Event::default()
    }
}

fn custom(seq: u64, visitor: &str, minute: i64, kind: &str, plan: &str) -> Event {
    let mut event = view(seq, visitor, minute, "/pricing", None);
    event.event_type = kind.into();
    event.props.insert("plan".into(), plan.into());
    event
}

fn truth(events: Vec<Event>) -> Truth {
    Truth::new(events, HashMap::new())
}

/// (visitor, start minute, events) of every visit, sorted.
fn visits(t: &Truth) -> Vec<(String, i64, u64)> {
    let mut v: Vec<_> = t.visits.iter().map(|v| (v.visitor.clone(), (v.start - DAY) / MIN, v.events)).collect();
    v.sort();
    v
}

#[test]
fn a_gap_of_30_minutes_ends_a_visit_and_one_just_under_does_not() {
    let mut just_under = view(2, "a", 0, "/b", None);
    just_under.millis = DAY + VISIT_GAP_MS - 1;
    let t = truth(vec![view(1, "a", 0, "/", None), just_under, view(3, "a", 59, "/c", None)]);
    // 0 → 29:59.999 joins; 29:59.999 → 59:00 is 29:00.001 apart: joins too.
    assert_eq!(visits(&t), [("a".into(), 0, 3)]);
    let t = truth(vec![view(1, "a", 0, "/", None), view(2, "a", 30, "/b", None)]);
    assert_eq!(visits(&t), [("a".into(), 0, 1), ("a".into(), 30, 1)], "exactly 30 minutes: two visits");
}

#[test]
fn visits_do_not_depend_on_arrival_order_and_a_late_event_bridges_two_visits() {
    let events = vec![view(1, "a", 0, "/", None), view(2, "a", 50, "/x", None), view(3, "b", 0, "/", None)];
    assert_eq!(visits(&truth(events.clone())), [("a".into(), 0, 1), ("a".into(), 50, 1), ("b".into(), 0, 1)]);
    let mut with_late = events;
    with_late.push(view(4, "a", 25, "/late", Some("google"))); // arrives last, bridges 0 and 50
    with_late.push(view(5, "b", -20, "/early", Some("g2"))); // arrives last, earlier than b's visit
    let t = truth(with_late.clone());
    assert_eq!(visits(&t), [("a".into(), 0, 3), ("b".into(), -20, 2)]);
    let b = t.visits.iter().find(|v| v.visitor == "b").unwrap();
    assert_eq!((b.entry_page.as_str(), b.attrs.get("source").map(String::as_str)), ("/early", Some("g2")));
    with_late.reverse();
    assert_eq!(visits(&truth(with_late)), visits(&t), "the order of arrival changes nothing");
}

#[test]
fn figures_count_visits_by_start_and_events_by_their_own_time() {
    // a: 23:50 → 00:20 the next day (3 views); b: one view at 10:00 of day 2.
    let mut events = vec![view(1, "a", -10, "/", None), view(2, "a", 5, "/b", None), view(3, "a", 20, "/c", None)];
    events.push(view(4, "b", 600, "/", Some("google")));
    events.push(custom(5, "b", 1_000, "signup", "pro"));
    let t = truth(events);
    let all = t.figures(&Query::site("s"));
    assert_eq!((all.visitors, all.visits, all.pageviews, all.events), (2, 3, 4, 5));
    assert_eq!(all.bounces, 2, "b's two single-event visits");
    assert!((all.bounce_rate() - 66.666).abs() < 0.01);
    assert!((all.visit_duration() - 10.0 * 60.0).abs() < 1e-9, "30 min / 3 visits");
    assert!((all.views_per_visit() - 4.0 / 3.0).abs() < 1e-9);

    let day_two = t.figures(&Query::site("s").range(DAY, 2 * DAY));
    assert_eq!((day_two.visitors, day_two.visits, day_two.pageviews, day_two.events), (1, 2, 3, 4));
    assert_eq!(day_two.duration_ms, 0, "a's visit started the day before: not counted, its events are");
    let day_one = t.figures(&Query::site("s").range(0, DAY));
    assert_eq!((day_one.visitors, day_one.visits, day_one.pageviews, day_one.visit_pageviews), (1, 1, 1, 3));
}

#[test]
fn filters_is_is_not_contains_wildcard_visit_and_event_level() {
    let t = truth(vec![
        view(1, "a", 0, "/blog/one", Some("google")),
        view(2, "a", 1, "/pricing", None),
        view(3, "b", 0, "/", None),
        custom(4, "b", 2, "signup", "pro"),
        view(5, "c", 0, "/blog/two", Some("news.example")),
    ]);
    let count = |filters: &[Filter]| {
        let f = t.figures(&Query { filters: filters.to_vec(), ..Query::site("s") });
        (f.visitors, f.visits, f.events)
    };
    assert_eq!(count(&[Filter::new("source", Op::Is, &["google"])]), (1, 1, 2), "visit-level: the whole visit");
    assert_eq!(count(&[Filter::new("source", Op::IsNot, &["google"])]), (2, 2, 3), "missing matches !=");
    assert_eq!(count(&[Filter::new("source", Op::Contains, &["oo", "news"])]), (2, 2, 3));
    assert_eq!(count(&[Filter::new("source", Op::NotContains, &["oo"])]), (2, 2, 3));
    assert_eq!(
        count(&[Filter::new("page", Op::Is, &["/pricing"])]),
        (2, 2, 2),
        "event-level: its events, their visits"
    );
    assert_eq!(count(&[Filter::new("page", Op::Contains, &["/blog/*"])]), (2, 2, 2), "wildcard");
    assert_eq!(count(&[Filter::new("page", Op::IsNot, &["/pricing"])]), (3, 3, 3));
    assert_eq!(count(&[Filter::new("prop:plan", Op::Is, &["pro"])]), (1, 1, 1));
    let combined = [Filter::new("page", Op::Contains, &["/blog/*"]), Filter::new("source", Op::IsNot, &["google"])];
    assert_eq!(count(&combined), (1, 1, 1));
    assert_eq!(Filter::new("page", Op::Is, &["/a", "/b"]).to_param(), "page==/a|/b");
    assert!(wildcard("/blog/*", "/blog/x") && wildcard("*x*y", "axby") && !wildcard("/blog/*", "/blo"));
    assert!(!wildcard("a*b*c", "abbc_") && wildcard("a*", "a") && !wildcard("ab*ba", "aba"));
}

#[test]
fn breakdown_rows_name_missing_values_sort_by_visitors_then_value() {
    let t = truth(vec![
        view(1, "a", 0, "/", Some("google")),
        view(2, "b", 0, "/", Some("google")),
        view(3, "c", 0, "/x", None),
        view(4, "d", 0, "/y", Some("bing")),
        view(5, "d", 1, "/x", None),
    ]);
    let rows = t.breakdown(&Query::site("s"), "source");
    let got: Vec<(&str, u64, u64)> =
        rows.iter().map(|r| (r.value.as_str(), r.figures.visitors, r.figures.events)).collect();
    assert_eq!(got, [("google", 2, 2), ("Direct / None", 1, 1), ("bing", 1, 2)]);
    let pages = t.breakdown(&Query::site("s"), "page");
    let got: Vec<(&str, u64, u64)> =
        pages.iter().map(|r| (r.value.as_str(), r.figures.visitors, r.figures.pageviews)).collect();
    assert_eq!(got, [("/", 2, 2), ("/x", 2, 2), ("/y", 1, 1)]);
    let country = t.breakdown(&Query::site("s"), "country");
    assert_eq!((country[0].value.as_str(), country[0].figures.visitors), ("(none)", 4));
    let exits = t.breakdown(&Query::site("s"), "exit_page");
    assert_eq!(exits.iter().map(|r| r.value.as_str()).collect::<Vec<_>>(), ["/", "/x"]);
}

#[test]
fn goals_count_conversions_converting_visitors_and_their_rate() {
    let mut goals = HashMap::new();
    goals.insert("s".to_string(), vec![Goal::EventType("signup".into()), Goal::Page("/blog/*".into())]);
    let t = Truth::new(
        vec![
            view(1, "a", 0, "/blog/one", None),
            view(2, "a", 1, "/blog/two", None),
            custom(3, "a", 2, "signup", "pro"),
            view(4, "b", 0, "/", None),
            view(5, "c", 0, "/", None),
            view(6, "d", 0, "/", None),
        ],
        goals,
    );
    let rows = t.breakdown(&Query::site("s"), "goal");
    let got: Vec<_> =
        rows.iter().map(|r| (r.value.as_str(), r.figures.conversions, r.figures.visitors, r.conversion_rate)).collect();
    assert_eq!(got, [("Visit /blog/*", 2, 1, Some(25.0)), ("signup", 1, 1, Some(25.0))]);
    assert_eq!(goal_name(&Goal::EventType("x".into())), "x");
}

#[test]
fn rows_in_a_range_whole_visits_for_visit_level_events_in_range_for_event_level_every_goal() {
    let mut goals = HashMap::new();
    goals.insert("s".to_string(), vec![Goal::EventType("signup".into()), Goal::Page("/blog/*".into())]);
    // a: 23:50 (google) → 00:10 /pricing → 00:20 signup, across midnight; b: 00:30 (bing) → 00:40 /blog/x.
    let t = Truth::new(
        vec![
            view(1, "a", -10, "/", Some("google")),
            view(2, "a", 10, "/pricing", None),
            custom(3, "a", 20, "signup", "pro"),
            view(4, "b", 30, "/", Some("bing")),
            view(5, "b", 40, "/blog/x", None),
        ],
        goals,
    );
    let day_two = Query::site("s").range(DAY, 2 * DAY);
    let sources: Vec<_> = t
        .breakdown(&day_two, "source")
        .iter()
        .map(|r| (r.value.clone(), r.figures.visitors, r.figures.visits, r.figures.pageviews, r.figures.events))
        .collect();
    assert_eq!(sources, [("bing".to_string(), 1, 1, 2, 2)], "a's visit started the day before: no row");
    let all_sources = t.breakdown(&Query::site("s"), "source");
    assert_eq!((all_sources[1].value.as_str(), all_sources[1].figures.pageviews), ("google", 2), "the whole visit's");
    let pages: Vec<_> = t.breakdown(&day_two, "page").iter().map(|r| (r.value.clone(), r.figures.visitors)).collect();
    assert_eq!(pages, [("/", 1), ("/blog/x", 1), ("/pricing", 1)].map(|(p, n)| (p.to_string(), n)), "a counts");
    let goals: Vec<_> = t
        .breakdown(&day_two.clone().filter(Filter::new("source", Op::Is, &["bing"])), "goal")
        .iter()
        .map(|r| (r.value.clone(), r.figures.visitors, r.figures.conversions, r.conversion_rate))
        .collect();
    assert_eq!(goals, [("Visit /blog/*".to_string(), 1, 1, Some(100.0)), ("signup".to_string(), 0, 0, Some(0.0))]);
}

#[test]
fn retention_drops_visits_started_before_the_cutoff_but_counts_their_later_events() {
    let mut t = truth(vec![view(1, "a", 0, "/", None), view(2, "a", 20, "/b", None), view(3, "b", 30, "/", None)]);
    t.apply_retention(DAY + 10 * MIN);
    let f = t.figures(&Query::site("s"));
    assert_eq!((f.visitors, f.visits, f.pageviews, f.events), (1, 1, 2, 2), "a's visit is gone, its 00:20 event stays");
}

#[test]
fn timeseries_buckets_cut_the_range_and_realtime_sees_five_minutes() {
    let t = truth(vec![view(1, "a", 0, "/", None), view(2, "a", 70, "/b", None), view(3, "b", 72, "/", None)]);
    let q = Query::site("s").range(DAY + 30 * MIN, DAY + 150 * MIN);
    let buckets: Vec<(i64, u64, u64)> =
        t.timeseries(&q, 60 * MIN).iter().map(|(start, f)| ((start - DAY) / MIN, f.events, f.visits)).collect();
    assert_eq!(buckets, [(0, 0, 0), (60, 2, 2), (120, 0, 0)]);
    let now = DAY + 74 * MIN;
    let rt = t.realtime("s", now);
    assert_eq!(rt.visitors, 2);
    assert_eq!(rt.pages.into_iter().collect::<Vec<_>>(), [("/".to_string(), 1), ("/b".to_string(), 1)]);
}

#[test]
fn realtime_counts_each_visitor_once_on_the_page_of_their_latest_event() {
    // a: /b then /c (arriving first) then / at the same minute as /c but later
    // in arrival; b: /c. Only the latest event's page counts.
    let t = truth(vec![
        view(3, "a", 72, "/c", None),
        view(1, "a", 70, "/b", None),
        view(4, "a", 72, "/", None),
        view(2, "b", 71, "/c", None),
    ]);
    let rt = t.realtime("s", DAY + 74 * MIN);
    assert_eq!(rt.visitors, 2);
    assert_eq!(rt.pages.into_iter().collect::<Vec<_>>(), [("/".to_string(), 1), ("/c".to_string(), 1)]);
}

#[test]
fn generated_traffic_holds_the_hard_cases() {
    use super::generator::{DAY_MS, generate};
    // Several seeds: the hard cases are there whatever the seed the HTTP tests draw.
    for seed in [1, 2, 3, 42, 4242] {
        let traffic = generate(seed, 0);
        let all = Truth::new(traffic.events(), traffic.goals.clone());
        let on_time: Vec<Event> =
            traffic.sent.iter().filter(|s| !s.is_bot() && !s.late).map(|s| s.event.clone()).collect();
        let before_late = Truth::new(on_time, HashMap::new());
        let crossing = all.visits.iter().filter(|v| v.start.div_euclid(DAY_MS) != v.end.div_euclid(DAY_MS)).count();
        assert!(crossing > 0, "seed {seed}: visits across midnight");
        let late_first = traffic
            .sent
            .iter()
            .enumerate()
            .filter(|(_, s)| s.late && !s.is_bot())
            .filter(|(_, s)| {
                all.visits.iter().any(|v| v.visitor == s.event.visitor && v.start == s.event.millis && v.events > 1)
            })
            .count();
        assert!(late_first > 0, "seed {seed}: late beacons that move a visit's start back");
        // A late beacon that bridges two visits: without the late events, some visitor has more visits.
        let per_visitor = |t: &Truth| {
            let mut m: HashMap<String, usize> = HashMap::new();
            t.visits.iter().for_each(|v| *m.entry(v.visitor.clone()).or_default() += 1);
            m
        };
        let (with, without) = (per_visitor(&all), per_visitor(&before_late));
        assert!(
            without.iter().any(|(who, n)| with.get(who).is_some_and(|w| w < n)),
            "seed {seed}: a late beacon merges two visits"
        );
        let mut times: HashMap<&str, Vec<i64>> = HashMap::new();
        all.events.iter().for_each(|e| times.entry(e.visitor.as_str()).or_default().push(e.millis));
        let gaps: Vec<i64> = times
            .values_mut()
            .flat_map(|t| {
                t.sort();
                t.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
            })
            .collect();
        assert!(gaps.iter().any(|g| (25 * MIN..VISIT_GAP_MS).contains(g)), "seed {seed}: gaps just under 30 minutes");
        assert!(gaps.iter().any(|g| (VISIT_GAP_MS..50 * MIN).contains(g)), "seed {seed}: gaps just over");
    }
}
