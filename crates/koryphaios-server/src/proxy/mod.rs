//! The credential proxy (issue #15, ADR 0016): a caller holding only a key of ours calls a
//! provider through `/api/v1/proxy/{provider}/{path}`, and the provider's key, opened from the
//! store for this one request, is added on the way out. The caller never sees it.
//!
//! [`Proxy::forward`] does one call: resolve the provider (closed table), check the path, have
//! the credential use case authorise (`proxy:<provider>`) and open the secret, then stream the
//! request to the provider and its answer back, unchanged but for the headers
//! ([`headers`]) and an error body quoting the key ([`redact`]). [`call`] does the bookkeeping;
//! [`limits`] caps the calls in flight, and `KORYPHAIOS_PROXY_MAX_DURATION_SECS` how long each
//! may run.

pub mod body;
pub mod call;
pub mod headers;
pub mod limits;
pub mod model;
pub mod pending;
pub mod providers;
pub mod redact;
pub mod target;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::response::Response;
use koryphaios_core::audit::RequestContext;
use koryphaios_core::credentials::{CredentialError, CredentialService, UseRecord};
use koryphaios_core::{CredentialId, Principal};
use secrecy::ExposeSecret;

use crate::config::ProxyConfig;
use call::{Call, RequestTally};
use providers::ProviderTable;

/// Why the proxy answered itself instead of passing the provider's answer on.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No such provider, or one without a base URL.
    #[error("unknown provider")]
    UnknownProvider,
    /// The path could leave the provider's base URL.
    #[error("path refused: {0}")]
    Path(&'static str),
    /// `X-Koryphaios-Credential` is not a credential id.
    #[error("malformed credential id")]
    CredentialHeader,
    /// The request body is over `KORYPHAIOS_PROXY_MAX_BODY_BYTES`.
    #[error("request body over the proxy limit")]
    TooLarge,
    /// Authorisation or the credential lookup refused (403, 404, …).
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The stored secret cannot be sent in a header.
    #[error(transparent)]
    UnusableSecret(#[from] headers::UnusableSecret),
    /// The provider could not be reached, or the request could not be sent.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The provider did not answer in time.
    #[error("upstream timed out")]
    Timeout,
    /// Too many calls in flight (this user's, or the instance's).
    #[error("too many proxied calls in flight")]
    TooManyConcurrent(limits::Full),
}

/// The proxy: the upstream client and its settings.
#[derive(Debug)]
pub struct Proxy {
    client: reqwest::Client,
    providers: ProviderTable,
    max_body_bytes: u64,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    max_duration: Duration,
    limiter: limits::Limiter,
    pending: pending::PendingRecords,
}

impl Proxy {
    /// The proxy for `config`: one pooled client (rustls), never following redirects (a
    /// redirect would carry the key to wherever the provider points; 3xx pass through instead).
    /// Each call's audit write is counted in `pending` (shutdown waits for them).
    pub fn new(config: &ProxyConfig, pending: pending::PendingRecords) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|error| anyhow::anyhow!("building the proxy's HTTP client: {error}"))?;
        Ok(Self {
            client,
            providers: config.providers.clone(),
            max_body_bytes: config.max_body_bytes,
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
            max_duration: config.max_duration,
            limiter: limits::Limiter::new(config.max_concurrent, config.max_concurrent_per_user),
            pending,
        })
    }

    /// The reachable providers.
    pub fn providers(&self) -> &ProviderTable {
        &self.providers
    }

    /// Forwards `request` (a proxy route: the full path as the caller sent it in `raw_path`) for
    /// `principal` and returns the provider's answer, streaming.
    pub async fn forward(
        &self,
        credentials: &Arc<CredentialService>,
        principal: Principal,
        context: RequestContext,
        raw_path: &str,
        request: Request,
    ) -> Result<Response, ProxyError> {
        // The whole call, the streamed answer included, ends by then.
        let deadline = tokio::time::Instant::now() + self.max_duration;
        let (name, rest) = target::split(raw_path).ok_or(ProxyError::UnknownProvider)?;
        let provider = self
            .providers
            .get(name)
            .ok_or(ProxyError::UnknownProvider)?;
        target::check_path(rest).map_err(ProxyError::Path)?;
        let query = request.uri().query();
        let url = target::upstream_url(&provider.base_url, rest, query)
            .ok_or(ProxyError::Path("the path leaves the provider's base URL"))?;
        let audit_path = target::audit_path(rest, query);
        let chosen = match request.headers().get(headers::CREDENTIAL_HEADER) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|raw| CredentialId::parse(raw).ok())
                    .ok_or(ProxyError::CredentialHeader)?,
            ),
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.max_body_bytes) {
            return Err(ProxyError::TooLarge);
        }
        // Before the store is asked anything: a refused call costs nothing. Held by `call`, and
        // so until the answer's body is over.
        let permit = self
            .limiter
            .try_acquire(&principal.user_id)
            .map_err(ProxyError::TooManyConcurrent)?;
        let (credential, secret) = credentials
            .broker(&principal, &context, provider.name, chosen.as_ref())
            .await?;
        let (parts, body) = request.into_parts();
        let outgoing = headers::upstream_request(&parts.headers, provider.auth, &secret)?;
        let is_json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.contains("json"));
        let tally = Arc::new(RequestTally {
            peek: is_json.then(Default::default),
            ..RequestTally::default()
        });
        let has_body = declared.is_some_and(|length| length > 0)
            || parts.headers.contains_key(header::TRANSFER_ENCODING);
        let mut call = Call::start(
            Arc::clone(credentials),
            principal,
            context,
            credential,
            provider.name,
            UseRecord {
                method: crate::metrics::method_label(&parts.method).to_owned(),
                path: audit_path,
                ..UseRecord::default()
            },
            Arc::clone(&tally),
            permit,
            self.pending.clone(),
        );
        let mut upstream = self
            .client
            .request(parts.method.clone(), url)
            .headers(outgoing);
        if has_body {
            upstream = upstream.body(body::upstream_request(
                body,
                self.max_body_bytes,
                self.idle_timeout,
                Arc::clone(&tally),
            ));
        }
        let head_by = deadline.min(tokio::time::Instant::now() + self.first_byte_timeout);
        let answer = match tokio::time::timeout_at(head_by, upstream.send()).await {
            Err(_) => {
                call.failed(if head_by == deadline {
                    "max_duration"
                } else {
                    "upstream_timeout"
                });
                return Err(ProxyError::Timeout);
            }
            Ok(Err(error)) => {
                if tally.over_limit.load(Ordering::Relaxed) {
                    call.failed("payload_too_large");
                    return Err(ProxyError::TooLarge);
                }
                if error.is_timeout() || tally.idle.load(Ordering::Relaxed) {
                    call.failed("upstream_timeout");
                    return Err(ProxyError::Timeout);
                }
                call.failed("upstream_unavailable");
                // Without the URL: a query may hold values the caller would not log.
                return Err(ProxyError::Unavailable(error.without_url().to_string()));
            }
            Ok(Ok(answer)) => answer,
        };
        let status = answer.status();
        if (status.is_client_error() || status.is_server_error())
            && headers::is_encoded(answer.headers())
        {
            // We asked for `identity`; an error body compressed anyway could quote the key in
            // bytes the redactor cannot see, so it is not passed on.
            call.failed("upstream_unavailable");
            return Err(ProxyError::Unavailable(format!(
                "the provider answered {status} with an encoded body, which cannot be redacted"
            )));
        }
        call.answered(status.as_u16());
        let mut response = Response::builder()
            .status(status)
            .body(Body::empty())
            .map_err(|error| ProxyError::Unavailable(error.to_string()))?;
        *response.headers_mut() = headers::downstream_response(answer.headers(), &secret);
        let redactor = (status.is_client_error() || status.is_server_error())
            .then(|| redact::Redactor::new(secret.expose_secret().as_bytes()));
        drop(secret);
        *response.body_mut() = body::downstream_response(
            answer,
            redactor,
            call,
            body::Timing {
                idle: self.idle_timeout,
                deadline,
            },
        );
        response
            .extensions_mut()
            .insert(crate::http::middleware::envelope::PassThrough);
        Ok(response)
    }
}
