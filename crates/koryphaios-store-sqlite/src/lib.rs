//! The storage ports of `koryphaios-core` on SQLite, through sqlx.
//!
//! One file holds everything (the embedded default). Writes go through a single-connection pool
//! with `BEGIN IMMEDIATE`, so writers queue in process instead of failing with `SQLITE_BUSY`;
//! reads use a pool of read-only connections, which WAL lets run beside the writer.

mod api_keys;
mod audit;
mod credentials;
mod error;
mod group_commit;
mod keywrap;
mod migrate;
mod sealed_keys;
mod sessions;
mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use koryphaios_core::store::{Store, StoreResult};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use migrate::MIGRATIONS;

use crate::error::map_err;

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

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    group_commit: koryphaios_core::group_commit::GroupCommit,
    chain: audit::Chain,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`. Does not migrate: call `migrate_up`.
    pub async fn open(path: &Path, settings: &SqliteSettings) -> StoreResult<Self> {
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
        let chain = audit::Chain::default();
        let group_commit =
            koryphaios_core::group_commit::GroupCommit::start(group_commit::SqliteBatchWriter {
                writer: writer.clone(),
                chain: chain.clone(),
            });
        Ok(Self {
            writer,
            reader,
            group_commit,
            chain,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}
