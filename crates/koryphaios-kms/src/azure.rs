//! The `azure` key provider: Azure Key Vault keys, wrapKey/unwrapKey over the REST API
//! (api-version 7.4).
//!
//! API reference: <https://learn.microsoft.com/rest/api/keyvault/keys>.
//! - **wrap** = `POST {vault}/keys/{name}/{version}/wrapkey` `{alg: "RSA-OAEP-256", value}` under
//!   the current version; **unwrap** = `…/{version}/unwrapkey` with the version the wrap recorded.
//!   Key Vault's wrapKey takes no associated data, so the owner is bound inside the wrapped value:
//!   it is `SHA-256("koryphaios/owner/v1|<user id>") ‖ DEK` (64 bytes), and unwrap refuses a value
//!   whose hash is not the owner's ([`KmsError::Unauthentic`]). As with `age`, RSA wrapping uses the
//!   public key: whoever can write the database and read the public key could wrap a DEK of their
//!   own choosing for any owner; a secret-keyed provider (`local`, `aws`, `vault`, `gcp`) does not
//!   have that limitation.
//! - The stored ciphertext is `azkv1|<version id>|` followed by the wrapped bytes, so unwrap knows
//!   the version without a lookup.
//! - Key Vault versions are opaque ids; `kek_version` numbers them 1, 2, … by creation time
//!   (`GET {vault}/keys/{name}/versions`), the current being the key's latest
//!   (`GET {vault}/keys/{name}`). **rotate** = `POST {vault}/keys/{name}/rotate`. **retire(v)**
//!   disables that version (`PATCH {vault}/keys/{name}/{version}` `{attributes: {enabled:
//!   false}}`): Key Vault cannot delete a single version, and a disabled one no longer unwraps.
//! - **kek_id** = `{vault}/keys/{name}`. **check** = the key read: enabled RSA key allowing
//!   wrapKey and unwrapKey.
//! - Credentials (see [`AzureCredential`]): a client secret, or a managed identity through IMDS.
//!   Not supported: workload identity federation, certificates, App Service's
//!   `IDENTITY_ENDPOINT`, the Azure CLI.

mod auth;
mod settings;

pub use settings::{
    AzureCredential, AzureKeyVaultSettings, DEFAULT_AUTHORITY_HOST, DEFAULT_IMDS_ENDPOINT,
};

use std::sync::RwLock;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use koryphaios_core::envelope::{DEK_LEN, Dek, KeyProvider, KeyVersionInfo, KmsError, WrappedDek};
use koryphaios_core::ids::UserId;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::remote::http::Reply;
use crate::remote::owner_binding;
use crate::remote::token::TokenCache;

const PROVIDER: &str = "azure";
const SERVICE: &str = "Azure Key Vault";
const API_VERSION: &str = "7.4";
const ALGORITHM: &str = "RSA-OAEP-256";
const PREFIX: &str = "azkv1|";

/// Azure Key Vault as a [`KeyProvider`].
#[derive(Debug)]
pub struct AzureKeyVault {
    http: reqwest::Client,
    vault_url: String,
    key_name: String,
    credential: AzureCredential,
    tokens: TokenCache,
    known: RwLock<Known>,
}

/// The key's versions as last read: ids by creation time, and the current one.
#[derive(Debug, Default, Clone)]
struct Known {
    ordered: Vec<(String, OffsetDateTime, bool)>,
    current: Option<String>,
}

impl Known {
    fn number_of(&self, id: &str) -> Option<i64> {
        self.ordered
            .iter()
            .position(|(v, _, _)| v == id)
            .map(|i| i as i64 + 1)
    }
}

#[derive(Deserialize)]
struct Attributes {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    created: Option<i64>,
}

#[derive(Deserialize)]
struct JsonWebKey {
    kid: String,
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct KeyBundle {
    key: JsonWebKey,
    #[serde(default)]
    attributes: Option<Attributes>,
}

#[derive(Deserialize)]
struct KeyItem {
    kid: String,
    #[serde(default)]
    attributes: Option<Attributes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyList {
    #[serde(default)]
    value: Vec<KeyItem>,
    #[serde(default)]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct OperationResult {
    kid: String,
    value: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The version id at the end of a `kid` (`…/keys/{name}/{version}`).
fn version_of(kid: &str) -> Option<&str> {
    kid.rsplit('/').next().filter(|v| !v.is_empty())
}

/// `value` fields are base64url; accept them with or without padding.
fn decode(value: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')).ok()
}

fn owner_hash(owner: &UserId) -> [u8; 32] {
    Sha256::digest(owner_binding(owner).as_bytes()).into()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Wrap,
    Unwrap,
    Other(&'static str),
}

impl AzureKeyVault {
    /// Builds the client. Fails only on malformed settings; makes one best-effort read of the
    /// key's versions whose failure is only logged (an unreachable vault shows in `check()`).
    pub async fn connect(settings: AzureKeyVaultSettings) -> Result<Self, KmsError> {
        settings.validate()?;
        let provider = Self {
            http: crate::remote::http::client(None)?,
            vault_url: settings.vault_url.trim_end_matches('/').to_owned(),
            key_name: settings.key_name,
            credential: settings.credential,
            tokens: TokenCache::default(),
            known: RwLock::new(Known::default()),
        };
        if let Err(error) = provider.refresh().await {
            tracing::warn!(%error, "Azure Key Vault key not read at start; check() will retry");
        }
        Ok(provider)
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/keys/{}{path}?api-version={API_VERSION}",
            self.vault_url, self.key_name
        )
    }

    async fn call(
        &self,
        op: Op,
        method: Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Reply, KmsError> {
        self.tokens
            .send(
                &self.http,
                SERVICE,
                || auth::fetch(&self.http, &self.credential),
                method,
                url,
                body,
            )
            .await?
            .map_err(|reply| self.failure(op, &reply))
    }

    fn failure(&self, op: Op, reply: &Reply) -> KmsError {
        let (code, message) = serde_json::from_slice::<ErrorBody>(&reply.body)
            .map(|b| (b.error.code, b.error.message))
            .unwrap_or_else(|_| (String::new(), reply.snippet()));
        let name = match op {
            Op::Wrap => "wrapKey",
            Op::Unwrap => "unwrapKey",
            Op::Other(name) => name,
        };
        let key = format!("{}/keys/{}", self.vault_url, self.key_name);
        let disabled = message.to_ascii_lowercase().contains("disabled");
        match reply.status {
            401 => KmsError::Internal(
                "Azure Key Vault rejected the access token (HTTP 401): check AZURE_TENANT_ID, \
                 AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or the managed identity"
                    .into(),
            ),
            403 if op == Op::Unwrap && disabled => KmsError::UnknownVersion(0),
            403 => KmsError::Internal(format!(
                "Azure Key Vault denied {name} on {key} (HTTP 403 {code}): check the identity's \
                 access (wrapKey, unwrapKey, get, list, rotate, update) and \
                 KORYPHAIOS_AZURE_KEY_NAME: {message}"
            )),
            404 if op == Op::Unwrap => KmsError::UnknownVersion(0),
            404 => KmsError::Internal(format!(
                "Azure Key Vault key {key} not found (HTTP 404): check \
                 KORYPHAIOS_AZURE_KEY_VAULT_URL and KORYPHAIOS_AZURE_KEY_NAME"
            )),
            s if s >= 500 || s == 429 => KmsError::Unavailable(format!(
                "Azure Key Vault {name}: HTTP {s} {code}: {message}"
            )),
            400 if op == Op::Unwrap => KmsError::Unauthentic,
            s => KmsError::Internal(format!(
                "Azure Key Vault {name}: HTTP {s} {code}: {message}"
            )),
        }
    }

    async fn read_key(&self) -> Result<KeyBundle, KmsError> {
        let reply = self
            .call(Op::Other("get key"), Method::GET, &self.url(""), None)
            .await?;
        reply.json(SERVICE)
    }

    /// Reads the current version and the version list.
    async fn refresh(&self) -> Result<Known, KmsError> {
        let current = self.read_key().await?;
        let mut items = Vec::new();
        let mut next = Some(self.url("/versions"));
        while let Some(url) = next.take() {
            // Follow nextLink only within the vault.
            if !url.starts_with(&self.vault_url) {
                break;
            }
            let reply = self
                .call(Op::Other("list versions"), Method::GET, &url, None)
                .await?;
            let list: KeyList = reply.json(SERVICE)?;
            items.extend(list.value);
            next = list.next_link.filter(|l| !l.is_empty());
        }
        let mut ordered: Vec<(String, OffsetDateTime, bool)> = items
            .iter()
            .filter_map(|item| {
                let id = version_of(&item.kid)?.to_owned();
                let attributes = item.attributes.as_ref();
                let created = attributes
                    .and_then(|a| a.created)
                    .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                let enabled = attributes.and_then(|a| a.enabled).unwrap_or(true);
                Some((id, created, enabled))
            })
            .collect();
        ordered.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let known = Known {
            ordered,
            current: version_of(&current.key.kid).map(str::to_owned),
        };
        *self.known.write().map_err(|_| poisoned())? = known.clone();
        Ok(known)
    }

    fn known(&self) -> Result<Known, KmsError> {
        self.known.read().map(|k| k.clone()).map_err(|_| poisoned())
    }

    fn ensure_ours(&self, wrapped: &WrappedDek) -> Result<(String, Vec<u8>), KmsError> {
        if wrapped.provider != PROVIDER || wrapped.kek_id != self.kek_id() {
            return Err(KmsError::WrongKey {
                provider: wrapped.provider.clone(),
                kek_id: wrapped.kek_id.clone(),
            });
        }
        let rest = wrapped
            .ciphertext
            .strip_prefix(PREFIX.as_bytes())
            .ok_or(KmsError::Unauthentic)?;
        let split = rest
            .iter()
            .position(|b| *b == b'|')
            .ok_or(KmsError::Unauthentic)?;
        let version = std::str::from_utf8(&rest[..split])
            .ok()
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric()))
            .ok_or(KmsError::Unauthentic)?;
        Ok((version.to_owned(), rest[split + 1..].to_vec()))
    }
}

fn poisoned() -> KmsError {
    KmsError::Internal("Azure Key Vault version cache lock poisoned".into())
}

#[async_trait]
impl KeyProvider for AzureKeyVault {
    fn provider_name(&self) -> &'static str {
        PROVIDER
    }

    fn kek_id(&self) -> String {
        format!("{}/keys/{}", self.vault_url, self.key_name)
    }

    fn current_version(&self) -> i64 {
        self.known()
            .ok()
            .and_then(|k| k.current.as_deref().and_then(|c| k.number_of(c)))
            .unwrap_or(0)
    }

    async fn wrap(&self, dek: &Dek, owner: &UserId) -> Result<WrappedDek, KmsError> {
        let mut known = self.known()?;
        if known.current.is_none() {
            known = self.refresh().await?;
        }
        let current = known
            .current
            .clone()
            .ok_or_else(|| KmsError::Internal("Azure Key Vault: the key has no version".into()))?;
        let mut payload = Zeroizing::new(owner_hash(owner).to_vec());
        payload.extend_from_slice(dek.expose_bytes());
        let value = Zeroizing::new(URL_SAFE_NO_PAD.encode(payload.as_slice()));
        let body = json!({ "alg": ALGORITHM, "value": value.as_str() });
        let url = self.url(&format!("/{current}/wrapkey"));
        let reply = self.call(Op::Wrap, Method::POST, &url, Some(body)).await?;
        let result: OperationResult = reply.json(SERVICE)?;
        let version = version_of(&result.kid).unwrap_or(&current).to_owned();
        let number = match known.number_of(&version) {
            Some(n) => n,
            None => self.refresh().await?.number_of(&version).ok_or_else(|| {
                KmsError::Internal(format!("Azure Key Vault: unknown key version {version}"))
            })?,
        };
        let wrapped_key = decode(&result.value).ok_or_else(|| {
            KmsError::Internal("Azure Key Vault wrapKey: value is not base64url".into())
        })?;
        let mut ciphertext = format!("{PREFIX}{version}|").into_bytes();
        ciphertext.extend_from_slice(&wrapped_key);
        Ok(WrappedDek {
            provider: PROVIDER.into(),
            kek_id: self.kek_id(),
            kek_version: number,
            ciphertext,
        })
    }

    async fn unwrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<Dek, KmsError> {
        let (version, wrapped_key) = self.ensure_ours(wrapped)?;
        let body = json!({ "alg": ALGORITHM, "value": URL_SAFE_NO_PAD.encode(&wrapped_key) });
        let url = self.url(&format!("/{version}/unwrapkey"));
        let reply = self
            .call(Op::Unwrap, Method::POST, &url, Some(body))
            .await
            .map_err(|e| match e {
                KmsError::UnknownVersion(_) => KmsError::UnknownVersion(wrapped.kek_version),
                other => other,
            })?;
        let reply = Zeroizing::new(reply.body);
        let mut result: OperationResult = serde_json::from_slice(&reply)
            .map_err(|e| KmsError::Internal(format!("Azure Key Vault unwrapKey: {e}")))?;
        let payload = Zeroizing::new(decode(&result.value).ok_or(KmsError::Unauthentic)?);
        zeroize::Zeroize::zeroize(&mut result.value);
        if payload.len() != 32 + DEK_LEN || !bool::from(payload[..32].ct_eq(&owner_hash(owner))) {
            return Err(KmsError::Unauthentic);
        }
        Dek::from_slice(&payload[32..]).map_err(|_| KmsError::Unauthentic)
    }

    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KmsError> {
        let known = self.refresh().await?;
        Ok(known
            .ordered
            .iter()
            .enumerate()
            .map(|(i, (id, created, enabled))| KeyVersionInfo {
                version: i as i64 + 1,
                created_at: *created,
                retired: !enabled,
                current: known.current.as_deref() == Some(id.as_str()),
            })
            .collect())
    }

    async fn rotate(&self) -> Result<i64, KmsError> {
        self.call(
            Op::Other("rotate"),
            Method::POST,
            &self.url("/rotate"),
            None,
        )
        .await?;
        let known = self.refresh().await?;
        let number = known
            .current
            .as_deref()
            .and_then(|c| known.number_of(c))
            .ok_or_else(|| {
                KmsError::Internal("Azure Key Vault: no current version after rotate".into())
            })?;
        tracing::info!(key = %self.kek_id(), version = number, "Azure Key Vault key rotated");
        Ok(number)
    }

    async fn retire(&self, version: i64) -> Result<(), KmsError> {
        let known = self.refresh().await?;
        let index = usize::try_from(version - 1)
            .ok()
            .filter(|i| *i < known.ordered.len())
            .ok_or(KmsError::UnknownVersion(version))?;
        let id = known.ordered[index].0.clone();
        if known.current.as_deref() == Some(id.as_str()) {
            return Err(KmsError::Refused(format!(
                "version {version} is current; rotate first"
            )));
        }
        let body = json!({ "attributes": { "enabled": false } });
        self.call(
            Op::Other("update key version"),
            Method::PATCH,
            &self.url(&format!("/{id}")),
            Some(body),
        )
        .await?;
        self.refresh().await?;
        tracing::info!(key = %self.kek_id(), version, "Azure Key Vault key version disabled");
        Ok(())
    }

    async fn reload(&self) -> Result<(), KmsError> {
        self.refresh().await.map(|_| ())
    }

    async fn check(&self) -> Result<(), KmsError> {
        let bundle = self.read_key().await?;
        let key = self.kek_id();
        if bundle.attributes.and_then(|a| a.enabled) == Some(false) {
            return Err(KmsError::Internal(format!(
                "Azure Key Vault key {key} (KORYPHAIOS_AZURE_KEY_NAME) is disabled"
            )));
        }
        if !matches!(bundle.key.kty.as_deref(), Some("RSA" | "RSA-HSM") | None) {
            return Err(KmsError::Internal(format!(
                "Azure Key Vault key {key} (KORYPHAIOS_AZURE_KEY_NAME) must be an RSA key"
            )));
        }
        if let Some(ops) = bundle.key.key_ops
            && !(ops.iter().any(|o| o == "wrapKey") && ops.iter().any(|o| o == "unwrapKey"))
        {
            return Err(KmsError::Internal(format!(
                "Azure Key Vault key {key} (KORYPHAIOS_AZURE_KEY_NAME) must allow wrapKey and \
                 unwrapKey"
            )));
        }
        if self.known()?.current.is_none() {
            self.refresh().await?;
        }
        Ok(())
    }
}
