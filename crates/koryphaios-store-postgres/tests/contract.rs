//! Runs the storage contract of `koryphaios-core` against PostgreSQL, on a new database per test.

use std::sync::Arc;

use koryphaios_core::store::Store;

async fn fresh_store() -> Arc<dyn Store> {
    Arc::new(koryphaios_store_postgres::testing::fresh_store().await)
}

koryphaios_core::store_contract_tests!(fresh_store().await);
