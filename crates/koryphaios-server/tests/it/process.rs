//! The real `koryphaios` binary as a process: embedded defaults, configuration errors, the
//! migrate CLI, logs without secrets, graceful shutdown.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::harness::PASSWORD;

const BINARY: &str = env!("CARGO_BIN_EXE_koryphaios");

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

fn command(cwd: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn wait_healthy(port: u16) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let response = client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await;
        if response.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the service did not become healthy on port {port}");
}

async fn terminate(child: Child) -> std::process::Output {
    let pid = child.id().expect("pid");
    // SIGTERM asks for a graceful shutdown.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits after SIGTERM")
        .expect("output")
}

#[tokio::test]
async fn serve_runs_on_embedded_defaults_and_stops_gracefully() {
    use std::os::unix::fs::PermissionsExt as _;
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = command(cwd.path())
        .arg("serve")
        .env("KORYPHAIOS_PORT", port.to_string())
        .spawn()
        .unwrap();
    wait_healthy(port).await;
    let body: Value = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ok"], true);
    let data = cwd.path().join(".koryphaios");
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for file in ["koryphaios.db", "kms/local.keyring"] {
        let mode = std::fs::metadata(data.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let output = terminate(child).await;
    assert!(
        output.status.success(),
        "exit: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_bad_setting_stops_the_start_naming_the_variable() {
    let cwd = tempfile::tempdir().unwrap();
    let output = command(cwd.path())
        .arg("serve")
        .env("KORYPHAIOS_PORT", "eighty")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KORYPHAIOS_PORT") && stderr.contains("0 to 65535"),
        "{stderr}"
    );
    assert!(
        !cwd.path().join(".koryphaios").exists(),
        "nothing is created for a refused start"
    );

    let output = command(cwd.path())
        .arg("serve")
        .env("KORYPHAIOS_JWT_SECRET", "short-but-secret")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KORYPHAIOS_JWT_SECRET") && !stderr.contains("short-but-secret"),
        "{stderr}"
    );
}

#[tokio::test]
async fn help_never_shows_secret_values() {
    let cwd = tempfile::tempdir().unwrap();
    let output = command(cwd.path())
        .arg("--help")
        .env(
            "KORYPHAIOS_JWT_SECRET",
            "a-secret-that-must-never-be-printed-anywhere",
        )
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("migrate") && !text.contains("a-secret-that-must-never"),
        "{text}"
    );
}

#[tokio::test]
async fn migrate_status_down_and_up_restore_the_schema() {
    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &'static [&'static str]| {
        let mut command = command(cwd.path());
        command.args(args);
        async move {
            let output = command.output().await.unwrap();
            assert!(
                output.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };
    let pending = run(&["migrate", "status"]).await;
    assert!(
        pending.contains("users_and_sessions") && pending.contains("pending"),
        "{pending}"
    );
    let up = run(&["migrate", "up"]).await;
    let expected = format!("applied {}", koryphaios_store_sqlite::MIGRATIONS.len());
    assert!(up.contains(&expected), "{up}");
    let applied = run(&["migrate", "status"]).await;
    assert!(!applied.contains("pending"), "{applied}");
    let down = run(&["migrate", "down"]).await;
    assert!(down.contains("reverted 1"), "{down}");
    assert!(run(&["migrate", "status"]).await.contains("pending"));
    run(&["migrate", "up"]).await;
    assert!(!run(&["migrate", "status"]).await.contains("pending"));
}

#[tokio::test]
async fn logs_carry_request_ids_and_never_secrets() {
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = command(cwd.path())
        .arg("serve")
        .env("KORYPHAIOS_PORT", port.to_string())
        .env("KORYPHAIOS_LOG_LEVEL", "trace")
        .env("KORYPHAIOS_LOG_FORMAT", "json")
        .spawn()
        .unwrap();
    wait_healthy(port).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let registered = client
        .post(url("/api/auth/register"))
        .json(&json!({"username": "ada", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let login: Value = client
        .post(url("/api/auth/login"))
        .header("x-request-id", "login-req-1")
        .json(&json!({"username": "ada", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = login["accessToken"].as_str().unwrap().to_owned();
    let refresh = login["refreshToken"].as_str().unwrap().to_owned();
    client
        .get(url("/api/auth/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    client
        .post(url("/api/auth/refresh"))
        .json(&json!({"refreshToken": refresh}))
        .send()
        .await
        .unwrap();
    client
        .post(url("/api/auth/login"))
        .json(&json!({"username": "ada", "password": "wrong-password-123"}))
        .send()
        .await
        .unwrap();
    let output = terminate(child).await;
    let logs = String::from_utf8_lossy(&output.stderr);
    let ring: Value = serde_json::from_slice(
        &std::fs::read(cwd.path().join(".koryphaios/kms/local.keyring")).unwrap(),
    )
    .unwrap();
    let master = ring["keys"][0]["key"].as_str().unwrap().to_owned();
    for leaked in [
        PASSWORD,
        "wrong-password-123",
        access.as_str(),
        refresh.as_str(),
        master.as_str(),
    ] {
        assert!(!logs.contains(leaked), "a secret leaked into the logs");
    }
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(!lines.is_empty(), "logs are JSON lines: {logs}");
    let login_lines: Vec<&Value> = lines
        .iter()
        .filter(|line| line["span"]["request_id"] == "login-req-1")
        .collect();
    assert!(
        login_lines
            .iter()
            .any(|line| line["message"] == "request served"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_stderr_nobody_reads_holds_up_no_request_and_loses_no_log_line() {
    const REQUESTS: usize = 2_000;
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = command(cwd.path())
        .arg("serve")
        .env("KORYPHAIOS_PORT", port.to_string())
        .env("KORYPHAIOS_LOG_LEVEL", "info")
        .env("KORYPHAIOS_LOG_FORMAT", "json")
        .env("KORYPHAIOS_RATE_LIMIT_ENABLED", "false")
        .spawn()
        .unwrap();
    wait_healthy(port).await;
    // Nobody reads the child's stderr until it exits: the pipe (64 KiB) is full after a few
    // hundred access log lines. Requests must be served all the same.
    let client = reqwest::Client::new();
    let served = tokio::time::timeout(Duration::from_secs(60), async {
        for n in 0..REQUESTS {
            let response = client
                .get(format!("http://127.0.0.1:{port}/health"))
                .header("x-request-id", format!("seq-{n}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    })
    .await;
    assert!(served.is_ok(), "requests stalled behind an unread stderr");
    let output = terminate(child).await;
    let logs = String::from_utf8_lossy(&output.stderr);
    let served_ids: Vec<String> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "request served")
        .filter_map(|line| line["span"]["request_id"].as_str().map(str::to_owned))
        .filter(|id| id.starts_with("seq-"))
        .collect();
    let expected: Vec<String> = (0..REQUESTS).map(|n| format!("seq-{n}")).collect();
    assert!(
        served_ids == expected,
        "every access log line, complete and in order: {} of {REQUESTS}",
        served_ids.len()
    );
}
