//! Counting a token's uses exactly: one atomic increment-if-below per authenticated request, in
//! a place every instance shares (the database, or Redis when configured), so N instances
//! together never admit more than `maxUses`.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::ids::TokenId;
use crate::store::{Store, StoreResult};

/// Counts uses of tokens that have a limit.
#[async_trait]
pub trait UseCounter: Send + Sync + Debug {
    /// Counts one use of `token` if it has made fewer than `max_uses`; `false` when it had
    /// spent them (nothing is counted then). `expires_at` lets the counter forget the token after.
    async fn consume(
        &self,
        token: &TokenId,
        max_uses: u32,
        expires_at: OffsetDateTime,
    ) -> StoreResult<bool>;
}

/// The database as the counter (one conditional `UPDATE` per use): used without Redis.
#[derive(Debug)]
pub struct StoreUseCounter(pub Arc<dyn Store>);

#[async_trait]
impl UseCounter for StoreUseCounter {
    async fn consume(
        &self,
        token: &TokenId,
        max_uses: u32,
        _expires_at: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.0.consume_token_use(token, max_uses).await
    }
}
