//! The recent visits a worker wrote, kept in memory so that its next batch
//! need not load them again (the load was a sixth of a live batch: 35 ms of
//! 220, measured).
//!
//! Exact because every write to `visits` takes the visits fence (see
//! [`super::visits`]) and the fence counts its takers: when this worker's
//! next batch takes it and finds the count one past the one its last commit
//! left, no one else (another worker, a retention, a rebuild) has written a
//! visit since, and the memory holds what the database does. Any other count,
//! or a commit whose outcome is unknown, forgets everything; the batch then
//! loads from the database as it always could. The fence document also holds
//! an `epoch` set when it is created, so a count started again (the document
//! cleared by a rebuild, or the database replaced) never passes for the old one.
//!
//! What the memory holds: every stored visit ending at or after its horizon,
//! for every visitor (so it can answer for visitors it never saw: they have
//! none). It is filled by one query over the visits ending after the horizon
//! the first time it is usable, then kept by each committed batch's writes;
//! the horizon follows the newest events, [`KEEP_MS`] behind them, so history
//! batches (events far back) load from the database and live ones do not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use mongodb::bson::oid::ObjectId;

use super::sessionize::Visit;

/// How far behind the newest event seen the memory keeps visits: live
/// traffic's batches (events of the last minutes) find theirs, and memory
/// holds only about two hours of visits.
pub const KEEP_MS: i64 = 2 * 3_600_000;

/// The visits fence as one taker found it (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceMark {
    /// Set when the fence document was created (`None`: made before epochs).
    pub epoch: Option<ObjectId>,
    /// Its takers so far, this one included.
    pub count: i64,
}

impl FenceMark {
    /// True when this take comes right after `previous` (no taker between).
    fn follows(&self, previous: Option<FenceMark>) -> bool {
        previous.is_some_and(|previous| previous.epoch == self.epoch && previous.count + 1 == self.count)
    }
}

/// See the module's comment.
#[derive(Debug, Default)]
pub struct RecentVisits {
    state: Mutex<State>,
    /// Batches answered from memory (filled first or not), for tests and logs.
    answered: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// The fence as this worker's last committed batch left it.
    fence: Option<FenceMark>,
    /// Every visit ending at or after this is held; `None`: not filled.
    horizon: Option<i64>,
    /// Visits by visitor key (`sv`).
    by_visitor: HashMap<String, Vec<Visit>>,
}

/// What the memory can do for a batch that took the fence with count `fence`.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Answer from memory.
    Held,
    /// Valid, but not filled: load the visits ending at or after the given
    /// time (all visitors), then [`RecentVisits::fill`].
    Fill(i64),
    /// Load from the database.
    Load,
}

/// The writes of one batch, to apply once it has committed.
#[derive(Debug, Default)]
pub struct Written {
    /// The fence as the batch's transaction took it.
    pub fence: Option<FenceMark>,
    /// Visits written (new or changed), by visitor key.
    pub visits: Vec<(String, Visit)>,
    /// Visits deleted (merged into another).
    pub deleted: Vec<ObjectId>,
    /// The newest event of the batch.
    pub newest: i64,
}

impl RecentVisits {
    /// Whether the visits near a batch (those ending at or after `from`) can
    /// come from memory, for a batch whose transaction took the fence as `fence`.
    pub fn lookup(&self, fence: FenceMark, from: i64) -> Lookup {
        let mut state = self.state();
        if !fence.follows(state.fence) {
            state.forget();
            return Lookup::Load;
        }
        let lookup = match state.horizon {
            Some(horizon) if horizon <= from => Lookup::Held,
            Some(_) => Lookup::Load,
            None => Lookup::Fill(from),
        };
        if lookup != Lookup::Load {
            self.answered.fetch_add(1, Ordering::Relaxed);
        }
        lookup
    }

    /// How many batches the memory answered (see [`RecentVisits::lookup`]).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Fills the memory with `visits` (every stored visit ending at or after
    /// `horizon`, read in the transaction that took the fence).
    pub fn fill(&self, horizon: i64, visits: Vec<(String, Visit)>) {
        let mut state = self.state();
        state.by_visitor.clear();
        for (visitor, visit) in visits {
            state.by_visitor.entry(visitor).or_default().push(visit);
        }
        state.horizon = Some(horizon);
    }

    /// The held visits of `visitor` that end at or after `from` and start at
    /// or before `to` (what the database query would answer).
    pub fn near(&self, visitor: &str, from: i64, to: i64) -> Vec<Visit> {
        let state = self.state();
        let held = state.by_visitor.get(visitor).map(Vec::as_slice).unwrap_or_default();
        held.iter().filter(|visit| visit.exit.at >= from && visit.entry.at <= to).cloned().collect()
    }

    /// A batch committed: its writes join the memory (which stays usable for
    /// the next batch only if it was before this one), and the horizon moves
    /// up behind the newest event.
    pub fn committed(&self, written: Written) {
        let mut state = self.state();
        let Some(fence) = written.fence else { return state.forget() };
        let was_current = fence.follows(state.fence) && state.horizon.is_some();
        state.fence = Some(fence);
        if !was_current {
            // Filled by nothing yet, or by another's writes: a batch that
            // took the memory's path had checked it; one that loaded did not.
            state.forget_visits();
            return;
        }
        let deleted: std::collections::HashSet<ObjectId> = written.deleted.into_iter().collect();
        for visits in state.by_visitor.values_mut() {
            visits.retain(|visit| !deleted.contains(&visit.id));
        }
        for (visitor, visit) in written.visits {
            let visits = state.by_visitor.entry(visitor).or_default();
            visits.retain(|held| held.id != visit.id);
            visits.push(visit);
        }
        let horizon = state.horizon.unwrap_or(i64::MIN).max(written.newest.saturating_sub(KEEP_MS));
        state.horizon = Some(horizon);
        state.by_visitor.retain(|_, visits| {
            visits.retain(|visit| visit.exit.at >= horizon);
            !visits.is_empty()
        });
    }

    /// A batch's commit may or may not have happened: forget everything.
    pub fn forget(&self) {
        self.state().forget();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn forget(&mut self) {
        self.fence = None;
        self.forget_visits();
    }

    fn forget_visits(&mut self) {
        self.horizon = None;
        self.by_visitor.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollups::sessionize::{Edge, Hit};

    fn visit(start: i64, end: i64) -> Visit {
        let hit = Hit {
            id: ObjectId::new(),
            at: start,
            path: "/".into(),
            page_view: true,
            hostname: None,
            attributes: Default::default(),
            anonymous: false,
        };
        let mut visit = Visit::of(&hit);
        visit.exit = Edge { at: end, id: ObjectId::new(), path: "/".into() };
        visit
    }

    const EPOCH: ObjectId = ObjectId::from_bytes([7; 12]);

    fn mark(count: i64) -> FenceMark {
        FenceMark { epoch: Some(EPOCH), count }
    }

    fn written(fence: i64, visits: Vec<(String, Visit)>, deleted: Vec<ObjectId>, newest: i64) -> Written {
        Written { fence: Some(mark(fence)), visits, deleted, newest }
    }

    #[test]
    fn answers_only_after_its_own_commit_and_a_fill_and_forgets_when_another_wrote() {
        let recent = RecentVisits::default();
        assert_eq!(recent.lookup(mark(1), 0), Lookup::Load, "nothing committed yet");
        recent.committed(written(1, vec![("a".into(), visit(0, 10))], vec![], 10));
        assert_eq!(recent.lookup(mark(2), 5), Lookup::Fill(5), "ours was the last write, but nothing held");
        let kept = visit(0, 10);
        recent.fill(5, vec![("a".into(), kept.clone())]);
        assert_eq!(recent.lookup(mark(2), 5), Lookup::Held);
        assert_eq!(recent.near("a", 5, 20), vec![kept.clone()]);
        assert_eq!(recent.near("b", 5, 20), vec![], "a visitor not held has no visit ending after the horizon");
        assert_eq!(recent.near("a", 11, 20), vec![], "ends before the range");
        assert_eq!(recent.near("a", 5, -1), vec![], "starts after the range");

        let mut longer = kept.clone();
        longer.exit.at = 30;
        let other = visit(20, 25);
        recent.committed(written(2, vec![("a".into(), longer.clone()), ("b".into(), other.clone())], vec![], 30));
        assert_eq!(recent.lookup(mark(3), 5), Lookup::Held);
        assert_eq!(recent.near("a", 5, 40), vec![longer.clone()], "the written visit replaces the held one");
        assert_eq!(recent.near("b", 5, 40), vec![other.clone()]);

        recent.committed(written(3, vec![], vec![other.id], 30));
        assert_eq!(recent.near("b", 5, 40), vec![], "deleted (merged into another)");

        assert_eq!(recent.lookup(mark(5), 5), Lookup::Load, "count 4 was another's: forgotten");
        assert_eq!(recent.near("a", 5, 40), vec![]);
        recent.committed(written(5, vec![("a".into(), visit(0, 40))], vec![], 40));
        assert_eq!(recent.lookup(mark(6), 5), Lookup::Fill(5), "filled again before use");
        recent.fill(5, vec![]);
        let recreated = FenceMark { epoch: Some(ObjectId::new()), count: 6 };
        assert_eq!(recent.lookup(recreated, 5), Lookup::Load, "the same count of a recreated fence is not ours");
    }

    #[test]
    fn the_horizon_follows_the_newest_event_and_older_batches_load() {
        let recent = RecentVisits::default();
        recent.committed(written(1, vec![], vec![], 0));
        assert_eq!(recent.lookup(mark(2), 0), Lookup::Fill(0));
        recent.fill(0, vec![("a".into(), visit(0, 100))]);
        let now = 10 * KEEP_MS;
        let fresh = visit(now - 10, now);
        recent.committed(written(2, vec![("b".into(), fresh.clone())], vec![], now));
        assert_eq!(recent.near("a", 0, now), vec![], "ended before the horizon: dropped");
        assert_eq!(recent.near("b", 0, now), vec![fresh]);
        assert_eq!(
            recent.lookup(mark(3), now - KEEP_MS - 1),
            Lookup::Load,
            "a batch reaching behind the horizon loads"
        );
        assert_eq!(recent.lookup(mark(3), now - KEEP_MS), Lookup::Held, "still valid: nothing else wrote");
        recent.forget();
        assert_eq!(recent.lookup(mark(4), now), Lookup::Load, "a commit of unknown outcome forgets");
    }
}
