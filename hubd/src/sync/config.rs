//! Applying a configuration revision the control plane pushed (F-14).
//!
//! A `ConfigPush` is handled in three steps, and only the first may refuse:
//! 1. the document is parsed and checked by hubd's own configuration rules
//!    (the same `validate` as the file: slot ids, numbering plan, driver
//!    settings, IMEI uniqueness …) with the file's other sections;
//! 2. it is recorded in the store, document, applied revision and slots in
//!    one transaction (`store::desired`); a revision not above the applied
//!    one is acknowledged without being applied again;
//! 3. the running hub is reconciled (`Registry::reconcile`): slots added
//!    start, removed ones stop, changed ones restart, the others go on.
//!
//! A refused revision changes nothing: the hub keeps running its previous
//! slots and reports `Rejected` with the reason. At the next start the
//! applied revision wins over the file's `[[slots]]` ([`startup_slots`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use vss_shared::sync::{ConfigApplied, ConfigOutcome, ConfigPush};
use vss_shared::{SipNumber, SlotId, SlotKind};

use crate::config::{Config, DriverConfig, SlotConfig};
use crate::store::SlotRow;
use crate::store::desired::{self, AppliedConfig, Recorded};
use crate::supervisor::{DesiredSlot, Registry};

/// The pushed document: `{"slots":[…]}`. Fields this release does not know
/// are ignored, so a newer control plane can add some.
#[derive(Debug, Deserialize)]
struct Document {
    slots: Vec<PushedSlot>,
}

/// One slot of the document: a `[[slots]]` entry plus its SIP password.
#[derive(Debug, Deserialize)]
struct PushedSlot {
    id: SlotId,
    #[serde(default)]
    name: Option<String>,
    kind: SlotKind,
    #[serde(default)]
    sip_number: Option<SipNumber>,
    #[serde(default)]
    sip_password: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    driver: DriverConfig,
}

fn yes() -> bool {
    true
}

/// The configuration revision this hub runs, for `/health`, `/metrics` and `Hello`.
#[derive(Debug, Default)]
pub struct ConfigStatus {
    /// The applied revision; 0 while the hub runs its file's slots.
    revision: AtomicU64,
    /// The last revision refused, and why.
    rejected: Mutex<Option<(u64, String)>>,
}

impl ConfigStatus {
    /// A status starting at `revision` (`None`: the file's slots).
    pub fn new(revision: Option<u64>) -> ConfigStatus {
        ConfigStatus {
            revision: AtomicU64::new(revision.unwrap_or(0)),
            rejected: Mutex::new(None),
        }
    }

    /// The applied revision, if the hub runs a pushed one.
    pub fn revision(&self) -> Option<u64> {
        Some(self.revision.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    /// The last revision refused since start, and why.
    pub fn last_rejected(&self) -> Option<(u64, String)> {
        self.rejected.lock().ok().and_then(|r| r.clone())
    }

    fn rejected(&self, revision: u64, why: &str) {
        if let Ok(mut last) = self.rejected.lock() {
            *last = Some((revision, why.to_owned()));
        }
    }
}

/// Parses `document` and checks it by hubd's rules against `base` (the
/// file's configuration, whose slots it replaces). On error, one line.
pub fn parse(base: &Config, revision: u64, document: &[u8]) -> Result<Vec<DesiredSlot>, String> {
    let document: Document = serde_json::from_slice(document)
        .map_err(|e| format!("configuration revision {revision} is not a valid document: {e}"))?;
    let mut passwords = Vec::with_capacity(document.slots.len());
    let mut config = base.clone();
    config.slots = document
        .slots
        .into_iter()
        .map(|slot| {
            passwords.push(slot.sip_password);
            SlotConfig {
                id: slot.id,
                name: slot.name,
                kind: slot.kind,
                sip_number: slot.sip_number,
                enabled: slot.enabled,
                driver: slot.driver,
            }
        })
        .collect();
    let origin = format!("configuration revision {revision}");
    crate::config::validate(&config, &origin).map_err(|e| e.to_string())?;
    let numbers = crate::config::slot_numbers_checked(&config).map_err(|e| e.to_string())?;
    Ok(config
        .slots
        .into_iter()
        .zip(numbers)
        .zip(passwords)
        .map(|((config, sip_number), sip_password)| DesiredSlot {
            config,
            sip_number,
            sip_password,
        })
        .collect())
}

/// The slots the hub starts with: those of the applied revision in the
/// store when there is one (it wins over the file), else the file's.
/// Returns the applied revision too. A stored revision this hubd can no
/// longer accept (its rules changed) is logged, and the file's slots are used.
pub fn startup_slots(
    config: &Config,
    applied: Option<AppliedConfig>,
) -> Result<(Vec<DesiredSlot>, Option<u64>), crate::config::ConfigError> {
    if let Some(applied) = applied {
        match parse(config, applied.revision, applied.document.as_bytes()) {
            Ok(slots) => {
                tracing::info!(
                    revision = applied.revision,
                    slots = slots.len(),
                    "running the configuration revision the control plane pushed (it wins over the file's [[slots]])"
                );
                return Ok((slots, Some(applied.revision)));
            }
            Err(why) => {
                tracing::error!(revision = applied.revision, error = %why, "the stored configuration revision is no longer valid; running the file's [[slots]]");
            }
        }
    }
    let numbers = crate::config::slot_numbers_checked(config)?;
    let slots = config
        .slots
        .iter()
        .cloned()
        .zip(numbers)
        .map(|(config, sip_number)| DesiredSlot {
            config,
            sip_number,
            sip_password: None,
        })
        .collect();
    Ok((slots, None))
}

/// The store's rows for `slots`.
pub fn slot_rows(slots: &[DesiredSlot]) -> Vec<SlotRow> {
    slots
        .iter()
        .map(|slot| SlotRow {
            id: slot.config.id,
            name: slot.config.display_name(),
            kind: slot.config.kind,
            sip_number: slot.sip_number,
            enabled: slot.config.enabled,
        })
        .collect()
}

/// Applies pushed revisions, one at a time.
#[derive(Debug)]
pub struct ConfigApplier {
    base: Config,
    registry: Arc<Registry>,
    db_path: PathBuf,
    status: Arc<ConfigStatus>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl ConfigApplier {
    /// An applier for the hub started from `base`.
    pub fn new(
        base: Config,
        registry: Arc<Registry>,
        db_path: PathBuf,
        status: Arc<ConfigStatus>,
    ) -> ConfigApplier {
        ConfigApplier {
            base,
            registry,
            db_path,
            status,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The applied revision, if any.
    pub fn revision(&self) -> Option<u64> {
        self.status.revision()
    }

    /// Handles a push; returns the report to send.
    pub async fn apply(&self, push: &ConfigPush) -> ConfigApplied {
        let _one = self.one_at_a_time.lock().await;
        let revision = push.revision;
        let answer = |outcome| ConfigApplied { revision, outcome };
        let reject = |why: String| {
            tracing::warn!(revision, reason = %why, "configuration revision rejected; the hub keeps its previous slots");
            self.status.rejected(revision, &why);
            answer(ConfigOutcome::Rejected(why))
        };
        if revision == 0 {
            return reject("revision 0 is not a configuration revision".into());
        }
        if self
            .status
            .revision()
            .is_some_and(|applied| applied >= revision)
        {
            tracing::info!(revision, "configuration revision already applied");
            return answer(ConfigOutcome::Applied);
        }
        let slots = match parse(&self.base, revision, &push.document) {
            Ok(slots) => slots,
            Err(why) => return reject(why),
        };
        let Ok(document) = String::from_utf8(push.document.clone()) else {
            return reject(format!("configuration revision {revision} is not UTF-8"));
        };
        let rows = slot_rows(&slots);
        let db_path = self.db_path.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            desired::record_applied(&db_path, revision, &document, &rows)
        })
        .await;
        match recorded {
            Ok(Ok(Recorded::Stored)) => {}
            Ok(Ok(Recorded::AlreadyApplied(applied))) => {
                tracing::info!(revision, applied, "configuration revision already applied");
                return answer(ConfigOutcome::Applied);
            }
            Ok(Err(e)) => {
                return reject(format!("the hub could not store revision {revision}: {e}"));
            }
            Err(e) => return reject(format!("the hub could not store revision {revision}: {e}")),
        }
        let report = self.registry.reconcile(slots).await;
        self.status.revision.store(revision, Ordering::Relaxed);
        tracing::info!(
            revision,
            added = ?report.added,
            removed = ?report.removed,
            changed = ?report.changed,
            unchanged = report.unchanged.len(),
            "configuration revision applied"
        );
        answer(ConfigOutcome::Applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot as parsed: id, SIP number, SIP password.
    type Parsed<'a> = (u32, &'a str, Option<&'a str>);

    fn check(document: serde_json::Value, expect: Result<&[Parsed<'_>], &str>) {
        let parsed = parse(&Config::default(), 7, document.to_string().as_bytes());
        match (parsed, expect) {
            (Ok(slots), Ok(want)) => {
                let got: Vec<(u32, String, Option<&str>)> = slots
                    .iter()
                    .map(|s| {
                        (
                            s.config.id.get(),
                            s.sip_number.to_string(),
                            s.sip_password.as_deref(),
                        )
                    })
                    .collect();
                let want: Vec<(u32, String, Option<&str>)> = want
                    .iter()
                    .map(|(id, n, p)| (*id, (*n).to_owned(), *p))
                    .collect();
                assert_eq!(got, want);
            }
            (Err(why), Err(part)) => assert!(why.contains(part), "{why:?} should mention {part:?}"),
            (got, want) => panic!("{document}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn documents_are_checked_by_hubd_rules() {
        let sim = serde_json::json!({ "type": "sim" });
        check(
            serde_json::json!({ "slots": [
                { "id": 1, "kind": "auto", "sip_password": "pw", "driver": sim },
                { "id": 2, "kind": "mf", "sip_number": "7009", "driver": sim, "added_later": true },
            ], "unknown_section": {} }),
            Ok(&[(1, "6001", Some("pw")), (2, "7009", None)]),
        );
        check(serde_json::json!({ "slots": [] }), Ok(&[]));
        check(
            serde_json::json!({ "slots": [
                { "id": 3, "kind": "auto", "driver": sim },
                { "id": 3, "kind": "ls", "driver": sim },
            ] }),
            Err("configuration revision 7: field `slots[1].id` = 3: duplicate slot id"),
        );
        check(
            serde_json::json!({ "slots": [{ "id": 1, "kind": "auto", "sip_number": "7001", "driver": sim }] }),
            Err("slots[0].sip_number"),
        );
        check(
            serde_json::json!({ "slots": [{ "id": 1, "kind": "auto", "sip_number": "9999", "driver": sim }] }),
            Err("not a valid document"),
        );
        check(
            serde_json::json!({ "slots": [{ "id": 1, "kind": "auto", "driver": { "type": "sim", "failure_rate": 2.0 } }] }),
            Err("slots[0].driver.failure_rate"),
        );
        check(
            serde_json::json!({ "slots": [{ "id": 1, "kind": "mf", "driver": { "type": "at_modem", "imei": "490154203237518" } }] }),
            Err("slots[0].driver.type"),
        );
        check(
            serde_json::json!({ "slot": [] }),
            Err("not a valid document"),
        );
        check(serde_json::json!([1, 2]), Err("not a valid document"));
    }
}
