//! [`Backend`]: what each database crate supplies to the shared store, and nothing more — its
//! pools and how a transaction starts, the locks that stand in for SQLite's single writer on
//! PostgreSQL, how its errors classify, and the few SQL fragments the dialects spell differently.

use std::fmt::Debug;
use std::future::Future;

use koryphaios_core::migrations::Migration;
use koryphaios_core::store::{StoreError, StoreResult};
use sqlx::Transaction;
use sqlx::pool::PoolConnection;

use crate::driver::Driver;

/// A connection of backend `B`'s database.
pub type Conn<B> = <<B as Backend>::Db as sqlx::Database>::Connection;

/// One database's pools, transactions, locks and dialect.
pub trait Backend: Debug + Clone + Send + Sync + 'static {
    /// The sqlx database.
    type Db: Driver;

    /// The backend's name, as `Store::backend` reports it (`sqlite`, `postgres`).
    const NAME: &'static str;

    /// Every migration of this backend, in order (see [`crate::embedded_migrations!`]).
    const MIGRATIONS: &'static [Migration];

    /// Appended to a `SELECT` in a write transaction that must lock the rows it reads until the
    /// commit (`FOR UPDATE` on PostgreSQL; nothing on SQLite, whose writer is single).
    const FOR_UPDATE: &'static str;

    /// Like [`Backend::FOR_UPDATE`], for a read that only must keep the rows from changing.
    const FOR_SHARE: &'static str;

    /// The predicate matching column `username` to parameter `$1` case-insensitively, in the form
    /// the backend's unique index on usernames can serve.
    const USERNAME_MATCHES: &'static str;

    /// An audit record's run id (`metadata.runId`), as its index on the backend serves it.
    const RUN_ID: &'static str;

    /// The order in which records written before the audit chain existed are linked into it.
    const UNLINKED_ORDER: &'static str;

    /// How a batch of audit records is written: `true`, the records and the chain head in one
    /// statement (an `INSERT` in a `WITH` clause; worth it where each statement is a network round
    /// trip); `false`, one prepared statement reused per record, then the head (in process).
    const AUDIT_BATCH_IN_ONE_STATEMENT: bool;

    /// A connection for reads.
    fn read(&self) -> impl Future<Output = StoreResult<PoolConnection<Self::Db>>> + Send;

    /// A transaction for a write (one method of a port, or one group-commit batch).
    fn write(&self) -> impl Future<Output = StoreResult<Transaction<'static, Self::Db>>> + Send;

    /// A transaction for one migration step: processes starting together are kept apart until it
    /// ends, and the `schema_migrations` table exists.
    fn migration(&self)
    -> impl Future<Output = StoreResult<Transaction<'static, Self::Db>>> + Send;

    /// Serialises writers that count or check the `users` table as a whole (first user becomes
    /// admin; the last active admin stays), until the transaction ends.
    fn lock_users(conn: &mut Conn<Self>) -> impl Future<Output = StoreResult<()>> + Send;

    /// Serialises writers of the audit chain, across instances, until the transaction ends.
    fn lock_audit_chain(conn: &mut Conn<Self>) -> impl Future<Output = StoreResult<()>> + Send;

    /// Classifies a driver error: unavailable (retry later) or internal.
    fn map_err(error: sqlx::Error) -> StoreError;

    /// Closes the pools.
    fn close(&self) -> impl Future<Output = ()> + Send;
}
