//! What only SQLite has: the journal mode and pragmas it runs with (the migration runner is
//! tested on both backends in `koryphaios-store-sql`).
#![expect(clippy::expect_used, reason = "tests panic on failure")]

use koryphaios_core::store::{SchemaMigrator, Store};
use koryphaios_store_sqlite::{SqliteSettings, SqliteStore};

async fn open(path: &std::path::Path) -> SqliteStore {
    koryphaios_store_sqlite::open(path, &SqliteSettings::default())
        .await
        .expect("open")
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
