//! Typed, prefixed identifiers (`usr_…`, `fam_…`, `rtk_…`).
//!
//! An id is its prefix plus a UUIDv7 in lowercase hex, so ids sort by creation time and a value
//! of one type can never be passed where another is expected. Parsing rejects anything else
//! before it reaches storage.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The error for a string that is not an id of the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {expected} id")]
pub struct InvalidId {
    /// The prefix that was expected, e.g. `usr_`.
    pub expected: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this type starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Parses an id, checking the prefix and the 32 lowercase hex digits after it.
            pub fn parse(raw: &str) -> Result<Self, InvalidId> {
                let valid = raw.strip_prefix($prefix).is_some_and(|rest| {
                    rest.len() == 32
                        && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                });
                if valid {
                    Ok(Self(raw.to_owned()))
                } else {
                    Err(InvalidId { expected: $prefix })
                }
            }

            /// A regular expression (as JSON Schema writes them) matching exactly the text
            /// [`Self::parse`] accepts, for API documents.
            pub fn pattern() -> String {
                format!("^{}[0-9a-f]{{32}}$", $prefix)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                Self::parse(raw)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// Identifies a user.
    UserId,
    "usr_"
);
prefixed_id!(
    /// Identifies a login session: every refresh token and access token issued from one login.
    FamilyId,
    "fam_"
);
prefixed_id!(
    /// Identifies a stored provider credential.
    CredentialId,
    "cred_"
);
prefixed_id!(
    /// Identifies an API key (not the secret: its public handle).
    ApiKeyId,
    "key_"
);
prefixed_id!(
    /// Identifies a short-lived agent token (its public handle, not the secret).
    TokenId,
    "tok_"
);
prefixed_id!(
    /// Identifies an audit record.
    AuditEventId,
    "aud_"
);
prefixed_id!(
    /// Identifies one refresh token of a session.
    RefreshTokenId,
    "rtk_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_carry_their_prefix() {
        let id = UserId::generate();
        assert!(id.as_str().starts_with("usr_"));
        assert_eq!(UserId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn ids_of_another_type_or_shape_are_rejected() {
        let family = FamilyId::generate();
        assert!(UserId::parse(family.as_str()).is_err());
        for bad in [
            "",
            "usr_",
            "usr_XYZ",
            "usr_0123",
            "USR_0190f2b8c1d97c3e9a1b2c3d4e5f6a7b",
            "usr_0190f2b8c1d97c3e9a1b2c3d4e5f6a7B",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(UserId::parse("usr_0190f2b8c1d97c3e9a1b2c3d4e5f6a7b").is_ok());
    }

    #[test]
    fn the_documented_pattern_is_prefix_and_32_lowercase_hex_digits() {
        assert_eq!(CredentialId::pattern(), "^cred_[0-9a-f]{32}$");
        let id = ApiKeyId::generate();
        let hex = id.as_str().strip_prefix(ApiKeyId::PREFIX).unwrap();
        assert!(
            hex.len() == 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn generated_ids_sort_by_creation() {
        let first = UserId::generate();
        let second = UserId::generate();
        assert!(first < second);
    }
}
