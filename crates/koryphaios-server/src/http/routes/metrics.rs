//! `GET /metrics`: Prometheus text format. Optionally protected by `KORYPHAIOS_METRICS_TOKEN`
//! (`Authorization: Bearer <token>`, compared in constant time), and optionally moved to its own
//! listener (`KORYPHAIOS_METRICS_ADDR`), where the API listener answers 404.
//!
//! A scrape costs the same whatever the data size: gauges that describe stored data are refreshed
//! in the background (`crate::app`), not queried here. It also costs little however often it
//! comes: rendering walks every series, so the rendered text is kept for
//! `KORYPHAIOS_METRICS_MAX_AGE_MS` ([`RenderedMetrics`]) and scrapes within that age share it.
//! `/metrics` is exempt from rate limits (a monitoring system must always get through), so
//! without this a flood of scrapes would cost a render each.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::get;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;

use crate::http::error::{ApiError, ErrorBody};
use crate::state::{AppServices, AppState};

/// The metrics, for Prometheus to scrape.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
        (status = 401, description = "KORYPHAIOS_METRICS_TOKEN is set and was not presented", body = ErrorBody),
        (status = 404, description = "Served on the separate KORYPHAIOS_METRICS_ADDR listener instead", body = ErrorBody),
    ))]
pub async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.serves_metrics {
        return ApiError::not_found().into_response();
    }
    if let Err(refused) = authorized(state.metrics_token.as_ref(), &headers) {
        return refused.into_response();
    }
    let body = state
        .rendered_metrics
        .get_or_render(|| async {
            // One row, whatever the log size: the head is an outside witness for truncation.
            match state.store.audit_chain_head().await {
                Ok(Some(head)) => crate::metrics::audit_chain_head(head.seq, head.occurred_at_ms),
                Ok(None) => tracing::warn!("metrics: the audit chain head row is missing"),
                Err(error) => tracing::warn!(%error, "metrics: cannot read the audit chain head"),
            }
            crate::metrics::rate_limit_backend(
                state
                    .rate_limits
                    .as_ref()
                    .map_or("off", |limits| limits.backend()),
            );
            render()
        })
        .await;
    text_response(body)
}

/// The last rendered exposition of an instance and when it was rendered.
///
/// A scrape within `max_age` of the last render gets the same text; an older one renders anew,
/// and concurrent scrapes then wait for that one render instead of each doing its own.
#[derive(Debug)]
pub struct RenderedMetrics {
    max_age: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl RenderedMetrics {
    /// Keeps a render for `max_age` (zero: every scrape renders).
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The last render if younger than `max_age`, else what `render` makes (kept for the next).
    pub async fn get_or_render<F, Fut>(&self, render: F) -> Bytes
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Bytes>,
    {
        let mut last = self.last.lock().await;
        if let Some((rendered_at, body)) = last.as_ref()
            && rendered_at.elapsed() < self.max_age
        {
            return body.clone();
        }
        let body = render().await;
        if !self.max_age.is_zero() {
            *last = Some((Instant::now(), body.clone()));
        }
        body
    }
}

/// Whether the request presents the metrics token (when one is configured), compared in
/// constant time.
pub(crate) fn authorized(
    token: Option<&secrecy::SecretString>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(expected) = token else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let matches: bool = presented
        .as_bytes()
        .ct_eq(expected.expose_secret().as_bytes())
        .into();
    if matches {
        Ok(())
    } else {
        Err(ApiError::unauthenticated(
            "unauthenticated",
            "Metrics need the metrics token",
        ))
    }
}

/// The process metrics and every recorded series, in the Prometheus text format.
pub(crate) fn render() -> Bytes {
    crate::metrics::process();
    Bytes::from(crate::metrics::handle().render())
}

/// A rendered exposition as the response.
pub(crate) fn text_response(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The router of the separate metrics listener: `/metrics` only, with the error envelope and the
/// security headers.
pub fn metrics_only_router(state: &AppState, hsts_max_age: Option<u64>) -> Router {
    let state = AppState::new(AppServices {
        serves_metrics: true,
        ..AppServices::clone(state)
    });
    let router = Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { ApiError::not_found() })
        .layer(axum::middleware::from_fn(
            crate::http::middleware::envelope::error_envelope,
        ))
        .layer(axum::middleware::from_fn(
            crate::http::middleware::request_context::request_context,
        ))
        .with_state(state);
    crate::http::middleware::security_headers::apply(router, hsts_max_age)
}
