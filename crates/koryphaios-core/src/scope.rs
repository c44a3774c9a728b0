//! Scopes and what they imply (SPEC §2.1).
//!
//! `admin` implies every scope, `write` implies `read`, and `provider:*` implies every
//! `provider:<name>`. Possession implies use: `provider:<p>` (reveal the secret) implies
//! `proxy:<p>` (call the provider through the credential proxy without seeing the secret),
//! `provider:*` implies every `proxy:` scope, and `proxy:*` implies every `proxy:<name>`; no
//! `proxy:` scope implies a `provider:` one. A user session carries its role's scopes; an API key
//! carries its own.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest provider name a scope may carry.
const MAX_PROVIDER_NAME: usize = 50;

/// One permission.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read the caller's own resources.
    Read,
    /// Create and change the caller's own resources; implies `read`.
    Write,
    /// Everything, including other users' audit data; implies every scope.
    Admin,
    /// Reveal credentials of one provider.
    Provider(String),
    /// Reveal credentials of every provider.
    AnyProvider,
    /// Use (never see) credentials of one provider through the proxy.
    Proxy(String),
    /// Use credentials of every provider through the proxy.
    AnyProxy,
}

/// The error for text that is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope; expected read, write, admin, provider:<name>, provider:*, proxy:<name> or proxy:*"
)]
pub struct UnknownScope;

impl Scope {
    /// Whether holding `self` grants `wanted`.
    pub fn implies(&self, wanted: &Scope) -> bool {
        match (self, wanted) {
            (Scope::Admin, _) => true,
            (Scope::Write, Scope::Read) => true,
            (Scope::AnyProvider, Scope::Provider(_) | Scope::Proxy(_) | Scope::AnyProxy) => true,
            (Scope::AnyProxy, Scope::Proxy(_)) => true,
            (Scope::Provider(held), Scope::Proxy(wanted)) => held == wanted,
            (held, wanted) => held == wanted,
        }
    }
}

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            "provider:*" => Ok(Scope::AnyProvider),
            "proxy:*" => Ok(Scope::AnyProxy),
            other => {
                if let Some(name) = other.strip_prefix("provider:") {
                    provider_name(name).map(Scope::Provider)
                } else if let Some(name) = other.strip_prefix("proxy:") {
                    provider_name(name).map(Scope::Proxy)
                } else {
                    Err(UnknownScope)
                }
            }
        }
    }
}

/// The provider name of a `provider:` or `proxy:` scope, when well formed.
fn provider_name(name: &str) -> Result<String, UnknownScope> {
    let valid = !name.is_empty()
        && name.len() <= MAX_PROVIDER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(UnknownScope)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Read => f.write_str("read"),
            Scope::Write => f.write_str("write"),
            Scope::Admin => f.write_str("admin"),
            Scope::AnyProvider => f.write_str("provider:*"),
            Scope::Provider(name) => write!(f, "provider:{name}"),
            Scope::AnyProxy => f.write_str("proxy:*"),
            Scope::Proxy(name) => write!(f, "proxy:{name}"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// The scopes a principal holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// A set holding exactly these scopes.
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().collect())
    }

    /// Whether any held scope grants `wanted`.
    pub fn allows(&self, wanted: &Scope) -> bool {
        self.0.iter().any(|held| held.implies(wanted))
    }

    /// Whether every scope of `other` is granted by this set (used to stop a key outgrowing its owner).
    pub fn covers(&self, other: &ScopeSet) -> bool {
        other.0.iter().all(|wanted| self.allows(wanted))
    }

    /// The scopes, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(raw: &str) -> Scope {
        raw.parse().unwrap()
    }

    #[test]
    fn admin_implies_everything() {
        for wanted in ["read", "write", "admin", "provider:openai", "provider:*"] {
            assert!(
                Scope::Admin.implies(&scope(wanted)),
                "admin should imply {wanted}"
            );
        }
    }

    #[test]
    fn write_implies_read_but_not_the_reverse() {
        assert!(Scope::Write.implies(&Scope::Read));
        assert!(!Scope::Read.implies(&Scope::Write));
    }

    #[test]
    fn provider_wildcard_implies_each_provider_but_not_admin() {
        assert!(Scope::AnyProvider.implies(&scope("provider:anthropic")));
        assert!(!Scope::AnyProvider.implies(&Scope::Admin));
        assert!(!scope("provider:openai").implies(&scope("provider:anthropic")));
        assert!(!scope("provider:openai").implies(&Scope::AnyProvider));
    }

    #[test]
    fn possession_implies_use_but_use_never_implies_possession() {
        assert!(scope("provider:openai").implies(&scope("proxy:openai")));
        assert!(!scope("provider:openai").implies(&scope("proxy:anthropic")));
        assert!(Scope::AnyProvider.implies(&scope("proxy:anthropic")));
        assert!(Scope::AnyProvider.implies(&Scope::AnyProxy));
        assert!(Scope::AnyProxy.implies(&scope("proxy:google")));
        assert!(!Scope::AnyProxy.implies(&scope("provider:google")));
        assert!(!scope("proxy:openai").implies(&scope("provider:openai")));
        assert!(!scope("proxy:openai").implies(&scope("proxy:anthropic")));
        assert!(!scope("proxy:openai").implies(&Scope::Read));
    }

    #[test]
    fn scopes_round_trip_through_text() {
        for raw in [
            "read",
            "write",
            "admin",
            "provider:*",
            "provider:openai",
            "proxy:*",
            "proxy:openai",
        ] {
            assert_eq!(scope(raw).to_string(), raw);
        }
    }

    #[test]
    fn malformed_scopes_are_rejected() {
        for bad in [
            "",
            "READ",
            "provider:",
            "provider:Open AI",
            "root",
            "provider:a/b",
            "proxy:",
            "proxy:a/b",
            "proxy:OpenAI",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn a_set_covers_only_what_its_scopes_imply() {
        let user = ScopeSet::new([Scope::Write, Scope::AnyProvider]);
        assert!(user.covers(&ScopeSet::new([Scope::Read, scope("provider:openai")])));
        assert!(!user.covers(&ScopeSet::new([Scope::Admin])));
    }
}
