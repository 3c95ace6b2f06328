//! What each User-Agent is (a bot, or a visitor's software), remembered:
//! a site's visitors send few distinct User-Agents, so most events skip the
//! bot patterns and the parser. Bounded: when full it starts afresh, so a
//! client sending endless odd User-Agents costs memory only up to the bound.
//! Measured (release, this 2-core machine, 2026-11-30): ~14.6 µs to classify
//! a browser's User-Agent (woothee ~13.8 µs, the crawler patterns ~0.8 µs),
//! ~0.17 µs for a remembered one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::bots::{BotDetector, BotKind};
use super::user_agent::{self, Software};

/// Most User-Agents remembered at once.
pub const AGENT_CACHE_CAPACITY: usize = 4096;
/// Longest User-Agent remembered, in bytes (longer ones are classified each time).
const MAX_CACHED_AGENT_BYTES: usize = 512;

/// What a User-Agent says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Agent {
    /// A bot's kind; `None` for a visitor or a server-side sender.
    pub bot: Option<BotKind>,
    /// The visitor's software (empty for a bot).
    pub software: Software,
}

/// The bounded cache of [`Agent`]s by User-Agent.
#[derive(Debug, Default)]
pub struct AgentCache {
    detector: BotDetector,
    known: Mutex<HashMap<Box<str>, Arc<Agent>>>,
}

impl AgentCache {
    /// What `user_agent` is ("" for none), classified once and then remembered.
    pub fn get(&self, user_agent: &str) -> Arc<Agent> {
        if let Some(agent) = self.lock().get(user_agent) {
            return agent.clone();
        }
        let agent = Arc::new(self.classify(user_agent));
        if user_agent.len() <= MAX_CACHED_AGENT_BYTES {
            let mut known = self.lock();
            if known.len() >= AGENT_CACHE_CAPACITY {
                known.clear();
            }
            known.insert(user_agent.into(), agent.clone());
        }
        agent
    }

    /// Classifies without the cache.
    pub fn classify(&self, user_agent: &str) -> Agent {
        match self.detector.classify(user_agent) {
            Some(bot) => Agent { bot: Some(bot), software: Software::default() },
            None => Agent { bot: None, software: user_agent::parse(user_agent) },
        }
    }

    /// How many User-Agents are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<Agent>>> {
        // The map is always whole (inserts and clears do not panic midway).
        self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::ingest::enrich::user_agent::tests::{CHROME_WINDOWS, FIREFOX_LINUX, SAFARI_IPHONE};

    #[test]
    fn remembers_within_its_bound_and_answers_as_the_classifier() {
        let cache = AgentCache::default();
        let first = cache.get(CHROME_WINDOWS);
        assert!(Arc::ptr_eq(&first, &cache.get(CHROME_WINDOWS)), "the second answer is the remembered one");
        assert_eq!(*first, cache.classify(CHROME_WINDOWS));
        assert_eq!(cache.get("Googlebot/2.1").bot, Some(BotKind::Crawler));
        for i in 0..AGENT_CACHE_CAPACITY + 10 {
            cache.get(&format!("agent {i}"));
            assert!(cache.len() <= AGENT_CACHE_CAPACITY);
        }
        cache.get(&"x".repeat(MAX_CACHED_AGENT_BYTES + 1));
        assert!(cache.len() <= AGENT_CACHE_CAPACITY);
    }

    /// The cost of a User-Agent, parsed or remembered: prints ns per call (no
    /// timing assertion: machines differ). `cargo test --release --lib agent_cache -- --nocapture`.
    #[test]
    fn measure_the_cost_of_a_parse_and_of_a_cached_answer() {
        let agents = [CHROME_WINDOWS, FIREFOX_LINUX, SAFARI_IPHONE];
        let cache = AgentCache::default();
        let rounds = 300;
        let started = Instant::now();
        for _ in 0..rounds {
            for agent in agents {
                std::hint::black_box(cache.classify(agent));
            }
        }
        let parsed = started.elapsed().as_nanos() / (rounds * agents.len()) as u128;
        let started = Instant::now();
        for _ in 0..rounds {
            for agent in agents {
                std::hint::black_box(cache.get(agent));
            }
        }
        let cached = started.elapsed().as_nanos() / (rounds * agents.len()) as u128;
        println!("User-Agent: {parsed} ns per classification (bot patterns + woothee), {cached} ns per cached answer");
        assert_eq!(cache.len(), agents.len());
    }
}
