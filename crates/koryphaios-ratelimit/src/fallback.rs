//! Redis with an in-memory fallback (SPEC §4).
//!
//! While Redis answers within the timeout, it decides. The first failure or timeout switches to
//! the in-memory limiter at once (one log line), and a background probe switches back as soon as
//! Redis answers again (one log line). Requests never wait for Redis longer than the timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use koryphaios_core::ratelimit::{Decision, LimitCheck, LimiterError, MemoryLimiter, RateLimiter};

use crate::RedisLimiter;

/// How often Redis is probed while the fallback is in use.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How often idle in-memory keys are evicted.
const EVICT_INTERVAL: Duration = Duration::from_secs(30);

/// Redis first, memory when Redis is away.
#[derive(Debug)]
pub struct FallbackLimiter {
    redis: Option<RedisLimiter>,
    memory: MemoryLimiter,
    on_redis: AtomicBool,
    timeout: Duration,
}

impl FallbackLimiter {
    /// Limits in memory only (no Redis configured).
    pub fn memory_only(memory: MemoryLimiter) -> Self {
        Self {
            redis: None,
            memory,
            on_redis: AtomicBool::new(false),
            timeout: Duration::ZERO,
        }
    }

    /// Redis with the in-memory fallback; each Redis decision may take at most `timeout`.
    pub fn with_redis(redis: RedisLimiter, memory: MemoryLimiter, timeout: Duration) -> Self {
        Self {
            redis: Some(redis),
            memory,
            on_redis: AtomicBool::new(true),
            timeout,
        }
    }

    /// Whether Redis decides now.
    pub fn using_redis(&self) -> bool {
        self.redis.is_some() && self.on_redis.load(Ordering::Acquire)
    }

    /// Whether Redis is configured at all.
    pub fn has_redis(&self) -> bool {
        self.redis.is_some()
    }

    fn fall_back(&self, why: &str) {
        if self.on_redis.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                reason = why,
                "rate limiter: Redis unavailable, deciding in memory until it returns"
            );
        }
    }

    /// Switches back to Redis when it answers again (only while the fallback is in use).
    async fn probe_redis(&self) {
        let Some(redis) = self
            .redis
            .as_ref()
            .filter(|_| !self.on_redis.load(Ordering::Acquire))
        else {
            return;
        };
        let answered =
            tokio::time::timeout(self.timeout.max(Duration::from_millis(100)), redis.ping()).await;
        if matches!(answered, Ok(Ok(()))) && !self.on_redis.swap(true, Ordering::AcqRel) {
            tracing::info!("rate limiter: Redis is back, deciding in Redis again");
        }
    }

    /// Probes Redis while the fallback is in use, and evicts idle in-memory keys; runs until aborted.
    pub async fn maintain(self: Arc<Self>) {
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        let mut evict = tokio::time::interval(EVICT_INTERVAL);
        loop {
            tokio::select! {
                _ = probe.tick() => self.probe_redis().await,
                _ = evict.tick() => {
                    let evicted = self.memory.evict_idle();
                    if evicted > 0 {
                        tracing::debug!(evicted, "rate limiter: evicted idle in-memory keys");
                    }
                }
            }
        }
    }
}

#[async_trait]
impl RateLimiter for FallbackLimiter {
    async fn decide(&self, checks: &[LimitCheck]) -> Result<Decision, LimiterError> {
        if let Some(redis) = self
            .redis
            .as_ref()
            .filter(|_| self.on_redis.load(Ordering::Acquire))
        {
            match tokio::time::timeout(self.timeout, redis.decide(checks)).await {
                Ok(Ok(decision)) => return Ok(decision),
                Ok(Err(error)) => self.fall_back(&error.0),
                Err(_) => self.fall_back("timed out"),
            }
        }
        self.memory.decide(checks).await
    }

    fn backend(&self) -> &'static str {
        if self.using_redis() {
            "redis"
        } else {
            "memory"
        }
    }
}
