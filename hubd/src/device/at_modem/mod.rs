//! The sans-IO core of the `at_modem` driver: GSM USB modems (Huawei,
//! Quectel, others) driven by AT commands, the AUTO slots of a hub.
//!
//! Everything here is pure: bytes and time (`now: Instant`) in, events,
//! bytes and deadlines out. No tokio, no serial port, no clock. The async
//! driver and the pty modem emulator are thin layers on top:
//!
//! ```text
//!   serial read ──bytes──► Engine::handle_input(bytes, now) ──► EngineEvent (Response, Urc, Timeout…)
//!   Engine::poll_transmit(now) ──bytes──► serial write
//!   sleep until Engine::next_deadline() ──► Engine::poll_timeout(now)
//!   ResyncFailed / Timeout ──► RecoveryLadder::on_failure(now) ──► resync, ATZ, AT+CFUN=1,1, USB power cycle, FAULT
//! ```
//!
//! Table of contents, from the wire up:
//! - [`lines`]: byte chunks → lines, the SMS `> ` prompt, garbage (bounded).
//! - [`fields`]: comma-separated parameters with quoted strings.
//! - [`parser`]: one line → final result, URC, information line or echo.
//! - [`urc`]: the typed unsolicited result codes.
//! - [`command`]: a command as queued: text, timeout, optional PDU payload.
//! - [`engine`]: the command queue, one command on the wire, timeouts, resync.
//! - [`recovery`]: the recovery ladder (resync → ATZ → reboot → USB power cycle → FAULT).
//! - [`replies`]: typed parsers of information lines (`+CSQ`, `+CLCC`, IMEI…).
//! - [`calls`]: call state from URCs and `+CLCC`; the proof that gates `AT+CHLD=1x`.
//! - [`profile`]: per-vendor init, dial, answer, hang-up, DTMF and USSD commands.
//! - [`pdu`]: SMS PDUs (SMS-SUBMIT, SMS-DELIVER), GSM 7-bit, UCS-2, USSD.
//!
//! **Invariant (one command on the wire):** the engine transmits a command only
//! when the previous one has ended (final result, timeout or abandon) and, after
//! a timeout or garbage, only once a resync probe got a clean `OK`.
//!
//! **Invariant (URCs are never replies):** a line whose prefix the running
//! command does not expect is never added to that command's information lines;
//! see [`parser::classify`].
//!
//! **Invariant (one ending per command):** every submitted command ends with
//! exactly one of `Response`, `Timeout` or `Abandoned`.
//!
//! **Invariant (never panics on modem input):** nothing in this module indexes,
//! unwraps or allocates without bound on bytes that came from the modem; the
//! `at_engine` fuzz target (`hubd/fuzz`) checks it.

pub mod calls;
pub mod command;
pub mod directory;
pub mod driver;
pub mod engine;
pub mod fields;
pub mod lines;
pub mod link;
pub mod parser;
pub mod pdu;
pub mod port;
pub mod power;
pub mod profile;
pub mod recovery;
pub mod replies;
pub mod urc;
pub mod voice;

pub use calls::{CallTracker, ConfirmedCall};
pub use command::{Command, CommandError, CommandId};
pub use engine::{Engine, EngineConfig, EngineEvent};
pub use parser::FinalResult;
pub use profile::{ModemProfile, Vendor};
pub use recovery::{RecoveryAction, RecoveryLadder, RecoveryStep};
pub use urc::Urc;
