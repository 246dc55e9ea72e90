//! The single writer: a dedicated thread that owns the read-write connection
//! and commits queued writes in batches (group commit).
//!
//! Callers encode their payloads before queueing, so the thread only runs SQL;
//! batches are formed as writes are queued ([`super::queue`]) and taken with
//! one lock; a second thread answers each batch's callers at once
//! ([`super::answer`]) and frees their writes.
//! A batch that fails is retried write by write (a `write_many` as one unit),
//! so one bad write never takes the others down with it. The writer never
//! panics on a failed write: the caller gets the error and the next batch is
//! tried afresh. A write is answered `Ok` only after its transaction commits.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::{Connection, Transaction, params};
use vss_shared::events::{AlertRecord, CdrRecord, OutboxKind, SlotTransitionRecord};
use vss_shared::{SipNumber, SlotId, SlotKind};

use super::answer::{Answer, Results};
use super::open::classify;
use super::queue::{Batch, Queue, Refused, Ticket};
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
    Cdr(Box<CdrRecord>),
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

/// A write with its payload already encoded. Kept small (the large records
/// are boxed): the writer reads a batch's worth of these, written by callers
/// on other cores.
#[derive(Debug)]
enum Op {
    UpsertSlots(Vec<SlotRow>),
    Transition(Box<SlotTransitionRecord>, String),
    Cdr(Box<CdrRecord>, String),
    Outbox(&'static str, String),
    RawOutbox(String, String),
    Ack(u64),
    PruneAcked,
    Setting(String, String),
    CommandStarted(Box<CommandStarted>),
    CommandFinished(Box<(String, String, Option<String>)>),
}

/// Id, kind, expiry and outcome of [`Write::CommandStarted`].
type CommandStarted = (String, String, i64, Option<(String, Option<String>)>);

/// A queued unit: one write, or several that commit together or not at all.
#[derive(Debug)]
enum Job {
    One(Op),
    Many(Vec<Op>),
}

impl Job {
    fn ops(&self) -> &[Op] {
        match self {
            Job::One(op) => std::slice::from_ref(op),
            Job::Many(ops) => ops,
        }
    }
}

type WriteQueue = Queue<Job, Answer>;

/// Queues writes for the writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    queue: Arc<WriteQueue>,
}

impl StoreHandle {
    /// Queues `write` and waits until it is committed (or failed).
    pub async fn write(&self, write: Write) -> Result<Receipt, StoreError> {
        let ticket = self.submit(Job::One(encode(write)?), 1).await?;
        ticket
            .shared
            .wait(ticket.index, |result| {
                result.and_then(|receipts| receipts.first().copied().ok_or(StoreError::WriterGone))
            })
            .await
    }

    /// Queues `writes` as one unit and waits until all of them are committed,
    /// in order and in one transaction, or none is: on error nothing of them
    /// is kept. The receipts are in the order of `writes`; outbox appends get
    /// consecutive sequence numbers. A caller with many events to store pays
    /// one queueing and one wake-up for all of them.
    pub async fn write_many(&self, writes: Vec<Write>) -> Result<Vec<Receipt>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let ops = writes
            .into_iter()
            .map(encode)
            .collect::<Result<Vec<_>, _>>()?;
        let weight = ops.len();
        let ticket = self.submit(Job::Many(ops), weight).await?;
        ticket
            .shared
            .wait(ticket.index, |result| result.map(<[Receipt]>::to_vec))
            .await
    }

    /// Queues `job`. Waiting for room is rare (the queue holds
    /// `QUEUE_DEPTH` writes), so that future is boxed: every caller's
    /// future stays small, and so do the many waiting callers' tasks.
    async fn submit(&self, job: Job, weight: usize) -> Result<Ticket<Answer>, StoreError> {
        let job = match self.queue.try_push(job, weight, false) {
            Ok(ticket) => return Ok(ticket),
            Err(Refused::Closed(_)) => return Err(StoreError::WriterGone),
            Err(Refused::Full(job)) => job,
        };
        Box::pin(self.queue.push(job, weight))
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Asks the writer to commit what is queued and stop; later writes are
    /// refused with [`StoreError::WriterGone`].
    pub(super) fn stop(&self) {
        self.queue.close();
    }
}

fn encode(write: Write) -> Result<Op, StoreError> {
    Ok(match write {
        Write::UpsertSlots(rows) => Op::UpsertSlots(rows),
        Write::Transition(record) => {
            let payload = serde_json::to_string(&record)?;
            Op::Transition(Box::new(record), payload)
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
        } => Op::CommandStarted(Box::new((id, kind, expires_at_ms, outcome))),
        Write::CommandFinished {
            id,
            outcome,
            detail,
        } => Op::CommandFinished(Box::new((id, outcome, detail))),
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
    let queue = Arc::new(Queue::new(batch_max.max(1), QUEUE_DEPTH.max(batch_max)));
    let writer = Writer {
        conn,
        path,
        next_seq,
        metrics,
    };
    let thread = {
        let queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name("hubd-store-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| StoreError::DataDir {
                path: PathBuf::new(),
                why: format!("cannot start the store writer thread: {e}"),
            })?
    };
    Ok((StoreHandle { queue }, thread))
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    next_seq: i64,
    metrics: Arc<Metrics>,
}

/// A committed (or failed) batch, on its way to the caller-answering thread.
struct Done {
    jobs: Vec<Job>,
    results: Results,
    answer: Unanswered,
}

impl Done {
    /// Answers every caller of the batch and frees its writes; returns the
    /// emptied buffer.
    fn answer(mut self) -> Vec<Job> {
        if let Some(answer) = self.answer.0.take() {
            answer.complete(self.results);
        }
        self.jobs.clear();
        self.jobs
    }
}

/// A taken batch's answer: answers `WriterGone` if dropped before it was
/// completed (the writer panicked), so no caller waits forever.
struct Unanswered(Option<Arc<Answer>>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(answer) = self.0.take() {
            answer.abandon();
        }
    }
}

/// Refuses whatever is still queued when the writer thread ends, however it
/// ends (a panic included): those callers get `WriterGone` instead of waiting
/// forever.
struct Abandon(Arc<WriteQueue>);

impl Drop for Abandon {
    fn drop(&mut self) {
        for batch in self.0.abandon() {
            batch.shared.abandon();
        }
    }
}

const INSERT_OUTBOX: &str =
    "INSERT INTO outbox (seq, kind, payload, created_at_ms) VALUES (?1, ?2, ?3, ?4)";

impl Writer {
    fn run(mut self, queue: Arc<WriteQueue>) {
        let abandon = Abandon(Arc::clone(&queue));
        // Waking the callers and freeing their writes is work the writer need
        // not wait for: a second thread does it while the next transaction runs.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
        let replier = {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name("hubd-store-replies".into())
                .spawn(move || {
                    for done in done_rx {
                        queue.recycle(done.answer());
                    }
                })
        };
        let replier_running = replier.is_ok();
        let mut used = Vec::new();
        while let Some(batch) = queue.pop(std::mem::take(&mut used)) {
            let Batch {
                items,
                shared,
                opened,
            } = batch;
            let done = self.commit(items, Unanswered(Some(shared)));
            self.metrics.store_commit.observe(opened.elapsed());
            let unsent = if replier_running {
                match done_tx.send(done) {
                    Ok(()) => continue,
                    Err(unsent) => unsent.0,
                }
            } else {
                done
            };
            used = unsent.answer();
        }
        drop(abandon);
        drop(done_tx);
        if let Ok(replier) = replier {
            let _ = replier.join();
        }
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "store checkpoint at shutdown failed");
        }
    }

    /// Commits `jobs` in one transaction; on failure, each job on its own.
    fn commit(&mut self, jobs: Vec<Job>, answer: Unanswered) -> Done {
        let writes = jobs.iter().map(|job| job.ops().len()).sum();
        let mut results = Results::with_capacity(jobs.len(), writes);
        match self.transaction(&jobs, &mut results.receipts) {
            Ok(()) => {
                self.metrics
                    .store_writes
                    .fetch_add(writes as u64, Ordering::Relaxed);
                let mut end = 0;
                results.ends.extend(jobs.iter().map(|job| {
                    end += job.ops().len();
                    end
                }));
            }
            Err(e) if jobs.len() == 1 => {
                self.metrics
                    .store_write_errors
                    .fetch_add(writes as u64, Ordering::Relaxed);
                tracing::error!(error = %e, "store write failed");
                results.ends.push(0);
                results.failed.push((0, e));
            }
            Err(e) => {
                tracing::warn!(error = %e, writes, "batch failed; retrying its writes one by one");
                for (index, job) in jobs.iter().enumerate() {
                    let counter =
                        match self.transaction(std::slice::from_ref(job), &mut results.receipts) {
                            Ok(()) => &self.metrics.store_writes,
                            Err(e) => {
                                results.failed.push((index, e));
                                &self.metrics.store_write_errors
                            }
                        };
                    counter.fetch_add(job.ops().len() as u64, Ordering::Relaxed);
                    results.ends.push(results.receipts.len());
                }
            }
        }
        Done {
            jobs,
            results,
            answer,
        }
    }

    /// Applies the writes of `jobs` in one transaction, appending a receipt
    /// per write to `receipts`; on error nothing of it is kept, `receipts` is
    /// as it was and the sequence counter is rewound.
    fn transaction(&mut self, jobs: &[Job], receipts: &mut Vec<Receipt>) -> Result<(), StoreError> {
        let first_seq = self.next_seq;
        let first_receipt = receipts.len();
        let mut acked = 0u64;
        let result = (|| {
            let tx = self.conn.transaction()?;
            let now = now_ms();
            {
                let mut ctx = Apply {
                    tx: &tx,
                    outbox: tx.prepare_cached(INSERT_OUTBOX)?,
                    next_seq: &mut self.next_seq,
                    acked: &mut acked,
                    now,
                };
                for op in jobs.iter().flat_map(Job::ops) {
                    receipts.push(ctx.apply(op)?);
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                let appended = u64::try_from(self.next_seq - first_seq).unwrap_or(0);
                let depth = &self.metrics.outbox_depth;
                depth.fetch_add(appended, Ordering::Relaxed);
                let _ = depth.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                    Some(d.saturating_sub(acked))
                });
                self.metrics
                    .outbox_appended
                    .fetch_add(appended, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.next_seq = first_seq;
                receipts.truncate(first_receipt);
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
                                   ended_at_ms, billsec, end_cause, outbox_seq, sip_cause,
                                   device_cause, recording, media_verdict)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
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
                seq,
                record.sip_cause,
                record.device_cause,
                record.recording,
                record.media.as_ref().map(|m| m.verdict.as_str()),
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
            Op::CommandStarted(started) => {
                let (id, kind, expires_at_ms, outcome) = &**started;
                let (outcome, detail) = outcome.clone().unzip();
                let finished = outcome.as_ref().map(|_| now);
                tx.prepare_cached(
                    "INSERT INTO commands (id, kind, expires_at_ms, started_at_ms, outcome, detail, finished_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![id, kind, expires_at_ms, now, outcome, detail.flatten(), finished])?;
                None
            }
            Op::CommandFinished(finished) => {
                let (id, outcome, detail) = &**finished;
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use vss_shared::CallDirection;

    use super::*;
    use crate::config::Synchronous;
    use crate::store::{Store, StoreOptions, StoreReader};

    fn open(dir: &Path) -> Store {
        let options = StoreOptions {
            data_dir: dir.to_owned(),
            batch_max: 64,
            synchronous: Synchronous::Full,
        };
        Store::open(&options, Arc::new(Metrics::default())).expect("store opens")
    }

    fn raw(i: u64) -> Write {
        Write::Outbox {
            kind: "test".into(),
            payload: format!("{{\"i\":{i}}}"),
        }
    }

    fn cdr(call_id: &str) -> Write {
        Write::Cdr(Box::new(CdrRecord {
            call_id: call_id.into(),
            slot_id: SlotId::new(1).expect("slot 1"),
            direction: CallDirection::Inbound,
            remote_number: "+79990000000".into(),
            started_at_ms: 1_000,
            answered_at_ms: None,
            ended_at_ms: 2_000,
            end_cause: "no_answer".into(),
            sip_cause: None,
            device_cause: None,
            recording: None,
            media: None,
            rtp: None,
            audiosocket: None,
        }))
    }

    fn outbox(dir: &Path) -> Vec<(u64, String)> {
        let reader = StoreReader::open(&dir.join(super::super::DB_FILE)).expect("reader");
        reader
            .outbox_after(0, usize::MAX)
            .expect("outbox")
            .into_iter()
            .map(|row| (row.seq, row.kind))
            .collect()
    }

    fn seqs(receipts: &[Receipt]) -> Vec<u64> {
        receipts.iter().filter_map(|r| r.seq).collect()
    }

    #[tokio::test]
    async fn write_many_commits_in_order_with_consecutive_sequence_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let handle = store.handle();
        assert_eq!(handle.write(raw(0)).await.expect("write").seq, Some(1));
        let receipts = handle
            .write_many((1..=5).map(raw).collect())
            .await
            .expect("write_many");
        assert_eq!(seqs(&receipts), vec![2, 3, 4, 5, 6]);
        // Writes without an outbox entry get a receipt too, in their place.
        let receipts = handle
            .write_many(vec![
                raw(6),
                Write::Setting {
                    key: "k".into(),
                    value: "v".into(),
                },
                cdr("call-1"),
            ])
            .await
            .expect("write_many");
        assert_eq!(
            receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![Some(7), None, Some(8)]
        );
        assert_eq!(handle.write_many(Vec::new()).await.expect("empty"), vec![]);
        store.close().await;
        let rows = outbox(dir.path());
        assert_eq!(
            rows.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (1..=8).collect::<Vec<_>>()
        );
        assert_eq!(rows[7].1, "cdr");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_many_keeps_none_of_its_writes_and_others_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let handle = store.handle();
        handle.write(cdr("call-1")).await.expect("first cdr");
        // Single writes and one write_many that repeats a CDR, all at once.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100u64 {
            let handle = handle.clone();
            tasks.spawn(async move { handle.write(raw(i)).await.map(|_| ()) });
        }
        {
            let handle = handle.clone();
            tasks.spawn(async move {
                let result = handle
                    .write_many(vec![raw(1000), cdr("call-1"), raw(1001)])
                    .await;
                assert!(
                    matches!(&result, Err(StoreError::Sqlite(e)) if e.to_string().contains("UNIQUE")),
                    "{result:?}"
                );
                Ok(())
            });
        }
        for joined in tasks.join_all().await {
            joined.expect("single writes commit");
        }
        store.close().await;
        // 1 CDR + 100 single writes, numbered without a hole; nothing of the failed unit.
        let rows = outbox(dir.path());
        assert_eq!(
            rows.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (1..=101).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn write_many_after_close_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let handle = store.handle();
        store.close().await;
        let err = handle.write_many(vec![raw(1)]).await.expect_err("refused");
        assert!(matches!(err, StoreError::WriterGone), "{err}");
    }

    #[test]
    fn queued_writes_stay_small() {
        // The writer reads a batch of these written on other cores: keep them
        // within a cache line (large records are boxed).
        assert!(
            std::mem::size_of::<Job>() <= 64,
            "{}",
            std::mem::size_of::<Job>()
        );
    }
}
