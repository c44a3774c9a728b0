//! The `gcp` key provider: Google Cloud KMS over its REST API.
//!
//! API reference: <https://cloud.google.com/kms/docs/reference/rest>.
//! - **wrap** = `POST /v1/{key}:encrypt` `{plaintext, additionalAuthenticatedData}` with the owner
//!   binding (`koryphaios/owner/v1|<user id>`) as AAD; the reply's `name` ends in
//!   `cryptoKeyVersions/N`, and `N` is the `kek_version`. **unwrap** = `POST /v1/{key}:decrypt`
//!   with the same AAD (Cloud KMS finds the version in the ciphertext). A wrong owner or a
//!   tampered ciphertext → `400 INVALID_ARGUMENT` → [`KmsError::Unauthentic`]. **rewrap** =
//!   unwrap + wrap (Cloud KMS has no re-encrypt).
//! - **kek_id** = the crypto key's resource name (`KORYPHAIOS_GCP_KMS_KEY`).
//! - **versions**: `GET /v1/{key}/cryptoKeyVersions` (state `ENABLED` = live, any other state =
//!   retired) and the key's `primary` (current). **rotate** = create a version
//!   (`POST /v1/{key}/cryptoKeyVersions`) and make it primary (`:updatePrimaryVersion`).
//!   **retire(v)** = `POST …/cryptoKeyVersions/{v}:destroy` (Cloud KMS destroys the material after
//!   its scheduled-destruction period, 30 days by default; `:restore` undoes it until then).
//! - **check** = `GET /v1/{key}`: reachable, authorised, an `ENCRYPT_DECRYPT` key with an
//!   enabled primary version.
//! - Credentials (see [`GcpCredential`]): `GOOGLE_OAUTH_ACCESS_TOKEN`, a service-account key file
//!   (`GOOGLE_APPLICATION_CREDENTIALS`, JWT bearer grant), or the metadata server. Not supported:
//!   user credentials (`gcloud auth application-default login`), workload identity federation
//!   and impersonation files.

mod auth;
mod settings;

pub use settings::{
    DEFAULT_ENDPOINT, DEFAULT_METADATA_HOST, GcpCredential, GcpKmsSettings, ServiceAccountKey,
};

use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use koryphaios_core::envelope::{Dek, KeyProvider, KeyVersionInfo, KmsError, WrappedDek};
use koryphaios_core::ids::UserId;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use crate::remote::http::Reply;
use crate::remote::owner_binding;
use crate::remote::token::TokenCache;

const PROVIDER: &str = "gcp";
const SERVICE: &str = "Cloud KMS";

/// Google Cloud KMS as a [`KeyProvider`].
#[derive(Debug)]
pub struct GcpKms {
    http: reqwest::Client,
    endpoint: String,
    key_name: String,
    credential: GcpCredential,
    tokens: TokenCache,
    /// The primary version as last seen (0 before).
    primary: AtomicI64,
}

#[derive(Deserialize)]
struct Encrypted {
    name: String,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Decrypted {
    plaintext: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CryptoKeyVersion {
    name: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    create_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CryptoKey {
    #[serde(default)]
    primary: Option<CryptoKeyVersion>,
    #[serde(default)]
    purpose: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionList {
    #[serde(default)]
    crypto_key_versions: Vec<CryptoKeyVersion>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

/// `N` of `…/cryptoKeyVersions/N`.
fn version_number(name: &str) -> Option<i64> {
    name.rsplit_once("/cryptoKeyVersions/")?.1.parse().ok()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Encrypt,
    Decrypt,
    Other(&'static str),
}

impl GcpKms {
    /// Builds the client. Fails only on malformed settings; no network call (an unreachable
    /// Cloud KMS or token endpoint shows in [`KeyProvider::check`]).
    pub async fn connect(settings: GcpKmsSettings) -> Result<Self, KmsError> {
        settings.validate()?;
        Ok(Self {
            http: crate::remote::http::client(None)?,
            endpoint: settings.endpoint.trim_end_matches('/').to_owned(),
            key_name: settings.key_name,
            credential: settings.credential,
            tokens: TokenCache::default(),
            primary: AtomicI64::new(0),
        })
    }

    async fn call(
        &self,
        op: Op,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Reply, KmsError> {
        let url = format!("{}/v1/{path}", self.endpoint);
        self.tokens
            .send(
                &self.http,
                SERVICE,
                || auth::fetch(&self.http, &self.credential),
                method,
                &url,
                body,
            )
            .await?
            .map_err(|reply| self.failure(op, &reply))
    }

    fn failure(&self, op: Op, reply: &Reply) -> KmsError {
        let (status, message) = serde_json::from_slice::<ErrorBody>(&reply.body)
            .map(|b| (b.error.status, b.error.message))
            .unwrap_or_else(|_| (String::new(), reply.snippet()));
        let name = match op {
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
            Op::Other(name) => name,
        };
        let key = &self.key_name;
        match reply.status {
            401 => KmsError::Internal(
                "Cloud KMS rejected the access token (HTTP 401): check GOOGLE_OAUTH_ACCESS_TOKEN, \
                 GOOGLE_APPLICATION_CREDENTIALS or the instance's service account"
                    .into(),
            ),
            403 => KmsError::Internal(format!(
                "Cloud KMS denied {name} on {key} (HTTP 403, {status}): check KORYPHAIOS_GCP_KMS_KEY \
                 and the credentials' roles (roles/cloudkms.cryptoKeyEncrypterDecrypter): {message}"
            )),
            404 => KmsError::Internal(format!(
                "Cloud KMS key {key} not found (HTTP 404): check KORYPHAIOS_GCP_KMS_KEY"
            )),
            s if s >= 500 || s == 429 => {
                KmsError::Unavailable(format!("Cloud KMS {name}: HTTP {s} {status}: {message}"))
            }
            400 if op == Op::Decrypt && status == "FAILED_PRECONDITION" => {
                // The version that wrapped it is disabled or destroyed; the caller fills it in.
                KmsError::UnknownVersion(0)
            }
            400 if op == Op::Decrypt => KmsError::Unauthentic,
            s => KmsError::Internal(format!("Cloud KMS {name}: HTTP {s} {status}: {message}")),
        }
    }

    async fn read_key(&self) -> Result<CryptoKey, KmsError> {
        let reply = self
            .call(Op::Other("get key"), Method::GET, &self.key_name, None)
            .await?;
        let key: CryptoKey = reply.json(SERVICE)?;
        if let Some(number) = key.primary.as_ref().and_then(|p| version_number(&p.name)) {
            self.primary.store(number, Ordering::Relaxed);
        }
        Ok(key)
    }

    fn aad(owner: &UserId) -> String {
        STANDARD.encode(owner_binding(owner))
    }
}

#[async_trait]
impl KeyProvider for GcpKms {
    fn provider_name(&self) -> &'static str {
        PROVIDER
    }

    fn kek_id(&self) -> String {
        self.key_name.clone()
    }

    fn current_version(&self) -> i64 {
        self.primary.load(Ordering::Relaxed)
    }

    async fn wrap(&self, dek: &Dek, owner: &UserId) -> Result<WrappedDek, KmsError> {
        let plaintext = Zeroizing::new(STANDARD.encode(dek.expose_bytes()));
        let body = json!({
            "plaintext": plaintext.as_str(),
            "additionalAuthenticatedData": Self::aad(owner),
        });
        let path = format!("{}:encrypt", self.key_name);
        let reply = self
            .call(Op::Encrypt, Method::POST, &path, Some(body))
            .await?;
        let encrypted: Encrypted = reply.json(SERVICE)?;
        let version = version_number(&encrypted.name).ok_or_else(|| {
            KmsError::Internal(format!(
                "Cloud KMS encrypt: unexpected version {:?}",
                encrypted.name
            ))
        })?;
        self.primary.store(version, Ordering::Relaxed);
        let ciphertext = STANDARD
            .decode(encrypted.ciphertext.as_bytes())
            .map_err(|_| {
                KmsError::Internal("Cloud KMS encrypt: ciphertext is not base64".into())
            })?;
        Ok(WrappedDek {
            provider: PROVIDER.into(),
            kek_id: self.kek_id(),
            kek_version: version,
            ciphertext,
        })
    }

    async fn unwrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<Dek, KmsError> {
        if wrapped.provider != PROVIDER || wrapped.kek_id != self.key_name {
            return Err(KmsError::WrongKey {
                provider: wrapped.provider.clone(),
                kek_id: wrapped.kek_id.clone(),
            });
        }
        let body = json!({
            "ciphertext": STANDARD.encode(&wrapped.ciphertext),
            "additionalAuthenticatedData": Self::aad(owner),
        });
        let path = format!("{}:decrypt", self.key_name);
        let reply = self
            .call(Op::Decrypt, Method::POST, &path, Some(body))
            .await
            .map_err(|e| match e {
                KmsError::UnknownVersion(_) => KmsError::UnknownVersion(wrapped.kek_version),
                other => other,
            })?;
        let reply = Zeroizing::new(reply.body);
        let mut decrypted: Decrypted = serde_json::from_slice(&reply)
            .map_err(|e| KmsError::Internal(format!("Cloud KMS decrypt: {e}")))?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(decrypted.plaintext.as_bytes())
                .map_err(|_| KmsError::Unauthentic)?,
        );
        zeroize::Zeroize::zeroize(&mut decrypted.plaintext);
        Dek::from_slice(&bytes).map_err(|_| KmsError::Unauthentic)
    }

    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KmsError> {
        let primary = self
            .read_key()
            .await?
            .primary
            .and_then(|p| version_number(&p.name));
        let mut versions = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut path = format!("{}/cryptoKeyVersions?pageSize=1000", self.key_name);
            if let Some(token) = &page {
                path.push_str("&pageToken=");
                path.push_str(token);
            }
            let reply = self
                .call(Op::Other("list versions"), Method::GET, &path, None)
                .await?;
            let list: VersionList = reply.json(SERVICE)?;
            for v in list.crypto_key_versions {
                let Some(number) = version_number(&v.name) else {
                    continue;
                };
                versions.push(KeyVersionInfo {
                    version: number,
                    created_at: v
                        .create_time
                        .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    retired: v.state != "ENABLED",
                    current: Some(number) == primary,
                });
            }
            match list.next_page_token.filter(|t| !t.is_empty()) {
                Some(token) => page = Some(token),
                None => break,
            }
        }
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    async fn rotate(&self) -> Result<i64, KmsError> {
        let path = format!("{}/cryptoKeyVersions", self.key_name);
        let reply = self
            .call(
                Op::Other("create version"),
                Method::POST,
                &path,
                Some(json!({})),
            )
            .await?;
        let created: CryptoKeyVersion = reply.json(SERVICE)?;
        let number = version_number(&created.name).ok_or_else(|| {
            KmsError::Internal(format!(
                "Cloud KMS: unexpected version name {:?}",
                created.name
            ))
        })?;
        let path = format!("{}:updatePrimaryVersion", self.key_name);
        let body = json!({ "cryptoKeyVersionId": number.to_string() });
        self.call(
            Op::Other("update primary version"),
            Method::POST,
            &path,
            Some(body),
        )
        .await?;
        self.primary.store(number, Ordering::Relaxed);
        tracing::info!(key = %self.key_name, version = number, "Cloud KMS key rotated");
        Ok(number)
    }

    async fn retire(&self, version: i64) -> Result<(), KmsError> {
        let primary = self
            .read_key()
            .await?
            .primary
            .and_then(|p| version_number(&p.name));
        if Some(version) == primary {
            return Err(KmsError::Refused(format!(
                "version {version} is the primary version; rotate first"
            )));
        }
        let path = format!("{}/cryptoKeyVersions/{version}:destroy", self.key_name);
        self.call(
            Op::Other("destroy version"),
            Method::POST,
            &path,
            Some(json!({})),
        )
        .await
        .map_err(|e| match e {
            KmsError::Internal(m) if m.contains("HTTP 404") => KmsError::UnknownVersion(version),
            other => other,
        })?;
        tracing::info!(key = %self.key_name, version, "Cloud KMS key version scheduled for destruction");
        Ok(())
    }

    async fn reload(&self) -> Result<(), KmsError> {
        self.read_key().await.map(|_| ())
    }

    async fn check(&self) -> Result<(), KmsError> {
        let key = self.read_key().await?;
        if key
            .purpose
            .as_deref()
            .is_some_and(|p| p != "ENCRYPT_DECRYPT")
        {
            return Err(KmsError::Internal(format!(
                "Cloud KMS key {} (KORYPHAIOS_GCP_KMS_KEY) must have purpose ENCRYPT_DECRYPT",
                self.key_name
            )));
        }
        match key.primary {
            Some(primary) if primary.state == "ENABLED" => Ok(()),
            _ => Err(KmsError::Internal(format!(
                "Cloud KMS key {} (KORYPHAIOS_GCP_KMS_KEY) has no enabled primary version",
                self.key_name
            ))),
        }
    }
}
