//! The service's rate-limit policy (SPEC §4): which checks a request gets, and the failed-login
//! counter. The limiter itself (Redis with in-memory fallback) is `koryphaios-ratelimit`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use koryphaios_core::api_keys::Tier;
use koryphaios_core::audit::throttle::RefusalThrottle;
use koryphaios_core::ratelimit::{Decision, Layer, LimitCheck, Mode, RateLimiter, Rule};
use koryphaios_core::users::Username;
use koryphaios_core::{ApiKeyId, AuthMethod, Principal, UserId};
use koryphaios_ratelimit::FallbackLimiter;

use crate::config::RateLimitConfig;

/// Routes whose requests count against the per-IP auth layer (everything that checks a password
/// or a refresh token).
const AUTH_ROUTES: &[&str] = &[
    "/api/auth/login",
    "/api/auth/register",
    "/api/auth/refresh",
    "/api/auth/password",
];

/// (method, route template) of the sensitive operations, limited by a token bucket.
const SENSITIVE: &[(&str, &str)] = &[
    ("POST", "/api/v1/keys"),
    ("POST", "/api/v1/tokens"),
    ("POST", "/api/v1/keys/{id}/roll"),
    ("DELETE", "/api/v1/keys/{id}"),
    ("POST", "/api/v1/credentials"),
    ("POST", "/api/v1/credentials/{id}/rotate"),
    ("POST", "/api/v1/credentials/{id}/reveal"),
    ("DELETE", "/api/v1/credentials/{id}"),
    ("PATCH", "/api/v1/users/{id}"),
];

/// How often one limiter key's refusals are audited at most (a flood must not become a write flood).
const DENIAL_AUDIT_INTERVAL: Duration = Duration::from_secs(60);

/// The policy and the limiter.
#[derive(Debug)]
pub struct RateLimits {
    limiter: Arc<FallbackLimiter>,
    config: RateLimitConfig,
    audited: RefusalThrottle<String>,
}

/// The tier a principal's requests count under: the user's, or the key's own when lower.
fn principal_tier(principal: &Principal) -> Tier {
    principal.effective_tier()
}

/// The counters a principal's requests use, with the tier of each: always the user's (every
/// session and key of a user shares it, at the user's tier), and for an API key whose own tier
/// is lower, the key's too (at the key's tier). An agent token counts as the key that minted it
/// (a key cannot escape its counters through its tokens).
fn principal_identity(principal: &Principal) -> Vec<(String, Tier)> {
    let key = match &principal.method {
        AuthMethod::ApiKey { key_id, tier, .. } => Some((key_id, *tier)),
        AuthMethod::Token(grant) => grant.parent_key.as_ref().map(|key| (key, grant.tier)),
        AuthMethod::Session { .. } => None,
    };
    tier_counters(&principal.user_id, principal.tier, key)
}

/// A key's own per-minute limit, with the key it counts under (a token shares its key's).
fn own_limit(principal: &Principal) -> Option<(&ApiKeyId, u32)> {
    match &principal.method {
        AuthMethod::ApiKey {
            key_id,
            rate_limit_per_minute: Some(limit),
            ..
        } => Some((key_id, *limit)),
        AuthMethod::Token(grant) => grant
            .parent_key
            .as_ref()
            .zip(grant.parent_rate_limit_per_minute),
        AuthMethod::ApiKey { .. } | AuthMethod::Session { .. } => None,
    }
}

/// The tier counters of a user's request, made with `key` when it is an API key's.
fn tier_counters(
    user_id: &UserId,
    user_tier: Tier,
    key: Option<(&ApiKeyId, Tier)>,
) -> Vec<(String, Tier)> {
    let mut counters = vec![(format!("user:{user_id}"), user_tier)];
    if let Some((key_id, key_tier)) = key
        && key_tier < user_tier
    {
        counters.push((format!("key:{key_id}"), key_tier));
    }
    counters
}

impl RateLimits {
    /// The policy over `limiter`.
    pub fn new(limiter: Arc<FallbackLimiter>, config: RateLimitConfig) -> Self {
        Self {
            limiter,
            config,
            audited: RefusalThrottle::new(DENIAL_AUDIT_INTERVAL),
        }
    }

    /// The limiter (for its background maintenance and health).
    pub fn limiter(&self) -> &Arc<FallbackLimiter> {
        &self.limiter
    }

    /// The tier label a principal's requests count under.
    pub fn tier_label(&self, principal: &Principal) -> &'static str {
        principal_tier(principal).as_str()
    }

    /// The checks that apply to a request.
    pub fn request_checks(
        &self,
        ip: IpAddr,
        method: &Method,
        route: Option<&str>,
        principal: Option<&Principal>,
    ) -> Vec<LimitCheck> {
        let minute = 60_000;
        let mut checks = vec![LimitCheck {
            layer: Layer::Ip,
            key: format!("ip:{ip}"),
            rule: Rule::per_window(self.config.ip_per_minute, minute),
            mode: Mode::Consume,
        }];
        if route.is_some_and(|route| AUTH_ROUTES.contains(&route)) {
            checks.push(LimitCheck {
                layer: Layer::Auth,
                key: format!("ip:{ip}"),
                rule: Rule::per_window(self.config.auth_per_minute, minute),
                mode: Mode::Consume,
            });
        }
        if let Some(principal) = principal {
            let counters = principal_identity(principal);
            for (key, tier) in &counters {
                checks.push(LimitCheck {
                    layer: Layer::Tier,
                    key: key.clone(),
                    rule: Rule::per_window(self.config.tier_limit(*tier), minute),
                    mode: Mode::Consume,
                });
            }
            if let Some((key_id, limit)) = own_limit(principal) {
                checks.push(LimitCheck {
                    layer: Layer::Tier,
                    key: format!("keylimit:{key_id}"),
                    rule: Rule::per_window(u64::from(limit), minute),
                    mode: Mode::Consume,
                });
            }
            let sensitive = route.is_some_and(|route| {
                SENSITIVE
                    .iter()
                    .any(|(m, r)| *m == method.as_str() && *r == route)
            });
            if sensitive {
                for (key, tier) in counters {
                    let bucket = self.config.sensitive_bucket(tier);
                    checks.push(LimitCheck {
                        layer: Layer::Sensitive,
                        key,
                        rule: Rule::TokenBucket {
                            capacity: bucket.capacity,
                            refill_per_minute: bucket.refill_per_minute,
                        },
                        mode: Mode::Consume,
                    });
                }
            }
        }
        checks
    }

    /// The failed-password counters of one attempt: strict per (username, client IP), looser per
    /// username. A name that cannot exist shares one counter, so the key stays small.
    fn password_checks(&self, username: &str, ip: IpAddr, mode: Mode) -> [LimitCheck; 2] {
        let window_ms =
            i64::try_from(self.config.login_failure_window.as_millis()).unwrap_or(i64::MAX);
        let name = Username::parse(username).map_or_else(
            |_| "(invalid)".to_owned(),
            |name| name.as_str().to_lowercase(),
        );
        [
            LimitCheck {
                layer: Layer::LoginFailure,
                key: format!("user:{name}:ip:{ip}"),
                rule: Rule::per_window(self.config.login_failures, window_ms),
                mode,
            },
            LimitCheck {
                layer: Layer::LoginFailure,
                key: format!("user:{name}"),
                rule: Rule::per_window(self.config.login_failures_per_user, window_ms),
                mode,
            },
        ]
    }

    /// Decides checks (the fallback limiter always answers).
    pub async fn decide(&self, checks: &[LimitCheck]) -> Decision {
        match self.limiter.decide(checks).await {
            Ok(decision) => decision,
            Err(error) => {
                // Only the in-memory limiter can be left, and it never fails; admit rather than 500.
                tracing::error!(%error, "rate limiter failed; admitting the request");
                Decision {
                    allowed: true,
                    results: Vec::new(),
                }
            }
        }
    }

    /// The tier-layer state a request made with this key would meet, looked at without counting
    /// (for `/keys/verify`): the tightest of its counters.
    pub async fn peek_key(
        &self,
        user_id: &UserId,
        user_tier: Tier,
        key_id: &ApiKeyId,
        key_tier: Tier,
    ) -> Decision {
        let checks: Vec<LimitCheck> = tier_counters(user_id, user_tier, Some((key_id, key_tier)))
            .into_iter()
            .map(|(key, tier)| LimitCheck {
                layer: Layer::Tier,
                key,
                rule: Rule::per_window(self.config.tier_limit(tier), 60_000),
                mode: Mode::Peek,
            })
            .collect();
        self.decide(&checks).await
    }

    /// Reserves a failed-password slot for an attempt on `username` from `ip` *before* the
    /// password is checked, so concurrent guesses cannot all pass a check made earlier: refused
    /// when either counter is full. The caller refunds it with [`Self::release_password_attempt`]
    /// unless the password turned out wrong.
    pub async fn reserve_password_attempt(&self, username: &str, ip: IpAddr) -> Decision {
        self.decide(&self.password_checks(username, ip, Mode::Consume))
            .await
    }

    /// Gives back a reserved slot: the password was right, or was never checked.
    pub async fn release_password_attempt(&self, username: &str, ip: IpAddr) {
        self.decide(&self.password_checks(username, ip, Mode::Refund))
            .await;
    }

    /// Whether a refusal for this limiter key should be audited now (at most once a minute per key).
    pub fn should_audit_denial(&self, key: &str) -> bool {
        self.audited.first_in_a_while(&key.to_owned())
    }

    /// The backend deciding now.
    pub fn backend(&self) -> &'static str {
        self.limiter.backend()
    }

    /// Whether Redis is configured (so `memory` means "falling back").
    pub fn redis_configured(&self) -> bool {
        self.limiter.has_redis()
    }
}

/// The client's address: the peer, or — only when the peer is a trusted proxy — the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let hops: Vec<IpAddr> = header
        .split(',')
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or_else(|| hops.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use koryphaios_core::ids::{ApiKeyId, FamilyId, UserId};
    use koryphaios_core::users::Role;

    fn principal(user_tier: Tier, key_tier: Option<Tier>) -> Principal {
        Principal {
            user_id: UserId::generate(),
            username: "ada".into(),
            role: Role::User,
            tier: user_tier,
            scopes: Role::User.scopes(),
            method: match key_tier {
                Some(tier) => AuthMethod::ApiKey {
                    key_id: ApiKeyId::generate(),
                    tier,
                    expires_at: None,
                    rate_limit_per_minute: None,
                },
                None => AuthMethod::Session {
                    jti: "j".into(),
                    family: FamilyId::generate(),
                    expires_at: time::OffsetDateTime::UNIX_EPOCH,
                },
            },
        }
    }

    #[test]
    fn every_session_and_key_counts_against_its_user_and_a_lower_key_tier_adds_a_check() {
        let session = principal(Tier::Pro, None);
        let user_counter = format!("user:{}", session.user_id);
        assert_eq!(
            principal_identity(&session),
            vec![(user_counter, Tier::Pro)]
        );
        assert_eq!(principal_tier(&session), Tier::Pro);

        // A key above its owner's tier (created before tiers were per user) gets the owner's.
        let high = principal(Tier::Free, Some(Tier::Enterprise));
        let counters = principal_identity(&high);
        assert_eq!(
            counters,
            vec![(format!("user:{}", high.user_id), Tier::Free)]
        );
        assert_eq!(principal_tier(&high), Tier::Free);

        let low = principal(Tier::Enterprise, Some(Tier::Free));
        let AuthMethod::ApiKey { key_id, .. } = &low.method else {
            unreachable!()
        };
        assert_eq!(
            principal_identity(&low),
            vec![
                (format!("user:{}", low.user_id), Tier::Enterprise),
                (format!("key:{key_id}"), Tier::Free),
            ]
        );
        assert_eq!(principal_tier(&low), Tier::Free);
    }

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            client_ip(peer, Some("1.2.3.4"), &nets(&["10.0.0.0/8"])),
            peer,
            "an untrusted peer cannot spoof"
        );
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            client_ip(proxy, Some("1.2.3.4"), &nets(&["10.0.0.0/8"])).to_string(),
            "1.2.3.4"
        );
        // A client-supplied hop in front of the real client is ignored: the right-most untrusted wins.
        assert_eq!(
            client_ip(
                proxy,
                Some("6.6.6.6, 1.2.3.4, 10.0.0.7"),
                &nets(&["10.0.0.0/8"])
            )
            .to_string(),
            "1.2.3.4"
        );
        assert_eq!(
            client_ip(proxy, Some("garbage"), &nets(&["10.0.0.0/8"])),
            proxy
        );
        assert_eq!(client_ip(proxy, None, &nets(&["10.0.0.0/8"])), proxy);
    }
}
