//! The all-time, unfiltered stats of a site from the ranks the worker keeps
//! (see [`crate::rollups::ranks`]): the top paths and types are a sort and
//! limit an index answers, the other figures a few small documents, so the
//! answer takes the same few milliseconds whatever the site holds.

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};

use super::queries::{aggregate, text, time_limited};
use super::{OtherTypes, PathCount, SiteStats, TOP_EVENT_TYPES, TOP_PATHS, TypeCount};
use crate::rollups::{self, count_of, ranks};
use crate::storage::{Store, StoreError};

/// A site's all-time stats from the ranks. `visitors_exact` false (retention
/// deleted events: the users counter may count some with none left) reads the
/// distinct users from the hourly visitors instead, as the other rollups do.
pub(super) async fn ranked_site_stats(
    store: &Store,
    site_id: &str,
    visitors_exact: bool,
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
    let unique_users = unique_users.unwrap_or_else(|| count_of(site.as_ref().and_then(|s| s.get("users"))));
    let types = count_of(site.as_ref().and_then(|s| s.get("types")));
    let events_by_type: Vec<TypeCount> = top_types
        .iter()
        .map(|t| TypeCount { event_type: text(t.get("event_type")), count: count_of(t.get("count")) })
        .collect();
    let listed: u64 = events_by_type.iter().map(|t| t.count).sum();
    let events_by_type_other = (types > events_by_type.len() as u64).then(|| OtherTypes {
        types: types - events_by_type.len() as u64,
        count: total_events.saturating_sub(listed),
    });
    let top_paths =
        top_paths.iter().map(|p| PathCount { path: text(p.get("path")), count: count_of(p.get("count")) }).collect();
    Ok(SiteStats { total_events, unique_users, top_paths, events_by_type, events_by_type_other })
}

/// The `limit` most counted documents of `site_id` in `collection`, by count
/// descending then `field` ascending: the index `{site_id, count: -1, field}`
/// gives them in that order, so the server reads only these.
async fn top(
    store: &Store,
    collection: &str,
    field: &str,
    site_id: &str,
    limit: usize,
) -> Result<Vec<Document>, StoreError> {
    let time_limit = store.stats_query_time_limit();
    let collection = store.database().collection::<Document>(collection);
    let find = collection
        .find(doc! { "site_id": site_id })
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

/// The site's numbers of types and users, if it has any.
async fn site_ranks(store: &Store, site_id: &str) -> Result<Option<Document>, StoreError> {
    let time_limit = store.stats_query_time_limit();
    let site_ranks = store.database().collection::<Document>(ranks::SITE_RANKS);
    site_ranks
        .find_one(doc! { "_id": site_id })
        .max_time(time_limit)
        .await
        .map_err(|error| time_limited(error, time_limit))
}
