//! Maps sqlx errors onto the domain's [`StoreError`]: a database that cannot be reached, is out of
//! connections, is shutting down or timed out a statement is "unavailable" (retry later); the rest
//! is internal. The server's own message stays in the error for the logs (PostgreSQL's message
//! names the constraint, never the bound values), never for clients.

use koryphaios_core::store::StoreError;

/// SQLSTATEs that mean "not now" rather than "wrong".
fn is_transient(code: &str) -> bool {
    // 08: connection exception; 53: insufficient resources (e.g. too many connections).
    code.starts_with("08")
        || code.starts_with("53")
        // admin / crash shutdown, cannot connect now (starting up or in recovery)
        || matches!(code, "57P01" | "57P02" | "57P03")
        // statement_timeout or a cancel, lock_timeout
        || matches!(code, "57014" | "55P03")
        // serialization failure, deadlock: the same transaction would succeed if retried
        || matches!(code, "40001" | "40P01")
}

/// Classifies a sqlx error.
pub(crate) fn map_err(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreError::Unavailable(error.to_string()),
        sqlx::Error::Database(ref db) if db.code().is_some_and(|code| is_transient(&code)) => {
            StoreError::Unavailable(error.to_string())
        }
        other => StoreError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_io_failures_are_unavailable() {
        assert!(matches!(
            map_err(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            map_err(sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused
            ))),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            map_err(sqlx::Error::RowNotFound),
            StoreError::Internal(_)
        ));
    }

    #[test]
    fn transient_sqlstates_are_recognised() {
        for code in [
            "08006", "53300", "57P01", "57014", "55P03", "40001", "40P01",
        ] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", "XX000"] {
            assert!(!is_transient(code), "{code}");
        }
    }
}
