//! The paging part of the storage contract: credential and key lists page newest first by
//! `(created_at, id)`, every item exactly once, and a position only ever pages the caller's own list.

use std::sync::Arc;

use time::Duration;

use super::{api_key, audit, credential, key_audit, sealed, t0, user};
use crate::credentials::CredentialFilter;
use crate::pagination::{After, PageRequest};
use crate::secret::TokenHash;
use crate::store::Store;

/// Creation offsets (minutes from t0): ties on purpose, so the id decides within a millisecond.
const OFFSETS: [i64; 7] = [0, 0, 0, 1, 1, -1, -1];

/// Walks every page of `limit` items with `read` (which gets the position to start after) and
/// returns the items in order.
async fn walk<T, Id, F, Fut>(limit: u32, position: impl Fn(&T) -> After<Id>, read: F) -> Vec<T>
where
    F: Fn(PageRequest<Id>) -> Fut,
    Fut: std::future::Future<Output = Vec<T>>,
{
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = read(PageRequest { limit, after }).await;
        assert!(
            page.len() <= limit as usize,
            "a page holds at most its limit"
        );
        let full = page.len() == limit as usize;
        after = page.last().map(&position);
        all.extend(page);
        if !full {
            return all;
        }
    }
}

/// Contract check.
pub async fn credential_lists_page_newest_first_covering_each_once(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let bob = user(&store, "bob").await;
    for minutes in OFFSETS {
        let mut cred = credential(&store, &ada, "openai", None).await;
        // Re-created at another time: the helper stamps t0.
        cred.id = crate::ids::CredentialId::generate();
        cred.created_at = t0() + Duration::minutes(minutes);
        store
            .insert_credential(
                &cred,
                &sealed(1, 1),
                &audit(&ada, "credential_create", &cred.id),
            )
            .await
            .expect("insert");
    }
    let bobs = credential(&store, &bob, "anthropic", None).await;
    let list = |owner: crate::ids::UserId, page: PageRequest<crate::ids::CredentialId>| {
        let store = Arc::clone(&store);
        async move {
            store
                .list_credentials(&owner, &CredentialFilter::default(), t0(), &page)
                .await
                .expect("list")
        }
    };
    let everything = list(ada.id.clone(), PageRequest::default()).await;
    assert_eq!(
        everything.len(),
        14,
        "seven re-stamped plus seven stamped t0"
    );
    assert!(
        everything
            .windows(2)
            .all(|w| (w[0].created_at, w[0].id.as_str()) > (w[1].created_at, w[1].id.as_str())),
        "newest first, then by id, no duplicates"
    );
    let position = |c: &crate::credentials::Credential| After::item(c.created_at, c.id.clone());
    for limit in [1, 3, 14, 1000] {
        let paged = walk(limit, position, |page| list(ada.id.clone(), page)).await;
        assert_eq!(paged, everything, "limit {limit}");
    }
    // Filters and positions combine.
    let openai_after_first = store
        .list_credentials(
            &ada.id,
            &CredentialFilter {
                provider: Some("openai".into()),
                active: Some(true),
            },
            t0(),
            &PageRequest {
                limit: 100,
                after: Some(position(&everything[0])),
            },
        )
        .await
        .expect("list");
    assert_eq!(openai_after_first, everything[1..]);

    // A position from Ada's list pages Bob's own list: nothing of Ada's shows.
    let from_adas_position = list(
        bob.id.clone(),
        PageRequest {
            limit: 100,
            after: Some(After::item(
                t0() + Duration::minutes(5),
                everything[0].id.clone(),
            )),
        },
    )
    .await;
    assert_eq!(from_adas_position, vec![bobs]);
}

/// Contract check.
pub async fn key_lists_page_newest_first_covering_each_once(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let bob = user(&store, "bob").await;
    for (n, minutes) in OFFSETS.into_iter().enumerate() {
        let mut key = api_key(&ada);
        key.created_at = t0() + Duration::minutes(minutes);
        store
            .insert_api_key(
                &key,
                &TokenHash::of(&format!("ada-secret-{n}")),
                &key_audit(&ada, "api_key_create", &key.id),
            )
            .await
            .expect("insert");
    }
    let bobs = api_key(&bob);
    store
        .insert_api_key(
            &bobs,
            &TokenHash::of("bob-secret"),
            &key_audit(&bob, "api_key_create", &bobs.id),
        )
        .await
        .expect("insert");
    let list = |owner: crate::ids::UserId, page: PageRequest<crate::ids::ApiKeyId>| {
        let store = Arc::clone(&store);
        async move { store.list_api_keys(&owner, &page).await.expect("list") }
    };
    let everything = list(ada.id.clone(), PageRequest::default()).await;
    assert_eq!(everything.len(), 7);
    assert!(
        everything
            .windows(2)
            .all(|w| (w[0].created_at, w[0].id.as_str()) > (w[1].created_at, w[1].id.as_str())),
        "newest first, then by id, no duplicates"
    );
    let position = |k: &crate::api_keys::ApiKey| After::item(k.created_at, k.id.clone());
    for limit in [1, 2, 7, 1000] {
        let paged = walk(limit, position, |page| list(ada.id.clone(), page)).await;
        assert_eq!(paged, everything, "limit {limit}");
    }
    let from_adas_position = list(
        bob.id.clone(),
        PageRequest {
            limit: 100,
            after: Some(position(&everything[0])),
        },
    )
    .await;
    assert_eq!(from_adas_position, vec![bobs]);
}
