//! Goals as the stats read them: a site's goals from the `sites` collection
//! (`{_id: site_id, goals: [{event_type} | {page}]}`, kept by the goals API),
//! each goal's name and its match expression on `events`.
//!
//! A goal `{event_type: "signup"}` is named `signup` and matches the events of
//! that type; a goal `{page: "/blog/*"}` is named `Visit /blog/*` and matches
//! the `page_view` events whose path is the page (a `*` matching anything).

use mongodb::bson::{Bson, Document, doc};

use super::filters::{Filter, Operator, values_regex};
use crate::storage::{Store, StoreError};

/// The collection holding each site's settings, its goals among them.
pub const SITES_COLLECTION: &str = "sites";

/// One goal of a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    /// Events of this type.
    Event(String),
    /// Pageviews of this path (`*` matching anything).
    Page(String),
}

impl Goal {
    /// The goal's name: its event type, or `Visit <page>`.
    pub fn name(&self) -> String {
        match self {
            Goal::Event(kind) => kind.clone(),
            Goal::Page(page) => format!("Visit {page}"),
        }
    }

    /// The condition on `events` selecting the goal's conversions.
    pub fn condition(&self) -> Document {
        match self {
            Goal::Event(kind) => doc! { "event_type": kind },
            Goal::Page(page) if page.contains('*') => {
                doc! { "event_type": "page_view", "path": values_regex(std::slice::from_ref(page)) }
            }
            Goal::Page(page) => doc! { "event_type": "page_view", "path": page },
        }
    }
}

/// The goals of `site_id`, in their stored order; none when the site has no document.
pub async fn site_goals(store: &Store, site_id: &str) -> Result<Vec<Goal>, StoreError> {
    let sites = store.database().collection::<Document>(SITES_COLLECTION);
    let limit = store.stats_query_time_limit();
    let site = sites
        .find_one(doc! { "_id": site_id })
        .max_time(limit)
        .await
        .map_err(|error| super::queries::time_limited(error, limit))?;
    let goals = site.as_ref().and_then(|site| site.get_array("goals").ok());
    Ok(goals.into_iter().flatten().filter_map(goal_of).collect())
}

/// A stored goal document as a [`Goal`]; anything else is skipped.
fn goal_of(value: &Bson) -> Option<Goal> {
    let goal = value.as_document()?;
    match (goal.get_str("event_type"), goal.get_str("page")) {
        (Ok(kind), _) if !kind.is_empty() => Some(Goal::Event(kind.to_string())),
        (_, Ok(page)) if !page.is_empty() => Some(Goal::Page(page.to_string())),
        _ => None,
    }
}

/// The condition on `events` of a `goal` filter: the events converting on a
/// goal it selects by name (`==`, `=~`), or on none of them (`!=`, `!~`). A
/// name that is no goal of the site selects nothing.
pub fn goal_filter_condition(filter: &Filter, goals: &[Goal]) -> Document {
    let named: Vec<Document> =
        goals.iter().filter(|goal| filter.selects_name(&goal.name())).map(Goal::condition).collect();
    match (filter.operator, named.is_empty()) {
        (Operator::Is | Operator::Matches, true) => doc! { "_id": { "$in": [] } },
        (Operator::Is | Operator::Matches, false) => doc! { "$or": named },
        (Operator::IsNot | Operator::DoesNotMatch, true) => Document::new(),
        (Operator::IsNot | Operator::DoesNotMatch, false) => doc! { "$nor": named },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::filters::Filters;

    #[test]
    fn goals_are_named_and_matched() {
        let goals = [Goal::Event("signup".into()), Goal::Page("/blog/*".into()), Goal::Page("/thanks".into())];
        assert_eq!(goals.iter().map(Goal::name).collect::<Vec<_>>(), ["signup", "Visit /blog/*", "Visit /thanks"]);
        assert_eq!(goals[2].condition(), doc! { "event_type": "page_view", "path": "/thanks" });
        assert!(matches!(goals[1].condition().get("path"), Some(Bson::RegularExpression(_))));
        assert_eq!(goal_of(&Bson::Document(doc! { "event_type": "signup" })), Some(goals[0].clone()));
        assert_eq!(goal_of(&Bson::Document(doc! { "page": "" })), None);

        let filter = |text: &str| Filters::parse(text).unwrap().0.remove(0);
        assert_eq!(
            goal_filter_condition(&filter("goal==signup"), &goals),
            doc! { "$or": [{ "event_type": "signup" }] }
        );
        assert_eq!(goal_filter_condition(&filter("goal==nope"), &goals), doc! { "_id": { "$in": [] } });
        assert_eq!(goal_filter_condition(&filter("goal!=nope"), &goals), doc! {});
        let visits = goal_filter_condition(&filter("goal!~Visit"), &goals);
        assert_eq!(visits.get_array("$nor").unwrap().len(), 2);
    }
}
