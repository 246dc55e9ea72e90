//! One slot's shared state: the state machine's current state, the current
//! call, counters, and its command queue. Only the slot's own supervisor and
//! session feed it events; the API only reads it and queues commands.
//!
//! Invariant: every accepted transition is written to the store (with its
//! outbox entry) in the order it happened, before the next event of the same
//! slot is fed.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use vss_shared::events::{
    AlertRecord, CdrRecord, OutboxKind, RecoveryRecord, Severity, SlotIdentity,
    SlotTransitionRecord, SmsDirection, SmsRecord,
};
use vss_shared::slot_fsm::transition;
use vss_shared::{
    CallDirection, SipNumber, SlotAction, SlotEvent, SlotId, SlotKind, SlotState, SlotStatus,
};

use crate::config::{SlotConfig, SupervisorSection};
use crate::metrics::Metrics;
use crate::store::{StoreHandle, Write, now_ms};

/// The answer to a [`SlotCommand`]: the result, or why the slot refused or failed.
pub type SlotReply<T> = tokio::sync::oneshot::Sender<Result<T, SlotRefusal>>;

/// Why a slot did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefusal {
    /// The slot is not in a state that allows it (e.g. dialling while not READY).
    #[error("{0}")]
    NotNow(String),
    /// The request itself is wrong (a bad number, an empty text).
    #[error("{0}")]
    Invalid(String),
    /// The device does not do this (SMS on a slot that is not a modem).
    #[error("{0}")]
    Unsupported(String),
    /// The device tried and failed, or did not answer in time.
    #[error("{0}")]
    Device(String),
}

/// What an operator or the control plane asks of a slot.
#[derive(Debug)]
pub enum SlotCommand {
    /// Release the device and start the slot again from IDLE.
    Restart,
    /// Place a call from a READY slot; answers with the call's id once the
    /// device accepted the dial.
    Dial {
        /// The number to call.
        number: String,
        /// Where the answer goes.
        reply: SlotReply<String>,
    },
    /// Answer the slot's ringing incoming call.
    Answer {
        /// Where the answer goes.
        reply: SlotReply<()>,
    },
    /// Send DTMF digits in the slot's answered call.
    Dtmf {
        /// The digits (0-9, *, #, A-D).
        digits: String,
        /// Where the answer goes.
        reply: SlotReply<()>,
    },
    /// Hang up the slot's current call.
    HangUp {
        /// Where the answer goes.
        reply: SlotReply<()>,
    },
    /// Send an SMS through the slot's modem; answers with the part count.
    SendSms {
        /// Destination number.
        to: String,
        /// The text (any alphabet; long texts are split).
        text: String,
        /// Where the answer goes.
        reply: SlotReply<u32>,
    },
    /// Run a USSD request (`*100#`) on the slot's modem; answers with the reply text.
    Ussd {
        /// The request.
        request: String,
        /// Where the answer goes.
        reply: SlotReply<String>,
    },
}

/// Everything a slot's tasks share with the rest of the hub.
#[derive(Debug, Clone)]
pub struct SlotContext {
    /// The store writer.
    pub store: StoreHandle,
    /// Process-wide metrics.
    pub metrics: Arc<Metrics>,
    /// Timeouts and backoff.
    pub timing: SupervisorSection,
    /// What the slots' drivers share (the AT modems' directory).
    pub devices: crate::device::DeviceEnv,
    /// The SIP user agent, when `[sip]` is configured: slots are READY only
    /// while their SIP number is registered.
    pub sip: Option<SipContext>,
    /// Call media settings and the shared RTP port pool, for the call bridge.
    pub media: MediaContext,
}

/// What a slot's calls need for their media, built once at start from
/// `[media]` and the slots' `recording` policies.
#[derive(Debug, Clone)]
pub struct MediaContext {
    ports: Arc<crate::media::rtp_session::PortRange>,
    rtp: crate::media::rtp_session::RtpConfig,
    recording: crate::media::recording::RecordingConfig,
    recordings_dir: std::path::PathBuf,
    health: crate::media::health::HealthConfig,
    policies: Arc<std::collections::BTreeMap<vss_shared::SlotId, crate::config::RecordingPolicy>>,
    audiosocket: Arc<std::collections::BTreeMap<vss_shared::SlotId, String>>,
}

impl MediaContext {
    /// The media settings of `config` (already validated: a bad
    /// `media.rtp_ports` is reported as that field).
    pub fn from_config(
        config: &crate::config::Config,
    ) -> Result<MediaContext, crate::config::ConfigError> {
        let media = &config.media;
        let ports = media
            .port_range()
            .map_err(|why| crate::config::ConfigError::Invalid {
                origin: "config".into(),
                field: "media.rtp_ports".into(),
                value: format!("{:?}", media.rtp_ports),
                why,
            })?;
        Ok(MediaContext {
            ports,
            rtp: media.rtp_config(),
            recording: media.recording_config(),
            recordings_dir: media.recordings_dir(&config.hub),
            health: media.health.clone(),
            policies: Arc::new(config.recording_policies.clone()),
            audiosocket: Arc::new(config.audiosocket_servers.clone()),
        })
    }

    /// The hub's RTP ports, shared by every call.
    pub fn ports(&self) -> &Arc<crate::media::rtp_session::PortRange> {
        &self.ports
    }

    /// RTP session settings (jitter buffer, DTMF timing).
    pub fn rtp_config(&self) -> &crate::media::rtp_session::RtpConfig {
        &self.rtp
    }

    /// How recordings are encoded.
    pub fn recording_config(&self) -> &crate::media::recording::RecordingConfig {
        &self.recording
    }

    /// Where recordings are written (created and repaired at start).
    pub fn recordings_dir(&self) -> &std::path::Path {
        &self.recordings_dir
    }

    /// Media health thresholds (`[media.health]`).
    pub fn health_config(&self) -> &crate::media::health::HealthConfig {
        &self.health
    }

    /// The AudioSocket server (`host:port`) slot `id`'s calls are streamed
    /// to, when its `[[slots]]` entry has `audiosocket`.
    pub fn audiosocket_server(&self, id: vss_shared::SlotId) -> Option<&str> {
        self.audiosocket.get(&id).map(String::as_str)
    }

    /// Whether slot `id`'s calls are recorded.
    pub fn recording_policy(&self, id: vss_shared::SlotId) -> crate::config::RecordingPolicy {
        self.policies.get(&id).copied().unwrap_or_default()
    }
}

/// What slots need to register with the PBX.
#[derive(Debug, Clone)]
pub struct SipContext {
    /// The hub's SIP user agent.
    pub ua: Arc<crate::sip::SipUa>,
    /// Passwords from the file's `[[slots]]`, by slot id; a password the
    /// control plane pushed wins over these.
    pub file_passwords: Arc<std::collections::BTreeMap<vss_shared::SlotId, String>>,
    /// Where calls ringing on a device go (F-03), from `sip.incoming_destination`.
    pub incoming_destination: Option<String>,
}

/// The call a slot is carrying, kept until its CDR is written.
#[derive(Debug, Clone)]
struct CallInfo {
    call_id: String,
    direction: CallDirection,
    remote_number: String,
    started_at_ms: i64,
    answered_at_ms: Option<i64>,
}

#[derive(Debug)]
struct Live {
    state: SlotState,
    fault_reason: Option<String>,
    last_fault: Option<String>,
    state_since_ms: i64,
    device: Option<String>,
    call: Option<CallInfo>,
    ready_since: Option<Instant>,
}

/// A slot as the API shows it: the seeds' fields first, then ours.
#[derive(Debug, Clone, Serialize)]
pub struct SlotView {
    /// Slot id.
    pub id: u32,
    /// Display name.
    pub name: String,
    /// `free`, `busy`, `offline` or `fault`.
    pub status: SlotStatus,
    /// `auto`, `mf` or `ls`.
    pub device_type: SlotKind,
    /// The slot's SIP extension.
    pub internal_sip_number: SipNumber,
    /// The state machine's state.
    pub fsm_state: SlotState,
    /// Whether the supervisor runs this slot.
    pub enabled: bool,
    /// Why the slot is in FAULT; null in any other state.
    pub fault_reason: Option<String>,
    /// The reason of the slot's latest FAULT since hubd started, if any.
    pub last_fault: Option<String>,
    /// When the slot entered its current state, ms since the Unix epoch.
    pub state_since_ms: i64,
    /// The bound device, as it described itself.
    pub device: Option<String>,
    /// Restarts after a fault, since hubd started.
    pub restarts: u64,
}

/// One slot's shared state.
#[derive(Debug)]
pub struct SlotCell {
    /// The slot's configuration.
    pub config: SlotConfig,
    /// Its SIP extension (configured or allocated).
    pub sip_number: SipNumber,
    live: Mutex<Live>,
    fault_restarts: AtomicU64,
    operator_restarts: AtomicU64,
    call_counter: AtomicU32,
    commands_tx: mpsc::Sender<SlotCommand>,
    pub(super) commands: tokio::sync::Mutex<mpsc::Receiver<SlotCommand>>,
}

impl SlotCell {
    /// A slot in IDLE.
    pub fn new(config: SlotConfig, sip_number: SipNumber) -> SlotCell {
        let (commands_tx, commands) = mpsc::channel(8);
        SlotCell {
            config,
            sip_number,
            live: Mutex::new(Live {
                state: SlotState::Idle,
                fault_reason: None,
                last_fault: None,
                state_since_ms: now_ms(),
                device: None,
                call: None,
                ready_since: None,
            }),
            fault_restarts: AtomicU64::new(0),
            operator_restarts: AtomicU64::new(0),
            call_counter: AtomicU32::new(0),
            commands_tx,
            commands: tokio::sync::Mutex::new(commands),
        }
    }

    /// The slot's id.
    pub fn id(&self) -> SlotId {
        self.config.id
    }

    // A panic elsewhere while holding the lock must not take the slot down:
    // the data is plain values, always consistent between statements.
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> SlotState {
        self.live().state
    }

    /// A snapshot for the API.
    pub fn view(&self) -> SlotView {
        let live = self.live();
        SlotView {
            id: self.config.id.get(),
            name: self.config.display_name(),
            status: live.state.status(),
            device_type: self.config.kind,
            internal_sip_number: self.sip_number,
            fsm_state: live.state,
            enabled: self.config.enabled,
            fault_reason: live.fault_reason.clone(),
            last_fault: live.last_fault.clone(),
            state_since_ms: live.state_since_ms,
            device: live.device.clone(),
            restarts: self.fault_restarts.load(Ordering::Relaxed),
        }
    }

    /// Restarts after faults, and restarts an operator asked for.
    pub fn restart_counts(&self) -> (u64, u64) {
        (
            self.fault_restarts.load(Ordering::Relaxed),
            self.operator_restarts.load(Ordering::Relaxed),
        )
    }

    pub(super) fn count_restart(&self, after_fault: bool) {
        let counter = if after_fault {
            &self.fault_restarts
        } else {
            &self.operator_restarts
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues a restart. False when one is already queued.
    pub fn request_restart(&self) -> bool {
        self.commands_tx.try_send(SlotCommand::Restart).is_ok()
    }

    /// Queues `command` for the slot's session; false when the queue is
    /// full or the slot is not running.
    pub fn submit(&self, command: SlotCommand) -> bool {
        self.commands_tx.try_send(command).is_ok()
    }

    /// The id of the call the slot is carrying, if any.
    pub fn current_call_id(&self) -> Option<String> {
        self.live().call.as_ref().map(|c| c.call_id.clone())
    }

    pub(super) fn set_device(&self, description: Option<String>) {
        self.live().device = description;
    }

    /// How long the slot had been READY (or busy) when it last left service;
    /// clears the mark.
    pub(super) fn take_ready_since(&self) -> Option<Instant> {
        self.live().ready_since.take()
    }

    /// Opens the call record for a call that just started.
    pub(super) fn start_call(&self, direction: CallDirection, remote_number: String) {
        let started_at_ms = now_ms();
        let n = self.call_counter.fetch_add(1, Ordering::Relaxed);
        let call_id = format!("{}-{started_at_ms}-{n}", self.config.id);
        self.live().call = Some(CallInfo {
            call_id,
            direction,
            remote_number,
            started_at_ms,
            answered_at_ms: None,
        });
    }

    /// Feeds `event` to the state machine. An accepted transition is recorded
    /// (store + outbox) before this returns its actions; a rejected one is
    /// logged and counted, and changes nothing.
    pub async fn feed(&self, ctx: &SlotContext, event: SlotEvent) -> Option<Vec<SlotAction>> {
        let now = now_ms();
        let (record, actions) = {
            let mut live = self.live();
            let t = match transition(live.state, &event) {
                Ok(t) => t,
                Err(invalid) => {
                    drop(live);
                    ctx.metrics
                        .invalid_transitions
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %invalid, "ignored event");
                    return None;
                }
            };
            let reason = match &event {
                SlotEvent::Failed { reason } => Some(reason.clone()),
                _ => None,
            };
            live.state = t.to;
            live.state_since_ms = now;
            if t.to == SlotState::Fault {
                // FAULT → FAULT keeps the first reason unless a new one is given.
                if reason.is_some() {
                    live.fault_reason = reason.clone();
                    live.last_fault = reason.clone();
                }
            } else {
                live.fault_reason = None;
            }
            if t.to == SlotState::Ready && live.ready_since.is_none() {
                live.ready_since = Some(Instant::now());
            }
            if matches!(event, SlotEvent::CallAnswered)
                && let Some(call) = live.call.as_mut()
            {
                call.answered_at_ms = Some(now);
            }
            let record = SlotTransitionRecord {
                slot_id: self.config.id,
                from: t.from,
                to: t.to,
                event: event.kind(),
                reason,
                at_ms: now,
                slot: Some(SlotIdentity {
                    kind: self.config.kind,
                    name: self.config.display_name(),
                    sip_number: self.sip_number.to_string(),
                }),
            };
            (record, t.actions)
        };
        ctx.metrics.transition(record.to);
        tracing::info!(from = %record.from, to = %record.to, event = record.event.as_str(), reason = record.reason.as_deref(), "slot transition");
        if let Err(e) = ctx.store.write(Write::Transition(record)).await {
            tracing::error!(error = %e, "could not record slot transition");
        }
        Some(actions)
    }

    /// Writes the CDR of the current call, if there is one.
    pub(super) async fn write_cdr(&self, ctx: &SlotContext, end_cause: &str) {
        if let Some(record) = self.take_cdr(end_cause) {
            store_cdr(ctx, record).await;
        }
    }

    /// Ends the slot's current call record with `end_cause`, without
    /// writing it (the session completes it with the bridge's outcome).
    pub(super) fn take_cdr(&self, end_cause: &str) -> Option<CdrRecord> {
        let call = self.live().call.take()?;
        Some(CdrRecord {
            call_id: call.call_id,
            slot_id: self.config.id,
            direction: call.direction,
            remote_number: call.remote_number,
            started_at_ms: call.started_at_ms,
            answered_at_ms: call.answered_at_ms,
            ended_at_ms: now_ms(),
            end_cause: end_cause.to_owned(),
            sip_cause: None,
            device_cause: None,
            recording: None,
            media: None,
            rtp: None,
            audiosocket: None,
        })
    }

    /// Records an SMS the slot's modem received (to the outbox).
    pub(super) async fn record_sms(&self, ctx: &SlotContext, sender: String, text: String) {
        let record = SmsRecord {
            slot_id: self.config.id,
            direction: SmsDirection::Inbound,
            remote_number: sender,
            text,
            at_ms: now_ms(),
        };
        self.write_outbox(ctx, OutboxKind::Sms, &record).await;
    }

    /// Records an SMS the slot's modem sent (to the outbox).
    pub(super) async fn record_sms_sent(&self, ctx: &SlotContext, to: String, text: String) {
        let record = SmsRecord {
            slot_id: self.config.id,
            direction: SmsDirection::Outbound,
            remote_number: to,
            text,
            at_ms: now_ms(),
        };
        self.write_outbox(ctx, OutboxKind::Sms, &record).await;
    }

    /// Records a step of the device's recovery ladder (to the outbox).
    pub(super) async fn record_recovery(&self, ctx: &SlotContext, step: String, reason: String) {
        let record = RecoveryRecord {
            slot_id: self.config.id,
            step,
            reason,
            at_ms: now_ms(),
        };
        self.write_outbox(ctx, OutboxKind::DeviceRecovery, &record)
            .await;
    }

    async fn write_outbox(&self, ctx: &SlotContext, kind: OutboxKind, record: &impl Serialize) {
        let payload = match serde_json::to_string(record) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(error = %e, kind = kind.as_str(), "could not encode outbox record");
                return;
            }
        };
        let write = Write::Outbox {
            kind: kind.as_str().to_owned(),
            payload,
        };
        if let Err(e) = ctx.store.write(write).await {
            tracing::error!(error = %e, kind = kind.as_str(), "could not record outbox event");
        }
    }

    /// Records an alert about this slot.
    pub(super) async fn raise_alert(&self, ctx: &SlotContext, reason: &str) {
        tracing::error!(reason, "slot FAULT");
        let record = AlertRecord {
            slot_id: Some(self.config.id),
            severity: Severity::Critical,
            message: format!(
                "slot {} ({}) FAULT: {reason}",
                self.config.id, self.sip_number
            ),
            at_ms: now_ms(),
        };
        if let Err(e) = ctx.store.write(Write::Alert(record)).await {
            tracing::error!(error = %e, "could not record alert");
        }
    }
}

/// Writes a CDR (store + outbox); a failure is logged, the call is over anyway.
pub(super) async fn store_cdr(ctx: &SlotContext, record: CdrRecord) {
    if let Err(e) = ctx.store.write(Write::Cdr(Box::new(record))).await {
        tracing::error!(error = %e, "could not record CDR");
    }
}
