//! [`UserStore`] on SQLite.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::ids::UserId;
use koryphaios_core::store::{RegisterUserError, StoreError, StoreResult, UserStore};
use koryphaios_core::users::{
    NewUser, PasswordHash, RegistrationPolicy, Role, User, UserCredentials,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::audit::{commit_audited, insert_audit};
use crate::error::{is_unique_violation, map_err};

pub(crate) fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    let read = || -> Result<User, sqlx::Error> {
        let id: String = row.try_get("id")?;
        let role: String = row.try_get("role")?;
        Ok(User {
            id: UserId::parse(&id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            username: row.try_get("username")?,
            role: Role::parse(&role)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown role {role:?}").into()))?,
            session_epoch: row.try_get("session_epoch")?,
            created_at: from_unix_ms(row.try_get("created_at")?),
            updated_at: from_unix_ms(row.try_get("updated_at")?),
        })
    };
    read().map_err(map_err)
}

/// The user with this id, read on `conn` (a pool connection or the caller's transaction).
pub(crate) async fn fetch_user(
    conn: &mut sqlx::SqliteConnection,
    id: &str,
) -> StoreResult<Option<User>> {
    let row = sqlx::query(
        "SELECT id, username, role, session_epoch, created_at, updated_at FROM users WHERE id = ?",
    )
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
        let role = if existing == 0 {
            Role::Admin
        } else {
            Role::User
        };
        let at = to_unix_ms(user.created_at);
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, session_epoch, created_at, updated_at)
             VALUES (?, ?, ?, ?, 0, ?, ?)",
        )
        .bind(user.id.as_str())
        .bind(user.username.as_str())
        .bind(user.password_hash.as_str())
        .bind(role.as_str())
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
            session_epoch: 0,
            created_at: from_unix_ms(at),
            updated_at: from_unix_ms(at),
        })
    }

    async fn find_credentials(&self, username: &str) -> StoreResult<Option<UserCredentials>> {
        let row = sqlx::query(
            "SELECT id, username, role, session_epoch, created_at, updated_at, password_hash
             FROM users WHERE username = ?",
        )
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
        let row = sqlx::query(
            "UPDATE users SET password_hash = ?, session_epoch = session_epoch + 1, updated_at = ?
             WHERE id = ? RETURNING id, username, role, session_epoch, created_at, updated_at",
        )
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
}
