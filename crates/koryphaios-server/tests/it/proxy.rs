//! The credential proxy (issue #15) against a real upstream: a small axum server on 127.0.0.1
//! started by each test stands in for the provider; nothing else is faked. Runs on SQLite, and on
//! PostgreSQL with `KORYPHAIOS_TEST_DATABASE=postgres`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{TestApp, assert_error};

const OPENAI_KEY: &str = "sk-test-openai-0123456789";
const ANTHROPIC_KEY: &str = "sk-ant-test-0123456789";

/// What the upstream saw of each request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    body_bytes: usize,
}

#[derive(Debug, Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request reached the upstream")
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// Reads the whole body (counting it) and records the request.
async fn record(upstream: &Upstream, request: Request) -> (Seen, Vec<u8>) {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body_bytes: bytes.len(),
    };
    upstream.seen.lock().unwrap().push(seen.clone());
    (seen, bytes)
}

async fn echo(State(upstream): State<Upstream>, request: Request) -> Response {
    let (seen, _) = record(&upstream, request).await;
    (
        [("x-request-id", "provider-req-1")],
        axum::Json(json!({"method": seen.method, "uri": seen.uri, "bytes": seen.body_bytes})),
    )
        .into_response()
}

/// Five events, 200 ms apart.
async fn sse(State(upstream): State<Upstream>, request: Request) -> Response {
    record(&upstream, request).await;
    let events = futures_util::stream::iter(0..5).then(|i| async move {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<_, std::convert::Infallible>(format!("data: {{\"n\":{i}}}\n\n"))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap()
}

async fn slow(State(upstream): State<Upstream>, request: Request) -> Response {
    record(&upstream, request).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    "late".into_response()
}

/// A 401 that quotes the key it was given, as some providers do.
async fn leak(State(upstream): State<Upstream>, request: Request) -> Response {
    let (seen, _) = record(&upstream, request).await;
    let given = seen
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_start_matches("Bearer ")
        .to_owned();
    (
        StatusCode::UNAUTHORIZED,
        [("content-type", "text/plain"), ("x-provider", "yes")],
        format!("Incorrect API key provided: {given}. Check your key."),
    )
        .into_response()
}

/// A 401 quoting the key with `Content-Encoding: gzip` (not really compressed: only the header
/// matters), as a provider ignoring `Accept-Encoding: identity` would answer.
async fn gzip_leak(State(upstream): State<Upstream>, request: Request) -> Response {
    let (seen, _) = record(&upstream, request).await;
    let given = seen
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        StatusCode::UNAUTHORIZED,
        [("content-type", "text/plain"), ("content-encoding", "gzip")],
        format!("bad key {given}"),
    )
        .into_response()
}

/// An event every 100 ms, never ending.
async fn forever(State(upstream): State<Upstream>, request: Request) -> Response {
    record(&upstream, request).await;
    let events = futures_util::stream::iter(0..).then(|i| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, std::convert::Infallible>(format!("data: {{\"n\":{i}}}\n\n"))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap()
}

async fn start_upstream() -> (SocketAddr, Upstream) {
    let upstream = Upstream::default();
    let app = Router::new()
        .route("/v1/sse", get(sse))
        .route("/v1/slow", get(slow))
        .route("/v1/leak", post(leak))
        .route("/v1/gzip-leak", post(gzip_leak))
        .route("/v1/forever", get(forever))
        .fallback(any(echo))
        .with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, upstream)
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

struct Setup {
    app: TestApp,
    upstream: Upstream,
    session: crate::harness::Session,
    openai: String,
}

/// An instance whose `openai` and `anthropic` are the local upstream and whose `groq` is a
/// closed port; user ada with an OpenAI and an Anthropic credential.
async fn setup(extra: &[(&str, &str)]) -> Setup {
    let (address, upstream) = start_upstream().await;
    let base = format!("http://{address}/v1");
    let down = format!("http://127.0.0.1:{}/v1", closed_port().await);
    let mut vars = vec![
        ("KORYPHAIOS_ALLOW_REGISTRATION", "true"),
        ("KORYPHAIOS_PROVIDER_OPENAI_BASE_URL", base.as_str()),
        ("KORYPHAIOS_PROVIDER_ANTHROPIC_BASE_URL", base.as_str()),
        ("KORYPHAIOS_PROVIDER_GROQ_BASE_URL", down.as_str()),
        ("KORYPHAIOS_PROXY_FIRST_BYTE_TIMEOUT_SECS", "1"),
    ];
    vars.extend_from_slice(extra);
    let app = TestApp::spawn_with(&vars).await;
    let session = app.user("ada").await;
    let openai = app
        .create_credential(&session.access, "openai", OPENAI_KEY)
        .await;
    app.create_credential(&session.access, "anthropic", ANTHROPIC_KEY)
        .await;
    Setup {
        app,
        upstream,
        session,
        openai,
    }
}

async fn key_with(app: &TestApp, session: &str, scopes: Value) -> String {
    let issued = app
        .create_key(session, json!({"name": "agent", "scopes": scopes}))
        .await;
    issued["key"].as_str().unwrap().to_owned()
}

/// Sends `request_line`'s path byte for byte (reqwest would normalise `..` away).
async fn raw_get(app: &TestApp, path: &str, key: &str) -> (u16, String) {
    let address = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// The first `credential_use` record of `credential` (written after the call: polled briefly).
async fn credential_use(app: &TestApp, session: &str, credential: &str) -> Value {
    for _ in 0..50 {
        let trail: Value = app
            .get_authed(&format!("/api/v1/credentials/{credential}/audit"), session)
            .await
            .json()
            .await
            .unwrap();
        if let Some(found) = trail["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["action"] == "credential_use")
        {
            return found.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no credential_use record");
}

#[tokio::test]
async fn the_provider_gets_the_stored_key_and_never_the_callers() {
    let Setup {
        app,
        upstream,
        session,
        ..
    } = setup(&[]).await;
    let key = key_with(
        &app,
        &session.access,
        json!(["proxy:openai", "proxy:anthropic"]),
    )
    .await;
    // The OpenAI SDK's way: our key as its Bearer token.
    let response = app
        .client
        .post(app.url("/api/v1/proxy/openai/chat/completions?stream=false&user=x"))
        .bearer_auth(&key)
        .header("cookie", "session=abc")
        .header("x-koryphaios-trace", "1")
        .header("x-forwarded-for", "10.9.8.7")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["uri"], "/v1/chat/completions?stream=false&user=x");
    assert_eq!(body["method"], "POST");
    let seen = upstream.last();
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {OPENAI_KEY}")
    );
    for header in [
        "cookie",
        "x-api-key",
        "x-koryphaios-trace",
        "x-forwarded-for",
    ] {
        assert!(
            seen.headers.get(header).is_none(),
            "{header} reached the provider"
        );
    }
    assert!(!format!("{:?}", seen.headers).contains(&key));
    assert_eq!(seen.headers["content-type"], "application/json");

    // X-API-Key for us; Anthropic's key goes in x-api-key; no Authorization at all.
    let response = app
        .client
        .post(app.url("/api/v1/proxy/anthropic/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(seen.headers.get("authorization").is_none());
}

#[tokio::test]
async fn server_sent_events_arrive_chunk_by_chunk() {
    let Setup { app, session, .. } = setup(&[]).await;
    let started = Instant::now();
    let mut response = app
        .client
        .get(app.url("/api/v1/proxy/openai/sse"))
        .bearer_auth(&session.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut arrivals = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        arrivals.push((
            started.elapsed(),
            String::from_utf8(chunk.to_vec()).unwrap(),
        ));
    }
    assert_eq!(arrivals.len(), 5, "{arrivals:?}");
    for (i, (_, text)) in arrivals.iter().enumerate() {
        assert_eq!(text, &format!("data: {{\"n\":{i}}}\n\n"));
    }
    let first = arrivals[0].0;
    let last = arrivals[4].0;
    // The upstream sends the last event 800 ms after the first.
    assert!(
        first < Duration::from_millis(500),
        "first chunk after {first:?}"
    );
    assert!(last - first >= Duration::from_millis(700), "{arrivals:?}");
}

#[tokio::test]
async fn large_bodies_stream_through_and_the_proxy_limit_holds() {
    let Setup {
        app,
        upstream,
        session,
        ..
    } = setup(&[("KORYPHAIOS_PROXY_MAX_BODY_BYTES", "6000000")]).await;
    // 5 MB, chunked (no Content-Length): far above the API's 10 KB limit.
    let chunks = futures_util::stream::iter(
        (0..80).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 62_500]))),
    );
    let response = app
        .client
        .post(app.url("/api/v1/proxy/openai/files"))
        .bearer_auth(&session.access)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["bytes"], 5_000_000);
    // With a Content-Length.
    let response = app
        .client
        .post(app.url("/api/v1/proxy/openai/files"))
        .bearer_auth(&session.access)
        .body(vec![b'y'; 5_000_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.last().body_bytes, 5_000_000);
    // Declared over the limit: refused before anything is sent.
    let before = upstream.count();
    let refused = app
        .client
        .post(app.url("/api/v1/proxy/openai/files"))
        .bearer_auth(&session.access)
        .body(vec![b'z'; 6_000_001])
        .send()
        .await;
    // The answer comes before the body is read; the client may still be writing it (a reset).
    if let Ok(refused) = refused {
        assert_error(refused, 413, "payload_too_large").await;
    }
    assert_eq!(upstream.count(), before);
    // Chunked over the limit: cut while streaming.
    let chunks = futures_util::stream::iter(
        (0..112).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 62_500]))),
    );
    let refused = app
        .client
        .post(app.url("/api/v1/proxy/openai/files"))
        .bearer_auth(&session.access)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_error(refused, 413, "payload_too_large").await;
}

#[tokio::test]
async fn our_own_failures_are_502_and_504_envelopes_and_provider_errors_pass_through() {
    let Setup { app, session, .. } = setup(&[]).await;
    app.create_credential(&session.access, "groq", "gsk-test")
        .await;
    let down = app
        .get_authed("/api/v1/proxy/groq/models", &session.access)
        .await;
    assert_error(down, 502, "upstream_unavailable").await;
    let started = Instant::now();
    let slow = app
        .get_authed("/api/v1/proxy/openai/slow", &session.access)
        .await;
    assert_error(slow, 504, "upstream_timeout").await;
    assert!(started.elapsed() < Duration::from_millis(2500));
    // The provider's own 401, unchanged but for the key it quoted.
    let response = app
        .post_authed("/api/v1/proxy/openai/leak", &session.access, json!({}))
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-provider"], "yes");
    assert_eq!(response.headers()["content-type"], "text/plain");
    let text = response.text().await.unwrap();
    assert!(!text.contains(OPENAI_KEY), "{text}");
    assert_eq!(
        text,
        format!(
            "Incorrect API key provided: {}. Check your key.",
            "*".repeat(OPENAI_KEY.len())
        )
    );
}

#[tokio::test]
async fn answers_are_asked_uncompressed_and_an_encoded_error_is_not_passed_on() {
    let Setup {
        app,
        upstream,
        session,
        openai,
    } = setup(&[]).await;
    let response = app
        .client
        .post(app.url("/api/v1/proxy/openai/gzip-leak"))
        .bearer_auth(&session.access)
        .header("accept-encoding", "gzip, br")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(upstream.last().headers["accept-encoding"], "identity");
    assert!(response.headers().get("content-encoding").is_none());
    let body = assert_error(response, 502, "upstream_unavailable").await;
    assert!(!body.to_string().contains(OPENAI_KEY), "{body}");
    // Audited as our failure.
    let failure = credential_use(&app, &session.access, &openai).await;
    assert_eq!(failure["success"], false, "{failure}");
    assert!(
        failure.to_string().contains("upstream_unavailable"),
        "{failure}"
    );
}

#[tokio::test]
async fn paths_that_could_leave_the_base_url_are_refused() {
    let Setup {
        app,
        upstream,
        session,
        ..
    } = setup(&[]).await;
    let key = key_with(&app, &session.access, json!(["proxy:*"])).await;
    for path in [
        "/api/v1/proxy/openai/../../admin",
        "/api/v1/proxy/openai/models/../../../x",
        "/api/v1/proxy/openai/%2e%2e/x",
        "/api/v1/proxy/openai/%2E%2E%2Fx",
        "/api/v1/proxy/openai/.%2e/x",
        "/api/v1/proxy/openai/https://evil.example/x",
        "/api/v1/proxy/openai/http:evil.example",
        "/api/v1/proxy/openai//evil.example/x",
        "/api/v1/proxy/openai/a\\..\\b",
        "/api/v1/proxy/openai/a%5c..%5cb",
        "/api/v1/proxy/openai/a%2f..%2fb",
    ] {
        let (status, answer) = raw_get(&app, path, &key).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(answer.contains("\"field\":\"path\""), "{path}: {answer}");
    }
    assert_eq!(upstream.count(), 0, "nothing reached the provider");
    // Only the provider's base URL is ever called, whatever the path.
    let (status, _) = raw_get(&app, "/api/v1/proxy/openai/a@evil.example/x", &key).await;
    assert_eq!(status, 200);
    assert!(upstream.last().uri.starts_with("/v1/a@evil.example"));
}

#[tokio::test]
async fn callers_need_authentication_a_known_provider_and_their_own_credential() {
    let Setup {
        app,
        upstream,
        session,
        openai,
    } = setup(&[]).await;
    // No, or a wrong, key.
    let none = app
        .request(Method::GET, "/api/v1/proxy/openai/models", None, None)
        .await;
    assert_error(none, 401, "unauthenticated").await;
    let wrong = app
        .with_api_key(
            Method::GET,
            "/api/v1/proxy/openai/models",
            "kor_notakey",
            None,
        )
        .await;
    assert_eq!(wrong.status(), 401);
    // Unknown providers, and known ones that are not proxied.
    for path in [
        "/api/v1/proxy/nope/models",
        "/api/v1/proxy/bedrock/models",
        "/api/v1/proxy/OPENAI/models",
        "/api/v1/proxy/openai",
    ] {
        let response = app.get_authed(path, &session.access).await;
        assert_error(response, 404, "not_found").await;
    }
    // Bob has no OpenAI credential, and cannot name Ada's.
    let bob = app.user("bob").await;
    let response = app
        .get_authed("/api/v1/proxy/openai/models", &bob.access)
        .await;
    assert_error(response, 404, "not_found").await;
    let response = app
        .client
        .get(app.url("/api/v1/proxy/openai/models"))
        .bearer_auth(&bob.access)
        .header("x-koryphaios-credential", &openai)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
    // Ada may name hers, but not for another provider, and not with a malformed id.
    let response = app
        .client
        .get(app.url("/api/v1/proxy/openai/models"))
        .bearer_auth(&session.access)
        .header("x-koryphaios-credential", &openai)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .client
        .get(app.url("/api/v1/proxy/anthropic/models"))
        .bearer_auth(&session.access)
        .header("x-koryphaios-credential", &openai)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
    let response = app
        .client
        .get(app.url("/api/v1/proxy/openai/models"))
        .bearer_auth(&session.access)
        .header("x-koryphaios-credential", "cred_nope")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid_id").await;
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn a_proxy_scope_allows_use_but_not_possession() {
    let Setup {
        app,
        upstream,
        session,
        openai,
    } = setup(&[]).await;
    let agent = key_with(&app, &session.access, json!(["proxy:openai"])).await;
    let response = app
        .with_api_key(Method::GET, "/api/v1/proxy/openai/models", &agent, None)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        upstream.last().headers["authorization"],
        format!("Bearer {OPENAI_KEY}")
    );
    let reveal = app
        .with_api_key(
            Method::POST,
            &format!("/api/v1/credentials/{openai}/reveal"),
            &agent,
            None,
        )
        .await;
    assert_error(reveal, 403, "insufficient_scope").await;
    // Another provider is not covered.
    let response = app
        .with_api_key(Method::GET, "/api/v1/proxy/anthropic/models", &agent, None)
        .await;
    assert_error(response, 403, "insufficient_scope").await;
    // Reveal implies use.
    let revealer = key_with(&app, &session.access, json!(["provider:anthropic"])).await;
    let response = app
        .with_api_key(
            Method::GET,
            "/api/v1/proxy/anthropic/models",
            &revealer,
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    // `read` alone is not use.
    let reader = key_with(&app, &session.access, json!(["read"])).await;
    let response = app
        .with_api_key(Method::GET, "/api/v1/proxy/openai/models", &reader, None)
        .await;
    assert_error(response, 403, "insufficient_scope").await;
}

#[tokio::test]
async fn each_call_is_audited_without_secrets_and_marks_the_credential_used() {
    let Setup {
        app,
        session,
        openai,
        ..
    } = setup(&[]).await;
    let agent = key_with(&app, &session.access, json!(["proxy:openai"])).await;
    let response = app
        .client
        .post(app.url("/api/v1/proxy/openai/chat/completions?api-version=1&key=hidden"))
        .header("x-api-key", &agent)
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = response.bytes().await.unwrap().len();
    // The record is written once the response is over, off the caller's path: poll briefly.
    let mut record = Value::Null;
    for _ in 0..50 {
        let trail: Value = app
            .get_authed(
                &format!("/api/v1/credentials/{openai}/audit"),
                &session.access,
            )
            .await
            .json()
            .await
            .unwrap();
        if let Some(found) = trail["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["action"] == "credential_use")
        {
            record = found.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        record["action"], "credential_use",
        "no credential_use record"
    );
    let text = record.to_string();
    for secret in [OPENAI_KEY, agent.as_str(), "hidden"] {
        assert!(!text.contains(secret), "{text}");
    }
    let metadata = &record["metadata"];
    assert_eq!(metadata["provider"], "openai");
    assert_eq!(metadata["method"], "POST");
    assert_eq!(metadata["path"], "/chat/completions?api-version&key");
    assert_eq!(metadata["model"], "gpt-4o-mini");
    assert_eq!(metadata["upstreamStatus"], 200);
    assert_eq!(metadata["bytesReceived"], sent);
    assert!(metadata["bytesSent"].as_u64().unwrap() > 0);
    assert!(metadata["durationMs"].is_u64());
    let credential: Value = app
        .get_authed(&format!("/api/v1/credentials/{openai}"), &session.access)
        .await
        .json()
        .await
        .unwrap();
    assert!(credential["lastUsedAt"].is_string(), "{credential}");
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("proxy_requests_total{provider=\"openai\",status=\"2xx\"}"),
        "proxy_requests_total missing"
    );
    assert!(metrics.contains("proxy_upstream_duration_seconds_bucket{provider=\"openai\""));
    assert!(!metrics.contains(OPENAI_KEY));
}

#[tokio::test]
async fn proxied_calls_count_against_the_callers_rate_limit() {
    let Setup { app, session, .. } = setup(&[
        ("KORYPHAIOS_RATE_LIMIT_ENABLED", "true"),
        ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "100"),
    ])
    .await;
    let issued = app
        .create_key(
            &session.access,
            json!({"name": "free", "scopes": ["proxy:openai"], "rateLimitTier": "free"}),
        )
        .await;
    let key = issued["key"].as_str().unwrap();
    let mut last = None;
    for _ in 0..61 {
        let response = app
            .with_api_key(Method::GET, "/api/v1/proxy/openai/models", key, None)
            .await;
        last = Some(response.status().as_u16());
        if last == Some(429) {
            break;
        }
        assert_eq!(response.status(), 200);
        assert!(response.headers().contains_key("x-ratelimit-remaining"));
    }
    assert_eq!(last, Some(429));
}

#[tokio::test]
async fn the_newest_active_credential_is_used_unless_one_is_named() {
    let Setup {
        app,
        upstream,
        session,
        openai,
    } = setup(&[]).await;
    let agent = key_with(&app, &session.access, json!(["proxy:openai"])).await;
    let bearer = || upstream.last().headers["authorization"].clone();
    app.create_credential(&session.access, "openai", "sk-newer-0123456789")
        .await;
    let expires = (app.clock_now() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let response = app
        .post_authed(
            "/api/v1/credentials",
            &session.access,
            json!({"provider": "openai", "credential": "sk-expiring-0123456789", "expiresAt": expires}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let call = |header: Option<&str>| {
        let mut request = app
            .client
            .get(app.url("/api/v1/proxy/openai/models"))
            .header("x-api-key", &agent);
        if let Some(id) = header {
            request = request.header("x-koryphaios-credential", id);
        }
        request.send()
    };
    assert_eq!(call(None).await.unwrap().status(), 200);
    assert_eq!(bearer(), "Bearer sk-expiring-0123456789");
    assert_eq!(call(Some(&openai)).await.unwrap().status(), 200);
    assert_eq!(bearer(), format!("Bearer {OPENAI_KEY}"));
    // Once the newest has expired, the one before it.
    app.clock.advance(time::Duration::hours(2));
    assert_eq!(call(None).await.unwrap().status(), 200);
    assert_eq!(bearer(), "Bearer sk-newer-0123456789");
}

#[tokio::test]
async fn calls_in_flight_are_capped_per_user_until_their_bodies_end() {
    let Setup { app, session, .. } =
        setup(&[("KORYPHAIOS_PROXY_MAX_CONCURRENT_PER_USER", "2")]).await;
    // Two streams open (five events over 800 ms each): their heads have arrived, bodies not.
    let first = app
        .get_authed("/api/v1/proxy/openai/sse", &session.access)
        .await;
    let second = app
        .get_authed("/api/v1/proxy/openai/sse", &session.access)
        .await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = app
        .get_authed("/api/v1/proxy/openai/sse", &session.access)
        .await;
    assert_eq!(third.headers()["retry-after"], "1");
    assert_error(third, 429, "too_many_concurrent_calls").await;
    // Another user's calls are not counted against Ada's (Bob has no credential: 404, not 429).
    let bob = app.user("bob").await;
    let response = app
        .get_authed("/api/v1/proxy/openai/sse", &bob.access)
        .await;
    assert_error(response, 404, "not_found").await;
    // Once both streams are over, Ada may call again.
    assert_eq!(first.bytes().await.unwrap().len(), 5 * 15);
    assert_eq!(second.bytes().await.unwrap().len(), 5 * 15);
    let mut status = 0;
    for _ in 0..40 {
        let response = app
            .get_authed("/api/v1/proxy/openai/models", &session.access)
            .await;
        status = response.status().as_u16();
        if status != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_stream_longer_than_the_maximum_duration_is_cut_and_audited() {
    let Setup {
        app,
        session,
        openai,
        ..
    } = setup(&[("KORYPHAIOS_PROXY_MAX_DURATION_SECS", "1")]).await;
    let started = Instant::now();
    let mut response = app
        .get_authed("/api/v1/proxy/openai/forever", &session.access)
        .await;
    assert_eq!(response.status(), 200);
    let mut events = 0;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), response.chunk()).await {
            Err(_) => panic!("the stream was not cut after {:?}", started.elapsed()),
            Ok(Ok(Some(_))) => events += 1,
            // Cut, not ended cleanly: the caller can tell the answer is incomplete.
            Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(None)) => panic!("the stream ended as if complete"),
        }
    };
    assert!(events >= 3, "{events} events");
    assert!(
        ended >= Duration::from_millis(900) && ended < Duration::from_millis(2500),
        "cut after {ended:?}"
    );
    let record = credential_use(&app, &session.access, &openai).await;
    assert_eq!(record["success"], false, "{record}");
    assert!(record.to_string().contains("max_duration"), "{record}");
    assert_eq!(record["metadata"]["upstreamStatus"], 200);
}

#[tokio::test]
async fn a_caller_hanging_up_before_the_answer_is_client_closed_not_an_upstream_failure() {
    let Setup {
        app,
        upstream,
        session,
        openai,
    } = setup(&[]).await;
    // The upstream answers after 3 s, the proxy would give up after 1 s: the caller leaves first.
    let gone = app
        .client
        .get(app.url("/api/v1/proxy/openai/slow"))
        .bearer_auth(&session.access)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.is_err());
    assert_eq!(upstream.count(), 1);
    let record = credential_use(&app, &session.access, &openai).await;
    assert_eq!(record["success"], false, "{record}");
    let text = record.to_string();
    assert!(text.contains("client_closed"), "{text}");
    assert!(!text.contains("upstream_unavailable"), "{text}");
    assert_eq!(record["metadata"]["upstreamStatus"], Value::Null);
}

#[tokio::test]
async fn a_graceful_shutdown_writes_the_last_calls_records_before_closing_the_store() {
    let Setup {
        app,
        session,
        openai,
        ..
    } = setup(&[]).await;
    let calls = futures_util::future::join_all((0..12).map(|_| async {
        let response = app
            .get_authed("/api/v1/proxy/openai/models", &session.access)
            .await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }));
    calls.await;
    // Stopped at once: the records are still being written by their spawned tasks.
    let data_dir = app.stop().await;
    let restarted = TestApp::spawn_in(data_dir, &[]).await;
    let trail: Value = restarted
        .get_authed(
            &format!("/api/v1/credentials/{openai}/audit?limit=100"),
            &session.access,
        )
        .await
        .json()
        .await
        .unwrap();
    let uses = trail["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "credential_use")
        .count();
    assert_eq!(uses, 12, "credential_use records after the restart");
}

#[tokio::test]
async fn an_agent_token_calls_through_the_proxy_limited_to_its_credentials_with_its_run_id() {
    let Setup {
        app,
        upstream,
        session,
        openai,
    } = setup(&[]).await;
    let newer = app
        .create_credential(&session.access, "openai", "sk-newer-0123456789")
        .await;
    // A token limited to the older credential uses it even unnamed, never the newer one.
    let issued: Value = app
        .post_authed(
            "/api/v1/tokens",
            &session.access,
            json!({"ttlSeconds": 300, "scopes": ["proxy:openai"], "credentialIds": [openai], "runId": "agent-run-9"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let token = issued["token"].as_str().unwrap().to_owned();
    let call = |named: Option<&str>| {
        let mut request = app
            .client
            .post(app.url("/api/v1/proxy/openai/chat/completions"))
            .bearer_auth(&token)
            .json(&json!({"model": "gpt-4o-mini", "messages": []}));
        if let Some(id) = named {
            request = request.header("x-koryphaios-credential", id);
        }
        request.send()
    };
    assert_eq!(call(None).await.unwrap().status(), 200);
    assert_eq!(
        upstream.last().headers["authorization"],
        format!("Bearer {OPENAI_KEY}")
    );
    assert!(
        upstream.last().headers.get("x-api-key").is_none()
            && !format!("{:?}", upstream.last().headers).contains(&token),
        "the agent's token never reaches the provider"
    );
    let refused = call(Some(&newer)).await.unwrap();
    assert_error(refused, 403, "credential_not_allowed").await;
    // Possession is still refused: the token may use the key, not reveal it.
    let reveal = app
        .request(
            Method::POST,
            &format!("/api/v1/credentials/{openai}/reveal"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(reveal.status(), 403);
    let record = credential_use(&app, &session.access, &openai).await;
    assert_eq!(record["metadata"]["runId"], "agent-run-9", "{record}");
    assert_eq!(
        record["actor"],
        format!("token:{}", issued["id"].as_str().unwrap())
    );
    assert!(!record.to_string().contains(&token));
}

#[tokio::test]
async fn request_ids_stay_on_their_side_and_the_providers_is_kept() {
    let Setup {
        app,
        upstream,
        session,
        ..
    } = setup(&[]).await;
    let agent = key_with(&app, &session.access, json!(["proxy:openai"])).await;
    let response = app
        .client
        .get(app.url("/api/v1/proxy/openai/models"))
        .header("x-api-key", &agent)
        .header("x-request-id", "caller-chosen-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "caller-chosen-1");
    assert_eq!(
        response.headers()["x-upstream-request-id"],
        "provider-req-1",
        "the provider's request id is what its support asks for"
    );
    assert!(upstream.last().headers.get("x-request-id").is_none());
}
