//! The single writer: a dedicated thread that owns the read-write connection
//! and commits queued writes in batches (group commit).
//!
//! Callers encode their payloads before queueing, so the thread only runs SQL.
//! A batch that fails is retried write by write, so one bad write never takes
//! the others down with it. The writer never panics on a failed write: the
//! caller gets the error and the next batch is tried afresh.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rusqlite::{Connection, Transaction, params};
use tokio::sync::{mpsc, oneshot};
use vss_shared::events::{AlertRecord, CdrRecord, OutboxKind, SlotTransitionRecord};
use vss_shared::{SipNumber, SlotId, SlotKind};

use super::open::classify;
use super::{StoreError, now_ms};
use crate::metrics::Metrics;

/// Writes queued ahead of the writer before callers wait (backpressure).
const QUEUE_DEPTH: usize = 16_384;
pub(super) const NEXT_SEQ_KEY: &str = "outbox.next_seq";

/// A write the store accepts.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or update the configured slots; their state restarts at IDLE.
    UpsertSlots(Vec<SlotRow>),
    /// A slot transition: the transition row, the slot's current state and an outbox entry.
    Transition(SlotTransitionRecord),
    /// A CDR row and its outbox entry.
    Cdr(CdrRecord),
    /// An alert, to the outbox.
    Alert(AlertRecord),
    /// A raw outbox entry (tools and benchmarks): `kind` and a JSON payload.
    Outbox {
        /// Stored kind.
        kind: String,
        /// JSON text.
        payload: String,
    },
    /// The control plane acknowledged every outbox entry up to this `seq`.
    Ack {
        /// Highest acknowledged sequence number (contiguous).
        up_to: u64,
    },
    /// Deletes acknowledged outbox entries, keeping the sequence high-water mark.
    PruneAcked,
    /// A hub-local setting.
    Setting {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// A control-plane command is about to run (or was refused as expired,
    /// when `outcome` is set): written before anything is done.
    CommandStarted {
        /// Command id.
        id: String,
        /// Its kind.
        kind: String,
        /// Its expiry, ms.
        expires_at_ms: i64,
        /// Set when the command is finished on arrival (expired).
        outcome: Option<(String, Option<String>)>,
    },
    /// A command finished: `outcome` is `done`, `failed`, `expired` or
    /// `unknown`, `detail` the failure reason.
    CommandFinished {
        /// Command id.
        id: String,
        /// Outcome name.
        outcome: String,
        /// Why it failed.
        detail: Option<String>,
    },
}

/// A configured slot as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRow {
    /// Id.
    pub id: SlotId,
    /// Display name.
    pub name: String,
    /// Kind.
    pub kind: SlotKind,
    /// SIP extension.
    pub sip_number: SipNumber,
    /// Whether the supervisor runs it.
    pub enabled: bool,
}

/// What a committed write produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The outbox sequence number, for writes that append to the outbox.
    pub seq: Option<u64>,
}

/// A write with its payload already encoded.
#[derive(Debug)]
enum Op {
    UpsertSlots(Vec<SlotRow>),
    Transition(SlotTransitionRecord, String),
    Cdr(CdrRecord, String),
    Outbox(&'static str, String),
    RawOutbox(String, String),
    Ack(u64),
    PruneAcked,
    Setting(String, String),
    CommandStarted(String, String, i64, Option<(String, Option<String>)>),
    CommandFinished(String, String, Option<String>),
}

#[derive(Debug)]
enum Job {
    Write {
        op: Op,
        queued: Instant,
        reply: oneshot::Sender<Result<Receipt, StoreError>>,
    },
    Stop,
}

/// Queues writes for the writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Job>,
}

impl StoreHandle {
    /// Queues `write` and waits until it is committed (or failed).
    pub async fn write(&self, write: Write) -> Result<Receipt, StoreError> {
        let op = encode(write)?;
        let (reply, answer) = oneshot::channel();
        let job = Job::Write {
            op,
            queued: Instant::now(),
            reply,
        };
        self.tx
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Asks the writer to commit what is queued and stop.
    pub(super) async fn stop(&self) {
        let _ = self.tx.send(Job::Stop).await;
    }
}

fn encode(write: Write) -> Result<Op, StoreError> {
    Ok(match write {
        Write::UpsertSlots(rows) => Op::UpsertSlots(rows),
        Write::Transition(record) => {
            let payload = serde_json::to_string(&record)?;
            Op::Transition(record, payload)
        }
        Write::Cdr(record) => {
            let payload = serde_json::to_string(&record)?;
            Op::Cdr(record, payload)
        }
        Write::Alert(record) => {
            Op::Outbox(OutboxKind::Alert.as_str(), serde_json::to_string(&record)?)
        }
        Write::Outbox { kind, payload } => Op::RawOutbox(kind, payload),
        Write::Ack { up_to } => Op::Ack(up_to),
        Write::PruneAcked => Op::PruneAcked,
        Write::Setting { key, value } => Op::Setting(key, value),
        Write::CommandStarted {
            id,
            kind,
            expires_at_ms,
            outcome,
        } => Op::CommandStarted(id, kind, expires_at_ms, outcome),
        Write::CommandFinished {
            id,
            outcome,
            detail,
        } => Op::CommandFinished(id, outcome, detail),
    })
}

/// Starts the writer thread on `conn` (already migrated).
pub(super) fn spawn(
    conn: Connection,
    batch_max: usize,
    metrics: Arc<Metrics>,
) -> Result<(StoreHandle, std::thread::JoinHandle<()>), StoreError> {
    let path = PathBuf::from(conn.path().unwrap_or_default());
    let max_seq: Option<i64> = conn.query_row("SELECT max(seq) FROM outbox", [], |r| r.get(0))?;
    let mark: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            [NEXT_SEQ_KEY],
            |r| r.get(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let mark = mark.and_then(|m| m.parse::<i64>().ok()).unwrap_or(1);
    let next_seq = mark.max(max_seq.unwrap_or(0) + 1);
    let depth: i64 = conn.query_row("SELECT count(*) FROM outbox WHERE acked = 0", [], |r| {
        r.get(0)
    })?;
    metrics
        .outbox_depth
        .store(u64::try_from(depth).unwrap_or(0), Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let writer = Writer {
        conn,
        path,
        next_seq,
        metrics,
    };
    let thread = std::thread::Builder::new()
        .name("hubd-store-writer".into())
        .spawn(move || writer.run(rx, batch_max.max(1)))
        .map_err(|e| StoreError::DataDir {
            path: PathBuf::new(),
            why: format!("cannot start the store writer thread: {e}"),
        })?;
    Ok((StoreHandle { tx }, thread))
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    next_seq: i64,
    metrics: Arc<Metrics>,
}

type Reply = oneshot::Sender<Result<Receipt, StoreError>>;
type Answers = Vec<(Reply, Result<Receipt, StoreError>)>;

const INSERT_OUTBOX: &str =
    "INSERT INTO outbox (seq, kind, payload, created_at_ms) VALUES (?1, ?2, ?3, ?4)";

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>, batch_max: usize) {
        // Waking the callers is work the writer need not wait for: a second
        // thread does it while the next transaction runs.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Answers>();
        let replier = std::thread::Builder::new()
            .name("hubd-store-replies".into())
            .spawn(move || {
                for answers in done_rx {
                    for (reply, result) in answers {
                        let _ = reply.send(result);
                    }
                }
            });
        let replier_running = replier.is_ok();
        let finish = move |done: Answers| {
            let unsent = if replier_running {
                match done_tx.send(done) {
                    Ok(()) => return,
                    Err(unsent) => unsent.0,
                }
            } else {
                done
            };
            for (reply, result) in unsent {
                let _ = reply.send(result);
            }
        };
        let mut jobs = Vec::with_capacity(batch_max);
        let mut stop = false;
        while !stop {
            jobs.clear();
            if rx.blocking_recv_many(&mut jobs, batch_max) == 0 {
                break;
            }
            let mut ops = Vec::with_capacity(jobs.len());
            let mut replies = Vec::with_capacity(jobs.len());
            let mut oldest = None;
            for job in jobs.drain(..) {
                match job {
                    Job::Write { reply, .. } if stop => {
                        let _ = reply.send(Err(StoreError::WriterGone));
                    }
                    Job::Write { op, queued, reply } => {
                        oldest.get_or_insert(queued);
                        ops.push(op);
                        replies.push(reply);
                    }
                    Job::Stop => stop = true,
                }
            }
            if !ops.is_empty() {
                finish(self.commit(ops, replies));
            }
            if let Some(oldest) = oldest {
                self.metrics.store_commit.observe(oldest.elapsed());
            }
        }
        // Writes still queued behind a stop are refused, not lost silently.
        rx.close();
        while let Ok(job) = rx.try_recv() {
            if let Job::Write { reply, .. } = job {
                let _ = reply.send(Err(StoreError::WriterGone));
            }
        }
        drop(finish);
        if let Ok(replier) = replier {
            let _ = replier.join();
        }
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "store checkpoint at shutdown failed");
        }
    }

    /// Commits `ops` in one transaction; on failure, each write on its own.
    fn commit(&mut self, ops: Vec<Op>, replies: Vec<Reply>) -> Answers {
        match self.transaction(&ops) {
            Ok(receipts) => {
                self.metrics
                    .store_writes
                    .fetch_add(ops.len() as u64, Ordering::Relaxed);
                replies
                    .into_iter()
                    .zip(receipts.into_iter().map(Ok))
                    .collect()
            }
            Err(e) if ops.len() == 1 => {
                self.metrics
                    .store_write_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "store write failed");
                replies
                    .into_iter()
                    .next()
                    .map(|reply| vec![(reply, Err(e))])
                    .unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!(error = %e, writes = ops.len(), "batch failed; retrying its writes one by one");
                replies
                    .into_iter()
                    .zip(&ops)
                    .map(|(reply, op)| {
                        let result = self
                            .transaction(std::slice::from_ref(op))
                            .map(|mut r| r.remove(0));
                        let counter = match &result {
                            Ok(_) => &self.metrics.store_writes,
                            Err(_) => &self.metrics.store_write_errors,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        (reply, result)
                    })
                    .collect()
            }
        }
    }

    /// Applies `ops` in one transaction; on error nothing of it is kept and
    /// the sequence counter is rewound.
    fn transaction(&mut self, ops: &[Op]) -> Result<Vec<Receipt>, StoreError> {
        let first_seq = self.next_seq;
        let mut acked = 0u64;
        let result = (|| {
            let tx = self.conn.transaction()?;
            let now = now_ms();
            let mut receipts = Vec::with_capacity(ops.len());
            {
                let mut ctx = Apply {
                    tx: &tx,
                    outbox: tx.prepare_cached(INSERT_OUTBOX)?,
                    next_seq: &mut self.next_seq,
                    acked: &mut acked,
                    now,
                };
                for op in ops {
                    receipts.push(ctx.apply(op)?);
                }
            }
            tx.commit()?;
            Ok(receipts)
        })();
        match result {
            Ok(receipts) => {
                let appended = u64::try_from(self.next_seq - first_seq).unwrap_or(0);
                let depth = &self.metrics.outbox_depth;
                depth.fetch_add(appended, Ordering::Relaxed);
                let _ = depth.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                    Some(d.saturating_sub(acked))
                });
                self.metrics
                    .outbox_appended
                    .fetch_add(appended, Ordering::Relaxed);
                Ok(receipts)
            }
            Err(e) => {
                self.next_seq = first_seq;
                Err(classify(&self.path, e))
            }
        }
    }
}

/// One transaction's worth of state while its writes are applied.
struct Apply<'t> {
    tx: &'t Transaction<'t>,
    /// The outbox insert, prepared once per transaction (the hot path).
    outbox: rusqlite::CachedStatement<'t>,
    next_seq: &'t mut i64,
    acked: &'t mut u64,
    now: i64,
}

impl Apply<'_> {
    fn append(&mut self, kind: &str, payload: &str) -> rusqlite::Result<i64> {
        let seq = *self.next_seq;
        self.outbox.execute(params![seq, kind, payload, self.now])?;
        *self.next_seq += 1;
        Ok(seq)
    }

    fn apply(&mut self, op: &Op) -> rusqlite::Result<Receipt> {
        let (tx, now) = (self.tx, self.now);
        let seq = match op {
            Op::UpsertSlots(rows) => {
                let mut upsert = tx.prepare_cached(
                "INSERT INTO slots (id, name, kind, sip_number, enabled, state, fault_reason, state_since_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'IDLE', NULL, ?6, ?6)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
                   sip_number = excluded.sip_number, enabled = excluded.enabled, state = 'IDLE',
                   fault_reason = NULL, state_since_ms = excluded.state_since_ms,
                   updated_at_ms = excluded.updated_at_ms",
            )?;
                for row in rows {
                    upsert.execute(params![
                        row.id.get(),
                        row.name,
                        row.kind.as_str(),
                        row.sip_number.to_string(),
                        row.enabled,
                        now
                    ])?;
                }
                None
            }
            Op::Transition(record, payload) => {
                let seq = self.append(OutboxKind::SlotTransition.as_str(), payload)?;
                tx.prepare_cached(
                "INSERT INTO slot_transitions (slot_id, from_state, to_state, event, reason, at_ms, outbox_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                record.slot_id.get(),
                record.from.as_str(),
                record.to.as_str(),
                record.event.as_str(),
                record.reason,
                record.at_ms,
                seq
            ])?;
                tx.prepare_cached(
                "UPDATE slots SET state = ?2, fault_reason = ?3, state_since_ms = ?4, updated_at_ms = ?5 WHERE id = ?1",
            )?
            .execute(params![
                record.slot_id.get(),
                record.to.as_str(),
                record.reason,
                record.at_ms,
                now
            ])?;
                Some(seq)
            }
            Op::Cdr(record, payload) => {
                let seq = self.append(OutboxKind::Cdr.as_str(), payload)?;
                tx.prepare_cached(
                "INSERT INTO cdrs (call_id, slot_id, direction, remote_number, started_at_ms, answered_at_ms,
                                   ended_at_ms, billsec, end_cause, outbox_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                record.call_id,
                record.slot_id.get(),
                match record.direction {
                    vss_shared::CallDirection::Inbound => "inbound",
                    vss_shared::CallDirection::Outbound => "outbound",
                },
                record.remote_number,
                record.started_at_ms,
                record.answered_at_ms,
                record.ended_at_ms,
                record.billsec(),
                record.end_cause,
                seq
            ])?;
                Some(seq)
            }
            Op::Outbox(kind, payload) => Some(self.append(kind, payload)?),
            Op::RawOutbox(kind, payload) => Some(self.append(kind, payload)?),
            Op::Ack(up_to) => {
                let up_to = i64::try_from(*up_to).unwrap_or(i64::MAX);
                let n = tx
                    .prepare_cached("UPDATE outbox SET acked = 1 WHERE seq <= ?1 AND acked = 0")?
                    .execute([up_to])?;
                *self.acked += n as u64;
                None
            }
            Op::PruneAcked => {
                // The high-water mark first, so deleting rows can never bring a
                // sequence number back (see `spawn`).
                tx.prepare_cached(
                "INSERT INTO settings (key, value, updated_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
            )?
            .execute(params![NEXT_SEQ_KEY, self.next_seq.to_string(), now])?;
                tx.prepare_cached("DELETE FROM outbox WHERE acked = 1")?
                    .execute([])?;
                None
            }
            Op::Setting(key, value) => {
                tx.prepare_cached(
                "INSERT INTO settings (key, value, updated_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
            )?
            .execute(params![key, value, now])?;
                None
            }
            Op::CommandStarted(id, kind, expires_at_ms, outcome) => {
                let (outcome, detail) = outcome.clone().unzip();
                let finished = outcome.as_ref().map(|_| now);
                tx.prepare_cached(
                    "INSERT INTO commands (id, kind, expires_at_ms, started_at_ms, outcome, detail, finished_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![id, kind, expires_at_ms, now, outcome, detail.flatten(), finished])?;
                None
            }
            Op::CommandFinished(id, outcome, detail) => {
                tx.prepare_cached(
                    "UPDATE commands SET outcome = ?2, detail = ?3, finished_at_ms = ?4 WHERE id = ?1",
                )?
                .execute(params![id, outcome, detail, now])?;
                None
            }
        };
        Ok(Receipt {
            seq: seq.map(|s| u64::try_from(s).unwrap_or(0)),
        })
    }
}
