//! What an attacker with the files sees, and what moving ciphertext between rows does; key
//! rotation end to end; scope checks on reveal.

use std::sync::Arc;

use koryphaios_core::audit::RequestContext;
use koryphaios_core::clock::ManualClock;
use koryphaios_core::credentials::{CredentialError, CredentialService, NewCredentialInput};
use koryphaios_core::envelope::KeyProvider;
use koryphaios_core::ids::FamilyId;
use koryphaios_core::store::{AuditStore, SchemaMigrator, Store};
use koryphaios_core::users::{NewUser, PasswordHash, RegistrationPolicy, Username};
use koryphaios_core::{AuthMethod, Principal, Scope, ScopeSet, UserId};
use koryphaios_kms::LocalKeyRing;
use koryphaios_store_sqlite::SqliteSettings;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::harness::{TestApp, assert_error};

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path))
        } else {
            out.push(path)
        }
    }
    out
}

#[tokio::test]
async fn no_file_in_the_data_dir_contains_a_plaintext_secret() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let secrets = ["sk-PLAINTEXT-openai-0001", "sk-ant-PLAINTEXT-0002"];
    let a = app
        .create_credential(&ada.access, "openai", secrets[0])
        .await;
    let b = app
        .create_credential(&ada.access, "anthropic", secrets[1])
        .await;
    app.post_authed(
        &format!("/api/v1/credentials/{a}/rotate"),
        &ada.access,
        serde_json::json!({"credential": "sk-PLAINTEXT-rotated-0003"}),
    )
    .await;
    app.reveal(&ada.access, &b).await;
    let data_dir = app.stop().await;
    if crate::harness::on_postgres() {
        // The data directory holds no database on PostgreSQL; this check is about the file.
        return;
    }
    let files = files_under(&data_dir.path().join("data"));
    assert!(
        files.iter().any(|f| f.ends_with("koryphaios.db"))
            && files.iter().any(|f| f.ends_with("local.keyring"))
    );
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for secret in secrets.iter().chain(["sk-PLAINTEXT-rotated-0003"].iter()) {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} contains a plaintext secret",
                file.display()
            );
        }
    }
}

async fn raw_pool(app: &TestApp) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        app.data_path().join("koryphaios.db").display()
    ))
    .await
    .unwrap()
}

#[tokio::test]
async fn ciphertext_moved_to_another_row_fails_to_open_without_leaking_detail() {
    if crate::harness::on_postgres() {
        // The attack below edits the SQLite file; the envelope's row binding is the same code on
        // every backend and is tested here once.
        return;
    }
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let bob = app.user("bob").await;
    let adas = app
        .create_credential(&ada.access, "openai", "sk-ada-secret")
        .await;
    let adas_other = app
        .create_credential(&ada.access, "openai", "sk-ada-other")
        .await;
    let bobs = app
        .create_credential(&bob.access, "openai", "sk-bob-secret")
        .await;
    let pool = raw_pool(&app).await;
    // An attacker with write access to the database copies Ada's sealed secret and wrapped key
    // into Bob's row, and into another of Ada's rows.
    for target in [&bobs, &adas_other] {
        sqlx::query(
            "UPDATE credential_versions SET sealed = (SELECT sealed FROM credential_versions WHERE credential_id = ?1),
                 wrapped_dek = (SELECT wrapped_dek FROM credential_versions WHERE credential_id = ?1)
             WHERE credential_id = ?2",
        )
        .bind(&adas)
        .bind(target)
        .execute(&pool)
        .await
        .unwrap();
    }
    for (token, id) in [(&bob.access, &bobs), (&ada.access, &adas_other)] {
        let response = app
            .request(
                Method::POST,
                &format!("/api/v1/credentials/{id}/reveal"),
                Some(token),
                None,
            )
            .await;
        let body = assert_error(response, 500, "credential_unreadable").await;
        let text = body.to_string();
        assert!(
            !text.contains("sk-ada-secret") && !text.contains("AES") && !text.contains("aead"),
            "{text}"
        );
    }
    // The failed reveal is audited as a failure; the untouched row still reveals.
    let trail: Value = app
        .get_authed(&format!("/api/v1/credentials/{bobs}/audit"), &bob.access)
        .await
        .json()
        .await
        .unwrap();
    let failed = &trail["records"][0];
    assert_eq!(
        (failed["action"].as_str(), failed["success"].as_bool()),
        (Some("credential_access"), Some(false))
    );
    assert_eq!(app.reveal(&ada.access, &adas).await, "sk-ada-secret");
}

#[tokio::test]
async fn master_key_rotation_rewrap_and_retirement_keep_every_credential_readable() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push((
            app.create_credential(&ada.access, "openai", &format!("sk-{i}"))
                .await,
            format!("sk-{i}"),
        ));
    }
    let cli = app.cli_env();
    let status = cli.run_ok(&["kms", "status"]);
    // Five credentials and the audit chain's key.
    assert!(
        status.contains("current") && status.contains(" 6"),
        "{status}"
    );

    let rotated = cli.run_ok(&["kms", "rotate"]);
    assert!(rotated.contains("version 2"), "{rotated}");
    // Reveal keeps working between rotate and rewrap, and new writes pick up version 2.
    for (id, secret) in &ids {
        assert_eq!(&app.reveal(&ada.access, id).await, secret);
    }
    let retire_early = cli.run(&["kms", "retire", "--version", "1"]);
    assert!(
        !retire_early.status.success(),
        "retiring a version in use must be refused"
    );
    assert!(String::from_utf8_lossy(&retire_early.stderr).contains("still wraps"));

    let rewrap = cli.run_ok(&["kms", "rewrap", "--batch", "2"]);
    // Five credentials, the audit chain's key and the access-token signing key.
    assert!(rewrap.contains("7 re-wrapped under version 2"), "{rewrap}");
    let again = cli.run_ok(&["kms", "rewrap"]);
    assert!(
        again.contains("0 re-wrapped"),
        "resumable and idempotent: {again}"
    );
    // Right after a rotation, retiring is refused until the new version has settled.
    let settling = cli.run(&["kms", "retire", "--version", "1"]);
    assert!(!settling.status.success());
    assert!(String::from_utf8_lossy(&settling.stderr).contains("less than 120 s old"));
    cli.run_ok(&["kms", "retire", "--version", "1", "--settle-seconds", "0"]);
    let status = cli.run_ok(&["kms", "status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("1 ") && l.contains("retired")),
        "{status}"
    );
    for (id, secret) in &ids {
        assert_eq!(&app.reveal(&ada.access, id).await, secret);
    }
    // And after a restart.
    let data_dir = app.stop().await;
    let restarted = TestApp::spawn_in(data_dir, &[]).await;
    for (id, secret) in &ids {
        assert_eq!(&restarted.reveal(&ada.access, id).await, secret);
    }
}

#[tokio::test]
async fn a_wrong_kms_passphrase_refuses_to_start_and_overwrites_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    let run = |passphrase: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_koryphaios"))
            .args(["kms", "status"])
            .current_dir(cwd.path())
            .env_clear()
            .env("KORYPHAIOS_KMS_PASSPHRASE", passphrase)
            .output()
            .unwrap()
    };
    assert!(run("the right passphrase").status.success());
    let keyring = cwd.path().join(".koryphaios/kms/local.keyring");
    let before = std::fs::read(&keyring).unwrap();
    let wrong = run("a wrong passphrase!!");
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("wrong KORYPHAIOS_KMS_PASSPHRASE")
            && !stderr.contains("a wrong passphrase!!"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&keyring).unwrap(), before);
    assert!(run("the right passphrase").status.success());
}

fn principal_with(user: &UserId, scopes: &[Scope]) -> Principal {
    Principal {
        user_id: user.clone(),
        username: "ada".into(),
        role: koryphaios_core::users::Role::User,
        tier: koryphaios_core::tier::Tier::Pro,
        scopes: ScopeSet::new(scopes.iter().cloned()),
        method: AuthMethod::Session {
            jti: "j".into(),
            family: FamilyId::generate(),
            expires_at: time::OffsetDateTime::now_utc(),
        },
    }
}

#[tokio::test]
async fn reveal_needs_the_provider_scope_and_denials_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite =
        koryphaios_store_sqlite::open(&dir.path().join("k.db"), &SqliteSettings::default())
            .await
            .unwrap();
    sqlite.migrate_up().await.unwrap();
    sqlite
        .install_audit_key(::std::sync::Arc::new(
            koryphaios_core::testing::contract_audit_key(),
        ))
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let kms: Arc<dyn KeyProvider> =
        Arc::new(LocalKeyRing::open(&dir.path().join("kms/local.keyring"), None).unwrap());
    let service = CredentialService::new(
        Arc::clone(&store),
        kms,
        Arc::new(ManualClock::new(time::OffsetDateTime::now_utc())),
    );
    let user = store
        .register_user(
            NewUser {
                id: UserId::generate(),
                username: Username::parse("ada").unwrap(),
                password_hash: PasswordHash::from_stored("x".into()),
                default_tier: koryphaios_core::tier::Tier::Free,
                created_at: time::OffsetDateTime::now_utc(),
            },
            RegistrationPolicy::Open,
            &koryphaios_core::audit::AuditEntry::anonymous(
                "test".into(),
                &RequestContext::default(),
                "register",
                time::OffsetDateTime::now_utc(),
            ),
        )
        .await
        .unwrap();
    let context = RequestContext::default();
    let writer = principal_with(&user.id, &[Scope::Write]);
    let create = |provider: &str| NewCredentialInput {
        provider: provider.into(),
        secret: SecretString::from("sk-x"),
        kind: None,
        metadata: None,
        expires_at: None,
    };
    let openai = service
        .create(&writer, &context, create("openai"))
        .await
        .unwrap();
    let anthropic = service
        .create(&writer, &context, create("anthropic"))
        .await
        .unwrap();

    let openai_only = principal_with(&user.id, &[Scope::Read, Scope::Provider("openai".into())]);
    let (_, secret) = service
        .reveal(&openai_only, &context, &openai.id, None)
        .await
        .unwrap();
    assert_eq!(secret.expose_secret(), "sk-x");
    let denied = service
        .reveal(&openai_only, &context, &anthropic.id, None)
        .await
        .unwrap_err();
    assert!(
        matches!(denied, CredentialError::Forbidden(Scope::Provider(ref p)) if p == "anthropic")
    );
    let read_only = principal_with(&user.id, &[Scope::Read]);
    assert!(matches!(
        service.create(&read_only, &context, create("openai")).await,
        Err(CredentialError::Forbidden(Scope::Write))
    ));
    assert!(matches!(
        service.reveal(&read_only, &context, &openai.id, None).await,
        Err(CredentialError::Forbidden(_))
    ));
    let trail = store
        .audit_for_resource(&user.id, "credential", anthropic.id.as_str(), 10)
        .await
        .unwrap();
    assert_eq!(trail[0].action, "access_denied");
    assert!(!trail[0].success);
    assert_eq!(trail[0].metadata["requiredScope"], "provider:anthropic");
    let admin = principal_with(&user.id, &[Scope::Admin]);
    service
        .reveal(&admin, &context, &anthropic.id, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn readiness_reports_the_key_provider() {
    let app = TestApp::spawn().await;
    let ready: Value = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["data"]["components"]["kms"]["backend"], "local");
    assert_eq!(ready["data"]["components"]["kms"]["status"], "up");
    let _ = assert_error;
}
