//! The embedded PostgreSQL migrations and their runner (SPEC §6).
//!
//! Each pending migration runs in its own transaction that first takes a transaction-scoped
//! advisory lock ([`MIGRATION_LOCK`]) and then re-reads `schema_migrations`, so processes starting
//! together queue on the lock and apply each migration exactly once. The lock goes with the
//! transaction (commit, rollback, or a dropped connection), so a crashed or cancelled migration
//! never leaves it held. PostgreSQL DDL is transactional: a failed migration leaves nothing behind.
//! Migration transactions run without the service's statement timeout.

use async_trait::async_trait;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::migrations::{
    self, AppliedMigration, Migration, MigrationError, MigrationStatus,
};
use koryphaios_core::store::SchemaMigrator;
use sqlx::{PgConnection, Postgres, Row, Transaction};

use crate::PostgresStore;
use crate::error::map_err;

/// Every PostgreSQL migration, in order (the same versions and names as SQLite's).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "users_and_sessions",
        up: include_str!("../migrations/0001_users_and_sessions.up.sql"),
        down: include_str!("../migrations/0001_users_and_sessions.down.sql"),
    },
    Migration {
        version: 2,
        name: "credentials_and_audit",
        up: include_str!("../migrations/0002_credentials_and_audit.up.sql"),
        down: include_str!("../migrations/0002_credentials_and_audit.down.sql"),
    },
    Migration {
        version: 3,
        name: "api_keys",
        up: include_str!("../migrations/0003_api_keys.up.sql"),
        down: include_str!("../migrations/0003_api_keys.down.sql"),
    },
    Migration {
        version: 4,
        name: "audit_chain",
        up: include_str!("../migrations/0004_audit_chain.up.sql"),
        down: include_str!("../migrations/0004_audit_chain.down.sql"),
    },
    Migration {
        version: 5,
        name: "audit_chain_head",
        up: include_str!("../migrations/0005_audit_chain_head.up.sql"),
        down: include_str!("../migrations/0005_audit_chain_head.down.sql"),
    },
    Migration {
        version: 6,
        name: "user_tiers",
        up: include_str!("../migrations/0006_user_tiers.up.sql"),
        down: include_str!("../migrations/0006_user_tiers.down.sql"),
    },
    Migration {
        version: 7,
        name: "sealed_keys",
        up: include_str!("../migrations/0007_sealed_keys.up.sql"),
        down: include_str!("../migrations/0007_sealed_keys.down.sql"),
    },
];

/// The advisory lock key every Koryphaios process migrating this database queues on
/// (the ASCII bytes of "korymigr").
pub const MIGRATION_LOCK: i64 = 0x6b6f_7279_6d69_6772;

const CREATE_TABLE: &str = "CREATE TABLE schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// Opens a transaction holding the migration lock, with the bookkeeping table in place.
async fn locked(store: &PostgresStore) -> Result<Transaction<'static, Postgres>, MigrationError> {
    let mut tx = store.pool.begin().await.map_err(map_err)?;
    // A migration (an index build on a big table) may outlast the service's statement timeout,
    // and so may the wait for another process's migration: neither is cut short.
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    // Created under the lock (concurrent creations could otherwise collide), and only when
    // missing, so a routine start does not log "already exists" notices.
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
    if !exists {
        sqlx::query(CREATE_TABLE)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    Ok(tx)
}

/// The applied rows, read after the lock was taken (a fresh snapshot: READ COMMITTED).
async fn applied(conn: &mut PgConnection) -> Result<Vec<AppliedMigration>, MigrationError> {
    let rows = sqlx::query(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    rows.iter()
        .map(|row| {
            Ok(AppliedMigration {
                version: row.try_get("version")?,
                name: row.try_get("name")?,
                checksum: row.try_get("checksum")?,
                applied_at: from_unix_ms(row.try_get("applied_at")?),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| MigrationError::Store(map_err(e)))
}

fn failed(migration: &Migration, error: sqlx::Error) -> MigrationError {
    MigrationError::Failed {
        version: migration.version,
        name: migration.name.to_owned(),
        reason: error.to_string(),
    }
}

#[async_trait]
impl SchemaMigrator for PostgresStore {
    async fn migration_status(&self) -> Result<Vec<MigrationStatus>, MigrationError> {
        let mut tx = locked(self).await?;
        let rows = applied(&mut tx).await?;
        tx.commit().await.map_err(map_err)?;
        migrations::verify_history(MIGRATIONS, &rows)?;
        Ok(migrations::status(MIGRATIONS, &rows))
    }

    async fn migrate_up(&self) -> Result<Vec<i64>, MigrationError> {
        let mut done = Vec::new();
        loop {
            let mut tx = locked(self).await?;
            let rows = applied(&mut tx).await?;
            let Some(next) = migrations::next_pending(MIGRATIONS, &rows)? else {
                tx.commit().await.map_err(map_err)?;
                return Ok(done);
            };
            sqlx::raw_sql(next.up)
                .execute(&mut *tx)
                .await
                .map_err(|e| failed(next, e))?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(next.version)
            .bind(next.name)
            .bind(next.checksum())
            .bind(to_unix_ms(time::OffsetDateTime::now_utc()))
            .execute(&mut *tx)
            .await
            .map_err(|e| failed(next, e))?;
            tx.commit().await.map_err(|e| failed(next, e))?;
            tracing::info!(
                version = next.version,
                name = next.name,
                "applied migration"
            );
            done.push(next.version);
        }
    }

    async fn migrate_down(&self, steps: usize) -> Result<Vec<i64>, MigrationError> {
        let mut done = Vec::new();
        for _ in 0..steps {
            let mut tx = locked(self).await?;
            let rows = applied(&mut tx).await?;
            let Some(last) = migrations::newest_applied(MIGRATIONS, &rows)? else {
                tx.commit().await.map_err(map_err)?;
                break;
            };
            sqlx::raw_sql(last.down)
                .execute(&mut *tx)
                .await
                .map_err(|e| failed(last, e))?;
            sqlx::query("DELETE FROM schema_migrations WHERE version = $1")
                .bind(last.version)
                .execute(&mut *tx)
                .await
                .map_err(|e| failed(last, e))?;
            tx.commit().await.map_err(|e| failed(last, e))?;
            tracing::info!(
                version = last.version,
                name = last.name,
                "reverted migration"
            );
            done.push(last.version);
        }
        Ok(done)
    }
}
