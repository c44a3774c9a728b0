//! The migration model shared by every backend (SPEC §6).
//!
//! Backends embed their SQL as [`Migration`]s and apply them; the rules live here: migrations
//! apply in version order, a changed applied migration is refused, and a database that knows a
//! migration this binary does not is refused too (it was migrated by a newer release).

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::secret::hex;

/// One embedded migration with its reverse.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Order of application; unique, ascending.
    pub version: i64,
    /// A short name, e.g. `users_and_sessions`.
    pub name: &'static str,
    /// The forward SQL.
    pub up: &'static str,
    /// The SQL that undoes `up`.
    pub down: &'static str,
}

impl Migration {
    /// SHA-256 of the forward SQL: what is recorded, and compared on every start.
    pub fn checksum(&self) -> String {
        hex(&Sha256::digest(self.up.as_bytes()))
    }
}

/// A row of `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// The version applied.
    pub version: i64,
    /// Its name when it was applied.
    pub name: String,
    /// Its checksum when it was applied.
    pub checksum: String,
    /// When it was applied.
    pub applied_at: OffsetDateTime,
}

/// One line of `koryphaios migrate status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The migration's version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// When it was applied, if it was.
    pub applied_at: Option<OffsetDateTime>,
}

/// Why migrating stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// An applied migration's SQL differs from the one embedded in this binary.
    #[error("migration {version} ({name}) was changed after it was applied: refusing to continue")]
    ChecksumMismatch {
        /// The changed migration.
        version: i64,
        /// Its name.
        name: String,
    },
    /// The database has a migration this binary does not know.
    #[error(
        "the database has migration {version}, which this binary does not know: it was migrated by a newer release"
    )]
    UnknownApplied {
        /// The unknown version.
        version: i64,
    },
    /// A migration's SQL failed.
    #[error("migration {version} ({name}) failed: {reason}")]
    Failed {
        /// The failing migration.
        version: i64,
        /// Its name.
        name: String,
        /// The database's message.
        reason: String,
    },
    /// The store itself failed.
    #[error(transparent)]
    Store(#[from] crate::store_error::StoreError),
}

/// Checks the applied history against the embedded list.
pub fn verify_history(
    known: &[Migration],
    applied: &[AppliedMigration],
) -> Result<(), MigrationError> {
    for row in applied {
        let migration = known.iter().find(|m| m.version == row.version).ok_or(
            MigrationError::UnknownApplied {
                version: row.version,
            },
        )?;
        if migration.checksum() != row.checksum {
            return Err(MigrationError::ChecksumMismatch {
                version: row.version,
                name: migration.name.to_owned(),
            });
        }
    }
    Ok(())
}

/// The next migration to apply, after checking the history.
pub fn next_pending<'a>(
    known: &'a [Migration],
    applied: &[AppliedMigration],
) -> Result<Option<&'a Migration>, MigrationError> {
    verify_history(known, applied)?;
    Ok(known
        .iter()
        .filter(|m| !applied.iter().any(|row| row.version == m.version))
        .min_by_key(|m| m.version))
}

/// The newest applied migration, to revert next, after checking the history.
pub fn newest_applied<'a>(
    known: &'a [Migration],
    applied: &[AppliedMigration],
) -> Result<Option<&'a Migration>, MigrationError> {
    verify_history(known, applied)?;
    Ok(applied
        .iter()
        .map(|row| row.version)
        .max()
        .and_then(|version| known.iter().find(|m| m.version == version)))
}

/// Joins the embedded list with the applied rows for display.
pub fn status(known: &[Migration], applied: &[AppliedMigration]) -> Vec<MigrationStatus> {
    let mut lines: Vec<MigrationStatus> = known
        .iter()
        .map(|m| MigrationStatus {
            version: m.version,
            name: m.name.to_owned(),
            applied_at: applied
                .iter()
                .find(|row| row.version == m.version)
                .map(|row| row.applied_at),
        })
        .collect();
    lines.sort_by_key(|line| line.version);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [Migration; 2] = [
        Migration {
            version: 1,
            name: "one",
            up: "CREATE TABLE a (x INTEGER);",
            down: "DROP TABLE a;",
        },
        Migration {
            version: 2,
            name: "two",
            up: "CREATE TABLE b (x INTEGER);",
            down: "DROP TABLE b;",
        },
    ];

    fn applied(version: i64, checksum: String) -> AppliedMigration {
        AppliedMigration {
            version,
            name: "x".into(),
            checksum,
            applied_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn pending_migrations_come_in_version_order() {
        assert_eq!(
            next_pending(&KNOWN, &[]).unwrap().map(|m| m.version),
            Some(1)
        );
        let first = [applied(1, KNOWN[0].checksum())];
        assert_eq!(
            next_pending(&KNOWN, &first).unwrap().map(|m| m.version),
            Some(2)
        );
        assert_eq!(
            newest_applied(&KNOWN, &first).unwrap().map(|m| m.version),
            Some(1)
        );
    }

    #[test]
    fn a_changed_applied_migration_is_refused() {
        let tampered = [applied(1, "0".repeat(64))];
        assert!(matches!(
            next_pending(&KNOWN, &tampered),
            Err(MigrationError::ChecksumMismatch { version: 1, .. })
        ));
    }

    #[test]
    fn a_migration_from_a_newer_release_is_refused() {
        let newer = [applied(9, "0".repeat(64))];
        assert!(matches!(
            next_pending(&KNOWN, &newer),
            Err(MigrationError::UnknownApplied { version: 9 })
        ));
    }

    #[test]
    fn status_lists_every_known_migration() {
        let lines = status(&KNOWN, &[applied(1, KNOWN[0].checksum())]);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].applied_at.is_some() && lines[1].applied_at.is_none());
    }
}
