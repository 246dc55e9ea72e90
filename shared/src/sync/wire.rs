//! The wire schema: protobuf messages as hand-written `prost` derives.
//!
//! This module owns the bytes-level shape of every message and nothing else:
//! no validation, no defaults beyond protobuf's. It must never change in a way
//! that breaks a peer one release behind. The rules, checked by
//! `shared/tests/sync_compat.rs` against a frozen copy of version 1:
//!
//! - never reuse or renumber a tag, never change a field's type; retire a field
//!   by leaving its tag unused forever;
//! - new fields get new tags and must be optional in meaning (their protobuf
//!   default, 0 / empty / absent, keeps the old behaviour);
//! - a new message type is a new oneof tag, sent only to peers that negotiated
//!   a version that has it.
//!
//! prost skips unknown fields when decoding, so an older peer ignores what it
//! does not know.

#![allow(missing_docs)] // Each field is documented on its domain twin in `messages`.

/// Everything a hub sends.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HubEnvelope {
    #[prost(oneof = "hub_envelope::Msg", tags = "1, 2, 3, 4, 5")]
    pub msg: ::core::option::Option<hub_envelope::Msg>,
}

pub mod hub_envelope {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Msg {
        #[prost(message, tag = "1")]
        Hello(super::Hello),
        #[prost(message, tag = "2")]
        OutboxBatch(super::OutboxBatch),
        #[prost(message, tag = "3")]
        ConfigApplied(super::ConfigApplied),
        #[prost(message, tag = "4")]
        CommandResult(super::CommandResult),
        #[prost(message, tag = "5")]
        Heartbeat(super::Heartbeat),
    }
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Hello {
    #[prost(string, tag = "1")]
    pub hub_id: ::prost::alloc::string::String,
    #[prost(uint32, tag = "2")]
    pub min_version: u32,
    #[prost(uint32, tag = "3")]
    pub max_version: u32,
    #[prost(string, tag = "4")]
    pub software_version: ::prost::alloc::string::String,
    #[prost(uint64, optional, tag = "5")]
    pub config_revision: ::core::option::Option<u64>,
    #[prost(uint64, tag = "6")]
    pub outbox_first_seq: u64,
    #[prost(uint64, tag = "7")]
    pub outbox_next_seq: u64,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct OutboxBatch {
    #[prost(message, repeated, tag = "1")]
    pub events: ::prost::alloc::vec::Vec<OutboxEvent>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct OutboxEvent {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(string, tag = "2")]
    pub kind: ::prost::alloc::string::String,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: ::prost::alloc::vec::Vec<u8>,
    #[prost(int64, tag = "4")]
    pub created_at_ms: i64,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ConfigApplied {
    #[prost(uint64, tag = "1")]
    pub revision: u64,
    /// Absent: applied. Present: rejected, with the reason.
    #[prost(string, optional, tag = "2")]
    pub error: ::core::option::Option<::prost::alloc::string::String>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CommandResult {
    #[prost(string, tag = "1")]
    pub command_id: ::prost::alloc::string::String,
    #[prost(oneof = "command_result::Outcome", tags = "2, 3, 4, 5")]
    pub outcome: ::core::option::Option<command_result::Outcome>,
}

pub mod command_result {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Outcome {
        #[prost(message, tag = "2")]
        Done(super::Empty),
        #[prost(string, tag = "3")]
        Failed(::prost::alloc::string::String),
        #[prost(message, tag = "4")]
        Expired(super::Empty),
        #[prost(message, tag = "5")]
        Unknown(super::Empty),
    }
}

/// A message with no fields (a oneof arm that carries nothing).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Heartbeat {
    #[prost(uint64, tag = "1")]
    pub sent_at_ms: u64,
}

/// Everything the control plane sends.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ControlEnvelope {
    #[prost(oneof = "control_envelope::Msg", tags = "1, 2, 3, 4, 5, 6")]
    pub msg: ::core::option::Option<control_envelope::Msg>,
}

pub mod control_envelope {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Msg {
        #[prost(message, tag = "1")]
        Welcome(super::Welcome),
        #[prost(message, tag = "2")]
        Ack(super::Ack),
        #[prost(message, tag = "3")]
        ConfigPush(super::ConfigPush),
        #[prost(message, tag = "4")]
        Command(super::Command),
        #[prost(message, tag = "5")]
        HeartbeatAck(super::HeartbeatAck),
        #[prost(message, tag = "6")]
        Close(super::Close),
    }
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Welcome {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(int64, tag = "2")]
    pub server_time_ms: i64,
    #[prost(uint64, tag = "3")]
    pub committed_seq: u64,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Ack {
    #[prost(uint64, tag = "1")]
    pub up_to_seq: u64,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ConfigPush {
    #[prost(uint64, tag = "1")]
    pub revision: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub document: ::prost::alloc::vec::Vec<u8>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Command {
    #[prost(string, tag = "1")]
    pub id: ::prost::alloc::string::String,
    #[prost(string, tag = "2")]
    pub kind: ::prost::alloc::string::String,
    #[prost(bytes = "vec", tag = "3")]
    pub args: ::prost::alloc::vec::Vec<u8>,
    #[prost(int64, tag = "4")]
    pub expires_at_ms: i64,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HeartbeatAck {
    #[prost(uint64, tag = "1")]
    pub sent_at_ms: u64,
    #[prost(int64, tag = "2")]
    pub server_time_ms: i64,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Close {
    #[prost(uint32, tag = "1")]
    pub code: u32,
    #[prost(string, tag = "2")]
    pub reason: ::prost::alloc::string::String,
}
