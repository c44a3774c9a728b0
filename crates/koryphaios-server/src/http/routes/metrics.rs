//! `GET /metrics`: Prometheus text format. Optionally protected by `KORYPHAIOS_METRICS_TOKEN`
//! (`Authorization: Bearer <token>`, compared in constant time).

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
    ))]
pub async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let matches: bool = presented
            .as_bytes()
            .ct_eq(expected.expose_secret().as_bytes())
            .into();
        if !matches {
            return ApiError::unauthenticated("unauthenticated", "Metrics need the metrics token")
                .into_response();
        }
    }
    match state.store.count_credentials_by_provider().await {
        Ok(counts) => {
            for (provider, count) in counts {
                crate::metrics::credentials_stored(&provider, count);
            }
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot count stored credentials"),
    }
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
