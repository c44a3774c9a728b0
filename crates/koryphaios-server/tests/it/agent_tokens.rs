//! Agent tokens (issue #16) and the per-key network and rate policy, over HTTP on one instance:
//! lifetime, scopes, credential restrictions, exact use counts under concurrency, networks through
//! a trusted proxy, death with the parent, listing, run ids in the audit log, and bad input.
//! Across two instances: `scale_out.rs`. Through the proxy: `proxy.rs`.

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error};

/// Mints a token with `caller` (a session's access token or an API key) and returns the answer.
async fn mint(app: &TestApp, caller: &str, body: Value) -> Value {
    let response = app.post_authed("/api/v1/tokens", caller, body).await;
    assert_eq!(response.status(), 201, "mint token");
    response.json().await.unwrap()
}

fn secret(issued: &Value) -> String {
    issued["token"].as_str().unwrap().to_owned()
}

async fn status_of(app: &TestApp, path: &str, token: &str) -> u16 {
    app.get_authed(path, token).await.status().as_u16()
}

async fn key(app: &TestApp, session: &str, body: Value) -> String {
    app.create_key(session, body).await["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_token_works_for_its_lifetime_then_says_token_expired() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let reader = key(&app, &ada.access, json!({"name": "ci", "scopes": ["read"]})).await;
    let issued = mint(&app, &reader, json!({"ttlSeconds": 2, "name": "run 1"})).await;
    let token = secret(&issued);
    assert!(token.starts_with("kat_") && token.len() == 53, "{issued}");
    assert!(issued["id"].as_str().unwrap().starts_with("tok_"));
    assert_eq!(
        issued["scopes"],
        json!(["read"]),
        "default: the caller's scopes"
    );
    assert_eq!(issued["prefix"], &token[..12]);
    let me: Value = app
        .get_authed("/api/auth/me", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["authMethod"], "token");
    assert_eq!(me["tokenId"], issued["id"]);
    // Both headers work, like an API key.
    let by_header = app
        .with_api_key(Method::GET, "/api/auth/me", &token, None)
        .await;
    assert_eq!(by_header.status(), 200);

    app.clock.advance(time::Duration::seconds(3));
    assert_error(
        app.get_authed("/api/auth/me", &token).await,
        401,
        "token_expired",
    )
    .await;
}

#[tokio::test]
async fn a_token_never_outlives_the_key_that_minted_it() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let short = key(
        &app,
        &ada.access,
        json!({"name": "short", "scopes": ["read"], "expiresInDays": 1}),
    )
    .await;
    let issued = mint(&app, &short, json!({"ttlSeconds": 86_400})).await;
    let key_expiry = app.clock_now() + time::Duration::days(1);
    let token_expiry = time::OffsetDateTime::parse(
        issued["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(token_expiry <= key_expiry, "{issued}");
}

#[tokio::test]
async fn scopes_narrow_and_a_token_cannot_write_mint_or_manage_keys() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let reader = key(&app, &ada.access, json!({"name": "ci", "scopes": ["read"]})).await;
    // A read key cannot mint a write token.
    assert_error(
        app.post_authed(
            "/api/v1/tokens",
            &reader,
            json!({"ttlSeconds": 60, "scopes": ["write"]}),
        )
        .await,
        403,
        "insufficient_scope",
    )
    .await;
    let token = secret(&mint(&app, &reader, json!({"ttlSeconds": 60})).await);
    assert_eq!(status_of(&app, "/api/v1/credentials", &token).await, 200);
    assert_error(
        app.post_authed(
            "/api/v1/credentials",
            &token,
            json!({"provider": "openai", "credential": "sk-x-0123456789"}),
        )
        .await,
        403,
        "insufficient_scope",
    )
    .await;
    // Even with every scope, a token mints nothing and manages no key.
    let writer = secret(&mint(&app, &ada.access, json!({"ttlSeconds": 60})).await);
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/tokens".to_owned(),
            json!({"ttlSeconds": 60}),
        ),
        (
            Method::POST,
            "/api/v1/keys".to_owned(),
            json!({"name": "escape"}),
        ),
    ] {
        let response = app.request(method, &path, Some(&writer), Some(body)).await;
        assert_error(response, 403, "token_cannot_mint").await;
    }
    let some_key: Value = app
        .create_key(&ada.access, json!({"name": "target", "scopes": ["read"]}))
        .await;
    let key_path = format!("/api/v1/keys/{}", some_key["id"].as_str().unwrap());
    let response = app
        .request(Method::DELETE, &key_path, Some(&writer), None)
        .await;
    assert_error(response, 403, "token_cannot_mint").await;
    // Each refusal is audited as access_denied, with the restriction that refused it.
    let denials: Value = app
        .get_authed("/api/v1/audit/me?action=access_denied", &ada.access)
        .await
        .json()
        .await
        .unwrap();
    let restricted = denials["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["metadata"]["restriction"] == "mint")
        .count();
    assert_eq!(restricted, 3, "{denials}");
}

#[tokio::test]
async fn credential_ids_limit_reveal_to_those_credentials() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let first = app
        .create_credential(&ada.access, "openai", "sk-first-0123456789")
        .await;
    let second = app
        .create_credential(&ada.access, "openai", "sk-second-0123456789")
        .await;
    let token = secret(
        &mint(
            &app,
            &ada.access,
            json!({"ttlSeconds": 60, "scopes": ["provider:openai"], "credentialIds": [first]}),
        )
        .await,
    );
    assert_eq!(app.reveal(&token, &first).await, "sk-first-0123456789");
    let refused = app
        .request(
            Method::POST,
            &format!("/api/v1/credentials/{second}/reveal"),
            Some(&token),
            None,
        )
        .await;
    assert_error(refused, 403, "credential_not_allowed").await;
    // Another user's credential (or none at all) cannot be named.
    let bob = app.user("bob").await;
    let bobs = app
        .create_credential(&bob.access, "openai", "sk-bob-0123456789")
        .await;
    let response = app
        .post_authed(
            "/api/v1/tokens",
            &ada.access,
            json!({"ttlSeconds": 60, "credentialIds": [first, bobs]}),
        )
        .await;
    let body = assert_error(response, 400, "validation_failed").await;
    assert_eq!(body["details"][0]["field"], "credentialIds[1]", "{body}");
}

#[tokio::test]
async fn max_uses_admits_exactly_that_many_of_concurrent_requests() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let token = secret(&mint(&app, &ada.access, json!({"ttlSeconds": 60, "maxUses": 3})).await);
    let answers = join_all((0..20).map(|_| app.get_authed("/api/auth/me", &token))).await;
    let mut admitted = 0;
    for response in answers {
        match response.status().as_u16() {
            200 => admitted += 1,
            401 => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["code"], "token_exhausted", "{body}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(admitted, 3);
}

#[tokio::test]
async fn networks_are_checked_on_the_address_through_a_trusted_proxy() {
    let app = TestApp::spawn_with(&[
        ("KORYPHAIOS_ALLOW_REGISTRATION", "true"),
        ("KORYPHAIOS_TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    let ada = app.user("ada").await;
    let office = key(
        &app,
        &ada.access,
        json!({"name": "office", "scopes": ["read"], "allowedCidrs": ["203.0.113.0/24"]}),
    )
    .await;
    let token = secret(
        &mint(
            &app,
            &ada.access,
            json!({"ttlSeconds": 60, "allowedCidrs": ["198.51.100.7"]}),
        )
        .await,
    );
    let from = |secret: &str, address: Option<&str>| {
        let mut request = app.client.get(app.url("/api/auth/me")).bearer_auth(secret);
        if let Some(address) = address {
            request = request.header("x-forwarded-for", address);
        }
        request.send()
    };
    assert_eq!(
        from(&office, Some("203.0.113.9")).await.unwrap().status(),
        200
    );
    assert_eq!(
        from(&token, Some("198.51.100.7")).await.unwrap().status(),
        200
    );
    for (secret, address) in [
        (&office, Some("198.51.100.7")),
        (&office, None),
        (&token, Some("198.51.100.8")),
        (&token, Some("::ffff:203.0.113.9")),
    ] {
        let response = from(secret, address).await.unwrap();
        assert_error(response, 403, "ip_not_allowed").await;
    }
    // A token minted by a restricted key stays inside the key's networks.
    let narrowed = app
        .client
        .post(app.url("/api/v1/tokens"))
        .bearer_auth(&office)
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"ttlSeconds": 60, "allowedCidrs": ["0.0.0.0/0"]}))
        .send()
        .await
        .unwrap();
    assert_error(narrowed, 400, "validation_failed").await;
    let inherited: Value = app
        .client
        .post(app.url("/api/v1/tokens"))
        .bearer_auth(&office)
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"ttlSeconds": 60}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        inherited["allowedCidrs"],
        json!(["203.0.113.0/24"]),
        "{inherited}"
    );
}

#[tokio::test]
async fn tokens_die_with_their_key_or_session() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let issued = app
        .create_key(&ada.access, json!({"name": "parent", "scopes": ["read"]}))
        .await;
    let parent = issued["key"].as_str().unwrap();
    let from_key = secret(&mint(&app, parent, json!({"ttlSeconds": 600})).await);
    assert_eq!(status_of(&app, "/api/auth/me", &from_key).await, 200);
    let revoked = app
        .request(
            Method::DELETE,
            &format!("/api/v1/keys/{}", issued["id"].as_str().unwrap()),
            Some(&ada.access),
            None,
        )
        .await;
    assert_eq!(revoked.status(), 204);
    assert_error(
        app.get_authed("/api/auth/me", &from_key).await,
        401,
        "token_revoked",
    )
    .await;

    let session = app.login("ada").await;
    let from_session = secret(&mint(&app, &session.access, json!({"ttlSeconds": 600})).await);
    assert_eq!(status_of(&app, "/api/auth/me", &from_session).await, 200);
    let out = app
        .request(
            Method::POST,
            "/api/auth/logout",
            Some(&session.access),
            None,
        )
        .await;
    assert_eq!(out.status(), 204);
    assert_error(
        app.get_authed("/api/auth/me", &from_session).await,
        401,
        "token_revoked",
    )
    .await;
}

#[tokio::test]
async fn the_list_holds_live_tokens_only_and_delete_revokes() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let short = mint(&app, &ada.access, json!({"ttlSeconds": 1})).await;
    let long = mint(
        &app,
        &ada.access,
        json!({"ttlSeconds": 600, "runId": "nightly-7"}),
    )
    .await;
    app.clock.advance(time::Duration::seconds(2));
    let listed: Value = app
        .get_authed("/api/v1/tokens", &ada.access)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&Value> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert_eq!(ids, vec![&long["id"]], "{listed}");
    assert!(!listed.to_string().contains(&secret(&long)), "{listed}");
    assert_eq!(listed["tokens"][0]["runId"], "nightly-7");
    assert!(
        listed["tokens"][0].get("token").is_none(),
        "the secret is shown once"
    );
    let _ = short;

    // Another user's token is not found; the owner's is revoked at once.
    let bob = app.user("bob").await;
    let path = format!("/api/v1/tokens/{}", long["id"].as_str().unwrap());
    let foreign = app
        .request(Method::DELETE, &path, Some(&bob.access), None)
        .await;
    assert_error(foreign, 404, "not_found").await;
    let deleted = app
        .request(Method::DELETE, &path, Some(&ada.access), None)
        .await;
    assert_eq!(deleted.status(), 204);
    assert_error(
        app.get_authed("/api/auth/me", &secret(&long)).await,
        401,
        "token_revoked",
    )
    .await;
    let again = app
        .request(Method::DELETE, &path, Some(&ada.access), None)
        .await;
    assert_error(again, 404, "not_found").await;
    let listed: Value = app
        .get_authed("/api/v1/tokens", &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["tokens"], json!([]));

    // A token sees only itself, and may end its own run early.
    let own = mint(&app, &ada.access, json!({"ttlSeconds": 600})).await;
    mint(&app, &ada.access, json!({"ttlSeconds": 600})).await;
    let seen: Value = app
        .get_authed("/api/v1/tokens", &secret(&own))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["tokens"].as_array().unwrap().len(), 1, "{seen}");
    let own_path = format!("/api/v1/tokens/{}", own["id"].as_str().unwrap());
    let ended = app
        .request(Method::DELETE, &own_path, Some(&secret(&own)), None)
        .await;
    assert_eq!(ended.status(), 204);
}

#[tokio::test]
async fn the_run_id_is_on_every_record_the_token_causes_and_filters_the_log() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let issued = mint(
        &app,
        &ada.access,
        json!({"ttlSeconds": 600, "runId": "run-42 / eval"}),
    )
    .await;
    let token = secret(&issued);
    app.create_credential(&token, "openai", "sk-run-0123456789")
        .await;
    let refused = app
        .post_authed("/api/v1/tokens", &token, json!({"ttlSeconds": 5}))
        .await;
    assert_eq!(refused.status(), 403);
    // Someone else's records never carry it: a caller cannot forge a run id into metadata.
    app.create_credential(&ada.access, "anthropic", "sk-ant-0123456789")
        .await;
    let found: Value = app
        .get_authed("/api/v1/audit/me?runId=run-42%20%2F%20eval", &ada.access)
        .await
        .json()
        .await
        .unwrap();
    let records = found["records"].as_array().unwrap();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["access_denied", "credential_create"], "{found}");
    let actor = format!("token:{}", issued["id"].as_str().unwrap());
    for record in records {
        assert_eq!(record["actor"], actor.as_str());
        assert_eq!(record["metadata"]["runId"], "run-42 / eval");
    }
    let text = found.to_string();
    assert!(
        !text.contains(&token) && !text.contains("sk-run-"),
        "{text}"
    );
    // The chain covers the run id.
    let verified: Value = app
        .get_authed("/api/v1/audit/verify", &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verified["valid"], true, "{verified}");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_mints_nothing() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    for (body, field) in [
        (json!({"ttlSeconds": 0}), "ttlSeconds"),
        (json!({"ttlSeconds": 86_401}), "ttlSeconds"),
        (json!({"ttlSeconds": 60, "runId": "two\nlines"}), "runId"),
        (json!({"ttlSeconds": 60, "runId": "r".repeat(129)}), "runId"),
        (json!({"ttlSeconds": 60, "maxUses": 0}), "maxUses"),
        (
            json!({"ttlSeconds": 60, "allowedCidrs": ["10.0.0.0/33"]}),
            "allowedCidrs[0]",
        ),
        (
            json!({"ttlSeconds": 60, "credentialIds": ["key_1"]}),
            "credentialIds[0]",
        ),
        (json!({"ttlSeconds": 60, "scopes": ["superuser"]}), "scopes"),
    ] {
        let response = app
            .post_authed("/api/v1/tokens", &ada.access, body.clone())
            .await;
        let error = assert_error(response, 400, "validation_failed").await;
        assert_eq!(error["details"][0]["field"], field, "{body}");
    }
    let unknown = app
        .post_authed(
            "/api/v1/tokens",
            &ada.access,
            json!({"ttlSeconds": 60, "admin": true}),
        )
        .await;
    assert!(matches!(unknown.status().as_u16(), 400 | 422));
    let anonymous = app.post("/api/v1/tokens", json!({"ttlSeconds": 60})).await;
    assert_error(anonymous, 401, "unauthenticated").await;
    let listed: Value = app
        .get_authed("/api/v1/tokens", &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["tokens"], json!([]), "nothing was minted");
    // Presented tokens are parsed before any lookup.
    for garbage in ["kat_", "kat_notatoken", &format!("kat_{}", "a".repeat(49))] {
        assert_error(
            app.get_authed("/api/auth/me", garbage).await,
            401,
            "invalid_token",
        )
        .await;
    }
    let bad_path = app
        .request(
            Method::DELETE,
            "/api/v1/tokens/key_123",
            Some(&ada.access),
            None,
        )
        .await;
    assert_error(bad_path, 400, "invalid_id").await;
}

#[tokio::test]
async fn a_keys_own_rate_limit_caps_it_and_its_tokens() {
    let app = TestApp::spawn_with(&[
        ("KORYPHAIOS_ALLOW_REGISTRATION", "true"),
        ("KORYPHAIOS_RATE_LIMIT_ENABLED", "true"),
        ("KORYPHAIOS_RATE_LIMIT_IP_PER_MINUTE", "100000"),
        ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "1000"),
        ("KORYPHAIOS_RATE_LIMIT_TIER_FREE", "1000"),
    ])
    .await;
    let ada = app.user("ada").await;
    let too_high = app
        .post_authed(
            "/api/v1/keys",
            &ada.access,
            json!({"name": "x", "rateLimitTier": "free", "rateLimit": {"perMinute": 1001}}),
        )
        .await;
    let error = assert_error(too_high, 400, "validation_failed").await;
    assert_eq!(error["details"][0]["field"], "rateLimit.perMinute");
    let issued = app
        .create_key(
            &ada.access,
            json!({"name": "slow", "rateLimitTier": "free", "rateLimit": {"perMinute": 4}}),
        )
        .await;
    assert_eq!(issued["rateLimit"], json!({"perMinute": 4}));
    let slow = issued["key"].as_str().unwrap();
    // The mint is the key's first request, the token's three its next: the fifth is refused.
    let token = secret(&mint(&app, slow, json!({"ttlSeconds": 60})).await);
    for _ in 0..2 {
        assert_eq!(status_of(&app, "/api/auth/me", slow).await, 200);
    }
    assert_eq!(status_of(&app, "/api/auth/me", &token).await, 200);
    assert_eq!(status_of(&app, "/api/auth/me", &token).await, 429);
    assert_eq!(status_of(&app, "/api/auth/me", slow).await, 429);
    // Removing the limit (null) leaves the tier's.
    let path = format!("/api/v1/keys/{}", issued["id"].as_str().unwrap());
    let cleared: Value = app
        .request(
            Method::PATCH,
            &path,
            Some(&ada.access),
            Some(json!({"rateLimit": null})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["rateLimit"], Value::Null, "{cleared}");
    let renamed: Value = app
        .request(
            Method::PATCH,
            &path,
            Some(&ada.access),
            Some(json!({"name": "renamed"})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(renamed["rateLimit"], Value::Null, "{renamed}");
}

#[tokio::test]
async fn a_restricted_key_cannot_loosen_itself_or_take_over_a_looser_key() {
    let app = TestApp::spawn_with(&[
        ("KORYPHAIOS_ALLOW_REGISTRATION", "true"),
        ("KORYPHAIOS_TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    let ada = app.user("ada").await;
    let sibling = app
        .create_key(&ada.access, json!({"name": "open", "scopes": ["read"]}))
        .await;
    let held = app
        .create_key(
            &ada.access,
            json!({"name": "held", "scopes": ["read", "write"], "allowedCidrs": ["127.0.0.0/8"], "rateLimit": {"perMinute": 50}}),
        )
        .await;
    let held_key = held["key"].as_str().unwrap();
    let sibling_path = format!("/api/v1/keys/{}", sibling["id"].as_str().unwrap());
    for (method, path) in [
        (Method::POST, format!("{sibling_path}/roll")),
        (Method::DELETE, sibling_path.clone()),
    ] {
        let response = app.request(method, &path, Some(held_key), None).await;
        assert_error(response, 403, "policy_not_allowed").await;
    }
    let held_path = format!("/api/v1/keys/{}", held["id"].as_str().unwrap());
    for body in [
        json!({"rateLimit": null}),
        json!({"rateLimit": {"perMinute": 51}}),
        json!({"allowedCidrs": []}),
    ] {
        let response = app
            .request(
                Method::PATCH,
                &held_path,
                Some(held_key),
                Some(body.clone()),
            )
            .await;
        assert_error(response, 400, "validation_failed").await;
    }
    // Its children inherit both, and may only narrow them.
    let child: Value = app
        .create_key(held_key, json!({"name": "child", "scopes": ["read"]}))
        .await;
    assert_eq!(child["allowedCidrs"], json!(["127.0.0.0/8"]), "{child}");
    assert_eq!(child["rateLimit"], json!({"perMinute": 50}), "{child}");
    let wider = app
        .post_authed(
            "/api/v1/keys",
            held_key,
            json!({"name": "wider", "rateLimit": {"perMinute": 500}}),
        )
        .await;
    assert_error(wider, 400, "validation_failed").await;
    // A session may loosen it: it holds no such limit.
    let loosened = app
        .request(
            Method::PATCH,
            &held_path,
            Some(&ada.access),
            Some(json!({"rateLimit": null, "allowedCidrs": []})),
        )
        .await;
    assert_eq!(loosened.status(), 200);
}

#[tokio::test]
async fn the_client_address_is_read_from_every_forwarded_for_field() {
    let app = TestApp::spawn_with(&[
        ("KORYPHAIOS_ALLOW_REGISTRATION", "true"),
        ("KORYPHAIOS_TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    let ada = app.user("ada").await;
    let office = key(
        &app,
        &ada.access,
        json!({"name": "office", "scopes": ["read"], "allowedCidrs": ["203.0.113.0/24"]}),
    )
    .await;
    // The client forges a field; the proxy adds its own (the real address) as a second field.
    let response = app
        .client
        .get(app.url("/api/auth/me"))
        .bearer_auth(&office)
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "ip_not_allowed").await;
}

#[tokio::test]
async fn a_token_limited_to_credentials_touches_no_other_one() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let mine = app
        .create_credential(&ada.access, "openai", "sk-mine-0123456789")
        .await;
    let other = app
        .create_credential(&ada.access, "openai", "sk-other-0123456789")
        .await;
    let token = secret(
        &mint(
            &app,
            &ada.access,
            json!({"ttlSeconds": 60, "credentialIds": [mine]}),
        )
        .await,
    );
    let path = format!("/api/v1/credentials/{other}");
    for (method, path, body) in [
        (Method::GET, path.clone(), None),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"metadata": {"x": 1}})),
        ),
        (
            Method::POST,
            format!("{path}/rotate"),
            Some(json!({"credential": "sk-attacker-0123456789"})),
        ),
        (Method::GET, format!("{path}/audit"), None),
        (Method::DELETE, path.clone(), None),
    ] {
        let response = app.request(method.clone(), &path, Some(&token), body).await;
        assert_error(response, 403, "credential_not_allowed").await;
    }
    assert_eq!(app.reveal(&ada.access, &other).await, "sk-other-0123456789");
    assert_eq!(
        status_of(&app, &format!("/api/v1/credentials/{mine}"), &token).await,
        200
    );
}

#[tokio::test]
async fn rolling_or_narrowing_the_minting_key_reaches_its_tokens() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let issued = app
        .create_key(&ada.access, json!({"name": "parent", "scopes": ["read"]}))
        .await;
    let parent = issued["key"].as_str().unwrap();
    let path = format!("/api/v1/keys/{}", issued["id"].as_str().unwrap());
    // Narrowing the key's networks narrows its existing tokens.
    let token = secret(&mint(&app, parent, json!({"ttlSeconds": 600})).await);
    assert_eq!(status_of(&app, "/api/auth/me", &token).await, 200);
    let narrowed = app
        .request(
            Method::PATCH,
            &path,
            Some(&ada.access),
            Some(json!({"allowedCidrs": ["203.0.113.0/24"]})),
        )
        .await;
    assert_eq!(narrowed.status(), 200);
    assert_error(
        app.get_authed("/api/auth/me", &token).await,
        403,
        "ip_not_allowed",
    )
    .await;
    let widened = app
        .request(
            Method::PATCH,
            &path,
            Some(&ada.access),
            Some(json!({"allowedCidrs": []})),
        )
        .await;
    assert_eq!(widened.status(), 200);
    assert_eq!(status_of(&app, "/api/auth/me", &token).await, 200);
    // Rolling it (no grace) ends the tokens minted with the old secret.
    let rolled = app
        .request(
            Method::POST,
            &format!("{path}/roll"),
            Some(&ada.access),
            Some(json!({"gracePeriodSeconds": 0})),
        )
        .await;
    assert_eq!(rolled.status(), 200);
    assert_error(
        app.get_authed("/api/auth/me", &token).await,
        401,
        "token_expired",
    )
    .await;
}

#[tokio::test]
async fn a_weak_key_lists_only_tokens_within_its_scopes() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let strong = mint(&app, &ada.access, json!({"ttlSeconds": 600})).await;
    let reader = key(&app, &ada.access, json!({"name": "r", "scopes": ["read"]})).await;
    let weak = mint(&app, &reader, json!({"ttlSeconds": 600})).await;
    let listed: Value = app
        .get_authed("/api/v1/tokens", &reader)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&Value> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert_eq!(ids, vec![&weak["id"]], "{listed}");
    let all: Value = app
        .get_authed("/api/v1/tokens", &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["tokens"].as_array().unwrap().len(), 2);
    let _ = strong;
}

#[tokio::test]
async fn a_token_refused_for_its_network_or_spent_uses_is_audited_once_a_minute() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let fenced = mint(
        &app,
        &ada.access,
        json!({"ttlSeconds": 600, "allowedCidrs": ["203.0.113.0/24"], "runId": "stolen?"}),
    )
    .await;
    let spent = mint(&app, &ada.access, json!({"ttlSeconds": 600, "maxUses": 1})).await;
    for _ in 0..3 {
        assert_eq!(status_of(&app, "/api/auth/me", &secret(&fenced)).await, 403);
    }
    assert_eq!(status_of(&app, "/api/auth/me", &secret(&spent)).await, 200);
    for _ in 0..3 {
        assert_eq!(status_of(&app, "/api/auth/me", &secret(&spent)).await, 401);
    }
    let denials: Value = app
        .get_authed("/api/v1/audit/me?action=access_denied", &ada.access)
        .await
        .json()
        .await
        .unwrap();
    let records = denials["records"].as_array().unwrap();
    let of = |token: &Value| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["resourceId"] == token["id"])
            .collect()
    };
    let network = of(&fenced);
    assert_eq!(network.len(), 1, "{denials}");
    assert_eq!(network[0]["metadata"]["restriction"], "allowedCidrs");
    assert_eq!(network[0]["metadata"]["runId"], "stolen?");
    assert_eq!(network[0]["clientIp"], "127.0.0.1");
    assert_eq!(
        network[0]["actor"],
        format!("token:{}", fenced["id"].as_str().unwrap())
    );
    let uses = of(&spent);
    assert_eq!(uses.len(), 1, "{denials}");
    assert_eq!(uses[0]["metadata"]["restriction"], "maxUses");
    assert!(!denials.to_string().contains(&secret(&fenced)));
}
