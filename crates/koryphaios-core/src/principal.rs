//! The authenticated caller of a request.

use crate::api_keys::Tier;
use crate::ids::{ApiKeyId, FamilyId, UserId};
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
    },
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

    /// The highest tier the caller may use or grant: the user's, or a key's own when lower.
    pub fn effective_tier(&self) -> Tier {
        match &self.method {
            AuthMethod::ApiKey { tier, .. } => self.tier.min(*tier),
            AuthMethod::Session { .. } => self.tier,
        }
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
            },
        };
        assert_eq!(principal.effective_tier(), Tier::Pro);
        principal.method = AuthMethod::ApiKey {
            key_id: ApiKeyId::generate(),
            tier: Tier::Free,
            expires_at: None,
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
