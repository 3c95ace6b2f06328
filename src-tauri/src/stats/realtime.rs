//! `GET /stats/realtime`: who is on the site now. The visitors with an event
//! in the last [`REALTIME_WINDOW_MS`] (by the events' `timestamp`), and the
//! page each is on: the path of their latest event. Computed by the server.

use mongodb::bson::{Bson, DateTime, doc};
use serde::Serialize;

use super::filters::Filters;
use super::queries::{aggregate, text};
use super::{StatsFilter, scope};
use crate::rollups::count_of;
use crate::storage::{Store, StoreError};

/// How far back "now" reaches: 5 minutes.
pub const REALTIME_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Most pages listed.
pub const REALTIME_PAGES: i64 = 100;

/// The answer of `GET /stats/realtime`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Realtime {
    /// Distinct visitors with an event in the last 5 minutes.
    pub visitors: u64,
    /// The pages they are on (their latest event's path), most visitors first, then by page (at most 100).
    pub pages: Vec<PageVisitors>,
}

/// One page of [`Realtime`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PageVisitors {
    /// The page's path.
    pub page: String,
    /// Visitors whose latest event is on it.
    pub visitors: u64,
}

/// The visitors of `site_id` (and `filters`) in the 5 minutes before `now`.
pub async fn realtime(store: &Store, site_id: &str, filters: &Filters, now: DateTime) -> Result<Realtime, StoreError> {
    let since = DateTime::from_millis(now.timestamp_millis() - REALTIME_WINDOW_MS);
    let filter = StatsFilter { from: Some(since), ..StatsFilter::site(site_id) };
    let scope = scope::resolve(store, &filter, filters).await?;
    let pipeline = vec![
        doc! { "$match": scope.events },
        doc! { "$sort": { "timestamp": -1, "_id": -1 } },
        doc! { "$group": { "_id": "$user_id", "page": { "$first": "$path" } } },
        doc! { "$facet": {
            "visitors": [{ "$count": "n" }],
            "pages": [
                { "$group": { "_id": "$page", "visitors": { "$sum": 1 } } },
                { "$sort": { "visitors": -1, "_id": 1 } },
                { "$limit": REALTIME_PAGES },
            ],
        } },
    ];
    let rows = aggregate(store, store.events(), pipeline).await?;
    let Some(row) = rows.first() else { return Ok(Realtime::default()) };
    let documents = |field| row.get_array(field).map(|a| a.iter().filter_map(Bson::as_document).collect::<Vec<_>>());
    let visitors = documents("visitors").unwrap_or_default().first().map_or(0, |d| count_of(d.get("n")));
    let pages = documents("pages")
        .unwrap_or_default()
        .into_iter()
        .map(|page| PageVisitors { page: text(page.get("_id")), visitors: count_of(page.get("visitors")) })
        .collect();
    Ok(Realtime { visitors, pages })
}
