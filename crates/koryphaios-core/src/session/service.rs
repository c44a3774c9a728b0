//! The authentication use cases: register, login, refresh, logout, logout-all, change password,
//! and turning a presented access token into a [`Principal`].

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use time::{Duration, OffsetDateTime};

use super::access_token::{AccessTokenCodec, TokenError};
use serde_json::{Map, json};

use crate::audit::{AuditEntry, RequestContext, actions};
use crate::clock::Clock;
use crate::ids::{FamilyId, RefreshTokenId, UserId};
use crate::principal::{AuthMethod, Principal};
use crate::secret::{RandomError, TokenHash, random_token};
use crate::store::{NewRefreshToken, RegisterUserError, RotateOutcome, Store, StoreError};
use crate::tier::Tier;
use crate::users::password::HashError;
use crate::users::{NewUser, PasswordHasher, PasswordPolicy, RegistrationPolicy, User, Username};
use crate::validation::{ValidationErrors, Validator};

/// Refresh tokens start with this, so they are recognisable in a leak scan.
const REFRESH_TOKEN_PREFIX: &str = "krt_";

/// Lifetimes and policy for sessions.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// How long an access token lives (SPEC: 15 minutes).
    pub access_ttl: Duration,
    /// How long a refresh token lives (SPEC: 7 days).
    pub refresh_ttl: Duration,
    /// Whether anyone may register once the install has a user.
    pub allow_registration: bool,
    /// The tier of every user but the first (`KORYPHAIOS_DEFAULT_USER_TIER`; default free).
    pub default_user_tier: Tier,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            access_ttl: Duration::minutes(15),
            refresh_ttl: Duration::days(7),
            allow_registration: false,
            default_user_tier: Tier::Free,
        }
    }
}

/// What login, refresh and password change hand back.
#[derive(Debug)]
pub struct SessionTokens {
    /// The JWT for `Authorization: Bearer`.
    pub access_token: SecretString,
    /// The opaque token for `/api/auth/refresh`, valid once.
    pub refresh_token: SecretString,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Who logged in.
    pub user: User,
}

/// Why an authentication use case refused. The HTTP layer maps each to a status and code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Input broke a rule.
    #[error(transparent)]
    Validation(#[from] ValidationErrors),
    /// Unknown user or wrong password (never says which).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Registration is closed on this install.
    #[error("registration is closed")]
    RegistrationClosed,
    /// The username is taken.
    #[error("username is taken")]
    UsernameTaken,
    /// The access token is malformed, forged or refers to nothing.
    #[error("invalid access token")]
    InvalidToken,
    /// The access token expired.
    #[error("access token expired")]
    TokenExpired,
    /// The access token was revoked (logout, logout-all, password change).
    #[error("access token revoked")]
    TokenRevoked,
    /// The refresh token is unknown, expired or revoked.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// A spent refresh token was presented again; its session is now revoked.
    #[error("refresh token reused; the session has been revoked")]
    RefreshTokenReused,
    /// Too many password checks are running; retry shortly.
    #[error("too many logins in progress")]
    Busy,
    /// An admin disabled the user: no login, refresh, session or key works.
    #[error("this user is disabled")]
    UserDisabled,
    /// The operation needs a user session, and the caller used an API key.
    #[error("this needs a user session, not an API key")]
    NotASession,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing, signing or randomness failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<HashError> for AuthError {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Busy => AuthError::Busy,
            other => AuthError::Internal(other.to_string()),
        }
    }
}

impl From<RandomError> for AuthError {
    fn from(error: RandomError) -> Self {
        AuthError::Internal(error.to_string())
    }
}

/// The authentication use cases.
#[derive(Debug)]
pub struct AuthService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    codec: AccessTokenCodec,
    hasher: PasswordHasher,
    settings: AuthSettings,
}

impl AuthService {
    /// Wires the use cases to their ports.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        codec: AccessTokenCodec,
        hasher: PasswordHasher,
        settings: AuthSettings,
    ) -> Self {
        Self {
            store,
            clock,
            codec,
            hasher,
            settings,
        }
    }

    /// Registers a user. The first user of an empty install becomes admin.
    pub async fn register(
        &self,
        context: &RequestContext,
        username: &str,
        password: &SecretString,
    ) -> Result<User, AuthError> {
        let mut checks = Validator::default();
        let username = checks.check(Username::parse(username));
        checks.check(PasswordPolicy::check(
            "password",
            password,
            username.as_ref().map_or("", |u| u.as_str()),
        ));
        checks.finish()?;
        let Some(username) = username else {
            return Err(AuthError::Internal("validated username missing".into()));
        };
        let policy = if self.settings.allow_registration {
            RegistrationPolicy::Open
        } else {
            RegistrationPolicy::FirstUserOnly
        };
        // Refuse before paying for a hash when registration is plainly closed.
        if policy == RegistrationPolicy::FirstUserOnly && self.store.count_users().await? > 0 {
            return Err(AuthError::RegistrationClosed);
        }
        let password_hash = self.hasher.hash(password).await?;
        let new_user = NewUser {
            id: UserId::generate(),
            username,
            password_hash,
            default_tier: self.settings.default_user_tier,
            created_at: self.clock.now(),
        };
        let mut details = Map::new();
        details.insert("username".into(), json!(new_user.username.as_str()));
        let audit = AuditEntry::for_user(
            &new_user.id,
            context,
            actions::REGISTER,
            new_user.created_at,
        )
        .with_metadata(details);
        self.store
            .register_user(new_user, policy, &audit)
            .await
            .map_err(|error| match error {
                RegisterUserError::UsernameTaken => AuthError::UsernameTaken,
                RegisterUserError::RegistrationClosed => AuthError::RegistrationClosed,
                RegisterUserError::Store(store) => AuthError::Store(store),
            })
    }

    /// Checks a username and password and starts a session.
    pub async fn login(
        &self,
        context: &RequestContext,
        username: &str,
        password: &SecretString,
    ) -> Result<SessionTokens, AuthError> {
        // Malformed names cannot exist; still spend the hashing time so timing says nothing.
        let stored = match Username::parse(username) {
            Ok(name) => self.store.find_credentials(name.as_str()).await?,
            Err(_) => None,
        };
        let Some(stored) = stored else {
            self.hasher.verify_dummy(password).await?;
            self.audit_login_failure(context, None, username, "invalid credentials")
                .await?;
            return Err(AuthError::InvalidCredentials);
        };
        if !self.hasher.verify(password, &stored.password_hash).await? {
            self.audit_login_failure(
                context,
                Some(&stored.user.id),
                username,
                "invalid credentials",
            )
            .await?;
            return Err(AuthError::InvalidCredentials);
        }
        // Said only to a caller who proved the password.
        if stored.user.is_disabled() {
            self.audit_login_failure(context, Some(&stored.user.id), username, "user disabled")
                .await?;
            return Err(AuthError::UserDisabled);
        }
        let audit =
            AuditEntry::for_user(&stored.user.id, context, actions::LOGIN, self.clock.now());
        self.start_session(stored.user, &audit).await
    }

    /// Records a failed login: for a known user under their id, otherwise anonymously (the
    /// attempted name, truncated, is kept: it is what an operator investigates).
    async fn audit_login_failure(
        &self,
        context: &RequestContext,
        user: Option<&UserId>,
        username: &str,
        reason: &str,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let entry = match user {
            Some(user) => AuditEntry::for_user(user, context, actions::LOGIN, now),
            None => AuditEntry::anonymous("anonymous".into(), context, actions::LOGIN, now),
        };
        let mut details = Map::new();
        details.insert(
            "username".into(),
            json!(username.chars().take(64).collect::<String>()),
        );
        self.store
            .append_audit(&entry.failed(reason).with_metadata(details))
            .await?;
        Ok(())
    }

    /// Exchanges a refresh token for a new pair; a replayed token revokes its whole session.
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
        context: &RequestContext,
    ) -> Result<SessionTokens, AuthError> {
        let presented = refresh_token.expose_secret();
        if !presented.starts_with(REFRESH_TOKEN_PREFIX) || presented.len() > 128 {
            return Err(AuthError::InvalidRefreshToken);
        }
        let now = self.clock.now();
        let (next_token, next) = self.new_refresh_token(now)?;
        match self
            .store
            .rotate_refresh_token(&TokenHash::of(presented), &next, now)
            .await?
        {
            // Disabling revokes every family; this catches a session started during the disable.
            RotateOutcome::Rotated { user, .. } if user.is_disabled() => {
                Err(AuthError::UserDisabled)
            }
            RotateOutcome::Rotated { user, family } => {
                let (access_token, expires_in) = self.issue_access_token(&user, &family, now)?;
                Ok(SessionTokens {
                    access_token,
                    refresh_token: next_token,
                    expires_in,
                    user,
                })
            }
            RotateOutcome::ReuseDetected { user_id, family } => {
                tracing::warn!(user_id = %user_id, family = %family, "refresh token reuse detected; session revoked");
                // A replayed token means it was stolen or leaked: a denial worth a record.
                let mut details = Map::new();
                details.insert("family".into(), json!(family.to_string()));
                let entry =
                    AuditEntry::for_user(&user_id, context, actions::REFRESH_TOKEN_REUSE, now)
                        .failed("refresh token reused; session revoked")
                        .with_metadata(details);
                self.store.append_audit(&entry).await?;
                Err(AuthError::RefreshTokenReused)
            }
            RotateOutcome::Invalid => Err(AuthError::InvalidRefreshToken),
        }
    }

    /// Turns a presented access token into the calling principal.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let now = self.clock.now();
        let claims = self.codec.decode(token, now).map_err(|error| match error {
            TokenError::Expired => AuthError::TokenExpired,
            _ => AuthError::InvalidToken,
        })?;
        let user_id = UserId::parse(&claims.sub).map_err(|_| AuthError::InvalidToken)?;
        let family = FamilyId::parse(&claims.fam).map_err(|_| AuthError::InvalidToken)?;
        let state = self
            .store
            .session_state(&user_id, &family, &claims.jti)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        if state.token_revoked || state.family_revoked || state.user.session_epoch != claims.sv {
            return Err(AuthError::TokenRevoked);
        }
        if state.user.is_disabled() {
            return Err(AuthError::UserDisabled);
        }
        let expires_at =
            OffsetDateTime::from_unix_timestamp(claims.exp).map_err(|_| AuthError::InvalidToken)?;
        Ok(Principal {
            user_id: state.user.id.clone(),
            username: state.user.username.clone(),
            role: state.user.role,
            tier: state.user.tier,
            scopes: state.user.role.scopes(),
            method: AuthMethod::Session {
                jti: claims.jti,
                family,
                expires_at,
            },
        })
    }

    /// Ends the caller's session: its refresh token and this access token stop working.
    pub async fn logout(
        &self,
        principal: &Principal,
        context: &RequestContext,
    ) -> Result<(), AuthError> {
        let AuthMethod::Session {
            jti,
            family,
            expires_at,
        } = &principal.method
        else {
            return Err(AuthError::NotASession);
        };
        let now = self.clock.now();
        let audit = AuditEntry::new(principal, context, actions::LOGOUT, None, now);
        self.store
            .end_session(&principal.user_id, family, jti, *expires_at, now, &audit)
            .await?;
        Ok(())
    }

    /// Ends every session of the caller's user.
    pub async fn logout_all(
        &self,
        principal: &Principal,
        context: &RequestContext,
    ) -> Result<(), AuthError> {
        if !matches!(principal.method, AuthMethod::Session { .. }) {
            return Err(AuthError::NotASession);
        }
        let now = self.clock.now();
        let mut details = Map::new();
        details.insert("scope".into(), json!("all"));
        let audit =
            AuditEntry::new(principal, context, actions::LOGOUT, None, now).with_metadata(details);
        self.store
            .end_all_sessions(&principal.user_id, now, &audit)
            .await?;
        Ok(())
    }

    /// Changes the caller's password after checking the current one; every session ends and a
    /// new one starts for the caller.
    pub async fn change_password(
        &self,
        principal: &Principal,
        context: &RequestContext,
        current: &SecretString,
        new: &SecretString,
    ) -> Result<SessionTokens, AuthError> {
        if !matches!(principal.method, AuthMethod::Session { .. }) {
            return Err(AuthError::NotASession);
        }
        let mut checks = Validator::default();
        checks.check(PasswordPolicy::check(
            "newPassword",
            new,
            &principal.username,
        ));
        checks.finish()?;
        let stored = self
            .store
            .find_credentials(&principal.username)
            .await?
            .filter(|found| found.user.id == principal.user_id)
            .ok_or(AuthError::InvalidToken)?;
        if !self.hasher.verify(current, &stored.password_hash).await? {
            let entry = AuditEntry::new(
                principal,
                context,
                actions::PASSWORD_CHANGE,
                None,
                self.clock.now(),
            )
            .failed("wrong current password");
            self.store.append_audit(&entry).await?;
            return Err(AuthError::InvalidCredentials);
        }
        let hash = self.hasher.hash(new).await?;
        let now = self.clock.now();
        let audit = AuditEntry::new(principal, context, actions::PASSWORD_CHANGE, None, now);
        let user = self
            .store
            .change_password(&principal.user_id, &hash, now, &audit)
            .await?;
        let login = AuditEntry::for_user(&user.id, context, actions::LOGIN, now);
        self.start_session(user, &login).await
    }

    async fn start_session(
        &self,
        user: User,
        audit: &AuditEntry,
    ) -> Result<SessionTokens, AuthError> {
        let now = self.clock.now();
        let family = FamilyId::generate();
        let (refresh_token, first) = self.new_refresh_token(now)?;
        self.store
            .create_session(&user.id, &family, &first, audit)
            .await?;
        let (access_token, expires_in) = self.issue_access_token(&user, &family, now)?;
        Ok(SessionTokens {
            access_token,
            refresh_token,
            expires_in,
            user,
        })
    }

    fn new_refresh_token(
        &self,
        now: OffsetDateTime,
    ) -> Result<(SecretString, NewRefreshToken), AuthError> {
        let token = random_token(REFRESH_TOKEN_PREFIX)?;
        let record = NewRefreshToken {
            id: RefreshTokenId::generate(),
            token_hash: TokenHash::of(token.expose_secret()),
            issued_at: now,
            expires_at: now + self.settings.refresh_ttl,
        };
        Ok((token, record))
    }

    fn issue_access_token(
        &self,
        user: &User,
        family: &FamilyId,
        now: OffsetDateTime,
    ) -> Result<(SecretString, i64), AuthError> {
        let iat = now.unix_timestamp();
        let expires_in = self.settings.access_ttl.whole_seconds();
        let claims = AccessTokenCodec::claims(
            user.id.to_string(),
            uuid::Uuid::new_v4().simple().to_string(),
            family.to_string(),
            user.session_epoch,
            iat,
            iat + expires_in,
        );
        let token = self
            .codec
            .encode(claims)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok((SecretString::from(token), expires_in))
    }
}
