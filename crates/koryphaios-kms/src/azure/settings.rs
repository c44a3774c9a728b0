//! The Azure Key Vault settings and credentials, as the server reads them from the environment.

use koryphaios_core::envelope::KmsError;
use secrecy::SecretString;

use crate::remote::{base_url, optional, required};

/// Microsoft Entra ID's public-cloud authority.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The instance metadata service's token endpoint (managed identity on VMs, AKS, …).
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Where the key is and how to authenticate.
#[derive(Debug, Clone)]
pub struct AzureKeyVaultSettings {
    /// `KORYPHAIOS_AZURE_KEY_VAULT_URL`, e.g. `https://my-vault.vault.azure.net`.
    pub vault_url: String,
    /// `KORYPHAIOS_AZURE_KEY_NAME`: an RSA key (`RSA` or `RSA-HSM`) allowing wrapKey/unwrapKey.
    pub key_name: String,
    /// How to get an access token.
    pub credential: AzureCredential,
}

/// The supported credentials. `Debug` redacts the client secret.
#[derive(Clone)]
pub enum AzureCredential {
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`: the client-credentials grant at
    /// `{AZURE_AUTHORITY_HOST}/{tenant}/oauth2/v2.0/token`.
    ClientSecret {
        /// `AZURE_TENANT_ID`.
        tenant_id: String,
        /// `AZURE_CLIENT_ID`.
        client_id: String,
        /// `AZURE_CLIENT_SECRET`.
        client_secret: SecretString,
        /// `AZURE_AUTHORITY_HOST` (default [`DEFAULT_AUTHORITY_HOST`]).
        authority_host: String,
    },
    /// No client secret: a managed identity through IMDS (`AZURE_CLIENT_ID` picks a user-assigned
    /// one; `KORYPHAIOS_AZURE_IMDS_ENDPOINT` overrides the endpoint, for tests).
    ManagedIdentity {
        /// A user-assigned identity's client id.
        client_id: Option<String>,
        /// The IMDS token endpoint (default [`DEFAULT_IMDS_ENDPOINT`]).
        endpoint: String,
    },
}

impl std::fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AzureCredential::ClientSecret {
                tenant_id,
                client_id,
                authority_host,
                ..
            } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .field("authority_host", authority_host)
                .finish(),
            AzureCredential::ManagedIdentity {
                client_id,
                endpoint,
            } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .field("endpoint", endpoint)
                .finish(),
        }
    }
}

impl AzureKeyVaultSettings {
    /// Reads the settings through `get`: a client secret when `AZURE_CLIENT_SECRET` is set (then
    /// `AZURE_TENANT_ID` and `AZURE_CLIENT_ID` are required), else a managed identity.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, KmsError> {
        let credential = match optional(get, "AZURE_CLIENT_SECRET") {
            Some(secret) => AzureCredential::ClientSecret {
                tenant_id: required(get, "AZURE_TENANT_ID")?,
                client_id: required(get, "AZURE_CLIENT_ID")?,
                client_secret: SecretString::from(secret),
                authority_host: optional(get, "AZURE_AUTHORITY_HOST")
                    .unwrap_or_else(|| DEFAULT_AUTHORITY_HOST.into()),
            },
            None => AzureCredential::ManagedIdentity {
                client_id: optional(get, "AZURE_CLIENT_ID"),
                endpoint: optional(get, "KORYPHAIOS_AZURE_IMDS_ENDPOINT")
                    .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.into()),
            },
        };
        let settings = Self {
            vault_url: required(get, "KORYPHAIOS_AZURE_KEY_VAULT_URL")?,
            key_name: required(get, "KORYPHAIOS_AZURE_KEY_NAME")?,
            credential,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the shape of each setting (no network).
    pub fn validate(&self) -> Result<(), KmsError> {
        base_url("KORYPHAIOS_AZURE_KEY_VAULT_URL", &self.vault_url)?;
        let name_ok = !self.key_name.is_empty()
            && self.key_name.len() <= 127
            && self
                .key_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !name_ok {
            return Err(KmsError::Internal(format!(
                "KORYPHAIOS_AZURE_KEY_NAME must be 1-127 letters, digits and '-', not {:?}",
                self.key_name
            )));
        }
        match &self.credential {
            AzureCredential::ClientSecret {
                tenant_id,
                authority_host,
                ..
            } => {
                base_url("AZURE_AUTHORITY_HOST", authority_host)?;
                if tenant_id.is_empty()
                    || !tenant_id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
                {
                    return Err(KmsError::Internal(format!(
                        "AZURE_TENANT_ID must be a tenant id or domain, not {tenant_id:?}"
                    )));
                }
            }
            AzureCredential::ManagedIdentity { endpoint, .. } => {
                base_url("KORYPHAIOS_AZURE_IMDS_ENDPOINT", endpoint)?;
            }
        }
        Ok(())
    }
}
