//! (feature `test-support`) Throwaway databases for tests: each call creates a brand-new,
//! empty database named `kor_test_<uuid>` on the server at `KORYPHAIOS_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`), so tests never share state.
#![expect(
    clippy::expect_used,
    reason = "test-support code: a test without its database must fail loudly"
)]

use sqlx::{Connection, PgConnection};

use crate::{PostgresSettings, PostgresStore};
use koryphaios_core::store::SchemaMigrator;

/// The variable naming the server (and a database on it to connect to) that tests use.
pub const TEST_URL_VARIABLE: &str = "KORYPHAIOS_TEST_POSTGRES_URL";
/// Used when [`TEST_URL_VARIABLE`] is unset.
pub const DEFAULT_TEST_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Every database made here starts with this, so they are easy to find and drop.
pub const DATABASE_PREFIX: &str = "kor_test_";

/// The URL of the test server's maintenance database.
pub fn admin_url() -> String {
    std::env::var(TEST_URL_VARIABLE).unwrap_or_else(|_| DEFAULT_TEST_URL.to_owned())
}

/// `url` with its database (the path) replaced by `database`; query parameters are kept.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = base[authority_start..]
        .find('/')
        .map_or(base, |slash| &base[..authority_start + slash]);
    match query {
        Some(query) => format!("{root}/{database}?{query}"),
        None => format!("{root}/{database}"),
    }
}

/// Creates a new empty database and returns its URL. Panics if the server is unreachable.
pub async fn fresh_database_url() -> String {
    let admin = admin_url();
    let name = format!("{DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!("cannot reach the test PostgreSQL (set {TEST_URL_VARIABLE}): {e}")
    });
    // The name is ours (prefix + hex): nothing to escape.
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    conn.close().await.expect("close the admin connection");
    with_database(&admin, &name)
}

/// A store on a fresh database, migrated to the newest schema.
pub async fn fresh_store() -> PostgresStore {
    let store = crate::connect(&fresh_database_url().await, &test_settings())
        .await
        .expect("connect to the test database");
    store.migrate_up().await.expect("migrate the test database");
    store
}

/// A fresh, migrated store with the storage contract's audit key installed (ready for writes).
pub async fn keyed_store() -> PostgresStore {
    use koryphaios_core::store::AuditStore as _;
    let store = fresh_store().await;
    store
        .install_audit_key(std::sync::Arc::new(
            koryphaios_core::testing::contract_audit_key(),
        ))
        .await
        .expect("install the audit key");
    store
}

/// Pool settings for tests: small pools, since many tests run at once against one server.
pub fn test_settings() -> PostgresSettings {
    PostgresSettings {
        max_connections: 4,
        ..PostgresSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/postgres?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }
}
