//! Unsolicited result codes: what the modem reports without being asked
//! (ring, caller id, Huawei call progress, SMS, USSD, registration, signal,
//! SIM and service state, Quectel indications).
//!
//! Owns the list of known URC prefixes and the typed [`Urc`] for each. Never
//! decides whether a line is a URC or a reply (that is
//! [`super::parser::classify`], which asks [`is_urc_prefix`]) and never fails:
//! a known URC with bad parameters is [`Urc::Malformed`], an unknown one
//! [`Urc::Unknown`].

use super::fields;
use super::replies::{self, Registration, ReplyError, UssdReply};

/// A typed unsolicited result code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Urc {
    /// `RING` or `+CRING: <type>`: an incoming call rings.
    Ring,
    /// `+CLIP: "<number>",<type>,…`: the caller's number.
    CallerId(CallerId),
    /// `+CCWA: "<number>",<type>,<class>…`: a second call is waiting.
    CallWaiting(CallerId),
    /// `^ORIG:<idx>,<type>`: Huawei, an outgoing call was originated.
    CallOriginated {
        /// The call index.
        call: u8,
        /// The call type (0 voice).
        call_type: u8,
    },
    /// `^CONF:<idx>`: Huawei, the remote party is alerted (ringback).
    CallAlerting {
        /// The call index.
        call: u8,
    },
    /// `^CONN:<idx>,<type>`: Huawei, the call was answered.
    CallConnected {
        /// The call index.
        call: u8,
        /// The call type (0 voice).
        call_type: u8,
    },
    /// `^CEND:<idx>,<duration>,<end_status>[,<cc_cause>]`: Huawei, the call ended.
    CallEnded(CallEnd),
    /// `NO CARRIER`, `BUSY`, `NO ANSWER`, `NO DIALTONE` or `CONNECT` while no
    /// dial or answer command was running.
    CallResult(CallResult),
    /// `+CMTI: "<mem>",<index>`: an SMS was stored.
    SmsStored {
        /// The storage (`SM`, `ME`…).
        storage: String,
        /// Its index there (for `AT+CMGR`).
        index: u32,
    },
    /// `+CMT: [<alpha>],<length>` and the PDU line after it: an SMS delivered
    /// directly to us. Decode `pdu` with [`super::pdu::deliver::decode`].
    SmsDelivered {
        /// TPDU length in octets.
        tpdu_len: u16,
        /// The PDU as hex, SMSC prefix included.
        pdu: String,
    },
    /// `+CDS: <length>` and the PDU line after it: an SMS status report.
    StatusReport {
        /// TPDU length in octets.
        tpdu_len: u16,
        /// The PDU as hex.
        pdu: String,
    },
    /// `+CUSD: <m>[,"<str>",<dcs>]`: a USSD answer or network request.
    Ussd(UssdReply),
    /// `+CREG: <stat>[,<lac>,<ci>[,<AcT>]]`: the registration changed.
    Registration(Registration),
    /// `^RSSI:<rssi>`: Huawei, the signal changed (27.007 scale, 99 unknown).
    Rssi(u8),
    /// `^BOOT:…`: Huawei's periodic heartbeat; its parameters as sent.
    Boot(String),
    /// `^MODE:<sys_mode>[,<sys_submode>]`: Huawei, the radio mode changed.
    Mode {
        /// System mode (0 none, 3 GSM, 5 WCDMA…).
        sys_mode: u8,
        /// Submode, when given.
        sub_mode: Option<u8>,
    },
    /// `^SIMST:<state>[,<lock>]`: Huawei, the SIM state changed.
    SimState {
        /// 0 invalid, 1 valid, 255 absent…
        state: u8,
        /// Lock state, when given.
        lock: Option<u8>,
    },
    /// `^SRVST:<status>`: Huawei, the service state changed.
    ServiceState(u8),
    /// `+CSSI: <code1>[,<index>]`: supplementary service note for our call.
    SupplementaryMo {
        /// The 27.007 code (e.g. 2 call forwarding active).
        code: u8,
        /// Closed user group index, when given.
        index: Option<u32>,
    },
    /// `+CSSU: <code2>[,<index>[,<number>,<type>]]`: supplementary service
    /// note during a call (e.g. 2 call put on hold).
    SupplementaryMt {
        /// The 27.007 code.
        code: u8,
        /// Closed user group index, when given.
        index: Option<u32>,
        /// A number, when given.
        number: Option<String>,
    },
    /// `+QIND: <kind>[,…]`: Quectel indication (`"csq"`, `SMS DONE`, `PB DONE`…).
    Quectel {
        /// The first parameter, unquoted.
        kind: String,
        /// The others, unquoted.
        params: Vec<String>,
    },
    /// A known URC whose parameters did not parse.
    Malformed {
        /// The line.
        line: String,
        /// What was wrong.
        error: ReplyError,
    },
    /// A line that looks unsolicited but is not known; logged, not fatal.
    Unknown(String),
}

/// The caller or waiting party of `+CLIP` / `+CCWA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerId {
    /// The number (empty when withheld).
    pub number: String,
    /// Type of address (129, 145…), when given.
    pub number_type: Option<u8>,
    /// The name from the phone book or network, when given.
    pub alpha: Option<String>,
    /// CLI validity (0 valid, 1 withheld, 2 unavailable), when given.
    pub validity: Option<u8>,
}

/// How a Huawei call ended (`^CEND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEnd {
    /// The call index.
    pub call: u8,
    /// Seconds the call lasted.
    pub duration_s: u32,
    /// Huawei's end status.
    pub end_status: u16,
    /// The 24.008 cause, when the network gave one.
    pub cc_cause: Option<u16>,
}

impl CallEnd {
    /// The cause in the words `DeviceEvent::CallEnded` uses.
    pub fn cause_text(&self) -> &'static str {
        match self.cc_cause {
            Some(16) => "normal_clearing",
            Some(17) => "user_busy",
            Some(18) => "no_user_responding",
            Some(19) => "no_answer",
            Some(21) => "call_rejected",
            Some(1) => "unassigned_number",
            Some(28) => "invalid_number_format",
            Some(31) => "normal_unspecified",
            Some(34) => "no_circuit_available",
            Some(38) => "network_out_of_order",
            Some(41) => "temporary_failure",
            Some(42) => "switching_equipment_congestion",
            Some(_) => "other",
            None => "unknown",
        }
    }
}

/// A V.250 call result code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    /// `NO CARRIER`: the call ended or could not be set up.
    NoCarrier,
    /// `BUSY`.
    Busy,
    /// `NO ANSWER`.
    NoAnswer,
    /// `NO DIALTONE`.
    NoDialtone,
    /// `CONNECT[ <text>]`.
    Connect(Option<String>),
}

impl CallResult {
    /// Recognises a call result code line.
    pub fn parse(line: &str) -> Option<CallResult> {
        let upper = line.to_ascii_uppercase();
        match upper.as_str() {
            "NO CARRIER" => Some(CallResult::NoCarrier),
            "BUSY" => Some(CallResult::Busy),
            "NO ANSWER" => Some(CallResult::NoAnswer),
            "NO DIALTONE" | "NO DIAL TONE" => Some(CallResult::NoDialtone),
            "CONNECT" => Some(CallResult::Connect(None)),
            _ => upper
                .strip_prefix("CONNECT ")
                .and_then(|_| line.get("CONNECT ".len()..))
                .map(|rest| CallResult::Connect(Some(rest.trim().to_owned()))),
        }
    }
}

/// What a URC line turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrcLine {
    /// A complete URC.
    Complete(Urc),
    /// The header of a two-line URC (`+CMT`, `+CDS`): the PDU is the next line.
    PduFollows(PduHeader),
}

/// The first line of a two-line URC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduHeader {
    /// `+CMT: [<alpha>],<length>`.
    Sms {
        /// TPDU length in octets.
        tpdu_len: u16,
    },
    /// `+CDS: <length>`.
    StatusReport {
        /// TPDU length in octets.
        tpdu_len: u16,
    },
}

impl PduHeader {
    /// The URC once the PDU line arrived.
    pub fn complete(self, pdu: String) -> Urc {
        match self {
            PduHeader::Sms { tpdu_len } => Urc::SmsDelivered { tpdu_len, pdu },
            PduHeader::StatusReport { tpdu_len } => Urc::StatusReport { tpdu_len, pdu },
        }
    }
}

/// Prefixes (upper-case, with `+`/`^`) that are URCs unless the running
/// command asked for them.
const URC_PREFIXES: &[&str] = &[
    "+CLIP", "+CRING", "+CCWA", "^ORIG", "^CONF", "^CONN", "^CEND", "+CMTI", "+CMT", "+CDS",
    "+CUSD", "+CREG", "^RSSI", "^BOOT", "^MODE", "^SIMST", "^SRVST", "+CSSI", "+CSSU", "+QIND",
];

/// Lines without a prefix that are always unsolicited: `RING`, and the
/// boot and power notices of Quectel (`RDY`, `POWERED DOWN`…) and SimCom.
const BARE_URCS: &[&str] = &[
    "RING",
    "RDY",
    "POWERED DOWN",
    "NORMAL POWER DOWN",
    "SMS READY",
    "CALL READY",
];

/// Whether a line without a prefix is always unsolicited (see [`BARE_URCS`]).
pub fn is_bare_urc(line: &str) -> bool {
    BARE_URCS.iter().any(|u| line.eq_ignore_ascii_case(u))
}

/// Whether `prefix` (as [`fields::prefix_of`] returns it) is a known URC.
pub fn is_urc_prefix(prefix: &str) -> bool {
    URC_PREFIXES.contains(&prefix)
}

/// Parses a line already known to be unsolicited. `RING` and lines with a
/// known prefix are typed; anything else is [`Urc::Unknown`].
pub fn parse(line: &str) -> UrcLine {
    if line.eq_ignore_ascii_case("RING") {
        return UrcLine::Complete(Urc::Ring);
    }
    if let Some(result) = CallResult::parse(line) {
        return UrcLine::Complete(Urc::CallResult(result));
    }
    let Some(prefix) = fields::prefix_of(line) else {
        return UrcLine::Complete(Urc::Unknown(line.to_owned()));
    };
    match parse_prefixed(line, &prefix) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => UrcLine::Complete(Urc::Unknown(line.to_owned())),
        Err(error) => UrcLine::Complete(Urc::Malformed {
            line: line.to_owned(),
            error,
        }),
    }
}

fn parse_prefixed(line: &str, prefix: &str) -> Result<Option<UrcLine>, ReplyError> {
    let complete = |urc| Ok(Some(UrcLine::Complete(urc)));
    let rest = fields::after_prefix(line, prefix).unwrap_or("");
    let params = fields::split(rest)?;
    let text = |i: usize| params.get(i).map(|p| p.text).filter(|t| !t.is_empty());
    let reply: &'static str = URC_PREFIXES
        .iter()
        .find(|p| **p == prefix)
        .copied()
        .unwrap_or("URC");
    let num = |i: usize, field: &'static str| -> Result<u32, ReplyError> {
        let t = text(i).ok_or(ReplyError::Missing { reply, field })?;
        t.parse().map_err(|_| ReplyError::Invalid {
            reply,
            field,
            value: t.to_owned(),
        })
    };
    let opt_num = |i: usize, field: &'static str| -> Result<Option<u32>, ReplyError> {
        text(i).map(|_| num(i, field)).transpose()
    };
    let small = |v: u32, field: &'static str| -> Result<u8, ReplyError> {
        u8::try_from(v).map_err(|_| ReplyError::Invalid {
            reply,
            field,
            value: v.to_string(),
        })
    };
    let medium = |v: u32, field: &'static str| -> Result<u16, ReplyError> {
        u16::try_from(v).map_err(|_| ReplyError::Invalid {
            reply,
            field,
            value: v.to_string(),
        })
    };
    let caller = || -> Result<CallerId, ReplyError> {
        let number = params.first().ok_or(ReplyError::Missing {
            reply,
            field: "number",
        })?;
        Ok(CallerId {
            number: number.text.to_owned(),
            number_type: opt_num(1, "type")?.map(|t| small(t, "type")).transpose()?,
            alpha: text(if prefix == "+CLIP" { 4 } else { 3 }).map(str::to_owned),
            validity: if prefix == "+CLIP" {
                opt_num(5, "CLI validity")?
                    .map(|v| small(v, "CLI validity"))
                    .transpose()?
            } else {
                None
            },
        })
    };
    match prefix {
        "+CRING" => complete(Urc::Ring),
        "+CLIP" => complete(Urc::CallerId(caller()?)),
        "+CCWA" => complete(Urc::CallWaiting(caller()?)),
        "^ORIG" => complete(Urc::CallOriginated {
            call: small(num(0, "call_x")?, "call_x")?,
            call_type: small(num(1, "call_type")?, "call_type")?,
        }),
        "^CONF" => complete(Urc::CallAlerting {
            call: small(num(0, "call_x")?, "call_x")?,
        }),
        "^CONN" => complete(Urc::CallConnected {
            call: small(num(0, "call_x")?, "call_x")?,
            call_type: small(num(1, "call_type")?, "call_type")?,
        }),
        "^CEND" => complete(Urc::CallEnded(CallEnd {
            call: small(num(0, "call_x")?, "call_x")?,
            duration_s: num(1, "duration")?,
            end_status: medium(num(2, "end_status")?, "end_status")?,
            cc_cause: opt_num(3, "cc_cause")?
                .map(|c| medium(c, "cc_cause"))
                .transpose()?,
        })),
        "+CMTI" => complete(Urc::SmsStored {
            storage: text(0)
                .ok_or(ReplyError::Missing {
                    reply,
                    field: "mem",
                })?
                .to_owned(),
            index: num(1, "index")?,
        }),
        "+CMT" => {
            // `+CMT: [<alpha>],<length>`: the length is the last parameter.
            let last = params.len().saturating_sub(1);
            Ok(Some(UrcLine::PduFollows(PduHeader::Sms {
                tpdu_len: medium(num(last, "length")?, "length")?,
            })))
        }
        "+CDS" => Ok(Some(UrcLine::PduFollows(PduHeader::StatusReport {
            tpdu_len: medium(num(0, "length")?, "length")?,
        }))),
        "+CUSD" => complete(Urc::Ussd(replies::parse_cusd(line)?)),
        "+CREG" => complete(Urc::Registration(replies::parse_creg_urc(line)?)),
        "^RSSI" => complete(Urc::Rssi(small(num(0, "rssi")?, "rssi")?)),
        "^BOOT" => complete(Urc::Boot(rest.to_owned())),
        "^MODE" => complete(Urc::Mode {
            sys_mode: small(num(0, "sys_mode")?, "sys_mode")?,
            sub_mode: opt_num(1, "sys_submode")?
                .map(|m| small(m, "sys_submode"))
                .transpose()?,
        }),
        "^SIMST" => complete(Urc::SimState {
            state: small(num(0, "sim_state")?, "sim_state")?,
            lock: opt_num(1, "lock_state")?
                .map(|m| small(m, "lock_state"))
                .transpose()?,
        }),
        "^SRVST" => complete(Urc::ServiceState(small(
            num(0, "srv_status")?,
            "srv_status",
        )?)),
        "+CSSI" => complete(Urc::SupplementaryMo {
            code: small(num(0, "code1")?, "code1")?,
            index: opt_num(1, "index")?,
        }),
        "+CSSU" => complete(Urc::SupplementaryMt {
            code: small(num(0, "code2")?, "code2")?,
            index: opt_num(1, "index")?,
            number: text(2).map(str::to_owned),
        }),
        "+QIND" => complete(Urc::Quectel {
            kind: text(0)
                .ok_or(ReplyError::Missing {
                    reply,
                    field: "kind",
                })?
                .to_owned(),
            params: params.iter().skip(1).map(|p| p.text.to_owned()).collect(),
        }),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expect: &str) {
        let got = match parse(line) {
            UrcLine::Complete(urc) => format!("{urc:?}"),
            UrcLine::PduFollows(header) => format!("then pdu: {header:?}"),
        };
        assert_eq!(got, expect, "line {line:?}");
    }

    #[test]
    fn types_known_urcs() {
        check("RING", "Ring");
        check("+CRING: VOICE", "Ring");
        check(
            r#"+CLIP: "+79161234567",145,,,,0"#,
            r#"CallerId(CallerId { number: "+79161234567", number_type: Some(145), alpha: None, validity: Some(0) })"#,
        );
        check(
            r#"+CLIP: "",128,,,"",1"#,
            r#"CallerId(CallerId { number: "", number_type: Some(128), alpha: None, validity: Some(1) })"#,
        );
        check(
            r#"+CCWA: "+7495",145,1"#,
            r#"CallWaiting(CallerId { number: "+7495", number_type: Some(145), alpha: None, validity: None })"#,
        );
        check("^ORIG:1,0", "CallOriginated { call: 1, call_type: 0 }");
        check("^CONF:1", "CallAlerting { call: 1 }");
        check("^CONN:1,0", "CallConnected { call: 1, call_type: 0 }");
        check(
            "^CEND:1,12,104,16",
            "CallEnded(CallEnd { call: 1, duration_s: 12, end_status: 104, cc_cause: Some(16) })",
        );
        check(
            "^CEND:1,0,104",
            "CallEnded(CallEnd { call: 1, duration_s: 0, end_status: 104, cc_cause: None })",
        );
        check("NO CARRIER", "CallResult(NoCarrier)");
        check("CONNECT 9600", r#"CallResult(Connect(Some("9600")))"#);
        check(
            r#"+CMTI: "SM",3"#,
            r#"SmsStored { storage: "SM", index: 3 }"#,
        );
        check("+CMT: ,24", "then pdu: Sms { tpdu_len: 24 }");
        check(r#"+CMT: "Bank",24"#, "then pdu: Sms { tpdu_len: 24 }");
        check("+CDS: 25", "then pdu: StatusReport { tpdu_len: 25 }");
        check(
            r#"+CUSD: 0,"AA180C3602",15"#,
            r#"Ussd(UssdReply { status: Done, text: Some("AA180C3602"), dcs: Some(15) })"#,
        );
        check(
            "+CREG: 5",
            "Registration(Registration { status: Roaming, lac: None, cell_id: None, access_technology: None })",
        );
        check("^RSSI:17", "Rssi(17)");
        check("^BOOT:20952548,0,0,0,72", r#"Boot("20952548,0,0,0,72")"#);
        check("^MODE:5,4", "Mode { sys_mode: 5, sub_mode: Some(4) }");
        check("^MODE:0", "Mode { sys_mode: 0, sub_mode: None }");
        check("^SIMST:1", "SimState { state: 1, lock: None }");
        check("^SIMST:255,0", "SimState { state: 255, lock: Some(0) }");
        check("^SRVST:2", "ServiceState(2)");
        check("+CSSI: 2", "SupplementaryMo { code: 2, index: None }");
        check(
            r#"+CSSU: 2,,"+7916",145"#,
            r#"SupplementaryMt { code: 2, index: None, number: Some("+7916") }"#,
        );
        check(
            r#"+QIND: "csq",20,99"#,
            r#"Quectel { kind: "csq", params: ["20", "99"] }"#,
        );
        check(
            "+QIND: SMS DONE",
            r#"Quectel { kind: "SMS DONE", params: [] }"#,
        );
        check("^DSFLOWRPT:0000,0,0", r#"Unknown("^DSFLOWRPT:0000,0,0")"#);
        check("hello", r#"Unknown("hello")"#);
        check("RDY", r#"Unknown("RDY")"#);
        assert!(is_bare_urc("ring") && is_bare_urc("POWERED DOWN") && !is_bare_urc("OK"));
    }

    #[test]
    fn malformed_known_urcs_are_typed_errors() {
        check(
            "^CEND:x,1,2",
            r#"Malformed { line: "^CEND:x,1,2", error: Invalid { reply: "^CEND", field: "call_x", value: "x" } }"#,
        );
        check(
            "^CONF:",
            r#"Malformed { line: "^CONF:", error: Missing { reply: "^CONF", field: "call_x" } }"#,
        );
        check(
            "^RSSI:300",
            r#"Malformed { line: "^RSSI:300", error: Invalid { reply: "^RSSI", field: "rssi", value: "300" } }"#,
        );
        check(
            r#"+CLIP: "123"#,
            r#"Malformed { line: "+CLIP: \"123", error: Fields(UnterminatedQuote("\"123")) }"#,
        );
        check(
            "+CMT: ,99999",
            r#"Malformed { line: "+CMT: ,99999", error: Invalid { reply: "+CMT", field: "length", value: "99999" } }"#,
        );
        check(
            "+CMTI: \"SM\"",
            r#"Malformed { line: "+CMTI: \"SM\"", error: Missing { reply: "+CMTI", field: "index" } }"#,
        );
        assert_eq!(
            CallEnd {
                call: 1,
                duration_s: 0,
                end_status: 0,
                cc_cause: Some(17)
            }
            .cause_text(),
            "user_busy"
        );
    }
}
