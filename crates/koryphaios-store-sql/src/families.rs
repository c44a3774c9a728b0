//! Session families and their refresh tokens, as written inside other ports' transactions
//! (a password change or a disabled user ends every session).

use koryphaios_core::clock::to_unix_ms;
use koryphaios_core::ids::UserId;
use koryphaios_core::store::{NewRefreshToken, StoreResult};
use time::OffsetDateTime;

use crate::backend::{Backend, Conn};
use crate::driver::Query;

/// Ends every live session family of `user`.
pub(crate) async fn revoke_all_families<B: Backend>(
    conn: &mut Conn<B>,
    user: &UserId,
    now: OffsetDateTime,
    reason: &str,
) -> StoreResult<()> {
    Query::<B::Db>::new(
        "UPDATE session_families SET revoked_at = $1, revoked_reason = $2
         WHERE user_id = $3 AND revoked_at IS NULL",
    )
    .bind(to_unix_ms(now))
    .bind(reason)
    .bind(user.as_str())
    .execute(conn)
    .await
    .map_err(B::map_err)?;
    Ok(())
}

/// Ends one session family.
pub(crate) async fn revoke_family<B: Backend>(
    conn: &mut Conn<B>,
    family: &str,
    now: OffsetDateTime,
    reason: &str,
) -> StoreResult<()> {
    Query::<B::Db>::new(
        "UPDATE session_families SET revoked_at = $1, revoked_reason = $2
         WHERE id = $3 AND revoked_at IS NULL",
    )
    .bind(to_unix_ms(now))
    .bind(reason)
    .bind(family)
    .execute(conn)
    .await
    .map_err(B::map_err)?;
    Ok(())
}

/// Stores a refresh token of `family`; the family lives as long as its newest token.
pub(crate) async fn insert_refresh_token<B: Backend>(
    conn: &mut Conn<B>,
    family: &str,
    token: &NewRefreshToken,
) -> StoreResult<()> {
    Query::<B::Db>::new(
        "INSERT INTO refresh_tokens (id, family_id, token_hash, issued_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token.id.as_str())
    .bind(family)
    .bind(token.token_hash.as_str())
    .bind(to_unix_ms(token.issued_at))
    .bind(to_unix_ms(token.expires_at))
    .execute(conn)
    .await
    .map_err(B::map_err)?;
    Query::<B::Db>::new(
        "UPDATE session_families
         SET expires_at = CASE WHEN expires_at > $1 THEN expires_at ELSE $1 END WHERE id = $2",
    )
    .bind(to_unix_ms(token.expires_at))
    .bind(family)
    .execute(conn)
    .await
    .map_err(B::map_err)?;
    Ok(())
}
