//! The request's parts as typed extractors, so a handler's policy is visible in its signature:
//! a handler that takes [`CurrentUser`] can only run for an authenticated caller, one that takes
//! [`ApiPath<CredentialId>`](ApiPath) only with a well-formed credential id. Each extractor also
//! says what it adds to the OpenAPI document ([`Documented`]).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use koryphaios_core::api_keys::{ApiKeyAuthError, ApiKeyAuthOutcome, ApiKeyService};
use koryphaios_core::audit::RequestContext;
use koryphaios_core::ids::InvalidId;
use koryphaios_core::tokens::{TokenAuthError, TokenAuthOutcome, TokenService};
use koryphaios_core::{ApiKeyId, CredentialId, Principal, TokenId, UserId};
use utoipa::openapi::Required;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::contract::{Documented, OperationDoc, Shared};
use super::error::{ApiError, invalid_id};
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

/// The longest `X-API-Key` value looked at (a key or token is 53 characters).
const MAX_API_KEY_HEADER: usize = 256;

fn token_error(outcome: TokenAuthOutcome) -> ApiError {
    match outcome {
        TokenAuthOutcome::Denied(TokenAuthError::Expired) => {
            ApiError::unauthenticated("token_expired", "Agent token expired")
        }
        TokenAuthOutcome::Denied(TokenAuthError::Revoked) => ApiError::unauthenticated(
            "token_revoked",
            "Agent token revoked (or the key or session that minted it ended)",
        ),
        TokenAuthOutcome::Denied(TokenAuthError::Exhausted) => {
            ApiError::unauthenticated("token_exhausted", "Agent token has no uses left")
        }
        TokenAuthOutcome::Denied(TokenAuthError::IpNotAllowed) => ApiError::ip_not_allowed(),
        TokenAuthOutcome::Denied(TokenAuthError::OwnerDisabled) => ApiError::user_disabled(),
        TokenAuthOutcome::Denied(TokenAuthError::Malformed | TokenAuthError::NotFound) => {
            ApiError::unauthenticated("invalid_token", "Invalid agent token")
        }
        TokenAuthOutcome::Store(error) => error.into(),
    }
}

/// The `result` label of `agent_token_validations_total` for a token's outcome.
fn token_validation_label(outcome: &Result<Principal, TokenAuthOutcome>) -> &'static str {
    match outcome {
        Ok(_) => "valid",
        Err(TokenAuthOutcome::Denied(reason)) => match reason {
            TokenAuthError::Malformed => "malformed",
            TokenAuthError::NotFound => "not_found",
            TokenAuthError::Expired => "expired",
            TokenAuthError::Revoked => "revoked",
            TokenAuthError::Exhausted => "exhausted",
            TokenAuthError::IpNotAllowed => "ip_not_allowed",
            TokenAuthError::OwnerDisabled => "owner_disabled",
        },
        Err(TokenAuthOutcome::Store(_)) => "error",
    }
}

fn api_key_error(outcome: ApiKeyAuthOutcome) -> ApiError {
    match outcome {
        ApiKeyAuthOutcome::Denied(ApiKeyAuthError::Expired) => {
            ApiError::unauthenticated("api_key_expired", "API key expired")
        }
        ApiKeyAuthOutcome::Denied(ApiKeyAuthError::Revoked) => {
            ApiError::unauthenticated("api_key_revoked", "API key revoked")
        }
        ApiKeyAuthOutcome::Denied(ApiKeyAuthError::OwnerDisabled) => ApiError::user_disabled(),
        ApiKeyAuthOutcome::Denied(ApiKeyAuthError::IpNotAllowed) => ApiError::ip_not_allowed(),
        ApiKeyAuthOutcome::Denied(_) => {
            ApiError::unauthenticated("invalid_api_key", "Invalid API key")
        }
        ApiKeyAuthOutcome::Store(error) => error.into(),
    }
}

/// The client's address for a request: as the `client_ip` middleware resolved it (trusted
/// proxies honoured), else the peer's.
pub fn client_address(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<ClientIp>()
        .map(|ClientIp(ip)| *ip)
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip())
        })
}

/// Authenticates a request by its headers: `X-API-Key`, or `Authorization: Bearer` with an API
/// key (`kor_…`), an agent token (`kat_…`) or a session JWT; keys and tokens are checked against
/// their networks with the client's address from `extensions`. `Ok(None)` when it carries no
/// credentials at all.
pub async fn authenticate_headers(
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
    state: &AppState,
) -> Result<Option<Principal>, ApiError> {
    let client_ip = client_address(extensions);
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
        (None, Some(token))
            if ApiKeyService::looks_like_key(token) || TokenService::looks_like_token(token) =>
        {
            Some(token)
        }
        _ => None,
    };
    if let Some(token) = presented_key.filter(|key| TokenService::looks_like_token(key)) {
        let outcome = state
            .tokens
            .authenticate(token, client_ip, || request_context(headers, extensions))
            .await;
        crate::metrics::token_validation(token_validation_label(&outcome));
        crate::metrics::auth_attempt("token", outcome.is_ok());
        return outcome.map(Some).map_err(token_error);
    }
    if let Some(key) = presented_key {
        let outcome = state.api_keys.authenticate(key, client_ip).await;
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
        ApiKeyAuthError::IpNotAllowed => "ip_not_allowed",
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
        let principal = authenticate_headers(&parts.headers, &parts.extensions, state)
            .await?
            .ok_or_else(|| {
                ApiError::unauthenticated("unauthenticated", "Authentication required")
            })?;
        parts.extensions.insert(principal.clone());
        Ok(Self(principal))
    }
}

impl Documented for CurrentUser {
    fn document(operation: &mut OperationDoc<'_>) {
        operation.authenticated();
        operation.respond(Shared::Unauthenticated);
        // A key whose owner is disabled (`user_disabled`), a missing scope, a key where a
        // session is needed: every authenticated route can refuse.
        operation.respond(Shared::Forbidden);
    }
}

/// An id type that can name a resource in a path (`/credentials/{id}`).
pub trait PathId: Sized {
    /// The prefix every id of the type starts with.
    const PREFIX: &'static str;
    /// What the id names, for the parameter's description.
    const NAMES: &'static str;
    /// Parses the raw path segment.
    fn parse_path(raw: &str) -> Result<Self, InvalidId>;
    /// The pattern of the text [`PathId::parse_path`] accepts.
    fn pattern() -> String;
}

macro_rules! path_id {
    ($id:ty, $names:literal) => {
        impl PathId for $id {
            const PREFIX: &'static str = <$id>::PREFIX;
            const NAMES: &'static str = $names;
            fn parse_path(raw: &str) -> Result<Self, InvalidId> {
                <$id>::parse(raw)
            }
            fn pattern() -> String {
                <$id>::pattern()
            }
        }
    };
}

path_id!(CredentialId, "credential");
path_id!(ApiKeyId, "API key");
path_id!(UserId, "user");
path_id!(TokenId, "agent token");

/// The `{id}` path parameter as a typed id: a malformed one is refused with 400 `invalid_id`
/// before the handler runs, and the OpenAPI document gives its pattern.
#[derive(Debug, Clone)]
pub struct ApiPath<I>(pub I);

/// The name of the path parameter every id route uses.
const ID_PARAMETER: &str = "id";

impl<I: PathId, S: Send + Sync> FromRequestParts<S> for ApiPath<I> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let invalid = || invalid_id(ID_PARAMETER, I::PREFIX);
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| invalid())?;
        I::parse_path(&raw).map(Self).map_err(|_| invalid())
    }
}

impl<I: PathId> Documented for ApiPath<I> {
    fn document(operation: &mut OperationDoc<'_>) {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(I::pattern()))
            .examples([format!("{}0192f0c1d2e37a4b8c9d0e1f2a3b4c5d", I::PREFIX)]);
        operation.parameter(
            ParameterBuilder::new()
                .name(ID_PARAMETER)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(format!(
                    "The {} id: `{}` and 32 lowercase hex digits",
                    I::NAMES,
                    I::PREFIX
                )))
                .schema(Some(schema))
                .build(),
        );
        operation.respond(Shared::BadRequest);
        operation.respond(Shared::NotFound);
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

impl Documented for ClientIp {
    fn document(_: &mut OperationDoc<'_>) {}
}

/// The longest user agent kept in audit records.
const MAX_USER_AGENT: usize = 256;

/// Where the request came from, for audit records.
#[derive(Debug, Clone)]
pub struct RequestMeta(pub RequestContext);

/// A request's audit context: the client's address, its user agent (truncated), the request id.
pub fn request_context(headers: &HeaderMap, extensions: &axum::http::Extensions) -> RequestContext {
    RequestContext {
        client_ip: client_address(extensions).map(|ip| ip.to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|agent| agent.chars().take(MAX_USER_AGENT).collect()),
        request_id: extensions.get::<RequestId>().map(|id| id.0.clone()),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(request_context(&parts.headers, &parts.extensions)))
    }
}

impl Documented for RequestMeta {
    fn document(_: &mut OperationDoc<'_>) {}
}
