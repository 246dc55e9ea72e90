//! User data of SMS PDUs: the data coding scheme (23.038 §4), the user-data
//! header with its concatenation element (23.040 §9.2.3.24), splitting long
//! texts into parts, and the decoded payload.
//!
//! Owns choosing GSM 7-bit when every character fits (extension table
//! included) and UCS-2 otherwise; never splits an escape pair or a surrogate
//! pair across parts. Never panics on any user data.

use super::{PduError, gsm7, ucs2};

/// How the user data is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// GSM 7-bit default alphabet, packed.
    Gsm7,
    /// 8-bit data.
    EightBit,
    /// UCS-2 (UTF-16BE).
    Ucs2,
}

impl Alphabet {
    /// The plain DCS for this alphabet (no class, not compressed).
    pub fn dcs(self) -> u8 {
        match self {
            Alphabet::Gsm7 => 0x00,
            Alphabet::EightBit => 0x04,
            Alphabet::Ucs2 => 0x08,
        }
    }
}

/// The alphabet an SMS data coding scheme selects (23.038 §4).
pub fn sms_alphabet(dcs: u8) -> Result<Alphabet, PduError> {
    let by_bits = |dcs: u8| match (dcs >> 2) & 0x03 {
        1 => Alphabet::EightBit,
        2 => Alphabet::Ucs2,
        _ => Alphabet::Gsm7,
    };
    Ok(match dcs >> 4 {
        // General data coding (00xx) and automatic deletion (01xx).
        0x0..=0x7 => {
            if dcs & 0x20 != 0 {
                return Err(PduError::Compressed(dcs));
            }
            by_bits(dcs)
        }
        // Message waiting indication: discard/store with GSM 7-bit, store with UCS-2.
        0xC | 0xD => Alphabet::Gsm7,
        0xE => Alphabet::Ucs2,
        // Data coding / message class.
        0xF if dcs & 0x04 != 0 => Alphabet::EightBit,
        // 0xF with bit 2 clear, and reserved groups (treated as GSM 7-bit, as the spec says).
        _ => Alphabet::Gsm7,
    })
}

/// One information element of a user-data header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InformationElement {
    /// The element identifier (0x00 concatenation, 0x08 concatenation with a
    /// 16-bit reference…).
    pub id: u8,
    /// Its data.
    pub data: Vec<u8>,
}

/// Where a part belongs in a concatenated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Concat {
    /// The reference shared by all parts (8 or 16 bits).
    pub reference: u16,
    /// How many parts (1–255).
    pub total: u8,
    /// This part's number (1-based).
    pub sequence: u8,
}

/// A user-data header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserDataHeader {
    /// Its elements, in order.
    pub elements: Vec<InformationElement>,
}

impl UserDataHeader {
    /// The concatenation element, if there is a valid one (a sequence of 0 or
    /// past the total means "ignore the element", 23.040).
    pub fn concat(&self) -> Option<Concat> {
        self.elements.iter().find_map(|ie| {
            let (reference, total, sequence) = match (ie.id, ie.data.as_slice()) {
                (0x00, &[r, t, s]) => (u16::from(r), t, s),
                (0x08, &[r1, r2, t, s]) => (u16::from_be_bytes([r1, r2]), t, s),
                _ => return None,
            };
            (total >= 1 && (1..=total).contains(&sequence)).then_some(Concat {
                reference,
                total,
                sequence,
            })
        })
    }

    fn parse(bytes: &[u8]) -> Result<UserDataHeader, PduError> {
        let mut elements = Vec::new();
        let mut rest = bytes;
        while let [id, len, tail @ ..] = rest {
            let data = tail
                .get(..usize::from(*len))
                .ok_or(PduError::BadUdh("element runs past the header"))?;
            elements.push(InformationElement {
                id: *id,
                data: data.to_vec(),
            });
            rest = tail.get(usize::from(*len)..).unwrap_or_default();
        }
        if !rest.is_empty() {
            return Err(PduError::BadUdh("one stray octet at the end"));
        }
        Ok(UserDataHeader { elements })
    }
}

/// The decoded user data, without its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// GSM 7-bit text, as septets (one per byte, unpacked).
    Gsm7(Vec<u8>),
    /// 8-bit data.
    EightBit(Vec<u8>),
    /// UCS-2 text, as UTF-16BE bytes (even length).
    Ucs2(Vec<u8>),
}

impl Payload {
    /// The text; `None` for 8-bit data.
    pub fn text(&self) -> Option<String> {
        match self {
            Payload::Gsm7(septets) => Some(gsm7::decode(septets)),
            Payload::Ucs2(bytes) => ucs2::decode(bytes).ok(),
            Payload::EightBit(_) => None,
        }
    }

    /// Appends `other` (same alphabet), for reassembly.
    pub(super) fn append(&mut self, other: &Payload) -> Result<(), PduError> {
        match (self, other) {
            (Payload::Gsm7(a), Payload::Gsm7(b))
            | (Payload::EightBit(a), Payload::EightBit(b))
            | (Payload::Ucs2(a), Payload::Ucs2(b)) => {
                a.extend_from_slice(b);
                Ok(())
            }
            _ => Err(PduError::Reassembly("parts use different alphabets")),
        }
    }
}

/// Decodes TP-UD of `udl` (septets for GSM 7-bit, octets otherwise) from
/// `ud` (what follows TP-UDL).
pub fn decode(
    alphabet: Alphabet,
    has_header: bool,
    udl: u8,
    ud: &[u8],
) -> Result<(Option<UserDataHeader>, Payload), PduError> {
    let udl = usize::from(udl);
    let octets = match alphabet {
        Alphabet::Gsm7 => (udl * 7).div_ceil(8),
        Alphabet::EightBit | Alphabet::Ucs2 => udl,
    };
    let ud = ud.get(..octets).ok_or(PduError::Truncated("TP-UD"))?;
    let (header, body_start) = if has_header {
        let udhl = usize::from(*ud.first().ok_or(PduError::BadUdh("no header length"))?);
        let bytes = ud
            .get(1..1 + udhl)
            .ok_or(PduError::BadUdh("header longer than the user data"))?;
        (Some(UserDataHeader::parse(bytes)?), 1 + udhl)
    } else {
        (None, 0)
    };
    let body = ud.get(body_start..).unwrap_or_default();
    let payload = match alphabet {
        Alphabet::Gsm7 => {
            let header_bits = body_start * 8;
            let fill = (7 - header_bits % 7) % 7;
            let header_septets = (header_bits + fill) / 7;
            let count = udl
                .checked_sub(header_septets)
                .ok_or(PduError::BadUdh("header longer than the user data"))?;
            let septets = gsm7::unpack(body, count, fill as u8);
            if septets.len() != count {
                return Err(PduError::Truncated("TP-UD"));
            }
            Payload::Gsm7(septets)
        }
        Alphabet::EightBit => Payload::EightBit(body.to_vec()),
        Alphabet::Ucs2 => {
            if body.len() % 2 != 0 {
                return Err(PduError::OddUcs2(body.len()));
            }
            Payload::Ucs2(body.to_vec())
        }
    };
    Ok((header, payload))
}

/// One part's TP-UDL and TP-UD, ready to go after the DCS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPart {
    /// TP-UDL.
    pub udl: u8,
    /// TP-UD (header included).
    pub ud: Vec<u8>,
}

/// An encoded text: its alphabet and parts (one unless concatenated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedText {
    /// GSM 7-bit or UCS-2.
    pub alphabet: Alphabet,
    /// The parts; with more than one, each starts with a concatenation header.
    pub parts: Vec<EncodedPart>,
}

/// Septets in one unconcatenated GSM 7-bit SMS.
pub const GSM7_SINGLE: usize = 160;
/// Septets of text in one part of a concatenated GSM 7-bit SMS.
pub const GSM7_PART: usize = 153;
/// UTF-16 units in one unconcatenated UCS-2 SMS.
pub const UCS2_SINGLE: usize = 70;
/// UTF-16 units in one part of a concatenated UCS-2 SMS.
pub const UCS2_PART: usize = 67;

/// Splits `groups` (a character's septets or UTF-16 units each) into chunks
/// of at most `limit` units, never splitting a group.
fn chunk<T: Copy>(groups: &[Vec<T>], limit: usize) -> Vec<Vec<T>> {
    let mut chunks: Vec<Vec<T>> = vec![Vec::new()];
    for group in groups {
        let full = chunks.last().is_some_and(|c| c.len() + group.len() > limit);
        if full {
            chunks.push(Vec::new());
        }
        if let Some(last) = chunks.last_mut() {
            last.extend_from_slice(group);
        }
    }
    chunks
}

/// Encodes `text`, concatenated with 8-bit reference `reference` when it does
/// not fit one SMS.
pub fn encode_text(text: &str, reference: u8) -> Result<EncodedText, PduError> {
    let gsm: Option<Vec<Vec<u8>>> = text
        .chars()
        .map(|c| gsm7::septets_of(c).map(<[u8]>::to_vec))
        .collect();
    let (alphabet, chunks): (Alphabet, Vec<Vec<u8>>) = match gsm {
        Some(groups) => {
            let total: usize = groups.iter().map(Vec::len).sum();
            let limit = if total <= GSM7_SINGLE {
                GSM7_SINGLE
            } else {
                GSM7_PART
            };
            (Alphabet::Gsm7, chunk(&groups, limit))
        }
        None => {
            let groups: Vec<Vec<u16>> = text
                .chars()
                .map(|c| c.encode_utf16(&mut [0; 2]).to_vec())
                .collect();
            let total: usize = groups.iter().map(Vec::len).sum();
            let limit = if total <= UCS2_SINGLE {
                UCS2_SINGLE
            } else {
                UCS2_PART
            };
            let chunks = chunk(&groups, limit)
                .into_iter()
                .map(|units| units.into_iter().flat_map(u16::to_be_bytes).collect())
                .collect();
            (Alphabet::Ucs2, chunks)
        }
    };
    let count = u8::try_from(chunks.len())
        .map_err(|_| PduError::TooLong(format!("{} parts, at most 255", chunks.len())))?;
    let parts = chunks
        .into_iter()
        .zip(1u8..)
        .map(|(body, sequence)| {
            let header: Vec<u8> = if count > 1 {
                vec![0x05, 0x00, 0x03, reference, count, sequence]
            } else {
                Vec::new()
            };
            let (udl, ud) = match alphabet {
                Alphabet::Gsm7 => {
                    // A 6-octet header is 48 bits: 1 fill bit makes 7 septets.
                    let (header_septets, fill) = if header.is_empty() { (0, 0) } else { (7, 1) };
                    let mut ud = header;
                    ud.extend(gsm7::pack(&body, fill));
                    (header_septets + body.len(), ud)
                }
                Alphabet::EightBit | Alphabet::Ucs2 => {
                    let mut ud = header;
                    ud.extend_from_slice(&body);
                    (ud.len(), ud)
                }
            };
            EncodedPart { udl: udl as u8, ud }
        })
        .collect();
    Ok(EncodedText { alphabet, parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcs_alphabets() {
        let check = |dcs: u8, expect: Result<Alphabet, PduError>| {
            assert_eq!(sms_alphabet(dcs), expect, "0x{dcs:02x}")
        };
        check(0x00, Ok(Alphabet::Gsm7));
        check(0x04, Ok(Alphabet::EightBit));
        check(0x08, Ok(Alphabet::Ucs2));
        check(0x18, Ok(Alphabet::Ucs2));
        check(0x0C, Ok(Alphabet::Gsm7));
        check(0x20, Err(PduError::Compressed(0x20)));
        check(0x48, Ok(Alphabet::Ucs2));
        check(0xC0, Ok(Alphabet::Gsm7));
        check(0xE0, Ok(Alphabet::Ucs2));
        check(0xF0, Ok(Alphabet::Gsm7));
        check(0xF4, Ok(Alphabet::EightBit));
        check(0x90, Ok(Alphabet::Gsm7));
    }

    #[test]
    fn splits_at_the_limits_without_breaking_pairs() {
        let parts = |text: &str| {
            encode_text(text, 7).map(|e| {
                (
                    e.alphabet,
                    e.parts.iter().map(|p| p.udl).collect::<Vec<_>>(),
                )
            })
        };
        assert_eq!(parts(""), Ok((Alphabet::Gsm7, vec![0])));
        assert_eq!(parts(&"a".repeat(160)), Ok((Alphabet::Gsm7, vec![160])));
        assert_eq!(parts(&"a".repeat(161)), Ok((Alphabet::Gsm7, vec![160, 15])));
        // 152 'a' then '€' (2 septets) would make 154: the pair moves to part 2.
        assert_eq!(
            parts(&format!("{}€{}", "a".repeat(152), "a".repeat(10))),
            Ok((Alphabet::Gsm7, vec![159, 19]))
        );
        assert_eq!(parts(&"Ж".repeat(70)), Ok((Alphabet::Ucs2, vec![140])));
        assert_eq!(parts(&"Ж".repeat(71)), Ok((Alphabet::Ucs2, vec![140, 14])));
        // 66 units then an emoji (2 units) would make 68: it moves to part 2.
        assert_eq!(
            parts(&format!("{}😀ЖЖЖ", "Ж".repeat(66))),
            Ok((Alphabet::Ucs2, vec![138, 16]))
        );
        assert!(matches!(
            encode_text(&"a".repeat(153 * 256), 0),
            Err(PduError::TooLong(_))
        ));
    }

    #[test]
    fn decodes_headers_and_rejects_bad_ones() {
        let (header, payload) = decode(
            Alphabet::Ucs2,
            true,
            8,
            &[0x05, 0x00, 0x03, 0x2A, 0x02, 0x01, 0x04, 0x11],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            header.and_then(|h| h.concat()),
            Some(Concat {
                reference: 0x2A,
                total: 2,
                sequence: 1
            })
        );
        assert_eq!(payload.text().as_deref(), Some("Б"));
        let h16 = UserDataHeader::parse(&[0x08, 0x04, 0x12, 0x34, 0x03, 0x02]);
        assert_eq!(
            h16.map(|h| h.concat().map(|c| c.reference)),
            Ok(Some(0x1234))
        );
        let bad_seq = UserDataHeader::parse(&[0x00, 0x03, 0x01, 0x02, 0x03]);
        assert_eq!(bad_seq.map(|h| h.concat()), Ok(None));
        assert_eq!(
            UserDataHeader::parse(&[0x00, 0x05, 0x01]),
            Err(PduError::BadUdh("element runs past the header"))
        );
        assert_eq!(
            UserDataHeader::parse(&[0x00]),
            Err(PduError::BadUdh("one stray octet at the end"))
        );
        assert_eq!(
            decode(Alphabet::Ucs2, false, 3, &[0, 1, 2]),
            Err(PduError::OddUcs2(3))
        );
        assert_eq!(
            decode(Alphabet::Gsm7, false, 10, &[0; 3]),
            Err(PduError::Truncated("TP-UD"))
        );
        assert_eq!(
            decode(Alphabet::Gsm7, true, 2, &[0x05, 0x00]),
            Err(PduError::BadUdh("header longer than the user data"))
        );
        assert_eq!(
            decode(Alphabet::Gsm7, true, 0, &[]),
            Err(PduError::BadUdh("no header length"))
        );
    }
}
