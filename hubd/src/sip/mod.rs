//! SIP: every slot registers as an extension on the PBX (6xxx AUTO, 7xxx MF,
//! 8xxx LS) and bridges calls between SIP/RTP and its device.
//!
//! Our own small stack, sans-IO like the AT engine (see `docs/sip.md` for why):
//! - [`message`]: parsing and serialising SIP messages (fuzzed).
//! - [`auth`]: digest authentication (MD5, SHA-256, with and without qop).
//! - [`transaction`]: the non-INVITE client transaction's timers E and F.
//! - [`registration`]: one slot's registration: challenge, refresh,
//!   backoff, failover, auth failure, unregister.
//! - [`call`]: one call's INVITE dialog, either way (F-09, F-03): UAS and
//!   UAC transactions, CANCEL, BYE, ACK rules.
//! - [`bridge`]: one task per call joining its [`call`] to the slot's device
//!   (through the slot's session), its RTP session, recorder and health meter.
//! - [`audiosocket_bridge`]: the same for a call streamed to an AudioSocket
//!   server (the AI call processor) instead of a SIP leg.
//! - [`endpoint`]: the hub's one UDP socket and the tokio tasks driving each
//!   slot's registration and each call; with [`bridge`], the only modules here
//!   that do IO.

pub mod audiosocket_bridge;
pub mod auth;
pub mod bridge;
pub mod call;
pub mod endpoint;
pub mod message;
pub mod registration;
mod rng;
pub mod transaction;

pub use endpoint::{
    CallAction, CallHandle, CallListener, IncomingCall, RegistrationHandle, SipError, SipUa,
    SlotCredentials, UaConfig,
};
pub use registration::{Registration, RegistrationConfig, RegistrationEvent};
