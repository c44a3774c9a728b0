//! What both databases report alike.

/// Whether the error is a UNIQUE (or primary key) constraint violation.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}
