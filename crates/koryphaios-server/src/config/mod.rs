//! Configuration from `KORYPHAIOS_*` environment variables (SPEC §8).
//!
//! Every setting is validated when the service starts; a bad value stops the start with a
//! message naming the variable and what it accepts. Secret values are never echoed back.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderValue;
use koryphaios_core::tier::Tier;

mod http;
mod kms;
mod proxy;
mod rate_limit;

pub use kms::{KMS_PROVIDERS, KmsConfig, LocalKeyringSource};

pub use proxy::ProxyConfig;
pub use rate_limit::{BucketSetting, RateLimitConfig};
use secrecy::SecretString;

/// A setting that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong and what is allowed.
    pub problem: String,
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where data lives.
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server shared by every instance.
    Postgres {
        /// The `postgres://` URL (it may hold a password, so it is kept secret).
        url: SecretString,
        /// `KORYPHAIOS_DATABASE_MAX_CONNECTIONS` (default 16).
        max_connections: u32,
        /// `KORYPHAIOS_DATABASE_ACQUIRE_TIMEOUT_SECS`: wait for a free connection (default 5).
        acquire_timeout: Duration,
        /// `KORYPHAIOS_DATABASE_STATEMENT_TIMEOUT_SECS`: server-side limit per statement (default 30).
        statement_timeout: Duration,
    },
}

/// The whole configuration of one instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// `KORYPHAIOS_DATA_DIR`: database, keys and generated secrets (default `./.koryphaios`).
    pub data_dir: PathBuf,
    /// `KORYPHAIOS_HOST`: the address to listen on (default 127.0.0.1).
    pub host: IpAddr,
    /// `KORYPHAIOS_PORT`: the port to listen on (default 3000; 0 picks a free one).
    pub port: u16,
    /// `KORYPHAIOS_DATABASE_URL`: `sqlite://PATH`; unset means `DATA_DIR/koryphaios.db`.
    pub database: DatabaseConfig,
    /// `KORYPHAIOS_JWT_SECRET`: at least 32 bytes; unset means signing keys kept in the database.
    pub jwt_secret: Option<SecretString>,
    /// `KORYPHAIOS_KMS_PROVIDER` and its settings.
    pub kms: KmsConfig,
    /// `KORYPHAIOS_ENCRYPTION_KEY_ROTATION_DAYS`: a new key-encryption key after this long
    /// (default 90; 0 turns automatic rotation off).
    pub key_rotation: Option<time::Duration>,
    /// `KORYPHAIOS_ALLOW_REGISTRATION`: whether anyone may register after the first user.
    pub allow_registration: bool,
    /// `KORYPHAIOS_DEFAULT_USER_TIER`: the tier of new users after the first (default free; the
    /// first user, the admin, gets enterprise).
    pub default_user_tier: Tier,
    /// `KORYPHAIOS_CORS_ORIGINS`: comma-separated origins allowed to call from a browser.
    pub cors_origins: Vec<HeaderValue>,
    /// `KORYPHAIOS_HSTS_MAX_AGE`: seconds for `Strict-Transport-Security`; unset sends none.
    pub hsts_max_age: Option<u64>,
    /// `KORYPHAIOS_REQUEST_TIMEOUT_SECS`: a request running longer is answered 503 (default 30).
    pub request_timeout: Duration,
    /// `KORYPHAIOS_SHUTDOWN_GRACE_SECS`: how long in-flight requests may finish on shutdown (default 10).
    pub shutdown_grace: Duration,
    /// `KORYPHAIOS_LOG_LEVEL`: a tracing filter such as `info` or `koryphaios=debug,info`.
    pub log_level: String,
    /// `KORYPHAIOS_LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// Rate limiting and Redis.
    pub rate_limit: RateLimitConfig,
    /// `KORYPHAIOS_METRICS_TOKEN`: when set, `/metrics` needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<SecretString>,
    /// `KORYPHAIOS_METRICS_MAX_AGE_MS`: a scrape within this long of the last render is answered
    /// from it (default 1000; 0 renders on every scrape).
    pub metrics_max_age: Duration,
    /// `KORYPHAIOS_AUDIT_RETENTION_DAYS`: audit records older than this are purged (default 365).
    pub audit_retention_days: u64,
    /// `KORYPHAIOS_HTTP_*`: connection cap, header-read and keep-alive timeouts, head size.
    pub connection_limits: crate::http::server::ConnectionLimits,
    /// `KORYPHAIOS_METRICS_ADDR`: serve `/metrics` on this separate listener (and not on the API's).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `KORYPHAIOS_PROXY_*` and `KORYPHAIOS_PROVIDER_<NAME>_BASE_URL`: the credential proxy.
    pub proxy: ProxyConfig,
}

/// Every variable this build reads, so typos in the environment can be reported.
pub const KNOWN_VARIABLES: &[&str] = &[
    "KORYPHAIOS_DATA_DIR",
    "KORYPHAIOS_HOST",
    "KORYPHAIOS_PORT",
    "KORYPHAIOS_DATABASE_URL",
    "KORYPHAIOS_DATABASE_MAX_CONNECTIONS",
    "KORYPHAIOS_DATABASE_ACQUIRE_TIMEOUT_SECS",
    "KORYPHAIOS_DATABASE_STATEMENT_TIMEOUT_SECS",
    "KORYPHAIOS_JWT_SECRET",
    "KORYPHAIOS_ALLOW_REGISTRATION",
    "KORYPHAIOS_DEFAULT_USER_TIER",
    "KORYPHAIOS_CORS_ORIGINS",
    "KORYPHAIOS_HSTS_MAX_AGE",
    "KORYPHAIOS_REQUEST_TIMEOUT_SECS",
    "KORYPHAIOS_SHUTDOWN_GRACE_SECS",
    "KORYPHAIOS_LOG_LEVEL",
    "KORYPHAIOS_LOG_FORMAT",
    "KORYPHAIOS_METRICS_TOKEN",
    "KORYPHAIOS_METRICS_MAX_AGE_MS",
    "KORYPHAIOS_AUDIT_RETENTION_DAYS",
];

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (tests pass a map). Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let data_dir =
            PathBuf::from(get("KORYPHAIOS_DATA_DIR").unwrap_or_else(|| "./.koryphaios".into()));
        let database = match get("KORYPHAIOS_DATABASE_URL") {
            None => DatabaseConfig::Sqlite(data_dir.join("koryphaios.db")),
            Some(url) => parse_database_url(&url, &get)?,
        };
        let jwt_secret = match get("KORYPHAIOS_JWT_SECRET") {
            Some(secret) if secret.len() < 32 => {
                return Err(ConfigError {
                    variable: "KORYPHAIOS_JWT_SECRET",
                    problem: "must be at least 32 bytes (its value is not shown)".into(),
                });
            }
            other => other.map(SecretString::from),
        };
        Ok(Self {
            data_dir,
            host: parse_or(
                "KORYPHAIOS_HOST",
                get("KORYPHAIOS_HOST"),
                IpAddr::from([127, 0, 0, 1]),
                "an IP address such as 127.0.0.1 or 0.0.0.0",
            )?,
            port: parse_or(
                "KORYPHAIOS_PORT",
                get("KORYPHAIOS_PORT"),
                3000,
                "a port number from 0 to 65535",
            )?,
            database,
            jwt_secret,
            kms: kms::parse(&get)?,
            key_rotation: kms::parse_rotation(get("KORYPHAIOS_ENCRYPTION_KEY_ROTATION_DAYS"))?,
            allow_registration: parse_bool(
                "KORYPHAIOS_ALLOW_REGISTRATION",
                get("KORYPHAIOS_ALLOW_REGISTRATION"),
                false,
            )?,
            default_user_tier: parse_tier(
                "KORYPHAIOS_DEFAULT_USER_TIER",
                get("KORYPHAIOS_DEFAULT_USER_TIER"),
                Tier::Free,
            )?,
            cors_origins: parse_origins(get("KORYPHAIOS_CORS_ORIGINS"))?,
            hsts_max_age: get("KORYPHAIOS_HSTS_MAX_AGE")
                .map(|v| parse_in("KORYPHAIOS_HSTS_MAX_AGE", &v, 0, 63_072_000))
                .transpose()?,
            request_timeout: Duration::from_secs(
                get("KORYPHAIOS_REQUEST_TIMEOUT_SECS")
                    .map(|v| parse_in("KORYPHAIOS_REQUEST_TIMEOUT_SECS", &v, 1, 300))
                    .transpose()?
                    .unwrap_or(30),
            ),
            metrics_max_age: Duration::from_millis(
                get("KORYPHAIOS_METRICS_MAX_AGE_MS")
                    .map(|v| parse_in("KORYPHAIOS_METRICS_MAX_AGE_MS", &v, 0, 60_000))
                    .transpose()?
                    .unwrap_or(1000),
            ),
            shutdown_grace: Duration::from_secs(
                get("KORYPHAIOS_SHUTDOWN_GRACE_SECS")
                    .map(|v| parse_in("KORYPHAIOS_SHUTDOWN_GRACE_SECS", &v, 0, 300))
                    .transpose()?
                    .unwrap_or(10),
            ),
            log_level: parse_log_level(get("KORYPHAIOS_LOG_LEVEL"))?,
            log_format: match get("KORYPHAIOS_LOG_FORMAT").as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(ConfigError {
                        variable: "KORYPHAIOS_LOG_FORMAT",
                        problem: format!("expected text or json, got {other:?}"),
                    });
                }
            },
            rate_limit: rate_limit::parse(&get)?,
            connection_limits: http::connection_limits(&get)?,
            metrics_addr: http::metrics_addr(&get)?,
            proxy: proxy::parse(&get)?,
            audit_retention_days: get("KORYPHAIOS_AUDIT_RETENTION_DAYS")
                .map(|v| parse_in("KORYPHAIOS_AUDIT_RETENTION_DAYS", &v, 1, 36_500))
                .transpose()?
                .unwrap_or(365),
            metrics_token: match get("KORYPHAIOS_METRICS_TOKEN") {
                Some(token) if token.len() < 16 => {
                    return Err(ConfigError {
                        variable: "KORYPHAIOS_METRICS_TOKEN",
                        problem: "must be at least 16 characters (its value is not shown)".into(),
                    });
                }
                other => other.map(SecretString::from),
            },
        })
    }

    /// `KORYPHAIOS_*` variables in `names` that this build does not read (likely typos).
    pub fn unknown_variables<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        names
            .into_iter()
            .filter(|name| {
                name.starts_with("KORYPHAIOS_")
                    && !KNOWN_VARIABLES.contains(name)
                    && !rate_limit::VARIABLES.contains(name)
                    && !http::VARIABLES.contains(name)
                    && !kms::VARIABLES.contains(name)
                    && !proxy::VARIABLES.contains(name)
                    && !crate::proxy::providers::is_base_url_variable(name)
                    && !name.starts_with("KORYPHAIOS_TEST_")
            })
            .collect()
    }
}

fn parse_or<T: std::str::FromStr>(
    variable: &'static str,
    raw: Option<String>,
    default: T,
    allowed: &str,
) -> Result<T, ConfigError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|_| ConfigError {
            variable,
            problem: format!("expected {allowed}, got {raw:?}"),
        }),
    }
}

pub(crate) fn parse_in(
    variable: &'static str,
    raw: &str,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    raw.parse::<u64>()
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| ConfigError {
            variable,
            problem: format!("expected a whole number from {min} to {max}, got {raw:?}"),
        })
}

/// A tier name. The value is not echoed: the message says what is allowed.
pub(crate) fn parse_tier(
    variable: &'static str,
    raw: Option<String>,
    default: Tier,
) -> Result<Tier, ConfigError> {
    match raw {
        None => Ok(default),
        Some(raw) => Tier::parse(&raw.to_ascii_lowercase()).ok_or_else(|| ConfigError {
            variable,
            problem: "expected free, premium, pro or enterprise".into(),
        }),
    }
}

pub(crate) fn parse_bool(
    variable: &'static str,
    raw: Option<String>,
    default: bool,
) -> Result<bool, ConfigError> {
    match raw.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError {
            variable,
            problem: format!("expected true or false, got {other:?}"),
        }),
    }
}

fn parse_database_url(
    url: &str,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<DatabaseConfig, ConfigError> {
    let variable = "KORYPHAIOS_DATABASE_URL";
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let seconds = |name: &'static str, default: u64, max: u64| {
            get(name)
                .map(|v| parse_in(name, &v, 1, max))
                .transpose()
                .map(|v| Duration::from_secs(v.unwrap_or(default)))
        };
        let max_connections = get("KORYPHAIOS_DATABASE_MAX_CONNECTIONS")
            .map(|v| parse_in("KORYPHAIOS_DATABASE_MAX_CONNECTIONS", &v, 1, 1000))
            .transpose()?
            .unwrap_or(16);
        return Ok(DatabaseConfig::Postgres {
            url: SecretString::from(url.to_owned()),
            max_connections: u32::try_from(max_connections).unwrap_or(16),
            acquire_timeout: seconds("KORYPHAIOS_DATABASE_ACQUIRE_TIMEOUT_SECS", 5, 300)?,
            statement_timeout: seconds("KORYPHAIOS_DATABASE_STATEMENT_TIMEOUT_SECS", 30, 3600)?,
        });
    }
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(ConfigError {
                variable,
                problem:
                    "sqlite:// needs a file path, e.g. sqlite:///var/lib/koryphaios/koryphaios.db"
                        .into(),
            });
        }
        return Ok(DatabaseConfig::Sqlite(PathBuf::from(path)));
    }
    let scheme = url.split("://").next().unwrap_or_default();
    // The URL may hold a password: name only its scheme.
    Err(ConfigError {
        variable,
        problem: format!(
            "unsupported scheme {scheme:?}; expected sqlite://PATH or postgres://USER@HOST/DATABASE"
        ),
    })
}

pub(crate) fn lookup_secret(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> Option<SecretString> {
    get(name).map(SecretString::from)
}

fn parse_origins(raw: Option<String>) -> Result<Vec<HeaderValue>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && origin.split("://").nth(1).is_some_and(|host| !host.is_empty() && !host.contains('/'));
            let value = HeaderValue::from_str(origin).ok().filter(|_| valid);
            value.ok_or_else(|| ConfigError {
                variable: "KORYPHAIOS_CORS_ORIGINS",
                problem: format!(
                    "expected comma-separated origins like https://app.example.com (scheme and host, no path, no wildcard), got {origin:?}"
                ),
            })
        })
        .collect()
}

fn parse_log_level(raw: Option<String>) -> Result<String, ConfigError> {
    let level = raw.unwrap_or_else(|| "info".into());
    tracing_subscriber::EnvFilter::builder()
        .parse(&level)
        .map(|_| level.clone())
        .map_err(|e| ConfigError {
            variable: "KORYPHAIOS_LOG_LEVEL",
            problem: format!("expected a level (error, warn, info, debug, trace) or a filter like koryphaios=debug,info: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use std::path::Path;

    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn postgres_urls_select_the_postgres_store_with_pool_settings() {
        let config = load(&[
            (
                "KORYPHAIOS_DATABASE_URL",
                "postgres://app:pw@db:5432/koryphaios",
            ),
            ("KORYPHAIOS_DATABASE_MAX_CONNECTIONS", "40"),
            ("KORYPHAIOS_DATABASE_STATEMENT_TIMEOUT_SECS", "10"),
        ])
        .unwrap();
        let DatabaseConfig::Postgres {
            url,
            max_connections,
            acquire_timeout,
            statement_timeout,
        } = &config.database
        else {
            panic!("expected postgres: {:?}", config.database);
        };
        assert_eq!(url.expose_secret(), "postgres://app:pw@db:5432/koryphaios");
        assert_eq!(*max_connections, 40);
        assert_eq!(*acquire_timeout, Duration::from_secs(5));
        assert_eq!(*statement_timeout, Duration::from_secs(10));
        assert!(
            !format!("{config:?}").contains("pw@"),
            "the URL's password never prints"
        );
        let error = load(&[
            ("KORYPHAIOS_DATABASE_URL", "postgres://app:pw@db/k"),
            ("KORYPHAIOS_DATABASE_MAX_CONNECTIONS", "0"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, "KORYPHAIOS_DATABASE_MAX_CONNECTIONS");
    }

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_need_no_configuration() {
        let config = load(&[]).unwrap();
        assert_eq!(config.port, 3000);
        assert_eq!(config.host.to_string(), "127.0.0.1");
        assert_eq!(config.data_dir, PathBuf::from("./.koryphaios"));
        assert!(matches!(
            &config.database,
            DatabaseConfig::Sqlite(path) if path == Path::new("./.koryphaios/koryphaios.db")
        ));
        assert!(
            config.jwt_secret.is_none()
                && !config.allow_registration
                && config.cors_origins.is_empty()
        );
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn bad_values_name_the_variable_and_what_is_allowed() {
        let cases = [
            ("KORYPHAIOS_PORT", "http", "0 to 65535"),
            ("KORYPHAIOS_PORT", "70000", "0 to 65535"),
            ("KORYPHAIOS_HOST", "localhost:80", "IP address"),
            ("KORYPHAIOS_ALLOW_REGISTRATION", "maybe", "true or false"),
            ("KORYPHAIOS_LOG_FORMAT", "xml", "text or json"),
            ("KORYPHAIOS_LOG_LEVEL", "loud=[", "level"),
            ("KORYPHAIOS_CORS_ORIGINS", "*", "origins"),
            (
                "KORYPHAIOS_CORS_ORIGINS",
                "https://ok.example, https://bad.example/path",
                "no path",
            ),
            ("KORYPHAIOS_REQUEST_TIMEOUT_SECS", "0", "1 to 300"),
            ("KORYPHAIOS_AUDIT_RETENTION_DAYS", "0", "1 to 36500"),
            ("KORYPHAIOS_AUDIT_RETENTION_DAYS", "a year", "1 to 36500"),
            (
                "KORYPHAIOS_DATABASE_URL",
                "mysql://root:hunter2@db/x",
                "sqlite://",
            ),
        ];
        for (variable, value, hint) in cases {
            let error = load(&[(variable, value)]).unwrap_err();
            assert_eq!(error.variable, variable);
            assert!(
                error.to_string().contains(hint),
                "{error} should mention {hint}"
            );
        }
    }

    #[test]
    fn secrets_are_never_echoed_in_errors() {
        let error = load(&[("KORYPHAIOS_JWT_SECRET", "too-short-secret")]).unwrap_err();
        assert!(!error.to_string().contains("too-short-secret"));
        let error = load(&[("KORYPHAIOS_DATABASE_URL", "mysql://root:hunter2@db/x")]).unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
        let error = load(&[("KORYPHAIOS_KMS_PASSPHRASE", "tiny-secret")]).unwrap_err();
        assert!(!error.to_string().contains("tiny-secret"));
    }

    #[test]
    fn the_kms_defaults_to_local_and_age_takes_an_identity_file() {
        assert!(matches!(
            load(&[]).unwrap().kms,
            KmsConfig::Local {
                passphrase: None,
                keyring: LocalKeyringSource::DataDir
            }
        ));
        let age = load(&[
            ("KORYPHAIOS_KMS_PROVIDER", "age"),
            ("KORYPHAIOS_AGE_IDENTITY_FILE", "/keys/id.txt"),
        ])
        .unwrap();
        assert!(
            matches!(age.kms, KmsConfig::Age { identity_file: Some(ref p) } if p == &PathBuf::from("/keys/id.txt"))
        );
        let error = load(&[
            ("KORYPHAIOS_KMS_PROVIDER", "age"),
            ("KORYPHAIOS_KMS_PASSPHRASE", "long enough passphrase"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, "KORYPHAIOS_KMS_PASSPHRASE");
    }

    #[test]
    fn good_values_are_taken() {
        let config = load(&[
            ("KORYPHAIOS_PORT", "0"),
            ("KORYPHAIOS_ALLOW_REGISTRATION", "TRUE"),
            (
                "KORYPHAIOS_CORS_ORIGINS",
                "https://a.example, http://localhost:5173",
            ),
            ("KORYPHAIOS_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("KORYPHAIOS_DATABASE_URL", "sqlite:///tmp/k.db"),
            ("KORYPHAIOS_LOG_FORMAT", "json"),
        ])
        .unwrap();
        assert_eq!(config.port, 0);
        assert!(config.allow_registration);
        assert_eq!(config.cors_origins.len(), 2);
        assert_eq!(config.jwt_secret.unwrap().expose_secret().len(), 32);
        assert!(matches!(
            &config.database,
            DatabaseConfig::Sqlite(path) if path == Path::new("/tmp/k.db")
        ));
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn debug_output_of_the_config_hides_the_jwt_secret() {
        let config = load(&[(
            "KORYPHAIOS_JWT_SECRET",
            "0123456789abcdef0123456789abcdef-hidden",
        )])
        .unwrap();
        assert!(!format!("{config:?}").contains("hidden"));
    }

    #[test]
    fn rate_limits_default_to_the_spec_and_take_overrides() {
        let defaults = load(&[]).unwrap().rate_limit;
        assert!(defaults.enabled && defaults.redis_url.is_none());
        assert_eq!(
            (
                defaults.ip_per_minute,
                defaults.auth_per_minute,
                defaults.login_failures
            ),
            (1000, 10, 5)
        );
        assert_eq!(defaults.tier_per_minute, [60, 300, 1000, 5000]);
        let custom = load(&[
            ("KORYPHAIOS_REDIS_URL", "redis://:pw@127.0.0.1:6379/0"),
            ("KORYPHAIOS_RATE_LIMIT_TIER_PRO", "42"),
            ("KORYPHAIOS_RATE_LIMIT_SENSITIVE_FREE", "3:6"),
            ("KORYPHAIOS_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
            ("KORYPHAIOS_RATE_LIMIT_ENABLED", "false"),
        ])
        .unwrap()
        .rate_limit;
        assert_eq!(custom.tier_per_minute[2], 42);
        assert_eq!(
            custom.sensitive[0],
            BucketSetting {
                capacity: 3,
                refill_per_minute: 6
            }
        );
        assert_eq!(custom.trusted_proxies.len(), 2);
        assert!(!custom.enabled);
        let error = load(&[("KORYPHAIOS_REDIS_URL", "http://user:hunter2@cache")]).unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
        assert!(!format!("{custom:?}").contains(":pw@"));
    }

    #[test]
    fn the_default_user_tier_is_free_and_takes_a_tier_name() {
        assert_eq!(load(&[]).unwrap().default_user_tier, Tier::Free);
        let pro = load(&[("KORYPHAIOS_DEFAULT_USER_TIER", "Pro")]).unwrap();
        assert_eq!(pro.default_user_tier, Tier::Pro);
        let error = load(&[("KORYPHAIOS_DEFAULT_USER_TIER", "platinum-secret")]).unwrap_err();
        assert_eq!(error.variable, "KORYPHAIOS_DEFAULT_USER_TIER");
        assert!(
            error
                .to_string()
                .contains("free, premium, pro or enterprise")
        );
        assert!(
            !error.to_string().contains("platinum-secret"),
            "the value is not echoed"
        );
    }

    #[test]
    fn the_removed_session_tier_setting_stops_the_start_with_a_pointer() {
        let error = load(&[("KORYPHAIOS_RATE_LIMIT_SESSION_TIER", "premium")]).unwrap_err();
        assert_eq!(error.variable, "KORYPHAIOS_RATE_LIMIT_SESSION_TIER");
        assert!(error.to_string().contains("KORYPHAIOS_DEFAULT_USER_TIER"));
    }

    #[test]
    fn unknown_koryphaios_variables_are_reported() {
        let unknown = Config::unknown_variables(["KORYPHAIOS_PROT", "KORYPHAIOS_PORT", "PATH"]);
        assert_eq!(unknown, vec!["KORYPHAIOS_PROT"]);
    }
}
