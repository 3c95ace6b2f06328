//! The all-time, unfiltered stats of a site from the ranks the worker keeps
//! (see [`crate::rollups::ranks`]): the top paths and types are read by index
//! from just above the last answer's floor (see [`top`]), the other figures
//! are a few small documents, so the answer takes a few milliseconds whatever
//! the site holds. Counts of
//! committed batches not folded into the ranks yet (a few documents, usually
//! none) are added: they only raise counts, so the top N of the sum is among
//! the ranks' top N and the pending keys.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};

use super::queries::{aggregate, text, time_limited};
use super::{OtherTypes, PathCount, SiteStats, TOP_EVENT_TYPES, TOP_PATHS, TypeCount};
use crate::rollups::{self, count_of, ranks};
use crate::storage::{Store, StoreError};

/// Reads of the ranks made while a fold took pending counts, before giving up.
const READ_ATTEMPTS: usize = 3;

/// A site's all-time stats from the ranks. `visitors_exact` false (retention
/// deleted events: the users counter may count some with none left) reads the
/// distinct users from the hourly visitors instead, as the other rollups do.
///
/// The pending counts are read first and their `_id`s checked again after the
/// ranks: a fold that moved some of them into the ranks in between (they
/// could count twice) makes it read again; `None` when that happened
/// [`READ_ATTEMPTS`] times (the caller then reads the other rollups).
pub(super) async fn ranked_site_stats(
    store: &Store,
    site_id: &str,
    visitors_exact: bool,
) -> Result<Option<SiteStats>, StoreError> {
    for _ in 0..READ_ATTEMPTS {
        let (paths, types, before) = pending(store, site_id).await?;
        let stats = ranked_with(store, site_id, visitors_exact, (paths, types)).await?;
        let (_, _, after) = pending(store, site_id).await?;
        if before.iter().all(|id| after.contains(id)) {
            return Ok(Some(stats));
        }
    }
    Ok(None)
}

/// [`ranked_site_stats`] given the pending counts (per path, per type).
async fn ranked_with(
    store: &Store,
    site_id: &str,
    visitors_exact: bool,
    pending: (Counts, Counts),
) -> Result<SiteStats, StoreError> {
    let (top_paths, top_types, total_events, site, unique_users) = tokio::try_join!(
        top(store, ranks::RANK_PATHS, "path", site_id, TOP_PATHS),
        top(store, ranks::RANK_TYPES, "event_type", site_id, TOP_EVENT_TYPES),
        total_events(store, site_id),
        site_ranks(store, site_id),
        async {
            if visitors_exact {
                return Ok(None);
            }
            let hourly = store.database().collection::<Document>(rollups::HOURLY_VISITORS);
            let pipeline = vec![
                doc! { "$match": { "site_id": site_id } },
                doc! { "$group": { "_id": "$user_id" } },
                doc! { "$count": "n" },
            ];
            let rows = aggregate(store, &hourly, pipeline).await?;
            Ok(Some(rows.first().map_or(0, |row| count_of(row.get("n")))))
        },
    )?;
    let unique_users = unique_users.unwrap_or_else(|| site.iter().map(|s| count_of(s.get("users"))).sum());
    let mut types: u64 = site.iter().map(|s| count_of(s.get("types"))).sum();
    let (pending_paths, pending_types) = pending;
    let top_paths = with_pending(store, ranks::RANK_PATHS, site_id, top_paths, "path", pending_paths, TOP_PATHS);
    let (top_paths, (top_types, new_types)) = tokio::try_join!(
        top_paths,
        with_pending(store, ranks::RANK_TYPES, site_id, top_types, "event_type", pending_types, TOP_EVENT_TYPES),
    )?;
    let (top_paths, _) = top_paths;
    types += new_types;
    let events_by_type: Vec<TypeCount> =
        top_types.into_iter().map(|(event_type, count)| TypeCount { event_type, count }).collect();
    let listed: u64 = events_by_type.iter().map(|t| t.count).sum();
    let events_by_type_other = (types > events_by_type.len() as u64)
        .then(|| OtherTypes { types: types - events_by_type.len() as u64, count: total_events.saturating_sub(listed) });
    let top_paths = top_paths.into_iter().map(|(path, count)| PathCount { path, count }).collect();
    Ok(SiteStats { total_events, unique_users, top_paths, events_by_type, events_by_type_other })
}

/// The last row of a site's previous top N in one ranks collection: `(count, key)`.
type Floor = (i64, String);

/// The floors of the last answers, per (database, collection, site): see [`top`].
type Floors = Mutex<HashMap<(String, String, String), Floor>>;

/// The floors this process remembers.
fn floors() -> &'static Floors {
    static FLOORS: OnceLock<Floors> = OnceLock::new();
    FLOORS.get_or_init(Mutex::default)
}

/// Most floors remembered (then they start afresh): about 1 MB.
const FLOORS_CAPACITY: usize = 10_000;

/// The `limit` most counted documents of `site_id` in `collection`, by count
/// descending then `field` ascending.
///
/// SecantusDB (measured) reads every document matching the index's equality
/// part before sorting, even when the index `{site_id, count: -1, field}` gives
/// the order: 100,000 paths take 300–500 ms. A bound on `count` (and on the key
/// within one count) it does use. So the last answer's last row (its floor) is
/// remembered, and the next answer reads only the documents ranking at or
/// above it: when there are at least `limit` of them, the top ones are among
/// them (every other document ranks below all of them), exact whatever changed
/// meanwhile. Otherwise (first answer, counts taken off by retention) the
/// whole site is read once.
async fn top(
    store: &Store,
    collection: &str,
    field: &str,
    site_id: &str,
    limit: usize,
) -> Result<Vec<Document>, StoreError> {
    let collection = store.database().collection::<Document>(collection);
    let floor_key = (store.database().name().to_string(), collection.name().to_string(), site_id.to_string());
    let floor = floors().lock().unwrap_or_else(|e| e.into_inner()).get(&floor_key).cloned();
    let mut rows = Vec::new();
    if let Some((count, key)) = floor {
        // `$gte` on the next integer: SecantusDB bounds its index scan by `$gte`, not by `$gt` (measured).
        let above = doc! { "site_id": site_id, "count": { "$gte": count.saturating_add(1) } };
        rows = top_matching(store, &collection, field, above, limit).await?;
        if rows.len() < limit {
            let tied = doc! { "site_id": site_id, "count": count, field: { "$lte": key } };
            rows.extend(top_matching(store, &collection, field, tied, limit - rows.len()).await?);
        }
    }
    if rows.len() < limit {
        rows = top_matching(store, &collection, field, doc! { "site_id": site_id }, limit).await?;
    }
    if rows.len() == limit
        && let Some(last) = rows.last()
    {
        let floor = (count_of(last.get("count")) as i64, text(last.get(field)));
        let mut floors = floors().lock().unwrap_or_else(|e| e.into_inner());
        if floors.len() >= FLOORS_CAPACITY {
            floors.clear();
        }
        floors.insert(floor_key, floor);
    }
    Ok(rows)
}

/// The `limit` first documents matching, by count descending then `field` ascending.
async fn top_matching(
    store: &Store,
    collection: &mongodb::Collection<Document>,
    field: &str,
    matching: Document,
    limit: usize,
) -> Result<Vec<Document>, StoreError> {
    let time_limit = store.stats_query_time_limit();
    let find = collection
        .find(matching)
        .sort(doc! { "count": -1, field: 1 })
        .limit(limit as i64)
        .projection(doc! { "_id": 0, field: 1, "count": 1 })
        .max_time(time_limit);
    let rows = async { find.await?.try_collect::<Vec<Document>>().await };
    rows.await.map_err(|error| time_limited(error, time_limit))
}

/// The site's events: the sum of its shards of `stats_sites`.
async fn total_events(store: &Store, site_id: &str) -> Result<u64, StoreError> {
    let sites = store.database().collection::<Document>(rollups::SITES);
    let pipeline = vec![
        doc! { "$match": { "site_id": site_id } },
        doc! { "$group": { "_id": Bson::Null, "count": { "$sum": "$count" } } },
    ];
    let rows = aggregate(store, &sites, pipeline).await?;
    Ok(rows.first().map_or(0, |row| count_of(row.get("count"))))
}

/// The site's documents counting its types and (per shard) users.
async fn site_ranks(store: &Store, site_id: &str) -> Result<Vec<Document>, StoreError> {
    let collection = store.database().collection::<Document>(ranks::SITE_RANKS);
    find_all(store, &collection, doc! { "site_id": site_id }).await
}

/// Counts per key of one kind.
type Counts = HashMap<String, u64>;

/// The site's pending counts, per path and per type, and the `_id`s of their documents.
async fn pending(store: &Store, site_id: &str) -> Result<(Counts, Counts, HashSet<String>), StoreError> {
    let collection = store.database().collection::<Document>(ranks::PENDING);
    let (mut paths, mut types, mut ids) = (Counts::new(), Counts::new(), HashSet::new());
    for document in find_all(store, &collection, doc! { "site_id": site_id }).await? {
        ids.insert(document.get("_id").map(Bson::to_string).unwrap_or_default());
        let into = if document.get_str("kind") == Ok("path") { &mut paths } else { &mut types };
        for entry in document.get_array("counts").map(|a| a.as_slice()).unwrap_or_default() {
            if let Some(entry) = entry.as_document() {
                *into.entry(text(entry.get("k"))).or_default() += count_of(entry.get("n"));
            }
        }
    }
    Ok((paths, types, ids))
}

/// The top `limit` of the ranks' `top` rows plus `pending` (by count
/// descending, then key ascending), and how many pending keys the ranks do
/// not hold yet (types new to the site).
async fn with_pending(
    store: &Store,
    collection: &str,
    site_id: &str,
    top: Vec<Document>,
    field: &str,
    pending: Counts,
    limit: usize,
) -> Result<(Vec<(String, u64)>, u64), StoreError> {
    let mut counts: Counts = top.iter().map(|row| (text(row.get(field)), count_of(row.get("count")))).collect();
    let mut new_keys = 0;
    if !pending.is_empty() {
        // The ranked counts of the pending keys not in the top already.
        let ids: Vec<String> =
            pending.keys().filter(|k| !counts.contains_key(*k)).map(|k| rollups::key(&[site_id, k])).collect();
        let collection = store.database().collection::<Document>(collection);
        let mut ranked = Counts::new();
        for chunk in ids.chunks(ranks::KEYS_PER_COMMAND) {
            for row in find_all(store, &collection, doc! { "_id": { "$in": chunk } }).await? {
                ranked.insert(text(row.get(field)), count_of(row.get("count")));
            }
        }
        for (key, n) in pending {
            let base = match counts.get(&key).or(ranked.get(&key)) {
                Some(count) => *count,
                None => {
                    new_keys += 1;
                    0
                }
            };
            counts.insert(key, base + n);
        }
    }
    let mut rows: Vec<(String, u64)> = counts.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(limit);
    Ok((rows, new_keys))
}

/// Every document matching on `collection`, within the stats time limit.
async fn find_all(
    store: &Store,
    collection: &mongodb::Collection<Document>,
    matching: Document,
) -> Result<Vec<Document>, StoreError> {
    let time_limit = store.stats_query_time_limit();
    let rows = async { collection.find(matching).max_time(time_limit).await?.try_collect::<Vec<Document>>().await };
    rows.await.map_err(|error| time_limited(error, time_limit))
}
