//! Users and sessions: register, login, refresh rotation and reuse, logout, logout-all,
//! password change, token tampering and expiry, restarts.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{PASSWORD, TestApp, assert_error, session_from};

#[tokio::test]
async fn the_first_user_is_admin_and_registration_then_closes_by_default() {
    let app = TestApp::spawn_with(&[]).await;
    let first = app.register("root").await;
    assert_eq!(first["user"]["role"], "admin");
    assert!(first["user"]["id"].as_str().unwrap().starts_with("usr_"));
    assert!(first["user"].get("password").is_none() && first["user"].get("passwordHash").is_none());
    let second = app
        .post(
            "/api/auth/register",
            json!({"username": "bob", "password": PASSWORD}),
        )
        .await;
    assert_error(second, 403, "registration_closed").await;
}

#[tokio::test]
async fn open_registration_makes_later_users_plain_users() {
    let app = TestApp::spawn().await;
    app.register("root").await;
    let bob = app.register("bob").await;
    assert_eq!(bob["user"]["role"], "user");
    let bob = app.login("bob").await;
    let me: Value = app
        .get_authed("/api/auth/me", &bob.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "user");
    assert_eq!(me["authMethod"], "session");
    assert_eq!(me["scopes"], json!(["read", "write", "provider:*"]));
}

#[tokio::test]
async fn login_returns_tokens_that_work_and_me_describes_the_caller() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    let response = app
        .post(
            "/api/auth/login",
            json!({"username": "ada", "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expiresIn"], 900);
    assert_eq!(body["tokenType"], "Bearer");
    assert!(body["refreshToken"].as_str().unwrap().starts_with("krt_"));
    let session = session_from(body);
    let me = app.get_authed("/api/auth/me", &session.access).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["username"], "ada");
    assert_eq!(me["userId"], session.user_id.as_str());
    assert_eq!(me["scopes"], json!(["admin"]));
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    let wrong = app
        .post(
            "/api/auth/login",
            json!({"username": "ada", "password": "not the right one"}),
        )
        .await;
    let wrong = assert_error(wrong, 401, "invalid_credentials").await;
    let unknown = app
        .post(
            "/api/auth/login",
            json!({"username": "nobody", "password": PASSWORD}),
        )
        .await;
    let unknown = assert_error(unknown, 401, "invalid_credentials").await;
    assert_eq!(wrong["error"], unknown["error"]);
    let malformed_name = app
        .post(
            "/api/auth/login",
            json!({"username": "no such user!", "password": PASSWORD}),
        )
        .await;
    assert_error(malformed_name, 401, "invalid_credentials").await;
}

#[tokio::test]
async fn usernames_are_case_insensitive_for_login_and_uniqueness() {
    let app = TestApp::spawn().await;
    app.register("Ada").await;
    app.login("ada").await;
    let duplicate = app
        .post(
            "/api/auth/register",
            json!({"username": "ADA", "password": PASSWORD}),
        )
        .await;
    assert_error(duplicate, 409, "username_taken").await;
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_kills_the_whole_session() {
    let app = TestApp::spawn().await;
    let first = app.user("ada").await;
    let rotated = app
        .post("/api/auth/refresh", json!({"refreshToken": first.refresh}))
        .await;
    assert_eq!(rotated.status(), 200);
    let second = session_from(rotated.json().await.unwrap());
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(
        app.get_authed("/api/auth/me", &second.access)
            .await
            .status(),
        200
    );

    // Replaying the spent token: refused, and the family dies.
    let replay = app
        .post("/api/auth/refresh", json!({"refreshToken": first.refresh}))
        .await;
    assert_error(replay, 401, "refresh_token_reused").await;
    let legit = app
        .post("/api/auth/refresh", json!({"refreshToken": second.refresh}))
        .await;
    assert_error(legit, 401, "invalid_refresh_token").await;
    assert_error(
        app.get_authed("/api/auth/me", &second.access).await,
        401,
        "token_revoked",
    )
    .await;
    assert_error(
        app.get_authed("/api/auth/me", &first.access).await,
        401,
        "token_revoked",
    )
    .await;

    // Another login is unaffected.
    let fresh = app.login("ada").await;
    assert_eq!(
        app.get_authed("/api/auth/me", &fresh.access).await.status(),
        200
    );
    // The replay is on the record, without the token.
    let page: serde_json::Value = app
        .get_authed("/api/v1/audit/me?action=refresh_token_reuse", &fresh.access)
        .await
        .json()
        .await
        .unwrap();
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{page}");
    assert_eq!(records[0]["success"], false);
    assert_eq!(records[0]["userId"], first.user_id.as_str());
    assert!(!page.to_string().contains(&first.refresh));
}

#[tokio::test]
async fn unknown_and_malformed_refresh_tokens_are_refused() {
    let app = TestApp::spawn().await;
    app.user("ada").await;
    for token in [
        "krt_never-issued",
        "not-a-refresh-token",
        &format!("krt_{}", "a".repeat(200)),
    ] {
        let response = app
            .post("/api/auth/refresh", json!({"refreshToken": token}))
            .await;
        assert_error(response, 401, "invalid_refresh_token").await;
    }
}

#[tokio::test]
async fn expired_refresh_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let session = app.user("ada").await;
    app.clock
        .advance(time::Duration::days(7) + time::Duration::seconds(1));
    let response = app
        .post(
            "/api/auth/refresh",
            json!({"refreshToken": session.refresh}),
        )
        .await;
    assert_error(response, 401, "invalid_refresh_token").await;
}

#[tokio::test]
async fn logout_revokes_the_access_token_and_its_refresh_token() {
    let app = TestApp::spawn().await;
    let session = app.user("ada").await;
    let other = app.login("ada").await;
    let response = app
        .request(
            Method::POST,
            "/api/auth/logout",
            Some(&session.access),
            None,
        )
        .await;
    assert_eq!(response.status(), 204);
    assert_error(
        app.get_authed("/api/auth/me", &session.access).await,
        401,
        "token_revoked",
    )
    .await;
    let refresh = app
        .post(
            "/api/auth/refresh",
            json!({"refreshToken": session.refresh}),
        )
        .await;
    assert_error(refresh, 401, "invalid_refresh_token").await;
    // Only that session ended.
    assert_eq!(
        app.get_authed("/api/auth/me", &other.access).await.status(),
        200
    );
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user_only() {
    let app = TestApp::spawn().await;
    let a = app.user("ada").await;
    let b = app.login("ada").await;
    let bob = app.user("bob").await;
    let response = app
        .request(Method::POST, "/api/auth/logout-all", Some(&a.access), None)
        .await;
    assert_eq!(response.status(), 204);
    for session in [&a, &b] {
        assert_error(
            app.get_authed("/api/auth/me", &session.access).await,
            401,
            "token_revoked",
        )
        .await;
        let refresh = app
            .post(
                "/api/auth/refresh",
                json!({"refreshToken": session.refresh}),
            )
            .await;
        assert_error(refresh, 401, "invalid_refresh_token").await;
    }
    assert_eq!(
        app.get_authed("/api/auth/me", &bob.access).await.status(),
        200
    );
    // Logging in again works.
    let again = app.login("ada").await;
    assert_eq!(
        app.get_authed("/api/auth/me", &again.access).await.status(),
        200
    );
}

#[tokio::test]
async fn changing_the_password_ends_old_sessions_and_starts_a_new_one() {
    let app = TestApp::spawn().await;
    let old = app.user("ada").await;
    let new_password = "a whole new passphrase 42";
    let wrong = app
        .request(
            Method::POST,
            "/api/auth/password",
            Some(&old.access),
            Some(json!({"currentPassword": "wrong password!!", "newPassword": new_password})),
        )
        .await;
    assert_error(wrong, 401, "invalid_credentials").await;
    let weak = app
        .request(
            Method::POST,
            "/api/auth/password",
            Some(&old.access),
            Some(json!({"currentPassword": PASSWORD, "newPassword": "short"})),
        )
        .await;
    let body = assert_error(weak, 400, "validation_failed").await;
    assert_eq!(body["details"][0]["field"], "newPassword");

    let changed = app
        .request(
            Method::POST,
            "/api/auth/password",
            Some(&old.access),
            Some(json!({"currentPassword": PASSWORD, "newPassword": new_password})),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let fresh = session_from(changed.json().await.unwrap());
    assert_error(
        app.get_authed("/api/auth/me", &old.access).await,
        401,
        "token_revoked",
    )
    .await;
    assert_eq!(
        app.get_authed("/api/auth/me", &fresh.access).await.status(),
        200
    );
    let old_login = app
        .post(
            "/api/auth/login",
            json!({"username": "ada", "password": PASSWORD}),
        )
        .await;
    assert_error(old_login, 401, "invalid_credentials").await;
    let new_login = app
        .post(
            "/api/auth/login",
            json!({"username": "ada", "password": new_password}),
        )
        .await;
    assert_eq!(new_login.status(), 200);
}

#[tokio::test]
async fn expired_access_tokens_are_refused_with_their_own_code() {
    let app = TestApp::spawn().await;
    let session = app.user("ada").await;
    app.clock.advance(time::Duration::minutes(14));
    assert_eq!(
        app.get_authed("/api/auth/me", &session.access)
            .await
            .status(),
        200
    );
    app.clock.advance(time::Duration::minutes(1));
    assert_error(
        app.get_authed("/api/auth/me", &session.access).await,
        401,
        "token_expired",
    )
    .await;
}

#[tokio::test]
async fn tampered_forged_and_alg_swapped_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let admin = app.user("root").await;
    let bob = app.user("bob").await;
    let parts: Vec<&str> = bob.access.split('.').collect();

    // Payload changed to claim the admin's id, signature kept.
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let mut forged = payload.clone();
    forged["sub"] = Value::String(admin.user_id.clone());
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_error(
        app.get_authed("/api/auth/me", &tampered).await,
        401,
        "invalid_token",
    )
    .await;

    // alg: none with no signature.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{forged_payload}.");
    assert_error(
        app.get_authed("/api/auth/me", &alg_none).await,
        401,
        "invalid_token",
    )
    .await;

    // Header swapped to HS512, original signature.
    let hs512 = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
    let swapped = format!("{hs512}.{}.{}", parts[1], parts[2]);
    assert_error(
        app.get_authed("/api/auth/me", &swapped).await,
        401,
        "invalid_token",
    )
    .await;

    // A token from another instance (another secret).
    let other = TestApp::spawn().await;
    let stranger = other.user("bob").await;
    assert_error(
        app.get_authed("/api/auth/me", &stranger.access).await,
        401,
        "invalid_token",
    )
    .await;

    // Garbage and a refresh token used as an access token.
    assert_error(
        app.get_authed("/api/auth/me", "garbage").await,
        401,
        "invalid_token",
    )
    .await;
    assert_error(
        app.get_authed("/api/auth/me", &bob.refresh).await,
        401,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn missing_or_malformed_authorization_is_401_with_a_challenge() {
    let app = TestApp::spawn().await;
    let missing = app
        .client
        .get(app.url("/api/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_error(missing, 401, "unauthenticated").await;
    for header in ["Basic YWRhOnB3", "Bearer", "Bearer   ", "token"] {
        let response = app
            .client
            .get(app.url("/api/auth/me"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "invalid_authorization").await;
    }
    let huge = format!("Bearer {}", "a".repeat(6000));
    let response = app
        .client
        .get(app.url("/api/auth/me"))
        .header("authorization", huge)
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid_token").await;
    for path in ["/api/auth/logout", "/api/auth/logout-all"] {
        let response = app.client.post(app.url(path)).send().await.unwrap();
        assert_error(response, 401, "unauthenticated").await;
    }
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let app = TestApp::spawn().await;
    let session = app.user("ada").await;
    let data_dir = app.stop().await;
    let restarted = TestApp::spawn_in(data_dir, &[("KORYPHAIOS_ALLOW_REGISTRATION", "true")]).await;
    assert_eq!(
        restarted
            .get_authed("/api/auth/me", &session.access)
            .await
            .status(),
        200
    );
    let refreshed = restarted
        .post(
            "/api/auth/refresh",
            json!({"refreshToken": session.refresh}),
        )
        .await;
    assert_eq!(refreshed.status(), 200);
}

#[tokio::test]
async fn a_configured_jwt_secret_is_used_instead_of_the_generated_one() {
    let secret = (
        "KORYPHAIOS_JWT_SECRET",
        "an-operator-chosen-secret-of-40-bytes!!!",
    );
    let app = TestApp::spawn_with(&[secret]).await;
    let session = app.user("ada").await;
    assert!(!app.data_dir.path().join("data/jwt.secret").exists());
    let data_dir = app.stop().await;
    // Same data, same secret: valid. Same data, generated secret: not.
    let same = TestApp::spawn_in(data_dir.clone(), &[secret]).await;
    assert_eq!(
        same.get_authed("/api/auth/me", &session.access)
            .await
            .status(),
        200
    );
    let data_dir = same.stop().await;
    let generated = TestApp::spawn_in(data_dir, &[]).await;
    assert_error(
        generated.get_authed("/api/auth/me", &session.access).await,
        401,
        "invalid_token",
    )
    .await;
}

/// action, actor, success, user_id, metadata, client_ip
type AuditRow = (String, String, i64, Option<String>, String, Option<String>);

#[tokio::test]
async fn auth_events_are_audited_without_secrets() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    app.post(
        "/api/auth/login",
        json!({"username": "ada", "password": "a wrong password!"}),
    )
    .await;
    app.post(
        "/api/auth/login",
        json!({"username": "nobody", "password": "a wrong password!"}),
    )
    .await;
    let change = app
        .request(
            Method::POST,
            "/api/auth/password",
            Some(&ada.access),
            Some(json!({"currentPassword": PASSWORD, "newPassword": "brand new passphrase 9"})),
        )
        .await;
    let fresh = session_from(change.json().await.unwrap());
    app.request(Method::POST, "/api/auth/logout", Some(&fresh.access), None)
        .await;
    // Ada registered first, so she is the admin and reads every record through the API.
    let reader = session_from(
        app.post(
            "/api/auth/login",
            json!({"username": "ada", "password": "brand new passphrase 9"}),
        )
        .await
        .json()
        .await
        .unwrap(),
    );
    let page: serde_json::Value = app
        .get_authed("/api/v1/audit?limit=1000", &reader.access)
        .await
        .json()
        .await
        .unwrap();
    let rows: Vec<AuditRow> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["actor"].as_str().unwrap().to_owned(),
                i64::from(r["success"].as_bool().unwrap()),
                r["userId"].as_str().map(str::to_owned),
                r["metadata"].to_string(),
                r["clientIp"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let summary: Vec<(String, i64)> = rows.iter().map(|r| (r.0.clone(), r.2)).collect();
    for expected in [
        ("register", 1),
        ("login", 1),
        ("login", 0),
        ("password_change", 1),
        ("logout", 1),
    ] {
        assert!(
            summary.contains(&(expected.0.to_owned(), expected.1)),
            "{expected:?} missing from {summary:?}"
        );
    }
    let unknown = rows
        .iter()
        .find(|r| r.0 == "login" && r.3.is_none())
        .expect("the unknown user's failed login");
    assert_eq!(unknown.1, "anonymous");
    assert!(unknown.4.contains("nobody"));
    assert!(rows.iter().all(|r| r.5.as_deref() == Some("127.0.0.1")));
    let all = format!("{rows:?}");
    for secret in [
        PASSWORD,
        "a wrong password!",
        "brand new passphrase 9",
        ada.access.as_str(),
        ada.refresh.as_str(),
    ] {
        assert!(!all.contains(secret), "a secret in the audit log");
    }
}
