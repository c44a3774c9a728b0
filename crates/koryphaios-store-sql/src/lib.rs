//! The storage ports of `koryphaios-core`, written once in SQL for every sqlx backend.
//!
//! [`SqlStore<B>`] implements every port; a backend crate supplies only a [`Backend`]: its pools
//! and how a write transaction starts, the locks that stand in for SQLite's single writer on
//! PostgreSQL, its error classification, a few dialect fragments, and its migration files. So a
//! query, a row mapping or a new column is written in one place (ADR 0012).
//!
//! - **Statements** use `$1`, `$2`, … placeholders (both databases accept them) through
//!   [`Query`], which binds only types both drivers encode ([`Bindable`]) and reads rows through
//!   [`Columns`]; [`Driver`] is the small surface implemented for the two sqlx databases.
//! - **Portable SQL.** `CASE` instead of `GREATEST`/`MAX(a, b)`, `IS NOT DISTINCT FROM`,
//!   `NOT success` on booleans (SQLite stores 0/1), row values in keyset pagination.
//! - **Transactions.** Every write method is one transaction from [`Backend::write`]; a change
//!   that carries an `AuditEntry` writes it last in that transaction through
//!   `audit_chain::commit_with_audit` (batches: `insert_audit_batch`), the one path every audit
//!   write goes through, under
//!   [`Backend::lock_audit_chain`]. Reads that must hold rows until the commit append
//!   [`Backend::FOR_UPDATE`] (empty on SQLite, whose writer is single).
//! - **Group commit.** Hot writes (reveal, credential creation, standalone audit records) are
//!   batched by `koryphaios_core::group_commit` and applied by one batch writer for both.

mod api_keys;
mod audit;
mod audit_chain;
mod backend;
mod credential_rows;
mod credentials;
mod driver;
mod error;
mod families;
mod group_commit;
mod keywrap;
mod migrate;
mod rows;
mod sealed_keys;
mod sessions;
mod store;
mod tokens;
mod users;

pub use backend::{Backend, Conn};
pub use driver::{Bindable, Columns, Decodable, Driver, Query, SqlText};
pub use error::is_unique_violation;
pub use store::SqlStore;
