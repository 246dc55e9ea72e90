//! The configuration revisions the control plane pushed and this hub applied
//! (tables `desired_config` and `applied_config`, migration 3).
//!
//! Recording a revision is one transaction: the document, the applied
//! revision and the `slots` table (rows of the new slot list upserted, rows of
//! removed slots deleted; states are the writer's business and are left as
//! they are). It runs on a short-lived connection of its own, not through the
//! writer task: configuration changes are rare, SQLite serialises the two
//! writers (`BEGIN IMMEDIATE`, busy timeout), and the outbox is never touched
//! here. It must never record a revision that is not above the applied one.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::open::classify;
use super::{SlotRow, StoreError, now_ms};

/// The revision this hub runs, and its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedConfig {
    /// The revision.
    pub revision: u64,
    /// The document, as the control plane sent it.
    pub document: String,
}

/// What [`record_applied`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored as the applied revision.
    Stored,
    /// Not stored: the hub already applied this revision or a newer one.
    AlreadyApplied(u64),
}

fn db_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The applied revision and its document, if the hub ever applied one.
pub fn load_applied(db_path: &Path) -> Result<Option<AppliedConfig>, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db_path, flags).map_err(|e| classify(db_path, e))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT a.revision, d.document FROM applied_config a
             JOIN desired_config d ON d.revision = a.revision WHERE a.id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.map(|(revision, document)| AppliedConfig {
        revision: u64::try_from(revision).unwrap_or(0),
        document,
    }))
}

/// Records `revision` (its `document` and the hub's `slots`) as applied, in
/// one transaction, unless the hub already applied it or a newer one.
pub fn record_applied(
    db_path: &Path,
    revision: u64,
    document: &str,
    slots: &[SlotRow],
) -> Result<Recorded, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(db_path, flags).map_err(|e| classify(db_path, e))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Configuration changes are rare: always fsynced, whatever store.synchronous says.
    conn.pragma_update(None, "synchronous", "FULL")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let applied: Option<i64> = tx
        .query_row(
            "SELECT revision FROM applied_config WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(applied) = applied.map(|a| u64::try_from(a).unwrap_or(0))
        && applied >= revision
    {
        return Ok(Recorded::AlreadyApplied(applied));
    }
    let now = now_ms();
    tx.execute(
        "INSERT INTO desired_config (revision, document, received_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (revision) DO UPDATE SET document = excluded.document,
           received_at_ms = excluded.received_at_ms",
        params![db_i64(revision), document, now],
    )?;
    tx.execute(
        "INSERT INTO applied_config (id, revision, applied_at_ms) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET revision = excluded.revision,
           applied_at_ms = excluded.applied_at_ms",
        params![db_i64(revision), now],
    )?;
    // Keep a short history; older documents hold old SIP passwords.
    tx.execute(
        "DELETE FROM desired_config WHERE revision < ?1",
        params![db_i64(revision).saturating_sub(9)],
    )?;
    {
        let mut upsert = tx.prepare(
            "INSERT INTO slots (id, name, kind, sip_number, enabled, state, fault_reason, state_since_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'IDLE', NULL, ?6, ?6)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
               sip_number = excluded.sip_number, enabled = excluded.enabled,
               updated_at_ms = excluded.updated_at_ms",
        )?;
        for slot in slots {
            upsert.execute(params![
                slot.id.get(),
                slot.name,
                slot.kind.as_str(),
                slot.sip_number.to_string(),
                slot.enabled,
                now
            ])?;
        }
    }
    let keep: Vec<u32> = slots.iter().map(|s| s.id.get()).collect();
    let configured: Vec<u32> = {
        let mut stmt = tx.prepare("SELECT id FROM slots")?;
        let ids = stmt.query_map([], |r| r.get(0))?;
        ids.collect::<Result<_, _>>()?
    };
    for id in configured.into_iter().filter(|id| !keep.contains(id)) {
        tx.execute("DELETE FROM slots WHERE id = ?1", params![id])?;
    }
    tx.commit()?;
    Ok(Recorded::Stored)
}
