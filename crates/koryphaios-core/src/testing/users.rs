//! The user-tier part of the storage contract: tiers at registration, admins' changes (with the
//! compare-and-swap and the last-admin rule), disabling, paging, and keys created by keys.

use std::sync::Arc;

use time::Duration;

use super::{api_key, key_audit, new_user, session, stub_audit, t0, user};
use crate::api_keys::ApiKey;
use crate::audit::query::AuditQuery;
use crate::ids::ApiKeyId;
use crate::secret::TokenHash;
use crate::store::{Store, UserUpdated};
use crate::tier::Tier;
use crate::users::{RegistrationPolicy, Role, User, UserChange};

fn change(role: Option<Role>, tier: Option<Tier>, disabled: Option<bool>) -> UserChange {
    UserChange {
        role,
        tier,
        disabled,
    }
}

async fn update(store: &Arc<dyn Store>, user: &User, change: UserChange) -> UserUpdated {
    let after = change.apply(user, t0() + Duration::minutes(1));
    store
        .update_user(user, &after, &stub_audit())
        .await
        .expect("update user")
}

fn updated(outcome: UserUpdated) -> User {
    match outcome {
        UserUpdated::Updated(user) => user,
        other => panic!("expected an update, got {other:?}"),
    }
}

/// Contract check.
pub async fn the_first_user_is_an_enterprise_admin_and_later_ones_get_the_default_tier(
    store: Arc<dyn Store>,
) {
    let mut first = new_user("first");
    first.default_tier = Tier::Pro;
    let first = store
        .register_user(first, RegistrationPolicy::Open, &stub_audit())
        .await
        .expect("register");
    let mut second = new_user("second");
    second.default_tier = Tier::Premium;
    let second = store
        .register_user(second, RegistrationPolicy::Open, &stub_audit())
        .await
        .expect("register");
    assert_eq!((first.role, first.tier), (Role::Admin, Tier::Enterprise));
    assert_eq!((second.role, second.tier), (Role::User, Tier::Premium));
    assert!(second.disabled_at.is_none() && second.last_login_at.is_none());
    assert_eq!(
        store.find_user(&second.id).await.expect("find"),
        Some(second)
    );
}

/// Contract check.
pub async fn an_admin_change_is_stored_audited_and_refused_when_the_user_moved(
    store: Arc<dyn Store>,
) {
    let _admin = user(&store, "root").await;
    let bob = user(&store, "bob").await;
    let audit_before = store
        .query_audit(&AuditQuery::default())
        .await
        .expect("query")
        .len();
    let promoted = updated(
        update(
            &store,
            &bob,
            change(Some(Role::Admin), Some(Tier::Pro), None),
        )
        .await,
    );
    assert_eq!((promoted.role, promoted.tier), (Role::Admin, Tier::Pro));
    assert_eq!(promoted.updated_at, t0() + Duration::minutes(1));
    assert_eq!(
        store.find_user(&bob.id).await.expect("find"),
        Some(promoted.clone())
    );
    let audit_after = store
        .query_audit(&AuditQuery::default())
        .await
        .expect("query")
        .len();
    assert_eq!(
        audit_after,
        audit_before + 1,
        "the change and its record commit together"
    );
    // `bob` as read before the promotion is stale now.
    assert_eq!(
        update(&store, &bob, change(None, Some(Tier::Free), None)).await,
        UserUpdated::Conflict
    );
    let mut ghost = bob.clone();
    ghost.id = crate::ids::UserId::generate();
    assert_eq!(
        update(&store, &ghost, change(None, Some(Tier::Free), None)).await,
        UserUpdated::NotFound
    );
}

/// Contract check.
pub async fn the_last_active_admin_can_be_neither_demoted_nor_disabled(store: Arc<dyn Store>) {
    let root = user(&store, "root").await;
    let bob = user(&store, "bob").await;
    for last in [
        change(Some(Role::User), None, None),
        change(None, None, Some(true)),
    ] {
        assert_eq!(update(&store, &root, last).await, UserUpdated::LastAdmin);
    }
    assert_eq!(
        store.find_user(&root.id).await.expect("find"),
        Some(root.clone())
    );
    // With a second admin, the first may step down; then the second is the last one.
    let bob = updated(update(&store, &bob, change(Some(Role::Admin), None, None)).await);
    let root = updated(update(&store, &root, change(Some(Role::User), None, None)).await);
    assert_eq!(root.role, Role::User);
    assert_eq!(
        update(&store, &bob, change(None, None, Some(true))).await,
        UserUpdated::LastAdmin
    );
    // A tier change of the last admin is fine.
    updated(update(&store, &bob, change(None, Some(Tier::Free), None)).await);
}

/// Contract check.
pub async fn disabling_a_user_ends_their_sessions_and_marks_their_keys(store: Arc<dyn Store>) {
    let _root = user(&store, "root").await;
    let bob = user(&store, "bob").await;
    let family = session(&store, &bob, "bob-refresh").await;
    let bob = store.find_user(&bob.id).await.expect("find").expect("bob");
    assert_eq!(bob.last_login_at, Some(t0()), "a session start is a login");
    let key = api_key(&bob);
    store
        .insert_api_key(
            &key,
            &TokenHash::of("bob-key"),
            &key_audit(&bob, "api_key_create", &key.id),
        )
        .await
        .expect("insert");
    let lookup = |store: Arc<dyn Store>| async move {
        store
            .lookup_api_key(&TokenHash::of("bob-key"))
            .await
            .expect("lookup")
            .expect("found")
    };
    let live = lookup(Arc::clone(&store)).await;
    assert!(!live.owner_disabled);
    assert_eq!(live.owner_tier, Tier::Free);

    let disabled = updated(update(&store, &bob, change(None, Some(Tier::Pro), Some(true))).await);
    assert_eq!(disabled.disabled_at, Some(t0() + Duration::minutes(1)));
    assert_eq!(disabled.session_epoch, bob.session_epoch + 1);
    let state = store
        .session_state(&bob.id, &family, "jti")
        .await
        .expect("state")
        .expect("user");
    assert!(state.family_revoked && state.user.is_disabled());
    let marked = lookup(Arc::clone(&store)).await;
    assert!(marked.owner_disabled);
    assert_eq!(marked.owner_tier, Tier::Pro);

    let enabled = updated(update(&store, &disabled, change(None, None, Some(false))).await);
    assert!(!enabled.is_disabled());
    assert!(
        !lookup(Arc::clone(&store)).await.owner_disabled,
        "keys work again"
    );
    let state = store
        .session_state(&bob.id, &family, "jti")
        .await
        .expect("state")
        .expect("user");
    assert!(state.family_revoked, "sessions stay ended");
}

/// Contract check.
pub async fn users_are_listed_in_id_order_a_page_at_a_time(store: Arc<dyn Store>) {
    let mut all = Vec::new();
    for name in ["ann", "ben", "cat", "dan", "eve"] {
        all.push(user(&store, name).await);
    }
    all.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    let first = store.list_users(None, 2).await.expect("list");
    assert_eq!(first, all[..2].to_vec());
    let second = store.list_users(Some(&first[1].id), 2).await.expect("list");
    assert_eq!(second, all[2..4].to_vec());
    let last = store
        .list_users(Some(&second[1].id), 2)
        .await
        .expect("list");
    assert_eq!(last, all[4..].to_vec());
    assert!(
        store
            .list_users(Some(&all[4].id), 2)
            .await
            .expect("list")
            .is_empty()
    );
}

fn child_of(parent: &ApiKey) -> ApiKey {
    ApiKey {
        id: ApiKeyId::generate(),
        parent_id: Some(parent.id.clone()),
        ..parent.clone()
    }
}

async fn insert(store: &Arc<dyn Store>, owner: &User, key: &ApiKey, secret: &str) -> bool {
    store
        .insert_api_key(
            key,
            &TokenHash::of(secret),
            &key_audit(owner, "api_key_create", &key.id),
        )
        .await
        .expect("insert")
}

/// Contract check.
pub async fn revoking_a_key_revokes_every_key_created_through_it(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let parent = api_key(&ada);
    let child = child_of(&parent);
    let grandchild = child_of(&child);
    let sibling = api_key(&ada);
    for (key, secret) in [
        (&parent, "p"),
        (&child, "c"),
        (&grandchild, "g"),
        (&sibling, "s"),
    ] {
        assert!(insert(&store, &ada, key, secret).await);
    }
    assert_eq!(
        store
            .find_api_key(&ada.id, &child.id)
            .await
            .expect("find")
            .and_then(|k| k.parent_id),
        Some(parent.id.clone())
    );
    let at = t0() + Duration::minutes(5);
    assert!(
        store
            .revoke_api_key(
                &ada.id,
                &parent.id,
                at,
                &key_audit(&ada, "api_key_revoke", &parent.id)
            )
            .await
            .expect("revoke")
    );
    for (key, revoked) in [
        (&parent, true),
        (&child, true),
        (&grandchild, true),
        (&sibling, false),
    ] {
        let stored = store
            .find_api_key(&ada.id, &key.id)
            .await
            .expect("find")
            .expect("key");
        assert_eq!(stored.revoked_at.is_some(), revoked, "{}", key.name);
    }
    // A key created through a revoked key is refused.
    let late = child_of(&parent);
    assert!(!insert(&store, &ada, &late, "late").await);
    assert!(
        store
            .find_api_key(&ada.id, &late.id)
            .await
            .expect("find")
            .is_none()
    );
    // Revoking a child does not touch its parent.
    let sibling_child = child_of(&sibling);
    assert!(insert(&store, &ada, &sibling_child, "sc").await);
    assert!(
        store
            .revoke_api_key(&ada.id, &sibling_child.id, at, &stub_audit())
            .await
            .expect("revoke")
    );
    let sibling = store
        .find_api_key(&ada.id, &sibling.id)
        .await
        .expect("find")
        .expect("key");
    assert!(sibling.revoked_at.is_none());
}

/// Contract check.
pub async fn rolling_a_key_ends_its_descendants_with_the_grace_period(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let parent = api_key(&ada);
    let child = ApiKey {
        expires_at: None,
        ..child_of(&parent)
    };
    let grandchild = ApiKey {
        expires_at: Some(t0() + Duration::minutes(1)),
        ..child_of(&child)
    };
    for (key, secret) in [(&parent, "p"), (&child, "c"), (&grandchild, "g")] {
        assert!(insert(&store, &ada, key, secret).await);
    }
    let grace_end = t0() + Duration::minutes(10);
    store
        .roll_api_key(
            &ada.id,
            &parent.id,
            &TokenHash::of("p2"),
            "kor_p2p2p2p2",
            grace_end,
            t0(),
            &key_audit(&ada, "api_key_roll", &parent.id),
        )
        .await
        .expect("roll")
        .expect("rolled");
    let expiry = |id: ApiKeyId| {
        let store = Arc::clone(&store);
        let owner = ada.id.clone();
        async move {
            store
                .find_api_key(&owner, &id)
                .await
                .expect("find")
                .expect("key")
                .expires_at
        }
    };
    assert_eq!(
        expiry(parent.id.clone()).await,
        parent.expires_at,
        "the key itself keeps its expiry"
    );
    assert_eq!(expiry(child.id.clone()).await, Some(grace_end));
    assert_eq!(
        expiry(grandchild.id.clone()).await,
        Some(t0() + Duration::minutes(1)),
        "an earlier end is kept"
    );
}
