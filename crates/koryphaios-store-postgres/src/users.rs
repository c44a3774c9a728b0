//! [`UserStore`] on PostgreSQL.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::ids::UserId;
use koryphaios_core::store::{RegisterUserError, StoreError, StoreResult, UserStore};
use koryphaios_core::users::{
    NewUser, PasswordHash, RegistrationPolicy, Role, User, UserCredentials,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use crate::PostgresStore;
use crate::audit::{commit_audited, insert_audit};
use crate::error::{is_unique_violation, map_err};

pub(crate) fn user_from_row(row: &PgRow) -> StoreResult<User> {
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
pub(crate) async fn fetch_user(conn: &mut PgConnection, id: &str) -> StoreResult<Option<User>> {
    let row = sqlx::query(
        "SELECT id, username, role, session_epoch, created_at, updated_at FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(map_err)?;
    row.as_ref().map(user_from_row).transpose()
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn register_user(
        &self,
        user: NewUser,
        policy: RegistrationPolicy,
        audit: &AuditEntry,
    ) -> Result<User, RegisterUserError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // Registrations queue here (the mode conflicts with itself, not with readers), so "is the
        // table empty?" and the insert are one step: two first registrations make one admin.
        sqlx::query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let existing: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        if existing && policy == RegistrationPolicy::FirstUserOnly {
            return Err(RegisterUserError::RegistrationClosed);
        }
        let role = if existing { Role::User } else { Role::Admin };
        let at = to_unix_ms(user.created_at);
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, session_epoch, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 0, $5, $6)",
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
        // `lower` under "C" folds ASCII only, as SQLite's NOCASE does; this is the unique index's
        // expression, so the lookup uses it.
        let row = sqlx::query(
            r#"SELECT id, username, role, session_epoch, created_at, updated_at, password_hash
               FROM users WHERE lower(username) = lower($1::text COLLATE "C")"#,
        )
        .bind(username)
        .fetch_optional(&self.pool)
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
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        fetch_user(&mut conn, id.as_str()).await
    }

    async fn change_password(
        &self,
        id: &UserId,
        hash: &PasswordHash,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<User> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let row = sqlx::query(
            "UPDATE users SET password_hash = $1, session_epoch = session_epoch + 1, updated_at = $2
             WHERE id = $3 RETURNING id, username, role, session_epoch, created_at, updated_at",
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
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
