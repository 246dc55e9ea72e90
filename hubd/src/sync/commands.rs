//! Carrying out control-plane commands on this hub, at most once.
//!
//! The decision (run, answer again, still running, expired) is
//! `vss_shared::sync::CommandLedger`'s; this module persists each decision in
//! the store *before* acting (`Write::CommandStarted`), acts, persists the
//! outcome (`Write::CommandFinished`), and returns the `CommandResult` to send.
//! A command interrupted by a restart is reported `unknown` and never re-run.
//!
//! Kinds understood:
//! - `restart_slot` (`{"hub_slot_id": N}`): done once the restart is queued;
//! - `start_call` (`{"hub_slot_id": N, "phone_number": "+7…"}`): the slot
//!   dials; done once its device accepted the dial (the detail is the call
//!   id), failed with the slot's refusal otherwise. A dial can take seconds,
//!   so it runs in its own task and its outcome comes back through
//!   [`Executor::next_finished`]; the session loop never waits for a device.
//!
//! Any other kind fails with a reason naming it, so a newer control plane
//! learns this hub cannot do it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use vss_shared::SlotId;
use vss_shared::sync::{
    Command, CommandDecision, CommandId, CommandLedger, CommandOutcome, CommandResult, LedgerEntry,
};

use super::SyncError;
use crate::store::{CommandRow, StoreHandle, Write};
use crate::supervisor::{Registry, SlotCell, SlotCommand};

/// Longest a `start_call` waits for the slot to answer (the device's own
/// timeouts are shorter; this only bounds a slot that never answers).
const DIAL_ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// What running a command gave.
enum Execution {
    /// Its outcome, now.
    Now(CommandOutcome),
    /// It runs in its own task; the outcome comes through `finished`.
    Later,
}

fn outcome_name(outcome: &CommandOutcome) -> (&'static str, Option<String>) {
    match outcome {
        CommandOutcome::Done => ("done", None),
        CommandOutcome::Failed(why) => ("failed", Some(why.clone())),
        CommandOutcome::Expired => ("expired", None),
        CommandOutcome::Unknown => ("unknown", None),
    }
}

fn outcome_of(name: &str, detail: Option<String>) -> CommandOutcome {
    match name {
        "done" => CommandOutcome::Done,
        "failed" => CommandOutcome::Failed(detail.unwrap_or_default()),
        "expired" => CommandOutcome::Expired,
        _ => CommandOutcome::Unknown,
    }
}

/// The ledger and what it needs to act.
pub struct Executor {
    ledger: CommandLedger,
    store: StoreHandle,
    registry: Arc<Registry>,
    /// Outcomes of commands running in their own tasks (dials).
    finished_tx: mpsc::UnboundedSender<(CommandId, CommandOutcome)>,
    finished_rx: mpsc::UnboundedReceiver<(CommandId, CommandOutcome)>,
}

fn store_err(e: crate::store::StoreError) -> SyncError {
    SyncError::Protocol(format!("store: {e}"))
}

impl Executor {
    /// Rebuilds the ledger from the store's rows. Returns the results of
    /// commands a restart interrupted (persisted as `unknown`), to send.
    pub async fn restore(
        rows: Vec<CommandRow>,
        store: StoreHandle,
        registry: Arc<Registry>,
    ) -> Result<(Executor, Vec<CommandResult>), SyncError> {
        let entries = rows.into_iter().filter_map(|row| {
            Some(LedgerEntry {
                id: CommandId::new(row.id).ok()?,
                expires_at_ms: row.expires_at_ms,
                outcome: row.outcome.map(|name| outcome_of(&name, row.detail)),
            })
        });
        let (ledger, interrupted) = CommandLedger::restore(entries);
        for result in &interrupted {
            store
                .write(Write::CommandFinished {
                    id: result.id.as_str().to_owned(),
                    outcome: "unknown".into(),
                    detail: Some("interrupted by a hub restart".into()),
                })
                .await
                .map_err(store_err)?;
        }
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        Ok((
            Executor {
                ledger,
                store,
                registry,
                finished_tx,
                finished_rx,
            },
            interrupted,
        ))
    }

    /// Handles a delivered command; returns the result to send, if any now.
    pub async fn handle(
        &mut self,
        command: &Command,
        now_ms: i64,
    ) -> Result<Option<CommandResult>, SyncError> {
        let result = |outcome| CommandResult {
            id: command.id.clone(),
            outcome,
        };
        match self.ledger.decide(command, now_ms) {
            CommandDecision::AlreadyDone(outcome) => Ok(Some(result(outcome))),
            CommandDecision::InProgress => Ok(None),
            CommandDecision::Expired => {
                self.store
                    .write(Write::CommandStarted {
                        id: command.id.as_str().to_owned(),
                        kind: command.kind.clone(),
                        expires_at_ms: command.expires_at_ms,
                        outcome: Some(("expired".into(), None)),
                    })
                    .await
                    .map_err(store_err)?;
                tracing::info!(id = command.id.as_str(), kind = %command.kind, "command arrived expired; not run");
                Ok(Some(result(CommandOutcome::Expired)))
            }
            CommandDecision::Execute => {
                self.store
                    .write(Write::CommandStarted {
                        id: command.id.as_str().to_owned(),
                        kind: command.kind.clone(),
                        expires_at_ms: command.expires_at_ms,
                        outcome: None,
                    })
                    .await
                    .map_err(store_err)?;
                match self.execute(command) {
                    Execution::Now(outcome) => self.complete(&command.id, outcome).await.map(Some),
                    Execution::Later => Ok(None),
                }
            }
        }
    }

    /// The next outcome of a command that ran in its own task. Cancel-safe:
    /// the session loop selects on it.
    pub async fn next_finished(&mut self) -> (CommandId, CommandOutcome) {
        match self.finished_rx.recv().await {
            Some(finished) => finished,
            // The executor holds a sender itself: never closed.
            None => std::future::pending().await,
        }
    }

    /// Persists `outcome` of command `id` and returns the result to send.
    pub async fn complete(
        &mut self,
        id: &CommandId,
        outcome: CommandOutcome,
    ) -> Result<CommandResult, SyncError> {
        tracing::info!(id = id.as_str(), ?outcome, "command executed");
        let (name, detail) = outcome_name(&outcome);
        self.store
            .write(Write::CommandFinished {
                id: id.as_str().to_owned(),
                outcome: name.into(),
                detail,
            })
            .await
            .map_err(store_err)?;
        self.ledger
            .finish(id, outcome)
            .map_err(|e| SyncError::Protocol(e.to_string()))
    }

    fn execute(&self, command: &Command) -> Execution {
        if !matches!(command.kind.as_str(), "restart_slot" | "start_call") {
            return Execution::Now(CommandOutcome::Failed(format!(
                "this hub does not know the command kind {:?}",
                command.kind
            )));
        }
        let args: serde_json::Value = match serde_json::from_slice(&command.args) {
            Ok(args) => args,
            Err(e) => {
                return Execution::Now(CommandOutcome::Failed(format!(
                    "arguments are not JSON: {e}"
                )));
            }
        };
        let cell = match self.slot_of(&args) {
            Ok(cell) => cell,
            Err(why) => return Execution::Now(CommandOutcome::Failed(why)),
        };
        match command.kind.as_str() {
            "restart_slot" => {
                cell.request_restart();
                Execution::Now(CommandOutcome::Done)
            }
            "start_call" => {
                let Some(number) = args["phone_number"].as_str().map(str::to_owned) else {
                    return Execution::Now(CommandOutcome::Failed(
                        "arguments lack phone_number".into(),
                    ));
                };
                let (reply, answer) = oneshot::channel();
                if !cell.submit(SlotCommand::Dial { number, reply }) {
                    return Execution::Now(CommandOutcome::Failed(format!(
                        "slot {} has too many queued commands or is not running",
                        cell.id()
                    )));
                }
                let id = command.id.clone();
                let finished = self.finished_tx.clone();
                let slot = cell.id();
                tokio::spawn(async move {
                    let outcome = match tokio::time::timeout(DIAL_ANSWER_TIMEOUT, answer).await {
                        // The call's id is in the log line; the result says done.
                        Ok(Ok(Ok(call_id))) => {
                            tracing::info!(%slot, call_id, "start_call: dialling");
                            CommandOutcome::Done
                        }
                        Ok(Ok(Err(refusal))) => CommandOutcome::Failed(refusal.to_string()),
                        Ok(Err(_)) => CommandOutcome::Failed(format!(
                            "slot {slot} restarted before it could dial"
                        )),
                        Err(_) => CommandOutcome::Failed(format!(
                            "slot {slot} did not answer within {} s",
                            DIAL_ANSWER_TIMEOUT.as_secs()
                        )),
                    };
                    // The receiver lives as long as the executor (the hub).
                    let _ = finished.send((id, outcome));
                });
                Execution::Later
            }
            // Refused above.
            other => Execution::Now(CommandOutcome::Failed(format!(
                "this hub does not know the command kind {other:?}"
            ))),
        }
    }

    /// The enabled slot `args["hub_slot_id"]` names, or why not.
    fn slot_of(&self, args: &serde_json::Value) -> Result<Arc<SlotCell>, String> {
        let Some(n) = args["hub_slot_id"].as_u64() else {
            return Err("arguments lack hub_slot_id".into());
        };
        let Some(id) = u32::try_from(n).ok().and_then(|n| SlotId::new(n).ok()) else {
            return Err(format!("hub_slot_id {n} is not a slot id"));
        };
        let Some(cell) = self.registry.get(id) else {
            return Err(format!("slot {n} is not configured on this hub"));
        };
        if !cell.config.enabled {
            return Err(format!("slot {n} is disabled in the hub config"));
        }
        Ok(cell)
    }
}
