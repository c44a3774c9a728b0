//! Refuses URLs whose path or query carries a control character once percent-decoded
//! (`%00`–`%1F`, `%7F`): no handler, store or log line ever sees one. PostgreSQL refuses NUL in
//! text outright, and control characters in audit filters or ids are never legitimate.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::{ApiError, FieldDetail};

/// Whether `raw` (a path or query as sent) decodes to a control character.
fn has_encoded_control(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.iter().any(|b| b.is_ascii_control())
        || bytes.windows(3).any(|window| {
            window[0] == b'%'
                && std::str::from_utf8(&window[1..])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .is_some_and(|byte| byte.is_ascii_control())
        })
}

/// 400 for a control character in the path or the query.
pub async fn refuse_control_characters(request: Request, next: Next) -> Response {
    let uri = request.uri();
    if has_encoded_control(uri.path()) {
        return ApiError::validation(vec![FieldDetail {
            field: "path".into(),
            message: "control characters are not allowed".into(),
        }])
        .into_response();
    }
    if uri.query().is_some_and(has_encoded_control) {
        return ApiError::bad_query("control characters are not allowed").into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::has_encoded_control;

    #[test]
    fn encoded_control_characters_are_found_and_others_are_not() {
        for bad in ["%00", "a%0a", "x=%1F", "%7f", "%7F&y=1", "a%0D%0Ab"] {
            assert!(has_encoded_control(bad), "{bad}");
        }
        for fine in [
            "",
            "action=login",
            "a%20b",
            "%41%7E",
            "100%",
            "%2",
            "%zz",
            "%C3%A9",
        ] {
            assert!(!has_encoded_control(fine), "{fine}");
        }
    }
}
