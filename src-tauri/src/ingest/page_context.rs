//! An event's optional page context (issue #14): `url`, `referrer`,
//! `screen_width` and `props`, validated by [`super::event`]'s parser with the
//! limits here, and documented in the OpenAPI schema from the same limits.
//! These are read by enrichment; of them, only `props` is stored as sent.

use mongodb::bson::Document;
use serde_json::Value;
use url::Url;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaFormat, SchemaType, Type};

use super::event::EventError;

/// Longest `url` and `referrer`, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Largest `screen_width` accepted, in CSS pixels.
pub const MAX_SCREEN_WIDTH: u32 = 100_000;
/// Most keys in `props`.
pub const MAX_PROPS: usize = 30;
/// Longest key of `props`, in bytes.
pub const MAX_PROP_KEY_BYTES: usize = 64;
/// Longest value of `props`, in bytes (numbers and booleans count as their text).
pub const MAX_PROP_VALUE_BYTES: usize = 256;

/// The page context of an event, as validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageContext {
    /// The page's full URL (absolute http or https); read for `hostname` and
    /// UTM parameters, never stored.
    pub url: Option<Url>,
    /// The page's referrer (an absolute URL); an empty one is no referrer.
    pub referrer: Option<Url>,
    /// The screen's width in CSS pixels, for the device when the User-Agent does not tell.
    pub screen_width: Option<u32>,
    /// Custom properties, in the order sent, values as strings.
    pub props: Option<Vec<(String, String)>>,
}

impl PageContext {
    /// Validates the fields as sent (each `None` when absent; null counts as absent).
    pub fn parse(
        url: Option<Value>,
        referrer: Option<Value>,
        screen_width: Option<Value>,
        props: Option<Value>,
    ) -> Result<PageContext, EventError> {
        let sent = |value: Option<Value>| value.filter(|v| !v.is_null());
        Ok(PageContext {
            url: sent(url).map(parse_url).transpose()?,
            referrer: sent(referrer).map(parse_referrer).transpose()?.flatten(),
            screen_width: sent(screen_width).map(parse_screen_width).transpose()?,
            props: sent(props).map(parse_props).transpose()?,
        })
    }

    /// `props` as a sub-document, when sent and not empty.
    pub fn props_document(&self) -> Option<Document> {
        let props = self.props.as_ref().filter(|props| !props.is_empty())?;
        Some(props.iter().map(|(key, value)| (key.clone(), value.clone().into())).collect())
    }
}

/// Adds the page context's fields to the OpenAPI schema of an event.
pub fn document_fields(event: ObjectBuilder) -> ObjectBuilder {
    let nullable = |kind: Type| -> SchemaType { [kind, Type::Null].into_iter().collect() };
    let url = ObjectBuilder::new()
        .schema_type(nullable(Type::String))
        .format(Some(SchemaFormat::Custom("uri".into())))
        .max_length(Some(MAX_URL_BYTES))
        .description(Some(
            "The page's full URL, absolute http(s). The server reads `hostname` and the `utm_*` parameters (and \
             `ref`) from it and never stores it; `path` stays the path counted.",
        ));
    let referrer =
        ObjectBuilder::new().schema_type(nullable(Type::String)).max_length(Some(MAX_URL_BYTES)).description(Some(
            "The page's referrer (`document.referrer`): an absolute URL, or empty for none. Gives `source`, \
             `referrer` and `channel`; a referrer on the page's own host is ignored.",
        ));
    let screen_width = ObjectBuilder::new()
        .schema_type(nullable(Type::Integer))
        .minimum(Some(0))
        .maximum(Some(MAX_SCREEN_WIDTH))
        .description(Some("The screen's width in CSS pixels, for the device when the User-Agent does not tell."));
    let value = ObjectBuilder::new()
        .schema_type([Type::String, Type::Number, Type::Boolean].into_iter().collect::<SchemaType>())
        .max_length(Some(MAX_PROP_VALUE_BYTES));
    let props = ObjectBuilder::new()
        .schema_type(nullable(Type::Object))
        .max_properties(Some(MAX_PROPS))
        .additional_properties(Some(AdditionalProperties::RefOr(value.into())))
        .description(Some(
            "Custom properties: at most 30 keys (1 to 64 bytes, not starting with `$` nor holding `.`), values \
             strings of at most 256 bytes; numbers and booleans are stored as their text, other values are refused.",
        ));
    event
        .property("url", url)
        .property("referrer", referrer)
        .property("screen_width", screen_width)
        .property("props", props)
}

fn parse_url(value: Value) -> Result<Url, EventError> {
    let text = string("url", value)?;
    let bad = |why: &str| EventError::BadField {
        field: "url",
        message: format!("must be an absolute http(s) URL such as https://example.com/pricing ({why})"),
    };
    let url = Url::parse(text.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad(&format!("got a {} URL without an http(s) host", url.scheme())));
    }
    Ok(url)
}

fn parse_referrer(value: Value) -> Result<Option<Url>, EventError> {
    let text = string("referrer", value)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    Url::parse(text.trim()).map(Some).map_err(|e| EventError::BadField {
        field: "referrer",
        message: format!("must be an absolute URL such as https://news.example.com/item, or empty ({e})"),
    })
}

/// A URL-like field's text: a string, within [`MAX_URL_BYTES`], without control characters.
fn string(field: &'static str, value: Value) -> Result<String, EventError> {
    let Value::String(text) = value else {
        return Err(EventError::NotAString { field, found: super::event::json_type(&value) });
    };
    if text.len() > MAX_URL_BYTES {
        return Err(EventError::TooLong { field, max: MAX_URL_BYTES });
    }
    if text.chars().any(char::is_control) {
        return Err(EventError::ControlCharacter(field));
    }
    Ok(text)
}

fn parse_screen_width(value: Value) -> Result<u32, EventError> {
    value.as_u64().and_then(|w| u32::try_from(w).ok()).filter(|w| *w <= MAX_SCREEN_WIDTH).ok_or_else(|| {
        EventError::BadField {
            field: "screen_width",
            message: format!("must be a whole number of CSS pixels from 0 to {MAX_SCREEN_WIDTH}, got {value}"),
        }
    })
}

fn parse_props(value: Value) -> Result<Vec<(String, String)>, EventError> {
    let bad = |message: String| EventError::BadField { field: "props", message };
    let Value::Object(map) = value else {
        return Err(bad(format!("must be an object of string values, got {}", super::event::json_type(&value))));
    };
    if map.len() > MAX_PROPS {
        return Err(bad(format!("has {} keys, at most {MAX_PROPS}", map.len())));
    }
    let mut props = Vec::with_capacity(map.len());
    for (key, value) in map {
        if key.trim().is_empty() || key.len() > MAX_PROP_KEY_BYTES {
            return Err(bad(format!("key {key:?} must be 1 to {MAX_PROP_KEY_BYTES} bytes")));
        }
        if key.starts_with('$') || key.contains('.') || key.chars().any(char::is_control) {
            return Err(bad(format!("key {key:?} must not start with `$` nor hold `.` or control characters")));
        }
        let text = match value {
            Value::String(text) => text,
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            other => {
                return Err(bad(format!(
                    "value of {key:?} must be a string (or a number or boolean), got {}",
                    super::event::json_type(&other)
                )));
            }
        };
        if text.len() > MAX_PROP_VALUE_BYTES {
            return Err(bad(format!("value of {key:?} is too long: at most {MAX_PROP_VALUE_BYTES} bytes")));
        }
        if text.chars().any(char::is_control) {
            return Err(bad(format!("value of {key:?} must not contain control characters")));
        }
        props.push((key, text));
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(fields: Value) -> Result<PageContext, EventError> {
        let field = |name: &str| fields.get(name).cloned();
        PageContext::parse(field("url"), field("referrer"), field("screen_width"), field("props"))
    }

    #[test]
    fn accepts_the_fields_within_their_limits() {
        let context = parse(json!({
            "url": "https://Example.com/pricing?utm_source=x", "referrer": "https://www.google.com/",
            "screen_width": 1280, "props": {"plan": "pro", "seats": 3, "trial": false}
        }))
        .unwrap();
        assert_eq!(context.url.unwrap().host_str(), Some("example.com"));
        assert_eq!(context.referrer.unwrap().host_str(), Some("www.google.com"));
        assert_eq!(context.screen_width, Some(1280));
        let props = context.props.unwrap();
        assert_eq!(
            props,
            [("plan".into(), "pro".into()), ("seats".into(), "3".into()), ("trial".into(), "false".into())]
        );
        assert_eq!(parse(json!({})).unwrap(), PageContext::default());
        let empty = parse(json!({"referrer": "", "url": null, "screen_width": null, "props": null})).unwrap();
        assert_eq!(empty, PageContext::default(), "an empty referrer and nulls are absent");
        assert_eq!(parse(json!({"screen_width": 0})).unwrap().screen_width, Some(0));
        assert_eq!(parse(json!({"screen_width": 100_000})).unwrap().screen_width, Some(100_000));
        let full: serde_json::Map<String, Value> = (0..30).map(|i| (format!("k{i}"), json!("v".repeat(256)))).collect();
        assert_eq!(parse(json!({"props": full})).unwrap().props.unwrap().len(), 30);
    }

    #[test]
    fn refuses_bad_fields_naming_them() {
        let many: serde_json::Map<String, Value> = (0..31).map(|i| (format!("k{i}"), json!("v"))).collect();
        let cases = [
            (json!({"url": "/pricing"}), "url must be an absolute http(s) URL"),
            (json!({"url": "ftp://example.com/x"}), "url must be an absolute http(s) URL"),
            (json!({"url": "mailto:a@example.com"}), "url must be an absolute http(s) URL"),
            (json!({"url": 5}), "url must be a string, got a number"),
            (json!({"url": format!("https://e.com/{}", "a".repeat(2048))}), "url is too long: at most 2048 bytes"),
            (json!({"referrer": "google"}), "referrer must be an absolute URL"),
            (json!({"referrer": "https://a.com/\n"}), "referrer must not contain control characters"),
            (json!({"screen_width": -1}), "screen_width must be a whole number of CSS pixels from 0 to 100000"),
            (json!({"screen_width": 100_001}), "screen_width must be a whole number"),
            (json!({"screen_width": 1.5}), "screen_width must be a whole number"),
            (json!({"screen_width": "1280"}), "screen_width must be a whole number"),
            (json!({"props": ["a"]}), "props must be an object of string values, got an array"),
            (json!({"props": many}), "props has 31 keys, at most 30"),
            (json!({"props": {"": "x"}}), "must be 1 to 64 bytes"),
            (json!({"props": {"k".repeat(65): "x"}}), "must be 1 to 64 bytes"),
            (json!({"props": {"$gt": "x"}}), "must not start with `$`"),
            (json!({"props": {"a.b": "x"}}), "nor hold `.`"),
            (
                json!({"props": {"k": {"$gt": ""}}}),
                "value of \"k\" must be a string (or a number or boolean), got an object",
            ),
            (json!({"props": {"k": null}}), "got null"),
            (json!({"props": {"k": "v".repeat(257)}}), "value of \"k\" is too long: at most 256 bytes"),
        ];
        for (fields, expected) in cases {
            let error = parse(fields.clone()).expect_err(&fields.to_string()).to_string();
            assert!(error.contains(expected), "{fields}: got {error:?}, expected {expected:?}");
        }
    }

    #[test]
    fn props_become_a_sub_document_of_strings() {
        let context = parse(json!({"props": {"plan": "pro", "n": 2}})).unwrap();
        let document = context.props_document().unwrap();
        assert_eq!(document.get_str("plan"), Ok("pro"));
        assert_eq!(document.get_str("n"), Ok("2"));
        assert_eq!(parse(json!({"props": {}})).unwrap().props_document(), None, "an empty object stores nothing");
    }
}
