//! Restoring a backup: first the whole file is read and checked (header,
//! every line, the counts the header announces), so a foreign, damaged or
//! truncated file is refused before anything is stored; then it is read again
//! and applied.
//!
//! The rule for events: a restored event goes into the **queue**, with its
//! `_id`, and the worker moves it into `events` like any other, adding it to
//! the rollups, visits and daily figures in its batch transaction (its
//! `processed_at` and visit labels are dropped: the worker sets them again).
//! An event is skipped when its `_id` is already in the queue or in `events`,
//! or its `(site_id, event_id)` (where set) is; one moved by the worker
//! between those checks and the insert is refused by the worker by `_id`
//! (never counted twice). So restoring twice adds nothing, and a restore
//! into a database with a running worker is safe. Figures appear once the
//! worker has moved the restored events.
//!
//! Sites are upserted (a site's goals become the backup's). Settings are read
//! and returned, not applied: the port or database of another machine could
//! stop this one; the file never holds secrets, and nothing restores any.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::CollectionOptions;
use tracing::info;

use super::format::{Counts, Header, Kind, MAX_LINE_BYTES, decode_header, decode_line};
use super::{BackupError, Setting};
use crate::sites::SITES_COLLECTION;
use crate::storage::{Store, only_duplicate_keys};

/// Events checked and queued per step.
const RESTORE_CHUNK: usize = 1_000;

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    /// The file's header.
    pub header: Header,
    /// Events put in the queue (the worker moves them).
    pub events_restored: u64,
    /// Events already in the queue or in `events`, left out.
    pub events_skipped: u64,
    /// Sites upserted.
    pub sites: u64,
    /// The settings the file holds (not applied).
    pub settings: Vec<Setting>,
}

/// Checks the backup at `path`, then restores it into `store` (see the module's rule).
pub async fn restore_backup(store: &Store, path: &Path) -> Result<RestoreSummary, BackupError> {
    let header = check_file(path)?;
    let mut lines = Lines::open(path)?;
    lines.next_line()?; // the header, checked above
    let mut summary = RestoreSummary { header, events_restored: 0, events_skipped: 0, sites: 0, settings: Vec::new() };
    let mut chunk = Vec::with_capacity(RESTORE_CHUNK);
    while let Some(line) = lines.next_line()? {
        let (kind, document) = decode_line(&line).map_err(|reason| lines.damaged(reason))?;
        match kind {
            Kind::Event => {
                chunk.push(document);
                if chunk.len() == RESTORE_CHUNK {
                    queue_new_events(store, std::mem::take(&mut chunk), &mut summary).await?;
                }
            }
            Kind::Site => {
                let journaled = CollectionOptions::builder().write_concern(store.durable_write_concern().clone());
                let sites = store.database().collection_with_options::<Document>(SITES_COLLECTION, journaled.build());
                let id = document.get("_id").cloned().unwrap_or(Bson::Null);
                sites.replace_one(doc! { "_id": id }, document).upsert(true).await?;
                summary.sites += 1;
            }
            Kind::Setting => summary.settings.push(Setting {
                key: document.get_str("_id").unwrap_or_default().to_string(),
                value: document.get_str("value").unwrap_or_default().to_string(),
            }),
        }
    }
    queue_new_events(store, chunk, &mut summary).await?;
    info!(
        path = %path.display(),
        restored = summary.events_restored,
        skipped = summary.events_skipped,
        sites = summary.sites,
        "backup restored into the queue"
    );
    Ok(summary)
}

/// Reads the whole file and checks it: its header, every line, and that it
/// holds what the header announces. Returns the header.
pub fn check_file(path: &Path) -> Result<Header, BackupError> {
    let mut lines = Lines::open(path)?;
    let not_a_backup = |reason: String| BackupError::NotABackup { path: path.to_path_buf(), reason };
    let first = lines.next_line().map_err(|error| match error {
        BackupError::Damaged { reason, .. } => not_a_backup(reason),
        other => other,
    })?;
    let header = decode_header(&first.ok_or_else(|| not_a_backup("it is empty".into()))?).map_err(not_a_backup)?;
    let mut found = Counts::default();
    while let Some(line) = lines.next_line()? {
        let (kind, _) = decode_line(&line).map_err(|reason| lines.damaged(reason))?;
        found.add(kind);
    }
    if found != header.counts {
        return Err(lines.damaged(format!(
            "the file ends early: its header announces {} events, {} sites, {} settings, it holds {}, {}, {}",
            header.counts.events,
            header.counts.sites,
            header.counts.settings,
            found.events,
            found.sites,
            found.settings
        )));
    }
    Ok(header)
}

/// Queues the events of `chunk` that are not stored yet (see the module's rule).
async fn queue_new_events(
    store: &Store,
    chunk: Vec<Document>,
    summary: &mut RestoreSummary,
) -> Result<(), BackupError> {
    if chunk.is_empty() {
        return Ok(());
    }
    let ids: Vec<Bson> = chunk.iter().filter_map(|event| event.get("_id").cloned()).collect();
    // The queue before `events`: an entry the worker moves in between is then
    // seen in one or the other.
    let mut present: HashSet<ObjectId> = HashSet::new();
    let mut keys: HashSet<(String, String)> = HashSet::new();
    for collection in [store.queue(), store.events()] {
        let mut cursor = collection.find(doc! { "_id": { "$in": &ids } }).projection(doc! { "_id": 1 }).await?;
        while let Some(found) = cursor.try_next().await? {
            present.extend(found.get_object_id("_id").ok());
        }
        keys.extend(stored_event_ids(collection, &chunk).await?);
    }
    let total = chunk.len() as u64;
    let fresh: Vec<Document> = chunk
        .into_iter()
        .filter(|event| !event.get_object_id("_id").is_ok_and(|id| present.contains(&id)))
        .filter(|event| event_key(event).is_none_or(|key| !keys.contains(&key)))
        .map(|mut event| {
            event.remove("processed_at");
            event.remove("visit_id");
            event
        })
        .collect();
    let attempted = fresh.len() as u64;
    let refused = if fresh.is_empty() {
        0
    } else {
        match store.queue().insert_many(fresh).ordered(false).await {
            Ok(_) => 0,
            // Queued meanwhile (by a retry, or a restore running at the same time).
            Err(error) if only_duplicate_keys(&error) => match error.kind.as_ref() {
                ErrorKind::InsertMany(failure) => failure.write_errors.as_ref().map_or(0, |e| e.len() as u64),
                _ => 0,
            },
            Err(error) => return Err(error.into()),
        }
    };
    summary.events_restored += attempted - refused;
    summary.events_skipped += total - attempted + refused;
    Ok(())
}

/// The `(site_id, event_id)` of `chunk`'s events that `collection` already holds.
async fn stored_event_ids(
    collection: &mongodb::Collection<Document>,
    chunk: &[Document],
) -> Result<Vec<(String, String)>, BackupError> {
    let mut by_site: HashMap<String, Vec<String>> = HashMap::new();
    for (site, event_id) in chunk.iter().filter_map(event_key) {
        by_site.entry(site).or_default().push(event_id);
    }
    let mut stored = Vec::new();
    for (site, event_ids) in by_site {
        let filter = doc! { "site_id": &site, "event_id": { "$in": event_ids } };
        let mut cursor = collection.find(filter).projection(doc! { "event_id": 1 }).await?;
        while let Some(found) = cursor.try_next().await? {
            if let Ok(event_id) = found.get_str("event_id") {
                stored.push((site.clone(), event_id.to_string()));
            }
        }
    }
    Ok(stored)
}

/// An event's `(site_id, event_id)`, when it was sent with an `event_id`.
fn event_key(event: &Document) -> Option<(String, String)> {
    Some((event.get_str("site_id").ok()?.to_string(), event.get_str("event_id").ok()?.to_string()))
}

/// The lines of a backup, decompressed as they are read.
struct Lines<'a> {
    path: &'a Path,
    reader: BufReader<MultiGzDecoder<BufReader<File>>>,
    number: u64,
}

impl<'a> Lines<'a> {
    fn open(path: &'a Path) -> Result<Lines<'a>, BackupError> {
        let mut file =
            File::open(path).map_err(|source| BackupError::Io { action: "read", path: path.into(), source })?;
        let mut magic = [0u8; 2];
        let is_gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        if !is_gzip {
            let reason = "it is not gzip-compressed".to_string();
            return Err(BackupError::NotABackup { path: path.into(), reason });
        }
        let file = File::open(path).map_err(|source| BackupError::Io { action: "read", path: path.into(), source })?;
        let reader = BufReader::new(MultiGzDecoder::new(BufReader::new(file)));
        Ok(Lines { path, reader, number: 0 })
    }

    /// The next line (without its newline), none at the end.
    fn next_line(&mut self) -> Result<Option<String>, BackupError> {
        let mut bytes = Vec::new();
        self.number += 1;
        let read = (&mut self.reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut bytes)
            .map_err(|error| self.damaged(format!("the compressed data is cut short or corrupt ({error})")))?;
        if read == 0 {
            return Ok(None);
        }
        if bytes.last() != Some(&b'\n') {
            return Err(self.damaged("the last line is cut short (no end of line)".into()));
        }
        bytes.pop();
        String::from_utf8(bytes).map(Some).map_err(|_| self.damaged("the line is not UTF-8 text".into()))
    }

    fn damaged(&self, reason: String) -> BackupError {
        BackupError::Damaged { path: self.path.to_path_buf(), line: self.number, reason }
    }
}
