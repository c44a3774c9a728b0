//! The scope guard: the one place a use case checks a scope, audits a refusal and refuses.
//!
//! Scopes are checked here, in the domain, and not in HTTP extractors, because the decision
//! needs the resource (a credential's provider for reveal, a key's own scopes for key control)
//! and because every refusal must leave an `access_denied` audit record committed before the
//! caller hears 403, whichever adapter (HTTP, CLI, a future proxy) called the use case.

use crate::audit::{AuditEntry, RequestContext};
use crate::clock::Clock;
use crate::principal::Principal;
use crate::scope::Scope;
use crate::store::{AuditStore, StoreError};

/// Why the guard refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The caller lacks the scope; the refusal is audited.
    #[error("missing scope {0}")]
    MissingScope(Scope),
    /// The refusal's audit record could not be written (the caller is refused all the same).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One denied attempt, as the audit record names it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// What the caller tried (`credential_reveal`, `api_key_create`, …).
    pub action: &'a str,
    /// The resource it tried it on: type and id.
    pub resource: Option<(&'a str, &'a str)>,
}

impl<'a> Attempt<'a> {
    /// An attempt on no particular resource (create, list).
    pub fn new(action: &'a str) -> Self {
        Self {
            action,
            resource: None,
        }
    }

    /// An attempt on one resource.
    pub fn on(action: &'a str, resource_type: &'a str, id: &'a str) -> Self {
        Self {
            action,
            resource: Some((resource_type, id)),
        }
    }
}

/// Passes when `principal` holds `scope`; otherwise writes the `access_denied` record (with
/// `store`, at the clock's time) and refuses with [`Refusal::MissingScope`].
pub async fn require_scope<S: AuditStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    principal: &Principal,
    context: &RequestContext,
    scope: &Scope,
    attempt: Attempt<'_>,
) -> Result<(), Refusal> {
    if principal.allows(scope) {
        return Ok(());
    }
    Err(deny(store, clock, principal, context, scope, attempt).await)
}

/// Audits the refusal of an attempt that needs `scope`, for checks the caller decided itself (a
/// key may carry only scopes its creator holds: the first one missing is refused here), and
/// returns the refusal to answer with.
pub async fn deny<S: AuditStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    principal: &Principal,
    context: &RequestContext,
    scope: &Scope,
    attempt: Attempt<'_>,
) -> Refusal {
    let entry = AuditEntry::denial(
        principal,
        context,
        scope,
        attempt.action,
        attempt.resource,
        clock.now(),
    );
    match store.append_audit(&entry).await {
        Ok(()) => Refusal::MissingScope(scope.clone()),
        Err(error) => Refusal::Store(error),
    }
}

/// Audits the refusal of an attempt that an agent token's own limits forbid (`restriction`:
/// `credentialIds` when the credential is not among the token's, `mint` when a token tries to
/// create a token or a key). Scopes are not the reason, so no scope is named.
pub async fn deny_token_restriction<S: AuditStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    principal: &Principal,
    context: &RequestContext,
    restriction: &str,
    attempt: Attempt<'_>,
) -> Result<(), StoreError> {
    let mut metadata = serde_json::Map::new();
    metadata.insert("attempted".into(), attempt.action.into());
    metadata.insert("restriction".into(), restriction.into());
    let entry = AuditEntry::new(
        principal,
        context,
        crate::audit::actions::ACCESS_DENIED,
        attempt.resource,
        clock.now(),
    )
    .failed("token restriction")
    .with_metadata(metadata);
    store.append_audit(&entry).await
}
