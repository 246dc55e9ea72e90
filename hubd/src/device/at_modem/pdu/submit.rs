//! SMS-SUBMIT (23.040 §9.2.2.2): what `AT+CMGS` sends. Encoding splits long
//! texts into concatenated parts; decoding is for the modem emulator, which
//! receives what the driver sends.
//!
//! Owns the SMS-SUBMIT layout: `00` (the SIM's SMSC), first octet, TP-MR,
//! TP-DA, TP-PID, TP-DCS, TP-VP (relative), TP-UDL, TP-UD. Never panics.

use super::address::{self, Address};
use super::reader::Reader;
use super::userdata::{self, Alphabet, Concat, Payload, UserDataHeader};
use super::{PduError, PduPart, hex};

/// Choices for an outgoing SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitOptions {
    /// TP-VP, relative format (0xAA = 4 days); `None` leaves it out.
    pub validity: Option<u8>,
    /// Ask for a status report (TP-SRR).
    pub status_report: bool,
    /// The concatenation reference shared by the parts of a long text; use a
    /// different one for each long message.
    pub reference: u8,
}

impl Default for SubmitOptions {
    fn default() -> SubmitOptions {
        SubmitOptions {
            validity: Some(0xAA),
            status_report: false,
            reference: 0,
        }
    }
}

/// Encodes `text` to `destination` (`+` and digits for international,
/// digits alone as dialled) as one SMS-SUBMIT per part, each with the
/// `00` SMSC prefix: send each with [`crate::device::at_modem::Command::sms_submit`].
pub fn encode(
    destination: &str,
    text: &str,
    options: &SubmitOptions,
) -> Result<Vec<PduPart>, PduError> {
    let da = address::encode_number(destination)?;
    let encoded = userdata::encode_text(text, options.reference)?;
    let multipart = encoded.parts.len() > 1;
    Ok(encoded
        .parts
        .iter()
        .map(|part| {
            let mut first = 0x01; // TP-MTI: SMS-SUBMIT
            if options.validity.is_some() {
                first |= 0x10; // TP-VPF: relative
            }
            if options.status_report {
                first |= 0x20; // TP-SRR
            }
            if multipart {
                first |= 0x40; // TP-UDHI
            }
            let mut tpdu = vec![first, 0x00]; // TP-MR: the modem sets it
            tpdu.extend_from_slice(&da);
            tpdu.push(0x00); // TP-PID
            tpdu.push(encoded.alphabet.dcs());
            tpdu.extend(options.validity);
            tpdu.push(part.udl);
            tpdu.extend_from_slice(&part.ud);
            let mut pdu = vec![0x00];
            pdu.extend_from_slice(&tpdu);
            PduPart::new(tpdu.len(), &pdu)
        })
        .collect())
}

/// A decoded SMS-SUBMIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsSubmit {
    /// The SMSC prefix, when not `00`.
    pub smsc: Option<Address>,
    /// TP-MR.
    pub message_reference: u8,
    /// TP-DA.
    pub destination: Address,
    /// TP-SRR.
    pub status_report: bool,
    /// TP-PID.
    pub protocol_id: u8,
    /// TP-DCS.
    pub dcs: u8,
    /// TP-VP when relative.
    pub validity: Option<u8>,
    /// The user-data header, when TP-UDHI is set.
    pub header: Option<UserDataHeader>,
    /// The user data.
    pub payload: Payload,
}

impl SmsSubmit {
    /// The text (`None` for 8-bit data).
    pub fn text(&self) -> Option<String> {
        self.payload.text()
    }

    /// Concatenation info, for a part of a long message.
    pub fn concat(&self) -> Option<Concat> {
        self.header.as_ref().and_then(UserDataHeader::concat)
    }
}

/// Decodes an SMS-SUBMIT PDU given as hex, SMSC prefix included.
pub fn decode(pdu_hex: &str) -> Result<SmsSubmit, PduError> {
    let bytes = hex::decode(pdu_hex.trim())?;
    let mut r = Reader::new(&bytes);
    let smsc = address::read_smsc(&mut r)?;
    let first = r.u8("first octet")?;
    if first & 0x03 != 0x01 {
        return Err(PduError::WrongType {
            expected: "SMS-SUBMIT",
            mti: first & 0x03,
        });
    }
    let message_reference = r.u8("TP-MR")?;
    let destination = address::read(&mut r, "TP-DA")?;
    let protocol_id = r.u8("TP-PID")?;
    let dcs = r.u8("TP-DCS")?;
    let validity = match (first >> 3) & 0x03 {
        0b00 => None,
        0b10 => Some(r.u8("TP-VP")?),
        _ => {
            r.take(7, "TP-VP")?;
            None
        }
    };
    let udl = r.u8("TP-UDL")?;
    let alphabet: Alphabet = userdata::sms_alphabet(dcs)?;
    let (header, payload) = userdata::decode(alphabet, first & 0x40 != 0, udl, r.rest())?;
    Ok(SmsSubmit {
        smsc,
        message_reference,
        destination,
        status_report: first & 0x20 != 0,
        protocol_id,
        dcs,
        validity,
        header,
        payload,
    })
}
