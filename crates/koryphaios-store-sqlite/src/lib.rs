//! The storage ports of `koryphaios-core` on SQLite: the [`Backend`] of the shared SQL store
//! (`koryphaios-store-sql`), and the SQLite migrations.
//!
//! One file holds everything (the embedded default). Writes go through a single-connection pool
//! with `BEGIN IMMEDIATE`, so writers queue in process instead of failing with `SQLITE_BUSY`, and
//! that single writer is what orders every check-then-write (no row locks are needed); reads use a
//! pool of read-only connections, which WAL lets run beside the writer.

mod error;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use koryphaios_core::migrations::Migration;
use koryphaios_core::store::{StoreError, StoreResult};
use koryphaios_store_sql::{Backend, Conn, SqlStore};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::error::map_err;

/// Every SQLite migration, in order.
pub const MIGRATIONS: &[Migration] = koryphaios_store_sql::embedded_migrations!();

/// The store on SQLite.
pub type SqliteStore = SqlStore<SqliteBackend>;

/// Tuning for the SQLite pools.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// How many read connections to keep.
    pub read_connections: u32,
    /// How long a statement waits for a lock held by another process.
    pub busy_timeout: Duration,
    /// How long a caller waits for a free connection.
    pub acquire_timeout: Duration,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self {
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The SQLite pools: one writer, several readers.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    writer: SqlitePool,
    reader: SqlitePool,
}

/// Opens (creating if missing) the database at `path`. Does not migrate: call `migrate_up`.
pub async fn open(path: &Path, settings: &SqliteSettings) -> StoreResult<SqliteStore> {
    let base = SqliteConnectOptions::from_str("sqlite:")
        .map_err(map_err)?
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(settings.busy_timeout);
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(base.clone().create_if_missing(true))
        .await
        .map_err(map_err)?;
    let reader = SqlitePoolOptions::new()
        .max_connections(settings.read_connections.max(1))
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(base.read_only(true))
        .await
        .map_err(map_err)?;
    Ok(SqlStore::new(SqliteBackend { writer, reader }))
}

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT";

impl Backend for SqliteBackend {
    type Db = Sqlite;
    const NAME: &'static str = "sqlite";
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
    // The single writer holds the database for the whole write transaction.
    const FOR_UPDATE: &'static str = "";
    const FOR_SHARE: &'static str = "";
    // `username` is declared `COLLATE NOCASE`, like its unique index.
    const USERNAME_MATCHES: &'static str = "username = $1";
    /// A virtual generated column of the metadata (migration 0008), indexed.
    const RUN_ID: &'static str = "run_id";
    const UNLINKED_ORDER: &'static str = "rowid";
    const AUDIT_BATCH_IN_ONE_STATEMENT: bool = false;

    async fn read(&self) -> StoreResult<PoolConnection<Sqlite>> {
        self.reader.acquire().await.map_err(map_err)
    }

    async fn write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }

    async fn migration(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        let mut tx = self.write().await?;
        sqlx::query(CREATE_MIGRATIONS_TABLE)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        Ok(tx)
    }

    async fn lock_users(_: &mut Conn<Self>) -> StoreResult<()> {
        Ok(())
    }

    async fn lock_audit_chain(_: &mut Conn<Self>) -> StoreResult<()> {
        Ok(())
    }

    fn map_err(error: sqlx::Error) -> StoreError {
        map_err(error)
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}
