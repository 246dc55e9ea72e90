//! A command as the engine queues it: its text, its timeout, the prefixes of
//! the information lines it expects, and for `AT+CMGS` the PDU sent after the
//! `> ` prompt.
//!
//! Owns command validation (printable ASCII only, so a number or USSD string
//! can never smuggle a `\r` and a second command onto the wire) and the
//! default timeouts. Never sends anything. `AT+CHLD=1<idx>` cannot be built
//! from text: only [`super::profile::ModemProfile::release_call`] makes it,
//! from a [`super::calls::ConfirmedCall`] (the E1550 trap).

use std::fmt;
use std::time::Duration;

use super::pdu::PduPart;
use super::urc;

/// Identifies a submitted command in the engine's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(u64);

impl CommandId {
    pub(super) fn new(n: u64) -> CommandId {
        CommandId(n)
    }

    /// The number, unique within one engine.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Most commands answer at once.
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(2);
/// `ATZ`: a profile reset takes a moment.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(5);
/// SIM and message-storage access (`+CMGR`, `+CMGD`, `+CMGL`, `+CPMS`, `+CNUM`,
/// `+CPIN=`): slow SIMs take seconds.
pub const SIM_TIMEOUT: Duration = Duration::from_secs(10);
/// Call control (`ATD`, `ATA`, `AT+CHUP`, `AT+QHUP`, `ATH`, `AT+CHLD`): the
/// field notes' trap is a 2 s `ATA` timeout.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// `AT+CUSD`: the network answers a USSD request slowly.
pub const USSD_TIMEOUT: Duration = Duration::from_secs(30);
/// `AT+CMGS`: sending an SMS.
pub const SMS_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// `AT+CFUN=…` (including the `AT+CFUN=1,1` reboot).
pub const CFUN_TIMEOUT: Duration = Duration::from_secs(30);
/// `AT+COPS=?` (network scan) and `AT+COPS=<mode>…` (selection).
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(180);

/// The longest command line accepted.
pub const MAX_COMMAND_LEN: usize = 512;

/// Why a command text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The text does not start with `AT`.
    #[error("command {0:?} does not start with AT")]
    NotAt(String),
    /// The text holds a byte that is not printable ASCII (`\r`, `\n`, Ctrl-Z…).
    #[error("command {text:?} holds byte 0x{byte:02x} at {position}; only printable ASCII is sent")]
    ForbiddenByte {
        /// The command.
        text: String,
        /// The offending byte.
        byte: u8,
        /// Its offset.
        position: usize,
    },
    /// The text is longer than [`MAX_COMMAND_LEN`].
    #[error("command is {len} bytes, more than {MAX_COMMAND_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// `AT+CHLD=1<idx>` must come from a confirmed call (the E1550 stops
    /// answering if it is sent before `^CONF`).
    #[error(
        "{0:?} releases one call: build it with ModemProfile::release_call from a ConfirmedCall"
    )]
    ChldNeedsConfirmedCall(String),
    /// `AT+CMGS=<len>` needs its PDU: build it with [`Command::sms_submit`].
    #[error("{0:?} sends an SMS: build it with Command::sms_submit")]
    CmgsNeedsPdu(String),
}

/// One AT command, ready to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    text: String,
    timeout: Duration,
    payload: Option<String>,
    info_prefixes: Vec<String>,
    call_results_final: bool,
}

impl Command {
    /// A command from its text (without the trailing `\r`), with the default
    /// timeout and expected information prefix for that text.
    pub fn new(text: impl Into<String>) -> Result<Command, CommandError> {
        let text = text.into();
        if text.len() > MAX_COMMAND_LEN {
            return Err(CommandError::TooLong { len: text.len() });
        }
        if let Some((position, &byte)) = text
            .as_bytes()
            .iter()
            .enumerate()
            .find(|(_, b)| !(0x20..0x7F).contains(*b))
        {
            return Err(CommandError::ForbiddenByte {
                text,
                byte,
                position,
            });
        }
        let upper = text.to_ascii_uppercase();
        if !upper.starts_with("AT") {
            return Err(CommandError::NotAt(text));
        }
        if let Some(rest) = upper.strip_prefix("AT+CHLD=1")
            && rest.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(CommandError::ChldNeedsConfirmedCall(text));
        }
        if upper.starts_with("AT+CMGS=") && !upper.starts_with("AT+CMGS=?") {
            return Err(CommandError::CmgsNeedsPdu(text));
        }
        Ok(Command::trusted(text))
    }

    /// A command whose text this module built itself (already printable
    /// ASCII); skips the guards of [`Command::new`].
    pub(super) fn trusted(text: String) -> Command {
        let upper = text.to_ascii_uppercase();
        let mut info_prefixes: Vec<String> = derived_prefix(&upper).into_iter().collect();
        if upper.starts_with("AT+CCID") {
            info_prefixes.push("+ICCID".to_owned());
        }
        Command {
            timeout: default_timeout(&upper),
            call_results_final: upper.starts_with("ATD")
                || upper == "ATA"
                || upper.starts_with("ATO"),
            payload: None,
            info_prefixes,
            text,
        }
    }

    /// `AT+CMGS=<len>` for one part of an SMS: the engine waits for `> `,
    /// then sends the part's PDU and Ctrl-Z.
    pub fn sms_submit(part: &PduPart) -> Command {
        let mut command = Command::trusted(format!("AT+CMGS={}", part.tpdu_len()));
        command.payload = Some(part.hex().to_owned());
        command.timeout = SMS_SEND_TIMEOUT;
        command
    }

    /// The same command with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Command {
        self.timeout = timeout;
        self
    }

    /// The same command, also owning information lines that start with
    /// `prefix` (e.g. `+ICCID`, for modems that answer under another name).
    pub fn with_info_prefix(mut self, prefix: &str) -> Command {
        self.info_prefixes.push(prefix.to_ascii_uppercase());
        self
    }

    /// The text, without `\r`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// How long the modem has to answer (after the prompt, for `AT+CMGS`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The PDU sent after the `> ` prompt, as hex.
    pub fn payload(&self) -> Option<&str> {
        self.payload.as_deref()
    }

    /// Whether information lines with this (upper-case) prefix are this
    /// command's.
    pub fn expects_prefix(&self, prefix: &str) -> bool {
        self.info_prefixes.iter().any(|p| p == prefix)
    }

    /// Whether `NO CARRIER`, `BUSY`, `NO ANSWER`, `NO DIALTONE` and `CONNECT`
    /// end this command (`ATD…`, `ATA`, `ATO`); for any other command they are
    /// unsolicited.
    pub fn accepts_call_results(&self) -> bool {
        self.call_results_final
    }

    /// The bytes to write: the text and `\r`.
    pub fn wire_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.text.len() + 1);
        bytes.extend_from_slice(self.text.as_bytes());
        bytes.push(b'\r');
        bytes
    }
}

/// The prefix of an extended command's information lines: `AT+CSQ` → `+CSQ`,
/// `AT^CVOICE?` → `^CVOICE`. A set command (`AT+CREG=2`, `AT+CUSD=1,…`) of a
/// name that is also a URC expects none: what comes under that name during it
/// is unsolicited.
fn derived_prefix(upper: &str) -> Option<String> {
    let rest = upper.strip_prefix("AT")?;
    if !rest.starts_with(['+', '^']) {
        return None;
    }
    let end = rest.find(['=', '?']).unwrap_or(rest.len());
    let name = &rest[..end];
    if name.len() < 2 || !name[1..].bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let is_set = rest[end..].starts_with('=') && !rest[end..].starts_with("=?");
    if is_set && urc::is_urc_prefix(name) {
        return None;
    }
    Some(name.to_owned())
}

/// The default timeout for an upper-case command text.
fn default_timeout(upper: &str) -> Duration {
    let starts = |p: &str| upper.starts_with(p);
    if starts("AT+COPS=") {
        NETWORK_TIMEOUT
    } else if starts("AT+CMGS") {
        SMS_SEND_TIMEOUT
    } else if starts("AT+CUSD") {
        USSD_TIMEOUT
    } else if starts("AT+CFUN=") {
        CFUN_TIMEOUT
    } else if starts("ATD")
        || upper == "ATA"
        || starts("ATH")
        || starts("AT+CHUP")
        || starts("AT+QHUP")
        || starts("AT+CHLD")
    {
        CALL_TIMEOUT
    } else if starts("ATZ") {
        RESET_TIMEOUT
    } else if [
        "AT+CMGR", "AT+CMGD", "AT+CMGL", "AT+CPMS", "AT+CNUM", "AT+CPIN=",
    ]
    .iter()
    .any(|p| starts(p))
    {
        SIM_TIMEOUT
    } else {
        SHORT_TIMEOUT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: &str) {
        let got = match Command::new(text) {
            Ok(c) => format!(
                "{}s prefixes={:?} call_results={}",
                c.timeout().as_secs(),
                c.info_prefixes,
                c.accepts_call_results()
            ),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expect, "text {text:?}");
    }

    #[test]
    fn timeouts_and_prefixes() {
        check("AT", "2s prefixes=[] call_results=false");
        check("AT+CSQ", r#"2s prefixes=["+CSQ"] call_results=false"#);
        check("AT+CREG?", r#"2s prefixes=["+CREG"] call_results=false"#);
        check("AT+CREG=2", "2s prefixes=[] call_results=false");
        check("AT+CREG=?", r#"2s prefixes=["+CREG"] call_results=false"#);
        check(
            r#"AT+CUSD=1,"AA180C3602",15"#,
            "30s prefixes=[] call_results=false",
        );
        check(
            "AT^CVOICE?",
            r#"2s prefixes=["^CVOICE"] call_results=false"#,
        );
        check("ATD+79161234567;", "30s prefixes=[] call_results=true");
        check("ATA", "30s prefixes=[] call_results=true");
        check("AT+CHUP", r#"30s prefixes=["+CHUP"] call_results=false"#);
        check("AT+COPS=?", r#"180s prefixes=["+COPS"] call_results=false"#);
        check(
            "AT+COPS=0,0",
            r#"180s prefixes=["+COPS"] call_results=false"#,
        );
        check("AT+COPS?", r#"2s prefixes=["+COPS"] call_results=false"#);
        check(
            "AT+CFUN=1,1",
            r#"30s prefixes=["+CFUN"] call_results=false"#,
        );
        check("ATZ", "5s prefixes=[] call_results=false");
        check("AT+CMGR=3", r#"10s prefixes=["+CMGR"] call_results=false"#);
        check(
            "AT+CCID",
            r#"2s prefixes=["+CCID", "+ICCID"] call_results=false"#,
        );
        check("AT+CMGS=?", r#"60s prefixes=["+CMGS"] call_results=false"#);
    }

    #[test]
    fn refuses_unsafe_commands() {
        check("", r#"error: command "" does not start with AT"#);
        check("ZZ", r#"error: command "ZZ" does not start with AT"#);
        check(
            "ATD123;\rAT+CFUN=0",
            r#"error: command "ATD123;\rAT+CFUN=0" holds byte 0x0d at 7; only printable ASCII is sent"#,
        );
        check(
            "AT+CSQ\u{1a}",
            r#"error: command "AT+CSQ\u{1a}" holds byte 0x1a at 6; only printable ASCII is sent"#,
        );
        check(
            "AT\"é\"",
            r#"error: command "AT\"é\"" holds byte 0xc3 at 3; only printable ASCII is sent"#,
        );
        check(
            &format!("AT{}", "1".repeat(600)),
            "error: command is 602 bytes, more than 512",
        );
        check(
            "AT+CHLD=11",
            r#"error: "AT+CHLD=11" releases one call: build it with ModemProfile::release_call from a ConfirmedCall"#,
        );
        check(
            "at+chld=12",
            r#"error: "at+chld=12" releases one call: build it with ModemProfile::release_call from a ConfirmedCall"#,
        );
        check("AT+CHLD=1", r#"30s prefixes=["+CHLD"] call_results=false"#);
        check("AT+CHLD=2", r#"30s prefixes=["+CHLD"] call_results=false"#);
        check(
            "AT+CMGS=23",
            r#"error: "AT+CMGS=23" sends an SMS: build it with Command::sms_submit"#,
        );
    }

    #[test]
    fn wire_bytes_end_in_cr() {
        let c = Command::new("AT+CSQ").map(|c| c.wire_bytes());
        assert_eq!(c, Ok(b"AT+CSQ\r".to_vec()));
        assert_eq!(CommandId::new(7).to_string(), "#7");
    }
}
