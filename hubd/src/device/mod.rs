//! The device driver boundary: what a slot supervisor asks of a device and
//! what a device reports on its own.
//!
//! Drivers (`sim` now; `at_modem`, `adb`, `ssh` later) only move bytes to and
//! from their device and translate them into [`DeviceEvent`]s. They never touch
//! the store, the slot state machine or another slot: the supervisor owns all
//! of that, and contains a driver's errors and panics to its own slot.

pub mod at_modem;
pub mod sim;

use async_trait::async_trait;

use std::sync::Arc;

use crate::config::{DriverConfig, ModemsSection, SlotConfig};

/// What a device reports without being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A call rings on the device.
    IncomingCall {
        /// Caller's number as the network presented it (may be empty).
        remote_number: String,
    },
    /// The current call was answered.
    CallAnswered,
    /// The current call ended.
    CallEnded {
        /// Why, in the device's words (e.g. `normal_clearing`, `no_answer`).
        cause: String,
    },
    /// The device lost its network (or SIP) registration, or stopped
    /// answering and is being recovered: the slot is out of service until
    /// [`DeviceEvent::Registered`].
    RegistrationLost {
        /// Why.
        reason: String,
    },
    /// The device is registered (and answering) again.
    Registered,
    /// The device was found again under other ports (a modem that
    /// re-enumerated); the slot's `device` field changes.
    Rebound {
        /// The new description.
        description: String,
    },
    /// An SMS arrived (multipart messages already joined).
    SmsReceived {
        /// The sender's number or alphanumeric name.
        sender: String,
        /// The text.
        text: String,
    },
    /// The driver took a recovery step (resync, soft reset, reboot, USB
    /// power cycle) on a device that stopped answering.
    Recovery {
        /// The step, e.g. `soft_reset`.
        step: String,
        /// Why.
        reason: String,
    },
}

/// What a bound device told about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// One line an operator recognises, e.g. `Huawei E1550 IMEI 35…`.
    pub description: String,
}

/// Why a device operation failed. The message ends up in the slot's FAULT reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The device did not answer in time.
    #[error("device did not answer {operation} within {timeout_ms} ms")]
    Timeout {
        /// What was asked.
        operation: &'static str,
        /// How long we waited.
        timeout_ms: u64,
    },
    /// The device answered with an error or garbage.
    #[error("device error during {operation}: {message}")]
    Failed {
        /// What was asked.
        operation: &'static str,
        /// What the device said.
        message: String,
    },
    /// The device is gone (unplugged, port closed).
    #[error("device gone: {0}")]
    Gone(String),
}

/// One slot's device, driven by exactly one supervisor.
///
/// Every method may take time; the supervisor bounds each with a timeout.
/// [`Device::next_event`] must be cancel-safe: the supervisor drops its future
/// whenever something else needs attention, and calls it again later.
#[async_trait]
pub trait Device: Send {
    /// Opens and identifies the device.
    async fn bind(&mut self) -> Result<DeviceInfo, DeviceError>;
    /// Registers on the network (and its SIP extension).
    async fn register(&mut self) -> Result<(), DeviceError>;
    /// Waits for the next thing the device reports.
    async fn next_event(&mut self) -> Result<DeviceEvent, DeviceError>;
    /// Checks the device still answers.
    async fn health_check(&mut self) -> Result<(), DeviceError>;
    /// Places a call to `number`.
    async fn dial(&mut self, number: &str) -> Result<(), DeviceError>;
    /// Hangs up the current call, if any.
    async fn hang_up(&mut self) -> Result<(), DeviceError>;
    /// Answers the ringing incoming call.
    async fn answer(&mut self) -> Result<(), DeviceError> {
        Err(DeviceError::Failed {
            operation: "answer",
            message: "this device does not answer calls".into(),
        })
    }
    /// Sends DTMF `digits` (0-9, *, #, A-D) in the answered call.
    async fn send_dtmf(&mut self, digits: &str) -> Result<(), DeviceError> {
        let _ = digits;
        Err(DeviceError::Failed {
            operation: "dtmf",
            message: "this device does not send DTMF".into(),
        })
    }
    /// Closes the device. Idempotent; never fails (problems are logged).
    async fn release(&mut self);
    /// The device as a GSM modem, for SMS and USSD; `None` for other kinds.
    fn as_modem(&mut self) -> Option<&mut at_modem::driver::AtModemDevice> {
        None
    }
}

/// What drivers of one hub share (the AT modems' directory and figures).
#[derive(Debug, Clone)]
pub struct DeviceEnv {
    /// The AT modems of the hub.
    pub modems: Arc<at_modem::driver::ModemEnv>,
}

impl DeviceEnv {
    /// The environment for `config`'s modems, counting into `metrics`.
    pub fn new(modems: &ModemsSection, metrics: Arc<crate::metrics::Metrics>) -> DeviceEnv {
        DeviceEnv {
            modems: Arc::new(at_modem::driver::ModemEnv::new(modems.clone(), metrics)),
        }
    }
}

/// Builds a fresh driver for `slot`, as its config says. Called at every
/// (re)start of the slot, so a restart never reuses a half-broken driver;
/// `session` counts the slot's sessions since hubd started (0 first).
pub fn create(slot: &SlotConfig, session: u64, env: &DeviceEnv) -> Box<dyn Device> {
    match &slot.driver {
        DriverConfig::Sim(sim) => Box::new(sim::SimDevice::new(slot.id, session, sim.clone())),
        DriverConfig::AtModem(modem) => Box::new(at_modem::driver::AtModemDevice::new(
            slot.id,
            modem.clone(),
            Arc::clone(&env.modems),
        )),
    }
}
