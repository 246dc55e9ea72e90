//! Slot supervision: one supervisor task per enabled slot, each running its
//! device in sessions (see [`session`]) and restarting it with backoff.
//!
//! Invariants:
//! - Slots are isolated: an error, hang or panic in one slot's driver turns
//!   that slot to FAULT with the reason and never touches another slot.
//! - A faulted slot is restarted (FAULT → IDLE → …) after an exponential
//!   backoff with jitter, reset once the slot has been READY for
//!   `supervisor.stable_after_ms`.
//! - Every supervisor obeys the shutdown token and releases its device.
//! - The set of slots changes at runtime only through [`Registry::reconcile`]
//!   (see [`reconcile`]): each slot has its own stop token (a child of the
//!   hub's shutdown token), so one slot can be stopped without touching the
//!   others.

mod backoff;
pub mod reconcile;
mod session;
mod slot;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vss_shared::{SipNumber, SlotEvent, SlotId, SlotState};

pub use backoff::Backoff;
pub use reconcile::{DesiredSlot, ReconcileReport};
pub use slot::{
    MediaContext, SipContext, SlotCell, SlotCommand, SlotContext, SlotRefusal, SlotReply, SlotView,
};

use crate::config::SlotConfig;
use crate::device::sim::SplitMix64;
use crate::health::Readiness;
use session::SessionEnd;

/// Every slot of the hub, by id, with the supervisor task of each running one.
///
/// Readers (API, metrics, commands) take snapshots; only [`Registry::start`],
/// [`Registry::reconcile`] and [`Registry::join_all`] change it.
#[derive(Debug, Default)]
pub struct Registry {
    slots: RwLock<BTreeMap<SlotId, Entry>>,
    /// What supervisors need; set once by [`Registry::start`].
    launch: OnceLock<Launch>,
}

/// One slot: its shared state and, while it runs, its supervisor.
#[derive(Debug)]
struct Entry {
    cell: Arc<SlotCell>,
    /// The SIP password the control plane gave it (none from the file).
    sip_password: Option<String>,
    /// Stops this slot only (a child of the hub's shutdown token).
    stop: CancellationToken,
    /// The supervisor task, while one runs.
    task: Option<JoinHandle<()>>,
}

/// What every supervisor is started with.
#[derive(Debug, Clone)]
struct Launch {
    ctx: SlotContext,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
}

impl Registry {
    /// A registry of `slots`, each with its SIP number; nothing runs yet.
    pub fn new(slots: impl IntoIterator<Item = (SlotConfig, SipNumber)>) -> Registry {
        Registry::with_slots(slots.into_iter().map(|(config, sip_number)| DesiredSlot {
            config,
            sip_number,
            sip_password: None,
        }))
    }

    /// A registry of `slots` (as a pushed configuration gives them); nothing runs yet.
    pub fn with_slots(slots: impl IntoIterator<Item = DesiredSlot>) -> Registry {
        let slots = slots
            .into_iter()
            .map(|slot| (slot.config.id, Entry::new(slot)))
            .collect();
        Registry {
            slots: RwLock::new(slots),
            launch: OnceLock::new(),
        }
    }

    // A panic elsewhere while holding the lock must not take the hub down:
    // the map is always consistent between statements.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<SlotId, Entry>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<SlotId, Entry>> {
        self.slots.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The slot with `id`.
    pub fn get(&self, id: SlotId) -> Option<Arc<SlotCell>> {
        self.read().get(&id).map(|e| e.cell.clone())
    }

    /// A snapshot of all slots, in id order.
    pub fn iter(&self) -> std::vec::IntoIter<Arc<SlotCell>> {
        self.read()
            .values()
            .map(|e| e.cell.clone())
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// How many slots are in each state.
    pub fn count_by_state(&self) -> [(SlotState, u64); 8] {
        let mut counts = SlotState::ALL.map(|s| (s, 0u64));
        for cell in self.iter() {
            let state = cell.state();
            if let Some(entry) = counts.iter_mut().find(|(s, _)| *s == state) {
                entry.1 += 1;
            }
        }
        counts
    }

    /// Starts a supervisor for every enabled slot, each reporting to
    /// `readiness` once its loop runs; slots added later by
    /// [`Registry::reconcile`] start the same way. Called once.
    pub fn start(
        &self,
        ctx: &SlotContext,
        readiness: &Arc<Readiness>,
        shutdown: &CancellationToken,
    ) {
        let launch = self.launch.get_or_init(|| Launch {
            ctx: ctx.clone(),
            readiness: readiness.clone(),
            shutdown: shutdown.clone(),
        });
        for entry in self.write().values_mut() {
            entry.launch(launch);
        }
    }

    /// Waits for every supervisor to end (after the shutdown token fired).
    pub async fn join_all(&self) {
        let tasks: Vec<JoinHandle<()>> = self
            .write()
            .values_mut()
            .filter_map(|e| e.task.take())
            .collect();
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "slot supervisor ended abnormally");
            }
        }
    }
}

impl Entry {
    fn new(slot: DesiredSlot) -> Entry {
        Entry {
            cell: Arc::new(SlotCell::new(slot.config, slot.sip_number)),
            sip_password: slot.sip_password,
            stop: CancellationToken::new(),
            task: None,
        }
    }

    /// Starts the slot's supervisor if the slot is enabled and not running.
    fn launch(&mut self, launch: &Launch) {
        if !self.cell.config.enabled || self.task.is_some() {
            return;
        }
        self.stop = launch.shutdown.child_token();
        let cell = &self.cell;
        let span = slot_span(cell);
        let supervisor = supervise(
            cell.clone(),
            launch.ctx.clone(),
            launch.readiness.clone(),
            self.stop.clone(),
            self.sip_password.clone(),
        );
        self.task = Some(tokio::spawn(supervisor.instrument(span)));
    }
}

/// The span of a slot's tasks: a root, whoever starts the slot (the hub at
/// start, the sync session when a configuration changes).
fn slot_span(cell: &SlotCell) -> tracing::Span {
    tracing::info_span!(parent: None, "slot", id = cell.id().get(), number = %cell.sip_number)
}

/// Runs `cell` until shutdown: sessions, faults, backoff, restarts.
async fn supervise(
    cell: Arc<SlotCell>,
    ctx: SlotContext,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
    sip_password: Option<String>,
) {
    let timing = &ctx.timing;
    let mut backoff = Backoff::new(
        Duration::from_millis(timing.restart_backoff_initial_ms),
        Duration::from_millis(timing.restart_backoff_max_ms),
    );
    let stable_after = Duration::from_millis(timing.stable_after_ms);
    let mut jitter = SplitMix64(u64::from(cell.id().get()) ^ u64::from(std::process::id()));
    readiness.report(&format!("slot {}", cell.id()));
    for number in 0u64.. {
        let session = tokio::spawn(
            session::run(
                cell.clone(),
                ctx.clone(),
                shutdown.child_token(),
                number,
                sip_password.clone(),
            )
            .instrument(tracing::Span::current()),
        );
        let end = match session.await {
            Ok(end) => end,
            Err(join_error) => {
                let reason = match join_error.try_into_panic() {
                    Ok(payload) => format!("driver panicked: {}", panic_message(payload.as_ref())),
                    Err(_) => "driver task was cancelled".to_owned(),
                };
                // The device went down with the panicking task; what is left
                // to do is the slot's own bookkeeping.
                cell.set_device(None);
                if let Some(actions) = cell.feed(&ctx, SlotEvent::Failed { reason }).await {
                    for action in actions {
                        match action {
                            vss_shared::SlotAction::WriteCdr => {
                                cell.write_cdr(&ctx, "slot_fault").await
                            }
                            vss_shared::SlotAction::RaiseAlert { reason } => {
                                cell.raise_alert(&ctx, &reason).await
                            }
                            _ => {}
                        }
                    }
                }
                SessionEnd::Faulted
            }
        };
        match end {
            SessionEnd::Shutdown => return,
            SessionEnd::Restarted => {
                cell.count_restart(false);
                backoff.reset();
                continue;
            }
            SessionEnd::Faulted => {}
        }
        if cell
            .take_ready_since()
            .is_some_and(|since| since.elapsed() >= stable_after)
        {
            backoff.reset();
        }
        let delay = backoff.next_delay(jitter.next_f64());
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "slot restarts after backoff"
        );
        let mut commands = cell.commands.lock().await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            command = commands.recv() => {
                if command.is_none() { return; }
                tracing::info!("restart requested during backoff");
            }
        }
        drop(commands);
        cell.count_restart(true);
        cell.feed(&ctx, SlotEvent::Recovered).await;
    }
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-text panic payload)".to_owned()
    }
}
