//! `vss-shared`: the vocabulary every VSS Demiurge process shares.
//!
//! It owns the domain types (hub and slot ids, slot kinds), the internal SIP
//! numbering plan, the slot state machine, the records hubs publish through
//! their outbox, and the hub ↔ control-plane sync protocol (`sync`). It must
//! never do I/O: no tokio, no sockets, no files, no clock. Time and randomness
//! come in as arguments.
#![warn(missing_docs)]

pub mod config;
pub mod enroll;
pub mod events;
pub mod ids;
pub mod media;
pub mod numbering;
pub mod slot_fsm;
pub mod sync;

pub use ids::{HubId, IdError, SlotId, SlotKind};
pub use numbering::{NumberClass, NumberError, NumberingPlan, SipNumber};
pub use slot_fsm::{
    CallDirection, InvalidTransition, ParseSlotStateError, SlotAction, SlotEvent, SlotEventKind,
    SlotState, SlotStatus, Transition, transition,
};
