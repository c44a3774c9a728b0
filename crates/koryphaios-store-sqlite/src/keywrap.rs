//! [`KeyWrapStore`] on SQLite: what is wrapped under which key version, and re-wrapping.

use async_trait::async_trait;
use koryphaios_core::envelope::WrappedDek;
use koryphaios_core::ids::{CredentialId, UserId};
use koryphaios_core::store::{DekCount, KeyWrapStore, StoreResult, WrapRecord};
use sqlx::Row;

use crate::SqliteStore;
use crate::error::map_err;

#[async_trait]
impl KeyWrapStore for SqliteStore {
    async fn dek_inventory(&self) -> StoreResult<Vec<DekCount>> {
        let rows = sqlx::query(
            // The audit chain's key counts like a DEK: retiring its version would lose the chain.
            "SELECT kms_provider, kek_id, kek_version, COUNT(*) AS n FROM (
                 SELECT kms_provider, kek_id, kek_version FROM credential_versions
                 UNION ALL SELECT kms_provider, kek_id, kek_version FROM audit_key)
             GROUP BY kms_provider, kek_id, kek_version ORDER BY kms_provider, kek_version, kek_id",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                Ok(DekCount {
                    provider: row.try_get("kms_provider")?,
                    kek_id: row.try_get("kek_id")?,
                    kek_version: row.try_get("kek_version")?,
                    count: u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_err)
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
        let rows = sqlx::query(
            "SELECT v.credential_id, v.version, c.user_id, v.kms_provider, v.kek_id, v.kek_version, v.wrapped_dek
             FROM credential_versions v JOIN credentials c ON c.id = v.credential_id
             WHERE NOT (v.kms_provider = ?1 AND v.kek_id = ?2 AND v.kek_version = ?3)
               AND (v.credential_id > ?4 OR (v.credential_id = ?4 AND v.version > ?5))
             ORDER BY v.credential_id, v.version LIMIT ?6",
        )
        .bind(provider)
        .bind(kek_id)
        .bind(current)
        .bind(after_id)
        .bind(after_version)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                let decode = |e: koryphaios_core::ids::InvalidId| sqlx::Error::Decode(Box::new(e));
                let credential_id: String = row.try_get("credential_id")?;
                let owner: String = row.try_get("user_id")?;
                Ok(WrapRecord {
                    credential_id: CredentialId::parse(&credential_id).map_err(decode)?,
                    version: row.try_get("version")?,
                    owner: UserId::parse(&owner).map_err(decode)?,
                    wrapped: WrappedDek {
                        provider: row.try_get("kms_provider")?,
                        kek_id: row.try_get("kek_id")?,
                        kek_version: row.try_get("kek_version")?,
                        ciphertext: row.try_get("wrapped_dek")?,
                    },
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_err)
    }

    async fn replace_wrap(&self, old: &WrapRecord, new: &WrappedDek) -> StoreResult<bool> {
        let replaced = sqlx::query(
            "UPDATE credential_versions SET wrapped_dek = ?, kms_provider = ?, kek_id = ?, kek_version = ?
             WHERE credential_id = ? AND version = ? AND kms_provider = ? AND kek_id = ? AND kek_version = ? AND wrapped_dek = ?",
        )
        .bind(&new.ciphertext)
        .bind(&new.provider)
        .bind(&new.kek_id)
        .bind(new.kek_version)
        .bind(old.credential_id.as_str())
        .bind(old.version)
        .bind(&old.wrapped.provider)
        .bind(&old.wrapped.kek_id)
        .bind(old.wrapped.kek_version)
        .bind(&old.wrapped.ciphertext)
        .execute(&self.writer)
        .await
        .map_err(map_err)?
        .rows_affected();
        Ok(replaced == 1)
    }
}
