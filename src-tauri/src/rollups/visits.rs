//! Visits kept by the worker in a batch's transaction (`docs/visits.md` §2):
//! the batch's events are read as [`Hit`]s, the stored visits that can touch
//! them loaded (one query), merged ([`sessionize::merge`]), written back
//! (changed and new visits, merged ones deleted), the batch's events given
//! their `visit_id` and visit attributes before they are inserted, the stored
//! events of a changed visit rewritten (only late events cause that), and the
//! daily rollups changed by the same visits ([`DailyDeltas`]).
//!
//! Two transactions changing one visitor's visits at the same time would each
//! miss the other's (MongoDB only detects write-write conflicts): each touches
//! the one visits fence (`visit_fences`, `_id` = [`VISITS_FENCE_ID`]) first,
//! so the second conflicts and is retried on a fresh snapshot. One document,
//! not one per visitor: batches of one queue share their visitors anyway (and
//! the queue's head, and the daily rows), so per-visitor fences made every
//! pair of batches conflict all the same, only later and dearer (hundreds of
//! upserts per batch; measured: four workers' losers spent their time there
//! and the winner took 4 s a batch). The worker takes the fence before its
//! read ([`take_fence`]), so a batch that must wait loses in one write.

use std::collections::{BTreeMap, HashMap};

use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, DateTime, Document, RawDocument, RawDocumentBuf, doc};
use mongodb::options::ReturnDocument;
use mongodb::{ClientSession, Database};

use super::daily::{DailyDeltas, run_updates};
use super::recent_visits::{FenceMark, Lookup, RecentVisits, Written};
use super::sessionize::{ATTRIBUTES, Attributes, Edge, Hit, Merged, VISIT_GAP_MS, Visit, merge};
use super::{count_of, key};
use crate::storage::{StoreError, WriteLimits};

/// One document per visit.
pub const VISITS: &str = "visits";
/// Holds the visits fence: written by every transaction that changes visits,
/// so that two such transactions conflict.
pub const VISIT_FENCES: &str = "visit_fences";
/// The `_id` of the one fence document in [`VISIT_FENCES`].
pub const VISITS_FENCE_ID: &str = "visits";

/// The `sv` of a visitor: its site and user, as one indexed key.
pub fn visitor_key(site_id: &str, user_id: &str) -> String {
    key(&[site_id, user_id])
}

/// Reads an event (queue or `events` document) as a [`Hit`] with its site and
/// user; `None` for one the visits cannot place (no `ObjectId` `_id`, no date
/// `timestamp`, no string site or user: never queued by our API).
pub fn hit_of(event: &RawDocument) -> Option<(String, String, Hit)> {
    let text = |field| event.get_str(field).ok().map(str::to_string);
    let mut attributes = Attributes::new();
    for name in ATTRIBUTES {
        if let Some(value) = text(name) {
            attributes.insert(name, value);
        }
    }
    let hit = Hit {
        id: event.get_object_id("_id").ok()?,
        at: event.get_datetime("timestamp").ok()?.timestamp_millis(),
        path: text("path").unwrap_or_default(),
        page_view: event.get_str("event_type").ok() == Some("page_view"),
        hostname: text("hostname"),
        attributes,
        anonymous: event.get_bool("anonymous").ok() == Some(true),
    };
    Some((text("site_id")?, text("user_id")?, hit))
}

/// What keeping a batch's visits did, for tests and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VisitsKept {
    /// Visits written (new or changed).
    pub written: usize,
    /// Visits deleted (merged into another).
    pub merged: usize,
    /// Visits whose stored events were rewritten.
    pub rewritten: usize,
}

/// Keeps the visits of `batch` (queue documents about to be inserted into
/// `events`) within `session`'s transaction, and gives each event its
/// `visit_id` and visit attributes; the daily rollups go into shard `shard`.
///
/// The caller has taken the visits fence in this transaction (count `fence`,
/// see [`take_fence`]); `recent` answers for the stored visits when it can.
/// Returns what was kept and the writes to give `recent` once committed.
pub async fn keep_visits(
    db: &Database,
    session: &mut ClientSession,
    batch: &mut [RawDocumentBuf],
    shard: u32,
    limits: &WriteLimits,
    fenced: Fenced<'_>,
) -> Result<(VisitsKept, Written), StoreError> {
    let mut visitors: BTreeMap<(String, String), Vec<Hit>> = BTreeMap::new();
    for event in batch.iter() {
        if let Some((site, user, hit)) = hit_of(event) {
            visitors.entry((site, user)).or_default().push(hit);
        }
    }
    let newest = visitors.values().flatten().map(|hit| hit.at).max().unwrap_or(i64::MIN);
    let fence = fenced.fence;
    let (kept, runs, deleted) = merge_into_stored(db, session, visitors, shard, limits, Some(fenced)).await?;
    let visits = runs.iter().map(|((site, user), run)| (visitor_key(site, user), run.visit.clone())).collect();
    let written = Written { fence: Some(fence), visits, deleted, newest };
    // The batch's events take their visit's id and attributes.
    let mut of_event: HashMap<ObjectId, (ObjectId, &Attributes)> = HashMap::new();
    for (_, run) in &runs {
        for hit in &run.hits {
            of_event.insert(*hit, (run.visit.id, &run.visit.attributes));
        }
    }
    for event in batch.iter_mut() {
        if let Some((visit_id, attributes)) = event.get_object_id("_id").ok().and_then(|id| of_event.get(&id)) {
            *event = with_visit(event, *visit_id, attributes);
        }
    }
    Ok((kept, written))
}

/// A worker's batch that took the visits fence (count `fence`) before its
/// read, with the worker's memory of recent visits.
#[derive(Debug, Clone, Copy)]
pub struct Fenced<'a> {
    pub fence: FenceMark,
    pub recent: &'a RecentVisits,
}

/// Takes the visits fence (unless `fenced`: taken already), gets the visitors'
/// stored visits near the hits (from `fenced`'s memory when it can answer,
/// else the database), merges, and writes visits, stored events' rewrites and
/// daily rollups. Returns the runs (with their site and user) for the caller
/// to label its events, and the visits deleted.
#[allow(clippy::type_complexity)]
async fn merge_into_stored(
    db: &Database,
    session: &mut ClientSession,
    visitors: BTreeMap<(String, String), Vec<Hit>>,
    shard: u32,
    limits: &WriteLimits,
    fenced: Option<Fenced<'_>>,
) -> Result<(VisitsKept, Vec<((String, String), Merged)>, Vec<ObjectId>), StoreError> {
    let mut kept = VisitsKept::default();
    let Some(low) = visitors.values().flatten().map(|hit| hit.at).min() else {
        return Ok((kept, Vec::new(), Vec::new()));
    };
    let high = visitors.values().flatten().map(|hit| hit.at).max().unwrap_or(low);
    // Step times for the debug log: where a batch's visits spend their time.
    let t0 = std::time::Instant::now();
    let (from, to) = (low - VISIT_GAP_MS, high + VISIT_GAP_MS);
    let mut stored = match fenced {
        None => {
            take_fence(db, session).await?;
            load_near(db, session, &visitors, from, to).await?
        }
        Some(Fenced { fence, recent }) => match recent.lookup(fence, from) {
            Lookup::Held => held_near(recent, &visitors, from, to),
            Lookup::Fill(horizon) => {
                recent.fill(horizon, load_ending_after(db, session, horizon).await?);
                held_near(recent, &visitors, from, to)
            }
            Lookup::Load => load_near(db, session, &visitors, from, to).await?,
        },
    };
    let t_load = t0.elapsed();

    let mut runs = Vec::new();
    for ((site, user), hits) in visitors {
        let near = stored.remove(&visitor_key(&site, &user)).unwrap_or_default();
        for run in merge(near, hits) {
            runs.push(((site.clone(), user.clone()), run));
        }
    }
    let mut daily = DailyDeltas::default();
    let mut writes = Vec::new();
    let mut inserts = Vec::new();
    let mut deleted: Vec<ObjectId> = Vec::new();
    for ((site, user), run) in &runs {
        for old in &run.replaced {
            daily.count(site, user, old, -1);
        }
        daily.count(site, user, &run.visit, 1);
        deleted.extend(run.deleted().map(|old| old.id));
        let mut document = visit_document(site, user, &run.visit);
        if run.replaced.iter().any(|old| old.id == run.visit.id) {
            writes.push(doc! { "q": { "_id": run.visit.id }, "u": document, "upsert": true });
        } else {
            // A new visit (its id is its first event's, stored nowhere yet):
            // an insert costs SecantusDB less than an upsert's lookup.
            document.insert("_id", run.visit.id);
            inserts.push(document);
        }
        if run.rewrites_stored_events() {
            rewrite_stored_events(db, session, site, user, run).await?;
            kept.rewritten += 1;
        }
    }
    kept.written = writes.len() + inserts.len();
    kept.merged = deleted.len();
    let t_merge = t0.elapsed();
    run_updates(db, session, VISITS, writes, limits).await?;
    if !inserts.is_empty() {
        db.collection::<Document>(VISITS).insert_many(inserts).session(&mut *session).await?;
    }
    let t_write = t0.elapsed();
    if !deleted.is_empty() {
        db.collection::<Document>(VISITS)
            .delete_many(doc! { "_id": { "$in": &deleted } })
            .session(&mut *session)
            .await?;
    }
    daily.apply(db, session, shard, limits).await?;
    tracing::debug!(
        load_ms = t_load.as_millis() as u64,
        merge_ms = (t_merge - t_load).as_millis() as u64,
        write_ms = (t_write - t_merge).as_millis() as u64,
        daily_ms = (t0.elapsed() - t_write).as_millis() as u64,
        written = kept.written,
        rewritten = kept.rewritten,
        "visits kept"
    );
    Ok((kept, runs, deleted))
}

/// Retention, within `session`'s transaction: deletes up to `chunk` visits
/// starting before `cutoff`, taking them off the daily rollups (shard 0);
/// the last chunk (fewer found) also deletes the daily rows of the whole days
/// before the cutoff's, all zero by then. Returns the visits found.
pub async fn delete_visits_before(
    db: &Database,
    session: &mut ClientSession,
    cutoff: DateTime,
    chunk: usize,
    limits: &WriteLimits,
) -> Result<usize, StoreError> {
    let visits = db.collection::<Document>(VISITS);
    let old = doc! { "start": { "$lt": cutoff } };
    let find = visits.find(old).limit(chunk as i64);
    let found: Vec<Document> = find.session(&mut *session).await?.stream(&mut *session).try_collect().await?;
    let mut daily = DailyDeltas::default();
    // All found go, even one unreadable (then counted nowhere).
    let ids: Vec<Bson> = found.iter().filter_map(|document| document.get("_id").cloned()).collect();
    for document in &found {
        let (Ok(site), Ok(user), Some(visit)) =
            (document.get_str("site_id"), document.get_str("user_id"), visit_of(document))
        else {
            continue;
        };
        daily.count(site, user, &visit, -1);
    }
    take_fence(db, session).await?;
    daily.apply(db, session, 0, limits).await?;
    if !ids.is_empty() {
        visits.delete_many(doc! { "_id": { "$in": &ids } }).session(&mut *session).await?;
    }
    if found.len() < chunk {
        let whole_days = DateTime::from_millis(super::daily::day_of(cutoff.timestamp_millis()));
        let before = doc! { "day": { "$lt": whole_days } };
        db.collection::<Document>(super::daily::DAILY).delete_many(before).session(&mut *session).await?;
    }
    Ok(found.len())
}

/// Touches the visits fence (see the module's comment) within `session`'s
/// transaction: the first writer holds it until its commit or abort, and any
/// other transaction touching it meanwhile fails with a write conflict (or a
/// duplicate key, the very first time), to be retried on a fresh snapshot.
/// Returns the fence as this taker found it (see [`RecentVisits`]): its
/// epoch and count of takers, this one included.
pub async fn take_fence(db: &Database, session: &mut ClientSession) -> Result<FenceMark, StoreError> {
    let fence = db.collection::<Document>(VISIT_FENCES);
    let take = doc! { "$inc": { "n": 1_i64 }, "$setOnInsert": { "epoch": ObjectId::new() } };
    let touched = fence
        .find_one_and_update(doc! { "_id": VISITS_FENCE_ID }, take)
        .upsert(true)
        .return_document(ReturnDocument::After)
        .session(&mut *session)
        .await
        .map_err(super::daily::concurrent_or_not)?
        .unwrap_or_default();
    let epoch = touched.get_object_id("epoch").ok();
    Ok(FenceMark { epoch, count: count_of(touched.get("n")) as i64 })
}

/// The stored visits that can touch `visitors`' hits, by visitor: every visit
/// of the batch's visitors over the batch's span (within the gap), by `$in`
/// and the span, which the index `{sv, end}` bounds. Narrower per-visitor
/// clauses (an `$or` of one branch per visitor and run of close hits) kept
/// the answer smaller for a batch of old history, but SecantusDB evaluates
/// such an `$or` on every candidate document (measured: 400 branches over
/// 50,000 visits, 238 ms against 41 ms without; 400 of a live batch's 900 ms
/// in a debug build; a 30-day history moved at 430 events/s); `merge` takes
/// the stored visits that touch no hit and leaves them as they are.
async fn load_near(
    db: &Database,
    session: &mut ClientSession,
    visitors: &BTreeMap<(String, String), Vec<Hit>>,
    from: i64,
    to: i64,
) -> Result<HashMap<String, Vec<Visit>>, StoreError> {
    let mut by_visitor: HashMap<String, Vec<Visit>> = HashMap::new();
    let visits = db.collection::<Document>(VISITS);
    let visitors: Vec<_> = visitors.keys().collect();
    for chunk in visitors.chunks(500) {
        let svs: Vec<String> = chunk.iter().map(|(site, user)| visitor_key(site, user)).collect();
        let near = doc! {
            "sv": { "$in": &svs },
            "end": { "$gte": DateTime::from_millis(from) },
            "start": { "$lte": DateTime::from_millis(to) },
        };
        let found: Vec<Document> =
            visits.find(near).session(&mut *session).await?.stream(&mut *session).try_collect().await?;
        for document in found {
            if let (Ok(sv), Some(visit)) = (document.get_str("sv"), visit_of(&document)) {
                by_visitor.entry(sv.to_string()).or_default().push(visit);
            }
        }
    }
    Ok(by_visitor)
}

/// [`load_near`]'s answer from the worker's memory.
fn held_near(
    recent: &RecentVisits,
    visitors: &BTreeMap<(String, String), Vec<Hit>>,
    from: i64,
    to: i64,
) -> HashMap<String, Vec<Visit>> {
    let keys = visitors.keys().map(|(site, user)| visitor_key(site, user));
    keys.map(|visitor| {
        let near = recent.near(&visitor, from, to);
        (visitor, near)
    })
    .collect()
}

/// Every stored visit ending at or after `from`, with its visitor key: what
/// fills a worker's memory (once, then kept by its batches).
async fn load_ending_after(
    db: &Database,
    session: &mut ClientSession,
    from: i64,
) -> Result<Vec<(String, Visit)>, StoreError> {
    let visits = db.collection::<Document>(VISITS);
    let recent = visits.find(doc! { "end": { "$gte": DateTime::from_millis(from) } });
    let found: Vec<Document> = recent.session(&mut *session).await?.stream(&mut *session).try_collect().await?;
    Ok(found
        .iter()
        .filter_map(|document| Some((document.get_str("sv").ok()?.to_string(), visit_of(document)?)))
        .collect())
}

/// Rewrites the stored events of the visits `run` replaced: the kept visit's
/// id and attributes. Their `timestamp`s lie within the visit, so the index
/// `{site_id, timestamp}` finds the candidates; the visitor and visit are
/// checked here, not in the query: SecantusDB uses only the index's equality
/// prefix when a filter adds fields outside it, so the query then reads every
/// event of the site (measured: 310 ms at 100,000 events against 3 ms, and a
/// realistic history's batches grew from 4 to 300 ms of rewrites by 20,000).
async fn rewrite_stored_events(
    db: &Database,
    session: &mut ClientSession,
    site: &str,
    user: &str,
    run: &Merged,
) -> Result<(), StoreError> {
    let replaced: Vec<ObjectId> = run.replaced.iter().map(|old| old.id).collect();
    let within = doc! {
        "site_id": site,
        "timestamp": { "$gte": DateTime::from_millis(run.visit.entry.at), "$lte": DateTime::from_millis(run.visit.exit.at) },
    };
    let events = db.collection::<Document>(crate::config::EVENTS_COLLECTION);
    let find = events.find(within).projection(doc! { "_id": 1, "user_id": 1, "visit_id": 1 });
    let candidates: Vec<Document> = find.session(&mut *session).await?.stream(&mut *session).try_collect().await?;
    let ids: Vec<ObjectId> = candidates
        .iter()
        .filter(|event| event.get_str("user_id") == Ok(user))
        .filter(|event| event.get_object_id("visit_id").is_ok_and(|visit| replaced.contains(&visit)))
        .filter_map(|event| event.get_object_id("_id").ok())
        .collect();
    if !ids.is_empty() {
        events.update_many(doc! { "_id": { "$in": ids } }, labelling(&run.visit)).session(&mut *session).await?;
    }
    Ok(())
}

/// The update giving stored events `visit`'s id and attributes (their own removed).
fn labelling(visit: &Visit) -> Document {
    let mut set = doc! { "visit_id": visit.id };
    let mut unset = Document::new();
    for name in ATTRIBUTES {
        match visit.attributes.get(name) {
            Some(value) => set.insert(name, value.as_str()),
            None => unset.insert(name, ""),
        };
    }
    let mut update = doc! { "$set": set };
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    update
}

/// A rebuild chunk's part, within its (fenced) transaction: the chunk's stored
/// events merged into the visits rebuilt so far (any order gives the same
/// visits), their daily rollups counted into shard 0, and the events labelled.
pub async fn rebuild_chunk(
    db: &Database,
    session: &mut ClientSession,
    events: &[RawDocumentBuf],
    limits: &WriteLimits,
) -> Result<(), StoreError> {
    let mut visitors: BTreeMap<(String, String), Vec<Hit>> = BTreeMap::new();
    for event in events {
        if let Some((site, user, hit)) = hit_of(event) {
            visitors.entry((site, user)).or_default().push(hit);
        }
    }
    let (_, runs, _) = merge_into_stored(db, session, visitors, 0, limits, None).await?;
    let labels = runs
        .iter()
        .map(|(_, run)| doc! { "q": { "_id": { "$in": &run.hits } }, "u": labelling(&run.visit), "multi": true })
        .collect();
    run_updates(db, session, crate::config::EVENTS_COLLECTION, labels, limits).await
}

/// The fields of an event the visits read (a rebuild's projection).
pub fn projection() -> Document {
    let mut fields = doc! { "site_id": 1, "user_id": 1, "timestamp": 1, "path": 1, "event_type": 1 };
    for name in ["hostname", "anonymous"].into_iter().chain(ATTRIBUTES) {
        fields.insert(name, 1);
    }
    fields
}

/// `event` with `visit_id` and the visit's attributes in place of its own
/// (copied element by element: the rest stays raw).
fn with_visit(event: &RawDocument, visit_id: ObjectId, attributes: &Attributes) -> RawDocumentBuf {
    let mut labelled = RawDocumentBuf::new();
    for element in event.iter().flatten() {
        let (name, value) = element;
        if name == "visit_id" || ATTRIBUTES.contains(&name) {
            continue;
        }
        labelled.append_ref(name, value);
    }
    labelled.append("visit_id", visit_id);
    for (name, value) in attributes {
        labelled.append(*name, value.as_str());
    }
    labelled
}

/// The document of `visit` (see `docs/visits.md` §2). `entry_id` / `exit_id`
/// (the first and last event's `_id`) order events of the same millisecond.
pub fn visit_document(site: &str, user: &str, visit: &Visit) -> Document {
    let mut document = doc! { "site_id": site, "user_id": user };
    if visit.anonymous {
        document.insert("anonymous", true);
    }
    document.insert("sv", visitor_key(site, user));
    document.insert("start", DateTime::from_millis(visit.entry.at));
    document.insert("end", DateTime::from_millis(visit.exit.at));
    document.insert("entry_page", visit.entry.path.as_str());
    document.insert("exit_page", visit.exit.path.as_str());
    document.insert("entry_id", visit.entry.id);
    document.insert("exit_id", visit.exit.id);
    document.insert("pageviews", visit.pageviews as i64);
    document.insert("events", visit.events as i64);
    document.insert("duration_ms", visit.duration_ms());
    document.insert("bounced", visit.bounced());
    if let Some(hostname) = &visit.hostname {
        document.insert("hostname", hostname.as_str());
    }
    for (name, value) in &visit.attributes {
        document.insert(*name, value.as_str());
    }
    document
}

/// Reads a stored visit document back; `None` for one not written by
/// [`visit_document`].
pub fn visit_of(document: &Document) -> Option<Visit> {
    let date = |field| document.get_datetime(field).ok().map(|at| at.timestamp_millis());
    let text = |field| document.get_str(field).ok().map(str::to_string);
    let id = document.get_object_id("_id").ok()?;
    let mut attributes = Attributes::new();
    for name in ATTRIBUTES {
        if let Some(value) = text(name) {
            attributes.insert(name, value);
        }
    }
    Some(Visit {
        id,
        entry: Edge {
            at: date("start")?,
            id: document.get_object_id("entry_id").unwrap_or(id),
            path: text("entry_page").unwrap_or_default(),
        },
        exit: Edge {
            at: date("end")?,
            id: document.get_object_id("exit_id").unwrap_or(id),
            path: text("exit_page").unwrap_or_default(),
        },
        pageviews: count_of(document.get("pageviews")),
        events: count_of(document.get("events")).max(1),
        hostname: text("hostname"),
        attributes,
        anonymous: document.get_bool("anonymous") == Ok(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelling_replaces_the_events_own_attributes_and_keeps_the_rest() {
        let event = doc! {
            "_id": ObjectId::new(), "site_id": "s", "user_id": "u", "path": "/x", "source": "Own",
            "timestamp": DateTime::from_millis(5), "device": "mobile",
        };
        let raw = RawDocumentBuf::from_document(&event).unwrap();
        let visit = ObjectId::new();
        let attributes = Attributes::from([("source", "Google".to_string())]);
        let labelled = with_visit(&raw, visit, &attributes).to_document().unwrap();
        assert_eq!(labelled.get_object_id("visit_id"), Ok(visit));
        assert_eq!(labelled.get_str("source"), Ok("Google"));
        assert!(labelled.get("device").is_none(), "the visit has no device: the event neither");
        assert_eq!((labelled.get_str("path"), labelled.get_str("site_id")), (Ok("/x"), Ok("s")));
        let (_, _, hit) = hit_of(&raw).unwrap();
        let visit = Visit::of(&hit);
        let stored = visit_of(&visit_document("s", "u", &visit)).is_none();
        assert!(stored, "a document without `_id` is not a stored visit");
        let mut document = visit_document("s", "u", &visit);
        document.insert("_id", visit.id);
        assert_eq!(visit_of(&document), Some(visit));
    }
}
