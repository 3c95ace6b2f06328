//! Stats read from the rollups: a few small documents per site, plus the raw
//! events of a time range's partial hours at either end.

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};

use super::from_events::{
    distinct_count, distinct_users, events_match, grouped_type_path_row, hourly_event_counts, range, type_path_counts,
    type_path_row,
};
use super::{SiteStats, StatsFilter, fold_counts};
use crate::rollups::{self, count_of, hour_of, next_hour_boundary};
use crate::storage::{Store, StoreError};

/// A site's stats from the rollups (and the raw events of partial hours).
pub async fn fast_site_stats(store: &Store, filter: &StatsFilter) -> Result<SiteStats, StoreError> {
    let all_time_visitors = rollups::readiness(store).await?.all_time_visitors;
    rollup_site_stats(store, filter, all_time_visitors).await
}

/// [`fast_site_stats`] with the rollups' marker already read: `visitors_exact`
/// says whether the all-time visitors may be used (see `retention`).
pub(super) async fn rollup_site_stats(
    store: &Store,
    filter: &StatsFilter,
    visitors_exact: bool,
) -> Result<SiteStats, StoreError> {
    let db = store.database();
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
        let rows = async {
            let rows: Vec<Document> = paths.find(matching.clone()).await?.try_collect().await?;
            Ok::<_, StoreError>(rows.iter().map(|row| type_path_row(row, row.get("count"))).collect::<Vec<_>>())
        };
        let users = async {
            if filter.event_type.is_some() && visitors_exact {
                Ok(visitors.count_documents(matching.clone()).await?)
            } else {
                distinct_count(&visitors, &matching).await
            }
        };
        let (rows, unique_users) = tokio::try_join!(rows, users)?;
        return Ok(fold_counts(rows, unique_users));
    }

    let split = HourSplit::of(filter.from, filter.to);
    let hourly_paths = db.collection::<Document>(rollups::HOURLY_PATHS);
    let hourly_visitors = db.collection::<Document>(rollups::HOURLY_VISITORS);
    let rows = async {
        let mut rows = Vec::new();
        if let Some(matching) = split.rollup_match(filter) {
            let pipeline = [
                doc! { "$match": matching },
                doc! { "$group": {
                    "_id": { "event_type": "$event_type", "path": "$path" },
                    "count": { "$sum": "$count" },
                } },
            ];
            let grouped: Vec<Document> = hourly_paths.aggregate(pipeline).await?.try_collect().await?;
            rows.extend(grouped.iter().map(grouped_type_path_row));
        }
        for (from, to) in &split.edges {
            rows.extend(type_path_counts(store.events(), &events_match(filter, *from, *to)).await?);
        }
        Ok::<_, StoreError>(rows)
    };
    let users = async {
        let rollup_match = split.rollup_match(filter);
        if split.edges.is_empty() {
            let Some(matching) = rollup_match else { return Ok(0) };
            return distinct_count(&hourly_visitors, &matching).await;
        }
        // Users of the whole hours and of the partial ones may overlap: union them.
        let mut users: HashSet<String> = HashSet::new();
        if let Some(matching) = rollup_match {
            users.extend(distinct_users(&hourly_visitors, &matching).await?);
        }
        for (from, to) in &split.edges {
            users.extend(distinct_users(store.events(), &events_match(filter, *from, *to)).await?);
        }
        Ok::<_, StoreError>(users.len() as u64)
    };
    let (rows, unique_users) = tokio::try_join!(rows, users)?;
    Ok(fold_counts(rows, unique_users))
}

/// A site's events per UTC hour from the rollups (and raw partial hours).
pub async fn fast_hourly_counts(store: &Store, filter: &StatsFilter) -> Result<HashMap<i64, u64>, StoreError> {
    let split = HourSplit::of(filter.from, filter.to);
    let mut hours = HashMap::new();
    if let Some(matching) = split.rollup_match(filter) {
        let pipeline =
            [doc! { "$match": matching }, doc! { "$group": { "_id": "$hour", "count": { "$sum": "$count" } } }];
        let hourly_paths = store.database().collection::<Document>(rollups::HOURLY_PATHS);
        let rows: Vec<Document> = hourly_paths.aggregate(pipeline).await?.try_collect().await?;
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
