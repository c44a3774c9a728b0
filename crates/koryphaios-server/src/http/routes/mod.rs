//! Every route, in one router function, with the pipeline around it.
//!
//! Order of the layers, outermost first: security headers → request id and access log →
//! error envelope → CORS (preflight guard, then tower-http) → timeout → body limit → routes.

pub mod audit;
pub mod auth;
pub mod credentials;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod starting;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::MAX_BODY_BYTES;
use super::error::ApiError;
use super::middleware::cors::{self, AllowedOrigins};
use super::middleware::{
    body_limit, envelope, rate_limit, request_context, security_headers, url_guard,
};
use crate::openapi::ApiDoc;
use crate::state::AppState;

/// Settings of the pipeline that come from configuration.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Browser origins allowed by CORS.
    pub cors_origins: Vec<axum::http::HeaderValue>,
    /// `Strict-Transport-Security` max-age, when set.
    pub hsts_max_age: Option<u64>,
    /// Requests running longer are answered 503.
    pub request_timeout: std::time::Duration,
}

/// The routes with their OpenAPI description (no state, no pipeline).
pub fn api_routes() -> OpenApiRouter<AppState> {
    let auth = OpenApiRouter::new()
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::logout_all))
        .routes(routes!(auth::me))
        .routes(routes!(auth::change_password));
    let v1 = OpenApiRouter::new()
        .routes(routes!(credentials::create, credentials::list))
        .routes(routes!(
            credentials::get,
            credentials::update,
            credentials::delete
        ))
        .routes(routes!(credentials::rotate))
        .routes(routes!(credentials::reveal))
        .routes(routes!(credentials::audit))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::verify))
        .routes(routes!(keys::get, keys::update, keys::revoke))
        .routes(routes!(keys::roll))
        .routes(routes!(audit::query))
        .routes(routes!(audit::mine))
        .routes(routes!(audit::suspicious))
        .routes(routes!(audit::verify))
        .routes(routes!(audit::export))
        .routes(routes!(users::list))
        .routes(routes!(users::get, users::update));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(metrics::scrape))
        .nest("/api/auth", auth)
        .nest("/api/v1", v1)
}

async fn unknown_route() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> impl IntoResponse {
    StatusCode::METHOD_NOT_ALLOWED
}

/// The complete application router.
pub fn router(state: AppState, settings: &PipelineSettings) -> Router {
    let (routes, openapi) = api_routes().split_for_parts();
    let openapi = Arc::new(openapi);
    let origins = AllowedOrigins(Arc::new(settings.cors_origins.clone()));
    let app = routes
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let openapi = Arc::clone(&openapi);
                async move { axum::Json(openapi.as_ref().clone()) }
            }),
        )
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(from_fn(body_limit::limit_body))
        .layer(from_fn_with_state(state.clone(), rate_limit::rate_limit))
        .layer(from_fn(url_guard::refuse_control_characters))
        .layer(from_fn_with_state(state.clone(), rate_limit::client_ip))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(cors::layer(&origins))
        .layer(from_fn_with_state(origins, cors::refuse_foreign_preflight))
        .layer(from_fn(envelope::error_envelope))
        .layer(from_fn(request_context::request_context))
        .with_state(state);
    security_headers::apply(app, settings.hsts_max_age)
}
