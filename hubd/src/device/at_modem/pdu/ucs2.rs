//! UCS-2 as SMS and USSD use it: UTF-16 big-endian, so characters outside
//! the BMP (emoji) travel as surrogate pairs. Never panics; an unpaired
//! surrogate decodes to U+FFFD.

use super::PduError;

/// UTF-16BE bytes of `text`.
pub fn encode(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// Text of UTF-16BE `bytes`; an odd length is an error.
pub fn decode(bytes: &[u8]) -> Result<String, PduError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(PduError::OddUcs2(bytes.len()));
    }
    let units = bytes
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]));
    Ok(char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_cyrillic_and_emoji() {
        for text in ["Баланс: 100 руб.", "Hi 😀!", ""] {
            assert_eq!(decode(&encode(text)).as_deref(), Ok(text));
        }
        assert_eq!(encode("Б😀"), vec![0x04, 0x11, 0xD8, 0x3D, 0xDE, 0x00]);
        assert_eq!(decode(&[0xD8, 0x3D]).as_deref(), Ok("\u{FFFD}"));
        assert_eq!(decode(&[0x00]), Err(PduError::OddUcs2(1)));
    }
}
