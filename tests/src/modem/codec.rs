//! The few encodings the emulator writes and reads itself: hex, UCS-2 hex
//! (what `AT+CSCS="UCS2"` modems put in strings), GSM 7-bit packing for USSD
//! (basic alphabet, ASCII-compatible subset), an SMS-DELIVER builder for
//! injected messages (UCS-2 text), and AT parameter splitting.
//!
//! Written independently of the hub's `at_modem::pdu` on purpose: the
//! emulator is a second implementation the driver is checked against, not a
//! mirror of it. Never panics on any input; decoders return `None`.

/// Upper-case hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Bytes of the hex text `text`, `None` when it is not even-length hex.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `text` as UTF-16 big-endian hex (`"Hi"` → `00480069`).
pub fn ucs2_hex(text: &str) -> String {
    text.encode_utf16().map(|u| format!("{u:04X}")).collect()
}

/// The text of UCS-2 (UTF-16BE) hex, `None` when malformed.
pub fn ucs2_from_hex(hex: &str) -> Option<String> {
    let bytes = hex_decode(hex)?;
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

/// The GSM 7-bit default-alphabet code of `c` for the ASCII-compatible
/// subset (digits, letters, `*#+-.,:;!?()/ ` and so on, `@ $ _` remapped);
/// anything else becomes `?`.
fn gsm7_code(c: char) -> u8 {
    match c {
        '@' => 0x00,
        '$' => 0x02,
        '_' => 0x11,
        '\n' => 0x0A,
        '\r' => 0x0D,
        ' '..='#' | '%'..='?' | 'A'..='Z' | 'a'..='z' => u8::try_from(u32::from(c)).unwrap_or(0x3F),
        _ => 0x3F,
    }
}

/// The character of GSM 7-bit code `s` for the subset [`gsm7_code`] writes.
fn gsm7_char(s: u8) -> char {
    match s {
        0x00 => '@',
        0x02 => '$',
        0x11 => '_',
        0x0A => '\n',
        0x0D => '\r',
        0x20..=0x23 | 0x25..=0x3F | 0x41..=0x5A | 0x61..=0x7A => char::from(s),
        _ => '?',
    }
}

/// Packs `text` as GSM 7-bit septets into hex, as USSD with DCS 15 carries
/// it; when the last octet would have 7 spare bits a CR fills them (23.038
/// §6.1.2.3.1).
pub fn gsm7_pack_hex(text: &str) -> String {
    let mut septets: Vec<u8> = text.chars().map(gsm7_code).collect();
    if septets.len() % 8 == 7 {
        septets.push(0x0D);
    }
    let mut out = Vec::with_capacity(septets.len() * 7 / 8 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for s in septets {
        acc |= u32::from(s & 0x7F) << bits;
        bits += 7;
        while bits >= 8 {
            out.push((acc & 0xFF) as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push((acc & 0xFF) as u8);
    }
    hex_encode(&out)
}

/// Unpacks GSM 7-bit packed hex (USSD, DCS 15) into text, dropping a final
/// CR or `@` that only fills spare bits. `None` when not hex.
pub fn gsm7_unpack_hex(hex: &str) -> Option<String> {
    let bytes = hex_decode(hex)?;
    let count = bytes.len() * 8 / 7;
    let mut septets = Vec::with_capacity(count);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in &bytes {
        acc |= u32::from(*b) << bits;
        bits += 8;
        while bits >= 7 && septets.len() < count {
            septets.push((acc & 0x7F) as u8);
            acc >>= 7;
            bits -= 7;
        }
    }
    if bytes.len().is_multiple_of(7) && matches!(septets.last(), Some(0x0D | 0x00)) {
        septets.pop();
    }
    Some(septets.into_iter().map(gsm7_char).collect())
}

/// A service-centre timestamp (TP-SCTS) for injected messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsTimestamp {
    /// Year within the century, 0–99.
    pub year: u8,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
    /// 0–59.
    pub second: u8,
    /// Offset from UTC in quarters of an hour (Moscow: +12).
    pub zone_quarters: i8,
}

impl Default for SmsTimestamp {
    /// 2025-11-03 12:00:00 +03:00.
    fn default() -> SmsTimestamp {
        SmsTimestamp {
            year: 25,
            month: 11,
            day: 3,
            hour: 12,
            minute: 0,
            second: 0,
            zone_quarters: 12,
        }
    }
}

fn swapped_bcd(v: u8) -> u8 {
    let v = v % 100;
    ((v % 10) << 4) | (v / 10)
}

impl SmsTimestamp {
    fn encode(&self) -> [u8; 7] {
        let q = self.zone_quarters.unsigned_abs().min(79);
        let mut zone = swapped_bcd(q);
        if self.zone_quarters < 0 {
            zone |= 0x08;
        }
        [
            swapped_bcd(self.year),
            swapped_bcd(self.month),
            swapped_bcd(self.day),
            swapped_bcd(self.hour),
            swapped_bcd(self.minute),
            swapped_bcd(self.second),
            zone,
        ]
    }
}

/// Why an SMS-DELIVER could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliverError {
    /// The sender is not `+` and 1–20 digits.
    BadSender(String),
    /// The text needs more than one part (70 UCS-2 units).
    TooLong(usize),
}

impl std::fmt::Display for DeliverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliverError::BadSender(s) => {
                write!(f, "sender {s:?} is not an optional + and 1 to 20 digits")
            }
            DeliverError::TooLong(n) => {
                write!(
                    f,
                    "text is {n} UTF-16 units; one UCS-2 SMS holds at most 70"
                )
            }
        }
    }
}

impl std::error::Error for DeliverError {}

/// Semi-octet address field (length in digits, type, swapped digits).
fn encode_address(number: &str) -> Option<Vec<u8>> {
    let (toa, digits) = match number.strip_prefix('+') {
        Some(rest) => (0x91, rest),
        None => (0x81, number),
    };
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut out = vec![u8::try_from(digits.len()).ok()?, toa];
    for pair in digits.as_bytes().chunks(2) {
        let lo = pair[0] - b'0';
        let hi = pair.get(1).map_or(0x0F, |d| d - b'0');
        out.push((hi << 4) | lo);
    }
    Some(out)
}

/// Builds an SMS-DELIVER (UCS-2, one part) from `sender` with `text`, the
/// service centre `smsc` in its prefix. Returns the TPDU length (what
/// `+CMGR`/`+CMT` announce) and the whole PDU as hex, prefix included.
pub fn sms_deliver_pdu(
    smsc: Option<&str>,
    sender: &str,
    text: &str,
    timestamp: SmsTimestamp,
) -> Result<(usize, String), DeliverError> {
    let units = text.encode_utf16().count();
    if units > 70 {
        return Err(DeliverError::TooLong(units));
    }
    let oa = encode_address(sender).ok_or_else(|| DeliverError::BadSender(sender.to_owned()))?;
    let smsc_field = match smsc {
        None => vec![0x00],
        Some(number) => {
            let mut a =
                encode_address(number).ok_or_else(|| DeliverError::BadSender(number.to_owned()))?;
            // The SMSC length counts octets (type + digits), not digits.
            a[0] = u8::try_from(a.len() - 1).unwrap_or(0);
            a
        }
    };
    let ud: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let mut tpdu = vec![0x04];
    tpdu.extend_from_slice(&oa);
    tpdu.push(0x00); // TP-PID
    tpdu.push(0x08); // TP-DCS: UCS-2
    tpdu.extend_from_slice(&timestamp.encode());
    tpdu.push(u8::try_from(ud.len()).unwrap_or(140));
    tpdu.extend_from_slice(&ud);
    let mut pdu = smsc_field;
    pdu.extend_from_slice(&tpdu);
    Ok((tpdu.len(), hex_encode(&pdu)))
}

/// The TPDU length of a whole PDU given as hex (its SMSC prefix not
/// counted), `None` when the hex or the prefix length is bad.
pub fn tpdu_len(pdu_hex: &str) -> Option<usize> {
    let bytes = hex_decode(pdu_hex)?;
    let smsc_len = usize::from(*bytes.first()?);
    bytes.len().checked_sub(1 + smsc_len).filter(|&n| n > 0)
}

/// One AT parameter: its text without quotes, and whether it was quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The text, quotes removed, blanks around it trimmed.
    pub text: String,
    /// Whether it was a quoted string.
    pub quoted: bool,
}

/// Splits `a,"b,c",,d` into parameters; commas inside quotes do not split.
/// An unterminated quote runs to the end.
pub fn split_params(s: &str) -> Vec<Param> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_quote = false;
    for c in s.chars() {
        match c {
            '"' => {
                in_quote = !in_quote;
                quoted = true;
            }
            ',' if !in_quote => {
                out.push(Param {
                    text: std::mem::take(&mut cur).trim().to_owned(),
                    quoted,
                });
                quoted = false;
            }
            _ => cur.push(c),
        }
    }
    out.push(Param {
        text: cur.trim().to_owned(),
        quoted,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_ucs2() {
        assert_eq!(hex_encode(&[0x0A, 0xFF]), "0AFF");
        assert_eq!(hex_decode("0aff"), Some(vec![0x0A, 0xFF]));
        assert_eq!(hex_decode("0af"), None);
        assert_eq!(hex_decode("zz"), None);
        assert_eq!(ucs2_hex("Hi"), "00480069");
        assert_eq!(ucs2_from_hex("041104300441"), Some("Бас".to_owned()));
        assert_eq!(ucs2_from_hex("0041004"), None);
    }

    #[test]
    fn gsm7_packing_matches_the_spec_example() {
        // *100# packed is AA180C3602 (the hub's profile test uses the same).
        assert_eq!(gsm7_pack_hex("*100#"), "AA180C3602");
        assert_eq!(gsm7_unpack_hex("AA180C3602"), Some("*100#".to_owned()));
        // 7 characters get a CR in the spare bits, which unpacking drops.
        let packed = gsm7_pack_hex("*102*1#");
        assert_eq!(gsm7_unpack_hex(&packed), Some("*102*1#".to_owned()));
        assert_eq!(gsm7_unpack_hex("Z"), None);
    }

    #[test]
    fn deliver_pdu_layout() {
        let (len, hex) = sms_deliver_pdu(
            Some("+79168999100"),
            "+79161234567",
            "Hi",
            SmsTimestamp::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            hex,
            "07919761989901F0040B919761214365F70008521130210000210400480069"
        );
        assert_eq!(Some(len), tpdu_len(&hex));
        assert!(sms_deliver_pdu(None, "bank", "x", SmsTimestamp::default()).is_err());
    }

    #[test]
    fn params() {
        let p = split_params(r#"1,"AA,18",15"#);
        let texts: Vec<&str> = p.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["1", "AA,18", "15"]);
        assert!(p[1].quoted && !p[0].quoted);
        assert_eq!(split_params("").len(), 1);
    }
}
