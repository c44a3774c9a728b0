//! [`CredentialStore`]: credentials and their sealed versions, each change with its audit record
//! in one transaction.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::to_unix_ms;
use koryphaios_core::credentials::{Credential, CredentialFilter, SealedVersion};
use koryphaios_core::group_commit::WriteJob;
use koryphaios_core::ids::{CredentialId, UserId};
use koryphaios_core::pagination::PageRequest;
use koryphaios_core::store::{CredentialStore, StoreResult, VersionAdded};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::audit_chain::commit_with_audit;
use crate::backend::Backend;
use crate::credential_rows::{
    credential_from_row, insert_version, metadata_json, version_from_row,
};
use crate::driver::{Columns, Query};
use crate::store::SqlStore;

#[async_trait]
impl<B: Backend> CredentialStore for SqlStore<B> {
    async fn insert_credential(
        &self,
        credential: &Credential,
        first: &SealedVersion,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        self.group_commit
            .submit(WriteJob::InsertCredential(Box::new((
                credential.clone(),
                first.clone(),
                audit.clone(),
            ))))
            .await
    }

    async fn list_credentials(
        &self,
        owner: &UserId,
        filter: &CredentialFilter,
        now: OffsetDateTime,
        page: &PageRequest<CredentialId>,
    ) -> StoreResult<Vec<Credential>> {
        let rows = Query::<B::Db>::new(
            "SELECT * FROM credentials
             WHERE user_id = $1 AND deleted_at IS NULL
               AND ($2 IS NULL OR provider = $2)
               AND ($3 IS NULL
                    OR ($3 AND (expires_at IS NULL OR expires_at > $4))
                    OR (NOT $3 AND expires_at IS NOT NULL AND expires_at <= $4))
               AND ($5 IS NULL OR (created_at, id) < ($5, $6))
             ORDER BY created_at DESC, id DESC
             LIMIT $7",
        )
        .bind(owner.as_str())
        .bind(filter.provider.as_deref())
        .bind(filter.active)
        .bind(to_unix_ms(now))
        .bind(page.after.as_ref().map(|after| after.created_at_ms))
        .bind(page.after.as_ref().map(|after| after.id.as_str()))
        .bind(i64::from(page.limit))
        .fetch_all(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        rows.iter()
            .map(credential_from_row)
            .collect::<Result<_, _>>()
            .map_err(B::map_err)
    }

    async fn find_credential(
        &self,
        owner: &UserId,
        id: &CredentialId,
    ) -> StoreResult<Option<Credential>> {
        let row = Query::<B::Db>::new(
            "SELECT * FROM credentials WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
        )
        .bind(id.as_str())
        .bind(owner.as_str())
        .fetch_optional(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        row.as_ref()
            .map(credential_from_row)
            .transpose()
            .map_err(B::map_err)
    }

    async fn count_credentials_by_provider(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows = Query::<B::Db>::new(
            "SELECT provider, COUNT(*) AS n FROM credentials WHERE deleted_at IS NULL
             GROUP BY provider ORDER BY provider",
        )
        .fetch_all(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        rows.iter()
            .map(|row| {
                let n: i64 = row.try_get("n")?;
                Ok((row.try_get("provider")?, u64::try_from(n).unwrap_or(0)))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(B::map_err)
    }

    async fn credential_belongs_to(&self, owner: &UserId, id: &CredentialId) -> StoreResult<bool> {
        Query::<B::Db>::new(
            "SELECT EXISTS (SELECT 1 FROM credentials WHERE id = $1 AND user_id = $2)",
        )
        .bind(id.as_str())
        .bind(owner.as_str())
        .fetch_scalar(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)
    }

    async fn find_current_version(
        &self,
        owner: &UserId,
        id: &CredentialId,
    ) -> StoreResult<Option<(Credential, SealedVersion)>> {
        let row = Query::<B::Db>::new(
            "SELECT c.*, v.version AS v_version, v.sealed, v.wrapped_dek, v.kms_provider, v.kek_id, v.kek_version,
                    v.created_at AS v_created_at
             FROM credentials c JOIN credential_versions v ON v.credential_id = c.id AND v.version = c.current_version
             WHERE c.id = $1 AND c.user_id = $2 AND c.deleted_at IS NULL",
        )
        .bind(id.as_str())
        .bind(owner.as_str())
        .fetch_optional(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        row.map(|row| Ok((credential_from_row(&row)?, version_from_row(&row)?)))
            .transpose()
            .map_err(B::map_err)
    }

    async fn find_newest_active_version(
        &self,
        owner: &UserId,
        provider: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<(Credential, SealedVersion)>> {
        let row = Query::<B::Db>::new(
            "SELECT c.*, v.version AS v_version, v.sealed, v.wrapped_dek, v.kms_provider, v.kek_id, v.kek_version,
                    v.created_at AS v_created_at
             FROM credentials c JOIN credential_versions v ON v.credential_id = c.id AND v.version = c.current_version
             WHERE c.user_id = $1 AND c.provider = $2 AND c.deleted_at IS NULL
               AND (c.expires_at IS NULL OR c.expires_at > $3)
             ORDER BY c.created_at DESC, c.id DESC
             LIMIT 1",
        )
        .bind(owner.as_str())
        .bind(provider)
        .bind(to_unix_ms(now))
        .fetch_optional(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        row.map(|row| Ok((credential_from_row(&row)?, version_from_row(&row)?)))
            .transpose()
            .map_err(B::map_err)
    }

    async fn update_credential_metadata(
        &self,
        owner: &UserId,
        id: &CredentialId,
        metadata: &Map<String, Value>,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<Option<Credential>> {
        let mut tx = self.backend.write().await?;
        let row = Query::<B::Db>::new(
            "UPDATE credentials SET metadata = $1, updated_at = $2
             WHERE id = $3 AND user_id = $4 AND deleted_at IS NULL RETURNING *",
        )
        .bind(metadata_json(metadata)?)
        .bind(to_unix_ms(now))
        .bind(id.as_str())
        .bind(owner.as_str())
        .fetch_optional(&mut tx)
        .await
        .map_err(B::map_err)?;
        let Some(row) = row else { return Ok(None) };
        let credential = credential_from_row(&row).map_err(B::map_err)?;
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
        Ok(Some(credential))
    }

    async fn delete_credential(
        &self,
        owner: &UserId,
        id: &CredentialId,
        reason: Option<&str>,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        let mut tx = self.backend.write().await?;
        // The guard is re-checked after any concurrent delete commits: one of two deletes wins.
        let deleted = Query::<B::Db>::new(
            "UPDATE credentials SET deleted_at = $1, deleted_reason = $2, updated_at = $1
             WHERE id = $3 AND user_id = $4 AND deleted_at IS NULL",
        )
        .bind(to_unix_ms(now))
        .bind(reason)
        .bind(id.as_str())
        .bind(owner.as_str())
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        if deleted == 0 {
            return Ok(false);
        }
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
        Ok(true)
    }

    async fn add_credential_version(
        &self,
        owner: &UserId,
        id: &CredentialId,
        expected_current: i64,
        version: &SealedVersion,
        audit: &AuditEntry,
    ) -> StoreResult<VersionAdded> {
        let mut tx = self.backend.write().await?;
        // Compare-and-swap: the row stays locked until commit, so a concurrent rotation waits
        // here and then reads the version this one made current (Conflict), or finds it deleted.
        let current: Option<i64> = Query::<B::Db>::new(format!(
            "SELECT current_version FROM credentials
             WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL{}",
            B::FOR_UPDATE
        ))
        .bind(id.as_str())
        .bind(owner.as_str())
        .fetch_optional_scalar(&mut tx)
        .await
        .map_err(B::map_err)?;
        match current {
            None => return Ok(VersionAdded::NotFound),
            Some(current) if current != expected_current => return Ok(VersionAdded::Conflict),
            Some(_) => {}
        }
        insert_version::<B>(&mut tx, id, version).await?;
        let row = Query::<B::Db>::new(
            "UPDATE credentials SET current_version = $1, updated_at = $2 WHERE id = $3 RETURNING *",
        )
        .bind(version.version)
        .bind(to_unix_ms(version.created_at))
        .bind(id.as_str())
        .fetch_one(&mut tx)
        .await
        .map_err(B::map_err)?;
        let credential = credential_from_row(&row).map_err(B::map_err)?;
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
        Ok(VersionAdded::Added(credential))
    }

    async fn record_credential_access(
        &self,
        owner: &UserId,
        id: &CredentialId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        self.group_commit
            .submit(WriteJob::Access(Box::new((
                owner.clone(),
                id.clone(),
                now,
                audit.clone(),
            ))))
            .await
    }
}
