//! Bad input on every key route: each a clear 4xx, nothing stored.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error};

#[tokio::test]
async fn create_rejects_bad_input_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let providers = koryphaios_core::credentials::PROVIDERS;
    let eleven: Vec<String> = providers
        .iter()
        .take(11)
        .map(|p| format!("provider:{p}"))
        .collect();
    let cases = [
        (json!({}), "body"),
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"name": "semi;colon"}), "name"),
        (json!({"name": "ok", "scopes": []}), "scopes"),
        (json!({"name": "ok", "scopes": eleven}), "scopes"),
        (json!({"name": "ok", "scopes": ["root"]}), "scopes"),
        (
            json!({"name": "ok", "scopes": ["provider:nosuchai"]}),
            "scopes",
        ),
        (json!({"name": "ok", "scopes": "read"}), "scopes"),
        (
            json!({"name": "ok", "rateLimitTier": "gold"}),
            "rateLimitTier",
        ),
        (json!({"name": "ok", "expiresInDays": 0}), "expiresInDays"),
        (json!({"name": "ok", "expiresInDays": 366}), "expiresInDays"),
        (
            json!({"name": "ok", "expiresInDays": "ten"}),
            "expiresInDays",
        ),
        (json!({"name": "ok", "metadata": [1]}), "metadata"),
        (json!({"name": "ok", "key": "kor_chosen"}), "key"),
        (json!({"name": 5}), "name"),
    ];
    for (body, field) in cases {
        let error = assert_error(
            app.post_authed("/api/v1/keys", &ada.access, body.clone())
                .await,
            400,
            "validation_failed",
        )
        .await;
        let fields: Vec<&str> = error["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&field),
            "{body} should blame {field}: {error}"
        );
    }
    let oversize = app
        .post_authed(
            "/api/v1/keys",
            &ada.access,
            json!({"name": "ok", "metadata": {"x": "y".repeat(11 * 1024)}}),
        )
        .await;
    assert_error(oversize, 413, "payload_too_large").await;
    let keys: Value = app
        .get_authed("/api/v1/keys", &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert!(keys["keys"].as_array().unwrap().is_empty());
    // The edges are accepted.
    app.create_key(&ada.access, json!({"name": "x".repeat(100), "scopes": providers.iter().take(10).map(|p| format!("provider:{p}")).collect::<Vec<_>>(), "expiresInDays": 365})).await;
    app.create_key(
        &ada.access,
        json!({"name": "edge", "expiresInDays": 1, "rateLimitTier": "enterprise"}),
    )
    .await;
}

#[tokio::test]
async fn update_roll_and_verify_reject_bad_input() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let issued = app.create_key(&ada.access, json!({"name": "target"})).await;
    let id = issued["id"].as_str().unwrap();
    let path = format!("/api/v1/keys/{id}");
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"scopes": []}),
        json!({"rateLimitTier": "gold"}),
        json!({"expiresInDays": 3}),
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
        json!({"gracePeriodSeconds": -1}),
        json!({"gracePeriodSeconds": 604_801}),
        json!({"grace": 5}),
        json!({"gracePeriodSeconds": "soon"}),
    ] {
        assert_error(
            app.post_authed(&format!("{path}/roll"), &ada.access, body)
                .await,
            400,
            "validation_failed",
        )
        .await;
    }
    for body in [
        json!({}),
        json!({"key": 5}),
        json!({"key": "kor_x", "extra": true}),
    ] {
        assert_error(
            app.post_authed("/api/v1/keys/verify", &ada.access, body)
                .await,
            400,
            "validation_failed",
        )
        .await;
    }
    for bad in ["nope", "key_XYZ", "cred_0192f0c1d2e37a4b8c9d0e1f2a3b4c5d"] {
        assert_error(
            app.get_authed(&format!("/api/v1/keys/{bad}"), &ada.access)
                .await,
            400,
            "invalid_id",
        )
        .await;
    }
    assert_error(
        app.get_authed(
            "/api/v1/keys/key_0192f0c1d2e37a4b8c9d0e1f2a3b4c5d",
            &ada.access,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    // The key is unchanged and still works.
    let view: Value = app
        .get_authed(&path, &ada.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (view["name"].as_str(), view["status"].as_str()),
        (Some("target"), Some("active"))
    );
    assert_eq!(
        app.get_authed("/api/auth/me", issued["key"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn every_key_route_needs_authentication() {
    let app = TestApp::spawn().await;
    let id = "key_0192f0c1d2e37a4b8c9d0e1f2a3b4c5d";
    for (method, path) in [
        (Method::GET, "/api/v1/keys".to_owned()),
        (Method::POST, "/api/v1/keys".to_owned()),
        (Method::GET, format!("/api/v1/keys/{id}")),
        (Method::PATCH, format!("/api/v1/keys/{id}")),
        (Method::DELETE, format!("/api/v1/keys/{id}")),
        (Method::POST, format!("/api/v1/keys/{id}/roll")),
        (Method::POST, "/api/v1/keys/verify".to_owned()),
    ] {
        assert_error(
            app.request(method, &path, None, Some(json!({}))).await,
            401,
            "unauthenticated",
        )
        .await;
    }
}
