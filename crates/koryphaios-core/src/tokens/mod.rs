//! Short-lived agent tokens (ADR 0018): what an agent run presents instead of an API key. A token
//! lives for minutes, holds at most its creator's scopes, may be limited to a few credentials, a
//! number of uses and a few networks, carries the run's id into every audit record it causes, and
//! dies with the key or session that minted it.
//!
//! This module owns the model and its input rules; `service.rs` the use cases; `uses.rs` the
//! exact use counter (the store's, or Redis's when configured).

mod service;
mod uses;

pub use service::{
    NewTokenInput, TokenAuthError, TokenAuthOutcome, TokenError, TokenService, actions,
};
pub use uses::{StoreUseCounter, UseCounter};

use time::OffsetDateTime;

use crate::api_keys::Tier;
use crate::ids::{ApiKeyId, CredentialId, FamilyId, TokenId, UserId};
use crate::networks::AllowedNetworks;
use crate::scope::ScopeSet;
use crate::secret::TokenHash;
use crate::users::Role;
use crate::validation::FieldError;

/// The longest life a token may ask for: one day.
pub const MAX_TTL_SECONDS: i64 = 86_400;
/// The most credentials a token may be limited to.
pub const MAX_CREDENTIAL_IDS: usize = 20;
/// The most uses a token may be given.
pub const MAX_USES: i64 = 1_000_000;
/// The longest run id.
pub const MAX_RUN_ID_CHARS: usize = 128;
/// The most live tokens one user may hold (each mint writes a row and an audit record).
pub const MAX_LIVE_TOKENS: i64 = 1000;

/// What storing a new token came to.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenInserted {
    /// Stored; the token as stored (its expiry cut to its parent's).
    Stored(Box<AgentToken>),
    /// The key or session minting it is no longer live.
    ParentGone,
    /// The user holds [`MAX_LIVE_TOKENS`] live tokens already.
    TooMany,
}

/// What minted a token: it never outlives or survives its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenParent {
    /// An API key.
    ApiKey(ApiKeyId),
    /// A login session.
    Session(FamilyId),
}

/// A stored agent token (never its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentToken {
    /// The token's id.
    pub id: TokenId,
    /// The user it acts for.
    pub user_id: UserId,
    /// A human name, if given.
    pub name: Option<String>,
    /// `kat_` + 8 characters of the secret, for display.
    pub prefix: String,
    /// What it may do (never more than its creator).
    pub scopes: ScopeSet,
    /// Its creator's tier when it was minted.
    pub tier: Tier,
    /// The only credentials it may reveal or use through the proxy (`None`: all the user's).
    pub credential_ids: Option<Vec<CredentialId>>,
    /// How many authenticated requests it may make (`None`: as many as it likes).
    pub max_uses: Option<u32>,
    /// Where it may be used from (empty: anywhere).
    pub allowed_networks: AllowedNetworks,
    /// The agent run it belongs to.
    pub run_id: Option<String>,
    /// What minted it.
    pub parent: TokenParent,
    /// When it was minted.
    pub created_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

/// What authentication reads for a presented token's hash: the token, its owner now, and
/// whether its parent still lives.
#[derive(Debug, Clone)]
pub struct TokenLookup {
    /// The token.
    pub token: AgentToken,
    /// Its owner's role now.
    pub owner_role: Role,
    /// Its owner's tier now.
    pub owner_tier: Tier,
    /// Whether an admin disabled the owner.
    pub owner_disabled: bool,
    /// The owner's name.
    pub owner_username: String,
    /// Whether the key or session that minted it is still live (not revoked, not expired, not
    /// ended).
    pub parent_live: bool,
    /// The minting key's scopes now (a key narrowed after minting narrows its tokens too).
    pub parent_scopes: Option<ScopeSet>,
    /// The minting key's own requests-per-minute limit now.
    pub parent_rate_limit_per_minute: Option<u32>,
    /// The minting key's networks now (a key narrowed after minting narrows its tokens too).
    pub parent_networks: AllowedNetworks,
    /// The minting key's tier now (a key lowered after minting lowers its tokens too).
    pub parent_tier: Option<Tier>,
    /// The stored hash, compared in constant time with the presented one.
    pub stored_hash: TokenHash,
}

/// Whether a character may appear in a run id: printable, and not one that hides or reorders
/// text (line and paragraph separators, bidirectional controls, zero-width and other format
/// characters, whitespace other than the plain space).
fn is_printable(c: char) -> bool {
    const INVISIBLE: &[(char, char)] = &[
        ('\u{00AD}', '\u{00AD}'),
        ('\u{061C}', '\u{061C}'),
        ('\u{180E}', '\u{180E}'),
        ('\u{200B}', '\u{200F}'),
        ('\u{2028}', '\u{202E}'),
        ('\u{2060}', '\u{206F}'),
        ('\u{FEFF}', '\u{FEFF}'),
        ('\u{FFF9}', '\u{FFFB}'),
    ];
    !c.is_control()
        && (c == ' ' || !c.is_whitespace())
        && !INVISIBLE
            .iter()
            .any(|(from, to)| (*from..=*to).contains(&c))
}

/// Checks a run id: 1–128 printable characters (it ends up in audit records, logs, query strings
/// and consoles).
pub fn check_run_id(run_id: &str) -> Result<(), FieldError> {
    let length = run_id.chars().count();
    if !(1..=MAX_RUN_ID_CHARS).contains(&length) || !run_id.chars().all(is_printable) {
        return Err(FieldError::new(
            "runId",
            format!("must be 1 to {MAX_RUN_ID_CHARS} printable characters"),
        ));
    }
    Ok(())
}

/// Checks a requested lifetime.
pub fn check_ttl(ttl_seconds: i64) -> Result<(), FieldError> {
    if !(1..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
        return Err(FieldError::new(
            "ttlSeconds",
            format!("must be 1 to {MAX_TTL_SECONDS}"),
        ));
    }
    Ok(())
}

/// Checks a use limit.
pub fn check_max_uses(max_uses: i64) -> Result<u32, FieldError> {
    if !(1..=MAX_USES).contains(&max_uses) {
        return Err(FieldError::new(
            "maxUses",
            format!("must be 1 to {MAX_USES}"),
        ));
    }
    u32::try_from(max_uses).map_err(|_| FieldError::new("maxUses", "out of range"))
}

/// Checks a credential restriction: 1–20 well-formed credential ids, none repeated (so an index
/// in a later error names the entry the client sent).
pub fn check_credential_ids(raw: &[String]) -> Result<Vec<CredentialId>, FieldError> {
    if raw.is_empty() || raw.len() > MAX_CREDENTIAL_IDS {
        return Err(FieldError::new(
            "credentialIds",
            format!("must list 1 to {MAX_CREDENTIAL_IDS} credential ids"),
        ));
    }
    let mut ids: Vec<CredentialId> = Vec::with_capacity(raw.len());
    for (index, text) in raw.iter().enumerate() {
        let id = CredentialId::parse(text).map_err(|_| {
            FieldError::new(
                format!("credentialIds[{index}]"),
                format!("must be a credential id ({}…)", CredentialId::PREFIX),
            )
        })?;
        if ids.contains(&id) {
            return Err(FieldError::new(
                format!("credentialIds[{index}]"),
                "repeats an earlier id",
            ));
        }
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_printable_and_bounded() {
        assert!(check_run_id("run-42 / nightly eval ✓").is_ok());
        assert!(check_run_id(&"r".repeat(128)).is_ok());
        for bad in [
            "",
            &"r".repeat(129),
            "line\nbreak",
            "nul\0",
            "esc\u{1b}[31m",
            "tab\there",
            "sep\u{2028}arator",
            "bidi\u{202E}txt",
            "zero\u{200B}width",
            "nb\u{00A0}sp",
        ] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lifetimes_and_uses_are_bounded() {
        assert!(check_ttl(1).is_ok() && check_ttl(86_400).is_ok());
        assert!(check_ttl(0).is_err() && check_ttl(86_401).is_err() && check_ttl(-5).is_err());
        assert_eq!(check_max_uses(3).unwrap(), 3);
        assert!(check_max_uses(0).is_err() && check_max_uses(MAX_USES + 1).is_err());
    }

    #[test]
    fn credential_lists_name_the_bad_entry() {
        let good = CredentialId::generate().to_string();
        assert_eq!(
            check_credential_ids(&[good.clone(), good.clone()])
                .unwrap_err()
                .field,
            "credentialIds[1]"
        );
        let error = check_credential_ids(&[good, "key_123".into()]).unwrap_err();
        assert_eq!(error.field, "credentialIds[1]");
        assert!(check_credential_ids(&[]).is_err());
        let many: Vec<String> = (0..21)
            .map(|_| CredentialId::generate().to_string())
            .collect();
        assert!(check_credential_ids(&many).is_err());
    }
}
