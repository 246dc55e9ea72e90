//! Records a hub publishes through its outbox: slot transitions (F-05), call
//! detail records (F-08) and alerts (F-07).
//!
//! These are the payloads the sync protocol carries to the control plane, so
//! they only ever grow: new fields are optional, nothing is renamed. This
//! module defines their shape; it never encodes, stores or sends them.

use serde::{Deserialize, Serialize};

use crate::media::{AudioSocketSession, MediaHealth, RtpCounters};
use crate::{CallDirection, SlotEventKind, SlotId, SlotKind, SlotState};

/// What an outbox entry carries; stored beside the payload as its `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    /// A [`SlotTransitionRecord`].
    SlotTransition,
    /// A [`CdrRecord`].
    Cdr,
    /// An [`AlertRecord`].
    Alert,
    /// An [`SmsRecord`].
    Sms,
    /// A [`RecoveryRecord`].
    DeviceRecovery,
}

impl OutboxKind {
    /// Every kind, in a stable order.
    pub const ALL: [OutboxKind; 5] = [
        Self::SlotTransition,
        Self::Cdr,
        Self::Alert,
        Self::Sms,
        Self::DeviceRecovery,
    ];

    /// The stored name, e.g. `slot_transition`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlotTransition => "slot_transition",
            Self::Cdr => "cdr",
            Self::Alert => "alert",
            Self::Sms => "sms",
            Self::DeviceRecovery => "device_recovery",
        }
    }

    /// The kind with this stored name, if any.
    pub fn parse(name: &str) -> Option<OutboxKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// One accepted move of a slot's state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotTransitionRecord {
    /// The slot that moved.
    pub slot_id: SlotId,
    /// State before the event.
    pub from: SlotState,
    /// State after the event.
    pub to: SlotState,
    /// The event that caused it.
    pub event: SlotEventKind,
    /// Why, when the event carries a reason (faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When, in milliseconds since the Unix epoch (hub clock).
    pub at_ms: i64,
    /// What the slot is, so the control plane can list a slot it has never
    /// seen (added after the first release; absent from older hubs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotIdentity>,
}

/// What a slot is: its kind, name and SIP extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotIdentity {
    /// AUTO, MF or LS.
    pub kind: SlotKind,
    /// Display name.
    pub name: String,
    /// Internal SIP extension, e.g. `6001`.
    pub sip_number: String,
}

/// A call detail record: one call attempt through a slot, answered or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CdrRecord {
    /// Unique id of the call on this hub.
    pub call_id: String,
    /// The slot that carried the call.
    pub slot_id: SlotId,
    /// Who started it.
    pub direction: CallDirection,
    /// The remote party's number as the device saw it (may be empty when hidden).
    pub remote_number: String,
    /// When the call started (dial or first ring), ms since the Unix epoch.
    pub started_at_ms: i64,
    /// When it was answered, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at_ms: Option<i64>,
    /// When it ended.
    pub ended_at_ms: i64,
    /// Why it ended, in the device's or the supervisor's words
    /// (e.g. `normal_clearing`, `no_answer`, `slot_restart`).
    pub end_cause: String,
    /// The SIP side's end cause, for a call bridged to SIP: `remote_bye`,
    /// `local_bye`, `cancelled`, `ack_timeout`, or the final status sent or
    /// received (`486`, `488` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_cause: Option<String>,
    /// The device's end cause (`normal_clearing`, `user_busy` …), when the
    /// device reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_cause: Option<String>,
    /// The call's recording (Ogg Opus), when the slot's policy recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// Media health of the bridged audio, when media ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaHealth>,
    /// The RTP leg's counters, when the call had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtp: Option<RtpCounters>,
    /// The AudioSocket session, when the call was streamed to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiosocket: Option<AudioSocketSession>,
}

impl CdrRecord {
    /// Billable seconds: from answer to end, zero when never answered.
    pub fn billsec(&self) -> i64 {
        self.answered_at_ms
            .map(|answered| (self.ended_at_ms - answered).max(0) / 1000)
            .unwrap_or(0)
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Needs attention soon.
    Warning,
    /// A slot or the hub cannot do its job.
    Critical,
}

/// Something operators must be told about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// The slot concerned, when the alert is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_id: Option<SlotId>,
    /// How urgent.
    pub severity: Severity,
    /// What happened, in words an operator understands.
    pub message: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Which way an SMS went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsDirection {
    /// Received by the slot's modem.
    Inbound,
    /// Sent from the slot's modem.
    Outbound,
}

/// One SMS through a slot's modem (multipart messages joined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsRecord {
    /// The slot whose modem carried it.
    pub slot_id: SlotId,
    /// Received or sent.
    pub direction: SmsDirection,
    /// The other party: sender when inbound, destination when outbound.
    pub remote_number: String,
    /// The text.
    pub text: String,
    /// When the hub received or sent it, ms since the Unix epoch.
    pub at_ms: i64,
}

/// A recovery step a driver took on a device that stopped answering
/// (resync, soft reset, reboot, USB power cycle; F-06).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// The slot whose device it was.
    pub slot_id: SlotId,
    /// The step, e.g. `soft_reset`.
    pub step: String,
    /// Why it was needed.
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}
