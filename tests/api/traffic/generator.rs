//! A seeded generator of realistic traffic for two sites over three whole UTC
//! days: visitors with an explicit `user_id` (coming back across days) and
//! anonymous ones (the API derives their id from address and User-Agent, so
//! each has its own address), multi-page visits with gaps under and over 30
//! minutes, visits across midnight, referrers, UTM tags, browsers, countries,
//! custom events with props, late beacons and a crawler. Each event comes with
//! the body and headers to send and the truth's view of it (enrichment from
//! the fixed table in `enrichment`).
//!
//! Anonymous visitors stay realistic: the server derives their ids from the
//! day the event *arrives* (today), not from its timestamp, so a generated
//! anonymous visitor is active on one day, or across one midnight (a visit
//! started in the day's last half hour, maybe a second visit the next day):
//! the life of a real anonymous id, which the daily rollups rely on.

use std::collections::{BTreeMap, HashMap};

use mongodb::bson::DateTime;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::enrichment::{AGENTS, BOT, NETWORKS, ORIGINS};
use super::truth::{Event, Goal};

/// The sites of the history.
pub const SITES: [&str; 2] = ["alpha", "beta"];
/// Days of history.
pub const DAYS: i64 = 3;
/// A day in milliseconds.
pub const DAY_MS: i64 = 24 * 3_600_000;
const MINUTE_MS: i64 = 60_000;
const EXPLICIT_USERS_PER_SITE: usize = 40;
const ANONYMOUS_PER_SITE: usize = 90;
const MIDNIGHT_VISITORS_PER_SITE: usize = 8;
const BOTS_PER_SITE: usize = 4;
const PAGES: [&str; 9] =
    ["/", "/pricing", "/blog/post-1", "/blog/post-2", "/blog/post-3", "/docs/a", "/docs/b", "/about", "/contact"];

/// One event to send, and what the truth makes of it.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The JSON body of `POST /event`.
    pub body: Value,
    /// Index into [`AGENTS`] of its `User-Agent`.
    pub agent: usize,
    /// Its `X-Forwarded-For` (the app trusts the test client as a proxy).
    pub client_ip: String,
    /// Sent after the others were moved: a beacon arriving late.
    pub late: bool,
    /// The truth's view (meaningless for a bot's event, which is dropped).
    pub event: Event,
}

impl Sent {
    /// A crawler's event: answered `202 ignored`, never stored.
    pub fn is_bot(&self) -> bool {
        self.agent == BOT
    }
}

/// Generated traffic: what to send, and each site's goals.
pub struct Traffic {
    pub sent: Vec<Sent>,
    pub goals: HashMap<String, Vec<Goal>>,
    /// UTC midnight of the first day.
    pub first_day: i64,
}

impl Traffic {
    /// The stored events (bots dropped), for the truth model.
    pub fn events(&self) -> Vec<Event> {
        self.sent.iter().filter(|s| !s.is_bot()).map(|s| s.event.clone()).collect()
    }
}

/// The goals every site gets.
pub fn goals() -> Vec<Goal> {
    vec![Goal::EventType("signup".into()), Goal::Page("/blog/*".into())]
}

/// Who is visiting: an explicit user or an anonymous browser at an address.
struct Visitor {
    site: &'static str,
    user_id: Option<String>,
    agent: usize,
    client_ip: String,
}

struct Generator {
    rng: StdRng,
    seed: u64,
    sent: Vec<Sent>,
}

/// Traffic over the three UTC days starting at `first_day` (a midnight), from `seed`.
pub fn generate(seed: u64, first_day: i64) -> Traffic {
    let mut g = Generator { rng: StdRng::seed_from_u64(seed), seed, sent: Vec::new() };
    let mut address = 0usize;
    let mut next_ip = || {
        address += 1;
        let (prefix, _) = NETWORKS[address % NETWORKS.len()];
        format!("{prefix}{}", 1 + address / NETWORKS.len())
    };
    for site in SITES {
        for n in 0..EXPLICIT_USERS_PER_SITE {
            let visits = g.rng.random_range(1..=4);
            for _ in 0..visits {
                // An explicit user may come back on another device and from elsewhere.
                let visitor = Visitor {
                    site,
                    user_id: Some(format!("{site}-user-{n}")),
                    agent: g.rng.random_range(0..BOT),
                    client_ip: format!("{}{}", NETWORKS[n % NETWORKS.len()].0, 200 + n % 50),
                };
                let start = first_day + g.rng.random_range(0..DAYS * DAY_MS - 3 * 3_600_000);
                g.visit(&visitor, start, None);
            }
        }
        for _ in 0..ANONYMOUS_PER_SITE {
            let visitor = Visitor { site, user_id: None, agent: g.rng.random_range(0..BOT), client_ip: next_ip() };
            let day = first_day + g.rng.random_range(0..DAYS) * DAY_MS;
            let start = day + g.rng.random_range(0..DAY_MS - 4 * 3_600_000);
            g.visit(&visitor, start, Some(day + DAY_MS));
        }
        for _ in 0..MIDNIGHT_VISITORS_PER_SITE {
            // Seen in the day's last half hour: its id carries into the next day.
            let visitor = Visitor { site, user_id: None, agent: g.rng.random_range(0..BOT), client_ip: next_ip() };
            let midnight = first_day + g.rng.random_range(1..DAYS) * DAY_MS;
            let start = midnight - g.rng.random_range(3..25) * MINUTE_MS;
            g.visit(&visitor, start, Some(midnight + DAY_MS));
            if g.rng.random_bool(0.5) {
                let again = midnight + g.rng.random_range(2..20) * 3_600_000;
                g.visit(&visitor, again, Some(midnight + DAY_MS));
            }
        }
        for _ in 0..BOTS_PER_SITE {
            let visitor = Visitor { site, user_id: None, agent: BOT, client_ip: next_ip() };
            let start = first_day + g.rng.random_range(0..DAYS * DAY_MS - 3 * 3_600_000);
            g.visit(&visitor, start, None);
        }
    }
    let goals = SITES.iter().map(|site| (site.to_string(), goals())).collect();
    Traffic { sent: g.sent, goals, first_day }
}

impl Generator {
    /// One planned visit of `visitor` from `start`: 1–8 events, mostly minutes
    /// apart, sometimes 25–29 minutes, sometimes 30–50 (which splits it in two
    /// by the contract's rule); none at or after `before`.
    fn visit(&mut self, visitor: &Visitor, start: i64, before: Option<i64>) {
        let origin = self.rng.random_range(0..ORIGINS.len());
        let length = *[1, 1, 2, 3, 4, 5, 6, 8].choose(&mut self.rng).unwrap();
        let mut at = start;
        for step in 0..length {
            if step > 0 {
                at += match self.rng.random_range(0..20) {
                    0 => self.rng.random_range(30 * MINUTE_MS..50 * MINUTE_MS),
                    1 | 2 => self.rng.random_range(25 * MINUTE_MS..30 * MINUTE_MS - 1),
                    _ => self.rng.random_range(5_000..10 * MINUTE_MS),
                };
            }
            if before.is_some_and(|before| at >= before) {
                break;
            }
            self.event(visitor, at, if step == 0 { Some(origin) } else { None });
        }
    }

    /// One event; `origin` (an index into [`ORIGINS`]) for a visit's first page.
    fn event(&mut self, visitor: &Visitor, millis: i64, origin: Option<usize>) {
        let seq = self.sent.len() as u64;
        let custom = origin.is_none() && self.rng.random_bool(0.15);
        let (event_type, path, props) = if custom {
            if self.rng.random_bool(0.5) {
                let plan = *["free", "pro"].choose(&mut self.rng).unwrap();
                ("signup", "/pricing", BTreeMap::from([("plan".to_string(), plan.to_string())]))
            } else {
                let file = *["a.pdf", "b.zip"].choose(&mut self.rng).unwrap();
                ("download", "/docs/a", BTreeMap::from([("file".to_string(), file.to_string())]))
            }
        } else {
            ("page_view", *PAGES.choose(&mut self.rng).unwrap(), BTreeMap::new())
        };
        let host = if path.starts_with("/docs") {
            format!("docs.{}.example", visitor.site)
        } else {
            format!("{}.example", visitor.site)
        };
        // Later pages of a visit come from the site itself (a self-referral).
        let origin = ORIGINS[origin.unwrap_or(4)];
        let url = format!("https://{host}{path}{}", origin.query);
        let agent = AGENTS[visitor.agent];
        let mut body = json!({
            "site_id": visitor.site, "event_type": event_type, "path": path, "url": url,
            "screen_width": agent.screen_width,
            "event_id": format!("ev-{:x}-{seq}", self.seed),
            "timestamp": DateTime::from_millis(millis).try_to_rfc3339_string().unwrap(),
        });
        if let Some(referrer) = origin.sent_referrer {
            body["referrer"] = json!(referrer.replace("{host}", &host));
        }
        if let Some(user_id) = &visitor.user_id {
            body["user_id"] = json!(user_id);
        }
        if !props.is_empty() {
            body["props"] = json!(props);
        }
        let mut attrs = BTreeMap::new();
        attrs.insert("channel", origin.channel.to_string());
        let optional = [("referrer", origin.referrer), ("source", origin.source)];
        for (key, value) in optional {
            if let Some(value) = value {
                attrs.insert(key, value.to_string());
            }
        }
        if let Some((source, medium, campaign)) = origin.utm {
            attrs.insert("utm_source", source.into());
            attrs.insert("utm_medium", medium.into());
            attrs.insert("utm_campaign", campaign.into());
        }
        let network = NETWORKS.iter().find(|(prefix, _)| visitor.client_ip.starts_with(prefix)).unwrap();
        if let Some(country) = network.1 {
            attrs.insert("country", country.into());
        }
        if let Some((browser, version, os, device)) = agent.expected {
            attrs.insert("browser", browser.into());
            attrs.insert("browser_version", version.into());
            attrs.insert("os", os.into());
            attrs.insert("device", device.into());
        }
        let anonymous = visitor.user_id.is_none();
        let event = Event {
            seq,
            site: visitor.site.into(),
            visitor: visitor
                .user_id
                .clone()
                .unwrap_or_else(|| format!("anonymous:{}:{}:{}", visitor.site, visitor.client_ip, visitor.agent)),
            anonymous,
            millis,
            event_type: event_type.into(),
            path: path.into(),
            hostname: Some(host),
            props,
            attrs,
        };
        // About one beacon in twenty arrives late (after the later events were moved).
        let late = self.rng.random_bool(0.05);
        self.sent.push(Sent { body, agent: visitor.agent, client_ip: visitor.client_ip.clone(), late, event });
    }
}

/// UTC midnight `days` days before today's.
pub fn midnight_days_ago(days: i64) -> i64 {
    let now = DateTime::now().timestamp_millis();
    now.div_euclid(DAY_MS) * DAY_MS - days * DAY_MS
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use super::*;

    #[test]
    fn the_traffic_is_reproducible_varied_and_anonymous_ids_live_at_most_two_days() {
        let a = generate(7, 0);
        let b = generate(7, 0);
        assert_eq!(a.sent.len(), b.sent.len());
        assert!(a.sent.iter().zip(&b.sent).all(|(x, y)| x.body == y.body), "same seed, same traffic");
        let events = a.events();
        assert!((1_000..6_000).contains(&a.sent.len()), "a few thousand events: {}", a.sent.len());
        assert!(a.sent.iter().any(Sent::is_bot) && a.sent.iter().any(|s| s.late));
        assert!(events.iter().any(|e| e.anonymous) && events.iter().any(|e| !e.anonymous));
        let origins: HashSet<&str> = events.iter().map(|e| e.attrs["channel"].as_str()).collect();
        assert_eq!(origins.len(), 5, "every channel of the table: {origins:?}");
        let event_ids: HashSet<&str> = a.sent.iter().map(|s| s.body["event_id"].as_str().unwrap()).collect();
        assert_eq!(event_ids.len(), a.sent.len(), "event_ids are unique");
        let mut days_of: HashMap<&str, BTreeSet<i64>> = HashMap::new();
        for e in events.iter().filter(|e| e.anonymous) {
            days_of.entry(&e.visitor).or_default().insert(e.millis.div_euclid(DAY_MS));
        }
        for (visitor, days) in &days_of {
            let (first, last) = (days.first().unwrap(), days.last().unwrap());
            assert!(last - first <= 1, "{visitor} active on {days:?}");
        }
        assert!(days_of.values().any(|days| days.len() == 2), "some anonymous visitor crosses midnight");
        let max = events.iter().map(|e| e.millis).max().unwrap();
        assert!(max < DAYS * DAY_MS, "all within the three days");
    }
}
