//! USSD strings (23.038 §5 for the CBS data coding scheme, §6.1.2.3 for
//! packing): requests for `AT+CUSD=1,"<enc>",15` and the text of `+CUSD`
//! answers.
//!
//! Owns how a make's answers are read: Huawei sends GSM 7-bit text packed as
//! hex (DCS 15) or UCS-2 hex (DCS 72); a modem whose character set is UCS-2
//! (`AT+CSCS="UCS2"`, Quectel) sends UCS-2 hex whatever the DCS; others send
//! plain text. Never panics on any answer.

use super::userdata::Alphabet;
use super::{PduError, gsm7, hex, ucs2};

/// The longest USSD string, in septets / characters (23.038: 182).
pub const MAX_USSD_CHARS: usize = 182;

/// How a modem encodes the text of `+CUSD` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UssdCharset {
    /// Hex, encoded as the DCS says: GSM 7-bit packed, 8-bit, or UCS-2 (Huawei).
    PackedPerDcs,
    /// UCS-2 hex whatever the DCS (character set UCS-2).
    Ucs2Hex,
    /// Plain text, as the modem's character set renders it.
    Plain,
    /// Guess: hex that decodes cleanly per the DCS (or as UCS-2), else plain.
    Auto,
}

/// The alphabet of a USSD/CBS data coding scheme, and whether a 2-character
/// language indication precedes a UCS-2 text (DCS 0x11).
pub fn ussd_alphabet(dcs: u8) -> (Alphabet, bool) {
    match dcs >> 4 {
        0x0 | 0x2 | 0x3 => (Alphabet::Gsm7, false),
        0x1 => match dcs & 0x0F {
            0x1 => (Alphabet::Ucs2, true),
            _ => (Alphabet::Gsm7, false),
        },
        0x4..=0x7 | 0x9 => match (dcs >> 2) & 0x03 {
            1 => (Alphabet::EightBit, false),
            2 => (Alphabet::Ucs2, false),
            _ => (Alphabet::Gsm7, false),
        },
        0xF if dcs & 0x04 != 0 => (Alphabet::EightBit, false),
        _ => (Alphabet::Gsm7, false),
    }
}

/// Packs a USSD request (`*100#`) as GSM 7-bit hex for DCS 15. When the last
/// octet would have 7 spare bits, a CR fills them (§6.1.2.3.1), so the
/// network does not read an `@`.
pub fn encode_request(text: &str) -> Result<String, PduError> {
    let mut septets = gsm7::encode(text)?;
    if septets.len() > MAX_USSD_CHARS {
        return Err(PduError::TooLong(format!(
            "{} septets, at most {MAX_USSD_CHARS}",
            septets.len()
        )));
    }
    if septets.len() % 8 == 7 {
        septets.push(0x0D);
    }
    Ok(hex::encode(&gsm7::pack(&septets, 0)))
}

/// A USSD request as UCS-2 hex, for modems whose character set is UCS-2.
pub fn encode_request_ucs2(text: &str) -> Result<String, PduError> {
    let units = text.encode_utf16().count();
    if units > MAX_USSD_CHARS {
        return Err(PduError::TooLong(format!(
            "{units} characters, at most {MAX_USSD_CHARS}"
        )));
    }
    Ok(hex::encode(&ucs2::encode(text)))
}

/// Unpacks GSM 7-bit USSD text from packed octets. When the octets hold a
/// whole number of septets plus 7 spare bits' worth (8 septets per 7 octets)
/// and the last is CR or `@`, it is padding and dropped (networks pad with
/// either).
fn unpack_ussd(bytes: &[u8]) -> String {
    let count = bytes.len() * 8 / 7;
    let mut septets = gsm7::unpack(bytes, count, 0);
    if bytes.len().is_multiple_of(7) && matches!(septets.last(), Some(0x0D | 0x00)) {
        septets.pop();
    }
    gsm7::decode(&septets)
}

fn decode_hex_per_dcs(text: &str, dcs: Option<u8>) -> Result<String, PduError> {
    let bytes = hex::decode(text)?;
    match ussd_alphabet(dcs.unwrap_or(0x0F)) {
        (Alphabet::Gsm7, _) => Ok(unpack_ussd(&bytes)),
        (Alphabet::EightBit, _) => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        (Alphabet::Ucs2, language) => ucs2::decode(
            bytes
                .get(if language { 2 } else { 0 }..)
                .unwrap_or_default(),
        ),
    }
}

/// The text of a `+CUSD` answer `text` with data coding scheme `dcs`, read as
/// `charset` says.
pub fn decode_reply(text: &str, dcs: Option<u8>, charset: UssdCharset) -> Result<String, PduError> {
    match charset {
        UssdCharset::Plain => Ok(text.to_owned()),
        UssdCharset::Ucs2Hex => ucs2::decode(&hex::decode(text)?),
        UssdCharset::PackedPerDcs => decode_hex_per_dcs(text, dcs),
        UssdCharset::Auto => {
            if !hex::is_hex(text) {
                return Ok(text.to_owned());
            }
            let (alphabet, _) = ussd_alphabet(dcs.unwrap_or(0x0F));
            if alphabet == Alphabet::Gsm7 && text.len().is_multiple_of(4) {
                // A UCS-2 rendering of GSM text: every unit in the BMP's
                // Latin or Cyrillic rows, nothing that is a control character.
                if let Ok(decoded) = ucs2::decode(&hex::decode(text)?)
                    && text
                        .as_bytes()
                        .chunks(4)
                        .all(|u| u.starts_with(b"00") || u.starts_with(b"04"))
                    && !decoded
                        .chars()
                        .any(|c| c.is_control() && c != '\n' && c != '\r')
                {
                    return Ok(decoded);
                }
            }
            match decode_hex_per_dcs(text, dcs) {
                Ok(decoded)
                    if !decoded
                        .chars()
                        .any(|c| c.is_control() && c != '\n' && c != '\r') =>
                {
                    Ok(decoded)
                }
                _ => Ok(text.to_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(encode_request("*100#").as_deref(), Ok("AA180C3602"));
        // 7 septets leave 7 spare bits: a CR fills them.
        let seven = encode_request("*101*1#").unwrap_or_default();
        assert_eq!(
            hex::decode(&seven).map(|b| gsm7::unpack(&b, 8, 0).last().copied()),
            Ok(Some(0x0D))
        );
        assert_eq!(
            decode_reply(&seven, Some(15), UssdCharset::PackedPerDcs).as_deref(),
            Ok("*101*1#")
        );
        assert_eq!(encode_request("Ж"), Err(PduError::NotGsm7('Ж')));
        assert!(matches!(
            encode_request(&"1".repeat(183)),
            Err(PduError::TooLong(_))
        ));
        assert_eq!(
            encode_request_ucs2("*100#").as_deref(),
            Ok("002A0031003000300023")
        );
    }

    #[test]
    fn replies_by_charset() {
        let check =
            |text: &str, dcs: Option<u8>, charset: UssdCharset, expect: Result<&str, PduError>| {
                assert_eq!(
                    decode_reply(text, dcs, charset).as_deref(),
                    expect.as_deref(),
                    "{text} {dcs:?} {charset:?}"
                );
            };
        let balance = "Баланс: 100 руб.";
        let balance_hex = hex::encode(&ucs2::encode(balance));
        check(
            &balance_hex,
            Some(72),
            UssdCharset::PackedPerDcs,
            Ok(balance),
        );
        check(&balance_hex, Some(72), UssdCharset::Auto, Ok(balance));
        check(&balance_hex, Some(15), UssdCharset::Ucs2Hex, Ok(balance));
        check(&balance_hex, Some(15), UssdCharset::Auto, Ok(balance));
        let emoji = hex::encode(&ucs2::encode("Hi 😀"));
        check(&emoji, Some(72), UssdCharset::PackedPerDcs, Ok("Hi 😀"));
        let packed = encode_request("Balance 100.50 RUB").unwrap_or_default();
        check(
            &packed,
            Some(15),
            UssdCharset::PackedPerDcs,
            Ok("Balance 100.50 RUB"),
        );
        check(
            &packed,
            Some(15),
            UssdCharset::Auto,
            Ok("Balance 100.50 RUB"),
        );
        check(
            &packed,
            None,
            UssdCharset::PackedPerDcs,
            Ok("Balance 100.50 RUB"),
        );
        check("Balance 5", Some(15), UssdCharset::Auto, Ok("Balance 5"));
        check("Balance 5", Some(15), UssdCharset::Plain, Ok("Balance 5"));
        check(
            "ZZ",
            Some(15),
            UssdCharset::PackedPerDcs,
            Err(PduError::NotHex(0)),
        );
        check(
            "041",
            Some(72),
            UssdCharset::Ucs2Hex,
            Err(PduError::OddHexLength(3)),
        );
        check(
            "0411AB",
            Some(72),
            UssdCharset::PackedPerDcs,
            Err(PduError::OddUcs2(3)),
        );
        // DCS 0x11: a 2-character language indication precedes the UCS-2 text.
        check(
            &format!("6572{balance_hex}"),
            Some(0x11),
            UssdCharset::PackedPerDcs,
            Ok(balance),
        );
        check(
            "48656C6C6F",
            Some(0x44),
            UssdCharset::PackedPerDcs,
            Ok("Hello"),
        );
    }

    #[test]
    fn alphabets() {
        assert_eq!(ussd_alphabet(0x0F), (Alphabet::Gsm7, false));
        assert_eq!(ussd_alphabet(0x48), (Alphabet::Ucs2, false));
        assert_eq!(ussd_alphabet(0x44), (Alphabet::EightBit, false));
        assert_eq!(ussd_alphabet(0x11), (Alphabet::Ucs2, true));
        assert_eq!(ussd_alphabet(0x10), (Alphabet::Gsm7, false));
        assert_eq!(ussd_alphabet(0xF4), (Alphabet::EightBit, false));
    }
}
