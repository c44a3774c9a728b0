//! User administration (scope `admin`): list users, read one, and change a user's role, tier or
//! disabled state. A change is audited with the standing before and after; an admin cannot
//! disable themselves, and the install always keeps an admin who is not disabled.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Role, User, UserChange};
use crate::access::{self, Attempt, Refusal};
use crate::api_keys::ApiKeyService;
use crate::audit::{AuditEntry, RequestContext};
use crate::clock::Clock;
use crate::ids::UserId;
use crate::principal::Principal;
use crate::scope::Scope;
use crate::store::{Store, StoreError, UserUpdated};
use crate::tier::Tier;
use crate::validation::{FieldError, ValidationErrors, Validator};

const RESOURCE: &str = "user";

/// Audit actions of this module.
pub mod actions {
    /// An admin changed a user's role, tier or disabled state.
    pub const UPDATE: &str = "user_update";
}

/// What `update` takes: at least one field.
#[derive(Debug, Default)]
pub struct UserChangeInput {
    /// `admin` or `user`.
    pub role: Option<String>,
    /// free | premium | pro | enterprise.
    pub tier: Option<String>,
    /// Disable (`true`) or enable (`false`).
    pub disabled: Option<bool>,
}

/// Why a user-administration use case refused.
#[derive(Debug, thiserror::Error)]
pub enum UserAdminError {
    /// Input broke a rule.
    #[error(transparent)]
    Validation(#[from] ValidationErrors),
    /// No such user.
    #[error("user not found")]
    NotFound,
    /// The caller is not an admin.
    #[error("missing scope {0}")]
    Forbidden(Scope),
    /// An admin tried to disable their own account.
    #[error("an admin cannot disable their own account")]
    CannotDisableSelf,
    /// The change would leave no admin who can act.
    #[error("the install must keep an admin who is not disabled")]
    LastAdmin,
    /// The user changed since it was read.
    #[error("the user changed concurrently")]
    Conflict,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Refusal> for UserAdminError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::MissingScope(scope) => Self::Forbidden(scope),
            Refusal::Store(error) => Self::Store(error),
        }
    }
}

/// The user-administration use cases.
#[derive(Debug)]
pub struct UserAdminService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    api_keys: Arc<ApiKeyService>,
}

fn check_role(raw: &str) -> Result<Role, FieldError> {
    Role::parse(raw).ok_or_else(|| FieldError::new("role", "must be admin or user"))
}

fn check_tier(raw: &str) -> Result<Tier, FieldError> {
    Tier::parse(raw)
        .ok_or_else(|| FieldError::new("tier", "must be one of free, premium, pro, enterprise"))
}

/// The parts of a user an admin changes, as audit metadata (nothing secret).
fn standing(user: &User) -> Value {
    json!({
        "role": user.role.as_str(),
        "tier": user.tier.as_str(),
        "disabled": user.is_disabled(),
    })
}

impl UserAdminService {
    /// Wires the use cases to their ports; `api_keys` forgets cached keys of a changed user.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, api_keys: Arc<ApiKeyService>) -> Self {
        Self {
            store,
            clock,
            api_keys,
        }
    }

    async fn require_admin(
        &self,
        principal: &Principal,
        context: &RequestContext,
        attempted: &str,
        id: Option<&UserId>,
    ) -> Result<(), UserAdminError> {
        let attempt = match id {
            Some(id) => Attempt::on(attempted, RESOURCE, id.as_str()),
            None => Attempt::new(attempted),
        };
        access::require_scope(
            &*self.store,
            &*self.clock,
            principal,
            context,
            &Scope::Admin,
            attempt,
        )
        .await
        .map_err(UserAdminError::from)
    }

    /// Up to `limit` users after `after`, in creation order.
    pub async fn list(
        &self,
        principal: &Principal,
        context: &RequestContext,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<User>, UserAdminError> {
        self.require_admin(principal, context, "user_list", None)
            .await?;
        Ok(self.store.list_users(after, limit).await?)
    }

    /// One user.
    pub async fn get(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &UserId,
    ) -> Result<User, UserAdminError> {
        self.require_admin(principal, context, "user_get", Some(id))
            .await?;
        self.store
            .find_user(id)
            .await?
            .ok_or(UserAdminError::NotFound)
    }

    /// Changes a user's role, tier or disabled state. Disabling ends every session of the user at
    /// once and stops their keys (each instance's key cache forgets them within its TTL).
    pub async fn update(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &UserId,
        input: UserChangeInput,
    ) -> Result<User, UserAdminError> {
        self.require_admin(principal, context, actions::UPDATE, Some(id))
            .await?;
        let mut checks = Validator::default();
        let role = input
            .role
            .as_deref()
            .and_then(|raw| checks.check(check_role(raw)));
        let tier = input
            .tier
            .as_deref()
            .and_then(|raw| checks.check(check_tier(raw)));
        if input.role.is_none() && input.tier.is_none() && input.disabled.is_none() {
            checks.check::<()>(Err(FieldError::new(
                "body",
                "give at least one of role, tier, disabled",
            )));
        }
        checks.finish()?;
        if input.disabled == Some(true) && *id == principal.user_id {
            return Err(UserAdminError::CannotDisableSelf);
        }
        let before = self
            .store
            .find_user(id)
            .await?
            .ok_or(UserAdminError::NotFound)?;
        let change = UserChange {
            role,
            tier,
            disabled: input.disabled,
        };
        let now = self.clock.now();
        let after = change.apply(&before, now);
        let mut details = Map::new();
        details.insert("username".into(), json!(before.username));
        details.insert("before".into(), standing(&before));
        details.insert("after".into(), standing(&after));
        let audit = AuditEntry::new(
            principal,
            context,
            actions::UPDATE,
            Some((RESOURCE, id.as_str())),
            now,
        )
        .with_metadata(details);
        let outcome = self.store.update_user(&before, &after, &audit).await?;
        self.api_keys.forget_owner(id);
        match outcome {
            UserUpdated::Updated(user) => Ok(user),
            UserUpdated::NotFound => Err(UserAdminError::NotFound),
            UserUpdated::Conflict => Err(UserAdminError::Conflict),
            UserUpdated::LastAdmin => Err(UserAdminError::LastAdmin),
        }
    }
}
