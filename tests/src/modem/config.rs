//! What a test (or the `modem-emulator` binary) chooses about one emulated
//! modem before it starts: profile, identity, operator, timings of call
//! progress, how the called party behaves, what USSD answers, the tone on
//! the voice port. Defaults live here, in one place.
//!
//! Owns plain data only. Never runs anything.

use std::time::Duration;

use super::identity::Identity;
use super::profile::Profile;

/// The network operator the modem is registered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Long alphanumeric name (`AT+COPS?` format 0).
    pub long_name: String,
    /// Short alphanumeric name (format 1).
    pub short_name: String,
    /// MCC+MNC (format 2).
    pub numeric: String,
}

impl Default for Operator {
    /// MTS Russia, as in the brief's example replies.
    fn default() -> Operator {
        Operator {
            long_name: "MTS RUS".to_owned(),
            short_name: "MTS".to_owned(),
            numeric: "25001".to_owned(),
        }
    }
}

/// How long things take on the emulated network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timings {
    /// `ATD` → `^ORIG` (Huawei).
    pub orig: Duration,
    /// `ATD` → `^CONF` (the remote party is alerted).
    pub conf: Duration,
    /// `RING` / `+CLIP` repeat period of an incoming call.
    pub ring_every: Duration,
    /// Alerting with nobody answering → the network ends the call (cause 19).
    pub no_answer: Duration,
    /// `AT+CUSD=1,…` → `+CUSD:` answer.
    pub ussd: Duration,
    /// `AT+CFUN=1,1` → the USB device disappears.
    pub detach_after_reboot: Duration,
    /// `AT+CFUN=1,1` → the modem is back (boot URCs).
    pub reboot: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            orig: Duration::from_millis(100),
            conf: Duration::from_millis(500),
            ring_every: Duration::from_secs(2),
            no_answer: Duration::from_secs(60),
            ussd: Duration::from_millis(500),
            detach_after_reboot: Duration::from_millis(50),
            reboot: Duration::from_secs(2),
        }
    }
}

/// How the party called with `ATD` behaves once alerted (`^CONF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callee {
    /// Answers `after` the alerting starts (`^CONN`), and hangs up itself
    /// `hangs_up_after` the answer when given (`^CEND` … cause 16).
    Answers {
        /// Ringing time before the answer.
        after: Duration,
        /// Talk time before the callee hangs up; `None`: never.
        hangs_up_after: Option<Duration>,
    },
    /// Busy `after` the alerting starts (`^CEND` … cause 17, or `BUSY`).
    Busy {
        /// Delay after `^CONF`.
        after: Duration,
    },
    /// Never answers; the network gives up after [`Timings::no_answer`]
    /// (cause 19).
    NeverAnswers,
}

impl Default for Callee {
    /// Answers after 2 s, talks until someone hangs up.
    fn default() -> Callee {
        Callee::Answers {
            after: Duration::from_secs(2),
            hangs_up_after: None,
        }
    }
}

/// The alphabet a USSD answer is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UssdAlphabet {
    /// GSM 7-bit, DCS 15 (Huawei sends it packed as hex).
    Gsm7,
    /// UCS-2, DCS 72 (hex of UTF-16BE).
    Ucs2,
}

/// What the network answers to a USSD request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UssdAnswer {
    /// A text, encoded as the make does (`+CUSD: 0,"<hex>",<dcs>`).
    Text {
        /// The text.
        text: String,
        /// Its alphabet.
        alphabet: UssdAlphabet,
    },
    /// This exact line instead of a well-formed answer (for faults).
    RawLine(String),
    /// No answer at all.
    Silence,
}

impl UssdAnswer {
    /// `text` in UCS-2 (how Russian operators answer `*100#`).
    pub fn ucs2(text: &str) -> UssdAnswer {
        UssdAnswer::Text {
            text: text.to_owned(),
            alphabet: UssdAlphabet::Ucs2,
        }
    }

    /// `text` in GSM 7-bit (ASCII-compatible characters only).
    pub fn gsm7(text: &str) -> UssdAnswer {
        UssdAnswer::Text {
            text: text.to_owned(),
            alphabet: UssdAlphabet::Gsm7,
        }
    }
}

impl Default for UssdAnswer {
    fn default() -> UssdAnswer {
        UssdAnswer::ucs2("Баланс: 100.00 руб.")
    }
}

/// A tone the voice port plays while a call is up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tone {
    /// Frequency in Hz (425 Hz is the European ring-back/dial tone).
    pub freq_hz: f64,
    /// Peak amplitude, 0–32767.
    pub amplitude: i16,
    /// A second frequency mixed in at the same amplitude (a DTMF key is a
    /// row and a column tone: `5` is 770 + 1336 Hz).
    pub also_hz: Option<f64>,
}

impl Default for Tone {
    fn default() -> Tone {
        Tone {
            freq_hz: 425.0,
            amplitude: 8_000,
            also_hz: None,
        }
    }
}

/// Everything chosen about one emulated modem.
#[derive(Debug, Clone, PartialEq)]
pub struct ModemConfig {
    /// Make and model.
    pub profile: Profile,
    /// IMEI, IMSI, ICCID, numbers.
    pub identity: Identity,
    /// Whether a SIM is inserted (`AT+CPIN?` → `+CME ERROR: 10` when not).
    pub sim_present: bool,
    /// The operator it is registered with.
    pub operator: Operator,
    /// `AT+CSQ` RSSI, 0–31 or 99.
    pub rssi: u8,
    /// Call progress, USSD and reboot timings.
    pub timings: Timings,
    /// How called parties behave unless [`ModemConfig::callees`] names them.
    pub callee: Callee,
    /// Per-number behaviour, exact match on the dialled number.
    pub callees: Vec<(String, Callee)>,
    /// The answer to any USSD request not in [`ModemConfig::ussd_answers`].
    pub ussd_answer: UssdAnswer,
    /// Per-request answers, exact match on the decoded request (`*100#`).
    pub ussd_answers: Vec<(String, UssdAnswer)>,
    /// SMS slots on the SIM (`AT+CPMS`).
    pub sms_capacity: u32,
    /// Whether `AT+CFUN=1,1` re-enumerates USB (the ptys vanish and come
    /// back under new paths), as real sticks do.
    pub reenumerate_on_reboot: bool,
    /// Whether `AT+CHLD=1x` before `^CONF` hangs the modem (default: the
    /// profile's [`Profile::has_chld_trap`]).
    pub chld_trap: bool,
    /// What the voice port plays during a call; `None`: silence.
    pub tone: Option<Tone>,
}

impl ModemConfig {
    /// The defaults for `profile` with `identity`.
    pub fn new(profile: Profile, identity: Identity) -> ModemConfig {
        ModemConfig {
            profile,
            identity,
            sim_present: true,
            operator: Operator::default(),
            rssi: 20,
            timings: Timings::default(),
            callee: Callee::default(),
            callees: Vec::new(),
            ussd_answer: UssdAnswer::default(),
            ussd_answers: Vec::new(),
            sms_capacity: 20,
            reenumerate_on_reboot: true,
            chld_trap: profile.has_chld_trap(),
            tone: Some(Tone::default()),
        }
    }

    /// The defaults for `profile`, identity 0 of seed 0.
    pub fn default_for(profile: Profile) -> ModemConfig {
        ModemConfig::new(profile, Identity::from_seed(0, 0, profile))
    }
}
