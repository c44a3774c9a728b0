//! API keys: they work at once, die on revoke, expire, roll with a grace period, carry only their
//! scopes, never read another user's data, and verify for other services.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error};

#[tokio::test]
async fn a_new_key_works_at_once_by_bearer_and_by_x_api_key() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let issued = app.create_key(&ada.access, json!({"name": "ci deploy", "scopes": ["read", "write", "provider:openai"], "rateLimitTier": "pro", "expiresInDays": 30})).await;
    let key = issued["key"].as_str().unwrap();
    assert!(key.starts_with("kor_") && key.len() == 53);
    assert!(issued["id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(issued["prefix"], &key[..12]);
    assert_eq!(
        issued["scopes"],
        json!(["read", "write", "provider:openai"])
    );
    assert_eq!(issued["rateLimitTier"], "pro");
    assert!(issued["expiresAt"].is_string());

    let me: Value = app
        .get_authed("/api/auth/me", key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["authMethod"], "api_key");
    assert_eq!(me["userId"], ada.user_id.as_str());
    assert_eq!(me["keyId"], issued["id"]);
    assert_eq!(me["rateLimitTier"], "pro");
    let by_header = app
        .with_api_key(Method::GET, "/api/v1/credentials", key, None)
        .await;
    assert_eq!(by_header.status(), 200);

    // The secret is never shown again.
    let list = app
        .get_authed("/api/v1/keys", &ada.access)
        .await
        .text()
        .await
        .unwrap();
    assert!(!list.contains(key));
    let one = app
        .get_authed(
            &format!("/api/v1/keys/{}", issued["id"].as_str().unwrap()),
            key,
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(!one.contains(key) && one.contains("\"status\":\"active\""));
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_the_very_next_request() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let issued = app
        .create_key(&ada.access, json!({"name": "short lived"}))
        .await;
    let key = issued["key"].as_str().unwrap();
    assert_eq!(app.get_authed("/api/auth/me", key).await.status(), 200);
    let id = issued["id"].as_str().unwrap();
    let revoked = app
        .request(
            Method::DELETE,
            &format!("/api/v1/keys/{id}"),
            Some(&ada.access),
            None,
        )
        .await;
    assert_eq!(revoked.status(), 204);
    assert_error(
        app.get_authed("/api/auth/me", key).await,
        401,
        "api_key_revoked",
    )
    .await;
    assert_error(
        app.with_api_key(Method::GET, "/api/v1/keys", key, None)
            .await,
        401,
        "api_key_revoked",
    )
    .await;
    let view: Value = app
        .get_authed(&format!("/api/v1/keys/{id}"), &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "revoked");
    assert_error(
        app.request(
            Method::DELETE,
            &format!("/api/v1/keys/{id}"),
            Some(&ada.access),
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn an_expired_key_is_refused_with_its_own_code() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let issued = app
        .create_key(&ada.access, json!({"name": "one day", "expiresInDays": 1}))
        .await;
    let key = issued["key"].as_str().unwrap();
    assert_eq!(app.get_authed("/api/auth/me", key).await.status(), 200);
    app.clock.advance(time::Duration::days(1));
    assert_error(
        app.get_authed("/api/auth/me", key).await,
        401,
        "api_key_expired",
    )
    .await;
}

#[tokio::test]
async fn a_rolled_key_keeps_the_old_secret_only_for_the_grace_period() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let issued = app
        .create_key(&ada.access, json!({"name": "rolling"}))
        .await;
    let (id, old) = (
        issued["id"].as_str().unwrap(),
        issued["key"].as_str().unwrap(),
    );
    let rolled = app
        .post_authed(
            &format!("/api/v1/keys/{id}/roll"),
            &ada.access,
            json!({"gracePeriodSeconds": 60}),
        )
        .await;
    assert_eq!(rolled.status(), 200);
    let rolled: Value = rolled.json().await.unwrap();
    let new = rolled["key"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(rolled["id"], id);
    assert!(rolled["previousKeyExpiresAt"].is_string());
    assert_eq!(app.get_authed("/api/auth/me", new).await.status(), 200);
    assert_eq!(
        app.get_authed("/api/auth/me", old).await.status(),
        200,
        "inside the grace period"
    );
    app.clock.advance(time::Duration::seconds(61));
    assert_error(
        app.get_authed("/api/auth/me", old).await,
        401,
        "api_key_expired",
    )
    .await;
    assert_eq!(app.get_authed("/api/auth/me", new).await.status(), 200);

    // No grace: the old secret dies at once.
    let again: Value = app
        .request(
            Method::POST,
            &format!("/api/v1/keys/{id}/roll"),
            Some(&ada.access),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let newest = again["key"].as_str().unwrap();
    assert_eq!(app.get_authed("/api/auth/me", newest).await.status(), 200);
    assert_eq!(app.get_authed("/api/auth/me", new).await.status(), 401);
}

#[tokio::test]
async fn a_key_can_do_only_what_its_scopes_allow() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let openai = app
        .create_credential(&ada.access, "openai", "sk-openai")
        .await;
    let anthropic = app
        .create_credential(&ada.access, "anthropic", "sk-ant")
        .await;
    let read_only = app
        .create_key(&ada.access, json!({"name": "reader", "scopes": ["read"]}))
        .await;
    let read_key = read_only["key"].as_str().unwrap();
    assert_eq!(
        app.get_authed("/api/v1/credentials", read_key)
            .await
            .status(),
        200
    );
    let create = app
        .post_authed(
            "/api/v1/credentials",
            read_key,
            json!({"provider": "openai", "credential": "sk"}),
        )
        .await;
    assert_error(create, 403, "insufficient_scope").await;
    let reveal = app
        .request(
            Method::POST,
            &format!("/api/v1/credentials/{openai}/reveal"),
            Some(read_key),
            None,
        )
        .await;
    assert_error(reveal, 403, "insufficient_scope").await;

    let openai_key = app
        .create_key(
            &ada.access,
            json!({"name": "openai only", "scopes": ["provider:openai"]}),
        )
        .await;
    let openai_key = openai_key["key"].as_str().unwrap();
    assert_eq!(app.reveal(openai_key, &openai).await, "sk-openai");
    let other = app
        .request(
            Method::POST,
            &format!("/api/v1/credentials/{anthropic}/reveal"),
            Some(openai_key),
            None,
        )
        .await;
    assert_error(other, 403, "insufficient_scope").await;
    // The denial is in the credential's trail.
    let trail: Value = app
        .get_authed(
            &format!("/api/v1/credentials/{anthropic}/audit"),
            &ada.access,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(trail["records"][0]["action"], "access_denied");
    assert_eq!(
        trail["records"][0]["metadata"]["requiredScope"],
        "provider:anthropic"
    );
}

#[tokio::test]
async fn a_key_never_grants_more_than_its_creator_holds() {
    let app = TestApp::spawn().await;
    app.user("root").await;
    let bob = app.user("bob").await;
    let admin_key = app
        .post_authed(
            "/api/v1/keys",
            &bob.access,
            json!({"name": "escalate", "scopes": ["admin"]}),
        )
        .await;
    assert_error(admin_key, 403, "insufficient_scope").await;
    let reader = app
        .create_key(&bob.access, json!({"name": "reader", "scopes": ["read"]}))
        .await;
    let reader_key = reader["key"].as_str().unwrap();
    let write_key = app
        .post_authed(
            "/api/v1/keys",
            reader_key,
            json!({"name": "escalate", "scopes": ["write"]}),
        )
        .await;
    assert_error(write_key, 403, "insufficient_scope").await;
    let writer = app
        .create_key(&bob.access, json!({"name": "writer", "scopes": ["write"]}))
        .await;
    let writer_key = writer["key"].as_str().unwrap();
    let widen = app
        .request(
            Method::PATCH,
            &format!("/api/v1/keys/{}", reader["id"].as_str().unwrap()),
            Some(writer_key),
            Some(json!({"scopes": ["provider:*"]})),
        )
        .await;
    assert_error(widen, 403, "insufficient_scope").await;
    let keys: Value = app
        .get_authed("/api/v1/keys", &bob.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_key_never_reads_another_users_data() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let bob = app.user("bob").await;
    let adas_credential = app.create_credential(&ada.access, "openai", "sk-ada").await;
    let adas_key = app
        .create_key(&ada.access, json!({"name": "ada key"}))
        .await;
    let bobs_key = app
        .create_key(
            &bob.access,
            json!({"name": "bob key", "scopes": ["read", "write", "provider:*"]}),
        )
        .await;
    let bobs_key = bobs_key["key"].as_str().unwrap();
    let adas_key_id = adas_key["id"].as_str().unwrap();
    assert_error(
        app.get_authed(&format!("/api/v1/credentials/{adas_credential}"), bobs_key)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.request(
            Method::POST,
            &format!("/api/v1/credentials/{adas_credential}/reveal"),
            Some(bobs_key),
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get_authed(&format!("/api/v1/keys/{adas_key_id}"), bobs_key)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.request(
            Method::DELETE,
            &format!("/api/v1/keys/{adas_key_id}"),
            Some(bobs_key),
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.request(
            Method::POST,
            &format!("/api/v1/keys/{adas_key_id}/roll"),
            Some(bobs_key),
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.request(
            Method::PATCH,
            &format!("/api/v1/keys/{adas_key_id}"),
            Some(bobs_key),
            Some(json!({"name": "mine"})),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    // Ada's key still works.
    assert_eq!(
        app.get_authed("/api/auth/me", adas_key["key"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn malformed_keys_are_401_before_any_lookup() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let issued = app.create_key(&ada.access, json!({"name": "real"})).await;
    let real = issued["key"].as_str().unwrap();
    let mut bad_checksum = real.to_owned();
    let last = if real.ends_with('A') { "B" } else { "A" };
    bad_checksum.replace_range(52..53, last);
    let cases = [
        bad_checksum,
        real.replacen("kor_", "kor-", 1),
        real[..52].to_owned(),
        format!("{real}0"),
        format!("kor_{}", "-".repeat(49)),
        "kor_".to_owned(),
        "kor_".to_owned() + &"a".repeat(300),
    ];
    for candidate in &cases {
        let by_header = app
            .with_api_key(Method::GET, "/api/auth/me", candidate, None)
            .await;
        assert_error(by_header, 401, "invalid_api_key").await;
    }
    assert_error(
        app.with_api_key(Method::GET, "/api/auth/me", "", None)
            .await,
        401,
        "invalid_api_key",
    )
    .await;
    let huge = "kor_".to_owned() + &"a".repeat(7000);
    assert_error(
        app.with_api_key(Method::GET, "/api/auth/me", &huge, None)
            .await,
        401,
        "invalid_api_key",
    )
    .await;
    assert_error(
        app.get_authed("/api/auth/me", &cases[0]).await,
        401,
        "invalid_api_key",
    )
    .await;
}

#[tokio::test]
async fn verify_tells_other_services_who_a_key_is() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let service = app
        .create_key(&ada.access, json!({"name": "gateway", "scopes": ["read"]}))
        .await;
    let service_key = service["key"].as_str().unwrap();
    let issued = app.create_key(&ada.access, json!({"name": "client", "scopes": ["read", "provider:openai"], "rateLimitTier": "premium", "expiresInDays": 10})).await;
    let key = issued["key"].as_str().unwrap();
    let verify = |candidate: String| {
        app.with_api_key(
            Method::POST,
            "/api/v1/keys/verify",
            service_key,
            Some(json!({"key": candidate})),
        )
    };
    let valid: Value = verify(key.to_owned()).await.json().await.unwrap();
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["code"], "VALID");
    assert_eq!(valid["keyId"], issued["id"]);
    assert_eq!(valid["userId"], ada.user_id.as_str());
    assert_eq!(valid["scopes"], json!(["read", "provider:openai"]));
    assert_eq!(valid["tier"], "premium");
    assert!(valid["expiresAt"].is_string());
    assert!(valid.get("ratelimit").is_some());

    let malformed: Value = verify("kor_nope".into()).await.json().await.unwrap();
    assert_eq!(
        (malformed["valid"].as_bool(), malformed["code"].as_str()),
        (Some(false), Some("MALFORMED"))
    );
    assert!(malformed["userId"].is_null());
    app.request(
        Method::DELETE,
        &format!("/api/v1/keys/{}", issued["id"].as_str().unwrap()),
        Some(&ada.access),
        None,
    )
    .await;
    let revoked: Value = verify(key.to_owned()).await.json().await.unwrap();
    assert_eq!(revoked["code"], "REVOKED");
    let other = app.create_key(&ada.access, json!({"name": "other"})).await;
    let other_key = other["key"].as_str().unwrap().to_owned();
    app.request(
        Method::DELETE,
        &format!("/api/v1/keys/{}", other["id"].as_str().unwrap()),
        Some(&ada.access),
        None,
    )
    .await;
    let _ = other_key;
    let expiring = app
        .create_key(&ada.access, json!({"name": "expiring", "expiresInDays": 1}))
        .await;
    app.clock.advance(time::Duration::days(2));
    let expired: Value = verify(expiring["key"].as_str().unwrap().to_owned())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(expired["code"], "EXPIRED");
    // A well-formed key that was never issued.
    let stranger = TestApp::spawn().await;
    let stranger_user = stranger.user("eve").await;
    let foreign = stranger
        .create_key(&stranger_user.access, json!({"name": "elsewhere"}))
        .await;
    let unknown: Value = verify(foreign["key"].as_str().unwrap().to_owned())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unknown["code"], "NOT_FOUND");
    assert_error(
        app.post("/api/v1/keys/verify", json!({"key": key})).await,
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test]
async fn sessions_only_operations_refuse_api_keys() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let issued = app
        .create_key(
            &ada.access,
            json!({"name": "k", "scopes": ["read", "write"]}),
        )
        .await;
    let key = issued["key"].as_str().unwrap();
    assert_error(
        app.request(Method::POST, "/api/auth/logout", Some(key), None)
            .await,
        403,
        "not_a_session",
    )
    .await;
    assert_error(
        app.request(Method::POST, "/api/auth/logout-all", Some(key), None)
            .await,
        403,
        "not_a_session",
    )
    .await;
    let change = app.post_authed("/api/auth/password", key, json!({"currentPassword": crate::harness::PASSWORD, "newPassword": "another fine passphrase"})).await;
    assert_error(change, 403, "not_a_session").await;
}

#[tokio::test]
async fn usage_is_counted_without_a_write_per_request_and_flushed_at_shutdown() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let issued = app
        .create_key(&ada.access, json!({"name": "counted"}))
        .await;
    let (id, key) = (
        issued["id"].as_str().unwrap().to_owned(),
        issued["key"].as_str().unwrap().to_owned(),
    );
    for _ in 0..7 {
        assert_eq!(app.get_authed("/api/auth/me", &key).await.status(), 200);
    }
    let data_dir = app.stop().await;
    let restarted = TestApp::spawn_in(data_dir, &[]).await;
    let view: Value = restarted
        .get_authed(&format!("/api/v1/keys/{id}"), &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["usageCount"], 7);
    assert!(view["lastUsedAt"].is_string());
}

#[tokio::test]
async fn revocation_reaches_another_instance_within_a_second() {
    let a = TestApp::spawn().await;
    let ada = a.user("ada").await;
    let issued = a.create_key(&ada.access, json!({"name": "shared"})).await;
    let key = issued["key"].as_str().unwrap();
    // A second instance on the same database (and key ring).
    let b = TestApp::spawn_in(a.data_dir.clone(), &[]).await;
    assert_eq!(
        b.get_authed("/api/auth/me", key).await.status(),
        200,
        "B has the key cached now"
    );
    let revoked_at = std::time::Instant::now();
    a.request(
        Method::DELETE,
        &format!("/api/v1/keys/{}", issued["id"].as_str().unwrap()),
        Some(&ada.access),
        None,
    )
    .await;
    loop {
        if b.get_authed("/api/auth/me", key).await.status() == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(2),
            "B still accepts a revoked key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_weaker_key_cannot_take_over_a_stronger_one_or_raise_a_tier() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let strong = app.create_key(&ada.access, json!({"name": "strong", "scopes": ["read", "write", "provider:*"], "rateLimitTier": "enterprise"})).await;
    let strong_id = strong["id"].as_str().unwrap();
    let weak = app
        .create_key(
            &ada.access,
            json!({"name": "weak", "scopes": ["read", "write"], "rateLimitTier": "free"}),
        )
        .await;
    let weak_key = weak["key"].as_str().unwrap();
    let roll = app
        .request(
            Method::POST,
            &format!("/api/v1/keys/{strong_id}/roll"),
            Some(weak_key),
            None,
        )
        .await;
    assert_error(roll, 403, "insufficient_scope").await;
    let patch = app
        .request(
            Method::PATCH,
            &format!("/api/v1/keys/{strong_id}"),
            Some(weak_key),
            Some(json!({"name": "mine now"})),
        )
        .await;
    assert_error(patch, 403, "insufficient_scope").await;
    let revoke = app
        .request(
            Method::DELETE,
            &format!("/api/v1/keys/{strong_id}"),
            Some(weak_key),
            None,
        )
        .await;
    assert_error(revoke, 403, "insufficient_scope").await;
    assert_eq!(
        app.get_authed("/api/auth/me", strong["key"].as_str().unwrap())
            .await
            .status(),
        200,
        "the strong key is untouched"
    );
    // A free key cannot mint or upgrade to a higher tier; a session can.
    let upgraded = app
        .post_authed(
            "/api/v1/keys",
            weak_key,
            json!({"name": "upgraded", "scopes": ["read"], "rateLimitTier": "pro"}),
        )
        .await;
    assert_error(upgraded, 403, "tier_not_allowed").await;
    let self_upgrade = app
        .request(
            Method::PATCH,
            &format!("/api/v1/keys/{}", weak["id"].as_str().unwrap()),
            Some(weak_key),
            Some(json!({"rateLimitTier": "enterprise"})),
        )
        .await;
    assert_error(self_upgrade, 403, "tier_not_allowed").await;
    let same_tier = app
        .post_authed(
            "/api/v1/keys",
            weak_key,
            json!({"name": "child", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(same_tier.status(), 201);
    // Denials name the key that tried, not just its owner.
    let trail: Value = app
        .get_authed(&format!("/api/v1/keys/{strong_id}"), &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(trail["status"], "active");
}
