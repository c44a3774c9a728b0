//! The migration runner (SPEC §6) and the list of migrations, for every backend.
//!
//! Each pending migration runs in its own transaction from [`Backend::migration`], which keeps
//! processes starting together apart (SQLite's `BEGIN IMMEDIATE`; PostgreSQL's advisory lock) and
//! re-reads `schema_migrations` after, so each migration is applied exactly once. Each backend
//! crate keeps its own SQL files under `migrations/`, with the versions and names listed once in
//! [`embedded_migrations!`](crate::embedded_migrations).

use async_trait::async_trait;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::migrations::{
    self, AppliedMigration, Migration, MigrationError, MigrationStatus,
};
use koryphaios_core::store::SchemaMigrator;

use crate::backend::{Backend, Conn};
use crate::driver::{Columns, Driver, Query};
use crate::store::SqlStore;

/// The schema's migrations, in order, with the calling crate's SQL files
/// (`migrations/NNNN_name.up.sql` and `.down.sql` beside its `Cargo.toml`). A new migration is
/// one line here and one pair of files in each backend crate.
#[macro_export]
macro_rules! embedded_migrations {
    () => {
        $crate::embedded_migrations![
            1 "users_and_sessions" "0001",
            2 "credentials_and_audit" "0002",
            3 "api_keys" "0003",
            4 "audit_chain" "0004",
            5 "audit_chain_head" "0005",
            6 "user_tiers" "0006",
            7 "sealed_keys" "0007",
            8 "agent_tokens" "0008",
        ]
    };
    ($($version:literal $name:literal $number:literal,)*) => {
        &[$(
            ::koryphaios_core::migrations::Migration {
                version: $version,
                name: $name,
                up: include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"), "/migrations/", $number, "_", $name, ".up.sql"
                )),
                down: include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"), "/migrations/", $number, "_", $name, ".down.sql"
                )),
            },
        )*]
    };
}

/// The applied rows, read inside the migration transaction (after its lock was taken).
async fn applied<B: Backend>(conn: &mut Conn<B>) -> Result<Vec<AppliedMigration>, MigrationError> {
    let rows = Query::<B::Db>::new(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version",
    )
    .fetch_all(conn)
    .await
    .map_err(B::map_err)?;
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
        .map_err(|e| MigrationError::Store(B::map_err(e)))
}

fn failed(migration: &Migration, error: sqlx::Error) -> MigrationError {
    MigrationError::Failed {
        version: migration.version,
        name: migration.name.to_owned(),
        reason: error.to_string(),
    }
}

#[async_trait]
impl<B: Backend> SchemaMigrator for SqlStore<B> {
    async fn migration_status(&self) -> Result<Vec<MigrationStatus>, MigrationError> {
        let mut tx = self.backend.migration().await?;
        let rows = applied::<B>(&mut tx).await?;
        tx.commit().await.map_err(B::map_err)?;
        migrations::verify_history(B::MIGRATIONS, &rows)?;
        Ok(migrations::status(B::MIGRATIONS, &rows))
    }

    async fn migrate_up(&self) -> Result<Vec<i64>, MigrationError> {
        let mut done = Vec::new();
        loop {
            let mut tx = self.backend.migration().await?;
            let rows = applied::<B>(&mut tx).await?;
            let Some(next) = migrations::next_pending(B::MIGRATIONS, &rows)? else {
                tx.commit().await.map_err(B::map_err)?;
                return Ok(done);
            };
            B::Db::execute_script(&mut tx, next.up)
                .await
                .map_err(|e| failed(next, e))?;
            Query::<B::Db>::new(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(next.version)
            .bind(next.name)
            .bind(next.checksum())
            .bind(to_unix_ms(time::OffsetDateTime::now_utc()))
            .execute(&mut tx)
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
            let mut tx = self.backend.migration().await?;
            let rows = applied::<B>(&mut tx).await?;
            let Some(last) = migrations::newest_applied(B::MIGRATIONS, &rows)? else {
                tx.commit().await.map_err(B::map_err)?;
                break;
            };
            B::Db::execute_script(&mut tx, last.down)
                .await
                .map_err(|e| failed(last, e))?;
            Query::<B::Db>::new("DELETE FROM schema_migrations WHERE version = $1")
                .bind(last.version)
                .execute(&mut tx)
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
