//! The storage contract: behaviour every [`Store`] backend must show, run by each backend's tests.
//!
//! A backend invokes [`store_contract_tests!`] with an expression that yields a fresh, migrated,
//! empty store; every check becomes its own `#[tokio::test]`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test-support code: a failed check must panic"
)]

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::ids::{FamilyId, RefreshTokenId, UserId};
use crate::secret::TokenHash;
use crate::store::{NewRefreshToken, RegisterUserError, RotateOutcome, Store};
use crate::users::{NewUser, PasswordHash, RegistrationPolicy, Role, User, Username};

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
        );
    };
    (@each $make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let store: ::std::sync::Arc<dyn $crate::store::Store> = $make;
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
        .register_user(new_user(name), RegistrationPolicy::Open)
        .await
        .unwrap_or_else(|e| panic!("register {name}: {e}"))
}

async fn session(store: &Arc<dyn Store>, user: &User, token: &str) -> FamilyId {
    let family = FamilyId::generate();
    store
        .create_session(&user.id, &family, &refresh(token, t0()))
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
        .register_user(new_user("first"), RegistrationPolicy::FirstUserOnly)
        .await;
    assert_eq!(
        first.expect("first user is always allowed").role,
        Role::Admin
    );
    let second = store
        .register_user(new_user("second"), RegistrationPolicy::FirstUserOnly)
        .await;
    assert!(matches!(second, Err(RegisterUserError::RegistrationClosed)));
    assert_eq!(store.count_users().await.expect("count"), 1);
}

/// Contract check.
pub async fn usernames_are_unique_ignoring_case(store: Arc<dyn Store>) {
    user(&store, "ada").await;
    let duplicate = store
        .register_user(new_user("ADA"), RegistrationPolicy::Open)
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
        .end_all_sessions(&ada.id, t0())
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
        .change_password(&ada.id, &new_hash, later)
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
