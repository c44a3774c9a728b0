//! The agent-token part of the storage contract: tokens live only while their parent key or
//! session does (and never past its expiry), are listed only while live, count uses exactly
//! under concurrency, and are purged once expired.

use std::sync::Arc;

use time::Duration;

use super::{api_key, key_audit, session, stub_audit, t0, user};
use crate::audit::RequestContext;
use crate::ids::TokenId;
use crate::networks::AllowedNetworks;
use crate::pagination::PageRequest;
use crate::scope::{Scope, ScopeSet};
use crate::secret::TokenHash;
use crate::store::Store;
use crate::tier::Tier;
use crate::tokens::{AgentToken, MAX_LIVE_TOKENS, TokenInserted, TokenParent};
use crate::users::User;

fn token(owner: &User, parent: TokenParent, ttl: Duration) -> AgentToken {
    AgentToken {
        id: TokenId::generate(),
        user_id: owner.id.clone(),
        name: Some("run".into()),
        prefix: "kat_abcdefgh".into(),
        scopes: ScopeSet::new([Scope::Read]),
        tier: Tier::Pro,
        credential_ids: None,
        max_uses: None,
        allowed_networks: AllowedNetworks::default(),
        run_id: Some("run-1".into()),
        parent,
        created_at: t0(),
        expires_at: t0() + ttl,
        revoked_at: None,
    }
}

trait Stored {
    fn stored(self) -> AgentToken;
}

impl Stored for TokenInserted {
    fn stored(self) -> AgentToken {
        match self {
            TokenInserted::Stored(token) => *token,
            other => panic!("expected the token stored, got {other:?}"),
        }
    }
}

fn first_page() -> PageRequest<TokenId> {
    PageRequest {
        limit: 100,
        after: None,
    }
}

/// Contract check.
pub async fn agent_tokens_live_only_while_their_parent_does(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let key = api_key(&ada);
    store
        .insert_api_key(
            &key,
            &TokenHash::of("kor_parent"),
            &key_audit(&ada, "api_key_create", &key.id),
        )
        .await
        .expect("insert key");
    // Asked to outlive its key (30 days), the token is cut to the key's expiry.
    let long = token(
        &ada,
        TokenParent::ApiKey(key.id.clone()),
        Duration::days(60),
    );
    let stored = store
        .insert_token(&long, &TokenHash::of("kat_long"), &stub_audit())
        .await
        .expect("insert token")
        .stored();
    assert_eq!(Some(stored.expires_at), key.expires_at);
    let found = store
        .lookup_token(&TokenHash::of("kat_long"), t0())
        .await
        .expect("lookup")
        .expect("found");
    assert!(found.parent_live && !found.owner_disabled);
    assert_eq!(found.token, stored);
    assert_eq!(found.parent_scopes.as_ref(), Some(&key.scopes));
    assert!(found.stored_hash.matches(&TokenHash::of("kat_long")));
    assert!(
        store
            .lookup_token(&TokenHash::of("kat_other"), t0())
            .await
            .expect("lookup")
            .is_none()
    );

    let family = session(&store, &ada, "rt-1").await;
    let from_session = token(
        &ada,
        TokenParent::Session(family.clone()),
        Duration::hours(1),
    );
    store
        .insert_token(&from_session, &TokenHash::of("kat_session"), &stub_audit())
        .await
        .expect("insert")
        .stored();
    let live = store
        .list_tokens(&ada.id, t0(), &first_page())
        .await
        .expect("list");
    assert_eq!(live.len(), 2);

    // The key revoked, its token's parent is dead: refused and no longer listed.
    store
        .revoke_api_key(
            &ada.id,
            &key.id,
            t0(),
            &key_audit(&ada, "api_key_revoke", &key.id),
        )
        .await
        .expect("revoke");
    let after = store
        .lookup_token(&TokenHash::of("kat_long"), t0())
        .await
        .expect("lookup")
        .expect("still stored");
    assert!(!after.parent_live);
    // Nor can the dead key mint another.
    let late = token(
        &ada,
        TokenParent::ApiKey(key.id.clone()),
        Duration::hours(1),
    );
    assert_eq!(
        store
            .insert_token(&late, &TokenHash::of("kat_late"), &stub_audit())
            .await
            .expect("insert"),
        TokenInserted::ParentGone
    );
    // The session ended: the same for its token.
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
    let ended = store
        .lookup_token(&TokenHash::of("kat_session"), t0())
        .await
        .expect("lookup")
        .expect("still stored");
    assert!(!ended.parent_live);
    assert!(
        store
            .list_tokens(&ada.id, t0(), &first_page())
            .await
            .expect("list")
            .is_empty()
    );
    // Another user's token is never found by id.
    let bob = user(&store, "bob").await;
    assert!(
        store
            .find_token(&bob.id, &stored.id)
            .await
            .expect("find")
            .is_none()
    );
}

/// Contract check.
pub async fn token_uses_are_counted_exactly_under_concurrency(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let family = session(&store, &ada, "rt-1").await;
    let limited = AgentToken {
        max_uses: Some(3),
        ..token(&ada, TokenParent::Session(family), Duration::hours(1))
    };
    store
        .insert_token(&limited, &TokenHash::of("kat_limited"), &stub_audit())
        .await
        .expect("insert")
        .stored();
    let uses = concurrent_uses(&store, &limited.id, 20).await;
    assert_eq!(uses.iter().filter(|counted| **counted).count(), 3);
    assert!(
        !store
            .consume_token_use(&limited.id, 3)
            .await
            .expect("consume")
    );
}

async fn concurrent_uses(store: &Arc<dyn Store>, id: &TokenId, n: usize) -> Vec<bool> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let store = Arc::clone(store);
        let id = id.clone();
        tasks.spawn(async move { store.consume_token_use(&id, 3).await.expect("consume") });
    }
    let mut counted = Vec::with_capacity(n);
    while let Some(result) = tasks.join_next().await {
        counted.push(result.expect("task"));
    }
    counted
}

/// Contract check.
pub async fn revoked_tokens_are_refused_and_expired_ones_purged(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let family = session(&store, &ada, "rt-1").await;
    let short = token(
        &ada,
        TokenParent::Session(family.clone()),
        Duration::minutes(1),
    );
    let long = token(&ada, TokenParent::Session(family), Duration::hours(1));
    for (item, secret) in [(&short, "kat_short"), (&long, "kat_long")] {
        store
            .insert_token(item, &TokenHash::of(secret), &stub_audit())
            .await
            .expect("insert")
            .stored();
    }
    let later = t0() + Duration::minutes(2);
    let live = store
        .list_tokens(&ada.id, later, &first_page())
        .await
        .expect("list");
    assert_eq!(
        live.iter().map(|t| &t.id).collect::<Vec<_>>(),
        vec![&long.id],
        "expired tokens are never listed"
    );
    let revoke_audit = crate::audit::AuditEntry::anonymous(
        format!("user:{}", ada.id),
        &RequestContext::default(),
        "token_revoke",
        later,
    );
    assert!(
        store
            .revoke_token(&ada.id, &long.id, later, &revoke_audit)
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .revoke_token(&ada.id, &long.id, later, &revoke_audit)
            .await
            .expect("revoke twice"),
        "a revoked token is not revoked again"
    );
    let revoked = store
        .lookup_token(&TokenHash::of("kat_long"), later)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(revoked.token.revoked_at, Some(later));
    assert_eq!(store.purge_expired_tokens(later).await.expect("purge"), 1);
    assert!(
        store
            .lookup_token(&TokenHash::of("kat_short"), later)
            .await
            .expect("lookup")
            .is_none()
    );
}

/// Contract check.
pub async fn a_user_holds_at_most_the_live_token_cap(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let family = session(&store, &ada, "rt-1").await;
    let parent = TokenParent::Session(family);
    for n in 0..MAX_LIVE_TOKENS {
        store
            .insert_token(
                &token(&ada, parent.clone(), Duration::minutes(5)),
                &TokenHash::of(&format!("kat_{n}")),
                &stub_audit(),
            )
            .await
            .expect("insert")
            .stored();
    }
    assert_eq!(
        store
            .insert_token(
                &token(&ada, parent.clone(), Duration::minutes(5)),
                &TokenHash::of("kat_over"),
                &stub_audit(),
            )
            .await
            .expect("insert"),
        TokenInserted::TooMany
    );
    // Expired ones do not count.
    let later = AgentToken {
        created_at: t0() + Duration::minutes(10),
        expires_at: t0() + Duration::minutes(20),
        ..token(&ada, parent, Duration::minutes(5))
    };
    store
        .insert_token(&later, &TokenHash::of("kat_later"), &stub_audit())
        .await
        .expect("insert")
        .stored();
}
