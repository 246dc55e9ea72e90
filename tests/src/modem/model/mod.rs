//! The sans-IO modem: bytes and time in, bytes, port actions and deadlines
//! out. It is what an emulated modem *is*; the pty runner only moves its
//! bytes (quinn-proto / quinn split, see `shared/design/style.md`).
//!
//! ```text
//!   driver bytes ──► handle_input(bytes, now) ─┐
//!   timers       ──► handle_timeout(now) ──────┼─► poll_output(): Bytes | Detach | Attach
//!   test         ──► incoming_call(…, now) ────┘   next_deadline(), audio_active()
//! ```
//!
//! Owns the AT behaviour of one modem: command-line framing with echo, the
//! `> ` SMS prompt, every command's reply, call progress with its timers,
//! the SIM's SMS store, USSD, and the scripted faults (silence, garbage,
//! interleaved URCs, the `AT+CHLD` hang, reboot, power off/on). Never
//! reads a clock, never touches a file descriptor, never panics on input.
//!
//! Code map: `commands.rs` answers command lines, `calls.rs` is voice call
//! state, `messages.rs` is SMS and USSD.
//!
//! **Invariant (nothing while not speaking):** while powered off, rebooting,
//! hung or silenced the model emits no byte of its own and discards input.

mod calls;
mod commands;
mod messages;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub use calls::{CallRecord, CallState, Direction, EndCause, VoiceCall};
pub use messages::{SentSms, StoredSms, UssdRequest};

use super::config::{Callee, ModemConfig, Tone, UssdAnswer};
use super::faults::{Garbage, InReply, Interleave};
use super::profile::{Profile, Vendor};

/// The longest command line kept; longer lines are answered `ERROR`.
const MAX_LINE: usize = 1024;
/// Command lines kept in [`ModemLog::commands`].
const MAX_LOGGED_COMMANDS: usize = 10_000;

/// What the model wants done, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelOutput {
    /// Bytes for the AT port.
    Bytes(Vec<u8>),
    /// The USB device is gone: close both ports (the driver sees EOF/EIO).
    Detach,
    /// The USB device is back: open both ports anew (new paths).
    Attach,
}

/// Why something could not be injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectError {
    /// The modem is off, rebooting or hung: the network cannot reach it.
    Unreachable,
    /// A call is already up.
    Busy,
    /// The PDU is not hex with a consistent SMSC prefix.
    BadPdu(String),
    /// Every SMS slot of the SIM is used.
    StorageFull,
}

impl std::fmt::Display for InjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InjectError::Unreachable => f.write_str("the modem is off, rebooting or hung"),
            InjectError::Busy => f.write_str("a call is already up"),
            InjectError::BadPdu(why) => write!(f, "bad PDU: {why}"),
            InjectError::StorageFull => f.write_str("the SIM's SMS storage is full"),
        }
    }
}

impl std::error::Error for InjectError {}

/// What the modem saw and did, for tests to assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModemLog {
    /// Every command line received (as typed, without the CR), newest last.
    pub commands: VecDeque<String>,
    /// Every SMS submitted with `AT+CMGS`.
    pub sent_sms: Vec<SentSms>,
    /// DTMF digits sent during calls, in order.
    pub dtmf: String,
    /// Every USSD request.
    pub ussd_requests: Vec<UssdRequest>,
    /// Every call that ended.
    pub calls: Vec<CallRecord>,
    /// Boots after the first power-on (`AT+CFUN=1,1`, power cycles).
    pub boots: u32,
    /// Times the modem hung (the `AT+CHLD` trap).
    pub hangs: u32,
}

/// Whether the modem is powered and booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Booted and answering (unless hung or silenced).
    On,
    /// Between `AT+CFUN=1,1` and the boot URCs.
    Rebooting,
    /// Vanished: no USB device.
    Off,
}

/// Settings commands change; reset by `ATZ`, reboot and power-on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    echo: bool,
    cmee: u8,
    creg_n: u8,
    cops_format: u8,
    cmgf: u8,
    cscs: String,
    cnmi_mt: u8,
    clip: bool,
    /// Quectel `AT+QPCMV=1,<port>`: `Some(0)` serial (the voice pty).
    qpcmv: Option<u8>,
    cfun: u8,
}

impl Settings {
    fn power_on(profile: Profile) -> Settings {
        Settings {
            echo: true,
            cmee: 0,
            creg_n: 0,
            cops_format: 0,
            cmgf: 0,
            cscs: "IRA".to_owned(),
            cnmi_mt: 1,
            clip: profile.is_huawei(),
            qpcmv: None,
            cfun: 1,
        }
    }
}

/// Something that happens later.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TimerEvent {
    /// Huawei `^ORIG` of call `seq`.
    Orig(u64),
    /// The remote party is alerted.
    Conf(u64),
    /// The remote party answers.
    RemoteAnswer(u64),
    /// The network or remote party ends the call.
    RemoteEnd(u64, EndCause),
    /// `RING` again for incoming call `seq`.
    Ring(u64),
    /// A `+CUSD` line.
    Ussd(String),
    /// The reboot takes the USB device away.
    Detach,
    /// The reboot is over.
    Boot,
    /// The periodic URC of generation `gen`.
    Periodic(u64),
}

#[derive(Debug, Clone)]
struct Timer {
    at: Instant,
    order: u64,
    event: TimerEvent,
}

/// An SMS being typed after the `> ` prompt.
#[derive(Debug, Clone)]
struct SmsInput {
    tpdu_len: usize,
    body: Vec<u8>,
}

/// One emulated modem, without I/O. See the module documentation.
#[derive(Debug)]
pub struct ModemModel {
    config: ModemConfig,
    settings: Settings,
    power: Power,
    silent: bool,
    hung: bool,
    line: Vec<u8>,
    line_overflow: bool,
    sms_input: Option<SmsInput>,
    /// The command line being answered (upper-case), for interleave filters.
    current: String,
    out: VecDeque<ModelOutput>,
    timers: Vec<Timer>,
    timer_order: u64,
    call: Option<VoiceCall>,
    call_seq: u64,
    /// `AT^DDSETEX=2` seen since the last call ended.
    ddsetex: bool,
    store: BTreeMap<u32, StoredSms>,
    next_mr: u8,
    interleaves: VecDeque<Interleave>,
    periodic: Option<(String, Duration)>,
    periodic_gen: u64,
    tone: Option<Tone>,
    rssi: u8,
    log: ModemLog,
}

impl ModemModel {
    /// A modem just powered on (no boot URCs: nobody had the port open).
    pub fn new(config: ModemConfig) -> ModemModel {
        let profile = config.profile;
        let tone = config.tone;
        let rssi = config.rssi;
        let next_mr = u8::try_from(config.identity.imei.bytes().map(u32::from).sum::<u32>() % 200)
            .unwrap_or(0);
        ModemModel {
            config,
            settings: Settings::power_on(profile),
            power: Power::On,
            silent: false,
            hung: false,
            line: Vec::new(),
            line_overflow: false,
            sms_input: None,
            current: String::new(),
            out: VecDeque::new(),
            timers: Vec::new(),
            timer_order: 0,
            call: None,
            call_seq: 0,
            ddsetex: false,
            store: BTreeMap::new(),
            next_mr,
            interleaves: VecDeque::new(),
            periodic: None,
            periodic_gen: 0,
            tone,
            rssi,
            log: ModemLog::default(),
        }
    }

    // ------------------------------------------------------------ I/O

    /// Bytes the driver wrote to the AT port at `now`. Timers due by `now`
    /// fire first.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.handle_timeout(now);
        for &b in bytes {
            if !self.speaking() {
                // Off, rebooting, hung or silenced: the byte is lost.
                continue;
            }
            if self.sms_input.is_some() {
                self.sms_byte(b);
            } else {
                self.command_byte(b, now);
            }
        }
    }

    /// Fires every timer due by `now`, in time order.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(pos) = self
            .timers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.at <= now)
            .min_by_key(|(_, t)| (t.at, t.order))
            .map(|(i, _)| i)
        {
            let timer = self.timers.swap_remove(pos);
            self.fire(timer.event, timer.at);
        }
    }

    /// When [`ModemModel::handle_timeout`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.iter().map(|t| t.at).min()
    }

    /// The next thing to do: bytes for the AT port, or a port action.
    pub fn poll_output(&mut self) -> Option<ModelOutput> {
        self.out.pop_front()
    }

    /// The bytes queued before the next port action (or all of them),
    /// concatenated; the action stays queued.
    pub fn take_bytes(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        while let Some(ModelOutput::Bytes(b)) = self.out.front() {
            bytes.extend_from_slice(b);
            self.out.pop_front();
        }
        bytes
    }

    /// [`ModemModel::take_bytes`] as text (lossy).
    pub fn take_text(&mut self) -> String {
        String::from_utf8_lossy(&self.take_bytes()).into_owned()
    }

    /// Whether the voice port carries audio now: a call is active and its
    /// audio is routed to the voice port (Huawei `AT^DDSETEX=2`, Quectel
    /// `AT+QPCMV=1,0`).
    pub fn audio_active(&self) -> bool {
        let routed = match self.config.profile.vendor() {
            Vendor::Huawei => self.ddsetex,
            Vendor::Quectel => self.settings.qpcmv == Some(0),
        };
        self.power == Power::On
            && !self.hung
            && routed
            && self
                .call
                .as_ref()
                .is_some_and(|c| c.state == CallState::Active)
    }

    /// What the voice port plays during a call.
    pub fn tone(&self) -> Option<Tone> {
        self.tone
    }

    // ------------------------------------------------------------ observations

    /// The configuration it was started with.
    pub fn config(&self) -> &ModemConfig {
        &self.config
    }

    /// What it saw and did.
    pub fn log(&self) -> &ModemLog {
        &self.log
    }

    /// The call in progress.
    pub fn call(&self) -> Option<&VoiceCall> {
        self.call.as_ref()
    }

    /// The SMS store of the SIM, by index.
    pub fn stored_sms(&self) -> &BTreeMap<u32, StoredSms> {
        &self.store
    }

    /// Powered, rebooting or off.
    pub fn power(&self) -> Power {
        self.power
    }

    /// Whether the `AT+CHLD` trap hung it (only a power cycle helps).
    pub fn is_hung(&self) -> bool {
        self.hung
    }

    /// Whether echo (`ATE1`) is on.
    pub fn echo(&self) -> bool {
        self.settings.echo
    }

    // ------------------------------------------------------------ the network

    /// A call from `number` arrives: `RING` (and `+CLIP`) now and every
    /// [`super::config::Timings::ring_every`] until answered or cancelled.
    pub fn incoming_call(&mut self, number: &str, now: Instant) -> Result<(), InjectError> {
        self.handle_timeout(now);
        if !self.reachable() {
            return Err(InjectError::Unreachable);
        }
        if self.call.is_some() {
            return Err(InjectError::Busy);
        }
        let seq = self.new_call(Direction::Incoming, CallState::Incoming, number);
        self.ring(seq, now);
        Ok(())
    }

    /// The caller of a ringing call gives up, or the remote party of any
    /// call hangs up. Returns whether there was a call.
    pub fn remote_hangup(&mut self, now: Instant) -> bool {
        self.handle_timeout(now);
        match self.call.as_ref().map(|c| c.state) {
            None => false,
            Some(CallState::Incoming) => {
                self.end_call(EndCause::CallerCancelled, now);
                true
            }
            Some(_) => {
                self.end_call(EndCause::RemoteHangup, now);
                true
            }
        }
    }

    /// An SMS arrives as the PDU `pdu_hex` (SMSC prefix included). It is
    /// stored and announced by `+CMTI: "SM",<index>` (`AT+CNMI` mt=1, the
    /// default), or routed as `+CMT: ,<len>` + PDU (mt=2, not stored), or
    /// stored silently (mt=0). Returns the index, `None` when routed.
    pub fn incoming_sms(
        &mut self,
        pdu_hex: &str,
        now: Instant,
    ) -> Result<Option<u32>, InjectError> {
        self.handle_timeout(now);
        self.deliver_sms(pdu_hex)
    }

    /// The callee behaviour for calls dialled from now on.
    pub fn set_callee(&mut self, callee: Callee) {
        self.config.callee = callee;
    }

    /// The callee behaviour for `number`.
    pub fn set_callee_for(&mut self, number: &str, callee: Callee) {
        self.config.callees.retain(|(n, _)| n != number);
        self.config.callees.push((number.to_owned(), callee));
    }

    /// The answer to USSD requests from now on.
    pub fn set_ussd_answer(&mut self, answer: UssdAnswer) {
        self.config.ussd_answer = answer;
    }

    /// What the voice port plays from now on.
    pub fn set_tone(&mut self, tone: Option<Tone>) {
        self.tone = tone;
    }

    /// The RSSI `AT+CSQ` reports from now on.
    pub fn set_rssi(&mut self, rssi: u8) {
        self.rssi = rssi;
    }

    // ------------------------------------------------------------ faults

    /// Stops answering (input discarded, nothing emitted) until called
    /// with `false`.
    pub fn set_silent(&mut self, silent: bool) {
        self.silent = silent;
        if silent {
            self.line.clear();
        }
    }

    /// Writes garbage to the AT port now (unless off, rebooting or hung).
    pub fn inject_garbage(&mut self, garbage: &Garbage) {
        if self.power == Power::On && !self.hung {
            self.emit_raw(&garbage.bytes());
        }
    }

    /// Writes the URC `line` now (framed `\r\n…\r\n`).
    pub fn inject_urc(&mut self, line: &str) {
        self.emit_line(line);
    }

    /// Slips bytes into the next matching reply, once.
    pub fn interleave(&mut self, interleave: Interleave) {
        self.interleaves.push_back(interleave);
    }

    /// Enables or disables the `AT+CHLD=1x`-before-`^CONF` hang.
    pub fn set_chld_trap(&mut self, enabled: bool) {
        self.config.chld_trap = enabled;
    }

    /// Emits `line` every `every` (e.g. `^RSSI:15`, `^BOOT:…`) from `now`;
    /// `None` stops it.
    pub fn set_periodic_urc(&mut self, urc: Option<(String, Duration)>, now: Instant) {
        self.periodic_gen += 1;
        self.periodic = urc;
        if let Some((_, every)) = &self.periodic {
            let every = (*every).max(Duration::from_millis(1));
            self.schedule(now + every, TimerEvent::Periodic(self.periodic_gen));
        }
    }

    /// The USB device vanishes: the call drops, every timer is cancelled,
    /// and [`ModelOutput::Detach`] is queued.
    pub fn power_off(&mut self, now: Instant) {
        self.handle_timeout(now);
        if self.power == Power::Off {
            return;
        }
        self.drop_call(EndCause::PowerLoss, now);
        self.timers.clear();
        self.power = Power::Off;
        self.sms_input = None;
        self.line.clear();
        self.out.push_back(ModelOutput::Detach);
    }

    /// The USB device comes back ([`ModelOutput::Attach`]) freshly booted:
    /// settings reset, the hang cleared, boot URCs emitted. The SIM's SMS
    /// store survives.
    pub fn power_on(&mut self, now: Instant) {
        if self.power != Power::Off {
            return;
        }
        self.out.push_back(ModelOutput::Attach);
        self.boot(now);
    }

    /// [`ModemModel::power_off`] then [`ModemModel::power_on`].
    pub fn power_cycle(&mut self, now: Instant) {
        self.power_off(now);
        self.power_on(now);
    }

    // ------------------------------------------------------------ internals

    fn speaking(&self) -> bool {
        self.power == Power::On && !self.hung && !self.silent
    }

    fn reachable(&self) -> bool {
        self.power == Power::On && !self.hung && self.config.sim_present && self.settings.cfun == 1
    }

    fn schedule(&mut self, at: Instant, event: TimerEvent) {
        self.timer_order += 1;
        self.timers.push(Timer {
            at,
            order: self.timer_order,
            event,
        });
    }

    fn fire(&mut self, event: TimerEvent, at: Instant) {
        match event {
            TimerEvent::Orig(seq) => self.on_orig(seq),
            TimerEvent::Conf(seq) => self.on_conf(seq, at),
            TimerEvent::RemoteAnswer(seq) => self.on_remote_answer(seq, at),
            TimerEvent::RemoteEnd(seq, cause) => {
                if self.call.as_ref().is_some_and(|c| c.seq == seq) {
                    self.end_call(cause, at);
                }
            }
            TimerEvent::Ring(seq) => {
                if self
                    .call
                    .as_ref()
                    .is_some_and(|c| c.seq == seq && c.state == CallState::Incoming)
                {
                    self.ring(seq, at);
                }
            }
            TimerEvent::Ussd(line) => self.emit_line(&line),
            TimerEvent::Detach => self.out.push_back(ModelOutput::Detach),
            TimerEvent::Boot => {
                if self.config.reenumerate_on_reboot {
                    self.out.push_back(ModelOutput::Attach);
                }
                self.boot(at);
            }
            TimerEvent::Periodic(generation) => {
                if generation == self.periodic_gen
                    && let Some((line, every)) = self.periodic.clone()
                {
                    self.emit_line(&line);
                    let every = every.max(Duration::from_millis(1));
                    self.schedule(at + every, TimerEvent::Periodic(generation));
                }
            }
        }
    }

    /// Fresh settings, powered on, boot URCs.
    fn boot(&mut self, now: Instant) {
        self.settings = Settings::power_on(self.config.profile);
        self.power = Power::On;
        self.hung = false;
        self.line.clear();
        self.line_overflow = false;
        self.sms_input = None;
        self.ddsetex = false;
        self.log.boots += 1;
        let urcs: Vec<String> = match self.config.profile.vendor() {
            Vendor::Huawei => vec![format!("^BOOT:{},0,0,0,72", 20_952_548 + self.log.boots)],
            Vendor::Quectel => ["RDY", "+CFUN: 1", "+CPIN: READY", "+QIND: SMS DONE"]
                .map(str::to_owned)
                .to_vec(),
        };
        for urc in urcs {
            self.emit_line(&urc);
        }
        if let Some((_, every)) = &self.periodic {
            let every = (*every).max(Duration::from_millis(1));
            self.schedule(now + every, TimerEvent::Periodic(self.periodic_gen));
        }
    }

    /// `AT+CFUN=1,1`: `OK`, silence, maybe re-enumeration, boot.
    fn reboot(&mut self, now: Instant) {
        self.drop_call(EndCause::Reset, now);
        self.power = Power::Rebooting;
        self.sms_input = None;
        self.line.clear();
        let t = self.config.timings.clone();
        if self.config.reenumerate_on_reboot {
            self.schedule(now + t.detach_after_reboot, TimerEvent::Detach);
        }
        self.schedule(now + t.reboot.max(t.detach_after_reboot), TimerEvent::Boot);
    }

    fn command_byte(&mut self, b: u8, now: Instant) {
        match b {
            b'\r' | b'\n' => {
                if self.settings.echo {
                    self.emit_raw(&[b]);
                }
                let line = std::mem::take(&mut self.line);
                let overflow = std::mem::replace(&mut self.line_overflow, false);
                let text = String::from_utf8_lossy(&line).trim().to_owned();
                if overflow {
                    self.log_command(text);
                    self.reply(Vec::new(), "ERROR");
                } else if !text.is_empty() {
                    self.run_line(text, now);
                }
            }
            0x08 | 0x7F => {
                if self.line.pop().is_some() && self.settings.echo {
                    self.emit_raw(&[b]);
                }
            }
            0x00 | 0x1A | 0x1B => {}
            _ => {
                if self.settings.echo {
                    self.emit_raw(&[b]);
                }
                if self.line.len() < MAX_LINE {
                    self.line.push(b);
                } else {
                    self.line_overflow = true;
                }
            }
        }
    }

    fn log_command(&mut self, text: String) {
        if self.log.commands.len() >= MAX_LOGGED_COMMANDS {
            self.log.commands.pop_front();
        }
        self.log.commands.push_back(text);
    }

    fn run_line(&mut self, text: String, now: Instant) {
        self.log_command(text.clone());
        let is_at = text.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("AT"));
        if !is_at {
            // Real modems ignore lines that do not start with AT.
            return;
        }
        self.current = text.to_ascii_uppercase();
        let body = text.get(2..).unwrap_or("").trim();
        self.dispatch(body, now);
    }

    // ------------------------------------------------------------ output

    fn emit_raw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(ModelOutput::Bytes(last)) = self.out.back_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.out.push_back(ModelOutput::Bytes(bytes.to_vec()));
        }
    }

    /// A URC (or any unsolicited line), unless not speaking.
    fn emit_line(&mut self, line: &str) {
        if self.speaking() {
            self.emit_raw(format!("\r\n{line}\r\n").as_bytes());
        }
    }

    /// A command's reply: each information block (which may hold several
    /// lines, as `+CMGR` and its PDU), then the final result code, with a
    /// pending [`Interleave`] slipped in.
    fn reply(&mut self, info: Vec<String>, final_code: &str) {
        if !self.speaking() {
            return;
        }
        let interleave = self.take_interleave(!info.is_empty());
        let mut bytes = Vec::new();
        for (i, block) in info.iter().enumerate() {
            bytes.extend_from_slice(format!("\r\n{block}\r\n").as_bytes());
            if i == 0
                && let Some(il) = &interleave
                && il.at == InReply::AfterFirstLine
            {
                bytes.extend_from_slice(&il.bytes);
            }
        }
        if let Some(il) = &interleave
            && il.at == InReply::BeforeFinal
        {
            bytes.extend_from_slice(&il.bytes);
        }
        bytes.extend_from_slice(format!("\r\n{final_code}\r\n").as_bytes());
        self.emit_raw(&bytes);
    }

    fn take_interleave(&mut self, has_info: bool) -> Option<Interleave> {
        let current = &self.current;
        let pos = self.interleaves.iter().position(|il| {
            il.command
                .as_ref()
                .is_none_or(|c| current.starts_with(c.as_str()))
                && (has_info || il.at == InReply::BeforeFinal)
        })?;
        self.interleaves.remove(pos)
    }

    fn ok(&mut self) {
        self.reply(Vec::new(), "OK");
    }

    fn info_ok(&mut self, info: Vec<String>) {
        self.reply(info, "OK");
    }

    /// An equipment error as `AT+CMEE` says: `ERROR`, `+CME ERROR: <code>`
    /// or `+CME ERROR: <text>`.
    fn cme(&mut self, code: u16, text: &str) {
        let line = match self.settings.cmee {
            1 => format!("+CME ERROR: {code}"),
            2 => format!("+CME ERROR: {text}"),
            _ => "ERROR".to_owned(),
        };
        self.reply(Vec::new(), &line);
    }

    /// An SMS error: `+CMS ERROR: <code>` whatever `AT+CMEE` says.
    fn cms(&mut self, code: u16) {
        self.reply(Vec::new(), &format!("+CMS ERROR: {code}"));
    }

    /// An unknown command.
    fn unknown(&mut self) {
        self.cme(100, "unknown");
    }

    /// Bad parameters of a known command.
    fn bad_params(&mut self) {
        self.cme(50, "Incorrect parameters");
    }
}
