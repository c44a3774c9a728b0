//! [`ApiKeyStore`] on SQLite: keys, their secret hashes, batched usage.

use async_trait::async_trait;
use koryphaios_core::api_keys::{ApiKey, KeyLookup, Tier};
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::ids::{ApiKeyId, UserId};
use koryphaios_core::pagination::PageRequest;
use koryphaios_core::scope::{Scope, ScopeSet};
use koryphaios_core::secret::TokenHash;
use koryphaios_core::store::{ApiKeyStore, StoreError, StoreResult};
use koryphaios_core::users::Role;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::audit::{commit_audited, insert_audit};
use crate::error::map_err;

/// A `WITH` clause naming `descendants`: every key created through key `?1` (its children,
/// their children, …), not the key itself.
macro_rules! descendants {
    () => {
        "WITH RECURSIVE descendants(id) AS (
             SELECT id FROM api_keys WHERE parent_id = ?1
             UNION SELECT k.id FROM api_keys k JOIN descendants d ON k.parent_id = d.id
         ) "
    };
}

fn decode_err(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

fn scopes_text(scopes: &ScopeSet) -> String {
    scopes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn key_from_row(row: &SqliteRow) -> Result<ApiKey, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    let scopes: String = row.try_get("scopes")?;
    let tier: String = row.try_get("tier")?;
    let metadata: String = row.try_get("metadata")?;
    let optional = |column: &str| {
        row.try_get::<Option<i64>, _>(column)
            .map(|v| v.map(from_unix_ms))
    };
    Ok(ApiKey {
        id: ApiKeyId::parse(&id).map_err(|e| decode_err(e.to_string()))?,
        user_id: UserId::parse(&user_id).map_err(|e| decode_err(e.to_string()))?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        scopes: ScopeSet::new(
            scopes
                .split_whitespace()
                .map(str::parse::<Scope>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| decode_err(e.to_string()))?,
        ),
        tier: Tier::parse(&tier).ok_or_else(|| decode_err(format!("unknown tier {tier:?}")))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| decode_err(e.to_string()))?,
        created_at: from_unix_ms(row.try_get("created_at")?),
        updated_at: from_unix_ms(row.try_get("updated_at")?),
        expires_at: optional("expires_at")?,
        revoked_at: optional("revoked_at")?,
        last_used_at: optional("last_used_at")?,
        usage_count: row.try_get("usage_count")?,
        parent_id: row
            .try_get::<Option<String>, _>("parent_id")?
            .map(|id| ApiKeyId::parse(&id).map_err(|e| decode_err(e.to_string())))
            .transpose()?,
    })
}

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn insert_api_key(
        &self,
        key: &ApiKey,
        secret_hash: &TokenHash,
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        let metadata = serde_json::to_string(&key.metadata)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        // The single writer orders this check with the parent's revocation.
        if let Some(parent) = &key.parent_id {
            let live: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM api_keys WHERE id = ? AND user_id = ? AND revoked_at IS NULL
                                AND (expires_at IS NULL OR expires_at > ?))",
            )
            .bind(parent.as_str())
            .bind(key.user_id.as_str())
            .bind(to_unix_ms(key.created_at))
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            if !live {
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, scopes, tier, metadata, created_at, updated_at, expires_at, parent_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(key.id.as_str())
        .bind(key.user_id.as_str())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(scopes_text(&key.scopes))
        .bind(key.tier.as_str())
        .bind(metadata)
        .bind(to_unix_ms(key.created_at))
        .bind(to_unix_ms(key.updated_at))
        .bind(key.expires_at.map(to_unix_ms))
        .bind(key.parent_id.as_ref().map(ApiKeyId::as_str))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query("INSERT INTO api_key_secrets (key_hash, key_id, created_at) VALUES (?, ?, ?)")
            .bind(secret_hash.as_str())
            .bind(key.id.as_str())
            .bind(to_unix_ms(key.created_at))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await?;
        Ok(true)
    }

    async fn list_api_keys(
        &self,
        owner: &UserId,
        page: &PageRequest<ApiKeyId>,
    ) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query(
            "SELECT * FROM api_keys WHERE user_id = ?1 AND (?2 IS NULL OR (created_at, id) < (?2, ?3))
             ORDER BY created_at DESC, id DESC LIMIT ?4",
        )
        .bind(owner.as_str())
        .bind(page.after.as_ref().map(|after| after.created_at_ms))
        .bind(page.after.as_ref().map(|after| after.id.as_str()))
        .bind(i64::from(page.limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(key_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }

    async fn find_api_key(&self, owner: &UserId, id: &ApiKeyId) -> StoreResult<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ? AND user_id = ?")
            .bind(id.as_str())
            .bind(owner.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(key_from_row).transpose().map_err(map_err)
    }

    async fn update_api_key(
        &self,
        owner: &UserId,
        id: &ApiKeyId,
        name: Option<&str>,
        scopes: Option<&ScopeSet>,
        tier: Option<Tier>,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<Option<ApiKey>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let row = sqlx::query(
            "UPDATE api_keys SET name = COALESCE(?, name), scopes = COALESCE(?, scopes), tier = COALESCE(?, tier), updated_at = ?
             WHERE id = ? AND user_id = ? AND revoked_at IS NULL RETURNING *",
        )
        .bind(name)
        .bind(scopes.map(scopes_text))
        .bind(tier.map(Tier::as_str))
        .bind(to_unix_ms(now))
        .bind(id.as_str())
        .bind(owner.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        let key = key_from_row(&row).map_err(map_err)?;
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await?;
        Ok(Some(key))
    }

    async fn revoke_api_key(
        &self,
        owner: &UserId,
        id: &ApiKeyId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let revoked = sqlx::query("UPDATE api_keys SET revoked_at = ?, updated_at = ? WHERE id = ? AND user_id = ? AND revoked_at IS NULL")
            .bind(to_unix_ms(now))
            .bind(to_unix_ms(now))
            .bind(id.as_str())
            .bind(owner.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        if revoked == 0 {
            return Ok(false);
        }
        sqlx::query(concat!(
            descendants!(),
            "UPDATE api_keys SET revoked_at = ?2, updated_at = ?2
             WHERE id IN (SELECT id FROM descendants) AND revoked_at IS NULL"
        ))
        .bind(id.as_str())
        .bind(to_unix_ms(now))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await?;
        Ok(true)
    }

    async fn roll_api_key(
        &self,
        owner: &UserId,
        id: &ApiKeyId,
        new_hash: &TokenHash,
        new_prefix: &str,
        old_expires_at: OffsetDateTime,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<Option<ApiKey>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let row = sqlx::query(
            "UPDATE api_keys SET prefix = ?, updated_at = ? WHERE id = ? AND user_id = ? AND revoked_at IS NULL RETURNING *",
        )
        .bind(new_prefix)
        .bind(to_unix_ms(now))
        .bind(id.as_str())
        .bind(owner.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        let key = key_from_row(&row).map_err(map_err)?;
        // Current secrets end with the grace period (earlier ends are kept).
        sqlx::query(
            "UPDATE api_key_secrets SET expires_at = MIN(COALESCE(expires_at, ?1), ?1) WHERE key_id = ?2",
        )
        .bind(to_unix_ms(old_expires_at))
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        // Secrets whose grace ended long ago are of no use any more.
        sqlx::query("DELETE FROM api_key_secrets WHERE key_id = ? AND expires_at IS NOT NULL AND expires_at <= ?")
            .bind(id.as_str())
            .bind(to_unix_ms(now))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        // Keys created through it stop working with its old secrets (earlier ends are kept).
        sqlx::query(concat!(
            descendants!(),
            "UPDATE api_keys SET expires_at = MIN(COALESCE(expires_at, ?2), ?2), updated_at = ?3
             WHERE id IN (SELECT id FROM descendants) AND revoked_at IS NULL"
        ))
        .bind(id.as_str())
        .bind(to_unix_ms(old_expires_at))
        .bind(to_unix_ms(now))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query("INSERT INTO api_key_secrets (key_hash, key_id, created_at) VALUES (?, ?, ?)")
            .bind(new_hash.as_str())
            .bind(id.as_str())
            .bind(to_unix_ms(now))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_audit(&self.chain, &mut tx, audit).await?;
        commit_audited(tx, audit).await?;
        Ok(Some(key))
    }

    async fn lookup_api_key(&self, hash: &TokenHash) -> StoreResult<Option<KeyLookup>> {
        let row = sqlx::query(
            "SELECT k.*, s.key_hash AS secret_hash, s.expires_at AS secret_expires_at, u.role AS owner_role,
                    u.username AS owner_username, u.tier AS owner_tier, u.disabled_at IS NOT NULL AS owner_disabled
             FROM api_key_secrets s
             JOIN api_keys k ON k.id = s.key_id
             JOIN users u ON u.id = k.user_id
             WHERE s.key_hash = ?",
        )
        .bind(hash.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        let read = || -> Result<KeyLookup, sqlx::Error> {
            let role: String = row.try_get("owner_role")?;
            let tier: String = row.try_get("owner_tier")?;
            Ok(KeyLookup {
                key: key_from_row(&row)?,
                owner_role: Role::parse(&role)
                    .ok_or_else(|| decode_err(format!("unknown role {role:?}")))?,
                owner_tier: Tier::parse(&tier)
                    .ok_or_else(|| decode_err(format!("unknown tier {tier:?}")))?,
                owner_disabled: row.try_get("owner_disabled")?,
                owner_username: row.try_get("owner_username")?,
                secret_expires_at: row
                    .try_get::<Option<i64>, _>("secret_expires_at")?
                    .map(from_unix_ms),
                stored_hash: TokenHash::from_stored(row.try_get("secret_hash")?),
            })
        };
        read().map(Some).map_err(map_err)
    }

    async fn record_api_key_usage(
        &self,
        usage: &[(ApiKeyId, u64, OffsetDateTime)],
    ) -> StoreResult<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        for (id, count, last_used) in usage {
            sqlx::query(
                "UPDATE api_keys SET usage_count = usage_count + ?, last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
            )
            .bind(i64::try_from(*count).unwrap_or(i64::MAX))
            .bind(to_unix_ms(*last_used))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }
}
