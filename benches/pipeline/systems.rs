//! The two systems compared (the seed and ours), the parts of one that can run, and
//! a value kept per system.

/// The system under measurement: the original Node design, or our service.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum System {
    Seed,
    Ours,
}

impl System {
    /// How progress lines, labels and logs name it.
    pub fn name(self) -> &'static str {
        match self {
            System::Seed => "seed",
            System::Ours => "ours",
        }
    }

    /// Both systems, in the order of `round`: the first goes first in odd rounds.
    pub fn in_turn(round: usize) -> [System; 2] {
        if round % 2 == 1 { [System::Seed, System::Ours] } else { [System::Ours, System::Seed] }
    }
}

/// Which parts of a system run: `analytics-service api|worker|all`; for the seed,
/// `server.js`, `worker/processor.js`, or both.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Api,
    Worker,
    All,
}

impl Part {
    /// Our service's subcommand for it (`analytics-service api`), which also names logs.
    pub fn name(self) -> &'static str {
        match self {
            Part::Api => "api",
            Part::Worker => "worker",
            Part::All => "all",
        }
    }

    /// Whether this part answers HTTP.
    pub fn serves_api(self) -> bool {
        matches!(self, Part::Api | Part::All)
    }

    /// Whether this part moves events from the queue.
    pub fn runs_worker(self) -> bool {
        matches!(self, Part::Worker | Part::All)
    }
}

/// Two values, one per system.
#[derive(Default)]
pub struct BySystem<T> {
    pub seed: T,
    pub ours: T,
}

impl<T> BySystem<T> {
    pub fn get(&self, system: System) -> &T {
        match system {
            System::Seed => &self.seed,
            System::Ours => &self.ours,
        }
    }

    pub fn get_mut(&mut self, system: System) -> &mut T {
        match system {
            System::Seed => &mut self.seed,
            System::Ours => &mut self.ours,
        }
    }
}
