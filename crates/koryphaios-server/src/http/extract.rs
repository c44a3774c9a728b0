//! Authentication as an extractor: a handler that takes [`CurrentUser`] can only run for an
//! authenticated caller, so the policy is visible in its signature.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use koryphaios_core::Principal;
use koryphaios_core::api_keys::{ApiKeyAuthError, ApiKeyAuthOutcome, ApiKeyService};
use koryphaios_core::audit::RequestContext;

use super::error::ApiError;
use super::middleware::request_context::RequestId;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Principal);

/// The bearer token of `Authorization: Bearer <token>`, if any.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        ApiError::unauthenticated(
            "invalid_authorization",
            "Expected Authorization: Bearer <token>",
        )
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(malformed());
    }
    Ok(Some(token.trim()))
}

/// The longest `X-API-Key` value looked at (a key is 53 characters).
const MAX_API_KEY_HEADER: usize = 256;

fn api_key_error(outcome: ApiKeyAuthOutcome) -> ApiError {
    match outcome {
        ApiKeyAuthOutcome::Denied(ApiKeyAuthError::Expired) => {
            ApiError::unauthenticated("api_key_expired", "API key expired")
        }
        ApiKeyAuthOutcome::Denied(ApiKeyAuthError::Revoked) => {
            ApiError::unauthenticated("api_key_revoked", "API key revoked")
        }
        ApiKeyAuthOutcome::Denied(ApiKeyAuthError::OwnerDisabled) => ApiError::user_disabled(),
        ApiKeyAuthOutcome::Denied(_) => {
            ApiError::unauthenticated("invalid_api_key", "Invalid API key")
        }
        ApiKeyAuthOutcome::Store(error) => error.into(),
    }
}

/// Authenticates a request by its headers: `X-API-Key`, or `Authorization: Bearer` with an API
/// key (`kor_…`) or a session JWT. `Ok(None)` when it carries no credentials at all.
pub async fn authenticate_headers(
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Option<Principal>, ApiError> {
    let api_key_header = headers.get("x-api-key").map(|value| {
        value
            .to_str()
            .ok()
            .filter(|key| key.len() <= MAX_API_KEY_HEADER)
            .unwrap_or_default()
            .to_owned()
    });
    let bearer = bearer_token(headers)?;
    let presented_key = match (&api_key_header, bearer) {
        (Some(key), _) => Some(key.as_str()),
        (None, Some(token)) if ApiKeyService::looks_like_key(token) => Some(token),
        _ => None,
    };
    if let Some(key) = presented_key {
        let outcome = state.api_keys.authenticate(key).await;
        crate::metrics::api_key_validation(match &outcome {
            Ok(_) => "valid",
            Err(ApiKeyAuthOutcome::Denied(reason)) => validation_label(*reason),
            Err(ApiKeyAuthOutcome::Store(_)) => "error",
        });
        crate::metrics::auth_attempt("api_key", outcome.is_ok());
        return outcome.map(Some).map_err(api_key_error);
    }
    match bearer {
        Some(token) => {
            let outcome = state.auth.authenticate(token).await;
            crate::metrics::auth_attempt("jwt", outcome.is_ok());
            Ok(Some(outcome?))
        }
        None => Ok(None),
    }
}

/// The `result` label of `api_key_validations_total` for a refusal.
pub fn validation_label(reason: ApiKeyAuthError) -> &'static str {
    match reason {
        ApiKeyAuthError::Malformed => "malformed",
        ApiKeyAuthError::NotFound => "not_found",
        ApiKeyAuthError::Expired => "expired",
        ApiKeyAuthError::Revoked => "revoked",
        ApiKeyAuthError::OwnerDisabled => "owner_disabled",
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The rate-limit middleware may have authenticated the request already.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(Self(principal.clone()));
        }
        let principal = authenticate_headers(&parts.headers, state)
            .await?
            .ok_or_else(|| {
                ApiError::unauthenticated("unauthenticated", "Authentication required")
            })?;
        parts.extensions.insert(principal.clone());
        Ok(Self(principal))
    }
}

/// The client's address as resolved by the `client_ip` middleware (trusted proxies honoured);
/// as an extractor, the peer's address when the middleware did not run.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .unwrap_or_else(|| {
                Self(
                    parts
                        .extensions
                        .get::<ConnectInfo<SocketAddr>>()
                        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |ConnectInfo(a)| {
                            a.ip()
                        }),
                )
            }))
    }
}

/// The longest user agent kept in audit records.
const MAX_USER_AGENT: usize = 256;

/// Where the request came from, for audit records.
#[derive(Debug, Clone)]
pub struct RequestMeta(pub RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let client_ip = parts
            .extensions
            .get::<ClientIp>()
            .map(|ClientIp(ip)| ip.to_string())
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(address)| address.ip().to_string())
            });
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|agent| agent.chars().take(MAX_USER_AGENT).collect());
        let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone());
        Ok(Self(RequestContext {
            client_ip,
            user_agent,
            request_id,
        }))
    }
}
