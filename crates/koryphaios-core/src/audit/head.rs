//! The chain head: the newest link's position, hash and time, kept in one row beside the records
//! and sealed with an HMAC under the audit key.
//!
//! Every audit insert reads the head, links its records after it and moves it, in the same
//! transaction (under the chain lock). New records therefore never reuse the positions of deleted
//! ones, and deleting the newest records leaves the head pointing past the end of the chain, which
//! [`verify`](super::verify::verify) reports as `truncated`. Rewriting the head to hide that needs
//! the key. What a database-level attacker can still do is roll the records *and* the head back
//! together to an earlier genuine state (or delete the row and restart the service, which then
//! re-initialises it with a warning): only an outside witness sees that, the
//! `audit_chain_head_seq` gauge's history or a [`Checkpoint`](super::checkpoint::Checkpoint).

use hmac::Mac as _;

use super::AuditEntry;
use super::chain::{AuditKey, CanonicalRecord, GENESIS, constant_time_eq, field};
use crate::clock::to_unix_ms;
use crate::store_error::{StoreError, StoreResult};

/// Domain separation for the head MAC.
const HEAD_TAG: &[u8] = b"koryphaios/audit-head/v1";

/// The chain's newest link, as stored in the head row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// The newest record's position (0: nothing written yet).
    pub seq: i64,
    /// The newest record's hash ([`GENESIS`] when nothing was written).
    pub hash: Vec<u8>,
    /// When the newest record happened (Unix ms; 0 when nothing was written).
    pub occurred_at_ms: i64,
    /// [`ChainHead::mac_of`] over the three fields above.
    pub mac: Vec<u8>,
}

impl ChainHead {
    /// The head of an empty chain.
    pub fn genesis(key: &AuditKey) -> Self {
        Self::sealed(key, 0, GENESIS.to_vec(), 0)
    }

    /// A head at `seq` with `hash`, sealed with `key`.
    pub fn sealed(key: &AuditKey, seq: i64, hash: Vec<u8>, occurred_at_ms: i64) -> Self {
        let mac = Self::mac_of(key, seq, &hash, occurred_at_ms).to_vec();
        Self {
            seq,
            hash,
            occurred_at_ms,
            mac,
        }
    }

    /// The head MAC: `HMAC(key, "koryphaios/audit-head/v1" ‖ seq ‖ hash ‖ occurred_at)`.
    pub fn mac_of(key: &AuditKey, seq: i64, hash: &[u8], occurred_at_ms: i64) -> [u8; 32] {
        let mut mac = key.keyed_mac();
        mac.update(HEAD_TAG);
        mac.update(&seq.to_be_bytes());
        field(&mut mac, Some(hash));
        mac.update(&occurred_at_ms.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether the MAC checks out (only a holder of the key wrote this head).
    pub fn is_genuine(&self, key: &AuditKey) -> bool {
        constant_time_eq(
            &Self::mac_of(key, self.seq, &self.hash, self.occurred_at_ms),
            &self.mac,
        )
    }
}

/// One record ready to insert: its content as stored and its links.
#[derive(Debug, Clone)]
pub struct NewLink<'a> {
    /// The record.
    pub entry: &'a AuditEntry,
    /// Its metadata as the stored JSON text (what the link covers).
    pub metadata_json: String,
    /// Its position.
    pub seq: i64,
    /// The hash it follows.
    pub prev_hash: Vec<u8>,
    /// Its own hash.
    pub hash: Vec<u8>,
}

/// Links `entries`, in order, after the stored `head`, and returns the links with the new head.
/// A missing or forged head is refused (the write fails closed): continuing after it would seal
/// whatever an attacker wrote there.
pub fn extend<'a>(
    key: &AuditKey,
    head: Option<ChainHead>,
    entries: &[&'a AuditEntry],
) -> StoreResult<(Vec<NewLink<'a>>, ChainHead)> {
    let head = head.ok_or_else(|| {
        StoreError::Internal(
            "the audit chain head row is missing; refusing to write (restart the service to re-initialise it, and check the audit log)".into(),
        )
    })?;
    if !head.is_genuine(key) {
        return Err(StoreError::Internal(
            "the audit chain head row does not carry a valid MAC (edited?); refusing to write"
                .into(),
        ));
    }
    let (mut seq, mut prev_hash, mut occurred_at_ms) = (head.seq, head.hash, head.occurred_at_ms);
    let mut links = Vec::with_capacity(entries.len());
    for entry in entries {
        let metadata_json = serde_json::to_string(&entry.metadata)
            .map_err(|e| StoreError::Internal(format!("audit metadata: {e}")))?;
        seq += 1;
        let hash = key
            .link(seq, &prev_hash, &CanonicalRecord::of(entry, &metadata_json))
            .to_vec();
        occurred_at_ms = to_unix_ms(entry.occurred_at);
        links.push(NewLink {
            entry,
            metadata_json,
            seq,
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        });
    }
    Ok((
        links,
        ChainHead::sealed(key, seq, prev_hash, occurred_at_ms),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::RequestContext;

    fn entry() -> AuditEntry {
        AuditEntry::anonymous(
            "ip:192.0.2.1".into(),
            &RequestContext::default(),
            "login",
            time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(5),
        )
    }

    #[test]
    fn extending_continues_from_the_head_and_seals_the_new_one() {
        let key = AuditKey::from_bytes(&[7; 32]).unwrap();
        let head = ChainHead::sealed(&key, 41, vec![9; 32], 1);
        let (first, second) = (entry(), entry());
        let (links, new_head) = extend(&key, Some(head), &[&first, &second]).unwrap();
        assert_eq!(links.iter().map(|l| l.seq).collect::<Vec<_>>(), [42, 43]);
        assert_eq!(links[0].prev_hash, vec![9; 32]);
        assert_eq!(links[1].prev_hash, links[0].hash);
        assert_eq!(
            (new_head.seq, &new_head.hash, new_head.occurred_at_ms),
            (43, &links[1].hash, 5_000)
        );
        assert!(new_head.is_genuine(&key));
    }

    #[test]
    fn a_missing_or_forged_head_is_refused() {
        let key = AuditKey::from_bytes(&[7; 32]).unwrap();
        let record = entry();
        assert!(extend(&key, None, &[&record]).is_err());
        let mut forged = ChainHead::sealed(&key, 10, vec![1; 32], 0);
        forged.seq = 3;
        assert!(!forged.is_genuine(&key));
        assert!(extend(&key, Some(forged), &[&record]).is_err());
        let other_key = AuditKey::from_bytes(&[8; 32]).unwrap();
        assert!(!ChainHead::genesis(&other_key).is_genuine(&key));
        assert!(ChainHead::genesis(&key).is_genuine(&key));
    }
}
