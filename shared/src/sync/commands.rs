//! At-most-once command execution on the hub (design invariant 5).
//!
//! This module owns the decision for each delivered [`Command`]: run it, answer
//! with the result already known, leave it running, or refuse it as expired.
//! It must never persist anything or read a clock: the caller loads the ledger
//! from its store, persists every change it reports, and passes `now_ms`
//! (wall clock, ms since the Unix epoch, the same clock as `expires_at_ms`).
//!
//! **Invariant:** the caller durably records that a command started *before*
//! running it. A command found started without a result after a restart is
//! never run again: it is reported as [`CommandOutcome::Unknown`].

use std::collections::HashMap;

use thiserror::Error;

use super::messages::{Command, CommandId, CommandOutcome, CommandResult};

/// What to do with a delivered command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandDecision {
    /// Persist that it started, then run it; report with [`CommandLedger::finish`].
    Execute,
    /// It already ran: send this result again, do not run it.
    AlreadyDone(CommandOutcome),
    /// It is running now: its result is sent when it finishes.
    InProgress,
    /// It arrived after `expires_at_ms`: persist and send
    /// [`CommandOutcome::Expired`]; do not run it.
    Expired,
}

/// One stored ledger row: what the caller persists and loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The command.
    pub id: CommandId,
    /// Its expiry, kept so old rows can be pruned.
    pub expires_at_ms: i64,
    /// Its result; `None` while it runs.
    pub outcome: Option<CommandOutcome>,
}

/// A misuse of the ledger (a caller bug).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LedgerError {
    /// `finish` for a command that is not running.
    #[error("command {id} is not running")]
    NotRunning {
        /// The command.
        id: CommandId,
    },
}

/// The commands a hub has seen, and their results.
#[derive(Debug, Clone, Default)]
pub struct CommandLedger {
    entries: HashMap<CommandId, LedgerEntry>,
}

impl CommandLedger {
    /// An empty ledger.
    pub fn new() -> CommandLedger {
        CommandLedger::default()
    }

    /// The ledger as stored, after a restart. Entries still running were
    /// interrupted: they become `Unknown`, and their results are returned for
    /// the caller to persist and send.
    pub fn restore(
        entries: impl IntoIterator<Item = LedgerEntry>,
    ) -> (CommandLedger, Vec<CommandResult>) {
        let mut interrupted = Vec::new();
        let entries = entries
            .into_iter()
            .map(|mut entry| {
                if entry.outcome.is_none() {
                    entry.outcome = Some(CommandOutcome::Unknown);
                    interrupted.push(CommandResult {
                        id: entry.id.clone(),
                        outcome: CommandOutcome::Unknown,
                    });
                }
                (entry.id.clone(), entry)
            })
            .collect();
        (CommandLedger { entries }, interrupted)
    }

    /// Decides what to do with `command`, delivered at `now_ms`. `Execute`
    /// and `Expired` are recorded here; the caller persists them the same way.
    pub fn decide(&mut self, command: &Command, now_ms: i64) -> CommandDecision {
        if let Some(entry) = self.entries.get(&command.id) {
            return match &entry.outcome {
                Some(outcome) => CommandDecision::AlreadyDone(outcome.clone()),
                None => CommandDecision::InProgress,
            };
        }
        let (decision, outcome) = if now_ms > command.expires_at_ms {
            (CommandDecision::Expired, Some(CommandOutcome::Expired))
        } else {
            (CommandDecision::Execute, None)
        };
        self.entries.insert(
            command.id.clone(),
            LedgerEntry {
                id: command.id.clone(),
                expires_at_ms: command.expires_at_ms,
                outcome,
            },
        );
        decision
    }

    /// A running command finished; returns the result to persist and send.
    pub fn finish(
        &mut self,
        id: &CommandId,
        outcome: CommandOutcome,
    ) -> Result<CommandResult, LedgerError> {
        match self.entries.get_mut(id) {
            Some(entry) if entry.outcome.is_none() => {
                entry.outcome = Some(outcome.clone());
                Ok(CommandResult {
                    id: id.clone(),
                    outcome,
                })
            }
            _ => Err(LedgerError::NotRunning { id: id.clone() }),
        }
    }

    /// Forgets finished commands that expired before `before_ms`; returns
    /// their ids (for the caller to delete). A forgotten command delivered
    /// again is past its expiry, so it is answered `Expired`, never run.
    pub fn prune(&mut self, before_ms: i64) -> Vec<CommandId> {
        let old: Vec<CommandId> = self
            .entries
            .values()
            .filter(|e| e.outcome.is_some() && e.expires_at_ms < before_ms)
            .map(|e| e.id.clone())
            .collect();
        for id in &old {
            self.entries.remove(id);
        }
        old
    }

    /// The entry for `id`, if known.
    pub fn get(&self, id: &CommandId) -> Option<&LedgerEntry> {
        self.entries.get(id)
    }

    /// How many commands are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
