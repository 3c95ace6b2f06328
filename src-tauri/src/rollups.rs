//! Rollups: per-site aggregates the worker keeps up to date as it moves each
//! batch, so that stats read a few small documents instead of scanning every event.
//!
//! Each document's `_id` is its key (the parts joined by a control character),
//! with the parts also stored as fields for the queries.
//!
//! The counting documents (`stats_sites`, `stats_paths`, `stats_hourly_paths`)
//! are split in shards, one per worker lane (see `worker`): two batches moved
//! side by side then never update the same document, so their transactions do
//! not conflict. A count is the sum of its shards; every reader adds them up.
//! Shard 0 keeps the plain key (the layout before shards existed).
//!
//! | collection | one document per | holds |
//! |---|---|---|
//! | `stats_sites` | site | `count` |
//! | `stats_paths` | site, event type, path | `count` |
//! | `stats_visitors` | site, event type, user | (presence) |
//! | `stats_hourly_paths` | site, hour, event type, path | `count` |
//! | `stats_hourly_visitors` | site, hour, event type, user | (presence) |
//!
//! Hours are UTC hours of the event's `timestamp`; a time range that does not
//! start or end on an hour adds the raw events of its partial hours (see `stats`).
//!
//! Exactness: a batch's rollup updates run in the same multi-document transaction
//! as its insert into `events` and its delete from the queue, so a batch counts
//! once or not at all, whatever crashes or re-runs. Deployments without
//! transactions (a standalone `mongod`) cannot keep that promise: there the
//! worker marks the rollups as not ready and stats are computed from `events`.
//! The marker (`stats_meta`, `_id: "rollups"`) also guards a rebuild from
//! `events` (a database written before rollups existed), which one worker does
//! while the others wait.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, RawDocument, RawDocumentBuf, doc};
use mongodb::{ClientSession, Database, IndexModel};
use tracing::{info, warn};

use crate::store::{DUPLICATE_KEY, Store, StoreError};

/// Events per site.
pub const SITES: &str = "stats_sites";
/// Events per site, event type and path.
pub const PATHS: &str = "stats_paths";
/// Users seen per site and event type.
pub const VISITORS: &str = "stats_visitors";
/// Events per site, hour, event type and path.
pub const HOURLY_PATHS: &str = "stats_hourly_paths";
/// Users seen per site, hour and event type.
pub const HOURLY_VISITORS: &str = "stats_hourly_visitors";
/// Where the rollups' state is kept.
pub const META: &str = "stats_meta";

/// Every rollup collection.
pub const COLLECTIONS: [&str; 5] = [SITES, PATHS, VISITORS, HOURLY_PATHS, HOURLY_VISITORS];

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// How long a rebuild's claim lasts unless renewed (after every chunk): a
/// builder that dies is replaced this long after its last sign of life.
pub const REBUILD_LEASE: Duration = Duration::from_secs(15);
/// Events read from `events` per step of a rebuild.
const REBUILD_CHUNK: usize = 20_000;

/// The start of the UTC hour holding `time`.
pub fn hour_of(time: DateTime) -> DateTime {
    DateTime::from_millis(time.timestamp_millis().div_euclid(HOUR_MS) * HOUR_MS)
}

/// The first hour boundary at or after `time`.
pub fn next_hour_boundary(time: DateTime) -> DateTime {
    let hour = hour_of(time);
    if hour == time { hour } else { DateTime::from_millis(hour.timestamp_millis() + HOUR_MS) }
}

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

/// Joins key parts into a rollup document's `_id`. The separator is a control
/// character, which no accepted field may hold, so distinct keys never collide.
pub fn key(parts: &[&str]) -> String {
    parts.join("\u{1f}")
}

/// The `_id` of shard `shard` of the counting document keyed by `parts`: the
/// plain key for shard 0, else one part more (so it cannot meet another key,
/// whose number of parts is fixed per collection).
pub fn shard_key(parts: &[&str], shard: u32) -> String {
    let mut key = key(parts);
    if shard > 0 {
        key.push('\u{1f}');
        key.push_str(&shard.to_string());
    }
    key
}

/// The shard a counting document belongs to (0 when it has no `shard` field:
/// written before shards existed).
pub fn shard_of(document: &Document) -> u32 {
    match document.get("shard") {
        Some(Bson::Int32(n)) => u32::try_from(*n).unwrap_or(0),
        Some(Bson::Int64(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// A visitor's document in a presence collection, before it is built.
struct Presence<'a> {
    id: String,
    site_id: &'a str,
    event_type: &'a str,
    user_id: &'a str,
    hour: Option<DateTime>,
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

    /// The `update` commands adding the counts to shard `shard`: one per
    /// counting collection, each a list of upserts by `_id` (the key fields and
    /// the shard set on insert).
    pub fn count_updates(&self, shard: u32) -> Vec<Document> {
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
            .filter(|(_, updates)| !updates.is_empty())
            .map(|(collection, updates)| doc! { "update": collection, "updates": updates, "ordered": true })
            .collect()
    }

    /// The presences (visitors) per collection, keyed by `_id`.
    fn presences(&self) -> [(&'static str, Vec<Presence<'a>>); 2] {
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
    ) -> Result<Vec<VisitorDigest>, StoreError> {
        self.add_counts(db, session.as_deref_mut(), shard).await?;
        self.record_visitors(db, session, known).await
    }

    /// Upserts the counts into shard `shard`, inside `session`'s transaction
    /// when one is given.
    pub async fn add_counts(
        &self,
        db: &Database,
        mut session: Option<&mut ClientSession>,
        shard: u32,
    ) -> Result<(), StoreError> {
        for command in self.count_updates(shard) {
            let reply = match session.as_deref_mut() {
                Some(session) => db.run_command(command).session(session).await?,
                None => db.run_command(command).await?,
            };
            // A refused statement is reported in the reply, not as an error.
            if let Ok(errors) = reply.get_array("writeErrors")
                && !errors.is_empty()
            {
                return Err(StoreError::Refused(format!("rollup update refused: {errors:?}")));
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
            let find = collection.find(doc! { "_id": { "$in": ids } }).projection(doc! { "_id": 1 });
            let found: Vec<Document> = match session.as_deref_mut() {
                Some(session) => find.session(&mut *session).await?.stream(session).try_collect().await?,
                None => find.await?.try_collect().await?,
            };
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

/// A visitor (presence document) as remembered by [`KnownVisitors`]: 128 bits
/// of the SHA-256 of its collection and `_id` (16 bytes each, where two
/// visitors sharing a digest is out of reach in practice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VisitorDigest {
    digest: u128,
    hourly: bool,
}

impl VisitorDigest {
    fn of(collection: &str, presence: &Presence) -> VisitorDigest {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(collection.as_bytes());
        hasher.update([0x1f]);
        hasher.update(presence.id.as_bytes());
        let hash = hasher.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash[..16]);
        VisitorDigest { digest: u128::from_be_bytes(first), hourly: presence.hour.is_some() }
    }
}

/// The visitors this process has seen recorded by committed batches, so that
/// the next batches need not look them up again: in steady traffic nearly every
/// visitor of a batch is known, and the two lookups took a quarter of a batch's
/// time (measured).
///
/// Visitor documents are only ever deleted by retention (hours before its
/// cutoff, which are therefore never taken from memory: see
/// [`KnownVisitors::trust_hours_from`]) and by a rebuild (which runs before
/// any batch moves). Bounded: each kind (all-time, hourly) starts afresh past
/// [`KnownVisitors::CAPACITY`].
#[derive(Debug, Default)]
pub struct KnownVisitors {
    inner: std::sync::Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    all_time: HashSet<u128>,
    hourly: HashSet<u128>,
    /// Hourly visitors of hours before this are looked up, not remembered.
    trusted_from: Option<DateTime>,
}

impl KnownVisitors {
    /// How many visitors of each kind are remembered at most (about 2 MB each).
    pub const CAPACITY: usize = 100_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hourly visitors before `hour` are not taken from memory (retention may
    /// delete them, in any process); `None`: all are.
    pub fn trust_hours_from(&self, hour: Option<DateTime>) {
        self.lock().trusted_from = hour;
    }

    fn holds(&self, visitor: VisitorDigest, hour: Option<DateTime>) -> bool {
        let known = self.lock();
        if !visitor.hourly {
            return known.all_time.contains(&visitor.digest);
        }
        let trusted = match (known.trusted_from, hour) {
            (Some(from), Some(hour)) => hour >= from,
            (Some(_), None) => false,
            (None, _) => true,
        };
        trusted && known.hourly.contains(&visitor.digest)
    }

    /// Remembers the visitors of a committed batch.
    pub fn remember(&self, recorded: Vec<VisitorDigest>) {
        let mut known = self.lock();
        for visitor in recorded {
            let set = if visitor.hourly { &mut known.hourly } else { &mut known.all_time };
            if set.len() >= Self::CAPACITY {
                set.clear();
            }
            set.insert(visitor.digest);
        }
    }

    /// How many visitors are remembered.
    pub fn len(&self) -> usize {
        let known = self.lock();
        known.all_time.len() + known.hourly.len()
    }

    /// True when no visitor is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every visitor.
    pub fn forget_all(&self) {
        let mut known = self.lock();
        known.all_time.clear();
        known.hourly.clear();
    }
}

/// Creates the indexes the stats queries use (the rollups are keyed by `_id`),
/// and every rollup collection: a batch transaction that creates one on its
/// first write conflicts with the other lane's batch doing the same.
pub async fn ensure_indexes(db: &Database) -> Result<(), StoreError> {
    let existing = db.list_collection_names().await?;
    for collection in COLLECTIONS.into_iter().filter(|c| !existing.iter().any(|e| e == c)) {
        match db.create_collection(collection).await {
            Ok(()) => {}
            // Created meanwhile by another process starting up.
            Err(error) if is_namespace_exists(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let index = |keys: Document| IndexModel::builder().keys(keys).build();
    let indexes = [
        (PATHS, doc! { "site_id": 1, "event_type": 1 }),
        (VISITORS, doc! { "site_id": 1, "event_type": 1 }),
        (HOURLY_PATHS, doc! { "site_id": 1, "hour": 1 }),
        (HOURLY_VISITORS, doc! { "site_id": 1, "hour": 1 }),
    ];
    for (collection, keys) in indexes {
        db.collection::<Document>(collection).create_index(index(keys)).await?;
    }
    Ok(())
}

/// What stats may read from the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The rollups hold exactly what `events` holds.
    pub ready: bool,
    /// The all-time visitors hold exactly the visitors of `events` (false once
    /// retention deleted events: some visitors may have none left).
    pub all_time_visitors: bool,
}

/// Reads the rollups' marker.
pub async fn readiness(store: &Store) -> Result<Readiness, StoreError> {
    let meta = store.database().collection::<Document>(META).find_one(doc! { "_id": "rollups" }).await?;
    let ready = meta.as_ref().is_some_and(|meta| meta.get_str("state") == Ok("ready"));
    let all_time_visitors = ready && meta.is_some_and(|meta| meta.get_bool("visitors_partial") != Ok(true));
    Ok(Readiness { ready, all_time_visitors })
}

/// True when the rollups hold exactly what `events` holds, so stats may read them.
pub async fn are_ready(store: &Store) -> Result<bool, StoreError> {
    Ok(readiness(store).await?.ready)
}

/// Notes, within `session`'s transaction, that the all-time visitors may hold
/// visitors whose events were deleted.
pub async fn mark_visitors_partial(db: &Database, session: &mut ClientSession) -> Result<(), StoreError> {
    db.collection::<Document>(META)
        .update_one(doc! { "_id": "rollups" }, doc! { "$set": { "visitors_partial": true } })
        .session(session)
        .await?;
    Ok(())
}

/// Marks the rollups as not ready: a worker that cannot use transactions calls
/// this before moving anything, so stats are computed from `events` from then on.
pub async fn mark_not_ready(store: &Store) -> Result<(), StoreError> {
    store.database().collection::<Document>(META).delete_one(doc! { "_id": "rollups" }).await?;
    Ok(())
}

/// Returns once the rollups are ready, rebuilding them from `events` first if
/// they are not (and no other worker is already at it: then this one waits).
/// `owner` names this worker in the marker.
pub async fn make_ready(store: &Store, owner: &str) -> Result<(), StoreError> {
    let meta = store.database().collection::<Document>(META);
    let mut waiting_logged = false;
    loop {
        if are_ready(store).await? {
            return Ok(());
        }
        let now = DateTime::now();
        let lease_until = DateTime::from_millis(now.timestamp_millis() + lease_millis());
        // Become the builder if there is none, or if the last one's lease ran out.
        // A "ready" or leased marker fails the filter and the upsert then
        // collides with it on `_id`: somebody else holds it.
        let claim = meta
            .update_one(
                doc! { "_id": "rollups", "state": "building", "lease_until": { "$lt": now } },
                doc! { "$set": { "state": "building", "owner": owner, "lease_until": lease_until } },
            )
            .upsert(true)
            .await;
        match claim {
            Ok(_) => {
                rebuild(store, owner).await?;
                let done = meta
                    .update_one(
                        doc! { "_id": "rollups", "state": "building", "owner": owner },
                        doc! {
                            "$set": { "state": "ready", "built_at": DateTime::now() },
                            "$unset": { "lease_until": "", "visitors_partial": "" },
                        },
                    )
                    .await?;
                if done.matched_count == 1 {
                    return Ok(());
                }
                warn!("rollup rebuild took longer than its lease and was taken over; waiting for the new builder");
            }
            Err(error) if is_duplicate_key(&error) => {
                if !waiting_logged {
                    info!("another worker is rebuilding the stats rollups; waiting for it");
                    waiting_logged = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Recomputes every rollup from `events`, renewing `owner`'s claim after each
/// chunk. Runs while no worker moves batches.
async fn rebuild(store: &Store, owner: &str) -> Result<(), StoreError> {
    let db = store.database();
    for collection in COLLECTIONS {
        db.collection::<Document>(collection).delete_many(doc! {}).await?;
    }
    let total = store.events().estimated_document_count().await?;
    if total > 0 {
        info!(events = total, "building the stats rollups from existing events (once)");
    }
    let projection = doc! { "site_id": 1, "event_type": 1, "path": 1, "user_id": 1, "timestamp": 1 };
    let events = store.events().clone_with_type::<RawDocumentBuf>();
    let mut cursor = events.find(doc! {}).projection(projection).await?;
    let mut chunk = Vec::with_capacity(REBUILD_CHUNK);
    loop {
        let next = cursor.try_next().await?;
        let end = next.is_none();
        chunk.extend(next);
        if chunk.len() == REBUILD_CHUNK || (end && !chunk.is_empty()) {
            RollupDeltas::of(chunk.iter().map(|event| &**event)).apply(db, None, None, 0).await?;
            chunk.clear();
            let lease_until = DateTime::from_millis(DateTime::now().timestamp_millis() + lease_millis());
            let renewed = db
                .collection::<Document>(META)
                .update_one(
                    doc! { "_id": "rollups", "state": "building", "owner": owner },
                    doc! { "$set": { "lease_until": lease_until } },
                )
                .await?;
            if renewed.matched_count == 0 {
                // Taken over (this builder stalled past its lease): stop writing.
                return Err(StoreError::Refused("rollup rebuild taken over by another worker".into()));
            }
        }
        if end {
            break;
        }
    }
    if total > 0 {
        info!("stats rollups built");
    }
    Ok(())
}

fn lease_millis() -> i64 {
    REBUILD_LEASE.as_millis() as i64
}

/// The server's code for creating a collection that exists.
const NAMESPACE_EXISTS: i32 = 48;

fn is_namespace_exists(error: &mongodb::error::Error) -> bool {
    matches!(error.kind.as_ref(), mongodb::error::ErrorKind::Command(e) if e.code == NAMESPACE_EXISTS)
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        mongodb::error::ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Reads a count, which the server may send as a 32- or 64-bit integer or a double.
pub fn count_of(value: Option<&Bson>) -> u64 {
    match value {
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Double(n)) if *n >= 0.0 => *n as u64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(site: &str, kind: &str, path: &str, user: &str, millis: i64) -> RawDocumentBuf {
        let event = doc! {
            "site_id": site, "event_type": kind, "path": path, "user_id": user,
            "timestamp": DateTime::from_millis(millis),
        };
        RawDocumentBuf::from_document(&event).expect("a valid document")
    }

    #[test]
    fn hours_are_utc_hour_starts() {
        let t = DateTime::from_millis(5 * HOUR_MS + 1234);
        assert_eq!(hour_of(t), DateTime::from_millis(5 * HOUR_MS));
        assert_eq!(next_hour_boundary(t), DateTime::from_millis(6 * HOUR_MS));
        let aligned = DateTime::from_millis(7 * HOUR_MS);
        assert_eq!((hour_of(aligned), next_hour_boundary(aligned)), (aligned, aligned));
        assert_eq!(hour_of(DateTime::from_millis(-1)), DateTime::from_millis(-HOUR_MS), "before 1970 too");
    }

    #[test]
    fn known_visitors_are_remembered_only_where_trusted_and_bounded() {
        let events = [event("a", "page_view", "/", "u1", 10), event("a", "page_view", "/", "u2", 2 * HOUR_MS)];
        let deltas = RollupDeltas::of(events.iter().map(|event| &**event));
        let [(visitors_name, visitors), (hourly_name, hourly)] = deltas.presences();
        let digests: Vec<VisitorDigest> = visitors
            .iter()
            .map(|p| VisitorDigest::of(visitors_name, p))
            .chain(hourly.iter().map(|p| VisitorDigest::of(hourly_name, p)))
            .collect();
        let known = KnownVisitors::default();
        let held = |known: &KnownVisitors| {
            let all_time = visitors.iter().filter(|p| known.holds(VisitorDigest::of(visitors_name, p), p.hour)).count();
            let hours = hourly.iter().filter(|p| known.holds(VisitorDigest::of(hourly_name, p), p.hour)).count();
            (all_time, hours)
        };
        assert_eq!(held(&known), (0, 0), "nothing before a commit");
        known.remember(digests.clone());
        assert_eq!(held(&known), (2, 2));
        // Retention's cutoff near: the hour before it is looked up again.
        known.trust_hours_from(Some(DateTime::from_millis(HOUR_MS)));
        assert_eq!(held(&known), (2, 1), "all-time visitors are never deleted; the early hour is not trusted");
        known.trust_hours_from(None);
        known.forget_all();
        assert!(known.is_empty());
        // Bounded: past the capacity a kind starts afresh.
        let many = (0..KnownVisitors::CAPACITY as u128 + 10).map(|n| VisitorDigest { digest: n, hourly: true });
        known.remember(many.collect());
        assert!(known.len() <= KnownVisitors::CAPACITY);
    }

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
        let commands = deltas.count_updates(0);
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
        let sharded = ids(&deltas.count_updates(1));
        assert!(sharded.iter().all(|id| id.ends_with("\u{1f}1")), "{sharded:?}");
        assert_eq!(sharded.len(), 8);
        assert!(ids(&commands).iter().all(|id| !sharded.contains(id)), "shards never share a document");
        let [(_, visitors), (_, hourly)] = deltas.presences();
        assert_eq!((visitors.len(), hourly.len()), (3, 3));
        assert_eq!(visitors.iter().filter(|v| v.id == "a\u{1f}page_view\u{1f}u1").count(), 1);
        let hourly_doc = hourly.iter().find(|v| v.hour.is_some()).expect("an hourly visitor").document();
        assert!(hourly_doc.get_datetime("hour").is_ok() && hourly_doc.get_str("user_id").is_ok());
    }
}
