//! Rate-limit tiers: every user has one, and an API key carries one no higher than its owner's.

/// Rate-limit tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// 60 requests/minute by default.
    Free,
    /// 300 requests/minute by default.
    Premium,
    /// 1000 requests/minute by default.
    Pro,
    /// 5000 requests/minute by default.
    Enterprise,
}

impl Tier {
    /// Every tier, in order.
    pub const ALL: [Tier; 4] = [Tier::Free, Tier::Premium, Tier::Pro, Tier::Enterprise];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Premium => "premium",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }

    /// Parses a tier name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tier| tier.as_str() == raw)
    }
}
