//! SQLite-specific migration behaviour: tamper detection, concurrent starts, pragmas.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

use koryphaios_core::migrations::MigrationError;
use koryphaios_core::store::{SchemaMigrator, Store};
use koryphaios_store_sqlite::{MIGRATIONS, SqliteSettings, SqliteStore};

async fn open(path: &std::path::Path) -> SqliteStore {
    koryphaios_store_sqlite::open(path, &SqliteSettings::default())
        .await
        .expect("open")
}

#[tokio::test]
async fn a_changed_applied_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = open(&path).await;
    store.migrate_up().await.unwrap();
    store.close().await;

    // Someone edits the recorded checksum (as if the embedded SQL had changed since).
    let conn_url = format!("sqlite://{}", path.display());
    let pool = sqlx::SqlitePool::connect(&conn_url).await.unwrap();
    sqlx::query("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let store = open(&path).await;
    assert!(matches!(
        store.migrate_up().await,
        Err(MigrationError::ChecksumMismatch { version: 1, .. })
    ));
    assert!(matches!(
        store.migration_status().await,
        Err(MigrationError::ChecksumMismatch { .. })
    ));
}

#[tokio::test]
async fn concurrent_starts_apply_each_migration_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let (a, b) = (open(&path).await, open(&path).await);
    let (ra, rb) = tokio::join!(a.migrate_up(), b.migrate_up());
    let mut applied = ra.unwrap();
    applied.extend(rb.unwrap());
    applied.sort_unstable();
    let expected: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(
        applied, expected,
        "each migration applied by exactly one of the two"
    );
    assert!(
        a.migration_status()
            .await
            .unwrap()
            .iter()
            .all(|line| line.applied_at.is_some())
    );
}

#[tokio::test]
async fn the_database_runs_in_wal_mode_with_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = open(&path).await;
    store.migrate_up().await.unwrap();
    store.ping().await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    store.close().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn every_migration_has_a_down_script_that_undoes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("k.db")).await;
    store.migrate_up().await.unwrap();
    let reverted = store.migrate_down(MIGRATIONS.len()).await.unwrap();
    assert_eq!(reverted.len(), MIGRATIONS.len());
    // Down leaves only the bookkeeping table behind.
    store.close().await;
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("k.db").display()))
            .await
            .unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(tables, vec!["schema_migrations".to_owned()]);
}
