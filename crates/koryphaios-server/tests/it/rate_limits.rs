//! Rate limits over HTTP: tiers, bursts, auth endpoints, failed logins, headers, client IPs,
//! two instances sharing Redis, and Redis going away and coming back.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{PASSWORD, PrivateRedis, TestApp, assert_error};

const ON: (&str, &str) = ("KORYPHAIOS_RATE_LIMIT_ENABLED", "true");
const OPEN: (&str, &str) = ("KORYPHAIOS_ALLOW_REGISTRATION", "true");

/// Registers and logs in with generous auth limits, then issues a key of `tier`.
async fn key_of_tier(app: &TestApp, user: &str, tier: &str) -> String {
    let session = app.user(user).await;
    let issued = app
        .create_key(
            &session.access,
            json!({"name": tier, "scopes": ["read", "write", "provider:*"], "rateLimitTier": tier}),
        )
        .await;
    issued["key"].as_str().unwrap().to_owned()
}

async fn exhaust(app: &TestApp, key: &str, path: &str, expected: u64) {
    for i in 0..expected {
        let response = app.with_api_key(Method::GET, path, key, None).await;
        assert_eq!(
            response.status(),
            200,
            "request {} of {expected} should pass",
            i + 1
        );
        assert_eq!(
            response.headers()["x-ratelimit-remaining"],
            (expected - i - 1).to_string().as_str()
        );
    }
}

#[tokio::test]
async fn the_61st_request_of_a_free_key_in_a_minute_is_429_with_headers() {
    let app =
        TestApp::spawn_with(&[ON, OPEN, ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "100")]).await;
    let key = key_of_tier(&app, "ada", "free").await;
    let first = app
        .with_api_key(Method::GET, "/api/auth/me", &key, None)
        .await;
    assert_eq!(first.headers()["x-ratelimit-limit"], "60");
    let reset: i64 = first.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        reset > now && reset <= now + 70,
        "reset {reset} is a Unix time within the window"
    );
    exhaust(&app, &key, "/api/auth/me", 59).await;
    let refused = app
        .with_api_key(Method::GET, "/api/auth/me", &key, None)
        .await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=66).contains(&retry_after));
    assert_eq!(refused.headers()["x-ratelimit-remaining"], "0");
    let body = assert_error(refused, 429, "rate_limited").await;
    assert_eq!(body["error"], "Too Many Requests");
    assert_eq!(body["retryAfter"].as_u64(), Some(retry_after));
    // The clock moves past the window: admitted again.
    app.clock.advance(time::Duration::seconds(67));
    assert_eq!(
        app.with_api_key(Method::GET, "/api/auth/me", &key, None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn each_tier_gets_its_own_limit() {
    let app = TestApp::spawn_with(&[
        ON,
        OPEN,
        ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "100"),
        ("KORYPHAIOS_RATE_LIMIT_TIER_PREMIUM", "7"),
        ("KORYPHAIOS_RATE_LIMIT_TIER_PRO", "9"),
        ("KORYPHAIOS_RATE_LIMIT_TIER_ENTERPRISE", "11"),
        ("KORYPHAIOS_DEFAULT_USER_TIER", "enterprise"),
    ])
    .await;
    // Every user is enterprise (11): a lower key is held to its own tier; an enterprise key
    // shares its user's 11 with the session that created it (1 spent).
    for (user, tier, limit) in [
        ("pat", "premium", 7u64),
        ("pro", "pro", 9),
        ("ent", "enterprise", 10),
    ] {
        let key = key_of_tier(&app, user, tier).await;
        exhaust(&app, &key, "/api/v1/keys", limit).await;
        assert_error(
            app.with_api_key(Method::GET, "/api/v1/keys", &key, None)
                .await,
            429,
            "rate_limited",
        )
        .await;
    }
}

#[tokio::test]
async fn sensitive_operations_allow_a_burst_then_refill_at_their_rate() {
    let app = TestApp::spawn_with(&[
        ON,
        OPEN,
        ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "100"),
        ("KORYPHAIOS_RATE_LIMIT_SENSITIVE_PREMIUM", "3:6"),
    ])
    .await;
    let key = key_of_tier(&app, "ada", "premium").await;
    let create = || {
        app.with_api_key(
            Method::POST,
            "/api/v1/credentials",
            &key,
            Some(json!({"provider": "openai", "credential": "sk"})),
        )
    };
    for _ in 0..3 {
        assert_eq!(create().await.status(), 201);
    }
    let refused = create().await;
    assert_eq!(
        refused.headers()["retry-after"],
        "10",
        "6 per minute: one token every 10 s"
    );
    assert_error(refused, 429, "rate_limited").await;
    // Reads are not sensitive: still fine.
    assert_eq!(
        app.with_api_key(Method::GET, "/api/v1/credentials", &key, None)
            .await
            .status(),
        200
    );
    app.clock.advance(time::Duration::seconds(10));
    assert_eq!(create().await.status(), 201);
    assert_eq!(create().await.status(), 429);
}

#[tokio::test]
async fn auth_endpoints_are_limited_per_ip_and_failed_logins_per_username() {
    let app = TestApp::spawn_with(&[
        ON,
        OPEN,
        ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "100"),
        ("KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES", "3"),
    ])
    .await;
    app.register("ada").await;
    for _ in 0..3 {
        assert_error(
            app.post(
                "/api/auth/login",
                json!({"username": "ada", "password": "wrong password!"}),
            )
            .await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    // Even the right password is refused now, for this username only (case-insensitively).
    assert_error(
        app.post(
            "/api/auth/login",
            json!({"username": "ADA", "password": PASSWORD}),
        )
        .await,
        429,
        "rate_limited",
    )
    .await;
    app.register("bob").await;
    app.login("bob").await;
    app.clock.advance(time::Duration::minutes(17));
    app.login("ada").await;

    let strict =
        TestApp::spawn_with(&[ON, OPEN, ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "4")]).await;
    strict.register("eve").await;
    for _ in 0..3 {
        strict.login("eve").await;
    }
    assert_error(
        strict
            .post(
                "/api/auth/login",
                json!({"username": "eve", "password": PASSWORD}),
            )
            .await,
        429,
        "rate_limited",
    )
    .await;
    assert_error(
        strict
            .post("/api/auth/refresh", json!({"refreshToken": "krt_x"}))
            .await,
        429,
        "rate_limited",
    )
    .await;
    // Health is never limited.
    assert_eq!(
        strict
            .client
            .get(strict.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn the_ip_layer_limits_everyone_and_a_spoofed_forwarded_for_changes_nothing() {
    let app = TestApp::spawn_with(&[ON, ("KORYPHAIOS_RATE_LIMIT_IP_PER_MINUTE", "5")]).await;
    for i in 0..5 {
        let response = app
            .client
            .get(app.url("/api/v1/keys"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            401,
            "unauthenticated but admitted by the IP layer"
        );
    }
    let refused = app
        .client
        .get(app.url("/api/v1/keys"))
        .header("x-forwarded-for", "198.51.100.77")
        .send()
        .await
        .unwrap();
    assert_error(refused, 429, "rate_limited").await;

    // Behind a trusted proxy, the forwarded address is the client.
    let proxied = TestApp::spawn_with(&[
        ON,
        ("KORYPHAIOS_RATE_LIMIT_IP_PER_MINUTE", "2"),
        ("KORYPHAIOS_TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    for client in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..2 {
            let response = proxied
                .client
                .get(proxied.url("/api/v1/keys"))
                .header("x-forwarded-for", client)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401);
        }
    }
    let third = proxied
        .client
        .get(proxied.url("/api/v1/keys"))
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
}

#[tokio::test]
async fn two_instances_sharing_redis_admit_the_limit_once() {
    let redis = PrivateRedis::start();
    let url = redis.url();
    let vars = [
        ON,
        OPEN,
        ("KORYPHAIOS_REDIS_URL", url.as_str()),
        ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "100"),
        ("KORYPHAIOS_RATE_LIMIT_TIER_PRO", "20"),
    ];
    let a = TestApp::spawn_with(&vars).await;
    let key = key_of_tier(&a, "ada", "pro").await;
    let b = TestApp::spawn_in(a.data_dir.clone(), &vars).await;
    let mut admitted = 0;
    for i in 0..40 {
        let app = if i % 2 == 0 { &a } else { &b };
        if app
            .with_api_key(Method::GET, "/api/auth/me", &key, None)
            .await
            .status()
            == 200
        {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 20, "the pro limit holds across both instances");
    let ready: Value = a
        .client
        .get(a.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["data"]["components"]["rateLimiter"]["backend"],
        "redis"
    );
}

#[tokio::test]
async fn redis_going_away_falls_back_to_memory_without_errors_and_returns() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let app = TestApp::spawn_with(&[
        ON,
        OPEN,
        ("KORYPHAIOS_REDIS_URL", url.as_str()),
        ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "1000"),
        ("KORYPHAIOS_RATE_LIMIT_TIER_ENTERPRISE", "100000"),
    ])
    .await;
    let key = key_of_tier(&app, "ada", "enterprise").await;
    assert_eq!(
        app.with_api_key(Method::GET, "/api/auth/me", &key, None)
            .await
            .status(),
        200
    );
    redis.stop();
    for _ in 0..50 {
        let response = app
            .with_api_key(Method::GET, "/api/auth/me", &key, None)
            .await;
        assert_eq!(response.status(), 200, "no 5xx while Redis is away");
        assert!(
            response.headers().contains_key("x-ratelimit-remaining"),
            "still limited, in memory"
        );
    }
    let ready: Value = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ok"], true);
    assert_eq!(
        ready["data"]["components"]["rateLimiter"]["backend"],
        "memory"
    );
    assert_eq!(
        ready["data"]["components"]["rateLimiter"]["status"],
        "degraded"
    );

    redis.restart();
    let back = std::time::Instant::now();
    loop {
        app.with_api_key(Method::GET, "/api/auth/me", &key, None)
            .await;
        let ready: Value = app
            .client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["data"]["components"]["rateLimiter"]["backend"] == "redis" {
            break;
        }
        assert!(
            back.elapsed() < std::time::Duration::from_secs(5),
            "back on Redis within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_service_starts_and_serves_with_redis_down() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    redis.stop();
    let app = TestApp::spawn_with(&[ON, OPEN, ("KORYPHAIOS_REDIS_URL", url.as_str())]).await;
    assert_eq!(
        app.client
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let session = app.user("ada").await;
    let response = app.get_authed("/api/auth/me", &session.access).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-ratelimit-limit"));
}

#[tokio::test]
async fn disabled_limiting_sends_no_headers_and_never_429s() {
    let app = TestApp::spawn_with(&[
        ("KORYPHAIOS_RATE_LIMIT_ENABLED", "false"),
        ("KORYPHAIOS_RATE_LIMIT_IP_PER_MINUTE", "1"),
    ])
    .await;
    for _ in 0..5 {
        let response = app
            .client
            .get(app.url("/api/v1/keys"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert!(!response.headers().contains_key("x-ratelimit-limit"));
    }
}
