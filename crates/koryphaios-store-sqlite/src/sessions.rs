//! [`SessionStore`] on SQLite: session families, refresh tokens, revoked access tokens.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::to_unix_ms;
use koryphaios_core::ids::{FamilyId, UserId};
use koryphaios_core::secret::TokenHash;
use koryphaios_core::store::{
    NewRefreshToken, RotateOutcome, SessionState, SessionStore, StoreError, StoreResult,
};
use koryphaios_core::users::User;
use sqlx::{Row, SqliteConnection};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::audit::{commit_audited, insert_audit};
use crate::error::map_err;
use crate::users::{user_columns, user_from_row};

pub(crate) async fn revoke_all_families(
    conn: &mut SqliteConnection,
    user: &UserId,
    now: OffsetDateTime,
    reason: &str,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE session_families SET revoked_at = ?, revoked_reason = ?
         WHERE user_id = ? AND revoked_at IS NULL",
    )
    .bind(to_unix_ms(now))
    .bind(reason)
    .bind(user.as_str())
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn revoke_family(
    conn: &mut SqliteConnection,
    family: &str,
    now: OffsetDateTime,
    reason: &str,
) -> StoreResult<()> {
    sqlx::query("UPDATE session_families SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL")
        .bind(to_unix_ms(now))
        .bind(reason)
        .bind(family)
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

async fn insert_refresh_token(
    conn: &mut SqliteConnection,
    family: &str,
    token: &NewRefreshToken,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, token_hash, issued_at, expires_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(token.id.as_str())
    .bind(family)
    .bind(token.token_hash.as_str())
    .bind(to_unix_ms(token.issued_at))
    .bind(to_unix_ms(token.expires_at))
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    // The family lives as long as its newest refresh token.
    sqlx::query("UPDATE session_families SET expires_at = MAX(expires_at, ?) WHERE id = ?")
        .bind(to_unix_ms(token.expires_at))
        .bind(family)
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

fn parse_id<T>(
    raw: &str,
    parse: fn(&str) -> Result<T, koryphaios_core::ids::InvalidId>,
) -> StoreResult<T> {
    parse(raw).map_err(|e| StoreError::Internal(format!("corrupt id {raw:?} in database: {e}")))
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        user: &UserId,
        family: &FamilyId,
        first: &NewRefreshToken,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        sqlx::query("INSERT INTO session_families (id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)")
            .bind(family.as_str())
            .bind(user.as_str())
            .bind(to_unix_ms(first.issued_at))
            .bind(to_unix_ms(first.expires_at))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_refresh_token(&mut tx, family.as_str(), first).await?;
        sqlx::query("UPDATE users SET last_login_at = ? WHERE id = ?")
            .bind(to_unix_ms(first.issued_at))
            .bind(user.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await
    }

    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        next: &NewRefreshToken,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let found = sqlx::query(
            "SELECT t.family_id, t.expires_at, t.rotated_at, f.revoked_at, f.user_id
             FROM refresh_tokens t JOIN session_families f ON f.id = t.family_id
             WHERE t.token_hash = ?",
        )
        .bind(presented.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let Some(found) = found else {
            return Ok(RotateOutcome::Invalid);
        };
        let read = |col: &str| found.try_get::<Option<i64>, _>(col).map_err(map_err);
        let family: String = found.try_get("family_id").map_err(map_err)?;
        let user_id: String = found.try_get("user_id").map_err(map_err)?;
        let expires_at = read("expires_at")?.unwrap_or(0);
        if read("revoked_at")?.is_some() || expires_at <= to_unix_ms(now) {
            return Ok(RotateOutcome::Invalid);
        }
        if read("rotated_at")?.is_some() {
            revoke_family(&mut tx, &family, now, "refresh_token_reuse").await?;
            tx.commit().await.map_err(map_err)?;
            return Ok(RotateOutcome::ReuseDetected {
                user_id: parse_id(&user_id, UserId::parse)?,
                family: parse_id(&family, FamilyId::parse)?,
            });
        }
        sqlx::query("UPDATE refresh_tokens SET rotated_at = ? WHERE token_hash = ?")
            .bind(to_unix_ms(now))
            .bind(presented.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_refresh_token(&mut tx, &family, next).await?;
        let user = crate::users::fetch_user(&mut tx, &user_id)
            .await?
            .ok_or_else(|| {
                StoreError::Internal(format!("user {user_id} of a live session vanished"))
            })?;
        tx.commit().await.map_err(map_err)?;
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
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        sqlx::query(
            "UPDATE session_families SET revoked_at = ?, revoked_reason = 'logout'
             WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
        )
        .bind(to_unix_ms(now))
        .bind(family.as_str())
        .bind(user.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query("INSERT OR IGNORE INTO revoked_access_tokens (jti, user_id, expires_at) VALUES (?, ?, ?)")
            .bind(jti)
            .bind(user.as_str())
            .bind(to_unix_ms(token_expires_at))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await
    }

    async fn end_all_sessions(
        &self,
        user: &UserId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<User> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let row = sqlx::query(concat!(
            "UPDATE users SET session_epoch = session_epoch + 1, updated_at = ?
             WHERE id = ? RETURNING ",
            user_columns!()
        ))
        .bind(to_unix_ms(now))
        .bind(user.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .ok_or_else(|| StoreError::Internal(format!("user {user} vanished during logout-all")))?;
        revoke_all_families(&mut tx, user, now, "logout_all").await?;
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await?;
        user_from_row(&row)
    }

    async fn session_state(
        &self,
        user: &UserId,
        family: &FamilyId,
        jti: &str,
    ) -> StoreResult<Option<SessionState>> {
        // One round trip: the user, whether this family is live *for this user*, whether the jti is revoked.
        let row = sqlx::query(
            "SELECT u.id, u.username, u.role, u.tier, u.disabled_at, u.session_epoch, u.created_at,
                    u.updated_at, u.last_login_at,
                    NOT EXISTS (SELECT 1 FROM session_families f
                                WHERE f.id = ?2 AND f.user_id = u.id AND f.revoked_at IS NULL) AS family_revoked,
                    EXISTS (SELECT 1 FROM revoked_access_tokens r WHERE r.jti = ?3) AS token_revoked
             FROM users u WHERE u.id = ?1",
        )
        .bind(user.as_str())
        .bind(family.as_str())
        .bind(jti)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.map(|row| {
            Ok(SessionState {
                user: user_from_row(&row)?,
                family_revoked: row.try_get("family_revoked").map_err(map_err)?,
                token_revoked: row.try_get("token_revoked").map_err(map_err)?,
            })
        })
        .transpose()
    }

    async fn purge_expired_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let now = to_unix_ms(now);
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let tokens = sqlx::query("DELETE FROM revoked_access_tokens WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        // A family is dead when its last refresh token expired; its tokens go with it (cascade).
        let families = sqlx::query("DELETE FROM session_families WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        tx.commit().await.map_err(map_err)?;
        Ok(tokens + families)
    }
}
