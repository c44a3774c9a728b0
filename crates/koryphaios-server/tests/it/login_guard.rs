//! Failed-password counters under concurrency: a slot is reserved before the password is checked,
//! so N guesses at once verify at most the limit; a flood from one address cannot lock the owner
//! out; the password-change route is guarded the same way.

use futures_util::future::join_all;
use serde_json::json;

use crate::harness::{PASSWORD, TestApp, assert_error};

const GUARDED: &[(&str, &str)] = &[
    ("KORYPHAIOS_RATE_LIMIT_ENABLED", "true"),
    ("KORYPHAIOS_ALLOW_REGISTRATION", "true"),
    ("KORYPHAIOS_TRUSTED_PROXIES", "127.0.0.1/32,::1/128"),
    ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "100000"),
    ("KORYPHAIOS_RATE_LIMIT_IP_PER_MINUTE", "100000"),
    ("KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES", "5"),
    ("KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES_PER_USER", "20"),
    ("KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURE_WINDOW_SECS", "60"),
];

async fn login_from(app: &TestApp, ip: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({"username": "ada", "password": password}))
        .send()
        .await
        .unwrap()
}

/// Statuses of `n` concurrent wrong guesses, the i-th from `ip(i)`.
async fn guesses(app: &TestApp, n: usize, ip: impl Fn(usize) -> String) -> (usize, usize) {
    let answers = join_all((0..n).map(|i| {
        let ip = ip(i);
        async move { login_from(app, &ip, "wrong password here").await.status() }
    }))
    .await;
    let verified = answers.iter().filter(|s| s.as_u16() == 401).count();
    let refused = answers.iter().filter(|s| s.as_u16() == 429).count();
    assert_eq!(verified + refused, n, "only 401 or 429: {answers:?}");
    (verified, refused)
}

#[tokio::test]
async fn concurrent_guesses_from_one_address_verify_at_most_the_limit_and_the_owner_gets_in() {
    let app = TestApp::spawn_with(GUARDED).await;
    app.register("ada").await;
    let (verified, _) = guesses(&app, 60, |_| "203.0.113.7".into()).await;
    assert_eq!(verified, 5, "exactly the limit was verified");
    // The attacker's address stays refused, even with the right password…
    assert_error(
        login_from(&app, "203.0.113.7", PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    // …but the owner, from elsewhere, logs in.
    assert_eq!(
        login_from(&app, "198.51.100.1", PASSWORD).await.status(),
        200
    );
}

#[tokio::test]
async fn a_distributed_attack_is_capped_by_the_per_username_counter() {
    let app = TestApp::spawn_with(GUARDED).await;
    app.register("ada").await;
    let (verified, refused) = guesses(&app, 60, |i| format!("203.0.113.{}", i + 1)).await;
    assert!(
        verified <= 20,
        "{verified} verified past the per-user limit"
    );
    assert!(refused >= 40);
    // Documented trade-off: once the per-username counter is full, every address waits.
    assert_error(
        login_from(&app, "198.51.100.1", PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    app.clock.advance(time::Duration::minutes(3));
    assert_eq!(
        login_from(&app, "198.51.100.1", PASSWORD).await.status(),
        200
    );
}

#[tokio::test]
async fn a_successful_login_gives_its_reserved_slot_back() {
    let app = TestApp::spawn_with(GUARDED).await;
    app.register("ada").await;
    for _ in 0..20 {
        assert_eq!(login_from(&app, "192.0.2.1", PASSWORD).await.status(), 200);
    }
    let (verified, _) = guesses(&app, 5, |_| "192.0.2.1".into()).await;
    assert_eq!(verified, 5, "successes did not use up the failure budget");
}

#[tokio::test]
async fn wrong_current_passwords_on_password_change_are_limited() {
    let app = TestApp::spawn_with(GUARDED).await;
    let ada = app.user("ada").await;
    let change = |current: &'static str| {
        app.client
            .post(app.url("/api/auth/password"))
            .bearer_auth(&ada.access)
            .header("x-forwarded-for", "203.0.113.9")
            .json(&json!({"currentPassword": current, "newPassword": "a brand new passphrase"}))
            .send()
    };
    let answers = join_all((0..20).map(|_| change("wrong password here"))).await;
    let verified = answers
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == 401)
        .count();
    assert_eq!(
        verified, 5,
        "at most the limit of wrong current passwords is checked"
    );
    assert_error(change(PASSWORD).await.unwrap(), 429, "rate_limited").await;
    app.clock.advance(time::Duration::minutes(3));
    assert_eq!(change(PASSWORD).await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_oversize_username_is_not_a_limiter_key_and_still_answers_401() {
    let app = TestApp::spawn_with(GUARDED).await;
    app.register("ada").await;
    let long = "a".repeat(5_000);
    for _ in 0..5 {
        let response = app
            .client
            .post(app.url("/api/auth/login"))
            .header("x-forwarded-for", "203.0.113.50")
            .json(&json!({"username": long, "password": "wrong password here"}))
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "invalid_credentials").await;
    }
    // Invalid names share one counter, which no real user's counter is.
    assert_eq!(
        login_from(&app, "203.0.113.50", PASSWORD).await.status(),
        200
    );
}
