//! Changing the hub's slots at runtime: a desired slot list (a configuration
//! revision the control plane pushed) against the running [`Registry`].
//!
//! Slots added are started; removed ones are stopped (their device released)
//! and leave the registry; changed ones (any field of their configuration,
//! their SIP number or password) are stopped and started again with the new
//! configuration; unchanged ones are not touched — their supervisor, device
//! and call go on. A slot being replaced is stopped and its supervisor awaited
//! before the new one starts, so two drivers never hold one device.
//!
//! It must never validate: the caller hands it a list that passed hubd's
//! configuration rules. Only one reconciliation runs at a time (the caller
//! serialises them).

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::Instrument as _;
use vss_shared::{SipNumber, SlotAction, SlotEvent, SlotId, SlotState};

use super::{Entry, Registry, SlotCell, SlotContext};
use crate::config::SlotConfig;

/// One slot as a configuration wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSlot {
    /// Its configuration.
    pub config: SlotConfig,
    /// Its SIP extension (explicit or allocated by the configuration rules).
    pub sip_number: SipNumber,
    /// Its SIP password, when the control plane set one.
    pub sip_password: Option<String>,
}

/// What a reconciliation did, by slot id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Slots that were not there before.
    pub added: Vec<SlotId>,
    /// Slots that are gone.
    pub removed: Vec<SlotId>,
    /// Slots stopped and started again with a new configuration.
    pub changed: Vec<SlotId>,
    /// Slots left running as they were.
    pub unchanged: Vec<SlotId>,
}

/// End cause of a call cut by a reconfiguration (in its CDR).
const END_CAUSE: &str = "slot_reconfigured";

impl Entry {
    fn same_as(&self, slot: &DesiredSlot) -> bool {
        self.cell.config == slot.config
            && self.cell.sip_number == slot.sip_number
            && self.sip_password == slot.sip_password
    }
}

impl Registry {
    /// The SIP password the slot was configured with (for the SIP stack).
    pub fn sip_password(&self, id: SlotId) -> Option<String> {
        self.read().get(&id).and_then(|e| e.sip_password.clone())
    }

    /// Makes the running slots match `desired` (see the module comment).
    pub async fn reconcile(&self, desired: Vec<DesiredSlot>) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let mut wanted: BTreeMap<SlotId, DesiredSlot> =
            desired.into_iter().map(|s| (s.config.id, s)).collect();

        // Which slots stop: removed ones and changed ones. Their tasks are
        // taken here; the cells stay listed until they are replaced.
        let mut stopping = Vec::new();
        {
            let mut slots = self.write();
            for (id, entry) in slots.iter_mut() {
                match wanted.get(id) {
                    Some(slot) if entry.same_as(slot) => {
                        report.unchanged.push(*id);
                        wanted.remove(id);
                    }
                    Some(_) => {
                        report.changed.push(*id);
                        stopping.push((entry.cell.clone(), entry.stop.clone(), entry.task.take()));
                    }
                    None => {
                        report.removed.push(*id);
                        stopping.push((entry.cell.clone(), entry.stop.clone(), entry.task.take()));
                    }
                }
            }
        }
        let launch = self.launch.get().cloned();
        for (cell, stop, task) in stopping {
            stop.cancel();
            if let Some(task) = task
                && let Err(e) = task.await
            {
                tracing::error!(slot = %cell.id(), error = %e, "slot supervisor ended abnormally");
            }
            if let Some(launch) = &launch {
                retire(&cell, &launch.ctx)
                    .instrument(super::slot_span(&cell))
                    .await;
                // A slot that never reported must not hold readiness back.
                launch.readiness.report(&format!("slot {}", cell.id()));
            }
        }

        let mut slots = self.write();
        for id in &report.removed {
            slots.remove(id);
        }
        for (id, slot) in wanted {
            if !report.changed.contains(&id) {
                report.added.push(id);
            }
            let mut entry = Entry::new(slot);
            if let Some(launch) = &launch {
                entry.launch(launch);
            }
            slots.insert(id, entry);
        }
        report
    }
}

/// Records that a stopped slot left service: its state goes back to IDLE
/// (a call it carried gets its CDR), so the control plane sees it offline.
async fn retire(cell: &Arc<SlotCell>, ctx: &SlotContext) {
    let event = match cell.state() {
        SlotState::Idle => return,
        SlotState::Fault => SlotEvent::Recovered,
        _ => SlotEvent::Released,
    };
    let Some(actions) = cell.feed(ctx, event).await else {
        return;
    };
    for action in actions {
        match action {
            SlotAction::WriteCdr => cell.write_cdr(ctx, END_CAUSE).await,
            SlotAction::ReleaseDevice => cell.set_device(None),
            // The session released the device (and with it the call) when it stopped.
            _ => {}
        }
    }
}
