//! Every route, in one router function, with the pipeline around it.
//!
//! Order of the layers, outermost first: security headers → request id and access log →
//! error envelope → CORS (preflight guard, then tower-http) → timeout → body limit → routes. The
//! proxy's routes skip the timeout and the body limit: they have their own.

pub mod audit;
pub mod auth;
pub mod credentials;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod proxy;
pub mod starting;
pub mod tokens;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::MAX_BODY_BYTES;
use super::api_doc::ApiDoc;
use super::contract;
use super::error::ApiError;
use super::middleware::cors::{self, AllowedOrigins};
use super::middleware::{
    body_limit, envelope, rate_limit, request_context, security_headers, timeout, url_guard,
};
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

/// One handler's route with its OpenAPI operation: the `#[utoipa::path]` attribute, completed by
/// what the handler's extractors answer ([`contract::DocumentedHandler`]), with the operation id
/// `<module>_<handler>`.
macro_rules! route {
    ($module:ident :: $handler:ident) => {
        contract::document_handler(
            &$module::$handler,
            concat!(stringify!($module), "_", stringify!($handler)),
            routes!($module::$handler),
        )
    };
}

/// The routes with their OpenAPI description (no state, no pipeline). Every operation documents
/// what its extractors and the pipeline's layers can answer (ADR 0013).
pub fn api_routes() -> OpenApiRouter<AppState> {
    let auth = OpenApiRouter::new()
        .routes(route!(auth::register))
        .routes(route!(auth::login))
        .routes(route!(auth::refresh))
        .routes(route!(auth::logout))
        .routes(route!(auth::logout_all))
        .routes(route!(auth::me))
        .routes(route!(auth::change_password));
    let v1 = OpenApiRouter::new()
        .routes(route!(credentials::create))
        .routes(route!(credentials::list))
        .routes(route!(credentials::get))
        .routes(route!(credentials::update))
        .routes(route!(credentials::delete))
        .routes(route!(credentials::rotate))
        .routes(route!(credentials::reveal))
        .routes(route!(credentials::audit))
        .routes(route!(keys::create))
        .routes(route!(keys::list))
        .routes(route!(keys::verify))
        .routes(route!(keys::get))
        .routes(route!(keys::update))
        .routes(route!(keys::revoke))
        .routes(route!(keys::roll))
        .routes(route!(tokens::create))
        .routes(route!(tokens::list))
        .routes(route!(tokens::revoke))
        .routes(route!(audit::query))
        .routes(route!(audit::mine))
        .routes(route!(audit::suspicious))
        .routes(route!(audit::verify))
        .routes(route!(audit::export))
        .routes(route!(users::list))
        .routes(route!(users::get))
        .routes(route!(users::update))
        .routes(route!(proxy::forward));
    let mut router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(route!(health::live))
        .routes(route!(health::ready))
        .routes(route!(metrics::scrape))
        .nest("/api/auth", auth)
        .nest("/api/v1", v1);
    proxy::document_wildcard(router.get_openapi_mut());
    contract::document_pipeline(router.get_openapi_mut(), |path| {
        !rate_limit::is_exempt(path)
    });
    router
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
        .layer(from_fn_with_state(
            settings.request_timeout,
            timeout::limit_time,
        ))
        .layer(cors::layer(&origins))
        .layer(from_fn_with_state(origins, cors::refuse_foreign_preflight))
        .layer(from_fn(envelope::error_envelope))
        .layer(from_fn(request_context::request_context))
        .with_state(state);
    security_headers::apply(app, settings.hsts_max_age)
}
