//! Audit records: what the use cases write, in the same transaction as the change they describe.
//!
//! This module owns the record's shape, the stable action names, and the metadata sanitiser that
//! keeps secrets out of every record.

pub mod chain;
pub mod checkpoint;
pub mod head;
pub mod key_store;
pub mod query;
pub mod service;
pub mod throttle;
pub mod verify;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::ids::{AuditEventId, UserId};
use crate::principal::{AuthMethod, Principal};

/// Stable action names (SPEC §5), used in queries.
pub mod actions {
    /// A stored credential was created.
    pub const CREDENTIAL_CREATE: &str = "credential_create";
    /// A credential's metadata changed.
    pub const CREDENTIAL_UPDATE: &str = "credential_update";
    /// A credential was soft-deleted.
    pub const CREDENTIAL_DELETE: &str = "credential_delete";
    /// A credential got a new version.
    pub const CREDENTIAL_ROTATE: &str = "credential_rotate";
    /// A credential's plaintext was revealed.
    pub const CREDENTIAL_ACCESS: &str = "credential_access";
    /// A credential was used through the proxy (its secret never left the service).
    pub const CREDENTIAL_USE: &str = "credential_use";
    /// A user registered.
    pub const REGISTER: &str = "register";
    /// A login attempt (success or failure).
    pub const LOGIN: &str = "login";
    /// A session (or, with `scope: all`, every session) ended.
    pub const LOGOUT: &str = "logout";
    /// A password was changed.
    pub const PASSWORD_CHANGE: &str = "password_change";
    /// An authenticated caller was refused.
    pub const ACCESS_DENIED: &str = "access_denied";
    /// A request was refused by a rate limit.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// A spent refresh token was presented again; its session was revoked.
    pub const REFRESH_TOKEN_REUSE: &str = "refresh_token_reuse";
    /// An admin exported audit records.
    pub const AUDIT_EXPORT: &str = "audit_export";
    /// Retention deleted old audit records.
    pub const AUDIT_PURGE: &str = "audit_purge";
}

/// The metadata field that carries an agent token's run id (the audit query's `runId` filter
/// reads it through a generated column, so the hash chain covers it).
pub const RUN_ID_KEY: &str = "runId";

/// Where a request came from, for the record.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The client's IP address.
    pub client_ip: Option<String>,
    /// The client's `User-Agent`, truncated.
    pub user_agent: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// The record's id.
    pub id: AuditEventId,
    /// When it happened.
    pub occurred_at: OffsetDateTime,
    /// The user the actor acts for.
    pub user_id: Option<UserId>,
    /// Who acted: `user:usr_…` for a session, `key:key_…` for an API key, `token:tok_…` for an
    /// agent token (both acting for `user_id`).
    pub actor: String,
    /// What happened (see [`actions`]).
    pub action: String,
    /// The kind of resource (`credential`, …).
    pub resource_type: Option<String>,
    /// The resource's id.
    pub resource_id: Option<String>,
    /// The client's IP.
    pub client_ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// Whether the operation succeeded.
    pub success: bool,
    /// Why it failed, or the caller's stated reason.
    pub reason: Option<String>,
    /// Sanitised details.
    pub metadata: Map<String, Value>,
}

impl AuditEntry {
    /// A record of `action` by `principal` on a resource.
    pub fn new(
        principal: &Principal,
        context: &RequestContext,
        action: &str,
        resource: Option<(&str, &str)>,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            id: AuditEventId::generate(),
            occurred_at: at,
            user_id: Some(principal.user_id.clone()),
            actor: match &principal.method {
                AuthMethod::ApiKey { key_id, .. } => format!("key:{key_id}"),
                AuthMethod::Token(grant) => format!("token:{}", grant.token_id),
                AuthMethod::Session { .. } => format!("user:{}", principal.user_id),
            },
            action: action.to_owned(),
            resource_type: resource.map(|(kind, _)| kind.to_owned()),
            resource_id: resource.map(|(_, id)| id.to_owned()),
            client_ip: context.client_ip.clone(),
            user_agent: context.user_agent.clone(),
            request_id: context.request_id.clone(),
            success: true,
            reason: None,
            metadata: principal
                .run_id()
                .map(|run| Map::from_iter([(RUN_ID_KEY.to_owned(), Value::from(run))]))
                .unwrap_or_default(),
        }
    }

    /// The agent run the record belongs to (stamped by [`AuditEntry::new`] from a token).
    pub fn run_id(&self) -> Option<&str> {
        self.metadata.get(RUN_ID_KEY).and_then(Value::as_str)
    }

    /// A record of `action` by a caller who is not (yet) authenticated, named by `actor`
    /// (e.g. `ip:203.0.113.9`).
    pub fn anonymous(
        actor: String,
        context: &RequestContext,
        action: &str,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            id: AuditEventId::generate(),
            occurred_at: at,
            user_id: None,
            actor,
            action: action.to_owned(),
            resource_type: None,
            resource_id: None,
            client_ip: context.client_ip.clone(),
            user_agent: context.user_agent.clone(),
            request_id: context.request_id.clone(),
            success: false,
            reason: None,
            metadata: Map::new(),
        }
    }

    /// A record of `action` by (or about) a user, outside a request principal (registration,
    /// login).
    pub fn for_user(
        user: &UserId,
        context: &RequestContext,
        action: &str,
        at: OffsetDateTime,
    ) -> Self {
        let mut entry = Self::anonymous(format!("user:{user}"), context, action, at);
        entry.user_id = Some(user.clone());
        entry.success = true;
        entry
    }

    /// The `access_denied` record of a caller refused for lacking `required`.
    pub fn denial(
        principal: &Principal,
        context: &RequestContext,
        required: &crate::scope::Scope,
        attempted: &str,
        resource: Option<(&str, &str)>,
        at: OffsetDateTime,
    ) -> Self {
        let mut metadata = Map::new();
        metadata.insert("attempted".into(), Value::String(attempted.to_owned()));
        metadata.insert("requiredScope".into(), Value::String(required.to_string()));
        Self::new(principal, context, actions::ACCESS_DENIED, resource, at)
            .failed("missing scope")
            .with_metadata(metadata)
    }

    /// Marks the record as a failure with a reason.
    pub fn failed(mut self, reason: impl Into<String>) -> Self {
        self.success = false;
        self.reason = Some(reason.into());
        self
    }

    /// Sets the caller's reason (e.g. for a deletion).
    pub fn with_reason(mut self, reason: Option<&str>) -> Self {
        self.reason = reason.map(str::to_owned);
        self
    }

    /// Adds sanitised metadata. The run id stamped from the caller's token stays, and no
    /// caller-built map can set or replace it.
    pub fn with_metadata(mut self, mut metadata: Map<String, Value>) -> Self {
        metadata.remove(RUN_ID_KEY);
        if let Some(run) = self.metadata.remove(RUN_ID_KEY) {
            metadata.insert(RUN_ID_KEY.to_owned(), run);
        }
        self.metadata = sanitize(metadata);
        self
    }
}

/// Words that mark a key as holding a secret, after folding case and removing `_`/`-`.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "credential",
    "authorization",
    "privatekey",
    "accesskey",
    "passphrase",
    "cookie",
    "session",
    "dek",
    "kek",
];

fn is_secret_key(key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_WORDS.iter().any(|word| folded.contains(word))
}

/// Counts committed records in `audit_events_total{action,result}`. Stores call it once the
/// transaction holding `entries` has committed, so rolled-back records are never counted.
pub fn observe_committed<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) {
    for entry in entries {
        let result = if entry.success { "success" } else { "failure" };
        // Action names come from `actions` (a fixed set), so the label set stays bounded.
        metrics::counter!("audit_events_total", "action" => entry.action.clone(), "result" => result)
            .increment(1);
    }
}

/// Replaces the values of secret-looking keys (camelCase or snake_case, at any depth) with
/// `"[REDACTED]"`.
pub fn sanitize(metadata: Map<String, Value>) -> Map<String, Value> {
    metadata
        .into_iter()
        .map(|(key, value)| {
            let value = if is_secret_key(&key) {
                Value::String("[REDACTED]".into())
            } else {
                sanitize_value(value)
            };
            (key, value)
        })
        .collect()
}

fn sanitize_value(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(sanitize(map)),
        Value::Array(items) => Value::Array(items.into_iter().map(sanitize_value).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_keys_are_redacted_in_camel_and_snake_case_at_any_depth() {
        let input = json!({
            "apiKey": "sk-1", "api_key": "sk-2", "API-KEY": "sk-3", "clientSecret": "s", "refresh_token": "t",
            "Password": "p", "nested": {"accessToken": "a", "note": "kept"}, "list": [{"private_key": "k"}],
            "provider": "openai", "version": 2
        });
        let Value::Object(map) = input else {
            unreachable!()
        };
        let out = Value::Object(sanitize(map));
        for pointer in [
            "/apiKey",
            "/api_key",
            "/API-KEY",
            "/clientSecret",
            "/refresh_token",
            "/Password",
            "/nested/accessToken",
            "/list/0/private_key",
        ] {
            assert_eq!(
                out.pointer(pointer),
                Some(&json!("[REDACTED]")),
                "{pointer}"
            );
        }
        assert_eq!(out["nested"]["note"], "kept");
        assert_eq!(out["provider"], "openai");
        assert_eq!(out["version"], 2);
    }
}
