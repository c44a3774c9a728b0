//! `/api/v1/tokens`: mint, list and revoke short-lived agent tokens (ADR 0018). A token's secret
//! appears only in the mint response.

use axum::extract::State;
use axum::http::StatusCode;
use koryphaios_core::TokenId;
use koryphaios_core::pagination::PageRequest;
use koryphaios_core::tokens::{AgentToken, NewTokenInput, TokenParent};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::http::bounds;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiPath, CurrentUser, RequestMeta};
use crate::http::json::{ApiJson, ApiQuery};
use crate::state::AppState;

/// `POST /api/v1/tokens` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTokenRequest {
    /// How long the token lives: 1–86400 seconds, cut to the caller's own expiry.
    #[schema(schema_with = bounds::ttl_seconds)]
    pub ttl_seconds: i64,
    /// A subset of the caller's scopes (default: all of them).
    #[schema(schema_with = bounds::scopes)]
    pub scopes: Option<Vec<String>>,
    /// The only credentials the token may reveal or use through the proxy.
    #[schema(schema_with = bounds::credential_ids)]
    pub credential_ids: Option<Vec<String>>,
    /// How many authenticated requests it may make.
    #[schema(schema_with = bounds::max_uses)]
    pub max_uses: Option<i64>,
    /// Where it may be used from (a key's token stays within the key's networks).
    #[schema(schema_with = bounds::cidrs)]
    pub allowed_cidrs: Option<Vec<String>>,
    /// The agent run it belongs to.
    #[schema(schema_with = bounds::run_id)]
    pub run_id: Option<String>,
    /// A name (1–100 characters: letters, digits, `_`, `-`, space).
    #[schema(schema_with = bounds::optional_key_name)]
    pub name: Option<String>,
}

/// A token's metadata (never its secret).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    /// The id (`tok_…`).
    pub id: String,
    /// `kat_` + the first 8 characters of the secret.
    pub prefix: String,
    /// The name, if given.
    pub name: Option<String>,
    /// What it may do.
    pub scopes: Vec<String>,
    /// Its rate-limit tier (its creator's).
    pub rate_limit_tier: &'static str,
    /// The only credentials it may use (`null`: all the user's).
    pub credential_ids: Option<Vec<String>>,
    /// How many requests it may make (`null`: no limit).
    pub max_uses: Option<u32>,
    /// Where it may be used from (empty: anywhere).
    pub allowed_cidrs: Vec<String>,
    /// The agent run it belongs to.
    pub run_id: Option<String>,
    /// The API key that minted it (absent when a session did).
    pub parent_key_id: Option<String>,
    /// When it was minted.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

impl From<AgentToken> for TokenView {
    fn from(token: AgentToken) -> Self {
        Self {
            id: token.id.to_string(),
            prefix: token.prefix,
            name: token.name,
            scopes: token.scopes.iter().map(ToString::to_string).collect(),
            rate_limit_tier: token.tier.as_str(),
            credential_ids: token
                .credential_ids
                .map(|ids| ids.iter().map(ToString::to_string).collect()),
            max_uses: token.max_uses,
            allowed_cidrs: token.allowed_networks.to_strings(),
            run_id: token.run_id,
            parent_key_id: match token.parent {
                TokenParent::ApiKey(key) => Some(key.to_string()),
                TokenParent::Session(_) => None,
            },
            created_at: token.created_at,
            expires_at: token.expires_at,
        }
    }
}

/// A new token with its secret: the only time the secret is shown (never in `Debug`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    /// The secret (`kat_…`): hand it to the agent run; it is never shown again.
    pub token: String,
    /// The token's metadata.
    #[serde(flatten)]
    pub view: TokenView,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"[REDACTED]")
            .field("view", &self.view)
            .finish()
    }
}

/// Paging for `GET /api/v1/tokens`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListTokensQuery {
    /// 1–1000, default 100.
    #[param(schema_with = bounds::limit)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /api/v1/tokens` response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenList {
    /// The caller's live tokens, newest first.
    pub tokens: Vec<TokenView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Mints an agent token for the caller (an API key or a session; a token cannot mint). Its scopes
/// may not exceed the caller's; it dies with the key or session that minted it.
#[utoipa::path(post, path = "/tokens", tag = "tokens",
    responses(
        (status = 201, description = "Minted; the secret is in `token` and never shown again", body = IssuedToken),
        (status = 403, description = "Asking for a scope the caller lacks, or the caller is a token (`token_cannot_mint`)", body = ErrorBody),
        (status = 409, description = "The user holds the most live tokens allowed (`too_many_tokens`)", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiJson(body): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, ApiJson<IssuedToken>)> {
    let input = NewTokenInput {
        ttl_seconds: body.ttl_seconds,
        scopes: body.scopes,
        credential_ids: body.credential_ids,
        max_uses: body.max_uses,
        allowed_cidrs: body.allowed_cidrs,
        run_id: body.run_id,
        name: body.name,
    };
    let (token, secret): (AgentToken, SecretString) =
        state.tokens.create(&principal, &context, input).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(IssuedToken {
            token: secret.expose_secret().to_owned(),
            view: token.into(),
        }),
    ))
}

/// The caller's live tokens (expired and revoked ones are never listed; a token sees only itself).
#[utoipa::path(get, path = "/tokens", tag = "tokens",
    responses(
        (status = 200, description = "A page of the caller's live tokens, newest first", body = TokenList),
        (status = 400, description = "Invalid limit or cursor", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    ApiQuery(query): ApiQuery<ListTokensQuery>,
) -> ApiResult<ApiJson<TokenList>> {
    let page = PageRequest::from_params(query.limit, query.cursor.as_deref(), TokenId::parse)?;
    let tokens = state.tokens.list(&principal, &page).await?;
    Ok(ApiJson(TokenList {
        next_cursor: tokens.next.map(|after| after.to_cursor()),
        tokens: tokens.items.into_iter().map(TokenView::from).collect(),
    }))
}

/// Revokes a token at once on this instance, within a second on every other. A caller may revoke
/// tokens within its own scopes; a token may revoke only itself.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens",
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such live token for this caller", body = ErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<TokenId>,
) -> ApiResult<StatusCode> {
    state.tokens.revoke(&principal, &context, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
