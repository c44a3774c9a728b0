//! The one HTTP error type, and the only place that knows status codes.
//!
//! Handlers and extractors return [`ApiError`]. Its response carries an [`ErrorReport`] in the
//! response extensions and no body yet: the `error_envelope` middleware renders the JSON body
//! with the request id and logs internal detail once. Responses produced outside handlers
//! (unknown route, 405, 413 from the body limit, timeouts) get the same body from their status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use koryphaios_core::api_keys::ApiKeyError;
use koryphaios_core::audit::service::AuditError;
use koryphaios_core::credentials::CredentialError;
use koryphaios_core::session::AuthError;
use koryphaios_core::store::StoreError;
use koryphaios_core::tokens::TokenError;
use koryphaios_core::users::UserAdminError;
use koryphaios_core::validation::{FieldError, ValidationErrors};
use serde::Serialize;
use utoipa::ToSchema;

/// The JSON body of every error response (SPEC §2.4).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// A human summary.
    #[schema(example = "Validation failed")]
    pub error: String,
    /// A stable, machine-readable code.
    #[schema(example = "validation_failed")]
    pub code: String,
    /// Per-field problems, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldDetail>>,
    /// Seconds until a retry can succeed (429, and 503 while starting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The request's id, as in the `X-Request-Id` header.
    pub request_id: String,
}

/// One field's problem.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldDetail {
    /// The field, as the client named it.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl From<FieldError> for FieldDetail {
    fn from(error: FieldError) -> Self {
        Self {
            field: error.field,
            message: error.message,
        }
    }
}

/// What the envelope middleware needs to render and log an error.
#[derive(Debug, Clone)]
pub struct ErrorReport {
    /// The client-facing summary.
    pub message: String,
    /// The stable code.
    pub code: &'static str,
    /// Field problems.
    pub details: Option<Vec<FieldDetail>>,
    /// Detail for the operator's log only (never serialised).
    pub internal: Option<String>,
    /// Seconds until a retry can succeed (429, and 503 while starting).
    pub retry_after: Option<u64>,
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    report: ErrorReport,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            report: ErrorReport {
                message: message.into(),
                code,
                details: None,
                internal: None,
                retry_after: None,
            },
        }
    }

    /// 400 with per-field details.
    pub fn validation(errors: Vec<FieldDetail>) -> Self {
        let mut error = Self::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "Validation failed",
        );
        error.report.details = Some(errors);
        error
    }

    /// 400 for a body that is not JSON.
    pub fn malformed_json(detail: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "The request body is not valid JSON",
        );
        error.report.details = Some(vec![FieldDetail {
            field: "body".into(),
            message: detail.into(),
        }]);
        error
    }

    /// 400 for a query string that does not parse.
    pub fn bad_query(detail: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "The query string is invalid",
        );
        error.report.details = Some(vec![FieldDetail {
            field: "query".into(),
            message: detail.into(),
        }]);
        error
    }

    /// 403 for a caller without `scope`.
    pub fn missing_scope(scope: &koryphaios_core::Scope) -> Self {
        let mut denied = Self::forbidden("insufficient_scope", "This caller may not do that");
        denied.report.message = format!("Missing scope {scope}");
        denied
    }

    /// 401 with a code saying why.
    pub fn unauthenticated(code: &'static str, message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403.
    pub fn forbidden(code: &'static str, message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 403 for an agent token that tried to mint or manage tokens or keys.
    pub fn token_cannot_mint() -> Self {
        Self::forbidden(
            "token_cannot_mint",
            "An agent token cannot create or manage tokens or API keys; use the key or session that minted it",
        )
    }

    /// 403 for a key or token used from outside its `allowedCidrs`.
    pub fn ip_not_allowed() -> Self {
        Self::forbidden(
            "ip_not_allowed",
            "This credential may not be used from your network address",
        )
    }

    /// 403 for a caller whose user an admin disabled (login, session or key).
    pub fn user_disabled() -> Self {
        Self::forbidden("user_disabled", "This user is disabled")
    }

    /// 404: also what another user's resource looks like.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found")
    }

    /// 409.
    pub fn conflict(code: &'static str, message: &str) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 413.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "The request body exceeds 10 KB",
        )
    }

    /// 415.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Expected a body with Content-Type: application/json",
        )
    }

    /// 429 with the seconds until a retry can succeed.
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too Many Requests",
        );
        error.report.retry_after = Some(retry_after);
        error
    }

    /// 500: the client sees a generic text; `detail` goes to the log.
    pub fn internal(detail: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal server error",
        );
        error.report.internal = Some(detail.into());
        error
    }

    /// 503: a dependency is down; `detail` goes to the log.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service temporarily unavailable",
        );
        error.report.internal = Some(detail.into());
        error
    }

    /// 502: the provider behind the credential proxy could not be reached; `detail` goes to the log.
    pub fn upstream_unavailable(detail: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            "The provider could not be reached",
        );
        error.report.internal = Some(detail.into());
        error
    }

    /// 504: the provider behind the credential proxy did not answer in time.
    pub fn upstream_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "The provider did not answer in time",
        )
    }

    /// Tells the client when to try again (`Retry-After`).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.report.retry_after = Some(seconds);
        self
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.report.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(self.report);
        response
    }
}

/// The report for a response that reached the envelope middleware without one.
pub fn report_for_status(status: StatusCode) -> ErrorReport {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "Method not allowed on this route")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "The request body exceeds 10 KB"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "Unsupported media type"),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            ("service_unavailable", "Service temporarily unavailable")
        }
        StatusCode::UNAUTHORIZED => ("unauthenticated", "Authentication required"),
        StatusCode::BAD_GATEWAY => ("upstream_unavailable", "The provider could not be reached"),
        StatusCode::GATEWAY_TIMEOUT => ("upstream_timeout", "The provider did not answer in time"),
        StatusCode::FORBIDDEN => ("forbidden", "Forbidden"),
        status if status.is_client_error() => ("bad_request", "Bad request"),
        _ => ("internal_error", "Internal server error"),
    };
    ErrorReport {
        message: message.into(),
        code,
        details: None,
        internal: None,
        retry_after: None,
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        Self::validation(errors.0.into_iter().map(FieldDetail::from).collect())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(detail) => Self::unavailable(detail),
            StoreError::Internal(detail) => Self::internal(detail),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Validation(errors) => errors.into(),
            AuthError::InvalidCredentials => {
                Self::unauthenticated("invalid_credentials", "Invalid username or password")
            }
            AuthError::RegistrationClosed => {
                Self::forbidden("registration_closed", "Registration is closed")
            }
            AuthError::UsernameTaken => Self::conflict("username_taken", "That username is taken"),
            AuthError::InvalidToken => {
                Self::unauthenticated("invalid_token", "Invalid access token")
            }
            AuthError::TokenExpired => {
                Self::unauthenticated("token_expired", "Access token expired")
            }
            AuthError::TokenRevoked => {
                Self::unauthenticated("token_revoked", "Access token revoked")
            }
            AuthError::InvalidRefreshToken => {
                Self::unauthenticated("invalid_refresh_token", "Invalid or expired refresh token")
            }
            AuthError::RefreshTokenReused => Self::unauthenticated(
                "refresh_token_reused",
                "Refresh token already used; the session has been revoked",
            ),
            AuthError::UserDisabled => Self::user_disabled(),
            AuthError::Busy => Self::unavailable("password hashing slots exhausted"),
            AuthError::NotASession => Self::new(
                StatusCode::FORBIDDEN,
                "not_a_session",
                "This needs a user session, not an API key",
            ),
            AuthError::Store(store) => store.into(),
            AuthError::Internal(detail) => Self::internal(detail),
        }
    }
}

impl From<CredentialError> for ApiError {
    fn from(error: CredentialError) -> Self {
        match error {
            CredentialError::Validation(errors) => errors.into(),
            CredentialError::NotFound => Self::not_found(),
            CredentialError::Forbidden(scope) => Self::missing_scope(&scope),
            CredentialError::CredentialNotAllowed => Self::forbidden(
                "credential_not_allowed",
                "This agent token may use only the credentials it was minted for",
            ),
            CredentialError::Conflict => {
                Self::conflict("conflict", "The credential changed concurrently; retry")
            }
            CredentialError::Unreadable => {
                let mut error = Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "credential_unreadable",
                    "The stored credential failed its integrity check",
                );
                error.report.internal = Some(
                    "sealed credential or wrapped key did not authenticate for its row".into(),
                );
                error
            }
            CredentialError::KmsUnavailable(detail) => Self::unavailable(detail),
            CredentialError::Store(store) => store.into(),
            CredentialError::Internal(detail) => Self::internal(detail),
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(error: AuditError) -> Self {
        match error {
            AuditError::Forbidden(scope) => Self::missing_scope(&scope),
            AuditError::Store(store) => store.into(),
        }
    }
}

impl From<ApiKeyError> for ApiError {
    fn from(error: ApiKeyError) -> Self {
        match error {
            ApiKeyError::Validation(errors) => errors.into(),
            ApiKeyError::NotFound => Self::not_found(),
            ApiKeyError::Forbidden(scope) => Self::missing_scope(&scope),
            ApiKeyError::TierNotAllowed(_) => Self::forbidden(
                "tier_not_allowed",
                "The rate-limit tier may not exceed the owner's tier, nor the calling key's own",
            ),
            ApiKeyError::ParentGone => Self::unauthenticated("api_key_revoked", "API key revoked"),
            ApiKeyError::TokenCannotMint => Self::token_cannot_mint(),
            ApiKeyError::PolicyNotAllowed => Self::forbidden(
                "policy_not_allowed",
                "A key held to allowedCidrs or a rateLimit may manage only keys held at least as tightly",
            ),
            ApiKeyError::Store(store) => store.into(),
            ApiKeyError::Internal(detail) => Self::internal(detail),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Validation(errors) => errors.into(),
            TokenError::NotFound => Self::not_found(),
            TokenError::Forbidden(scope) => Self::missing_scope(&scope),
            TokenError::TokenCannotMint => Self::token_cannot_mint(),
            TokenError::ParentGone => Self::unauthenticated(
                "unauthenticated",
                "The calling key or session ended; authenticate again",
            ),
            TokenError::TooMany => Self::conflict(
                "too_many_tokens",
                "This user holds the most live agent tokens allowed; revoke some or let them expire",
            ),
            TokenError::Store(store) => store.into(),
            TokenError::Internal(detail) => Self::internal(detail),
        }
    }
}

impl From<UserAdminError> for ApiError {
    fn from(error: UserAdminError) -> Self {
        match error {
            UserAdminError::Validation(errors) => errors.into(),
            UserAdminError::NotFound => Self::not_found(),
            UserAdminError::Forbidden(scope) => Self::missing_scope(&scope),
            UserAdminError::CannotDisableSelf => Self::conflict(
                "cannot_disable_self",
                "An admin cannot disable their own account",
            ),
            UserAdminError::LastAdmin => Self::conflict(
                "last_admin",
                "The install must keep at least one admin who is not disabled",
            ),
            UserAdminError::Conflict => {
                Self::conflict("conflict", "The user changed concurrently; retry")
            }
            UserAdminError::Store(store) => store.into(),
        }
    }
}

impl From<crate::proxy::ProxyError> for ApiError {
    fn from(error: crate::proxy::ProxyError) -> Self {
        use crate::proxy::ProxyError;
        match error {
            ProxyError::UnknownProvider => Self::not_found(),
            ProxyError::Path(problem) => Self::validation(vec![FieldDetail {
                field: "path".into(),
                message: problem.into(),
            }]),
            ProxyError::CredentialHeader => invalid_id("X-Koryphaios-Credential", "cred_"),
            ProxyError::TooLarge => {
                let mut error = Self::payload_too_large();
                error.report.message = "The request body exceeds the proxy's limit".into();
                error
            }
            ProxyError::Credential(error) => error.into(),
            ProxyError::UnusableSecret(error) => Self::internal(error.to_string()),
            ProxyError::Unavailable(detail) => Self::upstream_unavailable(detail),
            ProxyError::Timeout => Self::upstream_timeout(),
            ProxyError::TooManyConcurrent(full) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_concurrent_calls",
                match full {
                    crate::proxy::limits::Full::User => {
                        "Too many of your proxied calls are in flight; retry when one ends"
                    }
                    crate::proxy::limits::Full::Global => {
                        "Too many proxied calls are in flight; retry shortly"
                    }
                },
            )
            .retry_after(1),
        }
    }
}

/// 400 for a path id that is not an id of the expected type.
pub fn invalid_id(field: &str, expected_prefix: &str) -> ApiError {
    let mut error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", "Malformed id");
    error.report.details = Some(vec![FieldDetail {
        field: field.to_owned(),
        message: format!("expected an id starting with {expected_prefix}"),
    }]);
    error
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;
