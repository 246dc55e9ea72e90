//! The `at_modem` driver: one AUTO slot's GSM modem, found by IMEI, driven
//! by AT commands, kept alive by the recovery ladder.
//!
//! [`AtModemDevice`] is what the slot's supervisor holds. `bind` claims the
//! modem from the hub's [`ModemDirectory`], opens its AT port, checks it
//! really is the configured IMEI (and SIM), runs the vendor's init sequence
//! and starts the **modem task**, which from then on owns the port:
//!
//! ```text
//!  supervisor ──requests (dial, hang up, SMS, USSD, ping)──► modem task ──► Link (AT port)
//!  supervisor ◄──DeviceEvent (calls, SMS, registration, recovery)── modem task
//!                                          └──► the hub's voice clock thread (voice ports, 20 ms pacing)
//! ```
//!
//! The modem task answers requests, turns URCs into [`DeviceEvent`]s, polls
//! signal and registration, and climbs the [`RecoveryLadder`] when the modem
//! stops answering: resync → `ATZ` → `AT+CFUN=1,1` → USB power cycle →
//! FAULT. While it recovers the slot is not READY (the task reports
//! `RegistrationLost` first and `Registered` once the modem answers again);
//! a modem whose tty vanished is looked for again by IMEI, under whatever
//! name it comes back as.
//!
//! Invariants:
//! - Only the modem task touches the AT port, only the voice clock the voice
//!   port during a call; the supervisor's calls never block on a hung modem for longer
//!   than one command's timeout.
//! - A call is reported ended exactly once (`^CEND`, `NO CARRIER` and a
//!   local hang-up may all arrive).
//! - Dropping the device (release, session end, panic) aborts the task,
//!   which closes both ports and releases the claim.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vss_shared::SlotId;

use super::calls::CallTracker;
use super::command::Command;
use super::directory::{ModemClaim, ModemDirectory};
use super::engine::EngineConfig;
use super::link::{Link, LinkError, Reply};
use super::pdu::{deliver, submit};
use super::profile::{DialNumber, DtmfDigit, ModemProfile};
use super::recovery::{RecoveryAction, RecoveryLadder, RecoveryStep};
use super::replies::{self, SimStatus, UssdStatus};
use super::urc::{CallResult, Urc};
use super::voice::{self, AudioStream};
use crate::config::{AtModemConfig, ModemsSection};
use crate::device::{Device, DeviceError, DeviceEvent, DeviceInfo};
use crate::metrics::Metrics;

/// What every AT modem of the hub shares: the directory, the figures.
#[derive(Debug)]
pub struct ModemEnv {
    /// Who holds which modem.
    pub directory: Arc<ModemDirectory>,
    /// Paces every call's audio.
    pub voice_clock: voice::VoiceClock,
    /// Process-wide metrics (voice pacing, recovery steps).
    pub metrics: Arc<Metrics>,
}

impl ModemEnv {
    /// The environment for `settings`.
    pub fn new(settings: ModemsSection, metrics: Arc<Metrics>) -> ModemEnv {
        let recovery = settings.recovery_config();
        ModemEnv {
            directory: Arc::new(ModemDirectory::new(settings, recovery)),
            voice_clock: voice::VoiceClock::new(Arc::clone(&metrics.voice)),
            metrics,
        }
    }
}

/// Recovery ladder steps taken, by step, and faults declared.
#[derive(Debug, Default)]
pub struct RecoveryMetrics {
    steps: [AtomicU64; 4],
    faults: AtomicU64,
    rebinds: AtomicU64,
}

impl RecoveryMetrics {
    fn step(&self, step: RecoveryStep) {
        let i = RecoveryStep::ALL
            .iter()
            .position(|s| *s == step)
            .unwrap_or(0);
        self.steps[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the series in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP hubd_modem_recovery_steps_total Recovery ladder steps taken on AT modems, by step.\n# TYPE hubd_modem_recovery_steps_total counter"
        );
        for (step, count) in RecoveryStep::ALL.iter().zip(&self.steps) {
            let _ = writeln!(
                out,
                "hubd_modem_recovery_steps_total{{step=\"{}\"}} {}",
                step_name(*step),
                count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP hubd_modem_faults_total AT modems the ladder gave up on (slot to FAULT).\n# TYPE hubd_modem_faults_total counter\nhubd_modem_faults_total {}",
            self.faults.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP hubd_modem_rebinds_total AT modems found again by IMEI after their tty vanished.\n# TYPE hubd_modem_rebinds_total counter\nhubd_modem_rebinds_total {}",
            self.rebinds.load(Ordering::Relaxed)
        );
    }
}

/// The name of a step in events, logs and metrics.
pub fn step_name(step: RecoveryStep) -> &'static str {
    match step {
        RecoveryStep::Resync => "resync",
        RecoveryStep::SoftReset => "soft_reset",
        RecoveryStep::Reboot => "reboot",
        RecoveryStep::UsbPowerCycle => "usb_power_cycle",
    }
}

type Reply1<T> = oneshot::Sender<Result<T, DeviceError>>;

enum Request {
    Register(Reply1<()>),
    Ping(Reply1<()>),
    Dial(String, Reply1<()>),
    HangUp(Reply1<()>),
    Answer(Reply1<()>),
    Dtmf(String, Reply1<()>),
    Sms {
        to: String,
        text: String,
        reply: Reply1<u32>,
    },
    Ussd(String, Reply1<String>),
}

/// Whether the modem task is recovering the modem (the slot is out of service).
type Recovering = tokio::sync::watch::Sender<bool>;

/// One AUTO slot's modem.
pub struct AtModemDevice {
    slot: SlotId,
    config: AtModemConfig,
    env: Arc<ModemEnv>,
    task: Option<Running>,
    audio: Arc<Mutex<Option<AudioStream>>>,
}

struct Running {
    requests: mpsc::Sender<Request>,
    events: mpsc::Receiver<Result<DeviceEvent, DeviceError>>,
    recovering: tokio::sync::watch::Receiver<bool>,
    join: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.join.abort();
    }
}

impl AtModemDevice {
    /// A driver for `slot`'s modem; nothing is opened until `bind`.
    pub fn new(slot: SlotId, config: AtModemConfig, env: Arc<ModemEnv>) -> AtModemDevice {
        AtModemDevice {
            slot,
            config,
            env,
            task: None,
            audio: Arc::new(Mutex::new(None)),
        }
    }

    /// The audio of the current call, once per call, for a bridge to take.
    pub fn take_audio(&self) -> Option<AudioStream> {
        self.audio.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    async fn ask<T>(
        &mut self,
        operation: &'static str,
        make: impl FnOnce(Reply1<T>) -> Request,
    ) -> Result<T, DeviceError> {
        let running = self
            .task
            .as_ref()
            .ok_or_else(|| DeviceError::Gone("the modem is not bound".into()))?;
        let (tx, rx) = oneshot::channel();
        running
            .requests
            .send(make(tx))
            .await
            .map_err(|_| DeviceError::Gone(format!("the modem task ended before {operation}")))?;
        rx.await
            .map_err(|_| DeviceError::Gone(format!("the modem task ended during {operation}")))?
    }

    /// Sends an SMS; returns how many parts it took.
    pub async fn send_sms(&mut self, to: &str, text: &str) -> Result<u32, DeviceError> {
        let (to, text) = (to.to_owned(), text.to_owned());
        self.ask("sms", |reply| Request::Sms { to, text, reply })
            .await
    }

    /// Runs a USSD request (`*100#`); returns the network's answer.
    pub async fn ussd(&mut self, request: &str) -> Result<String, DeviceError> {
        let request = request.to_owned();
        self.ask("ussd", |reply| Request::Ussd(request, reply))
            .await
    }
}

fn link_error(operation: &'static str, e: LinkError) -> DeviceError {
    match e {
        LinkError::Gone(why) => DeviceError::Gone(why),
        other => DeviceError::Failed {
            operation,
            message: other.to_string(),
        },
    }
}

#[async_trait]
impl Device for AtModemDevice {
    async fn bind(&mut self) -> Result<DeviceInfo, DeviceError> {
        self.task = None;
        let imei = self.config.imei.clone();
        let claim = self
            .env
            .directory
            .claim(&imei)
            .await
            .map_err(DeviceError::Gone)?;
        let settings = self.env.directory.settings().clone();
        let attached = match attach(&claim, &self.config, &settings).await {
            Ok(attached) => attached,
            Err(e) => {
                if matches!(e, DeviceError::Gone(_)) || e.to_string().contains("IMEI") {
                    self.env.directory.forget(&imei);
                }
                return Err(e);
            }
        };
        let description = describe_bound(&attached.profile, &imei, &claim.modem.port);
        let (requests_tx, requests) = mpsc::channel(8);
        let (events_tx, events) = mpsc::channel(64);
        let (recovering_tx, recovering) = tokio::sync::watch::channel(false);
        let ladder = self.env.directory.take_ladder(&imei);
        let task = ModemTask {
            slot: self.slot,
            config: self.config.clone(),
            settings,
            env: Arc::clone(&self.env),
            claim: Some(claim),
            link: attached.link,
            profile: attached.profile,
            voice: attached
                .voice
                .map(VoiceState::Idle)
                .unwrap_or(VoiceState::None),
            audio: Arc::clone(&self.audio),
            calls: CallTracker::default(),
            call: None,
            registered: None,
            ladder,
            events: events_tx,
            requests,
            recovering: recovering_tx,
            ussd: None,
            sms_parts: BTreeMap::new(),
            sms_reference: 0,
            hangup_deadline: None,
            degraded: false,
        };
        let join = tokio::spawn(task.run());
        self.task = Some(Running {
            requests: requests_tx,
            events,
            recovering,
            join,
        });
        Ok(DeviceInfo { description })
    }

    async fn register(&mut self) -> Result<(), DeviceError> {
        self.ask("register", Request::Register).await
    }

    async fn next_event(&mut self) -> Result<DeviceEvent, DeviceError> {
        let Some(running) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        match running.events.recv().await {
            Some(event) => event,
            None => Err(DeviceError::Gone("the modem task ended".into())),
        }
    }

    async fn health_check(&mut self) -> Result<(), DeviceError> {
        let Some(running) = self.task.as_ref() else {
            return Err(DeviceError::Gone("the modem is not bound".into()));
        };
        if running.join.is_finished() {
            return Err(DeviceError::Gone("the modem task ended".into()));
        }
        // While the ladder is at work the slot is out of service and the
        // verdict comes as an event: a ping stuck behind the recovery (or
        // sent just before it began) must not fail the slot.
        let mut recovering = running.recovering.clone();
        if *recovering.borrow() {
            return Ok(());
        }
        tokio::select! {
            result = self.ask("health check", Request::Ping) => result,
            _ = recovering.wait_for(|r| *r) => Ok(()),
        }
    }

    async fn dial(&mut self, number: &str) -> Result<(), DeviceError> {
        let number = number.to_owned();
        self.ask("dial", |reply| Request::Dial(number, reply)).await
    }

    async fn hang_up(&mut self) -> Result<(), DeviceError> {
        if self.task.is_none() {
            return Ok(());
        }
        self.ask("hang up", Request::HangUp).await
    }

    async fn answer(&mut self) -> Result<(), DeviceError> {
        self.ask("answer", Request::Answer).await
    }

    async fn send_dtmf(&mut self, digits: &str) -> Result<(), DeviceError> {
        let digits = digits.to_owned();
        self.ask("dtmf", |reply| Request::Dtmf(digits, reply)).await
    }

    async fn release(&mut self) {
        // Aborting the task drops the link, the voice task and the claim.
        self.task = None;
        self.audio.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn as_modem(&mut self) -> Option<&mut AtModemDevice> {
        Some(self)
    }
}

/// A modem opened, identified and initialised.
struct Attached {
    link: Link,
    profile: ModemProfile,
    voice: Option<super::port::RawPort>,
}

/// Opens the claimed modem, checks its IMEI (and SIM), initialises it.
async fn attach(
    claim: &ModemClaim,
    config: &AtModemConfig,
    settings: &ModemsSection,
) -> Result<Attached, DeviceError> {
    let port = &claim.modem.port;
    let mut link = Link::open(port, settings.baud_rate, EngineConfig::default())
        .map_err(|e| DeviceError::Gone(e.to_string()))?;
    let probe = Duration::from_millis(settings.probe_timeout_ms);
    if !link
        .settle(probe * 4)
        .await
        .map_err(|e| link_error("bind", e))?
    {
        return Err(DeviceError::Timeout {
            operation: "bind",
            timeout_ms: u64::try_from((probe * 4).as_millis()).unwrap_or(u64::MAX),
        });
    }
    let profile = identify(&mut link, &config.imei).await?;
    init(&mut link, &profile, config).await?;
    let voice = match &claim.modem.voice {
        Some(path) => match super::port::open_raw(path, settings.baud_rate) {
            Ok(port) => Some(port),
            Err(e) => {
                tracing::warn!(error = %e, "voice port unavailable; calls will have no audio");
                None
            }
        },
        None => {
            tracing::warn!(port = %port.display(), "no voice port found beside the AT port; calls will have no audio");
            None
        }
    };
    Ok(Attached {
        link,
        profile,
        voice,
    })
}

/// `ATE0`, maker, model and IMEI; refuses a modem whose IMEI is not `imei`.
async fn identify(link: &mut Link, imei: &str) -> Result<ModemProfile, DeviceError> {
    let run = |text: &str| Command::trusted(text.to_owned());
    let _ = link
        .exchange(run("ATE0"))
        .await
        .map_err(|e| link_error("bind", e))?;
    let maker = link
        .expect_ok(run("AT+CGMI"))
        .await
        .map_err(|e| link_error("bind", e))?;
    let model = link
        .expect_ok(run("AT+CGMM"))
        .await
        .map_err(|e| link_error("bind", e))?;
    let serial = link
        .expect_ok(run("AT+CGSN"))
        .await
        .map_err(|e| link_error("bind", e))?;
    let found = replies::parse_imei(&serial.info).map_err(|e| DeviceError::Failed {
        operation: "bind",
        message: e.to_string(),
    })?;
    if found.as_str() != imei {
        return Err(DeviceError::Failed {
            operation: "bind",
            message: format!(
                "{} answers with IMEI {}, not {imei}",
                link.path().display(),
                found.as_str()
            ),
        });
    }
    Ok(ModemProfile::detect(
        &replies::parse_identity(&maker.info, "+CGMI").unwrap_or_default(),
        &replies::parse_identity(&model.info, "+CGMM").unwrap_or_default(),
    ))
}

/// The vendor's init sequence; the SIM must be ready, and be the
/// configured one when an ICCID is configured.
async fn init(
    link: &mut Link,
    profile: &ModemProfile,
    config: &AtModemConfig,
) -> Result<(), DeviceError> {
    for command in profile.init_sequence() {
        let text = command.text().to_owned();
        let reply = link
            .exchange(command)
            .await
            .map_err(|e| link_error("init", e))?;
        if text == "AT+CPIN?" {
            let status = reply.info.iter().find_map(|l| replies::parse_cpin(l).ok());
            match status {
                Some(SimStatus::Ready) => {}
                Some(other) => {
                    return Err(DeviceError::Failed {
                        operation: "init",
                        message: format!("SIM not ready: {other:?}"),
                    });
                }
                None => {
                    return Err(DeviceError::Failed {
                        operation: "init",
                        message: format!("no SIM status ({:?})", reply.result),
                    });
                }
            }
        } else if !reply.is_ok() {
            tracing::warn!(command = text, result = ?reply.result, "init command refused; going on");
        }
    }
    if let Some(expected) = &config.iccid {
        let reply = link
            .expect_ok(profile.iccid_command())
            .await
            .map_err(|e| link_error("init", e))?;
        let iccid = replies::parse_iccid(&reply.info).map_err(|e| DeviceError::Failed {
            operation: "init",
            message: e.to_string(),
        })?;
        if !iccid.starts_with(expected.as_str()) && !expected.starts_with(iccid.as_str()) {
            return Err(DeviceError::Failed {
                operation: "init",
                message: format!("the SIM was swapped: ICCID {iccid}, configured {expected}"),
            });
        }
    }
    Ok(())
}

/// The voice port between calls, or on the voice clock during one.
enum VoiceState {
    None,
    Idle(super::port::RawPort),
    InCall {
        port: super::port::RawPort,
        clocked: voice::ClockedHandle,
    },
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallDir {
    Out,
    In,
}

struct CallState {
    direction: CallDir,
    announced: bool,
    rings: u32,
    answered: bool,
}

struct ModemTask {
    slot: SlotId,
    config: AtModemConfig,
    settings: ModemsSection,
    env: Arc<ModemEnv>,
    claim: Option<ModemClaim>,
    link: Link,
    profile: ModemProfile,
    voice: VoiceState,
    audio: Arc<Mutex<Option<AudioStream>>>,
    calls: CallTracker,
    call: Option<CallState>,
    registered: Option<bool>,
    ladder: RecoveryLadder,
    events: mpsc::Sender<Result<DeviceEvent, DeviceError>>,
    requests: mpsc::Receiver<Request>,
    recovering: Recovering,
    ussd: Option<(Reply1<String>, Instant)>,
    sms_parts: BTreeMap<(String, u16), Vec<deliver::SmsDeliver>>,
    sms_reference: u8,
    hangup_deadline: Option<Instant>,
    degraded: bool,
}

/// Why the modem task stops.
enum Stop {
    /// The supervisor went away.
    Released,
    /// The ladder is spent, or the modem is gone for good.
    Fault(DeviceError),
}

impl ModemTask {
    async fn run(mut self) {
        let span = tracing::info_span!("modem", slot = %self.slot, imei = %self.config.imei);
        let _guard = span.enter();
        drop(_guard);
        let stop = tracing::Instrument::instrument(self.serve(), span).await;
        self.stop_voice().await;
        if let Stop::Fault(e) = stop {
            self.env
                .metrics
                .modem_recovery
                .faults
                .fetch_add(1, Ordering::Relaxed);
            let _ = self.events.send(Err(e)).await;
        }
        self.env
            .directory
            .return_ladder(&self.config.imei, self.ladder.clone());
    }

    async fn emit(&self, event: DeviceEvent) {
        let _ = self.events.send(Ok(event)).await;
    }

    async fn serve(&mut self) -> Stop {
        let poll_every = Duration::from_millis(self.settings.poll_interval_ms);
        let mut poll = tokio::time::interval_at(Instant::now() + poll_every, poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ussd_deadline = self.ussd.as_ref().map(|(_, at)| *at);
            let hangup_deadline = self.hangup_deadline;
            let outcome: Result<(), LinkError> = tokio::select! {
                biased;
                request = self.requests.recv() => match request {
                    None => return Stop::Released,
                    Some(request) => self.handle(request).await,
                },
                result = self.link.pump() => result,
                _ = poll.tick() => self.poll().await,
                _ = sleep_until(ussd_deadline) => {
                    if let Some((reply, _)) = self.ussd.take() {
                        let _ = reply.send(Err(DeviceError::Timeout { operation: "ussd", timeout_ms: 30_000 }));
                    }
                    Ok(())
                }
                _ = sleep_until(hangup_deadline) => {
                    self.hangup_deadline = None;
                    self.end_call("local_hangup").await;
                    Ok(())
                }
            };
            if let Err(stop) = self.after(outcome).await {
                return stop;
            }
        }
    }

    /// Handles URCs, then a failure of what just ran, if any.
    async fn after(&mut self, outcome: Result<(), LinkError>) -> Result<(), Stop> {
        self.process_urcs().await;
        self.check_voice().await;
        match outcome {
            Ok(()) if self.link.failed_probes() == 0 => Ok(()),
            Ok(()) => {
                let reason = format!("{} resync probe(s) unanswered", self.link.failed_probes());
                self.recover(reason).await
            }
            Err(LinkError::Gone(why)) => {
                // The ttys vanished: a USB reset or an unplug. Look for the
                // modem by IMEI before climbing the ladder.
                let reason = format!("the modem's port went away ({why})");
                self.degrade(&reason).await;
                if self.reattach().await? {
                    self.success().await;
                    return Ok(());
                }
                self.recover(reason).await
            }
            Err(e) => self.recover(e.to_string()).await,
        }
    }

    async fn handle(&mut self, request: Request) -> Result<(), LinkError> {
        match request {
            Request::Register(reply) => {
                let result = self.wait_registered().await;
                let _ = reply.send(result);
            }
            Request::Ping(reply) => {
                let result = self.link.exchange(Command::trusted("AT".into())).await;
                let failure = result.as_ref().err().map(ToString::to_string);
                let _ = reply.send(Ok(()));
                if let Some(why) = failure {
                    return Err(LinkError::Abandoned {
                        command: "AT".into(),
                        reason: why,
                    });
                }
            }
            Request::Dial(number, reply) => {
                let result = self.dial(&number).await;
                match result {
                    Ok(()) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(Ok(refused)) => {
                        let _ = reply.send(Err(refused));
                    }
                    Err(Err(link)) => {
                        let _ =
                            reply.send(Err(link_error("dial", LinkError::Gone(link.to_string()))));
                        return Err(link);
                    }
                }
            }
            Request::Answer(reply) => {
                let ringing = self
                    .call
                    .as_ref()
                    .is_some_and(|c| c.direction == CallDir::In && !c.answered);
                if !ringing {
                    let _ = reply.send(Err(DeviceError::Failed {
                        operation: "answer",
                        message: "no incoming call is ringing".into(),
                    }));
                    return Ok(());
                }
                for command in self.profile.answer_sequence() {
                    let text = command.text().to_owned();
                    match self.link.exchange(command).await {
                        Ok(r) if r.is_ok() || text != "ATA" => {}
                        Ok(r) => {
                            let _ = reply.send(Err(DeviceError::Failed {
                                operation: "answer",
                                message: format!("the modem refused ATA: {:?}", r.result),
                            }));
                            return Ok(());
                        }
                        Err(e) => {
                            let _ = reply
                                .send(Err(link_error("answer", LinkError::Gone(e.to_string()))));
                            return Err(e);
                        }
                    }
                }
                // Huawei confirms with ^CONN; others only with ATA's OK.
                if let Some(call) = self.call.as_mut()
                    && !call.answered
                {
                    call.answered = true;
                    self.emit(DeviceEvent::CallAnswered).await;
                }
                self.start_voice();
                let _ = reply.send(Ok(()));
            }
            Request::Dtmf(digits, reply) => {
                let answered = self.call.as_ref().is_some_and(|c| c.answered);
                let index = self.calls.calls().next().map_or(1, |c| c.index);
                let parsed: Result<Vec<DtmfDigit>, _> =
                    digits.chars().map(DtmfDigit::new).collect();
                let result = match (answered, parsed) {
                    (false, _) => Err(DeviceError::Failed {
                        operation: "dtmf",
                        message: "DTMF needs an answered call".into(),
                    }),
                    (true, Err(e)) => Err(DeviceError::Failed {
                        operation: "dtmf",
                        message: e.to_string(),
                    }),
                    (true, Ok(parsed)) => {
                        let mut result = Ok(());
                        for digit in parsed {
                            match self.link.expect_ok(self.profile.dtmf(index, digit)).await {
                                Ok(_) => {}
                                Err(LinkError::Abandoned { reason, .. }) => {
                                    result = Err(DeviceError::Failed {
                                        operation: "dtmf",
                                        message: reason,
                                    });
                                    break;
                                }
                                Err(e) => {
                                    let _ = reply.send(Err(link_error(
                                        "dtmf",
                                        LinkError::Gone(e.to_string()),
                                    )));
                                    return Err(e);
                                }
                            }
                        }
                        result
                    }
                };
                let _ = reply.send(result);
            }
            Request::HangUp(reply) => {
                let index = self.calls.calls().next().map(|c| c.index);
                let result = self.link.exchange(self.profile.hang_up(index)).await;
                match result {
                    Ok(_) => {
                        if self.call.is_some() && self.hangup_deadline.is_none() {
                            // Wait a little for ^CEND and its cause.
                            self.hangup_deadline = Some(Instant::now() + Duration::from_secs(3));
                        }
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(DeviceError::Failed {
                            operation: "hang up",
                            message: e.to_string(),
                        }));
                        return Err(e);
                    }
                }
            }
            Request::Sms { to, text, reply } => match self.send_sms(&to, &text).await {
                Ok(parts) => {
                    let _ = reply.send(Ok(parts));
                }
                Err(Ok(refused)) => {
                    let _ = reply.send(Err(refused));
                }
                Err(Err(link)) => {
                    let _ = reply.send(Err(DeviceError::Failed {
                        operation: "sms",
                        message: link.to_string(),
                    }));
                    return Err(link);
                }
            },
            Request::Ussd(text, reply) => {
                if self.ussd.is_some() {
                    let _ = reply.send(Err(DeviceError::Failed {
                        operation: "ussd",
                        message: "another USSD request is waiting for its answer".into(),
                    }));
                    return Ok(());
                }
                let command = match self.profile.ussd(&text) {
                    Ok(command) => command,
                    Err(e) => {
                        let _ = reply.send(Err(DeviceError::Failed {
                            operation: "ussd",
                            message: e.to_string(),
                        }));
                        return Ok(());
                    }
                };
                match self.link.exchange(command).await {
                    Ok(r) if r.is_ok() => {
                        self.ussd = Some((reply, Instant::now() + Duration::from_secs(30)));
                    }
                    Ok(r) => {
                        let _ = reply.send(Err(DeviceError::Failed {
                            operation: "ussd",
                            message: format!("the modem refused the request: {:?}", r.result),
                        }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(DeviceError::Failed {
                            operation: "ussd",
                            message: e.to_string(),
                        }));
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits (bounded by the caller) until the network registration is home or roaming.
    async fn wait_registered(&mut self) -> Result<(), DeviceError> {
        loop {
            let reply = self
                .link
                .exchange(Command::trusted("AT+CREG?".into()))
                .await
                .map_err(|e| link_error("register", e))?;
            let registered = reply
                .info
                .iter()
                .find_map(|l| replies::parse_creg_read(l).ok())
                .is_some_and(|(_, r)| r.status.is_registered());
            if registered {
                self.registered = Some(true);
                self.process_urcs().await;
                return Ok(());
            }
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                tokio::select! {
                    r = self.link.pump() => r.map_err(|e| link_error("register", e))?,
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
        }
    }

    /// `Err(Ok(_))`: refused, the modem is fine; `Err(Err(_))`: the link failed.
    async fn dial(&mut self, number: &str) -> Result<(), Result<DeviceError, LinkError>> {
        let refuse = |message: String| {
            Err(Ok(DeviceError::Failed {
                operation: "dial",
                message,
            }))
        };
        if self.call.is_some() {
            return refuse("a call is already in progress".into());
        }
        let number = match DialNumber::parse(number) {
            Ok(number) => number,
            Err(e) => return refuse(e.to_string()),
        };
        let mut sequence = self.profile.dial_sequence(&number).into_iter();
        let Some(atd) = sequence.next() else {
            return refuse("no dial command".into());
        };
        let reply = self.link.exchange(atd).await.map_err(Err)?;
        if !reply.is_ok() {
            return refuse(format!("the modem refused the call: {:?}", reply.result));
        }
        self.call = Some(CallState {
            direction: CallDir::Out,
            announced: true,
            rings: 0,
            answered: false,
        });
        for command in sequence {
            let text = command.text().to_owned();
            let reply = self.link.exchange(command).await.map_err(Err)?;
            if text == "AT+CLCC"
                && let Ok(calls) = replies::parse_clcc_list(&reply.info)
            {
                self.calls.on_clcc(&calls);
            }
        }
        self.start_voice();
        Ok(())
    }

    async fn send_sms(
        &mut self,
        to: &str,
        text: &str,
    ) -> Result<u32, Result<DeviceError, LinkError>> {
        self.sms_reference = self.sms_reference.wrapping_add(1);
        let options = submit::SubmitOptions {
            reference: self.sms_reference,
            ..submit::SubmitOptions::default()
        };
        let parts = submit::encode(to, text, &options).map_err(|e| {
            Ok(DeviceError::Failed {
                operation: "sms",
                message: e.to_string(),
            })
        })?;
        let mut sent = 0;
        for part in &parts {
            let reply = self
                .link
                .exchange(Command::sms_submit(part))
                .await
                .map_err(Err)?;
            if !reply.is_ok() {
                return Err(Ok(DeviceError::Failed {
                    operation: "sms",
                    message: format!(
                        "part {} of {} refused: {:?}",
                        sent + 1,
                        parts.len(),
                        reply.result
                    ),
                }));
            }
            sent += 1;
        }
        Ok(sent)
    }

    async fn poll(&mut self) -> Result<(), LinkError> {
        let csq = self
            .link
            .exchange(Command::trusted("AT+CSQ".into()))
            .await?;
        if let Some(signal) = csq.info.iter().find_map(|l| replies::parse_csq(l).ok()) {
            tracing::debug!(rssi = signal.rssi, dbm = signal.dbm(), "signal");
        }
        let creg = self
            .link
            .exchange(Command::trusted("AT+CREG?".into()))
            .await?;
        if let Some((_, registration)) = creg
            .info
            .iter()
            .find_map(|l| replies::parse_creg_read(l).ok())
        {
            self.on_registration(registration.status.is_registered(), "polled")
                .await;
        }
        self.success().await;
        Ok(())
    }

    async fn on_registration(&mut self, registered: bool, how: &str) {
        if self.degraded {
            return;
        }
        let was = self.registered.replace(registered);
        match (was, registered) {
            (Some(true), false) => {
                self.emit(DeviceEvent::RegistrationLost {
                    reason: format!("the modem left the network ({how})"),
                })
                .await;
            }
            (Some(false), true) => self.emit(DeviceEvent::Registered).await,
            _ => {}
        }
    }

    async fn process_urcs(&mut self) {
        for urc in self.link.take_urcs() {
            self.calls.on_urc(&urc);
            match urc {
                Urc::Ring => {
                    let call = self.call.get_or_insert(CallState {
                        direction: CallDir::In,
                        announced: false,
                        rings: 0,
                        answered: false,
                    });
                    call.rings += 1;
                    // +CLIP normally follows RING at once; a second RING
                    // without it means the number is withheld.
                    if call.direction == CallDir::In && !call.announced && call.rings >= 2 {
                        call.announced = true;
                        self.emit(DeviceEvent::IncomingCall {
                            remote_number: String::new(),
                        })
                        .await;
                    }
                }
                Urc::CallerId(caller) => {
                    let call = self.call.get_or_insert(CallState {
                        direction: CallDir::In,
                        announced: false,
                        rings: 0,
                        answered: false,
                    });
                    if call.direction == CallDir::In && !call.announced {
                        call.announced = true;
                        self.emit(DeviceEvent::IncomingCall {
                            remote_number: caller.number,
                        })
                        .await;
                    }
                }
                Urc::CallConnected { .. } => {
                    if let Some(call) = self.call.as_mut()
                        && !call.answered
                    {
                        call.answered = true;
                        self.emit(DeviceEvent::CallAnswered).await;
                    }
                }
                Urc::CallEnded(end) => {
                    tracing::info!(
                        duration_s = end.duration_s,
                        end_status = end.end_status,
                        cc_cause = end.cc_cause,
                        "call ended"
                    );
                    self.end_call(end.cause_text()).await;
                }
                Urc::CallResult(result) => {
                    let cause = match result {
                        CallResult::NoCarrier => Some("no_carrier"),
                        CallResult::Busy => Some("user_busy"),
                        CallResult::NoAnswer => Some("no_answer"),
                        CallResult::NoDialtone => Some("no_dialtone"),
                        CallResult::Connect(_) => None,
                    };
                    if let Some(cause) = cause {
                        self.end_call(cause).await;
                    }
                }
                Urc::SmsStored { storage, index } => self.read_stored_sms(&storage, index).await,
                Urc::SmsDelivered { pdu, .. } => self.on_sms_pdu(&pdu).await,
                Urc::Ussd(reply) => {
                    let text = reply.text.as_deref().map(|t| {
                        super::pdu::ussd::decode_reply(t, reply.dcs, self.profile.ussd_charset())
                            .unwrap_or_else(|_| t.to_owned())
                    });
                    if let Some((waiter, _)) = self.ussd.take() {
                        let result = match (reply.status, text) {
                            (UssdStatus::Done | UssdStatus::ActionRequired, Some(text)) => Ok(text),
                            (status, text) => Err(DeviceError::Failed {
                                operation: "ussd",
                                message: format!(
                                    "network answered {status:?} {}",
                                    text.unwrap_or_default()
                                ),
                            }),
                        };
                        let _ = waiter.send(result);
                    } else {
                        tracing::info!(?text, "unsolicited USSD from the network");
                    }
                }
                Urc::Registration(registration) => {
                    self.on_registration(registration.status.is_registered(), "+CREG")
                        .await;
                }
                Urc::Malformed { line, error } => {
                    tracing::warn!(line, %error, "malformed URC");
                }
                other => tracing::debug!(urc = ?other, "URC"),
            }
        }
    }

    async fn end_call(&mut self, cause: &str) {
        self.hangup_deadline = None;
        if self.call.take().is_some() {
            self.calls.clear();
            self.stop_voice().await;
            self.emit(DeviceEvent::CallEnded {
                cause: cause.to_owned(),
            })
            .await;
        }
    }

    async fn read_stored_sms(&mut self, storage: &str, index: u32) {
        let _ = storage;
        let read = self
            .link
            .exchange(Command::trusted(format!("AT+CMGR={index}")))
            .await;
        match read {
            Ok(reply) if reply.is_ok() => match replies::parse_cmgr(&reply.info) {
                Ok(stored) => {
                    let pdu = stored.pdu.clone();
                    self.on_sms_pdu(&pdu).await;
                }
                Err(e) => tracing::warn!(index, error = %e, "unreadable stored SMS"),
            },
            Ok(reply) => tracing::warn!(index, result = ?reply.result, "AT+CMGR refused"),
            Err(e) => {
                tracing::warn!(index, error = %e, "AT+CMGR failed; the SMS stays on the SIM");
                return;
            }
        }
        // Delete it only once it was read (or is unreadable): the SIM holds ~20.
        if let Err(e) = self
            .link
            .exchange(Command::trusted(format!("AT+CMGD={index}")))
            .await
        {
            tracing::warn!(index, error = %e, "could not delete SMS from the SIM");
        }
    }

    async fn on_sms_pdu(&mut self, pdu: &str) {
        let sms = match deliver::decode(pdu) {
            Ok(sms) => sms,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable SMS PDU");
                return;
            }
        };
        let sender = sms.sender.text.clone();
        let text = match sms.concat() {
            None => sms.text(),
            Some(concat) => {
                let key = (sender.clone(), concat.reference);
                let parts = self.sms_parts.entry(key.clone()).or_default();
                parts.push(sms);
                if parts.len() < usize::from(concat.total) {
                    // Keep at most 64 half-received messages.
                    while self.sms_parts.len() > 64 {
                        self.sms_parts.pop_first();
                    }
                    return;
                }
                let parts = self.sms_parts.remove(&key).unwrap_or_default();
                let refs: Vec<&deliver::SmsDeliver> = parts.iter().collect();
                match deliver::reassemble(&refs) {
                    Ok(payload) => payload.text(),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not join SMS parts");
                        return;
                    }
                }
            }
        };
        self.emit(DeviceEvent::SmsReceived {
            sender,
            text: text.unwrap_or_default(),
        })
        .await;
    }

    // ------------------------------------------------------------ voice

    fn start_voice(&mut self) {
        let VoiceState::Idle(port) = std::mem::replace(&mut self.voice, VoiceState::Lost) else {
            return;
        };
        let (stream, side) = voice::audio_pair();
        match self.env.voice_clock.attach(&port, side) {
            Ok(clocked) => {
                *self.audio.lock().unwrap_or_else(|p| p.into_inner()) = Some(stream);
                self.voice = VoiceState::InCall { port, clocked };
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot put the call's audio on the voice clock");
                self.voice = VoiceState::Idle(port);
            }
        }
    }

    async fn stop_voice(&mut self) {
        self.audio.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let VoiceState::InCall { port, clocked } =
            std::mem::replace(&mut self.voice, VoiceState::Lost)
        {
            match clocked.failure() {
                None => self.voice = VoiceState::Idle(port),
                Some(why) => tracing::warn!(why, "voice port failed during the call"),
            }
            drop(clocked);
        }
    }

    /// An incoming call that got answered elsewhere, or a voice port that
    /// failed mid-call: keep the state honest.
    async fn check_voice(&mut self) {
        if let Some(call) = &self.call
            && call.answered
            && call.direction == CallDir::In
            && matches!(self.voice, VoiceState::Idle(_))
        {
            self.start_voice();
        }
    }

    // ------------------------------------------------------------ recovery

    async fn success(&mut self) {
        self.ladder.on_success();
        if self.degraded {
            self.degraded = false;
            self.recovering.send_replace(false);
            tracing::info!("modem recovered");
            self.registered = Some(true);
            self.emit(DeviceEvent::Registered).await;
        }
    }

    /// The slot leaves service while the modem is being recovered.
    async fn degrade(&mut self, reason: &str) {
        if !self.degraded {
            self.degraded = true;
            self.recovering.send_replace(true);
            tracing::warn!(reason, "modem not answering; recovering");
            self.end_call("modem_failure").await;
            self.emit(DeviceEvent::RegistrationLost {
                reason: format!("modem not answering: {reason}"),
            })
            .await;
        }
    }

    /// Climbs the ladder until the modem answers, or gives up.
    async fn recover(&mut self, reason: String) -> Result<(), Stop> {
        self.degrade(&reason).await;
        loop {
            let action = self.ladder.on_failure(Instant::now().into_std());
            let step = match action {
                RecoveryAction::Perform(step) => step,
                RecoveryAction::Wait { step, until } => {
                    tracing::info!(
                        step = step_name(step),
                        "recovery step rate limited; waiting"
                    );
                    self.wait(Instant::from_std(until)).await?;
                    continue;
                }
                RecoveryAction::Fault => {
                    return Err(Stop::Fault(DeviceError::Failed {
                        operation: "recovery",
                        message: format!(
                            "the modem stayed dead after every recovery step ({reason})"
                        ),
                    }));
                }
            };
            if step == RecoveryStep::UsbPowerCycle && self.config.power.is_none() {
                return Err(Stop::Fault(DeviceError::Failed {
                    operation: "recovery",
                    message: format!(
                        "the modem stayed dead after resync, ATZ and reboot, and no USB power control is configured ({reason})"
                    ),
                }));
            }
            self.env.metrics.modem_recovery.step(step);
            tracing::warn!(step = step_name(step), "recovery step");
            self.emit(DeviceEvent::Recovery {
                step: step_name(step).to_owned(),
                reason: reason.clone(),
            })
            .await;
            if self.try_step(step).await? {
                self.success().await;
                return Ok(());
            }
        }
    }

    /// Performs `step`; true when the modem answers cleanly afterwards.
    async fn try_step(&mut self, step: RecoveryStep) -> Result<bool, Stop> {
        let probe = Duration::from_millis(self.settings.probe_timeout_ms);
        match step {
            RecoveryStep::Resync => match self.link.settle(probe * 4).await {
                Ok(true) => self.answers().await,
                Ok(false) | Err(_) => Ok(false),
            },
            RecoveryStep::SoftReset => match self.link.force(self.profile.soft_reset()).await {
                Ok(reply) if reply.is_ok() => self.reinit().await,
                Ok(_) | Err(_) => Ok(false),
            },
            RecoveryStep::Reboot => {
                // The modem reboots and re-enumerates: its ports vanish.
                let _ = tokio::time::timeout(probe, self.link.force(self.profile.reboot())).await;
                self.reattach().await
            }
            RecoveryStep::UsbPowerCycle => {
                let Some(power) = self.config.power.clone() else {
                    return Ok(false);
                };
                self.stop_voice().await;
                self.voice = VoiceState::Lost;
                if let Err(e) = super::power::power_cycle(&power, Duration::from_secs(60)).await {
                    tracing::error!(error = %e, "USB power cycle failed");
                    return Ok(false);
                }
                self.reattach().await
            }
        }
    }

    async fn answers(&mut self) -> Result<bool, Stop> {
        Ok(matches!(
            self.link.exchange(Command::trusted("AT".into())).await,
            Ok(Reply {
                result: super::FinalResult::Ok,
                ..
            })
        ))
    }

    async fn reinit(&mut self) -> Result<bool, Stop> {
        match init(&mut self.link, &self.profile, &self.config).await {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::warn!(error = %e, "init after recovery failed");
                Ok(false)
            }
        }
    }

    /// The modem's ports vanished (reboot, power cycle, unplug): look for it
    /// by IMEI until it comes back under whatever names, then reopen it.
    async fn reattach(&mut self) -> Result<bool, Stop> {
        self.stop_voice().await;
        self.voice = VoiceState::Lost;
        self.claim = None;
        self.env.directory.forget(&self.config.imei);
        let deadline = Instant::now() + Duration::from_millis(self.settings.rebind_timeout_ms);
        // Give the old ttys time to go before looking for new ones.
        self.wait(Instant::now() + Duration::from_millis(500))
            .await?;
        loop {
            match self.env.directory.claim(&self.config.imei).await {
                Ok(claim) => match attach(&claim, &self.config, &self.settings).await {
                    Ok(attached) => {
                        tracing::info!(port = %claim.modem.port.display(), "modem found again");
                        self.env
                            .metrics
                            .modem_recovery
                            .rebinds
                            .fetch_add(1, Ordering::Relaxed);
                        self.link = attached.link;
                        self.profile = attached.profile;
                        self.emit(DeviceEvent::Rebound {
                            description: describe_bound(
                                &self.profile,
                                &self.config.imei,
                                &claim.modem.port,
                            ),
                        })
                        .await;
                        self.voice = attached
                            .voice
                            .map(VoiceState::Idle)
                            .unwrap_or(VoiceState::None);
                        self.claim = Some(claim);
                        return Ok(true);
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "modem not ready yet");
                        self.env.directory.forget(&self.config.imei);
                    }
                },
                Err(why) => tracing::debug!(why, "modem not back yet"),
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.wait(Instant::now() + Duration::from_secs(1)).await?;
        }
    }

    /// Sleeps until `until`, answering requests meanwhile (the modem is
    /// recovering: pings succeed, everything else is refused) and stopping
    /// when the supervisor goes away.
    async fn wait(&mut self, until: Instant) -> Result<(), Stop> {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return Ok(()),
                request = self.requests.recv() => match request {
                    None => return Err(Stop::Released),
                    Some(request) => refuse_while_recovering(request),
                },
            }
        }
    }
}

fn refuse_while_recovering(request: Request) {
    let busy = || DeviceError::Failed {
        operation: "request",
        message: "the modem is recovering".into(),
    };
    match request {
        Request::Ping(reply) => {
            let _ = reply.send(Ok(()));
        }
        Request::Register(reply) | Request::Dial(_, reply) => {
            let _ = reply.send(Err(busy()));
        }
        Request::HangUp(reply) => {
            let _ = reply.send(Ok(()));
        }
        Request::Answer(reply) | Request::Dtmf(_, reply) => {
            let _ = reply.send(Err(busy()));
        }
        Request::Sms { reply, .. } => {
            let _ = reply.send(Err(busy()));
        }
        Request::Ussd(_, reply) => {
            let _ = reply.send(Err(busy()));
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How a bound modem shows in the slot's `device` field.
fn describe_bound(profile: &ModemProfile, imei: &str, port: &std::path::Path) -> String {
    format!(
        "{} {} IMEI {imei} on {}",
        profile.vendor_name(),
        profile.model(),
        port.display()
    )
}

/// Where a slot's modem is, for `hubd modems scan`.
pub fn describe(found: &super::directory::FoundModem) -> String {
    format!(
        "{} {} IMEI {} at {} voice {}",
        found.vendor,
        found.model,
        found.imei,
        found.port.display(),
        found
            .voice
            .as_ref()
            .map_or_else(|| "-".to_owned(), |p: &PathBuf| p.display().to_string())
    )
}
