//! The embedded SQLite migrations and their runner (SPEC §6).
//!
//! Each pending migration runs in its own `BEGIN IMMEDIATE` transaction that first re-reads
//! `schema_migrations`, so two processes starting together apply each migration once.

use async_trait::async_trait;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::migrations::{
    self, AppliedMigration, Migration, MigrationError, MigrationStatus,
};
use koryphaios_core::store::SchemaMigrator;
use sqlx::{Row, SqliteConnection};

use crate::SqliteStore;
use crate::error::map_err;

/// Every SQLite migration, in order.
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

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT";

async fn applied(conn: &mut SqliteConnection) -> Result<Vec<AppliedMigration>, MigrationError> {
    sqlx::query(CREATE_TABLE)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
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
impl SchemaMigrator for SqliteStore {
    async fn migration_status(&self) -> Result<Vec<MigrationStatus>, MigrationError> {
        let mut conn = self.writer.acquire().await.map_err(map_err)?;
        let rows = applied(&mut conn).await?;
        migrations::verify_history(MIGRATIONS, &rows)?;
        Ok(migrations::status(MIGRATIONS, &rows))
    }

    async fn migrate_up(&self) -> Result<Vec<i64>, MigrationError> {
        let mut done = Vec::new();
        loop {
            let mut tx = self
                .writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(map_err)?;
            let rows = applied(&mut tx).await?;
            let Some(next) = migrations::next_pending(MIGRATIONS, &rows)? else {
                tx.commit().await.map_err(map_err)?;
                return Ok(done);
            };
            sqlx::raw_sql(next.up)
                .execute(&mut *tx)
                .await
                .map_err(|e| failed(next, e))?;
            sqlx::query("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)")
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
            let mut tx = self
                .writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(map_err)?;
            let rows = applied(&mut tx).await?;
            let Some(last) = migrations::newest_applied(MIGRATIONS, &rows)? else {
                tx.commit().await.map_err(map_err)?;
                break;
            };
            sqlx::raw_sql(last.down)
                .execute(&mut *tx)
                .await
                .map_err(|e| failed(last, e))?;
            sqlx::query("DELETE FROM schema_migrations WHERE version = ?")
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
