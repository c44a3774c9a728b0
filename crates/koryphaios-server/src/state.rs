//! What every handler can reach: the use cases and the ports, behind `Arc`s.

use std::sync::Arc;

use koryphaios_core::Clock;
use koryphaios_core::api_keys::ApiKeyService;
use koryphaios_core::audit::service::AuditService;
use koryphaios_core::credentials::CredentialService;
use koryphaios_core::envelope::hierarchy::KeyHierarchy;
use koryphaios_core::session::AuthService;
use koryphaios_core::store::Store;
use koryphaios_core::users::UserAdminService;

use crate::rate_limits::RateLimits;

/// Shared application state.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Authentication use cases.
    pub auth: Arc<AuthService>,
    /// API key use cases (and request authentication by key).
    pub api_keys: Arc<ApiKeyService>,
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
    /// Whether this router answers `/metrics` (not when `KORYPHAIOS_METRICS_ADDR` moves it to its
    /// own listener).
    pub serves_metrics: bool,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// The credential proxy.
    pub proxy: Arc<crate::proxy::Proxy>,
}
