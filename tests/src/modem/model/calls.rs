//! Voice calls of the model: dialling (`ATD<number>;`) through `^ORIG`,
//! `^CONF`, the scripted callee's answer (`^CONN`) to `^CEND`; incoming
//! calls (`RING`, `+CLIP`, `ATA`); hanging up (`AT+CHUP`, `AT+CHLD`,
//! `AT+QHUP`, `ATH` on Quectel); DTMF; `AT+CLCC`; and the E1550 trap.
//!
//! Owns one call at a time (index 1). Never emits while not speaking (the
//! output helpers of the model enforce it).

use std::time::Instant;

use super::{ModemModel, TimerEvent};
use crate::modem::config::Callee;
use crate::modem::profile::Vendor;

/// Who placed a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Dialled with `ATD` (mobile originated).
    Outgoing,
    /// Came in from the network (mobile terminated).
    Incoming,
}

/// Where a call is (the `+CLCC` `<stat>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Outgoing, before `^CONF` (`+CLCC` stat 2).
    Dialing,
    /// Outgoing, the remote party is alerted (stat 3).
    Alerting,
    /// Talking (stat 0).
    Active,
    /// Incoming, ringing (stat 4).
    Incoming,
}

impl CallState {
    fn clcc_code(self) -> u8 {
        match self {
            CallState::Active => 0,
            CallState::Dialing => 2,
            CallState::Alerting => 3,
            CallState::Incoming => 4,
        }
    }
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// `AT+CHUP`, `AT+CHLD=1x`, `AT+QHUP`, `ATH` (Quectel) (cause 16).
    LocalHangup,
    /// The remote party hung up (cause 16).
    RemoteHangup,
    /// The callee was busy (cause 17).
    Busy,
    /// Nobody answered (cause 19).
    NoAnswer,
    /// The caller of a ringing incoming call gave up (cause 16).
    CallerCancelled,
    /// `ATZ`, `AT+CFUN` (cause 16).
    Reset,
    /// The modem hung (the `AT+CHLD` trap): no `^CEND`.
    ModemHung,
    /// The modem vanished: no `^CEND`.
    PowerLoss,
}

impl EndCause {
    /// The 24.008 cause `^CEND` reports.
    pub fn cc_cause(self) -> u16 {
        match self {
            EndCause::Busy => 17,
            EndCause::NoAnswer => 19,
            _ => 16,
        }
    }
}

/// The call in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceCall {
    /// The call index (`+CLCC`, `^CEND`, `AT+CHLD=1x`): always 1.
    pub index: u8,
    /// Who placed it.
    pub direction: Direction,
    /// Where it is.
    pub state: CallState,
    /// The remote number.
    pub number: String,
    pub(super) seq: u64,
    pub(super) connected_at: Option<Instant>,
}

/// A call that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Who placed it.
    pub direction: Direction,
    /// The remote number.
    pub number: String,
    /// Whether it was answered.
    pub answered: bool,
    /// Whole seconds from the answer to the end.
    pub duration_s: u32,
    /// Why it ended.
    pub cause: EndCause,
}

/// The type of address of `number`: 145 international, 129 otherwise.
fn toa(number: &str) -> u8 {
    if number.starts_with('+') { 145 } else { 129 }
}

impl ModemModel {
    pub(super) fn new_call(&mut self, direction: Direction, state: CallState, number: &str) -> u64 {
        self.call_seq += 1;
        self.call = Some(VoiceCall {
            index: 1,
            direction,
            state,
            number: number.to_owned(),
            seq: self.call_seq,
            connected_at: None,
        });
        self.call_seq
    }

    /// `ATD<rest>`.
    pub(super) fn dial(&mut self, rest: &str, now: Instant) {
        let Some(number) = rest.trim().strip_suffix(';') else {
            // A data call: not emulated.
            self.reply(Vec::new(), "NO CARRIER");
            return;
        };
        let digits = number.strip_prefix('+').unwrap_or(number);
        let valid = (1..=30).contains(&digits.len())
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#');
        if !valid {
            self.reply(Vec::new(), "ERROR");
            return;
        }
        if self.call.is_some() {
            self.cme(3, "operation not allowed");
            return;
        }
        if !self.reachable() {
            self.reply(Vec::new(), "NO CARRIER");
            return;
        }
        let seq = self.new_call(Direction::Outgoing, CallState::Dialing, number);
        self.ok();
        let t = self.config.timings.clone();
        if self.config.profile.is_huawei() {
            self.schedule(now + t.orig, TimerEvent::Orig(seq));
        }
        self.schedule(now + t.conf.max(t.orig), TimerEvent::Conf(seq));
    }

    pub(super) fn on_orig(&mut self, seq: u64) {
        if self.call.as_ref().is_some_and(|c| c.seq == seq) {
            self.emit_line("^ORIG:1,0");
        }
    }

    pub(super) fn on_conf(&mut self, seq: u64, at: Instant) {
        let Some(call) = self.call.as_mut().filter(|c| c.seq == seq) else {
            return;
        };
        call.state = CallState::Alerting;
        let number = call.number.clone();
        if self.config.profile.is_huawei() {
            self.emit_line("^CONF:1");
        }
        let callee = self
            .config
            .callees
            .iter()
            .find(|(n, _)| *n == number)
            .map_or(self.config.callee, |(_, c)| *c);
        match callee {
            Callee::Answers { after, .. } => {
                self.schedule(at + after, TimerEvent::RemoteAnswer(seq));
            }
            Callee::Busy { after } => {
                self.schedule(at + after, TimerEvent::RemoteEnd(seq, EndCause::Busy));
            }
            Callee::NeverAnswers => {
                let after = self.config.timings.no_answer;
                self.schedule(at + after, TimerEvent::RemoteEnd(seq, EndCause::NoAnswer));
            }
        }
    }

    pub(super) fn on_remote_answer(&mut self, seq: u64, at: Instant) {
        let Some(call) = self.call.as_mut().filter(|c| c.seq == seq) else {
            return;
        };
        call.state = CallState::Active;
        call.connected_at = Some(at);
        let number = call.number.clone();
        if self.config.profile.is_huawei() {
            self.emit_line("^CONN:1,0");
        }
        let callee = self
            .config
            .callees
            .iter()
            .find(|(n, _)| *n == number)
            .map_or(self.config.callee, |(_, c)| *c);
        if let Callee::Answers {
            hangs_up_after: Some(talk),
            ..
        } = callee
        {
            self.schedule(
                at + talk,
                TimerEvent::RemoteEnd(seq, EndCause::RemoteHangup),
            );
        }
    }

    /// `RING` and, when enabled, `+CLIP`; again after `ring_every`.
    pub(super) fn ring(&mut self, seq: u64, at: Instant) {
        let Some(number) = self.call.as_ref().map(|c| c.number.clone()) else {
            return;
        };
        self.emit_line("RING");
        if self.settings.clip {
            self.emit_line(&format!("+CLIP: \"{number}\",{},,,,0", toa(&number)));
        }
        let every = self.config.timings.ring_every;
        self.schedule(at + every, TimerEvent::Ring(seq));
    }

    /// `ATA`.
    pub(super) fn answer(&mut self, now: Instant) {
        match self.call.as_mut() {
            Some(call) if call.state == CallState::Incoming => {
                call.state = CallState::Active;
                call.connected_at = Some(now);
                self.ok();
                if self.config.profile.is_huawei() {
                    self.emit_line("^CONN:1,0");
                }
            }
            _ => self.reply(Vec::new(), "NO CARRIER"),
        }
    }

    /// `AT+CHUP`, `ATH` on Quectel: `OK`, then the end of the call.
    pub(super) fn hang_up(&mut self, now: Instant) {
        self.ok();
        if self.call.is_some() {
            self.end_call(EndCause::LocalHangup, now);
        }
    }

    /// `AT+CHLD=<arg>`.
    pub(super) fn chld(&mut self, arg: &str, now: Instant) {
        let index = arg.strip_prefix('1').filter(|r| !r.is_empty());
        match (arg, index) {
            (_, Some(index)) => {
                let Some(call) = self
                    .call
                    .as_ref()
                    .filter(|c| index.parse::<u8>().ok() == Some(c.index))
                else {
                    self.cme(3, "operation not allowed");
                    return;
                };
                if self.config.chld_trap
                    && call.direction == Direction::Outgoing
                    && call.state == CallState::Dialing
                {
                    // The E1550 trap: no reply, and nothing more until a
                    // power cycle.
                    self.drop_call(EndCause::ModemHung, now);
                    self.hung = true;
                    self.log.hangs += 1;
                    self.line.clear();
                    return;
                }
                self.hang_up(now);
            }
            ("1", None) => {
                let active = self
                    .call
                    .as_ref()
                    .is_some_and(|c| c.state == CallState::Active);
                self.ok();
                if active {
                    self.end_call(EndCause::LocalHangup, now);
                }
            }
            ("0", None) => {
                let ringing = self
                    .call
                    .as_ref()
                    .is_some_and(|c| c.state == CallState::Incoming);
                self.ok();
                if ringing {
                    self.end_call(EndCause::LocalHangup, now);
                }
            }
            ("2" | "3" | "4", None) => self.ok(),
            _ => self.bad_params(),
        }
    }

    /// `AT+QHUP=<cause>,<idx>` (Quectel).
    pub(super) fn qhup(&mut self, params: &[String], now: Instant) {
        let matches = match params.get(1) {
            None => self.call.is_some(),
            Some(idx) => self
                .call
                .as_ref()
                .is_some_and(|c| idx.parse::<u8>().ok() == Some(c.index)),
        };
        if matches {
            self.hang_up(now);
        } else {
            self.cme(3, "operation not allowed");
        }
    }

    /// A DTMF digit during an active call with index `index` (`None`: any).
    pub(super) fn dtmf(&mut self, index: Option<&str>, digit: &str) {
        let call_ok = self.call.as_ref().is_some_and(|c| {
            c.state == CallState::Active
                && index.is_none_or(|i| i.parse::<u8>().ok() == Some(c.index))
        });
        let mut chars = digit.chars();
        let d = match (chars.next(), chars.next()) {
            (Some(d), None) if d.is_ascii_digit() || "*#ABCDabcd".contains(d) => {
                d.to_ascii_uppercase()
            }
            _ => {
                self.bad_params();
                return;
            }
        };
        if !call_ok {
            self.cme(3, "operation not allowed");
            return;
        }
        self.log.dtmf.push(d);
        self.ok();
    }

    /// `AT+CLCC`.
    pub(super) fn clcc(&mut self) {
        let info = self
            .call
            .iter()
            .map(|c| {
                let dir = match c.direction {
                    Direction::Outgoing => 0,
                    Direction::Incoming => 1,
                };
                format!(
                    "+CLCC: {},{dir},{},0,0,\"{}\",{}",
                    c.index,
                    c.state.clcc_code(),
                    c.number,
                    toa(&c.number)
                )
            })
            .collect();
        self.info_ok(info);
    }

    /// Ends the call with its URC (`^CEND` on Huawei; `NO CARRIER` or
    /// `BUSY` on Quectel unless we hung up).
    pub(super) fn end_call(&mut self, cause: EndCause, now: Instant) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        let index = call.index;
        let duration = call
            .connected_at
            .map_or(0, |c| now.saturating_duration_since(c).as_secs());
        match self.config.profile.vendor() {
            Vendor::Huawei => {
                self.emit_line(&format!(
                    "^CEND:{index},{duration},104,{}",
                    cause.cc_cause()
                ));
            }
            Vendor::Quectel => match cause {
                EndCause::LocalHangup | EndCause::Reset => {}
                EndCause::Busy => self.emit_line("BUSY"),
                _ => self.emit_line("NO CARRIER"),
            },
        }
        self.drop_call(cause, now);
    }

    /// Forgets the call without a URC, recording how it ended.
    pub(super) fn drop_call(&mut self, cause: EndCause, now: Instant) {
        let Some(call) = self.call.take() else {
            return;
        };
        let duration = call
            .connected_at
            .map_or(0, |c| now.saturating_duration_since(c).as_secs());
        self.ddsetex = false;
        self.log.calls.push(CallRecord {
            direction: call.direction,
            number: call.number,
            answered: call.connected_at.is_some(),
            duration_s: u32::try_from(duration).unwrap_or(u32::MAX),
            cause,
        });
    }
}
