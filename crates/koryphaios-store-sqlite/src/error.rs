//! Maps sqlx errors onto the domain's [`StoreError`]: pool exhaustion and I/O are "unavailable",
//! the rest internal. The database's own text stays in the error for the logs, never for clients.

use koryphaios_core::store::StoreError;

/// Classifies a sqlx error.
pub(crate) fn map_err(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(error.to_string())
        }
        sqlx::Error::Database(ref db)
            if db.code().is_some_and(|code| code == "5" || code == "6") =>
        {
            // SQLITE_BUSY / SQLITE_LOCKED after the busy timeout: another process holds the lock.
            StoreError::Unavailable(error.to_string())
        }
        other => StoreError::Internal(other.to_string()),
    }
}
