//! The storage ports of `koryphaios-core` on PostgreSQL, through sqlx.
//!
//! Behaviour is the SQLite store's, method for method (the contract suite in
//! `koryphaios_core::testing` holds both to it); only how each guarantee is obtained differs.
//!
//! - **Pool.** One [`PgPool`] of up to [`PostgresSettings::max_connections`]. Every connection
//!   starts with a `statement_timeout` (startup option), so a stuck query fails as
//!   `StoreError::Unavailable` instead of hanging a request.
//! - **Transactions.** Every write method is one transaction at READ COMMITTED; a change that
//!   carries an `AuditEntry` writes it in that same transaction through `audit::insert_audit`, the
//!   one function every audit write goes through. There is no group commit: PostgreSQL has real
//!   concurrent writers.
//! - **What SQLite got from its single writer is made explicit:**
//!   - *first user becomes admin*: `register_user` takes `LOCK TABLE users IN SHARE ROW EXCLUSIVE
//!     MODE` (it conflicts with itself), so "is the table empty?" and the insert are one step and
//!     two concurrent first registrations yield exactly one admin;
//!   - *refresh rotation and reuse detection*: `rotate_refresh_token` locks the token's family row
//!     and then the token row (`SELECT … FOR UPDATE`), so each token is spent once and a replay
//!     racing its rotation sees it spent (family first, like the cascade of a purge);
//!   - *credential version compare-and-swap*: `add_credential_version` reads `current_version`
//!     `FOR UPDATE`; a concurrent rotation waits, re-reads, and gets `Conflict`;
//!   - *re-wrap compare-and-swap, revoke, roll, soft delete, updates*: single guarded `UPDATE`s
//!     (`… WHERE <old values>` / `… AND revoked_at IS NULL`); PostgreSQL re-checks the guard on
//!     the row's newest version after waiting for its lock, so exactly one racer wins;
//!   - *batched usage counts*: updated in key-id order, so two flushes cannot deadlock.
//! - **Migrations.** Embedded SQL with the same versions and names as SQLite, each applied in its
//!   own transaction holding `pg_advisory_xact_lock(MIGRATION_LOCK)` and re-reading
//!   `schema_migrations`, so processes starting together apply each migration exactly once.
//!   Migration transactions run without the statement timeout (`SET LOCAL statement_timeout = 0`).
//!   [`PostgresStore::connect`] does not migrate: the caller calls `migrate_up`.
//! - **Errors.** Pool timeouts, I/O, and SQLSTATEs meaning "not now" (connection classes, too many
//!   connections, shutdown, statement/lock timeout, deadlock, serialization failure) become
//!   `StoreError::Unavailable`; everything else `Internal`.
//! - **Schema.** Instants are BIGINT Unix milliseconds and JSON is TEXT, as in SQLite; booleans are
//!   BOOLEAN and blobs BYTEA. Text keys are `COLLATE "C"` (bytewise, like SQLite's BINARY), and
//!   usernames are unique on `lower(username)` under "C", which folds ASCII only, like NOCASE.

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

#[cfg(feature = "test-support")]
pub mod testing;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use koryphaios_core::store::{Store, StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub use migrate::{MIGRATION_LOCK, MIGRATIONS};

use crate::error::map_err;

/// Tuning for the PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// The most connections the pool opens.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// How long a caller waits for a free connection (opening one included).
    pub acquire_timeout: Duration,
    /// How long [`PostgresStore::connect`] waits for its first connection.
    pub connect_timeout: Duration,
    /// The server-side limit on any one statement (`statement_timeout`); zero disables it.
    pub statement_timeout: Duration,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    chain: koryphaios_core::audit::chain::InstalledKey,
    group_commit: koryphaios_core::group_commit::GroupCommit,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database?…`) and
    /// checks one connection. Does not migrate: call `migrate_up`.
    pub async fn connect(url: &str, settings: &PostgresSettings) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            // The URL may hold a password: report only that it is malformed.
            .map_err(|_| StoreError::Internal("invalid PostgreSQL connection URL".into()))?
            .application_name("koryphaios")
            .options([
                (
                    "statement_timeout",
                    settings.statement_timeout.as_millis().to_string(),
                ),
                // The locks in this crate rely on READ COMMITTED (each statement sees what the
                // previous lock holder committed), whatever the server's default is.
                ("default_transaction_isolation", "read committed".to_owned()),
            ]);
        let connecting = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options);
        let pool = tokio::time::timeout(settings.connect_timeout, connecting)
            .await
            .map_err(|_| StoreError::Unavailable("timed out connecting to PostgreSQL".into()))?
            .map_err(map_err)?;
        let chain = koryphaios_core::audit::chain::InstalledKey::default();
        let group_commit =
            koryphaios_core::group_commit::GroupCommit::start(group_commit::PgBatchWriter {
                pool: pool.clone(),
                chain: chain.clone(),
            });
        Ok(Self {
            pool,
            chain,
            group_commit,
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
