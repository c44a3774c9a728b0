//! The hot paths, each repeated a given number of times, for counting their instructions under
//! `valgrind --tool=callgrind` (the budget test in `tests/it/hot_path_budgets.rs`).
//!
//! `hot_paths <path> <iterations>` sets the path up, runs it `iterations` times and exits. The
//! budget test runs each path twice with different counts and divides the difference in
//! instructions by the difference in iterations, so setup (building the application, migrating
//! the database, creating a user and a key) cancels out. Everything runs on one thread (a
//! current-thread runtime; SQLite's own worker threads aside) so that the count repeats.
//!
//! Paths:
//! - `health`: `GET /health` over a kept-alive TCP connection through the whole pipeline
//!   (connection layer, middleware, router), client included;
//! - `api_key_read`: `GET /api/auth/me` with an API key, the memory rate limiter on: what every
//!   authenticated request pays before its handler's own work;
//! - `authenticate`: `ApiKeyService::authenticate` of a cached key (parse, checksum, hash, cache);
//! - `token_authenticate`: `TokenService::authenticate` of a cached agent token with networks
//!   (the same steps, plus the network check): it should cost what a key does;
//! - `limiter`: the memory limiter deciding a request's three checks;
//! - `seal_open`: sealing and opening a 64-byte secret (AES-256-GCM with its context).
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "benchmark driver")]

use std::collections::HashMap;
use std::sync::Arc;

use koryphaios_core::api_keys::{ApiKeyService, NewApiKeyInput};
use koryphaios_core::audit::RequestContext;
use koryphaios_core::clock::SystemClock;
use koryphaios_core::envelope::{Dek, SecretContext, open_secret, seal_secret};
use koryphaios_core::ids::{CredentialId, UserId};
use koryphaios_core::ratelimit::{LimitCheck, MemoryLimiter};
use koryphaios_core::store::{AuditStore as _, SchemaMigrator as _, Store};
use koryphaios_core::testing::bench::{registered_principal, request_checks};
use koryphaios_core::tokens::{NewTokenInput, StoreUseCounter, TokenService};
use koryphaios_server::{Application, Components, Config};
use secrecy::ExposeSecret as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: hot_paths <path> <iterations>");
    let iterations: u64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("usage: hot_paths <path> <iterations>");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match path.as_str() {
            "health" => health(iterations).await,
            "api_key_read" => api_key_read(iterations).await,
            "authenticate" => authenticate(iterations, false).await,
            "token_authenticate" => authenticate(iterations, true).await,
            "limiter" => limiter(iterations),
            "seal_open" => seal_open(iterations),
            other => panic!("unknown path {other}"),
        }
    });
}

/// A started application on port 0, on SQLite in a temporary directory, with limits high enough
/// that every request is admitted (the decision is measured, not the refusal).
async fn start_app(dir: &tempfile::TempDir) -> String {
    let high = "10000000".to_owned();
    let vars: HashMap<&str, String> = HashMap::from([
        (
            "KORYPHAIOS_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("KORYPHAIOS_PORT", "0".to_owned()),
        ("KORYPHAIOS_ALLOW_REGISTRATION", "true".to_owned()),
        ("KORYPHAIOS_RATE_LIMIT_IP_PER_MINUTE", high.clone()),
        ("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", high.clone()),
        ("KORYPHAIOS_RATE_LIMIT_TIER_ENTERPRISE", high.clone()),
        (
            "KORYPHAIOS_RATE_LIMIT_SENSITIVE_ENTERPRISE",
            format!("{high}:{high}"),
        ),
    ]);
    let config = Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
    let components = Components {
        password_hasher: koryphaios_core::users::PasswordHasher::insecure_fast_for_tests(),
        ..Components::default()
    };
    let app = Application::build_with(&config, components).await.unwrap();
    let address = app.local_addr().unwrap().to_string();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    address
}

/// One request and its response on a kept-alive connection: (status, body). Kept cheap (no
/// lowercasing, no repeated scans) so that the count is the server's.
async fn exchange(stream: &mut TcpStream, buffer: &mut Vec<u8>, request: &[u8]) -> (u16, Vec<u8>) {
    stream.write_all(request).await.unwrap();
    buffer.clear();
    let mut scanned: usize = 0;
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer[scanned.saturating_sub(3)..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            break scanned.saturating_sub(3) + end + 4;
        }
        scanned = buffer.len();
    };
    let head = std::str::from_utf8(&buffer[..head_end]).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("responses carry a content length");
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..read]);
    }
    (status, buffer[head_end..head_end + length].to_vec())
}

fn json_request(method: &str, path: &str, auth: Option<&str>, body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    let auth = auth.map_or_else(String::new, |token| {
        format!("authorization: Bearer {token}\r\n")
    });
    format!(
        "{method} {path} HTTP/1.1\r\nhost: bench\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn field(body: &[u8], name: &str) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value[name].as_str().unwrap().to_owned()
}

async fn repeat(stream: &mut TcpStream, request: &[u8], iterations: u64) {
    let mut buffer = Vec::with_capacity(8192);
    for _ in 0..iterations {
        let (status, body) = exchange(stream, &mut buffer, request).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
}

async fn health(iterations: u64) {
    let dir = tempfile::tempdir().unwrap();
    let address = start_app(&dir).await;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    repeat(
        &mut stream,
        b"GET /health HTTP/1.1\r\nhost: bench\r\n\r\n",
        iterations,
    )
    .await;
}

async fn api_key_read(iterations: u64) {
    let dir = tempfile::tempdir().unwrap();
    let address = start_app(&dir).await;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let mut buffer = Vec::new();
    let login = serde_json::json!({"username": "bench", "password": "load test passphrase 1"});
    let (status, body) = exchange(
        &mut stream,
        &mut buffer,
        &json_request("POST", "/api/auth/register", None, &login),
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let (_, body) = exchange(
        &mut stream,
        &mut buffer,
        &json_request("POST", "/api/auth/login", None, &login),
    )
    .await;
    let token = field(&body, "accessToken");
    let key_input =
        serde_json::json!({"name": "bench", "scopes": ["read"], "rateLimitTier": "enterprise"});
    let (status, body) = exchange(
        &mut stream,
        &mut buffer,
        &json_request("POST", "/api/v1/keys", Some(&token), &key_input),
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let key = field(&body, "key");
    let request = format!("GET /api/auth/me HTTP/1.1\r\nhost: bench\r\nx-api-key: {key}\r\n\r\n");
    repeat(&mut stream, request.as_bytes(), iterations).await;
}

/// Authenticates a cached API key, or (`token`) an agent token minted by it, `iterations` times.
async fn authenticate(iterations: u64, token: bool) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = koryphaios_store_sqlite::open(
        &dir.path().join("bench.db"),
        &koryphaios_store_sqlite::SqliteSettings::default(),
    )
    .await
    .unwrap();
    sqlite.migrate_up().await.unwrap();
    sqlite
        .install_audit_key(Arc::new(koryphaios_core::testing::contract_audit_key()))
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let principal = registered_principal(&store, "bench").await;
    let service = ApiKeyService::new(Arc::clone(&store), Arc::new(SystemClock));
    let input = NewApiKeyInput {
        name: "bench".into(),
        ..NewApiKeyInput::default()
    };
    let (_, secret) = service
        .create(&principal, &RequestContext::default(), input)
        .await
        .unwrap();
    let key = secret.expose_secret().to_owned();
    let client = Some(std::net::IpAddr::from([10, 1, 2, 3]));
    if !token {
        for _ in 0..iterations {
            std::hint::black_box(service.authenticate(&key, client).await.unwrap());
        }
        return;
    }
    let caller = service.authenticate(&key, client).await.unwrap();
    let tokens = TokenService::new(
        Arc::clone(&store),
        Arc::new(SystemClock),
        Arc::new(StoreUseCounter(Arc::clone(&store))),
    );
    let input = NewTokenInput {
        ttl_seconds: 3600,
        allowed_cidrs: Some(vec!["10.0.0.0/8".into()]),
        run_id: Some("bench-run".into()),
        ..NewTokenInput::default()
    };
    let (_, secret) = tokens
        .create(&caller, &RequestContext::default(), input)
        .await
        .unwrap();
    let presented = secret.expose_secret().to_owned();
    for _ in 0..iterations {
        std::hint::black_box(
            tokens
                .authenticate(&presented, client, RequestContext::default)
                .await
                .unwrap(),
        );
    }
}

fn limiter(iterations: u64) {
    let memory = MemoryLimiter::new(Arc::new(SystemClock));
    // A fixed population, so the tables stop growing and each decision is a steady-state one.
    let population: Vec<Vec<LimitCheck>> = (0..100).map(request_checks).collect();
    let mut now = 1_800_000_000_000i64;
    for checks in &population {
        std::hint::black_box(memory.decide_at(checks, now));
    }
    for i in 0..iterations {
        now += 1;
        let index = usize::try_from(i % 100).unwrap();
        std::hint::black_box(memory.decide_at(&population[index], now));
    }
}

fn seal_open(iterations: u64) {
    let user = UserId::generate();
    let credential = CredentialId::generate();
    let context = SecretContext {
        user_id: &user,
        credential_id: &credential,
        version: 1,
        provider: "openai",
    };
    let secret = b"sk-proj-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL01234567";
    let dek = Dek::generate().unwrap();
    for _ in 0..iterations {
        let sealed = seal_secret(&dek, secret, &context).unwrap();
        std::hint::black_box(open_secret(&dek, &sealed, &context).unwrap());
    }
}
