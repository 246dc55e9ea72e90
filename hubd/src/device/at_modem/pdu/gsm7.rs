//! The GSM 7-bit default alphabet (23.038 §6.2.1), its extension table
//! (§6.2.1.1, reached through ESC 0x1B), and septet packing (§6.1.2.1).
//!
//! Owns the character tables and the bit packing. Never decides on a data
//! coding scheme and never panics: unpacking stops where the bytes end.

use super::PduError;

/// The escape to the extension table.
pub const ESC: u8 = 0x1B;

/// The default alphabet, indexed by septet. 0x1B (ESC) decodes to a space
/// when it is not followed by an extension character.
pub const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', ' ', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: septet after ESC → character.
pub const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The septets of `c`: one from the default alphabet, or ESC and one from the
/// extension table; `None` when `c` has no GSM 7-bit encoding.
pub fn septets_of(c: char) -> Option<&'static [u8]> {
    /// Every septet value, so a `&'static [u8]` of one can be handed out.
    const ALL: [u8; 128] = {
        let mut all = [0u8; 128];
        let mut i = 0;
        while i < 128 {
            all[i] = i as u8;
            i += 1;
        }
        all
    };
    /// ESC followed by each extension code.
    const EXT_PAIRS: [[u8; 2]; 10] = {
        let mut pairs = [[0u8; 2]; 10];
        let mut i = 0;
        while i < 10 {
            pairs[i] = [ESC, EXTENSION[i].0];
            i += 1;
        }
        pairs
    };
    if c == ' ' {
        return Some(&ALL[0x20..0x21]);
    }
    if let Some(i) = BASIC.iter().position(|&b| b == c)
        && i != usize::from(ESC)
    {
        return ALL.get(i..i + 1);
    }
    EXTENSION
        .iter()
        .position(|&(_, e)| e == c)
        .and_then(|i| EXT_PAIRS.get(i))
        .map(|pair| pair.as_slice())
}

/// The septets of `text`, or the first character that has none.
pub fn encode(text: &str) -> Result<Vec<u8>, PduError> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        out.extend_from_slice(septets_of(c).ok_or(PduError::NotGsm7(c))?);
    }
    Ok(out)
}

/// Whether every character of `text` has a GSM 7-bit encoding.
pub fn can_encode(text: &str) -> bool {
    text.chars().all(|c| septets_of(c).is_some())
}

/// The text of `septets`. An ESC before an unknown code decodes as that
/// code's default character (23.038's fallback); a trailing ESC is dropped.
pub fn decode(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut iter = septets.iter().map(|s| s & 0x7F);
    while let Some(s) = iter.next() {
        if s == ESC {
            if let Some(code) = iter.next() {
                let ext = EXTENSION.iter().find(|&&(k, _)| k == code).map(|&(_, c)| c);
                out.push(ext.unwrap_or(BASIC[usize::from(code & 0x7F)]));
            }
        } else {
            out.push(BASIC[usize::from(s)]);
        }
    }
    out
}

/// Packs septets into octets, starting `fill_bits` (0–6) bits in: the padding
/// that aligns text after a user-data header.
pub fn pack(septets: &[u8], fill_bits: u8) -> Vec<u8> {
    let fill = usize::from(fill_bits % 7);
    let total_bits = fill + septets.len() * 7;
    let mut out = vec![0u8; total_bits.div_ceil(8)];
    for (i, &s) in septets.iter().enumerate() {
        let bit = fill + i * 7;
        let value = u16::from(s & 0x7F) << (bit % 8);
        if let Some(b) = out.get_mut(bit / 8) {
            *b |= value.to_le_bytes()[0];
        }
        if let Some(b) = out.get_mut(bit / 8 + 1) {
            *b |= value.to_le_bytes()[1];
        }
    }
    out
}

/// Unpacks up to `count` septets from `bytes`, skipping `fill_bits` first;
/// returns fewer when the bytes end.
pub fn unpack(bytes: &[u8], count: usize, fill_bits: u8) -> Vec<u8> {
    let fill = usize::from(fill_bits % 7);
    let available = (bytes.len() * 8).saturating_sub(fill) / 7;
    (0..count.min(available))
        .map(|i| {
            let bit = fill + i * 7;
            let lo = bytes.get(bit / 8).copied().unwrap_or(0);
            let hi = bytes.get(bit / 8 + 1).copied().unwrap_or(0);
            let both = u16::from_le_bytes([lo, hi]);
            ((both >> (bit % 8)) & 0x7F) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellohello_packs_as_in_23_040_examples() {
        let septets = encode("hellohello").unwrap_or_default();
        assert_eq!(
            super::super::hex::encode(&pack(&septets, 0)),
            "E8329BFD4697D9EC37"
        );
        let bytes = pack(&septets, 0);
        assert_eq!(decode(&unpack(&bytes, 10, 0)), "hellohello");
    }

    #[test]
    fn extension_table_and_fill_bits() {
        assert_eq!(encode("€[]"), Ok(vec![ESC, 0x65, ESC, 0x3C, ESC, 0x3E]));
        assert_eq!(encode("a Ж"), Err(PduError::NotGsm7('Ж')));
        assert!(can_encode("Price: 5€ {ok} ~ ^ | \\"));
        assert!(!can_encode("ç"));
        let all: String = BASIC
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 0x1B)
            .map(|(_, c)| *c)
            .collect();
        let ext: String = EXTENSION.iter().map(|(_, c)| *c).collect();
        for text in [all.as_str(), ext.as_str(), "@@@@@@@", ""] {
            for fill in 0..7 {
                let septets = encode(text).unwrap_or_default();
                let unpacked = unpack(&pack(&septets, fill), septets.len(), fill);
                assert_eq!(decode(&unpacked), text, "fill {fill}");
            }
        }
        // Unknown extension code falls back to the default character; a
        // trailing ESC is dropped; ESC alone is not encodable as text.
        assert_eq!(decode(&[ESC, 0x41, 0x42, ESC]), "AB");
        assert_eq!(septets_of('\u{1B}'), None);
        assert_eq!(unpack(&[0xFF], 5, 0).len(), 1);
    }
}
