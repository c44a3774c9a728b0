//! `KORYPHAIOS_KMS_PROVIDER=aws` end to end against the AWS KMS emulator (moto_server, started by
//! `scripts/services.sh`; `KORYPHAIOS_TEST_AWS_ENDPOINT`), through a TCP relay the test can cut:
//! the KMS going away after start changes nothing for requests; an instance started while it is
//! away is not ready (503) and becomes ready by itself when it returns.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::harness::{PASSWORD, session_from};

/// The emulator's endpoint, or `None` (with a note) when the variable is unset.
fn moto() -> Option<String> {
    let endpoint = std::env::var("KORYPHAIOS_TEST_AWS_ENDPOINT").ok();
    if endpoint.is_none() {
        eprintln!("KORYPHAIOS_TEST_AWS_ENDPOINT unset: skipping (scripts/test.sh sets it)");
    }
    endpoint
}

/// A TCP relay to the emulator that can be cut: when down, new connections are dropped at once
/// and open ones are closed, as if the KMS had gone away.
struct Relay {
    address: String,
    down: watch::Sender<bool>,
}

impl Relay {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (down, watcher) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut cut = watcher.clone();
                if *cut.borrow() {
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = cut.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Self { address, down }
    }

    fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

/// Creates a symmetric key in the emulator (its JSON API; moto does not check signatures).
async fn create_key(client: &Client, endpoint: &str) -> String {
    let created: Value = client
        .post(endpoint)
        .header("X-Amz-Target", "TrentService.CreateKey")
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("a key id")
        .to_owned()
}

fn instance(data_dir: &std::path::Path, relay: &Relay, key_id: &str, port: u16) -> Child {
    let log = std::fs::File::create(data_dir.with_file_name(format!("aws-{port}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_koryphaios"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KORYPHAIOS_DATA_DIR", data_dir)
        .env("KORYPHAIOS_PORT", port.to_string())
        .env("KORYPHAIOS_ALLOW_REGISTRATION", "true")
        .env("KORYPHAIOS_RATE_LIMIT_ENABLED", "false")
        .env("KORYPHAIOS_KMS_PROVIDER", "aws")
        .env("AWS_KMS_KEY_ID", key_id)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_KMS", format!("http://{}", relay.address))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn ready_status(client: &Client, base: &str) -> Option<u16> {
    let response = client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

async fn wait_for_ready(client: &Client, base: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ready_status(client, base).await == Some(200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} did not become ready within {within:?}");
}

async fn store_and_reveal(client: &Client, base: &str, token: &str, secret: &str) -> String {
    let created = client
        .post(format!("{base}/api/v1/credentials"))
        .bearer_auth(token)
        .json(&json!({"provider": "openai", "credential": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(reveal(client, base, token, &id).await, secret);
    id
}

async fn reveal(client: &Client, base: &str, token: &str, id: &str) -> String {
    let revealed: Value = client
        .post(format!("{base}/api/v1/credentials/{id}/reveal"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    revealed["credential"]
        .as_str()
        .expect("revealed")
        .to_owned()
}

#[tokio::test]
async fn with_aws_kms_requests_survive_an_outage_and_a_start_during_one_waits_for_it() {
    let Some(endpoint) = moto() else { return };
    let client = Client::new();
    let key_id = create_key(&client, &endpoint).await;
    let relay = Arc::new(Relay::start(endpoint.trim_start_matches("http://").to_owned()).await);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut first = instance(&data, &relay, &key_id, port);
    wait_for_ready(&client, &base, Duration::from_secs(30)).await;
    client
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"username": "ada", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let login = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": "ada", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let session = session_from(login.json().await.unwrap());
    let before = store_and_reveal(&client, &base, &session.access, "sk-before-outage").await;

    // The KMS goes away: creating and revealing never call it.
    relay.set_down(true);
    let during = store_and_reveal(&client, &base, &session.access, "sk-during-outage").await;
    assert_eq!(
        reveal(&client, &base, &session.access, &before).await,
        "sk-before-outage"
    );
    assert_eq!(ready_status(&client, &base).await, Some(200), "still ready");
    first.start_kill().unwrap();
    first.wait().await.unwrap();

    // Started while the KMS is away: listening, not ready, and ready by itself once it returns.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _second = instance(&data, &relay, &key_id, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready_status(&client, &base).await != Some(503) {
        assert!(
            Instant::now() < deadline,
            "the second instance never listened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ready_status(&client, &base).await, Some(503));
    let log = std::fs::read_to_string(data.with_file_name(format!("aws-{port}.log"))).unwrap();
    assert!(log.contains("key provider is unreachable"), "{log}");
    relay.set_down(false);
    wait_for_ready(&client, &base, Duration::from_secs(30)).await;
    assert_eq!(
        reveal(&client, &base, &session.access, &during).await,
        "sk-during-outage",
        "the session and the data survive the restart"
    );
}
