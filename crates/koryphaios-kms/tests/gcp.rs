//! The `gcp` key provider against `FakeCloudKms`, an in-process stand-in for Cloud KMS and
//! Google's token endpoints (no Google service can be reached here). The fake implements exactly
//! the endpoints the provider calls, with their documented shapes, and really encrypts: each
//! crypto-key version has a random AES-256 key, and a ciphertext is
//! `version (u32 BE) ‖ nonce ‖ AES-256-GCM(plaintext, AAD = additionalAuthenticatedData)`.
//! It checks the bearer token (401 otherwise) and verifies service-account JWTs (RS256) with the
//! account's public key.
//!
//! API references:
//! - Cloud KMS <https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys>:
//!   `POST /v1/{key}:encrypt` `{plaintext, additionalAuthenticatedData}` → `{name, ciphertext}`;
//!   `POST /v1/{key}:decrypt` `{ciphertext, additionalAuthenticatedData}` → `{plaintext}`;
//!   `GET /v1/{key}` → `{name, purpose, primary: {name, state, createTime}}`;
//!   `GET /v1/{key}/cryptoKeyVersions` → `{cryptoKeyVersions: [{name, state, createTime}],
//!   nextPageToken}`; `POST /v1/{key}/cryptoKeyVersions` `{}` → the version;
//!   `POST /v1/{key}:updatePrimaryVersion` `{cryptoKeyVersionId}` → the key;
//!   `POST /v1/{key}/cryptoKeyVersions/{n}:destroy` → the version (`DESTROY_SCHEDULED`);
//!   errors `{error: {code, message, status}}`.
//! - Service-account tokens <https://developers.google.com/identity/protocols/oauth2/service-account#httprest>:
//!   `POST token_uri` form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT`
//!   → `{access_token, expires_in, token_type}`.
//! - Metadata server <https://cloud.google.com/compute/docs/metadata/predefined-metadata-keys>:
//!   `GET /computeMetadata/v1/instance/service-accounts/default/token`, `Metadata-Flavor: Google`.
#![expect(clippy::unwrap_used)]

mod fakes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use koryphaios_core::envelope::{Dek, KeyProvider, KmsError};
use koryphaios_core::ids::UserId;
use koryphaios_kms::{GcpCredential, GcpKms, GcpKmsSettings};
use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use secrecy::SecretString;
use serde_json::{Value, json};

const KEY: &str = "projects/p1/locations/europe-west1/keyRings/ring/cryptoKeys/kek";
const ISSUED: &str = "ya29.fake-issued-token";
const STATIC: &str = "ya29.fake-static-token";

/// The fake's state.
struct FakeCloudKms {
    /// Version n (1-based) → (key, state).
    versions: Vec<([u8; 32], &'static str)>,
    primary: usize,
    /// The service account's public key (PEM), to verify JWT assertions.
    account_public_pem: String,
    token_uri: String,
}

type Shared = Arc<Mutex<FakeCloudKms>>;

fn google_error(code: StatusCode, status: &str, message: &str) -> Response {
    (
        code,
        Json(json!({ "error": { "code": code.as_u16(), "message": message, "status": status } })),
    )
        .into_response()
}

fn version_json(n: usize, state: &str) -> Value {
    json!({
        "name": format!("{KEY}/cryptoKeyVersions/{n}"),
        "state": state,
        "createTime": format!("2026-01-0{}T00:00:00Z", n.min(9)),
    })
}

fn key_json(fake: &FakeCloudKms) -> Value {
    json!({
        "name": KEY,
        "purpose": "ENCRYPT_DECRYPT",
        "primary": version_json(fake.primary, fake.versions[fake.primary - 1].1),
    })
}

fn b64(body: &Value, field: &str) -> Option<Vec<u8>> {
    STANDARD.decode(body.get(field)?.as_str()?).ok()
}

async fn token(State(state): State<Shared>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url_form(&body);
    let fake = state.lock().unwrap();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "unsupported_grant_type" })),
        )
            .into_response();
    }
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(fake.account_public_pem.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[fake.token_uri.as_str()]);
    validation.set_issuer(&["kms@p1.iam.gserviceaccount.com"]);
    let verified = form
        .get("assertion")
        .and_then(|a| jsonwebtoken::decode::<Value>(a, &key, &validation).ok())
        .filter(|data| {
            data.claims["scope"]
                .as_str()
                .is_some_and(|s| s.contains("cloudkms"))
        });
    match verified {
        Some(_) => {
            Json(json!({ "access_token": ISSUED, "expires_in": 3599, "token_type": "Bearer" }))
                .into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            Json(
                json!({ "error": "invalid_grant", "error_description": "Invalid JWT Signature." }),
            ),
        )
            .into_response(),
    }
}

fn url_form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode_component(k), decode_component(v)))
        .collect()
}

fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

async fn metadata(headers: HeaderMap) -> Response {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return StatusCode::FORBIDDEN.into_response();
    }
    Json(json!({ "access_token": ISSUED, "expires_in": 3599, "token_type": "Bearer" }))
        .into_response()
}

/// Every Cloud KMS call: the path is parsed here, as `{key}:verb` segments do not route well.
async fn cloud_kms(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !matches!(bearer, Some(ISSUED | STATIC)) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    let Some(rest) = uri.path().strip_prefix("/v1/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut fake = state.lock().unwrap();
    if !rest.starts_with(KEY) {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "CryptoKey not found.");
    }
    let tail = &rest[KEY.len()..];
    match (method, tail) {
        (Method::POST, ":encrypt") => {
            let (Some(plaintext), aad) = (
                b64(&body, "plaintext"),
                b64(&body, "additionalAuthenticatedData").unwrap_or_default(),
            ) else {
                return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "plaintext");
            };
            let n = fake.primary;
            let mut ciphertext = (n as u32).to_be_bytes().to_vec();
            ciphertext.extend(fakes::seal(&fake.versions[n - 1].0, &plaintext, &aad));
            Json(json!({
                "name": format!("{KEY}/cryptoKeyVersions/{n}"),
                "ciphertext": STANDARD.encode(ciphertext),
            }))
            .into_response()
        }
        (Method::POST, ":decrypt") => {
            let invalid = || {
                google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "Decryption failed: the ciphertext is invalid.",
                )
            };
            let Some(ciphertext) = b64(&body, "ciphertext").filter(|c| c.len() > 4) else {
                return invalid();
            };
            let aad = b64(&body, "additionalAuthenticatedData").unwrap_or_default();
            let n = u32::from_be_bytes(ciphertext[..4].try_into().unwrap()) as usize;
            let Some((key, state)) = fake.versions.get(n.wrapping_sub(1)) else {
                return invalid();
            };
            if *state != "ENABLED" {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "FAILED_PRECONDITION",
                    &format!(
                        "{KEY}/cryptoKeyVersions/{n} is not enabled, current state is: {state}."
                    ),
                );
            }
            match fakes::open(key, &ciphertext[4..], &aad) {
                Some(plaintext) => {
                    Json(json!({ "plaintext": STANDARD.encode(plaintext) })).into_response()
                }
                None => invalid(),
            }
        }
        (Method::GET, "") => Json(key_json(&fake)).into_response(),
        (Method::GET, t) if t.starts_with("/cryptoKeyVersions") => {
            let versions: Vec<Value> = fake
                .versions
                .iter()
                .enumerate()
                .map(|(i, (_, state))| version_json(i + 1, state))
                .collect();
            Json(json!({ "cryptoKeyVersions": versions, "totalSize": versions.len() }))
                .into_response()
        }
        (Method::POST, "/cryptoKeyVersions") => {
            fake.versions.push((fakes::random(), "ENABLED"));
            let n = fake.versions.len();
            Json(version_json(n, "ENABLED")).into_response()
        }
        (Method::POST, ":updatePrimaryVersion") => {
            let Some(n) = body["cryptoKeyVersionId"]
                .as_str()
                .and_then(|n| n.parse::<usize>().ok())
            else {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "cryptoKeyVersionId",
                );
            };
            if n == 0 || n > fake.versions.len() {
                return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "version not found");
            }
            fake.primary = n;
            Json(key_json(&fake)).into_response()
        }
        (Method::POST, t) if t.starts_with("/cryptoKeyVersions/") && t.ends_with(":destroy") => {
            let n: usize = t["/cryptoKeyVersions/".len()..t.len() - ":destroy".len()]
                .parse()
                .unwrap_or(0);
            if n == 0 || n > fake.versions.len() {
                return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "version not found");
            }
            fake.versions[n - 1].1 = "DESTROY_SCHEDULED";
            Json(version_json(n, "DESTROY_SCHEDULED")).into_response()
        }
        _ => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method"),
    }
}

struct Fake {
    base: String,
    account_json: String,
}

async fn fake() -> Fake {
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let private_pem = private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    // The token URI is only known once the server listens: route it through shared state.
    let state: Shared = Arc::new(Mutex::new(FakeCloudKms {
        versions: vec![(fakes::random(), "ENABLED")],
        primary: 1,
        account_public_pem: public_pem,
        token_uri: String::new(),
    }));
    let router = Router::new()
        .route("/token", axum::routing::post(token))
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            axum::routing::get(metadata),
        )
        .fallback(cloud_kms)
        .with_state(state.clone());
    let base = fakes::serve(router).await;
    let token_uri = format!("{base}/token");
    state.lock().unwrap().token_uri = token_uri.clone();
    let account_json = json!({
        "type": "service_account",
        "project_id": "p1",
        "private_key_id": "key-1",
        "private_key": private_pem,
        "client_email": "kms@p1.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    })
    .to_string();
    Fake { base, account_json }
}

async fn provider(fake: &Fake) -> GcpKms {
    let credential =
        GcpCredential::service_account_json(&fake.account_json, "GOOGLE_APPLICATION_CREDENTIALS")
            .unwrap();
    GcpKms::connect(GcpKmsSettings {
        key_name: KEY.into(),
        endpoint: fake.base.clone(),
        credential,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn gcp_wrap_unwrap_round_trip_with_a_service_account_key() {
    let fake = fake().await;
    let kms = provider(&fake).await;
    kms.check().await.unwrap();
    let debug = format!("{kms:?}");
    assert!(
        !debug.contains("PRIVATE KEY") && !debug.contains(ISSUED),
        "{debug}"
    );
    assert_eq!(kms.provider_name(), "gcp");
    assert_eq!(kms.kek_id(), KEY);
    assert_eq!(kms.current_version(), 1);
    let owner = UserId::generate();
    let dek = Dek::generate().unwrap();
    let wrapped = kms.wrap(&dek, &owner).await.unwrap();
    assert_eq!(wrapped.kek_version, 1);
    let back = kms.unwrap(&wrapped, &owner).await.unwrap();
    assert_eq!(back.expose_bytes(), dek.expose_bytes());
}

#[tokio::test]
async fn gcp_metadata_server_and_static_tokens_work() {
    let fake = fake().await;
    for credential in [
        GcpCredential::MetadataServer {
            host: fake.base.clone(),
        },
        GcpCredential::AccessToken(SecretString::from(STATIC)),
    ] {
        let kms = GcpKms::connect(GcpKmsSettings {
            key_name: KEY.into(),
            endpoint: fake.base.clone(),
            credential,
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
}

#[tokio::test]
async fn gcp_another_owner_cannot_unwrap_and_tampering_is_unauthentic() {
    let fake = fake().await;
    let kms = provider(&fake).await;
    let owner = UserId::generate();
    let mut wrapped = kms.wrap(&Dek::generate().unwrap(), &owner).await.unwrap();
    let error = kms.unwrap(&wrapped, &UserId::generate()).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
    let last = wrapped.ciphertext.len() - 1;
    wrapped.ciphertext[last] ^= 0x01;
    let error = kms.unwrap(&wrapped, &owner).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
}

#[tokio::test]
async fn gcp_rotation_rewrap_and_retirement() {
    let fake = fake().await;
    let kms = provider(&fake).await;
    fakes::rotation_rewrap_and_retirement(&kms).await;
}

#[tokio::test]
async fn gcp_a_refused_token_names_the_credentials_without_printing_them() {
    let fake = fake().await;
    let secret = "ya29.not-the-right-one";
    let kms = GcpKms::connect(GcpKmsSettings {
        key_name: KEY.into(),
        endpoint: fake.base.clone(),
        credential: GcpCredential::AccessToken(SecretString::from(secret)),
    })
    .await
    .unwrap();
    let text = kms.check().await.unwrap_err().to_string();
    assert!(text.contains("GOOGLE_OAUTH_ACCESS_TOKEN"), "{text}");
    assert!(!text.contains(secret), "{text}");

    // A service-account key the token endpoint does not accept.
    let other = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let mut account: Value = serde_json::from_str(&fake.account_json).unwrap();
    account["private_key"] = json!(other.to_pkcs8_pem(LineEnding::LF).unwrap().to_string());
    let credential =
        GcpCredential::service_account_json(&account.to_string(), "GOOGLE_APPLICATION_CREDENTIALS")
            .unwrap();
    assert!(!format!("{credential:?}").contains("PRIVATE KEY"));
    let kms = GcpKms::connect(GcpKmsSettings {
        key_name: KEY.into(),
        endpoint: fake.base.clone(),
        credential,
    })
    .await
    .unwrap();
    let text = kms.check().await.unwrap_err().to_string();
    assert!(text.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}

#[tokio::test]
async fn gcp_a_wrong_key_names_the_setting() {
    let fake = fake().await;
    let kms = GcpKms::connect(GcpKmsSettings {
        key_name: "projects/p1/locations/europe-west1/keyRings/ring/cryptoKeys/other".into(),
        endpoint: fake.base.clone(),
        credential: GcpCredential::AccessToken(SecretString::from(STATIC)),
    })
    .await
    .unwrap();
    let text = kms.check().await.unwrap_err().to_string();
    assert!(text.contains("KORYPHAIOS_GCP_KMS_KEY"), "{text}");
}

#[tokio::test]
async fn gcp_down_at_start_is_unavailable_quickly() {
    let started = Instant::now();
    let kms = GcpKms::connect(GcpKmsSettings {
        key_name: KEY.into(),
        endpoint: format!("http://127.0.0.1:{}", fakes::closed_port()),
        credential: GcpCredential::AccessToken(SecretString::from(STATIC)),
    })
    .await
    .expect("connect does not need Cloud KMS");
    fakes::unavailable_quickly(&kms, started).await;
}

#[test]
fn gcp_settings_name_the_variables_and_redact_secrets() {
    let settings = GcpKmsSettings::from_lookup(&fakes::env(&[
        ("KORYPHAIOS_GCP_KMS_KEY", KEY),
        ("GOOGLE_OAUTH_ACCESS_TOKEN", STATIC),
    ]))
    .unwrap();
    assert_eq!(settings.endpoint, "https://cloudkms.googleapis.com");
    assert!(!format!("{settings:?}").contains(STATIC));
    let settings =
        GcpKmsSettings::from_lookup(&fakes::env(&[("KORYPHAIOS_GCP_KMS_KEY", KEY)])).unwrap();
    assert!(matches!(
        settings.credential,
        GcpCredential::MetadataServer { .. }
    ));
    let text = GcpKmsSettings::from_lookup(&fakes::env(&[(
        "KORYPHAIOS_GCP_KMS_KEY",
        "projects/p1/keys/k",
    )]))
    .unwrap_err()
    .to_string();
    assert!(text.contains("KORYPHAIOS_GCP_KMS_KEY"), "{text}");
    let text = GcpKmsSettings::from_lookup(&fakes::env(&[
        ("KORYPHAIOS_GCP_KMS_KEY", KEY),
        ("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(text.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{text}");
    let text = GcpCredential::service_account_json(r#"{"type":"authorized_user"}"#, "X")
        .unwrap_err()
        .to_string();
    assert!(text.contains("not supported"), "{text}");
}
