//! A site's settings, kept in the database (collection [`SITES_COLLECTION`],
//! one document `{_id: site_id, goals: [...]}` per site that has any): what the
//! API (`GET/PUT /sites/{site_id}/goals`), the desktop app and the stats read
//! and write. [`goals`] owns what a goal is and how it matches events;
//! [`registry`] the sites a person added by name (`name`, `created_at`).
//!
//! A site needs no document here to exist: a site without one has no goals.

pub mod goals;
pub mod registry;

use mongodb::bson::{self, doc};
use mongodb::options::CollectionOptions;

use crate::storage::{Store, StoreError};
pub use goals::{Goal, GoalError, parse_goals};

/// The collection of the sites' settings.
pub const SITES_COLLECTION: &str = "sites";
/// Longest `site_id` (as events have it).
pub const MAX_SITE_ID_BYTES: usize = 128;

/// A site's goals as the API answers them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SiteGoals {
    /// The site.
    #[schema(example = "site-001")]
    pub site_id: String,
    /// Its goals in the order they were saved; empty when it has none.
    pub goals: Vec<Goal>,
}

/// Why a site's settings could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// The site id is not one an event could have.
    #[error("site_id {0}")]
    InvalidSiteId(&'static str),
    /// The goals are invalid: nothing was saved.
    #[error(transparent)]
    InvalidGoals(#[from] GoalError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a site id by the rules events' `site_id` follows.
pub fn check_site_id(site_id: &str) -> Result<(), SiteError> {
    if site_id.trim().is_empty() {
        return Err(SiteError::InvalidSiteId("must not be blank"));
    }
    if site_id.len() > MAX_SITE_ID_BYTES {
        return Err(SiteError::InvalidSiteId("is too long: at most 128 bytes"));
    }
    if site_id.chars().any(char::is_control) {
        return Err(SiteError::InvalidSiteId("must not contain control characters"));
    }
    Ok(())
}

/// The goals of `site_id`, in their saved order (none when it has no settings).
pub async fn site_goals(store: &Store, site_id: &str) -> Result<SiteGoals, SiteError> {
    check_site_id(site_id)?;
    let sites = store.database().collection::<bson::Document>(SITES_COLLECTION);
    let settings =
        sites.find_one(doc! { "_id": site_id }).projection(doc! { "goals": 1 }).await.map_err(StoreError::from)?;
    let goals = match settings.and_then(|mut settings| settings.remove("goals")) {
        Some(goals) => bson::from_bson(goals).map_err(|e| StoreError::from(mongodb::error::Error::from(e)))?,
        None => Vec::new(),
    };
    Ok(SiteGoals { site_id: site_id.to_string(), goals })
}

/// Replaces `site_id`'s goals with those of a `PUT` body (see
/// [`parse_goals`]), durably; a body with any bad goal saves nothing.
pub async fn replace_goals(store: &Store, site_id: &str, body: &[u8]) -> Result<SiteGoals, SiteError> {
    check_site_id(site_id)?;
    let goals = parse_goals(body)?;
    save_goals(store, site_id, &goals).await?;
    Ok(SiteGoals { site_id: site_id.to_string(), goals })
}

/// Saves already validated `goals` as `site_id`'s, keeping its other settings.
pub async fn save_goals(store: &Store, site_id: &str, goals: &[Goal]) -> Result<(), SiteError> {
    let goals = bson::to_bson(goals).map_err(|e| StoreError::from(mongodb::error::Error::from(e)))?;
    let journaled = CollectionOptions::builder().write_concern(store.durable_write_concern().clone()).build();
    let sites = store.database().collection_with_options::<bson::Document>(SITES_COLLECTION, journaled);
    let replace = doc! { "$set": { "goals": goals } };
    sites.update_one(doc! { "_id": site_id }, replace).upsert(true).await.map_err(StoreError::from)?;
    Ok(())
}
