//! The key-management port: wrapping DEKs under per-user KEKs, and managing key versions.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::Dek;
use crate::ids::UserId;

/// A DEK wrapped by a key provider, with what is needed to unwrap it again.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDek {
    /// The provider that wrapped it (`local`, `age`, …).
    pub provider: String,
    /// Which key (ring) of that provider.
    pub kek_id: String,
    /// Which version of that key.
    pub kek_version: i64,
    /// The provider's ciphertext.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for WrappedDek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedDek")
            .field("provider", &self.provider)
            .field("kek_id", &self.kek_id)
            .field("kek_version", &self.kek_version)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// One version of a provider's master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersionInfo {
    /// The version number (1, 2, …).
    pub version: i64,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// Whether its key material is gone (retired versions cannot unwrap).
    pub retired: bool,
    /// Whether new DEKs are wrapped under it.
    pub current: bool,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The wrapped DEK does not open: wrong key, wrong owner, or tampered.
    #[error("the wrapped key does not open under this key and owner")]
    Unauthentic,
    /// The wrapped DEK names a key version this provider does not have (or has retired).
    #[error("key version {0} is not available (unknown or retired)")]
    UnknownVersion(i64),
    /// The wrapped DEK belongs to another provider or key.
    #[error("the wrapped key belongs to provider {provider:?} key {kek_id:?}, not this one")]
    WrongKey {
        /// Its provider.
        provider: String,
        /// Its key id.
        kek_id: String,
    },
    /// The operation is refused (e.g. retiring the current version).
    #[error("{0}")]
    Refused(String),
    /// The provider could not be reached.
    #[error("key provider unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("key provider error: {0}")]
    Internal(String),
}

/// A key-management service that wraps DEKs under per-user key-encryption keys.
#[async_trait]
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// The provider's name as stored with every envelope.
    fn provider_name(&self) -> &'static str;

    /// The key id new DEKs are wrapped under.
    fn kek_id(&self) -> String;

    /// The version new DEKs are wrapped under.
    fn current_version(&self) -> i64;

    /// Wraps `dek` for `owner` under the current version.
    async fn wrap(&self, dek: &Dek, owner: &UserId) -> Result<WrappedDek, KmsError>;

    /// Unwraps a DEK wrapped for `owner`.
    async fn unwrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<Dek, KmsError>;

    /// Re-wraps under the current version without touching what the DEK sealed.
    async fn rewrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<WrappedDek, KmsError> {
        let dek = self.unwrap(wrapped, owner).await?;
        self.wrap(&dek, owner).await
    }

    /// Every version with its state.
    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KmsError>;

    /// Adds a new version and makes it current; returns its number.
    async fn rotate(&self) -> Result<i64, KmsError>;

    /// Destroys a non-current version's key material. The caller checks nothing uses it.
    async fn retire(&self, version: i64) -> Result<(), KmsError>;

    /// Re-reads key material changed by another process (e.g. `koryphaios kms rotate`).
    async fn reload(&self) -> Result<(), KmsError>;

    /// A cheap self-check for readiness.
    async fn check(&self) -> Result<(), KmsError>;
}
