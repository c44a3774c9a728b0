//! `ApiJson`: the JSON body extractor and responder whose rejections use the error envelope.
//!
//! It reads the body (the body limit turns an oversize one into 413, chunked or not), insists on
//! `Content-Type: application/json` (415), and deserialises with the failing field's path, so
//! wrong types, missing and unknown fields come back as 400 with `details`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::contract::{Documented, OperationDoc, Shared};
use super::error::{ApiError, FieldDetail};

/// A JSON request or response body.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&request) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large()
                } else {
                    ApiError::malformed_json("the body could not be read")
                }
            })?;
        parse(&bytes).map(ApiJson)
    }
}

/// What a JSON body can be refused with.
fn document_body(operation: &mut OperationDoc<'_>) {
    operation.respond(Shared::BadRequest);
    operation.respond(Shared::PayloadTooLarge);
    operation.respond(Shared::UnsupportedMediaType);
}

impl<T: utoipa::ToSchema> Documented for ApiJson<T> {
    fn document(operation: &mut OperationDoc<'_>) {
        operation.json_body::<T>(true);
        document_body(operation);
    }
}

/// Deserialises `bytes`, mapping serde's errors onto the envelope.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_data() {
            let field = if path == "." { "body".to_owned() } else { path };
            ApiError::validation(vec![FieldDetail {
                field,
                message: clean_serde_message(&inner),
            }])
        } else {
            ApiError::malformed_json(clean_serde_message(&inner))
        }
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::malformed_json(clean_serde_message(&error)))?;
    Ok(value)
}

/// serde's message without the " at line 1 column 9" suffix, which means nothing to a client.
fn clean_serde_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(index) => text[..index].to_owned(),
        None => text,
    }
}

/// An optional JSON body: `None` when the request carries no body at all (e.g. a bare DELETE).
#[derive(Debug, Clone, Default)]
pub struct MaybeJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for MaybeJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = request.headers();
        let declared_empty = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .is_none_or(|length| length.trim() == "0");
        if declared_empty && !headers.contains_key(header::TRANSFER_ENCODING) {
            return Ok(Self(None));
        }
        let ApiJson(value) = ApiJson::<T>::from_request(request, state).await?;
        Ok(Self(Some(value)))
    }
}

impl<T: utoipa::ToSchema> Documented for MaybeJson<T> {
    fn document(operation: &mut OperationDoc<'_>) {
        operation.json_body::<T>(false);
        document_body(operation);
    }
}

/// Query-string parameters whose rejections use the error envelope.
#[derive(Debug, Clone, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::bad_query(detail.to_owned())
            })
    }
}

impl<T: utoipa::IntoParams> Documented for ApiQuery<T> {
    fn document(operation: &mut OperationDoc<'_>) {
        for parameter in T::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query)) {
            operation.parameter(parameter);
        }
        operation.respond(Shared::BadRequest);
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(error) => ApiError::internal(format!("response serialisation failed: {error}"))
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "fields exist to be deserialised")]
    struct Login {
        username: String,
        password: String,
    }

    #[test]
    fn wrong_types_name_the_field() {
        let error = parse::<Login>(br#"{"username": 5, "password": "x"}"#).unwrap_err();
        assert_eq!(error.code(), "validation_failed");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn syntax_errors_and_trailing_garbage_are_malformed_json() {
        assert_eq!(
            parse::<Login>(b"{\"username\": ").unwrap_err().code(),
            "malformed_json"
        );
        assert_eq!(
            parse::<Login>(br#"{"username":"a","password":"b"} x"#)
                .unwrap_err()
                .code(),
            "malformed_json"
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_validation_errors() {
        assert_eq!(
            parse::<Login>(br#"{"username":"a","password":"b","admin":true}"#)
                .unwrap_err()
                .code(),
            "validation_failed"
        );
        assert_eq!(
            parse::<Login>(br#"{"username":"a"}"#).unwrap_err().code(),
            "validation_failed"
        );
    }
}
