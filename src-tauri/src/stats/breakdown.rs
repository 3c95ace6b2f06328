//! `GET /stats/breakdown`: a dimension's values with their figures, one page
//! at a time, grouped, sorted and cut by the server (the API holds one page):
//!
//! - visit-level dimensions (`source`, `country`, `entry_page`, ...) group the
//!   visits of the scope: visitors (distinct `user_id`), visits, pageviews and
//!   events (Σ over the visits), bounce rate, visit duration;
//! - event-level ones (`page`, `hostname`, `event_type`, `prop:<key>`) group its
//!   events: visitors, pageviews (`page_view` events), events;
//! - `goal`: one row per goal of the site: visitors, conversions, conversion
//!   rate (its visitors / the scope's visitors).
//!
//! Rows come by visitors descending, then value ascending; a missing value is
//! the dimension's `(none)` row (`Direct / None` for `source`, `Direct` for
//! `channel`). [`breakdown_csv`] writes the same rows as a CSV table.

use mongodb::bson::{Bson, Document, doc};
use serde::Serialize;

use super::StatsFilter;
use super::export::csv_table;
use super::filters::{Dimension, Filters};
use super::goal_match::site_goals;
use super::queries::aggregate;
use super::scope::{self, VISITS};
use super::visit_figures::{VisitSums, ratio, visit_sums};
use crate::rollups::count_of;
use crate::storage::{Store, StoreError};

/// Rows per page when the client does not say.
pub const BREAKDOWN_LIMIT_DEFAULT: u64 = 100;
/// Most rows one page may hold.
pub const BREAKDOWN_LIMIT_MAX: u64 = 1000;

/// What to break down: the scope, the dimension, the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakdownRequest {
    /// The site, range and legacy `event_type`.
    pub filter: StatsFilter,
    /// The `filters=`.
    pub filters: Filters,
    /// The dimension grouped by.
    pub dimension: Dimension,
    /// Rows per page, 1 to [`BREAKDOWN_LIMIT_MAX`].
    pub limit: u64,
    /// The page, from 1.
    pub page: u64,
}

/// One value of the dimension and its figures; the figures that mean nothing
/// for the dimension are absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BreakdownRow {
    /// The dimension's value (`(none)` when missing; `Direct / None` for `source`, `Direct` for `channel`).
    pub value: String,
    /// Distinct visitors.
    pub visitors: u64,
    /// Visits (visit-level dimensions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visits: Option<u64>,
    /// Pageviews: Σ visit pageviews (visit-level), `page_view` events (event-level).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pageviews: Option<u64>,
    /// Events: Σ visit events (visit-level), events (event-level).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// Percent of bounced visits, one decimal (visit-level).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounce_rate: Option<f64>,
    /// Mean visit duration in seconds (visit-level).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visit_duration: Option<u64>,
    /// Events converting on the goal (`goal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversions: Option<u64>,
    /// The goal's visitors / all visitors of the range and filters, percent, one decimal (`goal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_rate: Option<f64>,
}

/// One page of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Breakdown {
    /// The dimension, as asked.
    pub dimension: String,
    /// The page's rows.
    pub rows: Vec<BreakdownRow>,
    /// This page (from 1).
    pub page: u64,
    /// The next page, absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page: Option<u64>,
}

/// The page of `request`'s breakdown.
pub async fn breakdown(store: &Store, request: &BreakdownRequest) -> Result<Breakdown, StoreError> {
    let scope = scope::resolve(store, &request.filter, &request.filters).await?;
    let limit = request.limit.clamp(1, BREAKDOWN_LIMIT_MAX);
    let page = request.page.max(1);
    let skip = (page - 1).saturating_mul(limit);
    let dimension = &request.dimension;
    let mut rows = match (dimension.visits_field(), dimension.events_field()) {
        _ if *dimension == Dimension::Goal => {
            goal_rows(store, &request.filter, &scope.events, &scope.visits, skip, limit).await?
        }
        (Some(field), _) => {
            let pipeline = visit_pipeline(scope.visits, &field, dimension.none_label(), skip, limit);
            let rows = aggregate(store, &store.database().collection(VISITS), pipeline).await?;
            rows.iter().map(visit_row).collect()
        }
        (None, Some(field)) => {
            let pipeline = event_pipeline(scope.events, &field, dimension.none_label(), skip, limit);
            let rows = aggregate(store, store.events(), pipeline).await?;
            rows.iter().map(event_row).collect()
        }
        (None, None) => Vec::new(),
    };
    // One more row than asked says whether a next page exists.
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    Ok(Breakdown { dimension: dimension.name(), rows, page, next_page: more.then_some(page + 1) })
}

/// The stages grouping, sorting and cutting rows (`limit + 1` of them after `skip`).
fn page_stages(skip: u64, limit: u64) -> Vec<Document> {
    let mut stages = vec![doc! { "$sort": { "visitors": -1, "_id": 1 } }];
    if skip > 0 {
        stages.push(doc! { "$skip": i64::try_from(skip).unwrap_or(i64::MAX) });
    }
    stages.push(doc! { "$limit": (limit + 1) as i64 });
    stages
}

/// The value of `field`, `none` when it is missing.
fn value_of(field: &str, none: &str) -> Bson {
    Bson::Document(doc! { "$ifNull": [format!("${field}"), none] })
}

/// The pipeline of a visit-level breakdown over the visits `matching`.
fn visit_pipeline(matching: Document, field: &str, none: &str, skip: u64, limit: u64) -> Vec<Document> {
    let mut pipeline = vec![
        doc! { "$match": matching },
        doc! { "$group": {
            "_id": { "v": value_of(field, none), "u": "$user_id" },
            "visits": { "$sum": 1 },
            "bounces": { "$sum": { "$cond": [{ "$eq": ["$bounced", true] }, 1, 0] } },
            "duration_ms": { "$sum": "$duration_ms" },
            "pageviews": { "$sum": "$pageviews" },
            "events": { "$sum": "$events" },
        } },
        doc! { "$group": {
            "_id": "$_id.v",
            "visitors": { "$sum": 1 },
            "visits": { "$sum": "$visits" },
            "bounces": { "$sum": "$bounces" },
            "duration_ms": { "$sum": "$duration_ms" },
            "pageviews": { "$sum": "$pageviews" },
            "events": { "$sum": "$events" },
        } },
    ];
    pipeline.extend(page_stages(skip, limit));
    pipeline
}

/// The pipeline of an event-level breakdown over the events `matching`.
fn event_pipeline(matching: Document, field: &str, none: &str, skip: u64, limit: u64) -> Vec<Document> {
    let mut pipeline = vec![
        doc! { "$match": matching },
        doc! { "$group": {
            "_id": { "v": value_of(field, none), "u": "$user_id" },
            "events": { "$sum": 1 },
            "pageviews": { "$sum": { "$cond": [{ "$eq": ["$event_type", "page_view"] }, 1, 0] } },
        } },
        doc! { "$group": {
            "_id": "$_id.v",
            "visitors": { "$sum": 1 },
            "events": { "$sum": "$events" },
            "pageviews": { "$sum": "$pageviews" },
        } },
    ];
    pipeline.extend(page_stages(skip, limit));
    pipeline
}

/// A grouped value as the row shows it (a non-string value in its JSON form).
fn shown(value: Option<&Bson>) -> String {
    match value {
        Some(Bson::String(text)) => text.clone(),
        Some(other) => other.clone().into_relaxed_extjson().to_string(),
        None => String::new(),
    }
}

fn visit_row(row: &Document) -> BreakdownRow {
    let sums = VisitSums {
        visitors: count_of(row.get("visitors")),
        visits: count_of(row.get("visits")),
        bounces: count_of(row.get("bounces")),
        duration_ms: count_of(row.get("duration_ms")),
        visit_pageviews: count_of(row.get("pageviews")),
    };
    let figures = sums.figures(sums.visit_pageviews);
    BreakdownRow {
        value: shown(row.get("_id")),
        visitors: figures.visitors,
        visits: Some(figures.visits),
        pageviews: Some(figures.pageviews),
        events: Some(count_of(row.get("events"))),
        bounce_rate: Some(figures.bounce_rate),
        visit_duration: Some(figures.visit_duration),
        ..BreakdownRow::default()
    }
}

fn event_row(row: &Document) -> BreakdownRow {
    BreakdownRow {
        value: shown(row.get("_id")),
        visitors: count_of(row.get("visitors")),
        pageviews: Some(count_of(row.get("pageviews"))),
        events: Some(count_of(row.get("events"))),
        ..BreakdownRow::default()
    }
}

/// One row per goal of the site (a few: sorted and cut here), `limit + 1` from `skip`.
async fn goal_rows(
    store: &Store,
    filter: &StatsFilter,
    events: &Document,
    visits: &Document,
    skip: u64,
    limit: u64,
) -> Result<Vec<BreakdownRow>, StoreError> {
    let goals = site_goals(store, &filter.site_id).await?;
    let all_visitors = visit_sums(store, visits).await?.visitors;
    let mut rows = Vec::with_capacity(goals.len());
    for goal in goals {
        let pipeline = vec![
            doc! { "$match": { "$and": [events.clone(), goal.filter()] } },
            doc! { "$group": { "_id": "$user_id", "conversions": { "$sum": 1 } } },
            doc! { "$group": { "_id": Bson::Null, "visitors": { "$sum": 1 }, "conversions": { "$sum": "$conversions" } } },
        ];
        let found = aggregate(store, store.events(), pipeline).await?;
        let visitors = found.first().map_or(0, |row| count_of(row.get("visitors")));
        rows.push(BreakdownRow {
            value: goal.name,
            visitors,
            conversions: Some(found.first().map_or(0, |row| count_of(row.get("conversions")))),
            conversion_rate: Some(ratio(visitors * 100, all_visitors, 10.0)),
            ..BreakdownRow::default()
        });
    }
    rows.sort_by(|a, b| b.visitors.cmp(&a.visitors).then_with(|| a.value.cmp(&b.value)));
    Ok(rows.into_iter().skip(skip as usize).take(limit as usize + 1).collect())
}

/// The columns a dimension's rows have.
fn columns(dimension: &Dimension) -> &'static [&'static str] {
    match (dimension, dimension.visits_field()) {
        (Dimension::Goal, _) => &["visitors", "conversions", "conversion_rate"],
        (_, Some(_)) => &["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration"],
        (_, None) => &["visitors", "pageviews", "events"],
    }
}

/// A breakdown page as CSV: a header row (the dimension, then its figures)
/// and one row per value.
pub fn breakdown_csv(dimension: &Dimension, breakdown: &Breakdown) -> String {
    let columns = columns(dimension);
    let header = std::iter::once(dimension.name()).chain(columns.iter().map(|c| (*c).to_string())).collect();
    let rows = breakdown.rows.iter().map(|row| {
        let cell = |column: &str| -> String {
            let number = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
            let rate = |r: Option<f64>| r.map(|r| r.to_string()).unwrap_or_default();
            match column {
                "visitors" => row.visitors.to_string(),
                "visits" => number(row.visits),
                "pageviews" => number(row.pageviews),
                "events" => number(row.events),
                "bounce_rate" => rate(row.bounce_rate),
                "visit_duration" => number(row.visit_duration),
                "conversions" => number(row.conversions),
                _ => rate(row.conversion_rate),
            }
        };
        std::iter::once(row.value.clone()).chain(columns.iter().map(|c| cell(c))).collect()
    });
    csv_table(std::iter::once(header).chain(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_group_by_visitor_then_value_and_cut_one_more_row() {
        let visits = visit_pipeline(doc! { "site_id": "s" }, "source", "Direct / None", 20, 10);
        assert_eq!(
            visits[1].get_document("$group").unwrap().get_document("_id").unwrap().get("u"),
            Some(&"$user_id".into())
        );
        assert_eq!(visits[3], doc! { "$sort": { "visitors": -1, "_id": 1 } });
        assert_eq!(visits[4], doc! { "$skip": 20_i64 });
        assert_eq!(visits[5], doc! { "$limit": 11_i64 });
        let events = event_pipeline(doc! {}, "props.plan", "(none)", 0, 5);
        assert_eq!(events.len(), 5, "no $skip on the first page");
        assert_eq!(value_of("props.plan", "(none)"), Bson::Document(doc! { "$ifNull": ["$props.plan", "(none)"] }));
    }

    #[test]
    fn csv_columns_follow_the_dimension() {
        let row = BreakdownRow {
            value: "=cmd".into(),
            visitors: 2,
            pageviews: Some(3),
            events: Some(4),
            ..Default::default()
        };
        let page = Breakdown { dimension: "page".into(), rows: vec![row], page: 1, next_page: None };
        let csv = breakdown_csv(&Dimension::parse("page").unwrap(), &page);
        assert_eq!(csv, "page,visitors,pageviews,events\n'=cmd,2,3,4\n");
        assert_eq!(columns(&Dimension::parse("goal").unwrap()), ["visitors", "conversions", "conversion_rate"]);
        assert_eq!(columns(&Dimension::parse("exit_page").unwrap()).len(), 6);
    }
}
