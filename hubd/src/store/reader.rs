//! Read-only access to the store on a connection of its own. Readers see the
//! last committed state and never block the writer (WAL).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};

use super::StoreError;
use super::open::classify;

/// A read-only connection to `hub.db`.
#[derive(Debug)]
pub struct StoreReader {
    conn: Connection,
}

/// One outbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Per-hub sequence number.
    pub seq: u64,
    /// Kind, e.g. `slot_transition`.
    pub kind: String,
    /// JSON payload.
    pub payload: String,
    /// When it was appended, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Whether the control plane acknowledged it.
    pub acked: bool,
}

/// One command of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRow {
    /// Command id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Its expiry, ms.
    pub expires_at_ms: i64,
    /// `done`, `failed`, `expired`, `unknown`; `None` while running.
    pub outcome: Option<String>,
    /// Why it failed.
    pub detail: Option<String>,
}

/// One recorded slot transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRow {
    /// Slot id.
    pub slot_id: u32,
    /// State before.
    pub from_state: String,
    /// State after.
    pub to_state: String,
    /// Event name.
    pub event: String,
    /// Reason, for faults.
    pub reason: Option<String>,
    /// Outbox entry written with it.
    pub outbox_seq: u64,
}

impl StoreReader {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> Result<StoreReader, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(StoreReader { conn })
    }

    /// Up to `limit` outbox entries with `seq > after`, in order.
    pub fn outbox_after(&self, after: u64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, kind, payload, created_at_ms, acked FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after, limit], |row| {
            Ok(OutboxRow {
                seq: row.get::<_, i64>(0)?.try_into().unwrap_or(0),
                kind: row.get(1)?,
                payload: row.get(2)?,
                created_at_ms: row.get(3)?,
                acked: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The outbox's deliverable range `(first_seq, next_seq)`: every seq in
    /// `first_seq..next_seq` is still stored (acknowledged or not); seqs below
    /// `first_seq` were pruned after an acknowledgement. Empty: `first == next`.
    pub fn outbox_range(&self) -> Result<(u64, u64), StoreError> {
        let (min, max): (Option<i64>, Option<i64>) =
            self.conn
                .query_row("SELECT min(seq), max(seq) FROM outbox", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        let mark: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                [super::writer::NEXT_SEQ_KEY],
                |r| r.get(0),
            )
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        let mark = mark.and_then(|m| m.parse::<u64>().ok()).unwrap_or(1).max(1);
        let to_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        let next = mark.max(max.map_or(1, |m| to_u64(m) + 1));
        let first = min.map_or(next, to_u64);
        Ok((first, next))
    }

    /// Every command in the ledger: `(id, expires_at_ms, outcome, detail)`,
    /// outcome `None` for one that started and never finished.
    pub fn commands(&self) -> Result<Vec<CommandRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, kind, expires_at_ms, outcome, detail FROM commands ORDER BY started_at_ms",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(CommandRow {
                id: row.get(0)?,
                kind: row.get(1)?,
                expires_at_ms: row.get(2)?,
                outcome: row.get(3)?,
                detail: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The transitions recorded for `slot_id`, oldest first.
    pub fn transitions(&self, slot_id: u32) -> Result<Vec<TransitionRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT slot_id, from_state, to_state, event, reason, outbox_seq
             FROM slot_transitions WHERE slot_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([slot_id], |row| {
            Ok(TransitionRow {
                slot_id: row.get(0)?,
                from_state: row.get(1)?,
                to_state: row.get(2)?,
                event: row.get(3)?,
                reason: row.get(4)?,
                outbox_seq: row.get::<_, i64>(5)?.try_into().unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// SQLite's full integrity check: `ok` or the problems found.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let lines: Vec<String> = self
            .conn
            .prepare("PRAGMA integrity_check")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(lines.join("; "))
    }
}
