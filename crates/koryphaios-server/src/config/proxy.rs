//! The credential proxy's settings: its body limit, its timeouts, its caps on calls in flight and
//! the providers' base URLs.

use std::time::Duration;

use super::{ConfigError, parse_in};
use crate::proxy::providers::{self, ProviderTable};

/// The variables this module reads (besides `KORYPHAIOS_PROVIDER_<NAME>_BASE_URL`).
pub const VARIABLES: &[&str] = &[
    "KORYPHAIOS_PROXY_MAX_BODY_BYTES",
    "KORYPHAIOS_PROXY_CONNECT_TIMEOUT_SECS",
    "KORYPHAIOS_PROXY_FIRST_BYTE_TIMEOUT_SECS",
    "KORYPHAIOS_PROXY_IDLE_TIMEOUT_SECS",
    "KORYPHAIOS_PROXY_MAX_DURATION_SECS",
    "KORYPHAIOS_PROXY_MAX_CONCURRENT",
    "KORYPHAIOS_PROXY_MAX_CONCURRENT_PER_USER",
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
    /// `KORYPHAIOS_PROXY_MAX_DURATION_SECS`: the longest a whole call may take, its streamed
    /// answer included (default 600); a stream still running then is cut.
    pub max_duration: Duration,
    /// `KORYPHAIOS_PROXY_MAX_CONCURRENT`: calls in flight on this instance (default 256).
    pub max_concurrent: usize,
    /// `KORYPHAIOS_PROXY_MAX_CONCURRENT_PER_USER`: calls in flight of one user (default 16).
    pub max_concurrent_per_user: usize,
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
            max_duration: Duration::from_secs(600),
            max_concurrent: 256,
            max_concurrent_per_user: 16,
            providers: ProviderTable::new(&[]),
        }
    }
}

/// A whole number from `min` to `max`; an error names the variable and the range, not the
/// value.
fn bounded(
    get: &dyn Fn(&str) -> Option<String>,
    variable: &'static str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ConfigError> {
    get(variable)
        .map(|raw| {
            parse_in(variable, &raw, min, max).map_err(|_| ConfigError {
                variable,
                problem: format!(
                    "expected a whole number from {min} to {max} (its value is not shown)"
                ),
            })
        })
        .transpose()
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
    let count = |variable: &'static str, default: usize| {
        bounded(get, variable, 1, 1_000_000).map(|value| {
            value
                .and_then(|value| usize::try_from(value).ok())
                .unwrap_or(default)
        })
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
        max_duration: bounded(get, "KORYPHAIOS_PROXY_MAX_DURATION_SECS", 1, 86_400)?
            .map_or(defaults.max_duration, Duration::from_secs),
        max_concurrent: count("KORYPHAIOS_PROXY_MAX_CONCURRENT", defaults.max_concurrent)?,
        max_concurrent_per_user: count(
            "KORYPHAIOS_PROXY_MAX_CONCURRENT_PER_USER",
            defaults.max_concurrent_per_user,
        )?,
        providers: ProviderTable::new(&overrides),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<ProxyConfig, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse(&|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn caps_and_the_call_duration_have_defaults_and_bounds() {
        let config = from(&[]).unwrap();
        assert_eq!(config.max_concurrent, 256);
        assert_eq!(config.max_concurrent_per_user, 16);
        assert_eq!(config.max_duration, Duration::from_secs(600));
        let config = from(&[
            ("KORYPHAIOS_PROXY_MAX_CONCURRENT", "3"),
            ("KORYPHAIOS_PROXY_MAX_CONCURRENT_PER_USER", "2"),
            ("KORYPHAIOS_PROXY_MAX_DURATION_SECS", "5"),
        ])
        .unwrap();
        assert_eq!(
            (config.max_concurrent, config.max_concurrent_per_user),
            (3, 2)
        );
        assert_eq!(config.max_duration, Duration::from_secs(5));
        for variable in [
            "KORYPHAIOS_PROXY_MAX_CONCURRENT",
            "KORYPHAIOS_PROXY_MAX_CONCURRENT_PER_USER",
            "KORYPHAIOS_PROXY_MAX_DURATION_SECS",
        ] {
            for bad in ["0", "-1", "secret-ish-9999999999", "99999999"] {
                let error = from(&[(variable, bad)]).unwrap_err();
                assert_eq!(error.variable, variable);
                assert!(!error.to_string().contains(&format!("{bad:?}")), "{error}");
                assert!(!error.problem.contains("got"), "{error}");
            }
        }
    }
}
