//! Builders shared by this crate's integration tests: users, credentials, keys, audit records.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "tests panic on failure; not every test file uses every builder"
)]

use koryphaios_core::api_keys::{ApiKey, Tier};
use koryphaios_core::audit::{AuditEntry, RequestContext};
use koryphaios_core::credentials::{Credential, SealedVersion};
use koryphaios_core::envelope::WrappedDek;
use koryphaios_core::ids::{ApiKeyId, CredentialId, FamilyId, UserId};
use koryphaios_core::scope::{Scope, ScopeSet};
use koryphaios_core::store::UserStore;
use koryphaios_core::users::{NewUser, PasswordHash, RegistrationPolicy, User, Username};
use koryphaios_core::{AuthMethod, Principal};
use koryphaios_store_postgres::PostgresStore;
use time::OffsetDateTime;

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

pub async fn user(store: &PostgresStore, name: &str) -> User {
    store
        .register_user(
            new_user(name),
            RegistrationPolicy::Open,
            &anonymous("register"),
        )
        .await
        .unwrap()
}

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
    }
}
