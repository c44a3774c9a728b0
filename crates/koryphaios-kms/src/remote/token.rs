//! Bearer tokens of the cloud providers (GCP, Azure): fetched when needed, kept until a minute
//! before they expire, fetched by one caller at a time.

use std::future::Future;
use std::time::{Duration, Instant};

use koryphaios_core::envelope::KmsError;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use super::http::Reply;

/// Refresh this long before a token expires.
const MARGIN: Duration = Duration::from_secs(60);

/// A bearer token and when it stops working.
pub(crate) struct AccessToken {
    pub value: SecretString,
    pub expires_at: Option<Instant>,
}

/// The cached token.
#[derive(Default)]
pub(crate) struct TokenCache {
    slot: tokio::sync::Mutex<Option<AccessToken>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache(<redacted>)")
    }
}

impl TokenCache {
    /// The cached token, or a new one from `fetch`.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<SecretString, KmsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AccessToken, KmsError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(token) = slot.as_ref()
            && token
                .expires_at
                .is_none_or(|at| at > Instant::now() + MARGIN)
        {
            return Ok(token.value.clone());
        }
        let token = fetch().await?;
        let value = token.value.clone();
        *slot = Some(token);
        Ok(value)
    }

    /// Forgets the token (after the service answered 401 to it).
    pub async fn clear(&self) {
        *self.slot.lock().await = None;
    }

    /// Sends `method url` (with a JSON `body`) under the cached token, or one from `fetch`. A
    /// non-2xx answer comes back as `Ok(Err(reply))`; a 401 also forgets the token, so the next
    /// call fetches a fresh one.
    pub async fn send<F, Fut>(
        &self,
        http: &reqwest::Client,
        service: &str,
        fetch: F,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Result<Reply, Reply>, KmsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AccessToken, KmsError>>,
    {
        use secrecy::ExposeSecret as _;
        let token = self.get(fetch).await?;
        let mut request = http.request(method, url).bearer_auth(token.expose_secret());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| super::http::send_error(service, &e))?;
        let reply = Reply::read(service, response).await?;
        if reply.ok() {
            return Ok(Ok(reply));
        }
        if reply.status == 401 {
            self.clear().await;
        }
        Ok(Err(reply))
    }
}

/// An OAuth 2 token response: `{"access_token": "…", "expires_in": 3599}` (IMDS sends the
/// number as a string).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Value>,
}

/// Reads a token endpoint's reply; `what` names the credential settings for errors.
pub(crate) fn parse(service: &str, what: &str, reply: &Reply) -> Result<AccessToken, KmsError> {
    if reply.transient() {
        return Err(KmsError::Unavailable(format!(
            "{service} token endpoint: HTTP {}",
            reply.status
        )));
    }
    if !reply.ok() {
        // OAuth error bodies (`error`, `error_description`) name the problem, not the secret.
        return Err(KmsError::Internal(format!(
            "{service} refused the credentials ({what}): HTTP {}: {}",
            reply.status,
            reply.snippet()
        )));
    }
    let body: TokenResponse = serde_json::from_slice(&reply.body).map_err(|_| {
        KmsError::Internal(format!(
            "{service} token endpoint: unexpected response (HTTP {})",
            reply.status
        ))
    })?;
    let seconds = match &body.expires_in {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Ok(AccessToken {
        value: SecretString::from(body.access_token),
        expires_at: seconds.map(|s| Instant::now() + Duration::from_secs(s)),
    })
}
