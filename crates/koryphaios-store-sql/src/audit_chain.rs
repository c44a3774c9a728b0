//! The audit hash chain as written: [`insert_audit`], the one function every audit write goes
//! through, inside the transaction of the change it records, and the stored head it links after.
//! Writers of the one chain are serialised by [`Backend::lock_audit_chain`] (SQLite's single
//! writer; a transaction-scoped advisory lock on PostgreSQL, across instances).

use koryphaios_core::audit::chain::{AuditKey, GENESIS, InstalledKey};
use koryphaios_core::audit::head::{self, ChainHead, NewLink};
use koryphaios_core::audit::{AuditEntry, observe_committed};
use koryphaios_core::clock::to_unix_ms;
use koryphaios_core::store::StoreResult;
use sqlx::Transaction;

use crate::backend::{Backend, Conn};
use crate::driver::{Columns, Query};

/// The newest link by the records themselves: the newest record, else the purge anchor, else
/// genesis, with its time. Only for linking pre-chain records and initialising a missing head:
/// writes link after the stored head.
pub(crate) async fn newest_link<B: Backend>(
    conn: &mut Conn<B>,
) -> StoreResult<(i64, Vec<u8>, i64)> {
    let newest = Query::<B::Db>::new(
        "SELECT seq, hash, occurred_at FROM audit_events
         WHERE seq = (SELECT MAX(seq) FROM audit_events)",
    )
    .fetch_optional(conn)
    .await
    .map_err(B::map_err)?;
    let head = match newest {
        Some(row) => Some(row),
        None => Query::<B::Db>::new(
            "SELECT seq, hash, purged_at AS occurred_at FROM audit_chain_anchor WHERE id = 1",
        )
        .fetch_optional(conn)
        .await
        .map_err(B::map_err)?,
    };
    match head {
        Some(row) => Ok((
            row.try_get("seq").map_err(B::map_err)?,
            row.try_get("hash").map_err(B::map_err)?,
            row.try_get("occurred_at").map_err(B::map_err)?,
        )),
        None => Ok((0, GENESIS.to_vec(), 0)),
    }
}

pub(crate) async fn read_head<B: Backend>(conn: &mut Conn<B>) -> StoreResult<Option<ChainHead>> {
    let row = Query::<B::Db>::new(
        "SELECT seq, hash, occurred_at, mac FROM audit_chain_head WHERE id = 1",
    )
    .fetch_optional(conn)
    .await
    .map_err(B::map_err)?;
    row.map(|row| {
        Ok(ChainHead {
            seq: row.try_get("seq")?,
            hash: row.try_get("hash")?,
            occurred_at_ms: row.try_get("occurred_at")?,
            mac: row.try_get("mac")?,
        })
    })
    .transpose()
    .map_err(B::map_err)
}

/// Appends the upsert that stores `head` to `sql`.
fn push_write_head<B: Backend>(sql: &mut Query<B::Db>, head: &ChainHead) {
    sql.push("INSERT INTO audit_chain_head (id, seq, hash, occurred_at, mac) VALUES (1, ")
        .push_bind(head.seq)
        .push(", ")
        .push_bind(head.hash.as_slice())
        .push(", ")
        .push_bind(head.occurred_at_ms)
        .push(", ")
        .push_bind(head.mac.as_slice())
        .push(
            ") ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
               occurred_at = excluded.occurred_at, mac = excluded.mac",
        );
}

pub(crate) async fn write_head<B: Backend>(
    conn: &mut Conn<B>,
    head: &ChainHead,
) -> StoreResult<()> {
    let mut sql = Query::<B::Db>::new("");
    push_write_head::<B>(&mut sql, head);
    sql.execute(conn).await.map_err(B::map_err)?;
    Ok(())
}

/// The stored head; for a log with no record and no anchor at all (say, after `migrate down`
/// and `up` under a running service), the empty chain's head, as there is nothing to hide.
async fn head_or_genesis<B: Backend>(
    key: &AuditKey,
    conn: &mut Conn<B>,
) -> StoreResult<Option<ChainHead>> {
    if let Some(head) = read_head::<B>(conn).await? {
        return Ok(Some(head));
    }
    let (seq, _, _) = newest_link::<B>(conn).await?;
    Ok((seq == 0).then(|| ChainHead::genesis(key)))
}

/// Writes `entry` on `conn` (the caller's transaction) as the chain's next link: if this fails,
/// the change fails with it. The chain lock, held to the end of the caller's transaction, keeps
/// one chain across connections and instances; callers write their record last, so the lock is
/// held only for the insert and the commit (and a transaction holding it never waits for a row).
async fn insert_audit<B: Backend>(
    chain: &InstalledKey,
    conn: &mut Conn<B>,
    entry: &AuditEntry,
) -> StoreResult<()> {
    insert_audit_batch::<B>(chain, conn, &[entry]).await
}

/// The start of an insert of audit records; [`push_record`] adds each one's values.
const INSERT_RECORDS: &str = "INSERT INTO audit_events (id, occurred_at, user_id, actor, action,
    resource_type, resource_id, client_ip, user_agent, request_id, success, reason, metadata, seq,
    prev_hash, hash) VALUES ";

/// Appends one record's parenthesised values to an insert begun with [`INSERT_RECORDS`].
fn push_record<B: Backend>(insert: &mut Query<B::Db>, link: &NewLink<'_>) {
    let entry = link.entry;
    insert
        .push("(")
        .push_bind(entry.id.as_str())
        .push(", ")
        .push_bind(to_unix_ms(entry.occurred_at))
        .push(", ")
        .push_bind(entry.user_id.as_ref().map(|id| id.as_str()))
        .push(", ")
        .push_bind(entry.actor.as_str())
        .push(", ")
        .push_bind(entry.action.as_str())
        .push(", ")
        .push_bind(entry.resource_type.as_deref())
        .push(", ")
        .push_bind(entry.resource_id.as_deref())
        .push(", ")
        .push_bind(entry.client_ip.as_deref())
        .push(", ")
        .push_bind(entry.user_agent.as_deref())
        .push(", ")
        .push_bind(entry.request_id.as_deref())
        .push(", ")
        .push_bind(entry.success)
        .push(", ")
        .push_bind(entry.reason.as_deref())
        .push(", ")
        .push_bind(link.metadata_json.as_str())
        .push(", ")
        .push_bind(link.seq)
        .push(", ")
        .push_bind(link.prev_hash.as_slice())
        .push(", ")
        .push_bind(link.hash.as_slice())
        .push(")");
}

/// Writes `entries` as the chain's next links after the stored head, in order, taking the chain
/// lock, reading the head once and moving it (the group commit's batches).
pub(crate) async fn insert_audit_batch<B: Backend>(
    chain: &InstalledKey,
    conn: &mut Conn<B>,
    entries: &[&AuditEntry],
) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let key = chain.get()?;
    B::lock_audit_chain(conn).await?;
    let (links, head) = head::extend(key, head_or_genesis::<B>(key, conn).await?, entries)?;
    if B::AUDIT_BATCH_IN_ONE_STATEMENT {
        // Round trips, not rows, are what a batch costs over a network: the records and the head
        // go in one statement.
        let mut insert = Query::<B::Db>::new("WITH records AS (");
        insert.push(INSERT_RECORDS);
        for (n, link) in links.iter().enumerate() {
            if n > 0 {
                insert.push(", ");
            }
            push_record::<B>(&mut insert, link);
        }
        insert.push(") ");
        push_write_head::<B>(&mut insert, &head);
        insert.execute(conn).await.map_err(B::map_err)?;
        return Ok(());
    }
    // In process, a statement is cheap and one prepared statement serves every record.
    for link in &links {
        let mut insert = Query::<B::Db>::new(INSERT_RECORDS);
        push_record::<B>(&mut insert, link);
        insert.execute(conn).await.map_err(B::map_err)?;
    }
    write_head::<B>(conn, &head).await
}

/// Writes `entry` last in `tx` (the change it records) and commits: the change and its record
/// land together or not at all. The record is counted once committed.
pub(crate) async fn commit_with_audit<B: Backend>(
    chain: &InstalledKey,
    mut tx: Transaction<'static, B::Db>,
    entry: &AuditEntry,
) -> StoreResult<()> {
    insert_audit::<B>(chain, &mut tx, entry).await?;
    tx.commit().await.map_err(B::map_err)?;
    observe_committed([entry]);
    Ok(())
}
