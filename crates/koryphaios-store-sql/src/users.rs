//! [`UserStore`]: accounts, their standing, and admin changes.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::ids::UserId;
use koryphaios_core::store::{RegisterUserError, StoreError, StoreResult, UserStore, UserUpdated};
use koryphaios_core::users::{NewUser, PasswordHash, RegistrationPolicy, User, UserCredentials};
use time::OffsetDateTime;

use crate::audit_chain::commit_with_audit;
use crate::backend::Backend;
use crate::driver::{Columns, Query};
use crate::error::is_unique_violation;
use crate::families::revoke_all_families;
use crate::rows::{USER_COLUMNS, fetch_user, user_from_row};
use crate::store::SqlStore;

#[async_trait]
impl<B: Backend> UserStore for SqlStore<B> {
    async fn register_user(
        &self,
        user: NewUser,
        policy: RegistrationPolicy,
        audit: &AuditEntry,
    ) -> Result<User, RegisterUserError> {
        let mut tx = self.backend.write().await?;
        // Registrations queue here, so "is the table empty?" and the insert are one step: two
        // first registrations make one admin.
        B::lock_users(&mut tx).await?;
        let existing: bool = Query::<B::Db>::new("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_scalar(&mut tx)
            .await
            .map_err(B::map_err)?;
        if existing && policy == RegistrationPolicy::FirstUserOnly {
            return Err(RegisterUserError::RegistrationClosed);
        }
        let (role, tier) = user.standing(!existing);
        let at = to_unix_ms(user.created_at);
        let inserted = Query::<B::Db>::new(
            "INSERT INTO users (id, username, password_hash, role, tier, session_epoch, created_at,
                                updated_at)
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
        )
        .bind(user.id.as_str())
        .bind(user.username.as_str())
        .bind(user.password_hash.as_str())
        .bind(role.as_str())
        .bind(tier.as_str())
        .bind(at)
        .bind(at)
        .execute(&mut tx)
        .await;
        match inserted {
            Err(error) if is_unique_violation(&error) => {
                return Err(RegisterUserError::UsernameTaken);
            }
            other => other.map_err(B::map_err)?,
        };
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
        Ok(User {
            id: user.id,
            username: user.username.as_str().to_owned(),
            role,
            tier,
            disabled_at: None,
            session_epoch: 0,
            created_at: from_unix_ms(at),
            updated_at: from_unix_ms(at),
            last_login_at: None,
        })
    }

    async fn find_credentials(&self, username: &str) -> StoreResult<Option<UserCredentials>> {
        let row = Query::<B::Db>::new(format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE {}",
            B::USERNAME_MATCHES
        ))
        .bind(username)
        .fetch_optional(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        row.map(|row| {
            Ok(UserCredentials {
                user: user_from_row(&row)?,
                password_hash: PasswordHash::from_stored(row.try_get("password_hash")?),
            })
        })
        .transpose()
        .map_err(B::map_err)
    }

    async fn find_user(&self, id: &UserId) -> StoreResult<Option<User>> {
        fetch_user::<B>(&mut *self.backend.read().await?, id.as_str()).await
    }

    async fn change_password(
        &self,
        id: &UserId,
        hash: &PasswordHash,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<User> {
        let mut tx = self.backend.write().await?;
        let row = Query::<B::Db>::new(format!(
            "UPDATE users SET password_hash = $1, session_epoch = session_epoch + 1, updated_at = $2
             WHERE id = $3 RETURNING {USER_COLUMNS}"
        ))
        .bind(hash.as_str())
        .bind(to_unix_ms(now))
        .bind(id.as_str())
        .fetch_optional(&mut tx)
        .await
        .map_err(B::map_err)?
        .ok_or_else(|| {
            StoreError::Internal(format!("user {id} vanished during password change"))
        })?;
        revoke_all_families::<B>(&mut tx, id, now, "password_change").await?;
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
        user_from_row(&row).map_err(B::map_err)
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let count: i64 = Query::<B::Db>::new("SELECT COUNT(*) FROM users")
            .fetch_scalar(&mut *self.backend.read().await?)
            .await
            .map_err(B::map_err)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn list_users(&self, after: Option<&UserId>, limit: u32) -> StoreResult<Vec<User>> {
        let rows = Query::<B::Db>::new(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.map_or("", UserId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        rows.iter()
            .map(user_from_row)
            .collect::<Result<_, _>>()
            .map_err(B::map_err)
    }

    async fn update_user(
        &self,
        expected: &User,
        updated: &User,
        audit: &AuditEntry,
    ) -> StoreResult<UserUpdated> {
        let mut tx = self.backend.write().await?;
        // Admin changes queue here (as registrations do), so the compare-and-swap and the
        // last-admin check are one step: two admins demoting each other cannot both pass it.
        B::lock_users(&mut tx).await?;
        let row = Query::<B::Db>::new(format!(
            "UPDATE users SET role = $1, tier = $2, disabled_at = $3, session_epoch = $4,
                              updated_at = $5
             WHERE id = $6 AND role = $7 AND tier = $8 AND disabled_at IS NOT DISTINCT FROM $9
             RETURNING {USER_COLUMNS}"
        ))
        .bind(updated.role.as_str())
        .bind(updated.tier.as_str())
        .bind(updated.disabled_at.map(to_unix_ms))
        .bind(updated.session_epoch)
        .bind(to_unix_ms(updated.updated_at))
        .bind(expected.id.as_str())
        .bind(expected.role.as_str())
        .bind(expected.tier.as_str())
        .bind(expected.disabled_at.map(to_unix_ms))
        .fetch_optional(&mut tx)
        .await
        .map_err(B::map_err)?;
        let Some(row) = row else {
            let exists: bool =
                Query::<B::Db>::new("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
                    .bind(expected.id.as_str())
                    .fetch_scalar(&mut tx)
                    .await
                    .map_err(B::map_err)?;
            return Ok(if exists {
                UserUpdated::Conflict
            } else {
                UserUpdated::NotFound
            });
        };
        if expected.is_active_admin() && !updated.is_active_admin() {
            let admins: i64 = Query::<B::Db>::new(
                "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL",
            )
            .fetch_scalar(&mut tx)
            .await
            .map_err(B::map_err)?;
            if admins == 0 {
                return Ok(UserUpdated::LastAdmin);
            }
        }
        if updated.is_disabled() && !expected.is_disabled() {
            let now = updated.updated_at;
            revoke_all_families::<B>(&mut tx, &expected.id, now, "user_disabled").await?;
        }
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
        Ok(UserUpdated::Updated(
            user_from_row(&row).map_err(B::map_err)?,
        ))
    }
}
