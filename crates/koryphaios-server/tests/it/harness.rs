//! `TestApp`: a real instance on port 0 with its own data directory, a manual clock and cheap
//! password hashing, driven over real HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use koryphaios_core::clock::ManualClock;
use koryphaios_core::users::PasswordHasher;
use koryphaios_server::{Application, Components, Config};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A password that satisfies the policy.
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug)]
pub struct TestApp {
    pub base: String,
    /// The separate metrics listener, when `KORYPHAIOS_METRICS_ADDR` is set.
    pub metrics_base: Option<String>,
    /// The PostgreSQL database this instance uses, when the suite runs on PostgreSQL.
    pub database_url: Option<String>,
    pub client: reqwest::Client,
    pub data_dir: Arc<TempDir>,
    pub clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The tokens of a logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub user_id: String,
}

impl TestApp {
    /// A fresh instance with registration open.
    pub async fn spawn() -> Self {
        Self::spawn_with(&[("KORYPHAIOS_ALLOW_REGISTRATION", "true")]).await
    }

    /// A fresh instance with extra settings.
    pub async fn spawn_with(vars: &[(&str, &str)]) -> Self {
        Self::spawn_in(Arc::new(tempfile::tempdir().expect("temp dir")), vars).await
    }

    /// An instance on an existing data directory (a restart).
    pub async fn spawn_in(data_dir: Arc<TempDir>, vars: &[(&str, &str)]) -> Self {
        Self::spawn_at(data_dir, vars, time::OffsetDateTime::now_utc()).await
    }

    /// An instance whose manual clock starts at `start`.
    pub async fn spawn_at(
        data_dir: Arc<TempDir>,
        vars: &[(&str, &str)],
        start: time::OffsetDateTime,
    ) -> Self {
        Self::spawn_full(data_dir, vars, start, None).await
    }

    /// An instance whose root key provider is `root` (to make it unreachable).
    pub async fn spawn_with_root(
        vars: &[(&str, &str)],
        root: Arc<dyn koryphaios_core::envelope::KeyProvider>,
    ) -> Self {
        let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::spawn_full(data_dir, vars, time::OffsetDateTime::now_utc(), Some(root)).await
    }

    async fn spawn_full(
        data_dir: Arc<TempDir>,
        vars: &[(&str, &str)],
        start: time::OffsetDateTime,
        root_kms: Option<Arc<dyn koryphaios_core::envelope::KeyProvider>>,
    ) -> Self {
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        map.insert(
            "KORYPHAIOS_DATA_DIR".into(),
            data_dir.path().join("data").display().to_string(),
        );
        map.insert("KORYPHAIOS_PORT".into(), "0".into());
        if on_postgres() && !map.contains_key("KORYPHAIOS_DATABASE_URL") {
            map.insert(
                "KORYPHAIOS_DATABASE_URL".into(),
                postgres_database_for(&data_dir).await,
            );
            map.insert("KORYPHAIOS_DATABASE_MAX_CONNECTIONS".into(), "8".into());
        }
        let database_url = map
            .get("KORYPHAIOS_DATABASE_URL")
            .filter(|url| url.starts_with("postgres"))
            .cloned();
        // Most tests make many requests from one IP; the rate-limit tests switch limiting on.
        map.entry("KORYPHAIOS_RATE_LIMIT_ENABLED".into())
            .or_insert_with(|| "false".into());
        // Tests read counters right after the events they count; `metrics` tests the sharing.
        map.entry("KORYPHAIOS_METRICS_MAX_AGE_MS".into())
            .or_insert_with(|| "0".into());
        let config = Config::from_lookup(|name| map.get(name).cloned()).expect("test config");
        let clock = Arc::new(ManualClock::new(start));
        let components = Components {
            clock: clock.clone(),
            password_hasher: PasswordHasher::insecure_fast_for_tests(),
            root_kms,
        };
        let app = Application::build_with(&config, components)
            .await
            .expect("build app");
        let base = format!("http://{}", app.local_addr().expect("address"));
        let metrics_base = app
            .metrics_addr()
            .expect("metrics address")
            .map(|address| format!("http://{address}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            metrics_base,
            database_url,
            client: reqwest::Client::new(),
            data_dir,
            clock,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> Arc<TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
        Arc::clone(&self.data_dir)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.request(Method::POST, path, None, Some(body)).await
    }

    pub async fn get_authed(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post_authed(&self, path: &str, token: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    /// Stores a credential and returns its id.
    pub async fn create_credential(&self, token: &str, provider: &str, secret: &str) -> String {
        let response = self
            .post_authed(
                "/api/v1/credentials",
                token,
                json!({"provider": provider, "credential": secret}),
            )
            .await;
        assert_eq!(response.status(), 201, "create credential");
        let body: Value = response.json().await.expect("create body");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Issues an API key with `body` and returns the whole response.
    pub async fn create_key(&self, token: &str, body: Value) -> Value {
        let response = self.post_authed("/api/v1/keys", token, body).await;
        assert_eq!(response.status(), 201, "create key");
        response.json().await.expect("key body")
    }

    /// Sends a request authenticated with `X-API-Key`.
    pub async fn with_api_key(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .header("x-api-key", key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    /// Reveals a credential's secret.
    pub async fn reveal(&self, token: &str, id: &str) -> String {
        let response = self
            .request(
                Method::POST,
                &format!("/api/v1/credentials/{id}/reveal"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(response.status(), 200, "reveal {id}");
        let body: Value = response.json().await.expect("reveal body");
        body["credential"].as_str().expect("credential").to_owned()
    }

    /// The instance's (manual) clock reading.
    pub fn clock_now(&self) -> time::OffsetDateTime {
        use koryphaios_core::Clock as _;
        self.clock.now()
    }

    /// The environment a `koryphaios` CLI run needs to work on this instance's data.
    pub fn cli_env(&self) -> CliEnv {
        CliEnv {
            data_dir: self.data_path(),
            database_url: self.database_url.clone(),
        }
    }

    /// Runs SQL directly on this instance's database (`sqlite` or `postgres` dialect), as an
    /// attacker or operator with database access would.
    pub async fn execute_sql(&self, sqlite: &'static str, postgres: &'static str) {
        use sqlx::Connection as _;
        match &self.database_url {
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::raw_sql(postgres)
                    .execute(&mut conn)
                    .await
                    .expect("sql");
            }
            None => {
                let path = self.data_path().join("koryphaios.db");
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
                        .await
                        .expect("connect");
                sqlx::raw_sql(sqlite).execute(&mut conn).await.expect("sql");
            }
        }
    }

    /// The data directory of this instance.
    pub fn data_path(&self) -> std::path::PathBuf {
        self.data_dir.path().join("data")
    }

    pub async fn register(&self, username: &str) -> Value {
        let response = self
            .post(
                "/api/auth/register",
                json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(response.status(), 201, "register {username}");
        response.json().await.expect("register body")
    }

    pub async fn login(&self, username: &str) -> Session {
        let response = self
            .post(
                "/api/auth/login",
                json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(response.status(), 200, "login {username}");
        session_from(response.json().await.expect("login body"))
    }

    /// Registers and logs in.
    pub async fn user(&self, username: &str) -> Session {
        self.register(username).await;
        self.login(username).await
    }
}

/// Whether the suite runs on PostgreSQL (`KORYPHAIOS_TEST_DATABASE=postgres`, set by
/// `scripts/test.sh` for its second pass) instead of the embedded SQLite.
pub fn on_postgres() -> bool {
    std::env::var("KORYPHAIOS_TEST_DATABASE").as_deref() == Ok("postgres")
}

/// The PostgreSQL database of a data directory: created on first use and remembered in the
/// directory, so a restart on the same directory finds the same data.
async fn postgres_database_for(data_dir: &TempDir) -> String {
    let marker = data_dir.path().join("test-database-url");
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return url;
    }
    let url = koryphaios_store_postgres::testing::fresh_database_url().await;
    std::fs::write(&marker, &url).expect("remember the test database");
    url
}

/// What a CLI run needs to find an instance's data.
#[derive(Debug, Clone)]
pub struct CliEnv {
    pub data_dir: std::path::PathBuf,
    pub database_url: Option<String>,
}

impl CliEnv {
    /// Runs `koryphaios <args>` with only this environment.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_koryphaios"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KORYPHAIOS_DATA_DIR", &self.data_dir);
        if let Some(url) = &self.database_url {
            command.env("KORYPHAIOS_DATABASE_URL", url);
        }
        command.output().expect("run the koryphaios binary")
    }

    /// Runs `koryphaios <args>`, asserts it succeeded, and returns its standard output.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

pub fn session_from(body: Value) -> Session {
    Session {
        access: body["accessToken"]
            .as_str()
            .expect("accessToken")
            .to_owned(),
        refresh: body["refreshToken"]
            .as_str()
            .expect("refreshToken")
            .to_owned(),
        user_id: body["user"]["id"].as_str().expect("user id").to_owned(),
    }
}

/// Asserts the error envelope: status, code, and a `requestId` equal to the header.
pub async fn assert_error(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status for expected {code}"
    );
    assert_security_headers(response.headers());
    let header_id = response
        .headers()
        .get("x-request-id")
        .expect("x-request-id header")
        .to_str()
        .expect("ascii id")
        .to_owned();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body: Value = response.json().await.expect("json error body");
    assert_eq!(body["code"], code, "body: {body}");
    assert_eq!(body["requestId"], header_id.as_str());
    assert!(body["error"].as_str().is_some_and(|s| !s.is_empty()));
    body
}

pub fn assert_security_headers(headers: &reqwest::header::HeaderMap) {
    let expected = [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("x-xss-protection", "1; mode=block"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        (
            "permissions-policy",
            "geolocation=(), microphone=(), camera=()",
        ),
        ("cache-control", "no-store"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ];
    for (name, value) in expected {
        assert_eq!(
            headers.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "header {name}"
        );
    }
}

/// A private `redis-server` on a free port, so tests can stop and restart it without touching
/// the machine's shared Redis. Killed on drop.
#[derive(Debug)]
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut redis = Self { port, child: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/services.sh)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
