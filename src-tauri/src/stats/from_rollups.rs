//! Stats read from the rollups: a few small documents per site, plus the raw
//! events of a time range's partial hours at either end.

use std::collections::HashMap;

use mongodb::bson::{DateTime, Document, doc};

use super::from_events::{events_match, hourly_event_counts, range};
use super::from_ranks::ranked_site_stats;
use super::queries::{
    Source, aggregate, count, distinct_users, event_counts, event_users, site_stats_from, union_with,
};
use super::{SiteStats, StatsFilter};
use crate::rollups::{self, count_of, hour_of, next_hour_boundary};
use crate::storage::{Store, StoreError};

/// A site's stats from the rollups (and the raw events of partial hours).
pub async fn fast_site_stats(store: &Store, filter: &StatsFilter) -> Result<SiteStats, StoreError> {
    let readiness = rollups::readiness(store).await?;
    rollup_site_stats(store, filter, readiness.all_time_visitors, readiness.ranked).await
}

/// [`fast_site_stats`] with the rollups' marker already read: `visitors_exact`
/// says whether the all-time visitors may be used (see `retention`), `ranked`
/// whether the ranks may (the all-time, unfiltered stats: see [`super::from_ranks`]).
///
/// Every figure is computed by the server (see [`super::queries`]); a range's
/// partial hours join the hourly rollups there by `$unionWith`, so the users
/// of whole and partial hours are one `$group`, never a set in the API.
pub(super) async fn rollup_site_stats(
    store: &Store,
    filter: &StatsFilter,
    visitors_exact: bool,
    ranked: bool,
) -> Result<SiteStats, StoreError> {
    let db = store.database();
    if ranked
        && filter.from.is_none()
        && filter.to.is_none()
        && filter.event_type.is_none()
        && let Some(stats) = ranked_site_stats(store, &filter.site_id, visitors_exact).await?
    {
        return Ok(stats);
    }
    if filter.from.is_none() && filter.to.is_none() {
        // All time: the all-time rollups, no hours involved.
        let mut matching = doc! { "site_id": &filter.site_id };
        if let Some(kind) = &filter.event_type {
            matching.insert("event_type", kind);
        }
        let paths = db.collection::<Document>(rollups::PATHS);
        // After retention deleted events, only the hourly visitors are exact.
        let visitors =
            db.collection::<Document>(if visitors_exact { rollups::VISITORS } else { rollups::HOURLY_VISITORS });
        let counts = Source { collection: &paths, stages: vec![doc! { "$match": matching.clone() }] };
        let users = async {
            if filter.event_type.is_some() && visitors_exact {
                count(store, &visitors, matching.clone()).await
            } else {
                distinct_users(store, &Source { collection: &visitors, stages: vec![doc! { "$match": &matching }] })
                    .await
            }
        };
        return site_stats_from(store, &counts, users).await;
    }

    let split = HourSplit::of(filter.from, filter.to);
    let hourly_paths = db.collection::<Document>(rollups::HOURLY_PATHS);
    let hourly_visitors = db.collection::<Document>(rollups::HOURLY_VISITORS);
    // The raw events of the partial hours (the whole range when no hour is whole).
    let edges = match split.edges.as_slice() {
        [] => None,
        [(from, to)] => Some(events_match(filter, *from, *to)),
        edges => {
            Some(doc! { "$or": edges.iter().map(|(from, to)| events_match(filter, *from, *to)).collect::<Vec<_>>() })
        }
    };
    let (counts, users) = match split.rollup_match(filter) {
        Some(matching) => {
            let mut counts = vec![doc! { "$match": matching.clone() }];
            let mut users = vec![doc! { "$match": matching }, doc! { "$project": { "_id": 0, "user_id": 1 } }];
            if let Some(edges) = edges {
                let events = store.events().name();
                counts.push(union_with(events, event_counts(edges.clone())));
                users.push(union_with(events, event_users(edges)));
            }
            (
                Source { collection: &hourly_paths, stages: counts },
                Source { collection: &hourly_visitors, stages: users },
            )
        }
        None => {
            let edges = edges.unwrap_or_else(|| events_match(filter, filter.from, filter.to));
            (
                Source { collection: store.events(), stages: event_counts(edges.clone()) },
                Source { collection: store.events(), stages: event_users(edges) },
            )
        }
    };
    site_stats_from(store, &counts, distinct_users(store, &users)).await
}

/// A site's events per UTC hour from the rollups (and raw partial hours).
pub async fn fast_hourly_counts(store: &Store, filter: &StatsFilter) -> Result<HashMap<i64, u64>, StoreError> {
    let split = HourSplit::of(filter.from, filter.to);
    let mut hours = HashMap::new();
    if let Some(matching) = split.rollup_match(filter) {
        let pipeline =
            [doc! { "$match": matching }, doc! { "$group": { "_id": "$hour", "count": { "$sum": "$count" } } }];
        let hourly_paths = store.database().collection::<Document>(rollups::HOURLY_PATHS);
        let rows = aggregate(store, &hourly_paths, pipeline.to_vec()).await?;
        for row in rows {
            if let Ok(hour) = row.get_datetime("_id") {
                *hours.entry(hour.timestamp_millis()).or_default() += count_of(row.get("count"));
            }
        }
    }
    for (from, to) in &split.edges {
        for (hour, count) in hourly_event_counts(store, &events_match(filter, *from, *to)).await? {
            *hours.entry(hour).or_default() += count;
        }
    }
    Ok(hours)
}

/// A time range cut at hour boundaries: the whole hours the hourly rollups
/// answer for, and the partial hours at either end, read from `events`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HourSplit {
    /// Whole hours `[start, end)` (open-ended where the range is), if any.
    whole_hours: Option<(Option<DateTime>, Option<DateTime>)>,
    /// Partial-hour ranges `[from, to)`.
    edges: Vec<(Option<DateTime>, Option<DateTime>)>,
}

impl HourSplit {
    fn of(from: Option<DateTime>, to: Option<DateTime>) -> HourSplit {
        let start = from.map(next_hour_boundary);
        let end = to.map(hour_of);
        if let (Some(start), Some(end)) = (start, end)
            && start >= end
        {
            // Within one hour (or across one boundary only): read it all raw.
            return HourSplit { whole_hours: None, edges: vec![(from, to)] };
        }
        let mut edges = Vec::new();
        if from != start {
            edges.push((from, start));
        }
        if to != end {
            edges.push((end, to));
        }
        HourSplit { whole_hours: Some((start, end)), edges }
    }

    /// The filter on hourly rollup documents for the whole hours.
    fn rollup_match(&self, filter: &StatsFilter) -> Option<Document> {
        let (start, end) = self.whole_hours?;
        let mut matching = doc! { "site_id": &filter.site_id };
        if let Some(range) = range(start, end) {
            matching.insert("hour", range);
        }
        if let Some(kind) = &filter.event_type {
            matching.insert("event_type", kind);
        }
        Some(matching)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollups::HOUR_MS;

    fn at(hours: i64, millis: i64) -> DateTime {
        DateTime::from_millis(hours * HOUR_MS + millis)
    }

    #[test]
    fn a_range_splits_into_whole_hours_and_partial_edges() {
        let split = HourSplit::of(Some(at(1, 500)), Some(at(5, 7)));
        assert_eq!(split.whole_hours, Some((Some(at(2, 0)), Some(at(5, 0)))));
        assert_eq!(split.edges, vec![(Some(at(1, 500)), Some(at(2, 0))), (Some(at(5, 0)), Some(at(5, 7)))]);

        let aligned = HourSplit::of(Some(at(1, 0)), Some(at(3, 0)));
        assert_eq!((aligned.whole_hours, aligned.edges.len()), (Some((Some(at(1, 0)), Some(at(3, 0)))), 0));

        let open = HourSplit::of(None, Some(at(3, 1)));
        assert_eq!(open.whole_hours, Some((None, Some(at(3, 0)))));
        assert_eq!(open.edges, vec![(Some(at(3, 0)), Some(at(3, 1)))]);

        let inside = HourSplit::of(Some(at(2, 10)), Some(at(2, 20)));
        assert_eq!((inside.whole_hours, inside.edges), (None, vec![(Some(at(2, 10)), Some(at(2, 20)))]));
        let across = HourSplit::of(Some(at(2, 10)), Some(at(3, 20)));
        assert_eq!(across.whole_hours, None, "no whole hour between 2:00:00.010 and 3:00:00.020");
    }
}
