//! SMS-DELIVER (23.040 §9.2.2.1): what `+CMT` and `AT+CMGR` hand us.
//! Decoding reads the SMSC prefix, the sender (number or alphanumeric), the
//! timestamp with its zone, the DCS (7-bit, 8-bit, UCS-2) and the user-data
//! header; [`reassemble`] joins the parts of a long message. Encoding is for
//! the modem emulator.
//!
//! Owns the SMS-DELIVER layout. Never panics on any hex.

use super::address::{self, Address};
use super::reader::Reader;
use super::timestamp::Timestamp;
use super::userdata::{self, Concat, Payload, UserDataHeader};
use super::{PduError, PduPart, hex};

/// A decoded SMS-DELIVER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsDeliver {
    /// The service centre, from the PDU's prefix (`None` when `00`).
    pub smsc: Option<Address>,
    /// TP-OA: who sent it.
    pub sender: Address,
    /// TP-PID.
    pub protocol_id: u8,
    /// TP-DCS.
    pub dcs: u8,
    /// TP-SCTS: when the service centre got it.
    pub timestamp: Timestamp,
    /// The user-data header, when TP-UDHI is set.
    pub header: Option<UserDataHeader>,
    /// The user data.
    pub payload: Payload,
}

impl SmsDeliver {
    /// The text (`None` for 8-bit data).
    pub fn text(&self) -> Option<String> {
        self.payload.text()
    }

    /// Concatenation info, for a part of a long message.
    pub fn concat(&self) -> Option<Concat> {
        self.header.as_ref().and_then(UserDataHeader::concat)
    }
}

/// Decodes an SMS-DELIVER PDU given as hex, SMSC prefix included.
pub fn decode(pdu_hex: &str) -> Result<SmsDeliver, PduError> {
    let bytes = hex::decode(pdu_hex.trim())?;
    let mut r = Reader::new(&bytes);
    let smsc = address::read_smsc(&mut r)?;
    let first = r.u8("first octet")?;
    if first & 0x03 != 0x00 {
        return Err(PduError::WrongType {
            expected: "SMS-DELIVER",
            mti: first & 0x03,
        });
    }
    let sender = address::read(&mut r, "TP-OA")?;
    let protocol_id = r.u8("TP-PID")?;
    let dcs = r.u8("TP-DCS")?;
    let timestamp = Timestamp::decode(r.take(7, "TP-SCTS")?)?;
    let udl = r.u8("TP-UDL")?;
    let alphabet = userdata::sms_alphabet(dcs)?;
    let (header, payload) = userdata::decode(alphabet, first & 0x40 != 0, udl, r.rest())?;
    Ok(SmsDeliver {
        smsc,
        sender,
        protocol_id,
        dcs,
        timestamp,
        header,
        payload,
    })
}

/// Joins the parts of a concatenated message, in any order: all must carry
/// the same sender, reference and total, and every sequence number exactly
/// once. A single unconcatenated message is returned as it is.
pub fn reassemble(parts: &[&SmsDeliver]) -> Result<Payload, PduError> {
    let [first, ..] = parts else {
        return Err(PduError::Reassembly("no parts"));
    };
    let Some(head) = first.concat() else {
        return match parts {
            [only] => Ok(only.payload.clone()),
            _ => Err(PduError::Reassembly("a part has no concatenation header")),
        };
    };
    if parts.len() != usize::from(head.total) {
        return Err(PduError::Reassembly(
            "the number of parts differs from their total",
        ));
    }
    let mut ordered: Vec<Option<&SmsDeliver>> = vec![None; parts.len()];
    for part in parts {
        let c = part
            .concat()
            .ok_or(PduError::Reassembly("a part has no concatenation header"))?;
        if c.reference != head.reference || c.total != head.total || part.sender != first.sender {
            return Err(PduError::Reassembly("parts belong to different messages"));
        }
        let slot = ordered
            .get_mut(usize::from(c.sequence).saturating_sub(1))
            .ok_or(PduError::Reassembly("sequence number past the total"))?;
        if slot.replace(part).is_some() {
            return Err(PduError::Reassembly("a sequence number appears twice"));
        }
    }
    let mut payload: Option<Payload> = None;
    for part in ordered.into_iter().flatten() {
        match payload.as_mut() {
            None => payload = Some(part.payload.clone()),
            Some(p) => p.append(&part.payload)?,
        }
    }
    payload.ok_or(PduError::Reassembly("no parts"))
}

/// What the emulator puts in an SMS-DELIVER besides the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverOptions {
    /// The SMSC prefix (`None` for `00`).
    pub smsc: Option<String>,
    /// TP-SCTS.
    pub timestamp: Timestamp,
    /// Concatenation reference for long texts.
    pub reference: u8,
}

/// Encodes `text` from `sender` (a number, or up to 11 GSM 7-bit characters
/// for an alphanumeric sender) as one SMS-DELIVER per part.
pub fn encode(
    sender: &str,
    text: &str,
    options: &DeliverOptions,
) -> Result<Vec<PduPart>, PduError> {
    let oa = match address::encode_number(sender) {
        Ok(oa) => oa,
        Err(_) => address::encode_alphanumeric(sender)?,
    };
    let smsc = address::encode_smsc(options.smsc.as_deref())?;
    let encoded = userdata::encode_text(text, options.reference)?;
    let multipart = encoded.parts.len() > 1;
    Ok(encoded
        .parts
        .iter()
        .map(|part| {
            // TP-MTI SMS-DELIVER, TP-MMS (no more messages), TP-UDHI when split.
            let first = if multipart { 0x44 } else { 0x04 };
            let mut tpdu = vec![first];
            tpdu.extend_from_slice(&oa);
            tpdu.push(0x00);
            tpdu.push(encoded.alphabet.dcs());
            tpdu.extend_from_slice(&options.timestamp.encode());
            tpdu.push(part.udl);
            tpdu.extend_from_slice(&part.ud);
            let mut pdu = smsc.clone();
            pdu.extend_from_slice(&tpdu);
            PduPart::new(tpdu.len(), &pdu)
        })
        .collect())
}
