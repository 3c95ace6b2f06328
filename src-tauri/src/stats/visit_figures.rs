//! The visit figures of `GET /stats` (docs/visits.md section 4): `visitors,
//! visits, pageviews, views_per_visit, bounce_rate, visit_duration`, exact,
//! aggregated by the server over `visits` (by `start`) and `events` (by
//! `timestamp`), beside the event figures of [`super::site_stats`]; and the
//! comparison with the previous period or the year before.
//!
//! Unfiltered, over whole UTC days (or all time), the visit sums come from the
//! daily rollups ([`unfiltered_visit_sums`], docs/visits.md section 3) and the
//! pageviews from the event figures, which the rollups give too.

use mongodb::bson::{Bson, DateTime, Document, doc};
use serde::Serialize;

use super::filters::Filters;
use super::from_events::plain_site_stats_matching;
use super::queries::{aggregate, count};
use super::scope::{self, Scope, VISITS};
use super::{OtherTypes, PathCount, SiteStats, StatsFilter, TypeCount};
use crate::rollups::daily::DAY_MS;
use crate::rollups::{self, count_of};
use crate::storage::{Store, StoreError};

/// The sums the visit figures are made of: what an aggregation over `visits`
/// (or the daily rollups) gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VisitSums {
    /// Distinct visitors of the visits.
    pub visitors: u64,
    /// Visits.
    pub visits: u64,
    /// Bounced visits.
    pub bounces: u64,
    /// Σ visit duration, in milliseconds.
    pub duration_ms: u64,
    /// Σ visit pageviews.
    pub visit_pageviews: u64,
}

/// The visit figures, as the API answers them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VisitFigures {
    /// Distinct visitors of the visits starting in the range.
    pub visitors: u64,
    /// Visits starting in the range.
    pub visits: u64,
    /// `page_view` events in the range.
    pub pageviews: u64,
    /// Σ visit pageviews / visits, two decimals (0 without visits).
    pub views_per_visit: f64,
    /// Percent of the visits that bounced (one event), one decimal.
    pub bounce_rate: f64,
    /// Mean visit duration in seconds, rounded.
    pub visit_duration: u64,
}

impl VisitSums {
    /// The figures of these sums, with the range's `pageviews`.
    pub fn figures(&self, pageviews: u64) -> VisitFigures {
        VisitFigures {
            visitors: self.visitors,
            visits: self.visits,
            pageviews,
            views_per_visit: ratio(self.visit_pageviews, self.visits, 100.0),
            bounce_rate: ratio(self.bounces * 100, self.visits, 10.0),
            visit_duration: ratio(self.duration_ms, self.visits * 1000, 1.0) as u64,
        }
    }
}

/// `part / whole` rounded to `1 / precision`; 0 when `whole` is 0.
pub fn ratio(part: u64, whole: u64, precision: f64) -> f64 {
    if whole == 0 { 0.0 } else { (part as f64 / whole as f64 * precision).round() / precision }
}

/// The sums of the visits `matching`, computed by the server.
pub async fn visit_sums(store: &Store, matching: &Document) -> Result<VisitSums, StoreError> {
    let visits = store.database().collection::<Document>(VISITS);
    let pipeline = vec![
        doc! { "$match": matching },
        doc! { "$group": {
            "_id": "$user_id",
            "visits": { "$sum": 1 },
            "bounces": { "$sum": { "$cond": [{ "$eq": ["$bounced", true] }, 1, 0] } },
            "duration_ms": { "$sum": "$duration_ms" },
            "visit_pageviews": { "$sum": "$pageviews" },
        } },
        doc! { "$group": {
            "_id": Bson::Null,
            "visitors": { "$sum": 1 },
            "visits": { "$sum": "$visits" },
            "bounces": { "$sum": "$bounces" },
            "duration_ms": { "$sum": "$duration_ms" },
            "visit_pageviews": { "$sum": "$visit_pageviews" },
        } },
    ];
    let rows = aggregate(store, &visits, pipeline).await?;
    Ok(rows.first().map_or_else(VisitSums::default, |row| VisitSums {
        visitors: count_of(row.get("visitors")),
        visits: count_of(row.get("visits")),
        bounces: count_of(row.get("bounces")),
        duration_ms: count_of(row.get("duration_ms")),
        visit_pageviews: count_of(row.get("visit_pageviews")),
    }))
}

/// The daily rollups' fast path: the unfiltered sums of `site_id`'s visits
/// starting in `[from, to)`, when the rollups are ready and both bounds are
/// UTC midnights (or open), read from a few documents per day
/// ([`rollups::daily::daily_figures`], exact). `None` sends the caller to the
/// exact aggregation over `visits` (a range cutting a day, or rollups not ready).
pub async fn unfiltered_visit_sums(
    store: &Store,
    site_id: &str,
    from: Option<DateTime>,
    to: Option<DateTime>,
) -> Result<Option<VisitSums>, StoreError> {
    let whole_day = |bound: Option<DateTime>| bound.is_none_or(|time| time.timestamp_millis().rem_euclid(DAY_MS) == 0);
    if !(whole_day(from) && whole_day(to) && rollups::are_ready(store).await?) {
        return Ok(None);
    }
    let daily = rollups::daily::daily_figures(store, site_id, from, to).await?;
    Ok(Some(VisitSums {
        visitors: daily.visitors,
        visits: daily.visits,
        bounces: daily.bounces,
        duration_ms: daily.duration_ms,
        visit_pageviews: daily.visit_pageviews,
    }))
}

/// The visit figures of `scope` (`unfiltered`: no filter narrows it, so the
/// fast path may give the sums).
pub async fn visit_figures(
    store: &Store,
    filter: &StatsFilter,
    scope: &Scope,
    unfiltered: bool,
) -> Result<VisitFigures, StoreError> {
    let (pageviews, sums) = tokio::try_join!(pageviews_of(store, scope), sums_of(store, filter, scope, unfiltered))?;
    Ok(sums.figures(pageviews))
}

/// The `page_view` events of `scope`.
async fn pageviews_of(store: &Store, scope: &Scope) -> Result<u64, StoreError> {
    let mut pageviews_match = scope.events.clone();
    // The legacy `event_type` parameter and the filters sit under `$and`: no clash.
    pageviews_match.insert("event_type", "page_view");
    count(store, store.events(), pageviews_match).await
}

/// The visit sums of `scope`: from the daily rollups when `unfiltered` and
/// they can answer, else aggregated over `visits`.
async fn sums_of(
    store: &Store,
    filter: &StatsFilter,
    scope: &Scope,
    unfiltered: bool,
) -> Result<VisitSums, StoreError> {
    if unfiltered && let Some(sums) = unfiltered_visit_sums(store, &filter.site_id, filter.from, filter.to).await? {
        return Ok(sums);
    }
    visit_sums(store, &scope.visits).await
}

/// The `page_view` events among event figures, when they say it: listed, or
/// absent while every type is listed (then none).
fn listed_pageviews(stats: &SiteStats) -> Option<u64> {
    match stats.events_by_type.iter().find(|row| row.event_type == "page_view") {
        Some(row) => Some(row.count),
        None if stats.events_by_type_other.is_none() => Some(0),
        None => None,
    }
}

/// The period a comparison sets beside the asked one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// The same length, just before `from`.
    PreviousPeriod,
    /// The same dates one year earlier (29 February: the 28th).
    YearOverYear,
}

impl Compare {
    /// The compared range of `[from, to)`.
    pub fn range(self, from: DateTime, to: DateTime) -> (DateTime, DateTime) {
        match self {
            Compare::PreviousPeriod => {
                let length = to.timestamp_millis() - from.timestamp_millis();
                (DateTime::from_millis(from.timestamp_millis() - length), from)
            }
            Compare::YearOverYear => (year_before(from), year_before(to)),
        }
    }
}

/// The same instant one year earlier (29 February becoming the 28th).
fn year_before(time: DateTime) -> DateTime {
    let text = time.try_to_rfc3339_string().unwrap_or_default();
    let year: i32 = text.get(..4).and_then(|y| y.parse().ok()).unwrap_or(1971);
    let rest = text.get(4..).unwrap_or_default().replacen("-02-29T", "-02-28T", 1);
    DateTime::parse_rfc3339_str(format!("{:04}{rest}", year - 1))
        .unwrap_or_else(|_| DateTime::from_millis(time.timestamp_millis() - 365 * 24 * 3_600_000))
}

/// The answer of `GET /stats`: the event figures, the visit figures, and the
/// compared period's when asked.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SiteReport {
    /// Number of processed events in the range (and filters).
    pub total_events: u64,
    /// Number of distinct `user_id`s among them.
    pub unique_users: u64,
    /// The most visited paths, by count descending, then path ascending.
    pub top_paths: Vec<PathCount>,
    /// Events per type, by count descending, then type ascending (the 20 most counted).
    pub events_by_type: Vec<TypeCount>,
    /// Present only past 20 types: the types left out of `events_by_type`, summed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_by_type_other: Option<OtherTypes>,
    /// Distinct visitors of the visits starting in the range.
    pub visitors: u64,
    /// Visits starting in the range.
    pub visits: u64,
    /// `page_view` events in the range.
    pub pageviews: u64,
    /// Σ visit pageviews / visits, two decimals.
    pub views_per_visit: f64,
    /// Percent of the visits that bounced, one decimal.
    pub bounce_rate: f64,
    /// Mean visit duration in seconds, rounded.
    pub visit_duration: u64,
    /// With `compare=`: the same figures over the compared period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

/// The figures of the compared period.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Comparison {
    /// The compared period's start (RFC 3339).
    pub from: String,
    /// Its end, exclusive (RFC 3339).
    pub to: String,
    /// Events in it.
    pub total_events: u64,
    /// Distinct `user_id`s among them.
    pub unique_users: u64,
    /// Distinct visitors of its visits.
    pub visitors: u64,
    /// Its visits.
    pub visits: u64,
    /// Its `page_view` events.
    pub pageviews: u64,
    /// Σ visit pageviews / visits.
    pub views_per_visit: f64,
    /// Percent of bounced visits.
    pub bounce_rate: f64,
    /// Mean visit duration in seconds.
    pub visit_duration: u64,
}

/// `GET /stats`: the event and visit figures of `filter` and `filters`, and
/// with `compare` (which needs `from` and `to`) the compared period's.
pub async fn site_report(
    store: &Store,
    filter: &StatsFilter,
    filters: &Filters,
    compare: Option<Compare>,
) -> Result<SiteReport, StoreError> {
    let figures = async {
        let (stats, visits) = figures_of(store, filter, filters).await?;
        Ok::<_, StoreError>((stats, visits))
    };
    let compared = async {
        let (Some(compare), Some(from), Some(to)) = (compare, filter.from, filter.to) else { return Ok(None) };
        let (from, to) = compare.range(from, to);
        let period = StatsFilter { from: Some(from), to: Some(to), ..filter.clone() };
        let (stats, visits) = figures_of(store, &period, filters).await?;
        let rfc3339 = |time: DateTime| time.try_to_rfc3339_string().unwrap_or_default();
        Ok(Some(Comparison {
            from: rfc3339(from),
            to: rfc3339(to),
            total_events: stats.total_events,
            unique_users: stats.unique_users,
            visitors: visits.visitors,
            visits: visits.visits,
            pageviews: visits.pageviews,
            views_per_visit: visits.views_per_visit,
            bounce_rate: visits.bounce_rate,
            visit_duration: visits.visit_duration,
        }))
    };
    let ((stats, visits), comparison) = tokio::try_join!(figures, compared)?;
    Ok(SiteReport {
        total_events: stats.total_events,
        unique_users: stats.unique_users,
        top_paths: stats.top_paths,
        events_by_type: stats.events_by_type,
        events_by_type_other: stats.events_by_type_other,
        visitors: visits.visitors,
        visits: visits.visits,
        pageviews: visits.pageviews,
        views_per_visit: visits.views_per_visit,
        bounce_rate: visits.bounce_rate,
        visit_duration: visits.visit_duration,
        comparison,
    })
}

/// The event figures (their fast paths kept when no filter narrows them) and
/// the visit figures of one period.
async fn figures_of(
    store: &Store,
    filter: &StatsFilter,
    filters: &Filters,
) -> Result<(SiteStats, VisitFigures), StoreError> {
    let scope = scope::resolve(store, filter, filters).await?;
    if filters.is_empty() && filter.event_type.is_none() {
        // Unfiltered: the event figures (from the rollups) also give the pageviews.
        let (stats, sums) = tokio::try_join!(super::site_stats(store, filter), sums_of(store, filter, &scope, true))?;
        let pageviews = match listed_pageviews(&stats) {
            Some(pageviews) => pageviews,
            None => pageviews_of(store, &scope).await?,
        };
        return Ok((stats, sums.figures(pageviews)));
    }
    let stats = async {
        if filters.is_empty() {
            super::site_stats(store, filter).await
        } else {
            plain_site_stats_matching(store, scope.events.clone()).await
        }
    };
    // The pageviews are among the event figures' types when listed (a pass
    // over the events fewer: a filtered request's read every event in range).
    let (stats, sums) = tokio::try_join!(stats, sums_of(store, filter, &scope, false))?;
    let pageviews = match listed_pageviews(&stats) {
        Some(pageviews) if filter.event_type.is_none() => pageviews,
        _ => pageviews_of(store, &scope).await?,
    };
    Ok((stats, sums.figures(pageviews)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime {
        DateTime::parse_rfc3339_str(text).unwrap()
    }

    #[test]
    fn figures_round_as_documented() {
        let sums = VisitSums { visitors: 2, visits: 3, bounces: 1, duration_ms: 100_500, visit_pageviews: 5 };
        let figures = sums.figures(7);
        assert_eq!(figures.views_per_visit, 1.67);
        assert_eq!(figures.bounce_rate, 33.3);
        assert_eq!(figures.visit_duration, 34);
        assert_eq!(figures.pageviews, 7);
        assert_eq!(VisitSums::default().figures(0), VisitFigures::default());
    }

    #[test]
    fn compared_periods() {
        let (from, to) = (at("2026-03-01T00:00:00Z"), at("2026-03-08T00:00:00Z"));
        assert_eq!(Compare::PreviousPeriod.range(from, to), (at("2026-02-22T00:00:00Z"), from));
        assert_eq!(Compare::YearOverYear.range(from, to), (at("2025-03-01T00:00:00Z"), at("2025-03-08T00:00:00Z")));
        assert_eq!(year_before(at("2024-02-29T12:30:00Z")), at("2023-02-28T12:30:00Z"));
    }
}
