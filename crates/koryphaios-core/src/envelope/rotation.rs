//! Key rotation maintenance: re-wrapping DEKs under the newest key version (without touching the
//! sealed data), reporting what uses which version, and retiring versions nothing uses.

use std::sync::Arc;

use super::{KeyProvider, KmsError};
use crate::audit::chain::{AuditKey, AuditKeyError};
use crate::ids::CredentialId;
use crate::store::{DekCount, Store, StoreError};

/// Why a maintenance run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The key provider failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The current version is too new to be sure every write under the old one has landed.
    #[error(
        "the current key version is less than {seconds} s old: wait, run `koryphaios kms rewrap` again, then retire"
    )]
    Settling {
        /// The settle period.
        seconds: u64,
    },
    /// A version still protects data.
    #[error(
        "key version {version} still wraps {count} data key(s); run `koryphaios kms rewrap` first"
    )]
    InUse {
        /// The version.
        version: i64,
        /// How many DEKs it wraps.
        count: u64,
    },
}

/// What a rewrap run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// DEKs now wrapped under the current version.
    pub rewrapped: u64,
    /// DEKs that changed concurrently (someone else re-wrapped them).
    pub skipped: u64,
    /// DEKs that could not be unwrapped (retired version, tampered row); left as they were.
    pub failed: u64,
}

/// Re-wraps every DEK of this provider that is not under its current key version, in batches of
/// `batch`. Each DEK is replaced on its own (compare-and-swap), so a run can stop anywhere and the
/// next one resumes with what is left. `progress` is called after every batch.
pub async fn rewrap_all(
    store: &Arc<dyn Store>,
    kms: &Arc<dyn KeyProvider>,
    batch: u32,
    mut progress: impl FnMut(&RewrapReport),
) -> Result<RewrapReport, RotationError> {
    let provider = kms.provider_name();
    let kek_id = kms.kek_id();
    let current = kms.current_version();
    let mut report = RewrapReport::default();
    let mut after: Option<(CredentialId, i64)> = None;
    loop {
        let records = store
            .wraps_to_rewrap(provider, &kek_id, current, after.as_ref(), batch.max(1))
            .await?;
        let Some(last) = records.last() else { break };
        after = Some((last.credential_id.clone(), last.version));
        for record in &records {
            match kms.rewrap(&record.wrapped, &record.owner).await {
                Ok(new) => {
                    if store.replace_wrap(record, &new).await? {
                        report.rewrapped += 1;
                    } else {
                        report.skipped += 1;
                    }
                }
                Err(KmsError::Unavailable(detail)) => {
                    return Err(KmsError::Unavailable(detail).into());
                }
                Err(error) => {
                    tracing::warn!(credential_id = %record.credential_id, version = record.version, %error, "cannot re-wrap data key");
                    report.failed += 1;
                }
            }
        }
        progress(&report);
    }
    // The audit chain's key is wrapped like a DEK and must not pin an old version either.
    match AuditKey::rewrap(store.as_ref(), kms.as_ref()).await {
        Ok(true) => report.rewrapped += 1,
        Ok(false) => {}
        Err(AuditKeyError::Kms(KmsError::Unavailable(detail))) => {
            return Err(KmsError::Unavailable(detail).into());
        }
        Err(AuditKeyError::Store(error)) => return Err(error.into()),
        Err(error) => {
            tracing::warn!(%error, "cannot re-wrap the audit key");
            report.failed += 1;
        }
    }
    // So are the access-token signing keys.
    match crate::session::SigningKeys::new(Arc::clone(store), Arc::clone(kms))
        .rewrap()
        .await
    {
        Ok(moved) => report.rewrapped += moved,
        Err(crate::session::SigningKeyError::Kms(KmsError::Unavailable(detail))) => {
            return Err(KmsError::Unavailable(detail).into());
        }
        Err(error) => {
            tracing::warn!(%error, "cannot re-wrap the access-token signing keys");
            report.failed += 1;
        }
    }
    progress(&report);
    Ok(report)
}

/// DEK counts of this provider's key versions (versions with no DEKs are listed with 0).
pub async fn inventory(store: &Arc<dyn Store>) -> Result<Vec<DekCount>, RotationError> {
    Ok(store.dek_inventory().await?)
}

/// Retires `version` once no DEK is wrapped under it and the current version has been current
/// for at least `settle` (so writes that wrapped under the old version just before the rotation
/// have landed and been counted).
pub async fn retire(
    store: &Arc<dyn Store>,
    kms: &Arc<dyn KeyProvider>,
    version: i64,
    settle: std::time::Duration,
) -> Result<(), RotationError> {
    let deks: u64 = store
        .dek_inventory()
        .await?
        .iter()
        .filter(|row| row.provider == kms.provider_name() && row.kek_version == version)
        .map(|row| row.count)
        .sum();
    // The signing keys are wrapped like DEKs and count the same.
    let signing_keys = store
        .sealed_keys(crate::store::KeyPurpose::Jwt)
        .await?
        .iter()
        .filter_map(|key| key.wrapped.as_ref())
        .filter(|wrapped| wrapped.provider == kms.provider_name() && wrapped.kek_version == version)
        .count();
    let count = deks + u64::try_from(signing_keys).unwrap_or(u64::MAX);
    if count > 0 {
        return Err(RotationError::InUse { version, count });
    }
    let newest = kms
        .versions()
        .await?
        .into_iter()
        .filter(|v| v.current)
        .map(|v| v.created_at)
        .max();
    if let Some(created) = newest {
        let age = time::OffsetDateTime::now_utc() - created;
        if age < time::Duration::try_from(settle).unwrap_or(time::Duration::ZERO) {
            return Err(RotationError::Settling {
                seconds: settle.as_secs(),
            });
        }
    }
    kms.retire(version).await?;
    Ok(())
}
