//! The HTTP client of the REST providers (Vault, GCP, Azure): rustls, short timeouts, and the
//! mapping of transport failures to [`KmsError::Unavailable`].

use koryphaios_core::envelope::KmsError;
use serde::de::DeserializeOwned;

use super::{CONNECT_TIMEOUT, OPERATION_TIMEOUT};

/// A client with the shared timeouts; `ca_pem` adds a trusted root (e.g. `VAULT_CACERT`).
pub(crate) fn client(ca_pem: Option<(&str, &[u8])>) -> Result<reqwest::Client, KmsError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(OPERATION_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3));
    if let Some((setting, pem)) = ca_pem {
        let certificate = reqwest::Certificate::from_pem(pem)
            .map_err(|e| KmsError::Internal(format!("{setting}: not a PEM certificate: {e}")))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|e| KmsError::Internal(format!("cannot build the HTTP client: {e}")))
}

/// A failed send: the service is unreachable, slow, or the exchange broke off.
pub(crate) fn send_error(service: &str, error: &reqwest::Error) -> KmsError {
    // The URL is ours (no secret in it: tokens travel in headers and bodies); the causes name
    // what failed (connection refused, DNS, TLS, timeout).
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    KmsError::Unavailable(format!("{service}: {what}: {detail}"))
}

/// A response read in full.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Its status code.
    pub status: u16,
    /// Its body.
    pub body: Vec<u8>,
}

impl Reply {
    /// Reads a response's body (a failure while reading is `Unavailable`).
    pub async fn read(service: &str, response: reqwest::Response) -> Result<Self, KmsError> {
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| send_error(service, &e))?
            .to_vec();
        Ok(Self { status, body })
    }

    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A 5xx or 429: the service is there but cannot serve now.
    #[cfg(any(feature = "gcp", feature = "azure"))]
    pub fn transient(&self) -> bool {
        self.status >= 500 || self.status == 429
    }

    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self, service: &str) -> Result<T, KmsError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            KmsError::Internal(format!(
                "{service}: unexpected response (HTTP {}): {e}",
                self.status
            ))
        })
    }

    /// The body as text for an error message, cut short (error bodies carry no secrets we sent).
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let mut out: String = text.chars().take(300).collect();
        if text.chars().count() > 300 {
            out.push('…');
        }
        out.replace(['\n', '\r'], " ")
    }
}
