//! Rate-limit settings (SPEC §4): which layers, how much, and where Redis is.

use std::time::Duration;

use ipnet::IpNet;
use koryphaios_core::api_keys::Tier;
use secrecy::SecretString;

use super::ConfigError;

/// A token bucket's size and refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSetting {
    /// Burst size.
    pub capacity: u64,
    /// Tokens per minute.
    pub refill_per_minute: u64,
}

/// Every rate-limit setting.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// `KORYPHAIOS_RATE_LIMIT_ENABLED` (default true).
    pub enabled: bool,
    /// `KORYPHAIOS_REDIS_URL`: shared limits across instances; unset means in memory only.
    pub redis_url: Option<SecretString>,
    /// `KORYPHAIOS_REDIS_TIMEOUT_MS`: a slower Redis decision falls back to memory (default 50).
    pub redis_timeout: Duration,
    /// `KORYPHAIOS_RATE_LIMIT_IP_PER_MINUTE` (default 1000).
    pub ip_per_minute: u64,
    /// `KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE`: login/register/refresh per IP (default 10).
    pub auth_per_minute: u64,
    /// `KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES`: failed logins per (username, client IP) per window
    /// (default 5).
    pub login_failures: u64,
    /// `KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES_PER_USER`: failed logins per username from all
    /// addresses together per window (default 50, at least `login_failures`): only a distributed
    /// guessing attack reaches it.
    pub login_failures_per_user: u64,
    /// `KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURE_WINDOW_SECS` (default 900).
    pub login_failure_window: Duration,
    /// `KORYPHAIOS_RATE_LIMIT_TIER_{FREE,PREMIUM,PRO,ENTERPRISE}` per minute (60/300/1000/5000).
    pub tier_per_minute: [u64; 4],
    /// `KORYPHAIOS_RATE_LIMIT_SENSITIVE_{FREE,…}` as `CAPACITY:REFILL_PER_MINUTE`.
    pub sensitive: [BucketSetting; 4],
    /// `KORYPHAIOS_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl RateLimitConfig {
    /// The per-minute limit of a tier.
    pub fn tier_limit(&self, tier: Tier) -> u64 {
        self.tier_per_minute[tier as usize]
    }

    /// The sensitive-operation bucket of a tier.
    pub fn sensitive_bucket(&self, tier: Tier) -> BucketSetting {
        self.sensitive[tier as usize]
    }
}

/// The variables this module reads.
pub const VARIABLES: &[&str] = &[
    "KORYPHAIOS_RATE_LIMIT_ENABLED",
    "KORYPHAIOS_REDIS_URL",
    "KORYPHAIOS_REDIS_TIMEOUT_MS",
    "KORYPHAIOS_RATE_LIMIT_IP_PER_MINUTE",
    "KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE",
    "KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES",
    "KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES_PER_USER",
    "KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURE_WINDOW_SECS",
    "KORYPHAIOS_RATE_LIMIT_TIER_FREE",
    "KORYPHAIOS_RATE_LIMIT_TIER_PREMIUM",
    "KORYPHAIOS_RATE_LIMIT_TIER_PRO",
    "KORYPHAIOS_RATE_LIMIT_TIER_ENTERPRISE",
    "KORYPHAIOS_RATE_LIMIT_SENSITIVE_FREE",
    "KORYPHAIOS_RATE_LIMIT_SENSITIVE_PREMIUM",
    "KORYPHAIOS_RATE_LIMIT_SENSITIVE_PRO",
    "KORYPHAIOS_RATE_LIMIT_SENSITIVE_ENTERPRISE",
    // Removed (sessions count under their user's tier); still known so setting it is an error,
    // not a typo warning.
    "KORYPHAIOS_RATE_LIMIT_SESSION_TIER",
    "KORYPHAIOS_TRUSTED_PROXIES",
];

const TIER_SUFFIXES: [&str; 4] = ["FREE", "PREMIUM", "PRO", "ENTERPRISE"];

fn count(
    get: &dyn Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u64,
) -> Result<u64, ConfigError> {
    match get(variable) {
        None => Ok(default),
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|v| (1..=10_000_000).contains(v))
            .ok_or_else(|| ConfigError {
                variable,
                problem: format!("expected a whole number from 1 to 10000000, got {raw:?}"),
            }),
    }
}

fn bucket(
    get: &dyn Fn(&str) -> Option<String>,
    variable: &'static str,
    default: BucketSetting,
) -> Result<BucketSetting, ConfigError> {
    let Some(raw) = get(variable) else {
        return Ok(default);
    };
    let parsed = raw.split_once(':').and_then(|(capacity, refill)| {
        let capacity = capacity
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|v| (1..=10_000_000).contains(v))?;
        let refill_per_minute = refill
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|v| (1..=10_000_000).contains(v))?;
        Some(BucketSetting {
            capacity,
            refill_per_minute,
        })
    });
    parsed.ok_or_else(|| ConfigError {
        variable,
        problem: format!("expected CAPACITY:REFILL_PER_MINUTE such as 10:10, got {raw:?}"),
    })
}

/// Reads the rate-limit settings.
pub fn parse(get: &dyn Fn(&str) -> Option<String>) -> Result<RateLimitConfig, ConfigError> {
    let enabled = super::parse_bool(
        "KORYPHAIOS_RATE_LIMIT_ENABLED",
        get("KORYPHAIOS_RATE_LIMIT_ENABLED"),
        true,
    )?;
    let redis_url = match get("KORYPHAIOS_REDIS_URL") {
        None => None,
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Some(SecretString::from(url))
        }
        Some(_) => {
            return Err(ConfigError {
                variable: "KORYPHAIOS_REDIS_URL",
                problem: "expected redis://[user:password@]host:port[/db] or rediss://… (its value is not shown)".into(),
            });
        }
    };
    let timeout_ms = match get("KORYPHAIOS_REDIS_TIMEOUT_MS") {
        None => 50,
        Some(raw) => super::parse_in("KORYPHAIOS_REDIS_TIMEOUT_MS", &raw, 1, 10_000)?,
    };
    let defaults_tier = [60, 300, 1000, 5000];
    let defaults_sensitive = [(10, 10), (30, 30), (100, 100), (300, 300)];
    let mut tier_per_minute = [0; 4];
    let mut sensitive = [BucketSetting {
        capacity: 0,
        refill_per_minute: 0,
    }; 4];
    for (i, suffix) in TIER_SUFFIXES.iter().enumerate() {
        let tier_var = VARIABLES
            .iter()
            .find(|v| v.ends_with(&format!("TIER_{suffix}")))
            .copied()
            .unwrap_or("KORYPHAIOS_RATE_LIMIT_TIER");
        tier_per_minute[i] = count(get, tier_var, defaults_tier[i])?;
        let sensitive_var = VARIABLES
            .iter()
            .find(|v| v.ends_with(&format!("SENSITIVE_{suffix}")))
            .copied()
            .unwrap_or("KORYPHAIOS_RATE_LIMIT_SENSITIVE");
        let (capacity, refill_per_minute) = defaults_sensitive[i];
        sensitive[i] = bucket(
            get,
            sensitive_var,
            BucketSetting {
                capacity,
                refill_per_minute,
            },
        )?;
    }
    if get("KORYPHAIOS_RATE_LIMIT_SESSION_TIER").is_some() {
        return Err(ConfigError {
            variable: "KORYPHAIOS_RATE_LIMIT_SESSION_TIER",
            problem: "was removed: sessions and keys count under their user's tier; set new users' tier with KORYPHAIOS_DEFAULT_USER_TIER and change a user's with PATCH /api/v1/users/{id}".into(),
        });
    }
    let trusted_proxies = match get("KORYPHAIOS_TRUSTED_PROXIES") {
        None => Vec::new(),
        Some(raw) => raw
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| ConfigError {
                        variable: "KORYPHAIOS_TRUSTED_PROXIES",
                        problem: format!("expected comma-separated IPs or CIDRs such as 10.0.0.0/8, got {entry:?}"),
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let login_failures = count(get, "KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES", 5)?;
    let login_failures_per_user = count(
        get,
        "KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES_PER_USER",
        (login_failures * 10).max(50),
    )?;
    if login_failures_per_user < login_failures {
        return Err(ConfigError {
            variable: "KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES_PER_USER",
            problem: format!(
                "must be at least KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES ({login_failures}), got {login_failures_per_user}"
            ),
        });
    }
    Ok(RateLimitConfig {
        enabled,
        redis_url,
        redis_timeout: Duration::from_millis(timeout_ms),
        ip_per_minute: count(get, "KORYPHAIOS_RATE_LIMIT_IP_PER_MINUTE", 1000)?,
        auth_per_minute: count(get, "KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE", 10)?,
        login_failures,
        login_failures_per_user,
        login_failure_window: Duration::from_secs(count(
            get,
            "KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURE_WINDOW_SECS",
            900,
        )?),
        tier_per_minute,
        sensitive,
        trusted_proxies,
    })
}
