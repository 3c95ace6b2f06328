//! The stats' `filters=` parameter (docs/visits.md section 4): its grammar,
//! the dimensions it may name, and each filter as a condition on the
//! collection that holds the dimension (`visits`, `events`, or both).
//!
//! Grammar: filters joined by `;`, each `dimension` `operator` `values`, the
//! values joined by `|` (any of them). Operators: `==` (is), `!=` (is not),
//! `=~` (contains; with `*`, a wildcard match of the whole value) and `!~`
//! (the negation of `=~`). A value equal to the dimension's label for a
//! missing value (`(none)`, `Direct / None` for `source`, `Direct` for
//! `channel`) also matches documents without the field, so the rows of a
//! breakdown can be used as filters as shown.
//!
//! Pure code: resolving goals and visit ids against the database is
//! [`super::scope`]'s work.

use mongodb::bson::{Bson, Document, Regex, doc};

/// Most filters one request may hold.
pub const MAX_FILTERS: usize = 20;
/// Longest `prop:` key.
pub const MAX_PROP_KEY_BYTES: usize = 64;

/// The visit attributes: kept on `visits` and copied onto each of the visit's
/// `events` (the worker's list, so that what is kept and what is filtered agree).
pub use crate::rollups::sessionize::ATTRIBUTES as VISIT_ATTRIBUTES;

/// A dimension of the stats: what a filter tests and a breakdown groups by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    /// A visit attribute (see [`VISIT_ATTRIBUTES`]): on `visits` and on `events`.
    Attribute(&'static str),
    /// `entry_page` or `exit_page`: on `visits` only.
    VisitPage(&'static str),
    /// `page` (the events' `path`), `hostname` or `event_type`: on `events` only.
    EventField {
        /// The dimension's name in the API.
        name: &'static str,
        /// The field on `events`.
        field: &'static str,
    },
    /// A custom property, `prop:<key>`: the events' `props.<key>`.
    Prop(String),
    /// A goal of the site (see [`super::goal_match`]), by its name.
    Goal,
}

/// Why a `filters=` or `dimension=` value was refused; each message names the
/// parameter and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The dimension is not one the stats know.
    #[error(
        "unknown dimension {0:?}: use one of page, entry_page, exit_page, hostname, event_type, goal, prop:<key>, {attributes}",
        attributes = VISIT_ATTRIBUTES.join(", ")
    )]
    UnknownDimension(String),
    /// A `prop:` key that cannot name a property.
    #[error(
        "prop key {0:?} is not usable: write prop:<key> with a key of 1 to {MAX_PROP_KEY_BYTES} bytes without '.' or '$'"
    )]
    BadPropKey(String),
    /// No operator in the filter.
    #[error(
        "filters: {0:?} has no operator: write dimension==value, dimension!=value, dimension=~value or dimension!~value"
    )]
    NoOperator(String),
    /// A filter without a dimension or a value.
    #[error("filters: {0:?} has an empty dimension or value: write dimension==value (values joined by |)")]
    Empty(String),
    /// Over [`MAX_FILTERS`].
    #[error("filters: {0} filters, at most {MAX_FILTERS}")]
    TooMany(usize),
}

impl Dimension {
    /// The dimension called `name` in the API.
    pub fn parse(name: &str) -> Result<Dimension, FilterError> {
        if let Some(key) = name.strip_prefix("prop:") {
            let usable = !key.is_empty() && key.len() <= MAX_PROP_KEY_BYTES && !key.contains(['.', '$']);
            return if usable {
                Ok(Dimension::Prop(key.to_string()))
            } else {
                Err(FilterError::BadPropKey(key.into()))
            };
        }
        if let Some(attribute) = VISIT_ATTRIBUTES.iter().find(|a| **a == name) {
            return Ok(Dimension::Attribute(attribute));
        }
        Ok(match name {
            "entry_page" => Dimension::VisitPage("entry_page"),
            "exit_page" => Dimension::VisitPage("exit_page"),
            "page" => Dimension::EventField { name: "page", field: "path" },
            "hostname" => Dimension::EventField { name: "hostname", field: "hostname" },
            "event_type" => Dimension::EventField { name: "event_type", field: "event_type" },
            "goal" => Dimension::Goal,
            other => return Err(FilterError::UnknownDimension(other.to_string())),
        })
    }

    /// The dimension's name in the API.
    pub fn name(&self) -> String {
        match self {
            Dimension::Attribute(name) | Dimension::VisitPage(name) | Dimension::EventField { name, .. } => {
                (*name).to_string()
            }
            Dimension::Prop(key) => format!("prop:{key}"),
            Dimension::Goal => "goal".into(),
        }
    }

    /// The field holding the dimension on `visits`, when visits hold it.
    pub fn visits_field(&self) -> Option<String> {
        match self {
            Dimension::Attribute(name) | Dimension::VisitPage(name) => Some((*name).to_string()),
            _ => None,
        }
    }

    /// The field holding the dimension on `events`, when events hold it
    /// (goals are matched by their own expression, see [`super::goal_match`]).
    pub fn events_field(&self) -> Option<String> {
        match self {
            Dimension::Attribute(name) => Some((*name).to_string()),
            Dimension::EventField { field, .. } => Some((*field).to_string()),
            Dimension::Prop(key) => Some(format!("props.{key}")),
            Dimension::VisitPage(_) | Dimension::Goal => None,
        }
    }

    /// What a breakdown row shows for a missing value.
    pub fn none_label(&self) -> &'static str {
        match self {
            Dimension::Attribute("source") => "Direct / None",
            Dimension::Attribute("channel") => "Direct",
            _ => "(none)",
        }
    }
}

/// A filter's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `==`: the value is one of the values.
    Is,
    /// `!=`: the value is none of them (a missing value included).
    IsNot,
    /// `=~`: contains one of them, or matches one holding `*` as a wildcard.
    Matches,
    /// `!~`: matches none of them.
    DoesNotMatch,
}

impl Operator {
    /// Whether the operator selects what does *not* match its values.
    pub fn negated(self) -> bool {
        matches!(self, Operator::IsNot | Operator::DoesNotMatch)
    }
}

/// One parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// What it tests.
    pub dimension: Dimension,
    /// How.
    pub operator: Operator,
    /// Against which values (any of them), never empty, none empty.
    pub values: Vec<String>,
}

/// The filters of one request, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(pub Vec<Filter>);

impl Filters {
    /// Parses a `filters=` value; an empty text means no filter.
    pub fn parse(text: &str) -> Result<Filters, FilterError> {
        let parts: Vec<&str> = text.split(';').filter(|part| !part.trim().is_empty()).collect();
        if parts.len() > MAX_FILTERS {
            return Err(FilterError::TooMany(parts.len()));
        }
        parts.into_iter().map(Filter::parse).collect::<Result<Vec<_>, _>>().map(Filters)
    }

    /// Whether there is no filter.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Filter {
    /// Parses one `dimension` `operator` `values` filter.
    fn parse(text: &str) -> Result<Filter, FilterError> {
        let at = text.find(['=', '!']).ok_or_else(|| FilterError::NoOperator(text.into()))?;
        let operator = match text.get(at..at + 2) {
            Some("==") => Operator::Is,
            Some("!=") => Operator::IsNot,
            Some("=~") => Operator::Matches,
            Some("!~") => Operator::DoesNotMatch,
            _ => return Err(FilterError::NoOperator(text.into())),
        };
        let name = text[..at].trim();
        let values: Vec<String> = text[at + 2..].split('|').map(|v| v.trim().to_string()).collect();
        if name.is_empty() || values.iter().any(String::is_empty) {
            return Err(FilterError::Empty(text.into()));
        }
        Ok(Filter { dimension: Dimension::parse(name)?, operator, values })
    }

    /// The filter as a condition on `field` (a `$match` document).
    pub fn condition(&self, field: &str) -> Document {
        let none = self.dimension.none_label();
        match self.operator {
            Operator::Is | Operator::IsNot => {
                let mut values: Vec<Bson> = self.values.iter().map(|v| Bson::String(v.clone())).collect();
                // A missing field is the `(none)` row: `$in: [null]` matches it.
                if self.values.iter().any(|v| v == none) {
                    values.push(Bson::Null);
                }
                let operator = if self.operator == Operator::Is { "$in" } else { "$nin" };
                doc! { field: { operator: values } }
            }
            Operator::Matches => doc! { field: values_regex(&self.values) },
            Operator::DoesNotMatch => doc! { field: { "$not": values_regex(&self.values) } },
        }
    }

    /// Whether `name` passes the filter's `=~`/`==` test, for matching names
    /// the API holds (goal names), with the same rules as [`Filter::condition`].
    pub fn selects_name(&self, name: &str) -> bool {
        match self.operator {
            Operator::Is | Operator::IsNot => self.values.iter().any(|v| v == name),
            Operator::Matches | Operator::DoesNotMatch => self.values.iter().any(|v| wildcard_match(v, name)),
        }
    }
}

/// The regular expression matching any of `values` under `=~`.
pub fn values_regex(values: &[String]) -> Regex {
    let pattern = values.iter().map(|v| format!("(?:{})", value_pattern(v))).collect::<Vec<_>>().join("|");
    Regex { pattern, options: String::new() }
}

/// One `=~` value as a regular expression: *contains* it, or with `*` a
/// wildcard match of the whole value (`/blog/*`: any path under `/blog/`).
pub fn value_pattern(value: &str) -> String {
    if value.contains('*') {
        format!("^{}$", value.split('*').map(escape).collect::<Vec<_>>().join(".*"))
    } else {
        escape(value)
    }
}

/// `text` with every regular-expression metacharacter escaped.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Whether `text` passes `=~ value` (the same rule as [`value_pattern`], in Rust).
fn wildcard_match(value: &str, text: &str) -> bool {
    if !value.contains('*') {
        return text.contains(value);
    }
    let parts: Vec<&str> = value.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_into_dimension_operator_and_values() {
        let filters = Filters::parse("source==Google|Bing;page=~/blog/*;prop:plan!=pro;country!~D").unwrap();
        assert_eq!(filters.0.len(), 4);
        assert_eq!(filters.0[0].dimension, Dimension::Attribute("source"));
        assert_eq!(filters.0[0].operator, Operator::Is);
        assert_eq!(filters.0[0].values, ["Google", "Bing"]);
        assert_eq!(filters.0[1].dimension, Dimension::EventField { name: "page", field: "path" });
        assert_eq!(filters.0[1].operator, Operator::Matches);
        assert_eq!(filters.0[2].dimension, Dimension::Prop("plan".into()));
        assert_eq!(filters.0[2].operator, Operator::IsNot);
        assert_eq!(filters.0[3].operator, Operator::DoesNotMatch);
        assert!(Filters::parse("").unwrap().is_empty());
        assert!(Filters::parse(";").unwrap().is_empty());
    }

    #[test]
    fn bad_filters_are_refused_with_the_reason() {
        assert_eq!(Filters::parse("planet==Mars"), Err(FilterError::UnknownDimension("planet".into())));
        assert_eq!(Filters::parse("source=Google"), Err(FilterError::NoOperator("source=Google".into())));
        assert_eq!(Filters::parse("source"), Err(FilterError::NoOperator("source".into())));
        assert_eq!(Filters::parse("source=="), Err(FilterError::Empty("source==".into())));
        assert_eq!(Filters::parse("source==a||b"), Err(FilterError::Empty("source==a||b".into())));
        assert_eq!(Filters::parse("==a"), Err(FilterError::Empty("==a".into())));
        assert_eq!(Filters::parse("prop:a.b==c"), Err(FilterError::BadPropKey("a.b".into())));
        assert_eq!(Filters::parse("prop:==c"), Err(FilterError::BadPropKey("".into())));
        let many = vec!["os==Linux"; MAX_FILTERS + 1].join(";");
        assert_eq!(Filters::parse(&many), Err(FilterError::TooMany(MAX_FILTERS + 1)));
        assert!(Filters::parse(&vec!["os==Linux"; MAX_FILTERS].join(";")).is_ok());
        assert!(FilterError::UnknownDimension("x".into()).to_string().contains("prop:<key>"));
    }

    #[test]
    fn dimensions_live_on_their_collections() {
        let source = Dimension::parse("source").unwrap();
        assert_eq!((source.visits_field(), source.events_field()), (Some("source".into()), Some("source".into())));
        let entry = Dimension::parse("entry_page").unwrap();
        assert_eq!((entry.visits_field(), entry.events_field()), (Some("entry_page".into()), None));
        let page = Dimension::parse("page").unwrap();
        assert_eq!((page.visits_field(), page.events_field()), (None, Some("path".into())));
        assert_eq!(Dimension::parse("prop:plan").unwrap().events_field(), Some("props.plan".into()));
        assert_eq!(Dimension::parse("goal").unwrap().events_field(), None);
        assert_eq!(source.none_label(), "Direct / None");
        assert_eq!(Dimension::parse("channel").unwrap().none_label(), "Direct");
        assert_eq!(page.none_label(), "(none)");
        assert_eq!(Dimension::parse("prop:plan").unwrap().name(), "prop:plan");
    }

    fn regex(value: Option<&Bson>) -> &Regex {
        match value {
            Some(Bson::RegularExpression(regex)) => regex,
            other => panic!("not a regular expression: {other:?}"),
        }
    }

    #[test]
    fn conditions_escape_metacharacters_and_match_missing_as_none() {
        let filter = |text: &str| Filters::parse(text).unwrap().0.remove(0);
        assert_eq!(filter("os==Linux|Mac").condition("os"), doc! { "os": { "$in": ["Linux", "Mac"] } });
        assert_eq!(filter("os!=Linux").condition("os"), doc! { "os": { "$nin": ["Linux"] } });
        assert_eq!(
            filter("source==Direct / None").condition("source"),
            doc! { "source": { "$in": ["Direct / None", Bson::Null] } }
        );
        let contains = filter("page=~a.b(c)").condition("path");
        assert_eq!(regex(contains.get("path")).pattern, r"(?:a\.b\(c\))");
        let wildcard = filter("page=~/blog/*|/x").condition("path");
        assert_eq!(regex(wildcard.get("path")).pattern, r"(?:^/blog/.*$)|(?:/x)");
        let negated = filter("page!~/blog").condition("path");
        regex(negated.get_document("path").unwrap().get("$not"));
    }

    #[test]
    fn names_are_matched_by_the_same_rules() {
        let filter = |text: &str| Filters::parse(text).unwrap().0.remove(0);
        assert!(filter("goal==Signup").selects_name("Signup"));
        assert!(!filter("goal==Signup").selects_name("Signup2"));
        assert!(filter("goal=~ign").selects_name("Signup"));
        assert!(filter("goal=~Visit /blog/*").selects_name("Visit /blog/a/b"));
        assert!(!filter("goal=~Visit /blog/*").selects_name("Visit /blo"));
        assert!(filter("goal=~*a*c").selects_name("xabc"));
        assert!(!filter("goal=~*a*c").selects_name("xabcd"));
    }
}
