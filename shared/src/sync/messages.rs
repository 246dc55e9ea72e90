//! The sync protocol's message set, as the rest of the code sees it.
//!
//! This module owns the domain shape of every message a hub and the control
//! plane exchange: one envelope enum per direction ([`HubMessage`],
//! [`ControlMessage`]) and the validated values they carry ([`OutboxState`],
//! [`CommandId`], [`CloseCode`]). It must never know about bytes: encoding
//! lives in `codec`, framing in `frame`. A value of these types is always well
//! formed, because the codec validates on the way in.

use std::fmt;

use thiserror::Error;

use crate::HubId;

use super::version::VersionRange;

/// Everything a hub sends to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubMessage {
    /// First message of every connection.
    Hello(Hello),
    /// Outbox events, in sequence order.
    OutboxBatch(OutboxBatch),
    /// The outcome of applying a pushed configuration revision.
    ConfigApplied(ConfigApplied),
    /// The outcome of a command.
    CommandResult(CommandResult),
    /// Liveness probe; the control plane answers with a `HeartbeatAck`.
    Heartbeat(Heartbeat),
}

/// Everything the control plane sends to a hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// Answer to `Hello`: the connection is accepted.
    Welcome(Welcome),
    /// Outbox events are durably committed up to a sequence number.
    Ack(Ack),
    /// A new desired configuration revision.
    ConfigPush(ConfigPush),
    /// Something the hub must do at most once.
    Command(Command),
    /// Answer to `Heartbeat`.
    HeartbeatAck(HeartbeatAck),
    /// The sender is closing the connection, and why.
    Close(Close),
}

/// A hub introduces itself; always the first message of a connection.
///
/// The control plane must check `hub_id` against the hub id in the client
/// certificate before believing anything else in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Which hub this is.
    pub hub_id: HubId,
    /// Protocol versions the hub speaks.
    pub versions: VersionRange,
    /// The hub's software version, e.g. `0.3.1` (informational).
    pub software_version: String,
    /// The last configuration revision the hub applied; `None` if it never applied one.
    pub config_revision: Option<u64>,
    /// What the hub's outbox holds, so the control plane can pick the resume point.
    pub outbox: OutboxState,
}

/// The sequence range a hub's Outbox can still deliver.
///
/// Invariant: `1 <= first_seq <= next_seq`. Every seq in `first_seq..next_seq`
/// is stored on the hub; seqs below `first_seq` were acknowledged and pruned,
/// or never issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutboxState {
    first_seq: u64,
    next_seq: u64,
}

/// Why an [`OutboxState`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OutboxStateError {
    /// Sequence numbers start at 1; `first_seq` was 0.
    #[error("outbox first_seq is 0; sequence numbers start at 1")]
    ZeroFirstSeq,
    /// `first_seq` is above `next_seq`: the hub would hold seqs it never issued.
    #[error("outbox first_seq {first_seq} is above next_seq {next_seq}")]
    FirstAboveNext {
        /// The lowest seq the hub claims to hold.
        first_seq: u64,
        /// The seq its next record would get.
        next_seq: u64,
    },
}

impl OutboxState {
    /// Validates an outbox state: `first_seq` is the lowest seq still stored
    /// (or `next_seq` when the Outbox is empty), `next_seq` the seq the next
    /// record will get.
    pub fn new(first_seq: u64, next_seq: u64) -> Result<OutboxState, OutboxStateError> {
        if first_seq == 0 {
            return Err(OutboxStateError::ZeroFirstSeq);
        }
        if first_seq > next_seq {
            return Err(OutboxStateError::FirstAboveNext {
                first_seq,
                next_seq,
            });
        }
        Ok(OutboxState {
            first_seq,
            next_seq,
        })
    }

    /// The state of an Outbox that has never issued a seq: `1..1`.
    pub fn empty() -> OutboxState {
        OutboxState {
            first_seq: 1,
            next_seq: 1,
        }
    }

    /// The lowest seq the hub can still send.
    pub fn first_seq(self) -> u64 {
        self.first_seq
    }

    /// The seq the hub's next record will get; every seq below it was issued.
    pub fn next_seq(self) -> u64 {
        self.next_seq
    }

    /// The highest seq ever issued (0 when none was).
    pub fn last_issued(self) -> u64 {
        self.next_seq - 1
    }
}

/// A run of Outbox events, in strictly increasing, contiguous seq order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxBatch {
    /// The events.
    pub events: Vec<OutboxEvent>,
}

/// One Outbox row as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The hub's sequence number for this row (from 1, never reused).
    pub seq: u64,
    /// What the payload is, e.g. `slot_transition`, `cdr`, `alert`, `script_log`, `sms`
    /// (see `crate::events::OutboxKind`); kept as text so a newer hub's kinds pass through.
    pub kind: String,
    /// The record, as JSON produced by the hub.
    pub payload: Vec<u8>,
    /// When the hub created the row, ms since the Unix epoch (hub clock).
    pub created_at_ms: i64,
}

/// The hub applied (or refused) a configuration revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigApplied {
    /// The revision concerned.
    pub revision: u64,
    /// Whether it was applied.
    pub outcome: ConfigOutcome,
}

/// Whether a configuration revision was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOutcome {
    /// Applied atomically; the hub now runs this revision.
    Applied,
    /// Refused; the hub keeps its previous revision. The text says why.
    Rejected(String),
}

/// The result of a command, sent once it is known (and again if the command is re-delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    /// The command's id.
    pub id: CommandId,
    /// What happened.
    pub outcome: CommandOutcome,
}

/// What became of a command on the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// It ran and succeeded.
    Done,
    /// It ran and failed; the text says why.
    Failed(String),
    /// It arrived after its expiry and was not run.
    Expired,
    /// It was started but its result was lost (e.g. the hub restarted while it
    /// ran); it will not be run again.
    Unknown,
}

/// Liveness probe from the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// The hub's monotonic clock when sent, ms; echoed back to measure round trips.
    pub sent_at_ms: u64,
}

/// The control plane accepts a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// The negotiated protocol version; every later message follows it.
    pub version: u32,
    /// The control plane's clock, ms since the Unix epoch (for skew detection).
    pub server_time_ms: i64,
    /// The highest seq the control plane has durably committed for this hub
    /// (contiguous from the hub's base); the hub resumes sending at `committed_seq + 1`.
    pub committed_seq: u64,
}

/// Every Outbox event up to `up_to_seq` is durably committed on the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The highest contiguous committed seq.
    pub up_to_seq: u64,
}

/// A versioned desired configuration for the hub (applied atomically).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPush {
    /// The revision number; higher is newer.
    pub revision: u64,
    /// The document (its format is the configuration module's business; the
    /// control plane sends JSON `{"slots":[…]}`, each slot a hubd `[[slots]]`
    /// entry plus its `sip_password`).
    pub document: Vec<u8>,
}

/// A command for the hub, executed at most once (see `commands::CommandLedger`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Unique id, chosen by the control plane.
    pub id: CommandId,
    /// What to do, e.g. `slot_restart`.
    pub kind: String,
    /// Arguments, encoded as the kind defines (JSON so far).
    pub args: Vec<u8>,
    /// After this instant (ms since the Unix epoch) the hub must not start it.
    pub expires_at_ms: i64,
}

/// Answer to a [`Heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// The heartbeat's `sent_at_ms`, echoed.
    pub sent_at_ms: u64,
    /// The control plane's clock, ms since the Unix epoch.
    pub server_time_ms: i64,
}

/// The control plane ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// Machine-readable reason.
    pub code: CloseCode,
    /// Human-readable detail, for logs.
    pub reason: String,
}

impl Close {
    /// A close with this code and text.
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Close {
        Close {
            code,
            reason: reason.into(),
        }
    }
}

/// Why a connection is closed. Codes are stable on the wire; a code this
/// release does not know arrives as [`CloseCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// Orderly shutdown (e.g. the control plane is restarting); reconnect with backoff.
    Normal,
    /// The peer broke the protocol (message out of place, ack beyond sent, …).
    ProtocolError,
    /// No protocol version in common.
    UnsupportedVersion,
    /// A frame was larger than the receiver accepts.
    FrameTooLarge,
    /// A frame could not be decoded.
    MalformedMessage,
    /// The hub's Outbox no longer holds events the control plane has not committed.
    OutboxGap,
    /// The hub's seqs are behind what the control plane committed (a reset hub store).
    SequenceRegressed,
    /// The hub is not allowed (certificate and hub id disagree, revoked, …).
    Unauthorized,
    /// A newer connection of the same hub replaced this one.
    Superseded,
    /// A code from a newer release.
    Other(u32),
}

impl CloseCode {
    /// The number carried on the wire.
    pub fn to_wire(self) -> u32 {
        match self {
            CloseCode::Normal => 1,
            CloseCode::ProtocolError => 2,
            CloseCode::UnsupportedVersion => 3,
            CloseCode::FrameTooLarge => 4,
            CloseCode::MalformedMessage => 5,
            CloseCode::OutboxGap => 6,
            CloseCode::SequenceRegressed => 7,
            CloseCode::Unauthorized => 8,
            CloseCode::Superseded => 9,
            CloseCode::Other(code) => code,
        }
    }

    /// The code for a wire number; unknown numbers become [`CloseCode::Other`].
    pub fn from_wire(code: u32) -> CloseCode {
        match code {
            1 => CloseCode::Normal,
            2 => CloseCode::ProtocolError,
            3 => CloseCode::UnsupportedVersion,
            4 => CloseCode::FrameTooLarge,
            5 => CloseCode::MalformedMessage,
            6 => CloseCode::OutboxGap,
            7 => CloseCode::SequenceRegressed,
            8 => CloseCode::Unauthorized,
            9 => CloseCode::Superseded,
            other => CloseCode::Other(other),
        }
    }
}

/// Longest command id accepted, in bytes.
const COMMAND_ID_MAX_LEN: usize = 64;

/// A command's id: 1–64 printable ASCII characters without spaces (a UUID in
/// practice, e.g. `0b5d8f0e-3c1a-4f7e-9d6b-2a4c8e1f0a37`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(String);

/// Why a command id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandIdError {
    /// The id was empty.
    #[error("command id is empty")]
    Empty,
    /// The id is longer than 64 bytes.
    #[error("command id is {len} bytes long; at most {COMMAND_ID_MAX_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The id contains a space, a control character or non-ASCII.
    #[error("command id contains {ch:?}; only printable ASCII without spaces is allowed")]
    BadChar {
        /// The first offending character.
        ch: char,
    },
}

impl CommandId {
    /// Validates `id` as a command id.
    pub fn new(id: impl Into<String>) -> Result<CommandId, CommandIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(CommandIdError::Empty);
        }
        if let Some(ch) = id.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(CommandIdError::BadChar { ch });
        }
        if id.len() > COMMAND_ID_MAX_LEN {
            return Err(CommandIdError::TooLong { len: id.len() });
        }
        Ok(CommandId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
