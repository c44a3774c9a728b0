//! The Redis limiter: one Lua script decides all of a request's checks in one round trip.
//!
//! Keys live under `krl:` and expire on their own. The script is loaded once and invoked with
//! `EVALSHA`; `redis::Script` reloads it on `NOSCRIPT` (after a Redis restart or `SCRIPT FLUSH`).
//! Multi-key scripts need every key on one node: use standalone Redis or Sentinel, not Cluster.

use std::time::Duration;

use async_trait::async_trait;
use koryphaios_core::ratelimit::{
    Decision, LayerResult, LimitCheck, LimiterError, Mode, RateLimiter, Rule,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

const SCRIPT: &str = include_str!("limit.lua");
const KEY_PREFIX: &str = "krl:";

/// Rate limits decided by Redis.
#[derive(Clone)]
pub struct RedisLimiter {
    connection: ConnectionManager,
    script: redis::Script,
    /// Test-only: decide at this time instead of the server's clock.
    fixed_now_ms: Option<i64>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("RedisLimiter").finish_non_exhaustive()
    }
}

fn error(e: redis::RedisError) -> LimiterError {
    LimiterError(e.to_string())
}

impl RedisLimiter {
    /// A limiter for `url` that connects lazily, so the service starts with Redis down.
    /// `timeout` bounds connecting and each response.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, LimiterError> {
        let client = redis::Client::open(url).map_err(error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_lazy_with_config(client, config).map_err(error)?;
        Ok(Self {
            connection,
            script: redis::Script::new(SCRIPT),
            fixed_now_ms: None,
        })
    }

    /// The same limiter deciding at a fixed time (for tests comparing implementations).
    pub fn at_fixed_time(&self, now_ms: i64) -> Self {
        Self {
            fixed_now_ms: Some(now_ms),
            ..self.clone()
        }
    }

    /// A round trip, for health checks and for noticing that Redis is back.
    pub async fn ping(&self) -> Result<(), LimiterError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(error)
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn decide(&self, checks: &[LimitCheck]) -> Result<Decision, LimiterError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(
            self.fixed_now_ms
                .map_or_else(String::new, |ms| ms.to_string()),
        );
        for check in checks {
            invocation.key(format!(
                "{KEY_PREFIX}{}:{}",
                check.layer.as_str(),
                check.key
            ));
            let mode = match check.mode {
                Mode::Consume => "c",
                Mode::Peek => "p",
                Mode::Force => "f",
                Mode::Refund => "r",
            };
            match check.rule {
                Rule::SlidingWindow {
                    limit,
                    window_ms,
                    bucket_ms,
                } => {
                    invocation
                        .arg("sw")
                        .arg(mode)
                        .arg(limit)
                        .arg(window_ms)
                        .arg(bucket_ms);
                }
                Rule::TokenBucket {
                    capacity,
                    refill_per_minute,
                } => {
                    invocation
                        .arg("tb")
                        .arg(mode)
                        .arg(capacity)
                        .arg(refill_per_minute)
                        .arg(0);
                }
            }
        }
        let mut connection = self.connection.clone();
        let raw: Vec<i64> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(error)?;
        if raw.len() != 1 + 5 * checks.len() {
            return Err(LimiterError(format!(
                "unexpected script reply of {} values",
                raw.len()
            )));
        }
        let results = checks
            .iter()
            .zip(raw[1..].chunks_exact(5))
            .map(|(check, values)| LayerResult {
                layer: check.layer,
                allowed: values[0] == 1,
                limit: u64::try_from(values[1]).unwrap_or(0),
                remaining: u64::try_from(values[2]).unwrap_or(0),
                reset_at_ms: values[3],
                retry_after_ms: values[4],
            })
            .collect();
        Ok(Decision {
            allowed: raw[0] == 1,
            results,
        })
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
