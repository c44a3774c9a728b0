//! Set-ups shared by the benchmarks (`benches/`) and the hot-path budget driver
//! (`koryphaios-server/examples/hot_paths.rs`), so that both measure the same thing.

use std::sync::Arc;

use crate::audit::{AuditEntry, RequestContext};
use crate::ids::{FamilyId, UserId};
use crate::principal::{AuthMethod, Principal};
use crate::ratelimit::{Layer, LimitCheck, Mode, Rule};
use crate::store::Store;
use crate::tier::Tier;
use crate::users::{NewUser, PasswordHash, RegistrationPolicy, Username};

/// The typical three checks of one request of `principal` (IP, tier, sensitive operation), with
/// limits so high that every one is admitted: the decision is measured, not the refusal.
pub fn request_checks(principal: usize) -> Vec<LimitCheck> {
    vec![
        LimitCheck {
            layer: Layer::Ip,
            key: format!("ip:10.0.{}.{}", principal / 250, principal % 250),
            rule: Rule::per_window(u64::MAX / 4, 60_000),
            mode: Mode::Consume,
        },
        LimitCheck {
            layer: Layer::Tier,
            key: format!("key:{principal}"),
            rule: Rule::per_window(u64::MAX / 4, 60_000),
            mode: Mode::Consume,
        },
        LimitCheck {
            layer: Layer::Sensitive,
            key: format!("key:{principal}"),
            rule: Rule::TokenBucket {
                capacity: u64::MAX / 4,
                refill_per_minute: 1_000_000,
            },
            mode: Mode::Consume,
        },
    ]
}

/// Registers `username` in `store` and returns it as a logged-in principal (tier Pro, the scopes
/// of its role), ready to create keys and credentials.
pub async fn registered_principal(store: &Arc<dyn Store>, username: &str) -> Principal {
    let now = time::OffsetDateTime::now_utc();
    let user = store
        .register_user(
            NewUser {
                id: UserId::generate(),
                username: Username::parse(username).expect("a valid username"),
                password_hash: PasswordHash::from_stored("x".into()),
                default_tier: Tier::Free,
                created_at: now,
            },
            RegistrationPolicy::Open,
            &AuditEntry::anonymous(username.into(), &RequestContext::default(), "register", now),
        )
        .await
        .expect("register the user");
    Principal {
        user_id: user.id.clone(),
        username: user.username.clone(),
        role: user.role,
        tier: Tier::Pro,
        scopes: user.role.scopes(),
        method: AuthMethod::Session {
            jti: "j".into(),
            family: FamilyId::generate(),
            expires_at: now,
        },
    }
}
