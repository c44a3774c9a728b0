//! The credential proxy's settings: its body limit, its timeouts and the providers' base URLs.

use std::time::Duration;

use super::{ConfigError, parse_in};
use crate::proxy::providers::{self, ProviderTable};

/// The variables this module reads (besides `KORYPHAIOS_PROVIDER_<NAME>_BASE_URL`).
pub const VARIABLES: &[&str] = &[
    "KORYPHAIOS_PROXY_MAX_BODY_BYTES",
    "KORYPHAIOS_PROXY_CONNECT_TIMEOUT_SECS",
    "KORYPHAIOS_PROXY_FIRST_BYTE_TIMEOUT_SECS",
    "KORYPHAIOS_PROXY_IDLE_TIMEOUT_SECS",
];

/// Every proxy setting.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `KORYPHAIOS_PROXY_MAX_BODY_BYTES`: the largest request body forwarded (default 10 MiB:
    /// prompts carry images).
    pub max_body_bytes: u64,
    /// `KORYPHAIOS_PROXY_CONNECT_TIMEOUT_SECS`: TCP and TLS to the provider (default 10).
    pub connect_timeout: Duration,
    /// `KORYPHAIOS_PROXY_FIRST_BYTE_TIMEOUT_SECS`: from sending the request to the provider's
    /// response head (default 120: a long completion that does not stream answers only at the end).
    pub first_byte_timeout: Duration,
    /// `KORYPHAIOS_PROXY_IDLE_TIMEOUT_SECS`: the longest silence between two chunks of either
    /// body (default 60).
    pub idle_timeout: Duration,
    /// The reachable providers, with `KORYPHAIOS_PROVIDER_<NAME>_BASE_URL` applied.
    pub providers: ProviderTable,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(60),
            providers: ProviderTable::new(&[]),
        }
    }
}

/// Reads the proxy settings. A bad base URL names its variable, never its value (a URL can
/// carry credentials).
pub fn parse(get: &dyn Fn(&str) -> Option<String>) -> Result<ProxyConfig, ConfigError> {
    let defaults = ProxyConfig::default();
    let seconds = |variable: &'static str, max: u64, default: Duration| {
        get(variable)
            .map(|raw| parse_in(variable, &raw, 1, max).map(Duration::from_secs))
            .transpose()
            .map(|value| value.unwrap_or(default))
    };
    let mut overrides = Vec::new();
    for known in providers::BUILT_IN {
        if let Some(raw) = get(known.variable) {
            let url = providers::parse_base_url(&raw).map_err(|problem| ConfigError {
                variable: known.variable,
                problem: format!("{problem} (its value is not shown)"),
            })?;
            overrides.push((known.name, url));
        }
    }
    Ok(ProxyConfig {
        max_body_bytes: get("KORYPHAIOS_PROXY_MAX_BODY_BYTES")
            .map(|raw| parse_in("KORYPHAIOS_PROXY_MAX_BODY_BYTES", &raw, 1, 1 << 30))
            .transpose()?
            .unwrap_or(defaults.max_body_bytes),
        connect_timeout: seconds(
            "KORYPHAIOS_PROXY_CONNECT_TIMEOUT_SECS",
            300,
            defaults.connect_timeout,
        )?,
        first_byte_timeout: seconds(
            "KORYPHAIOS_PROXY_FIRST_BYTE_TIMEOUT_SECS",
            3600,
            defaults.first_byte_timeout,
        )?,
        idle_timeout: seconds(
            "KORYPHAIOS_PROXY_IDLE_TIMEOUT_SECS",
            3600,
            defaults.idle_timeout,
        )?,
        providers: ProviderTable::new(&overrides),
    })
}
