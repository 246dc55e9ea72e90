//! Outbox ingest: the events a hub delivers, stored exactly once per
//! `(hub_id, seq)`, with their effects (slot rows from slot transitions) and
//! the hub's new committed seq, all in one transaction.
//!
//! SQLite inserts a batch with one prepared statement executed per row
//! inside the transaction. Postgres first locks the hub's `hub_sync` row
//! (`FOR UPDATE`: ingests of one hub are serialised, even across control-plane
//! instances) and reads its committed seq. A batch wholly above it is
//! streamed with `COPY … FROM STDIN (FORMAT binary)` straight into
//! `hub_events`: every transaction that inserts a hub's rows raises its
//! committed seq to the highest of them under that lock, so no stored row
//! can lie above it and the rows cannot conflict. Any batch that may overlap
//! stored rows goes through `INSERT … SELECT FROM UNNEST(…) ON CONFLICT DO
//! NOTHING`, and so does a COPY that meets a unique violation anyway (a row
//! written outside this protocol, e.g. an operator lowering a committed seq):
//! it is rolled back and redone that way. Either way the caller acknowledges
//! only after this returns `Ok`.

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

/// Takes the hub's `hub_sync` row lock for the rest of the transaction and
/// returns its committed seq (`None`: no row, or no seq recorded yet).
async fn lock_sync_row(
    tx: &mut sqlx::PgConnection,
    hub_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let row: Option<Option<i64>> =
        sqlx::query_scalar("SELECT committed_seq FROM hub_sync WHERE hub_id = $1 FOR UPDATE")
            .bind(hub_id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(row.flatten())
}

/// Inserts `events`, skipping rows already stored: the path for a batch that
/// may overlap committed rows.
async fn unnest_insert(
    tx: &mut sqlx::PgConnection,
    hub_id: &str,
    events: &[OutboxEvent],
    payloads: &[String],
    now: i64,
) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let seqs: Vec<i64> = events.iter().map(|e| db_i64(e.seq)).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let created: Vec<i64> = events.iter().map(|e| e.created_at_ms).collect();
    Ok(sqlx::query(
        "INSERT INTO hub_events (hub_id, seq, kind, payload, created_at_ms, received_at_ms)
         SELECT $1, u.seq, u.kind, u.payload, u.created_at_ms, $6
         FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::bigint[]) AS u(seq, kind, payload, created_at_ms)
         ON CONFLICT (hub_id, seq) DO NOTHING",
    )
    .bind(hub_id)
    .bind(&seqs)
    .bind(&kinds)
    .bind(payloads)
    .bind(&created)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected())
}

/// `COPY … (FORMAT binary)` framing: the signature, flags and header
/// extension length.
const PG_COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Bytes handed to the connection at a time while streaming a COPY.
const PG_COPY_CHUNK: usize = 1 << 20;

fn copy_field(buf: &mut Vec<u8>, bytes: &[u8]) {
    // A field longer than i32::MAX cannot be framed; the caller's frame limit
    // (1 MiB per event) keeps every field far below it.
    let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(bytes);
}

fn copy_i64(buf: &mut Vec<u8>, value: i64) {
    buf.extend_from_slice(&8i32.to_be_bytes());
    buf.extend_from_slice(&value.to_be_bytes());
}

/// One `hub_events` row in `COPY` binary format.
fn copy_row(buf: &mut Vec<u8>, hub_id: &str, event: &OutboxEvent, payload: &str, now: i64) {
    buf.extend_from_slice(&6i16.to_be_bytes());
    copy_field(buf, hub_id.as_bytes());
    copy_i64(buf, db_i64(event.seq));
    copy_field(buf, event.kind.as_bytes());
    copy_field(buf, payload.as_bytes());
    copy_i64(buf, event.created_at_ms);
    copy_i64(buf, now);
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
                let copied = match self.pg_copy_ingest(p, hub_id, events, &payloads, now).await {
                    Ok(copied) => Some(copied),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        tracing::warn!(
                            hub_id,
                            "outbox rows above the committed seq already stored; batch redone with ON CONFLICT"
                        );
                        None
                    }
                    Err(e) => return Err(e.into()),
                };
                let (mut tx, inserted) = match copied {
                    Some((tx, Some(inserted))) => (tx, inserted),
                    Some((mut tx, None)) => {
                        let inserted =
                            unnest_insert(&mut tx, hub_id, events, &payloads, now).await?;
                        (tx, inserted)
                    }
                    None => {
                        let mut tx = p.begin_write().await?;
                        lock_sync_row(&mut tx, hub_id).await?;
                        let inserted =
                            unnest_insert(&mut tx, hub_id, events, &payloads, now).await?;
                        (tx, inserted)
                    }
                };
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

    /// The fast path on Postgres: begins the transaction, locks the hub's
    /// sync row and, when every event lies above its committed seq, `COPY`s
    /// them into `hub_events`. Returns the open transaction with the rows
    /// copied, or with `None` when the batch may overlap stored rows (nothing
    /// inserted yet; the lock is held). A unique violation comes back as the
    /// error, and the transaction is then rolled back.
    async fn pg_copy_ingest(
        &self,
        pool: &sqlx::PgPool,
        hub_id: &str,
        events: &[OutboxEvent],
        payloads: &[String],
        now: i64,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, Option<u64>), sqlx::Error> {
        let mut tx = pool.begin_write().await?;
        let committed = lock_sync_row(&mut tx, hub_id).await?;
        let Some(first) = events.first() else {
            return Ok((tx, Some(0)));
        };
        // Contiguous and ascending (the sans-IO ingest hands them out so), and
        // all above every stored row of this hub: nothing can conflict.
        let contiguous = events
            .windows(2)
            .all(|pair| pair[0].seq.checked_add(1) == Some(pair[1].seq));
        if !contiguous || committed.is_none_or(|c| db_i64(first.seq) <= c) {
            return Ok((tx, None));
        }
        let mut copy = tx
            .copy_in_raw(
                "COPY hub_events (hub_id, seq, kind, payload, created_at_ms, received_at_ms) FROM STDIN (FORMAT binary)",
            )
            .await?;
        let mut buf = Vec::with_capacity(PG_COPY_CHUNK + 4096);
        buf.extend_from_slice(PG_COPY_HEADER);
        for (event, payload) in events.iter().zip(payloads) {
            copy_row(&mut buf, hub_id, event, payload, now);
            if buf.len() >= PG_COPY_CHUNK {
                copy.send(buf.as_slice()).await?;
                buf.clear();
            }
        }
        buf.extend_from_slice(&(-1i16).to_be_bytes());
        copy.send(buf.as_slice()).await?;
        let inserted = copy.finish().await?;
        Ok((tx, Some(inserted)))
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
