//! Tamper evidence for the audit log: an HMAC-SHA256 hash chain over every record.
//!
//! Each record stores `seq` (1, 2, … with no gaps), the previous record's hash and its own hash:
//! `HMAC(audit key, "koryphaios/audit/v1" ‖ seq ‖ prev_hash ‖ canonical content)`. Editing,
//! deleting or reordering a row breaks the chain at that row. Retention deletes a prefix and keeps
//! its last link as the [`ChainAnchor`] the remaining chain starts from.
//!
//! The audit key is a random 32-byte key wrapped by the key provider like a DEK (so it survives
//! master-key rotation and retirement: the re-wrap job re-wraps it too) and stored by the store.
//! Stores compute links with [`AuditKey::link`] inside the transaction that writes the record,
//! after the stored [`ChainHead`](super::head::ChainHead) (never after `MAX(seq)`), and move the
//! head in the same transaction; [`verify`](super::verify::verify) recomputes the links and checks that the chain still
//! reaches its head (else the tail was deleted: [`BreakKind::Truncated`]).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::AuditEntry;
use crate::clock::to_unix_ms;
use crate::envelope::{Dek, EnvelopeError, KmsError};
use crate::ids::UserId;
use crate::store_error::StoreError;

/// The hash a chain's first record links to.
pub const GENESIS: [u8; 32] = [0; 32];

/// Domain separation for the link MAC (a new canonical form gets a new tag).
const LINK_TAG: &[u8] = b"koryphaios/audit/v1";
/// Domain separation for the anchor MAC.
const ANCHOR_TAG: &[u8] = b"koryphaios/audit-anchor/v1";

/// The owner the audit key is wrapped for: no user, so no user's KEK context can unwrap it.
pub fn audit_key_owner() -> UserId {
    // Ids are `usr_` + 32 hex digits of a UUIDv7, which is never all zeros.
    UserId::parse("usr_00000000000000000000000000000000")
        .unwrap_or_else(|_| unreachable!("a well-formed constant id"))
}

/// The key the chain's MACs are computed with. Its bytes never leave this type.
pub struct AuditKey(pub(super) Dek);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl AuditKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, EnvelopeError> {
        Ok(Self(Dek::generate()?))
    }

    /// A key from its 32 bytes (tests, and keys restored from elsewhere).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Ok(Self(Dek::from_slice(bytes)?))
    }

    /// An HMAC-SHA256 instance under this key (for the head and checkpoint MACs beside this module).
    pub(super) fn keyed_mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }

    /// The MAC linking a record with `content` at `seq` after `prev`.
    pub fn link(&self, seq: i64, prev: &[u8], content: &CanonicalRecord<'_>) -> [u8; 32] {
        let mut mac = self.keyed_mac();
        mac.update(LINK_TAG);
        mac.update(&seq.to_be_bytes());
        field(&mut mac, Some(prev));
        content.feed(&mut mac);
        mac.finalize().into_bytes().into()
    }

    /// The MAC that makes an anchor unforgeable: only a purge holding the key can move it.
    pub fn anchor_mac(&self, seq: i64, hash: &[u8], purged_at_ms: i64) -> [u8; 32] {
        let mut mac = self.keyed_mac();
        mac.update(ANCHOR_TAG);
        mac.update(&seq.to_be_bytes());
        field(&mut mac, Some(hash));
        mac.update(&purged_at_ms.to_be_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// Where a store keeps its installed chain key: empty until the service installs it, after which
/// every audited write links with it. Writing with an empty slot fails (closed).
#[derive(Debug, Clone, Default)]
pub struct InstalledKey(std::sync::Arc<std::sync::OnceLock<std::sync::Arc<AuditKey>>>);

impl InstalledKey {
    /// Installs `key`; a second install is refused (the chain has one key).
    pub fn install(&self, key: std::sync::Arc<AuditKey>) -> Result<(), StoreError> {
        self.0
            .set(key)
            .map_err(|_| StoreError::Internal("the audit chain key is already installed".into()))
    }

    /// The installed key.
    pub fn get(&self) -> Result<&AuditKey, StoreError> {
        self.0.get().map(std::sync::Arc::as_ref).ok_or_else(|| {
            StoreError::Internal("the audit chain key is not installed; refusing to write".into())
        })
    }
}

/// Why the audit key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuditKeyError {
    /// The key provider failed.
    #[error("audit key: {0}")]
    Kms(#[from] KmsError),
    /// Randomness failed.
    #[error("audit key: {0}")]
    Envelope(#[from] EnvelopeError),
    /// Storage failed.
    #[error("audit key: {0}")]
    Store(#[from] StoreError),
    /// Records are linked but the key they were linked with is gone from the store.
    #[error(
        "the audit log is chained but its key is missing from the database; restore the audit_key row from a backup"
    )]
    Missing,
}

/// Feeds one length-prefixed field into `mac`.
pub(super) fn field(mac: &mut Hmac<Sha256>, value: Option<&[u8]>) {
    // Length-prefixed so field boundaries cannot shift; u32::MAX marks an absent value.
    match value {
        Some(bytes) => {
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX - 1);
            mac.update(&len.to_be_bytes());
            mac.update(bytes);
        }
        None => mac.update(&u32::MAX.to_be_bytes()),
    }
}

/// A record's content exactly as stored: what the link MAC covers.
#[derive(Debug, Clone, Copy)]
pub struct CanonicalRecord<'a> {
    /// The record id.
    pub id: &'a str,
    /// Unix milliseconds.
    pub occurred_at_ms: i64,
    /// The user.
    pub user_id: Option<&'a str>,
    /// The actor.
    pub actor: &'a str,
    /// The action.
    pub action: &'a str,
    /// The resource type.
    pub resource_type: Option<&'a str>,
    /// The resource id.
    pub resource_id: Option<&'a str>,
    /// The client IP.
    pub client_ip: Option<&'a str>,
    /// The user agent.
    pub user_agent: Option<&'a str>,
    /// The request id.
    pub request_id: Option<&'a str>,
    /// Success.
    pub success: bool,
    /// The reason.
    pub reason: Option<&'a str>,
    /// The metadata as its stored JSON text.
    pub metadata_json: &'a str,
}

impl<'a> CanonicalRecord<'a> {
    /// The canonical form of `entry` whose metadata serialises to `metadata_json`.
    pub fn of(entry: &'a AuditEntry, metadata_json: &'a str) -> Self {
        Self {
            id: entry.id.as_str(),
            occurred_at_ms: to_unix_ms(entry.occurred_at),
            user_id: entry.user_id.as_ref().map(UserId::as_str),
            actor: &entry.actor,
            action: &entry.action,
            resource_type: entry.resource_type.as_deref(),
            resource_id: entry.resource_id.as_deref(),
            client_ip: entry.client_ip.as_deref(),
            user_agent: entry.user_agent.as_deref(),
            request_id: entry.request_id.as_deref(),
            success: entry.success,
            reason: entry.reason.as_deref(),
            metadata_json,
        }
    }

    fn feed(&self, mac: &mut Hmac<Sha256>) {
        fn text(value: Option<&str>) -> Option<&[u8]> {
            value.map(str::as_bytes)
        }
        field(mac, Some(self.id.as_bytes()));
        field(mac, Some(&self.occurred_at_ms.to_be_bytes()));
        field(mac, text(self.user_id));
        field(mac, Some(self.actor.as_bytes()));
        field(mac, Some(self.action.as_bytes()));
        field(mac, text(self.resource_type));
        field(mac, text(self.resource_id));
        field(mac, text(self.client_ip));
        field(mac, text(self.user_agent));
        field(mac, text(self.request_id));
        field(mac, Some(&[u8::from(self.success)]));
        field(mac, text(self.reason));
        field(mac, Some(self.metadata_json.as_bytes()));
    }
}

/// One stored record with its links, as read back for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRecord {
    /// Position in the chain.
    pub seq: i64,
    /// The previous record's hash, as stored.
    pub prev_hash: Vec<u8>,
    /// This record's hash, as stored.
    pub hash: Vec<u8>,
    /// The record id.
    pub id: String,
    /// Unix milliseconds.
    pub occurred_at_ms: i64,
    /// The user.
    pub user_id: Option<String>,
    /// The actor.
    pub actor: String,
    /// The action.
    pub action: String,
    /// The resource type.
    pub resource_type: Option<String>,
    /// The resource id.
    pub resource_id: Option<String>,
    /// The client IP.
    pub client_ip: Option<String>,
    /// The user agent.
    pub user_agent: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// Success.
    pub success: bool,
    /// The reason.
    pub reason: Option<String>,
    /// The metadata's stored JSON text.
    pub metadata_json: String,
}

impl ChainRecord {
    /// The content the link covers.
    pub fn canonical(&self) -> CanonicalRecord<'_> {
        CanonicalRecord {
            id: &self.id,
            occurred_at_ms: self.occurred_at_ms,
            user_id: self.user_id.as_deref(),
            actor: &self.actor,
            action: &self.action,
            resource_type: self.resource_type.as_deref(),
            resource_id: self.resource_id.as_deref(),
            client_ip: self.client_ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            request_id: self.request_id.as_deref(),
            success: self.success,
            reason: self.reason.as_deref(),
            metadata_json: &self.metadata_json,
        }
    }
}

/// Where the remaining chain starts after retention purged a prefix: the last purged link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainAnchor {
    /// The last purged record's position.
    pub seq: i64,
    /// The last purged record's hash.
    pub hash: Vec<u8>,
    /// When the purge ran (Unix ms).
    pub purged_at_ms: i64,
    /// [`AuditKey::anchor_mac`] over the three fields above.
    pub mac: Vec<u8>,
}

/// The last position a purge deletes: the end of the longest prefix whose records are all
/// expired (everything before `first_kept`, the oldest record still in retention; everything up
/// to `newest` when none is), at most `max_records` past `oldest`. Below `oldest` (or 0) means
/// there is nothing to delete.
pub fn purge_boundary(
    first_kept: Option<i64>,
    newest: Option<i64>,
    oldest: Option<i64>,
    max_records: u32,
) -> i64 {
    let prefix_end = match (first_kept, newest) {
        (Some(first), _) => first - 1,
        (None, Some(newest)) => newest,
        (None, None) => 0,
    };
    oldest.map_or(prefix_end, |oldest| {
        prefix_end.min(oldest.saturating_add(i64::from(max_records)) - 1)
    })
}

/// Why a link is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// The record's content or hash does not match its MAC (edited row).
    ContentMismatch,
    /// The record does not link to the record before it (a row before it was edited or replaced).
    BrokenLink,
    /// A position is missing or out of order (deleted or reordered rows).
    SequenceGap,
    /// The retention anchor was not written by a purge holding the key.
    ForgedAnchor,
    /// A record outside the chain (inserted, or unlinked to hide it from verification).
    Unlinked,
    /// The chain ends before its stored head (or its record at the head's position has another
    /// hash): the newest records were deleted.
    Truncated,
    /// The head row is missing from a chain with records, or was not written by a holder of the key.
    ForgedHead,
}

impl BreakKind {
    /// The stable name used in API responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ContentMismatch => "content_mismatch",
            Self::BrokenLink => "broken_link",
            Self::SequenceGap => "sequence_gap",
            Self::ForgedAnchor => "forged_anchor",
            Self::Unlinked => "unlinked_record",
            Self::Truncated => "truncated",
            Self::ForgedHead => "forged_head",
        }
    }
}

/// The first record at which the chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// The position the verifier expected (for `Truncated`: the first missing record).
    pub expected_seq: i64,
    /// The record found there (for `Truncated` and `ForgedHead`: the stored head's position).
    pub seq: i64,
    /// Its id (`anchor` or `head` when the break is in those rows).
    pub id: String,
    /// What is wrong.
    pub kind: BreakKind,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// How many records were checked.
    pub checked: u64,
    /// Where the chain starts (0 when nothing was purged).
    pub anchor_seq: i64,
    /// The last position checked.
    pub last_seq: i64,
    /// The stored head's position when verification started (`None`: no head row).
    pub head_seq: Option<i64>,
    /// The first broken link, if any.
    pub first_broken: Option<BrokenLink>,
}

impl ChainReport {
    /// Whether every link verified.
    pub fn is_valid(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// An anchor's MAC checks out.
pub(super) fn anchor_is_genuine(key: &AuditKey, anchor: &ChainAnchor) -> bool {
    constant_time_eq(
        &key.anchor_mac(anchor.seq, &anchor.hash, anchor.purged_at_ms),
        &anchor.mac,
    )
}

/// Compares a computed MAC with a stored one in constant time.
pub(super) fn constant_time_eq(expected: &[u8; 32], stored: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    stored.len() == expected.len() && bool::from(expected.as_slice().ct_eq(stored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEntry;
    use crate::audit::RequestContext;

    fn entry() -> AuditEntry {
        AuditEntry::anonymous(
            "ip:192.0.2.1".into(),
            &RequestContext::default(),
            "login",
            time::OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn links_depend_on_key_position_predecessor_and_every_field() {
        let key = AuditKey::generate().unwrap();
        let entry = entry();
        let base = key.link(1, &GENESIS, &CanonicalRecord::of(&entry, "{}"));
        assert_eq!(
            base,
            key.link(1, &GENESIS, &CanonicalRecord::of(&entry, "{}"))
        );
        assert_ne!(
            base,
            key.link(2, &GENESIS, &CanonicalRecord::of(&entry, "{}"))
        );
        assert_ne!(
            base,
            key.link(1, &[1; 32], &CanonicalRecord::of(&entry, "{}"))
        );
        assert_ne!(
            base,
            key.link(1, &GENESIS, &CanonicalRecord::of(&entry, "{\"a\":1}"))
        );
        let other_key = AuditKey::generate().unwrap();
        assert_ne!(
            base,
            other_key.link(1, &GENESIS, &CanonicalRecord::of(&entry, "{}"))
        );
        let mut changed = entry.clone();
        changed.success = true;
        assert_ne!(
            base,
            key.link(1, &GENESIS, &CanonicalRecord::of(&changed, "{}"))
        );
        // Moving text between adjacent fields changes the MAC (length prefixes).
        let mut shifted = entry.clone();
        shifted.actor = "ip:192.0.2.1l".into();
        shifted.action = "ogin".into();
        assert_ne!(
            base,
            key.link(1, &GENESIS, &CanonicalRecord::of(&shifted, "{}"))
        );
        let mut absent = entry;
        absent.reason = Some(String::new());
        assert_ne!(
            base,
            key.link(1, &GENESIS, &CanonicalRecord::of(&absent, "{}"))
        );
    }

    #[test]
    fn the_key_never_prints() {
        let key = AuditKey::generate().unwrap();
        assert_eq!(format!("{key:?}"), "AuditKey(<redacted>)");
    }
}
