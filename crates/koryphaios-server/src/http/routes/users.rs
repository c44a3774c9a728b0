//! `/api/v1/users`: admins list users, read one, and change a user's role, tier or disabled
//! state. Never a password hash.

use axum::extract::State;
use koryphaios_core::UserId;
use koryphaios_core::pagination;
use koryphaios_core::users::{User, UserChangeInput};
use koryphaios_core::validation::{FieldError, ValidationErrors};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::http::bounds;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiPath, CurrentUser, RequestMeta};
use crate::http::json::{ApiJson, ApiQuery};
use crate::state::AppState;

/// A user as admins see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminUserView {
    /// The user's id (`usr_…`).
    pub id: String,
    /// The login name.
    pub username: String,
    /// `admin` or `user`.
    #[schema(example = "user")]
    pub role: &'static str,
    /// The rate-limit tier every session and key of the user shares.
    #[schema(example = "free")]
    pub tier: &'static str,
    /// Whether an admin disabled the user.
    pub disabled: bool,
    /// When the user was disabled.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub disabled_at: Option<OffsetDateTime>,
    /// When the user registered.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When the user last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// When the user last logged in with a password.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_login_at: Option<OffsetDateTime>,
}

impl From<User> for AdminUserView {
    fn from(user: User) -> Self {
        Self {
            disabled: user.is_disabled(),
            id: user.id.to_string(),
            username: user.username,
            role: user.role.as_str(),
            tier: user.tier.as_str(),
            disabled_at: user.disabled_at,
            created_at: user.created_at,
            updated_at: user.updated_at,
            last_login_at: user.last_login_at,
        }
    }
}

/// `GET /api/v1/users` parameters. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UserListParams {
    /// 1–1000, default 100.
    #[param(schema_with = bounds::limit)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl UserListParams {
    fn validate(&self) -> Result<(Option<UserId>, u32), ValidationErrors> {
        let mut errors = Vec::new();
        let limit = pagination::check_limit(self.limit).unwrap_or_else(|error| {
            errors.push(error);
            pagination::DEFAULT_LIMIT
        });
        let after = match &self.cursor {
            None => None,
            Some(raw) => match pagination::decode_cursor(raw).and_then(|id| {
                UserId::parse(&id)
                    .map_err(|_| FieldError::new("cursor", "not a cursor this service issued"))
            }) {
                Ok(id) => Some(id),
                Err(error) => {
                    errors.push(error);
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok((after, limit))
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserPage {
    /// In registration order.
    pub users: Vec<AdminUserView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `PATCH /api/v1/users/{id}` body: at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateUserRequest {
    /// `admin` or `user`.
    #[schema(schema_with = bounds::role, example = "user")]
    pub role: Option<String>,
    /// free, premium, pro or enterprise.
    #[schema(schema_with = bounds::tier, example = "pro")]
    pub tier: Option<String>,
    /// `true` disables the user: their sessions end and their keys stop working (within 1 s on
    /// every instance); `false` enables them again (keys work again, sessions need a new login).
    pub disabled: Option<bool>,
}

/// Users in registration order, a page at a time (admin).
#[utoipa::path(get, path = "/users", tag = "users",
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 400, description = "Invalid limit or cursor", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiQuery(params): ApiQuery<UserListParams>,
) -> ApiResult<ApiJson<UserPage>> {
    let (after, limit) = params.validate()?;
    let users = state
        .users
        .list(&principal, &context, after.as_ref(), limit)
        .await?;
    let next_cursor = users
        .last()
        .filter(|_| users.len() >= limit as usize)
        .map(|last| pagination::encode_cursor(last.id.as_str()));
    Ok(ApiJson(UserPage {
        users: users.into_iter().map(AdminUserView::from).collect(),
        next_cursor,
    }))
}

/// One user (admin).
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    responses(
        (status = 200, description = "The user", body = AdminUserView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<ApiJson<AdminUserView>> {
    let user = state.users.get(&principal, &context, &id).await?;
    Ok(ApiJson(user.into()))
}

/// Changes a user's role, tier or disabled state (admin; audited as `user_update`).
#[utoipa::path(patch, path = "/users/{id}", tag = "users",
    responses(
        (status = 200, description = "Updated", body = AdminUserView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "`cannot_disable_self`, `last_admin`, or changed concurrently", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<UserId>,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> ApiResult<ApiJson<AdminUserView>> {
    let input = UserChangeInput {
        role: body.role,
        tier: body.tier,
        disabled: body.disabled,
    };
    let user = state.users.update(&principal, &context, &id, input).await?;
    // The user's agent tokens see the change (a disabled owner, a lower role) here at once.
    state.tokens.forget_owner(&id);
    Ok(ApiJson(user.into()))
}
