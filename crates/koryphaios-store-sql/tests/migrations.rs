//! The migration runner on both backends: a changed or unknown applied migration is refused,
//! processes starting together apply each migration exactly once, every migration has a down
//! script that undoes it, and the schema's own rules hold (usernames unique ignoring ASCII case).
#![expect(clippy::unwrap_used, reason = "tests panic on failure")]

mod common;

use common::{Backend, TestDb};
use koryphaios_core::ids::UserId;
use koryphaios_core::migrations::MigrationError;

async fn a_changed_applied_migration_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    db.migrated().await.close().await;
    // Someone edits the recorded checksum (as if the embedded SQL had changed since).
    db.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
        .await;
    let store = db.open().await;
    assert!(matches!(
        store.migrate_up().await,
        Err(MigrationError::ChecksumMismatch { version: 1, .. })
    ));
    assert!(matches!(
        store.migration_status().await,
        Err(MigrationError::ChecksumMismatch { .. })
    ));
    assert!(matches!(
        store.migrate_down(1).await,
        Err(MigrationError::ChecksumMismatch { .. })
    ));
}

async fn a_migration_from_a_newer_release_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.migrated().await;
    db.execute(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at)
         VALUES (999, 'future', 'x', 0)",
    )
    .await;
    assert!(matches!(
        store.migrate_up().await,
        Err(MigrationError::UnknownApplied { version: 999 })
    ));
}

async fn concurrent_starts_apply_each_migration_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(db.open().await);
    }
    let mut tasks = Vec::new();
    for store in &stores {
        let store = std::sync::Arc::clone(store);
        tasks.push(tokio::spawn(async move { store.migrate_up().await }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        applied.extend(task.await.unwrap().unwrap());
    }
    applied.sort_unstable();
    let expected: Vec<i64> = db.migrations().iter().map(|m| m.version).collect();
    assert_eq!(
        applied, expected,
        "each migration applied by exactly one of the starts"
    );
    for store in &stores {
        assert!(
            store
                .migration_status()
                .await
                .unwrap()
                .iter()
                .all(|line| line.applied_at.is_some())
        );
    }
    assert_eq!(
        db.texts("SELECT name FROM schema_migrations").await.len(),
        db.migrations().len()
    );
}

async fn every_migration_has_a_down_script_that_undoes_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.migrated().await;
    let reverted = store.migrate_down(db.migrations().len()).await.unwrap();
    assert_eq!(
        reverted,
        db.migrations()
            .iter()
            .rev()
            .map(|m| m.version)
            .collect::<Vec<_>>()
    );
    assert!(store.migrate_down(1).await.unwrap().is_empty());
    store.close().await;
    // Down leaves only the bookkeeping table behind.
    assert_eq!(db.tables().await, vec!["schema_migrations".to_owned()]);
}

async fn usernames_are_unique_ignoring_ascii_case_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.migrated().await;
    let insert = |name: &str| {
        format!(
            "INSERT INTO users (id, username, password_hash, role, created_at, updated_at)
             VALUES ('{}', '{name}', 'x', 'user', 0, 0)",
            UserId::generate()
        )
    };
    db.execute(&insert("Ada")).await;
    let duplicate = db.try_execute(&insert("aDA")).await;
    assert!(
        matches!(duplicate, Err(sqlx::Error::Database(ref e)) if e.is_unique_violation()),
        "{duplicate:?}"
    );
    // Like SQLite's NOCASE, only ASCII folds: the Kelvin sign is not a "k".
    db.execute(&insert("kim")).await;
    assert!(
        store
            .find_credentials("\u{212A}im")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.find_credentials("KIM").await.unwrap().is_some());
    assert!(store.find_credentials("aDA").await.unwrap().is_some());
}

on_both_backends!(
    a_changed_applied_migration_is_refused,
    a_migration_from_a_newer_release_is_refused,
    concurrent_starts_apply_each_migration_once,
    every_migration_has_a_down_script_that_undoes_it,
    usernames_are_unique_ignoring_ascii_case_only,
);
