//! Ranked all-time figures per site, kept ready for the all-time `/stats`: no
//! query that reads every path of a site (100,000 of them) answers in 50 ms, so
//! the worker keeps one document per (site, path) and per (site, event type)
//! with its all-time count, indexed by `{site_id, count: -1, key}`; the top ones
//! are then a sort and limit the index answers. A per-site document counts the
//! site's types and distinct users.
//!
//! | collection | one document per | holds |
//! |---|---|---|
//! | `stats_rank_paths` | site, path | `count` (all event types) |
//! | `stats_rank_types` | site, event type | `count` |
//! | `stats_site_users` | site, user | (presence) |
//! | `stats_site_ranks` | site | `types`, `users` |
//!
//! Unlike the counting rollups these are not sharded per lane: a batch writes
//! them in the part of its transaction that runs one lane at a time (the
//! visitors' turn, see `worker`), so the lanes of one worker never conflict on
//! them; two workers may, and retry like they do on visitors. Retention takes
//! counts off (and deletes the documents at zero); distinct users cannot be
//! taken off (stats then read the hourly visitors, as for the other rollups).
//! A rebuild from `events` writes them in the same fenced chunks as the rest.
//!
//! Every write of many keys goes in commands of at most [`KEYS_PER_COMMAND`]
//! keys (paths are at most 2 KiB: well under the 16 MiB of a command).

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, RawDocument, doc};
use mongodb::{ClientSession, Database};

use super::{count_of, key};
use crate::storage::StoreError;

/// All-time events per site and path (all types).
pub const RANK_PATHS: &str = "stats_rank_paths";
/// All-time events per site and event type.
pub const RANK_TYPES: &str = "stats_rank_types";
/// Users seen per site (all types).
pub const SITE_USERS: &str = "stats_site_users";
/// Per site: how many types `stats_rank_types` holds and how many users `stats_site_users`.
pub const SITE_RANKS: &str = "stats_site_ranks";

/// Every collection of the ranks.
pub const COLLECTIONS: [&str; 4] = [RANK_PATHS, RANK_TYPES, SITE_USERS, SITE_RANKS];

/// Most keys written (or looked up) by one command.
pub const KEYS_PER_COMMAND: usize = 1_000;

/// What one batch (or rebuild chunk) adds to the ranks, borrowing its strings.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RankDeltas<'a> {
    paths: HashMap<(&'a str, &'a str), i64>,
    types: HashMap<(&'a str, &'a str), i64>,
    users: HashSet<(&'a str, &'a str)>,
}

impl<'a> RankDeltas<'a> {
    /// The additions of `events` (queue or `events` documents); a missing or
    /// non-string field is keyed as `""`, like the other rollups.
    pub fn of(events: impl IntoIterator<Item = &'a RawDocument>) -> RankDeltas<'a> {
        let mut deltas = RankDeltas::default();
        for event in events {
            let text = |field| event.get_str(field).unwrap_or("");
            let site = text("site_id");
            *deltas.paths.entry((site, text("path"))).or_default() += 1;
            *deltas.types.entry((site, text("event_type"))).or_default() += 1;
            deltas.users.insert((site, text("user_id")));
        }
        deltas
    }

    /// Writes the deltas within `session`'s transaction: counts upserted, new
    /// users inserted (looked up first: inside a transaction a duplicate key
    /// aborts everything), and the per-site numbers of types and users raised
    /// by those new to the site. A user recorded meanwhile by another worker's
    /// batch fails with a duplicate key: the caller retries, as for visitors.
    pub async fn apply(&self, db: &Database, session: &mut ClientSession) -> Result<(), StoreError> {
        let paths = self.paths.iter().map(|(&(site, path), n)| (site, "path", path, *n)).collect();
        upsert_counts(db, session, RANK_PATHS, paths).await?;
        let types = self.types.iter().map(|(&(site, kind), n)| (site, "event_type", kind, *n)).collect();
        let new_types = upsert_counts(db, session, RANK_TYPES, types).await?;
        let new_users = self.record_users(db, session).await?;
        let mut sites: HashMap<&str, (i64, i64)> = HashMap::new();
        for site in new_types {
            sites.entry(site).or_default().0 += 1;
        }
        for site in new_users {
            sites.entry(site).or_default().1 += 1;
        }
        let updates: Vec<Document> = sites
            .into_iter()
            .map(|(site, (types, users))| {
                doc! {
                    "q": { "_id": site },
                    "u": { "$inc": { "types": types, "users": users }, "$setOnInsert": { "site_id": site } },
                    "upsert": true,
                }
            })
            .collect();
        for chunk in updates.chunks(KEYS_PER_COMMAND) {
            update(db, session, SITE_RANKS, chunk.to_vec()).await?;
        }
        Ok(())
    }

    /// Inserts the users not recorded yet for their site; returns the site of each one inserted.
    async fn record_users(&self, db: &Database, session: &mut ClientSession) -> Result<Vec<&'a str>, StoreError> {
        let collection = db.collection::<Document>(SITE_USERS);
        let users: Vec<(String, &'a str, &'a str)> =
            self.users.iter().map(|&(site, user)| (key(&[site, user]), site, user)).collect();
        let mut new_sites = Vec::new();
        for chunk in users.chunks(KEYS_PER_COMMAND) {
            let ids: Vec<&str> = chunk.iter().map(|(id, ..)| id.as_str()).collect();
            let find = collection.find(doc! { "_id": { "$in": ids } }).projection(doc! { "_id": 1 });
            let found: Vec<Document> = find.session(&mut *session).await?.stream(&mut *session).try_collect().await?;
            let found: HashSet<&str> = found.iter().filter_map(|d| d.get_str("_id").ok()).collect();
            let new: Vec<Document> = chunk
                .iter()
                .filter(|(id, ..)| !found.contains(id.as_str()))
                .map(|(id, site, user)| doc! { "_id": id, "site_id": *site, "user_id": *user })
                .collect();
            new_sites.extend(chunk.iter().filter(|(id, ..)| !found.contains(id.as_str())).map(|(_, site, _)| *site));
            if !new.is_empty() {
                collection.insert_many(new).session(&mut *session).await?;
            }
        }
        Ok(new_sites)
    }
}

/// Upserts `(site, field, value, n)` counts into `collection` (`_id` the key of
/// site and value), in commands of at most [`KEYS_PER_COMMAND`]; returns the
/// site of each document the upserts created.
async fn upsert_counts<'a>(
    db: &Database,
    session: &mut ClientSession,
    collection: &str,
    counts: Vec<(&'a str, &'static str, &'a str, i64)>,
) -> Result<Vec<&'a str>, StoreError> {
    let mut created = Vec::new();
    for chunk in counts.chunks(KEYS_PER_COMMAND) {
        let updates = chunk
            .iter()
            .map(|&(site, field, value, n)| {
                doc! {
                    "q": { "_id": key(&[site, value]) },
                    "u": { "$inc": { "count": n }, "$setOnInsert": { "site_id": site, field: value } },
                    "upsert": true,
                }
            })
            .collect();
        let reply = update(db, session, collection, updates).await?;
        // The server lists the statements that created a document, by index.
        let upserted = reply.get_array("upserted").map(|a| a.as_slice()).unwrap_or_default();
        for entry in upserted.iter().filter_map(Bson::as_document) {
            if let Some(&(site, ..)) = chunk.get(count_of(entry.get("index")) as usize) {
                created.push(site);
            }
        }
    }
    Ok(created)
}

/// Runs one `update` command within `session`'s transaction and returns its
/// reply; a statement the server refuses fails the whole.
async fn update(
    db: &Database,
    session: &mut ClientSession,
    collection: &str,
    updates: Vec<Document>,
) -> Result<Document, StoreError> {
    let command = doc! { "update": collection, "updates": updates, "ordered": true };
    let reply = db.run_command(command).session(&mut *session).await?;
    if let Ok(errors) = reply.get_array("writeErrors")
        && !errors.is_empty()
    {
        return Err(StoreError::Refused(format!("rank update of {collection} refused: {errors:?}")));
    }
    Ok(reply)
}

/// Takes events off one site's ranks within `session`'s transaction (retention):
/// `taken` holds the events deleted per (event type, path). Counts reaching
/// zero are deleted, and the site's number of types follows.
pub async fn subtract(
    db: &Database,
    session: &mut ClientSession,
    site: &str,
    taken: &HashMap<(String, String), i64>,
) -> Result<(), StoreError> {
    let mut paths: HashMap<&str, i64> = HashMap::new();
    let mut types: HashMap<&str, i64> = HashMap::new();
    for ((kind, path), n) in taken {
        *paths.entry(path).or_default() += n;
        *types.entry(kind).or_default() += n;
    }
    take_off(db, session, RANK_PATHS, site, paths).await?;
    let types_gone = take_off(db, session, RANK_TYPES, site, types).await?;
    if types_gone > 0 {
        let fewer = doc! { "q": { "_id": site }, "u": { "$inc": { "types": -(types_gone as i64) } } };
        update(db, session, SITE_RANKS, vec![fewer]).await?;
    }
    Ok(())
}

/// Decrements `site`'s documents of `collection` by `counts` (keyed by value)
/// and deletes those at zero; returns how many were deleted.
async fn take_off(
    db: &Database,
    session: &mut ClientSession,
    collection: &str,
    site: &str,
    counts: HashMap<&str, i64>,
) -> Result<u64, StoreError> {
    let counts: Vec<(String, i64)> = counts.into_iter().map(|(value, n)| (key(&[site, value]), n)).collect();
    let mut deleted = 0;
    for chunk in counts.chunks(KEYS_PER_COMMAND) {
        let updates = chunk.iter().map(|(id, n)| doc! { "q": { "_id": id }, "u": { "$inc": { "count": -n } } });
        update(db, session, collection, updates.collect()).await?;
        let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
        let gone = doc! { "_id": { "$in": ids }, "count": { "$lte": 0 } };
        deleted += db.collection::<Document>(collection).delete_many(gone).session(&mut *session).await?.deleted_count;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollups::tests::event;

    #[test]
    fn deltas_count_paths_and_types_over_each_other_and_users_once() {
        let events = [
            event("a", "page_view", "/", "u1", 10),
            event("a", "signup", "/", "u1", 20),
            event("a", "page_view", "/x", "u2", 30),
            event("b", "page_view", "/", "u1", 40),
        ];
        let deltas = RankDeltas::of(events.iter().map(|event| &**event));
        assert_eq!(deltas.paths, HashMap::from([(("a", "/"), 2), (("a", "/x"), 1), (("b", "/"), 1)]));
        assert_eq!(deltas.types, HashMap::from([(("a", "page_view"), 2), (("a", "signup"), 1), (("b", "page_view"), 1)]));
        assert_eq!(deltas.users, HashSet::from([("a", "u1"), ("a", "u2"), ("b", "u1")]));
    }
}
