//! Runs the storage contract of `koryphaios-core` against SQLite, on a real file per test.
#![expect(clippy::expect_used, reason = "tests panic on failure")]

use std::sync::Arc;

use koryphaios_core::store::{SchemaMigrator, Store};
use koryphaios_store_sqlite::SqliteSettings;

async fn fresh_store() -> Arc<dyn Store> {
    // The directory is leaked on purpose: it must outlive the store, and the OS temp dir is cleaned.
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let store = koryphaios_store_sqlite::open(&dir.join("test.db"), &SqliteSettings::default())
        .await
        .expect("open");
    store.migrate_up().await.expect("migrate");
    Arc::new(store)
}

koryphaios_core::store_contract_tests!(fresh_store().await);
