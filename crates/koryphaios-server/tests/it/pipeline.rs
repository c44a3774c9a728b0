//! The HTTP pipeline: health, request ids, security headers, the error envelope for every kind
//! of error, the body limit, CORS.

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{TestApp, assert_error, assert_security_headers};

/// Sends raw bytes and returns the status and the rest of the response as text.
async fn raw_http(app: &TestApp, request: &[u8]) -> (u16, String) {
    let address = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut response),
    )
    .await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, text)
}

#[tokio::test]
async fn health_reports_version_and_timestamp() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_security_headers(response.headers());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ok"], true);
    assert_eq!(body["data"]["version"], env!("CARGO_PKG_VERSION"));
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let timestamp = body["data"]["timestamp"].as_i64().unwrap();
    assert!((timestamp - now_ms).abs() < 60_000);
}

#[tokio::test]
async fn readiness_reports_the_database_up() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ok"], true);
    assert_eq!(body["data"]["components"]["database"]["status"], "up");
    let backend = if crate::harness::on_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(body["data"]["components"]["database"]["backend"], backend);
}

#[tokio::test]
async fn a_sane_request_id_is_echoed_and_an_insane_one_replaced() {
    let app = TestApp::spawn().await;
    let kept = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "trace-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-42.a_b");
    let replaced = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "bad id;<script>")
        .send()
        .await
        .unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "{id} should be a fresh uuid"
    );
    let long = "a".repeat(129);
    let replaced = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    assert_ne!(replaced.headers()["x-request-id"], long.as_str());
    // The echoed id is the one in the error body too.
    let error = app
        .client
        .get(app.url("/nope"))
        .header("x-request-id", "mine-1")
        .send()
        .await
        .unwrap();
    let body = assert_error(error, 404, "not_found").await;
    assert_eq!(body["requestId"], "mine-1");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_the_envelope() {
    let app = TestApp::spawn().await;
    assert_error(
        app.client
            .get(app.url("/api/v1/nothing-here"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.client.delete(app.url("/health")).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    assert_error(
        app.client
            .get(app.url("/api/auth/login"))
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn malformed_json_and_wrong_content_type_get_the_envelope() {
    let app = TestApp::spawn().await;
    let url = app.url("/api/auth/login");
    let malformed = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .unwrap();
    assert_error(malformed, 400, "malformed_json").await;
    let not_json = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_error(not_json, 415, "unsupported_media_type").await;
    let no_type = app.client.post(&url).body("{}").send().await.unwrap();
    assert_error(no_type, 415, "unsupported_media_type").await;
    let array = app
        .client
        .post(&url)
        .json(&json!([1, 2]))
        .send()
        .await
        .unwrap();
    assert_error(array, 400, "validation_failed").await;
}

#[tokio::test]
async fn bodies_over_10_kb_are_refused_with_or_without_content_length() {
    let app = TestApp::spawn().await;
    let big = format!(
        "{{\"username\":\"ada\",\"password\":\"{}\"}}",
        "x".repeat(11 * 1024)
    );
    let declared = app
        .client
        .post(app.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_error(declared, 413, "payload_too_large").await;

    // Chunked, no Content-Length: judged on the bytes received.
    let chunk = "a".repeat(4096);
    let mut request = b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw_http(&app, &request).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("\"code\":\"payload_too_large\""), "{text}");

    // Every method: a GET whose handler ignores bodies still has its body judged.
    let mut get = b"GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        get.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
    }
    get.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw_http(&app, &get).await;
    assert_eq!(status, 413, "{text}");
    let declared_get = app
        .client
        .get(app.url("/health"))
        .body(vec![b'a'; 20 * 1024])
        .send()
        .await
        .unwrap();
    assert_error(declared_get, 413, "payload_too_large").await;

    // Just under the limit is read and judged on its content instead.
    let fits = format!(
        "{{\"username\":\"ada\",\"password\":\"{}\"}}",
        "x".repeat(9 * 1024)
    );
    let response = app
        .client
        .post(app.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(fits)
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid_credentials").await;
}

#[tokio::test]
async fn hsts_is_sent_only_when_configured() {
    let plain = TestApp::spawn().await;
    let response = plain.client.get(plain.url("/health")).send().await.unwrap();
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
    let strict = TestApp::spawn_with(&[("KORYPHAIOS_HSTS_MAX_AGE", "31536000")]).await;
    let response = strict
        .client
        .get(strict.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app = TestApp::spawn_with(&[("KORYPHAIOS_CORS_ORIGINS", "https://app.example")]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/api/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert!(allowed.status().is_success());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let foreign = preflight("https://evil.example").await.unwrap();
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert_error(foreign, 403, "cors_origin_denied").await;

    let simple = app
        .client
        .get(app.url("/health"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let exposed = simple.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for header in [
        "x-request-id",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "retry-after",
    ] {
        assert!(
            exposed.contains(header),
            "{header} should be exposed: {exposed}"
        );
    }
    let other = app
        .client
        .get(app.url("/health"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/health",
        "/health/ready",
        "/api/auth/login",
        "/api/auth/register",
        "/api/auth/me",
    ] {
        assert!(
            document["paths"].get(path).is_some(),
            "{path} missing from the document"
        );
    }
}
