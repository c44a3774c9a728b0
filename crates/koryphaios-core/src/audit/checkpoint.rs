//! Checkpoints: the chain head written down outside the database, so that a later check can tell
//! whether the chain still contains that record with that hash.
//!
//! `koryphaios audit checkpoint` prints `kcp1.<seq>.<hash>.<mac>` (base64url, no padding), where
//! the MAC is `HMAC(audit key, "koryphaios/audit-checkpoint/v1" ‖ seq ‖ hash)`: domain-separated
//! from the link, anchor and head MACs, so no stored value can be passed off as a checkpoint.
//! `koryphaios audit verify --checkpoint …` then fails when the record at `seq` is gone (the
//! database was truncated or rolled back past it), has another hash (rewritten), or the MAC does
//! not check (not issued with this key). The checkpoint is only as good as where it is kept: a
//! ticket, a chat message, anywhere the database's attacker cannot edit.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;

use super::chain::{AuditKey, anchor_is_genuine, constant_time_eq, field};
use super::head::ChainHead;
use crate::store::{AuditStore, StoreResult};

/// Domain separation for the checkpoint MAC.
const CHECKPOINT_TAG: &[u8] = b"koryphaios/audit-checkpoint/v1";
/// The text form's version prefix.
const PREFIX: &str = "kcp1";

/// A chain position and its hash, with a MAC under the audit key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The record's position.
    pub seq: i64,
    /// The record's hash.
    pub hash: Vec<u8>,
    /// [`Checkpoint::mac_of`] over the two fields above.
    pub mac: Vec<u8>,
}

/// The text was not a checkpoint this service prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a checkpoint: expected kcp1.<seq>.<hash>.<mac> as printed by `koryphaios audit checkpoint`"
)]
pub struct MalformedCheckpoint;

impl Checkpoint {
    /// A checkpoint of `head`.
    pub fn of(key: &AuditKey, head: &ChainHead) -> Self {
        Self {
            seq: head.seq,
            hash: head.hash.clone(),
            mac: Self::mac_of(key, head.seq, &head.hash).to_vec(),
        }
    }

    /// The checkpoint MAC.
    pub fn mac_of(key: &AuditKey, seq: i64, hash: &[u8]) -> [u8; 32] {
        let mut mac = key.keyed_mac();
        mac.update(CHECKPOINT_TAG);
        mac.update(&seq.to_be_bytes());
        field(&mut mac, Some(hash));
        mac.finalize().into_bytes().into()
    }

    /// The copy-pasteable text form.
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}.{}.{}.{}",
            self.seq,
            URL_SAFE_NO_PAD.encode(&self.hash),
            URL_SAFE_NO_PAD.encode(&self.mac)
        )
    }

    /// Parses the text form (surrounding whitespace allowed).
    pub fn parse(raw: &str) -> Result<Self, MalformedCheckpoint> {
        let mut parts = raw.trim().split('.');
        let (Some(PREFIX), Some(seq), Some(hash), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(MalformedCheckpoint);
        };
        let seq: i64 = seq.parse().map_err(|_| MalformedCheckpoint)?;
        let hash = URL_SAFE_NO_PAD
            .decode(hash)
            .map_err(|_| MalformedCheckpoint)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| MalformedCheckpoint)?;
        if seq < 0 || hash.len() != 32 || mac.len() != 32 {
            return Err(MalformedCheckpoint);
        }
        Ok(Self { seq, hash, mac })
    }

    fn is_genuine(&self, key: &AuditKey) -> bool {
        constant_time_eq(&Self::mac_of(key, self.seq, &self.hash), &self.mac)
    }
}

/// What checking a checkpoint against the stored chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointVerdict {
    /// The chain still holds the record with that hash.
    Present,
    /// Retention purged the record; the chain's genuine anchor is at or past it, so the chain was
    /// not cut back before it (the record's hash can no longer be compared unless it is the anchor).
    Purged {
        /// Where the chain now starts.
        anchor_seq: i64,
    },
    /// The MAC does not check: not issued with this audit key (or edited).
    NotIssuedWithThisKey,
    /// The record is gone: the chain was truncated or rolled back past it, or the row deleted.
    Missing {
        /// The checkpoint's position.
        seq: i64,
        /// Where the stored head is now (if there is one).
        head_seq: Option<i64>,
    },
    /// A record is at that position but with another hash: the chain was rewritten.
    Rewritten {
        /// The checkpoint's position.
        seq: i64,
    },
}

impl CheckpointVerdict {
    /// Whether the chain still contains the checkpoint.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Present | Self::Purged { .. })
    }

    /// The stable name used in API responses.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Purged { .. } => "purged",
            Self::NotIssuedWithThisKey => "invalid_mac",
            Self::Missing { .. } => "missing",
            Self::Rewritten { .. } => "rewritten",
        }
    }

    /// One sentence for people.
    pub fn describe(&self) -> String {
        match self {
            Self::Present => "the chain still contains the checkpoint's record".into(),
            Self::Purged { anchor_seq } => format!(
                "retention purged the checkpoint's record; the chain continues from position {anchor_seq}"
            ),
            Self::NotIssuedWithThisKey => {
                "the checkpoint's MAC does not check: it was not issued with this audit key, or was edited".into()
            }
            Self::Missing { seq, head_seq } => format!(
                "the chain no longer contains the checkpoint's record at position {seq} (truncated, rolled back or deleted); the stored head is at {}",
                head_seq.map_or_else(|| "no position (missing)".to_owned(), |s| s.to_string())
            ),
            Self::Rewritten { seq } => format!(
                "the record at position {seq} has another hash than the checkpoint's: the chain was rewritten"
            ),
        }
    }
}

/// Checks `checkpoint` against the stored chain.
pub async fn check(
    store: &dyn AuditStore,
    key: &AuditKey,
    checkpoint: &Checkpoint,
) -> StoreResult<CheckpointVerdict> {
    if !checkpoint.is_genuine(key) {
        return Ok(CheckpointVerdict::NotIssuedWithThisKey);
    }
    if checkpoint.seq == 0 {
        // The empty chain's head: every chain contains it.
        return Ok(CheckpointVerdict::Present);
    }
    if let Some(anchor) = store.audit_chain_anchor().await?
        && anchor.seq >= checkpoint.seq
        && anchor_is_genuine(key, &anchor)
    {
        if anchor.seq == checkpoint.seq && anchor.hash != checkpoint.hash {
            return Ok(CheckpointVerdict::Rewritten {
                seq: checkpoint.seq,
            });
        }
        return Ok(CheckpointVerdict::Purged {
            anchor_seq: anchor.seq,
        });
    }
    let found = store.audit_chain_page(checkpoint.seq - 1, 1).await?;
    match found.first() {
        Some(record) if record.seq == checkpoint.seq => {
            if record.hash == checkpoint.hash {
                Ok(CheckpointVerdict::Present)
            } else {
                Ok(CheckpointVerdict::Rewritten {
                    seq: checkpoint.seq,
                })
            }
        }
        _ => Ok(CheckpointVerdict::Missing {
            seq: checkpoint.seq,
            head_seq: store.audit_chain_head().await?.map(|head| head.seq),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_as_text_and_reject_other_text() {
        let key = AuditKey::from_bytes(&[3; 32]).unwrap();
        let checkpoint = Checkpoint::of(&key, &ChainHead::sealed(&key, 12, vec![5; 32], 9));
        let text = checkpoint.encode();
        assert!(text.starts_with("kcp1.12."), "{text}");
        assert_eq!(
            Checkpoint::parse(&format!(" {text}\n")),
            Ok(checkpoint.clone())
        );
        assert!(checkpoint.is_genuine(&key));
        for bad in [
            "",
            "kcp1",
            "kcp2.12.AAAA.AAAA",
            "kcp1.-1.AAAA.AAAA",
            "kcp1.x.AAAA.AAAA",
            &text.replace("kcp1.12.", "kcp1.12.!"),
            &format!("{text}.extra"),
        ] {
            assert_eq!(Checkpoint::parse(bad), Err(MalformedCheckpoint), "{bad}");
        }
    }

    #[test]
    fn the_checkpoint_mac_is_separate_from_the_head_mac() {
        let key = AuditKey::from_bytes(&[3; 32]).unwrap();
        let head = ChainHead::sealed(&key, 12, vec![5; 32], 0);
        assert_ne!(Checkpoint::of(&key, &head).mac, head.mac);
        let mut moved = Checkpoint::of(&key, &head);
        moved.seq = 11;
        assert!(!moved.is_genuine(&key));
    }
}
