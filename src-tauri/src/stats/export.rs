//! Export: a site's stats and time series as one CSV table, for `GET
//! /stats/export.csv` and the desktop app's "Export CSV" (the same bytes).
//!
//! One rectangular table of `section,key,value` rows, so any spreadsheet or
//! `csv` reader takes it whole: the filter (`filter,site_id,…`, `filter,from,…`),
//! the summary (`summary,total_events,123`), the top paths (`path,/pricing,40`),
//! the events per type (`event_type,page_view,100`; past the top 20 types, the
//! rest as `event_type_other,types,…` and `event_type_other,count,…`) and every time bucket
//! (`bucket,2026-03-01T00:00:00Z,7`). Every section covers the same range, so
//! the buckets add up to `total_events`.
//!
//! Paths and types come from web pages, so a text cell that a spreadsheet would
//! run as a formula (starting with `=`, `+`, `-`, `@`, tab or carriage return)
//! gets a leading `'`, as OWASP advises against CSV injection.

use std::borrow::Cow;

use mongodb::bson::DateTime;

use crate::stats::{self, Interval, MAX_BUCKETS, StatsFilter};
use crate::storage::{Store, StoreError};

/// The MIME type of an export.
pub const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8";

/// What to export: the site, optional range and type, and the buckets' width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    /// The site and its optional range (`from` inclusive, `to` exclusive) and event type.
    pub filter: StatsFilter,
    /// The time series' bucket width.
    pub interval: Interval,
}

impl ExportRequest {
    /// Everything of `site_id`, by day.
    pub fn all_time(site_id: &str) -> ExportRequest {
        ExportRequest { filter: StatsFilter::site(site_id), interval: Interval::Day }
    }
}

/// Why an export could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The range holds more buckets than a time series may.
    #[error(
        "range too long for the time series: {buckets} buckets, at most {MAX_BUCKETS}; use interval=day or a later from"
    )]
    TooManyBuckets {
        /// Buckets the range would need.
        buckets: i64,
    },
}

/// The export of `request` as CSV text. Without `from`, the range starts at the
/// first matching event; without `to`, it ends now.
pub async fn site_csv(store: &Store, request: &ExportRequest) -> Result<String, ExportError> {
    let ExportRequest { filter, interval } = request;
    let to = filter.to.unwrap_or_else(DateTime::now);
    let from = match filter.from {
        Some(from) => from,
        None => stats::first_event_time(store, filter).await?.map_or(to, |first| first.min(to)),
    };
    let buckets = stats::bucket_count(*interval, from, to);
    if buckets > MAX_BUCKETS {
        return Err(ExportError::TooManyBuckets { buckets });
    }
    let range = StatsFilter { from: Some(from), to: Some(to), ..filter.clone() };
    let (summary, series) =
        tokio::try_join!(stats::site_stats(store, &range), stats::timeseries(store, &range, *interval, from, to))?;

    let rfc3339 = |time: DateTime| time.try_to_rfc3339_string().unwrap_or_default();
    let interval_name = match interval {
        Interval::Minute => "minute",
        Interval::Hour => "hour",
        Interval::Day => "day",
    };
    let mut rows: Vec<(&str, String, String)> = vec![
        ("filter", "site_id".into(), filter.site_id.clone()),
        ("filter", "from".into(), rfc3339(from)),
        ("filter", "to".into(), rfc3339(to)),
    ];
    if let Some(kind) = &filter.event_type {
        rows.push(("filter", "event_type".into(), kind.clone()));
    }
    rows.push(("filter", "interval".into(), interval_name.into()));
    rows.push(("summary", "total_events".into(), summary.total_events.to_string()));
    rows.push(("summary", "unique_users".into(), summary.unique_users.to_string()));
    rows.extend(summary.top_paths.into_iter().map(|row| ("path", row.path, row.count.to_string())));
    rows.extend(summary.events_by_type.into_iter().map(|row| ("event_type", row.event_type, row.count.to_string())));
    // The types past the top ones, summed: a section of its own, so no real type's name can collide.
    if let Some(other) = summary.events_by_type_other {
        rows.push(("event_type_other", "types".into(), other.types.to_string()));
        rows.push(("event_type_other", "count".into(), other.count.to_string()));
    }
    rows.extend(series.into_iter().map(|bucket| ("bucket", bucket.start, bucket.count.to_string())));

    let mut writer = csv::Writer::from_writer(Vec::new());
    let written = std::iter::once(["section", "key", "value"].map(Cow::Borrowed))
        .chain(rows.iter().map(|(section, key, value)| [Cow::Borrowed(*section), inert(key), inert(value)]))
        .try_for_each(|record| writer.write_record(record.iter().map(|cell| cell.as_bytes())));
    written.expect("writing CSV to memory cannot fail");
    let bytes = writer.into_inner().expect("flushing CSV to memory cannot fail");
    Ok(String::from_utf8(bytes).expect("CSV of UTF-8 strings is UTF-8"))
}

/// Rows of cells as CSV text (the breakdowns' download), every cell made
/// [`inert`] as in the export.
pub fn csv_table(rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer
            .write_record(row.iter().map(|cell| inert(cell).into_owned()))
            .expect("writing CSV to memory cannot fail");
    }
    let bytes = writer.into_inner().expect("flushing CSV to memory cannot fail");
    String::from_utf8(bytes).expect("CSV of UTF-8 strings is UTF-8")
}

/// A cell a spreadsheet shows as text: one that would start a formula gets a leading `'`.
fn inert(text: &str) -> Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The file name of `site_id`'s export, `<site>-stats.csv`, reduced to characters
/// safe in a `Content-Disposition` header and in any file system.
pub fn file_name(site_id: &str) -> String {
    let safe: String = site_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    let safe = safe.trim_start_matches('.');
    format!("{}-stats.csv", if safe.is_empty() { "site" } else { safe })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_name("site-001"), "site-001-stats.csv");
        assert_eq!(file_name("shop.example.com"), "shop.example.com-stats.csv");
        assert_eq!(file_name("a/b\\c\"d e"), "a_b_c_d_e-stats.csv");
        assert_eq!(file_name("../etc"), "_etc-stats.csv");
        assert_eq!(file_name("été"), "_t_-stats.csv");
        assert_eq!(file_name("..."), "site-stats.csv");
    }

    #[test]
    fn formula_like_cells_are_made_inert() {
        assert_eq!(inert("/pricing"), "/pricing");
        assert_eq!(inert("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(inert("+1"), "'+1");
        assert_eq!(inert("-1"), "'-1");
        assert_eq!(inert("@sum"), "'@sum");
        assert_eq!(inert("page_view"), "page_view");
    }
}
