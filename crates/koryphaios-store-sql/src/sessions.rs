//! [`SessionStore`]: session families, refresh tokens, revoked access tokens.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::to_unix_ms;
use koryphaios_core::ids::{FamilyId, UserId};
use koryphaios_core::secret::TokenHash;
use koryphaios_core::store::{
    NewRefreshToken, RotateOutcome, SessionState, SessionStore, StoreError, StoreResult,
};
use koryphaios_core::users::User;
use time::OffsetDateTime;

use crate::audit_chain::commit_with_audit;
use crate::backend::Backend;
use crate::driver::{Columns, Query};
use crate::families::{insert_refresh_token, revoke_all_families, revoke_family};
use crate::rows::{USER_COLUMNS, fetch_user, user_from_row};
use crate::store::SqlStore;

fn parse_id<T>(
    raw: &str,
    parse: fn(&str) -> Result<T, koryphaios_core::ids::InvalidId>,
) -> StoreResult<T> {
    parse(raw).map_err(|e| StoreError::Internal(format!("corrupt id {raw:?} in database: {e}")))
}

#[async_trait]
impl<B: Backend> SessionStore for SqlStore<B> {
    async fn create_session(
        &self,
        user: &UserId,
        family: &FamilyId,
        first: &NewRefreshToken,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.backend.write().await?;
        Query::<B::Db>::new(
            "INSERT INTO session_families (id, user_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(family.as_str())
        .bind(user.as_str())
        .bind(to_unix_ms(first.issued_at))
        .bind(to_unix_ms(first.expires_at))
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        insert_refresh_token::<B>(&mut tx, family.as_str(), first).await?;
        Query::<B::Db>::new("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(to_unix_ms(first.issued_at))
            .bind(user.as_str())
            .execute(&mut tx)
            .await
            .map_err(B::map_err)?;
        commit_with_audit::<B>(&self.chain, tx, audit).await
    }

    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        next: &NewRefreshToken,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome> {
        let mut tx = self.backend.write().await?;
        // A token never changes family, so finding the family needs no lock.
        let family: Option<String> =
            Query::<B::Db>::new("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(presented.as_str())
                .fetch_optional_scalar(&mut tx)
                .await
                .map_err(B::map_err)?;
        let Some(family) = family else {
            return Ok(RotateOutcome::Invalid);
        };
        // Every rotation within a family queues on the family row (then the token row, the order
        // a purge's cascade takes them in). The reads below are fresh statements, so they see
        // what the transaction ahead committed: a token is spent once, and a replay racing its
        // rotation sees it spent.
        let found = Query::<B::Db>::new(format!(
            "SELECT user_id, revoked_at FROM session_families WHERE id = $1{}",
            B::FOR_UPDATE
        ))
        .bind(family.as_str())
        .fetch_optional(&mut tx)
        .await
        .map_err(B::map_err)?;
        let Some(found) = found else {
            // Purged meanwhile.
            return Ok(RotateOutcome::Invalid);
        };
        let token = Query::<B::Db>::new(format!(
            "SELECT expires_at, rotated_at FROM refresh_tokens WHERE token_hash = $1{}",
            B::FOR_UPDATE
        ))
        .bind(presented.as_str())
        .fetch_optional(&mut tx)
        .await
        .map_err(B::map_err)?;
        let Some(token) = token else {
            return Ok(RotateOutcome::Invalid);
        };
        let user_id: String = found.try_get("user_id").map_err(B::map_err)?;
        let revoked_at: Option<i64> = found.try_get("revoked_at").map_err(B::map_err)?;
        let expires_at: Option<i64> = token.try_get("expires_at").map_err(B::map_err)?;
        let rotated_at: Option<i64> = token.try_get("rotated_at").map_err(B::map_err)?;
        if revoked_at.is_some() || expires_at.unwrap_or(0) <= to_unix_ms(now) {
            return Ok(RotateOutcome::Invalid);
        }
        if rotated_at.is_some() {
            revoke_family::<B>(&mut tx, &family, now, "refresh_token_reuse").await?;
            tx.commit().await.map_err(B::map_err)?;
            return Ok(RotateOutcome::ReuseDetected {
                user_id: parse_id(&user_id, UserId::parse)?,
                family: parse_id(&family, FamilyId::parse)?,
            });
        }
        Query::<B::Db>::new("UPDATE refresh_tokens SET rotated_at = $1 WHERE token_hash = $2")
            .bind(to_unix_ms(now))
            .bind(presented.as_str())
            .execute(&mut tx)
            .await
            .map_err(B::map_err)?;
        insert_refresh_token::<B>(&mut tx, &family, next).await?;
        let user = fetch_user::<B>(&mut tx, &user_id).await?.ok_or_else(|| {
            StoreError::Internal(format!("user {user_id} of a live session vanished"))
        })?;
        tx.commit().await.map_err(B::map_err)?;
        Ok(RotateOutcome::Rotated {
            user,
            family: parse_id(&family, FamilyId::parse)?,
        })
    }

    async fn end_session(
        &self,
        user: &UserId,
        family: &FamilyId,
        jti: &str,
        token_expires_at: OffsetDateTime,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.backend.write().await?;
        Query::<B::Db>::new(
            "UPDATE session_families SET revoked_at = $1, revoked_reason = 'logout'
             WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(to_unix_ms(now))
        .bind(family.as_str())
        .bind(user.as_str())
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        Query::<B::Db>::new(
            "INSERT INTO revoked_access_tokens (jti, user_id, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(user.as_str())
        .bind(to_unix_ms(token_expires_at))
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        commit_with_audit::<B>(&self.chain, tx, audit).await
    }

    async fn end_all_sessions(
        &self,
        user: &UserId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<User> {
        let mut tx = self.backend.write().await?;
        let row = Query::<B::Db>::new(format!(
            "UPDATE users SET session_epoch = session_epoch + 1, updated_at = $1
             WHERE id = $2 RETURNING {USER_COLUMNS}"
        ))
        .bind(to_unix_ms(now))
        .bind(user.as_str())
        .fetch_optional(&mut tx)
        .await
        .map_err(B::map_err)?
        .ok_or_else(|| StoreError::Internal(format!("user {user} vanished during logout-all")))?;
        revoke_all_families::<B>(&mut tx, user, now, "logout_all").await?;
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
        user_from_row(&row).map_err(B::map_err)
    }

    async fn session_state(
        &self,
        user: &UserId,
        family: &FamilyId,
        jti: &str,
    ) -> StoreResult<Option<SessionState>> {
        // One round trip: the user, whether this family is live *for this user*, whether the
        // jti is revoked.
        let row = Query::<B::Db>::new(
            "SELECT u.id, u.username, u.role, u.tier, u.disabled_at, u.session_epoch, u.created_at,
                    u.updated_at, u.last_login_at,
                    NOT EXISTS (SELECT 1 FROM session_families f
                                WHERE f.id = $2 AND f.user_id = u.id AND f.revoked_at IS NULL)
                        AS family_revoked,
                    EXISTS (SELECT 1 FROM revoked_access_tokens r WHERE r.jti = $3) AS token_revoked
             FROM users u WHERE u.id = $1",
        )
        .bind(user.as_str())
        .bind(family.as_str())
        .bind(jti)
        .fetch_optional(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        row.map(|row| {
            Ok(SessionState {
                user: user_from_row(&row)?,
                family_revoked: row.try_get("family_revoked")?,
                token_revoked: row.try_get("token_revoked")?,
            })
        })
        .transpose()
        .map_err(B::map_err)
    }

    async fn purge_expired_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let now = to_unix_ms(now);
        let mut tx = self.backend.write().await?;
        let tokens =
            Query::<B::Db>::new("DELETE FROM revoked_access_tokens WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut tx)
                .await
                .map_err(B::map_err)?;
        // A family is dead when its last refresh token expired; its tokens go with it (cascade).
        let families = Query::<B::Db>::new("DELETE FROM session_families WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut tx)
            .await
            .map_err(B::map_err)?;
        tx.commit().await.map_err(B::map_err)?;
        Ok(tokens + families)
    }
}
