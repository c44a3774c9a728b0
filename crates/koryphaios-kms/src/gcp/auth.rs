//! Access tokens for Cloud KMS from the supported application default credentials.
//!
//! - Service account: a JWT `{iss: client_email, scope, aud: token_uri, iat, exp}` signed RS256
//!   with the key file's private key, exchanged at `token_uri` with
//!   `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
//!   (<https://developers.google.com/identity/protocols/oauth2/service-account#httprest>).
//! - Metadata server: `GET http://{host}/computeMetadata/v1/instance/service-accounts/default/token`
//!   with `Metadata-Flavor: Google`
//!   (<https://cloud.google.com/compute/docs/access/authenticate-workloads#applications>).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use koryphaios_core::envelope::KmsError;
use secrecy::ExposeSecret as _;
use serde::Serialize;
use time::OffsetDateTime;

use super::settings::{GcpCredential, ServiceAccountKey};
use crate::remote::http::{Reply, send_error};
use crate::remote::token::{self, AccessToken};

const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";
const SERVICE: &str = "Google OAuth";

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// A fresh token from `credential` (the static one as it is).
pub(crate) async fn fetch(
    http: &reqwest::Client,
    credential: &GcpCredential,
) -> Result<AccessToken, KmsError> {
    match credential {
        GcpCredential::AccessToken(value) => Ok(AccessToken {
            value: value.clone(),
            expires_at: None,
        }),
        GcpCredential::ServiceAccount(key) => service_account(http, key).await,
        GcpCredential::MetadataServer { host } => metadata(http, host).await,
    }
}

async fn service_account(
    http: &reqwest::Client,
    key: &ServiceAccountKey,
) -> Result<AccessToken, KmsError> {
    const SETTING: &str = "GOOGLE_APPLICATION_CREDENTIALS";
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = Claims {
        iss: &key.client_email,
        scope: SCOPE,
        aud: &key.token_uri,
        iat: now,
        exp: now + 3600,
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid.clone_from(&key.private_key_id);
    let signing = EncodingKey::from_rsa_pem(key.private_key.expose_secret().as_bytes())
        .map_err(|_| KmsError::Internal(format!("{SETTING}: private_key is not an RSA PEM key")))?;
    let assertion = jsonwebtoken::encode(&header, &claims, &signing).map_err(|e| {
        KmsError::Internal(format!("{SETTING}: cannot sign the token request: {e}"))
    })?;
    let response = http
        .post(&key.token_uri)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ])
        .send()
        .await
        .map_err(|e| send_error(SERVICE, &e))?;
    let reply = Reply::read(SERVICE, response).await?;
    token::parse(SERVICE, SETTING, &reply)
}

async fn metadata(http: &reqwest::Client, host: &str) -> Result<AccessToken, KmsError> {
    const SERVICE: &str = "GCE metadata server";
    let base = if host.starts_with("http://") || host.starts_with("https://") {
        host.trim_end_matches('/').to_owned()
    } else {
        format!("http://{host}")
    };
    let url = format!("{base}/computeMetadata/v1/instance/service-accounts/default/token");
    let response = http
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .map_err(|e| {
            KmsError::Unavailable(format!(
                "no Google credentials: GOOGLE_OAUTH_ACCESS_TOKEN and GOOGLE_APPLICATION_CREDENTIALS \
                 are unset and the metadata server ({host}, GCE_METADATA_HOST) did not answer: {}",
                send_error(SERVICE, &e)
            ))
        })?;
    let reply = Reply::read(SERVICE, response).await?;
    token::parse(SERVICE, "the instance's service account", &reply)
}
