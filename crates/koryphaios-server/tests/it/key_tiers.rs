//! Tiers are per user: a key's tier may not exceed its owner's, the tier layer counts a user's
//! keys and sessions together, and a key created by a key never outlives or survives it.

use reqwest::Method;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use crate::harness::{TestApp, assert_error};

const ON: (&str, &str) = ("KORYPHAIOS_RATE_LIMIT_ENABLED", "true");
const OPEN: (&str, &str) = ("KORYPHAIOS_ALLOW_REGISTRATION", "true");

/// A timestamp of a response, in Unix milliseconds (what stores keep).
fn instant(value: &Value) -> i128 {
    let at = time::OffsetDateTime::parse(value.as_str().expect("a timestamp"), &Rfc3339)
        .expect("RFC 3339");
    at.unix_timestamp_nanos() / 1_000_000
}

#[tokio::test]
async fn a_key_tier_above_its_owners_is_refused_and_the_default_is_the_owners() {
    let app = TestApp::spawn().await;
    let root = app.user("root").await;
    let bob = app.user("bob").await;
    let refused = app
        .post_authed(
            "/api/v1/keys",
            &bob.access,
            json!({"name": "greedy", "rateLimitTier": "enterprise"}),
        )
        .await;
    assert_error(refused, 403, "tier_not_allowed").await;
    let plain = app.create_key(&bob.access, json!({"name": "plain"})).await;
    assert_eq!(plain["rateLimitTier"], "free");
    let upgrade = app
        .request(
            Method::PATCH,
            &format!("/api/v1/keys/{}", plain["id"].as_str().unwrap()),
            Some(&bob.access),
            Some(json!({"rateLimitTier": "premium"})),
        )
        .await;
    assert_error(upgrade, 403, "tier_not_allowed").await;

    // Once an admin raises bob to pro, bob's keys may be pro (and default to it), not more.
    let raised = app
        .request(
            Method::PATCH,
            &format!("/api/v1/users/{}", bob.user_id),
            Some(&root.access),
            Some(json!({"tier": "pro"})),
        )
        .await;
    assert_eq!(raised.status(), 200);
    let pro = app
        .create_key(&bob.access, json!({"name": "pro", "rateLimitTier": "pro"}))
        .await;
    assert_eq!(pro["rateLimitTier"], "pro");
    let default = app
        .create_key(&bob.access, json!({"name": "default"}))
        .await;
    assert_eq!(default["rateLimitTier"], "pro");
    assert_error(
        app.post_authed(
            "/api/v1/keys",
            &bob.access,
            json!({"name": "over", "rateLimitTier": "enterprise"}),
        )
        .await,
        403,
        "tier_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn the_tier_layer_counts_a_users_keys_and_sessions_together() {
    let app = TestApp::spawn_with(&[
        ON,
        OPEN,
        ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "100"),
        ("KORYPHAIOS_RATE_LIMIT_TIER_FREE", "6"),
    ])
    .await;
    app.user("root").await;
    let bob = app.user("bob").await;
    let mut keys = Vec::new();
    for name in ["one", "two"] {
        let issued = app.create_key(&bob.access, json!({"name": name})).await;
        keys.push(issued["key"].as_str().unwrap().to_owned());
    }
    // Two keys were created with bob's session: 2 of the 6 are spent.
    let mut admitted = 0;
    for i in 0..12 {
        let response = match i % 3 {
            0 => app.get_authed("/api/auth/me", &bob.access).await,
            n => {
                app.with_api_key(Method::GET, "/api/auth/me", &keys[n - 1], None)
                    .await
            }
        };
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(admitted, 4, "one allowance for the user, not one per key");
}

#[tokio::test]
async fn a_key_below_its_owners_tier_is_also_held_to_its_own() {
    let app = TestApp::spawn_with(&[
        ON,
        OPEN,
        ("KORYPHAIOS_RATE_LIMIT_TIER_FREE", "3"),
        ("KORYPHAIOS_RATE_LIMIT_TIER_ENTERPRISE", "1000"),
    ])
    .await;
    let root = app.user("root").await;
    let issued = app
        .create_key(
            &root.access,
            json!({"name": "small", "rateLimitTier": "free"}),
        )
        .await;
    let key = issued["key"].as_str().unwrap();
    for _ in 0..3 {
        let response = app
            .with_api_key(Method::GET, "/api/auth/me", key, None)
            .await;
        assert_eq!(response.status(), 200);
    }
    let refused = app
        .with_api_key(Method::GET, "/api/auth/me", key, None)
        .await;
    assert_error(refused, 429, "rate_limited").await;
    // The owner's own allowance is untouched by the key's refusal.
    assert_eq!(
        app.get_authed("/api/auth/me", &root.access).await.status(),
        200
    );
}

#[tokio::test]
async fn a_key_created_by_a_key_never_outlives_it_and_is_revoked_with_it() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let parent = app
        .create_key(
            &ada.access,
            json!({"name": "parent", "scopes": ["read", "write"], "expiresInDays": 10}),
        )
        .await;
    let parent_secret = parent["key"].as_str().unwrap().to_owned();
    let create_through = |secret: String, body: Value| {
        let app = &app;
        async move {
            let response = app
                .with_api_key(Method::POST, "/api/v1/keys", &secret, Some(body))
                .await;
            assert_eq!(response.status(), 201);
            response.json::<Value>().await.unwrap()
        }
    };
    let longer = create_through(
        parent_secret.clone(),
        json!({"name": "child", "scopes": ["read", "write"], "expiresInDays": 30}),
    )
    .await;
    assert_eq!(instant(&longer["expiresAt"]), instant(&parent["expiresAt"]));
    let unbounded = create_through(parent_secret.clone(), json!({"name": "forever"})).await;
    assert_eq!(
        instant(&unbounded["expiresAt"]),
        instant(&parent["expiresAt"])
    );
    let shorter = create_through(
        parent_secret.clone(),
        json!({"name": "short", "expiresInDays": 1}),
    )
    .await;
    assert!(instant(&shorter["expiresAt"]) < instant(&parent["expiresAt"]));
    let grandchild = create_through(
        longer["key"].as_str().unwrap().to_owned(),
        json!({"name": "grandchild"}),
    )
    .await;
    let listed: Value = app
        .get_authed(
            &format!("/api/v1/keys/{}", longer["id"].as_str().unwrap()),
            &ada.access,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["parentKeyId"], parent["id"]);
    let sibling = app
        .create_key(&ada.access, json!({"name": "sibling"}))
        .await;

    // Warm the cache for every descendant, then revoke the parent.
    for key in [&longer, &unbounded, &grandchild] {
        let warm = app
            .with_api_key(
                Method::GET,
                "/api/auth/me",
                key["key"].as_str().unwrap(),
                None,
            )
            .await;
        assert_eq!(warm.status(), 200);
    }
    let revoked = app
        .request(
            Method::DELETE,
            &format!("/api/v1/keys/{}", parent["id"].as_str().unwrap()),
            Some(&ada.access),
            None,
        )
        .await;
    assert_eq!(revoked.status(), 204);
    for key in [&longer, &unbounded, &shorter, &grandchild] {
        assert_error(
            app.with_api_key(
                Method::GET,
                "/api/auth/me",
                key["key"].as_str().unwrap(),
                None,
            )
            .await,
            401,
            "api_key_revoked",
        )
        .await;
    }
    let unrelated = app
        .with_api_key(
            Method::GET,
            "/api/auth/me",
            sibling["key"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(unrelated.status(), 200, "a session's key is nobody's child");
}

#[tokio::test]
async fn rolling_a_key_keeps_its_children_working_for_the_grace_period_only() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let parent = app
        .create_key(
            &ada.access,
            json!({"name": "parent", "scopes": ["read", "write"]}),
        )
        .await;
    let old_secret = parent["key"].as_str().unwrap().to_owned();
    let child = app
        .with_api_key(
            Method::POST,
            "/api/v1/keys",
            &old_secret,
            Some(json!({"name": "child"})),
        )
        .await;
    assert_eq!(child.status(), 201);
    let child: Value = child.json().await.unwrap();
    assert!(child["expiresAt"].is_null(), "the parent does not expire");
    let child_secret = child["key"].as_str().unwrap().to_owned();

    let rolled = app
        .post_authed(
            &format!("/api/v1/keys/{}/roll", parent["id"].as_str().unwrap()),
            &ada.access,
            json!({"gracePeriodSeconds": 60}),
        )
        .await;
    assert_eq!(rolled.status(), 200);
    let rolled: Value = rolled.json().await.unwrap();
    let grace_end = instant(&rolled["previousKeyExpiresAt"]);

    // The old secret, within its grace period, cannot mint a key that outlives it.
    let late = app
        .with_api_key(
            Method::POST,
            "/api/v1/keys",
            &old_secret,
            Some(json!({"name": "late", "expiresInDays": 30})),
        )
        .await;
    assert_eq!(late.status(), 201);
    let late: Value = late.json().await.unwrap();
    assert_eq!(instant(&late["expiresAt"]), grace_end);

    let now = app
        .with_api_key(Method::GET, "/api/auth/me", &child_secret, None)
        .await;
    assert_eq!(now.status(), 200, "children work during the grace period");
    let stored: Value = app
        .get_authed(
            &format!("/api/v1/keys/{}", child["id"].as_str().unwrap()),
            &ada.access,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(instant(&stored["expiresAt"]), grace_end);

    app.clock.advance(time::Duration::seconds(61));
    for secret in [&child_secret, late["key"].as_str().unwrap()] {
        assert_error(
            app.with_api_key(Method::GET, "/api/auth/me", secret, None)
                .await,
            401,
            "api_key_expired",
        )
        .await;
    }
    let new_secret = rolled["key"].as_str().unwrap();
    assert_eq!(
        app.with_api_key(Method::GET, "/api/auth/me", new_secret, None)
            .await
            .status(),
        200,
        "the parent itself lives on with its new secret"
    );
}
