//! [`UserStore`] on SQLite.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::ids::UserId;
use koryphaios_core::store::{RegisterUserError, StoreError, StoreResult, UserStore, UserUpdated};
use koryphaios_core::tier::Tier;
use koryphaios_core::users::{
    NewUser, PasswordHash, RegistrationPolicy, Role, User, UserCredentials,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::audit::{commit_audited, insert_audit};
use crate::error::{is_unique_violation, map_err};

/// The columns [`user_from_row`] reads (never the password hash).
macro_rules! user_columns {
    () => {
        "id, username, role, tier, disabled_at, session_epoch, created_at, updated_at, last_login_at"
    };
}
pub(crate) use user_columns;

pub(crate) fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    let read = || -> Result<User, sqlx::Error> {
        let id: String = row.try_get("id")?;
        let role: String = row.try_get("role")?;
        let tier: String = row.try_get("tier")?;
        let instant = |column: &str| {
            row.try_get::<Option<i64>, _>(column)
                .map(|v| v.map(from_unix_ms))
        };
        Ok(User {
            id: UserId::parse(&id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            username: row.try_get("username")?,
            role: Role::parse(&role)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown role {role:?}").into()))?,
            tier: Tier::parse(&tier)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown tier {tier:?}").into()))?,
            disabled_at: instant("disabled_at")?,
            session_epoch: row.try_get("session_epoch")?,
            created_at: from_unix_ms(row.try_get("created_at")?),
            updated_at: from_unix_ms(row.try_get("updated_at")?),
            last_login_at: instant("last_login_at")?,
        })
    };
    read().map_err(map_err)
}

/// The user with this id, read on `conn` (a pool connection or the caller's transaction).
pub(crate) async fn fetch_user(
    conn: &mut sqlx::SqliteConnection,
    id: &str,
) -> StoreResult<Option<User>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(map_err)?;
    row.as_ref().map(user_from_row).transpose()
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn register_user(
        &self,
        user: NewUser,
        policy: RegistrationPolicy,
        audit: &AuditEntry,
    ) -> Result<User, RegisterUserError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        if existing > 0 && policy == RegistrationPolicy::FirstUserOnly {
            return Err(RegisterUserError::RegistrationClosed);
        }
        let (role, tier) = user.standing(existing == 0);
        let at = to_unix_ms(user.created_at);
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, tier, session_epoch, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
        )
        .bind(user.id.as_str())
        .bind(user.username.as_str())
        .bind(user.password_hash.as_str())
        .bind(role.as_str())
        .bind(tier.as_str())
        .bind(at)
        .bind(at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(error) if is_unique_violation(&error) => {
                return Err(RegisterUserError::UsernameTaken);
            }
            other => other.map_err(map_err)?,
        };
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await?;
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
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            ", password_hash FROM users WHERE username = ?"
        ))
        .bind(username)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.map(|row| {
            let hash: String = row.try_get("password_hash").map_err(map_err)?;
            Ok(UserCredentials {
                user: user_from_row(&row)?,
                password_hash: PasswordHash::from_stored(hash),
            })
        })
        .transpose()
    }

    async fn find_user(&self, id: &UserId) -> StoreResult<Option<User>> {
        let mut conn = self.reader.acquire().await.map_err(map_err)?;
        fetch_user(&mut conn, id.as_str()).await
    }

    async fn change_password(
        &self,
        id: &UserId,
        hash: &PasswordHash,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<User> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let row = sqlx::query(concat!(
            "UPDATE users SET password_hash = ?, session_epoch = session_epoch + 1, updated_at = ?
             WHERE id = ? RETURNING ",
            user_columns!()
        ))
        .bind(hash.as_str())
        .bind(to_unix_ms(now))
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .ok_or_else(|| {
            StoreError::Internal(format!("user {id} vanished during password change"))
        })?;
        crate::sessions::revoke_all_families(&mut tx, id, now, "password_change").await?;
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await?;
        user_from_row(&row)
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn list_users(&self, after: Option<&UserId>, limit: u32) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id > ? ORDER BY id LIMIT ?"
        ))
        .bind(after.map_or("", UserId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn update_user(
        &self,
        expected: &User,
        updated: &User,
        audit: &AuditEntry,
    ) -> StoreResult<UserUpdated> {
        // The single writer makes the compare-and-swap and the last-admin check one step.
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let row = sqlx::query(concat!(
            "UPDATE users SET role = ?, tier = ?, disabled_at = ?, session_epoch = ?, updated_at = ?
             WHERE id = ? AND role = ? AND tier = ? AND disabled_at IS ? RETURNING ",
            user_columns!()
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
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let Some(row) = row else {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = ?)")
                    .bind(expected.id.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
            return Ok(if exists {
                UserUpdated::Conflict
            } else {
                UserUpdated::NotFound
            });
        };
        if expected.is_active_admin() && !updated.is_active_admin() {
            let admins: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            if admins == 0 {
                return Ok(UserUpdated::LastAdmin);
            }
        }
        if updated.is_disabled() && !expected.is_disabled() {
            let now = updated.updated_at;
            crate::sessions::revoke_all_families(&mut tx, &expected.id, now, "user_disabled")
                .await?;
        }
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await?;
        Ok(UserUpdated::Updated(user_from_row(&row)?))
    }
}
