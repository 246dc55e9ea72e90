//! Classification of one modem line: a final result code, an unsolicited
//! result code, an information line of the running command, or its echo.
//!
//! Owns the rule that keeps replies in step when URCs interleave: a
//! `+NAME:` / `^NAME:` line is the running command's only if that command
//! expects `+NAME` ([`Command::expects_prefix`]); otherwise it is a URC, typed
//! when known and [`Urc::Unknown`] when not. Bare lines (an IMEI, a PDU) go to
//! the running command, or are unknown URCs when none runs. `RING` and the
//! boot notices ([`urc::is_bare_urc`]) are always URCs; `NO CARRIER`,
//! `BUSY`, `NO ANSWER`, `NO DIALTONE` and `CONNECT` end only the commands that
//! can end with them (`ATD`, `ATA`, `ATO`).
//!
//! Never keeps state between lines (the engine does: the running command and
//! the two-line `+CMT`), never parses an information line's content (that is
//! [`super::replies`]), never panics.

use std::fmt;

use super::command::Command;
use super::fields;
use super::urc::{self, CallResult, PduHeader, Urc, UrcLine};

/// How a command ended, as the modem said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalResult {
    /// `OK`.
    Ok,
    /// `ERROR`.
    Error,
    /// `+CME ERROR: <n|text>`: equipment or network error.
    CmeError(ErrorDetail),
    /// `+CMS ERROR: <n|text>`: SMS error.
    CmsError(ErrorDetail),
    /// `NO CARRIER` (dial and answer only).
    NoCarrier,
    /// `BUSY` (dial only).
    Busy,
    /// `NO ANSWER` (dial only).
    NoAnswer,
    /// `NO DIALTONE` (dial only).
    NoDialtone,
    /// `CONNECT[ <text>]` (data dial only).
    Connect(Option<String>),
    /// Huawei's `COMMAND NOT SUPPORT` or `TOO MANY PARAMETERS`.
    NotSupported(String),
}

impl FinalResult {
    /// `OK` or `CONNECT`.
    pub fn is_success(&self) -> bool {
        matches!(self, FinalResult::Ok | FinalResult::Connect(_))
    }
}

impl From<CallResult> for FinalResult {
    fn from(r: CallResult) -> FinalResult {
        match r {
            CallResult::NoCarrier => FinalResult::NoCarrier,
            CallResult::Busy => FinalResult::Busy,
            CallResult::NoAnswer => FinalResult::NoAnswer,
            CallResult::NoDialtone => FinalResult::NoDialtone,
            CallResult::Connect(text) => FinalResult::Connect(text),
        }
    }
}

impl fmt::Display for FinalResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FinalResult::Ok => f.write_str("OK"),
            FinalResult::Error => f.write_str("ERROR"),
            FinalResult::CmeError(d) => write!(f, "+CME ERROR: {d}"),
            FinalResult::CmsError(d) => write!(f, "+CMS ERROR: {d}"),
            FinalResult::NoCarrier => f.write_str("NO CARRIER"),
            FinalResult::Busy => f.write_str("BUSY"),
            FinalResult::NoAnswer => f.write_str("NO ANSWER"),
            FinalResult::NoDialtone => f.write_str("NO DIALTONE"),
            FinalResult::Connect(None) => f.write_str("CONNECT"),
            FinalResult::Connect(Some(t)) => write!(f, "CONNECT {t}"),
            FinalResult::NotSupported(t) => f.write_str(t),
        }
    }
}

/// The detail of a `+CME ERROR` / `+CMS ERROR`: numeric (`AT+CMEE=1`) or
/// verbose (`AT+CMEE=2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorDetail {
    /// A numeric code, e.g. 10 (SIM not inserted) or 500 (unknown).
    Code(u16),
    /// A text, e.g. `SIM not inserted`.
    Text(String),
}

impl ErrorDetail {
    fn parse(s: &str) -> ErrorDetail {
        let s = s.trim();
        match s.parse() {
            Ok(code) => ErrorDetail::Code(code),
            Err(_) => ErrorDetail::Text(s.to_owned()),
        }
    }
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorDetail::Code(c) => write!(f, "{c}"),
            ErrorDetail::Text(t) => f.write_str(t),
        }
    }
}

/// What one line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The running command's final result (or a stray one, when none runs).
    Final(FinalResult),
    /// An unsolicited result code.
    Urc(Urc),
    /// The first line of `+CMT` / `+CDS`: the next line is its PDU.
    PduFollows(PduHeader),
    /// An information line of the running command.
    Info(String),
    /// The modem echoing the running command (or its PDU).
    Echo,
}

/// Classifies `line` (framed, trimmed, non-empty) given the command on the
/// wire, if any.
pub fn classify(line: &str, running: Option<&Command>) -> Line {
    if let Some(command) = running {
        let is_echo = line.eq_ignore_ascii_case(command.text())
            || command
                .payload()
                .is_some_and(|p| line.eq_ignore_ascii_case(p));
        if is_echo {
            return Line::Echo;
        }
    }
    if line.eq_ignore_ascii_case("OK") {
        return Line::Final(FinalResult::Ok);
    }
    if line.eq_ignore_ascii_case("ERROR") {
        return Line::Final(FinalResult::Error);
    }
    if let Some(detail) = fields::after_prefix(line, "+CME ERROR") {
        return Line::Final(FinalResult::CmeError(ErrorDetail::parse(detail)));
    }
    if let Some(detail) = fields::after_prefix(line, "+CMS ERROR") {
        return Line::Final(FinalResult::CmsError(ErrorDetail::parse(detail)));
    }
    if line.eq_ignore_ascii_case("COMMAND NOT SUPPORT")
        || line.eq_ignore_ascii_case("TOO MANY PARAMETERS")
    {
        return Line::Final(FinalResult::NotSupported(line.to_owned()));
    }
    if let Some(result) = CallResult::parse(line) {
        return match running {
            Some(command) if command.accepts_call_results() => Line::Final(result.into()),
            _ => Line::Urc(Urc::CallResult(result)),
        };
    }
    let owned_by_command = match fields::prefix_of(line) {
        Some(prefix) => running.is_some_and(|c| c.expects_prefix(&prefix)),
        None => running.is_some() && !urc::is_bare_urc(line),
    };
    if owned_by_command {
        return Line::Info(line.to_owned());
    }
    match urc::parse(line) {
        UrcLine::Complete(urc) => Line::Urc(urc),
        UrcLine::PduFollows(header) => Line::PduFollows(header),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, running: Option<&str>, expect: &str) {
        let command = running.map(|t| Command::new(t).unwrap_or_else(|e| panic!("{e}")));
        let got = format!("{:?}", classify(line, command.as_ref()));
        assert_eq!(got, expect, "line {line:?} while {running:?}");
    }

    #[test]
    fn final_results() {
        check("OK", Some("AT"), "Final(Ok)");
        check("OK", None, "Final(Ok)");
        check("ERROR", Some("AT+CSQ"), "Final(Error)");
        check(
            "+CME ERROR: 10",
            Some("AT+CPIN?"),
            "Final(CmeError(Code(10)))",
        );
        check(
            "+CME ERROR: SIM not inserted",
            Some("AT+CPIN?"),
            r#"Final(CmeError(Text("SIM not inserted")))"#,
        );
        check(
            "+CMS ERROR: 500",
            Some("AT+CMGR=1"),
            "Final(CmsError(Code(500)))",
        );
        check(
            "COMMAND NOT SUPPORT",
            Some("AT^FOO"),
            r#"Final(NotSupported("COMMAND NOT SUPPORT"))"#,
        );
        check("NO CARRIER", Some("ATD123;"), "Final(NoCarrier)");
        check("BUSY", Some("ATD123;"), "Final(Busy)");
        check("NO ANSWER", Some("ATA"), "Final(NoAnswer)");
        check("NO DIALTONE", Some("ATD123;"), "Final(NoDialtone)");
        check(
            "CONNECT 115200",
            Some("ATD*99#"),
            r#"Final(Connect(Some("115200")))"#,
        );
        assert_eq!(
            FinalResult::CmeError(ErrorDetail::Code(10)).to_string(),
            "+CME ERROR: 10"
        );
        assert!(FinalResult::Connect(None).is_success());
        assert!(!FinalResult::Busy.is_success());
    }

    #[test]
    fn call_results_outside_dial_are_unsolicited() {
        check("NO CARRIER", None, "Urc(CallResult(NoCarrier))");
        check("NO CARRIER", Some("AT+CSQ"), "Urc(CallResult(NoCarrier))");
        check("BUSY", Some("AT+CHUP"), "Urc(CallResult(Busy))");
    }

    #[test]
    fn info_lines_versus_urcs() {
        check("+CSQ: 20,99", Some("AT+CSQ"), r#"Info("+CSQ: 20,99")"#);
        check("^RSSI:17", Some("AT+CSQ"), "Urc(Rssi(17))");
        check("RING", Some("AT+CLCC"), "Urc(Ring)");
        check("RING", None, "Urc(Ring)");
        check("RDY", Some("AT+CSQ"), r#"Urc(Unknown("RDY"))"#);
        check(
            "+CLCC: 1,1,4,0,0",
            Some("AT+CLCC"),
            r#"Info("+CLCC: 1,1,4,0,0")"#,
        );
        check(
            "^CEND:1,5,104,16",
            Some("AT+CHUP"),
            "Urc(CallEnded(CallEnd { call: 1, duration_s: 5, end_status: 104, cc_cause: Some(16) }))",
        );
        // +CREG: the reply to AT+CREG? versus the URC during anything else.
        check(
            "+CREG: 2,1,\"00C3\",\"0010\"",
            Some("AT+CREG?"),
            r#"Info("+CREG: 2,1,\"00C3\",\"0010\"")"#,
        );
        check(
            "+CREG: 1",
            Some("AT+CSQ"),
            "Urc(Registration(Registration { status: Home, lac: None, cell_id: None, access_technology: None }))",
        );
        check(
            "+CREG: 1",
            Some("AT+CREG=2"),
            "Urc(Registration(Registration { status: Home, lac: None, cell_id: None, access_technology: None }))",
        );
        check(
            "+CUSD: 0,\"x\",15",
            Some("AT+CUSD=1,\"AA180C3602\",15"),
            r#"Urc(Ussd(UssdReply { status: Done, text: Some("x"), dcs: Some(15) }))"#,
        );
        check(
            "^DSFLOWRPT:1,2",
            Some("AT+CSQ"),
            r#"Urc(Unknown("^DSFLOWRPT:1,2"))"#,
        );
        check("+CSQ: 20,99", None, r#"Urc(Unknown("+CSQ: 20,99"))"#);
        check(
            "490154203237518",
            Some("AT+CGSN"),
            r#"Info("490154203237518")"#,
        );
        check("huawei", None, r#"Urc(Unknown("huawei"))"#);
        check(
            "+CMT: ,24",
            Some("AT+CSQ"),
            "PduFollows(Sms { tpdu_len: 24 })",
        );
        check("+CMGR: 0,,24", Some("AT+CMGR=1"), r#"Info("+CMGR: 0,,24")"#);
    }

    #[test]
    fn echo() {
        check("AT+CSQ", Some("AT+CSQ"), "Echo");
        check("at+csq", Some("AT+CSQ"), "Echo");
        check("AT+CSQ", Some("AT+CLCC"), r#"Info("AT+CSQ")"#);
    }
}
