//! The storage ports of `koryphaios-core` on PostgreSQL: the [`Backend`] of the shared SQL store
//! (`koryphaios-store-sql`, which holds every query), and the PostgreSQL migrations.
//!
//! Behaviour is the SQLite store's, method for method (the contract suite in
//! `koryphaios_core::testing` holds both to it); only how each guarantee is obtained differs,
//! and that is what this crate supplies.
//!
//! - **Pool.** One [`PgPool`] of up to [`PostgresSettings::max_connections`]. Every connection
//!   starts with a `statement_timeout` (startup option), so a stuck query fails as
//!   `StoreError::Unavailable` instead of hanging a request.
//! - **Transactions.** Every write method is one transaction at READ COMMITTED; a change that
//!   carries an `AuditEntry` writes it in that same transaction, last, under the audit chain's
//!   advisory lock ([`AUDIT_CHAIN_LOCK`]), which serialises chain writers across instances. Hot
//!   writes are group-committed, so a batch pays the lock and the commit once.
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

mod error;

#[cfg(feature = "test-support")]
pub mod testing;

use std::str::FromStr;
use std::time::Duration;

use koryphaios_core::migrations::Migration;
use koryphaios_core::store::{StoreError, StoreResult};
use koryphaios_store_sql::{Backend, Conn, SqlStore};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::error::map_err;

/// Every PostgreSQL migration, in order (the same versions and names as SQLite's).
pub const MIGRATIONS: &[Migration] = koryphaios_store_sql::embedded_migrations!();

/// The advisory lock key every Koryphaios process migrating this database queues on
/// (the ASCII bytes of "korymigr").
pub const MIGRATION_LOCK: i64 = 0x6b6f_7279_6d69_6772;

/// The advisory lock every audit chain writer holds until its transaction ends, on every
/// instance (the ASCII bytes of "koryaudt").
pub const AUDIT_CHAIN_LOCK: i64 = 0x6b6f_7279_6175_6474;

/// The store on PostgreSQL.
pub type PostgresStore = SqlStore<PostgresBackend>;

/// Tuning for the PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// The most connections the pool opens.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// How long a caller waits for a free connection (opening one included).
    pub acquire_timeout: Duration,
    /// How long [`connect`] waits for its first connection.
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

/// The PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PostgresBackend {
    pool: PgPool,
}

/// Connects to the database at `url` (`postgres://user:password@host:port/database?…`) and
/// checks one connection. Does not migrate: call `migrate_up`.
pub async fn connect(url: &str, settings: &PostgresSettings) -> StoreResult<PostgresStore> {
    let options = PgConnectOptions::from_str(url)
        // The URL may hold a password: report only that it is malformed.
        .map_err(|_| StoreError::Internal("invalid PostgreSQL connection URL".into()))?
        .application_name("koryphaios")
        .options([
            (
                "statement_timeout",
                settings.statement_timeout.as_millis().to_string(),
            ),
            // The locks here rely on READ COMMITTED (each statement sees what the previous lock
            // holder committed), whatever the server's default is.
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
    Ok(SqlStore::new(PostgresBackend { pool }))
}

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

async fn advisory_lock(conn: &mut Conn<PostgresBackend>, key: i64) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

impl Backend for PostgresBackend {
    type Db = Postgres;
    const NAME: &'static str = "postgres";
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    // Conflicts with an UPDATE of the row (a revocation): one waits for the other, and whichever
    // is second sees the first's result.
    const FOR_SHARE: &'static str = " FOR SHARE";
    // `lower` under "C" folds ASCII only, as SQLite's NOCASE does; this is the unique index's
    // expression, so the lookup uses it.
    const USERNAME_MATCHES: &'static str = r#"lower(username) = lower($1::text COLLATE "C")"#;
    /// The expression of the index migration 0008 builds (no stored column: adding one would
    /// rewrite the whole table under an exclusive lock).
    const RUN_ID: &'static str = "(metadata::jsonb ->> 'runId')";
    const UNLINKED_ORDER: &'static str = "occurred_at, id";
    const AUDIT_BATCH_IN_ONE_STATEMENT: bool = true;

    async fn read(&self) -> StoreResult<PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(map_err)
    }

    async fn write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(map_err)
    }

    async fn migration(&self) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.write().await?;
        // A migration (an index build on a big table) may outlast the service's statement
        // timeout, and so may the wait for another process's migration: neither is cut short.
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        advisory_lock(&mut tx, MIGRATION_LOCK).await?;
        // Created under the lock (concurrent creations could otherwise collide), and only when
        // missing, so a routine start does not log "already exists" notices.
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL")
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
        if !exists {
            sqlx::query(CREATE_MIGRATIONS_TABLE)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        Ok(tx)
    }

    async fn lock_users(conn: &mut Conn<Self>) -> StoreResult<()> {
        // The mode conflicts with itself, not with readers.
        sqlx::query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
            .execute(conn)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn lock_audit_chain(conn: &mut Conn<Self>) -> StoreResult<()> {
        advisory_lock(conn, AUDIT_CHAIN_LOCK).await
    }

    fn map_err(error: sqlx::Error) -> StoreError {
        map_err(error)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
