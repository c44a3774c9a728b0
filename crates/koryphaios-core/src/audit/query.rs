//! Reading the audit log: the query the API validates into, the page it returns, and the
//! per-user activity signals behind `/audit/suspicious`.

use time::OffsetDateTime;

use super::AuditEntry;
use crate::ids::UserId;

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart {
    /// Skip this many matching records (newest first).
    Offset(u64),
    /// Records older than the one at this chain position (from a cursor).
    Before(i64),
}

/// A validated audit query. Every filter is optional; records come newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this user's records.
    pub user_id: Option<UserId>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this resource type.
    pub resource_type: Option<String>,
    /// Only this resource id.
    pub resource_id: Option<String>,
    /// Only records caused by agent tokens of this run.
    pub run_id: Option<String>,
    /// At or after this instant.
    pub start: Option<OffsetDateTime>,
    /// At or before this instant.
    pub end: Option<OffsetDateTime>,
    /// Only successes (`true`) or failures (`false`).
    pub success: Option<bool>,
    /// At most this many records.
    pub limit: u32,
    /// Where the page starts.
    pub page: PageStart,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            user_id: None,
            action: None,
            resource_type: None,
            resource_id: None,
            run_id: None,
            start: None,
            end: None,
            success: None,
            limit: 100,
            page: PageStart::Offset(0),
        }
    }
}

/// A stored record with its chain position (the cursor of the next page).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAuditEntry {
    /// Position in the chain.
    pub seq: i64,
    /// The record.
    pub entry: AuditEntry,
}

/// Counts of one user's notable events in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityCounts {
    /// The user.
    pub user_id: UserId,
    /// Failed logins.
    pub failed_logins: u64,
    /// Credential reveals.
    pub reveals: u64,
    /// Refusals (403s and rate limits).
    pub denials: u64,
    /// Distinct client IPs seen.
    pub distinct_ips: u64,
}

/// The levels at or above which a count is suspicious.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuspicionThresholds {
    /// Failed logins.
    pub failed_logins: u64,
    /// Reveals.
    pub reveals: u64,
    /// Denials.
    pub denials: u64,
    /// Distinct IPs.
    pub distinct_ips: u64,
}

impl Default for SuspicionThresholds {
    fn default() -> Self {
        Self {
            failed_logins: 5,
            reveals: 100,
            denials: 20,
            distinct_ips: 5,
        }
    }
}

impl SuspicionThresholds {
    /// The names of the signals `counts` trips, in a stable order (empty: nothing suspicious).
    pub fn signals(&self, counts: &ActivityCounts) -> Vec<&'static str> {
        [
            (counts.failed_logins >= self.failed_logins, "failed_logins"),
            (counts.reveals >= self.reveals, "reveal_burst"),
            (counts.denials >= self.denials, "denials"),
            (counts.distinct_ips >= self.distinct_ips, "many_ips"),
        ]
        .into_iter()
        .filter_map(|(tripped, name)| tripped.then_some(name))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_trip_at_their_threshold() {
        let thresholds = SuspicionThresholds::default();
        let mut counts = ActivityCounts {
            user_id: UserId::generate(),
            failed_logins: 4,
            reveals: 0,
            denials: 0,
            distinct_ips: 1,
        };
        assert!(thresholds.signals(&counts).is_empty());
        counts.failed_logins = 5;
        counts.distinct_ips = 9;
        assert_eq!(thresholds.signals(&counts), ["failed_logins", "many_ips"]);
    }
}
