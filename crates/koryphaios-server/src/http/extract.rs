//! Authentication as an extractor: a handler that takes [`CurrentUser`] can only run for an
//! authenticated caller, so the policy is visible in its signature.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use koryphaios_core::Principal;

use super::error::ApiError;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Principal);

/// The bearer token of `Authorization: Bearer <token>`, if any.
fn bearer_token(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
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

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(Self(principal.clone()));
        }
        let token = bearer_token(parts)?.ok_or_else(|| {
            ApiError::unauthenticated("unauthenticated", "Authentication required")
        })?;
        let principal = state.auth.authenticate(token).await?;
        parts.extensions.insert(principal.clone());
        Ok(Self(principal))
    }
}
