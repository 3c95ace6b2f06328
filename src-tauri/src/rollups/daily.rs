//! The daily rollups of visits (`docs/visits.md` §3): `stats_daily` (sums over
//! the visits starting each UTC day, sharded per lane) and
//! `stats_daily_visitors` (one presence per site, day and visitor, with its
//! number of visits that day), with `visitors_anonymous` and `carried` kept so
//! that distinct visitors over whole days are exact; what a batch changes
//! ([`DailyDeltas`]), writing it, and reading a range back ([`daily_figures`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::{ClientSession, Database};

use super::deltas::split_statements;
use super::sessionize::Visit;
use super::{count_of, key, shard_key};
use crate::storage::{Store, StoreError, WriteLimits};

/// Visit sums per site, day and lane shard (plus anonymous visitors and `carried`).
pub const DAILY: &str = "stats_daily";
/// One visitor's visits starting on one day of one site (a presence).
pub const DAILY_VISITORS: &str = "stats_daily_visitors";

/// One UTC day in milliseconds.
pub const DAY_MS: i64 = 24 * 3_600_000;

/// The UTC midnight starting the day of `millis`.
pub fn day_of(millis: i64) -> i64 {
    millis.div_euclid(DAY_MS) * DAY_MS
}

/// The sums of one (site, day) a batch changes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DaySums {
    /// Visits starting that day.
    pub visits: i64,
    /// Of them, single-event visits.
    pub bounces: i64,
    /// Their durations summed.
    pub duration_ms: i64,
    /// Their pageviews summed.
    pub visit_pageviews: i64,
}

/// What a batch (or a purge) changes in the daily rollups: visit contributions
/// added and taken off, and the visitors' presences per day.
#[derive(Debug, Default)]
pub struct DailyDeltas {
    sums: BTreeMap<(String, i64), DaySums>,
    /// (site, user) → (anonymous, day → visits added).
    presences: BTreeMap<(String, String), (bool, BTreeMap<i64, i64>)>,
}

impl DailyDeltas {
    /// Adds (`sign` 1) or takes off (`sign` -1) one visit of `site`'s `user`.
    pub fn count(&mut self, site: &str, user: &str, visit: &Visit, sign: i64) {
        let day = day_of(visit.entry.at);
        let sums = self.sums.entry((site.to_string(), day)).or_default();
        sums.visits += sign;
        sums.bounces += sign * i64::from(visit.bounced());
        sums.duration_ms += sign * visit.duration_ms();
        sums.visit_pageviews += sign * visit.pageviews as i64;
        let (anonymous, days) = self.presences.entry((site.to_string(), user.to_string())).or_default();
        *anonymous |= visit.anonymous;
        *days.entry(day).or_default() += sign;
    }

    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// Writes the deltas within `session`'s transaction, into shard `shard` of
    /// `stats_daily`. The callers hold the visits fence (see
    /// [`super::visits`]), so the presences read here cannot change under it.
    pub async fn apply(
        &self,
        db: &Database,
        session: &mut ClientSession,
        shard: u32,
        limits: &WriteLimits,
    ) -> Result<(), StoreError> {
        let mut sums = self.sums.clone();
        let (presence_writes, anonymous_days) = self.presences_changed(db, session).await?;
        let mut extra: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
        for ((site, day), (visitors, carried)) in anonymous_days {
            sums.entry((site.clone(), day)).or_default();
            extra.insert((site, day), (visitors, carried));
        }
        let updates: Vec<Document> = sums
            .iter()
            .filter_map(|((site, day), s)| {
                let (visitors, carried) = extra.get(&(site.clone(), *day)).copied().unwrap_or((0, 0));
                if *s == DaySums::default() && visitors == 0 && carried == 0 {
                    return None;
                }
                let increments = doc! {
                    "visits": s.visits, "bounces": s.bounces, "duration_ms": s.duration_ms,
                    "visit_pageviews": s.visit_pageviews, "visitors_anonymous": visitors, "carried": carried,
                };
                let id = shard_key(&[site, &day.to_string()], shard);
                let fields = doc! { "site_id": site, "day": DateTime::from_millis(*day), "shard": i64::from(shard) };
                Some(doc! { "q": { "_id": id }, "u": { "$inc": increments, "$setOnInsert": fields }, "upsert": true })
            })
            .collect();
        run_updates(db, session, DAILY, updates, limits).await?;
        let (writes, gone) = presence_writes;
        run_updates(db, session, DAILY_VISITORS, writes, limits).await?;
        if !gone.is_empty() {
            let presences = db.collection::<Document>(DAILY_VISITORS);
            presences.delete_many(doc! { "_id": { "$in": gone } }).session(&mut *session).await?;
        }
        Ok(())
    }

    /// Reads the presences around the changed days (one query), and returns the
    /// presence writes (upserts, and `_id`s to delete at zero) and, per
    /// (site, day), the change of `visitors_anonymous` and `carried`.
    #[allow(clippy::type_complexity)]
    async fn presences_changed(
        &self,
        db: &Database,
        session: &mut ClientSession,
    ) -> Result<((Vec<Document>, Vec<String>), BTreeMap<(String, i64), (i64, i64)>), StoreError> {
        let id = |site: &str, day: i64, user: &str| key(&[site, &day.to_string(), user]);
        // Only days whose visits change (a visit extended changes none, the
        // common case), and their neighbours for `carried` (anonymous ids only).
        let changed: Vec<(&(String, String), bool, BTreeMap<i64, i64>)> = self
            .presences
            .iter()
            .map(|(visitor, (anonymous, days))| {
                (visitor, *anonymous, days.iter().filter(|(_, delta)| **delta != 0).map(|(d, n)| (*d, *n)).collect())
            })
            .filter(|(_, _, days): &(_, _, BTreeMap<i64, i64>)| !days.is_empty())
            .collect();
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for ((site, user), anonymous, days) in &changed {
            for day in days.keys() {
                wanted.insert(id(site, *day, user));
                if *anonymous {
                    wanted.insert(id(site, day - DAY_MS, user));
                    wanted.insert(id(site, day + DAY_MS, user));
                }
            }
        }
        let mut before: HashMap<String, i64> = HashMap::new();
        let collection = db.collection::<Document>(DAILY_VISITORS);
        let wanted: Vec<String> = wanted.into_iter().collect();
        for ids in wanted.chunks(1_000) {
            let find = collection.find(doc! { "_id": { "$in": ids } }).projection(doc! { "visits": 1 });
            let found: Vec<Document> = find.session(&mut *session).await?.stream(&mut *session).try_collect().await?;
            for presence in found {
                if let Ok(found_id) = presence.get_str("_id") {
                    before.insert(found_id.to_string(), count_of(presence.get("visits")) as i64);
                }
            }
        }
        let mut writes = Vec::new();
        let mut gone = Vec::new();
        let mut anonymous_days: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
        for ((site, user), anonymous, days) in &changed {
            let (anonymous, days) = (*anonymous, days);
            let was = |day: i64| before.get(&id(site, day, user)).copied().unwrap_or(0) > 0;
            let is = |day: i64| {
                before.get(&id(site, day, user)).copied().unwrap_or(0) + days.get(&day).copied().unwrap_or(0) > 0
            };
            for (&day, &delta) in days {
                let visits = before.get(&id(site, day, user)).copied().unwrap_or(0) + delta;
                if visits > 0 {
                    let mut fields = doc! { "site_id": site, "day": DateTime::from_millis(day), "user_id": user };
                    if anonymous {
                        fields.insert("anonymous", true);
                    }
                    fields.insert("visits", visits);
                    writes.push(doc! { "q": { "_id": id(site, day, user) }, "u": fields, "upsert": true });
                } else {
                    gone.push(id(site, day, user));
                }
            }
            if !anonymous {
                continue;
            }
            for &day in days.keys() {
                let change = i64::from(is(day)) - i64::from(was(day));
                anonymous_days.entry((site.clone(), day)).or_default().0 += change;
            }
            // `carried` of a day: present that day and the day before.
            let carried_days: BTreeSet<i64> = days.keys().flat_map(|day| [*day, day + DAY_MS]).collect();
            for day in carried_days {
                let change = i64::from(is(day) && is(day - DAY_MS)) - i64::from(was(day) && was(day - DAY_MS));
                if change != 0 {
                    anonymous_days.entry((site.clone(), day)).or_default().1 += change;
                }
            }
        }
        Ok(((writes, gone), anonymous_days))
    }
}

/// A statement refused because a concurrent transaction wrote the same
/// document (a duplicate key on an upsert, a write conflict): the transaction
/// is to be retried on a fresh snapshot, like a conflict. Carried as the
/// driver's custom error in [`StoreError::Operation`].
#[derive(Debug, Clone)]
pub struct ConcurrentWrite(pub String);

/// True when `error` is a [`ConcurrentWrite`].
pub fn is_concurrent_write(error: &StoreError) -> bool {
    matches!(error, StoreError::Operation(error) if error.get_custom::<ConcurrentWrite>().is_some())
}

/// Duplicate key, write conflict.
const CONCURRENT_CODES: [i32; 2] = [11000, 112];

/// `error` as a [`ConcurrentWrite`] when a concurrent transaction caused it
/// (a write conflict, or a duplicate key from racing upserts), else as it is.
pub(super) fn concurrent_or_not(error: mongodb::error::Error) -> StoreError {
    let code = match error.kind.as_ref() {
        mongodb::error::ErrorKind::Command(e) => Some(e.code),
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(e)) => Some(e.code),
        _ => None,
    };
    match code {
        Some(code) if CONCURRENT_CODES.contains(&code) => {
            let message = format!("write refused ({code}) because of a concurrent transaction: {error}");
            StoreError::Operation(mongodb::error::Error::custom(ConcurrentWrite(message)))
        }
        _ => error.into(),
    }
}

/// Runs `updates` on `collection` in as many commands as `limits` need; a
/// refused statement fails the whole ([`ConcurrentWrite`] when a concurrent
/// transaction caused it).
pub(super) async fn run_updates(
    db: &Database,
    session: &mut ClientSession,
    collection: &str,
    updates: Vec<Document>,
    limits: &WriteLimits,
) -> Result<(), StoreError> {
    for updates in split_statements(updates, limits) {
        if updates.is_empty() {
            continue;
        }
        let command = doc! { "update": collection, "updates": updates, "ordered": true };
        let reply = db.run_command(command).session(&mut *session).await?;
        if let Ok(errors) = reply.get_array("writeErrors")
            && !errors.is_empty()
        {
            let code = |e: &Bson| e.as_document().and_then(|e| e.get_i32("code").ok());
            let message = format!("update of {collection} refused: {errors:?}");
            if errors.iter().filter_map(code).all(|c| CONCURRENT_CODES.contains(&c)) {
                return Err(StoreError::Operation(mongodb::error::Error::custom(ConcurrentWrite(message))));
            }
            return Err(StoreError::Refused(message));
        }
    }
    Ok(())
}

/// A site's visit figures over whole UTC days, from the daily rollups.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DailyFigures {
    /// Visits starting in the range.
    pub visits: u64,
    /// Of them, single-event visits.
    pub bounces: u64,
    /// Their durations summed, in milliseconds.
    pub duration_ms: u64,
    /// Their pageviews summed.
    pub visit_pageviews: u64,
    /// Distinct visitors with a visit starting in the range.
    pub visitors: u64,
}

/// A site's visit figures over the days `from_day` (a UTC midnight, included)
/// to `to_day` (a UTC midnight, excluded); a `None` bound is open. Exact per
/// `docs/visits.md` §3: anonymous visitors are the days' sums less those
/// carried over from a day in the range, visitors with an explicit id are
/// grouped; all time, the ranks' distinct users are read instead (while they
/// are exact, i.e. retention has not deleted events).
pub async fn daily_figures(
    store: &Store,
    site_id: &str,
    from_day: Option<DateTime>,
    to_day: Option<DateTime>,
) -> Result<DailyFigures, StoreError> {
    let db = store.database();
    let mut days = Document::new();
    if let Some(from) = from_day {
        days.insert("$gte", from);
    }
    if let Some(to) = to_day {
        days.insert("$lt", to);
    }
    let mut range = doc! { "site_id": site_id };
    if !days.is_empty() {
        range.insert("day", days);
    }
    // `carried` of the range's first day pairs with a day outside it.
    let carried_in_range = match from_day {
        Some(from) => doc! { "$cond": [{ "$gt": ["$day", from] }, "$carried", 0] },
        None => doc! { "$ifNull": ["$carried", 0] },
    };
    let sums = vec![
        doc! { "$match": range.clone() },
        doc! { "$group": {
            "_id": Bson::Null,
            "visits": { "$sum": "$visits" }, "bounces": { "$sum": "$bounces" },
            "duration_ms": { "$sum": "$duration_ms" }, "visit_pageviews": { "$sum": "$visit_pageviews" },
            "visitors_anonymous": { "$sum": "$visitors_anonymous" }, "carried": { "$sum": carried_in_range },
        } },
    ];
    let limit = store.stats_query_time_limit();
    let row = db.collection::<Document>(DAILY).aggregate(sums).max_time(limit).await?.try_next().await?;
    let sum = |field: &str| row.as_ref().map_or(0, |row| number(row.get(field)));
    let mut figures = DailyFigures {
        visits: sum("visits").max(0) as u64,
        bounces: sum("bounces").max(0) as u64,
        duration_ms: sum("duration_ms").max(0) as u64,
        visit_pageviews: sum("visit_pageviews").max(0) as u64,
        visitors: 0,
    };
    if from_day.is_none() && to_day.is_none() && super::readiness(store).await?.all_time_visitors {
        let site = db.collection::<Document>(super::ranks::SITE_RANKS).find(doc! { "site_id": site_id }).await?;
        figures.visitors = site.try_collect::<Vec<_>>().await?.iter().map(|s| count_of(s.get("users"))).sum();
        return Ok(figures);
    }
    let anonymous = (sum("visitors_anonymous") - sum("carried")).max(0) as u64;
    let mut explicit_range = range;
    explicit_range.insert("anonymous", Bson::Null);
    let explicit = vec![
        doc! { "$match": explicit_range },
        doc! { "$group": { "_id": "$user_id" } },
        doc! { "$count": "visitors" },
    ];
    let row = db.collection::<Document>(DAILY_VISITORS).aggregate(explicit).max_time(limit).await?.try_next().await?;
    figures.visitors = anonymous + row.map_or(0, |row| number(row.get("visitors")).max(0) as u64);
    Ok(figures)
}

/// A sum the server may send as a 32- or 64-bit integer or a double (signed:
/// shards may hold negative parts).
fn number(value: Option<&Bson>) -> i64 {
    match value {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_midnights() {
        assert_eq!(day_of(DAY_MS + 5), DAY_MS);
        assert_eq!(day_of(-1), -DAY_MS);
    }
}
