//! A batch read from the queue, readied for `events`: each entry stamped with
//! `processed_at` (kept as raw BSON, never decoded), and its `_id`s listed.

use mongodb::bson::{Bson, DateTime, RawDocument, RawDocumentBuf};
use tracing::info;

/// Readies a batch read from the queue for `events` (logging it): stamps each
/// entry with one `processed_at`, and returns their `_id`s in order.
pub(super) fn prepare_for_events(batch: &mut [RawDocumentBuf]) -> Vec<Bson> {
    info!(events = batch.len(), "Processing batch...");
    let processed_at = DateTime::now();
    for event in batch.iter_mut() {
        stamp_processed_at(event, processed_at);
    }
    batch.iter().filter_map(|event| id_of(event)).collect()
}

/// Adds `processed_at` to a queue entry read as raw BSON (replacing one the
/// entry may already hold: not from our API, but a field must not appear twice).
fn stamp_processed_at(event: &mut RawDocumentBuf, at: DateTime) {
    if matches!(event.get("processed_at"), Ok(Some(_)))
        && let Ok(mut document) = event.to_document()
    {
        document.insert("processed_at", at);
        if let Ok(stamped) = RawDocumentBuf::from_document(&document) {
            *event = stamped;
            return;
        }
    }
    event.append("processed_at", at);
}

/// The `_id`s of a batch's entries, in order.
pub(super) fn ids_of(batch: &[RawDocumentBuf]) -> Vec<Bson> {
    batch.iter().filter_map(|event| id_of(event)).collect()
}

/// A queue entry's `_id`.
fn id_of(event: &RawDocument) -> Option<Bson> {
    let id = event.get("_id").ok()??;
    Bson::try_from(id.to_raw_bson()).ok()
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;

    use super::*;

    #[test]
    fn processed_at_is_added_once() {
        let at = DateTime::from_millis(1_000);
        for queued in [doc! { "_id": 1, "path": "/" }, doc! { "_id": 2, "processed_at": "old", "path": "/" }] {
            let mut event = RawDocumentBuf::from_document(&queued).unwrap();
            stamp_processed_at(&mut event, at);
            let stamped = event.to_document().unwrap();
            assert_eq!(stamped.get_datetime("processed_at"), Ok(&at));
            assert_eq!(event.iter().filter(|e| e.as_ref().is_ok_and(|(k, _)| *k == "processed_at")).count(), 1);
            assert_eq!(stamped.get_str("path"), Ok("/"));
        }
    }
}
