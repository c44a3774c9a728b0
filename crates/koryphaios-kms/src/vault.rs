//! The `vault` key provider: HashiCorp Vault or OpenBao transit, over its REST API.
//!
//! - The transit key must be created with **`derived=true`** (`vault write -f
//!   transit/keys/koryphaios derived=true`): every call passes the owner binding
//!   (`koryphaios/owner/v1|<user id>`) as `context`, so Vault derives a separate key per owner
//!   (HKDF from the key version) and a wrap for one owner cannot be opened under another's. We use
//!   derived keys rather than `associated_data` because SPEC §3 asks for per-user KEKs ("Vault
//!   derived keys"), they work on every Vault and OpenBao version with any AEAD key type, and
//!   `check()` can verify the key is set up that way (a non-derived key is refused with the command
//!   that creates a right one).
//! - **wrap** = `POST /v1/{mount}/encrypt/{key}`; **unwrap** = `decrypt`; **rewrap** = `rewrap`
//!   (the DEK never leaves Vault). The stored ciphertext is Vault's `vault:vN:…` string (UTF-8),
//!   and `N` is the `kek_version`.
//! - **kek_id** = `{mount}/{key}`, prefixed by `{namespace}/` when `VAULT_NAMESPACE` is set.
//! - **versions** from `GET /v1/{mount}/keys/{key}`: `keys` (version → creation time),
//!   `latest_version` (current), `min_decryption_version` (lower versions are retired).
//!   **rotate** = `POST …/keys/{key}/rotate`. **retire(v)** raises `min_decryption_version` to
//!   `v + 1` through `POST …/keys/{key}/config`; since that retires every version below `v` too,
//!   versions are retired in order: only the oldest live, non-current one (others are refused).
//! - **check** = the key read: reachable, token accepted, key exists, derived, can encrypt.
//! - Timeouts: connect 2 s, a request 5 s; no retries (calls are rare; the caller retries).
//!
//! Not supported yet: AppRole login and token renewal (give a token that lives long enough, e.g.
//! a periodic token renewed by Vault Agent, which can also write `VAULT_TOKEN`).

mod api;
mod settings;

pub use settings::{DEFAULT_KEY, DEFAULT_MOUNT, VaultTransitSettings};

use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use koryphaios_core::envelope::{Dek, KeyProvider, KeyVersionInfo, KmsError, WrappedDek};
use koryphaios_core::ids::UserId;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use crate::remote::{base_url, owner_binding};
use api::{Ciphertext, Data, KeyInfo, Op, Plaintext};

const PROVIDER: &str = "vault";

/// Vault / OpenBao transit as a [`KeyProvider`].
pub struct VaultTransit {
    http: reqwest::Client,
    address: String,
    token: SecretString,
    namespace: Option<String>,
    mount: String,
    key: String,
    /// `latest_version` as last read (0 before the first successful read).
    latest: AtomicI64,
}

impl std::fmt::Debug for VaultTransit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultTransit")
            .field("address", &self.address)
            .field("token", &"<redacted>")
            .field("namespace", &self.namespace)
            .field("mount", &self.mount)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The version in `vault:vN:…`.
fn ciphertext_version(ciphertext: &str) -> Option<i64> {
    let rest = ciphertext.strip_prefix("vault:v")?;
    let (number, _) = rest.split_once(':')?;
    number.parse().ok().filter(|n| *n > 0)
}

fn created_at(value: &Value) -> OffsetDateTime {
    let parsed = match value {
        Value::Number(n) => n
            .as_i64()
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()),
        Value::String(s) => OffsetDateTime::parse(s, &Rfc3339).ok(),
        Value::Object(o) => o
            .get("creation_time")
            .and_then(Value::as_str)
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok()),
        _ => None,
    };
    parsed.unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl VaultTransit {
    /// Builds the client. Fails only on malformed settings or an unreadable `VAULT_CACERT`; makes
    /// one best-effort read of the key (so `current_version` is known) whose failure is only
    /// logged: an unreachable Vault shows in [`KeyProvider::check`].
    pub async fn connect(settings: VaultTransitSettings) -> Result<Self, KmsError> {
        settings.validate()?;
        let ca = match &settings.ca_cert {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                KmsError::Internal(format!("VAULT_CACERT: cannot read {}: {e}", path.display()))
            })?),
            None => None,
        };
        let http = crate::remote::http::client(ca.as_deref().map(|pem| ("VAULT_CACERT", pem)))?;
        let provider = Self {
            http,
            address: base_url("VAULT_ADDR", &settings.address)?,
            token: settings.token,
            namespace: settings.namespace,
            mount: settings.mount,
            key: settings.key,
            latest: AtomicI64::new(0),
        };
        if let Err(error) = provider.read_key().await {
            tracing::warn!(%error, "Vault transit key not read at start; check() will retry");
        }
        Ok(provider)
    }

    fn key_path(&self, action: &str) -> String {
        format!("{}/{action}/{}", self.mount, self.key)
    }

    async fn read_key(&self) -> Result<KeyInfo, KmsError> {
        let reply = self
            .call(Op::ReadKey, Method::GET, &self.key_path("keys"), None)
            .await?;
        let info = reply.json::<Data<KeyInfo>>("Vault transit read key")?.data;
        self.latest.store(info.latest_version, Ordering::Relaxed);
        Ok(info)
    }

    fn context(owner: &UserId) -> String {
        STANDARD.encode(owner_binding(owner))
    }

    fn ensure_ours(&self, wrapped: &WrappedDek) -> Result<String, KmsError> {
        if wrapped.provider != PROVIDER || wrapped.kek_id != self.kek_id() {
            return Err(KmsError::WrongKey {
                provider: wrapped.provider.clone(),
                kek_id: wrapped.kek_id.clone(),
            });
        }
        String::from_utf8(wrapped.ciphertext.clone())
            .ok()
            .filter(|c| ciphertext_version(c).is_some())
            .ok_or(KmsError::Unauthentic)
    }

    fn wrapped(&self, reply_body: Ciphertext) -> Result<WrappedDek, KmsError> {
        let version = ciphertext_version(&reply_body.ciphertext).ok_or_else(|| {
            KmsError::Internal("Vault transit returned a ciphertext without vault:vN:".into())
        })?;
        self.latest.fetch_max(version, Ordering::Relaxed);
        Ok(WrappedDek {
            provider: PROVIDER.into(),
            kek_id: self.kek_id(),
            kek_version: version,
            ciphertext: reply_body.ciphertext.into_bytes(),
        })
    }

    /// `UnknownVersion(0)` from the reply mapping means "this ciphertext's version is retired".
    fn with_version(error: KmsError, version: i64) -> KmsError {
        match error {
            KmsError::UnknownVersion(_) => KmsError::UnknownVersion(version),
            other => other,
        }
    }
}

#[async_trait]
impl KeyProvider for VaultTransit {
    fn provider_name(&self) -> &'static str {
        PROVIDER
    }

    fn kek_id(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{namespace}/{}/{}", self.mount, self.key),
            None => format!("{}/{}", self.mount, self.key),
        }
    }

    fn current_version(&self) -> i64 {
        self.latest.load(Ordering::Relaxed)
    }

    async fn wrap(&self, dek: &Dek, owner: &UserId) -> Result<WrappedDek, KmsError> {
        // Transit's encrypt creates a missing key (when the policy allows): read it first, so a
        // wrong KORYPHAIOS_VAULT_TRANSIT_KEY is an error and not a new, non-derived key.
        if self.current_version() == 0 {
            self.check().await?;
        }
        let plaintext = Zeroizing::new(STANDARD.encode(dek.expose_bytes()));
        let body = json!({ "plaintext": plaintext.as_str(), "context": Self::context(owner) });
        let reply = self
            .call(
                Op::Encrypt,
                Method::POST,
                &self.key_path("encrypt"),
                Some(body),
            )
            .await?;
        self.wrapped(
            reply
                .json::<Data<Ciphertext>>("Vault transit encrypt")?
                .data,
        )
    }

    async fn unwrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<Dek, KmsError> {
        let ciphertext = self.ensure_ours(wrapped)?;
        let body = json!({ "ciphertext": ciphertext, "context": Self::context(owner) });
        let reply = self
            .call(
                Op::Decrypt,
                Method::POST,
                &self.key_path("decrypt"),
                Some(body),
            )
            .await
            .map_err(|e| Self::with_version(e, wrapped.kek_version))?;
        let reply = Zeroizing::new(reply.body);
        let plaintext: Data<Plaintext> = serde_json::from_slice(&reply)
            .map_err(|e| KmsError::Internal(format!("Vault transit decrypt: {e}")))?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(plaintext.data.plaintext.as_bytes())
                .map_err(|_| KmsError::Unauthentic)?,
        );
        let mut plaintext = plaintext.data.plaintext;
        zeroize::Zeroize::zeroize(&mut plaintext);
        Dek::from_slice(&bytes).map_err(|_| KmsError::Unauthentic)
    }

    async fn rewrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<WrappedDek, KmsError> {
        let ciphertext = self.ensure_ours(wrapped)?;
        let body = json!({ "ciphertext": ciphertext, "context": Self::context(owner) });
        let reply = self
            .call(
                Op::Rewrap,
                Method::POST,
                &self.key_path("rewrap"),
                Some(body),
            )
            .await
            .map_err(|e| Self::with_version(e, wrapped.kek_version))?;
        self.wrapped(reply.json::<Data<Ciphertext>>("Vault transit rewrap")?.data)
    }

    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KmsError> {
        let info = self.read_key().await?;
        let mut versions: Vec<KeyVersionInfo> = info
            .keys
            .iter()
            .filter_map(|(number, created)| {
                let version: i64 = number.parse().ok()?;
                Some(KeyVersionInfo {
                    version,
                    created_at: created_at(created),
                    retired: version < info.min_decryption_version,
                    current: version == info.latest_version,
                })
            })
            .collect();
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    async fn rotate(&self) -> Result<i64, KmsError> {
        self.call(
            Op::Rotate,
            Method::POST,
            &format!("{}/rotate", self.key_path("keys")),
            None,
        )
        .await?;
        let latest = self.read_key().await?.latest_version;
        tracing::info!(key = %self.kek_id(), version = latest, "Vault transit key rotated");
        Ok(latest)
    }

    async fn retire(&self, version: i64) -> Result<(), KmsError> {
        let info = self.read_key().await?;
        if version >= info.latest_version {
            return Err(KmsError::Refused(format!(
                "version {version} is current or does not exist (latest is {}); rotate first",
                info.latest_version
            )));
        }
        if version < info.min_decryption_version {
            return Ok(());
        }
        if version != info.min_decryption_version {
            return Err(KmsError::Refused(format!(
                "Vault transit retires versions in order (min_decryption_version): retire version \
                 {} first",
                info.min_decryption_version
            )));
        }
        let body = json!({ "min_decryption_version": version + 1 });
        self.call(
            Op::Configure,
            Method::POST,
            &format!("{}/config", self.key_path("keys")),
            Some(body),
        )
        .await?;
        tracing::info!(key = %self.kek_id(), version, "Vault transit key version retired");
        Ok(())
    }

    async fn reload(&self) -> Result<(), KmsError> {
        self.read_key().await.map(|_| ())
    }

    async fn check(&self) -> Result<(), KmsError> {
        let info = self.read_key().await?;
        let key = format!("{}/keys/{}", self.mount, self.key);
        if !info.derived {
            return Err(KmsError::Internal(format!(
                "Vault transit key {key} (KORYPHAIOS_VAULT_TRANSIT_KEY) is not a derived key; \
                 create one with `vault write -f {key} derived=true`"
            )));
        }
        if info.supports_encryption == Some(false) {
            return Err(KmsError::Internal(format!(
                "Vault transit key {key} (KORYPHAIOS_VAULT_TRANSIT_KEY) of type {} cannot encrypt",
                info.key_type
            )));
        }
        Ok(())
    }
}
