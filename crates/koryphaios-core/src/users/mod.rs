//! Users: who they are, what their role grants, and the rules for names and passwords.

mod hash_memory;
pub(crate) mod password;

pub use password::{PasswordHash, PasswordHasher, PasswordPolicy};

use serde::Serialize;
use time::OffsetDateTime;

use crate::ids::UserId;
use crate::scope::{Scope, ScopeSet};
use crate::validation::FieldError;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: holds the `admin` scope.
    Admin,
    /// Their own resources: `read write provider:*`.
    User,
}

impl Role {
    /// The role's storage and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    /// Parses a stored role name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }

    /// The scopes a session of this role holds (SPEC §2.1).
    pub fn scopes(self) -> ScopeSet {
        match self {
            Role::Admin => ScopeSet::new([Scope::Admin]),
            Role::User => ScopeSet::new([Scope::Read, Scope::Write, Scope::AnyProvider]),
        }
    }
}

/// A stored user, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The unique (case-insensitively) login name.
    pub username: String,
    /// What the user may do.
    pub role: Role,
    /// Bumped by logout-all and password change: access tokens from an older epoch are dead.
    pub session_epoch: i64,
    /// When the user registered.
    pub created_at: OffsetDateTime,
    /// When the user last changed.
    pub updated_at: OffsetDateTime,
}

/// A user as read for login: with the stored password hash.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    /// The user.
    pub user: User,
    /// The Argon2id PHC string.
    pub password_hash: PasswordHash,
}

/// A validated login name: 3–64 characters of letters, digits, `_`, `-` and `.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// The shortest allowed name.
    pub const MIN_LEN: usize = 3;
    /// The longest allowed name.
    pub const MAX_LEN: usize = 64;

    /// Checks a name against the rules.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let length = raw.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&length) {
            return Err(FieldError::new(
                "username",
                format!(
                    "must be {} to {} characters long",
                    Self::MIN_LEN,
                    Self::MAX_LEN
                ),
            ));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(FieldError::new(
                "username",
                "may contain only letters, digits, '_', '-' and '.'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What registration stores.
#[derive(Debug)]
pub struct NewUser {
    /// The new user's id.
    pub id: UserId,
    /// The validated name.
    pub username: Username,
    /// The hash of the chosen password.
    pub password_hash: PasswordHash,
    /// The registration instant.
    pub created_at: OffsetDateTime,
}

/// Whether registration is open to anyone once the install has a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationPolicy {
    /// Anyone may register.
    Open,
    /// Only the first user of an empty install (who becomes admin).
    FirstUserOnly,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_documented_rules() {
        for good in ["ada", "grace.hopper", "svc-ci_01", &"a".repeat(64)] {
            assert!(Username::parse(good).is_ok(), "{good} should be accepted");
        }
        for bad in ["", "ab", "has space", "semi;colon", "ünï", &"a".repeat(65)] {
            assert!(Username::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn roles_map_to_the_spec_scopes() {
        assert!(Role::Admin.scopes().allows(&Scope::Admin));
        let user = Role::User.scopes();
        assert!(user.allows(&Scope::Write) && user.allows(&Scope::Provider("openai".into())));
        assert!(!user.allows(&Scope::Admin));
        assert_eq!(Role::parse(Role::Admin.as_str()), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }
}
