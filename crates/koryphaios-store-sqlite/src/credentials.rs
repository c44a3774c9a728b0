//! [`CredentialStore`] on SQLite: credentials, their sealed versions, each change with its audit
//! record in one transaction.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::credentials::{Credential, CredentialFilter, SealedVersion};
use koryphaios_core::envelope::WrappedDek;
use koryphaios_core::ids::{CredentialId, UserId};
use koryphaios_core::pagination::PageRequest;
use koryphaios_core::store::{CredentialStore, StoreError, StoreResult, VersionAdded};
use serde_json::{Map, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::audit::{commit_audited, insert_audit};
use crate::error::map_err;
use koryphaios_core::group_commit::WriteJob;

fn decode_err(error: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(error))
}

pub(crate) fn credential_from_row(row: &SqliteRow) -> Result<Credential, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    let metadata: String = row.try_get("metadata")?;
    let optional = |column: &str| {
        row.try_get::<Option<i64>, _>(column)
            .map(|v| v.map(from_unix_ms))
    };
    Ok(Credential {
        id: CredentialId::parse(&id).map_err(decode_err)?,
        user_id: UserId::parse(&user_id).map_err(decode_err)?,
        provider: row.try_get("provider")?,
        kind: row.try_get("kind")?,
        metadata: serde_json::from_str(&metadata).map_err(decode_err)?,
        current_version: row.try_get("current_version")?,
        created_at: from_unix_ms(row.try_get("created_at")?),
        updated_at: from_unix_ms(row.try_get("updated_at")?),
        expires_at: optional("expires_at")?,
        last_used_at: optional("last_used_at")?,
    })
}

fn version_from_row(row: &SqliteRow) -> Result<SealedVersion, sqlx::Error> {
    Ok(SealedVersion {
        version: row.try_get("v_version")?,
        sealed: row.try_get("sealed")?,
        wrapped_dek: WrappedDek {
            provider: row.try_get("kms_provider")?,
            kek_id: row.try_get("kek_id")?,
            kek_version: row.try_get("kek_version")?,
            ciphertext: row.try_get("wrapped_dek")?,
        },
        created_at: from_unix_ms(row.try_get("v_created_at")?),
    })
}

async fn insert_version(
    conn: &mut SqliteConnection,
    id: &CredentialId,
    version: &SealedVersion,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO credential_versions (credential_id, version, sealed, wrapped_dek, kms_provider, kek_id, kek_version, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id.as_str())
    .bind(version.version)
    .bind(&version.sealed)
    .bind(&version.wrapped_dek.ciphertext)
    .bind(&version.wrapped_dek.provider)
    .bind(&version.wrapped_dek.kek_id)
    .bind(version.wrapped_dek.kek_version)
    .bind(to_unix_ms(version.created_at))
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Inserts a credential and its first version on `conn` (the caller's transaction).
pub(crate) async fn insert_credential_rows(
    conn: &mut SqliteConnection,
    credential: &Credential,
    first: &SealedVersion,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO credentials (id, user_id, provider, kind, metadata, current_version, created_at, updated_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(credential.id.as_str())
    .bind(credential.user_id.as_str())
    .bind(&credential.provider)
    .bind(&credential.kind)
    .bind(metadata_json(&credential.metadata)?)
    .bind(credential.current_version)
    .bind(to_unix_ms(credential.created_at))
    .bind(to_unix_ms(credential.updated_at))
    .bind(credential.expires_at.map(to_unix_ms))
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    insert_version(conn, &credential.id, first).await
}

fn metadata_json(metadata: &Map<String, Value>) -> StoreResult<String> {
    serde_json::to_string(metadata).map_err(|e| StoreError::Internal(e.to_string()))
}

#[async_trait]
impl CredentialStore for SqliteStore {
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
        let rows = sqlx::query(
            "SELECT * FROM credentials
             WHERE user_id = ?1 AND deleted_at IS NULL
               AND (?2 IS NULL OR provider = ?2)
               AND (?3 IS NULL
                    OR (?3 = 1 AND (expires_at IS NULL OR expires_at > ?4))
                    OR (?3 = 0 AND expires_at IS NOT NULL AND expires_at <= ?4))
               AND (?5 IS NULL OR (created_at, id) < (?5, ?6))
             ORDER BY created_at DESC, id DESC
             LIMIT ?7",
        )
        .bind(owner.as_str())
        .bind(filter.provider.as_deref())
        .bind(filter.active)
        .bind(to_unix_ms(now))
        .bind(page.after.as_ref().map(|after| after.created_at_ms))
        .bind(page.after.as_ref().map(|after| after.id.as_str()))
        .bind(i64::from(page.limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(credential_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }

    async fn find_credential(
        &self,
        owner: &UserId,
        id: &CredentialId,
    ) -> StoreResult<Option<Credential>> {
        let row = sqlx::query(
            "SELECT * FROM credentials WHERE id = ? AND user_id = ? AND deleted_at IS NULL",
        )
        .bind(id.as_str())
        .bind(owner.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.as_ref()
            .map(credential_from_row)
            .transpose()
            .map_err(map_err)
    }

    async fn count_credentials_by_provider(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT provider, COUNT(*) FROM credentials WHERE deleted_at IS NULL GROUP BY provider ORDER BY provider",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|(provider, n)| (provider, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    async fn credential_belongs_to(&self, owner: &UserId, id: &CredentialId) -> StoreResult<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM credentials WHERE id = ? AND user_id = ?")
                .bind(id.as_str())
                .bind(owner.as_str())
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?;
        Ok(found.is_some())
    }

    async fn find_current_version(
        &self,
        owner: &UserId,
        id: &CredentialId,
    ) -> StoreResult<Option<(Credential, SealedVersion)>> {
        let row = sqlx::query(
            "SELECT c.*, v.version AS v_version, v.sealed, v.wrapped_dek, v.kms_provider, v.kek_id, v.kek_version,
                    v.created_at AS v_created_at
             FROM credentials c JOIN credential_versions v ON v.credential_id = c.id AND v.version = c.current_version
             WHERE c.id = ? AND c.user_id = ? AND c.deleted_at IS NULL",
        )
        .bind(id.as_str())
        .bind(owner.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.map(|row| Ok((credential_from_row(&row)?, version_from_row(&row)?)))
            .transpose()
            .map_err(map_err)
    }

    async fn update_credential_metadata(
        &self,
        owner: &UserId,
        id: &CredentialId,
        metadata: &Map<String, Value>,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<Option<Credential>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let row = sqlx::query(
            "UPDATE credentials SET metadata = ?, updated_at = ?
             WHERE id = ? AND user_id = ? AND deleted_at IS NULL RETURNING *",
        )
        .bind(metadata_json(metadata)?)
        .bind(to_unix_ms(now))
        .bind(id.as_str())
        .bind(owner.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        let credential = credential_from_row(&row).map_err(map_err)?;
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await?;
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
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let deleted = sqlx::query(
            "UPDATE credentials SET deleted_at = ?, deleted_reason = ?, updated_at = ?
             WHERE id = ? AND user_id = ? AND deleted_at IS NULL",
        )
        .bind(to_unix_ms(now))
        .bind(reason)
        .bind(to_unix_ms(now))
        .bind(id.as_str())
        .bind(owner.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await?;
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
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT current_version FROM credentials WHERE id = ? AND user_id = ? AND deleted_at IS NULL",
        )
        .bind(id.as_str())
        .bind(owner.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        match current {
            None => return Ok(VersionAdded::NotFound),
            Some(current) if current != expected_current => return Ok(VersionAdded::Conflict),
            Some(_) => {}
        }
        insert_version(&mut tx, id, version).await?;
        let row = sqlx::query(
            "UPDATE credentials SET current_version = ?, updated_at = ? WHERE id = ? RETURNING *",
        )
        .bind(version.version)
        .bind(to_unix_ms(version.created_at))
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
        let credential = credential_from_row(&row).map_err(map_err)?;
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await?;
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
