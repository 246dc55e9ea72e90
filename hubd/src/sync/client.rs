//! The sync session: one task per hub that keeps a connection to the control
//! plane when it can and delivers the outbox over it.
//!
//! Per connection: mutual TLS with the enrolled certificate, one
//! bidirectional stream, `Hello` with the outbox's range, `Welcome` with the
//! control plane's committed seq, then batches out (bounded by
//! `OutboxSender`'s window) and acks in. Acks are written to the store
//! (`Write::Ack`) at most every `ACK_RECORD` and always before a prune or the
//! end of the session: only pruning relies on them (resending starts from the
//! control plane's committed seq), and each write scans the acknowledged,
//! unpruned rows, so one per ack made a catch-up quadratic. Acknowledged rows
//! are pruned in the background. Any error ends the connection; the task waits
//! a jittered, growing delay (1–30 s) and connects again. `Hello` names the
//! configuration revision the hub runs; a `ConfigPush` is applied (see
//! `sync::config`) and answered with `ConfigApplied`. Losing the control
//! plane never stops the hub: slots, CDRs and the outbox go on locally.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use vss_shared::sync::version::SUPPORTED;
use vss_shared::sync::{
    AckOutcome, Backoff, BackoffConfig, CloseCode, CommandResult, ControlMessage, FrameConfig,
    FrameDecoder, Heartbeat, Hello, HubMessage, OutboxEvent, OutboxSender, OutboxState,
    SenderConfig, encode_frame,
};

use super::commands::Executor;
use super::config::ConfigApplier;
use super::identity::Identity;
use super::{SyncError, client_endpoint, resolve, split_host, tls};
use crate::store::{StoreHandle, StoreReader, Write};
use crate::supervisor::Registry;

/// How often a heartbeat goes out.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How often the outbox is polled for new rows while nothing else happens.
const POLL: Duration = Duration::from_millis(50);
/// How often acknowledged rows are pruned.
const PRUNE: Duration = Duration::from_secs(5);
/// How often the acknowledged seq is written to the store.
const ACK_RECORD: Duration = Duration::from_secs(1);
/// How long connecting and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the session reports, for `/metrics` and `/health`.
#[derive(Debug, Default)]
pub struct SyncStatus {
    /// Connected now.
    pub connected: std::sync::atomic::AtomicBool,
    /// Highest seq the control plane acknowledged.
    pub acked_seq: std::sync::atomic::AtomicU64,
    /// Connections made since start.
    pub connections: std::sync::atomic::AtomicU64,
    /// Why the last connection ended or failed, if it did.
    last_error: Mutex<Option<String>>,
}

impl SyncStatus {
    /// Why the last connection ended or failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn set_error(&self, error: Option<String>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = error;
        }
    }
}

/// Starts the session task; it ends when `shutdown` is cancelled.
pub fn spawn(
    identity: Identity,
    store: StoreHandle,
    db_path: PathBuf,
    registry: Arc<Registry>,
    config: Option<Arc<ConfigApplier>>,
    status: Arc<SyncStatus>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // Every line the session logs carries the hub id.
    let span = tracing::info_span!("sync", hub_id = %identity.enrollment.hub_id);
    tokio::spawn(run(identity, store, db_path, registry, config, status, shutdown).instrument(span))
}

async fn run(
    identity: Identity,
    store: StoreHandle,
    db_path: PathBuf,
    registry: Arc<Registry>,
    config: Option<Arc<ConfigApplier>>,
    status: Arc<SyncStatus>,
    shutdown: CancellationToken,
) {
    // The command ledger, restored once: commands a restart interrupted are
    // reported `unknown` on the first connection.
    let restored = match StoreReader::open(&db_path).and_then(|r| r.commands()) {
        Ok(rows) => Executor::restore(rows, store.clone(), registry).await,
        Err(e) => Err(SyncError::Protocol(format!("store: {e}"))),
    };
    let (mut executor, mut unsent) = match restored {
        Ok(restored) => restored,
        Err(e) => {
            tracing::error!(error = %e, "cannot load the command ledger; sync stays off");
            status.set_error(Some(format!("cannot load the command ledger: {e}")));
            return;
        }
    };
    let mut backoff = Backoff::new(BackoffConfig::default());
    // A wider window than the protocol's default: the control plane commits
    // the batches it has in hand in one transaction while it receives the
    // next ones, so more in flight means fewer commits during a catch-up and
    // a hub that keeps sending while one commits.
    let mut sender = OutboxSender::new(SenderConfig {
        max_events_in_flight: 65_536,
        max_bytes_in_flight: 16 * 1024 * 1024,
        max_batch_events: 1024,
        max_batch_bytes: 1024 * 1024,
        ..SenderConfig::default()
    });
    let mut seed = seed();
    // The acknowledged seq last written to the store.
    let mut recorded = 0u64;
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = session(&identity, &store, &db_path, &status, config.as_deref(), &mut sender, &mut recorded, &mut executor, &mut unsent, &shutdown) => outcome,
            () = shutdown.cancelled() => Ok(()),
        };
        // Whatever the session left unwritten (losing it only means resending).
        if let Err(e) = store_acks(&store, sender.acked(), &mut recorded).await {
            tracing::warn!(error = %e, "cannot record the acknowledged seq");
        }
        sender.disconnected();
        status
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if shutdown.is_cancelled() {
            return;
        }
        match outcome {
            Ok(()) => {
                tracing::info!("control plane closed the connection");
                status.set_error(Some("the control plane closed the connection".into()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "sync connection ended");
                status.set_error(Some(e.to_string()));
            }
        }
        // A connection that lived a while was healthy: start the delays over.
        if started.elapsed() > Duration::from_secs(60) {
            backoff.reset();
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = backoff.next_delay(seed);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting after a delay"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(bytes) | 1
}

/// Reads from the store on a blocking thread.
async fn read<T: Send + 'static>(
    reader: &Arc<Mutex<StoreReader>>,
    f: impl FnOnce(&StoreReader) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, SyncError> {
    let reader = reader.clone();
    tokio::task::spawn_blocking(move || {
        let reader = reader
            .lock()
            .map_err(|_| SyncError::Protocol("store reader poisoned".into()))?;
        f(&reader).map_err(|e| SyncError::Protocol(format!("store: {e}")))
    })
    .await
    .map_err(|e| SyncError::Protocol(format!("store reader task: {e}")))?
}

async fn send(stream: &mut quinn::SendStream, message: &HubMessage) -> Result<(), SyncError> {
    let frame = encode_frame(message, &FrameConfig::default())
        .map_err(|e| SyncError::Protocol(e.to_string()))?;
    stream
        .write_all(&frame)
        .await
        .map_err(|e| SyncError::Connect(e.to_string()))
}

fn record_ack(status: &SyncStatus, outcome: AckOutcome) {
    if let AckOutcome::Advanced { through } = outcome {
        status
            .acked_seq
            .store(through, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Writes the acknowledged seq to the store if it moved since `recorded`.
async fn store_acks(store: &StoreHandle, acked: u64, recorded: &mut u64) -> Result<(), SyncError> {
    if acked > *recorded {
        store
            .write(Write::Ack { up_to: acked })
            .await
            .map_err(|e| SyncError::Protocol(format!("store: {e}")))?;
        *recorded = acked;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn session(
    identity: &Identity,
    store: &StoreHandle,
    db_path: &std::path::Path,
    status: &SyncStatus,
    applier: Option<&ConfigApplier>,
    sender: &mut OutboxSender,
    recorded: &mut u64,
    executor: &mut Executor,
    unsent: &mut Vec<CommandResult>,
    shutdown: &CancellationToken,
) -> Result<(), SyncError> {
    let address = &identity.enrollment.control_plane;
    let host = split_host(address)?;
    let config = tls::sync(
        &identity.ca,
        identity.chain.clone(),
        identity.key.clone_key(),
    )?;
    let remote = resolve(address).await?;
    let endpoint = client_endpoint(remote)?;
    let connecting = async {
        let connection = endpoint
            .connect_with(config, remote, &host)
            .map_err(|e| SyncError::Connect(e.to_string()))?
            .await
            .map_err(|e| SyncError::Connect(e.to_string()))?;
        let streams = connection
            .open_bi()
            .await
            .map_err(|e| SyncError::Connect(e.to_string()))?;
        Ok::<_, SyncError>((connection, streams))
    };
    let (connection, (mut out, mut inbound)) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| {
            SyncError::Connect(format!(
                "{address}: no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })??;

    let reader = Arc::new(Mutex::new(
        StoreReader::open(db_path).map_err(|e| SyncError::Protocol(format!("store: {e}")))?,
    ));
    let (first, next) = read(&reader, |r| r.outbox_range()).await?;
    let outbox = OutboxState::new(first, next).map_err(|e| SyncError::Protocol(e.to_string()))?;
    sender.connect(outbox);
    send(
        &mut out,
        &HubMessage::Hello(Hello {
            hub_id: identity.enrollment.hub_id.clone(),
            versions: SUPPORTED,
            software_version: env!("CARGO_PKG_VERSION").into(),
            config_revision: applier.and_then(ConfigApplier::revision),
            outbox,
        }),
    )
    .await?;

    let mut decoder = FrameDecoder::<ControlMessage>::new(FrameConfig::default());
    let mut inbox = Vec::new();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut poll = tokio::time::interval(POLL);
    let mut prune = tokio::time::interval(PRUNE);
    let mut ack_record = tokio::time::interval(ACK_RECORD);
    let mut pruned_through = 0u64;
    let clock = Instant::now();
    loop {
        for message in inbox.drain(..) {
            match message {
                ControlMessage::Welcome(welcome) => {
                    let outcome = sender
                        .on_welcome(&welcome)
                        .map_err(|e| SyncError::Protocol(e.to_string()))?;
                    record_ack(status, outcome);
                    status
                        .connected
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    status.set_error(None);
                    // Results a restart left unsent (interrupted commands).
                    for result in unsent.drain(..) {
                        send(&mut out, &HubMessage::CommandResult(result)).await?;
                    }
                    status
                        .connections
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(
                        version = welcome.version,
                        committed = welcome.committed_seq,
                        "connected to the control plane"
                    );
                }
                ControlMessage::Ack(ack) => {
                    let outcome = sender
                        .on_ack(&ack)
                        .map_err(|e| SyncError::Protocol(e.to_string()))?;
                    record_ack(status, outcome);
                }
                ControlMessage::HeartbeatAck(_) => {}
                ControlMessage::Close(close) => {
                    let why = format!(
                        "closed by the control plane ({:?}): {}",
                        close.code, close.reason
                    );
                    return match close.code {
                        CloseCode::Normal | CloseCode::Superseded => Err(SyncError::Connect(why)),
                        _ => Err(SyncError::Protocol(why)),
                    };
                }
                ControlMessage::ConfigPush(push) => match applier {
                    Some(applier) => {
                        let applied = applier.apply(&push).await;
                        send(&mut out, &HubMessage::ConfigApplied(applied)).await?;
                    }
                    // A tool process (outbox-load) runs no slots: left for the hub.
                    None => tracing::info!(
                        revision = push.revision,
                        "configuration push ignored: this process runs no slots"
                    ),
                },
                ControlMessage::Command(command) => {
                    if let Some(result) = executor.handle(&command, crate::store::now_ms()).await? {
                        send(&mut out, &HubMessage::CommandResult(result)).await?;
                    }
                }
            }
        }
        // Fill the window.
        while let Some(want) = sender.want() {
            let rows = read(&reader, move |r| {
                r.outbox_after(want.from_seq.saturating_sub(1), want.max_events)
            })
            .await?;
            let events = rows.into_iter().map(|row| OutboxEvent {
                seq: row.seq,
                kind: row.kind,
                payload: row.payload.into_bytes(),
                created_at_ms: row.created_at_ms,
            });
            match sender
                .fill(events)
                .map_err(|e| SyncError::Protocol(e.to_string()))?
            {
                Some(batch) => send(&mut out, &HubMessage::OutboxBatch(batch)).await?,
                None => break,
            }
        }
        tokio::select! {
            chunk = inbound.read_chunk(256 * 1024, true) => match chunk {
                Ok(Some(chunk)) => {
                    decoder
                        .decode(&chunk.bytes, &mut inbox)
                        .map_err(|e| SyncError::Protocol(e.to_string()))?;
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(SyncError::Connect(e.to_string())),
            },
            _ = heartbeat.tick() => {
                let sent_at_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
                send(&mut out, &HubMessage::Heartbeat(Heartbeat { sent_at_ms })).await?;
            }
            _ = poll.tick() => {}
            (id, outcome) = executor.next_finished() => {
                let result = executor.complete(&id, outcome).await?;
                send(&mut out, &HubMessage::CommandResult(result)).await?;
            }
            _ = ack_record.tick() => store_acks(store, sender.acked(), recorded).await?,
            _ = prune.tick() => {
                store_acks(store, sender.acked(), recorded).await?;
                if *recorded > pruned_through {
                    store
                        .write(Write::PruneAcked)
                        .await
                        .map_err(|e| SyncError::Protocol(format!("store: {e}")))?;
                    pruned_through = *recorded;
                }
            }
            () = shutdown.cancelled() => {
                connection.close(0u32.into(), b"hub shutting down");
                return Ok(());
            }
        }
    }
}
