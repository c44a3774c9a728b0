//! The authenticated caller of a request.

use std::sync::Arc;

use crate::api_keys::Tier;
use crate::ids::{ApiKeyId, CredentialId, FamilyId, TokenId, UserId};
use crate::scope::{Scope, ScopeSet};
use crate::users::Role;

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// A user session's access token.
    Session {
        /// The access token's unique id, revoked by logout.
        jti: String,
        /// The login session the token belongs to.
        family: FamilyId,
        /// When the access token stops being valid.
        expires_at: time::OffsetDateTime,
    },
    /// An API key.
    ApiKey {
        /// The key's id.
        key_id: ApiKeyId,
        /// The key's rate-limit tier (its requests are limited by this and the owner's tier).
        tier: Tier,
        /// When the presented key stops working: the key's expiry or, for a rolled-away secret,
        /// the end of its grace period, whichever is first. Keys it creates expire by then.
        expires_at: Option<time::OffsetDateTime>,
        /// The key's own requests-per-minute limit, when it has one (at most its tier's).
        rate_limit_per_minute: Option<u32>,
    },
    /// A short-lived agent token.
    Token(Arc<TokenGrant>),
}

/// What an agent token brings into a request besides its scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The token's id.
    pub token_id: TokenId,
    /// The tier it was minted with (its creator's at the time).
    pub tier: Tier,
    /// When it stops working.
    pub expires_at: time::OffsetDateTime,
    /// The API key that minted it, if a key did: its requests count against that key's counters.
    pub parent_key: Option<ApiKeyId>,
    /// That key's own requests-per-minute limit, which the token shares.
    pub parent_rate_limit_per_minute: Option<u32>,
    /// The only credentials it may reveal or use through the proxy (`None`: all the user's).
    pub credential_ids: Option<Vec<CredentialId>>,
    /// The agent run it belongs to, stamped on every audit record it causes.
    pub run_id: Option<String>,
}

/// Who is calling, and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user the caller acts for.
    pub user_id: UserId,
    /// That user's name.
    pub username: String,
    /// That user's role.
    pub role: Role,
    /// That user's rate-limit tier (every session and key of the user shares its allowance).
    pub tier: Tier,
    /// What the caller may do.
    pub scopes: ScopeSet,
    /// How the caller authenticated.
    pub method: AuthMethod,
}

impl Principal {
    /// Whether the caller holds a scope that grants `wanted`.
    pub fn allows(&self, wanted: &Scope) -> bool {
        self.scopes.allows(wanted)
    }

    /// The highest tier the caller may use or grant: the user's, or a key's (token's) own when
    /// lower.
    pub fn effective_tier(&self) -> Tier {
        match &self.method {
            AuthMethod::ApiKey { tier, .. } => self.tier.min(*tier),
            AuthMethod::Token(grant) => self.tier.min(grant.tier),
            AuthMethod::Session { .. } => self.tier,
        }
    }

    /// The agent token the caller presented, if it presented one.
    pub fn token(&self) -> Option<&TokenGrant> {
        match &self.method {
            AuthMethod::Token(grant) => Some(grant),
            AuthMethod::ApiKey { .. } | AuthMethod::Session { .. } => None,
        }
    }

    /// Whether the caller may touch credential `id` at all (an agent token may be limited to a
    /// few; everything else may touch any of the user's).
    pub fn may_touch_credential(&self, id: &str) -> bool {
        self.token()
            .and_then(|grant| grant.credential_ids.as_ref())
            .is_none_or(|allowed| allowed.iter().any(|allowed| allowed.as_str() == id))
    }

    /// The agent run the caller's token belongs to.
    pub fn run_id(&self) -> Option<&str> {
        self.token().and_then(|grant| grant.run_id.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_limited_by_its_own_tier_and_its_owners() {
        let mut principal = Principal {
            user_id: UserId::generate(),
            username: "ada".into(),
            role: Role::User,
            tier: Tier::Pro,
            scopes: Role::User.scopes(),
            method: AuthMethod::ApiKey {
                key_id: ApiKeyId::generate(),
                tier: Tier::Enterprise,
                expires_at: None,
                rate_limit_per_minute: None,
            },
        };
        assert_eq!(principal.effective_tier(), Tier::Pro);
        principal.method = AuthMethod::ApiKey {
            key_id: ApiKeyId::generate(),
            tier: Tier::Free,
            expires_at: None,
            rate_limit_per_minute: None,
        };
        assert_eq!(principal.effective_tier(), Tier::Free);
        principal.method = AuthMethod::Session {
            jti: "j".into(),
            family: FamilyId::generate(),
            expires_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(principal.effective_tier(), Tier::Pro);
    }
}
