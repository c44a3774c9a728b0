//! Rate limiting (SPEC §4): the policy model, the [`RateLimiter`] port, and the in-memory
//! implementation whose semantics the Redis one mirrors exactly.
//!
//! Two rules, both O(1) memory per key:
//! - **Sliding window** of `limit` per `window`, kept as counts in `buckets` sub-windows. A check
//!   counts every sub-window that overlaps the last `window` *in full*, so the estimate never falls
//!   below the true count: no window of length `window` ever sees more than `limit` admitted
//!   requests (at worst, requests of the oldest sub-window are counted up to one sub-window longer).
//! - **Token bucket** of `capacity` refilled at `refill_per_minute`, for bursts.
//!
//! All checks of one request are decided together and all-or-nothing: a request refused by one
//! layer consumes nothing from the others.

mod memory;

pub use memory::MemoryLimiter;

use std::fmt::Debug;

use async_trait::async_trait;

/// The layers of SPEC §4 (and the failed-login counter), as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Every request, per client IP.
    Ip,
    /// Login, register and refresh, per client IP.
    Auth,
    /// Failed logins, per username.
    LoginFailure,
    /// Every authenticated request, per user or API key, by tier.
    Tier,
    /// Sensitive operations, per principal, as a token bucket.
    Sensitive,
}

impl Layer {
    /// The label used in metrics, logs and Redis keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Ip => "ip",
            Layer::Auth => "auth",
            Layer::LoginFailure => "login_failure",
            Layer::Tier => "tier",
            Layer::Sensitive => "sensitive",
        }
    }
}

/// How a key is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// At most `limit` per `window_ms`, counted in sub-windows of `bucket_ms`.
    SlidingWindow {
        /// Requests allowed per window.
        limit: u64,
        /// The window, in milliseconds.
        window_ms: i64,
        /// The sub-window, in milliseconds (a divisor of the window).
        bucket_ms: i64,
    },
    /// Bursts up to `capacity`, refilled at `refill_per_minute`.
    TokenBucket {
        /// The most tokens the bucket holds.
        capacity: u64,
        /// Tokens added per minute.
        refill_per_minute: u64,
    },
}

impl Rule {
    /// A sliding window of `limit` per `window_ms`, in 10 sub-windows.
    pub fn per_window(limit: u64, window_ms: i64) -> Self {
        let window_ms = window_ms.max(10);
        Rule::SlidingWindow {
            limit,
            window_ms,
            bucket_ms: (window_ms / 10).max(1),
        }
    }
}

/// Whether a check consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Count this request if every check of the call allows it.
    Consume,
    /// Only look (e.g. "has this username too many failures?").
    Peek,
    /// Count regardless (e.g. a failed login that already happened).
    Force,
    /// Give back one earlier `Consume` (e.g. a login reserved a failure slot, then succeeded):
    /// the newest counted unit of the window, or one token of the bucket. Always allowed.
    Refund,
}

/// One layer's check for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCheck {
    /// Which layer.
    pub layer: Layer,
    /// Whose counter (`ip:1.2.3.4`, `key:key_…`, …); the limiter namespaces it.
    pub key: String,
    /// The rule.
    pub rule: Rule,
    /// Consume, peek or force.
    pub mode: Mode,
}

/// One layer's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerResult {
    /// Which layer.
    pub layer: Layer,
    /// Whether this layer allows the request.
    pub allowed: bool,
    /// The rule's limit (window limit or bucket capacity).
    pub limit: u64,
    /// What is left after this request.
    pub remaining: u64,
    /// When the counter next frees capacity (window) or is full again (bucket), Unix ms.
    pub reset_at_ms: i64,
    /// When refused: how long until a retry can succeed, in ms.
    pub retry_after_ms: i64,
}

/// The verdict for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether every layer allows it.
    pub allowed: bool,
    /// Each layer's verdict, in the order of the checks.
    pub results: Vec<LayerResult>,
}

impl Decision {
    /// The layer to report in headers: the first refusing one, else the one with least left.
    pub fn tightest(&self) -> Option<&LayerResult> {
        self.results
            .iter()
            .find(|r| !r.allowed)
            .or_else(|| self.results.iter().min_by_key(|r| r.remaining))
    }
}

/// The rate limiter could not decide (the caller falls back).
#[derive(Debug, Clone, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterError(pub String);

/// Decides rate limits for a request's checks, atomically.
#[async_trait]
pub trait RateLimiter: Send + Sync + Debug {
    /// Decides every check together: all-or-nothing.
    async fn decide(&self, checks: &[LimitCheck]) -> Result<Decision, LimiterError>;
    /// The backend deciding now (`redis`, `memory`).
    fn backend(&self) -> &'static str;
}

/// The per-rule arithmetic shared by every implementation (the Redis script mirrors it).
pub mod arithmetic {
    /// State of a sliding window: counts by sub-window index.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct WindowState {
        /// (sub-window index, count), any order.
        pub buckets: Vec<(i64, u64)>,
    }

    /// A sliding-window verdict before consuming.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct WindowView {
        /// Requests counted in the window (conservatively).
        pub count: u64,
        /// The oldest counted sub-window, if any.
        pub first: Option<i64>,
        /// The sub-window `now` falls in.
        pub current: i64,
        /// The oldest sub-window still overlapping the window.
        pub oldest: i64,
    }

    /// Looks at a window at `now_ms`.
    pub fn view_window(
        state: &WindowState,
        now_ms: i64,
        window_ms: i64,
        bucket_ms: i64,
    ) -> WindowView {
        let oldest = (now_ms - window_ms).div_euclid(bucket_ms);
        let current = now_ms.div_euclid(bucket_ms);
        let mut count = 0u64;
        let mut first: Option<i64> = None;
        for &(index, n) in &state.buckets {
            if index >= oldest {
                count += n;
                first = Some(first.map_or(index, |f| f.min(index)));
            }
        }
        WindowView {
            count,
            first,
            current,
            oldest,
        }
    }

    /// Takes back one unit from the newest sub-window of the window that has any; false when the
    /// window is empty. `oldest` is the oldest sub-window still overlapping the window.
    pub fn refund_window(state: &mut WindowState, oldest: i64) -> bool {
        state
            .buckets
            .retain(|(index, count)| *index >= oldest && *count > 0);
        let newest = state.buckets.iter_mut().max_by_key(|(index, _)| *index);
        let refunded = match newest {
            Some(bucket) => {
                bucket.1 -= 1;
                true
            }
            None => false,
        };
        state.buckets.retain(|(_, count)| *count > 0);
        refunded
    }

    /// (remaining, reset_at_ms, retry_after_ms) of a window after `consumed`.
    pub fn window_report(
        view: &WindowView,
        consumed: bool,
        allowed: bool,
        limit: u64,
        now_ms: i64,
        window_ms: i64,
        bucket_ms: i64,
    ) -> (u64, i64, i64) {
        let count = view.count + u64::from(consumed);
        let first = if consumed {
            Some(view.first.map_or(view.current, |f| f.min(view.current)))
        } else {
            view.first
        };
        let reset_at = first.map_or(now_ms + window_ms, |f| (f + 1) * bucket_ms + window_ms);
        let retry_after = if allowed {
            0
        } else {
            (reset_at - now_ms).max(1)
        };
        (limit.saturating_sub(count), reset_at, retry_after)
    }

    /// State of a token bucket.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct BucketState {
        /// Tokens at `ts_ms`.
        pub tokens: f64,
        /// When `tokens` was computed.
        pub ts_ms: i64,
    }

    /// Tokens per millisecond.
    pub fn refill_per_ms(refill_per_minute: u64) -> f64 {
        refill_per_minute as f64 / 60_000.0
    }

    /// Tokens available at `now_ms`.
    pub fn bucket_tokens(state: Option<BucketState>, now_ms: i64, capacity: u64, rate: f64) -> f64 {
        match state {
            None => capacity as f64,
            Some(BucketState { tokens, ts_ms }) if now_ms > ts_ms => {
                (tokens + (now_ms - ts_ms) as f64 * rate).min(capacity as f64)
            }
            Some(BucketState { tokens, .. }) => tokens,
        }
    }

    /// (remaining, reset_at_ms, retry_after_ms) of a bucket with `tokens` before consuming.
    pub fn bucket_report(
        tokens: f64,
        consumed: bool,
        allowed: bool,
        capacity: u64,
        rate: f64,
        now_ms: i64,
    ) -> (u64, i64, i64) {
        let after = if consumed { tokens - 1.0 } else { tokens };
        let reset_at = if rate > 0.0 {
            now_ms + ((capacity as f64 - after) / rate).ceil() as i64
        } else {
            i64::MAX
        };
        let retry_after = if allowed {
            0
        } else if rate > 0.0 {
            ((1.0 - tokens) / rate).ceil().max(1.0) as i64
        } else {
            i64::MAX
        };
        (after.max(0.0).floor() as u64, reset_at, retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_layer_is_the_refusing_one_else_the_one_with_least_left() {
        let result = |layer, allowed, remaining| LayerResult {
            layer,
            allowed,
            limit: 10,
            remaining,
            reset_at_ms: 0,
            retry_after_ms: 0,
        };
        let all_ok = Decision {
            allowed: true,
            results: vec![result(Layer::Ip, true, 9), result(Layer::Tier, true, 3)],
        };
        assert_eq!(all_ok.tightest().map(|r| r.layer), Some(Layer::Tier));
        let refused = Decision {
            allowed: false,
            results: vec![result(Layer::Ip, false, 5), result(Layer::Tier, true, 0)],
        };
        assert_eq!(refused.tightest().map(|r| r.layer), Some(Layer::Ip));
    }
}
