//! The storage contract: behaviour every [`Store`] backend must show, run by each backend's tests.
//!
//! A backend invokes [`store_contract_tests!`] with an expression that yields a fresh, migrated,
//! empty store; every check becomes its own `#[tokio::test]`.
#![expect(
    clippy::expect_used,
    reason = "test-support code: a failed check must panic"
)]

mod audit;
pub mod bench;
mod pagination;
mod tokens;
mod users;

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use serde_json::{Map, json};

use crate::api_keys::{ApiKey, Tier};
use crate::audit::{AuditEntry, RequestContext};
use crate::credentials::{Credential, CredentialFilter, SealedVersion};
use crate::envelope::WrappedDek;
use crate::ids::ApiKeyId;
use crate::ids::{AuditEventId, CredentialId, FamilyId, RefreshTokenId, UserId};
use crate::networks::AllowedNetworks;
use crate::pagination::PageRequest;
use crate::principal::{AuthMethod, Principal};
use crate::scope::{Scope, ScopeSet};
use crate::secret::TokenHash;
use crate::store::{ApiKeyChange, KeyPurpose, SealedKey, VersionAdded};
use crate::store::{NewRefreshToken, RegisterUserError, RotateOutcome, Store};
use crate::users::{NewUser, PasswordHash, RegistrationPolicy, Role, User, Username};

pub use audit::*;
pub use pagination::*;
pub use tokens::*;
pub use users::*;

/// Generates one test per contract check for a backend.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@each $make;
            first_user_becomes_admin_and_later_ones_do_not,
            closed_registration_refuses_a_second_user,
            usernames_are_unique_ignoring_case,
            credentials_are_found_by_name_ignoring_case,
            refresh_rotation_spends_the_token_and_keeps_the_family,
            reusing_a_spent_refresh_token_revokes_the_family,
            expired_refresh_tokens_are_invalid,
            ending_a_session_revokes_its_family_and_access_token,
            ending_all_sessions_bumps_the_epoch,
            changing_the_password_ends_every_session,
            purge_removes_only_expired_session_data,
            migrations_go_down_and_up_again,
            credentials_belong_to_their_owner_and_list_with_filters,
            credential_changes_write_their_audit_records,
            deleted_credentials_disappear_but_keep_their_trail,
            adding_a_version_detects_concurrent_rotation,
            rewrap_bookkeeping_counts_and_swaps_wraps,
            api_keys_are_found_by_secret_hash_with_their_owner,
            api_key_updates_revocation_and_usage_are_stored,
            rolling_an_api_key_keeps_the_old_secret_for_the_grace_period,
            concurrent_audited_writes_form_one_verifying_chain,
            retention_purges_a_prefix_and_the_rest_still_verifies,
            audit_queries_filter_and_page_newest_first,
            activity_counts_failed_logins_reveals_denials_and_ips,
            the_audit_key_wrap_is_stored_once_and_swapped_only_if_unchanged,
            credential_lists_page_newest_first_covering_each_once,
            key_lists_page_newest_first_covering_each_once,
            the_first_user_is_an_enterprise_admin_and_later_ones_get_the_default_tier,
            an_admin_change_is_stored_audited_and_refused_when_the_user_moved,
            the_last_active_admin_can_be_neither_demoted_nor_disabled,
            disabling_a_user_ends_their_sessions_and_marks_their_keys,
            users_are_listed_in_id_order_a_page_at_a_time,
            revoking_a_key_revokes_every_key_created_through_it,
            rolling_a_key_ends_its_descendants_with_the_grace_period,
            sealed_keys_are_versioned_swapped_and_retired_per_purpose,
            wraps_of_another_provider_are_pending_rewrap,
            agent_tokens_live_only_while_their_parent_does,
            token_uses_are_counted_exactly_under_concurrency,
            revoked_tokens_are_refused_and_expired_ones_purged,
            a_user_holds_at_most_the_live_token_cap,
        );
    };
    (@each $make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let store: ::std::sync::Arc<dyn $crate::store::Store> = $make;
                store
                    .install_audit_key(::std::sync::Arc::new($crate::testing::contract_audit_key()))
                    .await
                    .expect("install the audit key");
                $crate::testing::$check(store).await;
            }
        )+
    };
}

fn t0() -> OffsetDateTime {
    // Millisecond precision, as stores keep it.
    OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        id: UserId::generate(),
        username: Username::parse(name)
            .unwrap_or_else(|e| panic!("bad test username {name}: {e:?}")),
        password_hash: PasswordHash::from_stored(format!(
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$hash-of-{name}"
        )),
        default_tier: crate::tier::Tier::Free,
        created_at: t0(),
    }
}

fn refresh(token: &str, issued_at: OffsetDateTime) -> NewRefreshToken {
    NewRefreshToken {
        id: RefreshTokenId::generate(),
        token_hash: TokenHash::of(token),
        issued_at,
        expires_at: issued_at + Duration::days(7),
    }
}

async fn user(store: &Arc<dyn Store>, name: &str) -> User {
    store
        .register_user(new_user(name), RegistrationPolicy::Open, &stub_audit())
        .await
        .unwrap_or_else(|e| panic!("register {name}: {e}"))
}

async fn session(store: &Arc<dyn Store>, user: &User, token: &str) -> FamilyId {
    let family = FamilyId::generate();
    store
        .create_session(&user.id, &family, &refresh(token, t0()), &stub_audit())
        .await
        .expect("create session");
    family
}

/// Contract check.
pub async fn first_user_becomes_admin_and_later_ones_do_not(store: Arc<dyn Store>) {
    assert_eq!(store.count_users().await.expect("count"), 0);
    let first = user(&store, "first").await;
    let second = user(&store, "second").await;
    assert_eq!(first.role, Role::Admin);
    assert_eq!(second.role, Role::User);
    assert_eq!(first.created_at, t0());
    assert_eq!(
        store.find_user(&second.id).await.expect("find"),
        Some(second)
    );
    assert_eq!(
        store.find_user(&UserId::generate()).await.expect("find"),
        None
    );
    assert_eq!(store.count_users().await.expect("count"), 2);
}

/// Contract check.
pub async fn closed_registration_refuses_a_second_user(store: Arc<dyn Store>) {
    let first = store
        .register_user(
            new_user("first"),
            RegistrationPolicy::FirstUserOnly,
            &stub_audit(),
        )
        .await;
    assert_eq!(
        first.expect("first user is always allowed").role,
        Role::Admin
    );
    let second = store
        .register_user(
            new_user("second"),
            RegistrationPolicy::FirstUserOnly,
            &stub_audit(),
        )
        .await;
    assert!(matches!(second, Err(RegisterUserError::RegistrationClosed)));
    assert_eq!(store.count_users().await.expect("count"), 1);
}

/// Contract check.
pub async fn usernames_are_unique_ignoring_case(store: Arc<dyn Store>) {
    user(&store, "ada").await;
    let duplicate = store
        .register_user(new_user("ADA"), RegistrationPolicy::Open, &stub_audit())
        .await;
    assert!(matches!(duplicate, Err(RegisterUserError::UsernameTaken)));
    assert_eq!(store.count_users().await.expect("count"), 1);
}

/// Contract check.
pub async fn credentials_are_found_by_name_ignoring_case(store: Arc<dyn Store>) {
    let ada = user(&store, "Ada").await;
    let found = store
        .find_credentials("aDA")
        .await
        .expect("find")
        .expect("ada exists");
    assert_eq!(found.user, ada);
    assert!(found.password_hash.as_str().ends_with("hash-of-Ada"));
    assert!(
        store
            .find_credentials("nobody")
            .await
            .expect("find")
            .is_none()
    );
}

/// Contract check.
pub async fn refresh_rotation_spends_the_token_and_keeps_the_family(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let family = session(&store, &ada, "rt-1").await;
    let later = t0() + Duration::minutes(20);
    match store
        .rotate_refresh_token(&TokenHash::of("rt-1"), &refresh("rt-2", later), later)
        .await
    {
        Ok(RotateOutcome::Rotated {
            user,
            family: rotated,
        }) => {
            assert_eq!(user.id, ada.id);
            assert_eq!(rotated, family);
        }
        other => panic!("expected rotation, got {other:?}"),
    }
    let next = store
        .rotate_refresh_token(&TokenHash::of("rt-2"), &refresh("rt-3", later), later)
        .await;
    assert!(matches!(next, Ok(RotateOutcome::Rotated { .. })));
    let unknown = store
        .rotate_refresh_token(
            &TokenHash::of("never-issued"),
            &refresh("rt-x", later),
            later,
        )
        .await;
    assert!(matches!(unknown, Ok(RotateOutcome::Invalid)));
}

/// Contract check.
pub async fn reusing_a_spent_refresh_token_revokes_the_family(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let family = session(&store, &ada, "rt-1").await;
    let now = t0() + Duration::minutes(1);
    let first = store
        .rotate_refresh_token(&TokenHash::of("rt-1"), &refresh("rt-2", now), now)
        .await;
    assert!(matches!(first, Ok(RotateOutcome::Rotated { .. })));
    let replay = store
        .rotate_refresh_token(&TokenHash::of("rt-1"), &refresh("rt-3", now), now)
        .await;
    assert!(
        matches!(replay, Ok(RotateOutcome::ReuseDetected { family: ref f, .. }) if *f == family)
    );
    // The legitimate holder's newer token dies with the family.
    let legit = store
        .rotate_refresh_token(&TokenHash::of("rt-2"), &refresh("rt-4", now), now)
        .await;
    assert!(matches!(legit, Ok(RotateOutcome::Invalid)));
    let state = store
        .session_state(&ada.id, &family, "jti")
        .await
        .expect("state")
        .expect("user exists");
    assert!(state.family_revoked);
}

/// Contract check.
pub async fn expired_refresh_tokens_are_invalid(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    session(&store, &ada, "rt-1").await;
    let late = t0() + Duration::days(7);
    let outcome = store
        .rotate_refresh_token(&TokenHash::of("rt-1"), &refresh("rt-2", late), late)
        .await;
    assert!(matches!(outcome, Ok(RotateOutcome::Invalid)));
}

/// Contract check.
pub async fn ending_a_session_revokes_its_family_and_access_token(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let family = session(&store, &ada, "rt-1").await;
    let other = session(&store, &ada, "rt-other").await;
    let before = store
        .session_state(&ada.id, &family, "jti-1")
        .await
        .expect("state")
        .expect("exists");
    assert!(!before.family_revoked && !before.token_revoked);
    store
        .end_session(
            &ada.id,
            &family,
            "jti-1",
            t0() + Duration::minutes(15),
            t0(),
            &stub_audit(),
        )
        .await
        .expect("end session");
    let after = store
        .session_state(&ada.id, &family, "jti-1")
        .await
        .expect("state")
        .expect("exists");
    assert!(after.family_revoked && after.token_revoked);
    let untouched = store
        .session_state(&ada.id, &other, "jti-2")
        .await
        .expect("state")
        .expect("exists");
    assert!(!untouched.family_revoked && !untouched.token_revoked);
    let rotated = store
        .rotate_refresh_token(&TokenHash::of("rt-1"), &refresh("rt-2", t0()), t0())
        .await;
    assert!(matches!(rotated, Ok(RotateOutcome::Invalid)));
    // Another user's session cannot be named with this user's id.
    let mallory = user(&store, "mallory").await;
    let foreign = store
        .session_state(&mallory.id, &other, "jti-3")
        .await
        .expect("state")
        .expect("exists");
    assert!(
        foreign.family_revoked,
        "a family that is not the user's must not count as live"
    );
}

/// Contract check.
pub async fn ending_all_sessions_bumps_the_epoch(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let family = session(&store, &ada, "rt-1").await;
    let updated = store
        .end_all_sessions(&ada.id, t0(), &stub_audit())
        .await
        .expect("end all");
    assert_eq!(updated.session_epoch, ada.session_epoch + 1);
    let state = store
        .session_state(&ada.id, &family, "jti")
        .await
        .expect("state")
        .expect("exists");
    assert!(state.family_revoked);
    assert_eq!(state.user.session_epoch, ada.session_epoch + 1);
}

/// Contract check.
pub async fn changing_the_password_ends_every_session(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let family = session(&store, &ada, "rt-1").await;
    let new_hash = PasswordHash::from_stored("$argon2id$v=19$new".into());
    let later = t0() + Duration::hours(1);
    let updated = store
        .change_password(&ada.id, &new_hash, later, &stub_audit())
        .await
        .expect("change");
    assert_eq!(updated.session_epoch, ada.session_epoch + 1);
    assert_eq!(updated.updated_at, later);
    let found = store
        .find_credentials("ada")
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(found.password_hash.as_str(), "$argon2id$v=19$new");
    let state = store
        .session_state(&ada.id, &family, "jti")
        .await
        .expect("state")
        .expect("exists");
    assert!(state.family_revoked);
}

/// Contract check.
pub async fn purge_removes_only_expired_session_data(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let family = session(&store, &ada, "rt-1").await;
    store
        .end_session(
            &ada.id,
            &family,
            "jti-1",
            t0() + Duration::minutes(15),
            t0(),
            &stub_audit(),
        )
        .await
        .expect("end");
    let live = session(&store, &ada, "rt-live").await;
    // Before anything expired nothing goes.
    assert_eq!(store.purge_expired_sessions(t0()).await.expect("purge"), 0);
    let later = t0() + Duration::days(8);
    assert!(store.purge_expired_sessions(later).await.expect("purge") >= 2);
    // The live family's token has expired too by now, so it is invalid either way.
    let rotated = store
        .rotate_refresh_token(&TokenHash::of("rt-live"), &refresh("rt-n", later), later)
        .await;
    assert!(matches!(rotated, Ok(RotateOutcome::Invalid)));
    let _ = live;
}

/// Contract check.
pub async fn migrations_go_down_and_up_again(store: Arc<dyn Store>) {
    let status = store.migration_status().await.expect("status");
    assert!(!status.is_empty() && status.iter().all(|line| line.applied_at.is_some()));
    let all = status.len();
    let reverted = store.migrate_down(all).await.expect("down");
    assert_eq!(reverted.len(), all);
    assert!(
        store
            .migration_status()
            .await
            .expect("status")
            .iter()
            .all(|line| line.applied_at.is_none())
    );
    let applied = store.migrate_up().await.expect("up");
    assert_eq!(applied.len(), all);
    assert!(store.migrate_up().await.expect("up again").is_empty());
    // The schema works again after the round trip.
    user(&store, "ada").await;
}

fn principal(user: &User) -> Principal {
    Principal {
        user_id: user.id.clone(),
        username: user.username.clone(),
        role: user.role,
        tier: crate::tier::Tier::Pro,
        scopes: user.role.scopes(),
        method: AuthMethod::Session {
            jti: "j".into(),
            family: FamilyId::generate(),
            expires_at: t0(),
        },
    }
}

fn audit(user: &User, action: &str, id: &CredentialId) -> AuditEntry {
    let context = RequestContext {
        client_ip: Some("127.0.0.1".into()),
        user_agent: Some("contract".into()),
        request_id: Some("req-1".into()),
    };
    AuditEntry::new(
        &principal(user),
        &context,
        action,
        Some(("credential", id.as_str())),
        t0(),
    )
}

fn sealed(version: i64, kek_version: i64) -> SealedVersion {
    SealedVersion {
        version,
        sealed: vec![version as u8; 40],
        wrapped_dek: WrappedDek {
            provider: "local".into(),
            kek_id: "ring-1".into(),
            kek_version,
            ciphertext: vec![kek_version as u8; 60],
        },
        created_at: t0(),
    }
}

async fn credential(
    store: &Arc<dyn Store>,
    owner: &User,
    provider: &str,
    expires_at: Option<OffsetDateTime>,
) -> Credential {
    let mut metadata = Map::new();
    metadata.insert("team".into(), json!("ml"));
    let credential = Credential {
        id: CredentialId::generate(),
        user_id: owner.id.clone(),
        provider: provider.into(),
        kind: "api_key".into(),
        metadata,
        current_version: 1,
        created_at: t0(),
        updated_at: t0(),
        expires_at,
        last_used_at: None,
    };
    store
        .insert_credential(
            &credential,
            &sealed(1, 1),
            &audit(owner, "credential_create", &credential.id),
        )
        .await
        .expect("insert credential");
    credential
}

/// Contract check.
pub async fn credentials_belong_to_their_owner_and_list_with_filters(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let bob = user(&store, "bob").await;
    let openai = credential(&store, &ada, "openai", None).await;
    let expired = credential(&store, &ada, "anthropic", Some(t0() - Duration::days(1))).await;
    let bobs = credential(&store, &bob, "openai", None).await;
    assert_eq!(
        store
            .find_credential(&ada.id, &openai.id)
            .await
            .expect("find"),
        Some(openai.clone())
    );
    assert_eq!(
        store
            .find_credential(&ada.id, &bobs.id)
            .await
            .expect("find"),
        None,
        "another owner's credential is invisible"
    );
    let (found, version) = store
        .find_current_version(&ada.id, &openai.id)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(found.id, openai.id);
    assert_eq!(
        (
            version.version,
            version.wrapped_dek.kek_version,
            version.sealed.len()
        ),
        (1, 1, 40)
    );
    assert!(
        store
            .find_current_version(&bob.id, &openai.id)
            .await
            .expect("find")
            .is_none()
    );

    let all = store
        .list_credentials(
            &ada.id,
            &CredentialFilter::default(),
            t0(),
            &PageRequest::default(),
        )
        .await
        .expect("list");
    assert_eq!(all.len(), 2);
    let only_openai = CredentialFilter {
        provider: Some("openai".into()),
        active: None,
    };
    assert_eq!(
        store
            .list_credentials(&ada.id, &only_openai, t0(), &PageRequest::default())
            .await
            .expect("list"),
        vec![openai.clone()]
    );
    let active = CredentialFilter {
        provider: None,
        active: Some(true),
    };
    assert_eq!(
        store
            .list_credentials(&ada.id, &active, t0(), &PageRequest::default())
            .await
            .expect("list"),
        vec![openai]
    );
    let inactive = CredentialFilter {
        provider: None,
        active: Some(false),
    };
    assert_eq!(
        store
            .list_credentials(&ada.id, &inactive, t0(), &PageRequest::default())
            .await
            .expect("list"),
        vec![expired]
    );
}

/// Contract check.
pub async fn credential_changes_write_their_audit_records(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let bob = user(&store, "bob").await;
    let cred = credential(&store, &ada, "openai", None).await;
    let mut metadata = Map::new();
    metadata.insert("team".into(), json!("infra"));
    let later = t0() + Duration::minutes(5);
    let updated = store
        .update_credential_metadata(
            &ada.id,
            &cred.id,
            &metadata,
            later,
            &audit(&ada, "credential_update", &cred.id),
        )
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        (updated.metadata["team"].as_str(), updated.updated_at),
        (Some("infra"), later)
    );
    let foreign = store
        .update_credential_metadata(
            &bob.id,
            &cred.id,
            &metadata,
            later,
            &audit(&bob, "credential_update", &cred.id),
        )
        .await;
    assert!(foreign.expect("update").is_none());
    store
        .record_credential_access(
            &ada.id,
            &cred.id,
            later,
            &audit(&ada, "credential_access", &cred.id),
        )
        .await
        .expect("access");
    let trail = store
        .audit_for_resource(&ada.id, "credential", cred.id.as_str(), 100)
        .await
        .expect("trail");
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert!(
        actions.contains(&"credential_create")
            && actions.contains(&"credential_update")
            && actions.contains(&"credential_access")
    );
    let first = &trail[0];
    assert_eq!(
        (
            first.client_ip.as_deref(),
            first.user_agent.as_deref(),
            first.request_id.as_deref()
        ),
        (Some("127.0.0.1"), Some("contract"), Some("req-1"))
    );
    assert!(
        store
            .audit_for_resource(&bob.id, "credential", cred.id.as_str(), 100)
            .await
            .expect("trail")
            .is_empty()
    );
    let accessed = store
        .find_credential(&ada.id, &cred.id)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(accessed.last_used_at, Some(later));
    // A standalone record (a denial) is stored as given.
    let mut denial = audit(&bob, "access_denied", &cred.id).failed("missing scope");
    denial.id = AuditEventId::generate();
    store.append_audit(&denial).await.expect("append");
    let bobs = store
        .audit_for_resource(&bob.id, "credential", cred.id.as_str(), 100)
        .await
        .expect("trail");
    assert_eq!(bobs, vec![denial]);
}

/// Contract check.
pub async fn deleted_credentials_disappear_but_keep_their_trail(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let bob = user(&store, "bob").await;
    let cred = credential(&store, &ada, "openai", None).await;
    assert!(
        !store
            .delete_credential(
                &bob.id,
                &cred.id,
                None,
                t0(),
                &audit(&bob, "credential_delete", &cred.id)
            )
            .await
            .expect("delete")
    );
    assert!(
        store
            .delete_credential(
                &ada.id,
                &cred.id,
                Some("leaked"),
                t0(),
                &audit(&ada, "credential_delete", &cred.id)
            )
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_credential(
                &ada.id,
                &cred.id,
                None,
                t0(),
                &audit(&ada, "credential_delete", &cred.id)
            )
            .await
            .expect("delete again")
    );
    assert!(
        store
            .find_credential(&ada.id, &cred.id)
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        store
            .find_current_version(&ada.id, &cred.id)
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        store
            .list_credentials(
                &ada.id,
                &CredentialFilter::default(),
                t0(),
                &PageRequest::default()
            )
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store
            .audit_for_resource(&ada.id, "credential", cred.id.as_str(), 100)
            .await
            .expect("trail")
            .len(),
        2
    );
}

/// Contract check.
pub async fn adding_a_version_detects_concurrent_rotation(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let bob = user(&store, "bob").await;
    let cred = credential(&store, &ada, "openai", None).await;
    let added = store
        .add_credential_version(
            &ada.id,
            &cred.id,
            1,
            &sealed(2, 1),
            &audit(&ada, "credential_rotate", &cred.id),
        )
        .await;
    assert!(matches!(added, Ok(VersionAdded::Added(ref c)) if c.current_version == 2));
    let stale = store
        .add_credential_version(
            &ada.id,
            &cred.id,
            1,
            &sealed(2, 1),
            &audit(&ada, "credential_rotate", &cred.id),
        )
        .await;
    assert!(matches!(stale, Ok(VersionAdded::Conflict)));
    let foreign = store
        .add_credential_version(
            &bob.id,
            &cred.id,
            2,
            &sealed(3, 1),
            &audit(&bob, "credential_rotate", &cred.id),
        )
        .await;
    assert!(matches!(foreign, Ok(VersionAdded::NotFound)));
    let (_, current) = store
        .find_current_version(&ada.id, &cred.id)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(current.version, 2);
}

/// Contract check.
pub async fn rewrap_bookkeeping_counts_and_swaps_wraps(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let first = credential(&store, &ada, "openai", None).await;
    let second = credential(&store, &ada, "anthropic", None).await;
    store
        .add_credential_version(
            &ada.id,
            &second.id,
            1,
            &sealed(2, 2),
            &audit(&ada, "credential_rotate", &second.id),
        )
        .await
        .expect("rotate");
    let counts: Vec<(i64, u64)> = store
        .dek_inventory()
        .await
        .expect("inventory")
        .iter()
        .map(|c| (c.kek_version, c.count))
        .collect();
    assert_eq!(counts, vec![(1, 2), (2, 1)]);
    let pending = store
        .wraps_to_rewrap("local", "ring-1", 2, None, 10)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 2);
    assert!(
        pending
            .iter()
            .all(|r| r.wrapped.kek_version == 1 && r.owner == ada.id)
    );
    let page = store
        .wraps_to_rewrap("local", "ring-1", 2, None, 1)
        .await
        .expect("page");
    let next = store
        .wraps_to_rewrap(
            "local",
            "ring-1",
            2,
            Some(&(page[0].credential_id.clone(), page[0].version)),
            10,
        )
        .await
        .expect("next page");
    assert_eq!(next.len(), 1);
    assert_ne!(
        (next[0].credential_id.clone(), next[0].version),
        (page[0].credential_id.clone(), page[0].version)
    );
    let target = &pending[0];
    let new = WrappedDek {
        provider: "local".into(),
        kek_id: "ring-1".into(),
        kek_version: 2,
        ciphertext: vec![9; 60],
    };
    assert!(store.replace_wrap(target, &new).await.expect("swap"));
    assert!(
        !store
            .replace_wrap(target, &new)
            .await
            .expect("second swap sees the change"),
        "compare-and-swap"
    );
    assert_eq!(
        store
            .wraps_to_rewrap("local", "ring-1", 2, None, 10)
            .await
            .expect("pending")
            .len(),
        1
    );
    assert!(first.id != second.id);
}

/// Contract check.
pub async fn wraps_of_another_provider_are_pending_rewrap(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    credential(&store, &ada, "openai", None).await;
    // Wrapped by `local` directly (before the KEK hierarchy): moving it is the migration.
    let pending = store
        .wraps_to_rewrap("kek", "kek", 1, None, 10)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].wrapped.provider, "local");
}

fn sealed_key(version: i64, byte: u8) -> SealedKey {
    SealedKey {
        version,
        created_at: OffsetDateTime::from_unix_timestamp(1_800_000_000 + version).expect("time"),
        wrapped: Some(WrappedDek {
            provider: "local".into(),
            kek_id: "ring-1".into(),
            kek_version: 1,
            ciphertext: vec![byte; 60],
        }),
    }
}

/// Contract check.
pub async fn sealed_keys_are_versioned_swapped_and_retired_per_purpose(store: Arc<dyn Store>) {
    assert!(
        store
            .sealed_keys(KeyPurpose::Kek)
            .await
            .expect("list")
            .is_empty()
    );
    let first = sealed_key(1, 1);
    assert!(
        store
            .insert_sealed_key(KeyPurpose::Kek, &first)
            .await
            .expect("insert")
    );
    assert!(
        !store
            .insert_sealed_key(KeyPurpose::Kek, &sealed_key(1, 2))
            .await
            .expect("second insert of a version"),
        "a version is created once"
    );
    assert!(
        store
            .insert_sealed_key(KeyPurpose::Jwt, &sealed_key(1, 3))
            .await
            .expect("the same version of another purpose")
    );
    assert!(
        store
            .insert_sealed_key(KeyPurpose::Kek, &sealed_key(2, 4))
            .await
            .expect("insert")
    );
    let keks = store.sealed_keys(KeyPurpose::Kek).await.expect("list");
    assert_eq!(keks, vec![first.clone(), sealed_key(2, 4)]);
    let old = first.wrapped.clone().expect("wrapped");
    let new = WrappedDek {
        kek_version: 2,
        ciphertext: vec![9; 60],
        ..old.clone()
    };
    assert!(
        store
            .replace_sealed_key_wrap(KeyPurpose::Kek, 1, &old, &new)
            .await
            .expect("swap")
    );
    assert!(
        !store
            .replace_sealed_key_wrap(KeyPurpose::Kek, 1, &old, &new)
            .await
            .expect("stale swap"),
        "compare-and-swap"
    );
    assert!(
        store
            .retire_sealed_key(KeyPurpose::Kek, 1)
            .await
            .expect("retire")
    );
    let keks = store.sealed_keys(KeyPurpose::Kek).await.expect("list");
    assert_eq!(keks[0].wrapped, None, "retired material is gone");
    assert_eq!(keks[0].version, 1, "the row stays");
    assert!(
        !store
            .insert_sealed_key(KeyPurpose::Kek, &sealed_key(1, 5))
            .await
            .expect("reuse"),
        "a retired version number is never reused"
    );
    let jwt = store.sealed_keys(KeyPurpose::Jwt).await.expect("list");
    assert_eq!(jwt, vec![sealed_key(1, 3)]);
}

fn api_key(owner: &User) -> ApiKey {
    ApiKey {
        id: ApiKeyId::generate(),
        user_id: owner.id.clone(),
        name: "ci deploy".into(),
        prefix: "kor_abcdefgh".into(),
        scopes: ScopeSet::new([Scope::Read, Scope::Provider("openai".into())]),
        tier: Tier::Pro,
        metadata: Map::new(),
        created_at: t0(),
        updated_at: t0(),
        expires_at: Some(t0() + Duration::days(30)),
        revoked_at: None,
        last_used_at: None,
        usage_count: 0,
        parent_id: None,
        allowed_networks: AllowedNetworks::default(),
        rate_limit_per_minute: None,
    }
}

fn key_audit(user: &User, action: &str, id: &ApiKeyId) -> AuditEntry {
    AuditEntry::new(
        &principal(user),
        &RequestContext::default(),
        action,
        Some(("api_key", id.as_str())),
        t0(),
    )
}

/// Contract check.
pub async fn api_keys_are_found_by_secret_hash_with_their_owner(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let bob = user(&store, "bob").await;
    let key = api_key(&bob);
    store
        .insert_api_key(
            &key,
            &TokenHash::of("secret-1"),
            &key_audit(&bob, "api_key_create", &key.id),
        )
        .await
        .expect("insert");
    let found = store
        .lookup_api_key(&TokenHash::of("secret-1"))
        .await
        .expect("lookup")
        .expect("exists");
    assert_eq!(found.key, key);
    assert_eq!(
        (found.owner_role, found.owner_username.as_str()),
        (Role::User, "bob")
    );
    assert!(found.secret_expires_at.is_none());
    assert!(found.stored_hash.matches(&TokenHash::of("secret-1")));
    assert!(
        store
            .lookup_api_key(&TokenHash::of("secret-2"))
            .await
            .expect("lookup")
            .is_none()
    );
    assert_eq!(
        store
            .list_api_keys(&bob.id, &PageRequest::default())
            .await
            .expect("list"),
        vec![key.clone()]
    );
    assert!(
        store
            .list_api_keys(&ada.id, &PageRequest::default())
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .find_api_key(&ada.id, &key.id)
            .await
            .expect("find")
            .is_none()
    );
    assert_eq!(
        store.find_api_key(&bob.id, &key.id).await.expect("find"),
        Some(key)
    );
}

/// Contract check.
pub async fn api_key_updates_revocation_and_usage_are_stored(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let bob = user(&store, "bob").await;
    let key = api_key(&ada);
    store
        .insert_api_key(
            &key,
            &TokenHash::of("s"),
            &key_audit(&ada, "api_key_create", &key.id),
        )
        .await
        .expect("insert");
    let later = t0() + Duration::minutes(1);
    let networks =
        AllowedNetworks::parse("allowedCidrs", &["10.0.0.0/8".to_owned()]).expect("networks");
    let updated = store
        .update_api_key(
            &ada.id,
            &key.id,
            &ApiKeyChange {
                name: Some("renamed"),
                scopes: Some(&ScopeSet::new([Scope::Write])),
                tier: Some(Tier::Free),
                allowed_networks: Some(&networks),
                rate_limit_per_minute: Some(Some(30)),
            },
            later,
            &key_audit(&ada, "api_key_update", &key.id),
        )
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        (updated.name.as_str(), updated.tier, updated.updated_at),
        ("renamed", Tier::Free, later)
    );
    assert_eq!(
        (&updated.allowed_networks, updated.rate_limit_per_minute),
        (&networks, Some(30))
    );
    assert!(updated.scopes.allows(&Scope::Read) && !updated.scopes.allows(&Scope::Admin));
    let partial = store
        .update_api_key(
            &ada.id,
            &key.id,
            &ApiKeyChange {
                tier: Some(Tier::Enterprise),
                ..ApiKeyChange::default()
            },
            later,
            &key_audit(&ada, "api_key_update", &key.id),
        )
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        (partial.name.as_str(), partial.tier),
        ("renamed", Tier::Enterprise)
    );
    assert_eq!(
        (&partial.allowed_networks, partial.rate_limit_per_minute),
        (&networks, Some(30)),
        "fields not named are kept"
    );
    let cleared = store
        .update_api_key(
            &ada.id,
            &key.id,
            &ApiKeyChange {
                allowed_networks: Some(&AllowedNetworks::default()),
                rate_limit_per_minute: Some(None),
                ..ApiKeyChange::default()
            },
            later,
            &key_audit(&ada, "api_key_update", &key.id),
        )
        .await
        .expect("update")
        .expect("exists");
    assert!(cleared.allowed_networks.is_unrestricted() && cleared.rate_limit_per_minute.is_none());
    assert!(
        store
            .update_api_key(
                &bob.id,
                &key.id,
                &ApiKeyChange {
                    name: Some("x"),
                    ..ApiKeyChange::default()
                },
                later,
                &key_audit(&bob, "api_key_update", &key.id)
            )
            .await
            .expect("update")
            .is_none()
    );

    store
        .record_api_key_usage(&[(key.id.clone(), 5, later), (key.id.clone(), 2, t0())])
        .await
        .expect("usage");
    let used = store
        .find_api_key(&ada.id, &key.id)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!((used.usage_count, used.last_used_at), (7, Some(later)));

    assert!(
        !store
            .revoke_api_key(
                &bob.id,
                &key.id,
                later,
                &key_audit(&bob, "api_key_revoke", &key.id)
            )
            .await
            .expect("revoke")
    );
    assert!(
        store
            .revoke_api_key(
                &ada.id,
                &key.id,
                later,
                &key_audit(&ada, "api_key_revoke", &key.id)
            )
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .revoke_api_key(
                &ada.id,
                &key.id,
                later,
                &key_audit(&ada, "api_key_revoke", &key.id)
            )
            .await
            .expect("revoke twice")
    );
    let found = store
        .lookup_api_key(&TokenHash::of("s"))
        .await
        .expect("lookup")
        .expect("still found");
    assert_eq!(found.key.revoked_at, Some(later));
    assert!(
        store
            .update_api_key(
                &ada.id,
                &key.id,
                &ApiKeyChange {
                    name: Some("x"),
                    ..ApiKeyChange::default()
                },
                later,
                &key_audit(&ada, "api_key_update", &key.id)
            )
            .await
            .expect("update")
            .is_none(),
        "a revoked key cannot be changed"
    );
    let trail = store
        .audit_for_resource(&ada.id, "api_key", key.id.as_str(), 10)
        .await
        .expect("trail");
    assert_eq!(trail.len(), 5);
}

/// Contract check.
pub async fn rolling_an_api_key_keeps_the_old_secret_for_the_grace_period(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let key = api_key(&ada);
    store
        .insert_api_key(
            &key,
            &TokenHash::of("old"),
            &key_audit(&ada, "api_key_create", &key.id),
        )
        .await
        .expect("insert");
    let grace_end = t0() + Duration::minutes(5);
    let rolled = store
        .roll_api_key(
            &ada.id,
            &key.id,
            &TokenHash::of("new"),
            "kor_newprefx",
            grace_end,
            t0(),
            &key_audit(&ada, "api_key_roll", &key.id),
        )
        .await
        .expect("roll")
        .expect("exists");
    assert_eq!(rolled.prefix, "kor_newprefx");
    let old = store
        .lookup_api_key(&TokenHash::of("old"))
        .await
        .expect("lookup")
        .expect("old still known");
    assert_eq!(old.secret_expires_at, Some(grace_end));
    let new = store
        .lookup_api_key(&TokenHash::of("new"))
        .await
        .expect("lookup")
        .expect("new known");
    assert!(new.secret_expires_at.is_none());
    // Rolling again with no grace ends the previous secret at once.
    store
        .roll_api_key(
            &ada.id,
            &key.id,
            &TokenHash::of("newer"),
            "kor_newerprf",
            t0(),
            t0(),
            &key_audit(&ada, "api_key_roll", &key.id),
        )
        .await
        .expect("roll")
        .expect("exists");
    let gone = store
        .lookup_api_key(&TokenHash::of("new"))
        .await
        .expect("lookup");
    assert!(gone.is_none_or(|found| found.secret_expires_at.is_some_and(|at| at <= t0())));
    let other = user(&store, "bob").await;
    let foreign = store
        .roll_api_key(
            &other.id,
            &key.id,
            &TokenHash::of("x"),
            "kor_xxxxxxxx",
            t0(),
            t0(),
            &key_audit(&other, "api_key_roll", &key.id),
        )
        .await
        .expect("roll");
    assert!(foreign.is_none());
}

fn stub_audit() -> AuditEntry {
    AuditEntry::anonymous(
        "contract".into(),
        &RequestContext::default(),
        "contract_check",
        t0(),
    )
}
