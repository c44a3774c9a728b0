//! The 10 KB body limit on every method, judged on the bytes actually received.
//!
//! A declared `Content-Length` over the limit is refused before reading. Any other request that
//! carries a body (chunked included) is read up to the limit here, whether or not its handler
//! would read it, and refused with 413 the moment it passes the limit.
//!
//! The credential proxy's routes are left alone: their bodies stream to the provider under the
//! proxy's own, larger limit (`KORYPHAIOS_PROXY_MAX_BODY_BYTES`), enforced as they stream.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::MAX_BODY_BYTES;
use crate::http::error::ApiError;

fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// Buffers bodies up to the limit; refuses larger ones.
pub async fn limit_body(request: Request, next: Next) -> Response {
    if crate::proxy::target::owns(request.uri().path()) {
        return next.run(request).await;
    }
    let declared = declared_length(&request);
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return ApiError::payload_too_large().into_response();
    }
    let has_body = declared.is_some_and(|length| length > 0)
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(error) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::payload_too_large().into_response()
            } else {
                ApiError::malformed_json("the request body could not be read").into_response()
            }
        }
    }
}
