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
        /// The key's rate-limit tier.
        tier: Tier,
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
}
