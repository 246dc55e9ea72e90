//! Hex text ↔ bytes, as AT commands carry PDUs. Owns nothing else; never
//! panics.

use super::PduError;

/// Upper-case hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0F)]));
    }
    s
}

/// The bytes of hex text (either case, no separators).
pub fn decode(text: &str) -> Result<Vec<u8>, PduError> {
    let raw = text.as_bytes();
    if !raw.len().is_multiple_of(2) {
        return Err(PduError::OddHexLength(raw.len()));
    }
    let digit = |i: usize| -> Result<u8, PduError> {
        let c = raw.get(i).copied().ok_or(PduError::NotHex(i))?;
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
            .ok_or(PduError::NotHex(i))
    };
    (0..raw.len() / 2)
        .map(|i| Ok((digit(2 * i)? << 4) | digit(2 * i + 1)?))
        .collect()
}

/// Whether `text` is non-empty, even-length hex.
pub fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_hex() {
        assert_eq!(encode(&[0x00, 0xAB, 0x1f]), "00AB1F");
        assert_eq!(decode("00ab1F"), Ok(vec![0x00, 0xAB, 0x1F]));
        assert_eq!(decode(""), Ok(vec![]));
        assert_eq!(decode("ABC"), Err(PduError::OddHexLength(3)));
        assert_eq!(decode("0G"), Err(PduError::NotHex(1)));
        assert_eq!(decode("ЖЖ"), Err(PduError::NotHex(0)));
        assert!(is_hex("0a"));
        assert!(!is_hex(""));
        assert!(!is_hex("0"));
    }
}
