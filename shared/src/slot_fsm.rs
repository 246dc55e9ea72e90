//! The slot state machine, as one pure function: [`transition`].
//!
//! This module owns the slot lifecycle — which events are valid in which state,
//! the state they lead to, and the side effects the caller must carry out, as
//! [`SlotAction`]s in order. It must never perform those actions itself, do I/O,
//! read a clock, or panic: an event that does not fit the state is an
//! [`InvalidTransition`] for the caller to log.
//!
//! After a call, POSTCALL returns to READY on [`SlotEvent::WrapUpDone`]: the
//! device stays registered between calls, so the next call needs no new
//! registration. The seeds' "POSTCALL → IDLE" is the [`SlotEvent::Released`]
//! path, taken when an operator or the supervisor lets go of the device.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a slot is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SlotState {
    /// No device bound.
    Idle,
    /// The driver has opened and identified the device.
    Assigned,
    /// Network and SIP registration are in progress.
    Registering,
    /// Registered and waiting for a call.
    Ready,
    /// A call is being set up (ringing or dialling).
    Calling,
    /// A call is answered and in progress.
    ActiveCall,
    /// A call has ended; post-call work (CDR, recording) is running.
    #[serde(rename = "POSTCALL")]
    PostCall,
    /// The slot is unusable until it recovers.
    Fault,
}

impl SlotState {
    /// Every state, in lifecycle order.
    pub const ALL: [SlotState; 8] = [
        SlotState::Idle,
        SlotState::Assigned,
        SlotState::Registering,
        SlotState::Ready,
        SlotState::Calling,
        SlotState::ActiveCall,
        SlotState::PostCall,
        SlotState::Fault,
    ];

    /// The serialized name, e.g. `"ACTIVE_CALL"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Idle => "IDLE",
            SlotState::Assigned => "ASSIGNED",
            SlotState::Registering => "REGISTERING",
            SlotState::Ready => "READY",
            SlotState::Calling => "CALLING",
            SlotState::ActiveCall => "ACTIVE_CALL",
            SlotState::PostCall => "POSTCALL",
            SlotState::Fault => "FAULT",
        }
    }

    /// The coarse status operators and the seeds see.
    pub fn status(self) -> SlotStatus {
        match self {
            SlotState::Ready => SlotStatus::Free,
            SlotState::Calling | SlotState::ActiveCall | SlotState::PostCall => SlotStatus::Busy,
            SlotState::Idle | SlotState::Assigned | SlotState::Registering => SlotStatus::Offline,
            SlotState::Fault => SlotStatus::Fault,
        }
    }

    /// Whether the device has a call up (CALLING or ACTIVE_CALL).
    pub fn in_call(self) -> bool {
        matches!(self, SlotState::Calling | SlotState::ActiveCall)
    }
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SlotState {
    type Err = ParseSlotStateError;

    /// Accepts exactly the serialized names (`IDLE`, ..., `FAULT`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SlotState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseSlotStateError {
                input: s.to_owned(),
            })
    }
}

/// The text given to [`SlotState::from_str`] names no state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown slot state {input:?}; expected one of IDLE, ASSIGNED, REGISTERING, READY, \
     CALLING, ACTIVE_CALL, POSTCALL, FAULT"
)]
pub struct ParseSlotStateError {
    /// The rejected text.
    pub input: String,
}

/// A slot's coarse status: the seeds' `status` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotStatus {
    /// READY: can take a call.
    Free,
    /// CALLING, ACTIVE_CALL or POSTCALL.
    Busy,
    /// IDLE, ASSIGNED or REGISTERING.
    Offline,
    /// FAULT.
    Fault,
}

impl SlotStatus {
    /// The serialized name: `"free"`, `"busy"`, `"offline"` or `"fault"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Free => "free",
            SlotStatus::Busy => "busy",
            SlotStatus::Offline => "offline",
            SlotStatus::Fault => "fault",
        }
    }
}

impl fmt::Display for SlotStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallDirection {
    /// The slot dials out (PBX → slot → GSM).
    Outbound,
    /// A call rings on the device.
    Inbound,
}

/// Something that happened to a slot. Serialized with a `kind` tag in
/// snake_case, e.g. `{"kind":"call_started","direction":"inbound"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SlotEvent {
    /// The driver opened and identified the device.
    DeviceBound,
    /// The supervisor starts network and SIP registration.
    RegistrationStarted,
    /// The device is on the network and its SIP extension is registered.
    Registered,
    /// Registration dropped (network or SIP).
    RegistrationLost,
    /// A call started.
    CallStarted {
        /// Which way the call goes.
        direction: CallDirection,
    },
    /// The call was answered.
    CallAnswered,
    /// The call ended, answered or not.
    CallEnded,
    /// Post-call work (CDR, recording) finished.
    WrapUpDone,
    /// An operator or the supervisor releases the device (restart, disable).
    Released,
    /// Something made the slot unusable.
    Failed {
        /// What went wrong, for operators.
        reason: String,
    },
    /// Recovery from FAULT begins; the slot goes back through IDLE.
    Recovered,
}

impl SlotEvent {
    /// The event's kind, without its data.
    pub fn kind(&self) -> SlotEventKind {
        match self {
            SlotEvent::DeviceBound => SlotEventKind::DeviceBound,
            SlotEvent::RegistrationStarted => SlotEventKind::RegistrationStarted,
            SlotEvent::Registered => SlotEventKind::Registered,
            SlotEvent::RegistrationLost => SlotEventKind::RegistrationLost,
            SlotEvent::CallStarted { .. } => SlotEventKind::CallStarted,
            SlotEvent::CallAnswered => SlotEventKind::CallAnswered,
            SlotEvent::CallEnded => SlotEventKind::CallEnded,
            SlotEvent::WrapUpDone => SlotEventKind::WrapUpDone,
            SlotEvent::Released => SlotEventKind::Released,
            SlotEvent::Failed { .. } => SlotEventKind::Failed,
            SlotEvent::Recovered => SlotEventKind::Recovered,
        }
    }
}

/// The kind of a [`SlotEvent`], without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotEventKind {
    /// See [`SlotEvent::DeviceBound`].
    DeviceBound,
    /// See [`SlotEvent::RegistrationStarted`].
    RegistrationStarted,
    /// See [`SlotEvent::Registered`].
    Registered,
    /// See [`SlotEvent::RegistrationLost`].
    RegistrationLost,
    /// See [`SlotEvent::CallStarted`].
    CallStarted,
    /// See [`SlotEvent::CallAnswered`].
    CallAnswered,
    /// See [`SlotEvent::CallEnded`].
    CallEnded,
    /// See [`SlotEvent::WrapUpDone`].
    WrapUpDone,
    /// See [`SlotEvent::Released`].
    Released,
    /// See [`SlotEvent::Failed`].
    Failed,
    /// See [`SlotEvent::Recovered`].
    Recovered,
}

impl SlotEventKind {
    /// Every event kind.
    pub const ALL: [SlotEventKind; 11] = [
        SlotEventKind::DeviceBound,
        SlotEventKind::RegistrationStarted,
        SlotEventKind::Registered,
        SlotEventKind::RegistrationLost,
        SlotEventKind::CallStarted,
        SlotEventKind::CallAnswered,
        SlotEventKind::CallEnded,
        SlotEventKind::WrapUpDone,
        SlotEventKind::Released,
        SlotEventKind::Failed,
        SlotEventKind::Recovered,
    ];

    /// The serialized name, e.g. `"device_bound"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotEventKind::DeviceBound => "device_bound",
            SlotEventKind::RegistrationStarted => "registration_started",
            SlotEventKind::Registered => "registered",
            SlotEventKind::RegistrationLost => "registration_lost",
            SlotEventKind::CallStarted => "call_started",
            SlotEventKind::CallAnswered => "call_answered",
            SlotEventKind::CallEnded => "call_ended",
            SlotEventKind::WrapUpDone => "wrap_up_done",
            SlotEventKind::Released => "released",
            SlotEventKind::Failed => "failed",
            SlotEventKind::Recovered => "recovered",
        }
    }
}

impl fmt::Display for SlotEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A side effect the caller must carry out after a transition. Serialized
/// with a `kind` tag in snake_case, e.g. `{"kind":"write_cdr"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SlotAction {
    /// Start (or restart) registration on the device.
    Register,
    /// Hang up the device's current call.
    HangUp,
    /// Close the call record: write its CDR.
    WriteCdr,
    /// Close the device; recovery will bind it again.
    ReleaseDevice,
    /// Tell operators the slot faulted.
    RaiseAlert {
        /// Why the slot faulted.
        reason: String,
    },
}

/// The outcome of a valid event: the new state and the actions to run, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state before the event.
    pub from: SlotState,
    /// The state after the event.
    pub to: SlotState,
    /// What the caller must do, in this order.
    pub actions: Vec<SlotAction>,
}

/// An event that is not valid in the slot's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[error("event {event} is not valid in state {state}")]
pub struct InvalidTransition {
    /// The slot's state, unchanged.
    pub state: SlotState,
    /// The kind of the rejected event.
    pub event: SlotEventKind,
}

/// Applies `event` to a slot in `state`.
///
/// Returns the new state and the actions to run in order, or
/// [`InvalidTransition`] when the event does not fit the state. In FAULT, a
/// further `Failed` keeps the slot in FAULT with no actions: the caller records
/// the newer reason, and operators get no second alert.
pub fn transition(state: SlotState, event: &SlotEvent) -> Result<Transition, InvalidTransition> {
    use SlotAction::{HangUp, Register, ReleaseDevice, WriteCdr};
    use SlotEvent as E;
    use SlotState as S;

    let alert = |reason: &str| SlotAction::RaiseAlert {
        reason: reason.to_owned(),
    };
    let (to, actions) = match (state, event) {
        (S::Idle, E::DeviceBound) => (S::Assigned, vec![]),
        (S::Assigned, E::RegistrationStarted) => (S::Registering, vec![Register]),
        (S::Registering, E::Registered) => (S::Ready, vec![]),
        (S::Ready | S::PostCall, E::RegistrationLost) => (S::Registering, vec![Register]),
        (S::Ready, E::CallStarted { .. }) => (S::Calling, vec![]),
        (S::Calling, E::CallAnswered) => (S::ActiveCall, vec![]),
        (S::Calling | S::ActiveCall, E::CallEnded) => (S::PostCall, vec![WriteCdr]),
        (S::PostCall, E::WrapUpDone) => (S::Ready, vec![]),

        (S::Assigned | S::Registering | S::Ready | S::PostCall, E::Released) => {
            (S::Idle, vec![ReleaseDevice])
        }
        (S::Calling | S::ActiveCall, E::Released) => {
            (S::Idle, vec![HangUp, WriteCdr, ReleaseDevice])
        }

        (S::Idle, E::Failed { reason }) => (S::Fault, vec![alert(reason)]),
        (S::Assigned | S::Registering | S::Ready | S::PostCall, E::Failed { reason }) => {
            (S::Fault, vec![ReleaseDevice, alert(reason)])
        }
        (S::Calling | S::ActiveCall, E::Failed { reason }) => (
            S::Fault,
            vec![HangUp, WriteCdr, ReleaseDevice, alert(reason)],
        ),
        (S::Fault, E::Failed { .. }) => (S::Fault, vec![]),
        (S::Fault, E::Recovered) => (S::Idle, vec![]),

        _ => {
            return Err(InvalidTransition {
                state,
                event: event.kind(),
            });
        }
    };
    Ok(Transition {
        from: state,
        to,
        actions,
    })
}
