//! [`SealedKeyStore`] on SQLite: the KEK ring and the JWT signing keys, sealed.

use async_trait::async_trait;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::envelope::WrappedDek;
use koryphaios_core::store::{KeyPurpose, SealedKey, SealedKeyStore, StoreResult};
use sqlx::Row;

use crate::SqliteStore;
use crate::error::map_err;

#[async_trait]
impl SealedKeyStore for SqliteStore {
    async fn sealed_keys(&self, purpose: KeyPurpose) -> StoreResult<Vec<SealedKey>> {
        let rows = sqlx::query(
            "SELECT version, created_at, wrapped_key, kms_provider, kek_id, kek_version
             FROM sealed_keys WHERE purpose = $1 ORDER BY version",
        )
        .bind(purpose.as_str())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                let ciphertext: Option<Vec<u8>> = row.try_get("wrapped_key")?;
                let wrapped = match ciphertext {
                    Some(ciphertext) => Some(WrappedDek {
                        provider: row.try_get("kms_provider")?,
                        kek_id: row.try_get("kek_id")?,
                        kek_version: row.try_get("kek_version")?,
                        ciphertext,
                    }),
                    None => None,
                };
                Ok(SealedKey {
                    version: row.try_get("version")?,
                    created_at: from_unix_ms(row.try_get("created_at")?),
                    wrapped,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_err)
    }

    async fn insert_sealed_key(&self, purpose: KeyPurpose, key: &SealedKey) -> StoreResult<bool> {
        let wrapped = key.wrapped.as_ref();
        let inserted = sqlx::query(
            "INSERT INTO sealed_keys
                 (purpose, version, created_at, wrapped_key, kms_provider, kek_id, kek_version, retired_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (purpose, version) DO NOTHING",
        )
        .bind(purpose.as_str())
        .bind(key.version)
        .bind(to_unix_ms(key.created_at))
        .bind(wrapped.map(|w| w.ciphertext.clone()))
        .bind(wrapped.map(|w| w.provider.clone()))
        .bind(wrapped.map(|w| w.kek_id.clone()))
        .bind(wrapped.map(|w| w.kek_version))
        .bind(wrapped.is_none().then(|| to_unix_ms(key.created_at)))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn replace_sealed_key_wrap(
        &self,
        purpose: KeyPurpose,
        version: i64,
        old: &WrappedDek,
        new: &WrappedDek,
    ) -> StoreResult<bool> {
        let replaced = sqlx::query(
            "UPDATE sealed_keys SET wrapped_key = $1, kms_provider = $2, kek_id = $3, kek_version = $4
             WHERE purpose = $5 AND version = $6 AND wrapped_key = $7
               AND kms_provider = $8 AND kek_id = $9 AND kek_version = $10",
        )
        .bind(&new.ciphertext)
        .bind(&new.provider)
        .bind(&new.kek_id)
        .bind(new.kek_version)
        .bind(purpose.as_str())
        .bind(version)
        .bind(&old.ciphertext)
        .bind(&old.provider)
        .bind(&old.kek_id)
        .bind(old.kek_version)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(replaced.rows_affected() == 1)
    }

    async fn retire_sealed_key(&self, purpose: KeyPurpose, version: i64) -> StoreResult<bool> {
        let retired = sqlx::query(
            "UPDATE sealed_keys SET wrapped_key = NULL, kms_provider = NULL, kek_id = NULL,
                 kek_version = NULL, retired_at = $1
             WHERE purpose = $2 AND version = $3 AND retired_at IS NULL",
        )
        .bind(to_unix_ms(time::OffsetDateTime::now_utc()))
        .bind(purpose.as_str())
        .bind(version)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(retired.rows_affected() == 1)
    }
}
