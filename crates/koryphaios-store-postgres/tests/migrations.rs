//! What only PostgreSQL has: connection settings (the statement timeout), an unreachable server
//! reported as unavailable, and a malformed URL that does not echo its password (the migration
//! runner is tested on both backends in `koryphaios-store-sql`).
#![expect(clippy::expect_used, reason = "tests panic on failure")]

use std::time::Duration;

use koryphaios_core::store::{SchemaMigrator, Store, StoreError, UserStore};
use koryphaios_store_postgres::testing::{fresh_database_url, test_settings};
use koryphaios_store_postgres::{PostgresSettings, PostgresStore};
use sqlx::PgPool;

async fn connect(url: &str) -> PostgresStore {
    koryphaios_store_postgres::connect(url, &test_settings())
        .await
        .expect("connect")
}

#[tokio::test]
async fn the_store_reports_its_backend_and_answers_pings() {
    let store = connect(&fresh_database_url().await).await;
    store.ping().await.unwrap();
    assert_eq!(store.backend(), "postgres");
    // Connecting does not migrate.
    assert!(
        store
            .migration_status()
            .await
            .unwrap()
            .iter()
            .all(|line| line.applied_at.is_none())
    );
    store.close().await;
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_statement_past_the_timeout_is_cut_short_as_unavailable() {
    let url = fresh_database_url().await;
    let settings = PostgresSettings {
        statement_timeout: Duration::from_millis(300),
        ..test_settings()
    };
    let store = koryphaios_store_postgres::connect(&url, &settings)
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    // Another session holds the users table, so the store's read waits on it.
    let pool = PgPool::connect(&url).await.unwrap();
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let result = store.count_users().await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    blocker.rollback().await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 0);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let settings = PostgresSettings {
        acquire_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(2),
        ..PostgresSettings::default()
    };
    // Port 1 on loopback: nothing listens there.
    let result =
        koryphaios_store_postgres::connect("postgres://postgres@127.0.0.1:1/none", &settings).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_malformed_url_does_not_echo_its_password() {
    let result = koryphaios_store_postgres::connect(
        "postgres://u:hunter2@[bad/db",
        &PostgresSettings::default(),
    )
    .await;
    let message = result.expect_err("malformed").to_string();
    assert!(!message.contains("hunter2"), "{message}");
}
