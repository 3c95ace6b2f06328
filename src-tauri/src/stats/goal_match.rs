//! Goals as the stats read them: a site's goals (what a goal is, its name and
//! its match on `events` belong to [`crate::sites::goals`]) read under the
//! stats' time limit, and the condition of a `goal` filter.

use mongodb::bson::{self, Bson, Document, doc};

use super::filters::{Filter, Operator};
use crate::sites::{Goal, SITES_COLLECTION};
use crate::storage::{Store, StoreError};

/// The goals of `site_id`, in their stored order; none when the site has no
/// document. Read under the stats' time limit; a stored goal that is not one
/// (written by hand) is skipped.
pub async fn site_goals(store: &Store, site_id: &str) -> Result<Vec<Goal>, StoreError> {
    let sites = store.database().collection::<Document>(SITES_COLLECTION);
    let limit = store.stats_query_time_limit();
    let site = sites
        .find_one(doc! { "_id": site_id })
        .projection(doc! { "goals": 1 })
        .max_time(limit)
        .await
        .map_err(|error| super::queries::time_limited(error, limit))?;
    let goals = site.as_ref().and_then(|site| site.get_array("goals").ok());
    Ok(goals.into_iter().flatten().filter_map(goal_of).collect())
}

/// A stored goal document as a [`Goal`]; anything else is skipped.
fn goal_of(value: &Bson) -> Option<Goal> {
    bson::from_bson::<Goal>(value.clone()).ok().filter(|goal| goal.event_type.is_some() != goal.page.is_some())
}

/// The condition on `events` of a `goal` filter: the events converting on a
/// goal it selects by name (`==`, `=~`), or on none of them (`!=`, `!~`). A
/// name that is no goal of the site selects nothing.
pub fn goal_filter_condition(filter: &Filter, goals: &[Goal]) -> Document {
    let named: Vec<Document> = goals.iter().filter(|goal| filter.selects_name(&goal.name)).map(Goal::filter).collect();
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
    fn goals_are_read_and_filtered_by_name() {
        let goals = [Goal::event("signup"), Goal::page("/blog/*"), Goal::page("/thanks")];
        assert_eq!(goal_of(&bson::to_bson(&goals[1]).unwrap()), Some(goals[1].clone()));
        assert_eq!(goal_of(&Bson::Document(doc! { "page": "/x" })), None, "a goal without its name");
        let both = doc! { "page": "/x", "event_type": "e", "name": "n" };
        assert_eq!(goal_of(&Bson::Document(both)), None, "exactly one of event_type and page");

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
