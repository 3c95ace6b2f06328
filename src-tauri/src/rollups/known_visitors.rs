//! The visitors a worker has seen recorded by committed batches
//! ([`KnownVisitors`]), so that later batches skip their lookup.

use std::collections::HashSet;

use mongodb::bson::DateTime;

use super::deltas::Presence;

/// A visitor (presence document) as remembered by [`KnownVisitors`]: 128 bits
/// of the SHA-256 of its collection and `_id` (16 bytes each, where two
/// visitors sharing a digest is out of reach in practice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VisitorDigest {
    digest: u128,
    hourly: bool,
}

impl VisitorDigest {
    pub(super) fn of(collection: &str, presence: &Presence) -> VisitorDigest {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(collection.as_bytes());
        hasher.update([0x1f]);
        hasher.update(presence.id.as_bytes());
        let hash = hasher.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash[..16]);
        VisitorDigest { digest: u128::from_be_bytes(first), hourly: presence.hour.is_some() }
    }
}

/// The visitors this process has seen recorded by committed batches, so that
/// the next batches need not look them up again: in steady traffic nearly every
/// visitor of a batch is known, and the two lookups took a quarter of a batch's
/// time (measured).
///
/// Visitor documents are only ever deleted by retention (hours before its
/// cutoff, which are therefore never taken from memory: see
/// [`KnownVisitors::trust_hours_from`]) and by a rebuild (which runs before
/// any batch moves). Bounded: each kind (all-time, hourly) starts afresh past
/// [`KnownVisitors::CAPACITY`].
#[derive(Debug, Default)]
pub struct KnownVisitors {
    inner: std::sync::Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    all_time: HashSet<u128>,
    hourly: HashSet<u128>,
    /// Hourly visitors of hours before this are looked up, not remembered.
    trusted_from: Option<DateTime>,
}

impl KnownVisitors {
    /// How many visitors of each kind are remembered at most (about 2 MB each).
    pub const CAPACITY: usize = 100_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hourly visitors before `hour` are not taken from memory (retention may
    /// delete them, in any process); `None`: all are.
    pub fn trust_hours_from(&self, hour: Option<DateTime>) {
        self.lock().trusted_from = hour;
    }

    pub(super) fn holds(&self, visitor: VisitorDigest, hour: Option<DateTime>) -> bool {
        let known = self.lock();
        if !visitor.hourly {
            return known.all_time.contains(&visitor.digest);
        }
        let trusted = match (known.trusted_from, hour) {
            (Some(from), Some(hour)) => hour >= from,
            (Some(_), None) => false,
            (None, _) => true,
        };
        trusted && known.hourly.contains(&visitor.digest)
    }

    /// Remembers the visitors of a committed batch.
    pub fn remember(&self, recorded: Vec<VisitorDigest>) {
        let mut known = self.lock();
        for visitor in recorded {
            let set = if visitor.hourly { &mut known.hourly } else { &mut known.all_time };
            if set.len() >= Self::CAPACITY {
                set.clear();
            }
            set.insert(visitor.digest);
        }
    }

    /// How many visitors are remembered.
    pub fn len(&self) -> usize {
        let known = self.lock();
        known.all_time.len() + known.hourly.len()
    }

    /// True when no visitor is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every visitor.
    pub fn forget_all(&self) {
        let mut known = self.lock();
        known.all_time.clear();
        known.hourly.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollups::tests::event;
    use crate::rollups::{HOUR_MS, RollupDeltas};

    #[test]
    fn known_visitors_are_remembered_only_where_trusted_and_bounded() {
        let events = [event("a", "page_view", "/", "u1", 10), event("a", "page_view", "/", "u2", 2 * HOUR_MS)];
        let deltas = RollupDeltas::of(events.iter().map(|event| &**event));
        let [(visitors_name, visitors), (hourly_name, hourly)] = deltas.presences();
        let digests: Vec<VisitorDigest> = visitors
            .iter()
            .map(|p| VisitorDigest::of(visitors_name, p))
            .chain(hourly.iter().map(|p| VisitorDigest::of(hourly_name, p)))
            .collect();
        let known = KnownVisitors::default();
        let held = |known: &KnownVisitors| {
            let all_time = visitors.iter().filter(|p| known.holds(VisitorDigest::of(visitors_name, p), p.hour)).count();
            let hours = hourly.iter().filter(|p| known.holds(VisitorDigest::of(hourly_name, p), p.hour)).count();
            (all_time, hours)
        };
        assert_eq!(held(&known), (0, 0), "nothing before a commit");
        known.remember(digests.clone());
        assert_eq!(held(&known), (2, 2));
        // Retention's cutoff near: the hour before it is looked up again.
        known.trust_hours_from(Some(DateTime::from_millis(HOUR_MS)));
        assert_eq!(held(&known), (2, 1), "all-time visitors are never deleted; the early hour is not trusted");
        known.trust_hours_from(None);
        known.forget_all();
        assert!(known.is_empty());
        // Bounded: past the capacity a kind starts afresh.
        let many = (0..KnownVisitors::CAPACITY as u128 + 10).map(|n| VisitorDigest { digest: n, hourly: true });
        known.remember(many.collect());
        assert!(known.len() <= KnownVisitors::CAPACITY);
    }
}
