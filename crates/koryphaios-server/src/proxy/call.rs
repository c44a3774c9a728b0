//! One proxied call's bookkeeping: what the request body sent, and, when the call is over (the
//! response body ended, failed, or the caller went away), its metrics and its `credential_use`
//! audit record.
//!
//! The record is written after the response, from a spawned task, through the store's group
//! commit: its status, duration and byte counts are only known then, and the caller's stream
//! never waits on a database commit (ADR 0016). The use was authorised, and the secret opened,
//! before anything was sent. The task is counted in [`PendingRecords`] so that a graceful
//! shutdown waits for it before closing the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use koryphaios_core::Principal;
use koryphaios_core::audit::RequestContext;
use koryphaios_core::credentials::{Credential, CredentialService, UseRecord};

use super::limits::Permit;
use super::model::ModelPeek;
use super::pending::PendingRecords;

/// What the request body stream saw (shared with the stream, which runs inside the client).
#[derive(Debug, Default)]
pub struct RequestTally {
    /// Bytes read from the caller (and sent on).
    pub bytes: AtomicU64,
    /// The caller's body passed the limit (the upload was cut: answer 413).
    pub over_limit: AtomicBool,
    /// The caller's body paused longer than the idle timeout.
    pub idle: AtomicBool,
    /// The start of a JSON body, for its `model`.
    pub peek: Option<Mutex<ModelPeek>>,
}

/// How a call ended, as `proxy_requests_total{status}` counts it: a closed set.
pub const STATUS_LABELS: [&str; 10] = [
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "upstream_unavailable",
    "upstream_timeout",
    "payload_too_large",
    "max_duration",
    "client_closed",
];

/// The caller went away before the provider answered.
const CLIENT_CLOSED: &str = "client_closed";

/// The status class of an upstream status.
pub fn status_label(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// A call in progress; finished (metrics, audit) when dropped.
#[derive(Debug)]
pub struct Call {
    credentials: Arc<CredentialService>,
    principal: Principal,
    context: RequestContext,
    credential: Credential,
    provider: &'static str,
    started: Instant,
    tally: Arc<RequestTally>,
    record: UseRecord,
    status: &'static str,
    /// The call's place under the concurrency caps: given back once its audit record is written,
    /// so records waiting for the writer count as calls in flight (a load the writer cannot keep
    /// up with is refused with 429 instead of piling up record tasks without bound).
    permit: Option<Permit>,
    /// Where the record's write is counted until it is done.
    pending: PendingRecords,
}

impl Call {
    /// Starts the bookkeeping of a call with `credential` (already authorised and opened).
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one distinct part of the call, all moved into it; a struct would only rename them"
    )]
    pub fn start(
        credentials: Arc<CredentialService>,
        principal: Principal,
        context: RequestContext,
        credential: Credential,
        provider: &'static str,
        record: UseRecord,
        tally: Arc<RequestTally>,
        permit: Permit,
        pending: PendingRecords,
    ) -> Self {
        Self {
            credentials,
            principal,
            context,
            credential,
            provider,
            started: Instant::now(),
            tally,
            record: UseRecord {
                // Until the provider answers or the call fails, the only way for the call to end
                // is the caller going away (its request future dropped while we wait): not the
                // provider's fault, and not to be counted as one.
                failure: Some(CLIENT_CLOSED),
                ..record
            },
            status: CLIENT_CLOSED,
            permit: Some(permit),
            pending,
        }
    }

    /// The provider answered with `status`.
    pub fn answered(&mut self, status: u16) {
        self.record.upstream_status = Some(status);
        self.status = status_label(status);
        if self.record.failure == Some(CLIENT_CLOSED) {
            self.record.failure = None;
        }
    }

    /// Our side failed the call: `code` is one of the closed [`STATUS_LABELS`] failures.
    pub fn failed(&mut self, code: &'static str) {
        self.record.failure = Some(code);
        if self.record.upstream_status.is_none() {
            self.status = code;
        }
    }

    /// `bytes` more of the response reached the caller.
    pub fn received(&mut self, bytes: usize) {
        self.record.bytes_received += bytes as u64;
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        crate::metrics::proxy_request(self.provider, self.status, elapsed.as_secs_f64());
        let mut record = std::mem::take(&mut self.record);
        record.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        record.bytes_sent = self.tally.bytes.load(Ordering::Relaxed);
        record.model = self
            .tally
            .peek
            .as_ref()
            .and_then(|peek| peek.lock().ok().and_then(|peek| peek.model()));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime to write a credential_use record on");
            return;
        };
        let credentials = Arc::clone(&self.credentials);
        let principal = self.principal.clone();
        let context = self.context.clone();
        let credential = self.credential.clone();
        let in_flight = self.pending.start();
        let permit = self.permit.take();
        runtime.spawn(async move {
            let _in_flight = in_flight;
            let _permit = permit;
            if let Err(error) = credentials
                .record_use(&principal, &context, &credential, &record)
                .await
            {
                tracing::error!(%error, "the credential_use audit record could not be written");
            }
        });
    }
}
