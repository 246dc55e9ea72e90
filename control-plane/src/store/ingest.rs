//! Outbox ingest: the events a hub delivers, stored exactly once per
//! `(hub_id, seq)`, with their effects (slot rows from slot transitions) and
//! the hub's new committed seq, all in one transaction.
//!
//! Postgres inserts a batch with one `UNNEST` statement; SQLite with one
//! prepared statement executed per row inside the transaction. Either way the
//! caller acknowledges only after this returns `Ok`.

use vss_shared::events::{OutboxKind, SlotTransitionRecord};
use vss_shared::sync::OutboxEvent;

use super::{BeginWrite, Store, StoreError, now_ms};

/// What one ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ingested {
    /// Rows inserted (events already present are skipped).
    pub inserted: u64,
    /// Slot rows created or updated.
    pub slots_changed: u64,
}

fn db_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The slot report a transition carries, if it is one and names its slot.
fn slot_report(event: &OutboxEvent) -> Option<(SlotTransitionRecord, i64)> {
    if OutboxKind::parse(&event.kind) != Some(OutboxKind::SlotTransition) {
        return None;
    }
    match serde_json::from_slice::<SlotTransitionRecord>(&event.payload) {
        Ok(record) => Some((record, db_i64(event.seq))),
        Err(e) => {
            tracing::warn!(seq = event.seq, error = %e, "slot transition payload not understood; stored, not applied");
            None
        }
    }
}

const UPSERT_SLOT: &str = "INSERT INTO slots (centre_id, hub_id, hub_slot_id, name, kind, sip_number, fsm_state, fault_reason, updated_at_ms, hub_seq)
     SELECT h.centre_id, h.id, $2, $3, $4, $5, $6, $7, $8, $9 FROM hubs h WHERE h.id = $1
     ON CONFLICT (hub_id, hub_slot_id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
       sip_number = excluded.sip_number, fsm_state = excluded.fsm_state,
       fault_reason = excluded.fault_reason, updated_at_ms = excluded.updated_at_ms, hub_seq = excluded.hub_seq
     WHERE slots.hub_seq IS NULL OR slots.hub_seq < excluded.hub_seq";

const UPDATE_SLOT_STATE: &str =
    "UPDATE slots SET fsm_state = $3, fault_reason = $4, updated_at_ms = $5, hub_seq = $6
     WHERE hub_id = $1 AND hub_slot_id = $2 AND (hub_seq IS NULL OR hub_seq < $6)";

const COMMIT_SEQ: &str = "INSERT INTO hub_sync (hub_id, committed_seq) VALUES ($1, $2)
     ON CONFLICT (hub_id) DO UPDATE SET committed_seq = excluded.committed_seq
     WHERE hub_sync.committed_seq IS NULL OR hub_sync.committed_seq < excluded.committed_seq";

macro_rules! apply_slots {
    ($tx:expr, $hub_id:expr, $events:expr, $now:expr) => {{
        let mut changed = 0u64;
        for (record, seq) in $events.iter().filter_map(slot_report) {
            let slot_id = i64::from(record.slot_id.get());
            let done = match &record.slot {
                Some(identity) => {
                    sqlx::query(UPSERT_SLOT)
                        .bind($hub_id)
                        .bind(slot_id)
                        .bind(&identity.name)
                        .bind(identity.kind.as_str())
                        .bind(&identity.sip_number)
                        .bind(record.to.as_str())
                        .bind(&record.reason)
                        .bind($now)
                        .bind(seq)
                        .execute(&mut *$tx)
                        .await?
                }
                // An older hub: update a slot already listed, create none.
                None => {
                    sqlx::query(UPDATE_SLOT_STATE)
                        .bind($hub_id)
                        .bind(slot_id)
                        .bind(record.to.as_str())
                        .bind(&record.reason)
                        .bind($now)
                        .bind(seq)
                        .execute(&mut *$tx)
                        .await?
                }
            };
            changed += done.rows_affected();
        }
        changed
    }};
}

impl Store {
    /// Stores `events` of `hub_id` (each at most once), applies their
    /// effects, and records `committed_seq` as the hub's highest contiguous
    /// committed seq, in one transaction.
    pub async fn ingest_outbox(
        &self,
        hub_id: &str,
        events: &[OutboxEvent],
        committed_seq: u64,
    ) -> Result<Ingested, StoreError> {
        let now = now_ms();
        let payloads: Vec<String> = events
            .iter()
            .map(|e| match std::str::from_utf8(&e.payload) {
                Ok(text) => text.to_owned(),
                Err(_) => {
                    tracing::warn!(
                        hub_id,
                        seq = e.seq,
                        "outbox payload is not UTF-8; stored lossily"
                    );
                    String::from_utf8_lossy(&e.payload).into_owned()
                }
            })
            .collect();
        // The part both backends share: effects, committed seq, last seen, commit.
        macro_rules! finish {
            ($tx:ident, $inserted:expr) => {{
                let slots_changed = apply_slots!($tx, hub_id, events, now);
                sqlx::query(COMMIT_SEQ)
                    .bind(hub_id)
                    .bind(db_i64(committed_seq))
                    .execute(&mut *$tx)
                    .await?;
                sqlx::query("UPDATE hubs SET last_seen_ms = $1 WHERE id = $2")
                    .bind(now)
                    .bind(hub_id)
                    .execute(&mut *$tx)
                    .await?;
                $tx.commit().await?;
                Ingested {
                    inserted: $inserted,
                    slots_changed,
                }
            }};
        }
        let outcome = match self.pool() {
            super::Pool::Postgres(p) => {
                let mut tx = p.begin_write().await?;
                let seqs: Vec<i64> = events.iter().map(|e| db_i64(e.seq)).collect();
                let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
                let created: Vec<i64> = events.iter().map(|e| e.created_at_ms).collect();
                let inserted = sqlx::query(
                    "INSERT INTO hub_events (hub_id, seq, kind, payload, created_at_ms, received_at_ms)
                     SELECT $1, u.seq, u.kind, u.payload, u.created_at_ms, $6
                     FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::bigint[]) AS u(seq, kind, payload, created_at_ms)
                     ON CONFLICT (hub_id, seq) DO NOTHING",
                )
                .bind(hub_id)
                .bind(&seqs)
                .bind(&kinds)
                .bind(&payloads)
                .bind(&created)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                finish!(tx, inserted)
            }
            super::Pool::Sqlite(p) => {
                let mut tx = p.begin_write().await?;
                let mut inserted = 0;
                for (event, payload) in events.iter().zip(&payloads) {
                    inserted += sqlx::query(
                        "INSERT INTO hub_events (hub_id, seq, kind, payload, created_at_ms, received_at_ms)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (hub_id, seq) DO NOTHING",
                    )
                    .bind(hub_id)
                    .bind(db_i64(event.seq))
                    .bind(&event.kind)
                    .bind(payload)
                    .bind(event.created_at_ms)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                finish!(tx, inserted)
            }
        };
        self.slots_changed();
        Ok(outcome)
    }

    /// The hub's events with seq in `from..=to`, in order: `(seq, kind, payload)`.
    pub async fn hub_events(
        &self,
        hub_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, String, String)>, StoreError> {
        crate::on_pool!(self.pool(), |p| {
            let rows: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT seq, kind, payload FROM hub_events WHERE hub_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq",
            )
            .bind(hub_id)
            .bind(db_i64(from))
            .bind(db_i64(to))
            .fetch_all(p)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(seq, kind, payload)| (u64::try_from(seq).unwrap_or(0), kind, payload))
                .collect())
        })
    }
}
