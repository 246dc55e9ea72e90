//! The call bridge: one task per call joining the call's SIP dialog (a
//! [`CallHandle`]), the slot's device (through the slot's session, which
//! alone owns the device: a [`DeviceLink`]), the call's [`RtpSession`], and
//! a tap on every 20 ms frame both ways feeding the [`HealthMeter`] and the
//! [`Recorder`](crate::media::recording::Recorder) (on a [`RecorderPool`] thread).
//!
//! - F-09 ([`incoming`]): an INVITE for the slot → the SDP offer is
//!   negotiated (`488` when nothing fits, late offers included) and an RTP
//!   port leased (`503` when none is free) *before* the device dials; the
//!   dial accepted → `180`; the device answered → `200` with our answer
//!   and the media start; the device call ended before answer → the final
//!   response its cause maps to ([`sip_status_for`]); CANCEL/BYE → the
//!   device hangs up; the device hung up → BYE.
//! - F-03 ([`outgoing`]): a call ringing on the device → an INVITE with our
//!   offer to the configured destination; `2xx` → the device answers and
//!   the media start; a failure or the device caller giving up ends the
//!   other side.
//!
//! Each returns a [`CallOutcome`] for the CDR: both sides' end causes, the
//! media health summary, the recording's path.
//!
//! It must never: touch the device itself (only [`ToDevice`] requests to
//! the session), block the runtime on the device's audio (frames that
//! cannot be handed on are dropped), or outlive its call: it returns once
//! either side ended, after hanging up the other.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::call::{CallEvent, Credentials, IncomingInvite, OutgoingCall};
use super::endpoint::{CallAction, CallHandle, SipUa};
use crate::device::DeviceError;
use crate::device::at_modem::voice::{AudioStream, Frame};
use crate::media::dtmf_detect::DtmfDetector;
use crate::media::health::{self, HealthConfig, HealthMeter, MediaHealth};
use crate::media::recording::{
    FINISH_WAIT, RecorderPool, RecordingConfig, RecordingHandle, RecordingMeta,
};
use crate::media::rtp_session::{
    PortRange, RtpConfig, RtpSession, RtpSocket, RtpStatsSnapshot, SessionEvent,
};
use crate::media::sdp::{self, LocalMedia, Negotiated, SessionDescription};
use crate::media::telephone_event::Digit;

/// Frames queued between the tap and the RTP session, each way.
const TAP_QUEUE: usize = 8;
/// Requests queued from a bridge to its session.
const LINK_QUEUE: usize = 8;
/// Digits heard on the device side, queued for the far side.
pub(crate) const DIGIT_QUEUE: usize = 16;

/// What a bridge asks of the slot's device; the session carries it out,
/// bounded by its device timeout.
#[derive(Debug)]
pub enum ToDevice {
    /// Place the call (F-09).
    Dial {
        /// The number.
        number: String,
        /// Whether the device accepted the dial.
        reply: oneshot::Sender<Result<(), DeviceError>>,
    },
    /// Answer the ringing call (F-03).
    Answer {
        /// Whether it worked.
        reply: oneshot::Sender<Result<(), DeviceError>>,
    },
    /// Hang up the device's call.
    HangUp,
    /// Send DTMF in the answered call.
    Dtmf(String),
    /// The answered call's audio ([`crate::device::at_modem::driver::AtModemDevice::take_audio`]);
    /// `None` for devices without audio.
    TakeAudio {
        /// The stream.
        reply: oneshot::Sender<Option<AudioStream>>,
    },
}

/// What the session tells the bridge of the device's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromDevice {
    /// The device's call was answered.
    Answered,
    /// The device's call ended.
    Ended {
        /// The device's cause (`user_busy`, `normal_clearing` …).
        cause: String,
    },
}

/// The bridge's end of its link to the session.
#[derive(Debug)]
pub struct DeviceLink {
    requests: mpsc::Sender<ToDevice>,
    pub(super) events: mpsc::Receiver<FromDevice>,
}

/// The session's end of its link to the bridge.
#[derive(Debug)]
pub struct SessionLink {
    /// What the bridge asks.
    pub requests: mpsc::Receiver<ToDevice>,
    /// Where the device's call events go.
    pub events: mpsc::Sender<FromDevice>,
}

/// A bridge ↔ session link.
pub fn link() -> (DeviceLink, SessionLink) {
    let (requests_tx, requests) = mpsc::channel(LINK_QUEUE);
    let (events_tx, events) = mpsc::channel(LINK_QUEUE);
    (
        DeviceLink {
            requests: requests_tx,
            events,
        },
        SessionLink {
            requests,
            events: events_tx,
        },
    )
}

impl DeviceLink {
    pub(super) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> ToDevice,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    pub(super) async fn tell(&self, request: ToDevice) {
        let _ = self.requests.send(request).await;
    }
}

/// What one call's bridge needs.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The CDR's call id (also the recording's).
    pub meta: RecordingMeta,
    /// Our media address in SDP (the SIP endpoint's advertised IP).
    pub local_ip: IpAddr,
    /// The address RTP sockets bind: the SIP socket's bound IP (`0.0.0.0`:
    /// every interface). Not `local_ip`: behind a NAT that one is the
    /// public address, which is not on the hub.
    pub bind_ip: IpAddr,
    /// The hub's RTP ports.
    pub ports: Arc<PortRange>,
    /// RTP session settings.
    pub rtp: RtpConfig,
    /// Media health thresholds.
    pub health: HealthConfig,
    /// Where and how to record, when the slot's policy records.
    pub recording: Option<(PathBuf, RecordingConfig)>,
}

/// How a call ended, for the CDR.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallOutcome {
    /// The SIP side's cause (`remote_bye`, `cancelled`, `486` …).
    pub sip_cause: Option<String>,
    /// The device's cause.
    pub device_cause: Option<String>,
    /// Whether both sides were connected.
    pub answered: bool,
    /// Media health, when media ran.
    pub health: Option<MediaHealth>,
    /// The recording, when one was written.
    pub recording: Option<PathBuf>,
    /// The RTP counters, when media ran.
    pub rtp: Option<RtpStatsSnapshot>,
    /// The AudioSocket session, when the call was streamed to one.
    pub audiosocket: Option<vss_shared::media::AudioSocketSession>,
    /// The device had a call (it accepted the dial, or the call rang on
    /// it); when not, the slot's call ends with the bridge.
    pub device_call: bool,
}

impl CallOutcome {
    /// The one-word end cause the slot's CDR keeps today: the device's
    /// when it ended the call, else the SIP side's.
    pub fn end_cause(&self) -> String {
        self.device_cause
            .clone()
            .or_else(|| self.sip_cause.clone())
            .unwrap_or_else(|| "unknown".into())
    }
}

/// The final SIP response for a device call that ended before it was
/// answered (RFC 3398's ISUP → SIP table, in the device's cause words).
pub fn sip_status_for(device_cause: &str) -> (u16, &'static str) {
    match device_cause {
        "user_busy" => (486, "Busy Here"),
        "call_rejected" => (603, "Decline"),
        "unassigned_number" => (404, "Not Found"),
        "invalid_number_format" => (484, "Address Incomplete"),
        "no_circuit_available"
        | "switching_equipment_congestion"
        | "temporary_failure"
        | "network_out_of_order"
        | "no_dialtone"
        | "no_carrier"
        | "dial_failed" => (503, "Service Unavailable"),
        // no_answer, no_user_responding, normal_clearing before answer, other
        _ => (480, "Temporarily Unavailable"),
    }
}

/// What a call's media reports to its bridge.
enum MediaEvent {
    /// A digit the peer sent by RFC 4733; `None`: the RTP session ended.
    Received(Option<Digit>),
    /// A digit heard in band in the device's audio.
    Heard(Digit),
    /// Nothing came from the RTP peer for this long (past its timeout).
    PeerSilent(std::time::Duration),
}

/// Media of an answered call: the RTP session and the tap.
pub struct CallMedia {
    rtp: RtpSession,
    /// DTMF the tap heard in the device's audio, to send as RFC 4733.
    detected_digits: mpsc::Receiver<Digit>,
    tap: JoinHandle<(MediaHealth, Option<PathBuf>)>,
    cancel: CancellationToken,
}

impl CallMedia {
    /// Starts the RTP session on `socket` toward `remote` and the tap
    /// between it and the device's `audio`.
    pub fn start(
        socket: RtpSocket,
        remote: Negotiated,
        audio: AudioStream,
        config: &BridgeConfig,
    ) -> Result<CallMedia, String> {
        let cancel = CancellationToken::new();
        let (to_rtp, from_device) = mpsc::channel(TAP_QUEUE);
        let (to_device, from_rtp) = mpsc::channel(TAP_QUEUE);
        let rtp = RtpSession::spawn(
            socket,
            remote,
            AudioStream {
                from_device,
                to_device,
            },
            config.rtp,
            cancel.clone(),
        )
        .map_err(|e| e.to_string())?;
        // Created, encoded and written on the hub's recorder threads, off
        // the runtime (a file that cannot be created is logged there).
        let recorder = config
            .recording
            .as_ref()
            .map(|(path, recording)| RecorderPool::shared().start(path, &config.meta, recording));
        let (detected, detected_digits) = mpsc::channel(DIGIT_QUEUE);
        let tap = tokio::spawn(tap(
            audio,
            to_rtp,
            from_rtp,
            HealthMeter::new(config.health.clone()),
            recorder,
            detected,
            cancel.clone(),
        ));
        Ok(CallMedia {
            rtp,
            tap,
            detected_digits,
            cancel,
        })
    }

    /// The next DTMF digit either way, or the peer's silence; never,
    /// without media.
    async fn next_event(media: &mut Option<CallMedia>) -> MediaEvent {
        let Some(media) = media else {
            return std::future::pending().await;
        };
        tokio::select! {
            Some(digit) = media.detected_digits.recv() => MediaEvent::Heard(digit),
            event = media.rtp.next_event() => match event {
                SessionEvent::Digit(digit) => MediaEvent::Received(digit),
                SessionEvent::PeerSilent(silence) => MediaEvent::PeerSilent(silence),
            },
        }
    }

    /// Acts on a media event of either bridge; `true` when it ended the
    /// call (both sides hung up, `rtp_timeout` in the outcome).
    async fn on_event(
        event: MediaEvent,
        media: &mut Option<CallMedia>,
        call: &CallHandle,
        device: &DeviceLink,
        outcome: &mut CallOutcome,
    ) -> bool {
        match event {
            MediaEvent::Heard(digit) => {
                if let Some(media) = media {
                    media.send_detected(digit);
                }
                false
            }
            MediaEvent::Received(Some(digit)) => {
                device
                    .tell(ToDevice::Dtmf(digit.as_char().to_string()))
                    .await;
                false
            }
            MediaEvent::Received(None) => {
                // The RTP session ended on its own: keep the call, drop DTMF.
                tracing::warn!("RTP session ended during the call");
                if let Some(ended) = media.take() {
                    let (health, recording, rtp) = ended.finish().await;
                    outcome.health = health;
                    outcome.recording = recording;
                    outcome.rtp = Some(rtp);
                }
                false
            }
            MediaEvent::PeerSilent(silence) => {
                tracing::warn!(
                    silence_s = silence.as_secs(),
                    "no RTP from the SIP side: ending the call"
                );
                outcome.sip_cause = Some("rtp_timeout".into());
                call.act(CallAction::HangUp);
                device.tell(ToDevice::HangUp).await;
                true
            }
        }
    }

    /// Sends a digit heard on the device side to the peer (RFC 4733), when
    /// the peer negotiated telephone-events.
    fn send_detected(&self, digit: Digit) {
        if let Err(e) = self.rtp.send_digit(digit) {
            tracing::info!(%digit, error = %e, "DTMF from the device not sent");
        }
    }

    /// Stops both tasks; the health summary, recording and RTP counters.
    pub async fn finish(self) -> (Option<MediaHealth>, Option<PathBuf>, RtpStatsSnapshot) {
        self.cancel.cancel();
        let rtp = self.rtp.join().await;
        match self.tap.await {
            Ok((health, recording)) => (Some(health), recording, rtp),
            Err(e) => {
                tracing::error!(error = %e, "call media tap failed");
                (None, None, rtp)
            }
        }
    }
}

/// Hands every frame on, each way, showing it to the meter and the
/// recorder. The device paces the recording: each device frame is one
/// tick, with the SIP leg's latest frame (or silence).
pub(crate) async fn tap(
    mut device: AudioStream,
    to_rtp: mpsc::Sender<Frame>,
    mut from_rtp: mpsc::Receiver<Frame>,
    mut meter: HealthMeter,
    mut recorder: Option<RecordingHandle>,
    detected: mpsc::Sender<Digit>,
    cancel: CancellationToken,
) -> (MediaHealth, Option<PathBuf>) {
    let path = recorder.as_ref().map(|r| r.path().to_owned());
    let mut dtmf = DtmfDetector::new();
    let mut sip_frame: Option<Frame> = None;
    let mut device_open = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            frame = device.from_device.recv(), if device_open => {
                let Some(frame) = frame else {
                    device_open = false;
                    continue;
                };
                meter.observe(health::Direction::DeviceToSip, &frame);
                // A key the GSM caller pressed, in band: sent on as an event
                // (the tones stay in the audio).
                if let Some(digit) = dtmf.push(&frame) {
                    tracing::debug!(%digit, "DTMF heard on the device side");
                    let _ = detected.try_send(digit);
                }
                // Only queued for a recorder thread: dropped and counted when
                // it falls behind, never waited for. After an error it is
                // ignored (the thread logged it).
                if let Some(r) = recorder.as_mut() {
                    let _ = r.push_frames(sip_frame.as_ref(), Some(&frame));
                }
                sip_frame = None;
                let _ = to_rtp.try_send(frame);
            }
            frame = from_rtp.recv() => {
                let Some(frame) = frame else { break };
                meter.observe(health::Direction::SipToDevice, &frame);
                sip_frame = Some(frame.clone());
                let _ = device.to_device.try_send(frame);
            }
        }
    }
    // Waits for the recorder thread (not blocking the runtime). Its
    // errors are logged there; a stopped recording keeps its file, repaired
    // at next start, one never created has none.
    let recording = match recorder {
        Some(r) => match tokio::time::timeout(FINISH_WAIT, r.finish()).await {
            Ok(Ok(summary)) => Some(summary.path),
            Ok(Err(e)) if e.file_kept() => path,
            Ok(Err(_)) => None,
            // A stalled disk: the thread finishes the file when it can.
            Err(_) => path,
        },
        None => path,
    };
    (meter.summary(), recording)
}

/// The negotiated remote media of an SDP body, or why not (for a 488).
fn negotiate(body: &[u8]) -> Result<(SessionDescription, Negotiated), String> {
    if body.is_empty() {
        return Err("no SDP offer (late offers are not supported)".into());
    }
    let description = SessionDescription::parse(body).map_err(|e| e.to_string())?;
    let negotiated = sdp::negotiate(&description).map_err(|e| e.to_string())?;
    Ok((description, negotiated))
}

fn local_media(ip: IpAddr, rtp: SocketAddr) -> LocalMedia {
    LocalMedia {
        address: ip,
        port: rtp.port(),
        session_id: super::call::random_seed().unwrap_or(1) >> 1,
        session_version: 1,
    }
}

/// Takes the device's audio and starts the media; without audio, or when
/// it cannot start, the call goes on without media (logged).
async fn start_media(
    device: &DeviceLink,
    socket: &mut Option<RtpSocket>,
    remote: Negotiated,
    config: &BridgeConfig,
) -> Option<CallMedia> {
    let socket = socket.take()?;
    let Some(Some(audio)) = device.ask(|reply| ToDevice::TakeAudio { reply }).await else {
        tracing::warn!("the device has no audio for this call; bridged without media");
        return None;
    };
    match CallMedia::start(socket, remote, audio, config) {
        Ok(media) => Some(media),
        Err(e) => {
            tracing::warn!(error = %e, "call media did not start");
            None
        }
    }
}

fn reject(call: &CallHandle, outcome: &mut CallOutcome, status: u16, reason: &str) {
    call.act(CallAction::Reject {
        status,
        reason: reason.to_owned(),
    });
    outcome.sip_cause = Some(status.to_string());
}

/// Bridges an INVITE for the slot (F-09) until either side ends.
pub async fn incoming(
    invite: IncomingInvite,
    mut call: CallHandle,
    mut device: DeviceLink,
    config: BridgeConfig,
    stop: CancellationToken,
) -> CallOutcome {
    let mut outcome = CallOutcome::default();
    let (offer, remote) = match negotiate(&invite.remote_sdp) {
        Ok(negotiated) => negotiated,
        Err(why) => {
            tracing::info!(why, "offer refused: 488");
            reject(&call, &mut outcome, 488, "Not Acceptable Here");
            return outcome;
        }
    };
    let socket = match config.ports.bind(config.bind_ip) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(error = %e, "no RTP port: 503");
            reject(&call, &mut outcome, 503, "Service Unavailable");
            return outcome;
        }
    };
    let answer_sdp = sdp::answer(
        &offer,
        &remote,
        &local_media(config.local_ip, socket.local_addr()),
    )
    .into_bytes();
    let mut socket = Some(socket);
    let number = invite.target_number.clone();
    match device.ask(|reply| ToDevice::Dial { number, reply }).await {
        Some(Ok(())) => {
            outcome.device_call = true;
            call.act(CallAction::Ringing(None));
        }
        Some(Err(e)) => {
            tracing::info!(error = %e, "the device refused the dial");
            outcome.device_cause = Some("dial_failed".into());
            let (status, reason) = sip_status_for("dial_failed");
            reject(&call, &mut outcome, status, reason);
            return outcome;
        }
        None => {
            outcome.device_cause = Some("session_gone".into());
            reject(&call, &mut outcome, 503, "Service Unavailable");
            return outcome;
        }
    }
    let mut media: Option<CallMedia> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                outcome.sip_cause = Some("hub_shutdown".into());
                call.act(CallAction::HangUp);
                device.tell(ToDevice::HangUp).await;
                break;
            }
            event = call.next_event() => match event {
                None => {
                    outcome.sip_cause = Some("sip_call_over".into());
                    device.tell(ToDevice::HangUp).await;
                    break;
                }
                Some(CallEvent::AckTimeout) => {
                    outcome.sip_cause = Some("ack_timeout".into());
                    device.tell(ToDevice::HangUp).await;
                    break;
                }
                Some(CallEvent::Cancelled) => {
                    outcome.sip_cause = Some("cancelled".into());
                    device.tell(ToDevice::HangUp).await;
                    break;
                }
                Some(CallEvent::RemoteHangup) => {
                    outcome.sip_cause = Some("remote_bye".into());
                    device.tell(ToDevice::HangUp).await;
                    break;
                }
                Some(CallEvent::Dtmf { digit, .. }) => {
                    device.tell(ToDevice::Dtmf(digit.to_string())).await;
                }
                Some(CallEvent::ReInvite { sdp }) => reinvite(&call, media.as_ref(), &sdp),
                Some(other) => tracing::debug!(event = ?other, "call event"),
            },
            event = device.events.recv() => match event {
                Some(FromDevice::Answered) if !outcome.answered => {
                    outcome.answered = true;
                    media = start_media(&device, &mut socket, remote, &config).await;
                    call.act(CallAction::Answer(answer_sdp.clone()));
                }
                Some(FromDevice::Answered) => {}
                Some(FromDevice::Ended { cause }) => {
                    if outcome.answered {
                        call.act(CallAction::HangUp);
                        outcome.sip_cause = Some("local_bye".into());
                    } else {
                        let (status, reason) = sip_status_for(&cause);
                        reject(&call, &mut outcome, status, reason);
                    }
                    outcome.device_cause = Some(cause);
                    break;
                }
                None => {
                    outcome.device_cause = Some("session_gone".into());
                    call.act(CallAction::HangUp);
                    break;
                }
            },
            event = CallMedia::next_event(&mut media) => {
                if CallMedia::on_event(event, &mut media, &call, &device, &mut outcome).await {
                    break;
                }
            }
        }
    }
    if let Some(media) = media {
        let (health, recording, rtp) = media.finish().await;
        outcome.health = health;
        outcome.recording = recording;
        outcome.rtp = Some(rtp);
    }
    outcome
}

/// Answers a re-INVITE: the same answer when the new offer still fits
/// (the RTP session follows a new address or codec), else 488.
fn reinvite(call: &CallHandle, media: Option<&CallMedia>, offer: &[u8]) {
    if offer.is_empty() {
        call.act(CallAction::AcceptReInvite);
        return;
    }
    match negotiate(offer) {
        Ok((_, remote)) => {
            if let Some(media) = media {
                media.rtp.update_remote(remote);
            }
            call.act(CallAction::AcceptReInvite);
        }
        Err(why) => {
            tracing::info!(why, "re-INVITE refused");
            call.act(CallAction::RefuseReInvite);
        }
    }
}

/// Where an F-03 call goes.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The slot's extension (our From user).
    pub extension: String,
    /// The request-URI (`sip:queue@pbx`).
    pub target_uri: String,
    /// The SIP domain (our From host).
    pub domain: String,
    /// Where the INVITE goes (the first registrar).
    pub proxy: SocketAddr,
    /// The slot's digest credentials, if the PBX challenges INVITEs.
    pub credentials: Option<Credentials>,
}

/// Bridges a call ringing on the device (F-03) to `destination` until
/// either side ends.
pub async fn outgoing(
    caller: String,
    ua: Arc<SipUa>,
    destination: Destination,
    mut device: DeviceLink,
    config: BridgeConfig,
    stop: CancellationToken,
) -> CallOutcome {
    let mut outcome = CallOutcome {
        device_call: true,
        ..CallOutcome::default()
    };
    let socket = match config.ports.bind(config.bind_ip) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(error = %e, "no RTP port for the incoming call");
            outcome.sip_cause = Some("no_rtp_port".into());
            device.tell(ToDevice::HangUp).await;
            return outcome;
        }
    };
    let offer = sdp::offer(&local_media(config.local_ip, socket.local_addr())).into_bytes();
    let mut socket = Some(socket);
    let display = caller.replace(['"', '\\'], "");
    let mut call = ua.invite(
        &destination.extension,
        OutgoingCall {
            target_uri: destination.target_uri.clone(),
            from: format!(
                "\"{display}\" <sip:{}@{}>",
                destination.extension, destination.domain
            ),
            proxy: destination.proxy,
            local_sdp: offer,
            credentials: destination.credentials.clone(),
        },
    );
    let mut media: Option<CallMedia> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                outcome.sip_cause = Some("hub_shutdown".into());
                call.act(CallAction::HangUp);
                device.tell(ToDevice::HangUp).await;
                break;
            }
            event = call.next_event() => match event {
                Some(CallEvent::Answered { sdp }) => {
                    let remote = match negotiate(&sdp) {
                        Ok((_, remote)) => remote,
                        Err(why) => {
                            tracing::warn!(why, "unusable SDP answer; hanging up");
                            outcome.sip_cause = Some("bad_sdp_answer".into());
                            call.act(CallAction::HangUp);
                            device.tell(ToDevice::HangUp).await;
                            break;
                        }
                    };
                    match device.ask(|reply| ToDevice::Answer { reply }).await {
                        Some(Ok(())) => {
                            outcome.answered = true;
                            media = start_media(&device, &mut socket, remote, &config).await;
                        }
                        other => {
                            tracing::warn!(result = ?other, "the device did not answer");
                            outcome.device_cause = Some("answer_failed".into());
                            call.act(CallAction::HangUp);
                            device.tell(ToDevice::HangUp).await;
                            break;
                        }
                    }
                }
                Some(CallEvent::Failed { status, reason }) => {
                    tracing::info!(status, reason, "destination refused the call");
                    outcome.sip_cause = Some(status.to_string());
                    device.tell(ToDevice::HangUp).await;
                    break;
                }
                Some(CallEvent::RemoteHangup) => {
                    outcome.sip_cause = Some("remote_bye".into());
                    device.tell(ToDevice::HangUp).await;
                    break;
                }
                None => {
                    outcome.sip_cause.get_or_insert_with(|| "sip_call_over".into());
                    device.tell(ToDevice::HangUp).await;
                    break;
                }
                Some(CallEvent::Dtmf { digit, .. }) => {
                    device.tell(ToDevice::Dtmf(digit.to_string())).await;
                }
                Some(CallEvent::ReInvite { sdp }) => reinvite(&call, media.as_ref(), &sdp),
                Some(other) => tracing::debug!(event = ?other, "call event"),
            },
            event = device.events.recv() => match event {
                Some(FromDevice::Answered) => {}
                Some(FromDevice::Ended { cause }) => {
                    // The caller gave up (our CANCEL) or hung up (our BYE).
                    call.act(CallAction::HangUp);
                    let ours = if outcome.answered { "local_bye" } else { "local_cancel" };
                    outcome.sip_cause = Some(ours.into());
                    outcome.device_cause = Some(cause);
                    break;
                }
                None => {
                    outcome.device_cause = Some("session_gone".into());
                    call.act(CallAction::HangUp);
                    break;
                }
            },
            event = CallMedia::next_event(&mut media) => {
                if CallMedia::on_event(event, &mut media, &call, &device, &mut outcome).await {
                    break;
                }
            }
        }
    }
    if let Some(media) = media {
        let (health, recording, rtp) = media.finish().await;
        outcome.health = health;
        outcome.recording = recording;
        outcome.rtp = Some(rtp);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_causes_map_to_sip_finals() {
        for (cause, status) in [
            ("user_busy", 486),
            ("no_answer", 480),
            ("no_user_responding", 480),
            ("normal_clearing", 480),
            ("call_rejected", 603),
            ("unassigned_number", 404),
            ("invalid_number_format", 484),
            ("no_carrier", 503),
            ("dial_failed", 503),
            ("something new", 480),
        ] {
            assert_eq!(sip_status_for(cause).0, status, "{cause}");
        }
    }

    /// A key pressed by the GSM caller (in band, in the device's audio)
    /// reaches the SIP peer as an RFC 4733 event on the call's real RTP
    /// socket, while the audio goes on.
    #[tokio::test]
    async fn a_key_heard_on_the_device_side_reaches_the_peer_as_a_telephone_event() {
        use crate::device::at_modem::voice::FRAME_BYTES;
        use crate::media::g711::Codec;
        use crate::media::sdp::Direction;
        use crate::media::telephone_event::EventPayload;
        use vss_shared::{CallDirection, SlotId};

        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("peer socket");
        let ports = PortRange::new(41_400, 41_420).expect("ports");
        let socket = ports
            .bind("127.0.0.1".parse().expect("ip"))
            .expect("RTP port");
        let remote = Negotiated {
            media_index: 0,
            remote: peer.local_addr().expect("peer address"),
            codec: Codec::Pcmu,
            payload_type: Codec::Pcmu.payload_type(),
            telephone_event: Some(101),
            remote_ptime: Some(20),
            direction: Direction::SendRecv,
        };
        let config = BridgeConfig {
            meta: RecordingMeta {
                call_id: "1-1000-0".into(),
                slot: SlotId::new(1).expect("slot"),
                direction: CallDirection::Inbound,
                started_at_ms: 1_000,
            },
            local_ip: "127.0.0.1".parse().expect("ip"),
            bind_ip: "127.0.0.1".parse().expect("ip"),
            ports: ports.clone(),
            rtp: RtpConfig::default(),
            health: HealthConfig::default(),
            recording: None,
        };
        let (device_tx, from_device) = mpsc::channel(64);
        let (to_device, _device_rx) = mpsc::channel(64);
        let media = CallMedia::start(
            socket,
            remote,
            AudioStream {
                from_device,
                to_device,
            },
            &config,
        )
        .expect("media start");
        // 200 ms of the key 5 (770 + 1336 Hz), then silence.
        for n in 0..20 {
            let mut frame = Box::new([0u8; FRAME_BYTES]);
            if n < 10 {
                for (i, pair) in frame.chunks_exact_mut(2).enumerate() {
                    let t = (n * 160 + i) as f64 / 8_000.0;
                    let v = 6_000.0 * (2.0 * std::f64::consts::PI * 770.0 * t).sin()
                        + 6_000.0 * (2.0 * std::f64::consts::PI * 1336.0 * t).sin();
                    pair.copy_from_slice(&(v as i16).to_le_bytes());
                }
            }
            device_tx.send(frame).await.expect("tap takes frames");
        }
        let mut media = Some(media);
        let event = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            CallMedia::next_event(&mut media),
        )
        .await
        .expect("a digit within 10 s");
        let MediaEvent::Heard(digit) = event else {
            panic!("no digit heard")
        };
        assert_eq!(digit.as_char(), '5');
        let media = media.expect("media");
        media.send_detected(digit);
        // The peer gets audio and the event (payload type 101, event 5).
        let mut buf = [0u8; 1500];
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let n = peer.recv(&mut buf).await.expect("peer receives");
                let packet = crate::media::rtp::parse(&buf[..n]).expect("RTP");
                if packet.header.payload_type == 101 {
                    return EventPayload::parse(packet.payload).expect("an event");
                }
            }
        })
        .await
        .expect("a telephone-event within 10 s");
        assert_eq!(event.event, 5);
        let (_, _, rtp) = media.finish().await;
        assert!(rtp.packets_out > 0);
    }

    #[test]
    fn the_device_cause_wins_in_the_cdr() {
        let outcome = CallOutcome {
            sip_cause: Some("remote_bye".into()),
            ..CallOutcome::default()
        };
        assert_eq!(outcome.end_cause(), "remote_bye");
        let outcome = CallOutcome {
            device_cause: Some("normal_clearing".into()),
            ..outcome
        };
        assert_eq!(outcome.end_cause(), "normal_clearing");
    }
}
