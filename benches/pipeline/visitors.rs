//! Realistic visitor traffic for issue #14's phases: one site over 30 days, in
//! multi-event visits, by about one distinct visitor per 10 events (100,000 at
//! 1M): nine visits in ten by anonymous visitors whose ids are new every day
//! (`anon-<day>-<n>`, `anonymous: true`, as daily salts make them), one in ten
//! by members with an explicit `user_id` who come back across days. Each queue
//! document carries the enrichment ingestion would have stored (hostname,
//! referrer, source, channel, UTM, country, browser, OS, device): a visit's
//! first event its origin, the later ones a self-referral (`Direct`).
//! The same sequence every time (a fixed seed).

use std::collections::{HashMap, HashSet};

use mongodb::Collection;
use mongodb::bson::{DateTime, Document, doc};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::dataset::{INSERT_BATCH_DOCS, SITE};

/// Days of history.
pub const DAYS: i64 = 30;
/// A day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// The seed of the sequence.
const SEED: u64 = 14;
/// Share of visits by members (explicit, repeating `user_id`s).
const MEMBER_SHARE: f64 = 0.1;
/// Visits per anonymous id and per member, on average (see [`VisitorTraffic::new`]).
const VISITS_PER_VISITOR: f64 = 3.3;

/// (referrer, source, channel, utm_campaign) of a visit's first event; `None`s are absent fields.
type Origin = (Option<&'static str>, Option<&'static str>, &'static str, Option<&'static str>);

/// Where visits come from (Google twice: the most common source, as on real sites).
const ORIGINS: [Origin; 6] = [
    (None, None, "Direct", None),
    (Some("google.com/search"), Some("Google"), "Organic Search", None),
    (Some("google.com/search"), Some("Google"), "Organic Search", None),
    (Some("m.facebook.com/story.php"), Some("Facebook"), "Organic Social", None),
    (Some("blog.example.org/posts/tools"), Some("blog.example.org"), "Referral", None),
    (None, Some("newsletter"), "Email", Some("spring")),
];
/// (browser, browser_version, os, device).
const AGENTS: [(&str, &str, &str, &str); 4] = [
    ("Chrome", "130", "Windows", "desktop"),
    ("Firefox", "128", "Windows", "desktop"),
    ("Safari", "17", "iOS", "mobile"),
    ("Chrome", "130", "Android", "mobile"),
];
const COUNTRIES: [&str; 6] = ["US", "DE", "GB", "FR", "JP", "BR"];

/// The generator: visits, each expanded into its events, shuffled a batch at a time.
pub struct VisitorTraffic {
    rng: StdRng,
    now_ms: i64,
    anonymous_per_day: u64,
    members: u64,
    pending: Vec<Document>,
}

/// What the harness knows of the generated events: the figures the API must give.
#[derive(Default)]
pub struct VisitorTally {
    pub events: u64,
    pub pageviews: u64,
    pub visitors: HashSet<String>,
    /// Per UTC day (ms of its midnight): events and distinct visitors.
    pub days: HashMap<i64, (u64, HashSet<String>)>,
}

impl VisitorTraffic {
    /// Traffic sized for `events` events: pools of anonymous ids per day and of
    /// members such that each visitor makes about [`VISITS_PER_VISITOR`] visits
    /// of 3 events on average, so about one distinct visitor per 10 events.
    pub fn new(events: usize) -> VisitorTraffic {
        let visits = events as f64 / 3.0;
        let per_visitor = |share: f64| (visits * share / VISITS_PER_VISITOR).max(1.0) as u64;
        VisitorTraffic {
            rng: StdRng::seed_from_u64(SEED),
            now_ms: DateTime::now().timestamp_millis(),
            anonymous_per_day: (per_visitor(1.0 - MEMBER_SHARE) / DAYS as u64).max(1),
            members: per_visitor(MEMBER_SHARE),
            pending: Vec::new(),
        }
    }

    /// UTC midnight of the last whole day of the history (yesterday).
    pub fn last_day(&self) -> i64 {
        self.now_ms.div_euclid(DAY_MS) * DAY_MS - DAY_MS
    }

    /// The next `n` events (fewer never: visits are cut across calls).
    pub fn next_batch(&mut self, n: usize) -> Vec<Document> {
        while self.pending.len() < n {
            self.visit();
        }
        let mut batch: Vec<Document> = self.pending.drain(..n).collect();
        batch.shuffle(&mut self.rng);
        batch
    }

    /// One visit: 1–5 events 10 s to 5 min apart, within one UTC day.
    fn visit(&mut self) {
        let rng = &mut self.rng;
        let day = self.now_ms.div_euclid(DAY_MS) * DAY_MS - rng.random_range(1..=DAYS) * DAY_MS;
        let (user_id, anonymous) = if rng.random_bool(MEMBER_SHARE) {
            (format!("member-{}", rng.random_range(0..self.members)), false)
        } else {
            (format!("anon-{}-{}", day / DAY_MS, rng.random_range(0..self.anonymous_per_day)), true)
        };
        let (referrer, source, channel, campaign) = *ORIGINS.choose(rng).unwrap();
        let (browser, version, os, device) = *AGENTS.choose(rng).unwrap();
        let country = *COUNTRIES.choose(rng).unwrap();
        let mut at = day + rng.random_range(0..DAY_MS - 3_600_000);
        for step in 0..rng.random_range(1..=5) {
            at += if step == 0 { 0 } else { rng.random_range(10_000..300_000) };
            let page = rng.random_range(0..50u32).min(rng.random_range(0..50u32));
            let custom = step > 0 && rng.random_bool(0.1);
            let mut event = doc! {
                "site_id": SITE,
                "event_type": if custom { "signup" } else { "page_view" },
                "path": format!("/p{page}"),
                "user_id": &user_id,
                "timestamp": DateTime::from_millis(at),
                "ingested_at": DateTime::from_millis(self.now_ms),
                "hostname": "site-001.example",
                "channel": if step == 0 { channel } else { "Direct" },
                "country": country, "browser": browser, "browser_version": version, "os": os, "device": device,
            };
            if step == 0 {
                if let Some(referrer) = referrer {
                    event.insert("referrer", referrer);
                }
                if let Some(source) = source {
                    event.insert("source", source);
                }
                if let Some(campaign) = campaign {
                    event.insert("utm_source", "newsletter");
                    event.insert("utm_medium", "email");
                    event.insert("utm_campaign", campaign);
                }
            }
            if custom {
                event.insert("props", doc! { "plan": if rng.random_bool(0.5) { "pro" } else { "free" } });
            }
            if anonymous {
                event.insert("anonymous", true);
            }
            self.pending.push(event);
        }
    }
}

impl VisitorTally {
    /// Counts one generated event.
    pub fn record(&mut self, event: &Document) {
        let user = event.get_str("user_id").expect("user_id").to_string();
        let day = event.get_datetime("timestamp").expect("timestamp").timestamp_millis().div_euclid(DAY_MS) * DAY_MS;
        self.events += 1;
        self.pageviews += u64::from(event.get_str("event_type") == Ok("page_view"));
        let entry = self.days.entry(day).or_default();
        entry.0 += 1;
        entry.1.insert(user.clone());
        self.visitors.insert(user);
    }
}

/// Queues `count` events of [`VisitorTraffic`] into `collection`, and returns their tally.
pub async fn fill_visitors(collection: &Collection<Document>, count: usize) -> (VisitorTally, i64) {
    let mut traffic = VisitorTraffic::new(count);
    let mut tally = VisitorTally::default();
    let mut left = count;
    while left > 0 {
        let batch = traffic.next_batch(left.min(INSERT_BATCH_DOCS));
        batch.iter().for_each(|event| tally.record(event));
        collection.insert_many(&batch).await.expect("insert_many while filling");
        left -= batch.len();
    }
    (tally, traffic.last_day())
}
