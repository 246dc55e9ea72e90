//! SMS in PDU mode (3GPP 23.040) and USSD strings (23.038): what goes after
//! `AT+CMGS=<len>`, what `+CMT` / `AT+CMGR` deliver, and the text of
//! `AT+CUSD` / `+CUSD`.
//!
//! Owns the bit-level formats: GSM 7-bit default alphabet and its extension
//! table, septet packing, UCS-2 (UTF-16BE, surrogate pairs included),
//! semi-octet addresses, the service-centre timestamp, the user-data header
//! (concatenation), SMS-SUBMIT and SMS-DELIVER in both directions (the
//! emulator needs the other direction). Never talks to a modem and never
//! panics on any hex: every defect is a [`PduError`].
//!
//! Table of contents:
//! - [`hex`]: hex text ↔ bytes. [`reader`]: a bounds-checked byte cursor.
//! - [`gsm7`]: the default alphabet, the extension table, packing.
//! - [`ucs2`]: UTF-16 big-endian.
//! - [`address`]: phone numbers and alphanumeric senders.
//! - [`timestamp`]: TP-SCTS with its time zone.
//! - [`userdata`]: DCS, user-data header, concatenation, splitting.
//! - [`submit`]: SMS-SUBMIT (encode for `AT+CMGS`, decode for the emulator).
//! - [`deliver`]: SMS-DELIVER (decode `+CMT`/`+CMGR`, encode for the emulator), reassembly.
//! - [`ussd`]: USSD requests and answers.

pub mod address;
pub mod deliver;
pub mod gsm7;
pub mod hex;
pub mod reader;
pub mod submit;
pub mod timestamp;
pub mod ucs2;
pub mod userdata;
pub mod ussd;

pub use deliver::SmsDeliver;
pub use submit::{SmsSubmit, SubmitOptions};
pub use userdata::{Alphabet, Concat, Payload};

/// Why a PDU or USSD string could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// The hex text has an odd length.
    #[error("hex text has an odd length ({0})")]
    OddHexLength(usize),
    /// The hex text holds a character that is not a hex digit.
    #[error("not a hex digit at offset {0}")]
    NotHex(usize),
    /// The PDU ended inside a field.
    #[error("PDU ends inside {0}")]
    Truncated(&'static str),
    /// The PDU is not of the type asked for.
    #[error("PDU is not an {expected} (TP-MTI {mti})")]
    WrongType {
        /// What was expected.
        expected: &'static str,
        /// The message type indicator found.
        mti: u8,
    },
    /// An address (number) is malformed.
    #[error("bad address: {0}")]
    BadAddress(String),
    /// A character has no GSM 7-bit encoding.
    #[error("{0:?} has no GSM 7-bit encoding")]
    NotGsm7(char),
    /// The data coding scheme says the text is compressed, which is not supported.
    #[error("data coding scheme 0x{0:02x} means compressed text, which is not supported")]
    Compressed(u8),
    /// The timestamp holds a non-decimal or out-of-range field.
    #[error("bad timestamp: {0}")]
    BadTimestamp(String),
    /// The user-data header is malformed.
    #[error("bad user-data header: {0}")]
    BadUdh(&'static str),
    /// UCS-2 user data has an odd number of octets.
    #[error("UCS-2 user data has an odd length ({0} octets)")]
    OddUcs2(usize),
    /// The text needs more parts (or characters) than allowed.
    #[error("text too long: {0}")]
    TooLong(String),
    /// The parts given cannot be reassembled into one message.
    #[error("cannot reassemble: {0}")]
    Reassembly(&'static str),
}

/// One PDU as `AT+CMGS` (or `+CMT`) carries it: the TPDU length in octets
/// (what `AT+CMGS=<len>` wants: the SMSC prefix is not counted) and the whole
/// PDU as upper-case hex, SMSC prefix included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PduPart {
    tpdu_len: usize,
    hex: String,
}

impl PduPart {
    /// Checks a stored PDU: `hex` must be hex and, after its SMSC prefix,
    /// exactly `tpdu_len` octets long.
    pub fn from_hex(tpdu_len: usize, hex: &str) -> Result<PduPart, PduError> {
        let bytes = hex::decode(hex)?;
        let smsc_len = usize::from(*bytes.first().ok_or(PduError::Truncated("SMSC length"))?);
        if bytes.len() != 1 + smsc_len + tpdu_len {
            return Err(PduError::Truncated("TPDU (length does not match)"));
        }
        Ok(PduPart::new(tpdu_len, &bytes))
    }

    pub(crate) fn new(tpdu_len: usize, bytes: &[u8]) -> PduPart {
        PduPart {
            tpdu_len,
            hex: hex::encode(bytes),
        }
    }

    /// TPDU length in octets, for `AT+CMGS=<len>`.
    pub fn tpdu_len(&self) -> usize {
        self.tpdu_len
    }

    /// The PDU as upper-case hex, SMSC prefix included.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}
