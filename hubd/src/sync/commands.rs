//! Carrying out control-plane commands on this hub, at most once.
//!
//! The decision (run, answer again, still running, expired) is
//! `vss_shared::sync::CommandLedger`'s; this module persists each decision in
//! the store *before* acting (`Write::CommandStarted`), acts, persists the
//! outcome (`Write::CommandFinished`), and returns the `CommandResult` to send.
//! A command interrupted by a restart is reported `unknown` and never re-run.
//!
//! Kinds understood: `restart_slot` (`{"hub_slot_id": N}`). Any other kind
//! fails with a reason naming it, so a newer control plane learns this hub
//! cannot do it.

use std::sync::Arc;

use vss_shared::SlotId;
use vss_shared::sync::{
    Command, CommandDecision, CommandId, CommandLedger, CommandOutcome, CommandResult, LedgerEntry,
};

use super::SyncError;
use crate::store::{CommandRow, StoreHandle, Write};
use crate::supervisor::Registry;

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
        Ok((
            Executor {
                ledger,
                store,
                registry,
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
                let outcome = self.execute(command);
                tracing::info!(id = command.id.as_str(), kind = %command.kind, ?outcome, "command executed");
                let (name, detail) = outcome_name(&outcome);
                self.store
                    .write(Write::CommandFinished {
                        id: command.id.as_str().to_owned(),
                        outcome: name.into(),
                        detail,
                    })
                    .await
                    .map_err(store_err)?;
                self.ledger
                    .finish(&command.id, outcome)
                    .map(Some)
                    .map_err(|e| SyncError::Protocol(e.to_string()))
            }
        }
    }

    fn execute(&self, command: &Command) -> CommandOutcome {
        match command.kind.as_str() {
            "restart_slot" => {
                let args: serde_json::Value = match serde_json::from_slice(&command.args) {
                    Ok(args) => args,
                    Err(e) => {
                        return CommandOutcome::Failed(format!("arguments are not JSON: {e}"));
                    }
                };
                let Some(n) = args["hub_slot_id"].as_u64() else {
                    return CommandOutcome::Failed("arguments lack hub_slot_id".into());
                };
                let Some(id) = u32::try_from(n).ok().and_then(|n| SlotId::new(n).ok()) else {
                    return CommandOutcome::Failed(format!("hub_slot_id {n} is not a slot id"));
                };
                let Some(cell) = self.registry.get(id) else {
                    return CommandOutcome::Failed(format!(
                        "slot {n} is not configured on this hub"
                    ));
                };
                if !cell.config.enabled {
                    return CommandOutcome::Failed(format!(
                        "slot {n} is disabled in the hub config"
                    ));
                }
                cell.request_restart();
                CommandOutcome::Done
            }
            other => {
                CommandOutcome::Failed(format!("this hub does not know the command kind {other:?}"))
            }
        }
    }
}
