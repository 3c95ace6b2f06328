//! The event itself: turns the raw body of `POST /event` into a validated
//! [`NewEvent`] (and that of `POST /events` into a list of them, each element
//! checked by the same rules), and an event into the document stored in the queue.
//!
//! Only the named string fields (`user_id` and `event_id` optional), an
//! optional timestamp (within [`timestamp_window`]) and the optional page
//! context ([`super::page_context`]: `url`, `referrer`, `screen_width`, `props`
//! of plain strings) get through: a client can never put an operator
//! (`{"$gt": ""}`), a nested document of its own shape or a field of its own
//! into the database.

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::openapi::RefOr;

use super::page_context::{self, PageContext};
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};

/// Largest body of `POST /event` accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Largest body of `POST /events` accepted, in bytes.
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;
/// Most events one `POST /events` may hold: a batch is validated whole and
/// stored in one insert, so this bounds the work and memory of one request.
pub const MAX_BATCH_EVENTS: usize = 500;

/// The string fields of an event, with the most bytes each may hold.
const FIELD_LIMITS: [(&str, usize); 5] =
    [("site_id", 128), ("event_type", 64), ("path", 2048), ("user_id", 256), ("event_id", MAX_EVENT_ID_BYTES)];
/// The string fields a client may leave out (or send as null).
const OPTIONAL_FIELDS: [&str; 2] = ["user_id", "event_id"];
/// Longest `event_id`: a UUID (36) with room for a client's own scheme.
pub const MAX_EVENT_ID_BYTES: usize = 64;
/// Earliest timestamp accepted: nothing real happened on the web before it, and
/// a year-1 date breaks every date format downstream (the CSV export).
pub const EARLIEST_TIMESTAMP_MILLIS: i64 = 946_684_800_000; // 2000-01-01T00:00:00Z
/// How far ahead of the server's clock a timestamp may be: clients' clocks are
/// off by minutes or hours, not by more than a day; a year-9999 one would
/// escape retention for ever.
pub const MAX_TIMESTAMP_AHEAD_MILLIS: i64 = 24 * 3600 * 1000;

/// What each field of an event means, for the OpenAPI document.
const FIELD_DESCRIPTIONS: [(&str, &str); 6] = [
    ("site_id", "The site the event belongs to."),
    ("event_type", "The kind of event: `page_view`, or a custom one such as `signup`."),
    ("path", "The page path, such as `/pricing`."),
    (
        "user_id",
        "The visitor, as your server knows them. Absent or null: the server derives an anonymous id \
         (a daily-salted hash of site, client address and User-Agent).",
    ),
    (
        "event_id",
        "An id of your choosing for this event (a UUID, or any string up to 64 bytes), to retry safely: \
         the same event_id for the same site is stored and counted once, whenever the retry arrives.",
    ),
    (
        "timestamp",
        "When the event happened, RFC 3339, from 2000-01-01T00:00:00Z to one day ahead of the server's \
         clock. Absent: the time the server received it.",
    ),
];

/// An event that passed validation, ready to be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Site the event belongs to.
    pub site_id: String,
    /// Kind of event, such as `page_view`.
    pub event_type: String,
    /// Page path, such as `/pricing`.
    pub path: String,
    /// Visitor identifier chosen by the client; `None` when it sent none (or
    /// null), and the API derives an anonymous one (see [`crate::ingest::anonymous_id`]).
    pub user_id: Option<String>,
    /// The client's id for this event, which makes its retries safe: one event
    /// per `(site_id, event_id)` is ever stored (unique indexes on the queue and
    /// `events`; see [`crate::worker`] for the retry that arrives late).
    pub event_id: Option<String>,
    /// When the event happened, if the client said so.
    pub timestamp: Option<DateTime>,
    /// The page's URL, referrer, screen width and custom properties, when sent.
    pub context: PageContext,
}

/// The body of `POST /event`, and each element of `POST /events`, in the OpenAPI
/// document (as the schema `Event`): built from the limits the parser enforces,
/// so the document cannot drift from the rules.
#[derive(Debug)]
pub struct EventBody;

impl utoipa::PartialSchema for EventBody {
    fn schema() -> RefOr<Schema> {
        let describe = |field: &str| FIELD_DESCRIPTIONS.iter().find(|(name, _)| *name == field).map(|(_, text)| *text);
        let mut event = ObjectBuilder::new()
            .description(Some(
                "An event. Strings may not be blank nor hold control characters; unknown or duplicate \
                 fields are refused.",
            ))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for (field, max) in FIELD_LIMITS {
            let optional = OPTIONAL_FIELDS.contains(&field);
            let kind: SchemaType =
                if optional { [Type::String, Type::Null].into_iter().collect() } else { Type::String.into() };
            let string = ObjectBuilder::new()
                .schema_type(kind)
                .min_length(Some(1))
                .max_length(Some(max))
                .description(describe(field));
            event = event.property(field, string);
            if !optional {
                event = event.required(field);
            }
        }
        let timestamp = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(describe("timestamp"));
        page_context::document_fields(event.property("timestamp", timestamp))
            .examples([serde_json::json!({
                "site_id": "site-001", "event_type": "page_view", "path": "/pricing", "user_id": "user-123"
            })])
            .into()
    }
}

impl utoipa::ToSchema for EventBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "Event".into()
    }
}

/// Why a body is not an acceptable event. The message is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The body is not UTF-8.
    #[error("request body is not valid UTF-8")]
    InvalidUtf8,
    /// The body does not parse as JSON.
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The JSON is not an object, or has fields we do not know, or a field twice.
    #[error("invalid event: {0}")]
    Shape(String),
    /// A required field is absent or null.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A field holds something other than a string.
    #[error("{field} must be a string, got {found}")]
    NotAString {
        /// The field.
        field: &'static str,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A field is empty or only whitespace.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A field is longer than allowed.
    #[error("{field} is too long: at most {max} bytes")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its limit.
        max: usize,
    },
    /// A field holds a control character (NUL, newline, ...).
    #[error("{0} must not contain control characters")]
    ControlCharacter(&'static str),
    /// A page-context field (`url`, `referrer`, `screen_width`, `props`) is not acceptable.
    #[error("{field} {message}")]
    BadField {
        /// The field.
        field: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// `timestamp` is not an RFC 3339 date-time.
    #[error("timestamp must be an RFC 3339 date-time such as 2024-05-01T12:00:00Z, got {0:?}")]
    BadTimestamp(String),
    /// `timestamp` is before 2000 or more than a day ahead of the server's clock.
    #[error(
        "timestamp {found} is outside the accepted window: from {earliest} to one day ahead of the server's \
         clock ({latest})"
    )]
    TimestampOutOfRange {
        /// The timestamp sent, as RFC 3339.
        found: String,
        /// The window's start.
        earliest: String,
        /// The window's end, now.
        latest: String,
    },
}

/// The body as sent: every field optional and untyped so that validation can say
/// precisely which one is wrong. Unknown and duplicate fields are refused by serde.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    site_id: Option<Value>,
    event_type: Option<Value>,
    path: Option<Value>,
    user_id: Option<Value>,
    event_id: Option<Value>,
    timestamp: Option<Value>,
    url: Option<Value>,
    referrer: Option<Value>,
    screen_width: Option<Value>,
    props: Option<Value>,
}

/// Why the body of `POST /events` is refused as a whole, or which element is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body is not UTF-8, not JSON, or not an array.
    #[error(transparent)]
    Body(EventError),
    /// An empty array: nothing to store, most likely a client's bug.
    #[error("the batch is empty: send a JSON array of 1 to {MAX_BATCH_EVENTS} events")]
    Empty,
    /// More elements than [`MAX_BATCH_EVENTS`].
    #[error("too many events in one batch: {0}, at most {MAX_BATCH_EVENTS}; split it into several requests")]
    TooMany(usize),
}

/// Parses and validates one event from a request body.
pub fn parse_event(body: &[u8]) -> Result<NewEvent, EventError> {
    parse_event_json(std::str::from_utf8(body).map_err(|_| EventError::InvalidUtf8)?)
}

/// The elements of a `POST /events` body, each still raw JSON for
/// [`parse_batch_element`]: the body must be a JSON array of 1 to
/// [`MAX_BATCH_EVENTS`] values.
pub fn split_batch(body: &[u8]) -> Result<Vec<&RawValue>, BatchError> {
    let text = std::str::from_utf8(body).map_err(|_| BatchError::Body(EventError::InvalidUtf8))?;
    if !text.trim_start().starts_with('[') {
        return Err(BatchError::Body(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => EventError::Shape("the body must be a JSON array of events".into()),
            Err(e) => EventError::InvalidJson(e.to_string()),
        }));
    }
    let elements: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| BatchError::Body(json_error(e)))?;
    match elements.len() {
        0 => Err(BatchError::Empty),
        n if n > MAX_BATCH_EVENTS => Err(BatchError::TooMany(n)),
        _ => Ok(elements),
    }
}

/// Validates one element of a batch, by exactly the rules of a single event.
pub fn parse_batch_element(element: &RawValue) -> Result<NewEvent, EventError> {
    parse_event_json(element.get())
}

/// Validates one event given as JSON text: a whole `POST /event` body, or one
/// element of a batch.
fn parse_event_json(text: &str) -> Result<NewEvent, EventError> {
    if !text.trim_start().starts_with('{') {
        // serde would say "expected struct RawEvent"; say it in the client's terms.
        return match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Err(EventError::Shape("the event must be a JSON object".into())),
            Err(e) => Err(EventError::InvalidJson(e.to_string())),
        };
    }
    let raw: RawEvent = serde_json::from_str(text).map_err(json_error)?;

    let [site_id, event_type, path] = [raw.site_id, raw.event_type, raw.path]
        .into_iter()
        .zip(FIELD_LIMITS)
        .map(|(value, (field, max))| required_string(field, value, max))
        .collect::<Result<Vec<_>, _>>()?
        .try_into()
        .expect("three fields in, three out");
    // Optional, but when sent they follow the same rules (an empty one is a client's bug).
    let optional = |value: Option<Value>, (field, max): (&'static str, usize)| {
        value.filter(|v| !v.is_null()).map(|value| required_string(field, Some(value), max)).transpose()
    };
    let user_id = optional(raw.user_id, FIELD_LIMITS[3])?;
    let event_id = optional(raw.event_id, FIELD_LIMITS[4])?;

    let timestamp = match raw.timestamp {
        None => None,
        Some(Value::String(s)) => {
            let at = DateTime::parse_rfc3339_str(s.trim())
                .map_err(|_| EventError::BadTimestamp(s.chars().take(64).collect()))?;
            check_timestamp_window(at, DateTime::now())?;
            Some(at)
        }
        Some(other) => return Err(EventError::NotAString { field: "timestamp", found: json_type(&other) }),
    };

    let context = PageContext::parse(raw.url, raw.referrer, raw.screen_width, raw.props)?;

    Ok(NewEvent { site_id, event_type, path, user_id, event_id, timestamp, context })
}

/// The timestamps accepted when the server's clock reads `now`: from
/// [`EARLIEST_TIMESTAMP_MILLIS`] to [`MAX_TIMESTAMP_AHEAD_MILLIS`] after `now`.
pub fn timestamp_window(now: DateTime) -> std::ops::RangeInclusive<DateTime> {
    DateTime::from_millis(EARLIEST_TIMESTAMP_MILLIS)
        ..=DateTime::from_millis(now.timestamp_millis().saturating_add(MAX_TIMESTAMP_AHEAD_MILLIS))
}

/// Refuses a timestamp outside [`timestamp_window`] of `now`.
pub fn check_timestamp_window(at: DateTime, now: DateTime) -> Result<(), EventError> {
    let window = timestamp_window(now);
    if window.contains(&at) {
        return Ok(());
    }
    let text = |t: &DateTime| t.try_to_rfc3339_string().unwrap_or_else(|_| format!("{} ms", t.timestamp_millis()));
    Err(EventError::TimestampOutOfRange {
        found: text(&at),
        earliest: text(window.start()),
        latest: text(window.end()),
    })
}

/// A serde error in the client's terms: a wrong shape, or not JSON at all.
fn json_error(error: serde_json::Error) -> EventError {
    match error.classify() {
        serde_json::error::Category::Data => EventError::Shape(error.to_string()),
        _ => EventError::InvalidJson(error.to_string()),
    }
}

fn required_string(field: &'static str, value: Option<Value>, max: usize) -> Result<String, EventError> {
    let s = match value {
        None => return Err(EventError::Missing(field)),
        Some(Value::String(s)) => s,
        Some(other) => return Err(EventError::NotAString { field, found: json_type(&other) }),
    };
    if s.trim().is_empty() {
        return Err(EventError::Empty(field));
    }
    if s.len() > max {
        return Err(EventError::TooLong { field, max });
    }
    if s.chars().any(char::is_control) {
        return Err(EventError::ControlCharacter(field));
    }
    Ok(s)
}

/// A JSON value's type, as the error messages name it.
pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl NewEvent {
    /// The queue document: the event's fields, its id (kept as the processed
    /// event's id, which makes moving a batch idempotent), and `ingested_at`.
    /// Every stored event has a `user_id`: give an anonymous event its derived
    /// id first, or this refuses it as [`EventError::Missing`].
    pub fn into_queue_document(self, id: ObjectId, ingested_at: DateTime) -> Result<Document, EventError> {
        let user_id = self.user_id.ok_or(EventError::Missing("user_id"))?;
        let mut document = doc! {
            "_id": id,
            "site_id": self.site_id,
            "event_type": self.event_type,
            "path": self.path,
            "user_id": user_id,
            "timestamp": self.timestamp.unwrap_or(ingested_at),
            "ingested_at": ingested_at,
        };
        // Only when sent: the unique indexes on `(site_id, event_id)` are
        // partial, over the events that have one.
        if let Some(event_id) = self.event_id {
            document.insert("event_id", event_id);
        }
        if let Some(props) = self.context.props_document() {
            document.insert("props", props);
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"site_id":"site-001","event_type":"page_view","path":"/pricing","user_id":"user-123"}"#;

    #[test]
    fn accepts_a_valid_event_with_and_without_timestamp() {
        let e = parse_event(VALID.as_bytes()).unwrap();
        assert_eq!(
            (e.site_id.as_str(), e.event_type.as_str(), e.path.as_str(), e.user_id.as_deref()),
            ("site-001", "page_view", "/pricing", Some("user-123"))
        );
        assert_eq!(e.timestamp, None);

        let with_ts = VALID.replace('}', r#","timestamp":"2024-05-01T12:00:00.250+02:00"}"#);
        let e = parse_event(with_ts.as_bytes()).unwrap();
        let expected = DateTime::parse_rfc3339_str("2024-05-01T10:00:00.250Z").unwrap();
        assert_eq!(e.timestamp, Some(expected));
        assert_eq!(expected.timestamp_millis() % 1000, 250);
    }

    #[test]
    fn timestamps_outside_the_window_are_refused_with_the_window_in_the_message() {
        for far in ["0001-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"] {
            let body = VALID.replace('}', &format!(r#","timestamp":"{far}"}}"#));
            let error = parse_event(body.as_bytes()).expect_err(far).to_string();
            assert!(error.contains("outside the accepted window: from 2000-01-01T00:00:00Z"), "{far}: {error}");
        }
        let now = DateTime::parse_rfc3339_str("2026-06-01T12:00:00Z").unwrap();
        let at = |text: &str| DateTime::parse_rfc3339_str(text).unwrap();
        assert!(check_timestamp_window(at("2000-01-01T00:00:00Z"), now).is_ok(), "the window's first instant");
        assert!(check_timestamp_window(at("2026-06-02T12:00:00Z"), now).is_ok(), "exactly a day ahead");
        let ahead = check_timestamp_window(at("2026-06-02T12:00:00.001Z"), now).unwrap_err().to_string();
        assert!(ahead.contains("(2026-06-02T12:00:00Z)"), "names the window's end: {ahead}");
    }

    #[test]
    fn event_id_is_optional_bounded_and_queued_when_sent() {
        let with_id = VALID.replace('}', r#","event_id":"6f1c2d9e-8a8b-4b5e-9f0a-2c3d4e5f6a7b"}"#);
        let event = parse_event(with_id.as_bytes()).unwrap();
        assert_eq!(event.event_id.as_deref(), Some("6f1c2d9e-8a8b-4b5e-9f0a-2c3d4e5f6a7b"));
        let document = event.into_queue_document(ObjectId::new(), DateTime::now()).unwrap();
        assert_eq!(document.get_str("event_id"), Ok("6f1c2d9e-8a8b-4b5e-9f0a-2c3d4e5f6a7b"));

        let without = parse_event(VALID.as_bytes()).unwrap();
        assert_eq!(without.event_id, None);
        let document = without.into_queue_document(ObjectId::new(), DateTime::now()).unwrap();
        assert!(!document.contains_key("event_id"), "absent, not null: the unique index is partial");

        for (event_id, expected) in [
            (format!("\"{}\"", "e".repeat(65)), "event_id is too long: at most 64 bytes"),
            ("\" \"".to_string(), "event_id must not be empty"),
            ("42".to_string(), "event_id must be a string, got a number"),
        ] {
            let body = VALID.replace('}', &format!(r#","event_id":{event_id}}}"#));
            let error = parse_event(body.as_bytes()).expect_err(&body).to_string();
            assert!(error.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn page_context_is_optional_and_only_props_are_queued() {
        let body = VALID.replace(
            '}',
            r#","url":"https://example.com/pricing?utm_source=news","referrer":"","screen_width":390,"props":{"plan":"pro"}}"#,
        );
        let event = parse_event(body.as_bytes()).unwrap();
        assert_eq!(event.path, "/pricing", "path stays the path sent");
        assert_eq!(event.context.screen_width, Some(390));
        let document = event.into_queue_document(ObjectId::new(), DateTime::now()).unwrap();
        assert_eq!(document.get_document("props").unwrap().get_str("plan"), Ok("pro"));
        for never in ["url", "referrer", "screen_width"] {
            assert!(!document.contains_key(never), "{never} is read by enrichment, not stored");
        }
        let error = parse_event(VALID.replace('}', r#","url":"pricing"}"#).as_bytes()).unwrap_err().to_string();
        assert!(error.starts_with("url must be an absolute http(s) URL"), "{error}");
    }

    #[test]
    fn keeps_operator_like_strings_as_plain_values() {
        let body = r#"{"site_id":"$gt","event_type":"$where","path":"/a.b/$x","user_id":"{}"}"#;
        let e = parse_event(body.as_bytes()).unwrap();
        let document = e.into_queue_document(ObjectId::new(), DateTime::now()).unwrap();
        assert_eq!(document.get_str("site_id").unwrap(), "$gt");
    }

    #[test]
    fn user_id_is_optional_but_never_empty_when_sent() {
        for body in [
            r#"{"site_id":"s","event_type":"page_view","path":"/"}"#,
            r#"{"site_id":"s","event_type":"page_view","path":"/","user_id":null}"#,
        ] {
            let event = parse_event(body.as_bytes()).unwrap();
            assert_eq!(event.user_id, None, "{body}");
            let unfilled = event.clone().into_queue_document(ObjectId::new(), DateTime::now());
            assert_eq!(unfilled.unwrap_err(), EventError::Missing("user_id"), "never queued without a user_id");
            let filled = NewEvent { user_id: Some("0123abcd".into()), ..event };
            let document = filled.into_queue_document(ObjectId::new(), DateTime::now()).unwrap();
            assert_eq!(document.get_str("user_id").unwrap(), "0123abcd");
        }
        let error = parse_event(br#"{"site_id":"s","event_type":"e","path":"/","user_id":" "}"#).unwrap_err();
        assert_eq!(error, EventError::Empty("user_id"));
    }

    #[test]
    fn refuses_bad_bodies_with_a_message_naming_the_problem() {
        let long = "x".repeat(129);
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "not valid JSON"),
            ("{".into(), "not valid JSON"),
            ("[1,2]".into(), "must be a JSON object"),
            ("\"text\"".into(), "must be a JSON object"),
            (r#"{"event_type":"a","path":"/","user_id":"u"}"#.into(), "site_id is required"),
            (r#"{"site_id":null,"event_type":"a","path":"/","user_id":"u"}"#.into(), "site_id is required"),
            (
                r#"{"site_id":5,"event_type":"a","path":"/","user_id":"u"}"#.into(),
                "site_id must be a string, got a number",
            ),
            (
                r#"{"site_id":"s","event_type":["a"],"path":"/","user_id":"u"}"#.into(),
                "event_type must be a string, got an array",
            ),
            (
                r#"{"site_id":{"$gt":""},"event_type":"a","path":"/","user_id":"u"}"#.into(),
                "site_id must be a string, got an object",
            ),
            (
                r#"{"site_id":"s","event_type":"a","path":"/","user_id":true}"#.into(),
                "user_id must be a string, got a boolean",
            ),
            (r#"{"site_id":"s","event_type":"a","path":"","user_id":"u"}"#.into(), "path must not be empty"),
            (r#"{"site_id":"  ","event_type":"a","path":"/","user_id":"u"}"#.into(), "site_id must not be empty"),
            (
                format!(r#"{{"site_id":"{long}","event_type":"a","path":"/","user_id":"u"}}"#),
                "site_id is too long: at most 128 bytes",
            ),
            (
                r#"{"site_id":"s\u0000","event_type":"a","path":"/","user_id":"u"}"#.into(),
                "site_id must not contain control characters",
            ),
            (
                r#"{"site_id":"s","event_type":"a","path":"/","user_id":"u","timestamp":"yesterday"}"#.into(),
                "timestamp must be an RFC 3339",
            ),
            (
                r#"{"site_id":"s","event_type":"a","path":"/","user_id":"u","timestamp":1714557600}"#.into(),
                "timestamp must be a string, got a number",
            ),
            (r#"{"site_id":"s","event_type":"a","path":"/","user_id":"u","extra":1}"#.into(), "unknown field `extra`"),
            (
                r#"{"site_id":"s","site_id":"t","event_type":"a","path":"/","user_id":"u"}"#.into(),
                "duplicate field `site_id`",
            ),
        ];
        for (body, expected) in cases {
            let error = parse_event(body.as_bytes()).expect_err(&body).to_string();
            assert!(error.contains(expected), "body {body:?}: got {error:?}, expected {expected:?}");
        }
    }

    #[test]
    fn refuses_invalid_utf8_and_deep_nesting() {
        assert_eq!(parse_event(b"{\"site_id\":\"\xff\xfe\"}"), Err(EventError::InvalidUtf8));
        let deep = format!(r#"{{"site_id":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        let error = parse_event(deep.as_bytes()).unwrap_err().to_string();
        assert!(error.contains("recursion limit"), "{error}");
    }

    #[test]
    fn a_batch_is_an_array_whose_elements_follow_the_single_event_rules() {
        let body = format!(r#"[{VALID}, {{"site_id":"s","event_type":"e","path":"/x"}}]"#);
        let elements = split_batch(body.as_bytes()).unwrap();
        let events: Vec<NewEvent> = elements.iter().map(|raw| parse_batch_element(raw).unwrap()).collect();
        assert_eq!(events[0], parse_event(VALID.as_bytes()).unwrap());
        assert_eq!((events[1].path.as_str(), events[1].user_id.as_deref()), ("/x", None));

        // Every single-event refusal is the same for an element.
        for element in [r#"{"site_id":"s","site_id":"t","event_type":"e","path":"/"}"#, r#"{"path":5}"#, "[1]", "7"] {
            let batch = format!("[{element}]");
            let raw = split_batch(batch.as_bytes()).unwrap()[0];
            assert_eq!(parse_batch_element(raw), parse_event(element.as_bytes()), "{element}");
        }
    }

    #[test]
    fn a_batch_body_must_be_a_non_empty_array_within_the_limit() {
        let shape = |body: &str| split_batch(body.as_bytes()).unwrap_err().to_string();
        assert!(shape(VALID).contains("must be a JSON array of events"), "{}", shape(VALID));
        assert!(shape("[{},").contains("not valid JSON"), "{}", shape("[{},"));
        assert!(shape("").contains("not valid JSON"));
        assert_eq!(split_batch(b"[\xff]").unwrap_err(), BatchError::Body(EventError::InvalidUtf8));
        assert_eq!(split_batch(b" [ ] ").unwrap_err(), BatchError::Empty);
        let full = format!("[{}]", vec![VALID; MAX_BATCH_EVENTS].join(","));
        assert_eq!(split_batch(full.as_bytes()).unwrap().len(), MAX_BATCH_EVENTS);
        let over = format!("[{}]", vec!["{}"; MAX_BATCH_EVENTS + 1].join(","));
        assert_eq!(split_batch(over.as_bytes()).unwrap_err(), BatchError::TooMany(MAX_BATCH_EVENTS + 1));
    }

    #[test]
    fn the_documented_schema_states_the_parsers_limits() {
        let schema = serde_json::to_value(<EventBody as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["required"], serde_json::json!(["site_id", "event_type", "path"]));
        assert_eq!(schema["additionalProperties"], false);
        for (field, max) in FIELD_LIMITS {
            assert_eq!(schema["properties"][field]["maxLength"], max, "{field}");
            assert_eq!(schema["properties"][field]["minLength"], 1, "{field}");
        }
        assert_eq!(schema["properties"]["user_id"]["type"], serde_json::json!(["string", "null"]));
        assert_eq!(schema["properties"]["timestamp"]["format"], "date-time");
        assert_eq!(schema["properties"]["url"]["maxLength"], page_context::MAX_URL_BYTES);
        assert_eq!(schema["properties"]["screen_width"]["maximum"], page_context::MAX_SCREEN_WIDTH);
        assert_eq!(schema["properties"]["props"]["maxProperties"], page_context::MAX_PROPS);
        let example = serde_json::to_vec(&schema["examples"][0]).unwrap();
        assert!(parse_event(&example).is_ok(), "the example is a valid event");
    }

    #[test]
    fn queue_document_has_the_contract_fields() {
        let now = DateTime::from_millis(1_700_000_000_000);
        let id = ObjectId::new();
        let document = parse_event(VALID.as_bytes()).unwrap().into_queue_document(id, now).unwrap();
        let keys: Vec<&str> = document.keys().map(String::as_str).collect();
        assert_eq!(keys, ["_id", "site_id", "event_type", "path", "user_id", "timestamp", "ingested_at"]);
        assert_eq!(document.get_object_id("_id").unwrap(), id);
        assert_eq!(document.get_datetime("timestamp").unwrap(), &now, "absent timestamp is the server's time");
        assert_eq!(document.get_datetime("ingested_at").unwrap(), &now);
    }
}

/// Property tests: the parser never panics, and nothing but a well-formed event
/// of four plain strings (and a date) ever gets through. `PROPTEST_CASES` sets
/// how many inputs each property tries (CI runs the default 256; see
/// docs/reliability.md for the long run).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Any JSON value, biased towards our field names and operator-like keys.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("site_id".to_string()),
            Just("event_type".to_string()),
            Just("path".to_string()),
            Just("user_id".to_string()),
            Just("timestamp".to_string()),
            Just("event_id".to_string()),
            Just("props".to_string()),
            Just("url".to_string()),
            Just("$gt".to_string()),
            Just("$where".to_string()),
            "[a-z_$.]{0,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,40}".prop_map(Value::String),
            "\\PC{0,300}".prop_map(Value::String),
            Just(Value::String("2024-05-01T12:00:00Z".into())),
        ];
        leaf.prop_recursive(6, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..7)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn check_accepted(event: &NewEvent) {
        let strings = [
            Some(&event.site_id),
            Some(&event.event_type),
            Some(&event.path),
            event.user_id.as_ref(),
            event.event_id.as_ref(),
        ];
        for (value, (field, max)) in strings.into_iter().zip(FIELD_LIMITS).filter_map(|(v, limit)| Some((v?, limit))) {
            assert!(!value.trim().is_empty(), "{field} empty");
            assert!(value.len() <= max, "{field} too long");
            assert!(!value.chars().any(char::is_control), "{field} has a control character");
        }
        let identified = NewEvent { user_id: event.user_id.clone().or(Some("anonymous".into())), ..event.clone() };
        let document = identified.into_queue_document(ObjectId::new(), DateTime::now()).unwrap();
        let has_props = event.context.props_document().is_some();
        assert_eq!(document.len(), 7 + usize::from(event.event_id.is_some()) + usize::from(has_props));
        if let Ok(props) = document.get_document("props") {
            assert!(props.values().all(|value| matches!(value, mongodb::bson::Bson::String(_))), "{props:?}");
        }
        for (_, value) in document.iter().filter(|(key, _)| *key != "props") {
            assert!(
                matches!(
                    value,
                    mongodb::bson::Bson::String(_)
                        | mongodb::bson::Bson::DateTime(_)
                        | mongodb::bson::Bson::ObjectId(_)
                ),
                "only plain values reach the database: {value:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(event) = parse_event(&body) {
                check_accepted(&event);
            }
        }

        #[test]
        fn arbitrary_json_is_refused_unless_it_is_exactly_an_event(value in json_value()) {
            let body = serde_json::to_vec(&value).unwrap();
            match parse_event(&body) {
                Ok(event) => {
                    check_accepted(&event);
                    let object = value.as_object().expect("only objects are accepted");
                    for key in object.keys() {
                        prop_assert!(
                            ["site_id", "event_type", "path", "user_id", "event_id", "timestamp", "url", "referrer",
                             "screen_width", "props"].contains(&key.as_str())
                        );
                    }
                    prop_assert_eq!(object["site_id"].as_str(), Some(event.site_id.as_str()));
                }
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }

        #[test]
        fn well_formed_events_are_accepted_as_sent(
            site_id in "[a-zA-Z0-9_.-]{1,128}",
            event_type in "[a-z_]{1,64}",
            path in "/[a-zA-Z0-9/_.?=&%-]{0,200}",
            user_id in "[\\PC&&[^\\s]]{1,60}",
            millis in EARLIEST_TIMESTAMP_MILLIS..1_767_225_600_000, // 2000 to 2026
        ) {
            let timestamp = DateTime::from_millis(millis).try_to_rfc3339_string().unwrap();
            let body = serde_json::json!({
                "site_id": site_id, "event_type": event_type, "path": path, "user_id": user_id, "timestamp": timestamp
            });
            let event = parse_event(body.to_string().as_bytes()).unwrap();
            prop_assert_eq!(&event.site_id, &site_id);
            prop_assert_eq!(&event.path, &path);
            prop_assert_eq!(event.user_id.as_ref(), Some(&user_id));
            prop_assert_eq!(event.timestamp, Some(DateTime::from_millis(millis)));
        }
    }
}
