//! Sessionising, as pure logic (no database): a visitor's events become visits
//! (maximal runs with gaps under [`VISIT_GAP_MS`], see `docs/visits.md` §2), and
//! a batch's new events are merged into the visits already stored, whatever
//! order they arrive in. [`super::visits`] loads and writes what this decides.

use std::collections::BTreeMap;

use mongodb::bson::oid::ObjectId;

/// Two consecutive events of a visitor less than this apart are one visit.
pub const VISIT_GAP_MS: i64 = 30 * 60 * 1000;

/// The visit attributes: a visit's are its first event's, and every event of
/// the visit carries them (replacing its own).
pub const ATTRIBUTES: [&str; 15] = [
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

/// The attributes an event or visit has (absent ones are not in the map).
pub type Attributes = BTreeMap<&'static str, String>;

/// One event as the visits see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The event's `_id` (ties of `timestamp` are ordered by it).
    pub id: ObjectId,
    /// Its `timestamp`, in milliseconds.
    pub at: i64,
    /// Its `path`.
    pub path: String,
    /// True for an `event_type` of `page_view` (counted as a pageview).
    pub page_view: bool,
    /// Its `hostname`, if any.
    pub hostname: Option<String>,
    /// Its own visit attributes (those it would give a visit it starts).
    pub attributes: Attributes,
    /// True when the API derived its `user_id`.
    pub anonymous: bool,
}

impl Hit {
    fn order(&self) -> (i64, ObjectId) {
        (self.at, self.id)
    }
}

/// A visit's first or last event: when, which, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The event's timestamp in milliseconds.
    pub at: i64,
    /// The event's `_id` (breaks ties of `at`).
    pub id: ObjectId,
    /// The event's path (entry or exit page).
    pub path: String,
}

impl Edge {
    fn order(&self) -> (i64, ObjectId) {
        (self.at, self.id)
    }
}

/// One visit of one visitor (its site and user are the caller's).
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    /// The visit's `_id`: kept through merges (see `docs/visits.md`).
    pub id: ObjectId,
    /// The first event (`start`, `entry_page`).
    pub entry: Edge,
    /// The last event (`end`, `exit_page`).
    pub exit: Edge,
    /// Events with `event_type` `page_view`.
    pub pageviews: u64,
    /// All events.
    pub events: u64,
    /// The first event's hostname.
    pub hostname: Option<String>,
    /// The first event's attributes.
    pub attributes: Attributes,
    /// True when the visitor's id is an anonymous one.
    pub anonymous: bool,
}

impl Visit {
    /// A visit of one event.
    pub fn of(hit: &Hit) -> Visit {
        let edge = Edge { at: hit.at, id: hit.id, path: hit.path.clone() };
        Visit {
            id: hit.id,
            entry: edge.clone(),
            exit: edge,
            pageviews: u64::from(hit.page_view),
            events: 1,
            hostname: hit.hostname.clone(),
            attributes: hit.attributes.clone(),
            anonymous: hit.anonymous,
        }
    }

    /// `end - start`.
    pub fn duration_ms(&self) -> i64 {
        self.exit.at - self.entry.at
    }

    /// A single-event visit.
    pub fn bounced(&self) -> bool {
        self.events == 1
    }

    /// Takes `other` in (the two are one visit now); the id is the caller's to choose.
    fn absorb(&mut self, other: &Visit) {
        if other.entry.order() < self.entry.order() {
            self.entry = other.entry.clone();
            self.hostname = other.hostname.clone();
            self.attributes = other.attributes.clone();
        }
        if other.exit.order() > self.exit.order() {
            self.exit = other.exit.clone();
        }
        self.pageviews += other.pageviews;
        self.events += other.events;
        self.anonymous |= other.anonymous;
    }
}

/// One visit a batch made or changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The visit as it is now.
    pub visit: Visit,
    /// The stored visits it replaces (as they were), its own former self included.
    pub replaced: Vec<Visit>,
    /// The batch's events in it.
    pub hits: Vec<ObjectId>,
}

impl Merged {
    /// The replaced visits other than the one whose `_id` is kept: to delete.
    pub fn deleted(&self) -> impl Iterator<Item = &Visit> {
        self.replaced.iter().filter(|old| old.id != self.visit.id)
    }

    /// True when stored events of this visit must be rewritten: visits merged
    /// into it, or its attributes changed (an earlier event became its first).
    pub fn rewrites_stored_events(&self) -> bool {
        self.replaced.iter().any(|old| old.id != self.visit.id || old.attributes != self.visit.attributes)
    }
}

/// Merges one visitor's new events (`hits`, any order) into their stored
/// visits that can touch them (`stored`: at least those within
/// [`VISIT_GAP_MS`] of the hits' span). Returns only the visits that changed or
/// are new; stored visits that absorbed nothing are not returned.
pub fn merge(stored: Vec<Visit>, mut hits: Vec<Hit>) -> Vec<Merged> {
    hits.sort_by_key(Hit::order);
    // Blocks in start order: a stored visit, or one new event.
    enum Block {
        Stored(Visit),
        New(Hit),
    }
    let start = |block: &Block| match block {
        Block::Stored(visit) => visit.entry.order(),
        Block::New(hit) => hit.order(),
    };
    let mut blocks: Vec<Block> =
        stored.into_iter().map(Block::Stored).chain(hits.into_iter().map(Block::New)).collect();
    blocks.sort_by_key(|block| start(block));

    let mut merged: Vec<Merged> = Vec::new();
    let mut current: Option<Merged> = None;
    for block in blocks {
        let block_visit = match &block {
            Block::Stored(visit) => visit.clone(),
            Block::New(hit) => Visit::of(hit),
        };
        // Sorted by start, so the union of runs whose spans come within the gap
        // is one run (a block starting inside the current one always joins).
        let joins = current.as_ref().is_some_and(|run| block_visit.entry.at - run.visit.exit.at < VISIT_GAP_MS);
        if !joins {
            merged.extend(current.take());
        }
        let run = current.get_or_insert_with(|| Merged {
            visit: block_visit.clone(),
            replaced: Vec::new(),
            hits: Vec::new(),
        });
        let first_of_run = run.replaced.is_empty() && run.hits.is_empty();
        if !first_of_run {
            run.visit.absorb(&block_visit);
        }
        match block {
            Block::Stored(visit) => run.replaced.push(visit),
            Block::New(hit) => run.hits.push(hit.id),
        }
    }
    merged.extend(current);
    for run in &mut merged {
        // The earliest-starting stored visit keeps its `_id`; a new visit takes
        // its first event's (the run's start when no stored visit is in it).
        run.visit.id = match run.replaced.iter().min_by_key(|old| old.entry.order()) {
            Some(old) => old.id,
            None => run.visit.entry.id,
        };
    }
    merged.retain(|run| !run.hits.is_empty());
    merged
}

/// All of one visitor's events sessionised at once (the reference the
/// batch-by-batch [`merge`] must agree with).
pub fn sessionize(hits: Vec<Hit>) -> Vec<Visit> {
    merge(Vec::new(), hits).into_iter().map(|run| run.visit).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MINUTE: i64 = 60_000;

    fn hit(n: u8, at_minutes: i64, path: &str, source: &str) -> Hit {
        let mut bytes = [0u8; 12];
        bytes[11] = n;
        Hit {
            id: ObjectId::from_bytes(bytes),
            at: at_minutes * MINUTE,
            path: path.to_string(),
            page_view: !n.is_multiple_of(3),
            hostname: Some("example.com".into()),
            attributes: Attributes::from([("source", source.to_string())]),
            anonymous: false,
        }
    }

    #[test]
    fn gaps_under_thirty_minutes_make_one_visit() {
        let visits = sessionize(vec![hit(2, 10, "/b", "s2"), hit(1, 0, "/a", "s1"), hit(4, 39, "/c", "s3")]);
        assert_eq!(visits.len(), 1);
        let visit = &visits[0];
        assert_eq!((visit.entry.path.as_str(), visit.exit.path.as_str()), ("/a", "/c"));
        assert_eq!((visit.events, visit.duration_ms(), visit.attributes["source"].as_str()), (3, 39 * MINUTE, "s1"));
        assert_eq!(sessionize(vec![hit(1, 0, "/a", "s"), hit(2, 30, "/b", "s")]).len(), 2, "30 minutes apart: two");
    }

    #[test]
    fn a_late_event_bridging_two_visits_merges_them_keeping_the_earlier_id() {
        let stored = sessionize(vec![hit(1, 0, "/a", "s1"), hit(2, 50, "/b", "s2")]);
        assert_eq!(stored.len(), 2);
        let merged = merge(stored.clone(), vec![hit(3, 25, "/m", "s3")]);
        assert_eq!(merged.len(), 1);
        let run = &merged[0];
        assert_eq!((run.visit.id, run.visit.events), (stored[0].id, 3));
        assert_eq!(run.deleted().map(|v| v.id).collect::<Vec<_>>(), [stored[1].id]);
        assert!(run.rewrites_stored_events());
        let late_entry = merge(stored[1..].to_vec(), vec![hit(9, 40, "/early", "s9")]);
        assert_eq!(late_entry[0].visit.entry.path, "/early");
        assert_eq!((late_entry[0].visit.id, late_entry[0].visit.attributes["source"].as_str()), (stored[1].id, "s9"));
        assert!(late_entry[0].rewrites_stored_events(), "attributes moved: stored events change");
        let extended = merge(stored[1..].to_vec(), vec![hit(10, 60, "/later", "s10")]);
        assert!(!extended[0].rewrites_stored_events(), "a later event changes no stored event");
    }

    fn arb_hits() -> impl Strategy<Value = Vec<Hit>> {
        // Few minutes apart or far: gaps around the 30-minute edge and ties.
        proptest::collection::vec((0i64..240, 0u8..4, any::<bool>()), 1..40).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (minute, path, view))| {
                    let mut h = hit(i as u8, minute, &format!("/p{path}"), &format!("s{i}"));
                    h.page_view = view;
                    // Two hours before midnight to two after: visits across days.
                    h.at += 86_400_000 - 120 * MINUTE;
                    h
                })
                .collect()
        })
    }

    /// A visit without its `_id` (which depends on arrival order by design).
    fn shape(visit: &Visit) -> (Edge, Edge, u64, u64, Attributes) {
        (visit.entry.clone(), visit.exit.clone(), visit.pageviews, visit.events, visit.attributes.clone())
    }

    proptest! {
        #[test]
        fn batches_in_any_order_give_the_visits_of_all_events_at_once(
            hits in arb_hits(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            order in any::<prop::sample::Index>(),
        ) {
            // Random arrival order and batch split.
            let mut arrival = hits.clone();
            let rotate = order.index(arrival.len());
            arrival.rotate_left(rotate);
            if order.index(2) == 1 { arrival.reverse(); }
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(arrival.len() + 1)).collect();
            cuts.push(0);
            cuts.push(arrival.len());
            cuts.sort();
            let mut stored: Vec<Visit> = Vec::new();
            let mut daily: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
            for window in cuts.windows(2) {
                let batch = arrival[window[0]..window[1]].to_vec();
                if batch.is_empty() { continue; }
                // What the worker loads: visits within the gap of one of the batch's events.
                let (near, far): (Vec<Visit>, Vec<Visit>) = stored.into_iter().partition(|v| {
                    batch.iter().any(|h| v.exit.at >= h.at - VISIT_GAP_MS && v.entry.at <= h.at + VISIT_GAP_MS)
                });
                stored = far;
                let untouched: Vec<Visit> = near.clone();
                let runs = merge(near, batch);
                let replaced: Vec<ObjectId> = runs.iter().flat_map(|r| r.replaced.iter().map(|v| v.id)).collect();
                stored.extend(untouched.into_iter().filter(|v| !replaced.contains(&v.id)));
                for run in runs {
                    for old in &run.replaced {
                        let day = daily.entry(old.entry.at.div_euclid(86_400_000)).or_default();
                        day.0 -= 1;
                        day.1 -= old.duration_ms();
                    }
                    let day = daily.entry(run.visit.entry.at.div_euclid(86_400_000)).or_default();
                    day.0 += 1;
                    day.1 += run.visit.duration_ms();
                    stored.push(run.visit);
                }
            }
            stored.sort_by_key(|v| v.entry.at);
            let all_at_once = sessionize(hits);
            prop_assert_eq!(stored.iter().map(shape).collect::<Vec<_>>(), all_at_once.iter().map(shape).collect::<Vec<_>>());
            let mut expected: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
            for v in &all_at_once {
                let day = expected.entry(v.entry.at.div_euclid(86_400_000)).or_default();
                day.0 += 1;
                day.1 += v.duration_ms();
            }
            daily.retain(|_, d| *d != (0, 0));
            prop_assert_eq!(daily, expected, "the deltas sum to the daily figures");
        }
    }
}
