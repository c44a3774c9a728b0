//! Bad input on every auth route: each a clear 4xx with the envelope, and nothing stored.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{PASSWORD, TestApp, assert_error};

async fn register(app: &TestApp, body: Value) -> reqwest::Response {
    app.post("/api/auth/register", body).await
}

#[tokio::test]
async fn register_rejects_bad_input_and_stores_nothing() {
    let app = TestApp::spawn_with(&[]).await;
    let cases = [
        (json!({}), "validation_failed", Some("body")),
        (
            json!({"username": "ada"}),
            "validation_failed",
            Some("body"),
        ),
        (
            json!({"username": 42, "password": PASSWORD}),
            "validation_failed",
            Some("username"),
        ),
        (
            json!({"username": "ada", "password": ["x"]}),
            "validation_failed",
            Some("password"),
        ),
        (
            json!({"username": "ada", "password": PASSWORD, "role": "admin"}),
            "validation_failed",
            Some("role"),
        ),
        (
            json!({"username": "ada", "password": "short"}),
            "validation_failed",
            Some("password"),
        ),
        (
            json!({"username": "ada", "password": "aaaaaaaaaaaaaaaaaaaa"}),
            "validation_failed",
            Some("password"),
        ),
        (
            json!({"username": "ada", "password": "ada-is-my-password"}),
            "validation_failed",
            Some("password"),
        ),
        (
            json!({"username": "ada", "password": "p".repeat(129)}),
            "validation_failed",
            Some("password"),
        ),
        (
            json!({"username": "a", "password": PASSWORD}),
            "validation_failed",
            Some("username"),
        ),
        (
            json!({"username": "has space", "password": PASSWORD}),
            "validation_failed",
            Some("username"),
        ),
        (
            json!({"username": "x".repeat(65), "password": PASSWORD}),
            "validation_failed",
            Some("username"),
        ),
        (json!(null), "validation_failed", None),
        (json!("ada"), "validation_failed", None),
    ];
    for (body, code, field) in cases {
        let response = register(&app, body.clone()).await;
        let error = assert_error(response, 400, code).await;
        if let Some(field) = field {
            let fields: Vec<&str> = error["details"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["field"].as_str().unwrap())
                .collect();
            assert!(
                fields.contains(&field),
                "{body} should blame {field}, got {error}"
            );
        }
    }
    // Both problems at once are both reported.
    let both = assert_error(
        register(&app, json!({"username": "a", "password": "b"})).await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(both["details"].as_array().unwrap().len(), 2);
    let oversize = app
        .client
        .post(app.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"username\":\"ada\",\"password\":\"{}\"}}",
            "x".repeat(10 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_error(oversize, 413, "payload_too_large").await;
    // Nothing was stored: the next good registration is still the first user, the admin.
    assert_eq!(app.register("ada").await["user"]["role"], "admin");
}

#[tokio::test]
async fn login_rejects_bad_input() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    for body in [
        json!({}),
        json!({"username": "ada"}),
        json!({"username": "ada", "password": 12345}),
        json!({"username": "ada", "password": PASSWORD, "remember": true}),
    ] {
        assert_error(
            app.post("/api/auth/login", body).await,
            400,
            "validation_failed",
        )
        .await;
    }
}

#[tokio::test]
async fn refresh_rejects_bad_input() {
    let app = TestApp::spawn().await;
    for body in [
        json!({}),
        json!({"refreshToken": 5}),
        json!({"refresh_token": "krt_x"}),
        json!({"refreshToken": "krt_x", "extra": 1}),
    ] {
        assert_error(
            app.post("/api/auth/refresh", body).await,
            400,
            "validation_failed",
        )
        .await;
    }
}

#[tokio::test]
async fn change_password_rejects_bad_input_and_keeps_the_old_password() {
    let app = TestApp::spawn().await;
    let session = app.user("ada").await;
    let change = |body: Value| {
        app.request(
            Method::POST,
            "/api/auth/password",
            Some(&session.access),
            Some(body),
        )
    };
    for body in [
        json!({}),
        json!({"currentPassword": PASSWORD}),
        json!({"currentPassword": PASSWORD, "newPassword": 7}),
        json!({"currentPassword": PASSWORD, "newPassword": "another fine passphrase", "force": true}),
        json!({"currentPassword": PASSWORD, "newPassword": "ada ada ada ada ada"}),
    ] {
        assert_error(change(body).await, 400, "validation_failed").await;
    }
    let unauthenticated = app
        .post(
            "/api/auth/password",
            json!({"currentPassword": PASSWORD, "newPassword": "another fine passphrase"}),
        )
        .await;
    assert_error(unauthenticated, 401, "unauthenticated").await;
    // The password is unchanged and the session still works.
    app.login("ada").await;
    assert_eq!(
        app.get_authed("/api/auth/me", &session.access)
            .await
            .status(),
        200
    );
}
