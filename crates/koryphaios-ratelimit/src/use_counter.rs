//! [`RedisUseCounter`]: agent tokens' `maxUses` counted in Redis, exactly across instances.
//!
//! One `INCR` per use inside a script that refuses (and takes back) the use past the limit, so
//! the count never passes `maxUses` and concurrent uses from any number of instances are admitted
//! at most `maxUses` times. The key expires with the token (`PEXPIREAT`). Unlike the rate
//! limiter there is no in-memory fallback: a fallback could not know what other instances
//! counted, so a Redis failure refuses the use (503) rather than guess.

use std::time::Duration;

use async_trait::async_trait;
use koryphaios_core::ids::TokenId;
use koryphaios_core::store::{StoreError, StoreResult};
use koryphaios_core::tokens::UseCounter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use time::OffsetDateTime;

const KEY_PREFIX: &str = "kut:";

/// `KEYS[1]` the counter, `ARGV[1]` the limit, `ARGV[2]` the expiry (Unix ms): 1 when the use
/// is counted, 0 when the uses are spent.
const SCRIPT: &str = r"
local used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
if used > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1
";

/// Token uses counted in Redis.
#[derive(Clone)]
pub struct RedisUseCounter {
    connection: ConnectionManager,
    script: redis::Script,
}

impl std::fmt::Debug for RedisUseCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("RedisUseCounter").finish_non_exhaustive()
    }
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("token use counter (Redis): {error}"))
}

impl RedisUseCounter {
    /// A counter for `url` that connects lazily; `timeout` bounds connecting and each response.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Self {
            connection,
            script: redis::Script::new(SCRIPT),
        })
    }
}

#[async_trait]
impl UseCounter for RedisUseCounter {
    async fn consume(
        &self,
        token: &TokenId,
        max_uses: u32,
        expires_at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut connection = self.connection.clone();
        // A minute past the token's end, so a use at the last instant still finds its count.
        let expire_ms = koryphaios_core::clock::to_unix_ms(expires_at) + 60_000;
        let counted: i64 = self
            .script
            .key(format!("{KEY_PREFIX}{token}"))
            .arg(max_uses)
            .arg(expire_ms)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(counted == 1)
    }
}
