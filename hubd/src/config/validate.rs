//! Checks that need more than one field, or more than a type, to judge.

use std::collections::BTreeMap;

use vss_shared::{NumberClass, NumberingPlan, SipNumber, SlotId};

use super::{Config, ConfigError, DriverConfig};

/// Validates `config`; `origin` names it in errors (usually the file path).
pub fn validate(config: &Config, origin: &str) -> Result<(), ConfigError> {
    let invalid = |field: String, value: String, why: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        field,
        value,
        why,
    };
    if config.hub.name.trim().is_empty() {
        return Err(invalid(
            "hub.name".into(),
            format!("{:?}", config.hub.name),
            "must not be empty".into(),
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&config.log.level) {
        return Err(invalid(
            "log.level".into(),
            format!("{:?}", config.log.level),
            format!("not a log filter ({e}); use e.g. \"info\" or \"info,hubd::store=debug\""),
        ));
    }
    let store = &config.store;
    if !(1..=65_536).contains(&store.batch_max) {
        return Err(invalid(
            "store.batch_max".into(),
            store.batch_max.to_string(),
            "must be between 1 and 65536".into(),
        ));
    }
    let sup = &config.supervisor;
    for (field, value) in [
        (
            "supervisor.restart_backoff_initial_ms",
            sup.restart_backoff_initial_ms,
        ),
        (
            "supervisor.restart_backoff_max_ms",
            sup.restart_backoff_max_ms,
        ),
        (
            "supervisor.health_check_interval_ms",
            sup.health_check_interval_ms,
        ),
        ("supervisor.device_timeout_ms", sup.device_timeout_ms),
    ] {
        if value == 0 {
            return Err(invalid(
                field.into(),
                "0".into(),
                "must be greater than 0".into(),
            ));
        }
    }
    if sup.restart_backoff_initial_ms > sup.restart_backoff_max_ms {
        return Err(invalid(
            "supervisor.restart_backoff_initial_ms".into(),
            sup.restart_backoff_initial_ms.to_string(),
            format!(
                "must not exceed supervisor.restart_backoff_max_ms ({})",
                sup.restart_backoff_max_ms
            ),
        ));
    }
    let mut seen: BTreeMap<SlotId, usize> = BTreeMap::new();
    for (i, slot) in config.slots.iter().enumerate() {
        if let Some(first) = seen.insert(slot.id, i) {
            return Err(invalid(
                format!("slots[{i}].id"),
                slot.id.to_string(),
                format!("duplicate slot id, already used by slots[{first}]"),
            ));
        }
        let DriverConfig::Sim(sim) = &slot.driver;
        if !(0.0..=1.0).contains(&sim.failure_rate) {
            return Err(invalid(
                format!("slots[{i}].driver.failure_rate"),
                sim.failure_rate.to_string(),
                "must be between 0 and 1".into(),
            ));
        }
    }
    slot_numbers(config).map_err(|(i, number, e)| {
        invalid(format!("slots[{i}].sip_number"), number, e.to_string())
    })?;
    Ok(())
}

/// The SIP number of every slot, in config order: explicit numbers first, then
/// the lowest free number of each remaining slot's range, in slot order.
/// On error: the slot's index, the number as written, and why.
pub(crate) fn slot_numbers(
    config: &Config,
) -> Result<Vec<SipNumber>, (usize, String, vss_shared::NumberError)> {
    let mut plan = NumberingPlan::new();
    for (i, slot) in config.slots.iter().enumerate() {
        if let Some(number) = slot.sip_number {
            plan.assign(number, NumberClass::of(slot.kind), format!("slots[{i}]"))
                .map_err(|e| (i, format!("\"{number}\""), e))?;
        }
    }
    config
        .slots
        .iter()
        .enumerate()
        .map(|(i, slot)| match slot.sip_number {
            Some(number) => Ok(number),
            None => plan
                .allocate(NumberClass::of(slot.kind), format!("slots[{i}]"))
                .map_err(|e| (i, "(none)".to_owned(), e)),
        })
        .collect()
}
