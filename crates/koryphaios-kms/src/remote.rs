//! What the remote providers share: the owner binding, the timeouts, reading settings, and (with
//! the REST providers) the HTTP client, its error mapping and the bearer-token cache.
//!
//! Every remote provider binds a wrap to its owner with [`owner_binding`] (as AWS encryption
//! context, Vault derivation context, GCP additional authenticated data, or a hash wrapped with the
//! DEK for Azure), so a DEK wrapped for one user does not unwrap for another.
//!
//! Errors name the setting involved (`AWS_KMS_KEY_ID`, `VAULT_TOKEN`, …), never a secret value.

#[cfg(feature = "http-client")]
pub(crate) mod http;
#[cfg(any(feature = "gcp", feature = "azure"))]
pub(crate) mod token;

use std::time::Duration;

use koryphaios_core::envelope::KmsError;
use koryphaios_core::ids::UserId;

/// How long to wait for a TCP (and TLS) connection to the KMS.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one operation may take in all (retries included), so a down KMS fails fast.
pub(crate) const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The owner binding: `koryphaios/owner/v1|<user id>`. Labelled and versioned, so it cannot be
/// confused with another use of the same key.
pub(crate) fn owner_binding(owner: &UserId) -> String {
    format!("koryphaios/owner/v1|{}", owner.as_str())
}

/// A required setting from `get` (trimmed, non-empty), or an error naming it.
pub(crate) fn required(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> Result<String, KmsError> {
    optional(get, name).ok_or_else(|| KmsError::Internal(format!("{name} is not set")))
}

/// An optional setting from `get`: absent when unset or blank.
pub(crate) fn optional(get: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name)
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// A base URL setting: `http://` or `https://`, without a trailing slash.
#[cfg(feature = "http-client")]
pub(crate) fn base_url(name: &str, value: &str) -> Result<String, KmsError> {
    let value = value.trim().trim_end_matches('/');
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(value.to_owned())
        }
        _ => Err(KmsError::Internal(format!(
            "{name} must be an http:// or https:// URL, not {value:?}"
        ))),
    }
}
