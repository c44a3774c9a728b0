//! At most one audit record per key and interval for refusals that can come in floods (rate-limit
//! refusals, a stolen token hammering from the wrong network): a flood must not become a write
//! flood. Bounded: past [`RefusalThrottle::MAX_ENTRIES`] keys the stale ones are dropped, then all.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When each key's refusal was last audited.
#[derive(Debug)]
pub struct RefusalThrottle<K> {
    interval: Duration,
    seen: Mutex<HashMap<K, Instant>>,
}

impl<K: Eq + Hash + Clone> RefusalThrottle<K> {
    /// Beyond this many remembered keys the stale ones are dropped (then all of them).
    pub const MAX_ENTRIES: usize = 10_000;

    /// A throttle letting one refusal per key through every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a refusal for `key` should be audited now (and, if so, remembers it).
    pub fn first_in_a_while(&self, key: &K) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if seen.len() >= Self::MAX_ENTRIES {
            seen.retain(|_, at| now.duration_since(*at) < self.interval);
            if seen.len() >= Self::MAX_ENTRIES {
                seen.clear();
            }
        }
        match seen.get(key) {
            Some(at) if now.duration_since(*at) < self.interval => false,
            _ => {
                seen.insert(key.clone(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_key_per_interval() {
        let throttle = RefusalThrottle::new(Duration::from_secs(60));
        assert!(throttle.first_in_a_while(&"a"));
        assert!(!throttle.first_in_a_while(&"a"));
        assert!(throttle.first_in_a_while(&"b"));
        let none = RefusalThrottle::new(Duration::ZERO);
        assert!(none.first_in_a_while(&"a") && none.first_in_a_while(&"a"));
    }
}
