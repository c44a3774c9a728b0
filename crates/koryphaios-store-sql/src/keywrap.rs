//! [`KeyWrapStore`]: which DEKs are wrapped under which key, and re-wrapping them.

use async_trait::async_trait;
use koryphaios_core::envelope::WrappedDek;
use koryphaios_core::ids::{CredentialId, UserId};
use koryphaios_core::store::{DekCount, KeyWrapStore, StoreResult, WrapRecord};

use crate::backend::Backend;
use crate::driver::{Columns, Query};
use crate::rows::{decode_err, wrap_from_row};
use crate::store::SqlStore;

#[async_trait]
impl<B: Backend> KeyWrapStore for SqlStore<B> {
    async fn dek_inventory(&self) -> StoreResult<Vec<DekCount>> {
        let rows = Query::<B::Db>::new(
            "SELECT kms_provider, kek_id, kek_version, COUNT(*) AS n FROM (
                 SELECT kms_provider, kek_id, kek_version FROM credential_versions
                 UNION ALL SELECT kms_provider, kek_id, kek_version FROM audit_key) AS wraps
             GROUP BY kms_provider, kek_id, kek_version ORDER BY kms_provider, kek_version, kek_id",
        )
        .fetch_all(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        rows.iter()
            .map(|row| {
                Ok(DekCount {
                    provider: row.try_get("kms_provider")?,
                    kek_id: row.try_get("kek_id")?,
                    kek_version: row.try_get("kek_version")?,
                    count: u64::try_from(row.try_get::<i64>("n")?).unwrap_or(0),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(B::map_err)
    }

    async fn wraps_to_rewrap(
        &self,
        provider: &str,
        kek_id: &str,
        current: i64,
        after: Option<&(CredentialId, i64)>,
        limit: u32,
    ) -> StoreResult<Vec<WrapRecord>> {
        let (after_id, after_version) =
            after.map_or(("", 0), |(id, version)| (id.as_str(), *version));
        let rows = Query::<B::Db>::new(
            "SELECT v.credential_id, v.version, c.user_id, v.kms_provider, v.kek_id, v.kek_version,
                    v.wrapped_dek
             FROM credential_versions v JOIN credentials c ON c.id = v.credential_id
             WHERE NOT (v.kms_provider = $1 AND v.kek_id = $2 AND v.kek_version = $3)
               AND (v.credential_id > $4 OR (v.credential_id = $4 AND v.version > $5))
             ORDER BY v.credential_id, v.version LIMIT $6",
        )
        .bind(provider)
        .bind(kek_id)
        .bind(current)
        .bind(after_id)
        .bind(after_version)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        rows.iter()
            .map(|row| {
                let credential_id: String = row.try_get("credential_id")?;
                let owner: String = row.try_get("user_id")?;
                Ok(WrapRecord {
                    credential_id: CredentialId::parse(&credential_id).map_err(decode_err)?,
                    version: row.try_get("version")?,
                    owner: UserId::parse(&owner).map_err(decode_err)?,
                    wrapped: wrap_from_row(row, "wrapped_dek")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(B::map_err)
    }

    async fn replace_wrap(&self, old: &WrapRecord, new: &WrappedDek) -> StoreResult<bool> {
        let replaced = self
            .execute_write(
                Query::new(
                    "UPDATE credential_versions
                     SET wrapped_dek = $1, kms_provider = $2, kek_id = $3, kek_version = $4
                     WHERE credential_id = $5 AND version = $6 AND kms_provider = $7
                       AND kek_id = $8 AND kek_version = $9 AND wrapped_dek = $10",
                )
                .bind(new.ciphertext.as_slice())
                .bind(new.provider.as_str())
                .bind(new.kek_id.as_str())
                .bind(new.kek_version)
                .bind(old.credential_id.as_str())
                .bind(old.version)
                .bind(old.wrapped.provider.as_str())
                .bind(old.wrapped.kek_id.as_str())
                .bind(old.wrapped.kek_version)
                .bind(old.wrapped.ciphertext.as_slice()),
            )
            .await?;
        Ok(replaced == 1)
    }
}
