//! A site's goals: what a goal is (a custom event name, or a page path pattern),
//! validating a list of them as `PUT /sites/{site_id}/goals` receives it, which
//! goals an event converts, and the MongoDB filter that selects a goal's
//! conversions in `events` (so the stats can `$match` them).
//!
//! A page goal's pattern is anchored: it matches the whole path, `*` standing
//! for any run of characters (none included, `/` included). A page goal
//! converts on page views only ("Visit /blog/*"), as in Plausible.

use std::collections::HashSet;

use mongodb::bson::{Document, doc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Most goals a site may have: the goal breakdown is one row per goal.
pub const MAX_GOALS: usize = 100;
/// Longest page pattern, in bytes (the longest `path` an event may have).
pub const MAX_PATTERN_BYTES: usize = 2048;
/// Longest custom event name, in bytes (the longest `event_type` an event may have).
pub const MAX_EVENT_TYPE_BYTES: usize = 64;
/// Longest display name given to a goal, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// The event type a page goal converts on.
pub const PAGE_VIEW: &str = "page_view";

/// One goal of a site, as stored in `sites.goals` and answered by the API:
/// exactly one of `event_type` and `page`, and its display `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({ "page": "/blog/*", "name": "Visit /blog/*" }))]
pub struct Goal {
    /// A custom event name: each event of this type converts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "signup")]
    pub event_type: Option<String>,
    /// A path pattern (`*`: any run of characters; matches the whole path): each
    /// page view of a matching path converts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "/blog/*")]
    pub page: Option<String>,
    /// The goal's display name, unique among the site's goals; when not given,
    /// the event type, or `Visit <page>`.
    pub name: String,
}

/// What is wrong with a list of goals; every message names the goal and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoalError {
    /// The body is not `{"goals": [...]}`.
    #[error(
        "the body must be a JSON object {{\"goals\": [...]}}, each goal {{\"event_type\": \"signup\"}} or {{\"page\": \"/blog/*\"}}: {0}"
    )]
    Shape(String),
    /// Over [`MAX_GOALS`].
    #[error("too many goals: {0}, at most {MAX_GOALS} per site")]
    TooMany(usize),
    /// One goal is wrong.
    #[error("goals[{index}]: {problem}")]
    Goal {
        /// Its position in the list, from 0.
        index: usize,
        /// What is wrong with it.
        problem: String,
    },
}

impl Goal {
    /// An event-type goal with its default name.
    pub fn event(event_type: &str) -> Goal {
        Goal { event_type: Some(event_type.to_string()), page: None, name: event_type.to_string() }
    }

    /// A page goal with its default name.
    pub fn page(pattern: &str) -> Goal {
        Goal { event_type: None, page: Some(pattern.to_string()), name: format!("Visit {pattern}") }
    }

    /// True when an event of `event_type` at `path` converts this goal.
    pub fn matches(&self, event_type: &str, path: &str) -> bool {
        match (&self.event_type, &self.page) {
            (Some(goal_type), _) => goal_type == event_type,
            (None, Some(pattern)) => event_type == PAGE_VIEW && wildcard_matches(pattern, path),
            (None, None) => false,
        }
    }

    /// The filter selecting this goal's conversions among a site's documents in
    /// `events` (to add to the site's and the range's own `$match`).
    pub fn filter(&self) -> Document {
        match (&self.event_type, &self.page) {
            (Some(goal_type), _) => doc! { "event_type": goal_type },
            (None, Some(pattern)) => doc! { "event_type": PAGE_VIEW, "path": { "$regex": anchored_regex(pattern) } },
            // Never built by `parse_goals`: a filter that selects nothing.
            (None, None) => doc! { "_id": { "$in": [] } },
        }
    }
}

/// The goals of `goals` that an event of `event_type` at `path` converts, in order.
pub fn converted<'a>(goals: &'a [Goal], event_type: &'a str, path: &'a str) -> impl Iterator<Item = &'a Goal> + 'a {
    goals.iter().filter(move |goal| goal.matches(event_type, path))
}

/// Reads and validates the body of `PUT /sites/{site_id}/goals`:
/// `{"goals": [{"event_type": ...} | {"page": ..., "name"?: ...}, ...]}`.
/// Names left out get their default; the whole list is refused at its first bad goal.
pub fn parse_goals(body: &[u8]) -> Result<Vec<Goal>, GoalError> {
    let body: Value = serde_json::from_slice(body).map_err(|e| GoalError::Shape(e.to_string()))?;
    let Value::Object(mut fields) = body else { return Err(GoalError::Shape("not an object".into())) };
    let goals = match fields.remove("goals") {
        Some(Value::Array(goals)) => goals,
        Some(_) => return Err(GoalError::Shape("goals must be an array".into())),
        None => return Err(GoalError::Shape("goals is missing".into())),
    };
    if let Some(other) = fields.keys().next() {
        return Err(GoalError::Shape(format!("unknown field {other:?}")));
    }
    if goals.len() > MAX_GOALS {
        return Err(GoalError::TooMany(goals.len()));
    }
    let mut names = HashSet::new();
    let mut parsed = Vec::with_capacity(goals.len());
    for (index, goal) in goals.into_iter().enumerate() {
        let goal = parse_goal(goal).map_err(|problem| GoalError::Goal { index, problem })?;
        if !names.insert(goal.name.clone()) {
            let problem = format!("the name {:?} is already another goal's: give each goal its own name", goal.name);
            return Err(GoalError::Goal { index, problem });
        }
        parsed.push(goal);
    }
    Ok(parsed)
}

/// One goal, or what is wrong with it.
fn parse_goal(goal: Value) -> Result<Goal, String> {
    let Value::Object(mut fields) = goal else {
        return Err("a goal must be an object: {\"event_type\": \"signup\"} or {\"page\": \"/blog/*\"}".into());
    };
    let event_type = text(fields.remove("event_type"), "event_type", MAX_EVENT_TYPE_BYTES)?;
    let page = text(fields.remove("page"), "page", MAX_PATTERN_BYTES)?;
    let name = text(fields.remove("name"), "name", MAX_NAME_BYTES)?;
    if let Some(other) = fields.keys().next() {
        return Err(format!("unknown field {other:?}: a goal has event_type or page, and optionally name"));
    }
    let mut goal = match (event_type, page) {
        (Some(event_type), None) => Goal::event(&event_type),
        (None, Some(page)) if !page.starts_with('/') => {
            return Err(format!("page must be a path starting with /, such as /blog/*, got {page:?}"));
        }
        (None, Some(page)) => Goal::page(&page),
        (Some(_), Some(_)) => return Err("give either event_type or page, not both: make two goals".into()),
        (None, None) => return Err("a goal needs event_type (a custom event name) or page (a path pattern)".into()),
    };
    if let Some(name) = name {
        goal.name = name;
    }
    Ok(goal)
}

/// A goal's optional text field: absent (or null), or a non-blank string of at
/// most `max` bytes with no control character.
fn text(value: Option<Value>, field: &str, max: usize) -> Result<Option<String>, String> {
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text,
        Some(_) => return Err(format!("{field} must be a string")),
    };
    if text.trim().is_empty() {
        return Err(format!("{field} must not be blank"));
    }
    if text.len() > max {
        return Err(format!("{field} is {} bytes long, at most {max}", text.len()));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(Some(text))
}

/// True when `path` as a whole matches `pattern`, where `*` is any run of
/// characters. Greedy with backtracking to the last star: linear in practice,
/// at worst `pattern.len() × path.len()`.
pub fn wildcard_matches(pattern: &str, path: &str) -> bool {
    let (pattern, path) = (pattern.as_bytes(), path.as_bytes());
    let (mut p, mut s) = (0, 0);
    // Where the last star was, and the position in `path` it currently absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while s < path.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, s));
            p += 1;
        } else if p < pattern.len() && pattern[p] == path[s] {
            p += 1;
            s += 1;
        } else if let Some((star_p, star_s)) = star {
            // Let the star absorb one more byte, and try again after it.
            p = star_p + 1;
            s = star_s + 1;
            star = Some((star_p, star_s + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// `pattern` as an anchored regular expression: `*` becomes `.*`, everything
/// else is matched literally. Anchored with `^…$`: patterns and paths hold no
/// control character, so `$` cannot match before a final newline.
pub fn anchored_regex(pattern: &str) -> String {
    let mut regex = String::with_capacity(pattern.len() + 8);
    regex.push('^');
    for c in pattern.chars() {
        match c {
            '*' => regex.push_str(".*"),
            '\\' | '.' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$' => {
                regex.push('\\');
                regex.push(c);
            }
            c => regex.push(c),
        }
    }
    regex.push('$');
    regex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> String {
        parse_goals(body.as_bytes()).expect_err(body).to_string()
    }

    #[test]
    fn goals_are_read_with_default_names() {
        let body =
            r#"{"goals": [{"event_type": "signup"}, {"page": "/blog/*"}, {"page": "/thanks", "name": "Thanks"}]}"#;
        let goals = parse_goals(body.as_bytes()).unwrap();
        assert_eq!(
            goals,
            [Goal::event("signup"), Goal::page("/blog/*"), Goal { name: "Thanks".into(), ..Goal::page("/thanks") }]
        );
        assert_eq!(goals[1].name, "Visit /blog/*");
        assert_eq!(parse_goals(br#"{"goals": []}"#).unwrap(), []);
        // Null means left out.
        assert_eq!(
            parse_goals(br#"{"goals": [{"event_type": "a", "page": null, "name": null}]}"#).unwrap(),
            [Goal::event("a")]
        );
    }

    #[test]
    fn bad_goals_are_refused_with_their_position_and_the_fix() {
        let long_page = format!("/{}", "a".repeat(MAX_PATTERN_BYTES));
        let too_many = format!("{{\"goals\": [{}]}}", vec![r#"{"event_type": "x"}"#; MAX_GOALS + 1].join(","));
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "must be a JSON object"),
            ("[]".into(), "not an object"),
            ("{}".into(), "goals is missing"),
            (r#"{"goals": {}}"#.into(), "goals must be an array"),
            (r#"{"goals": [], "site": 1}"#.into(), "unknown field \"site\""),
            (r#"{"goals": ["signup"]}"#.into(), "goals[0]: a goal must be an object"),
            (r#"{"goals": [{"event_type": "a"}, {}]}"#.into(), "goals[1]: a goal needs event_type"),
            (r#"{"goals": [{"event_type": "a", "page": "/a"}]}"#.into(), "not both"),
            (r#"{"goals": [{"event_type": 3}]}"#.into(), "event_type must be a string"),
            (r#"{"goals": [{"event_type": " "}]}"#.into(), "event_type must not be blank"),
            (r#"{"goals": [{"page": "/a\nb"}]}"#.into(), "page must not contain control characters"),
            (r#"{"goals": [{"page": "blog/*"}]}"#.into(), "page must be a path starting with /"),
            (format!(r#"{{"goals": [{{"page": "{long_page}"}}]}}"#), "page is 2049 bytes long, at most 2048"),
            (r#"{"goals": [{"page": "/a", "kind": "x"}]}"#.into(), "unknown field \"kind\""),
            (r#"{"goals": [{"event_type": "a"}, {"event_type": "a"}]}"#.into(), "goals[1]: the name \"a\" is already"),
            (r#"{"goals": [{"event_type": "a"}, {"page": "/", "name": "a"}]}"#.into(), "is already another goal's"),
            (too_many, "too many goals: 101, at most 100"),
        ];
        for (body, needle) in cases {
            let message = refused(&body);
            assert!(message.contains(needle), "{body}: {message:?} should contain {needle:?}");
        }
        let exactly_max = format!(
            "{{\"goals\": [{}]}}",
            (0..MAX_GOALS).map(|i| format!(r#"{{"event_type": "e{i}"}}"#)).collect::<Vec<_>>().join(",")
        );
        assert_eq!(parse_goals(exactly_max.as_bytes()).unwrap().len(), MAX_GOALS);
    }

    #[test]
    fn wildcards_match_whole_paths() {
        let cases = [
            ("/blog/*", "/blog/post", true),
            ("/blog/*", "/blog/", true),
            ("/blog/*", "/blog/a/b/c", true),
            ("/blog/*", "/blog", false),
            ("/blog/*", "/en/blog/post", false),
            ("/thanks", "/thanks", true),
            ("/thanks", "/thanks/", false),
            ("/thanks", "/thank", false),
            ("*", "/anything", true),
            ("/*/pricing", "/en/pricing", true),
            ("/*/pricing", "/en/pricing/x", false),
            ("/a*b*c", "/aXbYbZc", true),
            ("/a*b*c", "/aXbYcZ", false),
            ("/file.pdf", "/fileXpdf", false),
            ("/**", "/x", true),
        ];
        for (pattern, path, expected) in cases {
            assert_eq!(wildcard_matches(pattern, path), expected, "{pattern} ~ {path}");
        }
    }

    #[test]
    fn events_convert_goals_by_type_and_page_views_by_path() {
        let goals = [Goal::event("signup"), Goal::page("/blog/*"), Goal::page("/*")];
        let names = |event_type, path| converted(&goals, event_type, path).map(|g| g.name.clone()).collect::<Vec<_>>();
        assert_eq!(names("signup", "/blog/x"), ["signup"]);
        assert_eq!(names("page_view", "/blog/x"), ["Visit /blog/*", "Visit /*"]);
        assert_eq!(names("page_view", "/about"), ["Visit /*"]);
        // A custom event on a blog page is no visit of it.
        assert_eq!(names("download", "/blog/x"), Vec::<String>::new());
    }

    #[test]
    fn filters_select_a_goals_conversions() {
        assert_eq!(Goal::event("signup").filter(), doc! { "event_type": "signup" });
        assert_eq!(
            Goal::page("/docs/*.pdf").filter(),
            doc! { "event_type": "page_view", "path": { "$regex": "^/docs/.*\\.pdf$" } }
        );
        assert_eq!(anchored_regex("/a+(b)?[c]{d}|^$\\"), "^/a\\+\\(b\\)\\?\\[c\\]\\{d\\}\\|\\^\\$\\\\$");
    }
}
