//! What an instance answers while it cannot load its keys (the key provider is unreachable at
//! start): alive, not ready, and 503 with `Retry-After` for everything else. The composition
//! root swaps in the full router once the keys load ([`Swappable`]).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::from_fn;
use axum::routing::get;
use tower::ServiceExt as _;

use axum::http::HeaderMap;
use axum::response::IntoResponse as _;
use secrecy::SecretString;

use super::health::{self, ComponentState, HealthResponse, Readiness};
use super::metrics;
use crate::http::error::ApiError;
use crate::http::json::ApiJson;
use crate::http::middleware::{envelope, request_context, security_headers};

/// Seconds a client is told to wait before trying again.
const RETRY_AFTER_SECS: u64 = 2;

/// The router of an instance waiting for its key provider (`backend` names it). When
/// `serves_metrics`, `/metrics` answers (with `kms_root_up` 0) so the outage shows where it is
/// watched.
pub fn router(
    backend: &'static str,
    hsts_max_age: Option<u64>,
    metrics_token: Option<SecretString>,
    serves_metrics: bool,
) -> Router {
    let mut app = Router::new()
        .route("/health", get(health::live))
        .route("/health/ready", get(move || not_ready(backend)));
    if serves_metrics {
        app = app.route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let token = metrics_token.clone();
                async move {
                    if let Err(refused) = metrics::authorized(token.as_ref(), &headers) {
                        return refused.into_response();
                    }
                    crate::metrics::kms_root_up(backend, false);
                    metrics::text_response(metrics::render())
                }
            }),
        );
    }
    let app = app
        .fallback(unavailable)
        .layer(from_fn(envelope::error_envelope))
        .layer(from_fn(request_context::request_context));
    security_headers::apply(app, hsts_max_age)
}

async fn not_ready(backend: &'static str) -> (StatusCode, ApiJson<HealthResponse<Readiness>>) {
    let kms = ComponentState {
        status: "down",
        backend,
        latency_ms: 0.0,
        error: Some("key provider unreachable at start; retrying".to_owned()),
    };
    let body = HealthResponse {
        ok: false,
        data: Readiness {
            status: "not_ready",
            components: BTreeMap::from([("kms", kms)]),
        },
    };
    (StatusCode::SERVICE_UNAVAILABLE, ApiJson(body))
}

async fn unavailable() -> ApiError {
    ApiError::unavailable("the key provider is unreachable; the instance is not ready yet")
        .retry_after(RETRY_AFTER_SECS)
}

/// A router whose routes can be replaced while it serves: every request goes to the router
/// installed at that moment.
#[derive(Clone)]
pub struct Swappable(Arc<RwLock<Router>>);

impl std::fmt::Debug for Swappable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Swappable(<router>)")
    }
}

impl Swappable {
    /// Starts with `initial`.
    pub fn new(initial: Router) -> Self {
        Self(Arc::new(RwLock::new(initial)))
    }

    /// Routes every later request to `router`.
    pub fn install(&self, router: Router) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = router;
    }

    /// A router that dispatches to whichever router is installed.
    pub fn router(&self) -> Router {
        let cell = self.clone();
        Router::new().fallback_service(tower::service_fn(move |request: axum::extract::Request| {
            let current = cell.0.read().unwrap_or_else(|p| p.into_inner()).clone();
            current.oneshot(request)
        }))
    }
}
