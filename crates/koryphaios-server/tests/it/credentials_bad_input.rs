//! Bad input on every credential route: each a clear 4xx with the envelope, and nothing stored.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error};

fn fields(error: &Value) -> Vec<String> {
    error["details"].as_array().map_or_else(Vec::new, |d| {
        d.iter()
            .map(|x| x["field"].as_str().unwrap_or_default().to_owned())
            .collect()
    })
}

#[tokio::test]
async fn create_rejects_bad_input_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let cases = [
        (
            json!({"provider": "openia", "credential": "sk"}),
            "provider",
        ),
        (
            json!({"provider": "openai", "credential": ""}),
            "credential",
        ),
        (
            json!({"provider": "openai", "credential": "x".repeat(4097)}),
            "credential",
        ),
        (
            json!({"provider": "openai", "credential": "sk", "metadata": ["a"]}),
            "metadata",
        ),
        (
            json!({"provider": "openai", "credential": "sk", "metadata": "text"}),
            "metadata",
        ),
        (
            json!({"provider": "openai", "credential": "sk", "metadata": {"blob": "x".repeat(2100)}}),
            "metadata",
        ),
        (
            json!({"provider": "openai", "credential": "sk", "type": "password"}),
            "type",
        ),
        (
            json!({"provider": "openai", "credential": "sk", "expiresAt": "2001-01-01T00:00:00Z"}),
            "expiresAt",
        ),
        (
            json!({"provider": "openai", "credential": "sk", "expiresAt": "tomorrow"}),
            "expiresAt",
        ),
        (
            json!({"provider": "openai", "credential": 42}),
            "credential",
        ),
        (
            json!({"provider": ["openai"], "credential": "sk"}),
            "provider",
        ),
        (
            json!({"provider": "openai", "credential": "sk", "owner": "usr_x"}),
            "owner",
        ),
        (json!({"provider": "openai"}), "body"),
    ];
    for (body, field) in cases {
        let response = app
            .post_authed("/api/v1/credentials", &ada.access, body.clone())
            .await;
        let error = assert_error(response, 400, "validation_failed").await;
        assert!(
            fields(&error).iter().any(|f| f == field),
            "{body} should blame {field}: {error}"
        );
        assert!(
            !error.to_string().contains("x".repeat(100).as_str()),
            "errors do not echo input"
        );
    }
    let malformed = app
        .client
        .post(app.url("/api/v1/credentials"))
        .bearer_auth(&ada.access)
        .header("content-type", "application/json")
        .body("{\"provider\":")
        .send()
        .await
        .unwrap();
    assert_error(malformed, 400, "malformed_json").await;
    let oversize = app
        .post_authed(
            "/api/v1/credentials",
            &ada.access,
            json!({"provider": "openai", "credential": "x".repeat(11 * 1024)}),
        )
        .await;
    assert_error(oversize, 413, "payload_too_large").await;
    let text = app
        .client
        .post(app.url("/api/v1/credentials"))
        .bearer_auth(&ada.access)
        .body("provider=openai")
        .send()
        .await
        .unwrap();
    assert_error(text, 415, "unsupported_media_type").await;
    // 4096 characters exactly is fine; nothing else was stored.
    app.create_credential(&ada.access, "openai", &"x".repeat(4096))
        .await;
    let list: Value = app
        .get_authed("/api/v1/credentials", &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["credentials"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_ids_are_400_and_unknown_ids_404() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    for bad in [
        "123",
        "cred_xyz",
        "usr_0192f0c1d2e37a4b8c9d0e1f2a3b4c5d",
        "cred_0192F0C1D2E37A4B8C9D0E1F2A3B4C5D",
    ] {
        let error = assert_error(
            app.get_authed(&format!("/api/v1/credentials/{bad}"), &ada.access)
                .await,
            400,
            "invalid_id",
        )
        .await;
        assert_eq!(fields(&error), vec!["id"]);
        assert_error(
            app.request(
                Method::POST,
                &format!("/api/v1/credentials/{bad}/reveal"),
                Some(&ada.access),
                None,
            )
            .await,
            400,
            "invalid_id",
        )
        .await;
    }
    let unknown = "cred_0192f0c1d2e37a4b8c9d0e1f2a3b4c5d";
    assert_error(
        app.get_authed(&format!("/api/v1/credentials/{unknown}"), &ada.access)
            .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn list_rejects_unknown_and_malformed_filters() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    for query in ["?owner=bob", "?active=maybe", "?provider=nope"] {
        let response = app
            .get_authed(&format!("/api/v1/credentials{query}"), &ada.access)
            .await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert!(
            ["invalid_query", "validation_failed"].contains(&body["code"].as_str().unwrap()),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn patch_rotate_and_delete_reject_bad_input_and_change_nothing() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let id = app
        .create_credential(&ada.access, "openai", "sk-keep")
        .await;
    let path = format!("/api/v1/credentials/{id}");
    for body in [
        json!({}),
        json!({"metadata": [1]}),
        json!({"metadata": {"a": "x".repeat(2100)}}),
        json!({"metadata": {}, "provider": "groq"}),
    ] {
        assert_error(
            app.request(Method::PATCH, &path, Some(&ada.access), Some(body))
                .await,
            400,
            "validation_failed",
        )
        .await;
    }
    for body in [
        json!({"credential": ""}),
        json!({"credential": "x".repeat(4097)}),
        json!({"credential": 5}),
        json!({"reason": "r".repeat(501)}),
        json!({"version": 9}),
    ] {
        assert_error(
            app.post_authed(&format!("{path}/rotate"), &ada.access, body)
                .await,
            400,
            "validation_failed",
        )
        .await;
    }
    for body in [
        json!({"reason": 5}),
        json!({"reason": "r".repeat(501)}),
        json!({"hard": true}),
    ] {
        assert_error(
            app.request(Method::DELETE, &path, Some(&ada.access), Some(body))
                .await,
            400,
            "validation_failed",
        )
        .await;
    }
    let got: Value = app
        .get_authed(&path, &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["version"], 1);
    assert_eq!(got["metadata"], json!({}));
    assert_eq!(app.reveal(&ada.access, &id).await, "sk-keep");
}
