//! Writing a backup: the queue's events, then `events`' (skipping those read
//! in the queue that the worker moved meanwhile, so each is stored once), the
//! sites, the settings; streamed through batch cursors into a gzip'd body, so a
//! million events take bounded memory (one cursor batch, plus the queued
//! events' ids: 12 bytes each, for the queue only). The header (which counts them) is then
//! written as the file's first gzip member and the body appended as the second;
//! the file appears under its name only once complete (a rename).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, RawDocumentBuf, doc};
use tracing::info;

use super::format::{Counts, FORMAT_NAME, FORMAT_VERSION, Header, Kind, encode_line};
use super::{BackupError, Setting};
use crate::sites::{SITES_COLLECTION, check_site_id};
use crate::storage::Store;

/// Documents asked of the server per cursor batch.
const CURSOR_BATCH: u32 = 1_000;

/// What a backup covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// One site's events and settings only (`--site`); none: every site.
    pub site: Option<String>,
}

/// Writes a backup of `store` (as `scope` says) with `settings` to `path`,
/// replacing any file there; returns its header.
pub async fn write_backup(
    store: &Store,
    path: &Path,
    scope: &Scope,
    settings: &[Setting],
) -> Result<Header, BackupError> {
    if let Some(site) = &scope.site {
        check_site_id(site).map_err(|_| BackupError::InvalidSite("must be a site id: not blank, at most 128 bytes"))?;
    }
    let body_path = sibling(path, ".body.partial");
    let whole_path = sibling(path, ".partial");
    let written = async {
        let counts = write_body(store, &body_path, scope, settings).await?;
        let header = Header {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            created_at: DateTime::now().try_to_rfc3339_string().unwrap_or_default(),
            app_version: env!("CARGO_PKG_VERSION").to_string(),
            site: scope.site.clone(),
            counts,
        };
        join(&header, &body_path, &whole_path).map_err(|source| io("write", &whole_path, source))?;
        std::fs::rename(&whole_path, path).map_err(|source| io("write", path, source))?;
        Ok(header)
    }
    .await;
    let _ = std::fs::remove_file(&body_path);
    if written.is_err() {
        let _ = std::fs::remove_file(&whole_path);
    }
    if let Ok(header) = &written {
        info!(path = %path.display(), events = header.counts.events, sites = header.counts.sites, "backup written");
    }
    written
}

/// Writes every document after the header to `body_path` (one gzip member).
async fn write_body(
    store: &Store,
    body_path: &Path,
    scope: &Scope,
    settings: &[Setting],
) -> Result<Counts, BackupError> {
    let file = owner_only_file(body_path).map_err(|source| io("write", body_path, source))?;
    let mut body =
        Body { out: GzEncoder::new(BufWriter::new(file), Compression::default()), counts: Counts::default() };
    let filter = match &scope.site {
        Some(site) => doc! { "site_id": site },
        None => doc! {},
    };
    // The queue first: an entry moved into `events` after this read is found
    // there too, and skipped by its `_id`; read the other way, it could be missed.
    let mut queued = HashSet::new();
    let queue = store.queue().clone_with_type::<RawDocumentBuf>();
    let mut cursor = queue.find(filter.clone()).sort(doc! { "_id": 1 }).batch_size(CURSOR_BATCH).await?;
    while let Some(raw) = cursor.try_next().await? {
        if let Ok(id) = raw.get_object_id("_id") {
            queued.insert(id);
        }
        body.write(Kind::Event, raw.to_document().map_err(mongodb::error::Error::from)?, body_path)?;
    }
    let events = store.events().clone_with_type::<RawDocumentBuf>();
    let mut cursor = events.find(filter).batch_size(CURSOR_BATCH).await?;
    while let Some(raw) = cursor.try_next().await? {
        if raw.get_object_id("_id").is_ok_and(|id: ObjectId| queued.contains(&id)) {
            continue;
        }
        body.write(Kind::Event, raw.to_document().map_err(mongodb::error::Error::from)?, body_path)?;
    }
    drop(queued);
    let sites = store.database().collection::<Document>(SITES_COLLECTION);
    let site_filter = match &scope.site {
        Some(site) => doc! { "_id": site },
        None => doc! {},
    };
    let mut cursor = sites.find(site_filter).batch_size(CURSOR_BATCH).await?;
    while let Some(site) = cursor.try_next().await? {
        body.write(Kind::Site, site, body_path)?;
    }
    for setting in settings {
        body.write(Kind::Setting, doc! { "_id": &setting.key, "value": &setting.value }, body_path)?;
    }
    let counts = body.counts;
    let mut file = body.out.finish().map_err(|source| io("write", body_path, source))?;
    file.flush().map_err(|source| io("write", body_path, source))?;
    Ok(counts)
}

/// The compressed body being written, and what it holds so far.
struct Body {
    out: GzEncoder<BufWriter<File>>,
    counts: Counts,
}

impl Body {
    fn write(&mut self, kind: Kind, document: Document, path: &Path) -> Result<(), BackupError> {
        let mut line = encode_line(kind, document);
        line.push('\n');
        self.out.write_all(line.as_bytes()).map_err(|source| io("write", path, source))?;
        self.counts.add(kind);
        Ok(())
    }
}

/// Writes the header as a gzip member of its own into `whole_path`, then
/// appends the body's member, and syncs the file.
fn join(header: &Header, body_path: &Path, whole_path: &Path) -> std::io::Result<()> {
    let mut whole = BufWriter::new(owner_only_file(whole_path)?);
    let mut header_member = GzEncoder::new(&mut whole, Compression::default());
    let mut line = serde_json::to_string(header).map_err(std::io::Error::other)?;
    line.push('\n');
    header_member.write_all(line.as_bytes())?;
    header_member.finish()?;
    std::io::copy(&mut File::open(body_path)?, &mut whole)?;
    whole.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// `path` with `suffix` added to its file name (a temporary file beside it).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> BackupError {
    BackupError::Io { action, path: path.to_path_buf(), source }
}

/// A new file only its owner can read: a backup holds every visitor's events.
fn owner_only_file(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}
