//! Addresses in PDUs (23.040 §9.1.2.5): the SMSC prefix, the destination of
//! an SMS-SUBMIT and the sender of an SMS-DELIVER, as semi-octet digits or
//! (senders only) GSM 7-bit alphanumeric text such as `Bank`.
//!
//! Owns the type-of-address octet and semi-octet order. Never panics.

use super::reader::Reader;
use super::{PduError, gsm7};

/// Type of address: international number (`+` in text form).
pub const TOA_INTERNATIONAL: u8 = 0x91;
/// Type of address: number as dialled (national format).
pub const TOA_UNKNOWN: u8 = 0x81;
/// Type of address: alphanumeric (GSM 7-bit).
pub const TOA_ALPHANUMERIC: u8 = 0xD0;

/// The longest number, in digits.
const MAX_DIGITS: usize = 20;

/// The type of number of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberKind {
    /// TON 1: international; shown with a leading `+`.
    International,
    /// TON 2: national.
    National,
    /// TON 0: unknown (as dialled).
    Unknown,
    /// TON 5: alphanumeric text.
    Alphanumeric,
    /// Any other TON (network specific, subscriber, abbreviated).
    Other(u8),
}

/// An address as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The number (with `+` when international) or the alphanumeric text.
    pub text: String,
    /// The type-of-address octet.
    pub type_of_address: u8,
}

impl Address {
    /// The type of number.
    pub fn kind(&self) -> NumberKind {
        match (self.type_of_address >> 4) & 0x07 {
            0 => NumberKind::Unknown,
            1 => NumberKind::International,
            2 => NumberKind::National,
            5 => NumberKind::Alphanumeric,
            other => NumberKind::Other(other),
        }
    }
}

/// Semi-octet digit → character (`*`, `#`, `a`–`c` for 0xA–0xE).
fn digit_char(nibble: u8) -> Option<char> {
    match nibble {
        0..=9 => Some(char::from(b'0' + nibble)),
        0xA => Some('*'),
        0xB => Some('#'),
        0xC => Some('a'),
        0xD => Some('b'),
        0xE => Some('c'),
        _ => None,
    }
}

/// Packs digits into swapped semi-octets, `F`-padded.
fn pack_digits(digits: &[u8]) -> Vec<u8> {
    digits
        .chunks(2)
        .map(|pair| match pair {
            [a, b] => (b << 4) | a,
            [a] => 0xF0 | a,
            _ => 0xFF,
        })
        .collect()
}

/// Splits a number into its type of address and digit values: a leading `+`
/// means international; digits only, 1–20 of them.
fn parse_number(number: &str) -> Result<(u8, Vec<u8>), PduError> {
    let (toa, digits) = match number.strip_prefix('+') {
        Some(rest) => (TOA_INTERNATIONAL, rest),
        None => (TOA_UNKNOWN, number),
    };
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(PduError::BadAddress(format!(
            "{number:?} is not an optional + and 1 to {MAX_DIGITS} digits"
        )));
    }
    Ok((toa, digits.bytes().map(|b| b - b'0').collect()))
}

/// Encodes a destination or sender number as TP-DA / TP-OA: length in
/// digits, type of address, semi-octets.
pub fn encode_number(number: &str) -> Result<Vec<u8>, PduError> {
    let (toa, digits) = parse_number(number)?;
    let mut out = vec![digits.len() as u8, toa];
    out.extend(pack_digits(&digits));
    Ok(out)
}

/// Encodes an alphanumeric sender (at most 11 GSM 7-bit characters).
pub fn encode_alphanumeric(text: &str) -> Result<Vec<u8>, PduError> {
    let septets = gsm7::encode(text)?;
    if septets.is_empty() || septets.len() > 11 {
        return Err(PduError::BadAddress(format!(
            "{text:?} is not 1 to 11 GSM 7-bit characters"
        )));
    }
    let packed = gsm7::pack(&septets, 0);
    let semi_octets = (septets.len() * 7).div_ceil(4);
    let mut out = vec![semi_octets as u8, TOA_ALPHANUMERIC];
    out.extend(packed);
    Ok(out)
}

/// Encodes the SMSC prefix: length in octets (type of address included),
/// type of address, semi-octets; `None` is `00` (the SIM's SMSC).
pub fn encode_smsc(number: Option<&str>) -> Result<Vec<u8>, PduError> {
    let Some(number) = number else {
        return Ok(vec![0]);
    };
    let (toa, digits) = parse_number(number)?;
    let packed = pack_digits(&digits);
    let mut out = vec![packed.len() as u8 + 1, toa];
    out.extend(packed);
    Ok(out)
}

/// Decodes semi-octet digits; `F` is allowed only as the last, padding nibble.
fn decode_digits(bytes: &[u8], count: usize, field: &'static str) -> Result<String, PduError> {
    let mut s = String::with_capacity(count);
    for i in 0..count {
        let byte = bytes
            .get(i / 2)
            .copied()
            .ok_or(PduError::Truncated(field))?;
        let nibble = if i % 2 == 0 { byte & 0x0F } else { byte >> 4 };
        let c = digit_char(nibble)
            .ok_or_else(|| PduError::BadAddress(format!("{field}: semi-octet 0x{nibble:X}")))?;
        s.push(c);
    }
    Ok(s)
}

/// Reads TP-OA / TP-DA (length in semi-octets).
pub fn read(r: &mut Reader<'_>, field: &'static str) -> Result<Address, PduError> {
    let semi_octets = usize::from(r.u8(field)?);
    if semi_octets > MAX_DIGITS {
        return Err(PduError::BadAddress(format!(
            "{field}: {semi_octets} semi-octets"
        )));
    }
    let type_of_address = r.u8(field)?;
    let bytes = r.take(semi_octets.div_ceil(2), field)?;
    let mut address = Address {
        text: String::new(),
        type_of_address,
    };
    if address.kind() == NumberKind::Alphanumeric {
        let septets = gsm7::unpack(bytes, semi_octets * 4 / 7, 0);
        address.text = gsm7::decode(&septets);
    } else {
        let digits = decode_digits(bytes, semi_octets, field)?;
        if address.kind() == NumberKind::International {
            address.text.push('+');
        }
        address.text.push_str(&digits);
    }
    Ok(address)
}

/// Reads the SMSC prefix (length in octets); `None` when it is `00`.
pub fn read_smsc(r: &mut Reader<'_>) -> Result<Option<Address>, PduError> {
    let len = usize::from(r.u8("SMSC address")?);
    if len == 0 {
        return Ok(None);
    }
    if len > 11 {
        return Err(PduError::BadAddress(format!("SMSC address: {len} octets")));
    }
    let type_of_address = r.u8("SMSC address")?;
    let bytes = r.take(len - 1, "SMSC address")?;
    let mut count = bytes.len() * 2;
    if bytes.last().is_some_and(|b| b >> 4 == 0xF) {
        count -= 1;
    }
    let digits = decode_digits(bytes, count, "SMSC address")?;
    let mut text = String::new();
    if (type_of_address >> 4) & 0x07 == 1 {
        text.push('+');
    }
    text.push_str(&digits);
    Ok(Some(Address {
        text,
        type_of_address,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    fn read_hex(h: &str) -> Result<Address, PduError> {
        let bytes = hex::decode(h)?;
        read(&mut Reader::new(&bytes), "address")
    }

    #[test]
    fn numbers() {
        assert_eq!(
            encode_number("+46708251358").map(|b| hex::encode(&b)),
            Ok("0B916407281553F8".to_owned())
        );
        assert_eq!(
            encode_number("89161234567").map(|b| hex::encode(&b)),
            Ok("0B819861214365F7".to_owned())
        );
        assert!(encode_number("+").is_err());
        assert!(encode_number("12a").is_err());
        assert!(encode_number(&"1".repeat(21)).is_err());
        let a = read_hex("0B916407281553F8");
        assert_eq!(a.as_ref().map(|a| a.text.as_str()), Ok("+46708251358"));
        assert_eq!(a.map(|a| a.kind()), Ok(NumberKind::International));
        assert_eq!(
            read_hex("0BC87238880900F1").map(|a| a.text),
            Ok("27838890001".to_owned())
        );
        assert_eq!(read_hex("0B91640728"), Err(PduError::Truncated("address")));
        assert!(matches!(read_hex("04910F12"), Err(PduError::BadAddress(_))));
        assert!(matches!(read_hex("3091"), Err(PduError::BadAddress(_))));
    }

    #[test]
    fn alphanumeric_senders() {
        let encoded = encode_alphanumeric("Bank").unwrap_or_default();
        assert_eq!(hex::encode(&encoded), "07D0C2B07B0D");
        let a = read_hex("07D0C2B07B0D");
        assert_eq!(a.as_ref().map(|a| a.text.as_str()), Ok("Bank"));
        assert_eq!(a.map(|a| a.kind()), Ok(NumberKind::Alphanumeric));
        // "MegaFon" as operators send it.
        let encoded = encode_alphanumeric("MegaFon").unwrap_or_default();
        assert_eq!(
            read_hex(&hex::encode(&encoded)).map(|a| a.text),
            Ok("MegaFon".to_owned())
        );
        assert!(encode_alphanumeric("ThisIsTooLong").is_err());
    }

    #[test]
    fn smsc() {
        let bytes = hex::decode("07917283010010F5").unwrap_or_default();
        let smsc = read_smsc(&mut Reader::new(&bytes));
        assert_eq!(
            smsc.map(|a| a.map(|a| a.text)),
            Ok(Some("+27381000015".to_owned()))
        );
        assert_eq!(
            encode_smsc(Some("+27381000015")).map(|b| hex::encode(&b)),
            Ok("07917283010010F5".to_owned())
        );
        assert_eq!(encode_smsc(None), Ok(vec![0]));
        assert_eq!(read_smsc(&mut Reader::new(&[0])), Ok(None));
        assert!(read_smsc(&mut Reader::new(&[0x0C])).is_err());
    }
}
