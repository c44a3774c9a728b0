//! Keeping the audit chain key in the store: created once, wrapped by the key provider like a
//! DEK, re-wrapped when the provider's key rotates.

use super::chain::{AuditKey, AuditKeyError, audit_key_owner};
use crate::envelope::{Dek, KeyProvider};
use crate::store::AuditStore;

impl AuditKey {
    /// Unwraps the stored key, or creates, wraps and stores one if the store has none (when two
    /// instances race, the store keeps the first and both use it).
    pub async fn load_or_create(
        store: &dyn AuditStore,
        kms: &dyn KeyProvider,
    ) -> Result<Self, AuditKeyError> {
        let owner = audit_key_owner();
        let wrapped = match store.audit_key_wrap().await? {
            Some(wrapped) => wrapped,
            None => {
                // A chain without its key cannot be continued or verified: a new key would
                // silently start a second chain over the evidence of the first.
                if store.audit_chain_anchor().await?.is_some()
                    || !store.audit_chain_page(0, 1).await?.is_empty()
                    || store
                        .audit_chain_head()
                        .await?
                        .is_some_and(|head| head.seq > 0)
                {
                    return Err(AuditKeyError::Missing);
                }
                let fresh = Dek::generate()?;
                let wrapped = kms.wrap(&fresh, &owner).await?;
                store.store_audit_key_wrap(&wrapped).await?
            }
        };
        Ok(Self(kms.unwrap(&wrapped, &owner).await?))
    }

    /// Re-wraps the stored audit key under the provider's current version if it is not already;
    /// `true` when it was re-wrapped.
    pub async fn rewrap(
        store: &dyn AuditStore,
        kms: &dyn KeyProvider,
    ) -> Result<bool, AuditKeyError> {
        let Some(wrapped) = store.audit_key_wrap().await? else {
            return Ok(false);
        };
        if wrapped.provider == kms.provider_name()
            && wrapped.kek_id == kms.kek_id()
            && wrapped.kek_version == kms.current_version()
        {
            return Ok(false);
        }
        let new = kms.rewrap(&wrapped, &audit_key_owner()).await?;
        Ok(store.replace_audit_key_wrap(&wrapped, &new).await?)
    }
}
