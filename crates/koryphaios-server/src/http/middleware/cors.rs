//! CORS: only configured origins; a preflight from any other origin is refused with 403.
//!
//! tower-http's `CorsLayer` answers allowed origins. It would answer a foreign preflight with a
//! 200 lacking CORS headers; we refuse it outright instead, so the denial is visible in logs and
//! to anyone probing.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::http::error::ApiError;
use crate::http::middleware::request_context::REQUEST_ID_HEADER;

/// The allow-list, shared with the preflight guard.
#[derive(Debug, Clone)]
pub struct AllowedOrigins(pub Arc<Vec<HeaderValue>>);

/// The tower-http layer for allowed origins.
pub fn layer(origins: &AllowedOrigins) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.0.iter().cloned()))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static(REQUEST_ID_HEADER),
        ])
        .expose_headers([
            HeaderName::from_static(REQUEST_ID_HEADER),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            header::RETRY_AFTER,
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// Refuses preflight requests from origins outside the allow-list.
pub async fn refuse_foreign_preflight(
    axum::extract::State(origins): axum::extract::State<AllowedOrigins>,
    request: Request,
    next: Next,
) -> Response {
    let is_preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if is_preflight {
        let allowed = request
            .headers()
            .get(header::ORIGIN)
            .is_some_and(|origin| origins.0.contains(origin));
        if !allowed {
            return ApiError::forbidden("cors_origin_denied", "This origin may not call the API")
                .into_response();
        }
    }
    next.run(request).await
}
