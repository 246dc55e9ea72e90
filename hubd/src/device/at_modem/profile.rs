//! What differs between modem makes: Huawei (chan_dongle's modems: E1550,
//! E173, E3372…), Quectel (EC20/EC25/UC15…), and a generic 27.007 modem.
//!
//! Owns each make's command sequences: identification (common to all, it is
//! how the make is found), init, dial, answer, hang-up, releasing one call,
//! DTMF, USSD requests and how its USSD answers are encoded. Validates what
//! goes into a command (numbers, DTMF digits) so nothing but a well-formed
//! command reaches the wire. Never sends anything, never keeps call state
//! (that is [`super::calls`]).

use std::fmt;

use super::calls::ConfirmedCall;
use super::command::Command;
use super::pdu::{PduError, ussd};

/// A modem make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// Huawei: `^`-prefixed call-progress URCs, audio on a second tty.
    Huawei,
    /// Quectel: audio over USB or PCM (`AT+QPCMV`), UCS-2 character set.
    Quectel,
    /// Any other 27.007 modem.
    Generic,
}

/// Where a Quectel modem sends voice audio (`AT+QPCMV=1,<port>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuectelAudio {
    /// `AT+QPCMV=1,2`: USB audio class.
    #[default]
    Usb,
    /// `AT+QPCMV=1,0`: the serial (tty) port.
    Serial,
}

/// Why a profile could not build a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// A number to dial is not `+`, then 1–30 of `0-9`, `*`, `#`.
    #[error("cannot dial {0:?}: a number is an optional + and 1 to 30 of 0-9 * #")]
    BadNumber(String),
    /// A DTMF digit is not one of `0-9 * # A-D`.
    #[error("{0:?} is not a DTMF digit (0-9 * # A-D)")]
    BadDtmf(char),
    /// A USSD string could not be encoded.
    #[error("cannot encode USSD {text:?}: {source}")]
    Ussd {
        /// The string.
        text: String,
        /// Why.
        source: PduError,
    },
}

/// A number that is safe to put into `ATD<number>;`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialNumber(String);

impl DialNumber {
    /// Validates `s`: an optional leading `+`, then 1–30 of `0-9 * #`.
    pub fn parse(s: &str) -> Result<DialNumber, ProfileError> {
        let digits = s.strip_prefix('+').unwrap_or(s);
        let ok = (1..=30).contains(&digits.len())
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#');
        if ok {
            Ok(DialNumber(s.to_owned()))
        } else {
            Err(ProfileError::BadNumber(s.to_owned()))
        }
    }

    /// The number as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DialNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DTMF digit: `0-9 * # A-D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DtmfDigit(char);

impl DtmfDigit {
    /// Validates `c` (lower-case `a`–`d` are accepted and upper-cased).
    pub fn new(c: char) -> Result<DtmfDigit, ProfileError> {
        let c = c.to_ascii_uppercase();
        if c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D') {
            Ok(DtmfDigit(c))
        } else {
            Err(ProfileError::BadDtmf(c))
        }
    }

    /// The digit.
    pub fn get(self) -> char {
        self.0
    }
}

/// How a make encodes the text of `+CUSD` answers (see
/// [`ussd::decode_reply`]).
pub use super::pdu::ussd::UssdCharset;

/// A make and model, with the commands that drive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemProfile {
    vendor: Vendor,
    model: String,
    quectel_audio: QuectelAudio,
}

/// Builds a command from text this module wrote.
fn cmd(text: impl Into<String>) -> Command {
    Command::trusted(text.into())
}

impl ModemProfile {
    /// The commands that identify any modem, sent before its make is known:
    /// `AT`, `ATZ`, `ATE0`, `AT+CGMI`, `AT+CGMM`, `AT+CGMR`. Feed the
    /// `AT+CGMI` and `AT+CGMM` answers to [`ModemProfile::detect`].
    pub fn identify_sequence() -> Vec<Command> {
        ["AT", "ATZ", "ATE0", "AT+CGMI", "AT+CGMM", "AT+CGMR"]
            .into_iter()
            .map(cmd)
            .collect()
    }

    /// The profile for a modem whose `AT+CGMI` said `manufacturer` and
    /// `AT+CGMM` said `model`.
    pub fn detect(manufacturer: &str, model: &str) -> ModemProfile {
        let maker = manufacturer.to_ascii_lowercase();
        let model_upper = model.trim().to_ascii_uppercase();
        let quectel_models = [
            "EC2", "EG2", "EG9", "EC200", "UC15", "UC20", "M35", "BG9", "EM0",
        ];
        let huawei_models = [
            "E1550", "E1552", "E153", "E155", "E160", "E169", "E171", "E173", "E1752", "E3372",
            "K3715",
        ];
        let vendor = if maker.contains("huawei") {
            Vendor::Huawei
        } else if maker.contains("quectel")
            || quectel_models.iter().any(|m| model_upper.starts_with(m))
        {
            Vendor::Quectel
        } else if huawei_models.iter().any(|m| model_upper.starts_with(m)) {
            Vendor::Huawei
        } else {
            Vendor::Generic
        };
        ModemProfile {
            vendor,
            model: model.trim().to_owned(),
            quectel_audio: QuectelAudio::default(),
        }
    }

    /// The same profile with Quectel audio on `audio`.
    pub fn with_quectel_audio(mut self, audio: QuectelAudio) -> ModemProfile {
        self.quectel_audio = audio;
        self
    }

    /// The make.
    pub fn vendor(&self) -> Vendor {
        self.vendor
    }

    /// The make's name as operators read it: `Huawei`, `Quectel`, `Generic`.
    pub fn vendor_name(&self) -> &'static str {
        match self.vendor {
            Vendor::Huawei => "Huawei",
            Vendor::Quectel => "Quectel",
            Vendor::Generic => "Generic",
        }
    }

    /// The model as `AT+CGMM` said it.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The commands after [`ModemProfile::identify_sequence`] that prepare
    /// the modem: error reporting, identities, SIM, registration, audio,
    /// character set, SMS in PDU mode with `+CMTI`, signal.
    pub fn init_sequence(&self) -> Vec<Command> {
        let texts: Vec<String> = match self.vendor {
            // chan_dongle's list, in its order (field notes).
            Vendor::Huawei => [
                "AT+CMEE=0",
                "AT+CGSN",
                "AT+CIMI",
                "AT+CPIN?",
                "AT+COPS=0,0",
                "AT+CREG=2",
                "AT+CNUM",
                "AT^CVOICE?",
                "AT+CSCA?",
                "AT+CSSN=1,1",
                "AT+CMGF=0",
                "AT+CSCS=\"UCS2\"",
                "AT+CPMS=\"SM\",\"SM\",\"SM\"",
                "AT+CNMI=2,1,0,0,0",
                "AT+CSQ",
            ]
            .map(str::to_owned)
            .to_vec(),
            Vendor::Quectel => {
                let audio = match self.quectel_audio {
                    QuectelAudio::Usb => "AT+QPCMV=1,2",
                    QuectelAudio::Serial => "AT+QPCMV=1,0",
                };
                [
                    "AT+CMEE=1",
                    "AT+CGSN",
                    "AT+CIMI",
                    "AT+QCCID",
                    "AT+CPIN?",
                    "AT+COPS=0,0",
                    "AT+CREG=2",
                    "AT+CNUM",
                    audio,
                    "AT+CLIP=1",
                    "AT+CSSN=1,1",
                    "AT+CMGF=0",
                    "AT+CSCS=\"UCS2\"",
                    "AT+CPMS=\"SM\",\"SM\",\"SM\"",
                    "AT+CNMI=2,1,0,0,0",
                    "AT+CSQ",
                ]
                .map(str::to_owned)
                .to_vec()
            }
            Vendor::Generic => [
                "AT+CMEE=1",
                "AT+CGSN",
                "AT+CIMI",
                "AT+CCID",
                "AT+CPIN?",
                "AT+COPS=0,0",
                "AT+CREG=2",
                "AT+CNUM",
                "AT+CLIP=1",
                "AT+CSSN=1,1",
                "AT+CMGF=0",
                "AT+CSCS=\"UCS2\"",
                "AT+CNMI=2,1,0,0,0",
                "AT+CSQ",
            ]
            .map(str::to_owned)
            .to_vec(),
        };
        texts.into_iter().map(cmd).collect()
    }

    /// The command that reads the SIM's ICCID (parse with
    /// [`super::replies::parse_iccid`]).
    pub fn iccid_command(&self) -> Command {
        match self.vendor {
            Vendor::Huawei => cmd("AT^ICCID?"),
            Vendor::Quectel => cmd("AT+QCCID"),
            Vendor::Generic => cmd("AT+CCID"),
        }
    }

    /// Places a voice call: `ATD<number>;`, `AT+CLCC` (for the call index),
    /// and on Huawei `AT^DDSETEX=2` (audio to the voice port).
    pub fn dial_sequence(&self, number: &DialNumber) -> Vec<Command> {
        let mut seq = vec![cmd(format!("ATD{number};")), cmd("AT+CLCC")];
        if self.vendor == Vendor::Huawei {
            seq.push(cmd("AT^DDSETEX=2"));
        }
        seq
    }

    /// Answers the ringing call: `ATA`, and on Huawei `AT^DDSETEX=2`.
    pub fn answer_sequence(&self) -> Vec<Command> {
        let mut seq = vec![cmd("ATA")];
        if self.vendor == Vendor::Huawei {
            seq.push(cmd("AT^DDSETEX=2"));
        }
        seq
    }

    /// Hangs up: `AT+CHUP`; on Quectel with a known call, `AT+QHUP=16,<idx>`
    /// (cause 16, normal clearing).
    pub fn hang_up(&self, call: Option<u8>) -> Command {
        match (self.vendor, call) {
            (Vendor::Quectel, Some(index)) => cmd(format!("AT+QHUP=16,{index}")),
            _ => cmd("AT+CHUP"),
        }
    }

    /// Releases one call: `AT+CHLD=1<idx>`. Needs the proof that the call
    /// reached `^CONF` (the E1550 trap).
    pub fn release_call(&self, call: &ConfirmedCall<'_>) -> Command {
        cmd(format!("AT+CHLD=1{}", call.index()))
    }

    /// Sends one DTMF digit during call `call`: `AT^DTMF=<idx>,<d>` on
    /// Huawei, `AT+VTS="<d>"` elsewhere.
    pub fn dtmf(&self, call: u8, digit: DtmfDigit) -> Command {
        match self.vendor {
            Vendor::Huawei => cmd(format!("AT^DTMF={call},{}", digit.get())),
            Vendor::Quectel | Vendor::Generic => cmd(format!("AT+VTS=\"{}\"", digit.get())),
        }
    }

    /// Sends a USSD request (`*100#`): `AT+CUSD=1,"<enc>",15`, the string
    /// packed GSM 7-bit as hex on Huawei, UCS-2 hex where the character set
    /// is UCS-2 (Quectel, generic).
    pub fn ussd(&self, text: &str) -> Result<Command, ProfileError> {
        let encoded = match self.vendor {
            Vendor::Huawei => ussd::encode_request(text),
            Vendor::Quectel | Vendor::Generic => ussd::encode_request_ucs2(text),
        }
        .map_err(|source| ProfileError::Ussd {
            text: text.to_owned(),
            source,
        })?;
        Ok(cmd(format!("AT+CUSD=1,\"{encoded}\",15")))
    }

    /// How this make encodes the text of `+CUSD` answers.
    pub fn ussd_charset(&self) -> UssdCharset {
        match self.vendor {
            Vendor::Huawei => UssdCharset::PackedPerDcs,
            Vendor::Quectel | Vendor::Generic => UssdCharset::Ucs2Hex,
        }
    }

    /// `ATZ`: the recovery ladder's soft reset.
    pub fn soft_reset(&self) -> Command {
        cmd("ATZ")
    }

    /// `AT+CFUN=1,1`: the recovery ladder's reboot.
    pub fn reboot(&self) -> Command {
        cmd("AT+CFUN=1,1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::at_modem::calls::CallTracker;
    use crate::device::at_modem::urc::Urc;

    fn texts(cmds: &[Command]) -> Vec<&str> {
        cmds.iter().map(Command::text).collect()
    }

    #[test]
    fn detects_the_make() {
        let check = |maker: &str, model: &str, expect: Vendor| {
            assert_eq!(
                ModemProfile::detect(maker, model).vendor(),
                expect,
                "{maker} / {model}"
            );
        };
        check("huawei", "E1550", Vendor::Huawei);
        check("HUAWEI", "E3372", Vendor::Huawei);
        check("Quectel", "EC25", Vendor::Quectel);
        check("Quectel_Ltd", "UC15", Vendor::Quectel);
        check("", "EC25EFA", Vendor::Quectel);
        check("unknown", "E173", Vendor::Huawei);
        check("SIMCOM_Ltd", "SIMCOM_SIM7600E", Vendor::Generic);
        check("", "", Vendor::Generic);
        assert_eq!(ModemProfile::detect("huawei", " E1550 ").model(), "E1550");
    }

    #[test]
    fn huawei_sequences_follow_the_field_notes() {
        let p = ModemProfile::detect("huawei", "E1550");
        let mut all = ModemProfile::identify_sequence();
        all.extend(p.init_sequence());
        assert_eq!(
            texts(&all),
            [
                "AT",
                "ATZ",
                "ATE0",
                "AT+CGMI",
                "AT+CGMM",
                "AT+CGMR",
                "AT+CMEE=0",
                "AT+CGSN",
                "AT+CIMI",
                "AT+CPIN?",
                "AT+COPS=0,0",
                "AT+CREG=2",
                "AT+CNUM",
                "AT^CVOICE?",
                "AT+CSCA?",
                "AT+CSSN=1,1",
                "AT+CMGF=0",
                "AT+CSCS=\"UCS2\"",
                "AT+CPMS=\"SM\",\"SM\",\"SM\"",
                "AT+CNMI=2,1,0,0,0",
                "AT+CSQ",
            ]
        );
        let n = DialNumber::parse("+79161234567").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            texts(&p.dial_sequence(&n)),
            ["ATD+79161234567;", "AT+CLCC", "AT^DDSETEX=2"]
        );
        assert_eq!(texts(&p.answer_sequence()), ["ATA", "AT^DDSETEX=2"]);
        assert_eq!(p.hang_up(Some(1)).text(), "AT+CHUP");
        let d = DtmfDigit::new('5').unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.dtmf(1, d).text(), "AT^DTMF=1,5");
        assert_eq!(
            p.ussd("*100#").map(|c| c.text().to_owned()),
            Ok("AT+CUSD=1,\"AA180C3602\",15".to_owned())
        );
        assert_eq!(p.iccid_command().text(), "AT^ICCID?");
        assert_eq!(p.ussd_charset(), UssdCharset::PackedPerDcs);
        assert_eq!(p.reboot().text(), "AT+CFUN=1,1");
        assert_eq!(p.soft_reset().text(), "ATZ");
        assert!(
            all.iter()
                .all(|c| c.accepts_call_results() == c.text().starts_with("ATD"))
        );
    }

    #[test]
    fn quectel_sequences() {
        let p = ModemProfile::detect("Quectel", "EC25");
        let init = p.init_sequence();
        assert!(texts(&init).contains(&"AT+QPCMV=1,2"));
        assert!(texts(&init).contains(&"AT+CSCS=\"UCS2\""));
        let serial = p.clone().with_quectel_audio(QuectelAudio::Serial);
        assert!(texts(&serial.init_sequence()).contains(&"AT+QPCMV=1,0"));
        let n = DialNumber::parse("112").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(texts(&p.dial_sequence(&n)), ["ATD112;", "AT+CLCC"]);
        assert_eq!(texts(&p.answer_sequence()), ["ATA"]);
        assert_eq!(p.hang_up(Some(2)).text(), "AT+QHUP=16,2");
        assert_eq!(p.hang_up(None).text(), "AT+CHUP");
        let d = DtmfDigit::new('#').unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.dtmf(1, d).text(), "AT+VTS=\"#\"");
        assert_eq!(
            p.ussd("*100#").map(|c| c.text().to_owned()),
            Ok("AT+CUSD=1,\"002A0031003000300023\",15".to_owned())
        );
        assert_eq!(p.iccid_command().text(), "AT+QCCID");
        assert_eq!(
            ModemProfile::detect("x", "y").iccid_command().text(),
            "AT+CCID"
        );
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            DialNumber::parse("123;\rAT+CFUN=0"),
            Err(ProfileError::BadNumber("123;\rAT+CFUN=0".to_owned()))
        );
        assert!(DialNumber::parse("").is_err());
        assert!(DialNumber::parse("+").is_err());
        assert!(DialNumber::parse(&"1".repeat(31)).is_err());
        assert!(DialNumber::parse("*100#").is_ok());
        assert_eq!(DtmfDigit::new('x'), Err(ProfileError::BadDtmf('X')));
        assert_eq!(DtmfDigit::new('a').map(DtmfDigit::get), Ok('A'));
        let p = ModemProfile::detect("huawei", "E1550");
        assert!(matches!(p.ussd("Баланс"), Err(ProfileError::Ussd { .. })));
    }

    #[test]
    fn release_call_needs_conf() {
        let p = ModemProfile::detect("huawei", "E1550");
        let mut tracker = CallTracker::default();
        tracker.on_urc(&Urc::CallOriginated {
            call: 1,
            call_type: 0,
        });
        assert!(tracker.confirmed(1).is_err());
        tracker.on_urc(&Urc::CallAlerting { call: 1 });
        let command = tracker.confirmed(1).map(|c| p.release_call(&c));
        assert_eq!(
            command.map(|c| c.text().to_owned()),
            Ok("AT+CHLD=11".to_owned())
        );
    }
}
