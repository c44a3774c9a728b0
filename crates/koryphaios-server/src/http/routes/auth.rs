//! `/api/auth/*`: register, login, refresh, logout, logout-all, me, change password.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use koryphaios_core::session::{AuthError, SessionTokens};
use koryphaios_core::users::User;
use koryphaios_core::{AuthMethod, Principal};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::http::bounds;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ClientIp, CurrentUser, RequestMeta};
use crate::http::json::ApiJson;
use crate::http::middleware::rate_limit;
use crate::state::AppState;

/// `POST /api/auth/register` and `POST /api/auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsRequest {
    /// 3–64 characters: letters, digits, `_`, `-`, `.`.
    #[schema(schema_with = bounds::username)]
    pub username: String,
    /// 12–128 characters, at least 5 different ones, not containing the username.
    #[schema(schema_with = bounds::password)]
    pub password: SecretString,
}

/// `POST /api/auth/refresh` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RefreshRequest {
    /// The refresh token from login or the previous refresh.
    #[schema(value_type = String, max_length = 128)]
    pub refresh_token: SecretString,
}

/// `POST /api/auth/password` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChangePasswordRequest {
    /// The password in use now.
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    /// The new password (same rules as at registration).
    #[schema(schema_with = bounds::password)]
    pub new_password: SecretString,
}

/// A user as clients see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    /// The user's id.
    #[schema(example = "usr_0192f0c1d2e37a4b8c9d0e1f2a3b4c5d")]
    pub id: String,
    /// The login name.
    pub username: String,
    /// `admin` or `user`.
    #[schema(example = "user")]
    pub role: String,
    /// The rate-limit tier all the user's sessions and keys share.
    #[schema(example = "free")]
    pub tier: &'static str,
    /// When the user registered.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        Self {
            id: user.id.to_string(),
            username: user.username.clone(),
            role: user.role.as_str().to_owned(),
            tier: user.tier.as_str(),
            created_at: user.created_at,
        }
    }
}

/// `POST /api/auth/register` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterResponse {
    /// The new user.
    pub user: UserView,
}

/// Login, refresh and password-change response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionResponse {
    /// The JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// The single-use token for `/api/auth/refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: i64,
    /// Who logged in.
    pub user: UserView,
}

impl From<SessionTokens> for SessionResponse {
    fn from(tokens: SessionTokens) -> Self {
        Self {
            access_token: tokens.access_token.expose_secret().to_owned(),
            refresh_token: tokens.refresh_token.expose_secret().to_owned(),
            token_type: "Bearer",
            expires_in: tokens.expires_in,
            user: UserView::from(&tokens.user),
        }
    }
}

/// `GET /api/auth/me` response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeResponse {
    /// The caller's user.
    pub user_id: String,
    /// The caller's user name.
    pub username: String,
    /// The caller's role.
    pub role: String,
    /// The user's rate-limit tier (shared by all their sessions and keys).
    #[schema(example = "free")]
    pub tier: &'static str,
    /// How the caller authenticated: `session`, `api_key` or `token`.
    pub auth_method: &'static str,
    /// What the caller may do.
    pub scopes: Vec<String>,
    /// The API key's id, when the caller used one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The API key's (or agent token's) rate-limit tier, when the caller used one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_tier: Option<&'static str>,
    /// The agent token's id, when the caller used one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The agent token's run, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// When the session's access token (or the agent token) expires.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

impl From<&Principal> for MeResponse {
    fn from(principal: &Principal) -> Self {
        let (auth_method, key_id, rate_limit_tier, expires_at) = match &principal.method {
            AuthMethod::Session { expires_at, .. } => ("session", None, None, Some(*expires_at)),
            AuthMethod::ApiKey { key_id, tier, .. } => (
                "api_key",
                Some(key_id.to_string()),
                Some(tier.as_str()),
                None,
            ),
            AuthMethod::Token(grant) => (
                "token",
                None,
                Some(grant.tier.as_str()),
                Some(grant.expires_at),
            ),
        };
        let token = principal.token();
        Self {
            user_id: principal.user_id.to_string(),
            username: principal.username.clone(),
            role: principal.role.as_str().to_owned(),
            tier: principal.tier.as_str(),
            auth_method,
            scopes: principal.scopes.iter().map(ToString::to_string).collect(),
            key_id,
            rate_limit_tier,
            token_id: token.map(|grant| grant.token_id.to_string()),
            run_id: token.and_then(|grant| grant.run_id.clone()),
            expires_at,
        }
    }
}

/// Registers a user. The first user of an empty install becomes admin; afterwards registration
/// needs `KORYPHAIOS_ALLOW_REGISTRATION=true`.
#[utoipa::path(post, path = "/register", tag = "auth",
    responses(
        (status = 201, description = "Registered", body = RegisterResponse),
        (status = 403, description = "Registration is closed", body = ErrorBody),
        (status = 409, description = "Username taken", body = ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    RequestMeta(context): RequestMeta,
    ApiJson(body): ApiJson<CredentialsRequest>,
) -> ApiResult<(StatusCode, ApiJson<RegisterResponse>)> {
    let user = state
        .auth
        .register(&context, &body.username, &body.password)
        .await?;
    tracing::info!(user_id = %user.id, role = user.role.as_str(), "user registered");
    Ok((
        StatusCode::CREATED,
        ApiJson(RegisterResponse {
            user: UserView::from(&user),
        }),
    ))
}

/// Logs in with username and password.
#[utoipa::path(post, path = "/login", tag = "auth",
    responses(
        (status = 200, description = "Logged in", body = SessionResponse),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 403, description = "The user is disabled (`user_disabled`; said only after the right password)", body = ErrorBody),
        (status = 429, description = "Too many requests from this IP, or too many failed logins for this username", body = ErrorBody),
        (status = 503, description = "Password hashing is saturated; retry shortly", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    RequestMeta(context): RequestMeta,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<CredentialsRequest>,
) -> ApiResult<Response> {
    let outcome = password_guarded(&state, &body.username, ip, async {
        let outcome = state
            .auth
            .login(&context, &body.username, &body.password)
            .await;
        crate::metrics::auth_attempt("password", outcome.is_ok());
        outcome
    })
    .await;
    let tokens = match outcome {
        Ok(outcome) => outcome?,
        Err(refusal) => return Ok(refusal),
    };
    tracing::info!(user_id = %tokens.user.id, "login succeeded");
    Ok(ApiJson(SessionResponse::from(tokens)).into_response())
}

/// Runs a password check under the failed-password counters (ADR 0006): a slot is reserved before
/// the password is verified, so concurrent guesses cannot overrun the limit, and given back
/// unless the attempt spent it (see [`spends_attempt`]). `Err` is the 429 to answer when the
/// counters are full.
async fn password_guarded<T>(
    state: &AppState,
    username: &str,
    ip: std::net::IpAddr,
    attempt: impl Future<Output = Result<T, AuthError>>,
) -> Result<Result<T, AuthError>, Response> {
    let Some(limits) = &state.rate_limits else {
        return Ok(attempt.await);
    };
    let decision = limits.reserve_password_attempt(username, ip).await;
    crate::metrics::rate_limit("login_failure", "none", decision.allowed);
    if !decision.allowed {
        tracing::warn!("password check refused: too many failed attempts for this username");
        return Err(rate_limit::refusal(&decision));
    }
    let outcome = attempt.await;
    if !spends_attempt(&outcome) {
        limits.release_password_attempt(username, ip).await;
    }
    Ok(outcome)
}

/// Whether a password attempt keeps its failed-attempt slot: a wrong password does, and so does
/// an outcome that cannot tell (storage or internal failure, which may come after a wrong password
/// was seen, for instance when its audit record could not be written): failing closed costs a
/// real user one slot while the store is down, failing open would give a guesser free tries.
fn spends_attempt<T>(outcome: &Result<T, AuthError>) -> bool {
    matches!(
        outcome,
        Err(AuthError::InvalidCredentials | AuthError::Store(_) | AuthError::Internal(_))
    )
}

/// Exchanges a refresh token for a new access and refresh token. Presenting a spent refresh
/// token revokes the whole session.
#[utoipa::path(post, path = "/refresh", tag = "auth",
    responses(
        (status = 200, description = "New tokens", body = SessionResponse),
        (status = 401, description = "Invalid, expired or reused refresh token", body = ErrorBody),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    RequestMeta(context): RequestMeta,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<ApiJson<SessionResponse>> {
    let outcome = state.auth.refresh(&body.refresh_token, &context).await;
    crate::metrics::auth_attempt("refresh", outcome.is_ok());
    let tokens = outcome?;
    Ok(ApiJson(tokens.into()))
}

/// Ends the current session: this access token and its refresh token stop working.
#[utoipa::path(post, path = "/logout", tag = "auth", security(("bearerAuth" = [])),
    responses(
        (status = 204, description = "Logged out"),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    RequestMeta(context): RequestMeta,
    CurrentUser(principal): CurrentUser,
) -> ApiResult<StatusCode> {
    state.auth.logout(&principal, &context).await?;
    // The session's agent tokens die with it: at once here, within a second elsewhere.
    state.tokens.forget_owner(&principal.user_id);
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the current user.
#[utoipa::path(post, path = "/logout-all", tag = "auth",
    responses(
        (status = 204, description = "Every session ended"),
    ))]
pub async fn logout_all(
    State(state): State<AppState>,
    RequestMeta(context): RequestMeta,
    CurrentUser(principal): CurrentUser,
) -> ApiResult<StatusCode> {
    state.auth.logout_all(&principal, &context).await?;
    state.tokens.forget_owner(&principal.user_id);
    Ok(StatusCode::NO_CONTENT)
}

/// The current principal.
#[utoipa::path(get, path = "/me", tag = "auth",
    responses(
        (status = 200, description = "The caller", body = MeResponse),
    ))]
pub async fn me(CurrentUser(principal): CurrentUser) -> ApiJson<MeResponse> {
    ApiJson(MeResponse::from(&principal))
}

/// Changes the password. Every session ends; the response starts a new one for the caller.
#[utoipa::path(post, path = "/password", tag = "auth", security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Password changed; new tokens", body = SessionResponse),
        (status = 401, description = "Not authenticated or wrong current password", body = ErrorBody),
        (status = 429, description = "Too many requests from this IP, or too many wrong passwords for this user", body = ErrorBody),
        (status = 503, description = "Password hashing is saturated; retry shortly", body = ErrorBody),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    RequestMeta(context): RequestMeta,
    ClientIp(ip): ClientIp,
    CurrentUser(principal): CurrentUser,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> ApiResult<Response> {
    let outcome = password_guarded(
        &state,
        &principal.username,
        ip,
        state.auth.change_password(
            &principal,
            &context,
            &body.current_password,
            &body.new_password,
        ),
    )
    .await;
    let tokens = match outcome {
        Ok(outcome) => outcome?,
        Err(refusal) => return Ok(refusal),
    };
    tracing::info!(user_id = %principal.user_id, "password changed");
    // Every session ended, and with them their agent tokens.
    state.tokens.forget_owner(&principal.user_id);
    Ok(ApiJson(SessionResponse::from(tokens)).into_response())
}

#[cfg(test)]
mod tests {
    use koryphaios_core::store::StoreError;

    use super::*;

    #[test]
    fn a_wrong_password_or_an_unknown_outcome_keeps_its_slot() {
        let spent = |error: AuthError| spends_attempt::<()>(&Err(error));
        assert!(spent(AuthError::InvalidCredentials));
        // A wrong password whose audit record failed surfaces as a store error: still counted.
        assert!(spent(AuthError::Store(StoreError::Unavailable(
            "down".into()
        ))));
        assert!(spent(AuthError::Internal("hash".into())));
        assert!(!spends_attempt::<()>(&Ok(())));
        assert!(
            !spent(AuthError::Busy),
            "a flood's busy answers cost nobody"
        );
        assert!(!spent(AuthError::UserDisabled), "the password was right");
    }
}
