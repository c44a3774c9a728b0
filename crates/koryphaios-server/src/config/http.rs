//! Settings of the listeners: connection limits and the separate metrics listener.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ConfigError, parse_in};
use crate::http::server::{ConnectionLimits, MIN_HEADER_BYTES};

/// The variables this module reads.
pub const VARIABLES: &[&str] = &[
    "KORYPHAIOS_HTTP_MAX_CONNECTIONS",
    "KORYPHAIOS_HTTP_HEADER_READ_TIMEOUT_SECS",
    "KORYPHAIOS_HTTP_KEEP_ALIVE_TIMEOUT_SECS",
    "KORYPHAIOS_HTTP_MAX_HEADER_BYTES",
    "KORYPHAIOS_METRICS_ADDR",
];

/// Reads the connection limits.
pub fn connection_limits(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<ConnectionLimits, ConfigError> {
    let defaults = ConnectionLimits::default();
    let number = |variable: &'static str, min: u64, max: u64, default: u64| {
        get(variable)
            .map(|raw| parse_in(variable, &raw, min, max))
            .transpose()
            .map(|value| value.unwrap_or(default))
    };
    let max_header = u64::try_from(MIN_HEADER_BYTES).unwrap_or(8192);
    Ok(ConnectionLimits {
        max_connections: usize::try_from(number(
            "KORYPHAIOS_HTTP_MAX_CONNECTIONS",
            1,
            1_000_000,
            defaults.max_connections as u64,
        )?)
        .unwrap_or(defaults.max_connections),
        header_read_timeout: Duration::from_secs(number(
            "KORYPHAIOS_HTTP_HEADER_READ_TIMEOUT_SECS",
            1,
            300,
            defaults.header_read_timeout.as_secs(),
        )?),
        keep_alive_timeout: Duration::from_secs(number(
            "KORYPHAIOS_HTTP_KEEP_ALIVE_TIMEOUT_SECS",
            1,
            3600,
            defaults.keep_alive_timeout.as_secs(),
        )?),
        max_header_bytes: usize::try_from(number(
            "KORYPHAIOS_HTTP_MAX_HEADER_BYTES",
            max_header,
            1024 * 1024,
            defaults.max_header_bytes as u64,
        )?)
        .unwrap_or(defaults.max_header_bytes),
    })
}

/// Reads `KORYPHAIOS_METRICS_ADDR`: where a separate metrics-only listener binds, if anywhere.
pub fn metrics_addr(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SocketAddr>, ConfigError> {
    get("KORYPHAIOS_METRICS_ADDR")
        .map(|raw| {
            raw.parse::<SocketAddr>().map_err(|_| ConfigError {
                variable: "KORYPHAIOS_METRICS_ADDR",
                problem: format!("expected an address and port such as 0.0.0.0:9090, got {raw:?}"),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_are_bounded() {
        let limits = connection_limits(&lookup(&[])).unwrap();
        assert_eq!(limits, ConnectionLimits::default());
        assert!(limits.max_connections > 0 && limits.max_connections <= 4096);
        assert!(limits.header_read_timeout <= Duration::from_secs(30));
        assert_eq!(metrics_addr(&lookup(&[])).unwrap(), None);
    }

    #[test]
    fn settings_are_read_and_bad_values_name_their_variable() {
        let limits = connection_limits(&lookup(&[
            ("KORYPHAIOS_HTTP_MAX_CONNECTIONS", "8"),
            ("KORYPHAIOS_HTTP_HEADER_READ_TIMEOUT_SECS", "2"),
            ("KORYPHAIOS_HTTP_KEEP_ALIVE_TIMEOUT_SECS", "3"),
            ("KORYPHAIOS_HTTP_MAX_HEADER_BYTES", "9000"),
        ]))
        .unwrap();
        assert_eq!(limits.max_connections, 8);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(limits.keep_alive_timeout, Duration::from_secs(3));
        assert_eq!(limits.max_header_bytes, 9000);
        for (variable, bad) in [
            ("KORYPHAIOS_HTTP_MAX_CONNECTIONS", "0"),
            ("KORYPHAIOS_HTTP_HEADER_READ_TIMEOUT_SECS", "forever"),
            ("KORYPHAIOS_HTTP_KEEP_ALIVE_TIMEOUT_SECS", "0"),
            ("KORYPHAIOS_HTTP_MAX_HEADER_BYTES", "100"),
        ] {
            let error = connection_limits(&lookup(&[(variable, bad)])).unwrap_err();
            assert_eq!(error.variable, variable);
        }
        let error = metrics_addr(&lookup(&[("KORYPHAIOS_METRICS_ADDR", "nowhere")])).unwrap_err();
        assert_eq!(error.variable, "KORYPHAIOS_METRICS_ADDR");
        assert_eq!(
            metrics_addr(&lookup(&[("KORYPHAIOS_METRICS_ADDR", "127.0.0.1:9090")])).unwrap(),
            Some("127.0.0.1:9090".parse().unwrap())
        );
    }
}
