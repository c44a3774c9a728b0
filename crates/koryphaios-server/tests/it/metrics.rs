//! `/metrics`: valid Prometheus text, and each named metric moves when its event happens.

use reqwest::Method;
use serde_json::json;

use crate::harness::{TestApp, assert_error};

/// Parses Prometheus text: every line is a comment or `name{labels} value`. Returns the samples.
fn parse(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name {name:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line:?}");
        }
        samples.push((series.to_owned(), value));
    }
    samples
}

fn value(samples: &[(String, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.starts_with(&format!("{name}{{")) || series == name)
        .filter(|(series, _)| {
            labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .sum()
}

async fn scrape(app: &TestApp) -> Vec<(String, f64)> {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    parse(&response.text().await.unwrap())
}

#[tokio::test]
async fn every_named_metric_moves_when_its_event_happens() {
    let app = TestApp::spawn_with(&[
        ("KORYPHAIOS_RATE_LIMIT_ENABLED", "true"),
        ("KORYPHAIOS_ALLOW_REGISTRATION", "true"),
        ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "1000"),
    ])
    .await;
    let before = scrape(&app).await;
    let ada = app.user("ada").await;
    app.post(
        "/api/auth/login",
        json!({"username": "ada", "password": "not the password"}),
    )
    .await;
    let id = app
        .create_credential(&ada.access, "openai", "sk-metrics")
        .await;
    app.reveal(&ada.access, &id).await;
    app.get_authed(&format!("/api/v1/credentials/{id}"), &ada.access)
        .await;
    app.with_api_key(Method::GET, "/api/auth/me", "kor_not-a-key", None)
        .await;
    let free = app
        .create_key(
            &ada.access,
            json!({"name": "free", "scopes": ["read"], "rateLimitTier": "free"}),
        )
        .await;
    let free = free["key"].as_str().unwrap();
    for _ in 0..61 {
        app.with_api_key(Method::GET, "/api/auth/me", free, None)
            .await;
    }
    let after = scrape(&app).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert!(
        moved(
            "http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/api/v1/credentials"),
                ("status", "201")
            ]
        ) >= 1.0
    );
    assert!(
        moved(
            "http_requests_total",
            &[("route", "/api/v1/credentials/{id}"), ("status", "200")]
        ) >= 1.0,
        "labelled by route template"
    );
    assert!(
        !after.iter().any(|(series, _)| series.contains(&id)),
        "never the raw path"
    );
    assert!(
        moved(
            "http_request_duration_seconds_count",
            &[("route", "/api/v1/credentials")]
        ) >= 1.0
    );
    assert!(
        moved(
            "auth_attempts_total",
            &[("method", "password"), ("result", "success")]
        ) >= 1.0
    );
    assert!(
        moved(
            "auth_attempts_total",
            &[("method", "password"), ("result", "failure")]
        ) >= 1.0
    );
    assert!(
        moved(
            "auth_attempts_total",
            &[("method", "jwt"), ("result", "success")]
        ) >= 1.0
    );
    assert!(moved("api_key_validations_total", &[("result", "malformed")]) >= 1.0);
    assert!(moved("api_key_validations_total", &[("result", "valid")]) >= 60.0);
    assert!(
        moved(
            "credential_operations_total",
            &[("operation", "create"), ("result", "success")]
        ) >= 1.0
    );
    assert!(
        moved(
            "credential_operations_total",
            &[("operation", "reveal"), ("result", "success")]
        ) >= 1.0
    );
    assert!(
        moved(
            "rate_limit_allowed_total",
            &[("layer", "ip"), ("tier", "none")]
        ) >= 60.0
    );
    assert!(
        moved(
            "rate_limit_hits_total",
            &[("layer", "tier"), ("tier", "free")]
        ) >= 1.0
    );
    assert!(
        moved(
            "audit_events_total",
            &[("action", "credential_access"), ("result", "success")]
        ) >= 1.0
    );
    assert!(
        moved(
            "audit_events_total",
            &[("action", "login"), ("result", "failure")]
        ) >= 1.0
    );
    // Refreshed in the background (not per scrape), and the recorder is shared by every app of
    // this test process: the series exists for every known provider; its value is another app's
    // as much as ours.
    assert!(
        after
            .iter()
            .any(|(series, _)| series.starts_with("credentials_stored{")
                && series.contains("provider=\"openai\""))
    );
    assert_eq!(
        value(&after, "rate_limit_backend", &[("backend", "memory")]),
        1.0
    );
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&after, "process_start_time_seconds", &[]) > 0.0);
}

#[tokio::test]
async fn metrics_can_require_a_token_and_never_show_secrets() {
    let token = "metrics-token-0123456789";
    let app = TestApp::spawn_with(&[
        ("KORYPHAIOS_METRICS_TOKEN", token),
        ("KORYPHAIOS_ALLOW_REGISTRATION", "true"),
    ])
    .await;
    let ada = app.user("ada").await;
    app.create_credential(&ada.access, "anthropic", "sk-ant-metrics-secret")
        .await;
    assert_error(
        app.client.get(app.url("/metrics")).send().await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    assert_error(
        app.client
            .get(app.url("/metrics"))
            .bearer_auth("wrong-token-0123456789")
            .send()
            .await
            .unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    let response = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    parse(&text);
    for secret in [
        "sk-ant-metrics-secret",
        ada.access.as_str(),
        ada.refresh.as_str(),
        token,
    ] {
        assert!(!text.contains(secret), "a secret in /metrics");
    }
}

#[tokio::test]
async fn made_up_methods_and_paths_cannot_grow_the_label_set() {
    let app = TestApp::spawn().await;
    let before = scrape(&app).await;
    for n in 0..200 {
        let method = Method::from_bytes(format!("M{n}X").as_bytes()).unwrap();
        let response = app
            .client
            .request(method, app.url(&format!("/health/no-such-{n}")))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error());
    }
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let after = parse(&text);
    assert!(
        !after
            .iter()
            .any(|(series, _)| series.contains("M1X") || series.contains("no-such")),
        "a client-chosen method or path became a label"
    );
    let moved = value(
        &after,
        "http_requests_total",
        &[("method", "other"), ("route", "unmatched")],
    ) - value(
        &before,
        "http_requests_total",
        &[("method", "other"), ("route", "unmatched")],
    );
    assert!(moved >= 200.0, "unknown methods count as `other`: {moved}");
    // The whole test binary shares one recorder, so this holds every test's series: a bound on
    // the known label sets, far below what 200 made-up methods and paths would add per series.
    assert!(text.len() < 200_000, "/metrics is {} bytes", text.len());
}

#[tokio::test]
async fn scrapes_within_the_max_age_share_one_render() {
    let app = TestApp::spawn_with(&[("KORYPHAIOS_METRICS_MAX_AGE_MS", "2000")]).await;
    let text = |app: &TestApp| {
        let request = app.client.get(app.url("/metrics"));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    // Twenty at once on an empty cache: one render, the same text for all.
    let texts = futures_util::future::join_all((0..20).map(|_| text(&app))).await;
    assert!(texts.iter().all(|t| t == &texts[0]));
    // Events since (those twenty scrapes among them) are not in it until it is older than 2 s.
    let served = |text: &str| {
        value(
            &parse(text),
            "http_requests_total",
            &[("route", "/metrics"), ("status", "200")],
        )
    };
    let cached = text(&app).await;
    assert_eq!(cached, texts[0]);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let fresh = text(&app).await;
    assert!(
        served(&fresh) >= served(&cached) + 21.0,
        "a render older than the max age is replaced"
    );
}
