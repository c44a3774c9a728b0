//! The credentials API: lifecycle, tenant isolation, audit trail, restarts.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error};

#[tokio::test]
async fn create_returns_metadata_and_never_the_secret() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let response = app
        .post_authed(
            "/api/v1/credentials",
            &ada.access,
            json!({"provider": "openai", "credential": "sk-live-abc123", "type": "api_key", "metadata": {"team": "ml"}, "expiresAt": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let text = response.text().await.unwrap();
    assert!(!text.contains("sk-live-abc123"));
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("cred_"));
    assert_eq!(body["provider"], "openai");
    assert_eq!(body["type"], "api_key");
    assert_eq!(body["metadata"], json!({"team": "ml"}));
    assert_eq!(body["version"], 1);
    assert_eq!(body["active"], true);
    assert_eq!(body["expiresAt"], "2099-01-01T00:00:00Z");

    let id = body["id"].as_str().unwrap();
    let got: Value = app
        .get_authed(&format!("/api/v1/credentials/{id}"), &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["id"], id);
    assert!(got.get("credential").is_none());
    assert_eq!(app.reveal(&ada.access, id).await, "sk-live-abc123");
}

#[tokio::test]
async fn list_filters_by_provider_and_activity() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let openai = app.create_credential(&ada.access, "openai", "sk-1").await;
    let anthropic = app
        .create_credential(&ada.access, "anthropic", "sk-ant-2")
        .await;
    let (app_ref, token) = (&app, ada.access.as_str());
    let list = move |query: &'static str| {
        let path = format!("/api/v1/credentials{query}");
        async move { app_ref.get_authed(&path, token).await }
    };
    let all: Value = list("").await.json().await.unwrap();
    assert_eq!(all["credentials"].as_array().unwrap().len(), 2);
    let only: Value = list("?provider=anthropic").await.json().await.unwrap();
    let ids: Vec<&str> = only["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![anthropic.as_str()]);
    // Time passes past an expiry: the credential drops out of active=true.
    app.post_authed("/api/v1/credentials", &ada.access, json!({"provider": "groq", "credential": "gsk", "expiresAt": (app.clock_now() + time::Duration::seconds(2)).format(&time::format_description::well_known::Rfc3339).unwrap()})).await;
    let active: Value = list("?active=true").await.json().await.unwrap();
    assert_eq!(active["credentials"].as_array().unwrap().len(), 3);
    app.clock.advance(time::Duration::seconds(3));
    let active: Value = list("?active=true").await.json().await.unwrap();
    assert_eq!(active["credentials"].as_array().unwrap().len(), 2);
    let expired: Value = list("?active=false").await.json().await.unwrap();
    assert_eq!(expired["credentials"][0]["provider"], "groq");
    assert_eq!(expired["credentials"][0]["active"], false);
    let _ = openai;
}

#[tokio::test]
async fn patch_replaces_metadata_and_delete_hides_the_credential() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let id = app.create_credential(&ada.access, "openai", "sk-1").await;
    let path = format!("/api/v1/credentials/{id}");
    let patched = app
        .request(
            Method::PATCH,
            &path,
            Some(&ada.access),
            Some(json!({"metadata": {"env": "prod"}})),
        )
        .await;
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["metadata"], json!({"env": "prod"}));
    let deleted = app
        .request(
            Method::DELETE,
            &path,
            Some(&ada.access),
            Some(json!({"reason": "leaked in a log"})),
        )
        .await;
    assert_eq!(deleted.status(), 204);
    assert_error(app.get_authed(&path, &ada.access).await, 404, "not_found").await;
    assert_error(
        app.request(
            Method::POST,
            &format!("{path}/reveal"),
            Some(&ada.access),
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.request(Method::DELETE, &path, Some(&ada.access), None)
            .await,
        404,
        "not_found",
    )
    .await;
    let list: Value = app
        .get_authed("/api/v1/credentials", &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert!(list["credentials"].as_array().unwrap().is_empty());
    // The trail survives the deletion, with the stated reason.
    let trail: Value = app
        .get_authed(&format!("{path}/audit"), &ada.access)
        .await
        .json()
        .await
        .unwrap();
    let delete = trail["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "credential_delete")
        .unwrap()
        .clone();
    assert_eq!(delete["reason"], "leaked in a log");
    // A bare DELETE without a body works too.
    let other = app.create_credential(&ada.access, "openai", "sk-2").await;
    let bare = app
        .request(
            Method::DELETE,
            &format!("/api/v1/credentials/{other}"),
            Some(&ada.access),
            None,
        )
        .await;
    assert_eq!(bare.status(), 204);
}

#[tokio::test]
async fn rotate_stores_a_new_value_or_re_encrypts_the_current_one() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let id = app.create_credential(&ada.access, "openai", "sk-old").await;
    let rotate = format!("/api/v1/credentials/{id}/rotate");
    let rotated = app
        .post_authed(
            &rotate,
            &ada.access,
            json!({"credential": "sk-new", "reason": "scheduled"}),
        )
        .await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    assert_eq!(rotated["version"], 2);
    assert_eq!(app.reveal(&ada.access, &id).await, "sk-new");
    let reencrypted = app
        .request(Method::POST, &rotate, Some(&ada.access), None)
        .await;
    assert_eq!(reencrypted.status(), 200);
    let reencrypted: Value = reencrypted.json().await.unwrap();
    assert_eq!(reencrypted["version"], 3);
    assert_eq!(app.reveal(&ada.access, &id).await, "sk-new");
    let trail: Value = app
        .get_authed(&format!("/api/v1/credentials/{id}/audit"), &ada.access)
        .await
        .json()
        .await
        .unwrap();
    let modes: Vec<&str> = trail["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "credential_rotate")
        .map(|r| r["metadata"]["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, vec!["re_encrypt", "new_value"]);
}

#[tokio::test]
async fn the_audit_trail_records_who_what_from_where_and_no_secret() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let id = app
        .create_credential(&ada.access, "anthropic", "sk-ant-very-secret")
        .await;
    let reveal = app
        .client
        .post(app.url(&format!("/api/v1/credentials/{id}/reveal")))
        .bearer_auth(&ada.access)
        .header("user-agent", "audit-test/1.0")
        .header("x-request-id", "reveal-req-7")
        .send()
        .await
        .unwrap();
    assert_eq!(reveal.status(), 200);
    let response = app
        .get_authed(&format!("/api/v1/credentials/{id}/audit"), &ada.access)
        .await;
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("sk-ant-very-secret"),
        "no secret in audit records"
    );
    let trail: Value = serde_json::from_str(&text).unwrap();
    let records = trail["records"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    let access = &records[0];
    assert_eq!(access["action"], "credential_access");
    assert_eq!(access["success"], true);
    assert_eq!(access["actor"], format!("user:{}", ada.user_id));
    assert_eq!(access["clientIp"], "127.0.0.1");
    assert_eq!(access["userAgent"], "audit-test/1.0");
    assert_eq!(access["requestId"], "reveal-req-7");
    assert_eq!(records[1]["action"], "credential_create");
    assert_eq!(records[1]["metadata"]["provider"], "anthropic");
    let got: Value = app
        .get_authed(&format!("/api/v1/credentials/{id}"), &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert!(got["lastUsedAt"].is_string());
}

#[tokio::test]
async fn another_users_credential_is_not_found_everywhere() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let bob = app.user("bob").await;
    let id = app.create_credential(&ada.access, "openai", "sk-ada").await;
    let path = format!("/api/v1/credentials/{id}");
    assert_error(app.get_authed(&path, &bob.access).await, 404, "not_found").await;
    assert_error(
        app.request(
            Method::PATCH,
            &path,
            Some(&bob.access),
            Some(json!({"metadata": {}})),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.request(Method::DELETE, &path, Some(&bob.access), None)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.post_authed(
            &format!("{path}/rotate"),
            &bob.access,
            json!({"credential": "sk-bob"}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.request(
            Method::POST,
            &format!("{path}/reveal"),
            Some(&bob.access),
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get_authed(&format!("{path}/audit"), &bob.access).await,
        404,
        "not_found",
    )
    .await;
    // Even after Bob has written a denial record about Ada's id, its trail stays 404 to him.
    let bobs_reader = app
        .create_key(&bob.access, json!({"name": "reader", "scopes": ["read"]}))
        .await;
    let bobs_reader = bobs_reader["key"].as_str().unwrap();
    let denied = app
        .request(
            Method::PATCH,
            &path,
            Some(bobs_reader),
            Some(json!({"metadata": {}})),
        )
        .await;
    assert_eq!(denied.status(), 403);
    assert_error(
        app.get_authed(&format!("{path}/audit"), &bob.access).await,
        404,
        "not_found",
    )
    .await;
    let list: Value = app
        .get_authed("/api/v1/credentials", &bob.access)
        .await
        .json()
        .await
        .unwrap();
    assert!(list["credentials"].as_array().unwrap().is_empty());
    // Ada's credential is untouched.
    assert_eq!(app.reveal(&ada.access, &id).await, "sk-ada");
}

#[tokio::test]
async fn every_credential_route_needs_authentication() {
    let app = TestApp::spawn().await;
    let id = "cred_0192f0c1d2e37a4b8c9d0e1f2a3b4c5d";
    let routes = [
        (Method::GET, "/api/v1/credentials".to_owned()),
        (Method::POST, "/api/v1/credentials".to_owned()),
        (Method::GET, format!("/api/v1/credentials/{id}")),
        (Method::PATCH, format!("/api/v1/credentials/{id}")),
        (Method::DELETE, format!("/api/v1/credentials/{id}")),
        (Method::POST, format!("/api/v1/credentials/{id}/rotate")),
        (Method::POST, format!("/api/v1/credentials/{id}/reveal")),
        (Method::GET, format!("/api/v1/credentials/{id}/audit")),
    ];
    for (method, path) in routes {
        let response = app
            .request(method.clone(), &path, None, Some(json!({})))
            .await;
        assert_error(response, 401, "unauthenticated").await;
        let response = app
            .request(method, &path, Some("garbage"), Some(json!({})))
            .await;
        assert_error(response, 401, "invalid_token").await;
    }
}

#[tokio::test]
async fn credentials_survive_a_restart_and_reveal_the_same_plaintext() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let id = app
        .create_credential(&ada.access, "mistral", "mistral-key-42")
        .await;
    let data_dir = app.stop().await;
    let restarted = TestApp::spawn_in(data_dir, &[("KORYPHAIOS_ALLOW_REGISTRATION", "true")]).await;
    assert_eq!(restarted.reveal(&ada.access, &id).await, "mistral-key-42");
}

#[tokio::test]
async fn the_age_provider_serves_the_same_api() {
    let app = TestApp::spawn_with(&[
        ("KORYPHAIOS_KMS_PROVIDER", "age"),
        ("KORYPHAIOS_ALLOW_REGISTRATION", "true"),
    ])
    .await;
    let ada = app.user("ada").await;
    let id = app
        .create_credential(&ada.access, "openai", "sk-age-1")
        .await;
    assert_eq!(app.reveal(&ada.access, &id).await, "sk-age-1");
    assert!(app.data_path().join("kms/age.identities").exists());
    let ready: Value = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["data"]["components"]["kms"]["backend"], "age");
    assert_eq!(ready["data"]["components"]["kms"]["status"], "up");
}
