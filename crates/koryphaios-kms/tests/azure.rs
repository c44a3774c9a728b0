//! The `azure` key provider against `FakeKeyVault`, an in-process stand-in for Azure Key Vault
//! and Microsoft Entra ID (no Azure service can be reached here). The fake implements exactly the
//! endpoints the provider calls, with their documented shapes, and really wraps: every key version
//! is an RSA-2048 key and wrapKey/unwrapKey are RSA-OAEP-256. It checks the bearer token (401
//! otherwise) and the client secret at the token endpoint.
//!
//! API references:
//! - Key Vault keys, api-version 7.4 <https://learn.microsoft.com/rest/api/keyvault/keys>:
//!   `GET /keys/{name}` → `{key: {kid, kty, key_ops}, attributes: {enabled, created}}`;
//!   `GET /keys/{name}/versions` → `{value: [{kid, attributes}], nextLink}`;
//!   `POST /keys/{name}/{version}/wrapkey` and `/unwrapkey` `{alg, value}` → `{kid, value}`
//!   (base64url); `POST /keys/{name}/rotate` → the new key bundle;
//!   `PATCH /keys/{name}/{version}` `{attributes: {enabled}}` → the bundle;
//!   errors `{error: {code, message}}`.
//! - Client credentials <https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>:
//!   `POST /{tenant}/oauth2/v2.0/token` form → `{access_token, expires_in, token_type}`.
//! - IMDS <https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>:
//!   `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=…`, `Metadata: true`
//!   → `{access_token, expires_in: "3599", …}`.
#![expect(clippy::unwrap_used)]

mod fakes;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use koryphaios_core::envelope::{Dek, KeyProvider, KmsError};
use koryphaios_core::ids::UserId;
use koryphaios_kms::{AzureCredential, AzureKeyVault, AzureKeyVaultSettings};
use rsa::{Oaep, RsaPrivateKey};
use secrecy::SecretString;
use serde_json::{Value, json};

const TENANT: &str = "00000000-0000-0000-0000-00000000000a";
const CLIENT_ID: &str = "00000000-0000-0000-0000-00000000000b";
const CLIENT_SECRET: &str = "fake~client~secret~value";
const TOKEN: &str = "eyJ0eXAi.fake-access-token";
const NAME: &str = "koryphaios-kek";

struct Version {
    id: String,
    key: RsaPrivateKey,
    enabled: bool,
    created: i64,
}

/// The fake's state: the key's versions, oldest first.
struct FakeKeyVault {
    base: String,
    versions: Vec<Version>,
}

type Shared = Arc<Mutex<FakeKeyVault>>;

fn new_version(n: usize) -> Version {
    Version {
        id: format!("{n:0>4}{}", hex(&fakes::random::<14>())),
        key: RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap(),
        enabled: true,
        created: 1_700_000_000 + n as i64 * 60,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn kv_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn kid(fake: &FakeKeyVault, version: &Version) -> String {
    format!("{}/keys/{NAME}/{}", fake.base, version.id)
}

fn bundle(fake: &FakeKeyVault, version: &Version) -> Value {
    json!({
        "key": {
            "kid": kid(fake, version),
            "kty": "RSA",
            "key_ops": ["encrypt", "decrypt", "wrapKey", "unwrapKey"],
        },
        "attributes": { "enabled": version.enabled, "created": version.created },
    })
}

fn oaep() -> Oaep {
    Oaep::new::<sha2_010::Sha256>()
}

async fn entra_token(uri: Uri, body: Bytes) -> Response {
    let form = String::from_utf8_lossy(&body).to_string();
    let has = |pair: &str| form.split('&').any(|p| p == pair);
    let secret_ok = has(&format!(
        "client_secret={}",
        CLIENT_SECRET.replace('~', "%7E")
    )) || has(&format!("client_secret={CLIENT_SECRET}"));
    let ok = uri.path() == format!("/{TENANT}/oauth2/v2.0/token")
        && has("grant_type=client_credentials")
        && has(&format!("client_id={CLIENT_ID}"))
        && secret_ok
        && has("scope=https%3A%2F%2Fvault.azure.net%2F.default");
    if ok {
        Json(json!({ "token_type": "Bearer", "expires_in": 3599, "access_token": TOKEN }))
            .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.",
            })),
        )
            .into_response()
    }
}

async fn imds(headers: HeaderMap, uri: Uri) -> Response {
    let query = uri.query().unwrap_or("");
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true")
        || !query.contains("resource=https%3A%2F%2Fvault.azure.net")
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    Json(json!({ "access_token": TOKEN, "expires_in": "3599", "token_type": "Bearer" }))
        .into_response()
}

/// Every Key Vault call, parsed by hand (`/keys/{name}[/{version}][/{operation}]`).
async fn key_vault(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
    }
    if uri.query() != Some("api-version=7.4") {
        return kv_error(StatusCode::BAD_REQUEST, "BadParameter", "api-version");
    }
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut fake = state.lock().unwrap();
    if segments.len() < 2 || segments[0] != "keys" || segments[1] != NAME {
        return kv_error(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            "A key with (name/id) was not found in this key vault.",
        );
    }
    match (method, &segments[2..]) {
        (Method::GET, []) => {
            let latest = fake.versions.last().unwrap();
            Json(bundle(&fake, latest)).into_response()
        }
        (Method::GET, ["versions"]) => {
            let value: Vec<Value> = fake
                .versions
                .iter()
                .rev()
                .map(|v| json!({ "kid": kid(&fake, v), "attributes": { "enabled": v.enabled, "created": v.created } }))
                .collect();
            Json(json!({ "value": value, "nextLink": null })).into_response()
        }
        (Method::POST, ["rotate"]) => {
            let n = fake.versions.len() + 1;
            fake.versions.push(new_version(n));
            Json(bundle(&fake, fake.versions.last().unwrap())).into_response()
        }
        (Method::PATCH, [id]) => {
            let Some(index) = fake.versions.iter().position(|v| v.id == *id) else {
                return kv_error(StatusCode::NOT_FOUND, "KeyNotFound", "version not found");
            };
            if let Some(enabled) = body["attributes"]["enabled"].as_bool() {
                fake.versions[index].enabled = enabled;
            }
            Json(bundle(&fake, &fake.versions[index])).into_response()
        }
        (Method::POST, [id, operation @ ("wrapkey" | "unwrapkey")]) => {
            let Some(version) = fake.versions.iter().find(|v| v.id == *id) else {
                return kv_error(StatusCode::NOT_FOUND, "KeyNotFound", "version not found");
            };
            if body["alg"] != "RSA-OAEP-256" {
                return kv_error(StatusCode::BAD_REQUEST, "BadParameter", "alg");
            }
            if !version.enabled {
                return kv_error(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    &format!("Operation {operation} is not allowed on a disabled key."),
                );
            }
            let Some(value) = body["value"]
                .as_str()
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            else {
                return kv_error(StatusCode::BAD_REQUEST, "BadParameter", "value");
            };
            let result = if *operation == "wrapkey" {
                version
                    .key
                    .to_public_key()
                    .encrypt(&mut rsa::rand_core::OsRng, oaep(), &value)
                    .ok()
            } else {
                version.key.decrypt(oaep(), &value).ok()
            };
            match result {
                Some(out) => Json(
                    json!({ "kid": kid(&fake, version), "value": URL_SAFE_NO_PAD.encode(out) }),
                )
                .into_response(),
                None => kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    "The parameter is incorrect.",
                ),
            }
        }
        _ => kv_error(StatusCode::NOT_FOUND, "NotFound", "no such operation"),
    }
}

async fn fake() -> String {
    let state: Shared = Arc::new(Mutex::new(FakeKeyVault {
        base: String::new(),
        versions: vec![new_version(1)],
    }));
    let router = Router::new()
        .route(
            "/{tenant}/oauth2/v2.0/token",
            axum::routing::post(entra_token),
        )
        .route("/metadata/identity/oauth2/token", axum::routing::get(imds))
        .fallback(key_vault)
        .with_state(state.clone());
    let base = fakes::serve(router).await;
    state.lock().unwrap().base = base.clone();
    base
}

fn client_secret(base: &str, secret: &str) -> AzureKeyVaultSettings {
    AzureKeyVaultSettings {
        vault_url: base.into(),
        key_name: NAME.into(),
        credential: AzureCredential::ClientSecret {
            tenant_id: TENANT.into(),
            client_id: CLIENT_ID.into(),
            client_secret: SecretString::from(secret.to_owned()),
            authority_host: base.into(),
        },
    }
}

#[tokio::test]
async fn azure_wrap_unwrap_round_trip() {
    let base = fake().await;
    let kms = AzureKeyVault::connect(client_secret(&base, CLIENT_SECRET))
        .await
        .unwrap();
    kms.check().await.unwrap();
    let debug = format!("{kms:?}");
    assert!(
        !debug.contains(CLIENT_SECRET) && !debug.contains(TOKEN),
        "{debug}"
    );
    assert_eq!(kms.provider_name(), "azure");
    assert_eq!(kms.kek_id(), format!("{base}/keys/{NAME}"));
    assert_eq!(kms.current_version(), 1);
    let owner = UserId::generate();
    let dek = Dek::generate().unwrap();
    let wrapped = kms.wrap(&dek, &owner).await.unwrap();
    assert_eq!(wrapped.kek_version, 1);
    assert!(wrapped.ciphertext.starts_with(b"azkv1|"));
    let back = kms.unwrap(&wrapped, &owner).await.unwrap();
    assert_eq!(back.expose_bytes(), dek.expose_bytes());
}

#[tokio::test]
async fn azure_managed_identity_works() {
    let base = fake().await;
    let kms = AzureKeyVault::connect(AzureKeyVaultSettings {
        vault_url: base.clone(),
        key_name: NAME.into(),
        credential: AzureCredential::ManagedIdentity {
            client_id: None,
            endpoint: format!("{base}/metadata/identity/oauth2/token"),
        },
    })
    .await
    .unwrap();
    kms.check().await.unwrap();
    let owner = UserId::generate();
    let dek = Dek::generate().unwrap();
    let wrapped = kms.wrap(&dek, &owner).await.unwrap();
    assert_eq!(
        kms.unwrap(&wrapped, &owner).await.unwrap().expose_bytes(),
        dek.expose_bytes()
    );
}

#[tokio::test]
async fn azure_another_owner_cannot_unwrap_and_tampering_is_unauthentic() {
    let base = fake().await;
    let kms = AzureKeyVault::connect(client_secret(&base, CLIENT_SECRET))
        .await
        .unwrap();
    let owner = UserId::generate();
    let mut wrapped = kms.wrap(&Dek::generate().unwrap(), &owner).await.unwrap();
    let error = kms.unwrap(&wrapped, &UserId::generate()).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
    let last = wrapped.ciphertext.len() - 1;
    wrapped.ciphertext[last] ^= 0x01;
    let error = kms.unwrap(&wrapped, &owner).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
    wrapped.ciphertext = b"azkv1|nonsense".to_vec();
    let error = kms.unwrap(&wrapped, &owner).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
}

#[tokio::test]
async fn azure_rotation_rewrap_and_retirement() {
    let base = fake().await;
    let kms = AzureKeyVault::connect(client_secret(&base, CLIENT_SECRET))
        .await
        .unwrap();
    fakes::rotation_rewrap_and_retirement(&kms).await;
}

#[tokio::test]
async fn azure_a_wrong_secret_names_the_variables_without_printing_it() {
    let base = fake().await;
    let secret = "wrong~secret~value";
    let kms = AzureKeyVault::connect(client_secret(&base, secret))
        .await
        .expect("connect does not fail on refused credentials");
    for error in [
        kms.check().await.unwrap_err(),
        kms.wrap(&Dek::generate().unwrap(), &UserId::generate())
            .await
            .unwrap_err(),
    ] {
        let text = error.to_string();
        assert!(text.contains("AZURE_CLIENT_SECRET"), "{text}");
        assert!(
            !text.contains(secret) && !text.contains("wrong%7Esecret"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn azure_a_wrong_key_name_names_the_setting() {
    let base = fake().await;
    let mut settings = client_secret(&base, CLIENT_SECRET);
    settings.key_name = "other".into();
    let kms = AzureKeyVault::connect(settings).await.unwrap();
    let text = kms.check().await.unwrap_err().to_string();
    assert!(text.contains("KORYPHAIOS_AZURE_KEY_NAME"), "{text}");
}

#[tokio::test]
async fn azure_down_at_start_is_unavailable_quickly() {
    let started = Instant::now();
    let base = format!("http://127.0.0.1:{}", fakes::closed_port());
    let kms = AzureKeyVault::connect(client_secret(&base, CLIENT_SECRET))
        .await
        .expect("connect does not need Key Vault");
    assert_eq!(kms.current_version(), 0);
    fakes::unavailable_quickly(&kms, started).await;
}

#[test]
fn azure_settings_name_the_variables_and_redact_the_secret() {
    let settings = AzureKeyVaultSettings::from_lookup(&fakes::env(&[
        (
            "KORYPHAIOS_AZURE_KEY_VAULT_URL",
            "https://v.vault.azure.net",
        ),
        ("KORYPHAIOS_AZURE_KEY_NAME", NAME),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", CLIENT_SECRET),
    ]))
    .unwrap();
    let debug = format!("{settings:?}");
    assert!(
        !debug.contains(CLIENT_SECRET) && debug.contains("redacted"),
        "{debug}"
    );
    let text = AzureKeyVaultSettings::from_lookup(&fakes::env(&[
        (
            "KORYPHAIOS_AZURE_KEY_VAULT_URL",
            "https://v.vault.azure.net",
        ),
        ("KORYPHAIOS_AZURE_KEY_NAME", NAME),
        ("AZURE_CLIENT_SECRET", CLIENT_SECRET),
    ]))
    .unwrap_err()
    .to_string();
    assert!(
        text.contains("AZURE_TENANT_ID") && !text.contains(CLIENT_SECRET),
        "{text}"
    );
    let settings = AzureKeyVaultSettings::from_lookup(&fakes::env(&[
        (
            "KORYPHAIOS_AZURE_KEY_VAULT_URL",
            "https://v.vault.azure.net",
        ),
        ("KORYPHAIOS_AZURE_KEY_NAME", NAME),
    ]))
    .unwrap();
    assert!(matches!(
        settings.credential,
        AzureCredential::ManagedIdentity { .. }
    ));
    let text = AzureKeyVaultSettings::from_lookup(&fakes::env(&[
        (
            "KORYPHAIOS_AZURE_KEY_VAULT_URL",
            "https://v.vault.azure.net",
        ),
        ("KORYPHAIOS_AZURE_KEY_NAME", "bad name"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(text.contains("KORYPHAIOS_AZURE_KEY_NAME"), "{text}");
}
