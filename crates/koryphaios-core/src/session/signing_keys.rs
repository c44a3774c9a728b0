//! Access-token signing keys kept in the database (ADR 0011), so every instance on one database
//! signs and verifies alike without sharing a file.
//!
//! Each key is 32 random bytes wrapped by the key provider (the KEK hierarchy) like a DEK, stored
//! as a [`KeyPurpose::Jwt`] version, and named in tokens by its key id `v{version}`. A new key
//! only starts signing once it is [`PUBLISH_DELAY`] old, by which time every instance has loaded
//! it (they reload every [`RELOAD_INTERVAL`]); the previous one keeps verifying until it is
//! retired, long after every token it signed has expired.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::{AccessTokenCodec, JwtSecret};
use crate::envelope::{Dek, KeyProvider, KmsError};
use crate::ids::UserId;
use crate::store::{KeyPurpose, SealedKey, Store, StoreError};

/// How long a new key waits before it signs: longer than [`RELOAD_INTERVAL`].
pub const PUBLISH_DELAY: Duration = Duration::from_secs(90);
/// How often instances re-read the keys.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// How long a key that stopped signing keeps verifying (a token lives 15 minutes).
pub const VERIFY_AFTER_SUPERSEDED: Duration = Duration::from_secs(2 * 3600);

/// The owner signing keys are wrapped for: no user (ids are UUIDv7, never this).
pub fn jwt_key_owner() -> UserId {
    UserId::parse("usr_00000000000000000000000000000002")
        .unwrap_or_else(|_| unreachable!("a well-formed constant id"))
}

/// Why the signing keys could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The key provider failed (unreachable, or a key does not open).
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored keys are unusable.
    #[error("{0}")]
    Invalid(String),
}

/// One live key.
struct Loaded {
    version: i64,
    created_at: OffsetDateTime,
    secret: JwtSecret,
}

fn kid(version: i64) -> String {
    format!("v{version}")
}

/// Loads and rotates the signing keys of one database.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    store: Arc<dyn Store>,
    kms: Arc<dyn KeyProvider>,
}

impl SigningKeys {
    /// Keys of `store`, wrapped by `kms`.
    pub fn new(store: Arc<dyn Store>, kms: Arc<dyn KeyProvider>) -> Self {
        Self { store, kms }
    }

    /// A codec with the stored keys, creating the first key on an empty database.
    pub async fn codec(&self, now: OffsetDateTime) -> Result<AccessTokenCodec, SigningKeyError> {
        let (keys, signing) = self.load_or_create(now).await?;
        AccessTokenCodec::with_keys(&keys, &signing)
            .ok_or_else(|| SigningKeyError::Invalid("no signing key".into()))
    }

    /// Re-reads the keys into `codec` (picks up rotations and retirements), first retiring keys
    /// superseded long enough ago.
    pub async fn refresh(
        &self,
        codec: &AccessTokenCodec,
        now: OffsetDateTime,
    ) -> Result<(), SigningKeyError> {
        self.retire_superseded(now).await?;
        let (keys, signing) = self.load_or_create(now).await?;
        if !codec.install(&keys, &signing) {
            return Err(SigningKeyError::Invalid("no signing key".into()));
        }
        Ok(())
    }

    /// Adds a key (it signs after [`PUBLISH_DELAY`]) and retires keys that stopped signing more
    /// than [`VERIFY_AFTER_SUPERSEDED`] ago. Returns the new version.
    pub async fn rotate(&self, now: OffsetDateTime) -> Result<i64, SigningKeyError> {
        let latest = self
            .store
            .sealed_keys(KeyPurpose::Jwt)
            .await?
            .last()
            .map_or(0, |key| key.version);
        let mut version = latest + 1;
        while !self.create(version, now).await? {
            version += 1;
        }
        self.retire_superseded(now).await?;
        Ok(version)
    }

    /// Retires every key whose successor has signed for longer than [`VERIFY_AFTER_SUPERSEDED`].
    pub async fn retire_superseded(&self, now: OffsetDateTime) -> Result<u64, SigningKeyError> {
        let rows = self.store.sealed_keys(KeyPurpose::Jwt).await?;
        let live: Vec<&SealedKey> = rows.iter().filter(|k| k.wrapped.is_some()).collect();
        let mut retired = 0;
        for (index, key) in live.iter().enumerate() {
            let Some(successor) = live.get(index + 1) else {
                break;
            };
            let superseded_at = successor.created_at + PUBLISH_DELAY;
            if now - superseded_at >= VERIFY_AFTER_SUPERSEDED
                && self
                    .store
                    .retire_sealed_key(KeyPurpose::Jwt, key.version)
                    .await?
            {
                tracing::info!(version = key.version, "retired an access-token signing key");
                retired += 1;
            }
        }
        Ok(retired)
    }

    /// Re-wraps the keys under the provider's current KEK; returns how many moved.
    pub async fn rewrap(&self) -> Result<u64, SigningKeyError> {
        Ok(crate::envelope::hierarchy::rewrap_sealed_keys(
            self.store.as_ref(),
            self.kms.as_ref(),
            KeyPurpose::Jwt,
            &jwt_key_owner(),
        )
        .await?)
    }

    async fn create(&self, version: i64, now: OffsetDateTime) -> Result<bool, SigningKeyError> {
        let material = Dek::generate().map_err(|e| SigningKeyError::Invalid(e.to_string()))?;
        let wrapped = self.kms.wrap(&material, &jwt_key_owner()).await?;
        let created = self
            .store
            .insert_sealed_key(
                KeyPurpose::Jwt,
                &SealedKey {
                    version,
                    created_at: now,
                    wrapped: Some(wrapped),
                },
            )
            .await?;
        if created {
            tracing::info!(version, "created an access-token signing key");
        }
        Ok(created)
    }

    async fn load(&self) -> Result<Vec<Loaded>, SigningKeyError> {
        let owner = jwt_key_owner();
        let mut loaded = Vec::new();
        for row in self.store.sealed_keys(KeyPurpose::Jwt).await? {
            let Some(wrapped) = &row.wrapped else {
                continue;
            };
            let dek = self.kms.unwrap(wrapped, &owner).await?;
            let secret = JwtSecret::new(dek.expose_bytes().to_vec())
                .map_err(|e| SigningKeyError::Invalid(e.to_string()))?;
            loaded.push(Loaded {
                version: row.version,
                created_at: row.created_at,
                secret,
            });
        }
        Ok(loaded)
    }

    async fn load_or_create(
        &self,
        now: OffsetDateTime,
    ) -> Result<(Vec<(String, JwtSecret)>, String), SigningKeyError> {
        let mut loaded = self.load().await?;
        if loaded.is_empty() {
            // Of instances starting together on an empty database, one creates it.
            self.create(1, now).await?;
            loaded = self.load().await?;
        }
        let signing = signing_version(&loaded, now)
            .ok_or_else(|| SigningKeyError::Invalid("no live signing key".into()))?;
        let keys = loaded
            .into_iter()
            .map(|key| (kid(key.version), key.secret))
            .collect();
        Ok((keys, kid(signing)))
    }
}

/// The newest key old enough to be known everywhere; the oldest live key when none is (a fresh
/// install, whose only key every instance loads on start).
fn signing_version(keys: &[Loaded], now: OffsetDateTime) -> Option<i64> {
    keys.iter()
        .filter(|key| now - key.created_at >= PUBLISH_DELAY)
        .map(|key| key.version)
        .max()
        .or_else(|| keys.iter().map(|key| key.version).min())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: i64, age_secs: i64, now: OffsetDateTime) -> Loaded {
        Loaded {
            version,
            created_at: now - time::Duration::seconds(age_secs),
            secret: JwtSecret::new(vec![u8::try_from(version).unwrap_or(0); 32])
                .unwrap_or_else(|_| unreachable!()),
        }
    }

    #[test]
    fn a_new_key_signs_only_once_every_instance_has_had_time_to_load_it() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            signing_version(&[key(1, 1, now)], now),
            Some(1),
            "fresh install"
        );
        let rotated = [key(1, 10_000, now), key(2, 10, now)];
        assert_eq!(signing_version(&rotated, now), Some(1), "just rotated");
        let published = [key(1, 10_000, now), key(2, 91, now)];
        assert_eq!(signing_version(&published, now), Some(2));
        assert_eq!(signing_version(&[], now), None);
    }
}
