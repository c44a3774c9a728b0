//! Verifying the audit chain as stored: every link, the anchor, and the head.

use super::chain::{
    AuditKey, BreakKind, BrokenLink, ChainReport, GENESIS, anchor_is_genuine, constant_time_eq,
};
use crate::store::AuditStore;
use crate::store_error::StoreError;

/// Records read per page while verifying.
const VERIFY_PAGE: u32 = 1_000;

/// Recomputes every link from the anchor (or genesis) on and reports the first broken one.
/// Records outside the chain and a forged anchor are breaks too.
///
/// The head is read first: records written while this runs are past it and not held against the
/// chain, and every record up to it was committed with it, so a chain that stops short of the head
/// was truncated.
pub async fn verify(store: &dyn AuditStore, key: &AuditKey) -> Result<ChainReport, StoreError> {
    let head = store.audit_chain_head().await?;
    let anchor = store.audit_chain_anchor().await?;
    let broken = |expected_seq: i64, seq: i64, id: String, kind: BreakKind| BrokenLink {
        expected_seq,
        seq,
        id,
        kind,
    };
    let (anchor_seq, mut prev_hash) = match &anchor {
        Some(anchor) => (anchor.seq, anchor.hash.clone()),
        None => (0, GENESIS.to_vec()),
    };
    let mut report = ChainReport {
        checked: 0,
        anchor_seq,
        last_seq: anchor_seq,
        head_seq: head.as_ref().map(|h| h.seq),
        first_broken: None,
    };
    if let Some(anchor) = &anchor
        && !anchor_is_genuine(key, anchor)
    {
        report.first_broken = Some(broken(
            anchor.seq + 1,
            anchor.seq,
            "anchor".into(),
            BreakKind::ForgedAnchor,
        ));
        return Ok(report);
    }
    if let Some(id) = store.unlinked_audit_ids(1).await?.into_iter().next() {
        report.first_broken = Some(broken(0, 0, id, BreakKind::Unlinked));
        return Ok(report);
    }
    match &head {
        Some(head) if !head.is_genuine(key) => {
            report.first_broken = Some(broken(
                anchor_seq + 1,
                head.seq,
                "head".into(),
                BreakKind::ForgedHead,
            ));
            return Ok(report);
        }
        None if anchor.is_some() || !store.audit_chain_page(0, 1).await?.is_empty() => {
            report.first_broken = Some(broken(
                anchor_seq + 1,
                0,
                "head".into(),
                BreakKind::ForgedHead,
            ));
            return Ok(report);
        }
        _ => {}
    }
    let mut after = anchor_seq;
    loop {
        let page = store.audit_chain_page(after, VERIFY_PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.seq;
        for record in &page {
            let mut expected_seq = report.last_seq + 1;
            if record.seq != expected_seq {
                // Retention may have purged past us while we read: continue from its new anchor
                // if that anchor is genuine and this record follows it.
                if let Some(anchor) = store.audit_chain_anchor().await?
                    && anchor.seq + 1 == record.seq
                    && anchor.seq > report.last_seq
                    && anchor.hash == record.prev_hash
                    && anchor_is_genuine(key, &anchor)
                {
                    report.anchor_seq = anchor.seq;
                    report.last_seq = anchor.seq;
                    prev_hash.clone_from(&anchor.hash);
                    expected_seq = record.seq;
                }
            }
            let kind = if record.seq != expected_seq {
                Some(BreakKind::SequenceGap)
            } else if record.prev_hash != prev_hash {
                Some(BreakKind::BrokenLink)
            } else if !constant_time_eq(
                &key.link(record.seq, &record.prev_hash, &record.canonical()),
                &record.hash,
            ) {
                Some(BreakKind::ContentMismatch)
            } else if head
                .as_ref()
                .is_some_and(|head| head.seq == record.seq && head.hash != record.hash)
            {
                Some(BreakKind::Truncated)
            } else {
                None
            };
            if let Some(kind) = kind {
                report.first_broken =
                    Some(broken(expected_seq, record.seq, record.id.clone(), kind));
                return Ok(report);
            }
            report.checked += 1;
            report.last_seq = record.seq;
            prev_hash.clone_from(&record.hash);
        }
    }
    if let Some(head) = &head
        && head.seq > report.last_seq
    {
        // Retention may have purged the head's record while we read (the chain then continues
        // from a genuine anchor at or past it); otherwise the newest records are gone.
        let purged_past = store.audit_chain_anchor().await?.is_some_and(|anchor| {
            anchor.seq >= head.seq
                && anchor_is_genuine(key, &anchor)
                && (anchor.seq > head.seq || anchor.hash == head.hash)
        });
        if !purged_past {
            report.first_broken = Some(broken(
                report.last_seq + 1,
                head.seq,
                "head".into(),
                BreakKind::Truncated,
            ));
        }
    }
    Ok(report)
}
