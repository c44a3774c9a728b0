//! Races on every write that checks before it acts, on both backends (SQLite orders them with its
//! single writer, PostgreSQL with row, table and advisory locks): each has the outcome some serial
//! order of the same calls would have.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

mod common;

use std::sync::Arc;

use common::{Backend, TestDb, anonymous, api_key, credential, entry, new_user, sealed, user};
use koryphaios_core::envelope::WrappedDek;
use koryphaios_core::ids::{FamilyId, RefreshTokenId};
use koryphaios_core::secret::TokenHash;
use koryphaios_core::store::{
    NewRefreshToken, RegisterUserError, RotateOutcome, Store, VersionAdded,
};
use koryphaios_core::users::{RegistrationPolicy, Role};
use time::{Duration, OffsetDateTime};

const RACERS: usize = 8;

/// Runs `RACERS` copies of `f` at once and collects their results.
async fn race<T, F, Fut>(store: &Arc<dyn Store>, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Store>, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let fut = f(Arc::clone(store), i);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            fut.await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

async fn concurrent_first_registrations_make_exactly_one_admin(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let users = race(&store, |store, i| async move {
        store
            .register_user(
                new_user(&format!("user{i}")),
                RegistrationPolicy::Open,
                &anonymous("register"),
            )
            .await
    })
    .await;
    let roles: Vec<Role> = users.into_iter().map(|u| u.unwrap().role).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == Role::Admin).count(),
        1,
        "{roles:?}"
    );
    assert_eq!(store.count_users().await.unwrap(), RACERS as u64);
}

async fn concurrent_first_only_registrations_admit_exactly_one(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let results = race(&store, |store, i| async move {
        store
            .register_user(
                new_user(&format!("user{i}")),
                RegistrationPolicy::FirstUserOnly,
                &anonymous("register"),
            )
            .await
    })
    .await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    let closed = results
        .iter()
        .filter(|r| matches!(r, Err(RegisterUserError::RegistrationClosed)))
        .count();
    assert_eq!((admitted, closed), (1, RACERS - 1));
    assert_eq!(store.count_users().await.unwrap(), 1);
}

async fn concurrent_registrations_of_one_name_store_it_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let results = race(&store, |store, i| async move {
        let name = if i % 2 == 0 { "ada" } else { "ADA" };
        store
            .register_user(
                new_user(name),
                RegistrationPolicy::Open,
                &anonymous("register"),
            )
            .await
    })
    .await;
    let taken = results
        .iter()
        .filter(|r| matches!(r, Err(RegisterUserError::UsernameTaken)))
        .count();
    assert_eq!(taken, RACERS - 1);
    assert_eq!(store.count_users().await.unwrap(), 1);
}

fn refresh(token: &str, now: OffsetDateTime) -> NewRefreshToken {
    NewRefreshToken {
        id: RefreshTokenId::generate(),
        token_hash: TokenHash::of(token),
        issued_at: now,
        expires_at: now + Duration::days(7),
    }
}

async fn a_refresh_token_presented_concurrently_is_spent_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let ada = user(store.as_ref(), "ada").await;
    let family = FamilyId::generate();
    let now = OffsetDateTime::now_utc();
    store
        .create_session(&ada.id, &family, &refresh("rt-1", now), &anonymous("login"))
        .await
        .unwrap();
    let outcomes = race(&store, |store, i| async move {
        store
            .rotate_refresh_token(
                &TokenHash::of("rt-1"),
                &refresh(&format!("next-{i}"), now),
                now,
            )
            .await
            .unwrap()
    })
    .await;
    let rotated = outcomes
        .iter()
        .filter(|o| matches!(o, RotateOutcome::Rotated { .. }))
        .count();
    let reuse = outcomes
        .iter()
        .filter(|o| matches!(o, RotateOutcome::ReuseDetected { .. }))
        .count();
    let invalid = outcomes
        .iter()
        .filter(|o| matches!(o, RotateOutcome::Invalid))
        .count();
    // Serially: one rotation, then one replay that revokes the family, then the family is dead.
    assert_eq!(
        (rotated, reuse, invalid),
        (1, 1, RACERS - 2),
        "{outcomes:?}"
    );
    let state = store
        .session_state(&ada.id, &family, "jti")
        .await
        .unwrap()
        .unwrap();
    assert!(state.family_revoked);
}

async fn a_rotation_chain_under_contention_never_forks(backend: Backend) {
    // Two holders of the same current token race on each step: one wins, the family dies.
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let ada = user(store.as_ref(), "ada").await;
    let family = FamilyId::generate();
    let now = OffsetDateTime::now_utc();
    store
        .create_session(&ada.id, &family, &refresh("a-0", now), &anonymous("login"))
        .await
        .unwrap();
    let presented = TokenHash::of("a-0");
    let (next_a, next_b) = (refresh("a-1", now), refresh("b-1", now));
    let (first, second) = tokio::join!(
        store.rotate_refresh_token(&presented, &next_a, now),
        store.rotate_refresh_token(&presented, &next_b, now),
    );
    let outcomes = [first.unwrap(), second.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, RotateOutcome::Rotated { .. }))
            .count(),
        1
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, RotateOutcome::ReuseDetected { .. }))
    );
    for next in ["a-1", "b-1"] {
        let after = store
            .rotate_refresh_token(&TokenHash::of(next), &refresh("z", now), now)
            .await
            .unwrap();
        assert!(matches!(after, RotateOutcome::Invalid), "{next}: {after:?}");
    }
}

async fn concurrent_credential_rotations_from_one_version_add_exactly_one(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let ada = user(store.as_ref(), "ada").await;
    let (cred, first) = credential(&ada);
    let id = cred.id.clone();
    store
        .insert_credential(
            &cred,
            &first,
            &entry(&ada, "credential_create", ("credential", id.as_str())),
        )
        .await
        .unwrap();
    let (owner, racer_id) = (ada.clone(), id.clone());
    let outcomes = race(&store, move |store, _| {
        let (owner, id) = (owner.clone(), racer_id.clone());
        async move {
            store
                .add_credential_version(
                    &owner.id,
                    &id,
                    1,
                    &sealed(2),
                    &entry(&owner, "credential_rotate", ("credential", id.as_str())),
                )
                .await
                .unwrap()
        }
    })
    .await;
    let added = outcomes
        .iter()
        .filter(|o| matches!(o, VersionAdded::Added(c) if c.current_version == 2))
        .count();
    let conflicts = outcomes
        .iter()
        .filter(|o| matches!(o, VersionAdded::Conflict))
        .count();
    assert_eq!((added, conflicts), (1, RACERS - 1));
    let trail = store
        .audit_for_resource(&ada.id, "credential", id.as_str(), 100)
        .await
        .unwrap();
    assert_eq!(
        trail.len(),
        2,
        "one create, one rotation: losers leave no record"
    );
}

async fn concurrent_rewraps_of_one_wrap_swap_it_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let ada = user(store.as_ref(), "ada").await;
    let (cred, first) = credential(&ada);
    store
        .insert_credential(
            &cred,
            &first,
            &entry(&ada, "credential_create", ("credential", cred.id.as_str())),
        )
        .await
        .unwrap();
    let target = store
        .wraps_to_rewrap("local", "k", 2, None, 10)
        .await
        .unwrap()
        .remove(0);
    let results = race(&store, move |store, i| {
        let target = target.clone();
        async move {
            let new = WrappedDek {
                provider: "local".into(),
                kek_id: "k".into(),
                kek_version: 2,
                ciphertext: vec![u8::try_from(i).unwrap(); 60],
            };
            store.replace_wrap(&target, &new).await.unwrap()
        }
    })
    .await;
    assert_eq!(results.iter().filter(|swapped| **swapped).count(), 1);
}

async fn concurrent_deletes_and_revokes_succeed_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let ada = user(store.as_ref(), "ada").await;
    let (cred, first) = credential(&ada);
    let cred_id = cred.id.clone();
    store
        .insert_credential(
            &cred,
            &first,
            &entry(&ada, "credential_create", ("credential", cred_id.as_str())),
        )
        .await
        .unwrap();
    let key = api_key(&ada);
    let key_id = key.id.clone();
    store
        .insert_api_key(
            &key,
            &TokenHash::of("s"),
            &entry(&ada, "api_key_create", ("api_key", key_id.as_str())),
        )
        .await
        .unwrap();
    let (owner, cid, kid) = (ada.clone(), cred_id.clone(), key_id.clone());
    let results = race(&store, move |store, i| {
        let (owner, cid, kid) = (owner.clone(), cid.clone(), kid.clone());
        async move {
            let now = OffsetDateTime::now_utc();
            if i % 2 == 0 {
                store
                    .delete_credential(
                        &owner.id,
                        &cid,
                        None,
                        now,
                        &entry(&owner, "credential_delete", ("credential", cid.as_str())),
                    )
                    .await
                    .map(|done| (true, done))
            } else {
                store
                    .revoke_api_key(
                        &owner.id,
                        &kid,
                        now,
                        &entry(&owner, "api_key_revoke", ("api_key", kid.as_str())),
                    )
                    .await
                    .map(|done| (false, done))
            }
        }
    })
    .await;
    let results: Vec<(bool, bool)> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        results
            .iter()
            .filter(|(delete, done)| *delete && *done)
            .count(),
        1
    );
    assert_eq!(
        results
            .iter()
            .filter(|(delete, done)| !*delete && *done)
            .count(),
        1
    );
    for (kind, id) in [
        ("credential", cred_id.as_str()),
        ("api_key", key_id.as_str()),
    ] {
        let trail = store
            .audit_for_resource(&ada.id, kind, id, 100)
            .await
            .unwrap();
        assert_eq!(trail.len(), 2, "{kind}: create and one change");
    }
}

async fn concurrent_rolls_leave_exactly_one_current_secret(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let ada = user(store.as_ref(), "ada").await;
    let key = api_key(&ada);
    let key_id = key.id.clone();
    store
        .insert_api_key(
            &key,
            &TokenHash::of("s-0"),
            &entry(&ada, "api_key_create", ("api_key", key_id.as_str())),
        )
        .await
        .unwrap();
    let (owner, kid) = (ada.clone(), key_id.clone());
    let rolled = race(&store, move |store, i| {
        let (owner, kid) = (owner.clone(), kid.clone());
        async move {
            let now = OffsetDateTime::now_utc();
            store
                .roll_api_key(
                    &owner.id,
                    &kid,
                    &TokenHash::of(&format!("s-{}", i + 1)),
                    "kor_rolledxx",
                    now + Duration::minutes(5),
                    now,
                    &entry(&owner, "api_key_roll", ("api_key", kid.as_str())),
                )
                .await
                .unwrap()
        }
    })
    .await;
    assert!(rolled.iter().all(Option::is_some));
    let mut current = 0;
    for i in 0..=RACERS {
        let found = store
            .lookup_api_key(&TokenHash::of(&format!("s-{i}")))
            .await
            .unwrap()
            .expect("every secret is still within its grace period");
        if found.secret_expires_at.is_none() {
            current += 1;
        }
    }
    assert_eq!(
        current, 1,
        "the last roll's secret is the only one without an end"
    );
}

async fn concurrent_usage_flushes_add_up_without_deadlocking(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let ada = user(store.as_ref(), "ada").await;
    let (a, b) = (api_key(&ada), api_key(&ada));
    for (key, secret) in [(&a, "a"), (&b, "b")] {
        store
            .insert_api_key(
                key,
                &TokenHash::of(secret),
                &entry(&ada, "api_key_create", ("api_key", key.id.as_str())),
            )
            .await
            .unwrap();
    }
    let (ida, idb) = (a.id.clone(), b.id.clone());
    let results = race(&store, move |store, i| {
        let (ida, idb) = (ida.clone(), idb.clone());
        async move {
            let now = OffsetDateTime::now_utc();
            // Half the flushes name the keys in the opposite order.
            let usage = if i % 2 == 0 {
                vec![(ida, 1, now), (idb, 2, now)]
            } else {
                vec![(idb, 2, now), (ida, 1, now)]
            };
            store.record_api_key_usage(&usage).await
        }
    })
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let count = |id| {
        let store = Arc::clone(&store);
        let owner = ada.id.clone();
        async move {
            store
                .find_api_key(&owner, &id)
                .await
                .unwrap()
                .unwrap()
                .usage_count
        }
    };
    assert_eq!(count(a.id.clone()).await, RACERS as i64);
    assert_eq!(count(b.id.clone()).await, 2 * RACERS as i64);
    // Standalone records still land beside all this.
    store.append_audit(&anonymous("done")).await.unwrap();
}

async fn keys_created_through_a_key_being_revoked_never_outlive_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let ada = user(store.as_ref(), "ada").await;
    for round in 0..3 {
        let parent = api_key(&ada);
        store
            .insert_api_key(
                &parent,
                &TokenHash::of(&format!("parent-{round}")),
                &anonymous("api_key_create"),
            )
            .await
            .unwrap();
        let (owner, parent_id) = (ada.clone(), parent.id.clone());
        let children = race(&store, move |store, i| {
            let (owner, parent_id) = (owner.clone(), parent_id.clone());
            async move {
                if i == RACERS / 2 {
                    store
                        .revoke_api_key(
                            &owner.id,
                            &parent_id,
                            OffsetDateTime::now_utc(),
                            &anonymous("api_key_revoke"),
                        )
                        .await
                        .unwrap();
                    return None;
                }
                let mut child = api_key(&owner);
                child.parent_id = Some(parent_id);
                let stored = store
                    .insert_api_key(
                        &child,
                        &TokenHash::of(&format!("child-{}", child.id)),
                        &anonymous("api_key_create"),
                    )
                    .await
                    .unwrap();
                stored.then_some(child.id)
            }
        })
        .await;
        for child in children.into_iter().flatten() {
            let stored = store.find_api_key(&ada.id, &child).await.unwrap().unwrap();
            assert!(
                stored.revoked_at.is_some(),
                "round {round}: a child committed beside its parent's revocation survived it"
            );
        }
    }
}

async fn two_admins_demoting_each_other_leave_one_admin(backend: Backend) {
    use koryphaios_core::store::UserUpdated;
    use koryphaios_core::users::UserChange;
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let root = user(store.as_ref(), "root").await;
    let bob = user(store.as_ref(), "bob").await;
    let promote = UserChange {
        role: Some(Role::Admin),
        ..UserChange::default()
    };
    let bob = match store
        .update_user(
            &bob,
            &promote.apply(&bob, OffsetDateTime::now_utc()),
            &anonymous("user_update"),
        )
        .await
        .unwrap()
    {
        UserUpdated::Updated(bob) => bob,
        other => panic!("promotion: {other:?}"),
    };
    let (root_c, bob_c) = (root.clone(), bob.clone());
    let outcomes = race(&store, move |store, i| {
        let target = if i % 2 == 0 {
            root_c.clone()
        } else {
            bob_c.clone()
        };
        async move {
            let demote = UserChange {
                role: Some(Role::User),
                ..UserChange::default()
            };
            let after = demote.apply(&target, OffsetDateTime::now_utc());
            store
                .update_user(&target, &after, &anonymous("user_update"))
                .await
                .unwrap()
        }
    })
    .await;
    let updated = outcomes
        .iter()
        .filter(|o| matches!(o, UserUpdated::Updated(_)))
        .count();
    assert_eq!(updated, 1, "{outcomes:?}");
    assert!(outcomes.contains(&UserUpdated::LastAdmin), "{outcomes:?}");
    let remaining = store.list_users(None, 10).await.unwrap();
    assert_eq!(
        remaining.iter().filter(|u| u.is_active_admin()).count(),
        1,
        "{remaining:?}"
    );
}

on_both_backends!(
    concurrent_first_registrations_make_exactly_one_admin,
    concurrent_first_only_registrations_admit_exactly_one,
    concurrent_registrations_of_one_name_store_it_once,
    a_refresh_token_presented_concurrently_is_spent_once,
    a_rotation_chain_under_contention_never_forks,
    concurrent_credential_rotations_from_one_version_add_exactly_one,
    concurrent_rewraps_of_one_wrap_swap_it_once,
    concurrent_deletes_and_revokes_succeed_once,
    concurrent_rolls_leave_exactly_one_current_secret,
    concurrent_usage_flushes_add_up_without_deadlocking,
    keys_created_through_a_key_being_revoked_never_outlive_it,
    two_admins_demoting_each_other_leave_one_admin,
);
