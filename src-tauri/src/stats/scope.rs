//! The scope of a stats request: which `visits` and which `events` its
//! figures cover, as one `$match` document for each collection, from the
//! site, the range, the legacy `event_type` parameter and the `filters=`.
//!
//! Visit attributes (`source`, `country`, ...) are tested on both collections,
//! since events carry their visit's attributes. Event-level filters (`page`,
//! `hostname`, `event_type`, `prop:<key>`, `goal`) select events, and the
//! visits holding at least one selected event (their `visit_id`s, collected by
//! the server, then `_id ∈`). `entry_page`/`exit_page` select visits, and the
//! events of those visits (`visit_id ∈`). A visit counts in a range by its
//! `start`, an event by its `timestamp` (docs/visits.md section 2).

use mongodb::Collection;
use mongodb::bson::{Bson, DateTime, Document, doc};

use super::StatsFilter;
use super::filters::{Dimension, Filters};
use super::from_events::{events_match, range};
use super::goal_match::{goal_filter_condition, site_goals};
use super::queries::aggregate;
use crate::storage::{Store, StoreError};

/// The `$match` documents of a request on each collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// On `visits`: the site's visits starting in the range that pass the filters.
    pub visits: Document,
    /// On `events`: the site's events in the range that pass the filters.
    pub events: Document,
}

/// The conditions of the filters, sorted by where they apply.
#[derive(Debug, Default)]
struct Conditions {
    /// Tested on `visits` directly (visit attributes, entry/exit pages).
    on_visits: Vec<Document>,
    /// Tested on `events` directly (visit attributes, event-level dimensions).
    on_events: Vec<Document>,
    /// The event-level ones alone: a visit passes with one event passing them.
    event_level: Vec<Document>,
    /// The entry/exit page ones alone: an event passes when its visit does.
    visit_pages: Vec<Document>,
}

/// Resolves `filter` and `filters` to the [`Scope`] they cover (reading the
/// site's goals, and the visit ids linking the two collections, when needed).
pub async fn resolve(store: &Store, filter: &StatsFilter, filters: &Filters) -> Result<Scope, StoreError> {
    let mut conditions = Conditions::default();
    if let Some(kind) = &filter.event_type {
        conditions.event_level.push(doc! { "event_type": kind });
    }
    let goals = if filters.0.iter().any(|f| f.dimension == Dimension::Goal) {
        site_goals(store, &filter.site_id).await?
    } else {
        Vec::new()
    };
    for one in &filters.0 {
        match &one.dimension {
            Dimension::Attribute(field) => {
                conditions.on_visits.push(one.condition(field));
                conditions.on_events.push(one.condition(field));
            }
            Dimension::VisitPage(field) => {
                conditions.on_visits.push(one.condition(field));
                conditions.visit_pages.push(one.condition(field));
            }
            Dimension::Goal => conditions.event_level.push(goal_filter_condition(one, &goals)),
            dimension => {
                let field = dimension.events_field().expect("event-level dimensions have a field on events");
                conditions.event_level.push(one.condition(&field));
            }
        }
    }
    conditions.on_events.extend(conditions.event_level.iter().cloned());

    let mut visits = visits_match(&filter.site_id, filter.from, filter.to);
    let mut events = events_match(&StatsFilter { event_type: None, ..filter.clone() }, filter.from, filter.to);
    if !conditions.event_level.is_empty() {
        // The selected events are the range's (a visit starting in it holding a
        // matching event only after `to` is not selected).
        let mut selected = events_match(&StatsFilter::site(&filter.site_id), filter.from, filter.to);
        and(&mut selected, conditions.on_events.clone());
        let ids = visit_ids(store, store.events(), selected, "$visit_id").await?;
        conditions.on_visits.push(doc! { "_id": { "$in": ids } });
    }
    if !conditions.visit_pages.is_empty() {
        // The visits with events in the range: started before its end, ended after its start.
        let mut selected = doc! { "site_id": &filter.site_id };
        if let Some(to) = filter.to {
            selected.insert("start", doc! { "$lt": to });
        }
        if let Some(from) = filter.from {
            selected.insert("end", doc! { "$gte": from });
        }
        and(&mut selected, conditions.on_visits.clone());
        let ids = visit_ids(store, &store.database().collection(VISITS), selected, "$_id").await?;
        conditions.on_events.push(doc! { "visit_id": { "$in": ids } });
    }
    and(&mut visits, conditions.on_visits);
    and(&mut events, conditions.on_events);
    Ok(Scope { visits, events })
}

/// The collection of visits (docs/visits.md section 2).
pub const VISITS: &str = "visits";

/// The site's visits starting in `[from, to)`.
pub fn visits_match(site_id: &str, from: Option<DateTime>, to: Option<DateTime>) -> Document {
    let mut matching = doc! { "site_id": site_id };
    if let Some(range) = range(from, to) {
        matching.insert("start", range);
    }
    matching
}

/// Adds `conditions` to `matching` under one `$and` (two filters may test one field).
fn and(matching: &mut Document, conditions: Vec<Document>) {
    let conditions: Vec<Document> = conditions.into_iter().filter(|c| !c.is_empty()).collect();
    if !conditions.is_empty() {
        matching.insert("$and", conditions);
    }
}

/// The distinct visit ids (`id`: `$visit_id` on events, `$_id` on visits) of
/// the documents of `collection` matching, grouped by the server.
async fn visit_ids(
    store: &Store,
    collection: &Collection<Document>,
    matching: Document,
    id: &str,
) -> Result<Vec<Bson>, StoreError> {
    let pipeline = vec![doc! { "$match": matching }, doc! { "$group": { "_id": id } }];
    let rows = aggregate(store, collection, pipeline).await?;
    Ok(rows.into_iter().filter_map(|mut row| row.remove("_id")).filter(|id| *id != Bson::Null).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_join_under_one_and() {
        let mut matching = doc! { "site_id": "s" };
        and(&mut matching, vec![doc! {}, doc! { "os": "Linux" }, doc! { "os": { "$ne": "Mac" } }]);
        assert_eq!(matching, doc! { "site_id": "s", "$and": [{ "os": "Linux" }, { "os": { "$ne": "Mac" } }] });
        let mut untouched = doc! { "site_id": "s" };
        and(&mut untouched, vec![doc! {}]);
        assert_eq!(untouched, doc! { "site_id": "s" });
        let at = DateTime::from_millis(5);
        assert_eq!(visits_match("s", Some(at), None), doc! { "site_id": "s", "start": { "$gte": at } });
    }
}
