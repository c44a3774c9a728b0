//! [`ApiKeyStore`]: keys, their secret hashes, batched usage.

use async_trait::async_trait;
use koryphaios_core::api_keys::{ApiKey, KeyLookup, Tier};
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::ids::{ApiKeyId, UserId};
use koryphaios_core::networks::AllowedNetworks;
use koryphaios_core::pagination::PageRequest;
use koryphaios_core::scope::ScopeSet;
use koryphaios_core::secret::TokenHash;
use koryphaios_core::store::{ApiKeyChange, ApiKeyStore, StoreError, StoreResult};
use koryphaios_core::users::Role;
use time::OffsetDateTime;

use crate::audit_chain::commit_with_audit;
use crate::backend::Backend;
use crate::driver::{Columns, Query};
use crate::rows::{decode_err, instant, networks, optional_u32, scopes_from_text, tier_from_text};
use crate::store::SqlStore;

/// A `WITH` clause naming `descendants`: every key created through key `$1` (its children,
/// their children, …), not the key itself, locked in id order where rows are locked. Ids grow
/// with creation, so a tree is locked root first, in the order every other writer locks key rows
/// (the caller has the root already; usage flushes lock in id order): concurrent cascades cannot
/// deadlock.
fn descendants<B: Backend>() -> String {
    format!(
        "WITH RECURSIVE tree(id) AS (
             SELECT id FROM api_keys WHERE parent_id = $1
             UNION SELECT k.id FROM api_keys k JOIN tree t ON k.parent_id = t.id
         ),
         descendants AS (
             SELECT id FROM api_keys WHERE id IN (SELECT id FROM tree) ORDER BY id{}
         ) ",
        B::FOR_UPDATE
    )
}

/// The stored form of a scope set: space-separated.
pub(crate) fn scopes_text(scopes: &ScopeSet) -> String {
    scopes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn key_from_row(row: &impl Columns) -> Result<ApiKey, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    let scopes: String = row.try_get("scopes")?;
    let tier: String = row.try_get("tier")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(ApiKey {
        id: ApiKeyId::parse(&id).map_err(decode_err)?,
        user_id: UserId::parse(&user_id).map_err(decode_err)?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        scopes: scopes_from_text(&scopes)?,
        tier: tier_from_text(&tier)?,
        metadata: serde_json::from_str(&metadata).map_err(decode_err)?,
        created_at: from_unix_ms(row.try_get("created_at")?),
        updated_at: from_unix_ms(row.try_get("updated_at")?),
        expires_at: instant(row, "expires_at")?,
        revoked_at: instant(row, "revoked_at")?,
        last_used_at: instant(row, "last_used_at")?,
        usage_count: row.try_get("usage_count")?,
        parent_id: row
            .try_get::<Option<String>>("parent_id")?
            .map(|id| ApiKeyId::parse(&id).map_err(decode_err))
            .transpose()?,
        allowed_networks: networks(row, "allowed_cidrs")?,
        rate_limit_per_minute: optional_u32(row, "rate_limit_per_minute")?,
    })
}

#[async_trait]
impl<B: Backend> ApiKeyStore for SqlStore<B> {
    async fn insert_api_key(
        &self,
        key: &ApiKey,
        secret_hash: &TokenHash,
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        let metadata = serde_json::to_string(&key.metadata)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut tx = self.backend.write().await?;
        // FOR SHARE conflicts with the parent's revocation (an UPDATE of its row): one waits for
        // the other, and whichever is second sees the first's result.
        if let Some(parent) = &key.parent_id {
            let live: Option<bool> = Query::<B::Db>::new(format!(
                "SELECT revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)
                 FROM api_keys WHERE id = $1 AND user_id = $2{}",
                B::FOR_SHARE
            ))
            .bind(parent.as_str())
            .bind(key.user_id.as_str())
            .bind(to_unix_ms(key.created_at))
            .fetch_optional_scalar(&mut tx)
            .await
            .map_err(B::map_err)?;
            if live != Some(true) {
                return Ok(false);
            }
        }
        Query::<B::Db>::new(
            "INSERT INTO api_keys (id, user_id, name, prefix, scopes, tier, metadata, created_at, updated_at, expires_at, parent_id,
                                   allowed_cidrs, rate_limit_per_minute)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
        .bind(key.allowed_networks.to_stored())
        .bind(key.rate_limit_per_minute.map(i64::from))
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        Query::<B::Db>::new(
            "INSERT INTO api_key_secrets (key_hash, key_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(secret_hash.as_str())
        .bind(key.id.as_str())
        .bind(to_unix_ms(key.created_at))
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
        Ok(true)
    }

    async fn list_api_keys(
        &self,
        owner: &UserId,
        page: &PageRequest<ApiKeyId>,
    ) -> StoreResult<Vec<ApiKey>> {
        let rows = Query::<B::Db>::new(
            "SELECT * FROM api_keys WHERE user_id = $1
               AND ($2 IS NULL OR (created_at, id) < ($2, $3))
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(owner.as_str())
        .bind(page.after.as_ref().map(|after| after.created_at_ms))
        .bind(page.after.as_ref().map(|after| after.id.as_str()))
        .bind(i64::from(page.limit))
        .fetch_all(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        rows.iter()
            .map(key_from_row)
            .collect::<Result<_, _>>()
            .map_err(B::map_err)
    }

    async fn find_api_key(&self, owner: &UserId, id: &ApiKeyId) -> StoreResult<Option<ApiKey>> {
        let row = Query::<B::Db>::new("SELECT * FROM api_keys WHERE id = $1 AND user_id = $2")
            .bind(id.as_str())
            .bind(owner.as_str())
            .fetch_optional(&mut *self.backend.read().await?)
            .await
            .map_err(B::map_err)?;
        row.as_ref()
            .map(key_from_row)
            .transpose()
            .map_err(B::map_err)
    }

    async fn update_api_key(
        &self,
        owner: &UserId,
        id: &ApiKeyId,
        change: &ApiKeyChange<'_>,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<Option<ApiKey>> {
        let mut tx = self.backend.write().await?;
        // `revoked_at IS NULL` is re-checked after a concurrent revoke commits. The nullable
        // columns take a flag (set or keep) besides their value, since NULL is a value there.
        let row = Query::<B::Db>::new(
            "UPDATE api_keys SET name = COALESCE($1, name), scopes = COALESCE($2, scopes),
                                 tier = COALESCE($3, tier), updated_at = $4,
                                 allowed_cidrs = CASE WHEN $7 THEN $8 ELSE allowed_cidrs END,
                                 rate_limit_per_minute = CASE WHEN $9 THEN $10 ELSE rate_limit_per_minute END
             WHERE id = $5 AND user_id = $6 AND revoked_at IS NULL RETURNING *",
        )
        .bind(change.name)
        .bind(change.scopes.map(scopes_text))
        .bind(change.tier.map(Tier::as_str))
        .bind(to_unix_ms(now))
        .bind(id.as_str())
        .bind(owner.as_str())
        .bind(change.allowed_networks.is_some())
        .bind(change.allowed_networks.and_then(AllowedNetworks::to_stored))
        .bind(change.rate_limit_per_minute.is_some())
        .bind(change.rate_limit_per_minute.flatten().map(i64::from))
        .fetch_optional(&mut tx)
        .await
        .map_err(B::map_err)?;
        let Some(row) = row else { return Ok(None) };
        let key = key_from_row(&row).map_err(B::map_err)?;
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
        Ok(Some(key))
    }

    async fn revoke_api_key(
        &self,
        owner: &UserId,
        id: &ApiKeyId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        let mut tx = self.backend.write().await?;
        // Of two concurrent revokes, the second re-checks `revoked_at IS NULL` and matches nothing.
        let revoked = Query::<B::Db>::new(
            "UPDATE api_keys SET revoked_at = $1, updated_at = $1
             WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(to_unix_ms(now))
        .bind(id.as_str())
        .bind(owner.as_str())
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        if revoked == 0 {
            return Ok(false);
        }
        // A new statement: it sees every child committed before the key's row was locked above.
        Query::<B::Db>::new(format!(
            "{}{}",
            descendants::<B>(),
            "UPDATE api_keys SET revoked_at = $2, updated_at = $2
             WHERE id IN (SELECT id FROM descendants) AND revoked_at IS NULL"
        ))
        .bind(id.as_str())
        .bind(to_unix_ms(now))
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
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
        let mut tx = self.backend.write().await?;
        // Locks the key row first: concurrent rolls (and a revoke) of one key queue here, and
        // the secret changes below happen under that lock.
        let row = Query::<B::Db>::new(
            "UPDATE api_keys SET prefix = $1, updated_at = $2
             WHERE id = $3 AND user_id = $4 AND revoked_at IS NULL RETURNING *",
        )
        .bind(new_prefix)
        .bind(to_unix_ms(now))
        .bind(id.as_str())
        .bind(owner.as_str())
        .fetch_optional(&mut tx)
        .await
        .map_err(B::map_err)?;
        let Some(row) = row else { return Ok(None) };
        let key = key_from_row(&row).map_err(B::map_err)?;
        // Current secrets end with the grace period (earlier ends are kept).
        Query::<B::Db>::new(
            "UPDATE api_key_secrets
             SET expires_at = CASE WHEN expires_at < $1 THEN expires_at ELSE $1 END
             WHERE key_id = $2",
        )
        .bind(to_unix_ms(old_expires_at))
        .bind(id.as_str())
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        // Secrets whose grace ended long ago are of no use any more.
        Query::<B::Db>::new(
            "DELETE FROM api_key_secrets WHERE key_id = $1 AND expires_at IS NOT NULL AND expires_at <= $2",
        )
        .bind(id.as_str())
        .bind(to_unix_ms(now))
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        // Keys created through it stop working with its old secrets (earlier ends are kept).
        Query::<B::Db>::new(format!(
            "{}{}",
            descendants::<B>(),
            "UPDATE api_keys SET expires_at = CASE WHEN expires_at < $2 THEN expires_at ELSE $2 END,
                                 updated_at = $3
             WHERE id IN (SELECT id FROM descendants) AND revoked_at IS NULL"
        ))
        .bind(id.as_str())
        .bind(to_unix_ms(old_expires_at))
        .bind(to_unix_ms(now))
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        // So do the agent tokens minted through it or them: a roll is how a leaked secret is
        // replaced, and a token minted with the leaked one must not outlive the grace period.
        Query::<B::Db>::new(format!(
            "{}{}",
            descendants::<B>(),
            "UPDATE agent_tokens SET expires_at = CASE WHEN expires_at < $2 THEN expires_at ELSE $2 END
             WHERE (parent_key_id = $1 OR parent_key_id IN (SELECT id FROM descendants))
               AND revoked_at IS NULL"
        ))
        .bind(id.as_str())
        .bind(to_unix_ms(old_expires_at))
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        Query::<B::Db>::new(
            "INSERT INTO api_key_secrets (key_hash, key_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(new_hash.as_str())
        .bind(id.as_str())
        .bind(to_unix_ms(now))
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
        Ok(Some(key))
    }

    async fn lookup_api_key(&self, hash: &TokenHash) -> StoreResult<Option<KeyLookup>> {
        let row = Query::<B::Db>::new(
            "SELECT k.*, s.key_hash AS secret_hash, s.expires_at AS secret_expires_at,
                    u.role AS owner_role, u.username AS owner_username, u.tier AS owner_tier,
                    u.disabled_at IS NOT NULL AS owner_disabled
             FROM api_key_secrets s
             JOIN api_keys k ON k.id = s.key_id
             JOIN users u ON u.id = k.user_id
             WHERE s.key_hash = $1",
        )
        .bind(hash.as_str())
        .fetch_optional(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        let Some(row) = row else { return Ok(None) };
        let read = || -> Result<KeyLookup, sqlx::Error> {
            let role: String = row.try_get("owner_role")?;
            let tier: String = row.try_get("owner_tier")?;
            Ok(KeyLookup {
                key: key_from_row(&row)?,
                owner_role: Role::parse(&role)
                    .ok_or_else(|| decode_err(format!("unknown role {role:?}")))?,
                owner_tier: tier_from_text(&tier)?,
                owner_disabled: row.try_get("owner_disabled")?,
                owner_username: row.try_get("owner_username")?,
                secret_expires_at: row
                    .try_get::<Option<i64>>("secret_expires_at")?
                    .map(from_unix_ms),
                stored_hash: TokenHash::from_stored(row.try_get("secret_hash")?),
            })
        };
        read().map(Some).map_err(B::map_err)
    }

    async fn record_api_key_usage(
        &self,
        usage: &[(ApiKeyId, u64, OffsetDateTime)],
    ) -> StoreResult<()> {
        // Rows are locked in key-id order, so two instances flushing at once cannot deadlock.
        let mut ordered: Vec<&(ApiKeyId, u64, OffsetDateTime)> = usage.iter().collect();
        ordered.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let mut tx = self.backend.write().await?;
        for (id, count, last_used) in ordered {
            Query::<B::Db>::new(
                "UPDATE api_keys SET usage_count = usage_count + $1,
                                     last_used_at = CASE WHEN last_used_at > $2
                                                         THEN last_used_at ELSE $2 END
                 WHERE id = $3",
            )
            .bind(i64::try_from(*count).unwrap_or(i64::MAX))
            .bind(to_unix_ms(*last_used))
            .bind(id.as_str())
            .execute(&mut tx)
            .await
            .map_err(B::map_err)?;
        }
        tx.commit().await.map_err(B::map_err)
    }
}
