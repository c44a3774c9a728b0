//! What every handler can reach: the use cases and the ports, behind one `Arc`.
//!
//! Axum clones the state for every request, several times (each `from_fn_with_state` layer, each
//! `State` extractor). One `Arc` around all of it makes a clone one atomic increment instead of
//! one per service; on two cores those shared counters were a quarter of `/health`'s CPU.

use std::sync::Arc;

use koryphaios_core::Clock;
use koryphaios_core::api_keys::ApiKeyService;
use koryphaios_core::audit::service::AuditService;
use koryphaios_core::credentials::CredentialService;
use koryphaios_core::envelope::hierarchy::KeyHierarchy;
use koryphaios_core::session::AuthService;
use koryphaios_core::store::Store;
use koryphaios_core::tokens::TokenService;
use koryphaios_core::users::UserAdminService;

use crate::rate_limits::RateLimits;

/// Shared application state: [`AppServices`] behind one `Arc`.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppServices>);

impl AppState {
    /// Shares `services` with every request.
    pub fn new(services: AppServices) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}

/// The use cases and ports of the application.
#[derive(Debug, Clone)]
pub struct AppServices {
    /// Authentication use cases.
    pub auth: Arc<AuthService>,
    /// API key use cases (and request authentication by key).
    pub api_keys: Arc<ApiKeyService>,
    /// Agent token use cases (and request authentication by token).
    pub tokens: Arc<TokenService>,
    /// Audit log use cases.
    pub audit: Arc<AuditService>,
    /// Credential use cases.
    pub credentials: Arc<CredentialService>,
    /// User administration (admins).
    pub users: Arc<UserAdminService>,
    /// The store, for readiness checks.
    pub store: Arc<dyn Store>,
    /// The key provider, for readiness checks.
    pub kms: Arc<KeyHierarchy>,
    /// The source of "now" (views that depend on time use it, like the use cases).
    pub clock: Arc<dyn Clock>,
    /// Rate limits; `None` when `KORYPHAIOS_RATE_LIMIT_ENABLED=false`.
    pub rate_limits: Option<Arc<RateLimits>>,
    /// `KORYPHAIOS_METRICS_TOKEN`: when set, `/metrics` needs it.
    pub metrics_token: Option<secrecy::SecretString>,
    /// The last `/metrics` render, shared by scrapes within `KORYPHAIOS_METRICS_MAX_AGE_MS`.
    pub rendered_metrics: Arc<crate::http::routes::metrics::RenderedMetrics>,
    /// Whether this router answers `/metrics` (not when `KORYPHAIOS_METRICS_ADDR` moves it to its
    /// own listener).
    pub serves_metrics: bool,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// The credential proxy.
    pub proxy: Arc<crate::proxy::Proxy>,
}
