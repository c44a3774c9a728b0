//! `GET /metrics`: Prometheus text format. Optionally protected by `KORYPHAIOS_METRICS_TOKEN`
//! (`Authorization: Bearer <token>`, compared in constant time), and optionally moved to its own
//! listener (`KORYPHAIOS_METRICS_ADDR`), where the API listener answers 404.
//!
//! A scrape costs the same whatever the data size: gauges that describe stored data are refreshed
//! in the background (`crate::app`), not queried here.

use axum::Router;
use axum::routing::get;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;

use crate::http::error::{ApiError, ErrorBody};
use crate::state::AppState;

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
    exposition()
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
pub(crate) fn exposition() -> Response {
    crate::metrics::process();
    let body = crate::metrics::handle().render();
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
pub fn metrics_only_router(mut state: AppState, hsts_max_age: Option<u64>) -> Router {
    state.serves_metrics = true;
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
