//! The in-memory limiter: the same arithmetic as the Redis script, on sharded mutex-guarded maps,
//! with idle keys evicted so memory stays bounded.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::arithmetic::{self, BucketState, WindowState};
use super::{Decision, LayerResult, LimitCheck, LimiterError, Mode, RateLimiter, Rule};
use crate::clock::{Clock, to_unix_ms};

const SHARDS: usize = 16;

/// One shard: key → (state, the instant after which the state carries no information).
type Shard = HashMap<String, (State, i64)>;

#[derive(Debug, Clone)]
enum State {
    Window(WindowState),
    Bucket(BucketState),
}

/// Rate limits decided in this process.
#[derive(Debug)]
pub struct MemoryLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
}

impl MemoryLimiter {
    /// An empty limiter reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            clock,
        }
    }

    fn shard(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Decides at an explicit time (the clock's time in [`RateLimiter::decide`]).
    pub fn decide_at(&self, checks: &[LimitCheck], now_ms: i64) -> Decision {
        // Lock the shards involved in a fixed order, so concurrent calls cannot deadlock.
        // Counters are namespaced by layer, as in Redis (`krl:{layer}:{key}`): one principal's
        // tier window and sensitive bucket are different counters.
        let keys: Vec<String> = checks
            .iter()
            .map(|c| format!("{}:{}", c.layer.as_str(), c.key))
            .collect();
        let mut involved: Vec<usize> = keys.iter().map(|k| self.shard(k)).collect();
        involved.sort_unstable();
        involved.dedup();
        let mut guards: Vec<(usize, std::sync::MutexGuard<'_, Shard>)> = involved
            .iter()
            .map(|&i| (i, self.shards[i].lock().unwrap_or_else(|p| p.into_inner())))
            .collect();
        let slots: Vec<usize> = keys
            .iter()
            .map(|k| {
                let shard = self.shard(k);
                involved.iter().position(|i| *i == shard).unwrap_or(0)
            })
            .collect();

        // Phase 1: look.
        let mut verdicts = Vec::with_capacity(checks.len());
        for ((check, &slot), key) in checks.iter().zip(&slots).zip(&keys) {
            let state = guards[slot].1.get(key).map(|(s, _)| s.clone());
            let allowed = match check.rule {
                Rule::SlidingWindow {
                    limit,
                    window_ms,
                    bucket_ms,
                } => {
                    let window = match state {
                        Some(State::Window(w)) => w,
                        _ => WindowState::default(),
                    };
                    let view = arithmetic::view_window(&window, now_ms, window_ms, bucket_ms);
                    matches!(check.mode, Mode::Force | Mode::Refund) || view.count < limit
                }
                Rule::TokenBucket {
                    capacity,
                    refill_per_minute,
                } => {
                    let bucket = match state {
                        Some(State::Bucket(b)) => Some(b),
                        _ => None,
                    };
                    let tokens = arithmetic::bucket_tokens(
                        bucket,
                        now_ms,
                        capacity,
                        arithmetic::refill_per_ms(refill_per_minute),
                    );
                    matches!(check.mode, Mode::Force | Mode::Refund) || tokens >= 1.0
                }
            };
            verdicts.push(allowed);
        }
        let all_allowed = verdicts.iter().all(|ok| *ok);

        // Phase 2: consume (all-or-nothing) and report.
        let mut results = Vec::with_capacity(checks.len());
        for (((check, allowed), &slot), key) in checks.iter().zip(verdicts).zip(&slots).zip(&keys) {
            let consume = match check.mode {
                Mode::Consume => all_allowed,
                Mode::Force => true,
                Mode::Peek | Mode::Refund => false,
            };
            let refund = check.mode == Mode::Refund;
            let map = &mut guards[slot].1;
            let (limit, remaining, reset_at_ms, retry_after_ms) = match check.rule {
                Rule::SlidingWindow {
                    limit,
                    window_ms,
                    bucket_ms,
                } => {
                    let mut window = match map.get(key) {
                        Some((State::Window(w), _)) => w.clone(),
                        _ => WindowState::default(),
                    };
                    let mut view = arithmetic::view_window(&window, now_ms, window_ms, bucket_ms);
                    if refund && arithmetic::refund_window(&mut window, view.oldest) {
                        view = arithmetic::view_window(&window, now_ms, window_ms, bucket_ms);
                        map.insert(
                            key.clone(),
                            (State::Window(window), now_ms + window_ms + bucket_ms),
                        );
                    } else if consume {
                        window.buckets.retain(|(index, _)| *index >= view.oldest);
                        match window
                            .buckets
                            .iter_mut()
                            .find(|(index, _)| *index == view.current)
                        {
                            Some(bucket) => bucket.1 += 1,
                            None => window.buckets.push((view.current, 1)),
                        }
                        map.insert(
                            key.clone(),
                            (State::Window(window), now_ms + window_ms + bucket_ms),
                        );
                    }
                    let (remaining, reset, retry) = arithmetic::window_report(
                        &view, consume, allowed, limit, now_ms, window_ms, bucket_ms,
                    );
                    (limit, remaining, reset, retry)
                }
                Rule::TokenBucket {
                    capacity,
                    refill_per_minute,
                } => {
                    let rate = arithmetic::refill_per_ms(refill_per_minute);
                    let bucket = match map.get(key) {
                        Some((State::Bucket(b), _)) => Some(*b),
                        _ => None,
                    };
                    let mut tokens = arithmetic::bucket_tokens(bucket, now_ms, capacity, rate);
                    if refund {
                        tokens = (tokens + 1.0).min(capacity as f64);
                        let full_in = if rate > 0.0 {
                            ((capacity as f64 - tokens) / rate).ceil() as i64
                        } else {
                            i64::MAX / 4
                        };
                        map.insert(
                            key.clone(),
                            (
                                State::Bucket(BucketState {
                                    tokens,
                                    ts_ms: now_ms,
                                }),
                                now_ms.saturating_add(full_in),
                            ),
                        );
                    } else if consume {
                        let after = tokens - 1.0;
                        let full_in = if rate > 0.0 {
                            ((capacity as f64 - after) / rate).ceil() as i64
                        } else {
                            i64::MAX / 4
                        };
                        map.insert(
                            key.clone(),
                            (
                                State::Bucket(BucketState {
                                    tokens: after,
                                    ts_ms: now_ms,
                                }),
                                now_ms.saturating_add(full_in),
                            ),
                        );
                    }
                    let (remaining, reset, retry) =
                        arithmetic::bucket_report(tokens, consume, allowed, capacity, rate, now_ms);
                    (capacity, remaining, reset, retry)
                }
            };
            results.push(LayerResult {
                layer: check.layer,
                allowed,
                limit,
                remaining,
                reset_at_ms,
                retry_after_ms,
            });
        }
        Decision {
            allowed: all_allowed,
            results,
        }
    }

    /// Drops keys that hold no information any more (empty windows, full buckets).
    pub fn evict_idle(&self) -> usize {
        let now_ms = to_unix_ms(self.clock.now());
        let mut evicted = 0;
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = map.len();
            map.retain(|_, (_, idle_after)| *idle_after > now_ms);
            evicted += before - map.len();
        }
        evicted
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn decide(&self, checks: &[LimitCheck]) -> Result<Decision, LimiterError> {
        Ok(self.decide_at(checks, to_unix_ms(self.clock.now())))
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::super::Layer;
    use super::*;
    use crate::clock::ManualClock;

    fn limiter() -> MemoryLimiter {
        MemoryLimiter::new(Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH)))
    }

    fn window(key: &str, limit: u64) -> LimitCheck {
        LimitCheck {
            layer: Layer::Tier,
            key: key.into(),
            rule: Rule::per_window(limit, 60_000),
            mode: Mode::Consume,
        }
    }

    #[test]
    fn a_window_admits_its_limit_then_refuses_with_a_retry_time() {
        let limiter = limiter();
        for i in 0..60 {
            let decision = limiter.decide_at(&[window("k", 60)], 1_000 + i);
            assert!(decision.allowed, "request {i}");
            assert_eq!(decision.results[0].remaining, 59 - i as u64);
        }
        let refused = limiter.decide_at(&[window("k", 60)], 1_100);
        assert!(!refused.allowed);
        assert!(
            refused.results[0].retry_after_ms > 0 && refused.results[0].retry_after_ms <= 66_000
        );
        // After the window (plus at most one sub-window) capacity is back.
        assert!(
            limiter
                .decide_at(&[window("k", 60)], 1_000 + 66_000)
                .allowed
        );
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limiter = limiter();
        let check = LimitCheck {
            layer: Layer::Sensitive,
            key: "b".into(),
            rule: Rule::TokenBucket {
                capacity: 5,
                refill_per_minute: 60,
            },
            mode: Mode::Consume,
        };
        for _ in 0..5 {
            assert!(limiter.decide_at(std::slice::from_ref(&check), 0).allowed);
        }
        let refused = limiter.decide_at(std::slice::from_ref(&check), 0);
        assert!(!refused.allowed);
        assert_eq!(refused.results[0].retry_after_ms, 1_000);
        assert!(!limiter.decide_at(std::slice::from_ref(&check), 999).allowed);
        assert!(
            limiter
                .decide_at(std::slice::from_ref(&check), 1_000)
                .allowed
        );
    }

    #[test]
    fn a_refusal_by_one_layer_consumes_nothing_from_the_others() {
        let limiter = limiter();
        let tight = window("tight", 1);
        let loose = window("loose", 100);
        assert!(
            limiter
                .decide_at(&[loose.clone(), tight.clone()], 0)
                .allowed
        );
        for _ in 0..10 {
            assert!(
                !limiter
                    .decide_at(&[loose.clone(), tight.clone()], 1)
                    .allowed
            );
        }
        let alone = limiter.decide_at(std::slice::from_ref(&loose), 2);
        assert_eq!(
            alone.results[0].remaining, 98,
            "only the one admitted request counted"
        );
    }

    #[test]
    fn peek_does_not_count_and_force_always_counts() {
        let limiter = limiter();
        let mut check = window("login", 2);
        check.mode = Mode::Peek;
        for _ in 0..5 {
            assert!(limiter.decide_at(std::slice::from_ref(&check), 0).allowed);
        }
        check.mode = Mode::Force;
        for _ in 0..3 {
            limiter.decide_at(std::slice::from_ref(&check), 0);
        }
        check.mode = Mode::Peek;
        assert!(!limiter.decide_at(std::slice::from_ref(&check), 0).allowed);
    }

    #[test]
    fn refund_gives_back_one_consumed_unit_and_never_goes_below_zero() {
        let limiter = limiter();
        let mut check = window("reserve", 2);
        assert!(limiter.decide_at(std::slice::from_ref(&check), 0).allowed);
        assert!(limiter.decide_at(std::slice::from_ref(&check), 10).allowed);
        assert!(!limiter.decide_at(std::slice::from_ref(&check), 20).allowed);
        check.mode = Mode::Refund;
        let refunded = limiter.decide_at(std::slice::from_ref(&check), 30);
        assert!(refunded.allowed);
        assert_eq!(refunded.results[0].remaining, 1);
        check.mode = Mode::Consume;
        assert!(limiter.decide_at(std::slice::from_ref(&check), 40).allowed);
        assert!(!limiter.decide_at(std::slice::from_ref(&check), 50).allowed);
        check.mode = Mode::Refund;
        for _ in 0..5 {
            limiter.decide_at(std::slice::from_ref(&check), 60);
        }
        check.mode = Mode::Consume;
        for _ in 0..2 {
            assert!(limiter.decide_at(std::slice::from_ref(&check), 70).allowed);
        }
        assert!(
            !limiter.decide_at(std::slice::from_ref(&check), 80).allowed,
            "refunds beyond what was consumed give nothing extra"
        );
        let mut bucket = LimitCheck {
            layer: Layer::Sensitive,
            key: "bucket".into(),
            rule: Rule::TokenBucket {
                capacity: 1,
                refill_per_minute: 1,
            },
            mode: Mode::Consume,
        };
        assert!(limiter.decide_at(std::slice::from_ref(&bucket), 0).allowed);
        assert!(!limiter.decide_at(std::slice::from_ref(&bucket), 1).allowed);
        bucket.mode = Mode::Refund;
        limiter.decide_at(std::slice::from_ref(&bucket), 2);
        limiter.decide_at(std::slice::from_ref(&bucket), 3);
        bucket.mode = Mode::Consume;
        assert!(limiter.decide_at(std::slice::from_ref(&bucket), 4).allowed);
        assert!(!limiter.decide_at(std::slice::from_ref(&bucket), 5).allowed);
    }

    #[test]
    fn idle_keys_are_evicted() {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH));
        let limiter = MemoryLimiter::new(clock.clone());
        for i in 0..100 {
            limiter.decide_at(&[window(&format!("k{i}"), 10)], 0);
        }
        assert_eq!(limiter.len(), 100);
        assert_eq!(limiter.evict_idle(), 0);
        clock.advance(time::Duration::seconds(70));
        assert_eq!(limiter.evict_idle(), 100);
        assert!(limiter.is_empty());
    }
}
