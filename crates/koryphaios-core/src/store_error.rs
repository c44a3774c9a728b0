//! The error every storage port returns: plain data that the domain types (the audit chain, the
//! migration list) can name without depending on the ports.

/// A storage failure the domain cannot do anything about but report.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or timed out: the caller may retry later (503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug, corrupted data, or a constraint the domain should have checked.
    #[error("database error: {0}")]
    Internal(String),
}

/// Shorthand for storage results.
pub type StoreResult<T> = Result<T, StoreError>;
