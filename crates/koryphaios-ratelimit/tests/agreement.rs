//! Property tests against a real Redis: for random request sequences and clocks, the Redis
//! script and the in-memory limiter make the same decisions, and neither ever admits more than a
//! sliding window's limit in any window.

use std::sync::Arc;
use std::time::Duration;

use koryphaios_core::clock::SystemClock;
use koryphaios_core::ratelimit::{Layer, LimitCheck, MemoryLimiter, Mode, RateLimiter, Rule};
use koryphaios_ratelimit::RedisLimiter;
use proptest::prelude::*;

fn redis_url() -> String {
    std::env::var("KORYPHAIOS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[derive(Debug, Clone)]
struct Step {
    advance_ms: i64,
    which: usize,
    mode: Mode,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0i64..15_000,
        0usize..3,
        prop_oneof![
            8 => Just(Mode::Consume),
            1 => Just(Mode::Peek),
            1 => Just(Mode::Force),
            1 => Just(Mode::Refund)
        ],
    )
        .prop_map(|(advance_ms, which, mode)| Step {
            advance_ms,
            which,
            mode,
        })
}

fn rules(limit: u64, capacity: u64, refill: u64) -> [Rule; 3] {
    [
        Rule::per_window(limit, 60_000),
        Rule::TokenBucket {
            capacity,
            refill_per_minute: refill,
        },
        Rule::per_window(limit + 3, 20_000),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn redis_and_memory_agree_and_never_over_admit(
        steps in proptest::collection::vec(step(), 1..120),
        limit in 1u64..12,
        capacity in 1u64..6,
        refill in 1u64..120,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _entered = runtime.enter();
        let redis = RedisLimiter::new(&redis_url(), Duration::from_secs(2)).unwrap();
        let memory = MemoryLimiter::new(Arc::new(SystemClock));
        let case = uuid::Uuid::new_v4().simple().to_string();
        let rules = rules(limit, capacity, refill);
        let mut now = 1_800_000_000_000i64;
        let mut admitted: Vec<Vec<i64>> = vec![Vec::new(); 3];
        for step in steps {
            now += step.advance_ms;
            // Two checks per request, so all-or-nothing is exercised too.
            let checks: Vec<LimitCheck> = [step.which, (step.which + 1) % 3]
                .iter()
                .map(|&i| LimitCheck { layer: Layer::Tier, key: format!("{case}-{i}"), rule: rules[i], mode: step.mode })
                .collect();
            let from_memory = memory.decide_at(&checks, now);
            let from_redis = runtime.block_on(redis.at_fixed_time(now).decide(&checks)).unwrap();
            prop_assert_eq!(&from_memory, &from_redis, "at {} for {:?}", now, step);
            // Forced counts record events that already happened (failed logins); admissions are
            // the consumed requests the limiter let through.
            if from_memory.allowed && step.mode == Mode::Consume {
                for &i in &[step.which, (step.which + 1) % 3] {
                    admitted[i].push(now);
                }
            }
            // A refund gives back the newest counted unit: forget the newest admission (popping
            // can only make the check below weaker, never fail it falsely).
            if step.mode == Mode::Refund {
                for &i in &[step.which, (step.which + 1) % 3] {
                    admitted[i].pop();
                }
            }
        }
        // No window of the sliding rules ever holds more than its limit of consumed requests.
        for (i, rule) in rules.iter().enumerate() {
            if let Rule::SlidingWindow { limit, window_ms, .. } = *rule {
                let times = &admitted[i];
                for (start, &t) in times.iter().enumerate() {
                    let in_window = times[start..].iter().take_while(|&&u| u < t + window_ms).count() as u64;
                    prop_assert!(in_window <= limit, "{} requests within {} ms of {} (limit {})", in_window, window_ms, t, limit);
                }
            }
        }
    }
}

#[tokio::test]
async fn a_refusal_by_one_layer_consumes_nothing_in_redis() {
    let redis = RedisLimiter::new(&redis_url(), Duration::from_secs(2)).unwrap();
    let case = uuid::Uuid::new_v4().simple().to_string();
    let tight = LimitCheck {
        layer: Layer::Ip,
        key: format!("{case}-tight"),
        rule: Rule::per_window(1, 60_000),
        mode: Mode::Consume,
    };
    let loose = LimitCheck {
        layer: Layer::Tier,
        key: format!("{case}-loose"),
        rule: Rule::per_window(100, 60_000),
        mode: Mode::Consume,
    };
    let both = [loose.clone(), tight];
    assert!(redis.decide(&both).await.unwrap().allowed);
    for _ in 0..5 {
        assert!(!redis.decide(&both).await.unwrap().allowed);
    }
    let alone = redis.decide(std::slice::from_ref(&loose)).await.unwrap();
    assert_eq!(alone.results[0].remaining, 98);
    redis.ping().await.unwrap();
}

#[tokio::test]
async fn the_script_is_reloaded_after_a_script_flush() {
    let redis = RedisLimiter::new(&redis_url(), Duration::from_secs(2)).unwrap();
    let check = LimitCheck {
        layer: Layer::Ip,
        key: uuid::Uuid::new_v4().to_string(),
        rule: Rule::per_window(5, 60_000),
        mode: Mode::Consume,
    };
    assert!(
        redis
            .decide(std::slice::from_ref(&check))
            .await
            .unwrap()
            .allowed
    );
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    let after = redis.decide(std::slice::from_ref(&check)).await.unwrap();
    assert!(after.allowed);
    assert_eq!(after.results[0].remaining, 3);
}
