//! The Vault / OpenBao transit settings, as the server reads them from the environment.

use std::path::PathBuf;

use koryphaios_core::envelope::KmsError;
use secrecy::SecretString;

use crate::remote::{base_url, optional, required};

/// The default transit mount.
pub const DEFAULT_MOUNT: &str = "transit";
/// The default transit key name.
pub const DEFAULT_KEY: &str = "koryphaios";

/// Where the transit key is and how to authenticate. `Debug` redacts the token.
#[derive(Clone)]
pub struct VaultTransitSettings {
    /// `VAULT_ADDR`, e.g. `https://vault.internal:8200`.
    pub address: String,
    /// `VAULT_TOKEN`: sent as `X-Vault-Token`, never logged or printed.
    pub token: SecretString,
    /// `VAULT_NAMESPACE` (Vault Enterprise / HCP / OpenBao namespaces): `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// `KORYPHAIOS_VAULT_TRANSIT_MOUNT` (default `transit`).
    pub mount: String,
    /// `KORYPHAIOS_VAULT_TRANSIT_KEY` (default `koryphaios`): a key created with `derived=true`.
    pub key: String,
    /// `VAULT_CACERT`: a PEM file of a CA to trust besides the system roots.
    pub ca_cert: Option<PathBuf>,
}

impl std::fmt::Debug for VaultTransitSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultTransitSettings")
            .field("address", &self.address)
            .field("token", &"<redacted>")
            .field("namespace", &self.namespace)
            .field("mount", &self.mount)
            .field("key", &self.key)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

impl VaultTransitSettings {
    /// Settings for `address` and `token` with the default mount and key.
    pub fn new(address: impl Into<String>, token: SecretString) -> Self {
        Self {
            address: address.into(),
            token,
            namespace: None,
            mount: DEFAULT_MOUNT.into(),
            key: DEFAULT_KEY.into(),
            ca_cert: None,
        }
    }

    /// Reads the settings through `get` (e.g. `|name| std::env::var(name).ok()`); errors name
    /// the variable, never a value of `VAULT_TOKEN`.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, KmsError> {
        let settings = Self {
            address: required(get, "VAULT_ADDR")?,
            token: SecretString::from(required(get, "VAULT_TOKEN")?),
            namespace: optional(get, "VAULT_NAMESPACE"),
            mount: optional(get, "KORYPHAIOS_VAULT_TRANSIT_MOUNT")
                .unwrap_or_else(|| DEFAULT_MOUNT.into()),
            key: optional(get, "KORYPHAIOS_VAULT_TRANSIT_KEY")
                .unwrap_or_else(|| DEFAULT_KEY.into()),
            ca_cert: optional(get, "VAULT_CACERT").map(PathBuf::from),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the shape of each setting (no network).
    pub fn validate(&self) -> Result<(), KmsError> {
        base_url("VAULT_ADDR", &self.address)?;
        let path_part = |name: &str, value: &str| {
            let ok = !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
                && !value.starts_with('/')
                && !value.ends_with('/')
                && !value.split('/').any(|part| part.is_empty() || part == "..");
            if ok {
                Ok(())
            } else {
                Err(KmsError::Internal(format!(
                    "{name} must be a path of letters, digits, '-', '_', '.', not {value:?}"
                )))
            }
        };
        path_part("KORYPHAIOS_VAULT_TRANSIT_MOUNT", &self.mount)?;
        path_part("KORYPHAIOS_VAULT_TRANSIT_KEY", &self.key)?;
        if self.key.contains('/') {
            return Err(KmsError::Internal(
                "KORYPHAIOS_VAULT_TRANSIT_KEY must be a key name without '/'".into(),
            ));
        }
        if let Some(namespace) = &self.namespace {
            path_part("VAULT_NAMESPACE", namespace)?;
        }
        Ok(())
    }
}
