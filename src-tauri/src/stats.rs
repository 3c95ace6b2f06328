//! Stats: the exact per-site figures of `GET /stats`, computed from processed events.

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// How many paths `top_paths` lists.
pub const TOP_PATHS: i64 = 10;

/// The answer of `GET /stats` for one site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteStats {
    /// Number of processed events of the site.
    pub total_events: u64,
    /// Number of distinct `user_id`s among them.
    pub unique_users: u64,
    /// The most visited paths, by count descending, then path ascending.
    pub top_paths: Vec<PathCount>,
}

/// One row of `top_paths`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCount {
    /// The page path.
    pub path: String,
    /// Events recorded on it.
    pub count: u64,
}

/// Computes a site's stats over the `events` collection. Each figure is an exact
/// count; the three queries run concurrently.
pub async fn site_stats(store: &Store, site_id: &str) -> Result<SiteStats, StoreError> {
    let events = store.events();
    let site = doc! { "site_id": site_id };

    let total = events.count_documents(site.clone());
    let users = async {
        let pipeline = [doc! { "$match": &site }, doc! { "$group": { "_id": "$user_id" } }, doc! { "$count": "n" }];
        let rows: Vec<Document> = events.aggregate(pipeline).await?.try_collect().await?;
        Ok::<_, mongodb::error::Error>(rows.first().map_or(0, |row| count_of(row.get("n"))))
    };
    let paths = async {
        let pipeline = [
            doc! { "$match": &site },
            doc! { "$group": { "_id": "$path", "count": { "$sum": 1 } } },
            doc! { "$sort": { "count": -1, "_id": 1 } },
            doc! { "$limit": TOP_PATHS },
        ];
        let rows: Vec<Document> = events.aggregate(pipeline).await?.try_collect().await?;
        Ok::<_, mongodb::error::Error>(
            rows.iter()
                .map(|row| PathCount {
                    path: row.get_str("_id").unwrap_or_default().to_string(),
                    count: count_of(row.get("count")),
                })
                .collect(),
        )
    };

    let (total_events, unique_users, top_paths) = tokio::try_join!(total, users, paths)?;
    Ok(SiteStats { total_events, unique_users, top_paths })
}

/// One site seen in `events`, with its number of events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteSummary {
    /// The site.
    pub site_id: String,
    /// Its processed events.
    pub events: u64,
}

/// Every site with processed events, most events first (then by id).
pub async fn sites(store: &Store) -> Result<Vec<SiteSummary>, StoreError> {
    let pipeline = [
        doc! { "$group": { "_id": "$site_id", "events": { "$sum": 1 } } },
        doc! { "$sort": { "events": -1, "_id": 1 } },
    ];
    let rows: Vec<Document> = store.events().aggregate(pipeline).await?.try_collect().await?;
    Ok(rows
        .iter()
        .map(|row| SiteSummary {
            site_id: row.get_str("_id").unwrap_or_default().to_string(),
            events: count_of(row.get("events")),
        })
        .collect())
}

/// Reads a count, which the server may send as a 32- or 64-bit integer.
fn count_of(value: Option<&Bson>) -> u64 {
    match value {
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Double(n)) if *n >= 0.0 => *n as u64,
        _ => 0,
    }
}
