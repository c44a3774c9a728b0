//! The credential use cases: create, list, get, update, delete, rotate, reveal, audit trail.
//!
//! Every change and its audit record are stored in one transaction by the store; refusals
//! (missing scope) are audited as `access_denied`. Another user's credential is "not found".

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::{
    Credential, CredentialFilter, SealedVersion, check_kind, check_metadata, check_provider,
    check_reason, check_secret,
};
use crate::access::{self, Attempt, Refusal};
use crate::audit::{AuditEntry, RequestContext, actions};
use crate::clock::Clock;
use crate::envelope::{
    Dek, EnvelopeError, KeyProvider, KmsError, SecretContext, open_secret, seal_secret,
};
use crate::ids::{CredentialId, UserId};
use crate::pagination::{After, Page, PageRequest};
use crate::principal::Principal;
use crate::scope::Scope;
use crate::store::{Store, StoreError, VersionAdded};
use crate::validation::{FieldError, ValidationErrors, Validator};

const RESOURCE: &str = "credential";

/// What `create` takes.
#[derive(Debug)]
pub struct NewCredentialInput {
    /// One of the known providers.
    pub provider: String,
    /// The secret to keep.
    pub secret: SecretString,
    /// One of the known kinds (default `api_key`).
    pub kind: Option<String>,
    /// A JSON object ≤ 2 KB.
    pub metadata: Option<Value>,
    /// When the secret stops being valid (must be in the future).
    pub expires_at: Option<OffsetDateTime>,
}

/// What `rotate` takes: a new secret value, or none to re-encrypt the current one under a new DEK.
#[derive(Debug, Default)]
pub struct RotateInput {
    /// The new secret; `None` re-encrypts the current value.
    pub secret: Option<SecretString>,
    /// Why (recorded in the audit log).
    pub reason: Option<String>,
}

/// One call through the credential proxy, as its `credential_use` audit record describes it:
/// never the secret, never a body.
#[derive(Debug, Clone, Default)]
pub struct UseRecord {
    /// The request method.
    pub method: String,
    /// The upstream path, with the query's values removed (names kept).
    pub path: String,
    /// The `model` field of a JSON request body, when one was seen.
    pub model: Option<String>,
    /// The upstream status; `None` when no answer came (unreachable, timed out).
    pub upstream_status: Option<u16>,
    /// Our own failure code when the call failed on our side (`upstream_timeout`, …).
    pub failure: Option<&'static str>,
    /// From the start of the forward to the end of the response body.
    pub duration_ms: u64,
    /// Request body bytes sent upstream.
    pub bytes_sent: u64,
    /// Response body bytes returned to the caller.
    pub bytes_received: u64,
}

/// Why a credential use case refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Input broke a rule.
    #[error(transparent)]
    Validation(#[from] ValidationErrors),
    /// No such credential for this caller.
    #[error("credential not found")]
    NotFound,
    /// The caller lacks a scope.
    #[error("missing scope {0}")]
    Forbidden(Scope),
    /// The caller's agent token is limited to other credentials.
    #[error("this token may not use that credential")]
    CredentialNotAllowed,
    /// A concurrent rotation won; retry.
    #[error("the credential changed concurrently; retry")]
    Conflict,
    /// The stored ciphertext does not open for this row (tampered or moved).
    #[error("the stored credential failed its integrity check")]
    Unreadable,
    /// The key provider is unreachable.
    #[error("key provider unavailable: {0}")]
    KmsUnavailable(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Refusal> for CredentialError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::MissingScope(scope) => Self::Forbidden(scope),
            Refusal::Store(error) => Self::Store(error),
        }
    }
}

impl From<KmsError> for CredentialError {
    fn from(error: KmsError) -> Self {
        match error {
            KmsError::Unauthentic | KmsError::WrongKey { .. } => CredentialError::Unreadable,
            KmsError::Unavailable(detail) => CredentialError::KmsUnavailable(detail),
            other => CredentialError::Internal(other.to_string()),
        }
    }
}

impl From<EnvelopeError> for CredentialError {
    fn from(error: EnvelopeError) -> Self {
        match error {
            EnvelopeError::Malformed | EnvelopeError::Unauthentic => CredentialError::Unreadable,
            other => CredentialError::Internal(other.to_string()),
        }
    }
}

/// The credential use cases.
#[derive(Debug)]
pub struct CredentialService {
    store: Arc<dyn Store>,
    kms: Arc<dyn KeyProvider>,
    clock: Arc<dyn Clock>,
}

impl CredentialService {
    /// Wires the use cases to their ports.
    pub fn new(store: Arc<dyn Store>, kms: Arc<dyn KeyProvider>, clock: Arc<dyn Clock>) -> Self {
        Self { store, kms, clock }
    }

    /// Refuses (and audits) a caller without `scope` (the one guard: [`access::require_scope`]).
    async fn require(
        &self,
        principal: &Principal,
        context: &RequestContext,
        scope: Scope,
        attempted: &str,
        resource_id: Option<&str>,
    ) -> Result<(), CredentialError> {
        let attempt = match resource_id {
            Some(id) => Attempt::on(attempted, RESOURCE, id),
            None => Attempt::new(attempted),
        };
        access::require_scope(
            &*self.store,
            &*self.clock,
            principal,
            context,
            &scope,
            attempt,
        )
        .await
        .map_err(CredentialError::from)?;
        // An agent token limited to a few credentials touches no other one, in any way.
        if resource_id.is_some_and(|id| !principal.may_touch_credential(id)) {
            access::deny_token_restriction(
                &*self.store,
                &*self.clock,
                principal,
                context,
                "credentialIds",
                attempt,
            )
            .await?;
            return Err(CredentialError::CredentialNotAllowed);
        }
        Ok(())
    }

    fn seal(
        &self,
        owner: &UserId,
        id: &CredentialId,
        version: i64,
        provider: &str,
        secret: &[u8],
    ) -> Result<(Dek, Vec<u8>), CredentialError> {
        let dek = Dek::generate()?;
        let context = SecretContext {
            user_id: owner,
            credential_id: id,
            version,
            provider,
        };
        let sealed = seal_secret(&dek, secret, &context)?;
        Ok((dek, sealed))
    }

    async fn open(
        &self,
        credential: &Credential,
        version: &SealedVersion,
    ) -> Result<SecretString, CredentialError> {
        let dek = self
            .kms
            .unwrap(&version.wrapped_dek, &credential.user_id)
            .await?;
        let context = SecretContext {
            user_id: &credential.user_id,
            credential_id: &credential.id,
            version: version.version,
            provider: &credential.provider,
        };
        let plain = open_secret(&dek, &version.sealed, &context)?;
        let text = std::str::from_utf8(&plain).map_err(|_| CredentialError::Unreadable)?;
        Ok(SecretString::from(text))
    }

    /// Stores a new credential (scope `write`).
    pub async fn create(
        &self,
        principal: &Principal,
        context: &RequestContext,
        input: NewCredentialInput,
    ) -> Result<Credential, CredentialError> {
        self.require(
            principal,
            context,
            Scope::Write,
            actions::CREDENTIAL_CREATE,
            None,
        )
        .await?;
        let now = self.clock.now();
        let kind = input.kind.unwrap_or_else(|| "api_key".to_owned());
        let mut checks = Validator::default();
        checks.check(check_provider("provider", &input.provider));
        checks.check(check_secret("credential", input.secret.expose_secret()));
        checks.check(check_kind(&kind));
        let metadata = match &input.metadata {
            None => Some(Map::new()),
            Some(value) => checks.check(check_metadata(value)),
        };
        if input.expires_at.is_some_and(|at| at <= now) {
            checks.check::<()>(Err(FieldError::new("expiresAt", "must be in the future")));
        }
        checks.finish()?;
        let id = CredentialId::generate();
        let (dek, sealed) = self.seal(
            &principal.user_id,
            &id,
            1,
            &input.provider,
            input.secret.expose_secret().as_bytes(),
        )?;
        let wrapped_dek = self.kms.wrap(&dek, &principal.user_id).await?;
        let credential = Credential {
            id: id.clone(),
            user_id: principal.user_id.clone(),
            provider: input.provider,
            kind,
            metadata: metadata.unwrap_or_default(),
            current_version: 1,
            created_at: now,
            updated_at: now,
            expires_at: input.expires_at,
            last_used_at: None,
        };
        let first = SealedVersion {
            version: 1,
            sealed,
            wrapped_dek,
            created_at: now,
        };
        let mut details = Map::new();
        details.insert("provider".into(), json!(credential.provider));
        details.insert("type".into(), json!(credential.kind));
        details.insert("version".into(), json!(1));
        let audit = AuditEntry::new(
            principal,
            context,
            actions::CREDENTIAL_CREATE,
            Some((RESOURCE, id.as_str())),
            now,
        )
        .with_metadata(details);
        self.store
            .insert_credential(&credential, &first, &audit)
            .await?;
        Ok(credential)
    }

    /// A page of the caller's credentials, newest first (scope `read`).
    pub async fn list(
        &self,
        principal: &Principal,
        context: &RequestContext,
        filter: &CredentialFilter,
        page: &PageRequest<CredentialId>,
    ) -> Result<Page<Credential, CredentialId>, CredentialError> {
        self.require(principal, context, Scope::Read, "credential_list", None)
            .await?;
        if let Some(provider) = &filter.provider {
            check_provider("provider", provider).map_err(|e| ValidationErrors(vec![e]))?;
        }
        let items = self
            .store
            .list_credentials(
                &principal.user_id,
                filter,
                self.clock.now(),
                &page.overfetch(),
            )
            .await?;
        Ok(Page::from_overfetch(items, page.limit, |c: &Credential| {
            After::item(c.created_at, c.id.clone())
        }))
    }

    /// One of the caller's credentials, metadata only (scope `read`).
    pub async fn get(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &CredentialId,
    ) -> Result<Credential, CredentialError> {
        self.require(
            principal,
            context,
            Scope::Read,
            "credential_get",
            Some(id.as_str()),
        )
        .await?;
        self.store
            .find_credential(&principal.user_id, id)
            .await?
            .ok_or(CredentialError::NotFound)
    }

    /// Replaces the metadata (scope `write`).
    pub async fn update_metadata(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &CredentialId,
        metadata: &Value,
    ) -> Result<Credential, CredentialError> {
        self.require(
            principal,
            context,
            Scope::Write,
            actions::CREDENTIAL_UPDATE,
            Some(id.as_str()),
        )
        .await?;
        let metadata = check_metadata(metadata).map_err(|e| ValidationErrors(vec![e]))?;
        let now = self.clock.now();
        let mut details = Map::new();
        details.insert("fields".into(), json!(["metadata"]));
        let audit = AuditEntry::new(
            principal,
            context,
            actions::CREDENTIAL_UPDATE,
            Some((RESOURCE, id.as_str())),
            now,
        )
        .with_metadata(details);
        self.store
            .update_credential_metadata(&principal.user_id, id, &metadata, now, &audit)
            .await?
            .ok_or(CredentialError::NotFound)
    }

    /// Soft-deletes (scope `write`).
    pub async fn delete(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &CredentialId,
        reason: Option<&str>,
    ) -> Result<(), CredentialError> {
        self.require(
            principal,
            context,
            Scope::Write,
            actions::CREDENTIAL_DELETE,
            Some(id.as_str()),
        )
        .await?;
        check_reason(reason).map_err(|e| ValidationErrors(vec![e]))?;
        let now = self.clock.now();
        let audit = AuditEntry::new(
            principal,
            context,
            actions::CREDENTIAL_DELETE,
            Some((RESOURCE, id.as_str())),
            now,
        )
        .with_reason(reason);
        if self
            .store
            .delete_credential(&principal.user_id, id, reason, now, &audit)
            .await?
        {
            Ok(())
        } else {
            Err(CredentialError::NotFound)
        }
    }

    /// Stores a new version: the new secret, or the current one re-encrypted under a new DEK
    /// (scope `write`).
    pub async fn rotate(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &CredentialId,
        input: RotateInput,
    ) -> Result<Credential, CredentialError> {
        self.require(
            principal,
            context,
            Scope::Write,
            actions::CREDENTIAL_ROTATE,
            Some(id.as_str()),
        )
        .await?;
        let mut checks = Validator::default();
        if let Some(secret) = &input.secret {
            checks.check(check_secret("credential", secret.expose_secret()));
        }
        checks.check(check_reason(input.reason.as_deref()));
        checks.finish()?;
        let (credential, current) = self
            .store
            .find_current_version(&principal.user_id, id)
            .await?
            .ok_or(CredentialError::NotFound)?;
        let (secret, mode) = match input.secret {
            Some(secret) => (secret, "new_value"),
            None => (self.open(&credential, &current).await?, "re_encrypt"),
        };
        let now = self.clock.now();
        let version = credential.current_version + 1;
        let (dek, sealed) = self.seal(
            &credential.user_id,
            id,
            version,
            &credential.provider,
            secret.expose_secret().as_bytes(),
        )?;
        let wrapped_dek = self.kms.wrap(&dek, &credential.user_id).await?;
        let next = SealedVersion {
            version,
            sealed,
            wrapped_dek,
            created_at: now,
        };
        let mut details = Map::new();
        details.insert("version".into(), json!(version));
        details.insert("mode".into(), json!(mode));
        let audit = AuditEntry::new(
            principal,
            context,
            actions::CREDENTIAL_ROTATE,
            Some((RESOURCE, id.as_str())),
            now,
        )
        .with_reason(input.reason.as_deref())
        .with_metadata(details);
        match self
            .store
            .add_credential_version(
                &principal.user_id,
                id,
                credential.current_version,
                &next,
                &audit,
            )
            .await?
        {
            VersionAdded::Added(credential) => Ok(credential),
            VersionAdded::NotFound => Err(CredentialError::NotFound),
            VersionAdded::Conflict => Err(CredentialError::Conflict),
        }
    }

    /// The plaintext of the current version (scope `provider:<its provider>`; `admin` implies it).
    pub async fn reveal(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &CredentialId,
        reason: Option<&str>,
    ) -> Result<(Credential, SecretString), CredentialError> {
        check_reason(reason).map_err(|e| ValidationErrors(vec![e]))?;
        let (credential, current) = self
            .store
            .find_current_version(&principal.user_id, id)
            .await?
            .ok_or(CredentialError::NotFound)?;
        let needed = Scope::Provider(credential.provider.clone());
        self.require(
            principal,
            context,
            needed,
            actions::CREDENTIAL_ACCESS,
            Some(id.as_str()),
        )
        .await?;
        let now = self.clock.now();
        let audit = AuditEntry::new(
            principal,
            context,
            actions::CREDENTIAL_ACCESS,
            Some((RESOURCE, id.as_str())),
            now,
        )
        .with_reason(reason);
        let secret = match self.open(&credential, &current).await {
            Ok(secret) => secret,
            Err(error) => {
                let mut details = Map::new();
                details.insert("version".into(), json!(current.version));
                self.store
                    .append_audit(&audit.failed(error.to_string()).with_metadata(details))
                    .await?;
                return Err(error);
            }
        };
        let mut details = Map::new();
        details.insert("version".into(), json!(current.version));
        self.store
            .record_credential_access(&principal.user_id, id, now, &audit.with_metadata(details))
            .await?;
        Ok((credential, secret))
    }

    /// The secret to inject into a proxied call to `provider` (scope `proxy:<provider>`, which
    /// `provider:<provider>` and `admin` imply): the credential named by `id`, else the caller's
    /// newest active one for `provider`. Another user's id, a credential of another provider, an
    /// expired one, or none at all: [`CredentialError::NotFound`]. The use is audited by
    /// [`Self::record_use`] once the call is over.
    pub async fn broker(
        &self,
        principal: &Principal,
        context: &RequestContext,
        provider: &str,
        id: Option<&CredentialId>,
    ) -> Result<(Credential, SecretString), CredentialError> {
        self.require(
            principal,
            context,
            Scope::Proxy(provider.to_owned()),
            actions::CREDENTIAL_USE,
            id.map(CredentialId::as_str),
        )
        .await?;
        let now = self.clock.now();
        let restricted = principal
            .token()
            .and_then(|grant| grant.credential_ids.as_deref());
        let found = match (id, restricted) {
            // `require` above refused an id outside the token's list.
            (Some(id), _) => {
                self.store
                    .find_current_version(&principal.user_id, id)
                    .await?
            }
            (None, None) => {
                self.store
                    .find_newest_active_version(&principal.user_id, provider, now)
                    .await?
            }
            // A token limited to a few credentials uses the newest active one of them.
            (None, Some(allowed)) => {
                let mut newest: Option<(Credential, SealedVersion)> = None;
                for id in allowed {
                    let candidate = self
                        .store
                        .find_current_version(&principal.user_id, id)
                        .await?
                        .filter(|(credential, _)| {
                            credential.provider == provider && credential.is_active(now)
                        });
                    newest = match (newest, candidate) {
                        (Some(best), Some(next))
                            if (next.0.created_at, &next.0.id)
                                <= (best.0.created_at, &best.0.id) =>
                        {
                            Some(best)
                        }
                        (best, next) => next.or(best),
                    };
                }
                newest
            }
        };
        let (credential, current) = found
            .filter(|(credential, _)| credential.provider == provider && credential.is_active(now))
            .ok_or(CredentialError::NotFound)?;
        let secret = self.open(&credential, &current).await?;
        Ok((credential, secret))
    }

    /// Writes the `credential_use` record of one proxied call and the credential's last-used
    /// time, through the store's group commit (one shared transaction with concurrent writes).
    pub async fn record_use(
        &self,
        principal: &Principal,
        context: &RequestContext,
        credential: &Credential,
        call: &UseRecord,
    ) -> Result<(), CredentialError> {
        let now = self.clock.now();
        let mut details = Map::new();
        details.insert("provider".into(), json!(credential.provider));
        details.insert("version".into(), json!(credential.current_version));
        details.insert("method".into(), json!(call.method));
        details.insert("path".into(), json!(call.path));
        if let Some(model) = &call.model {
            details.insert("model".into(), json!(model));
        }
        details.insert("upstreamStatus".into(), json!(call.upstream_status));
        details.insert("durationMs".into(), json!(call.duration_ms));
        details.insert("bytesSent".into(), json!(call.bytes_sent));
        details.insert("bytesReceived".into(), json!(call.bytes_received));
        let mut audit = AuditEntry::new(
            principal,
            context,
            actions::CREDENTIAL_USE,
            Some((RESOURCE, credential.id.as_str())),
            now,
        );
        if let Some(failure) = call.failure {
            audit = audit.failed(failure);
        }
        self.store
            .record_credential_access(
                &principal.user_id,
                &credential.id,
                now,
                &audit.with_metadata(details),
            )
            .await?;
        Ok(())
    }

    /// The caller's audit records about one credential, newest first (scope `read`).
    pub async fn audit_trail(
        &self,
        principal: &Principal,
        context: &RequestContext,
        id: &CredentialId,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, CredentialError> {
        self.require(
            principal,
            context,
            Scope::Read,
            "credential_audit",
            Some(id.as_str()),
        )
        .await?;
        // Ownership first (deleted credentials included): a record the caller wrote about
        // someone else's id (a denial, say) must not turn that id into a 200.
        if !self
            .store
            .credential_belongs_to(&principal.user_id, id)
            .await?
        {
            return Err(CredentialError::NotFound);
        }
        Ok(self
            .store
            .audit_for_resource(&principal.user_id, RESOURCE, id.as_str(), limit)
            .await?)
    }
}
