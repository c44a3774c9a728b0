//! Renders every error response as the JSON envelope with the request id, and logs each error
//! once: server errors with their internal detail, client errors at debug level.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::request_context::RequestId;
use crate::http::error::{ErrorBody, ErrorReport, report_for_status};

/// Marks a response whose status and body are someone else's (the credential proxy passes a
/// provider's 4xx/5xx on unchanged): the envelope leaves it alone.
#[derive(Debug, Clone, Copy)]
pub struct PassThrough;

/// Fills in the body of error responses.
pub async fn error_envelope(request: Request, next: Next) -> Response {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    let mut response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<PassThrough>().is_some()
    {
        return response;
    }
    let report = match response.extensions_mut().remove::<ErrorReport>() {
        Some(report) => report,
        None => {
            let already_json = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
            if already_json {
                return response;
            }
            report_for_status(status)
        }
    };
    if status.is_server_error() {
        tracing::error!(
            code = report.code,
            detail = report.internal.as_deref().unwrap_or(""),
            "server error"
        );
    } else {
        tracing::debug!(code = report.code, "client error");
    }
    let retry_after = report.retry_after;
    let body = ErrorBody {
        error: report.message,
        code: report.code.to_owned(),
        details: report.details,
        retry_after: report.retry_after,
        request_id,
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| {
        b"{\"error\":\"Internal server error\",\"code\":\"internal_error\"}".to_vec()
    });
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.remove(header::CONTENT_LENGTH);
    if let Some(seconds) = retry_after {
        headers
            .entry(header::RETRY_AFTER)
            .or_insert_with(|| HeaderValue::from(seconds));
    }
    *response.body_mut() = Body::from(bytes);
    response
}
