//! The agent token use cases: mint, list, revoke, and authenticate a presented token.

use std::net::IpAddr;
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::{Map, Value, json};
use time::Duration;

use super::{
    AgentToken, MAX_LIVE_TOKENS, TokenInserted, TokenLookup, TokenParent, UseCounter,
    check_credential_ids, check_max_uses, check_run_id, check_ttl,
};
use crate::access::{self, Attempt, Refusal};
use crate::api_keys::format::{self, TOKEN_PREFIX};
use crate::api_keys::{LookupCache, check_name, check_scopes};
use crate::audit::throttle::RefusalThrottle;
use crate::audit::{AuditEntry, RequestContext};
use crate::clock::Clock;
use crate::ids::TokenId;
use crate::networks::AllowedNetworks;
use crate::pagination::{After, Page, PageRequest};
use crate::principal::{AuthMethod, Principal, TokenGrant};
use crate::scope::{Scope, ScopeSet};
use crate::store::{Store, StoreError};
use crate::validation::{FieldError, ValidationErrors, Validator};

const RESOURCE: &str = "token";

/// Audit actions of this module.
pub mod actions {
    /// A token was minted.
    pub const CREATE: &str = "token_create";
    /// A token was revoked.
    pub const REVOKE: &str = "token_revoke";
}

/// What `create` takes (the JSON body of `POST /api/v1/tokens`).
#[derive(Debug, Default)]
pub struct NewTokenInput {
    /// 1–86400 seconds, and never beyond the caller's own expiry.
    pub ttl_seconds: i64,
    /// A subset of the caller's scopes (default: the caller's).
    pub scopes: Option<Vec<String>>,
    /// The only credentials the token may reveal or use through the proxy.
    pub credential_ids: Option<Vec<String>>,
    /// How many authenticated requests the token may make.
    pub max_uses: Option<i64>,
    /// Where it may be used from (a key's token: within the key's networks).
    pub allowed_cidrs: Option<Vec<String>>,
    /// The agent run it belongs to.
    pub run_id: Option<String>,
    /// A human name.
    pub name: Option<String>,
}

/// Why a token use case refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Input broke a rule.
    #[error(transparent)]
    Validation(#[from] ValidationErrors),
    /// No such token for this caller.
    #[error("token not found")]
    NotFound,
    /// The caller asked for a scope it does not hold.
    #[error("missing scope {0}")]
    Forbidden(Scope),
    /// A token tried to mint a token (or to manage another token).
    #[error("an agent token cannot mint or manage tokens")]
    TokenCannotMint,
    /// The key or session minting it ended meanwhile.
    #[error("the calling key or session is no longer live")]
    ParentGone,
    /// The user holds the most live tokens allowed.
    #[error("at most {MAX_LIVE_TOKENS} live tokens per user")]
    TooMany,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Refusal> for TokenError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::MissingScope(scope) => Self::Forbidden(scope),
            Refusal::Store(error) => Self::Store(error),
        }
    }
}

/// Why a presented token does not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenAuthError {
    /// Not a well-formed token (checked before any lookup).
    #[error("malformed token")]
    Malformed,
    /// No such token.
    #[error("no such token")]
    NotFound,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Revoked, or the key or session that minted it ended.
    #[error("token revoked")]
    Revoked,
    /// Its uses are spent.
    #[error("token exhausted")]
    Exhausted,
    /// Presented from outside its networks.
    #[error("IP address not allowed")]
    IpNotAllowed,
    /// Its owner was disabled by an admin.
    #[error("owner disabled")]
    OwnerDisabled,
}

/// The result of authenticating a token: refused with a reason, or a store failed.
#[derive(Debug)]
pub enum TokenAuthOutcome {
    /// The token does not authenticate.
    Denied(TokenAuthError),
    /// Storage (or the use counter) failed.
    Store(StoreError),
}

/// The agent token use cases.
#[derive(Debug)]
pub struct TokenService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    uses: Arc<dyn UseCounter>,
    cache: LookupCache<TokenLookup>,
    /// A token refused again and again leaves one record a minute per restriction.
    refusals: RefusalThrottle<(TokenId, &'static str)>,
}

impl TokenService {
    /// Wires the use cases to their ports; `uses` counts `maxUses` exactly across instances.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, uses: Arc<dyn UseCounter>) -> Self {
        Self {
            store,
            clock,
            uses,
            cache: LookupCache::default(),
            refusals: RefusalThrottle::new(std::time::Duration::from_secs(60)),
        }
    }

    /// Whether a presented bearer secret looks like an agent token (so it is not tried as a JWT).
    pub fn looks_like_token(presented: &str) -> bool {
        presented.starts_with(TOKEN_PREFIX)
    }

    async fn refuse_token_caller(
        &self,
        principal: &Principal,
        context: &RequestContext,
        attempt: Attempt<'_>,
    ) -> Result<(), TokenError> {
        if principal.token().is_none() {
            return Ok(());
        }
        access::deny_token_restriction(
            &*self.store,
            &*self.clock,
            principal,
            context,
            "mint",
            attempt,
        )
        .await?;
        Err(TokenError::TokenCannotMint)
    }

    /// Mints a token for the caller (an API key or a session, never a token). The plaintext is
    /// returned only here.
    pub async fn create(
        &self,
        principal: &Principal,
        context: &RequestContext,
        input: NewTokenInput,
    ) -> Result<(AgentToken, SecretString), TokenError> {
        self.refuse_token_caller(principal, context, Attempt::new(actions::CREATE))
            .await?;
        let mut checks = Validator::default();
        checks.check(check_ttl(input.ttl_seconds));
        let scopes = checks.check(
            input
                .scopes
                .as_deref()
                .map_or_else(|| Ok(principal.scopes.clone()), check_scopes),
        );
        let credential_ids = input
            .credential_ids
            .as_deref()
            .map(|raw| checks.check(check_credential_ids(raw)));
        let max_uses = input.max_uses.map(|raw| checks.check(check_max_uses(raw)));
        let networks = input
            .allowed_cidrs
            .as_deref()
            .map(|raw| checks.check(AllowedNetworks::parse("allowedCidrs", raw)));
        if let Some(run_id) = &input.run_id {
            checks.check(check_run_id(run_id));
        }
        if let Some(name) = &input.name {
            checks.check(check_name(name));
        }
        checks.finish()?;
        let missing = || TokenError::Internal("validated fields missing".into());
        let scopes = scopes.ok_or_else(missing)?;
        let credential_ids = credential_ids
            .map(|ids| ids.ok_or_else(missing))
            .transpose()?;
        let max_uses = max_uses.map(|uses| uses.ok_or_else(missing)).transpose()?;
        let networks = networks.map(|nets| nets.ok_or_else(missing)).transpose()?;
        if let Some(scope) = scopes.iter().find(|scope| !principal.allows(scope)) {
            return Err(access::deny(
                &*self.store,
                &*self.clock,
                principal,
                context,
                scope,
                Attempt::new(actions::CREATE),
            )
            .await
            .into());
        }
        if let Some(ids) = &credential_ids {
            for (index, id) in ids.iter().enumerate() {
                if !self
                    .store
                    .credential_belongs_to(&principal.user_id, id)
                    .await?
                {
                    return Err(ValidationErrors::single(
                        format!("credentialIds[{index}]"),
                        "names none of your credentials",
                    )
                    .into());
                }
            }
        }
        let now = self.clock.now();
        let (parent, caller_expiry, caller_networks) = match &principal.method {
            AuthMethod::ApiKey {
                key_id, expires_at, ..
            } => {
                let key = self
                    .store
                    .find_api_key(&principal.user_id, key_id)
                    .await?
                    .ok_or(TokenError::ParentGone)?;
                (
                    TokenParent::ApiKey(key_id.clone()),
                    *expires_at,
                    key.allowed_networks,
                )
            }
            AuthMethod::Session { family, .. } => (
                TokenParent::Session(family.clone()),
                None,
                AllowedNetworks::default(),
            ),
            AuthMethod::Token(_) => return Err(TokenError::TokenCannotMint),
        };
        // A restricted key's token stays inside the key's networks: it inherits them, or narrows.
        let allowed_networks = match networks {
            None => caller_networks,
            Some(networks) if networks.is_within(&caller_networks) => networks,
            Some(_) => {
                return Err(ValidationErrors::single(
                    "allowedCidrs",
                    "must lie within the calling key's allowedCidrs",
                )
                .into());
            }
        };
        let requested = now + Duration::seconds(input.ttl_seconds);
        let expires_at = caller_expiry.map_or(requested, |caller| requested.min(caller));
        let (secret, parsed) =
            format::generate_with(TOKEN_PREFIX).map_err(|e| TokenError::Internal(e.to_string()))?;
        let token = AgentToken {
            id: TokenId::generate(),
            user_id: principal.user_id.clone(),
            name: input.name,
            prefix: parsed.display_prefix(),
            scopes,
            tier: principal.effective_tier(),
            credential_ids,
            max_uses,
            allowed_networks,
            run_id: input.run_id,
            parent,
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        let audit = self.audit(
            principal,
            context,
            actions::CREATE,
            &token.id,
            token_details(&token),
        );
        match self
            .store
            .insert_token(&token, &parsed.hash(), &audit)
            .await?
        {
            TokenInserted::Stored(stored) => Ok((*stored, secret)),
            TokenInserted::ParentGone => Err(TokenError::ParentGone),
            TokenInserted::TooMany => Err(TokenError::TooMany),
        }
    }

    /// A page of the caller's live tokens, newest first: those within the caller's scopes (a
    /// weak key does not see what stronger keys' runs may do); a token sees only itself.
    pub async fn list(
        &self,
        principal: &Principal,
        page: &PageRequest<TokenId>,
    ) -> Result<Page<AgentToken, TokenId>, TokenError> {
        let now = self.clock.now();
        if let Some(grant) = principal.token() {
            let own = self
                .store
                .find_token(&principal.user_id, &grant.token_id)
                .await?
                .filter(|token| token.revoked_at.is_none() && token.expires_at > now);
            return Ok(Page {
                items: own.into_iter().collect(),
                next: None,
            });
        }
        let mut items = self
            .store
            .list_tokens(&principal.user_id, now, &page.overfetch())
            .await?;
        items.retain(|token| token.scopes.iter().all(|scope| principal.allows(scope)));
        Ok(Page::from_overfetch(
            items,
            page.limit,
            |token: &AgentToken| After::item(token.created_at, token.id.clone()),
        ))
    }

    /// Revokes one of the caller's tokens at once. A caller may revoke only tokens within its own
    /// scopes (a weak key cannot end a strong key's runs); a token may revoke only itself.
    pub async fn revoke(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &TokenId,
    ) -> Result<(), TokenError> {
        let attempt = Attempt::on(actions::REVOKE, RESOURCE, id.as_str());
        if principal.token().is_some_and(|grant| &grant.token_id != id) {
            self.refuse_token_caller(principal, context, attempt)
                .await?;
        }
        let target = self
            .store
            .find_token(&principal.user_id, id)
            .await?
            .ok_or(TokenError::NotFound)?;
        if principal.token().is_none()
            && let Some(scope) = target.scopes.iter().find(|scope| !principal.allows(scope))
        {
            return Err(access::deny(
                &*self.store,
                &*self.clock,
                principal,
                context,
                scope,
                attempt,
            )
            .await
            .into());
        }
        let audit = self.audit(principal, context, actions::REVOKE, id, Map::new());
        let revoked = self
            .store
            .revoke_token(&principal.user_id, id, self.clock.now(), &audit)
            .await?;
        self.cache.forget(|lookup| &lookup.token.id == id);
        if revoked {
            Ok(())
        } else {
            Err(TokenError::NotFound)
        }
    }

    /// Forgets this instance's cached lookups of a user's tokens (after their key was revoked or
    /// their session ended here), so the change applies on the next request; other instances see
    /// it when their entry expires.
    pub fn forget_owner(&self, owner: &crate::ids::UserId) {
        self.cache.forget(|lookup| &lookup.token.user_id == owner);
    }

    /// Authenticates a presented token from `client_ip`: parse, look up (cached for less than a
    /// second), check it and its parent, its networks, then count the use when it has a limit.
    /// A known token refused for its networks or its spent uses (the marks of a stolen one) is
    /// audited as `access_denied`, with `context` (built only then), at most once a minute per
    /// token and reason.
    pub async fn authenticate(
        &self,
        presented: &str,
        client_ip: Option<IpAddr>,
        context: impl FnOnce() -> RequestContext + Send,
    ) -> Result<Principal, TokenAuthOutcome> {
        let denied = TokenAuthOutcome::Denied;
        let parsed = format::parse_with(TOKEN_PREFIX, presented)
            .map_err(|_| denied(TokenAuthError::Malformed))?;
        let hash = parsed.hash();
        let now = self.clock.now();
        let found = match self.cache.get(hash.as_str()) {
            Some(found) => found,
            None => {
                let queried_at = std::time::Instant::now();
                let found = self
                    .store
                    .lookup_token(&hash, now)
                    .await
                    .map_err(TokenAuthOutcome::Store)?
                    .ok_or(denied(TokenAuthError::NotFound))?;
                self.cache
                    .put(hash.as_str().to_owned(), found.clone(), queried_at);
                found
            }
        };
        if !found.stored_hash.matches(&hash) {
            return Err(denied(TokenAuthError::NotFound));
        }
        let token = &found.token;
        if token.revoked_at.is_some() || !found.parent_live {
            return Err(denied(TokenAuthError::Revoked));
        }
        if token.expires_at <= now {
            return Err(denied(TokenAuthError::Expired));
        }
        if found.owner_disabled {
            return Err(denied(TokenAuthError::OwnerDisabled));
        }
        // Its own networks and its minting key's as they are now. No address (not over TCP)
        // cannot prove it is inside a network.
        let outside = [&token.allowed_networks, &found.parent_networks]
            .into_iter()
            .any(|networks| {
                !networks.is_unrestricted() && !client_ip.is_some_and(|ip| networks.allows(ip))
            });
        let refusal = if outside {
            Some((TokenAuthError::IpNotAllowed, "allowedCidrs"))
        } else if let Some(max_uses) = token.max_uses
            && !self
                .uses
                .consume(&token.id, max_uses, token.expires_at)
                .await
                .map_err(TokenAuthOutcome::Store)?
        {
            Some((TokenAuthError::Exhausted, "maxUses"))
        } else {
            None
        };
        let holder = principal_of(&found);
        if let Some((reason, restriction)) = refusal {
            if self
                .refusals
                .first_in_a_while(&(token.id.clone(), restriction))
            {
                let entry = AuditEntry::new(
                    &holder,
                    &context(),
                    crate::audit::actions::ACCESS_DENIED,
                    Some((RESOURCE, token.id.as_str())),
                    now,
                )
                .failed(reason.to_string())
                .with_metadata(Map::from_iter([
                    ("attempted".to_owned(), json!("authenticate")),
                    ("restriction".to_owned(), json!(restriction)),
                ]));
                if let Err(error) = self.store.append_audit(&entry).await {
                    tracing::warn!(%error, "could not audit a refused agent token");
                }
            }
            return Err(denied(reason));
        }
        Ok(holder)
    }

    /// Deletes tokens that expired before `now` (with the other purges).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.store.purge_expired_tokens(self.clock.now()).await
    }

    fn audit(
        &self,
        principal: &Principal,
        context: &RequestContext,
        action: &str,
        id: &TokenId,
        details: Map<String, Value>,
    ) -> AuditEntry {
        AuditEntry::new(
            principal,
            context,
            action,
            Some((RESOURCE, id.as_str())),
            self.clock.now(),
        )
        .with_metadata(details)
    }
}

/// The principal a looked-up token authenticates as: its scopes as far as the owner's role and
/// (for a key's token) the key's current scopes still grant them.
fn principal_of(found: &TokenLookup) -> Principal {
    let owner = found.owner_role.scopes();
    let token = &found.token;
    let scopes = ScopeSet::new(
        token
            .scopes
            .iter()
            .filter(|scope| owner.allows(scope))
            .filter(|scope| {
                found
                    .parent_scopes
                    .as_ref()
                    .is_none_or(|parent| parent.allows(scope))
            })
            .cloned(),
    );
    let parent_key = match &token.parent {
        TokenParent::ApiKey(key) => Some(key.clone()),
        TokenParent::Session(_) => None,
    };
    Principal {
        user_id: token.user_id.clone(),
        username: found.owner_username.clone(),
        role: found.owner_role,
        tier: found.owner_tier,
        scopes,
        method: AuthMethod::Token(Arc::new(TokenGrant {
            token_id: token.id.clone(),
            tier: found
                .parent_tier
                .map_or(token.tier, |parent| parent.min(token.tier)),
            expires_at: token.expires_at,
            parent_key,
            parent_rate_limit_per_minute: found.parent_rate_limit_per_minute,
            credential_ids: token.credential_ids.clone(),
            run_id: token.run_id.clone(),
        })),
    }
}

/// What the `token_create` record says about a token (never its secret).
fn token_details(token: &AgentToken) -> Map<String, Value> {
    let mut details = Map::new();
    details.insert("prefix".into(), json!(token.prefix));
    details.insert(
        "scopes".into(),
        json!(
            token
                .scopes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        ),
    );
    details.insert("expiresAt".into(), json!(token.expires_at.unix_timestamp()));
    if let Some(ids) = &token.credential_ids {
        details.insert(
            "restrictedTo".into(),
            json!(ids.iter().map(ToString::to_string).collect::<Vec<_>>()),
        );
    }
    if let Some(max_uses) = token.max_uses {
        details.insert("maxUses".into(), json!(max_uses));
    }
    if !token.allowed_networks.is_unrestricted() {
        details.insert(
            "allowedCidrs".into(),
            json!(token.allowed_networks.to_strings()),
        );
    }
    if let Some(run_id) = &token.run_id {
        details.insert("mintedForRun".into(), json!(run_id));
    }
    match &token.parent {
        TokenParent::ApiKey(key) => details.insert("parentKeyId".into(), json!(key.as_str())),
        TokenParent::Session(family) => {
            details.insert("parentSessionId".into(), json!(family.as_str()))
        }
    };
    details
}

impl From<FieldError> for TokenError {
    fn from(error: FieldError) -> Self {
        Self::Validation(ValidationErrors(vec![error]))
    }
}
