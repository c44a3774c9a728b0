//! The request timeout: a request whose response has not started within
//! `KORYPHAIOS_REQUEST_TIMEOUT_SECS` is answered 503 (the envelope fills in the body).
//!
//! The credential proxy's routes are left to their own timeouts (connect, first byte, idle
//! between chunks: `KORYPHAIOS_PROXY_*`): a provider may take minutes to start answering a long
//! completion, and a slow provider is a 504 `upstream_timeout`, not our 503.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Answers 503 when the inner service takes longer than `limit` to produce its response head.
pub async fn limit_time(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    if crate::proxy::target::owns(request.uri().path()) {
        return next.run(request).await;
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
