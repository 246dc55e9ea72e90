//! One life of a slot's device: bind, register, serve calls, until shutdown,
//! an operator restart, or a failure. It runs as its own task so that a panic
//! in the driver ends only this session; the supervisor sees the panic and
//! takes the slot to FAULT.
//!
//! With `[sip]` configured the session also registers the slot's SIP number
//! (see [`crate::sip`]): the slot is READY only while both the device and the
//! SIP registration are up; a lost SIP registration takes it back to
//! REGISTERING, refused credentials to FAULT; it unregisters when it ends.
//!
//! Calls over SIP: the session listens for INVITEs to the slot's extension
//! ([`CallListener`]). One for a READY slot starts a call bridge
//! ([`crate::sip::bridge::incoming`]) and moves the slot like a local dial
//! (READY → CALLING; the device's answer → ACTIVE_CALL; its end →
//! POSTCALL); one for a busy slot gets `486`. The session stays the only
//! owner of the device: the bridge asks it ([`ToDevice`]) to dial, answer,
//! hang up, send DTMF or hand over the call's audio, and the session
//! forwards the device's call events to the bridge ([`FromDevice`]).
//!
//! A slot with `audiosocket` configured streams its calls to that AudioSocket
//! server instead ([`crate::sip::audiosocket_bridge`], the same kind of
//! bridge, with or without `[sip]`): a call ringing on the device, and a call
//! the slot dialled itself once the device reports it answered.
//!
//! The CDR of a bridged call carries the bridge's [`CallOutcome`] (both
//! sides' causes, media health, RTP counters, the recording): when the
//! device's call ends first, the record waits in the session until the
//! bridge is done; when the bridge is done first, its outcome waits for the
//! device's end. A bridge that ends without a device call (a `488`, a busy
//! port) ends the slot's call at once; a device that never reports the end
//! of a call the bridge hung up gets one device timeout, then the slot ends
//! the call itself (`device_silent`) so it never stays stuck in a call.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use vss_shared::events::CdrRecord;
use vss_shared::{CallDirection, SlotAction, SlotEvent, SlotState};

use super::slot::store_cdr;
use super::slot::{SlotCell, SlotCommand, SlotContext, SlotRefusal};
use crate::device::{self, Device, DeviceError, DeviceEvent};
use crate::metrics::BridgeKind;
use crate::sip::bridge::{
    self, BridgeConfig, CallOutcome, DeviceLink, FromDevice, SessionLink, ToDevice,
};
use crate::sip::{
    CallAction, CallListener, IncomingCall, RegistrationEvent, RegistrationHandle, SlotCredentials,
};

/// Longest a session waits for the registrar to confirm its unregistration.
const UNREGISTER_WITHIN: Duration = Duration::from_secs(5);
/// Longest a session ending waits for its call bridge to hang up and close
/// the recording.
const BRIDGE_STOP_WITHIN: Duration = Duration::from_secs(3);

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SessionEnd {
    /// hubd is shutting down; the device was released.
    Shutdown,
    /// An operator asked for a restart; the slot is IDLE again.
    Restarted,
    /// The slot is in FAULT.
    Faulted,
}

/// Why the session loop stopped early.
enum Stop {
    Shutdown,
    Fail(String),
}

impl From<DeviceError> for Stop {
    fn from(e: DeviceError) -> Stop {
        Stop::Fail(e.to_string())
    }
}

/// What woke the session loop.
enum Wake {
    Shutdown,
    Command(Option<SlotCommand>),
    WrapUpDone,
    HealthCheck,
    Device(Result<DeviceEvent, DeviceError>),
    Sip(Option<RegistrationEvent>),
    /// An INVITE for the slot (F-09).
    SipCall(Option<IncomingCall>),
    /// The call bridge asks something of the device.
    Bridge(Option<ToDevice>),
    /// The call bridge is done.
    BridgeDone(Result<CallOutcome, tokio::task::JoinError>),
    /// The bridge hung up long ago and the device never reported the end.
    CallEndOverdue,
}

/// The call bridge of the slot's current call.
struct ActiveBridge {
    link: SessionLink,
    task: tokio::task::JoinHandle<CallOutcome>,
    /// Ends the bridge (it hangs up both sides).
    stop: CancellationToken,
    /// What the call is bridged to.
    kind: BridgeKind,
    /// The bridge stopped asking (its link closed); only its end is awaited.
    quiet: bool,
}

impl ActiveBridge {
    /// Stops the bridge and waits (bounded) for its outcome.
    async fn stop(self) -> Option<CallOutcome> {
        let ActiveBridge {
            link, task, stop, ..
        } = self;
        // Without its link the bridge cannot wait on the device.
        drop(link);
        stop.cancel();
        let abort = task.abort_handle();
        match tokio::time::timeout(BRIDGE_STOP_WITHIN, task).await {
            Ok(Ok(outcome)) => Some(outcome),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "call bridge failed");
                None
            }
            Err(_) => {
                tracing::warn!("call bridge did not stop in time; aborted");
                abort.abort();
                None
            }
        }
    }
}

/// Runs one session of `cell`'s device.
pub(super) async fn run(
    cell: Arc<SlotCell>,
    ctx: SlotContext,
    shutdown: CancellationToken,
    number: u64,
    sip_password: Option<String>,
) -> SessionEnd {
    let mut device = device::create(&cell.config, number, &ctx.devices);
    let mut commands = cell.commands.lock().await;
    let mut session = Session {
        cell: &cell,
        ctx: &ctx,
        device: device.as_mut(),
        shutdown: &shutdown,
        sip_password,
        sip: None,
        sip_registered: false,
        registrar: None,
        device_registered: false,
        listener: None,
        bridge: None,
        pending_cdr: None,
        bridge_outcome: None,
        device_end_cause: None,
        call_end_at: None,
    };
    let end = match session.serve(&mut commands).await {
        Ok(end) => end,
        Err(Stop::Shutdown) => SessionEnd::Shutdown,
        Err(Stop::Fail(reason)) => {
            session.fail(reason).await;
            SessionEnd::Faulted
        }
    };
    session.listener = None;
    if let Some(bridge) = session.bridge.take() {
        // The session is over: the bridge hangs up its SIP side and closes
        // the recording; the device is released below.
        let kind = bridge.kind;
        let outcome = bridge.stop().await;
        session.bridge_done(kind, outcome).await;
    }
    if let Some(record) = session.pending_cdr.take() {
        store_cdr(session.ctx, record).await;
    }
    if let Some(sip) = session.sip.take() {
        sip.unregister(UNREGISTER_WITHIN).await;
    }
    if end == SessionEnd::Shutdown {
        session.device.release().await;
    }
    end
}

/// The next INVITE for the slot; never, without a listener.
async fn next_sip_call(listener: &mut Option<CallListener>) -> Option<IncomingCall> {
    match listener {
        Some(listener) => listener.next_call().await,
        None => std::future::pending().await,
    }
}

/// The bridge's next request or its end; never, without a bridge.
async fn next_bridge(bridge: &mut Option<ActiveBridge>) -> Wake {
    let Some(bridge) = bridge else {
        return std::future::pending().await;
    };
    tokio::select! {
        request = bridge.link.requests.recv(), if !bridge.quiet => Wake::Bridge(request),
        outcome = &mut bridge.task => Wake::BridgeDone(outcome),
    }
}

/// The next event of the slot's SIP registration; never, without one.
async fn next_sip(sip: &mut Option<RegistrationHandle>) -> Option<RegistrationEvent> {
    match sip {
        Some(handle) => handle.next_event().await,
        None => std::future::pending().await,
    }
}

struct Session<'a> {
    cell: &'a SlotCell,
    ctx: &'a SlotContext,
    device: &'a mut dyn Device,
    shutdown: &'a CancellationToken,
    /// The password the control plane pushed (wins over the file's).
    sip_password: Option<String>,
    /// The slot's SIP registration, with `[sip]` configured.
    sip: Option<RegistrationHandle>,
    /// The SIP number is registered (always true without `[sip]`).
    sip_registered: bool,
    /// The registrar that accepted the slot's registration: where its
    /// F-03 INVITEs go (it follows a failover).
    registrar: Option<std::net::SocketAddr>,
    /// The device reports itself registered.
    device_registered: bool,
    /// INVITEs for the slot's extension, with `[sip]` configured.
    listener: Option<CallListener>,
    /// The current call's bridge, for a call over SIP.
    bridge: Option<ActiveBridge>,
    /// The call's record, ended while its bridge still runs.
    pending_cdr: Option<CdrRecord>,
    /// The bridge's outcome, done while the device's call still runs.
    bridge_outcome: Option<CallOutcome>,
    /// The device's own end cause of the current call.
    device_end_cause: Option<String>,
    /// When the slot ends a call the device never reported ended.
    call_end_at: Option<Instant>,
}

impl Session<'_> {
    /// Bounds a device operation by the device timeout and by shutdown.
    async fn step<T>(
        shutdown: &CancellationToken,
        timeout: Duration,
        operation: &'static str,
        fut: impl Future<Output = Result<T, DeviceError>>,
    ) -> Result<T, Stop> {
        tokio::select! {
            _ = shutdown.cancelled() => Err(Stop::Shutdown),
            result = tokio::time::timeout(timeout, fut) => match result {
                Ok(result) => Ok(result?),
                Err(_) => Err(Stop::Fail(DeviceError::Timeout {
                    operation,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                }.to_string())),
            },
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.ctx.timing.device_timeout_ms)
    }

    async fn feed(&mut self, event: SlotEvent, end_cause: &str) -> Result<(), Stop> {
        if let Some(actions) = self.cell.feed(self.ctx, event).await {
            self.perform(actions, end_cause).await?;
        }
        Ok(())
    }

    /// Feeds `event` but leaves registration to the device: it reported the
    /// loss itself and reports [`DeviceEvent::Registered`] when it is back.
    async fn feed_device_registering(&mut self, event: SlotEvent) -> Result<(), Stop> {
        if let Some(mut actions) = self.cell.feed(self.ctx, event).await {
            actions.retain(|a| !matches!(a, SlotAction::Register));
            self.perform(actions, "").await?;
        }
        Ok(())
    }

    /// Carries out the state machine's actions.
    async fn perform(&mut self, actions: Vec<SlotAction>, end_cause: &str) -> Result<(), Stop> {
        let timeout = self.timeout();
        for action in actions {
            match action {
                SlotAction::Register => {
                    Self::step(
                        self.shutdown,
                        timeout * 2,
                        "register",
                        self.device.register(),
                    )
                    .await?;
                }
                SlotAction::HangUp => {
                    let hang_up = tokio::time::timeout(timeout, self.device.hang_up()).await;
                    if !matches!(hang_up, Ok(Ok(()))) {
                        tracing::warn!("hang-up did not complete; the device is released next");
                    }
                }
                SlotAction::WriteCdr => {
                    if let Some(mut record) = self.cell.take_cdr(end_cause) {
                        record.device_cause = self.device_end_cause.take();
                        self.call_end_at = None;
                        if self.bridge.is_some() {
                            // Written once the bridge is done.
                            self.pending_cdr = Some(record);
                        } else {
                            if let Some(outcome) = self.bridge_outcome.take() {
                                complete_cdr(&mut record, outcome);
                            }
                            store_cdr(self.ctx, record).await;
                        }
                    }
                }
                SlotAction::ReleaseDevice => {
                    if tokio::time::timeout(timeout, self.device.release())
                        .await
                        .is_err()
                    {
                        tracing::warn!("device release timed out");
                    }
                    self.cell.set_device(None);
                }
                SlotAction::RaiseAlert { reason } => self.cell.raise_alert(self.ctx, &reason).await,
            }
        }
        Ok(())
    }

    /// Takes the slot to FAULT with `reason`, carrying out the actions that
    /// still make sense (the device may be the problem).
    async fn fail(&mut self, reason: String) {
        if let Some(actions) = self.cell.feed(self.ctx, SlotEvent::Failed { reason }).await {
            let _ = self.perform(actions, "slot_fault").await;
        }
    }

    /// Carries out an operator's call, SMS or USSD command. Returns when the
    /// slot entered wrap-up because of it (a dial the device refused).
    async fn command(&mut self, command: SlotCommand) -> Result<Option<Instant>, Stop> {
        let timeout = self.timeout();
        let state = self.cell.state();
        let not_now = |what: &str| SlotRefusal::NotNow(format!("slot is {state}; {what}"));
        match command {
            SlotCommand::Restart => {}
            SlotCommand::Dial { number, reply } => {
                if state != SlotState::Ready {
                    let _ = reply.send(Err(not_now("only a READY slot can dial")));
                    return Ok(None);
                }
                self.cell
                    .start_call(CallDirection::Outbound, number.clone());
                let call_id = self.cell.current_call_id().unwrap_or_default();
                self.feed(
                    SlotEvent::CallStarted {
                        direction: CallDirection::Outbound,
                    },
                    "",
                )
                .await?;
                match tokio::time::timeout(timeout, self.device.dial(&number)).await {
                    Ok(Ok(())) => {
                        tracing::info!(call_id, "dialling");
                        let _ = reply.send(Ok(call_id));
                    }
                    Ok(Err(DeviceError::Gone(why))) => {
                        let _ = reply.send(Err(SlotRefusal::Device(why.clone())));
                        return Err(Stop::Fail(format!("device gone while dialling: {why}")));
                    }
                    Ok(Err(e)) => {
                        let _ = reply.send(Err(SlotRefusal::Device(e.to_string())));
                        self.feed(SlotEvent::CallEnded, "dial_failed").await?;
                        return Ok(Some(Instant::now()));
                    }
                    Err(_) => {
                        let _ = reply.send(Err(SlotRefusal::Device(
                            "the device did not accept the dial in time".into(),
                        )));
                        return Err(Stop::Fail("dial timed out".into()));
                    }
                }
            }
            SlotCommand::Answer { reply } => {
                if state != SlotState::Calling {
                    let _ = reply.send(Err(not_now("there is no ringing call to answer")));
                    return Ok(None);
                }
                let result = match tokio::time::timeout(timeout, self.device.answer()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(SlotRefusal::Device(e.to_string())),
                    Err(_) => Err(SlotRefusal::Device("answer timed out".into())),
                };
                let _ = reply.send(result);
            }
            SlotCommand::Dtmf { digits, reply } => {
                if state != SlotState::ActiveCall {
                    let _ = reply.send(Err(not_now("DTMF needs an answered call")));
                    return Ok(None);
                }
                let result =
                    match tokio::time::timeout(timeout, self.device.send_dtmf(&digits)).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(SlotRefusal::Device(e.to_string())),
                        Err(_) => Err(SlotRefusal::Device("DTMF timed out".into())),
                    };
                let _ = reply.send(result);
            }
            SlotCommand::HangUp { reply } => {
                if !matches!(state, SlotState::Calling | SlotState::ActiveCall) {
                    let _ = reply.send(Err(not_now("there is no call to hang up")));
                    return Ok(None);
                }
                let result = match tokio::time::timeout(timeout, self.device.hang_up()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(SlotRefusal::Device(e.to_string())),
                    Err(_) => Err(SlotRefusal::Device("hang-up timed out".into())),
                };
                let _ = reply.send(result);
            }
            SlotCommand::SendSms { to, text, reply } => {
                let result = match (state, self.device.as_modem()) {
                    (
                        SlotState::Ready
                        | SlotState::Calling
                        | SlotState::ActiveCall
                        | SlotState::PostCall,
                        Some(modem),
                    ) => {
                        match tokio::time::timeout(timeout * 4, modem.send_sms(&to, &text)).await {
                            Ok(Ok(parts)) => Ok(parts),
                            Ok(Err(e)) => Err(SlotRefusal::Device(e.to_string())),
                            Err(_) => Err(SlotRefusal::Device(
                                "the modem did not send the SMS in time".into(),
                            )),
                        }
                    }
                    (_, None) => Err(SlotRefusal::Unsupported(
                        "this slot's device does not send SMS".into(),
                    )),
                    _ => Err(not_now("its modem is not registered")),
                };
                if result.is_ok() {
                    self.cell.record_sms_sent(self.ctx, to, text).await;
                }
                let _ = reply.send(result);
            }
            SlotCommand::Ussd { request, reply } => {
                let result = match (state, self.device.as_modem()) {
                    (SlotState::Ready | SlotState::PostCall, Some(modem)) => {
                        match tokio::time::timeout(timeout * 3, modem.ussd(&request)).await {
                            Ok(Ok(answer)) => Ok(answer),
                            Ok(Err(e)) => Err(SlotRefusal::Device(e.to_string())),
                            Err(_) => Err(SlotRefusal::Device("no USSD answer in time".into())),
                        }
                    }
                    (_, None) => Err(SlotRefusal::Unsupported(
                        "this slot's device does not run USSD".into(),
                    )),
                    _ => Err(not_now("USSD needs a registered modem without a call")),
                };
                let _ = reply.send(result);
            }
        }
        Ok(None)
    }

    /// Tells the bridge, if any, of the device's call.
    fn to_bridge(&self, event: FromDevice) {
        if let Some(bridge) = &self.bridge
            && let Err(tokio::sync::mpsc::error::TrySendError::Full(event)) =
                bridge.link.events.try_send(event)
        {
            tracing::warn!(?event, "the call bridge did not take a device event");
        }
    }

    /// What a bridge of the slot's current call needs (without `[sip]`,
    /// for an AudioSocket bridge, the media address is loopback: unused).
    fn bridge_config(&self, direction: CallDirection) -> Option<BridgeConfig> {
        let media = &self.ctx.media;
        let call_id = self.cell.current_call_id()?;
        let record = media.recording_policy(self.cell.id()) == crate::config::RecordingPolicy::All;
        // The SDP's address, and the one RTP sockets bind (see BridgeConfig).
        let (local_ip, bind_ip) = self.ctx.sip.as_ref().map_or(
            (
                std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::Ipv4Addr::LOCALHOST.into(),
            ),
            |sip| (sip.ua.advertised_addr().ip(), sip.ua.bound_ip()),
        );
        Some(BridgeConfig {
            recording: record.then(|| {
                (
                    media.recordings_dir().join(format!("{call_id}.opus")),
                    media.recording_config().clone(),
                )
            }),
            meta: crate::media::recording::RecordingMeta {
                call_id,
                slot: self.cell.id(),
                direction,
                started_at_ms: crate::store::now_ms(),
            },
            local_ip,
            bind_ip,
            ports: media.ports().clone(),
            rtp: *media.rtp_config(),
            health: media.health_config().clone(),
        })
    }

    /// An INVITE for the slot (F-09): bridged from READY, else `486`.
    async fn sip_call(&mut self, call: IncomingCall) -> Result<(), Stop> {
        let IncomingCall { invite, handle } = call;
        let state = self.cell.state();
        if state != SlotState::Ready || self.bridge.is_some() {
            tracing::info!(%state, call_id = handle.call_id(), "INVITE refused: slot busy");
            handle.act(CallAction::Reject {
                status: 486,
                reason: "Busy Here".into(),
            });
            return Ok(());
        }
        tracing::info!(
            call_id = handle.call_id(),
            number = invite.target_number,
            "SIP call: dialling"
        );
        self.cell
            .start_call(CallDirection::Outbound, invite.target_number.clone());
        self.feed(
            SlotEvent::CallStarted {
                direction: CallDirection::Outbound,
            },
            "",
        )
        .await?;
        let Some(config) = self.bridge_config(CallDirection::Outbound) else {
            handle.act(CallAction::Reject {
                status: 500,
                reason: "Server Internal Error".into(),
            });
            return Ok(());
        };
        self.spawn_bridge(BridgeKind::SipIncoming, |device, stop| {
            bridge::incoming(invite, handle, device, config, stop)
        });
        Ok(())
    }

    /// A call rings on the device of a READY slot (F-03): with
    /// `sip.incoming_destination`, an INVITE goes there and the call is
    /// bridged once answered; without, the call waits for the local API.
    fn bridge_ringing_call(&mut self, caller: String) {
        if let Some(server) = self.ctx.media.audiosocket_server(self.cell.id()) {
            let server = server.to_owned();
            tracing::info!(caller, server, "device call: streaming to AudioSocket");
            self.stream_to_audiosocket(server, CallDirection::Inbound, true);
            return;
        }
        let Some(sip) = &self.ctx.sip else {
            return;
        };
        let (Some(target_uri), Some(proxy)) = (
            sip.incoming_destination.clone(),
            self.registrar.or_else(|| sip.ua.outbound_proxy()),
        ) else {
            return;
        };
        if self.bridge.is_some() {
            return;
        }
        let Some(config) = self.bridge_config(CallDirection::Inbound) else {
            return;
        };
        let extension = self.cell.sip_number.to_string();
        let password = self
            .sip_password
            .clone()
            .or_else(|| sip.file_passwords.get(&self.cell.id()).cloned());
        let destination = bridge::Destination {
            credentials: password.map(|password| crate::sip::call::Credentials {
                username: extension.clone(),
                password,
            }),
            extension,
            target_uri,
            domain: sip.ua.domain().to_owned(),
            proxy,
        };
        tracing::info!(caller, to = destination.target_uri, "device call: inviting");
        let ua = sip.ua.clone();
        self.spawn_bridge(BridgeKind::SipOutgoing, |device, stop| {
            bridge::outgoing(caller, ua, destination, device, config, stop)
        });
    }

    /// A call the slot dialled itself (local API, control plane) was
    /// answered: with `audiosocket` configured and no bridge running, it is
    /// streamed to the AudioSocket server.
    fn stream_answered_call(&mut self) {
        if self.bridge.is_some() || self.cell.state() != SlotState::ActiveCall {
            return;
        }
        let Some(server) = self.ctx.media.audiosocket_server(self.cell.id()) else {
            return;
        };
        let server = server.to_owned();
        tracing::info!(server, "answered call: streaming to AudioSocket");
        self.stream_to_audiosocket(server, CallDirection::Outbound, false);
    }

    /// Starts the AudioSocket bridge of the slot's current call to `server`;
    /// `answer`: the call rings on the device and is answered once the
    /// server is connected.
    fn stream_to_audiosocket(&mut self, server: String, direction: CallDirection, answer: bool) {
        if self.bridge.is_some() {
            return;
        }
        let Some(config) = self.bridge_config(direction) else {
            return;
        };
        self.spawn_bridge(BridgeKind::AudioSocket, |device, stop| {
            crate::sip::audiosocket_bridge::stream(device, config, server, answer, stop)
        });
    }

    /// Starts the slot's call bridge `run` as its own task, linked to this
    /// session; it stops with the hub or when the session ends.
    fn spawn_bridge<F>(
        &mut self,
        kind: BridgeKind,
        run: impl FnOnce(DeviceLink, CancellationToken) -> F,
    ) where
        F: Future<Output = CallOutcome> + Send + 'static,
    {
        self.ctx.metrics.calls.started(kind);
        let (device_link, session_link) = bridge::link();
        let stop = self.shutdown.child_token();
        let task = tokio::spawn(run(device_link, stop.clone()));
        self.bridge = Some(ActiveBridge {
            link: session_link,
            task,
            stop,
            kind,
            quiet: false,
        });
    }

    /// The bridge is done: its last requests are carried out (a hang-up
    /// queued as it ended), then its outcome completes the call's record,
    /// now or when the device's call ends.
    async fn bridge_done(&mut self, kind: BridgeKind, outcome: Option<CallOutcome>) {
        self.ctx.metrics.calls.finished(kind, outcome.as_ref());
        if let Some(outcome) = &outcome {
            tracing::info!(
                sip_cause = outcome.sip_cause.as_deref().unwrap_or(""),
                device_cause = outcome.device_cause.as_deref().unwrap_or(""),
                answered = outcome.answered,
                recording = ?outcome.recording,
                health = ?outcome.health.as_ref().map(|h| h.verdict),
                "call bridge done"
            );
        }
        if let Some(mut record) = self.pending_cdr.take() {
            if let Some(outcome) = outcome {
                complete_cdr(&mut record, outcome);
            }
            store_cdr(self.ctx, record).await;
            return;
        }
        if matches!(
            self.cell.state(),
            SlotState::Calling | SlotState::ActiveCall
        ) {
            self.bridge_outcome = outcome;
        }
    }

    /// After the bridge is done with the slot still in a call: ends it now
    /// when the device had no call, else gives the device one timeout to
    /// report the end it was asked for.
    async fn after_bridge(&mut self) -> Result<Option<Instant>, Stop> {
        if !matches!(
            self.cell.state(),
            SlotState::Calling | SlotState::ActiveCall
        ) {
            return Ok(None);
        }
        let device_call = self.bridge_outcome.as_ref().is_some_and(|o| o.device_call);
        if device_call {
            self.call_end_at = Some(Instant::now() + self.timeout());
            return Ok(None);
        }
        let cause = self
            .bridge_outcome
            .as_ref()
            .map(CallOutcome::end_cause)
            .unwrap_or_else(|| "bridge_failed".into());
        self.feed(SlotEvent::CallEnded, &cause).await?;
        Ok(Some(Instant::now()))
    }

    /// Carries out the bridge's request on the device. Returns when the slot
    /// entered wrap-up because of it (a dial the device refused).
    async fn bridge_request(&mut self, request: ToDevice) -> Result<Option<Instant>, Stop> {
        let timeout = self.timeout();
        let bounded = |result: Result<Result<(), DeviceError>, tokio::time::error::Elapsed>,
                       operation: &'static str| {
            result.unwrap_or_else(|_| {
                Err(DeviceError::Timeout {
                    operation,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                })
            })
        };
        match request {
            ToDevice::Dial { number, reply } => {
                let result = bounded(
                    tokio::time::timeout(timeout, self.device.dial(&number)).await,
                    "dial",
                );
                let gone = match &result {
                    Err(DeviceError::Gone(why)) => Some(why.clone()),
                    _ => None,
                };
                let failed = result.is_err();
                let _ = reply.send(result);
                if let Some(why) = gone {
                    return Err(Stop::Fail(format!("device gone while dialling: {why}")));
                }
                if failed {
                    self.feed(SlotEvent::CallEnded, "dial_failed").await?;
                    return Ok(Some(Instant::now()));
                }
            }
            ToDevice::Answer { reply } => {
                let result = bounded(
                    tokio::time::timeout(timeout, self.device.answer()).await,
                    "answer",
                );
                let _ = reply.send(result);
            }
            ToDevice::HangUp => {
                if !matches!(
                    tokio::time::timeout(timeout, self.device.hang_up()).await,
                    Ok(Ok(()))
                ) {
                    tracing::warn!("the bridge's hang-up did not complete");
                }
            }
            ToDevice::Dtmf(digits) => {
                if let Err(e) = bounded(
                    tokio::time::timeout(timeout, self.device.send_dtmf(&digits)).await,
                    "dtmf",
                ) {
                    tracing::info!(error = %e, digits, "DTMF not sent");
                }
            }
            ToDevice::TakeAudio { reply } => {
                let audio = self.device.as_modem().and_then(|modem| modem.take_audio());
                let _ = reply.send(audio);
            }
        }
        Ok(None)
    }

    /// Follows the slot's SIP registration.
    async fn sip_event(
        &mut self,
        event: Option<RegistrationEvent>,
        wrap_up_at: &mut Option<Instant>,
    ) -> Result<(), Stop> {
        match event {
            Some(RegistrationEvent::Registered { registrar, expires }) => {
                tracing::info!(%registrar, expires_s = expires.as_secs(), "SIP registered");
                self.sip_registered = true;
                self.registrar = Some(registrar);
                if self.cell.state() == SlotState::Registering && self.device_registered {
                    self.feed(SlotEvent::Registered, "").await?;
                }
            }
            Some(RegistrationEvent::Lost { reason }) => {
                tracing::warn!(reason, "SIP registration lost");
                self.sip_registered = false;
                if matches!(self.cell.state(), SlotState::Ready | SlotState::PostCall) {
                    *wrap_up_at = None;
                    self.feed_device_registering(SlotEvent::RegistrationLost)
                        .await?;
                }
            }
            Some(RegistrationEvent::AuthFailed { reason }) => {
                self.sip = None;
                return Err(Stop::Fail(reason));
            }
            // The endpoint keeps the NAT mapping for calls.
            Some(RegistrationEvent::Mapped { .. }) => {}
            Some(RegistrationEvent::Unregistered) | None => {
                self.sip = None;
                return Err(Stop::Fail("the SIP registration stopped".into()));
            }
        }
        Ok(())
    }

    async fn serve(
        &mut self,
        commands: &mut tokio::sync::mpsc::Receiver<SlotCommand>,
    ) -> Result<SessionEnd, Stop> {
        let timeout = self.timeout();
        let info = Self::step(self.shutdown, timeout, "bind", self.device.bind()).await?;
        self.cell.set_device(Some(info.description));
        self.feed(SlotEvent::DeviceBound, "").await?;
        self.feed(SlotEvent::RegistrationStarted, "").await?;
        self.device_registered = true;
        match &self.ctx.sip {
            Some(sip) => {
                let password = self
                    .sip_password
                    .clone()
                    .or_else(|| sip.file_passwords.get(&self.cell.id()).cloned());
                self.sip = Some(sip.ua.register(SlotCredentials {
                    slot: format!("slot {}", self.cell.id()),
                    user: self.cell.sip_number.to_string(),
                    password,
                }));
                self.listener = Some(sip.ua.listen(&self.cell.sip_number.to_string()));
            }
            None => {
                self.sip_registered = true;
                self.feed(SlotEvent::Registered, "").await?;
            }
        }

        let timing = &self.ctx.timing;
        let mut health =
            tokio::time::interval(Duration::from_millis(timing.health_check_interval_ms));
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        health.reset();
        let wrap_up = Duration::from_millis(timing.wrap_up_ms);
        let mut wrap_up_at: Option<Instant> = None;
        loop {
            if self.cell.state() == SlotState::Ready && !self.sip_registered {
                // A SIP loss during a call takes effect once the call is over.
                self.feed_device_registering(SlotEvent::RegistrationLost)
                    .await?;
            }
            let state = self.cell.state();
            let wake = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => Wake::Shutdown,
                command = commands.recv() => Wake::Command(command),
                _ = tokio::time::sleep_until(wrap_up_at.unwrap_or_else(Instant::now)), if wrap_up_at.is_some() => Wake::WrapUpDone,
                _ = health.tick(), if state == SlotState::Ready => Wake::HealthCheck,
                event = self.device.next_event() => Wake::Device(event),
                event = next_sip(&mut self.sip) => Wake::Sip(event),
                call = next_sip_call(&mut self.listener) => Wake::SipCall(call),
                wake = next_bridge(&mut self.bridge) => wake,
                _ = tokio::time::sleep_until(self.call_end_at.unwrap_or_else(Instant::now)), if self.call_end_at.is_some() => Wake::CallEndOverdue,
            };
            match wake {
                Wake::Shutdown => return Ok(SessionEnd::Shutdown),
                // The API and supervisor hold the sender, so `None` means shutdown.
                Wake::Command(None) => return Ok(SessionEnd::Shutdown),
                Wake::Command(Some(SlotCommand::Restart)) => {
                    tracing::info!("restart requested");
                    self.feed(SlotEvent::Released, "slot_restart").await?;
                    return Ok(SessionEnd::Restarted);
                }
                Wake::Command(Some(command)) => {
                    if let Some(wrap_up_from) = self.command(command).await? {
                        wrap_up_at = Some(wrap_up_from + wrap_up);
                    }
                }
                Wake::WrapUpDone => {
                    wrap_up_at = None;
                    self.feed(SlotEvent::WrapUpDone, "").await?;
                }
                Wake::Sip(event) => self.sip_event(event, &mut wrap_up_at).await?,
                Wake::SipCall(None) => self.listener = None,
                Wake::SipCall(Some(call)) => self.sip_call(call).await?,
                Wake::Bridge(None) => {
                    if let Some(bridge) = &mut self.bridge {
                        bridge.quiet = true;
                    }
                }
                Wake::Bridge(Some(request)) => {
                    if let Some(wrap_up_from) = self.bridge_request(request).await? {
                        wrap_up_at = Some(wrap_up_from + wrap_up);
                    }
                }
                Wake::BridgeDone(outcome) => {
                    let outcome = outcome
                        .inspect_err(|e| tracing::error!(error = %e, "call bridge failed"))
                        .ok();
                    let Some(mut bridge) = self.bridge.take() else {
                        continue;
                    };
                    self.bridge_done(bridge.kind, outcome).await;
                    // A hang-up the bridge queued as it ended is still due.
                    while let Ok(request) = bridge.link.requests.try_recv() {
                        if let Some(from) = self.bridge_request(request).await? {
                            wrap_up_at = Some(from + wrap_up);
                        }
                    }
                    if let Some(from) = self.after_bridge().await? {
                        wrap_up_at = Some(from + wrap_up);
                    }
                }
                Wake::CallEndOverdue => {
                    self.call_end_at = None;
                    if matches!(
                        self.cell.state(),
                        SlotState::Calling | SlotState::ActiveCall
                    ) {
                        tracing::warn!(
                            "the device never reported the end of the call the bridge hung up; ending it"
                        );
                        let _ = tokio::time::timeout(timeout, self.device.hang_up()).await;
                        self.feed(SlotEvent::CallEnded, "device_silent").await?;
                        if self.cell.state() == SlotState::PostCall {
                            wrap_up_at = Some(Instant::now() + wrap_up);
                        }
                    }
                }
                Wake::HealthCheck => {
                    Self::step(
                        self.shutdown,
                        timeout,
                        "health check",
                        self.device.health_check(),
                    )
                    .await?;
                }
                Wake::Device(event) => match event? {
                    DeviceEvent::IncomingCall { remote_number } => {
                        if self.cell.state() != SlotState::Ready {
                            // Wrapping up or mid-call: refuse the call on the device.
                            tracing::warn!(remote_number, "incoming call refused: slot not READY");
                            let _ = tokio::time::timeout(timeout, self.device.hang_up()).await;
                            continue;
                        }
                        self.cell
                            .start_call(CallDirection::Inbound, remote_number.clone());
                        let event = SlotEvent::CallStarted {
                            direction: CallDirection::Inbound,
                        };
                        self.feed(event, "").await?;
                        self.bridge_ringing_call(remote_number);
                    }
                    DeviceEvent::CallAnswered => {
                        self.to_bridge(FromDevice::Answered);
                        self.feed(SlotEvent::CallAnswered, "").await?;
                        self.stream_answered_call();
                    }
                    DeviceEvent::CallEnded { cause } => {
                        self.to_bridge(FromDevice::Ended {
                            cause: cause.clone(),
                        });
                        if matches!(
                            self.cell.state(),
                            SlotState::Calling | SlotState::ActiveCall
                        ) {
                            self.device_end_cause = Some(cause.clone());
                        }
                        self.feed(SlotEvent::CallEnded, &cause).await?;
                        if self.cell.state() == SlotState::PostCall {
                            wrap_up_at = Some(Instant::now() + wrap_up);
                        }
                    }
                    DeviceEvent::RegistrationLost { reason } => {
                        tracing::warn!(reason, "registration lost");
                        self.device_registered = false;
                        wrap_up_at = None;
                        self.feed_device_registering(SlotEvent::RegistrationLost)
                            .await?;
                    }
                    DeviceEvent::Registered => {
                        self.device_registered = true;
                        if self.cell.state() == SlotState::Registering && self.sip_registered {
                            tracing::info!("registered again");
                            self.feed(SlotEvent::Registered, "").await?;
                        }
                    }
                    DeviceEvent::Rebound { description } => {
                        tracing::info!(device = description, "device re-bound");
                        self.cell.set_device(Some(description));
                    }
                    DeviceEvent::SmsReceived { sender, text } => {
                        tracing::info!(sender, chars = text.chars().count(), "SMS received");
                        self.cell.record_sms(self.ctx, sender, text).await;
                    }
                    DeviceEvent::Recovery { step, reason } => {
                        self.cell.record_recovery(self.ctx, step, reason).await;
                    }
                },
            }
        }
    }
}

/// Completes a call's record with its bridge's outcome. The end cause is the
/// side that ended the call first: the device's when it did, else the SIP
/// side's (or the AudioSocket server's), else the cause the slot recorded.
fn complete_cdr(record: &mut CdrRecord, outcome: CallOutcome) {
    let server_end = outcome
        .audiosocket
        .as_ref()
        .filter(|session| session.end != "call_ended")
        .map(|session| format!("audiosocket_{}", session.end));
    if let Some(cause) = outcome
        .device_cause
        .clone()
        .or_else(|| outcome.sip_cause.clone())
        .or(server_end)
    {
        record.end_cause = cause;
    }
    if outcome.device_cause.is_some() {
        record.device_cause = outcome.device_cause;
    }
    record.sip_cause = outcome.sip_cause;
    record.recording = outcome
        .recording
        .map(|path| path.to_string_lossy().into_owned());
    record.media = outcome.health;
    record.rtp = outcome.rtp.map(|rtp| rtp.counters());
    record.audiosocket = outcome.audiosocket;
}

#[cfg(test)]
mod tests {
    use vss_shared::SlotId;
    use vss_shared::media::Verdict;

    use super::*;
    use crate::media::health::{HealthConfig, HealthMeter};
    use crate::media::rtp_session::RtpStatsSnapshot;

    fn record(end_cause: &str) -> CdrRecord {
        CdrRecord {
            call_id: "1-1000-0".into(),
            slot_id: SlotId::new(1).expect("slot"),
            direction: CallDirection::Outbound,
            remote_number: "+79161234567".into(),
            started_at_ms: 1_000,
            answered_at_ms: Some(2_000),
            ended_at_ms: 9_000,
            end_cause: end_cause.into(),
            sip_cause: None,
            device_cause: Some(end_cause.into()),
            recording: None,
            media: None,
            rtp: None,
            audiosocket: None,
        }
    }

    #[test]
    fn the_side_that_ended_first_is_the_end_cause() {
        // The SIP caller hung up; the device then reported its own clearing.
        let mut cdr = record("normal_clearing");
        complete_cdr(
            &mut cdr,
            CallOutcome {
                sip_cause: Some("remote_bye".into()),
                answered: true,
                device_call: true,
                recording: Some("/rec/1-1000-0.opus".into()),
                health: Some(HealthMeter::new(HealthConfig::default()).summary()),
                rtp: Some(RtpStatsSnapshot {
                    packets_in: 250,
                    dropped_wrong_source: 7,
                    ..RtpStatsSnapshot::default()
                }),
                ..CallOutcome::default()
            },
        );
        assert_eq!(cdr.end_cause, "remote_bye");
        assert_eq!(cdr.sip_cause.as_deref(), Some("remote_bye"));
        assert_eq!(cdr.device_cause.as_deref(), Some("normal_clearing"));
        assert_eq!(cdr.recording.as_deref(), Some("/rec/1-1000-0.opus"));
        assert_eq!(
            cdr.media.as_ref().map(|m| m.verdict),
            Some(Verdict::NoMedia)
        );
        let rtp = cdr.rtp.expect("RTP counters");
        assert_eq!((rtp.packets_in, rtp.dropped_wrong_source), (250, 7));

        // The device's callee hung up first: its cause wins, the SIP side
        // says we sent the BYE.
        let mut cdr = record("normal_clearing");
        complete_cdr(
            &mut cdr,
            CallOutcome {
                sip_cause: Some("local_bye".into()),
                device_cause: Some("normal_clearing".into()),
                ..CallOutcome::default()
            },
        );
        assert_eq!(cdr.end_cause, "normal_clearing");
        assert_eq!(cdr.sip_cause.as_deref(), Some("local_bye"));

        // Refused before the device dialled: the SIP status is the cause.
        let mut cdr = record("bridge_failed");
        cdr.device_cause = None;
        complete_cdr(
            &mut cdr,
            CallOutcome {
                sip_cause: Some("488".into()),
                ..CallOutcome::default()
            },
        );
        assert_eq!(cdr.end_cause, "488");
        assert_eq!(cdr.device_cause, None);
        assert_eq!(cdr.media, None);

        // The AudioSocket server hung up first: its end is the cause, the
        // device's clearing after our hang-up stays its own field.
        let mut cdr = record("normal_clearing");
        let session = vss_shared::media::AudioSocketSession {
            server: "127.0.0.1:9092".into(),
            uuid: "8c8e0bc6-2f7a-4e3b-9d1e-5a6b7c8d9e0f".into(),
            end: "server_hangup".into(),
            frames_in: 10,
            frames_out: 12,
        };
        complete_cdr(
            &mut cdr,
            CallOutcome {
                audiosocket: Some(session.clone()),
                ..CallOutcome::default()
            },
        );
        assert_eq!(cdr.end_cause, "audiosocket_server_hangup");
        assert_eq!(cdr.device_cause.as_deref(), Some("normal_clearing"));
        assert_eq!(cdr.audiosocket, Some(session));
    }
}
