//! The key hierarchy (ADR 0011) against a real store and key ring: data keys wrapped by the
//! ring directly before the hierarchy stay readable and move under a KEK; KEK rotation by
//! period, with one winner among instances; a root KMS that goes away after start changes
//! nothing for requests; signing keys rotate, publish and retire.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use koryphaios_core::audit::RequestContext;
use koryphaios_core::clock::ManualClock;
use koryphaios_core::credentials::{CredentialService, NewCredentialInput};
use koryphaios_core::envelope::hierarchy::KeyHierarchy;
use koryphaios_core::envelope::{Dek, KeyProvider, KeyVersionInfo, KmsError, WrappedDek, rotation};
use koryphaios_core::ids::FamilyId;
use koryphaios_core::session::{AccessTokenCodec, SigningKeys, TokenError, signing_keys};
use koryphaios_core::store::{AuditStore, SchemaMigrator, Store};
use koryphaios_core::users::{NewUser, PasswordHash, RegistrationPolicy, Username};
use koryphaios_core::{AuthMethod, Principal, Scope, ScopeSet, UserId};
use koryphaios_kms::LocalKeyRing;
use koryphaios_store_sqlite::SqliteSettings;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

/// A root provider for these tests: the real local ring, with a switch that makes every call
/// fail as an unreachable KMS would.
#[derive(Debug)]
pub struct SwitchableRoot {
    ring: LocalKeyRing,
    down: AtomicBool,
}

impl SwitchableRoot {
    fn up(&self) -> Result<(), KmsError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(KmsError::Unavailable("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl KeyProvider for SwitchableRoot {
    fn provider_name(&self) -> &'static str {
        self.ring.provider_name()
    }
    fn kek_id(&self) -> String {
        self.ring.kek_id()
    }
    fn current_version(&self) -> i64 {
        self.ring.current_version()
    }
    async fn wrap(&self, dek: &Dek, owner: &UserId) -> Result<WrappedDek, KmsError> {
        self.up()?;
        self.ring.wrap(dek, owner).await
    }
    async fn unwrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<Dek, KmsError> {
        self.up()?;
        self.ring.unwrap(wrapped, owner).await
    }
    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KmsError> {
        self.up()?;
        self.ring.versions().await
    }
    async fn rotate(&self) -> Result<i64, KmsError> {
        self.up()?;
        self.ring.rotate().await
    }
    async fn retire(&self, version: i64) -> Result<(), KmsError> {
        self.up()?;
        self.ring.retire(version).await
    }
    async fn reload(&self) -> Result<(), KmsError> {
        self.up()?;
        self.ring.reload().await
    }
    async fn check(&self) -> Result<(), KmsError> {
        self.up()?;
        self.ring.check().await
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    root: Arc<SwitchableRoot>,
    user: UserId,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let sqlite =
        koryphaios_store_sqlite::open(&dir.path().join("k.db"), &SqliteSettings::default())
            .await
            .unwrap();
    sqlite.migrate_up().await.unwrap();
    sqlite
        .install_audit_key(Arc::new(koryphaios_core::testing::contract_audit_key()))
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let root = Arc::new(SwitchableRoot {
        ring: LocalKeyRing::open(&dir.path().join("kms/local.keyring"), None).unwrap(),
        down: AtomicBool::new(false),
    });
    let user = store
        .register_user(
            NewUser {
                id: UserId::generate(),
                username: Username::parse("ada").unwrap(),
                password_hash: PasswordHash::from_stored("x".into()),
                default_tier: koryphaios_core::tier::Tier::Free,
                created_at: OffsetDateTime::now_utc(),
            },
            RegistrationPolicy::Open,
            &koryphaios_core::audit::AuditEntry::anonymous(
                "test".into(),
                &RequestContext::default(),
                "register",
                OffsetDateTime::now_utc(),
            ),
        )
        .await
        .unwrap()
        .id;
    Fixture {
        _dir: dir,
        store,
        root,
        user,
    }
}

impl Fixture {
    fn service(&self, kms: Arc<dyn KeyProvider>) -> CredentialService {
        CredentialService::new(
            Arc::clone(&self.store),
            kms,
            Arc::new(ManualClock::new(OffsetDateTime::now_utc())),
        )
    }

    fn principal(&self) -> Principal {
        Principal {
            user_id: self.user.clone(),
            username: "ada".into(),
            role: koryphaios_core::users::Role::User,
            tier: koryphaios_core::tier::Tier::Pro,
            scopes: ScopeSet::new([Scope::Write, Scope::Provider("openai".into())]),
            method: AuthMethod::Session {
                jti: "j".into(),
                family: FamilyId::generate(),
                expires_at: OffsetDateTime::now_utc(),
            },
        }
    }

    async fn hierarchy(&self) -> Result<Arc<KeyHierarchy>, KmsError> {
        let root: Arc<dyn KeyProvider> = Arc::clone(&self.root) as Arc<dyn KeyProvider>;
        KeyHierarchy::open(root, Arc::clone(&self.store))
            .await
            .map(Arc::new)
    }

    async fn create(&self, service: &CredentialService, secret: &str) -> String {
        let input = NewCredentialInput {
            provider: "openai".into(),
            secret: SecretString::from(secret),
            kind: None,
            metadata: None,
            expires_at: None,
        };
        service
            .create(&self.principal(), &RequestContext::default(), input)
            .await
            .unwrap()
            .id
            .to_string()
    }

    async fn reveal(&self, service: &CredentialService, id: &str) -> String {
        let id = koryphaios_core::ids::CredentialId::parse(id).unwrap();
        let (_, secret) = service
            .reveal(&self.principal(), &RequestContext::default(), &id, None)
            .await
            .unwrap();
        secret.expose_secret().to_owned()
    }
}

#[tokio::test]
async fn data_keys_the_ring_wrapped_directly_stay_readable_and_rewrap_moves_them_under_a_kek() {
    let fx = fixture().await;
    // Before the hierarchy: the ring wraps the DEK itself.
    let legacy = fx.service(Arc::clone(&fx.root) as Arc<dyn KeyProvider>);
    let id = fx.create(&legacy, "sk-from-before").await;

    let hierarchy = fx.hierarchy().await.unwrap();
    let provider: Arc<dyn KeyProvider> = Arc::clone(&hierarchy) as Arc<dyn KeyProvider>;
    let service = fx.service(Arc::clone(&provider));
    assert_eq!(fx.reveal(&service, &id).await, "sk-from-before");
    let report = rotation::rewrap_all(&fx.store, &provider, 10, |_| {})
        .await
        .unwrap();
    assert_eq!(report.failed, 0);
    assert!(report.rewrapped >= 1, "{report:?}");
    let inventory = rotation::inventory(&fx.store).await.unwrap();
    assert!(
        inventory.iter().all(|row| row.provider == "kek"),
        "nothing is left under the ring directly: {inventory:?}"
    );
    assert_eq!(fx.reveal(&service, &id).await, "sk-from-before");
    // The KEK rows are wrapped by the ring; the data is not re-encrypted, only its key re-wrapped.
    assert_eq!(hierarchy.current_version(), 1);
}

#[tokio::test]
async fn the_kek_rotates_when_due_once_among_instances_and_others_read_the_new_version() {
    let fx = fixture().await;
    let first = fx.hierarchy().await.unwrap();
    let second = fx.hierarchy().await.unwrap();
    // Loaded before the rotation, and never told about it.
    let stale = fx.hierarchy().await.unwrap();
    assert_eq!(
        (first.current_version(), second.current_version()),
        (1, 1),
        "instances opening one database share one KEK"
    );
    let period = time::Duration::days(90);
    let now = OffsetDateTime::now_utc();
    assert_eq!(first.rotate_if_older_than(period, now).await.unwrap(), None);
    let later = now + period + time::Duration::minutes(1);
    let (a, b) = tokio::join!(
        first.rotate_if_older_than(period, later),
        second.rotate_if_older_than(period, later)
    );
    let created: Vec<i64> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(created, vec![2], "exactly one instance rotates");

    let old = fx.service(Arc::clone(&stale) as Arc<dyn KeyProvider>);
    let before = fx.create(&old, "sk-under-v1").await;
    first.reload().await.unwrap();
    let writer = fx.service(Arc::clone(&first) as Arc<dyn KeyProvider>);
    let after = fx.create(&writer, "sk-under-v2").await;
    let inventory = rotation::inventory(&fx.store).await.unwrap();
    assert!(
        inventory.iter().any(|row| row.kek_version == 2),
        "{inventory:?}"
    );
    // The instance that loaded its ring before the rotation learns the new KEK on first use.
    assert_eq!(stale.current_version(), 1);
    assert_eq!(fx.reveal(&old, &after).await, "sk-under-v2");
    assert_eq!(fx.reveal(&old, &before).await, "sk-under-v1");
    assert_eq!(stale.current_version(), 2);
}

#[tokio::test]
async fn a_root_kms_that_goes_away_after_start_changes_nothing_for_requests_and_blocks_a_start() {
    let fx = fixture().await;
    let hierarchy = fx.hierarchy().await.unwrap();
    let service = fx.service(Arc::clone(&hierarchy) as Arc<dyn KeyProvider>);
    let id = fx.create(&service, "sk-before-outage").await;

    fx.root.down.store(true, Ordering::SeqCst);
    let during = fx.create(&service, "sk-during-outage").await;
    assert_eq!(fx.reveal(&service, &id).await, "sk-before-outage");
    assert_eq!(fx.reveal(&service, &during).await, "sk-during-outage");
    assert!(hierarchy.check().await.is_ok(), "still ready");
    assert!(hierarchy.root().check().await.is_err());
    // A new instance cannot load the KEKs without the root: it is not ready.
    assert!(matches!(
        fx.hierarchy().await.unwrap_err(),
        KmsError::Unavailable(_)
    ));

    fx.root.down.store(false, Ordering::SeqCst);
    // Another instance rotates and retires the KEK this one wraps under, then the root goes away:
    // this instance cannot load the new KEK, and refuses to wrap rather than use the retired one.
    let other = fx.hierarchy().await.unwrap();
    other.rotate().await.unwrap();
    let provider = Arc::clone(&other) as Arc<dyn KeyProvider>;
    rotation::rewrap_all(&fx.store, &provider, 100, |_| {})
        .await
        .unwrap();
    fx.root.down.store(true, Ordering::SeqCst);
    other.retire(1).await.unwrap();
    assert!(
        hierarchy.reload().await.is_err(),
        "the new KEK cannot be unwrapped"
    );
    assert!(matches!(
        hierarchy
            .wrap(&Dek::generate().unwrap(), &fx.user)
            .await
            .unwrap_err(),
        KmsError::Unavailable(_)
    ));
    fx.root.down.store(false, Ordering::SeqCst);
    hierarchy.reload().await.unwrap();
    assert_eq!(hierarchy.current_version(), 2);
    let restarted = fx.hierarchy().await.unwrap();
    let again = fx.service(Arc::clone(&restarted) as Arc<dyn KeyProvider>);
    assert_eq!(fx.reveal(&again, &during).await, "sk-during-outage");
}

fn claims(now: OffsetDateTime) -> koryphaios_core::session::AccessClaims {
    AccessTokenCodec::claims(
        "usr_x".into(),
        "jti".into(),
        "fam_x".into(),
        0,
        now.unix_timestamp(),
        now.unix_timestamp() + 900,
    )
}

#[tokio::test]
async fn signing_keys_rotate_publish_after_a_delay_and_retire_after_their_tokens_expired() {
    let fx = fixture().await;
    let kms = fx.hierarchy().await.unwrap() as Arc<dyn KeyProvider>;
    let keys = SigningKeys::new(Arc::clone(&fx.store), Arc::clone(&kms));
    let now = OffsetDateTime::now_utc();
    let codec = keys.codec(now).await.unwrap();
    assert_eq!(codec.signing_kid(), "v1");
    let old_token = codec.encode(claims(now)).unwrap();

    // Another instance on the same database signs with the same key.
    let other = SigningKeys::new(Arc::clone(&fx.store), kms)
        .codec(now)
        .await
        .unwrap();
    assert!(other.decode(&old_token, now).is_ok());

    assert_eq!(keys.rotate(now).await.unwrap(), 2);
    keys.refresh(&codec, now).await.unwrap();
    assert_eq!(codec.signing_kid(), "v1", "not yet published");
    let published = now + signing_keys::PUBLISH_DELAY + time::Duration::seconds(1);
    keys.refresh(&codec, published).await.unwrap();
    assert_eq!(codec.signing_kid(), "v2");
    let new_token = codec.encode(claims(published)).unwrap();
    assert!(
        codec.decode(&old_token, now).is_ok(),
        "the old key verifies"
    );
    assert!(codec.decode(&new_token, published).is_ok());

    // The periodic refresh retires the old key once its tokens are long expired.
    let much_later = published + signing_keys::VERIFY_AFTER_SUPERSEDED;
    keys.refresh(&codec, much_later).await.unwrap();
    assert_eq!(
        codec.decode(&old_token, now).unwrap_err(),
        TokenError::Invalid,
        "a retired key verifies nothing"
    );
    assert!(codec.decode(&new_token, published).is_ok());
}

#[tokio::test]
async fn an_instance_whose_kms_is_down_at_start_is_not_ready_and_gets_ready_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let root = Arc::new(SwitchableRoot {
        ring: LocalKeyRing::open(&dir.path().join("ring"), None).unwrap(),
        down: AtomicBool::new(true),
    });
    let app = crate::harness::TestApp::spawn_with_root(
        &[("KORYPHAIOS_ALLOW_REGISTRATION", "true")],
        Arc::clone(&root) as Arc<dyn KeyProvider>,
    )
    .await;
    assert_eq!(
        app.client
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        body["data"]["components"]["kms"]["status"], "down",
        "{body}"
    );
    assert_eq!(body["data"]["components"]["kms"]["backend"], "local");
    let refused = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&serde_json::json!({"username": "ada", "password": crate::harness::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["retry-after"], "2");
    // The outage shows where it is watched.
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("kms_root_up{provider=\"local\"}")
    );
    crate::harness::assert_error(refused, 503, "service_unavailable").await;

    root.down.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = app
            .client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ready by itself once the KMS answers"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let session = app.user("ada").await;
    let id = app
        .create_credential(&session.access, "openai", "sk-after-start")
        .await;
    assert_eq!(app.reveal(&session.access, &id).await, "sk-after-start");
    // The key maintenance job now runs and reports the root as reachable.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
        let metrics = metrics.text().await.unwrap();
        if metrics.contains("kms_root_up{provider=\"local\"} 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kms_root_up: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The migration that keeps the KEKs and signing keys (0007).
const SEALED_KEYS: i64 = 7;

#[tokio::test]
async fn reverting_the_sealed_keys_migration_is_refused_while_it_holds_keys() {
    let fx = fixture().await;
    let before = fx.store.migration_status().await.unwrap();
    let hierarchy = fx.hierarchy().await.unwrap();
    // The migrations after it go down as usual; then 0007 itself is refused.
    let newer = before
        .iter()
        .filter(|line| line.version > SEALED_KEYS)
        .count();
    fx.store
        .migrate_down(newer)
        .await
        .expect("newer migrations revert");
    assert!(
        fx.store.migrate_down(1).await.is_err(),
        "dropping the KEKs would make every credential unreadable"
    );
    let status = fx.store.migration_status().await.unwrap();
    assert_eq!(status.len(), before.len());
    assert!(
        status
            .iter()
            .all(|line| line.applied_at.is_some() == (line.version <= SEALED_KEYS))
    );
    fx.store.migrate_up().await.expect("up again");
    assert_eq!(hierarchy.current_version(), 1);
    KeyHierarchy::open(
        Arc::clone(&fx.root) as Arc<dyn KeyProvider>,
        Arc::clone(&fx.store),
    )
    .await
    .expect("the keys are still there");
}
