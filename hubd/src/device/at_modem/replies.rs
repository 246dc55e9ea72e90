//! Typed parsers of the information lines that commands answer with:
//! `+CSQ`, `+COPS?`, `+CREG?`, `+CLCC`, IMEI, IMSI, ICCID, `+CNUM`,
//! `+CGMI`/`+CGMM`/`+CGMR`, `^CVOICE`, `+CUSD`, `+CPIN`, `+CMGS`, `+CMGR`.
//!
//! Owns the meaning of each reply's parameters and their validation (IMEI
//! Luhn check, ICCID nibble order). Never decides which line belongs to which
//! command (that is [`super::parser`]) and never panics: every malformed line
//! is a [`ReplyError`].

use std::str::FromStr;

use super::fields::{self, FieldError, Param};

/// Why a reply line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The line is not the reply that was asked for.
    #[error("{line:?} is not a {expected} line")]
    WrongPrefix {
        /// The prefix looked for, e.g. `+CSQ`.
        expected: &'static str,
        /// The line.
        line: String,
    },
    /// The parameter list could not be split.
    #[error(transparent)]
    Fields(#[from] FieldError),
    /// A required parameter is missing.
    #[error("{reply}: parameter {field} is missing")]
    Missing {
        /// The reply, e.g. `+CLCC`.
        reply: &'static str,
        /// The parameter's name.
        field: &'static str,
    },
    /// A parameter does not have the expected form or range.
    #[error("{reply}: parameter {field} has a bad value {value:?}")]
    Invalid {
        /// The reply, e.g. `+CLCC`.
        reply: &'static str,
        /// The parameter's name.
        field: &'static str,
        /// What the modem sent.
        value: String,
    },
    /// None of the reply's lines carried the value.
    #[error("{reply}: no line of the reply carries it")]
    NoLine {
        /// The reply, e.g. `IMEI`.
        reply: &'static str,
    },
    /// An IMEI is not 15 digits or fails its Luhn check.
    #[error("IMEI {value:?}: {reason}")]
    BadImei {
        /// What the modem sent.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An IMSI is not 6 to 15 digits.
    #[error("IMSI {0:?} is not 6 to 15 digits")]
    BadImsi(String),
    /// An ICCID is not 18 to 22 digits (after undoing nibble swapping).
    #[error("ICCID {0:?} is not 18 to 22 digits")]
    BadIccid(String),
}

/// A parameter list with the reply's name for errors.
struct Params<'a> {
    reply: &'static str,
    list: Vec<Param<'a>>,
}

impl<'a> Params<'a> {
    fn parse(line: &'a str, prefix: &'static str) -> Result<Params<'a>, ReplyError> {
        let rest = fields::after_prefix(line, prefix).ok_or_else(|| ReplyError::WrongPrefix {
            expected: prefix,
            line: line.to_owned(),
        })?;
        Ok(Params {
            reply: prefix,
            list: fields::split(rest)?,
        })
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    /// The parameter at `i`, `None` when absent or omitted.
    fn get(&self, i: usize) -> Option<Param<'a>> {
        self.list.get(i).copied().filter(|p| !p.is_omitted())
    }

    fn text(&self, i: usize, field: &'static str) -> Result<&'a str, ReplyError> {
        self.get(i).map(|p| p.text).ok_or(ReplyError::Missing {
            reply: self.reply,
            field,
        })
    }

    fn opt_text(&self, i: usize) -> Option<&'a str> {
        self.get(i).map(|p| p.text)
    }

    fn num<T: FromStr>(&self, i: usize, field: &'static str) -> Result<T, ReplyError> {
        let text = self.text(i, field)?;
        text.parse().map_err(|_| self.invalid(field, text))
    }

    fn opt_num<T: FromStr>(&self, i: usize, field: &'static str) -> Result<Option<T>, ReplyError> {
        match self.get(i) {
            None => Ok(None),
            Some(p) => p
                .text
                .parse()
                .map(Some)
                .map_err(|_| self.invalid(field, p.text)),
        }
    }

    fn opt_hex(&self, i: usize, field: &'static str) -> Result<Option<u32>, ReplyError> {
        match self.get(i) {
            None => Ok(None),
            Some(p) if p.text.is_empty() => Ok(None),
            Some(p) => u32::from_str_radix(p.text, 16)
                .map(Some)
                .map_err(|_| self.invalid(field, p.text)),
        }
    }

    fn invalid(&self, field: &'static str, value: &str) -> ReplyError {
        ReplyError::Invalid {
            reply: self.reply,
            field,
            value: value.to_owned(),
        }
    }
}

// ---------------------------------------------------------------- +CSQ, ^RSSI

/// `+CSQ: <rssi>,<ber>`: signal quality as the modem grades it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalQuality {
    /// 0–31, or 99 for unknown.
    pub rssi: u8,
    /// Bit error rate class 0–7, or 99 for unknown.
    pub ber: u8,
}

impl SignalQuality {
    /// The received signal strength in dBm, `None` when unknown.
    pub fn dbm(&self) -> Option<i16> {
        rssi_to_dbm(self.rssi)
    }
}

/// 27.007's RSSI scale in dBm: 0 is -113 dBm or less, 31 is -51 dBm or more,
/// 2 dB a step; 99 (unknown) and anything out of range is `None`.
pub fn rssi_to_dbm(rssi: u8) -> Option<i16> {
    (rssi <= 31).then(|| -113 + 2 * i16::from(rssi))
}

/// Parses `+CSQ: <rssi>,<ber>`.
pub fn parse_csq(line: &str) -> Result<SignalQuality, ReplyError> {
    let p = Params::parse(line, "+CSQ")?;
    let rssi: u8 = p.num(0, "rssi")?;
    let ber: u8 = p.num(1, "ber")?;
    if rssi > 31 && rssi != 99 {
        return Err(p.invalid("rssi", &rssi.to_string()));
    }
    if ber > 7 && ber != 99 {
        return Err(p.invalid("ber", &ber.to_string()));
    }
    Ok(SignalQuality { rssi, ber })
}

// ---------------------------------------------------------------- +COPS?

/// `+COPS: <mode>[,<format>,<oper>[,<AcT>]]`: the selected operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// 0 automatic, 1 manual, 2 deregistered, 4 manual/automatic.
    pub mode: u8,
    /// 0 long alphanumeric, 1 short, 2 numeric (MCC+MNC).
    pub format: Option<u8>,
    /// The operator's name or code, when registered.
    pub name: Option<String>,
    /// Access technology (0 GSM, 2 UTRAN, 7 E-UTRAN…).
    pub access_technology: Option<u8>,
}

/// Parses the `AT+COPS?` reply.
pub fn parse_cops(line: &str) -> Result<Operator, ReplyError> {
    let p = Params::parse(line, "+COPS")?;
    Ok(Operator {
        mode: p.num(0, "mode")?,
        format: p.opt_num(1, "format")?,
        name: p.opt_text(2).map(str::to_owned),
        access_technology: p.opt_num(3, "AcT")?,
    })
}

// ---------------------------------------------------------------- +CREG

/// Network registration status (`<stat>` of `+CREG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegStatus {
    /// 0: not registered, not searching.
    NotRegistered,
    /// 1: registered on the home network.
    Home,
    /// 2: not registered, searching.
    Searching,
    /// 3: registration denied.
    Denied,
    /// 4: unknown.
    Unknown,
    /// 5: registered, roaming.
    Roaming,
    /// Any other value.
    Other(u8),
}

impl RegStatus {
    fn from_code(code: u8) -> RegStatus {
        match code {
            0 => RegStatus::NotRegistered,
            1 => RegStatus::Home,
            2 => RegStatus::Searching,
            3 => RegStatus::Denied,
            4 => RegStatus::Unknown,
            5 => RegStatus::Roaming,
            other => RegStatus::Other(other),
        }
    }

    /// Registered, at home or roaming.
    pub fn is_registered(self) -> bool {
        matches!(self, RegStatus::Home | RegStatus::Roaming)
    }
}

/// Where the modem is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The status.
    pub status: RegStatus,
    /// Location area code (hex in the reply).
    pub lac: Option<u32>,
    /// Cell id (hex in the reply).
    pub cell_id: Option<u32>,
    /// Access technology, when reported.
    pub access_technology: Option<u8>,
}

fn registration_from(p: &Params<'_>, first: usize) -> Result<Registration, ReplyError> {
    Ok(Registration {
        status: RegStatus::from_code(p.num(first, "stat")?),
        lac: p.opt_hex(first + 1, "lac")?,
        cell_id: p.opt_hex(first + 2, "ci")?,
        access_technology: p.opt_num(first + 3, "AcT")?,
    })
}

/// Parses the `AT+CREG?` reply, `+CREG: <n>,<stat>[,<lac>,<ci>[,<AcT>]]`;
/// returns `<n>` (the URC mode) and the registration.
pub fn parse_creg_read(line: &str) -> Result<(u8, Registration), ReplyError> {
    let p = Params::parse(line, "+CREG")?;
    let n = p.num(0, "n")?;
    Ok((n, registration_from(&p, 1)?))
}

/// Parses the unsolicited `+CREG: <stat>[,<lac>,<ci>[,<AcT>]]`.
pub fn parse_creg_urc(line: &str) -> Result<Registration, ReplyError> {
    let p = Params::parse(line, "+CREG")?;
    registration_from(&p, 0)
}

// ---------------------------------------------------------------- +CLCC

/// Who placed a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDirection {
    /// 0: we dialled.
    MobileOriginated,
    /// 1: it came in.
    MobileTerminated,
}

/// A call's state in `+CLCC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// 0: active.
    Active,
    /// 1: held.
    Held,
    /// 2: dialling (MO).
    Dialing,
    /// 3: alerting the remote party (MO).
    Alerting,
    /// 4: incoming, ringing (MT).
    Incoming,
    /// 5: waiting (MT).
    Waiting,
}

/// A call's bearer in `+CLCC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMode {
    /// 0: voice.
    Voice,
    /// 1: data.
    Data,
    /// 2: fax.
    Fax,
    /// Any other value.
    Other(u8),
}

/// One line of `AT+CLCC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The call index (used by `AT+CHLD`, `AT^DTMF`, `^CEND`).
    pub index: u8,
    /// Who placed it.
    pub direction: CallDirection,
    /// Its state.
    pub state: CallState,
    /// Its bearer.
    pub mode: CallMode,
    /// Part of a conference.
    pub multiparty: bool,
    /// The remote number, when known.
    pub number: Option<String>,
    /// The number's type of address (129 national/unknown, 145 international).
    pub number_type: Option<u8>,
}

/// Parses one `+CLCC: <idx>,<dir>,<stat>,<mode>,<mpty>[,<number>,<type>…]` line.
pub fn parse_clcc(line: &str) -> Result<Call, ReplyError> {
    let p = Params::parse(line, "+CLCC")?;
    let direction = match p.num::<u8>(1, "dir")? {
        0 => CallDirection::MobileOriginated,
        1 => CallDirection::MobileTerminated,
        other => return Err(p.invalid("dir", &other.to_string())),
    };
    let state = match p.num::<u8>(2, "stat")? {
        0 => CallState::Active,
        1 => CallState::Held,
        2 => CallState::Dialing,
        3 => CallState::Alerting,
        4 => CallState::Incoming,
        5 => CallState::Waiting,
        other => return Err(p.invalid("stat", &other.to_string())),
    };
    let mode = match p.num::<u8>(3, "mode")? {
        0 => CallMode::Voice,
        1 => CallMode::Data,
        2 => CallMode::Fax,
        other => CallMode::Other(other),
    };
    let multiparty = match p.num::<u8>(4, "mpty")? {
        0 => false,
        1 => true,
        other => return Err(p.invalid("mpty", &other.to_string())),
    };
    Ok(Call {
        index: p.num(0, "idx")?,
        direction,
        state,
        mode,
        multiparty,
        number: p.opt_text(5).filter(|n| !n.is_empty()).map(str::to_owned),
        number_type: p.opt_num(6, "type")?,
    })
}

/// Parses every `+CLCC` line of an `AT+CLCC` reply (other lines are skipped).
pub fn parse_clcc_list(info: &[String]) -> Result<Vec<Call>, ReplyError> {
    info.iter()
        .filter(|l| fields::after_prefix(l, "+CLCC").is_some())
        .map(|l| parse_clcc(l))
        .collect()
}

// ---------------------------------------------------------------- identities

/// A validated IMEI: 15 digits with a correct Luhn check digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Imei(String);

impl Imei {
    /// Validates `s` as an IMEI.
    pub fn parse(s: &str) -> Result<Imei, ReplyError> {
        let bad = |reason| ReplyError::BadImei {
            value: s.to_owned(),
            reason,
        };
        if s.len() != 15 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("not 15 digits"));
        }
        if !luhn_valid(s) {
            return Err(bad("Luhn check digit is wrong"));
        }
        Ok(Imei(s.to_owned()))
    }

    /// The 15 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether the digit string `digits` passes the Luhn check (its last digit
/// is the check digit). Non-digits fail.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// The value of an identity reply line: the text after one of `prefixes`
/// (if present), without quotes and blanks.
fn identity_value<'a>(line: &'a str, prefixes: &[&str]) -> &'a str {
    let rest = prefixes
        .iter()
        .find_map(|p| fields::after_prefix(line, p))
        .unwrap_or(line);
    rest.trim().trim_matches('"').trim()
}

fn first_value<'a>(info: &'a [String], prefixes: &[&str]) -> Option<&'a str> {
    info.iter()
        .map(|l| identity_value(l, prefixes))
        .find(|v| !v.is_empty())
}

/// Parses the `AT+CGSN` reply: a bare IMEI or `+CGSN: <imei>`.
pub fn parse_imei(info: &[String]) -> Result<Imei, ReplyError> {
    let value = first_value(info, &["+CGSN"]).ok_or(ReplyError::NoLine { reply: "IMEI" })?;
    Imei::parse(value)
}

/// Parses the `AT+CIMI` reply: a bare IMSI (or `+CIMI: <imsi>`), 6–15 digits.
pub fn parse_imsi(info: &[String]) -> Result<String, ReplyError> {
    let value = first_value(info, &["+CIMI"]).ok_or(ReplyError::NoLine { reply: "IMSI" })?;
    if !(6..=15).contains(&value.len()) || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ReplyError::BadImsi(value.to_owned()));
    }
    Ok(value.to_owned())
}

/// Parses an ICCID reply: Huawei `^ICCID: …`, Quectel `+QCCID: …`, `+CCID: …`,
/// `+ICCID: …` or a bare value. Huawei reports the SIM's raw bytes, so each
/// pair of digits comes swapped (`98…` instead of `89…`); a value starting
/// with `98` is swapped back and its `F` padding dropped.
pub fn parse_iccid(info: &[String]) -> Result<String, ReplyError> {
    let value = first_value(info, &["^ICCID", "+QCCID", "+CCID", "+ICCID"])
        .ok_or(ReplyError::NoLine { reply: "ICCID" })?;
    let normal = if value.starts_with("98") {
        let bytes = value.as_bytes();
        let mut swapped = String::with_capacity(bytes.len());
        for pair in bytes.chunks(2) {
            if let [a, b] = pair {
                swapped.push(char::from(*b));
                swapped.push(char::from(*a));
            } else {
                swapped.extend(pair.iter().map(|&b| char::from(b)));
            }
        }
        swapped
    } else {
        value.to_owned()
    };
    let normal = normal.trim_end_matches(['F', 'f']);
    if !(18..=22).contains(&normal.len()) || !normal.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ReplyError::BadIccid(value.to_owned()));
    }
    Ok(normal.to_owned())
}

/// One subscriber number from `AT+CNUM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnNumber {
    /// The label stored on the SIM, if any.
    pub alpha: Option<String>,
    /// The number.
    pub number: String,
    /// Its type of address (129, 145…).
    pub number_type: Option<u8>,
}

/// Parses `+CNUM: [<alpha>],<number>,<type>[,…]`.
pub fn parse_cnum(line: &str) -> Result<OwnNumber, ReplyError> {
    let p = Params::parse(line, "+CNUM")?;
    Ok(OwnNumber {
        alpha: p.opt_text(0).filter(|a| !a.is_empty()).map(str::to_owned),
        number: p.text(1, "number")?.to_owned(),
        number_type: p.opt_num(2, "type")?,
    })
}

/// Parses the reply of `AT+CGMI`, `AT+CGMM` or `AT+CGMR`: a bare value or
/// `<prefix>: <value>` (quotes removed). `prefix` is `+CGMI`, `+CGMM` or `+CGMR`.
pub fn parse_identity(info: &[String], prefix: &'static str) -> Result<String, ReplyError> {
    first_value(info, &[prefix])
        .map(str::to_owned)
        .ok_or(ReplyError::NoLine { reply: prefix })
}

// ---------------------------------------------------------------- ^CVOICE

/// Huawei's voice-port audio format, `^CVOICE: <mode>,<rate>,<bits>,<period>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoiceFormat {
    /// 0: voice over the serial port enabled.
    pub mode: u8,
    /// Samples per second (8000).
    pub sample_rate_hz: u32,
    /// Bits per sample (16).
    pub bits: u8,
    /// Frame period in ms (20).
    pub frame_ms: u8,
}

impl VoiceFormat {
    /// Bytes in one frame (320 for 8 kHz, 16 bit, 20 ms).
    pub fn frame_bytes(&self) -> u32 {
        self.sample_rate_hz * u32::from(self.frame_ms) / 1000 * u32::from(self.bits / 8)
    }
}

/// Parses `^CVOICE:<mode>,<rate>,<bits>,<period>`.
pub fn parse_cvoice(line: &str) -> Result<VoiceFormat, ReplyError> {
    let p = Params::parse(line, "^CVOICE")?;
    let format = VoiceFormat {
        mode: p.num(0, "mode")?,
        sample_rate_hz: p.num(1, "sampling_rate")?,
        bits: p.num(2, "data_bit")?,
        frame_ms: p.num(3, "frame_period")?,
    };
    if !(1000..=48_000).contains(&format.sample_rate_hz) {
        return Err(p.invalid("sampling_rate", &format.sample_rate_hz.to_string()));
    }
    if format.bits != 8 && format.bits != 16 {
        return Err(p.invalid("data_bit", &format.bits.to_string()));
    }
    if !(1..=100).contains(&format.frame_ms) {
        return Err(p.invalid("frame_period", &format.frame_ms.to_string()));
    }
    Ok(format)
}

// ---------------------------------------------------------------- +CUSD

/// What a `+CUSD` says about the USSD session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UssdStatus {
    /// 0: no further user action required (the session ended).
    Done,
    /// 1: further user action required (the network waits for a reply).
    ActionRequired,
    /// 2: the network terminated the session.
    TerminatedByNetwork,
    /// 3: another local client answered.
    OtherClient,
    /// 4: operation not supported.
    NotSupported,
    /// 5: the network timed out.
    NetworkTimeout,
    /// Any other value.
    Other(u8),
}

/// A `+CUSD: <m>[,<str>,<dcs>]` line; decode `text` with
/// [`super::pdu::ussd::decode_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UssdReply {
    /// The session status.
    pub status: UssdStatus,
    /// The text as the modem sent it (packed hex, UCS-2 hex or plain).
    pub text: Option<String>,
    /// The data coding scheme (CBS coding, 15 = GSM 7-bit, 72 = UCS-2).
    pub dcs: Option<u8>,
}

/// Parses `+CUSD: <m>[,"<str>"[,<dcs>]]`.
pub fn parse_cusd(line: &str) -> Result<UssdReply, ReplyError> {
    let p = Params::parse(line, "+CUSD")?;
    let status = match p.num::<u8>(0, "m")? {
        0 => UssdStatus::Done,
        1 => UssdStatus::ActionRequired,
        2 => UssdStatus::TerminatedByNetwork,
        3 => UssdStatus::OtherClient,
        4 => UssdStatus::NotSupported,
        5 => UssdStatus::NetworkTimeout,
        other => UssdStatus::Other(other),
    };
    Ok(UssdReply {
        status,
        text: p.opt_text(1).map(str::to_owned),
        dcs: p.opt_num(2, "dcs")?,
    })
}

// ---------------------------------------------------------------- SIM, SMS

/// The SIM's state from `AT+CPIN?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimStatus {
    /// `READY`: no PIN needed.
    Ready,
    /// `SIM PIN`: the PIN must be entered.
    PinRequired,
    /// `SIM PUK`: the SIM is blocked until its PUK is entered.
    PukRequired,
    /// Anything else (`PH-SIM PIN`, `SIM PIN2`…).
    Other(String),
}

/// Parses `+CPIN: <code>`.
pub fn parse_cpin(line: &str) -> Result<SimStatus, ReplyError> {
    let p = Params::parse(line, "+CPIN")?;
    let code = p.text(0, "code")?;
    Ok(match code.to_ascii_uppercase().as_str() {
        "READY" => SimStatus::Ready,
        "SIM PIN" => SimStatus::PinRequired,
        "SIM PUK" => SimStatus::PukRequired,
        _ => SimStatus::Other(code.to_owned()),
    })
}

/// Parses `+CMGS: <mr>`, the message reference of a sent SMS.
pub fn parse_cmgs(line: &str) -> Result<u8, ReplyError> {
    Params::parse(line, "+CMGS")?.num(0, "mr")
}

/// An SMS read with `AT+CMGR=<index>` in PDU mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSms {
    /// 0 received unread, 1 received read, 2 stored unsent, 3 stored sent.
    pub status: u8,
    /// TPDU length in octets (the PDU line also carries the SMSC prefix).
    pub tpdu_len: u16,
    /// The PDU as hex, SMSC prefix included.
    pub pdu: String,
}

/// Parses the `AT+CMGR` reply in PDU mode: `+CMGR: <stat>,[<alpha>],<length>`
/// then the PDU line.
pub fn parse_cmgr(info: &[String]) -> Result<StoredSms, ReplyError> {
    let at = info
        .iter()
        .position(|l| fields::after_prefix(l, "+CMGR").is_some())
        .ok_or(ReplyError::NoLine { reply: "+CMGR" })?;
    let p = Params::parse(&info[at], "+CMGR")?;
    let pdu = info.get(at + 1).ok_or(ReplyError::Missing {
        reply: "+CMGR",
        field: "pdu",
    })?;
    if pdu.is_empty() || !pdu.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(p.invalid("pdu", pdu));
    }
    Ok(StoredSms {
        status: p.num(0, "stat")?,
        tpdu_len: p.num(if p.len() >= 3 { 2 } else { 1 }, "length")?,
        pdu: pdu.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(ls: &[&str]) -> Vec<String> {
        ls.iter().map(|l| (*l).to_owned()).collect()
    }

    /// Runs `parse` on `input` and compares the Debug rendering (or the error's
    /// message) with `expect`.
    fn check<T: std::fmt::Debug>(
        parse: impl Fn(&str) -> Result<T, ReplyError>,
        input: &str,
        expect: &str,
    ) {
        let got = match parse(input) {
            Ok(v) => format!("{v:?}"),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expect, "input {input:?}");
    }

    #[test]
    fn csq() {
        check(
            parse_csq,
            "+CSQ: 20,99",
            "SignalQuality { rssi: 20, ber: 99 }",
        );
        check(parse_csq, "+CSQ:31,0", "SignalQuality { rssi: 31, ber: 0 }");
        check(
            parse_csq,
            "+CSQ: 99,99",
            "SignalQuality { rssi: 99, ber: 99 }",
        );
        check(
            parse_csq,
            "+CSQ: 40,99",
            r#"error: +CSQ: parameter rssi has a bad value "40""#,
        );
        check(
            parse_csq,
            "+CSQ: 20",
            "error: +CSQ: parameter ber is missing",
        );
        check(
            parse_csq,
            "+CSQ: x,1",
            r#"error: +CSQ: parameter rssi has a bad value "x""#,
        );
        check(
            parse_csq,
            "+CSQ: 300,1",
            r#"error: +CSQ: parameter rssi has a bad value "300""#,
        );
        check(
            parse_csq,
            "^RSSI:20",
            r#"error: "^RSSI:20" is not a +CSQ line"#,
        );
        assert_eq!(
            parse_csq("+CSQ: 20,99").ok().and_then(|q| q.dbm()),
            Some(-73)
        );
        assert_eq!(rssi_to_dbm(0), Some(-113));
        assert_eq!(rssi_to_dbm(31), Some(-51));
        assert_eq!(rssi_to_dbm(99), None);
    }

    #[test]
    fn cops_and_creg() {
        check(
            parse_cops,
            r#"+COPS: 0,0,"MegaFon",2"#,
            r#"Operator { mode: 0, format: Some(0), name: Some("MegaFon"), access_technology: Some(2) }"#,
        );
        check(
            parse_cops,
            "+COPS: 0",
            "Operator { mode: 0, format: None, name: None, access_technology: None }",
        );
        check(
            parse_cops,
            r#"+COPS: "x"#,
            r#"error: unterminated quoted string in "\"x""#,
        );
        check(
            parse_creg_read,
            r#"+CREG: 2,1,"00C3","0010""#,
            "(2, Registration { status: Home, lac: Some(195), cell_id: Some(16), access_technology: None })",
        );
        check(
            parse_creg_read,
            "+CREG: 0,5",
            "(0, Registration { status: Roaming, lac: None, cell_id: None, access_technology: None })",
        );
        check(
            parse_creg_urc,
            r#"+CREG: 1,"00C3","1A2B3C4",2"#,
            "Registration { status: Home, lac: Some(195), cell_id: Some(27440068), access_technology: Some(2) }",
        );
        check(
            parse_creg_urc,
            r#"+CREG: 1,"ZZ","1""#,
            r#"error: +CREG: parameter lac has a bad value "ZZ""#,
        );
        check(
            parse_creg_read,
            "+CREG: 2",
            "error: +CREG: parameter stat is missing",
        );
    }

    #[test]
    fn clcc() {
        check(
            parse_clcc,
            r#"+CLCC: 1,0,3,0,0,"+79161234567",145"#,
            r#"Call { index: 1, direction: MobileOriginated, state: Alerting, mode: Voice, multiparty: false, number: Some("+79161234567"), number_type: Some(145) }"#,
        );
        check(
            parse_clcc,
            "+CLCC: 2,1,4,0,0",
            "Call { index: 2, direction: MobileTerminated, state: Incoming, mode: Voice, multiparty: false, number: None, number_type: None }",
        );
        check(
            parse_clcc,
            "+CLCC: 1,2,0,0,0",
            r#"error: +CLCC: parameter dir has a bad value "2""#,
        );
        check(
            parse_clcc,
            "+CLCC: 1,0,9,0,0",
            r#"error: +CLCC: parameter stat has a bad value "9""#,
        );
        check(
            parse_clcc,
            "+CLCC: 1,0,0,0",
            "error: +CLCC: parameter mpty is missing",
        );
        check(
            parse_clcc,
            "+CLCC: 1,0,0,0,7",
            r#"error: +CLCC: parameter mpty has a bad value "7""#,
        );
        let calls = parse_clcc_list(&lines(&["+CLCC: 1,0,0,0,0,\"1\",129", "+CLCC: 2,1,5,0,0"]));
        assert_eq!(calls.map(|c| c.len()), Ok(2));
        assert!(parse_clcc_list(&lines(&["+CLCC: 1"])).is_err());
    }

    #[test]
    fn identities() {
        let imei = |ls: &[&str]| match parse_imei(&lines(ls)) {
            Ok(i) => i.as_str().to_owned(),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(imei(&["490154203237518"]), "490154203237518");
        assert_eq!(imei(&["+CGSN: \"490154203237518\""]), "490154203237518");
        assert_eq!(
            imei(&["490154203237517"]),
            r#"error: IMEI "490154203237517": Luhn check digit is wrong"#
        );
        assert_eq!(
            imei(&["49015420323751"]),
            r#"error: IMEI "49015420323751": not 15 digits"#
        );
        assert_eq!(
            imei(&["49015420323751X"]),
            r#"error: IMEI "49015420323751X": not 15 digits"#
        );
        assert_eq!(imei(&[]), "error: IMEI: no line of the reply carries it");
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid(""));

        assert_eq!(
            parse_imsi(&lines(&["250026912345678"])),
            Ok("250026912345678".to_owned())
        );
        assert_eq!(
            parse_imsi(&lines(&["25002691234567890"])),
            Err(ReplyError::BadImsi("25002691234567890".to_owned()))
        );

        let iccid = |ls: &[&str]| parse_iccid(&lines(ls)).unwrap_or_else(|e| format!("error: {e}"));
        assert_eq!(
            iccid(&["^ICCID: 98700100000012345678"]),
            "89071000000021436587"
        );
        assert_eq!(
            iccid(&["^ICCID: \"987001000000123456F7\""]),
            "8907100000002143657"
        );
        assert_eq!(
            iccid(&["+QCCID: 89860318760278036517"]),
            "89860318760278036517"
        );
        assert_eq!(
            iccid(&["+CCID: \"8901260882207329877\""]),
            "8901260882207329877"
        );
        assert_eq!(iccid(&["89860318760278036517"]), "89860318760278036517");
        assert_eq!(
            iccid(&["+CCID: 12"]),
            r#"error: ICCID "12" is not 18 to 22 digits"#
        );
        assert_eq!(
            iccid(&["^ICCID: 98ZZ"]),
            r#"error: ICCID "98ZZ" is not 18 to 22 digits"#
        );

        check(
            parse_cnum,
            r#"+CNUM: "","+79161234567",145"#,
            r#"OwnNumber { alpha: None, number: "+79161234567", number_type: Some(145) }"#,
        );
        check(
            parse_cnum,
            r#"+CNUM: "Own""#,
            "error: +CNUM: parameter number is missing",
        );
        assert_eq!(
            parse_identity(&lines(&["huawei"]), "+CGMI"),
            Ok("huawei".to_owned())
        );
        assert_eq!(
            parse_identity(&lines(&["+CGMM: \"EC25\""]), "+CGMM"),
            Ok("EC25".to_owned())
        );
        assert_eq!(
            parse_identity(&lines(&["", " "]), "+CGMR"),
            Err(ReplyError::NoLine { reply: "+CGMR" })
        );
    }

    #[test]
    fn cvoice_cusd_cpin_cmgs_cmgr() {
        check(
            parse_cvoice,
            "^CVOICE:0,8000,16,20",
            "VoiceFormat { mode: 0, sample_rate_hz: 8000, bits: 16, frame_ms: 20 }",
        );
        assert_eq!(
            parse_cvoice("^CVOICE:0,8000,16,20").map(|f| f.frame_bytes()),
            Ok(320)
        );
        check(
            parse_cvoice,
            "^CVOICE:0,8000,12,20",
            r#"error: ^CVOICE: parameter data_bit has a bad value "12""#,
        );
        check(
            parse_cvoice,
            "^CVOICE:0,0,16,20",
            r#"error: ^CVOICE: parameter sampling_rate has a bad value "0""#,
        );
        check(
            parse_cusd,
            r#"+CUSD: 0,"AA180C3602",15"#,
            r#"UssdReply { status: Done, text: Some("AA180C3602"), dcs: Some(15) }"#,
        );
        check(
            parse_cusd,
            "+CUSD: 4",
            "UssdReply { status: NotSupported, text: None, dcs: None }",
        );
        check(
            parse_cusd,
            r#"+CUSD: 1,"x",300"#,
            r#"error: +CUSD: parameter dcs has a bad value "300""#,
        );
        check(parse_cpin, "+CPIN: READY", "Ready");
        check(parse_cpin, "+CPIN: SIM PIN", "PinRequired");
        check(parse_cpin, "+CPIN: PH-SIM PIN", r#"Other("PH-SIM PIN")"#);
        check(parse_cmgs, "+CMGS: 12", "12");
        check(
            parse_cmgs,
            "+CMGS: -1",
            r#"error: +CMGS: parameter mr has a bad value "-1""#,
        );
        assert_eq!(
            parse_cmgr(&lines(&["+CMGR: 0,,24", "0791AB"])),
            Ok(StoredSms {
                status: 0,
                tpdu_len: 24,
                pdu: "0791AB".to_owned()
            })
        );
        assert!(parse_cmgr(&lines(&["+CMGR: 0,,24"])).is_err());
        assert!(parse_cmgr(&lines(&["+CMGR: 0,,24", "XYZ"])).is_err());
        assert!(parse_cmgr(&lines(&["OK"])).is_err());
    }
}
