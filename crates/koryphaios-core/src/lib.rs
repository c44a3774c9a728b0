//! Koryphaios domain crate.
//!
//! Owns the business rules and the ports (traits) that adapters implement: identifiers, the clock,
//! principals and scopes, users and their sessions, password hashing, access tokens, and the
//! storage and migration contracts. It depends on no web framework, SQL driver, Redis client or
//! cloud SDK; the server crate wires adapters to these ports.

pub mod access;
pub mod api_keys;
pub mod audit;
pub mod clock;
pub mod credentials;
pub mod envelope;
pub mod group_commit;
pub mod ids;
pub mod migrations;
pub mod networks;
pub mod pagination;
pub mod principal;
pub mod ratelimit;
pub mod scope;
pub mod secret;
pub mod session;
pub mod store;
pub mod store_error;
pub mod tier;
pub mod tokens;
pub mod users;
pub mod validation;

#[cfg(feature = "test-support")]
pub mod testing;

pub use clock::{Clock, SystemClock};
pub use ids::{ApiKeyId, AuditEventId, CredentialId, FamilyId, RefreshTokenId, TokenId, UserId};
pub use principal::{AuthMethod, Principal};
pub use scope::{Scope, ScopeSet};
