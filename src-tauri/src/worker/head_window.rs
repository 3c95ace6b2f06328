//! The head window: where the worker looks for the queue's head, so a read
//! costs one batch, not the whole queue (see [`HeadWindow`]).

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, RawDocumentBuf, doc};

/// How many batches' worth of entries one read may return at most (the extra
/// ones tell how well the window fits; they are not moved).
pub(super) const READ_FACTOR: i64 = 2;
/// An `_id` this far in the future (by its timestamp) is past any real entry.
const FUTURE_SLACK_SECS: u32 = 3600;

/// Where the worker looks for the queue's head.
///
/// Some databases (SecantusDB among them) apply `sort` and `limit` only after
/// reading every matching entry, so "the oldest BATCH_SIZE" of a long queue
/// costs the whole queue (measured: 0.8-1.3 s per read at 300,000 queued,
/// 8 ms for the same 1,000 entries read by an `_id` range). The worker
/// therefore reads `_id <= upper`, with `upper` about one batch's worth of
/// `_id`s past the last batch, learned from what it reads. There is no lower
/// bound, so entries that arrive late with older `_id`s are still found (first).
/// Once `upper` is past the present, the window is dropped: the queue is short.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct HeadWindow {
    /// The highest `_id` (as a 96-bit number) the next read takes; none: all.
    pub(super) upper: Option<u128>,
    /// How far past the last batch the window reaches.
    pub(super) span: u128,
}

impl HeadWindow {
    /// The filter of the next read: within the window, and past `after` if given.
    pub(super) fn filter(&self, after: Option<u128>) -> Document {
        let mut range = Document::new();
        if let Some(after) = after {
            range.insert("$gt", object_id(after));
        }
        if let Some(upper) = self.upper {
            range.insert("$lte", object_id(upper));
        }
        if range.is_empty() {
            doc! {}
        } else {
            doc! { "_id": range }
        }
    }

    /// Sets the next window from a read (sorted by `_id`) and the batch size.
    pub(super) fn learn(&mut self, read: &[RawDocumentBuf], batch_size: usize, now: DateTime) {
        let ids: Option<Vec<u128>> = read.iter().map(|d| d.get_object_id("_id").ok().map(id_number)).collect();
        let Some(ids) = ids else {
            // Not ObjectIds (written by something else): no window.
            *self = HeadWindow::default();
            return;
        };
        let bounded = self.upper.is_some();
        let next = match (ids.first(), ids.len() < batch_size) {
            // Empty: if bounded, widen (the queue may go on past the window).
            (None, _) => match self.upper {
                Some(upper) => {
                    self.span = self.span.max(1).saturating_mul(2);
                    upper.saturating_add(self.span)
                }
                None => return,
            },
            (Some(&first), short) => {
                let last = ids[ids.len().min(batch_size) - 1];
                // The span a batch covered, with room to spare (a window of
                // exactly that span holds one entry short of a batch); wider
                // when the window came back short, narrower when it held far more.
                let covered = (last - first).max(1);
                let span = if short && bounded {
                    self.span.max(covered) * 2
                } else if ids.len() >= batch_size * 2 {
                    covered + covered / 4
                } else {
                    covered + covered / 2
                };
                self.span = span;
                last.saturating_add(span)
            }
        };
        let future = u128::from(now.timestamp_millis().max(0) as u64 / 1000 + u64::from(FUTURE_SLACK_SECS));
        if next >> 64 > future {
            *self = HeadWindow::default();
        } else {
            self.upper = Some(next);
        }
    }
}

/// An ObjectId as a number, so windows can be added to it.
pub(super) fn id_number(id: ObjectId) -> u128 {
    id.bytes().iter().fold(0u128, |n, b| (n << 8) | u128::from(*b))
}

/// The ObjectId of a number (its low 96 bits).
fn object_id(n: u128) -> ObjectId {
    let bytes = n.to_be_bytes();
    let mut id = [0u8; 12];
    id.copy_from_slice(&bytes[4..]);
    ObjectId::from_bytes(id)
}

#[cfg(test)]
mod tests {
    use mongodb::bson::Bson;

    use super::*;

    fn entry(id: impl Into<Bson>) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&doc! { "_id": id.into() }).expect("a valid document")
    }

    fn ids(n: usize) -> Vec<RawDocumentBuf> {
        (0..n).map(|_| entry(ObjectId::new())).collect()
    }

    #[test]
    fn object_ids_round_trip_through_numbers() {
        let id = ObjectId::new();
        assert_eq!(object_id(id_number(id)), id);
        assert!(id_number(ObjectId::new()) > id_number(id), "later ids are larger numbers");
    }

    #[test]
    fn the_window_follows_the_head_and_drops_once_past_the_present() {
        let now = DateTime::now();
        let mut window = HeadWindow::default();
        assert_eq!(window.filter(None), doc! {}, "unbounded at first");

        // A full read of a long queue: bound the next read past the batch.
        let read = ids(20);
        window.learn(&read, 10, now);
        let upper = window.upper.expect("bounded after a full read");
        assert!(upper > id_number(read[9].get_object_id("_id").unwrap()));

        // A short read in a bounded window: widen.
        let span = window.span;
        window.learn(&ids(3), 10, now);
        assert!(window.span >= span * 2);

        // An empty bounded read keeps widening until past the present, then drops.
        for _ in 0..200 {
            if window.upper.is_none() {
                break;
            }
            window.learn(&[], 10, now);
        }
        assert!(window.upper.is_none(), "dropped once the window reaches the future");
    }

    #[test]
    fn a_steady_queue_takes_one_read_per_batch() {
        // Entries evenly spaced, as a queue filled at a steady rate; the first
        // read is unbounded, every later batch must come from a single read.
        let base = id_number(ObjectId::new());
        let queue: Vec<u128> = (0..10_000u128).map(|i| base + i * 7919).collect();
        let batch_size = 100;
        let mut window = HeadWindow::default();
        let (mut head, mut reads) = (0, 0);
        for batch in 0..50 {
            let reads_before = reads;
            loop {
                reads += 1;
                let read: Vec<RawDocumentBuf> = queue[head..]
                    .iter()
                    .take_while(|&&id| window.upper.is_none_or(|upper| id <= upper))
                    .take(batch_size * READ_FACTOR as usize)
                    .map(|&id| entry(object_id(id)))
                    .collect();
                let bounded = window.upper.is_some();
                window.learn(&read, batch_size, DateTime::now());
                if read.len() >= batch_size || !bounded {
                    break;
                }
            }
            head += batch_size;
            if batch > 0 {
                assert_eq!(reads - reads_before, 1, "batch {batch} needed a second read");
            }
        }
    }

    #[test]
    fn ids_that_are_not_object_ids_turn_the_window_off() {
        let mut window = HeadWindow { upper: Some(1), span: 1 };
        window.learn(&[entry("custom")], 10, DateTime::now());
        assert_eq!(window.filter(None), doc! {});
    }
}
