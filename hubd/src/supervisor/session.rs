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

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use vss_shared::{CallDirection, SlotAction, SlotEvent, SlotState};

use super::slot::{SlotCell, SlotCommand, SlotContext, SlotRefusal};
use crate::device::{self, Device, DeviceError, DeviceEvent};
use crate::sip::bridge::{self, BridgeConfig, CallOutcome, FromDevice, SessionLink, ToDevice};
use crate::sip::{
    CallAction, CallListener, IncomingCall, RegistrationEvent, RegistrationHandle, SlotCredentials,
};

/// Longest a session waits for the registrar to confirm its unregistration.
const UNREGISTER_WITHIN: Duration = Duration::from_secs(5);

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
}

/// The call bridge of the slot's current call.
struct ActiveBridge {
    link: SessionLink,
    task: tokio::task::JoinHandle<CallOutcome>,
    /// The bridge stopped asking (its link closed); only its end is awaited.
    quiet: bool,
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
        device_registered: false,
        listener: None,
        bridge: None,
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
        // Its stop token is `shutdown`, or the session is over: either way
        // it hangs up its SIP side; the device is released below.
        bridge.task.abort();
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
    /// The device reports itself registered.
    device_registered: bool,
    /// INVITEs for the slot's extension, with `[sip]` configured.
    listener: Option<CallListener>,
    /// The current call's bridge, for a call over SIP.
    bridge: Option<ActiveBridge>,
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
                SlotAction::WriteCdr => self.cell.write_cdr(self.ctx, end_cause).await,
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

    /// What a bridge of the slot's current call needs.
    fn bridge_config(&self, direction: CallDirection) -> Option<BridgeConfig> {
        let sip = self.ctx.sip.as_ref()?;
        let media = &self.ctx.media;
        let call_id = self.cell.current_call_id()?;
        let record = media.recording_policy(self.cell.id()) == crate::config::RecordingPolicy::All;
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
            local_ip: sip.ua.advertised_addr().ip(),
            ports: media.ports().clone(),
            rtp: *media.rtp_config(),
            // TODO(next): thresholds from `[media]` once configurable.
            health: crate::media::health::HealthConfig::default(),
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
        let (device_link, session_link) = bridge::link();
        let task = tokio::spawn(bridge::incoming(
            invite,
            handle,
            device_link,
            config,
            self.shutdown.child_token(),
        ));
        self.bridge = Some(ActiveBridge {
            link: session_link,
            task,
            quiet: false,
        });
        Ok(())
    }

    /// A call rings on the device of a READY slot (F-03): with
    /// `sip.incoming_destination`, an INVITE goes there and the call is
    /// bridged once answered; without, the call waits for the local API.
    fn bridge_ringing_call(&mut self, caller: String) {
        let Some(sip) = &self.ctx.sip else {
            return;
        };
        let (Some(target_uri), Some(proxy)) =
            (sip.incoming_destination.clone(), sip.ua.outbound_proxy())
        else {
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
        let (device_link, session_link) = bridge::link();
        let task = tokio::spawn(bridge::outgoing(
            caller,
            sip.ua.clone(),
            destination,
            device_link,
            config,
            self.shutdown.child_token(),
        ));
        self.bridge = Some(ActiveBridge {
            link: session_link,
            task,
            quiet: false,
        });
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
                    self.bridge = None;
                    match outcome {
                        Ok(outcome) => tracing::info!(
                            sip_cause = outcome.sip_cause.as_deref().unwrap_or(""),
                            device_cause = outcome.device_cause.as_deref().unwrap_or(""),
                            answered = outcome.answered,
                            recording = ?outcome.recording,
                            health = ?outcome.health.as_ref().map(|h| h.verdict),
                            "call bridge done"
                        ),
                        Err(e) => tracing::error!(error = %e, "call bridge failed"),
                    }
                    // TODO(next): the CDR is written at the device's CallEnded
                    // with the device cause only; join the outcome (SIP cause,
                    // health, recording path) into it, and end the slot's call
                    // here when the device never reported CallEnded.
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
                    }
                    DeviceEvent::CallEnded { cause } => {
                        self.to_bridge(FromDevice::Ended {
                            cause: cause.clone(),
                        });
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
