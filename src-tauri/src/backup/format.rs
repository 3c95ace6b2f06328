//! The backup file's format, shared by the backup, the restore and issue #17's
//! raw export: gzip'd NDJSON (one or more gzip members, read as one stream).
//! Line 1 is the [`Header`] (format name and version, when, by which app
//! version, the counts of what follows); every other line is
//! `{"kind": "event"|"site"|"setting", "doc": {...}}`, the document in
//! MongoDB's canonical Extended JSON, which keeps dates, ObjectIds and 64-bit
//! numbers exactly (relaxed JSON would turn a small `Int64` into an `Int32`).

use mongodb::bson::{Bson, Document};
use serde::{Deserialize, Serialize};

/// The `format` every backup's header names.
pub const FORMAT_NAME: &str = "analytics-desk-backup";
/// The version of the format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The longest line read (a document is at most 16 MB as BSON; its JSON a little more).
pub const MAX_LINE_BYTES: u64 = 64 * 1024 * 1024;

/// What a line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A raw event, as stored in `events` or in the queue.
    Event,
    /// A site's document in `sites` (`{_id: site_id, goals}`).
    Site,
    /// An engine setting: `{_id: NAME, value: "..."}`.
    Setting,
}

/// How many documents of each kind a file holds: the header announces them, so
/// a file cut between gzip members (which decompresses cleanly) is still caught.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Event lines.
    pub events: u64,
    /// Site lines.
    pub sites: u64,
    /// Setting lines.
    pub settings: u64,
}

impl Counts {
    /// Counts one more line of `kind`.
    pub fn add(&mut self, kind: Kind) {
        match kind {
            Kind::Event => self.events += 1,
            Kind::Site => self.sites += 1,
            Kind::Setting => self.settings += 1,
        }
    }
}

/// The first line of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT_NAME`]: tells a backup from any other gzip'd JSON.
    pub format: String,
    /// The format's version ([`FORMAT_VERSION`] when written by this build).
    pub version: u32,
    /// When the backup was written (RFC 3339).
    pub created_at: String,
    /// The version of the app that wrote it.
    pub app_version: String,
    /// The one site backed up, or none for all of them.
    pub site: Option<String>,
    /// The documents that follow.
    pub counts: Counts,
}

/// A line of the file as JSON text (no newline).
pub fn encode_line(kind: Kind, document: Document) -> String {
    let line = serde_json::json!({ "kind": kind, "doc": Bson::Document(document).into_canonical_extjson() });
    line.to_string()
}

/// Reads a line back: its kind and document, or what is wrong with it.
pub fn decode_line(line: &str) -> Result<(Kind, Document), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        kind: Kind,
        doc: serde_json::Value,
    }
    let line: Line = serde_json::from_str(line).map_err(|e| format!("not a backup line ({e})"))?;
    match Bson::try_from(line.doc) {
        Ok(Bson::Document(document)) => {
            check_document(line.kind, &document)?;
            Ok((line.kind, document))
        }
        Ok(_) => Err("its `doc` is not an object".to_string()),
        Err(error) => Err(format!("its `doc` is not valid Extended JSON ({error})")),
    }
}

/// Checks a document has what a restore needs of its kind: an event the
/// worker can place (an ObjectId `_id`, a string `site_id`, a date
/// `timestamp`), a site or setting named by a string `_id`.
fn check_document(kind: Kind, document: &Document) -> Result<(), String> {
    let missing = |field: &str, what: &str| format!("this {kind:?} lacks `{field}` ({what})").to_lowercase();
    match kind {
        Kind::Event => {
            document.get_object_id("_id").map_err(|_| missing("_id", "an ObjectId"))?;
            document.get_str("site_id").map_err(|_| missing("site_id", "a string"))?;
            document.get_datetime("timestamp").map_err(|_| missing("timestamp", "a date"))?;
        }
        Kind::Site => {
            document.get_str("_id").map_err(|_| missing("_id", "the site id"))?;
        }
        Kind::Setting => {
            document.get_str("_id").map_err(|_| missing("_id", "the setting's name"))?;
            document.get_str("value").map_err(|_| missing("value", "a string"))?;
        }
    }
    Ok(())
}

/// Reads the header line, or says why this is not a backup this build reads.
pub fn decode_header(line: &str) -> Result<Header, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|_| "its first line is not JSON".to_string())?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
        return Err(format!("its first line does not name the format {FORMAT_NAME}"));
    }
    let header: Header = serde_json::from_value(value).map_err(|e| format!("its header is incomplete ({e})"))?;
    if header.version > FORMAT_VERSION {
        return Err(format!(
            "it is format version {}, newer than this app reads ({FORMAT_VERSION}): update the app",
            header.version
        ));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use mongodb::bson::oid::ObjectId;
    use mongodb::bson::{DateTime, doc};

    use super::*;

    #[test]
    fn documents_round_trip_exactly_through_a_line() {
        let event = doc! {
            "_id": ObjectId::new(), "site_id": "s", "timestamp": DateTime::from_millis(1_234_567_890_123),
            "small_long": 5_i64, "int": 5_i32, "big": i64::MAX, "ratio": 0.1, "props": { "a": [1, "x"] },
        };
        let (kind, back) = decode_line(&encode_line(Kind::Event, event.clone())).unwrap();
        assert_eq!(kind, Kind::Event);
        assert_eq!(back, event);
        assert!(matches!(back.get("small_long"), Some(Bson::Int64(5))), "an Int64 stays an Int64");
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert!(decode_line("{").unwrap_err().contains("not a backup line"));
        assert!(decode_line(r#"{"kind":"visit","doc":{}}"#).unwrap_err().contains("not a backup line"));
        let no_site = encode_line(Kind::Event, doc! { "_id": ObjectId::new(), "timestamp": DateTime::now() });
        assert!(decode_line(&no_site).unwrap_err().contains("`site_id`"));
        let setting = encode_line(Kind::Setting, doc! { "_id": "PORT" });
        assert!(decode_line(&setting).unwrap_err().contains("`value`"));
    }

    #[test]
    fn only_our_headers_of_a_known_version_are_read() {
        let header = Header {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            created_at: "2026-01-01T00:00:00Z".into(),
            app_version: "0.1.0".into(),
            site: None,
            counts: Counts { events: 2, sites: 1, settings: 0 },
        };
        let line = serde_json::to_string(&header).unwrap();
        assert_eq!(decode_header(&line).unwrap(), header);
        assert!(decode_header(r#"{"format":"other"}"#).unwrap_err().contains("does not name"));
        let newer = line.replace("\"version\":1", "\"version\":2");
        assert!(decode_header(&newer).unwrap_err().contains("update the app"));
        assert!(decode_header("PK\u{3}\u{4}").unwrap_err().contains("not JSON"));
    }
}
