//! Users: who they are, what their role grants, and the rules for names and passwords.

mod admin;
mod hash_memory;
pub(crate) mod password;

pub use admin::{UserAdminError, UserAdminService, UserChangeInput, actions};
pub use password::{PasswordHash, PasswordHasher, PasswordPolicy};

use serde::Serialize;
use time::OffsetDateTime;

use crate::ids::UserId;
use crate::scope::{Scope, ScopeSet};
use crate::tier::Tier;
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

    /// Parses a role name (stored or from the API).
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
    /// The user's rate-limit tier: every session and key of the user counts against it together.
    pub tier: Tier,
    /// When an admin disabled the user; a disabled user can neither log in nor use a session or key.
    pub disabled_at: Option<OffsetDateTime>,
    /// Bumped by logout-all, password change and disabling: access tokens from an older epoch are dead.
    pub session_epoch: i64,
    /// When the user registered.
    pub created_at: OffsetDateTime,
    /// When the user last changed.
    pub updated_at: OffsetDateTime,
    /// When the user last logged in with a password.
    pub last_login_at: Option<OffsetDateTime>,
}

impl User {
    /// Whether an admin disabled the user.
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }

    /// Whether the user is an admin who can act (not disabled): the install must keep one.
    pub fn is_active_admin(&self) -> bool {
        self.role == Role::Admin && !self.is_disabled()
    }
}

/// An admin's change to a user's standing: only the given fields change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserChange {
    /// A new role.
    pub role: Option<Role>,
    /// A new tier.
    pub tier: Option<Tier>,
    /// Disable (`true`) or enable (`false`).
    pub disabled: Option<bool>,
}

impl UserChange {
    /// `user` with the change applied at `now`. A user disabled already keeps their instant;
    /// disabling bumps the session epoch, so every access token of the user dies with it.
    pub fn apply(&self, user: &User, now: OffsetDateTime) -> User {
        let disabled_at = match self.disabled {
            None => user.disabled_at,
            Some(false) => None,
            Some(true) => user.disabled_at.or(Some(now)),
        };
        let newly_disabled = disabled_at.is_some() && user.disabled_at.is_none();
        User {
            role: self.role.unwrap_or(user.role),
            tier: self.tier.unwrap_or(user.tier),
            disabled_at,
            session_epoch: user.session_epoch + i64::from(newly_disabled),
            updated_at: now,
            ..user.clone()
        }
    }
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
    /// The tier of a user who is not the first (`KORYPHAIOS_DEFAULT_USER_TIER`).
    pub default_tier: Tier,
    /// The registration instant.
    pub created_at: OffsetDateTime,
}

impl NewUser {
    /// The role and tier the user gets: the first user of an empty install is the admin, on the
    /// top tier; everyone after is a user on the default tier. Stores call this inside the
    /// transaction that decides whether the install was empty.
    pub fn standing(&self, first: bool) -> (Role, Tier) {
        if first {
            (Role::Admin, Tier::Enterprise)
        } else {
            (Role::User, self.default_tier)
        }
    }
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

    fn sample_user() -> User {
        User {
            id: UserId::generate(),
            username: "ada".into(),
            role: Role::Admin,
            tier: Tier::Pro,
            disabled_at: None,
            session_epoch: 3,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            last_login_at: None,
        }
    }

    #[test]
    fn the_first_user_is_an_enterprise_admin_and_later_ones_get_the_default_tier() {
        let new = NewUser {
            id: UserId::generate(),
            username: Username::parse("ada").unwrap(),
            password_hash: PasswordHash::from_stored("x".into()),
            default_tier: Tier::Premium,
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(new.standing(true), (Role::Admin, Tier::Enterprise));
        assert_eq!(new.standing(false), (Role::User, Tier::Premium));
    }

    #[test]
    fn a_change_touches_only_its_fields_and_keeps_the_first_disable_instant() {
        let user = sample_user();
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1);
        let tier_only = UserChange {
            tier: Some(Tier::Free),
            ..UserChange::default()
        }
        .apply(&user, now);
        assert_eq!(
            (tier_only.role, tier_only.tier, tier_only.disabled_at),
            (Role::Admin, Tier::Free, None)
        );
        let disable = UserChange {
            disabled: Some(true),
            ..UserChange::default()
        };
        let disabled = disable.apply(&user, now);
        assert!(disabled.is_disabled() && !disabled.is_active_admin());
        assert_eq!(disabled.session_epoch, user.session_epoch + 1);
        assert_eq!(tier_only.session_epoch, user.session_epoch);
        let later = now + time::Duration::hours(1);
        assert_eq!(disable.apply(&disabled, later).disabled_at, Some(now));
        let enabled = UserChange {
            disabled: Some(false),
            ..UserChange::default()
        }
        .apply(&disabled, later);
        assert!(enabled.is_active_admin());
    }
}
