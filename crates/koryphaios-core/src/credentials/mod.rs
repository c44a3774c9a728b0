//! Stored provider credentials: the model, the input rules (SPEC §2.3), and the use cases.

mod service;

pub use service::{CredentialError, CredentialService, NewCredentialInput, RotateInput, UseRecord};

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::envelope::WrappedDek;
use crate::ids::{CredentialId, UserId};
use crate::validation::FieldError;

/// Every provider a credential may be for: the one list, used by validation and the API docs.
pub const PROVIDERS: &[&str] = &[
    "openai",
    "anthropic",
    "google",
    "xai",
    "openrouter",
    "groq",
    "azure",
    "bedrock",
    "vertexai",
    "ollama",
    "mistral",
    "deepseek",
    "togetherai",
    "fireworks",
    "cerebras",
    "huggingface",
    "cohere",
    "perplexity",
    "replicate",
    "custom",
];

/// What kind of secret a credential holds.
pub const KINDS: &[&str] = &[
    "api_key",
    "oauth_token",
    "service_account",
    "base_url",
    "other",
];

/// The longest secret accepted, in characters.
pub const MAX_SECRET_CHARS: usize = 4096;
/// The largest metadata object accepted, serialised, in bytes.
pub const MAX_METADATA_BYTES: usize = 2048;
/// The longest deletion or rotation reason accepted.
pub const MAX_REASON_CHARS: usize = 500;

/// A stored credential's metadata (never its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    /// The credential's id.
    pub id: CredentialId,
    /// Its owner.
    pub user_id: UserId,
    /// The provider (one of [`PROVIDERS`]).
    pub provider: String,
    /// The kind (one of [`KINDS`]).
    pub kind: String,
    /// Free-form descriptive data (a JSON object ≤ 2 KB).
    pub metadata: Map<String, Value>,
    /// The version reveal returns.
    pub current_version: i64,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
    /// When the owner said it stops being valid.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was last revealed or used through the credential proxy.
    pub last_used_at: Option<OffsetDateTime>,
}

impl Credential {
    /// Whether it has not expired at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// One sealed version of a credential's secret.
#[derive(Debug, Clone)]
pub struct SealedVersion {
    /// The version number (1, 2, …).
    pub version: i64,
    /// `nonce ‖ AES-256-GCM(secret)` under this version's DEK.
    pub sealed: Vec<u8>,
    /// The DEK, wrapped by the key provider.
    pub wrapped_dek: WrappedDek,
    /// When it was sealed.
    pub created_at: OffsetDateTime,
}

/// Filters for listing.
#[derive(Debug, Clone, Default)]
pub struct CredentialFilter {
    /// Only this provider.
    pub provider: Option<String>,
    /// Only active (`true`) or only expired (`false`) credentials.
    pub active: Option<bool>,
}

/// Checks a provider name.
pub fn check_provider(field: &str, provider: &str) -> Result<(), FieldError> {
    if PROVIDERS.contains(&provider) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("unknown provider; expected one of {}", PROVIDERS.join(", ")),
        ))
    }
}

/// Checks a secret's length.
pub fn check_secret(field: &str, secret: &str) -> Result<(), FieldError> {
    let length = secret.chars().count();
    if (1..=MAX_SECRET_CHARS).contains(&length) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_SECRET_CHARS} characters long"),
        ))
    }
}

/// Checks a kind.
pub fn check_kind(kind: &str) -> Result<(), FieldError> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(FieldError::new(
            "type",
            format!("unknown type; expected one of {}", KINDS.join(", ")),
        ))
    }
}

/// Checks metadata: a JSON object of at most [`MAX_METADATA_BYTES`].
pub fn check_metadata(metadata: &Value) -> Result<Map<String, Value>, FieldError> {
    let Value::Object(map) = metadata else {
        return Err(FieldError::new("metadata", "must be a JSON object"));
    };
    let size = serde_json::to_vec(metadata)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(FieldError::new(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes as JSON"),
        ));
    }
    Ok(map.clone())
}

/// Checks an optional reason.
pub fn check_reason(reason: Option<&str>) -> Result<(), FieldError> {
    match reason {
        Some(text) if text.chars().count() > MAX_REASON_CHARS => Err(FieldError::new(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters long"),
        )),
        // Control characters have no place in a reason, and PostgreSQL refuses NUL in text.
        Some(text) if text.chars().any(char::is_control) => Err(FieldError::new(
            "reason",
            "must not contain control characters",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn providers_come_from_the_one_list() {
        assert!(check_provider("provider", "openai").is_ok());
        assert!(check_provider("provider", "OpenAI").is_err());
        assert!(check_provider("provider", "").is_err());
    }

    #[test]
    fn secrets_must_be_1_to_4096_characters() {
        assert!(check_secret("credential", "").is_err());
        assert!(check_secret("credential", &"x".repeat(4096)).is_ok());
        assert!(check_secret("credential", &"x".repeat(4097)).is_err());
        assert!(
            check_secret("credential", &"é".repeat(4096)).is_ok(),
            "characters, not bytes"
        );
    }

    #[test]
    fn metadata_must_be_a_small_object() {
        assert!(check_metadata(&json!({"team": "ml"})).is_ok());
        assert!(check_metadata(&json!(["a"])).is_err());
        assert!(check_metadata(&json!("text")).is_err());
        assert!(check_metadata(&json!({"blob": "x".repeat(2100)})).is_err());
    }
}
