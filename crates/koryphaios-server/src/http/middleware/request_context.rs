//! Request ids and the per-request log line.
//!
//! The incoming `X-Request-Id` is kept when it is a sane token (≤128 chars of `[A-Za-z0-9._-]`),
//! otherwise a new UUID is made. The id goes into the request's extensions, the tracing span
//! every log line of the request is written in, and the response header.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The header that carries the request id both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being served.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn is_sane(candidate: &str) -> bool {
    !candidate.is_empty()
        && candidate.len() <= 128
        && candidate
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id for this request: the client's if sane, else a new one.
pub fn choose_request_id(incoming: Option<&HeaderValue>) -> String {
    incoming
        .and_then(|value| value.to_str().ok())
        .filter(|candidate| is_sane(candidate))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// Assigns the request id, runs the request inside its span, and logs its outcome once.
pub async fn request_context(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = choose_request_id(request.headers().get(REQUEST_ID_HEADER));
    let method = crate::metrics::method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    request.extensions_mut().insert(RequestId(id.clone()));
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let span = tracing::info_span!("request", request_id = %id, method);
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    crate::metrics::http_request(method, &route, status, elapsed);
    let latency_ms = elapsed * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(route, status, latency_ms, "request failed");
        } else {
            tracing::info!(route, status, latency_ms, "request served");
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_incoming_ids_are_kept() {
        let id = choose_request_id(Some(&HeaderValue::from_static("abc-123_x.y")));
        assert_eq!(id, "abc-123_x.y");
    }

    #[test]
    fn insane_incoming_ids_are_replaced() {
        for bad in ["", "has space", "semi;colon", "<script>", &"a".repeat(129)] {
            let value = HeaderValue::from_str(bad).unwrap();
            let id = choose_request_id(Some(&value));
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok());
        }
        assert!(uuid::Uuid::parse_str(&choose_request_id(None)).is_ok());
    }
}
