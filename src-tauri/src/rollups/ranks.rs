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
//! | `stats_site_ranks` | site and lane shard / site | `users` / `types` |
//! | `stats_rank_pending` | batch, site, kind (`path`, `type`) | `counts`: `[{k, n}]` |
//!
//! The rank counts cannot be sharded per lane (the top N would then need a
//! sum over shards, i.e. over every key), and a transaction that updates a
//! document another committed after its snapshot conflicts, whatever turn the
//! lanes take. So a batch's transaction only *inserts* its counts as pending
//! documents (new `_id`s: nothing to conflict on), and the worker folds the
//! pending documents into the ranks right after its commit, in a transaction
//! of its own started under the lanes' turn: folds of one worker never
//! overlap, so they never conflict; two workers' folds may, and the loser
//! leaves the pending documents to the next fold. Readers add what is still
//! pending (see `stats`), so the figures are exact at every commit.
//!
//! Users are presences (looked up first, the ones this worker saw committed
//! skipped, as for visitors) counted into the lane's shard of the site's
//! `users`; the number of types is kept by the folds.
//!
//! Retention folds the site's pending counts, then takes counts off (and
//! deletes the documents at zero), in the same transaction; distinct users
//! cannot be taken off (stats then read the hourly visitors, as for the other
//! rollups). A rebuild from `events` writes the ranks directly, in the same
//! fenced chunks as the rest.
//!
//! Every write of many keys goes in commands of at most [`KEYS_PER_COMMAND`]
//! keys (paths are at most 2 KiB: well under the 16 MiB of a command).

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, RawDocument, doc};
use mongodb::{ClientSession, Database};

use super::deltas::Presence;
use super::known_visitors::{KnownVisitors, VisitorDigest};
use super::{count_of, key, shard_key};
use crate::storage::StoreError;

/// All-time events per site and path (all types).
pub const RANK_PATHS: &str = "stats_rank_paths";
/// All-time events per site and event type.
pub const RANK_TYPES: &str = "stats_rank_types";
/// Users seen per site (all types).
pub const SITE_USERS: &str = "stats_site_users";
/// Per site: its users per lane shard, and its number of types.
pub const SITE_RANKS: &str = "stats_site_ranks";
/// Counts of committed batches not folded into the ranks yet.
pub const PENDING: &str = "stats_rank_pending";

/// Every collection of the ranks.
pub const COLLECTIONS: [&str; 5] = [RANK_PATHS, RANK_TYPES, SITE_USERS, SITE_RANKS, PENDING];

/// Most keys written (or looked up) by one command, or held by one pending document.
pub const KEYS_PER_COMMAND: usize = 1_000;

/// Most pending documents one fold reads (the rest wait for the next): a
/// batch of 1,000 events over 500 sites leaves 1,000 (paths and types per site).
pub const FOLD_LIMIT: i64 = 1_000;

/// Most keys one fold writes (whole pending documents, at least one): bounds
/// its transaction.
pub const FOLD_KEYS: usize = 10_000;

/// The `_id` of the document counting `site`'s types in [`SITE_RANKS`] (the
/// users' are its [`shard_key`]s, which end in a number or nothing).
pub fn types_counter_id(site: &str) -> String {
    key(&[site, "types"])
}

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

    /// A batch's part, within its transaction: the counts inserted as pending
    /// documents (folded later by [`fold`]), the users recorded and counted
    /// into shard `shard`. Returns the users to remember in `known` once committed.
    pub async fn add_pending(
        &self,
        db: &Database,
        session: &mut ClientSession,
        known: Option<&KnownVisitors>,
        shard: u32,
    ) -> Result<Vec<VisitorDigest>, StoreError> {
        let mut pending = Vec::new();
        for (kind, counts) in [("path", &self.paths), ("type", &self.types)] {
            let mut by_site: HashMap<&str, Vec<Document>> = HashMap::new();
            for (&(site, value), n) in counts {
                by_site.entry(site).or_default().push(doc! { "k": value, "n": *n });
            }
            for (site, counts) in by_site {
                for chunk in counts.chunks(KEYS_PER_COMMAND) {
                    pending.push(doc! { "_id": ObjectId::new(), "site_id": site, "kind": kind, "counts": chunk });
                }
            }
        }
        if !pending.is_empty() {
            db.collection::<Document>(PENDING).insert_many(pending).session(&mut *session).await?;
        }
        self.record_users(db, session, known, shard).await
    }

    /// A rebuild chunk's part, within its (fenced) transaction: the counts
    /// straight into the ranks, the users recorded and counted into shard 0.
    pub async fn apply(&self, db: &Database, session: &mut ClientSession) -> Result<(), StoreError> {
        let paths = self.paths.iter().map(|(&(site, path), n)| (site, "path", path, *n)).collect();
        upsert_counts(db, session, RANK_PATHS, paths).await?;
        let types = self.types.iter().map(|(&(site, kind), n)| (site, "event_type", kind, *n)).collect();
        let new_types = upsert_counts(db, session, RANK_TYPES, types).await?;
        count_new_types(db, session, new_types).await?;
        self.record_users(db, session, None, 0).await?;
        Ok(())
    }

    /// Inserts the users not recorded yet for their site (those `known` holds
    /// skipped, the others looked up: inside a transaction a duplicate key
    /// aborts everything) and counts them into shard `shard` of their site.
    async fn record_users(
        &self,
        db: &Database,
        session: &mut ClientSession,
        known: Option<&KnownVisitors>,
        shard: u32,
    ) -> Result<Vec<VisitorDigest>, StoreError> {
        let collection = db.collection::<Document>(SITE_USERS);
        let unknown: Vec<(VisitorDigest, Presence<'a>)> = self
            .users
            .iter()
            .map(|&(site_id, user_id)| {
                let presence = Presence { id: key(&[site_id, user_id]), site_id, event_type: "", user_id, hour: None };
                (VisitorDigest::of(SITE_USERS, &presence), presence)
            })
            .filter(|(digest, _)| !known.is_some_and(|known| known.holds(*digest, None)))
            .collect();
        let mut new_users: HashMap<&str, i64> = HashMap::new();
        for chunk in unknown.chunks(KEYS_PER_COMMAND) {
            let ids: Vec<&str> = chunk.iter().map(|(_, p)| p.id.as_str()).collect();
            let find = collection.find(doc! { "_id": { "$in": ids } }).projection(doc! { "_id": 1 });
            let found: Vec<Document> = find.session(&mut *session).await?.stream(&mut *session).try_collect().await?;
            let found: HashSet<&str> = found.iter().filter_map(|d| d.get_str("_id").ok()).collect();
            let new: Vec<Document> = chunk
                .iter()
                .filter(|(_, p)| !found.contains(p.id.as_str()))
                .map(|(_, p)| {
                    *new_users.entry(p.site_id).or_default() += 1;
                    doc! { "_id": &p.id, "site_id": p.site_id, "user_id": p.user_id }
                })
                .collect();
            if !new.is_empty() {
                collection.insert_many(new).session(&mut *session).await?;
            }
        }
        let updates: Vec<Document> = new_users
            .into_iter()
            .map(|(site, n)| {
                let fields = doc! { "site_id": site, "shard": i64::from(shard) };
                let id = shard_key(&[site], shard);
                doc! { "q": { "_id": id }, "u": { "$inc": { "users": n }, "$setOnInsert": fields }, "upsert": true }
            })
            .collect();
        for chunk in updates.chunks(KEYS_PER_COMMAND) {
            update(db, session, SITE_RANKS, chunk.to_vec()).await?;
        }
        Ok(unknown.into_iter().map(|(digest, _)| digest).collect())
    }
}

/// Raises the number of types of each site listed (once per type new to it).
async fn count_new_types(db: &Database, session: &mut ClientSession, new_types: Vec<&str>) -> Result<(), StoreError> {
    let mut sites: HashMap<&str, i64> = HashMap::new();
    for site in new_types {
        *sites.entry(site).or_default() += 1;
    }
    let updates: Vec<Document> = sites
        .into_iter()
        .map(|(site, n)| {
            let id = types_counter_id(site);
            doc! { "q": { "_id": id }, "u": { "$inc": { "types": n }, "$setOnInsert": { "site_id": site } }, "upsert": true }
        })
        .collect();
    for chunk in updates.chunks(KEYS_PER_COMMAND) {
        update(db, session, SITE_RANKS, chunk.to_vec()).await?;
    }
    Ok(())
}

/// Folds pending counts into the ranks within `session`'s transaction: those
/// of `site` (all of them), or of any site (at most [`FOLD_LIMIT`] documents
/// and [`FOLD_KEYS`] keys). Returns how many pending documents were folded and
/// whether more may be left.
pub async fn fold(db: &Database, session: &mut ClientSession, site: Option<&str>) -> Result<(usize, bool), StoreError> {
    let collection = db.collection::<Document>(PENDING);
    let find = match site {
        Some(site) => collection.find(doc! { "site_id": site }),
        None => collection.find(doc! {}).limit(FOLD_LIMIT),
    };
    let mut pending: Vec<Document> = find.session(&mut *session).await?.stream(&mut *session).try_collect().await?;
    if pending.is_empty() {
        return Ok((0, false));
    }
    let read = pending.len();
    if site.is_none() {
        let keys = |d: &Document| d.get_array("counts").map_or(0, |a| a.len());
        let mut total = 0;
        let taken = pending.iter().take_while(|d| {
            total += keys(d);
            total <= FOLD_KEYS
        });
        let taken = taken.count().max(1);
        pending.truncate(taken);
    }
    let mut paths: HashMap<(String, String), i64> = HashMap::new();
    let mut types: HashMap<(String, String), i64> = HashMap::new();
    for document in &pending {
        let site = document.get_str("site_id").unwrap_or("").to_string();
        let into = if document.get_str("kind") == Ok("path") { &mut paths } else { &mut types };
        for entry in document.get_array("counts").map(|a| a.as_slice()).unwrap_or_default() {
            if let Some(entry) = entry.as_document() {
                let value = entry.get_str("k").unwrap_or("").to_string();
                *into.entry((site.clone(), value)).or_default() += count_of(entry.get("n")) as i64;
            }
        }
    }
    let counts = paths.iter().map(|((site, path), n)| (site.as_str(), "path", path.as_str(), *n)).collect();
    upsert_counts(db, session, RANK_PATHS, counts).await?;
    let counts = types.iter().map(|((site, kind), n)| (site.as_str(), "event_type", kind.as_str(), *n)).collect();
    let new_types = upsert_counts(db, session, RANK_TYPES, counts).await?;
    count_new_types(db, session, new_types).await?;
    let ids: Vec<Bson> = pending.iter().filter_map(|d| d.get("_id").cloned()).collect();
    for chunk in ids.chunks(KEYS_PER_COMMAND) {
        collection.delete_many(doc! { "_id": { "$in": chunk } }).session(&mut *session).await?;
    }
    Ok((pending.len(), site.is_none() && (pending.len() < read || read == FOLD_LIMIT as usize)))
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
/// zero are deleted, and the site's number of types follows. The site's
/// pending counts are folded first.
pub async fn subtract(
    db: &Database,
    session: &mut ClientSession,
    site: &str,
    taken: &HashMap<(String, String), i64>,
) -> Result<(), StoreError> {
    // Pending counts may hold some of the events taken: fold them first.
    fold(db, session, Some(site)).await?;
    let mut paths: HashMap<&str, i64> = HashMap::new();
    let mut types: HashMap<&str, i64> = HashMap::new();
    for ((kind, path), n) in taken {
        *paths.entry(path).or_default() += n;
        *types.entry(kind).or_default() += n;
    }
    take_off(db, session, RANK_PATHS, site, paths).await?;
    let types_gone = take_off(db, session, RANK_TYPES, site, types).await?;
    if types_gone > 0 {
        let fewer = doc! { "q": { "_id": types_counter_id(site) }, "u": { "$inc": { "types": -(types_gone as i64) } } };
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
        assert_eq!(
            deltas.types,
            HashMap::from([(("a", "page_view"), 2), (("a", "signup"), 1), (("b", "page_view"), 1)])
        );
        assert_eq!(deltas.users, HashSet::from([("a", "u1"), ("a", "u2"), ("b", "u1")]));
    }
}
