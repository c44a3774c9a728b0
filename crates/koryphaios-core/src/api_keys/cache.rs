//! The in-process parts of the verification hot path: a short-lived lookup cache and batched
//! usage counters, so verifying a key usually touches no database at all.
//!
//! Revocation semantics: a change made through this instance invalidates its cache entries at
//! once (next request); other instances see it when their entry expires, after at most [`TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::KeyLookup;
use crate::ids::{ApiKeyId, UserId};

/// Cached lookups by secret hash (of API keys, and of agent tokens): trusted for [`TTL`].
#[derive(Debug)]
pub struct LookupCache<T> {
    entries: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> Default for LookupCache<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

/// How long a lookup is trusted: the bound on cross-instance revocation delay.
pub const TTL: Duration = Duration::from_millis(900);

/// The cache of API key lookups.
pub type KeyCache = LookupCache<KeyLookup>;

impl<T: Clone> LookupCache<T> {
    /// How long a lookup is trusted: the bound on cross-instance revocation delay.
    pub const TTL: Duration = TTL;
    /// Beyond this many entries the cache is cleared (a flood of distinct keys cannot grow it).
    const MAX_ENTRIES: usize = 100_000;

    /// A fresh cached lookup for `hash`, if any.
    pub fn get(&self, hash: &str) -> Option<T> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .filter(|(fetched, _)| fetched.elapsed() < Self::TTL)
            .map(|(_, lookup)| lookup.clone())
    }

    /// Remembers a lookup read from the store by a query that started at `queried_at` (the
    /// entry ages from then, so the revocation bound holds however slow the query was).
    pub fn put(&self, hash: String, lookup: T, queried_at: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::MAX_ENTRIES {
            entries.retain(|_, (fetched, _)| fetched.elapsed() < Self::TTL);
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(hash, (queried_at, lookup));
    }

    /// Forgets every entry `stale` picks (after a change made on this instance).
    pub fn forget(&self, stale: impl Fn(&T) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (_, lookup)| !stale(lookup));
    }
}

impl LookupCache<KeyLookup> {
    /// Forgets every entry of one key (after revoke, roll or update on this instance).
    pub fn invalidate(&self, key: &ApiKeyId) {
        self.forget(|lookup| &lookup.key.id == key);
    }

    /// Forgets one key's entries and those of every key created by a key (after a revoke or
    /// roll, which reach a key's descendants; a descendant's ancestry is not cached, so every
    /// child key is re-read once).
    pub fn invalidate_with_children(&self, key: &ApiKeyId) {
        self.forget(|lookup| &lookup.key.id == key || lookup.key.parent_id.is_some());
    }

    /// Forgets every entry of one owner's keys (after an admin changed the owner).
    pub fn invalidate_owner(&self, owner: &UserId) {
        self.forget(|lookup| &lookup.key.user_id == owner);
    }
}

/// Usage counts gathered in memory and flushed in batches.
#[derive(Debug, Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<ApiKeyId, (u64, OffsetDateTime)>>,
}

impl UsageRecorder {
    /// Counts one use of `key` at `at`.
    pub fn record(&self, key: &ApiKeyId, at: OffsetDateTime) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending.entry(key.clone()).or_insert((0, at));
        entry.0 += 1;
        entry.1 = entry.1.max(at);
    }

    /// Takes everything counted so far.
    pub fn drain(&self) -> Vec<(ApiKeyId, u64, OffsetDateTime)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .drain()
            .map(|(key, (count, at))| (key, count, at))
            .collect()
    }

    /// Puts counts back after a failed flush, so none are lost.
    pub fn restore(&self, batch: Vec<(ApiKeyId, u64, OffsetDateTime)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (key, count, at) in batch {
            let entry = pending.entry(key).or_insert((0, at));
            entry.0 += count;
            entry.1 = entry.1.max(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_accumulates_drains_and_restores() {
        let usage = UsageRecorder::default();
        let key = ApiKeyId::generate();
        let t = OffsetDateTime::UNIX_EPOCH;
        usage.record(&key, t);
        usage.record(&key, t + time::Duration::seconds(5));
        let batch = usage.drain();
        assert_eq!(
            batch,
            vec![(key.clone(), 2, t + time::Duration::seconds(5))]
        );
        assert!(usage.drain().is_empty());
        usage.restore(batch);
        usage.record(&key, t);
        assert_eq!(usage.drain()[0].1, 3);
    }
}
