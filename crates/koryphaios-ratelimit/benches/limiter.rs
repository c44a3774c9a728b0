//! What a rate-limit decision costs: the in-memory limiter (the fallback, and the only limiter
//! without Redis) and one Redis round trip, for the typical three checks of a request.
#![expect(clippy::unwrap_used, reason = "benchmark code")]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use koryphaios_core::clock::SystemClock;
use koryphaios_core::ratelimit::{LimitCheck, MemoryLimiter, RateLimiter};
use koryphaios_core::testing::bench::request_checks;
use koryphaios_ratelimit::RedisLimiter;

fn limiter(c: &mut Criterion) {
    let memory = MemoryLimiter::new(Arc::new(SystemClock));
    let checks: Vec<Vec<LimitCheck>> = (0..1000).map(request_checks).collect();
    let mut i = 0usize;
    let mut now = 1_800_000_000_000i64;
    c.bench_function("memory: decide 3 checks (1000 principals)", |b| {
        b.iter(|| {
            i = (i + 1) % checks.len();
            now += 1;
            memory.decide_at(&checks[i], now)
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let url = std::env::var("KORYPHAIOS_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = RedisLimiter::new(&url, Duration::from_secs(1)).unwrap();
    if runtime.block_on(redis.ping()).is_ok() {
        c.bench_function("redis: decide 3 checks in one EVALSHA round trip", |b| {
            b.iter(|| {
                i = (i + 1) % checks.len();
                runtime.block_on(redis.decide(&checks[i])).unwrap()
            })
        });
    } else {
        eprintln!("Redis not reachable at {url}: skipping the Redis benchmark");
    }
}

criterion_group!(benches, limiter);
criterion_main!(benches);
