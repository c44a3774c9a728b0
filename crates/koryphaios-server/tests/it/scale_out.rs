//! Scale-out: two `koryphaios serve` processes on one PostgreSQL and one Redis behave as one
//! service. Keys work across instances, revocation reaches the other instance within 1 s, limits
//! are counted once, concurrent writes on both keep one verifying audit chain, both can start at
//! once on an empty database, and `kill -9` loses no acknowledged write. Each has its own data
//! directory (two hosts): the key ring is handed out as a file to one and as contents to the
//! other, and the signing keys and key-encryption keys come from the database.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::harness::{PASSWORD, PrivateRedis, session_from};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// How an instance is given the shared local key ring.
enum Keyring<'a> {
    File(&'a Path),
    Contents(&'a str),
}

/// One instance with its own data directory.
fn instance(
    data_dir: &Path,
    keyring: Keyring<'_>,
    database: &str,
    redis: &str,
    port: u16,
) -> Child {
    let log = std::fs::File::create(data_dir.with_file_name(format!("instance-{port}.log")))
        .expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_koryphaios"));
    command.env_clear();
    match keyring {
        Keyring::File(path) => command.env("KORYPHAIOS_KMS_LOCAL_KEYRING_FILE", path),
        Keyring::Contents(contents) => command.env("KORYPHAIOS_KMS_LOCAL_KEYRING", contents),
    };
    command
        .arg("serve")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KORYPHAIOS_DATA_DIR", data_dir)
        .env("KORYPHAIOS_DATABASE_URL", database)
        .env("KORYPHAIOS_REDIS_URL", redis)
        .env("KORYPHAIOS_PORT", port.to_string())
        .env("KORYPHAIOS_ALLOW_REGISTRATION", "true")
        .env("KORYPHAIOS_RATE_LIMIT_IP_PER_MINUTE", "100000")
        .env("KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", "1000")
        .env("KORYPHAIOS_RATE_LIMIT_TIER_PREMIUM", "100000")
        .env("KORYPHAIOS_RATE_LIMIT_SENSITIVE_PREMIUM", "100000:100000")
        .env("KORYPHAIOS_RATE_LIMIT_TIER_ENTERPRISE", "100000")
        .env(
            "KORYPHAIOS_RATE_LIMIT_SENSITIVE_ENTERPRISE",
            "100000:100000",
        )
        .env("KORYPHAIOS_RATE_LIMIT_TIER_FREE", "20")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start koryphaios")
}

async fn wait_ready(client: &Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let response = client.get(format!("{base}/health/ready")).send().await;
        if response.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} did not become ready");
}

async fn call(
    client: &Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

#[tokio::test]
async fn two_instances_on_one_postgres_and_redis_act_as_one_service() {
    let database = koryphaios_store_postgres::testing::fresh_database_url().await;
    let redis = PrivateRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.json");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_koryphaios"))
        .args(["kms", "init-keyring"])
        .arg(&keyring)
        .env_clear()
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let contents = std::fs::read_to_string(&keyring).unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    // Both start at once on an empty database, each on its own host (data directory).
    let mut a = instance(
        &dir.path().join("host-a"),
        Keyring::File(&keyring),
        &database,
        &redis.url(),
        port_a,
    );
    let b = instance(
        &dir.path().join("host-b"),
        Keyring::Contents(&contents),
        &database,
        &redis.url(),
        port_b,
    );
    let (url_a, url_b) = (
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    );
    let client = Client::new();
    wait_ready(&client, &url_a).await;
    wait_ready(&client, &url_b).await;
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let applied: Vec<(i64,)> =
        sqlx::query_as("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        applied,
        koryphaios_store_postgres::MIGRATIONS
            .iter()
            .map(|m| (m.version,))
            .collect::<Vec<_>>(),
        "each migration applied once"
    );
    let keys: Vec<(String, i64)> = sqlx::query_as(
        "SELECT purpose, COUNT(*) FROM sealed_keys GROUP BY purpose ORDER BY purpose",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        keys,
        vec![("jwt".to_owned(), 1), ("kek".to_owned(), 1)],
        "one KEK and one signing key, whichever instance made them"
    );
    for host in ["host-a", "host-b"] {
        let kept = std::fs::read_dir(dir.path().join(host)).map_or(0, |entries| entries.count());
        assert_eq!(kept, 0, "{host} keeps nothing in its data directory");
    }

    // A session from A works on B (the signing keys are in the database).
    let registered = client
        .post(format!("{url_a}/api/auth/register"))
        .json(&json!({"username": "root", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let login = client
        .post(format!("{url_a}/api/auth/login"))
        .json(&json!({"username": "root", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let admin = session_from(login.json().await.unwrap());
    let me = call(
        &client,
        reqwest::Method::GET,
        format!("{url_b}/api/auth/me"),
        &admin.access,
        None,
    )
    .await;
    assert_eq!(me.status(), 200);

    // A credential written on either instance is revealed on both.
    for (writer, reader) in [(&url_a, &url_b), (&url_b, &url_a)] {
        let secret = format!("sk-written-on-{writer}");
        let created: Value = call(
            &client,
            reqwest::Method::POST,
            format!("{writer}/api/v1/credentials"),
            &admin.access,
            Some(json!({"provider": "openai", "credential": secret})),
        )
        .await
        .json()
        .await
        .unwrap();
        let id = created["id"].as_str().unwrap();
        for base in [reader, writer] {
            let revealed: Value = call(
                &client,
                reqwest::Method::POST,
                format!("{base}/api/v1/credentials/{id}/reveal"),
                &admin.access,
                Some(json!({"reason": "scale-out test"})),
            )
            .await
            .json()
            .await
            .unwrap();
            assert_eq!(revealed["credential"], secret.as_str(), "{revealed}");
        }
    }

    // A key created on A works on B, and their combined rate is limited once (free: 20/min).
    let key = call(
        &client,
        reqwest::Method::POST,
        format!("{url_a}/api/v1/keys"),
        &admin.access,
        Some(json!({"name": "shared", "scopes": ["read"], "rateLimitTier": "free"})),
    )
    .await;
    assert_eq!(key.status(), 201);
    let key: Value = key.json().await.unwrap();
    let secret = key["key"].as_str().unwrap().to_owned();
    let mut admitted = 0;
    for i in 0..30 {
        let base = if i % 2 == 0 { &url_b } else { &url_a };
        let response = call(
            &client,
            reqwest::Method::GET,
            format!("{base}/api/auth/me"),
            &secret,
            None,
        )
        .await;
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(admitted, 20, "the two instances share one limit");

    // Revoked on A, refused on B within 1 s (B has the key in its verification cache).
    let other = call(
        &client,
        reqwest::Method::POST,
        format!("{url_a}/api/v1/keys"),
        &admin.access,
        Some(json!({"name": "to-revoke", "scopes": ["read"], "rateLimitTier": "enterprise"})),
    )
    .await;
    let other: Value = other.json().await.unwrap();
    let other_secret = other["key"].as_str().unwrap().to_owned();
    let warm = call(
        &client,
        reqwest::Method::GET,
        format!("{url_b}/api/auth/me"),
        &other_secret,
        None,
    )
    .await;
    assert_eq!(warm.status(), 200);
    let revoked = call(
        &client,
        reqwest::Method::DELETE,
        format!("{url_a}/api/v1/keys/{}", other["id"].as_str().unwrap()),
        &admin.access,
        None,
    )
    .await;
    assert_eq!(revoked.status(), 204);
    let revoked_at = Instant::now();
    loop {
        let response = call(
            &client,
            reqwest::Method::GET,
            format!("{url_b}/api/auth/me"),
            &other_secret,
            None,
        )
        .await;
        if response.status() == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "revocation must reach B within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Agent tokens: `maxUses` is exact across both instances (counted in Redis) when 20
    // requests race, and a token dies on B within 1 s of its parent key's revocation on A.
    let parent: Value = call(
        &client,
        reqwest::Method::POST,
        format!("{url_a}/api/v1/keys"),
        &admin.access,
        Some(json!({"name": "agent-parent", "scopes": ["read"], "rateLimitTier": "enterprise"})),
    )
    .await
    .json()
    .await
    .unwrap();
    let parent_secret = parent["key"].as_str().unwrap().to_owned();
    let mint = |body: Value| {
        call(
            &client,
            reqwest::Method::POST,
            format!("{url_a}/api/v1/tokens"),
            &parent_secret,
            Some(body),
        )
    };
    let limited: Value = mint(json!({"ttlSeconds": 600, "maxUses": 3}))
        .await
        .json()
        .await
        .unwrap();
    let limited = limited["token"].as_str().unwrap().to_owned();
    let answers = futures_util::future::join_all((0..20).map(|i| {
        let base = if i % 2 == 0 { &url_a } else { &url_b };
        call(
            &client,
            reqwest::Method::GET,
            format!("{base}/api/auth/me"),
            &limited,
            None,
        )
    }))
    .await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "exactly maxUses across both instances: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 401)),
        "{statuses:?}"
    );
    let token: Value = mint(json!({"ttlSeconds": 600})).await.json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let on_b = || {
        call(
            &client,
            reqwest::Method::GET,
            format!("{url_b}/api/auth/me"),
            &token,
            None,
        )
    };
    assert_eq!(on_b().await.status(), 200, "warm on B");
    let revoked = call(
        &client,
        reqwest::Method::DELETE,
        format!("{url_a}/api/v1/keys/{}", parent["id"].as_str().unwrap()),
        &admin.access,
        None,
    )
    .await;
    assert_eq!(revoked.status(), 204);
    let revoked_at = Instant::now();
    loop {
        if on_b().await.status() == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the parent's revocation must reach the token on B within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Disabled on A: the user's session and key stop on B within 1 s (B has both warm).
    let registered = client
        .post(format!("{url_a}/api/auth/register"))
        .json(&json!({"username": "victim", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let victim_id = registered.json::<Value>().await.unwrap()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let raised = call(
        &client,
        reqwest::Method::PATCH,
        format!("{url_a}/api/v1/users/{victim_id}"),
        &admin.access,
        Some(json!({"tier": "pro"})),
    )
    .await;
    assert_eq!(raised.status(), 200);
    let login = client
        .post(format!("{url_a}/api/auth/login"))
        .json(&json!({"username": "victim", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let victim = session_from(login.json().await.unwrap());
    let victim_key: Value = call(
        &client,
        reqwest::Method::POST,
        format!("{url_a}/api/v1/keys"),
        &victim.access,
        Some(json!({"name": "victim", "scopes": ["read"]})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        victim_key["rateLimitTier"], "pro",
        "a key defaults to its owner's tier"
    );
    let victim_key = victim_key["key"].as_str().unwrap().to_owned();
    for token in [&victim.access, &victim_key] {
        let warm = call(
            &client,
            reqwest::Method::GET,
            format!("{url_b}/api/auth/me"),
            token,
            None,
        )
        .await;
        assert_eq!(warm.status(), 200);
    }
    let disabled = call(
        &client,
        reqwest::Method::PATCH,
        format!("{url_a}/api/v1/users/{victim_id}"),
        &admin.access,
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(disabled.status(), 200);
    let disabled_at = Instant::now();
    for (token, refused) in [(&victim.access, 401), (&victim_key, 403)] {
        loop {
            let response = call(
                &client,
                reqwest::Method::GET,
                format!("{url_b}/api/auth/me"),
                token,
                None,
            )
            .await;
            if response.status() == refused {
                break;
            }
            assert_eq!(response.status(), 200);
            assert!(
                disabled_at.elapsed() < Duration::from_secs(1),
                "disabling must reach B within 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Concurrent writes on both instances keep one verifying chain.
    let mut writes = Vec::new();
    for i in 0..40 {
        let client = client.clone();
        let base = if i % 2 == 0 {
            url_a.clone()
        } else {
            url_b.clone()
        };
        let token = admin.access.clone();
        writes.push(tokio::spawn(async move {
            call(
                &client,
                reqwest::Method::POST,
                format!("{base}/api/v1/credentials"),
                &token,
                Some(json!({"provider": "openai", "credential": format!("sk-{i}")})),
            )
            .await
            .status()
        }));
    }
    for write in writes {
        assert_eq!(write.await.unwrap(), 201);
    }
    let report: Value = call(
        &client,
        reqwest::Method::GET,
        format!("{url_b}/api/v1/audit/verify"),
        &admin.access,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(report["valid"], true, "{report}");

    // kill -9 A during writes: every write A acknowledged is there.
    let writer = {
        let client = client.clone();
        let base = url_a.clone();
        let token = admin.access.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..10_000 {
                let response = client
                    .post(format!("{base}/api/v1/credentials"))
                    .bearer_auth(&token)
                    .json(&json!({"provider": "anthropic", "credential": format!("sk-k9-{i}")}))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == 201 => {
                        let body: Value = r.json().await.unwrap_or_default();
                        if let Some(id) = body["id"].as_str() {
                            acknowledged.push(id.to_owned());
                        }
                    }
                    _ => break,
                }
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    let acknowledged = writer.await.unwrap();
    assert!(
        !acknowledged.is_empty(),
        "A acknowledged writes before it died"
    );
    for id in &acknowledged {
        let found = call(
            &client,
            reqwest::Method::GET,
            format!("{url_b}/api/v1/credentials/{id}"),
            &admin.access,
            None,
        )
        .await;
        assert_eq!(found.status(), 200, "acknowledged write {id} is lost");
    }
    let report: Value = call(
        &client,
        reqwest::Method::GET,
        format!("{url_b}/api/v1/audit/verify"),
        &admin.access,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(report["valid"], true, "{report}");
    drop(b);
}
