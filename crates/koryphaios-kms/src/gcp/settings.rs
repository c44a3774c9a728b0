//! The Google Cloud KMS settings and credentials, as the server reads them from the environment.

use koryphaios_core::envelope::KmsError;
use secrecy::SecretString;
use serde::Deserialize;

use crate::remote::{base_url, optional, required};

/// The Cloud KMS REST endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://cloudkms.googleapis.com";
/// The metadata server of GCE, GKE, Cloud Run, Cloud Functions.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// Where the key is and how to authenticate.
#[derive(Debug, Clone)]
pub struct GcpKmsSettings {
    /// `KORYPHAIOS_GCP_KMS_KEY`: the crypto key's resource name,
    /// `projects/P/locations/L/keyRings/R/cryptoKeys/K` (a symmetric `ENCRYPT_DECRYPT` key).
    pub key_name: String,
    /// `KORYPHAIOS_GCP_KMS_ENDPOINT` (default [`DEFAULT_ENDPOINT`]): for tests and private endpoints.
    pub endpoint: String,
    /// How to get an access token.
    pub credential: GcpCredential,
}

/// The supported subset of Google's application default credentials. `Debug` redacts secrets.
#[derive(Clone)]
pub enum GcpCredential {
    /// `GOOGLE_OAUTH_ACCESS_TOKEN`: a token used as it is (it is not refreshed).
    AccessToken(SecretString),
    /// `GOOGLE_APPLICATION_CREDENTIALS`: a service-account JSON key; tokens come from its
    /// `token_uri` through the JWT bearer grant (RS256).
    ServiceAccount(ServiceAccountKey),
    /// Neither set: the metadata server (`GCE_METADATA_HOST`, default
    /// `metadata.google.internal`) of the instance's service account.
    MetadataServer {
        /// `host[:port]` of the metadata server, or a full `http://` base URL.
        host: String,
    },
}

impl std::fmt::Debug for GcpCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GcpCredential::AccessToken(_) => f.write_str("AccessToken(<redacted>)"),
            GcpCredential::ServiceAccount(key) => {
                f.debug_tuple("ServiceAccount").field(key).finish()
            }
            GcpCredential::MetadataServer { host } => f
                .debug_struct("MetadataServer")
                .field("host", host)
                .finish(),
        }
    }
}

/// The fields of a service-account key file that are used.
#[derive(Clone)]
pub struct ServiceAccountKey {
    /// The service account (`…@….iam.gserviceaccount.com`).
    pub client_email: String,
    /// The PEM private key.
    pub private_key: SecretString,
    /// Its id, sent as the JWT's `kid`.
    pub private_key_id: Option<String>,
    /// Where to exchange the signed JWT for a token.
    pub token_uri: String,
}

/// The key file as read; the private key moves into a `SecretString` at once.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key", &"<redacted>")
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

impl GcpCredential {
    /// A service-account key from the JSON of its key file; `setting` names where it came from.
    pub fn service_account_json(json: &str, setting: &str) -> Result<Self, KmsError> {
        #[derive(Deserialize)]
        struct Kind {
            #[serde(rename = "type", default)]
            kind: String,
        }
        let kind: Kind = serde_json::from_str(json)
            .map_err(|_| KmsError::Internal(format!("{setting}: not a JSON credentials file")))?;
        if kind.kind != "service_account" {
            return Err(KmsError::Internal(format!(
                "{setting}: credentials of type {:?} are not supported; use a service-account key, \
                 GOOGLE_OAUTH_ACCESS_TOKEN or the metadata server",
                kind.kind
            )));
        }
        // No serde detail in the message: it could quote a value of the key file.
        let file: KeyFile = serde_json::from_str(json).map_err(|_| {
            KmsError::Internal(format!(
                "{setting}: bad service-account key (client_email and private_key are needed)"
            ))
        })?;
        base_url(&format!("{setting} (token_uri)"), &file.token_uri)?;
        Ok(GcpCredential::ServiceAccount(ServiceAccountKey {
            client_email: file.client_email,
            private_key: SecretString::from(file.private_key),
            private_key_id: file.private_key_id,
            token_uri: file.token_uri,
        }))
    }
}

impl GcpKmsSettings {
    /// Reads the settings through `get`; the credential is the first of `GOOGLE_OAUTH_ACCESS_TOKEN`,
    /// `GOOGLE_APPLICATION_CREDENTIALS` (the file is read now), the metadata server.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, KmsError> {
        let credential = if let Some(token) = optional(get, "GOOGLE_OAUTH_ACCESS_TOKEN") {
            GcpCredential::AccessToken(SecretString::from(token))
        } else if let Some(path) = optional(get, "GOOGLE_APPLICATION_CREDENTIALS") {
            let json = std::fs::read_to_string(&path).map_err(|e| {
                KmsError::Internal(format!(
                    "GOOGLE_APPLICATION_CREDENTIALS: cannot read {path}: {e}"
                ))
            })?;
            GcpCredential::service_account_json(&json, "GOOGLE_APPLICATION_CREDENTIALS")?
        } else {
            GcpCredential::MetadataServer {
                host: optional(get, "GCE_METADATA_HOST")
                    .unwrap_or_else(|| DEFAULT_METADATA_HOST.into()),
            }
        };
        let settings = Self {
            key_name: required(get, "KORYPHAIOS_GCP_KMS_KEY")?,
            endpoint: optional(get, "KORYPHAIOS_GCP_KMS_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
            credential,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the shape of each setting (no network).
    pub fn validate(&self) -> Result<(), KmsError> {
        base_url("KORYPHAIOS_GCP_KMS_ENDPOINT", &self.endpoint)?;
        let parts: Vec<&str> = self.key_name.split('/').collect();
        let shaped = parts.len() == 8
            && parts[0] == "projects"
            && parts[2] == "locations"
            && parts[4] == "keyRings"
            && parts[6] == "cryptoKeys"
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
        if !shaped {
            return Err(KmsError::Internal(format!(
                "KORYPHAIOS_GCP_KMS_KEY must be projects/P/locations/L/keyRings/R/cryptoKeys/K, \
                 not {:?}",
                self.key_name
            )));
        }
        Ok(())
    }
}
