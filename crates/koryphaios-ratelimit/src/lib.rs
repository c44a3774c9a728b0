//! Rate limiting adapters: [`RedisLimiter`] decides every layer of a request in one round trip
//! (one Lua script, `EVALSHA` with reload on `NOSCRIPT`), and [`FallbackLimiter`] switches to the
//! in-memory limiter at once when Redis fails or is slow, and back when it returns.
//! [`RedisUseCounter`] counts agent tokens' uses exactly across instances.

mod fallback;
mod redis_limiter;
mod use_counter;

pub use fallback::FallbackLimiter;
pub use redis_limiter::RedisLimiter;
pub use use_counter::RedisUseCounter;
