//! The transit REST calls and their replies, mapped to [`KmsError`].
//!
//! API reference: <https://developer.hashicorp.com/vault/api-docs/secret/transit> (OpenBao:
//! <https://openbao.org/api-docs/secret/transit/>). Every request carries `X-Vault-Token` (and
//! `X-Vault-Namespace` when set); errors come back as `{"errors": ["…"]}`.

use std::collections::BTreeMap;

use koryphaios_core::envelope::KmsError;
use reqwest::Method;
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::Value;

use super::VaultTransit;
use crate::remote::http::{Reply, send_error};

const SERVICE: &str = "Vault transit";

/// `{"data": …}`, the envelope of every transit reply.
#[derive(Deserialize)]
pub(crate) struct Data<T> {
    pub data: T,
}

/// `data` of encrypt and rewrap: `{"ciphertext": "vault:vN:…"}`.
#[derive(Deserialize)]
pub(crate) struct Ciphertext {
    pub ciphertext: String,
}

/// `data` of decrypt: `{"plaintext": "<base64>"}`.
#[derive(Deserialize)]
pub(crate) struct Plaintext {
    pub plaintext: String,
}

/// `data` of `GET /v1/{mount}/keys/{key}` (the fields used).
#[derive(Deserialize)]
pub(crate) struct KeyInfo {
    /// Version → creation time: Unix seconds (symmetric keys) or an RFC 3339 string / an object
    /// with `creation_time` (asymmetric keys).
    pub keys: BTreeMap<String, Value>,
    pub latest_version: i64,
    pub min_decryption_version: i64,
    #[serde(default)]
    pub derived: bool,
    #[serde(default)]
    pub supports_encryption: Option<bool>,
    #[serde(rename = "type", default)]
    pub key_type: String,
}

#[derive(Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<String>,
}

/// What an operation is, for error messages and the meaning of a 400.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Encrypt,
    Decrypt,
    Rewrap,
    ReadKey,
    Rotate,
    Configure,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
            Op::Rewrap => "rewrap",
            Op::ReadKey => "read key",
            Op::Rotate => "rotate",
            Op::Configure => "configure key",
        }
    }
}

impl VaultTransit {
    /// Sends `method path` (below `/v1/`) with `body`, and returns the reply when it is a 2xx.
    pub(crate) async fn call(
        &self,
        op: Op,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Reply, KmsError> {
        let url = format!("{}/v1/{path}", self.address);
        let mut request = self
            .http
            .request(method, &url)
            .header("X-Vault-Token", self.token.expose_secret());
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| send_error(SERVICE, &e))?;
        let reply = Reply::read(SERVICE, response).await?;
        if reply.ok() {
            Ok(reply)
        } else {
            Err(self.failure(op, &reply))
        }
    }

    fn failure(&self, op: Op, reply: &Reply) -> KmsError {
        let messages = serde_json::from_slice::<Errors>(&reply.body)
            .map(|e| e.errors.join("; "))
            .unwrap_or_else(|_| reply.snippet());
        let lower = messages.to_ascii_lowercase();
        let key = format!("{}/{}", self.mount, self.key);
        let name = op.name();
        match reply.status {
            401 | 403 => KmsError::Internal(format!(
                "Vault refused VAULT_TOKEN for {name} on {key} (HTTP {}): check the token, its \
                 policy and VAULT_NAMESPACE",
                reply.status
            )),
            404 => KmsError::Internal(format!(
                "Vault transit key {key} not found (HTTP 404): check KORYPHAIOS_VAULT_TRANSIT_MOUNT \
                 and KORYPHAIOS_VAULT_TRANSIT_KEY, or create it with \
                 `vault write -f {}/keys/{} derived=true`",
                self.mount, self.key
            )),
            status if status >= 500 || status == 429 => {
                KmsError::Unavailable(format!("{SERVICE} {name}: HTTP {status}: {messages}"))
            }
            400 if lower.contains("not found") => KmsError::Internal(format!(
                "Vault transit key {key} not found: check KORYPHAIOS_VAULT_TRANSIT_KEY ({messages})"
            )),
            // The caller puts the version of the ciphertext in.
            400 if lower.contains("too old") || lower.contains("disallowed by policy") => {
                KmsError::UnknownVersion(0)
            }
            400 if matches!(op, Op::Decrypt | Op::Rewrap) => KmsError::Unauthentic,
            status => KmsError::Internal(format!("{SERVICE} {name}: HTTP {status}: {messages}")),
        }
    }
}
