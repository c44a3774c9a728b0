//! API keys: the format, the model and its input rules (SPEC §2.3), the in-process lookup cache,
//! batched usage counters, and the use cases.

mod cache;
pub mod format;
mod service;

pub use cache::{KeyCache, LookupCache, UsageRecorder};
pub use service::{
    ApiKeyAuthError, ApiKeyAuthOutcome, ApiKeyError, ApiKeyService, KeyVerification,
    NewApiKeyInput, UpdateApiKeyInput, actions,
};

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::ids::{ApiKeyId, UserId};
use crate::networks::AllowedNetworks;
use crate::scope::{Scope, ScopeSet};
use crate::secret::TokenHash;
use crate::users::Role;
use crate::validation::FieldError;

pub use crate::tier::Tier;

/// A stored API key (never its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    /// The key's id.
    pub id: ApiKeyId,
    /// The owner it acts for.
    pub user_id: UserId,
    /// A human name.
    pub name: String,
    /// `kor_` + 8 characters of the current secret, for display.
    pub prefix: String,
    /// What it may do (never more than its owner).
    pub scopes: ScopeSet,
    /// Its rate-limit tier.
    pub tier: Tier,
    /// Descriptive data.
    pub metadata: Map<String, Value>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
    /// When it was last used (flushed from memory every few seconds).
    pub last_used_at: Option<OffsetDateTime>,
    /// How often it was used (flushed from memory every few seconds).
    pub usage_count: i64,
    /// The key that created this one, if a key did (it never outlives or survives its parent).
    pub parent_id: Option<ApiKeyId>,
    /// Where it may be used from (empty: anywhere).
    pub allowed_networks: AllowedNetworks,
    /// Its own requests-per-minute limit, at most its tier's (`None`: the tier's alone).
    pub rate_limit_per_minute: Option<u32>,
}

/// What verification reads for a presented key hash.
#[derive(Debug, Clone)]
pub struct KeyLookup {
    /// The key.
    pub key: ApiKey,
    /// Its owner's role now (a key never outgrows it).
    pub owner_role: Role,
    /// Its owner's tier now (the key's requests count against it).
    pub owner_tier: Tier,
    /// Whether an admin disabled the owner (the key then stops working).
    pub owner_disabled: bool,
    /// The owner's name.
    pub owner_username: String,
    /// When this particular secret stops working (set for a rolled-away secret's grace period).
    pub secret_expires_at: Option<OffsetDateTime>,
    /// The stored hash, compared in constant time with the presented one.
    pub stored_hash: TokenHash,
}

/// The longest key name.
pub const MAX_NAME_CHARS: usize = 100;
/// The most scopes a key may carry.
pub const MAX_SCOPES: usize = 10;
/// The longest expiry, in days.
pub const MAX_EXPIRES_DAYS: i64 = 365;
/// The longest grace period for a rolled secret: 7 days.
pub const MAX_GRACE_SECONDS: i64 = 7 * 24 * 3600;

/// Checks a key name: 1–100 characters of letters, digits, `_`, `-`, space.
pub fn check_name(name: &str) -> Result<(), FieldError> {
    let length = name.chars().count();
    if !(1..=MAX_NAME_CHARS).contains(&length) {
        return Err(FieldError::new(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters long"),
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' '))
    {
        return Err(FieldError::new(
            "name",
            "may contain only letters, digits, '_', '-' and spaces",
        ));
    }
    Ok(())
}

/// Checks a scope list: 1–10 known scopes.
pub fn check_scopes(raw: &[String]) -> Result<ScopeSet, FieldError> {
    if raw.is_empty() || raw.len() > MAX_SCOPES {
        return Err(FieldError::new(
            "scopes",
            format!("must list 1 to {MAX_SCOPES} scopes"),
        ));
    }
    let scopes = raw
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FieldError::new("scopes", e.to_string()))?;
    let unknown_provider = scopes.iter().find(|scope| {
        matches!(scope, Scope::Provider(name) | Scope::Proxy(name)
            if !crate::credentials::PROVIDERS.contains(&name.as_str()))
    });
    if let Some(unknown) = unknown_provider {
        return Err(FieldError::new(
            "scopes",
            format!("{unknown} names no known provider"),
        ));
    }
    Ok(ScopeSet::new(scopes))
}

/// The highest per-key limit accepted when no tier limit applies (rate limiting off).
pub const MAX_RATE_LIMIT_PER_MINUTE: u32 = 1_000_000;

/// Checks a key's own per-minute limit: 1 to `tier_limit` (the key's tier's limit, when rate
/// limiting is on).
pub fn check_rate_limit(per_minute: i64, tier_limit: Option<u32>) -> Result<u32, FieldError> {
    let most = tier_limit.unwrap_or(MAX_RATE_LIMIT_PER_MINUTE);
    u32::try_from(per_minute)
        .ok()
        .filter(|n| (1..=most).contains(n))
        .ok_or_else(|| {
            FieldError::new(
                "rateLimit.perMinute",
                format!("must be 1 to {most} (the key's tier allows no more)"),
            )
        })
}

/// Checks a tier name.
pub fn check_tier(raw: &str) -> Result<Tier, FieldError> {
    Tier::parse(raw).ok_or_else(|| {
        FieldError::new(
            "rateLimitTier",
            "must be one of free, premium, pro, enterprise",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        assert!(check_name("ci deploy-key_1").is_ok());
        assert!(check_name(&"a".repeat(100)).is_ok());
        for bad in ["", &"a".repeat(101), "semi;colon", "tab\tname", "émoji"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scope_lists_are_1_to_10_known_scopes() {
        assert!(check_scopes(&["read".into(), "provider:openai".into()]).is_ok());
        assert!(check_scopes(&[]).is_err());
        assert!(check_scopes(&vec!["read".to_owned(); 11]).is_err());
        assert!(check_scopes(&["superuser".into()]).is_err());
        assert!(check_scopes(&["provider:nosuchai".into()]).is_err());
    }

    #[test]
    fn tiers_round_trip() {
        for tier in Tier::ALL {
            assert_eq!(Tier::parse(tier.as_str()), Some(tier));
        }
        assert!(check_tier("gold").is_err());
    }
}
