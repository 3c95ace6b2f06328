//! The sites a person added by name (the desktop's first run): their document
//! in [`SITES_COLLECTION`] gains `name` and `created_at` beside any `goals`.
//! Creating is idempotent: adding a site again keeps its first name and time,
//! and a site that only had goals keeps them. Events need no registered site:
//! this list is what the user declared, not what the API accepts.

use mongodb::bson::{self, DateTime, doc};
use mongodb::options::CollectionOptions;

use super::{SITES_COLLECTION, SiteError, check_site_id};
use crate::storage::{Store, StoreError};

/// Longest site name, in characters: a label, not a document.
pub const MAX_SITE_NAME_CHARS: usize = 100;

/// A site added by name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegisteredSite {
    /// The id events carry (`site_id`).
    pub site_id: String,
    /// The name the person gave it.
    pub name: String,
    /// When it was first added, RFC 3339.
    pub created_at: String,
}

/// Why a site could not be added.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The name is unusable: nothing was stored.
    #[error("name {0}")]
    InvalidName(&'static str),
    /// The site id breaks the events' rule, or the database failed.
    #[error(transparent)]
    Site(#[from] SiteError),
}

impl From<StoreError> for RegisterError {
    fn from(error: StoreError) -> RegisterError {
        RegisterError::Site(SiteError::Store(error))
    }
}

/// Checks a site's name: not blank, at most [`MAX_SITE_NAME_CHARS`], no control characters.
pub fn check_site_name(name: &str) -> Result<(), RegisterError> {
    if name.trim().is_empty() {
        return Err(RegisterError::InvalidName("must not be blank: type the site's name, such as \"My shop\""));
    }
    if name.trim().chars().count() > MAX_SITE_NAME_CHARS {
        return Err(RegisterError::InvalidName("is too long: at most 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(RegisterError::InvalidName("must not contain control characters"));
    }
    Ok(())
}

/// Adds `site_id` named `name` (trimmed), durably; if it was added before,
/// keeps the stored name and time. Answers the site as stored.
pub async fn register_site(store: &Store, site_id: &str, name: &str) -> Result<RegisteredSite, RegisterError> {
    check_site_name(name)?;
    check_site_id(site_id)?;
    let name = name.trim();
    let journaled = CollectionOptions::builder().write_concern(store.durable_write_concern().clone()).build();
    let sites = store.database().collection_with_options::<bson::Document>(SITES_COLLECTION, journaled);
    let now = DateTime::now();
    // A new site, or one that so far only had goals: both get a name and time, once.
    let first_time = doc! { "$setOnInsert": { "name": name, "created_at": now } };
    sites.update_one(doc! { "_id": site_id }, first_time).upsert(true).await.map_err(StoreError::from)?;
    let unnamed = doc! { "_id": site_id, "name": { "$exists": false } };
    sites.update_one(unnamed, doc! { "$set": { "name": name, "created_at": now } }).await.map_err(StoreError::from)?;
    let stored = sites.find_one(doc! { "_id": site_id }).await.map_err(StoreError::from)?;
    stored.as_ref().and_then(registered).ok_or_else(|| {
        StoreError::Refused(format!("the site {site_id} could not be read back after being saved")).into()
    })
}

/// The sites added by name, oldest first.
pub async fn registered_sites(store: &Store) -> Result<Vec<RegisteredSite>, StoreError> {
    let sites = store.database().collection::<bson::Document>(SITES_COLLECTION);
    let mut cursor = sites.find(doc! { "name": { "$exists": true } }).sort(doc! { "created_at": 1, "_id": 1 }).await?;
    let mut found = Vec::new();
    while cursor.advance().await? {
        if let Some(site) = registered(&cursor.deserialize_current()?) {
            found.push(site);
        }
    }
    Ok(found)
}

/// A stored document as a site added by name (none when it has no name).
fn registered(document: &bson::Document) -> Option<RegisteredSite> {
    Some(RegisteredSite {
        site_id: document.get_str("_id").ok()?.to_string(),
        name: document.get_str("name").ok()?.to_string(),
        created_at: document.get_datetime("created_at").ok()?.try_to_rfc3339_string().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_must_be_a_short_visible_label() {
        assert!(check_site_name("My shop").is_ok());
        let blank = check_site_name("  ").unwrap_err().to_string();
        assert!(blank.starts_with("name must not be blank"), "{blank}");
        assert!(check_site_name(&"x".repeat(101)).unwrap_err().to_string().contains("at most 100"));
        assert!(check_site_name("a\nb").unwrap_err().to_string().contains("control"));
    }

    #[test]
    fn only_documents_with_a_name_and_time_are_registered_sites() {
        let now = DateTime::from_millis(1_700_000_000_000);
        let named = doc! { "_id": "shop", "name": "Shop", "created_at": now, "goals": [] };
        assert_eq!(registered(&named).unwrap().created_at, "2023-11-14T22:13:20Z");
        assert_eq!(registered(&doc! { "_id": "shop", "goals": [] }), None);
    }
}
