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

mod backoff;
mod session;
mod slot;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vss_shared::{SipNumber, SlotEvent, SlotId, SlotState};

pub use backoff::Backoff;
pub use slot::{SlotCell, SlotCommand, SlotContext, SlotRefusal, SlotReply, SlotView};

use crate::config::SlotConfig;
use crate::device::sim::SplitMix64;
use crate::health::Readiness;
use session::SessionEnd;

/// Every slot of the hub, by id.
#[derive(Debug, Default)]
pub struct Registry {
    slots: BTreeMap<SlotId, Arc<SlotCell>>,
}

impl Registry {
    /// A registry of `slots`, each with its SIP number.
    pub fn new(slots: impl IntoIterator<Item = (SlotConfig, SipNumber)>) -> Registry {
        Registry {
            slots: slots
                .into_iter()
                .map(|(config, number)| (config.id, Arc::new(SlotCell::new(config, number))))
                .collect(),
        }
    }

    /// The slot with `id`.
    pub fn get(&self, id: SlotId) -> Option<&Arc<SlotCell>> {
        self.slots.get(&id)
    }

    /// All slots in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<SlotCell>> {
        self.slots.values()
    }

    /// How many slots are in each state.
    pub fn count_by_state(&self) -> [(SlotState, u64); 8] {
        let mut counts = SlotState::ALL.map(|s| (s, 0u64));
        for cell in self.slots.values() {
            let state = cell.state();
            if let Some(entry) = counts.iter_mut().find(|(s, _)| *s == state) {
                entry.1 += 1;
            }
        }
        counts
    }
}

/// Spawns a supervisor for every enabled slot onto `tasks`. Each reports to
/// `readiness` once its loop is running.
pub fn spawn_all(
    registry: &Registry,
    ctx: &SlotContext,
    readiness: &Arc<Readiness>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    for cell in registry.iter().filter(|c| c.config.enabled) {
        let span = tracing::info_span!("slot", id = cell.id().get(), number = %cell.sip_number);
        let supervisor = supervise(
            cell.clone(),
            ctx.clone(),
            readiness.clone(),
            shutdown.clone(),
        );
        tasks.spawn(supervisor.instrument(span));
    }
}

/// Runs `cell` until shutdown: sessions, faults, backoff, restarts.
async fn supervise(
    cell: Arc<SlotCell>,
    ctx: SlotContext,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
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
            session::run(cell.clone(), ctx.clone(), shutdown.child_token(), number)
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
