//! [`TokenStore`]: agent tokens (hashes only), their parents' liveness, and exact use counts.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::ids::{ApiKeyId, CredentialId, FamilyId, TokenId, UserId};
use koryphaios_core::pagination::PageRequest;
use koryphaios_core::secret::TokenHash;
use koryphaios_core::store::{StoreResult, TokenStore};
use koryphaios_core::tokens::{
    AgentToken, MAX_LIVE_TOKENS, TokenInserted, TokenLookup, TokenParent,
};
use koryphaios_core::users::Role;
use time::OffsetDateTime;

use crate::api_keys::scopes_text;
use crate::audit_chain::commit_with_audit;
use crate::backend::Backend;
use crate::driver::{Columns, Query};
use crate::rows::{decode_err, instant, networks, optional_u32, scopes_from_text, tier_from_text};
use crate::store::SqlStore;

/// The joins that give a token its parent (`k`: the minting key, `f`: the minting session).
const PARENT_JOINS: &str = "LEFT JOIN api_keys k ON k.id = t.parent_key_id
     LEFT JOIN session_families f ON f.id = t.parent_family_id";

/// Whether the token's parent is live at `$n` (a key: not revoked, not expired; a session: not
/// ended, not expired; a parent row purged away is not live).
fn parent_live(now: &str) -> String {
    format!(
        "CASE WHEN t.parent_key_id IS NOT NULL
              THEN k.id IS NOT NULL AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > {now})
              ELSE f.id IS NOT NULL AND f.revoked_at IS NULL AND f.expires_at > {now} END"
    )
}

fn token_from_row(row: &impl Columns) -> Result<AgentToken, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    let scopes: String = row.try_get("scopes")?;
    let tier: String = row.try_get("tier")?;
    let credential_ids: Option<String> = row.try_get("credential_ids")?;
    let parent_key: Option<String> = row.try_get("parent_key_id")?;
    let parent_family: Option<String> = row.try_get("parent_family_id")?;
    let parent = match (parent_key, parent_family) {
        (Some(key), None) => TokenParent::ApiKey(ApiKeyId::parse(&key).map_err(decode_err)?),
        (None, Some(family)) => TokenParent::Session(FamilyId::parse(&family).map_err(decode_err)?),
        _ => return Err(decode_err("a token has exactly one parent")),
    };
    Ok(AgentToken {
        id: TokenId::parse(&id).map_err(decode_err)?,
        user_id: UserId::parse(&user_id).map_err(decode_err)?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        scopes: scopes_from_text(&scopes)?,
        tier: tier_from_text(&tier)?,
        credential_ids: credential_ids
            .map(|ids| {
                ids.split_whitespace()
                    .map(|id| CredentialId::parse(id).map_err(decode_err))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?,
        max_uses: optional_u32(row, "max_uses")?,
        allowed_networks: networks(row, "allowed_cidrs")?,
        run_id: row.try_get("run_id")?,
        parent,
        created_at: from_unix_ms(row.try_get("created_at")?),
        expires_at: from_unix_ms(row.try_get("expires_at")?),
        revoked_at: instant(row, "revoked_at")?,
    })
}

#[async_trait]
impl<B: Backend> TokenStore for SqlStore<B> {
    async fn insert_token(
        &self,
        token: &AgentToken,
        secret_hash: &TokenHash,
        audit: &AuditEntry,
    ) -> StoreResult<TokenInserted> {
        let mut tx = self.backend.write().await?;
        let now = to_unix_ms(token.created_at);
        // The owner's row, then the parent's: concurrent mints of one user queue here, so the
        // count below holds for all of them.
        Query::<B::Db>::new(format!(
            "SELECT id FROM users WHERE id = $1{}",
            B::FOR_UPDATE
        ))
        .bind(token.user_id.as_str())
        .fetch_optional(&mut tx)
        .await
        .map_err(B::map_err)?;
        let live: i64 = Query::<B::Db>::new(
            "SELECT COUNT(*) FROM agent_tokens
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(token.user_id.as_str())
        .bind(now)
        .fetch_scalar(&mut tx)
        .await
        .map_err(B::map_err)?;
        if live >= MAX_LIVE_TOKENS {
            return Ok(TokenInserted::TooMany);
        }
        // FOR SHARE conflicts with the parent's revocation (an UPDATE of its row): one waits for
        // the other, and whichever is second sees the first's result.
        let (parent_sql, parent_id) = match &token.parent {
            TokenParent::ApiKey(key) => (
                "SELECT expires_at FROM api_keys
                 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > $3)",
                key.as_str(),
            ),
            TokenParent::Session(family) => (
                "SELECT expires_at FROM session_families
                 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3",
                family.as_str(),
            ),
        };
        let parent = Query::<B::Db>::new(format!("{parent_sql}{}", B::FOR_SHARE))
            .bind(parent_id)
            .bind(token.user_id.as_str())
            .bind(now)
            .fetch_optional(&mut tx)
            .await
            .map_err(B::map_err)?;
        let Some(parent) = parent else {
            return Ok(TokenInserted::ParentGone);
        };
        let parent_expires_at = instant(&parent, "expires_at").map_err(B::map_err)?;
        let mut stored = token.clone();
        if let Some(parent_end) = parent_expires_at {
            stored.expires_at = stored.expires_at.min(parent_end);
        }
        let (parent_key, parent_family) = match &stored.parent {
            TokenParent::ApiKey(key) => (Some(key.as_str()), None),
            TokenParent::Session(family) => (None, Some(family.as_str())),
        };
        Query::<B::Db>::new(
            "INSERT INTO agent_tokens (id, user_id, token_hash, name, prefix, scopes, tier, credential_ids,
                                       max_uses, allowed_cidrs, run_id, parent_key_id, parent_family_id,
                                       created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(stored.id.as_str())
        .bind(stored.user_id.as_str())
        .bind(secret_hash.as_str())
        .bind(stored.name.as_deref())
        .bind(&stored.prefix)
        .bind(scopes_text(&stored.scopes))
        .bind(stored.tier.as_str())
        .bind(stored.credential_ids.as_ref().map(|ids| {
            ids.iter()
                .map(CredentialId::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        }))
        .bind(stored.max_uses.map(i64::from))
        .bind(stored.allowed_networks.to_stored())
        .bind(stored.run_id.as_deref())
        .bind(parent_key)
        .bind(parent_family)
        .bind(now)
        .bind(to_unix_ms(stored.expires_at))
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
        Ok(TokenInserted::Stored(Box::new(stored)))
    }

    async fn list_tokens(
        &self,
        owner: &UserId,
        now: OffsetDateTime,
        page: &PageRequest<TokenId>,
    ) -> StoreResult<Vec<AgentToken>> {
        let rows = Query::<B::Db>::new(format!(
            "SELECT t.* FROM agent_tokens t {PARENT_JOINS}
             WHERE t.user_id = $1 AND t.revoked_at IS NULL AND t.expires_at > $2 AND {}
               AND ($3 IS NULL OR (t.created_at, t.id) < ($3, $4))
             ORDER BY t.created_at DESC, t.id DESC LIMIT $5",
            parent_live("$2")
        ))
        .bind(owner.as_str())
        .bind(to_unix_ms(now))
        .bind(page.after.as_ref().map(|after| after.created_at_ms))
        .bind(page.after.as_ref().map(|after| after.id.as_str()))
        .bind(i64::from(page.limit))
        .fetch_all(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        rows.iter()
            .map(token_from_row)
            .collect::<Result<_, _>>()
            .map_err(B::map_err)
    }

    async fn find_token(&self, owner: &UserId, id: &TokenId) -> StoreResult<Option<AgentToken>> {
        let row = Query::<B::Db>::new("SELECT * FROM agent_tokens WHERE id = $1 AND user_id = $2")
            .bind(id.as_str())
            .bind(owner.as_str())
            .fetch_optional(&mut *self.backend.read().await?)
            .await
            .map_err(B::map_err)?;
        row.as_ref()
            .map(token_from_row)
            .transpose()
            .map_err(B::map_err)
    }

    async fn revoke_token(
        &self,
        owner: &UserId,
        id: &TokenId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        let mut tx = self.backend.write().await?;
        let revoked = Query::<B::Db>::new(
            "UPDATE agent_tokens SET revoked_at = $1
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
        commit_with_audit::<B>(&self.chain, tx, audit).await?;
        Ok(true)
    }

    async fn lookup_token(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
    ) -> StoreResult<Option<TokenLookup>> {
        let row = Query::<B::Db>::new(format!(
            "SELECT t.*, u.role AS owner_role, u.username AS owner_username, u.tier AS owner_tier,
                    u.disabled_at IS NOT NULL AS owner_disabled,
                    k.scopes AS parent_scopes, k.rate_limit_per_minute AS parent_rate_limit,
                    k.allowed_cidrs AS parent_cidrs, k.tier AS parent_tier,
                    {} AS parent_live
             FROM agent_tokens t JOIN users u ON u.id = t.user_id {PARENT_JOINS}
             WHERE t.token_hash = $1",
            parent_live("$2")
        ))
        .bind(hash.as_str())
        .bind(to_unix_ms(now))
        .fetch_optional(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        let Some(row) = row else { return Ok(None) };
        let read = || -> Result<TokenLookup, sqlx::Error> {
            let role: String = row.try_get("owner_role")?;
            let tier: String = row.try_get("owner_tier")?;
            Ok(TokenLookup {
                token: token_from_row(&row)?,
                owner_role: Role::parse(&role)
                    .ok_or_else(|| decode_err(format!("unknown role {role:?}")))?,
                owner_tier: tier_from_text(&tier)?,
                owner_disabled: row.try_get("owner_disabled")?,
                owner_username: row.try_get("owner_username")?,
                parent_live: row.try_get("parent_live")?,
                parent_scopes: row
                    .try_get::<Option<String>>("parent_scopes")?
                    .map(|scopes| scopes_from_text(&scopes))
                    .transpose()?,
                parent_rate_limit_per_minute: optional_u32(&row, "parent_rate_limit")?,
                parent_networks: networks(&row, "parent_cidrs")?,
                parent_tier: row
                    .try_get::<Option<String>>("parent_tier")?
                    .map(|tier| tier_from_text(&tier))
                    .transpose()?,
                stored_hash: TokenHash::from_stored(row.try_get("token_hash")?),
            })
        };
        read().map(Some).map_err(B::map_err)
    }

    async fn consume_token_use(&self, id: &TokenId, max_uses: u32) -> StoreResult<bool> {
        // One statement: of N concurrent uses, the row lock lets exactly the first `max_uses`
        // match `uses < max`.
        let mut tx = self.backend.write().await?;
        let counted = Query::<B::Db>::new(
            "UPDATE agent_tokens SET uses = uses + 1 WHERE id = $1 AND uses < $2",
        )
        .bind(id.as_str())
        .bind(i64::from(max_uses))
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        tx.commit().await.map_err(B::map_err)?;
        Ok(counted == 1)
    }

    async fn purge_expired_tokens(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let mut tx = self.backend.write().await?;
        let purged = Query::<B::Db>::new("DELETE FROM agent_tokens WHERE expires_at <= $1")
            .bind(to_unix_ms(now))
            .execute(&mut tx)
            .await
            .map_err(B::map_err)?;
        tx.commit().await.map_err(B::map_err)?;
        Ok(purged)
    }
}
