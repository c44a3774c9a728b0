//! Smaller promises of the hardening pass: control characters never reach a handler, every
//! response forbids active content, reveal takes only a bounded reason, and `/keys/verify`
//! reports a key's rate-limit state without counting against it.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error, assert_security_headers};

#[tokio::test]
async fn control_characters_in_paths_and_queries_are_refused_with_400() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    for path in [
        "/api/v1/audit/me?action=%00",
        "/api/v1/audit/me?action=login%0aforged",
        "/api/v1/credentials?provider=open%7Fai",
        "/api/v1/credentials/cred_%00x",
        "/api/v1/keys/key_%1b",
    ] {
        let response = app.get_authed(path, &ada.access).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_security_headers(response.headers());
        let body: Value = response.json().await.unwrap();
        assert!(
            matches!(
                body["code"].as_str(),
                Some("invalid_query" | "validation_failed")
            ),
            "{path}: {body}"
        );
    }
    // Ordinary encoded text still passes.
    let fine = app
        .get_authed("/api/v1/audit/me?action=login%20x", &ada.access)
        .await;
    assert_ne!(fine.status(), 500);
    assert_ne!(fine.status(), 400);
}

#[tokio::test]
async fn reveal_takes_an_optional_bounded_reason_and_records_it() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let id = app
        .create_credential(&ada.access, "openai", "sk-reason")
        .await;
    let path = format!("/api/v1/credentials/{id}/reveal");
    let reveal = |body: Option<Value>| app.request(Method::POST, &path, Some(&ada.access), body);
    assert_eq!(reveal(None).await.status(), 200, "no body is fine");
    let revealed = reveal(Some(json!({"reason": "incident 4711"}))).await;
    assert_eq!(revealed.status(), 200);
    assert_error(
        reveal(Some(json!({"reason": "x", "extra": true}))).await,
        400,
        "validation_failed",
    )
    .await;
    assert_error(
        reveal(Some(json!({"reason": "r".repeat(501)}))).await,
        400,
        "validation_failed",
    )
    .await;
    assert_error(
        reveal(Some(json!({"reason": "line\u{0}break"}))).await,
        400,
        "validation_failed",
    )
    .await;
    let trail: Value = app
        .get_authed(&format!("/api/v1/credentials/{id}/audit"), &ada.access)
        .await
        .json()
        .await
        .unwrap();
    let reasons: Vec<&str> = trail["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "credential_access" && r["success"] == true)
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert_eq!(reasons, vec!["incident 4711"]);
}

#[tokio::test]
async fn verify_reports_the_keys_rate_limit_without_consuming_it() {
    let app = TestApp::spawn_with(&[
        ("KORYPHAIOS_RATE_LIMIT_ENABLED", "true"),
        ("KORYPHAIOS_ALLOW_REGISTRATION", "true"),
        ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "1000"),
    ])
    .await;
    let ada = app.user("ada").await;
    let gateway = app
        .create_key(&ada.access, json!({"name": "gateway", "scopes": ["read"]}))
        .await;
    let gateway = gateway["key"].as_str().unwrap().to_owned();
    let bob = app.user("bob").await;
    let client = app
        .create_key(&bob.access, json!({"name": "client", "scopes": ["read"]}))
        .await;
    let client = client["key"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        app.with_api_key(Method::GET, "/api/auth/me", &client, None)
            .await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let verdict: Value = app
            .with_api_key(
                Method::POST,
                "/api/v1/keys/verify",
                &gateway,
                Some(json!({"key": client})),
            )
            .await
            .json()
            .await
            .unwrap();
        let ratelimit = &verdict["ratelimit"];
        assert_eq!(ratelimit["limit"], 60, "bob is on the free tier: {verdict}");
        assert!(ratelimit["reset"].as_i64().unwrap() > 1_700_000_000);
        seen.push(ratelimit["remaining"].as_u64().unwrap());
    }
    // Bob's key (and Bob's sessions, which share his counter) used 3 + his logins/key creation;
    // verifying it three times consumed nothing.
    assert!(seen.windows(2).all(|pair| pair[0] == pair[1]), "{seen:?}");
    assert!(seen[0] <= 57, "{seen:?}");
}
