//! What one batch of events adds to the rollups ([`RollupDeltas`]), and how it
//! is written: counts upserted into a lane's shard, new visitors inserted.
//!
//! The count `update` commands are built here, so they are split here: a
//! batch's statements go in as many commands as the server's limits
//! ([`WriteLimits`]) need (the driver splits only its own inserts). One
//! command for a whole batch broke 16 MiB with a few thousand long paths, and
//! the batch then failed on every retry.

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, RawDocument, doc};
use mongodb::{ClientSession, Database};

use super::known_visitors::{KnownVisitors, VisitorDigest};
use super::{HOURLY_PATHS, HOURLY_VISITORS, PATHS, SITES, VISITORS, hour_of, key, shard_key};
use crate::storage::error::TOO_LARGE_CODES;
use crate::storage::{StoreError, WriteLimits};

/// The fields of an event the rollups are keyed by.
struct EventKey<'a> {
    site_id: &'a str,
    event_type: &'a str,
    path: &'a str,
    user_id: &'a str,
    hour: Option<DateTime>,
}

impl<'a> EventKey<'a> {
    /// Reads an event document. The API only queues events with these four
    /// strings and a date; anything else is keyed as an empty string (and
    /// without an hour when the timestamp is not a date), like `stats` reads it.
    fn of(event: &'a RawDocument) -> EventKey<'a> {
        let text = |field| event.get_str(field).unwrap_or("");
        EventKey {
            site_id: text("site_id"),
            event_type: text("event_type"),
            path: text("path"),
            user_id: text("user_id"),
            hour: event.get_datetime("timestamp").ok().map(hour_of),
        }
    }
}

/// What one batch of events adds to the rollups, borrowing the batch's strings.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RollupDeltas<'a> {
    sites: HashMap<&'a str, i64>,
    paths: HashMap<(&'a str, &'a str, &'a str), i64>,
    visitors: HashSet<(&'a str, &'a str, &'a str)>,
    hourly_paths: HashMap<(&'a str, DateTime, &'a str, &'a str), i64>,
    hourly_visitors: HashSet<(&'a str, DateTime, &'a str, &'a str)>,
}

/// A visitor's document in a presence collection, before it is built.
pub(super) struct Presence<'a> {
    pub(super) id: String,
    pub(super) site_id: &'a str,
    pub(super) event_type: &'a str,
    pub(super) user_id: &'a str,
    pub(super) hour: Option<DateTime>,
}

impl Presence<'_> {
    fn document(&self) -> Document {
        let mut document = doc! { "_id": &self.id, "site_id": self.site_id };
        if let Some(hour) = self.hour {
            document.insert("hour", hour);
        }
        document.insert("event_type", self.event_type);
        document.insert("user_id", self.user_id);
        document
    }
}

impl<'a> RollupDeltas<'a> {
    /// The additions of `events` (queue or `events` documents).
    pub fn of(events: impl IntoIterator<Item = &'a RawDocument>) -> RollupDeltas<'a> {
        let mut deltas = RollupDeltas::default();
        for event in events {
            let EventKey { site_id: site, event_type: kind, path, user_id: user, hour } = EventKey::of(event);
            *deltas.sites.entry(site).or_default() += 1;
            *deltas.paths.entry((site, kind, path)).or_default() += 1;
            if let Some(hour) = hour {
                *deltas.hourly_paths.entry((site, hour, kind, path)).or_default() += 1;
                deltas.hourly_visitors.insert((site, hour, kind, user));
            }
            deltas.visitors.insert((site, kind, user));
        }
        deltas
    }

    /// True when no event was added.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// The `update` commands adding the counts to shard `shard`: per counting
    /// collection, its upserts by `_id` (the key fields and the shard set on
    /// insert), in as many commands as `limits` need.
    pub fn count_updates(&self, shard: u32, limits: &WriteLimits) -> Vec<Document> {
        let count = |parts: &[&str], mut fields: Document, n: i64| {
            fields.insert("shard", i64::from(shard));
            let id = shard_key(parts, shard);
            doc! { "q": { "_id": id }, "u": { "$inc": { "count": n }, "$setOnInsert": fields }, "upsert": true }
        };
        let commands = [
            (
                SITES,
                self.sites.iter().map(|(&site, n)| count(&[site], doc! { "site_id": site }, *n)).collect::<Vec<_>>(),
            ),
            (
                PATHS,
                self.paths
                    .iter()
                    .map(|(&(site, kind, path), n)| {
                        let fields = doc! { "site_id": site, "event_type": kind, "path": path };
                        count(&[site, kind, path], fields, *n)
                    })
                    .collect(),
            ),
            (
                HOURLY_PATHS,
                self.hourly_paths
                    .iter()
                    .map(|(&(site, hour, kind, path), n)| {
                        let fields = doc! { "site_id": site, "hour": hour, "event_type": kind, "path": path };
                        count(&[site, &hour.timestamp_millis().to_string(), kind, path], fields, *n)
                    })
                    .collect(),
            ),
        ];
        commands
            .into_iter()
            .flat_map(|(collection, updates)| {
                split_statements(updates, limits)
                    .into_iter()
                    .map(move |updates| doc! { "update": collection, "updates": updates, "ordered": true })
            })
            .collect()
    }

    /// The presences (visitors) per collection, keyed by `_id`.
    pub(super) fn presences(&self) -> [(&'static str, Vec<Presence<'a>>); 2] {
        [
            (
                VISITORS,
                self.visitors
                    .iter()
                    .map(|&(site_id, event_type, user_id)| Presence {
                        id: key(&[site_id, event_type, user_id]),
                        site_id,
                        event_type,
                        user_id,
                        hour: None,
                    })
                    .collect(),
            ),
            (
                HOURLY_VISITORS,
                self.hourly_visitors
                    .iter()
                    .map(|&(site_id, hour, event_type, user_id)| Presence {
                        id: key(&[site_id, &hour.timestamp_millis().to_string(), event_type, user_id]),
                        site_id,
                        event_type,
                        user_id,
                        hour: Some(hour),
                    })
                    .collect(),
            ),
        ]
    }

    /// Applies the deltas, inside `session`'s transaction when one is given:
    /// [the counts](RollupDeltas::add_counts) into shard `shard`, then [the
    /// visitors](RollupDeltas::record_visitors). Returns the visitors to
    /// remember in `known` once the transaction has committed.
    pub async fn apply(
        &self,
        db: &Database,
        mut session: Option<&mut ClientSession>,
        known: Option<&KnownVisitors>,
        shard: u32,
        limits: &WriteLimits,
    ) -> Result<Vec<VisitorDigest>, StoreError> {
        self.add_counts(db, session.as_deref_mut(), shard, limits).await?;
        self.record_visitors(db, session, known, limits).await
    }

    /// Upserts the counts into shard `shard`, inside `session`'s transaction
    /// when one is given.
    pub async fn add_counts(
        &self,
        db: &Database,
        mut session: Option<&mut ClientSession>,
        shard: u32,
        limits: &WriteLimits,
    ) -> Result<(), StoreError> {
        for command in self.count_updates(shard, limits) {
            let reply = match session.as_deref_mut() {
                Some(session) => db.run_command(command).session(session).await?,
                None => db.run_command(command).await?,
            };
            // A refused statement is reported in the reply, not as an error.
            if let Ok(errors) = reply.get_array("writeErrors")
                && !errors.is_empty()
            {
                let code = |e: &Bson| e.as_document().and_then(|e| e.get_i32("code").ok());
                let message = format!("rollup update refused: {errors:?}");
                return Err(if errors.iter().filter_map(code).any(|c| TOO_LARGE_CODES.contains(&c)) {
                    StoreError::TooLarge(message)
                } else {
                    StoreError::Refused(message)
                });
            }
        }
        Ok(())
    }

    /// Records the visitors not recorded yet, inside `session`'s transaction
    /// when one is given: those `known` holds are skipped, the others looked up
    /// in one query, and only the new ones inserted (most visitors of a batch
    /// are known, and an upsert costs the database several times a lookup).
    /// Returns the visitors to remember in `known` once the transaction has
    /// committed.
    pub async fn record_visitors(
        &self,
        db: &Database,
        mut session: Option<&mut ClientSession>,
        known: Option<&KnownVisitors>,
        limits: &WriteLimits,
    ) -> Result<Vec<VisitorDigest>, StoreError> {
        let mut recorded = Vec::new();
        for (name, presences) in self.presences() {
            let collection = db.collection::<Document>(name);
            let unknown: Vec<(VisitorDigest, Presence)> = presences
                .into_iter()
                .map(|presence| (VisitorDigest::of(name, &presence), presence))
                .filter(|(digest, presence)| !known.is_some_and(|known| known.holds(*digest, presence.hour)))
                .collect();
            if unknown.is_empty() {
                continue;
            }
            let ids: Vec<&str> = unknown.iter().map(|(_, presence)| presence.id.as_str()).collect();
            let mut found: Vec<Document> = Vec::new();
            // The lookup's `$in` is one document too: split like the updates.
            for ids in split_by_size(ids, limits, |id| id.len()) {
                let find = collection.find(doc! { "_id": { "$in": ids } }).projection(doc! { "_id": 1 });
                let mut chunk: Vec<Document> = match session.as_deref_mut() {
                    Some(session) => find.session(&mut *session).await?.stream(session).try_collect().await?,
                    None => find.await?.try_collect().await?,
                };
                found.append(&mut chunk);
            }
            let found: HashSet<&str> = found.iter().filter_map(|d| d.get_str("_id").ok()).collect();
            let mut new = Vec::new();
            for (digest, presence) in &unknown {
                if !found.contains(presence.id.as_str()) {
                    new.push(presence.document());
                }
                recorded.push(*digest);
            }
            if new.is_empty() {
                continue;
            }
            match session.as_deref_mut() {
                Some(session) => collection.insert_many(new).session(session).await?,
                None => collection.insert_many(new).await?,
            };
        }
        Ok(recorded)
    }
}

/// Bytes an array element costs beside its value: its type, its index as a
/// key (up to 6 digits under 1,000,000 statements) and the key's end.
const ELEMENT_OVERHEAD: usize = 16;

/// Splits a batch's statements into runs that each fit one command under
/// `limits`: at most `maxWriteBatchSize` statements, and their encoded size
/// within [`WriteLimits::command_budget`]. A statement too large on its own
/// goes alone: the server then refuses it with its reason (see
/// `worker::quarantine` for what becomes of its entries).
pub(crate) fn split_statements(statements: Vec<Document>, limits: &WriteLimits) -> Vec<Vec<Document>> {
    split_by_size(statements, limits, |statement| {
        mongodb::bson::RawDocumentBuf::from_document(statement)
            .map(|raw| raw.as_bytes().len())
            .unwrap_or(usize::MAX / 2)
    })
}

/// Splits `items` in order into runs of at most `maxWriteBatchSize` whose
/// `size`s (plus each element's overhead) stay within the command budget; an
/// item over the budget alone makes a run of one.
fn split_by_size<T>(items: Vec<T>, limits: &WriteLimits, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let budget = limits.command_budget();
    let most = limits.max_write_batch_size.max(1);
    let mut runs: Vec<Vec<T>> = Vec::new();
    let mut current: Vec<T> = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let cost = size(&item).saturating_add(ELEMENT_OVERHEAD);
        if !current.is_empty() && (current.len() >= most || bytes.saturating_add(cost) > budget) {
            runs.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes = bytes.saturating_add(cost);
        current.push(item);
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollups::HOUR_MS;
    use crate::rollups::tests::event;

    #[test]
    fn deltas_count_events_and_note_users_once() {
        let events = [
            event("a", "page_view", "/", "u1", 10),
            event("a", "page_view", "/", "u1", 20),
            event("a", "page_view", "/x", "u2", HOUR_MS + 5),
            event("b", "signup", "/", "u1", 30),
        ];
        let deltas = RollupDeltas::of(events.iter().map(|event| &**event));
        assert_eq!(deltas.sites, HashMap::from([("a", 3), ("b", 1)]));
        assert_eq!(deltas.paths[&("a", "page_view", "/")], 2);
        assert_eq!(deltas.visitors.len(), 3);
        assert_eq!(deltas.hourly_paths.len(), 3);
        assert_eq!(deltas.hourly_visitors.len(), 3, "u1 twice in the same hour is one presence");
        let limits = WriteLimits::default();
        let commands = deltas.count_updates(0, &limits);
        assert_eq!(commands.len(), 3);
        let updates: usize = commands.iter().map(|c| c.get_array("updates").unwrap().len()).sum();
        assert_eq!(updates, 2 + 3 + 3);
        let ids = |commands: &[Document]| -> Vec<String> {
            let mut ids: Vec<String> = commands
                .iter()
                .flat_map(|c| c.get_array("updates").unwrap().clone())
                .map(|u| u.as_document().unwrap().get_document("q").unwrap().get_str("_id").unwrap().to_string())
                .collect();
            ids.sort();
            ids
        };
        // Shard 0 keeps the plain keys; shard 1 the same keys with one part more.
        assert!(ids(&commands).contains(&"a\u{1f}page_view\u{1f}/".to_string()));
        let sharded = ids(&deltas.count_updates(1, &limits));
        assert!(sharded.iter().all(|id| id.ends_with("\u{1f}1")), "{sharded:?}");
        assert_eq!(sharded.len(), 8);
        assert!(ids(&commands).iter().all(|id| !sharded.contains(id)), "shards never share a document");
        let [(_, visitors), (_, hourly)] = deltas.presences();
        assert_eq!((visitors.len(), hourly.len()), (3, 3));
        assert_eq!(visitors.iter().filter(|v| v.id == "a\u{1f}page_view\u{1f}u1").count(), 1);
        let hourly_doc = hourly.iter().find(|v| v.hour.is_some()).expect("an hourly visitor").document();
        assert!(hourly_doc.get_datetime("hour").is_ok() && hourly_doc.get_str("user_id").is_ok());
    }

    #[test]
    fn count_updates_split_by_size_and_count_and_keep_every_statement() {
        let long = "x".repeat(2048);
        let paths: Vec<String> = (0..6000).map(|i| format!("/{i}/{long}")).collect();
        let events: Vec<_> = paths.iter().map(|path| event("a", "page_view", path, "u", 10)).collect();
        let deltas = RollupDeltas::of(events.iter().map(|event| &**event));
        let statements =
            |commands: &[Document]| -> usize { commands.iter().map(|c| c.get_array("updates").unwrap().len()).sum() };

        // 6,000 paths of 2 KiB (twice each in a statement): ~25 MB per collection, one command each before.
        let limits = WriteLimits::default();
        let commands = deltas.count_updates(0, &limits);
        assert_eq!(statements(&commands), 1 + 6000 + 6000);
        assert!(commands.len() >= 4, "paths and hourly paths split: {}", commands.len());
        for command in &commands {
            let bytes = mongodb::bson::RawDocumentBuf::from_document(command).unwrap().as_bytes().len();
            assert!(bytes <= limits.max_bson_object_size - 32 * 1024, "command of {bytes} bytes");
        }

        let by_count = WriteLimits { max_write_batch_size: 1000, ..limits };
        let commands = deltas.count_updates(0, &by_count);
        assert_eq!(statements(&commands), 12_001);
        assert!(commands.iter().all(|c| c.get_array("updates").unwrap().len() <= 1000));
        assert!(commands.len() >= 13, "{}", commands.len());

        // A statement over the budget alone still goes (alone), for the server to refuse.
        let tiny = WriteLimits { max_bson_object_size: 100, ..limits };
        let runs = split_statements(vec![doc! { "a": long.clone() }, doc! { "b": 1 }], &tiny);
        assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
    }
}
