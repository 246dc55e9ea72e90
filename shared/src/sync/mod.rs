//! The hub ↔ control-plane sync protocol, sans-IO.
//!
//! This module owns what hubs and the control plane say to each other and the
//! state machines that decide what to say next. It must never do I/O: no
//! tokio, no sockets, no files, no clock, no global RNG. The QUIC/TLS
//! transport is a thin driver on top: it moves frames, passes in time and
//! randomness, persists what these types tell it to, and closes the
//! connection with the `Close` each error type provides.
//!
//! # A connection
//!
//! ```text
//! hub                                        control plane
//!  │── Hello {hub id, versions, outbox} ──────▶ accept_hello(): version, resume point
//!  │◀───────────── Welcome {version, committed} │
//!  │── OutboxBatch (seq committed+1 ..) ──────▶ Ingest::receive → insert rows
//!  │◀──────────────────────── Ack {up_to_seq} ── Ingest::committed (contiguous)
//!  │◀─ ConfigPush / Command ──────────────────── │
//!  │── ConfigApplied / CommandResult ─────────▶ │
//!  │── Heartbeat ─────────────────────────────▶ │
//!  │◀──────────────────────────── HeartbeatAck ─ │
//!  │◀──────────────────── Close {code, reason} ─ │ (on any error, then the stream ends)
//! ```
//!
//! **Invariant (one ordered stream):** all messages of a connection in one
//! direction travel on one ordered byte stream (a bidirectional QUIC stream),
//! framed by [`frame`]. Batches are never reordered within a connection, which
//! is what lets [`ingest`] treat a skipped seq as an error rather than a wait.
//!
//! **Invariant (at-least-once, exactly-once ingest):** the hub resends
//! everything above the committed seq the control plane names in `Welcome`;
//! the control plane inserts idempotently on `(hub_id, seq)` and acknowledges
//! only the highest contiguous durably committed seq; the hub prunes only
//! acknowledged rows.
//!
//! # Table of contents
//!
//! - [`messages`]: the message set, one envelope enum per direction.
//! - [`codec`]: messages ↔ protobuf bytes, validated (wire structs in a private
//!   `wire` module: hand-written `prost` derives, version 1 frozen in
//!   `tests/sync_compat.rs`).
//! - [`frame`]: `[u32 BE length][message]` on a byte stream; incremental decoder.
//! - [`version`]: version ranges and negotiation.
//! - [`hub_sender`]: the hub's Outbox cursor and in-flight window.
//! - [`backoff`]: the hub's reconnect delays.
//! - [`ingest`]: the control plane's handshake decision, dedupe and contiguous ack.
//! - [`commands`]: at-most-once command execution on the hub.

pub mod backoff;
pub mod codec;
pub mod commands;
pub mod frame;
pub mod hub_sender;
pub mod ingest;
pub mod messages;
pub mod version;
mod wire;

pub use backoff::{Backoff, BackoffConfig, Jitter};
pub use codec::{CodecError, WireMessage};
pub use commands::{CommandDecision, CommandLedger, LedgerEntry, LedgerError};
pub use frame::{FrameConfig, FrameDecoder, FrameError, encode_frame};
pub use hub_sender::{AckOutcome, OutboxSender, SenderConfig, SenderError, SenderPhase, Want};
pub use ingest::{Accepted, HandshakeError, Ingest, IngestError, Received, accept_hello};
pub use messages::{
    Ack, Close, CloseCode, Command, CommandId, CommandIdError, CommandOutcome, CommandResult,
    ConfigApplied, ConfigOutcome, ConfigPush, ControlMessage, Heartbeat, HeartbeatAck, Hello,
    HubMessage, OutboxBatch, OutboxEvent, OutboxState, OutboxStateError, Welcome,
};
pub use version::{VersionError, VersionRange};
