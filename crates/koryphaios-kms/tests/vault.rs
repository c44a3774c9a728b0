//! The `vault` key provider against `FakeVaultTransit`, an in-process stand-in for the transit
//! secrets engine (no Vault server can run here). The fake implements exactly the endpoints the
//! provider calls, with their documented shapes, and really encrypts: each version has a random
//! key, the per-owner key is derived from it and the request's `context` (HMAC-SHA256, where Vault
//! uses HKDF), and ciphertexts are `vault:vN:base64(nonce ‖ AES-256-GCM)`. It checks
//! `X-Vault-Token` (403 otherwise) and `X-Vault-Namespace`.
//!
//! API reference: <https://developer.hashicorp.com/vault/api-docs/secret/transit>
//! - `POST /v1/{mount}/encrypt/{key}` `{plaintext, context}` → `{data: {ciphertext, key_version}}`
//! - `POST /v1/{mount}/decrypt/{key}` `{ciphertext, context}` → `{data: {plaintext}}`
//! - `POST /v1/{mount}/rewrap/{key}` `{ciphertext, context}` → `{data: {ciphertext, key_version}}`
//! - `GET /v1/{mount}/keys/{key}` → `{data: {keys: {"1": <unix s>}, latest_version,
//!   min_decryption_version, derived, type, supports_encryption}}`
//! - `POST /v1/{mount}/keys/{key}/rotate` → 204 (200 with the key on newer Vaults)
//! - `POST /v1/{mount}/keys/{key}/config` `{min_decryption_version}` → 204
//! - errors: `{errors: ["…"]}` with 400, 403, 404
#![expect(clippy::unwrap_used)]

mod fakes;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use koryphaios_core::envelope::{Dek, KeyProvider, KmsError};
use koryphaios_core::ids::UserId;
use koryphaios_kms::{VaultTransit, VaultTransitSettings};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::Sha256;

const TOKEN: &str = "hvs.fake-root-token-s3cr3t";

/// One transit key of the fake.
struct FakeKey {
    versions: Vec<[u8; 32]>,
    min_decryption_version: usize,
    derived: bool,
}

/// The fake's state: its keys by `mount/name`, and the namespace it expects.
struct FakeVaultTransit {
    keys: std::collections::HashMap<String, FakeKey>,
    namespace: Option<String>,
}

type Shared = Arc<Mutex<FakeVaultTransit>>;
type Reply = (StatusCode, Json<Value>);

fn error(status: StatusCode, message: &str) -> Reply {
    (status, Json(json!({ "errors": [message] })))
}

fn authorised(state: &FakeVaultTransit, headers: &HeaderMap) -> Result<(), Reply> {
    let token = headers.get("x-vault-token").and_then(|v| v.to_str().ok());
    let namespace = headers
        .get("x-vault-namespace")
        .and_then(|v| v.to_str().ok());
    if token != Some(TOKEN) || namespace != state.namespace.as_deref() {
        return Err(error(StatusCode::FORBIDDEN, "permission denied"));
    }
    Ok(())
}

/// The per-owner key: Vault derives it with HKDF from the version's key and the context.
fn derive(key: &[u8; 32], context: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(context);
    mac.finalize().into_bytes().into()
}

fn context(key: &FakeKey, body: &Value) -> Result<Vec<u8>, Reply> {
    match body.get("context").and_then(Value::as_str) {
        Some(c) if key.derived => STANDARD
            .decode(c)
            .map_err(|_| error(StatusCode::BAD_REQUEST, "failed to base64-decode context")),
        None if key.derived => Err(error(
            StatusCode::BAD_REQUEST,
            "missing 'context' for key derivation; the key was created using a derived key",
        )),
        _ => Ok(Vec::new()),
    }
}

fn encrypt_with(key: &FakeKey, plaintext: &[u8], context: &[u8]) -> Value {
    let version = key.versions.len();
    let material = derive(&key.versions[version - 1], context);
    let sealed = fakes::seal(&material, plaintext, b"");
    json!({ "data": {
        "ciphertext": format!("vault:v{version}:{}", STANDARD.encode(sealed)),
        "key_version": version,
    }})
}

fn decrypt_with(key: &FakeKey, ciphertext: &str, context: &[u8]) -> Result<Vec<u8>, Reply> {
    let invalid = || error(StatusCode::BAD_REQUEST, "invalid ciphertext: no prefix");
    let rest = ciphertext.strip_prefix("vault:v").ok_or_else(invalid)?;
    let (version, data) = rest.split_once(':').ok_or_else(invalid)?;
    let version: usize = version.parse().map_err(|_| invalid())?;
    if version == 0 || version > key.versions.len() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid ciphertext: version is too new",
        ));
    }
    if version < key.min_decryption_version {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "ciphertext or signature version is disallowed by policy (too old)",
        ));
    }
    let sealed = STANDARD.decode(data).map_err(|_| invalid())?;
    let material = derive(&key.versions[version - 1], context);
    fakes::open(&material, &sealed, b"").ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "cipher: message authentication failed",
        )
    })
}

async fn encrypt(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((mount, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Reply {
    let state = state.lock().unwrap();
    if let Err(reply) = authorised(&state, &headers) {
        return reply;
    }
    let Some(key) = state.keys.get(&format!("{mount}/{name}")) else {
        return error(StatusCode::BAD_REQUEST, "encryption key not found");
    };
    let context = match context(key, &body) {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    let Some(plaintext) = body
        .get("plaintext")
        .and_then(Value::as_str)
        .and_then(|p| STANDARD.decode(p).ok())
    else {
        return error(StatusCode::BAD_REQUEST, "failed to base64-decode plaintext");
    };
    (
        StatusCode::OK,
        Json(encrypt_with(key, &plaintext, &context)),
    )
}

async fn decrypt(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((mount, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Reply {
    let state = state.lock().unwrap();
    if let Err(reply) = authorised(&state, &headers) {
        return reply;
    }
    let Some(key) = state.keys.get(&format!("{mount}/{name}")) else {
        return error(StatusCode::BAD_REQUEST, "encryption key not found");
    };
    let result = context(key, &body).and_then(|context| {
        let ciphertext = body.get("ciphertext").and_then(Value::as_str).unwrap_or("");
        decrypt_with(key, ciphertext, &context)
    });
    match result {
        Ok(plaintext) => (
            StatusCode::OK,
            Json(json!({ "data": { "plaintext": STANDARD.encode(plaintext) } })),
        ),
        Err(reply) => reply,
    }
}

async fn rewrap(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((mount, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Reply {
    let state = state.lock().unwrap();
    if let Err(reply) = authorised(&state, &headers) {
        return reply;
    }
    let Some(key) = state.keys.get(&format!("{mount}/{name}")) else {
        return error(StatusCode::BAD_REQUEST, "encryption key not found");
    };
    let result = context(key, &body).and_then(|context| {
        let ciphertext = body.get("ciphertext").and_then(Value::as_str).unwrap_or("");
        decrypt_with(key, ciphertext, &context).map(|p| encrypt_with(key, &p, &context))
    });
    match result {
        Ok(reply) => (StatusCode::OK, Json(reply)),
        Err(reply) => reply,
    }
}

async fn read_key(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((mount, name)): Path<(String, String)>,
) -> Reply {
    let state = state.lock().unwrap();
    if let Err(reply) = authorised(&state, &headers) {
        return reply;
    }
    let Some(key) = state.keys.get(&format!("{mount}/{name}")) else {
        return (StatusCode::NOT_FOUND, Json(json!({ "errors": [] })));
    };
    let versions: serde_json::Map<String, Value> = (1..=key.versions.len())
        .map(|v| (v.to_string(), json!(1_700_000_000 + v as i64 * 60)))
        .collect();
    (
        StatusCode::OK,
        Json(json!({ "data": {
            "name": name,
            "type": "aes256-gcm96",
            "derived": key.derived,
            "keys": versions,
            "latest_version": key.versions.len(),
            "min_decryption_version": key.min_decryption_version,
            "min_encryption_version": 0,
            "supports_encryption": true,
            "supports_decryption": true,
        }})),
    )
}

async fn key_action(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((mount, name, action)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Reply {
    let mut state = state.lock().unwrap();
    if let Err(reply) = authorised(&state, &headers) {
        return reply;
    }
    let Some(key) = state.keys.get_mut(&format!("{mount}/{name}")) else {
        return error(StatusCode::NOT_FOUND, "no such key");
    };
    match action.as_str() {
        "rotate" => {
            key.versions.push(fakes::random());
            (StatusCode::NO_CONTENT, Json(Value::Null))
        }
        "config" => {
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let Some(min) = body.get("min_decryption_version").and_then(Value::as_u64) else {
                return error(StatusCode::BAD_REQUEST, "missing min_decryption_version");
            };
            key.min_decryption_version = min as usize;
            (StatusCode::NO_CONTENT, Json(Value::Null))
        }
        _ => error(StatusCode::NOT_FOUND, "unsupported path"),
    }
}

/// Starts a fake with one key `transit/koryphaios` (derived or not); returns its address.
async fn fake(derived: bool, namespace: Option<&str>) -> String {
    let mut keys = std::collections::HashMap::new();
    keys.insert(
        "transit/koryphaios".to_owned(),
        FakeKey {
            versions: vec![fakes::random()],
            min_decryption_version: 1,
            derived,
        },
    );
    let state: Shared = Arc::new(Mutex::new(FakeVaultTransit {
        keys,
        namespace: namespace.map(str::to_owned),
    }));
    let router = Router::new()
        .route("/v1/{mount}/encrypt/{key}", post(encrypt))
        .route("/v1/{mount}/decrypt/{key}", post(decrypt))
        .route("/v1/{mount}/rewrap/{key}", post(rewrap))
        .route("/v1/{mount}/keys/{key}", get(read_key))
        .route("/v1/{mount}/keys/{key}/{action}", post(key_action))
        .with_state(state);
    fakes::serve(router).await
}

fn settings(address: &str, token: &str) -> VaultTransitSettings {
    VaultTransitSettings::new(address, SecretString::from(token.to_owned()))
}

async fn provider() -> VaultTransit {
    let address = fake(true, None).await;
    VaultTransit::connect(settings(&address, TOKEN))
        .await
        .unwrap()
}

#[tokio::test]
async fn vault_wrap_unwrap_round_trip() {
    let kms = provider().await;
    kms.check().await.unwrap();
    assert!(
        !format!("{kms:?}").contains(TOKEN),
        "Debug redacts the token"
    );
    assert_eq!(kms.provider_name(), "vault");
    assert_eq!(kms.kek_id(), "transit/koryphaios");
    assert_eq!(kms.current_version(), 1);
    let owner = UserId::generate();
    let dek = Dek::generate().unwrap();
    let wrapped = kms.wrap(&dek, &owner).await.unwrap();
    assert_eq!(wrapped.kek_version, 1);
    assert!(wrapped.ciphertext.starts_with(b"vault:v1:"));
    let back = kms.unwrap(&wrapped, &owner).await.unwrap();
    assert_eq!(back.expose_bytes(), dek.expose_bytes());
}

#[tokio::test]
async fn vault_another_owner_cannot_unwrap() {
    let kms = provider().await;
    let wrapped = kms
        .wrap(&Dek::generate().unwrap(), &UserId::generate())
        .await
        .unwrap();
    let error = kms.unwrap(&wrapped, &UserId::generate()).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
}

#[tokio::test]
async fn vault_tampered_ciphertext_is_unauthentic() {
    let kms = provider().await;
    let owner = UserId::generate();
    let mut wrapped = kms.wrap(&Dek::generate().unwrap(), &owner).await.unwrap();
    let text = String::from_utf8(wrapped.ciphertext.clone()).unwrap();
    let (head, data) = text.rsplit_once(':').unwrap();
    let mut raw = STANDARD.decode(data).unwrap();
    raw[20] ^= 0x01;
    wrapped.ciphertext = format!("{head}:{}", STANDARD.encode(raw)).into_bytes();
    let error = kms.unwrap(&wrapped, &owner).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
    wrapped.ciphertext = b"garbage".to_vec();
    let error = kms.unwrap(&wrapped, &owner).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
}

#[tokio::test]
async fn vault_a_wrong_token_names_vault_token_without_printing_it() {
    let address = fake(true, None).await;
    let kms = VaultTransit::connect(settings(&address, "hvs.wrong-secret-value"))
        .await
        .expect("connect does not fail on a refused token");
    for error in [
        kms.check().await.unwrap_err(),
        kms.wrap(&Dek::generate().unwrap(), &UserId::generate())
            .await
            .unwrap_err(),
    ] {
        let text = error.to_string();
        assert!(text.contains("VAULT_TOKEN"), "{text}");
        assert!(
            !text.contains("wrong-secret-value") && !text.contains(TOKEN),
            "{text}"
        );
    }
}

#[tokio::test]
async fn vault_namespace_is_sent() {
    let address = fake(true, Some("team-a")).await;
    let mut with = settings(&address, TOKEN);
    with.namespace = Some("team-a".into());
    let kms = VaultTransit::connect(with).await.unwrap();
    kms.check().await.unwrap();
    assert_eq!(kms.kek_id(), "team-a/transit/koryphaios");
    let without = VaultTransit::connect(settings(&address, TOKEN))
        .await
        .unwrap();
    assert!(without.check().await.is_err());
}

#[tokio::test]
async fn vault_a_missing_or_underived_key_names_the_setting() {
    let address = fake(true, None).await;
    let mut other = settings(&address, TOKEN);
    other.key = "nope".into();
    let kms = VaultTransit::connect(other).await.unwrap();
    let text = kms.check().await.unwrap_err().to_string();
    assert!(text.contains("KORYPHAIOS_VAULT_TRANSIT_KEY"), "{text}");
    let text = kms
        .wrap(&Dek::generate().unwrap(), &UserId::generate())
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("KORYPHAIOS_VAULT_TRANSIT_KEY"), "{text}");

    let address = fake(false, None).await;
    let kms = VaultTransit::connect(settings(&address, TOKEN))
        .await
        .unwrap();
    let text = kms.check().await.unwrap_err().to_string();
    assert!(text.contains("derived=true"), "{text}");
}

#[tokio::test]
async fn vault_rotation_rewrap_and_retirement() {
    let kms = provider().await;
    let owner = UserId::generate();
    let dek = Dek::generate().unwrap();
    let v1 = kms.wrap(&dek, &owner).await.unwrap();

    assert_eq!(kms.rotate().await.unwrap(), 2);
    assert_eq!(kms.current_version(), 2);
    let versions = kms.versions().await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.current, v.retired))
            .collect::<Vec<_>>(),
        vec![(1, false, false), (2, true, false)]
    );
    // The old wrap still opens; rewrap moves it to version 2 and keeps the owner binding.
    assert_eq!(
        kms.unwrap(&v1, &owner).await.unwrap().expose_bytes(),
        dek.expose_bytes()
    );
    let v2 = kms.rewrap(&v1, &owner).await.unwrap();
    assert_eq!(v2.kek_version, 2);
    assert_eq!(
        kms.unwrap(&v2, &owner).await.unwrap().expose_bytes(),
        dek.expose_bytes()
    );
    let error = kms.rewrap(&v1, &UserId::generate()).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
    let fresh = kms.wrap(&dek, &owner).await.unwrap();
    assert_eq!(fresh.kek_version, 2);

    // Retiring: never the current version; in order; then version 1 no longer opens.
    assert!(matches!(kms.retire(2).await, Err(KmsError::Refused(_))));
    assert_eq!(kms.rotate().await.unwrap(), 3);
    assert!(matches!(kms.retire(2).await, Err(KmsError::Refused(_))));
    kms.retire(1).await.unwrap();
    kms.retire(1).await.unwrap();
    let versions = kms.versions().await.unwrap();
    assert!(versions[0].retired && !versions[1].retired && versions[2].current);
    let error = kms.unwrap(&v1, &owner).await.unwrap_err();
    assert!(matches!(error, KmsError::UnknownVersion(1)), "{error:?}");
    assert_eq!(
        kms.unwrap(&v2, &owner).await.unwrap().expose_bytes(),
        dek.expose_bytes()
    );
}

#[tokio::test]
async fn vault_down_at_start_is_unavailable_quickly() {
    let started = Instant::now();
    let address = format!("http://127.0.0.1:{}", fakes::closed_port());
    let kms = VaultTransit::connect(settings(&address, TOKEN))
        .await
        .expect("connect does not need Vault");
    assert_eq!(kms.current_version(), 0);
    fakes::unavailable_quickly(&kms, started).await;
}

#[tokio::test]
async fn vault_a_wrap_of_another_key_is_the_wrong_key() {
    let kms = provider().await;
    let owner = UserId::generate();
    let mut wrapped = kms.wrap(&Dek::generate().unwrap(), &owner).await.unwrap();
    wrapped.kek_id = "transit/other".into();
    let error = kms.unwrap(&wrapped, &owner).await.unwrap_err();
    assert!(matches!(error, KmsError::WrongKey { .. }), "{error:?}");
}

#[test]
fn vault_settings_debug_redacts_the_token_and_errors_name_variables() {
    let settings = settings("https://vault.example:8200", TOKEN);
    let debug = format!("{settings:?}");
    assert!(
        !debug.contains(TOKEN) && debug.contains("redacted"),
        "{debug}"
    );

    let read = VaultTransitSettings::from_lookup(&fakes::env(&[
        ("VAULT_ADDR", "https://vault.example:8200/"),
        ("VAULT_TOKEN", TOKEN),
        ("VAULT_NAMESPACE", "team-a"),
        ("KORYPHAIOS_VAULT_TRANSIT_KEY", "kek"),
    ]))
    .unwrap();
    assert_eq!(read.mount, "transit");
    assert_eq!(read.key, "kek");
    assert!(!format!("{read:?}").contains(TOKEN));
    let missing = VaultTransitSettings::from_lookup(&fakes::env(&[("VAULT_ADDR", "http://v:1")]))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("VAULT_TOKEN"), "{missing}");
    let bad = VaultTransitSettings::from_lookup(&fakes::env(&[
        ("VAULT_ADDR", "vault:8200"),
        ("VAULT_TOKEN", TOKEN),
    ]))
    .unwrap_err()
    .to_string();
    assert!(bad.contains("VAULT_ADDR") && !bad.contains(TOKEN), "{bad}");
    let bad = VaultTransitSettings::from_lookup(&fakes::env(&[
        ("VAULT_ADDR", "http://v:1"),
        ("VAULT_TOKEN", TOKEN),
        ("KORYPHAIOS_VAULT_TRANSIT_MOUNT", "../sys"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(bad.contains("KORYPHAIOS_VAULT_TRANSIT_MOUNT"), "{bad}");
}
