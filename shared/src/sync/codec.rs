//! Encoding messages to bytes and back.
//!
//! This module owns the translation between the domain messages (`messages`)
//! and the protobuf wire structs (`wire`), and the validation on the way in:
//! a missing oneof, a bad hub id or an impossible outbox state is a
//! [`CodecError`], never a panic. It must never frame (that is `frame`) and
//! never reject a message for carrying fields it does not know: that is how
//! a newer peer stays compatible.

use prost::Message as _;
use thiserror::Error;

use crate::HubId;

use super::messages::{
    Ack, Close, CloseCode, Command, CommandId, CommandOutcome, CommandResult, ConfigApplied,
    ConfigOutcome, ConfigPush, ControlMessage, Heartbeat, HeartbeatAck, Hello, HubMessage,
    OutboxBatch, OutboxEvent, OutboxState, Welcome,
};
use super::version::VersionRange;
use super::wire;

/// Why bytes could not be turned into a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// The bytes are not a protobuf encoding of the envelope.
    #[error("undecodable message: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A required field or oneof is absent (for a oneof: possibly a variant
    /// from a newer release, which the sender must not send to this version).
    #[error("{message}.{field} is missing")]
    MissingField {
        /// The message that lacks it.
        message: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A field holds a value the protocol forbids.
    #[error("{message}.{field} is invalid: {reason}")]
    InvalidField {
        /// The message that carries it.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A message that travels in one direction: it encodes to bytes and decodes,
/// validated, from them. Implemented by [`HubMessage`] and [`ControlMessage`].
pub trait WireMessage: Sized {
    /// The protobuf encoding (infallible: every domain value is encodable).
    fn encode(&self) -> Vec<u8>;
    /// Decodes and validates; unknown fields are ignored.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError>;
}

/// Bytes an [`OutboxEvent`] adds to an encoded batch beyond its `kind` and
/// `payload`, at most: keys and varints of seq (11), kind (6), payload (6),
/// created_at_ms (11) and the repeated-field wrapper (6).
pub const EVENT_OVERHEAD_BYTES: usize = 40;

/// An upper bound of the bytes `event` adds to an encoded [`OutboxBatch`].
pub fn event_wire_len(event: &OutboxEvent) -> usize {
    event.kind.len() + event.payload.len() + EVENT_OVERHEAD_BYTES
}

impl WireMessage for HubMessage {
    fn encode(&self) -> Vec<u8> {
        let msg = match self {
            HubMessage::Hello(m) => wire::hub_envelope::Msg::Hello(hello_to_wire(m)),
            HubMessage::OutboxBatch(m) => wire::hub_envelope::Msg::OutboxBatch(batch_to_wire(m)),
            HubMessage::ConfigApplied(m) => {
                wire::hub_envelope::Msg::ConfigApplied(wire::ConfigApplied {
                    revision: m.revision,
                    error: match &m.outcome {
                        ConfigOutcome::Applied => None,
                        ConfigOutcome::Rejected(why) => Some(why.clone()),
                    },
                })
            }
            HubMessage::CommandResult(m) => {
                wire::hub_envelope::Msg::CommandResult(command_result_to_wire(m))
            }
            HubMessage::Heartbeat(m) => wire::hub_envelope::Msg::Heartbeat(wire::Heartbeat {
                sent_at_ms: m.sent_at_ms,
            }),
        };
        wire::HubEnvelope { msg: Some(msg) }.encode_to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let envelope = wire::HubEnvelope::decode(bytes)?;
        let msg = envelope.msg.ok_or(CodecError::MissingField {
            message: "HubEnvelope",
            field: "msg",
        })?;
        Ok(match msg {
            wire::hub_envelope::Msg::Hello(m) => HubMessage::Hello(hello_from_wire(m)?),
            wire::hub_envelope::Msg::OutboxBatch(m) => HubMessage::OutboxBatch(batch_from_wire(m)?),
            wire::hub_envelope::Msg::ConfigApplied(m) => HubMessage::ConfigApplied(ConfigApplied {
                revision: m.revision,
                outcome: match m.error {
                    None => ConfigOutcome::Applied,
                    Some(why) => ConfigOutcome::Rejected(why),
                },
            }),
            wire::hub_envelope::Msg::CommandResult(m) => {
                HubMessage::CommandResult(command_result_from_wire(m)?)
            }
            wire::hub_envelope::Msg::Heartbeat(m) => HubMessage::Heartbeat(Heartbeat {
                sent_at_ms: m.sent_at_ms,
            }),
        })
    }
}

impl WireMessage for ControlMessage {
    fn encode(&self) -> Vec<u8> {
        use wire::control_envelope::Msg;
        let msg = match self {
            ControlMessage::Welcome(m) => Msg::Welcome(wire::Welcome {
                version: m.version,
                server_time_ms: m.server_time_ms,
                committed_seq: m.committed_seq,
            }),
            ControlMessage::Ack(m) => Msg::Ack(wire::Ack {
                up_to_seq: m.up_to_seq,
            }),
            ControlMessage::ConfigPush(m) => Msg::ConfigPush(wire::ConfigPush {
                revision: m.revision,
                document: m.document.clone(),
            }),
            ControlMessage::Command(m) => Msg::Command(wire::Command {
                id: m.id.as_str().to_owned(),
                kind: m.kind.clone(),
                args: m.args.clone(),
                expires_at_ms: m.expires_at_ms,
            }),
            ControlMessage::HeartbeatAck(m) => Msg::HeartbeatAck(wire::HeartbeatAck {
                sent_at_ms: m.sent_at_ms,
                server_time_ms: m.server_time_ms,
            }),
            ControlMessage::Close(m) => Msg::Close(wire::Close {
                code: m.code.to_wire(),
                reason: m.reason.clone(),
            }),
        };
        wire::ControlEnvelope { msg: Some(msg) }.encode_to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        use wire::control_envelope::Msg;
        let envelope = wire::ControlEnvelope::decode(bytes)?;
        let msg = envelope.msg.ok_or(CodecError::MissingField {
            message: "ControlEnvelope",
            field: "msg",
        })?;
        Ok(match msg {
            Msg::Welcome(m) => {
                if m.version == 0 {
                    return Err(CodecError::MissingField {
                        message: "Welcome",
                        field: "version",
                    });
                }
                ControlMessage::Welcome(Welcome {
                    version: m.version,
                    server_time_ms: m.server_time_ms,
                    committed_seq: m.committed_seq,
                })
            }
            Msg::Ack(m) => ControlMessage::Ack(Ack {
                up_to_seq: m.up_to_seq,
            }),
            Msg::ConfigPush(m) => ControlMessage::ConfigPush(ConfigPush {
                revision: m.revision,
                document: m.document,
            }),
            Msg::Command(m) => {
                if m.kind.is_empty() {
                    return Err(CodecError::MissingField {
                        message: "Command",
                        field: "kind",
                    });
                }
                ControlMessage::Command(Command {
                    id: command_id_from_wire("Command", "id", m.id)?,
                    kind: m.kind,
                    args: m.args,
                    expires_at_ms: m.expires_at_ms,
                })
            }
            Msg::HeartbeatAck(m) => ControlMessage::HeartbeatAck(HeartbeatAck {
                sent_at_ms: m.sent_at_ms,
                server_time_ms: m.server_time_ms,
            }),
            Msg::Close(m) => ControlMessage::Close(Close {
                code: CloseCode::from_wire(m.code),
                reason: m.reason,
            }),
        })
    }
}

fn hello_to_wire(m: &Hello) -> wire::Hello {
    wire::Hello {
        hub_id: m.hub_id.as_str().to_owned(),
        min_version: m.versions.min(),
        max_version: m.versions.max(),
        software_version: m.software_version.clone(),
        config_revision: m.config_revision,
        outbox_first_seq: m.outbox.first_seq(),
        outbox_next_seq: m.outbox.next_seq(),
    }
}

fn hello_from_wire(m: wire::Hello) -> Result<Hello, CodecError> {
    let invalid = |field, reason: String| CodecError::InvalidField {
        message: "Hello",
        field,
        reason,
    };
    let hub_id = HubId::new(m.hub_id).map_err(|e| invalid("hub_id", e.to_string()))?;
    let versions = VersionRange::new(m.min_version, m.max_version)
        .map_err(|e| invalid("min_version", e.to_string()))?;
    let outbox = OutboxState::new(m.outbox_first_seq, m.outbox_next_seq)
        .map_err(|e| invalid("outbox_first_seq", e.to_string()))?;
    Ok(Hello {
        hub_id,
        versions,
        software_version: m.software_version,
        config_revision: m.config_revision,
        outbox,
    })
}

fn batch_to_wire(m: &OutboxBatch) -> wire::OutboxBatch {
    wire::OutboxBatch {
        events: m
            .events
            .iter()
            .map(|e| wire::OutboxEvent {
                seq: e.seq,
                kind: e.kind.clone(),
                payload: e.payload.clone(),
                created_at_ms: e.created_at_ms,
            })
            .collect(),
    }
}

fn batch_from_wire(m: wire::OutboxBatch) -> Result<OutboxBatch, CodecError> {
    let events = m
        .events
        .into_iter()
        .map(|e| {
            if e.seq == 0 {
                return Err(CodecError::MissingField {
                    message: "OutboxEvent",
                    field: "seq",
                });
            }
            if e.kind.is_empty() {
                return Err(CodecError::MissingField {
                    message: "OutboxEvent",
                    field: "kind",
                });
            }
            Ok(OutboxEvent {
                seq: e.seq,
                kind: e.kind,
                payload: e.payload,
                created_at_ms: e.created_at_ms,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OutboxBatch { events })
}

fn command_result_to_wire(m: &CommandResult) -> wire::CommandResult {
    use wire::command_result::Outcome;
    wire::CommandResult {
        command_id: m.id.as_str().to_owned(),
        outcome: Some(match &m.outcome {
            CommandOutcome::Done => Outcome::Done(wire::Empty {}),
            CommandOutcome::Failed(why) => Outcome::Failed(why.clone()),
            CommandOutcome::Expired => Outcome::Expired(wire::Empty {}),
            CommandOutcome::Unknown => Outcome::Unknown(wire::Empty {}),
        }),
    }
}

fn command_result_from_wire(m: wire::CommandResult) -> Result<CommandResult, CodecError> {
    use wire::command_result::Outcome;
    let outcome = match m.outcome {
        Some(Outcome::Done(_)) => CommandOutcome::Done,
        Some(Outcome::Failed(why)) => CommandOutcome::Failed(why),
        Some(Outcome::Expired(_)) => CommandOutcome::Expired,
        Some(Outcome::Unknown(_)) => CommandOutcome::Unknown,
        None => {
            return Err(CodecError::MissingField {
                message: "CommandResult",
                field: "outcome",
            });
        }
    };
    Ok(CommandResult {
        id: command_id_from_wire("CommandResult", "command_id", m.command_id)?,
        outcome,
    })
}

fn command_id_from_wire(
    message: &'static str,
    field: &'static str,
    id: String,
) -> Result<CommandId, CodecError> {
    CommandId::new(id).map_err(|e| CodecError::InvalidField {
        message,
        field,
        reason: e.to_string(),
    })
}
