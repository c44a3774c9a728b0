//! The API key use cases: create, list, get, update, revoke, roll, and verification (both for
//! authenticating requests and for `POST /api/v1/keys/verify`).

use std::net::IpAddr;
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::{Map, Value, json};
use time::{Duration, OffsetDateTime};

use super::cache::{KeyCache, UsageRecorder};
use super::format::{self, MalformedKey};
use super::{
    ApiKey, KeyLookup, MAX_EXPIRES_DAYS, MAX_GRACE_SECONDS, Tier, check_name, check_rate_limit,
    check_scopes, check_tier,
};
use crate::access::{self, Attempt, Refusal};
use crate::audit::{AuditEntry, RequestContext};
use crate::clock::Clock;
use crate::credentials::check_metadata;
use crate::ids::{ApiKeyId, UserId};
use crate::networks::AllowedNetworks;
use crate::pagination::{After, Page, PageRequest};
use crate::principal::{AuthMethod, Principal};
use crate::scope::{Scope, ScopeSet};
use crate::store::{ApiKeyChange, Store, StoreError};
use crate::validation::{FieldError, ValidationErrors, Validator};

const RESOURCE: &str = "api_key";

/// Audit actions of this module.
pub mod actions {
    /// A key was created.
    pub const CREATE: &str = "api_key_create";
    /// A key's name, scopes or tier changed.
    pub const UPDATE: &str = "api_key_update";
    /// A key was revoked.
    pub const REVOKE: &str = "api_key_revoke";
    /// A key got a new secret.
    pub const ROLL: &str = "api_key_roll";
    /// `POST /keys/verify` answered "not valid".
    pub const VERIFY_FAILURE: &str = "api_key_verify";
}

/// What `create` takes.
#[derive(Debug, Default)]
pub struct NewApiKeyInput {
    /// 1–100 characters of letters, digits, `_`, `-`, space.
    pub name: String,
    /// 1–10 scopes (default `read`).
    pub scopes: Option<Vec<String>>,
    /// free | premium | pro | enterprise, at most the caller's (default: the caller's tier).
    pub tier: Option<String>,
    /// 1–365 days; none means no expiry (a key created by a key never outlives its parent).
    pub expires_in_days: Option<i64>,
    /// A JSON object ≤ 2 KB.
    pub metadata: Option<Value>,
    /// Where the key may be used from (a key's child: within the parent's networks).
    pub allowed_cidrs: Option<Vec<String>>,
    /// The key's own requests-per-minute limit, at most its tier's.
    pub rate_limit_per_minute: Option<i64>,
}

/// What `update` takes.
#[derive(Debug, Default)]
pub struct UpdateApiKeyInput {
    /// A new name.
    pub name: Option<String>,
    /// New scopes.
    pub scopes: Option<Vec<String>>,
    /// A new tier.
    pub tier: Option<String>,
    /// New networks (`[]`: anywhere).
    pub allowed_cidrs: Option<Vec<String>>,
    /// A new per-minute limit (`Some(None)`: none but the tier's).
    pub rate_limit_per_minute: Option<Option<i64>>,
}

/// Why a key management use case refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    /// Input broke a rule.
    #[error(transparent)]
    Validation(#[from] ValidationErrors),
    /// No such key for this caller.
    #[error("API key not found")]
    NotFound,
    /// The caller lacks a scope (or asked for a scope it does not hold).
    #[error("missing scope {0}")]
    Forbidden(Scope),
    /// The tier asked for is above the owner's (or the calling key's own).
    #[error("tier {} is above what this caller may grant", .0.as_str())]
    TierNotAllowed(Tier),
    /// The calling key was revoked or expired while it created a key.
    #[error("the calling API key is no longer live")]
    ParentGone,
    /// An agent token tried to create or manage an API key.
    #[error("an agent token cannot create or manage API keys")]
    TokenCannotMint,
    /// A key held to networks or a rate limit tried to manage a key that is not.
    #[error("a key may manage only keys within its own allowedCidrs and rateLimit")]
    PolicyNotAllowed,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Refusal> for ApiKeyError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::MissingScope(scope) => Self::Forbidden(scope),
            Refusal::Store(error) => Self::Store(error),
        }
    }
}

/// The audit record's name for an attempt on a key (or on keys in general).
fn attempt<'a>(action: &'a str, id: Option<&'a ApiKeyId>) -> Attempt<'a> {
    match id {
        Some(id) => Attempt::on(action, RESOURCE, id.as_str()),
        None => Attempt::new(action),
    }
}

/// Why a presented key does not authenticate (the stable codes of `/keys/verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyAuthError {
    /// Not a well-formed key (checked before any lookup).
    #[error("MALFORMED")]
    Malformed,
    /// No such key.
    #[error("NOT_FOUND")]
    NotFound,
    /// Past its expiry, or a rolled-away secret past its grace period.
    #[error("EXPIRED")]
    Expired,
    /// Revoked.
    #[error("REVOKED")]
    Revoked,
    /// The key's owner was disabled by an admin.
    #[error("OWNER_DISABLED")]
    OwnerDisabled,
    /// Presented from outside the key's `allowedCidrs` (request authentication only: `verify`
    /// does not know the original client's address).
    #[error("IP_NOT_ALLOWED")]
    IpNotAllowed,
}

impl ApiKeyAuthError {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            ApiKeyAuthError::Malformed => "MALFORMED",
            ApiKeyAuthError::NotFound => "NOT_FOUND",
            ApiKeyAuthError::Expired => "EXPIRED",
            ApiKeyAuthError::Revoked => "REVOKED",
            ApiKeyAuthError::OwnerDisabled => "OWNER_DISABLED",
            ApiKeyAuthError::IpNotAllowed => "IP_NOT_ALLOWED",
        }
    }
}

/// The answer of `verify`.
#[derive(Debug, Clone)]
pub enum KeyVerification {
    /// The key works; who it is and what it may do.
    Valid {
        /// The key.
        key: Box<ApiKey>,
        /// Its effective scopes (never more than its owner's).
        scopes: ScopeSet,
        /// Its effective tier (never more than its owner's).
        tier: Tier,
        /// Its owner's tier (the user-wide rate-limit counter's).
        owner_tier: Tier,
    },
    /// It does not.
    Invalid(ApiKeyAuthError),
}

/// The API key use cases.
#[derive(Debug)]
pub struct ApiKeyService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    cache: KeyCache,
    usage: UsageRecorder,
    tier_limits: Option<[u32; 4]>,
}

impl ApiKeyService {
    /// Wires the use cases to their ports.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            cache: KeyCache::default(),
            usage: UsageRecorder::default(),
            tier_limits: None,
        }
    }

    /// Caps a key's own `rateLimit` at its tier's requests per minute (`limits` indexed by
    /// [`Tier`], when rate limiting is on).
    pub fn with_tier_limits(mut self, limits: [u32; 4]) -> Self {
        self.tier_limits = Some(limits);
        self
    }

    fn tier_limit(&self, tier: Tier) -> Option<u32> {
        self.tier_limits.map(|limits| limits[tier as usize])
    }

    /// Refuses an agent token (audited): tokens never create or manage keys.
    async fn refuse_token(
        &self,
        principal: &Principal,
        context: &RequestContext,
        attempted: &str,
        id: Option<&ApiKeyId>,
    ) -> Result<(), ApiKeyError> {
        if principal.token().is_none() {
            return Ok(());
        }
        access::deny_token_restriction(
            &*self.store,
            &*self.clock,
            principal,
            context,
            "mint",
            attempt(attempted, id),
        )
        .await?;
        Err(ApiKeyError::TokenCannotMint)
    }

    /// The calling key's own networks and limit, which the keys it creates or manages stay
    /// within (nothing for a session). A calling key that cannot be read is refused, not treated
    /// as unrestricted.
    async fn caller_policy(&self, principal: &Principal) -> Result<KeyPolicy, ApiKeyError> {
        match &principal.method {
            AuthMethod::ApiKey { key_id, .. } => {
                let key = self
                    .store
                    .find_api_key(&principal.user_id, key_id)
                    .await?
                    .ok_or(ApiKeyError::ParentGone)?;
                Ok(KeyPolicy {
                    networks: key.allowed_networks,
                    rate_limit_per_minute: key.rate_limit_per_minute,
                })
            }
            AuthMethod::Session { .. } | AuthMethod::Token(_) => Ok(KeyPolicy::default()),
        }
    }

    async fn require(
        &self,
        principal: &Principal,
        context: &RequestContext,
        scope: Scope,
        attempted: &str,
        id: Option<&ApiKeyId>,
    ) -> Result<(), ApiKeyError> {
        access::require_scope(
            &*self.store,
            &*self.clock,
            principal,
            context,
            &scope,
            attempt(attempted, id),
        )
        .await
        .map_err(ApiKeyError::from)
    }

    async fn deny<T>(
        &self,
        principal: &Principal,
        context: &RequestContext,
        scope: Scope,
        attempted: &str,
        id: Option<&ApiKeyId>,
    ) -> Result<T, ApiKeyError> {
        Err(access::deny(
            &*self.store,
            &*self.clock,
            principal,
            context,
            &scope,
            attempt(attempted, id),
        )
        .await
        .into())
    }

    /// A key may only carry scopes its creator holds (and so its owner too).
    async fn check_grantable(
        &self,
        principal: &Principal,
        context: &RequestContext,
        scopes: &ScopeSet,
        attempted: &str,
        id: Option<&ApiKeyId>,
    ) -> Result<(), ApiKeyError> {
        match scopes.iter().find(|scope| !principal.allows(scope)) {
            None => Ok(()),
            Some(scope) => {
                self.deny(principal, context, scope.clone(), attempted, id)
                    .await
            }
        }
    }

    /// A caller may manage (update, roll, revoke) only keys it could have created itself: the
    /// target's scopes must be within the caller's, so a weak key cannot take over a strong one.
    async fn check_control(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &ApiKeyId,
        attempted: &str,
    ) -> Result<ApiKey, ApiKeyError> {
        let target = self
            .store
            .find_api_key(&principal.user_id, id)
            .await?
            .ok_or(ApiKeyError::NotFound)?;
        self.check_grantable(principal, context, &target.scopes, attempted, Some(id))
            .await?;
        // A key may not manage a key of a higher tier than its own. (The owner's own tier does
        // not restrict management: a user must be able to revoke a key above their tier.)
        if let AuthMethod::ApiKey { tier: own, .. } = &principal.method
            && target.tier > *own
        {
            return Err(ApiKeyError::TierNotAllowed(target.tier));
        }
        // Nor one less restricted than itself: a key held to a network or a rate could otherwise
        // roll an unrestricted sibling and take its secret.
        let policy = self.caller_policy(principal).await?;
        if !policy.contains(&target.allowed_networks, target.rate_limit_per_minute) {
            return Err(ApiKeyError::PolicyNotAllowed);
        }
        Ok(target)
    }

    /// A key's tier may not exceed its owner's, nor the calling key's own.
    fn check_tier_grantable(principal: &Principal, tier: Tier) -> Result<(), ApiKeyError> {
        if tier > principal.effective_tier() {
            return Err(ApiKeyError::TierNotAllowed(tier));
        }
        Ok(())
    }

    fn audit(
        &self,
        principal: &Principal,
        context: &RequestContext,
        action: &str,
        id: &ApiKeyId,
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

    /// Issues a key (scope `write`); the plaintext is returned only here.
    pub async fn create(
        &self,
        principal: &Principal,
        context: &RequestContext,
        input: NewApiKeyInput,
    ) -> Result<(ApiKey, SecretString), ApiKeyError> {
        self.refuse_token(principal, context, actions::CREATE, None)
            .await?;
        self.require(principal, context, Scope::Write, actions::CREATE, None)
            .await?;
        let mut checks = Validator::default();
        checks.check(check_name(&input.name));
        let networks = match &input.allowed_cidrs {
            None => Some(AllowedNetworks::default()),
            Some(raw) => checks.check(AllowedNetworks::parse("allowedCidrs", raw)),
        };
        let scopes = checks.check(
            input
                .scopes
                .as_deref()
                .map_or_else(|| Ok(ScopeSet::new([Scope::Read])), check_scopes),
        );
        let tier = checks.check(
            input
                .tier
                .as_deref()
                .map_or(Ok(principal.effective_tier()), check_tier),
        );
        if input
            .expires_in_days
            .is_some_and(|days| !(1..=MAX_EXPIRES_DAYS).contains(&days))
        {
            checks.check::<()>(Err(FieldError::new(
                "expiresInDays",
                format!("must be 1 to {MAX_EXPIRES_DAYS}"),
            )));
        }
        let metadata = match &input.metadata {
            None => Some(Map::new()),
            Some(value) => checks.check(check_metadata(value)),
        };
        let rate_limit = match (input.rate_limit_per_minute, tier) {
            (Some(raw), Some(tier)) => checks
                .check(check_rate_limit(raw, self.tier_limit(tier)))
                .map(Some),
            (_, _) => Some(None),
        };
        checks.finish()?;
        let (Some(scopes), Some(tier), Some(metadata), Some(networks), Some(rate_limit)) =
            (scopes, tier, metadata, networks, rate_limit)
        else {
            return Err(ApiKeyError::Internal("validated fields missing".into()));
        };
        self.check_grantable(principal, context, &scopes, actions::CREATE, None)
            .await?;
        Self::check_tier_grantable(principal, tier)?;
        let policy = self.caller_policy(principal).await?;
        // A key's child inherits the key's networks and own limit, or narrows them.
        let allowed_networks = match input.allowed_cidrs {
            None => policy.networks.clone(),
            Some(_) => networks,
        };
        let rate_limit = rate_limit.or(policy.rate_limit_per_minute);
        policy.check_narrows(&allowed_networks, Some(rate_limit))?;
        let now = self.clock.now();
        let (secret, parsed) =
            format::generate().map_err(|e| ApiKeyError::Internal(e.to_string()))?;
        // A key created by a key is its child: it never outlives the presented key.
        let (parent_id, parent_expires_at) = match &principal.method {
            AuthMethod::ApiKey {
                key_id, expires_at, ..
            } => (Some(key_id.clone()), *expires_at),
            AuthMethod::Session { .. } | AuthMethod::Token(_) => (None, None),
        };
        let requested_expiry = input.expires_in_days.map(|days| now + Duration::days(days));
        let expires_at = match (requested_expiry, parent_expires_at) {
            (Some(requested), Some(parent)) => Some(requested.min(parent)),
            (requested, parent) => requested.or(parent),
        };
        let key = ApiKey {
            id: ApiKeyId::generate(),
            user_id: principal.user_id.clone(),
            name: input.name,
            prefix: parsed.display_prefix(),
            scopes,
            tier,
            metadata,
            created_at: now,
            updated_at: now,
            expires_at,
            revoked_at: None,
            last_used_at: None,
            usage_count: 0,
            parent_id,
            allowed_networks,
            rate_limit_per_minute: rate_limit,
        };
        let mut details = Map::new();
        details.insert("name".into(), json!(key.name));
        details.insert(
            "scopes".into(),
            json!(
                key.scopes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
        );
        details.insert("tier".into(), json!(key.tier.as_str()));
        details.insert("prefix".into(), json!(key.prefix));
        if !key.allowed_networks.is_unrestricted() {
            details.insert(
                "allowedCidrs".into(),
                json!(key.allowed_networks.to_strings()),
            );
        }
        if let Some(per_minute) = key.rate_limit_per_minute {
            details.insert("rateLimitPerMinute".into(), json!(per_minute));
        }
        if let Some(parent) = &key.parent_id {
            details.insert("parentKeyId".into(), json!(parent.as_str()));
        }
        let audit = self.audit(principal, context, actions::CREATE, &key.id, details);
        if !self
            .store
            .insert_api_key(&key, &parsed.hash(), &audit)
            .await?
        {
            return Err(ApiKeyError::ParentGone);
        }
        Ok((key, secret))
    }

    /// A page of the caller's keys, newest first (scope `read`).
    pub async fn list(
        &self,
        principal: &Principal,
        context: &RequestContext,
        page: &PageRequest<ApiKeyId>,
    ) -> Result<Page<ApiKey, ApiKeyId>, ApiKeyError> {
        self.require(principal, context, Scope::Read, "api_key_list", None)
            .await?;
        let items = self
            .store
            .list_api_keys(&principal.user_id, &page.overfetch())
            .await?;
        Ok(Page::from_overfetch(items, page.limit, |key: &ApiKey| {
            After::item(key.created_at, key.id.clone())
        }))
    }

    /// One of the caller's keys (scope `read`).
    pub async fn get(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &ApiKeyId,
    ) -> Result<ApiKey, ApiKeyError> {
        self.require(principal, context, Scope::Read, "api_key_get", Some(id))
            .await?;
        self.store
            .find_api_key(&principal.user_id, id)
            .await?
            .ok_or(ApiKeyError::NotFound)
    }

    /// Changes name, scopes or tier (scope `write`; new scopes must be held by the caller).
    pub async fn update(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &ApiKeyId,
        input: UpdateApiKeyInput,
    ) -> Result<ApiKey, ApiKeyError> {
        self.refuse_token(principal, context, actions::UPDATE, Some(id))
            .await?;
        self.require(principal, context, Scope::Write, actions::UPDATE, Some(id))
            .await?;
        let mut checks = Validator::default();
        if let Some(name) = &input.name {
            checks.check(check_name(name));
        }
        let scopes = input
            .scopes
            .as_deref()
            .and_then(|raw| checks.check(check_scopes(raw)));
        let tier = input
            .tier
            .as_deref()
            .and_then(|raw| checks.check(check_tier(raw)));
        let networks = input
            .allowed_cidrs
            .as_deref()
            .and_then(|raw| checks.check(AllowedNetworks::parse("allowedCidrs", raw)));
        if input.name.is_none()
            && input.scopes.is_none()
            && input.tier.is_none()
            && input.allowed_cidrs.is_none()
            && input.rate_limit_per_minute.is_none()
        {
            checks.check::<()>(Err(FieldError::new(
                "body",
                "give at least one of name, scopes, rateLimitTier, allowedCidrs, rateLimit",
            )));
        }
        checks.finish()?;
        let target = self
            .check_control(principal, context, id, actions::UPDATE)
            .await?;
        // The per-minute limit is checked against the tier the key will have.
        let rate_limit = match input.rate_limit_per_minute {
            None => None,
            Some(None) => Some(None),
            Some(Some(raw)) => Some(Some(
                check_rate_limit(raw, self.tier_limit(tier.unwrap_or(target.tier)))
                    .map_err(|e| ValidationErrors(vec![e]))?,
            )),
        };
        let rate_limit = match (rate_limit, tier) {
            // A lower tier lowers a limit above the new tier's with it.
            (None, Some(tier)) => target
                .rate_limit_per_minute
                .zip(self.tier_limit(tier))
                .filter(|(own, most)| own > most)
                .map(|(_, most)| Some(most)),
            (rate_limit, _) => rate_limit,
        };
        let policy = self.caller_policy(principal).await?;
        policy.check_narrows(networks.as_ref().unwrap_or(&policy.networks), rate_limit)?;
        if let Some(scopes) = &scopes {
            self.check_grantable(principal, context, scopes, actions::UPDATE, Some(id))
                .await?;
        }
        if let Some(tier) = tier {
            Self::check_tier_grantable(principal, tier)?;
        }
        let mut details = Map::new();
        let changed: Vec<&str> = [
            ("name", input.name.is_some()),
            ("scopes", scopes.is_some()),
            ("rateLimitTier", tier.is_some()),
            ("allowedCidrs", networks.is_some()),
            ("rateLimit", rate_limit.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect();
        details.insert("fields".into(), json!(changed));
        let audit = self.audit(principal, context, actions::UPDATE, id, details);
        let updated = self
            .store
            .update_api_key(
                &principal.user_id,
                id,
                &ApiKeyChange {
                    name: input.name.as_deref(),
                    scopes: scopes.as_ref(),
                    tier,
                    allowed_networks: networks.as_ref(),
                    rate_limit_per_minute: rate_limit,
                },
                self.clock.now(),
                &audit,
            )
            .await?
            .ok_or(ApiKeyError::NotFound)?;
        self.cache.invalidate(id);
        Ok(updated)
    }

    /// Revokes a key at once (scope `write`).
    pub async fn revoke(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &ApiKeyId,
    ) -> Result<(), ApiKeyError> {
        self.refuse_token(principal, context, actions::REVOKE, Some(id))
            .await?;
        self.require(principal, context, Scope::Write, actions::REVOKE, Some(id))
            .await?;
        self.check_control(principal, context, id, actions::REVOKE)
            .await?;
        let mut details = Map::new();
        details.insert(
            "cascade".into(),
            json!("keys created through it are revoked too"),
        );
        let audit = self.audit(principal, context, actions::REVOKE, id, details);
        let revoked = self
            .store
            .revoke_api_key(&principal.user_id, id, self.clock.now(), &audit)
            .await?;
        self.cache.invalidate_with_children(id);
        if revoked {
            Ok(())
        } else {
            Err(ApiKeyError::NotFound)
        }
    }

    /// Gives a key a new secret; the old one keeps working for `grace_seconds` (scope `write`).
    pub async fn roll(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &ApiKeyId,
        grace_seconds: Option<i64>,
    ) -> Result<(ApiKey, SecretString, OffsetDateTime), ApiKeyError> {
        self.refuse_token(principal, context, actions::ROLL, Some(id))
            .await?;
        self.require(principal, context, Scope::Write, actions::ROLL, Some(id))
            .await?;
        let grace = grace_seconds.unwrap_or(0);
        if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
            return Err(ValidationErrors::single(
                "gracePeriodSeconds",
                format!("must be 0 to {MAX_GRACE_SECONDS}"),
            )
            .into());
        }
        self.check_control(principal, context, id, actions::ROLL)
            .await?;
        let now = self.clock.now();
        let old_expires_at = now + Duration::seconds(grace);
        let (secret, parsed) =
            format::generate().map_err(|e| ApiKeyError::Internal(e.to_string()))?;
        let mut details = Map::new();
        details.insert("gracePeriodSeconds".into(), json!(grace));
        details.insert("prefix".into(), json!(parsed.display_prefix()));
        details.insert(
            "cascade".into(),
            json!("keys created through it expire with the grace period"),
        );
        let audit = self.audit(principal, context, actions::ROLL, id, details);
        let key = self
            .store
            .roll_api_key(
                &principal.user_id,
                id,
                &parsed.hash(),
                &parsed.display_prefix(),
                old_expires_at,
                now,
                &audit,
            )
            .await?
            .ok_or(ApiKeyError::NotFound)?;
        self.cache.invalidate_with_children(id);
        Ok((key, secret, old_expires_at))
    }

    async fn lookup(&self, presented: &str) -> Result<KeyLookup, ApiKeyAuthOutcome> {
        let parsed = format::parse(presented)
            .map_err(|_: MalformedKey| ApiKeyAuthOutcome::Denied(ApiKeyAuthError::Malformed))?;
        let hash = parsed.hash();
        let found = match self.cache.get(hash.as_str()) {
            Some(found) => found,
            None => {
                let queried_at = std::time::Instant::now();
                let found = self
                    .store
                    .lookup_api_key(&hash)
                    .await
                    .map_err(ApiKeyAuthOutcome::Store)?
                    .ok_or(ApiKeyAuthOutcome::Denied(ApiKeyAuthError::NotFound))?;
                self.cache
                    .put(hash.as_str().to_owned(), found.clone(), queried_at);
                found
            }
        };
        if !found.stored_hash.matches(&hash) {
            return Err(ApiKeyAuthOutcome::Denied(ApiKeyAuthError::NotFound));
        }
        let now = self.clock.now();
        if found.key.revoked_at.is_some() {
            return Err(ApiKeyAuthOutcome::Denied(ApiKeyAuthError::Revoked));
        }
        let expired = |at: Option<OffsetDateTime>| at.is_some_and(|at| at <= now);
        if expired(found.key.expires_at) || expired(found.secret_expires_at) {
            return Err(ApiKeyAuthOutcome::Denied(ApiKeyAuthError::Expired));
        }
        if found.owner_disabled {
            return Err(ApiKeyAuthOutcome::Denied(ApiKeyAuthError::OwnerDisabled));
        }
        Ok(found)
    }

    fn effective_scopes(found: &KeyLookup) -> ScopeSet {
        let owner = found.owner_role.scopes();
        ScopeSet::new(
            found
                .key
                .scopes
                .iter()
                .filter(|scope| owner.allows(scope))
                .cloned(),
        )
    }

    /// Authenticates a request's key from `client_ip`: the principal acting for the key's owner,
    /// limited to the key's scopes, refused outside the key's networks. Counts the use (flushed
    /// in batches, not written per request).
    pub async fn authenticate(
        &self,
        presented: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<Principal, ApiKeyAuthOutcome> {
        let found = self.lookup(presented).await?;
        let networks = &found.key.allowed_networks;
        // No address (not over TCP) cannot prove it is inside a network.
        if !networks.is_unrestricted() && !client_ip.is_some_and(|ip| networks.allows(ip)) {
            return Err(ApiKeyAuthOutcome::Denied(ApiKeyAuthError::IpNotAllowed));
        }
        self.usage.record(&found.key.id, self.clock.now());
        let scopes = Self::effective_scopes(&found);
        let expires_at = match (found.key.expires_at, found.secret_expires_at) {
            (Some(key), Some(secret)) => Some(key.min(secret)),
            (key, secret) => key.or(secret),
        };
        Ok(Principal {
            user_id: found.key.user_id.clone(),
            username: found.owner_username.clone(),
            role: found.owner_role,
            tier: found.owner_tier,
            scopes,
            method: AuthMethod::ApiKey {
                key_id: found.key.id.clone(),
                tier: found.key.tier,
                expires_at,
                rate_limit_per_minute: found.key.rate_limit_per_minute,
            },
        })
    }

    /// Answers "is this key valid, and who is it?" for another service (caller needs `read`).
    /// Failures are audited.
    pub async fn verify(
        &self,
        principal: &Principal,
        context: &RequestContext,
        presented: &str,
    ) -> Result<KeyVerification, ApiKeyError> {
        self.require(principal, context, Scope::Read, "api_key_verify", None)
            .await?;
        match self.lookup(presented).await {
            Ok(found) => {
                self.usage.record(&found.key.id, self.clock.now());
                let scopes = Self::effective_scopes(&found);
                let tier = found.key.tier.min(found.owner_tier);
                Ok(KeyVerification::Valid {
                    key: Box::new(found.key),
                    scopes,
                    tier,
                    owner_tier: found.owner_tier,
                })
            }
            Err(ApiKeyAuthOutcome::Store(error)) => Err(error.into()),
            Err(ApiKeyAuthOutcome::Denied(reason)) => {
                let mut details = Map::new();
                details.insert("code".into(), json!(reason.code()));
                if let Ok(parsed) = format::parse(presented) {
                    details.insert("prefix".into(), json!(parsed.display_prefix()));
                }
                let entry = AuditEntry::new(
                    principal,
                    context,
                    actions::VERIFY_FAILURE,
                    None,
                    self.clock.now(),
                )
                .failed(reason.code())
                .with_metadata(details);
                self.store.append_audit(&entry).await?;
                Ok(KeyVerification::Invalid(reason))
            }
        }
    }

    /// Writes the usage counted since the last flush (called every few seconds and at shutdown).
    pub async fn flush_usage(&self) -> Result<usize, StoreError> {
        let batch = self.usage.drain();
        if batch.is_empty() {
            return Ok(0);
        }
        let count = batch.len();
        if let Err(error) = self.store.record_api_key_usage(&batch).await {
            self.usage.restore(batch);
            return Err(error);
        }
        Ok(count)
    }

    /// Forgets this instance's cached lookups of a user's keys (after an admin changed the user),
    /// so the change applies here on the next request.
    pub fn forget_owner(&self, owner: &UserId) {
        self.cache.invalidate_owner(owner);
    }

    /// Whether a presented token looks like an API key (so it is not tried as a JWT).
    pub fn looks_like_key(token: &str) -> bool {
        token.starts_with(format::KEY_PREFIX)
    }
}

/// A key's network and rate policy, as a calling key imposes it on the keys it creates or manages.
#[derive(Debug, Default)]
struct KeyPolicy {
    networks: AllowedNetworks,
    rate_limit_per_minute: Option<u32>,
}

impl KeyPolicy {
    /// Whether a key with `networks` and `rate_limit` is at least as restricted as this.
    fn contains(&self, networks: &AllowedNetworks, rate_limit: Option<u32>) -> bool {
        networks.is_within(&self.networks)
            && self
                .rate_limit_per_minute
                .is_none_or(|own| rate_limit.is_some_and(|limit| limit <= own))
    }

    /// Refuses networks outside these, and (`Some`: a change of) a limit above this one or none.
    fn check_narrows(
        &self,
        networks: &AllowedNetworks,
        rate_limit: Option<Option<u32>>,
    ) -> Result<(), ValidationErrors> {
        if !networks.is_within(&self.networks) {
            return Err(ValidationErrors::single(
                "allowedCidrs",
                "must lie within the calling key's allowedCidrs",
            ));
        }
        if let (Some(own), Some(limit)) = (self.rate_limit_per_minute, rate_limit)
            && limit.is_none_or(|limit| limit > own)
        {
            return Err(ValidationErrors::single(
                "rateLimit.perMinute",
                format!("must be at most {own} (the calling key's own limit)"),
            ));
        }
        Ok(())
    }
}

/// The result of authenticating a key: refused with a code, or the store failed.
#[derive(Debug)]
pub enum ApiKeyAuthOutcome {
    /// The key does not authenticate.
    Denied(ApiKeyAuthError),
    /// Storage failed while looking it up.
    Store(StoreError),
}
