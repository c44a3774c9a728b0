//! PostgreSQL-specific migration and connection behaviour: tamper detection, concurrent starts,
//! real down scripts, the schema's own rules, and an unreachable server reported as unavailable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

use std::time::Duration;

use koryphaios_core::ids::UserId;
use koryphaios_core::migrations::MigrationError;
use koryphaios_core::store::{SchemaMigrator, Store, StoreError, UserStore};
use koryphaios_store_postgres::testing::{fresh_database_url, test_settings};
use koryphaios_store_postgres::{MIGRATIONS, PostgresSettings, PostgresStore};
use sqlx::PgPool;

async fn connect(url: &str) -> PostgresStore {
    koryphaios_store_postgres::connect(url, &test_settings())
        .await
        .expect("connect")
}

#[tokio::test]
async fn a_changed_applied_migration_is_refused() {
    let url = fresh_database_url().await;
    let store = connect(&url).await;
    store.migrate_up().await.unwrap();
    store.close().await;

    // Someone edits the recorded checksum (as if the embedded SQL had changed since).
    let pool = PgPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let store = connect(&url).await;
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

#[tokio::test]
async fn a_migration_from_a_newer_release_is_refused() {
    let url = fresh_database_url().await;
    let store = connect(&url).await;
    store.migrate_up().await.unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (999, 'future', 'x', 0)")
        .execute(&pool)
        .await
        .unwrap();
    assert!(matches!(
        store.migrate_up().await,
        Err(MigrationError::UnknownApplied { version: 999 })
    ));
}

#[tokio::test]
async fn concurrent_starts_apply_each_migration_once() {
    let url = fresh_database_url().await;
    let (a, b) = (connect(&url).await, connect(&url).await);
    let (ra, rb) = tokio::join!(a.migrate_up(), b.migrate_up());
    let mut applied = ra.unwrap();
    applied.extend(rb.unwrap());
    applied.sort_unstable();
    let expected: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(
        applied, expected,
        "each migration applied by exactly one of the two"
    );
    for store in [&a, &b] {
        assert!(
            store
                .migration_status()
                .await
                .unwrap()
                .iter()
                .all(|line| line.applied_at.is_some())
        );
    }
    let pool = PgPool::connect(&url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, i64::try_from(MIGRATIONS.len()).unwrap());
}

#[tokio::test]
async fn many_concurrent_starts_apply_each_migration_once() {
    let url = fresh_database_url().await;
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(connect(&url).await);
    }
    let mut tasks = Vec::new();
    for store in stores {
        tasks.push(tokio::spawn(async move { store.migrate_up().await }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        applied.extend(task.await.unwrap().unwrap());
    }
    applied.sort_unstable();
    let expected: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, expected);
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

#[tokio::test]
async fn usernames_are_unique_ignoring_ascii_case_only() {
    let url = fresh_database_url().await;
    let store = connect(&url).await;
    store.migrate_up().await.unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    let insert = "INSERT INTO users (id, username, password_hash, role, created_at, updated_at)
                  VALUES ($1, $2, 'x', 'user', 0, 0)";
    sqlx::query(insert)
        .bind(UserId::generate().as_str())
        .bind("Ada")
        .execute(&pool)
        .await
        .unwrap();
    let duplicate = sqlx::query(insert)
        .bind(UserId::generate().as_str())
        .bind("aDA")
        .execute(&pool)
        .await;
    assert!(matches!(duplicate, Err(sqlx::Error::Database(ref e)) if e.is_unique_violation()));
    // Like SQLite's NOCASE, only ASCII folds: the Kelvin sign is not a "k".
    sqlx::query(insert)
        .bind(UserId::generate().as_str())
        .bind("kim")
        .execute(&pool)
        .await
        .unwrap();
    assert!(
        store
            .find_credentials("\u{212A}im")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.find_credentials("KIM").await.unwrap().is_some());
}

#[tokio::test]
async fn every_migration_has_a_down_script_that_undoes_it() {
    let url = fresh_database_url().await;
    let store = connect(&url).await;
    store.migrate_up().await.unwrap();
    let reverted = store.migrate_down(MIGRATIONS.len()).await.unwrap();
    assert_eq!(
        reverted,
        MIGRATIONS
            .iter()
            .rev()
            .map(|m| m.version)
            .collect::<Vec<_>>()
    );
    assert!(store.migrate_down(1).await.unwrap().is_empty());
    store.close().await;
    // Down leaves only the bookkeeping table behind.
    let pool = PgPool::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' ORDER BY table_name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(tables, vec!["schema_migrations".to_owned()]);
}
