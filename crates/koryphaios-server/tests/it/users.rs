//! User administration over HTTP: admins list, read and change users (role, tier, disabled);
//! nobody else can; the last admin stays; a disabled user's sessions, keys and logins stop.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{PASSWORD, TestApp, assert_error};

async fn patch(app: &TestApp, token: &str, id: &str, body: Value) -> reqwest::Response {
    app.request(
        Method::PATCH,
        &format!("/api/v1/users/{id}"),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn the_first_admin_is_enterprise_and_new_users_get_the_default_tier() {
    let app = TestApp::spawn_with(&[
        ("KORYPHAIOS_ALLOW_REGISTRATION", "true"),
        ("KORYPHAIOS_DEFAULT_USER_TIER", "premium"),
    ])
    .await;
    let root = app.register("root").await;
    assert_eq!(root["user"]["tier"], "enterprise");
    let bob = app.register("bob").await;
    assert_eq!(bob["user"]["tier"], "premium");
    let session = app.login("bob").await;
    let me: Value = app
        .get_authed("/api/auth/me", &session.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["tier"], "premium");
}

#[tokio::test]
async fn admins_list_read_and_change_users_and_nobody_else_can() {
    let app = TestApp::spawn().await;
    let root = app.user("root").await;
    let bob = app.user("bob").await;

    let page: Value = app
        .get_authed("/api/v1/users", &root.access)
        .await
        .json()
        .await
        .unwrap();
    let users = page["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["username"], "root");
    assert_eq!(
        (&users[0]["role"], &users[0]["tier"]),
        (&json!("admin"), &json!("enterprise"))
    );
    assert_eq!(
        (&users[1]["role"], &users[1]["tier"], &users[1]["disabled"]),
        (&json!("user"), &json!("free"), &json!(false))
    );
    assert!(users[1]["lastLoginAt"].is_string(), "{page}");
    assert!(page["nextCursor"].is_null());
    let text = page.to_string();
    assert!(
        !text.contains("argon2") && !text.contains("password"),
        "no hashes: {text}"
    );

    // A user, by session or by key, cannot list, read or change users — not even themselves.
    let key = app
        .create_key(
            &bob.access,
            json!({"name": "k", "scopes": ["read", "write"]}),
        )
        .await;
    let key = key["key"].as_str().unwrap();
    assert_error(
        app.get_authed("/api/v1/users", &bob.access).await,
        403,
        "insufficient_scope",
    )
    .await;
    assert_error(
        app.get_authed(&format!("/api/v1/users/{}", root.user_id), key)
            .await,
        403,
        "insufficient_scope",
    )
    .await;
    assert_error(
        patch(
            &app,
            &bob.access,
            &bob.user_id,
            json!({"tier": "enterprise"}),
        )
        .await,
        403,
        "insufficient_scope",
    )
    .await;
    let denials: Value = app
        .get_authed("/api/v1/audit?action=access_denied", &root.access)
        .await
        .json()
        .await
        .unwrap();
    assert!(denials["records"].as_array().unwrap().len() >= 3);

    // The admin changes bob's tier and role; the record holds before and after.
    let changed = patch(&app, &root.access, &bob.user_id, json!({"tier": "pro"})).await;
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(
        (&changed["tier"], &changed["role"]),
        (&json!("pro"), &json!("user"))
    );
    let one: Value = app
        .get_authed(&format!("/api/v1/users/{}", bob.user_id), &root.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["tier"], "pro");
    let records: Value = app
        .get_authed("/api/v1/audit?action=user_update", &root.access)
        .await
        .json()
        .await
        .unwrap();
    let record = &records["records"][0];
    assert_eq!(record["resourceId"], bob.user_id.as_str());
    assert_eq!(record["actor"], format!("user:{}", root.user_id));
    assert_eq!(record["metadata"]["before"]["tier"], "free");
    assert_eq!(record["metadata"]["after"]["tier"], "pro");
    // The new tier applies to bob's next request.
    let me: Value = app
        .get_authed("/api/auth/me", &bob.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["tier"], "pro");
}

#[tokio::test]
async fn the_user_listing_pages_with_a_cursor_and_refuses_bad_paging() {
    let app = TestApp::spawn().await;
    let root = app.user("root").await;
    for name in ["ann", "ben", "cat", "dan"] {
        app.register(name).await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/users?limit=2".to_owned();
    loop {
        let page: Value = app
            .get_authed(&path, &root.access)
            .await
            .json()
            .await
            .unwrap();
        for user in page["users"].as_array().unwrap() {
            seen.push(user["username"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/users?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["root", "ann", "ben", "cat", "dan"]);
    // An audit cursor is not a user cursor.
    let audit: Value = app
        .get_authed("/api/v1/audit?limit=1", &root.access)
        .await
        .json()
        .await
        .unwrap();
    let audit_cursor = audit["nextCursor"].as_str().unwrap().to_owned();
    for bad in [
        "/api/v1/users?limit=0".to_owned(),
        "/api/v1/users?limit=1001".to_owned(),
        "/api/v1/users?cursor=garbage".to_owned(),
        format!("/api/v1/users?cursor={audit_cursor}"),
    ] {
        assert_error(
            app.get_authed(&bad, &root.access).await,
            400,
            "validation_failed",
        )
        .await;
    }
    assert_error(
        app.get_authed("/api/v1/users?offset=2", &root.access).await,
        400,
        "invalid_query",
    )
    .await;
}

#[tokio::test]
async fn a_user_change_is_validated() {
    let app = TestApp::spawn().await;
    let root = app.user("root").await;
    let bob = app.user("bob").await;
    for (body, field) in [
        (json!({"role": "root"}), "role"),
        (json!({"tier": "gold"}), "tier"),
        (json!({}), "body"),
    ] {
        let error = assert_error(
            patch(&app, &root.access, &bob.user_id, body).await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(error["details"][0]["field"], field, "{error}");
    }
    assert_error(
        patch(
            &app,
            &root.access,
            &bob.user_id,
            json!({"tier": "pro", "password": "x"}),
        )
        .await,
        400,
        "validation_failed",
    )
    .await;
    assert_error(
        patch(&app, &root.access, &bob.user_id, json!({"disabled": "yes"})).await,
        400,
        "validation_failed",
    )
    .await;
    assert_error(
        patch(&app, &root.access, "key_0192", json!({"tier": "pro"})).await,
        400,
        "invalid_id",
    )
    .await;
    let ghost = "usr_0192f0c1d2e37a4b8c9d0e1f2a3b4c5d";
    assert_error(
        patch(&app, &root.access, ghost, json!({"tier": "pro"})).await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get_authed(&format!("/api/v1/users/{ghost}"), &root.access)
            .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn an_admin_cannot_disable_themselves_or_remove_the_last_admin() {
    let app = TestApp::spawn().await;
    let root = app.user("root").await;
    let bob = app.user("bob").await;
    assert_error(
        patch(&app, &root.access, &root.user_id, json!({"disabled": true})).await,
        409,
        "cannot_disable_self",
    )
    .await;
    assert_error(
        patch(&app, &root.access, &root.user_id, json!({"role": "user"})).await,
        409,
        "last_admin",
    )
    .await;
    // With a second admin, the first may step down (and is then refused admin routes).
    let promoted = patch(&app, &root.access, &bob.user_id, json!({"role": "admin"})).await;
    assert_eq!(promoted.status(), 200);
    let stepped_down = patch(&app, &root.access, &root.user_id, json!({"role": "user"})).await;
    assert_eq!(stepped_down.status(), 200);
    assert_error(
        app.get_authed("/api/v1/users", &root.access).await,
        403,
        "insufficient_scope",
    )
    .await;
    // bob is now the last admin: he cannot step down.
    assert_error(
        patch(&app, &bob.access, &bob.user_id, json!({"role": "user"})).await,
        409,
        "last_admin",
    )
    .await;
}

#[tokio::test]
async fn disabling_a_user_stops_their_sessions_keys_and_logins_and_enabling_restores_keys() {
    let app = TestApp::spawn().await;
    let root = app.user("root").await;
    let bob = app.user("bob").await;
    let key = app
        .create_key(&bob.access, json!({"name": "k", "scopes": ["read"]}))
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    // Warm the key cache: the change must still apply at once on this instance.
    let warm = app
        .with_api_key(Method::GET, "/api/auth/me", &key, None)
        .await;
    assert_eq!(warm.status(), 200);

    let disabled = patch(&app, &root.access, &bob.user_id, json!({"disabled": true})).await;
    assert_eq!(disabled.status(), 200);
    let disabled: Value = disabled.json().await.unwrap();
    assert_eq!(disabled["disabled"], true);
    assert!(disabled["disabledAt"].is_string());

    assert_eq!(
        app.get_authed("/api/auth/me", &bob.access).await.status(),
        401
    );
    assert_error(
        app.with_api_key(Method::GET, "/api/auth/me", &key, None)
            .await,
        403,
        "user_disabled",
    )
    .await;
    assert_error(
        app.post("/api/auth/refresh", json!({"refreshToken": bob.refresh}))
            .await,
        401,
        "invalid_refresh_token",
    )
    .await;
    assert_error(
        app.post(
            "/api/auth/login",
            json!({"username": "bob", "password": PASSWORD}),
        )
        .await,
        403,
        "user_disabled",
    )
    .await;
    // A wrong password says nothing about the account's state.
    assert_error(
        app.post(
            "/api/auth/login",
            json!({"username": "bob", "password": "wrong horse battery staple"}),
        )
        .await,
        401,
        "invalid_credentials",
    )
    .await;
    let verdict: Value = app
        .post_authed("/api/v1/keys/verify", &root.access, json!({"key": key}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&verdict["valid"], &verdict["code"]),
        (&json!(false), &json!("OWNER_DISABLED"))
    );

    let enabled = patch(&app, &root.access, &bob.user_id, json!({"disabled": false})).await;
    assert_eq!(enabled.status(), 200);
    let again = app
        .with_api_key(Method::GET, "/api/auth/me", &key, None)
        .await;
    assert_eq!(again.status(), 200, "keys work again");
    assert_eq!(
        app.get_authed("/api/auth/me", &bob.access).await.status(),
        401,
        "sessions stay ended"
    );
    app.login("bob").await;
}
