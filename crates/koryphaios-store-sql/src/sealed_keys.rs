//! [`SealedKeyStore`]: the KEK ring and the JWT signing keys, sealed, one row per version.

use async_trait::async_trait;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::envelope::WrappedDek;
use koryphaios_core::store::{KeyPurpose, SealedKey, SealedKeyStore, StoreResult};

use crate::backend::Backend;
use crate::driver::{Columns, Query};
use crate::rows::wrap_from_row;
use crate::store::SqlStore;

#[async_trait]
impl<B: Backend> SealedKeyStore for SqlStore<B> {
    async fn sealed_keys(&self, purpose: KeyPurpose) -> StoreResult<Vec<SealedKey>> {
        let rows = Query::<B::Db>::new(
            "SELECT version, created_at, wrapped_key, kms_provider, kek_id, kek_version
             FROM sealed_keys WHERE purpose = $1 ORDER BY version",
        )
        .bind(purpose.as_str())
        .fetch_all(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        rows.iter()
            .map(|row| {
                let retired = row.try_get::<Option<Vec<u8>>>("wrapped_key")?.is_none();
                Ok(SealedKey {
                    version: row.try_get("version")?,
                    created_at: from_unix_ms(row.try_get("created_at")?),
                    wrapped: if retired {
                        None
                    } else {
                        Some(wrap_from_row(row, "wrapped_key")?)
                    },
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(B::map_err)
    }

    async fn insert_sealed_key(&self, purpose: KeyPurpose, key: &SealedKey) -> StoreResult<bool> {
        let wrapped = key.wrapped.as_ref();
        let inserted = self
            .execute_write(
                Query::new(
                    "INSERT INTO sealed_keys (purpose, version, created_at, wrapped_key,
                                              kms_provider, kek_id, kek_version, retired_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (purpose, version) DO NOTHING",
                )
                .bind(purpose.as_str())
                .bind(key.version)
                .bind(to_unix_ms(key.created_at))
                .bind(wrapped.map(|w| w.ciphertext.as_slice()))
                .bind(wrapped.map(|w| w.provider.as_str()))
                .bind(wrapped.map(|w| w.kek_id.as_str()))
                .bind(wrapped.map(|w| w.kek_version))
                .bind(wrapped.is_none().then(|| to_unix_ms(key.created_at))),
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn replace_sealed_key_wrap(
        &self,
        purpose: KeyPurpose,
        version: i64,
        old: &WrappedDek,
        new: &WrappedDek,
    ) -> StoreResult<bool> {
        let replaced = self
            .execute_write(
                Query::new(
                    "UPDATE sealed_keys
                     SET wrapped_key = $1, kms_provider = $2, kek_id = $3, kek_version = $4
                     WHERE purpose = $5 AND version = $6 AND wrapped_key = $7
                       AND kms_provider = $8 AND kek_id = $9 AND kek_version = $10",
                )
                .bind(new.ciphertext.as_slice())
                .bind(new.provider.as_str())
                .bind(new.kek_id.as_str())
                .bind(new.kek_version)
                .bind(purpose.as_str())
                .bind(version)
                .bind(old.ciphertext.as_slice())
                .bind(old.provider.as_str())
                .bind(old.kek_id.as_str())
                .bind(old.kek_version),
            )
            .await?;
        Ok(replaced == 1)
    }

    async fn retire_sealed_key(&self, purpose: KeyPurpose, version: i64) -> StoreResult<bool> {
        let retired = self
            .execute_write(
                Query::new(
                    "UPDATE sealed_keys SET wrapped_key = NULL, kms_provider = NULL, kek_id = NULL,
                         kek_version = NULL, retired_at = $1
                     WHERE purpose = $2 AND version = $3 AND retired_at IS NULL",
                )
                .bind(to_unix_ms(time::OffsetDateTime::now_utc()))
                .bind(purpose.as_str())
                .bind(version),
            )
            .await?;
        Ok(retired == 1)
    }
}
