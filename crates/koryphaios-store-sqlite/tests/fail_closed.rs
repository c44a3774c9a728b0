//! Writes and their audit records commit together: if the record cannot be written, the change
//! does not happen. Concurrent writes through the group commit are all applied.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

use std::sync::Arc;

use koryphaios_core::audit::{AuditEntry, RequestContext};
use koryphaios_core::credentials::{Credential, CredentialFilter, SealedVersion};
use koryphaios_core::envelope::WrappedDek;
use koryphaios_core::ids::{CredentialId, FamilyId, UserId};
use koryphaios_core::store::{AuditStore, CredentialStore, SchemaMigrator, Store, UserStore};
use koryphaios_core::users::{NewUser, PasswordHash, RegistrationPolicy, User, Username};
use koryphaios_core::{AuthMethod, Principal};
use koryphaios_store_sqlite::{SqliteSettings, SqliteStore};
use time::OffsetDateTime;

async fn setup() -> (tempfile::TempDir, Arc<SqliteStore>, User) {
    let dir = tempfile::tempdir().unwrap();
    let store = koryphaios_store_sqlite::open(&dir.path().join("k.db"), &SqliteSettings::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    store
        .install_audit_key(::std::sync::Arc::new(
            koryphaios_core::testing::contract_audit_key(),
        ))
        .await
        .unwrap();
    let user = store
        .register_user(
            NewUser {
                id: UserId::generate(),
                username: Username::parse("ada").unwrap(),
                password_hash: PasswordHash::from_stored("x".into()),
                default_tier: koryphaios_core::tier::Tier::Free,
                created_at: OffsetDateTime::now_utc(),
            },
            RegistrationPolicy::Open,
            &koryphaios_core::audit::AuditEntry::anonymous(
                "test".into(),
                &RequestContext::default(),
                "register",
                OffsetDateTime::now_utc(),
            ),
        )
        .await
        .unwrap();
    (dir, Arc::new(store), user)
}

fn entry(user: &User, action: &str, id: &CredentialId) -> AuditEntry {
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
        Some(("credential", id.as_str())),
        OffsetDateTime::now_utc(),
    )
}

fn credential(user: &User) -> (Credential, SealedVersion) {
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
    let version = SealedVersion {
        version: 1,
        sealed: vec![1; 40],
        wrapped_dek: WrappedDek {
            provider: "local".into(),
            kek_id: "k".into(),
            kek_version: 1,
            ciphertext: vec![2; 60],
        },
        created_at: now,
    };
    (credential, version)
}

#[tokio::test]
async fn a_failing_audit_write_stops_the_credential_from_being_stored() {
    let (dir, store, user) = setup().await;
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("k.db").display()))
            .await
            .unwrap();
    sqlx::query("CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END")
        .execute(&pool)
        .await
        .unwrap();
    let (cred, version) = credential(&user);
    let result = store
        .insert_credential(
            &cred,
            &version,
            &entry(&user, "credential_create", &cred.id),
        )
        .await;
    assert!(
        result.is_err(),
        "the create must fail when its audit record cannot be written"
    );
    assert!(
        store
            .find_credential(&user.id, &cred.id)
            .await
            .unwrap()
            .is_none()
    );
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM credential_versions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // Once the audit log works again, so do writes.
    sqlx::query("DROP TRIGGER audit_down")
        .execute(&pool)
        .await
        .unwrap();
    store
        .insert_credential(
            &cred,
            &version,
            &entry(&user, "credential_create", &cred.id),
        )
        .await
        .unwrap();
    assert!(
        store
            .find_credential(&user.id, &cred.id)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn concurrent_writes_through_the_group_commit_all_land() {
    let (_dir, store, user) = setup().await;
    let (cred, version) = credential(&user);
    store
        .insert_credential(
            &cred,
            &version,
            &entry(&user, "credential_create", &cred.id),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (store, user, id) = (Arc::clone(&store), user.clone(), cred.id.clone());
        tasks.push(tokio::spawn(async move {
            store
                .record_credential_access(
                    &user.id,
                    &id,
                    OffsetDateTime::now_utc(),
                    &entry(&user, "credential_access", &id),
                )
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let trail = store
        .audit_for_resource(&user.id, "credential", cred.id.as_str(), 1000)
        .await
        .unwrap();
    assert_eq!(trail.len(), 201);
    let listed = store
        .list_credentials(
            &user.id,
            &CredentialFilter::default(),
            OffsetDateTime::now_utc(),
            &koryphaios_core::pagination::PageRequest::default(),
        )
        .await
        .unwrap();
    assert!(listed[0].last_used_at.is_some());
    let store: Arc<dyn Store> = store;
    store.close().await;
}
