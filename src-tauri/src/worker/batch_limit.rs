//! How many entries the next batch takes ([`BatchLimit`]): `BATCH_SIZE`,
//! halved while batches are refused for their data, grown back after
//! successes; and the strikes of an entry refused on its own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mongodb::bson::Bson;

/// Full batches in a row at a shrunk size before the size doubles again: a
/// batch too large for one transaction is then met once per this many, not
/// every other batch.
const GROW_AFTER: u32 = 8;
/// Entries whose refusals are remembered at once: the lanes may each meet a
/// different bad entry in turn, so one slot would reset its count for ever.
const STRUCK_ENTRIES: usize = 64;
/// How long a batch refused as too large caps the size batches grow back to.
/// Growing straight back into the refused size costs dearly: on the test
/// server, a 1,250-event batch of 2 KiB paths was refused only after about 60 s
/// (its transaction filling the cache), once every 9 batches; the data that
/// was too large is usually still queued. After this long, growth may try again.
const SIZE_CEILING_FOR: Duration = Duration::from_secs(600);

/// How many entries the next batch takes, shared by a worker's lanes.
///
/// A batch the database refuses for its data (a transaction too large for its
/// cache, a command over its limits, an entry it cannot store) is refused
/// again on every retry: retrying it whole wedged the queue for good. So the
/// worker halves the batch it reads until one moves (a batch of 10,000 events
/// of 2 KiB paths exceeds the test server's transaction budget; 1,250 fit), and
/// grows it back after [`GROW_AFTER`] full batches. Halving down to one entry
/// also finds an entry that can never move, so its neighbours still do.
#[derive(Debug)]
pub(super) struct BatchLimit {
    /// `BATCH_SIZE`: the most a batch ever takes.
    configured: u32,
    /// What the next batch takes.
    current: AtomicU32,
    /// Full batches in a row at `current`.
    successes: AtomicU32,
    /// Entries refused alone, and how many times each.
    strikes: Mutex<Vec<(Bson, u32)>>,
    /// The most a batch grows back to after one was refused as too large, and when.
    size_ceiling: Mutex<Option<(u32, Instant)>>,
}

impl BatchLimit {
    /// A limit starting (and capped) at `configured` entries.
    pub(super) fn new(configured: u32) -> BatchLimit {
        let configured = configured.max(1);
        BatchLimit {
            configured,
            current: AtomicU32::new(configured),
            successes: AtomicU32::new(0),
            strikes: Mutex::new(Vec::new()),
            size_ceiling: Mutex::new(None),
        }
    }

    /// What the next batch takes.
    pub(super) fn current(&self) -> u32 {
        self.current.load(Ordering::SeqCst)
    }

    /// True while batches are smaller than `BATCH_SIZE`.
    pub(super) fn is_shrunk(&self) -> bool {
        self.current() < self.configured
    }

    /// A batch of `refused` entries was refused for its data: the next ones
    /// take at most half of it (at least one). When it was `too_large` (not
    /// one bad entry), batches grow back no further than that half for
    /// [`SIZE_CEILING_FOR`]. Returns the new size.
    pub(super) fn shrink_below(&self, refused: usize, too_large: bool) -> u32 {
        let half = u32::try_from(refused / 2).unwrap_or(u32::MAX).max(1);
        self.successes.store(0, Ordering::SeqCst);
        if too_large {
            let mut ceiling = self.size_ceiling.lock().unwrap_or_else(|e| e.into_inner());
            let lowest = ceiling.filter(|(_, at)| at.elapsed() < SIZE_CEILING_FOR).map_or(half, |(c, _)| c.min(half));
            *ceiling = Some((lowest, Instant::now()));
        }
        let previous = self.current.fetch_min(half, Ordering::SeqCst);
        previous.min(half)
    }

    /// A batch of `moved` entries moved: after [`GROW_AFTER`] full ones in a
    /// row, the size doubles (up to `BATCH_SIZE`).
    pub(super) fn moved(&self, moved: usize) {
        let current = self.current();
        let ceiling = match *self.size_ceiling.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((ceiling, at)) if at.elapsed() < SIZE_CEILING_FOR => ceiling.min(self.configured),
            _ => self.configured,
        };
        if current >= ceiling || moved < current as usize {
            return;
        }
        if self.successes.fetch_add(1, Ordering::SeqCst) + 1 >= GROW_AFTER {
            self.successes.store(0, Ordering::SeqCst);
            let _ = self.current.compare_exchange(
                current,
                current.saturating_mul(2).min(ceiling),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    /// Counts one more refusal of `id` on its own and returns how many so far.
    pub(super) fn strike(&self, id: &Bson) -> u32 {
        let mut strikes = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, count)) = strikes.iter_mut().find(|(struck, _)| struck == id) {
            *count += 1;
            return *count;
        }
        if strikes.len() >= STRUCK_ENTRIES {
            strikes.remove(0); // bounded: the oldest starts again if met again
        }
        strikes.push((id.clone(), 1));
        1
    }

    /// Forgets `id`'s refusals (it was set aside).
    pub(super) fn forgive(&self, id: &Bson) {
        self.strikes.lock().unwrap_or_else(|e| e.into_inner()).retain(|(struck, _)| struck != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_halve_the_batch_down_to_one_and_full_batches_grow_it_back() {
        let limit = BatchLimit::new(10_000);
        assert_eq!(limit.shrink_below(10_000, false), 5_000);
        assert_eq!(limit.shrink_below(10_000, false), 5_000, "a lane's older, larger batch shrinks no further");
        assert_eq!(limit.shrink_below(3, false), 1);
        assert_eq!(limit.shrink_below(1, false), 1, "never below one");
        for _ in 0..GROW_AFTER - 1 {
            limit.moved(1);
        }
        assert_eq!(limit.current(), 1);
        limit.moved(0);
        assert_eq!(limit.current(), 1, "a short batch is no sign the size fits");
        limit.moved(1);
        assert_eq!(limit.current(), 2);
        for _ in 0..20 * GROW_AFTER {
            let current = limit.current() as usize;
            limit.moved(current);
        }
        assert_eq!(limit.current(), 10_000, "capped at BATCH_SIZE");
        assert!(!limit.is_shrunk());
    }

    #[test]
    fn after_a_batch_too_large_batches_grow_back_only_to_the_size_that_fit() {
        let limit = BatchLimit::new(10_000);
        for refused in [10_000, 5_000, 2_500] {
            limit.shrink_below(refused, true);
        }
        assert_eq!(limit.current(), 1_250);
        for _ in 0..20 * GROW_AFTER {
            let current = limit.current() as usize;
            limit.moved(current);
        }
        assert_eq!(limit.current(), 1_250, "not back into the size refused");
        // One bad entry is not the size: halving to find it does not cap growth.
        let limit = BatchLimit::new(64);
        for refused in [64, 32, 16, 8, 4, 2] {
            limit.shrink_below(refused, false);
        }
        for _ in 0..20 * GROW_AFTER {
            let current = limit.current() as usize;
            limit.moved(current);
        }
        assert_eq!(limit.current(), 64);
    }

    #[test]
    fn strikes_count_each_entry_even_when_two_lanes_meet_two_in_turn() {
        let limit = BatchLimit::new(10);
        let (a, b) = (Bson::Int32(1), Bson::Int32(2));
        assert_eq!((limit.strike(&a), limit.strike(&b), limit.strike(&a), limit.strike(&b)), (1, 1, 2, 2));
        limit.forgive(&b);
        assert_eq!((limit.strike(&b), limit.strike(&a)), (1, 3));
        for n in 0..STRUCK_ENTRIES as i32 {
            limit.strike(&Bson::Int32(100 + n));
        }
        assert!(limit.strikes.lock().unwrap().len() <= STRUCK_ENTRIES, "bounded");
    }
}
