//! One database of either backend, for the tests that hold the shared SQL store to its guarantees
//! on SQLite and on PostgreSQL alike: open stores on it (several, like several instances), and
//! reach under them with raw SQL (tampering, a failing audit log, the schema left by `down`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "tests panic on failure; not every test file uses every helper"
)]

use std::sync::Arc;

use koryphaios_core::api_keys::{ApiKey, Tier};
use koryphaios_core::audit::chain::AuditKey;
use koryphaios_core::audit::{AuditEntry, RequestContext};
use koryphaios_core::credentials::{Credential, SealedVersion};
use koryphaios_core::envelope::WrappedDek;
use koryphaios_core::ids::{ApiKeyId, CredentialId, FamilyId, UserId};
use koryphaios_core::migrations::Migration;
use koryphaios_core::scope::{Scope, ScopeSet};
use koryphaios_core::store::Store;
use koryphaios_core::testing::contract_audit_key;
use koryphaios_core::users::{NewUser, PasswordHash, RegistrationPolicy, User, Username};
use koryphaios_core::{AuthMethod, Principal};
use koryphaios_store_postgres::testing::{fresh_database_url, test_settings};
use koryphaios_store_sqlite::SqliteSettings;
use sqlx::Connection as _;
use time::OffsetDateTime;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Turns `async fn name(backend: Backend)` checks into one `#[tokio::test]` per backend:
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$check($crate::common::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$check($crate::common::Backend::Postgres).await;
            }
        }
    )*};
}

/// A fresh, empty database.
pub struct TestDb {
    pub backend: Backend,
    /// The SQLite file's directory (removed on drop), or nothing.
    dir: Option<tempfile::TempDir>,
    /// The SQLite file's path or the PostgreSQL URL.
    location: String,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let location = dir.path().join("k.db").display().to_string();
                Self {
                    backend,
                    dir: Some(dir),
                    location,
                }
            }
            Backend::Postgres => Self {
                backend,
                dir: None,
                location: fresh_database_url().await,
            },
        }
    }

    /// A store on this database (another instance each call), not migrated.
    pub async fn open(&self) -> Arc<dyn Store> {
        match self.backend {
            Backend::Sqlite => Arc::new(
                koryphaios_store_sqlite::open(
                    std::path::Path::new(&self.location),
                    &SqliteSettings::default(),
                )
                .await
                .unwrap(),
            ),
            Backend::Postgres => Arc::new(
                koryphaios_store_postgres::connect(&self.location, &test_settings())
                    .await
                    .unwrap(),
            ),
        }
    }

    /// A store on this database, migrated.
    pub async fn migrated(&self) -> Arc<dyn Store> {
        let store = self.open().await;
        store.migrate_up().await.unwrap();
        store
    }

    /// A store on this database, migrated, with the contract suite's audit key installed.
    pub async fn keyed(&self) -> Arc<dyn Store> {
        let store = self.migrated().await;
        store
            .install_audit_key(Arc::new(contract_audit_key()))
            .await
            .unwrap();
        store
    }

    /// The backend's migrations.
    pub fn migrations(&self) -> &'static [Migration] {
        match self.backend {
            Backend::Sqlite => koryphaios_store_sqlite::MIGRATIONS,
            Backend::Postgres => koryphaios_store_postgres::MIGRATIONS,
        }
    }

    /// Runs `script` (one or more statements) on a connection of its own, outside every store.
    pub async fn execute(&self, script: &str) {
        self.try_execute(script).await.unwrap();
    }

    /// Like [`TestDb::execute`], for statements expected to fail.
    pub async fn try_execute(&self, script: &str) -> Result<(), sqlx::Error> {
        let script = sqlx::AssertSqlSafe(script.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite:{}", self.location))
                        .await
                        .unwrap();
                sqlx::raw_sql(script).execute(&mut conn).await.map(drop)
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.location).await.unwrap();
                sqlx::raw_sql(script).execute(&mut conn).await.map(drop)
            }
        }
    }

    /// The first column of every row of `query`, as text.
    pub async fn texts(&self, query: &str) -> Vec<String> {
        let query = sqlx::AssertSqlSafe(query.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite:{}", self.location))
                        .await
                        .unwrap();
                sqlx::query_scalar(query)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.location).await.unwrap();
                sqlx::query_scalar(query)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
            }
        }
    }

    /// The tables of the schema, by name.
    pub async fn tables(&self) -> Vec<String> {
        self.texts(match self.backend {
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
                 ORDER BY name"
            }
            Backend::Postgres => {
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = 'public' ORDER BY table_name"
            }
        })
        .await
    }

    /// Makes every insert into `audit_events` fail, as a full disk or a lost table would.
    pub async fn break_audit_log(&self) {
        self.execute(match self.backend {
            Backend::Sqlite => {
                "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events
                 BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END"
            }
            Backend::Postgres => {
                "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS
                   $$ BEGIN RAISE EXCEPTION 'audit log unavailable'; END $$;
                 CREATE TRIGGER audit_down BEFORE INSERT ON audit_events
                   FOR EACH ROW EXECUTE FUNCTION audit_down();"
            }
        })
        .await;
    }

    /// Undoes [`TestDb::break_audit_log`].
    pub async fn repair_audit_log(&self) {
        self.execute(match self.backend {
            Backend::Sqlite => "DROP TRIGGER audit_down",
            Backend::Postgres => "DROP TRIGGER audit_down ON audit_events",
        })
        .await;
    }
}

/// The contract suite's audit key (the one [`TestDb::keyed`] installs).
pub fn key() -> AuditKey {
    contract_audit_key()
}

/// A standalone audit record, told apart by `n`.
pub fn record(n: usize) -> AuditEntry {
    AuditEntry::anonymous(
        format!("ip:192.0.2.{n}"),
        &RequestContext::default(),
        "login",
        OffsetDateTime::now_utc(),
    )
}

pub fn new_user(name: &str) -> NewUser {
    NewUser {
        id: UserId::generate(),
        username: Username::parse(name).unwrap(),
        password_hash: PasswordHash::from_stored("x".into()),
        default_tier: koryphaios_core::tier::Tier::Free,
        created_at: OffsetDateTime::now_utc(),
    }
}

pub fn anonymous(action: &str) -> AuditEntry {
    AuditEntry::anonymous(
        "test".into(),
        &RequestContext::default(),
        action,
        OffsetDateTime::now_utc(),
    )
}

pub async fn user(store: &dyn Store, name: &str) -> User {
    store
        .register_user(
            new_user(name),
            RegistrationPolicy::Open,
            &anonymous("register"),
        )
        .await
        .unwrap()
}

/// A record of `user` doing `action` to `resource` (type, id).
pub fn entry(user: &User, action: &str, resource: (&str, &str)) -> AuditEntry {
    let principal = Principal {
        user_id: user.id.clone(),
        username: user.username.clone(),
        role: user.role,
        tier: koryphaios_core::tier::Tier::Pro,
        scopes: user.role.scopes(),
        method: AuthMethod::Session {
            jti: "j".into(),
            family: FamilyId::generate(),
            expires_at: OffsetDateTime::now_utc(),
        },
    };
    AuditEntry::new(
        &principal,
        &RequestContext::default(),
        action,
        Some(resource),
        OffsetDateTime::now_utc(),
    )
}

/// A made-up sealed version.
pub fn sealed(version: i64) -> SealedVersion {
    SealedVersion {
        version,
        sealed: vec![1; 40],
        wrapped_dek: WrappedDek {
            provider: "local".into(),
            kek_id: "k".into(),
            kek_version: 1,
            ciphertext: vec![2; 60],
        },
        created_at: OffsetDateTime::now_utc(),
    }
}

/// A new credential of `user` and its first (made-up) sealed version.
pub fn credential(user: &User) -> (Credential, SealedVersion) {
    let now = OffsetDateTime::now_utc();
    let credential = Credential {
        id: CredentialId::generate(),
        user_id: user.id.clone(),
        provider: "openai".into(),
        kind: "api_key".into(),
        metadata: serde_json::Map::new(),
        current_version: 1,
        created_at: now,
        updated_at: now,
        expires_at: None,
        last_used_at: None,
    };
    (credential, sealed(1))
}

/// A read-only key of `owner`.
pub fn api_key(owner: &User) -> ApiKey {
    let now = OffsetDateTime::now_utc();
    ApiKey {
        id: ApiKeyId::generate(),
        user_id: owner.id.clone(),
        name: "ci".into(),
        prefix: "kor_abcdefgh".into(),
        scopes: ScopeSet::new([Scope::Read]),
        tier: Tier::Free,
        metadata: serde_json::Map::new(),
        created_at: now,
        updated_at: now,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        usage_count: 0,
        parent_id: None,
        allowed_networks: koryphaios_core::networks::AllowedNetworks::default(),
        rate_limit_per_minute: None,
    }
}
