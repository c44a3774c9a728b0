//! The key hierarchy (ADR 0011): the configured key provider (the *root*: local ring, age, AWS
//! KMS, Vault, …) wraps only the key-encryption keys (KEKs), which the database keeps; DEKs are
//! wrapped by a KEK in process.
//!
//! So the root is called when an instance starts (to unwrap the KEKs), when a KEK is created
//! (rotation) and when KEKs are re-wrapped under a new root version, never per request: creating
//! and revealing a credential cost the same with a remote KMS as with the local ring, and keep
//! working while the KMS is briefly unreachable. Every instance on one database shares the ring.
//!
//! Per-user key = HMAC-SHA256(KEK, "koryphaios/user-kek/v1" ‖ user id); a wrapped DEK =
//! AES-256-GCM(per-user key, DEK, AAD = tag ‖ KEK version ‖ user id), provider `kek`, key id
//! `kek`. DEKs the root wrapped directly (before the hierarchy) still unwrap through the root
//! until `koryphaios kms rewrap` (or the background re-wrap) moves them under a KEK.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{DEK_LEN, Dek, KeyProvider, KeyVersionInfo, KmsError, WrappedDek};
use super::{open_with_key, seal_with_key};
use crate::ids::UserId;
use crate::store::{KeyPurpose, SealedKey, Store, StoreError};

/// The provider name stored with every DEK a KEK wraps.
pub const PROVIDER: &str = "kek";
/// The key id stored with every DEK a KEK wraps (the database holds one ring).
pub const KEK_ID: &str = "kek";
const USER_KEY_TAG: &[u8] = b"koryphaios/user-kek/v1\0";
const DEK_AAD_TAG: &[u8] = b"koryphaios/kek-wrapped-dek/v1";

/// The owner the KEKs are wrapped for at the root: no user (ids are UUIDv7, never this).
pub fn kek_owner() -> UserId {
    UserId::parse("usr_00000000000000000000000000000001")
        .unwrap_or_else(|_| unreachable!("a well-formed constant id"))
}

struct Kek {
    created_at: OffsetDateTime,
    /// `None` once retired.
    material: Option<SecretBox<[u8; DEK_LEN]>>,
}

/// The KEK ring in memory, by version.
#[derive(Default)]
struct Ring {
    keys: BTreeMap<i64, Kek>,
}

impl Ring {
    fn current(&self) -> Option<(i64, &SecretBox<[u8; DEK_LEN]>)> {
        self.keys
            .iter()
            .rev()
            .find_map(|(version, kek)| kek.material.as_ref().map(|m| (*version, m)))
    }
}

/// How old the ring in memory may be when a DEK is wrapped: well under the settle period `kms
/// retire` waits for, so no instance wraps under a version after it has been retired.
pub const RING_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// A [`KeyProvider`] that wraps DEKs under database-kept KEKs, themselves wrapped by `root`.
pub struct KeyHierarchy {
    root: Arc<dyn KeyProvider>,
    store: Arc<dyn Store>,
    ring: RwLock<Ring>,
    /// When the ring was last read from the store (or tried), for [`RING_MAX_AGE`].
    read_at: std::sync::Mutex<std::time::Instant>,
}

impl std::fmt::Debug for KeyHierarchy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHierarchy")
            .field("root", &self.root)
            .field("current", &self.current_version())
            .finish_non_exhaustive()
    }
}

fn store_error(error: StoreError) -> KmsError {
    match error {
        StoreError::Unavailable(detail) => KmsError::Unavailable(format!("database: {detail}")),
        StoreError::Internal(detail) => KmsError::Internal(format!("database: {detail}")),
    }
}

impl KeyHierarchy {
    /// Loads the KEK ring from the store, unwrapping each KEK through `root`; on an empty
    /// database creates KEK 1 (of instances starting together, one creates it and all use it).
    /// Fails with [`KmsError::Unavailable`] when the root cannot be reached.
    pub async fn open(root: Arc<dyn KeyProvider>, store: Arc<dyn Store>) -> Result<Self, KmsError> {
        let hierarchy = Self {
            root,
            store,
            ring: RwLock::new(Ring::default()),
            read_at: std::sync::Mutex::new(std::time::Instant::now()),
        };
        hierarchy.load().await?;
        if hierarchy.current_key().is_none() {
            // Numbers of retired versions are never reused.
            let latest = hierarchy
                .read()
                .keys
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0);
            hierarchy
                .create_next(latest, OffsetDateTime::now_utc())
                .await?;
            hierarchy.load().await?;
        }
        if hierarchy.current_key().is_none() {
            return Err(KmsError::Internal(
                "the database holds no usable key-encryption key".into(),
            ));
        }
        Ok(hierarchy)
    }

    /// The root key provider (for status and its own maintenance).
    pub fn root(&self) -> &Arc<dyn KeyProvider> {
        &self.root
    }

    /// When the current KEK was created.
    pub fn current_created_at(&self) -> Option<OffsetDateTime> {
        let ring = self.read();
        let (version, _) = ring.current()?;
        ring.keys.get(&version).map(|kek| kek.created_at)
    }

    /// Creates a new KEK if the current one is at least `period` old; one instance wins (the
    /// version number is the lock), the others see its key. Returns the new version if this
    /// call created it.
    pub async fn rotate_if_older_than(
        &self,
        period: time::Duration,
        now: OffsetDateTime,
    ) -> Result<Option<i64>, KmsError> {
        self.load().await?;
        let due = self
            .current_created_at()
            .is_none_or(|created| now - created >= period);
        if !due {
            return Ok(None);
        }
        let latest = self.read().keys.keys().next_back().copied().unwrap_or(0);
        let created = self.create_next(latest, now).await?;
        self.load().await?;
        Ok(created)
    }

    /// Re-wraps every KEK not under the root's current key version; returns how many.
    pub async fn rewrap_keks(&self) -> Result<u64, KmsError> {
        rewrap_sealed_keys(
            self.store.as_ref(),
            self.root.as_ref(),
            KeyPurpose::Kek,
            &kek_owner(),
        )
        .await
    }

    /// Stores KEK `after + 1` (created `now`), wrapped by the root; `None` if another instance stored it first.
    async fn create_next(&self, after: i64, now: OffsetDateTime) -> Result<Option<i64>, KmsError> {
        let version = after + 1;
        let material = Dek::generate().map_err(|e| KmsError::Internal(e.to_string()))?;
        let wrapped = self.root.wrap(&material, &kek_owner()).await?;
        let key = SealedKey {
            version,
            created_at: now,
            wrapped: Some(wrapped),
        };
        let inserted = self
            .store
            .insert_sealed_key(KeyPurpose::Kek, &key)
            .await
            .map_err(store_error)?;
        if inserted {
            tracing::info!(version, "created a key-encryption key");
        }
        Ok(inserted.then_some(version))
    }

    /// Reads the ring from the store; only versions not in memory yet are unwrapped by the root.
    /// Retirements are applied even when a new version cannot be unwrapped (the root is down), so
    /// a retired version is never used again.
    async fn load(&self) -> Result<(), KmsError> {
        *self.read_at.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        let rows = self
            .store
            .sealed_keys(KeyPurpose::Kek)
            .await
            .map_err(store_error)?;
        let owner = kek_owner();
        let mut fresh = Vec::new();
        let mut failure = None;
        for row in rows {
            let known = self
                .read()
                .keys
                .get(&row.version)
                .map(|k| k.material.is_some());
            match (&row.wrapped, known) {
                (Some(_), Some(true)) | (None, Some(false)) => {}
                (None, _) => fresh.push((row.version, row.created_at, None)),
                (Some(wrapped), _) => match self.root.unwrap(wrapped, &owner).await {
                    Ok(dek) => {
                        let material = SecretBox::new(Box::new(*dek.expose_bytes()));
                        fresh.push((row.version, row.created_at, Some(material)));
                    }
                    Err(error) => failure = Some(error),
                },
            }
        }
        let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
        for (version, created_at, material) in fresh {
            ring.keys.insert(
                version,
                Kek {
                    created_at,
                    material,
                },
            );
        }
        failure.map_or(Ok(()), Err)
    }

    /// Re-reads the ring when it is older than [`RING_MAX_AGE`] (at most one try per period; a
    /// failed try keeps the ring in memory, minus anything found retired).
    async fn refresh_if_stale(&self) {
        let age = self
            .read_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if age < RING_MAX_AGE {
            return;
        }
        if let Err(error) = self.load().await {
            tracing::warn!(%error, "re-reading the key-encryption keys failed; using those loaded");
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    fn current_key(&self) -> Option<(i64, Zeroizing<[u8; DEK_LEN]>)> {
        let ring = self.read();
        ring.current()
            .map(|(version, key)| (version, Zeroizing::new(*key.expose_secret())))
    }

    fn key(&self, version: i64) -> Option<Zeroizing<[u8; DEK_LEN]>> {
        let ring = self.read();
        ring.keys
            .get(&version)?
            .material
            .as_ref()
            .map(|key| Zeroizing::new(*key.expose_secret()))
    }

    fn user_key(kek: &[u8; DEK_LEN], owner: &UserId) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(kek)
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        mac.update(USER_KEY_TAG);
        mac.update(owner.as_str().as_bytes());
        Ok(Zeroizing::new(mac.finalize().into_bytes().into()))
    }

    fn aad(version: i64, owner: &UserId) -> Vec<u8> {
        let mut aad = DEK_AAD_TAG.to_vec();
        aad.extend_from_slice(&version.to_be_bytes());
        aad.extend_from_slice(owner.as_str().as_bytes());
        aad
    }
}

/// Re-wraps every live key of `purpose` that `kms` did not wrap under its current version (each
/// by compare-and-swap, so concurrent runs do not conflict); returns how many moved.
pub async fn rewrap_sealed_keys(
    store: &dyn Store,
    kms: &dyn KeyProvider,
    purpose: KeyPurpose,
    owner: &UserId,
) -> Result<u64, KmsError> {
    let rows = store.sealed_keys(purpose).await.map_err(store_error)?;
    let mut moved = 0;
    for row in rows {
        let Some(old) = row.wrapped else { continue };
        if old.provider == kms.provider_name()
            && old.kek_id == kms.kek_id()
            && old.kek_version == kms.current_version()
        {
            continue;
        }
        let new = match kms.rewrap(&old, owner).await {
            Ok(new) => new,
            Err(KmsError::Unavailable(detail)) => return Err(KmsError::Unavailable(detail)),
            Err(error) => {
                // One unusable row must not hold back the others.
                tracing::warn!(purpose = purpose.as_str(), version = row.version, %error, "cannot re-wrap a sealed key");
                continue;
            }
        };
        if store
            .replace_sealed_key_wrap(purpose, row.version, &old, &new)
            .await
            .map_err(store_error)?
        {
            moved += 1;
        }
    }
    Ok(moved)
}

#[async_trait]
impl KeyProvider for KeyHierarchy {
    fn provider_name(&self) -> &'static str {
        PROVIDER
    }

    fn kek_id(&self) -> String {
        KEK_ID.to_owned()
    }

    fn current_version(&self) -> i64 {
        self.read().current().map_or(0, |(version, _)| version)
    }

    async fn wrap(&self, dek: &Dek, owner: &UserId) -> Result<WrappedDek, KmsError> {
        self.refresh_if_stale().await;
        let (version, kek) = self
            .current_key()
            .ok_or_else(|| KmsError::Unavailable("no key-encryption key loaded".into()))?;
        let key = Self::user_key(&kek, owner)?;
        let ciphertext = seal_with_key(&key, dek.expose_bytes(), &Self::aad(version, owner))
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        Ok(WrappedDek {
            provider: PROVIDER.to_owned(),
            kek_id: KEK_ID.to_owned(),
            kek_version: version,
            ciphertext,
        })
    }

    async fn unwrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<Dek, KmsError> {
        if wrapped.provider != PROVIDER {
            // Wrapped by the root directly, before the hierarchy: still readable.
            return self.root.unwrap(wrapped, owner).await;
        }
        if wrapped.kek_id != KEK_ID {
            return Err(KmsError::WrongKey {
                provider: wrapped.provider.clone(),
                kek_id: wrapped.kek_id.clone(),
            });
        }
        let kek = match self.key(wrapped.kek_version) {
            Some(kek) => kek,
            None => {
                // Another instance may have rotated since this one loaded the ring.
                if !self.read().keys.contains_key(&wrapped.kek_version) {
                    self.load().await?;
                }
                self.key(wrapped.kek_version)
                    .ok_or(KmsError::UnknownVersion(wrapped.kek_version))?
            }
        };
        let key = Self::user_key(&kek, owner)?;
        let dek = open_with_key(
            &key,
            &wrapped.ciphertext,
            &Self::aad(wrapped.kek_version, owner),
        )
        .map_err(|_| KmsError::Unauthentic)?;
        Dek::from_slice(&dek).map_err(|_| KmsError::Unauthentic)
    }

    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KmsError> {
        let ring = self.read();
        let current = ring.current().map(|(version, _)| version);
        Ok(ring
            .keys
            .iter()
            .map(|(version, kek)| KeyVersionInfo {
                version: *version,
                created_at: kek.created_at,
                retired: kek.material.is_none(),
                current: Some(*version) == current,
            })
            .collect())
    }

    async fn rotate(&self) -> Result<i64, KmsError> {
        self.rotate_if_older_than(time::Duration::ZERO, OffsetDateTime::now_utc())
            .await?;
        Ok(self.current_version())
    }

    async fn retire(&self, version: i64) -> Result<(), KmsError> {
        if version == self.current_version() {
            return Err(KmsError::Refused(format!(
                "key-encryption key {version} is current; rotate first"
            )));
        }
        if !self.read().keys.contains_key(&version) {
            return Err(KmsError::UnknownVersion(version));
        }
        self.store
            .retire_sealed_key(KeyPurpose::Kek, version)
            .await
            .map_err(store_error)?;
        if let Some(kek) = self
            .ring
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .get_mut(&version)
        {
            kek.material = None;
        }
        Ok(())
    }

    async fn reload(&self) -> Result<(), KmsError> {
        // The ring is re-read even when the root cannot be: retirements must reach every instance.
        let root = self.root.reload().await;
        let ring = self.load().await;
        root.and(ring)
    }

    /// Ready once the ring is loaded: the root is not asked, so a KMS outage after start does
    /// not take the instance out of service (see [`KeyHierarchy::root`] for its own check).
    async fn check(&self) -> Result<(), KmsError> {
        self.current_key()
            .map(|_| ())
            .ok_or_else(|| KmsError::Unavailable("no key-encryption key loaded".into()))
    }
}
