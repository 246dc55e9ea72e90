//! The service-centre timestamp TP-SCTS (23.040 §9.2.3.11): seven swapped
//! semi-octet pairs, year to second, then the time zone in quarters of an
//! hour with its sign in bit 3.
//!
//! Owns decoding, validation and encoding of that field. Never panics: a
//! non-decimal digit or out-of-range field is [`PduError::BadTimestamp`].

use std::fmt;

use super::PduError;

/// A TP-SCTS value: local time at the service centre and its UTC offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Full year: two-digit years 90–99 are 1990s (GSM started in 1991),
    /// 00–89 are 2000s.
    pub year: u16,
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
    /// Offset from UTC in quarters of an hour (−79..=79).
    pub utc_offset_quarters: i8,
}

fn swapped_decimal(byte: u8, field: &str) -> Result<u8, PduError> {
    let (tens, units) = (byte & 0x0F, byte >> 4);
    if tens > 9 || units > 9 {
        return Err(PduError::BadTimestamp(format!(
            "{field} octet 0x{byte:02X} is not decimal"
        )));
    }
    Ok(tens * 10 + units)
}

fn swapped(value: u8) -> u8 {
    ((value % 10) << 4) | (value / 10 % 10)
}

impl Timestamp {
    /// Decodes the seven octets of TP-SCTS.
    pub fn decode(bytes: &[u8]) -> Result<Timestamp, PduError> {
        let [y, mo, d, h, mi, s, tz] = bytes else {
            return Err(PduError::Truncated("TP-SCTS"));
        };
        let yy = swapped_decimal(*y, "year")?;
        let tz_units = tz >> 4;
        if tz_units > 9 {
            return Err(PduError::BadTimestamp(format!(
                "time zone octet 0x{tz:02X} is not decimal"
            )));
        }
        let quarters = (tz & 0x07) * 10 + tz_units;
        let ts = Timestamp {
            year: if yy >= 90 { 1900 } else { 2000 } + u16::from(yy),
            month: swapped_decimal(*mo, "month")?,
            day: swapped_decimal(*d, "day")?,
            hour: swapped_decimal(*h, "hour")?,
            minute: swapped_decimal(*mi, "minute")?,
            second: swapped_decimal(*s, "second")?,
            utc_offset_quarters: if tz & 0x08 != 0 {
                -(quarters as i8)
            } else {
                quarters as i8
            },
        };
        let valid = (1..=12).contains(&ts.month)
            && (1..=31).contains(&ts.day)
            && ts.hour < 24
            && ts.minute < 60
            && ts.second < 60;
        if !valid {
            return Err(PduError::BadTimestamp(format!("{ts} is out of range")));
        }
        Ok(ts)
    }

    /// The seven octets of TP-SCTS.
    pub fn encode(&self) -> [u8; 7] {
        let quarters = self.utc_offset_quarters.unsigned_abs().min(79);
        let mut tz = swapped(quarters);
        if self.utc_offset_quarters < 0 {
            tz |= 0x08;
        }
        [
            swapped((self.year % 100) as u8),
            swapped(self.month),
            swapped(self.day),
            swapped(self.hour),
            swapped(self.minute),
            swapped(self.second),
            tz,
        ]
    }

    /// Offset from UTC in minutes.
    pub fn utc_offset_minutes(&self) -> i32 {
        i32::from(self.utc_offset_quarters) * 15
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339, e.g. `1999-03-29T15:16:59+02:00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset = self.utc_offset_minutes();
        let sign = if offset < 0 { '-' } else { '+' };
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            offset.abs() / 60,
            offset.abs() % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    fn check(h: &str, expect: &str) {
        let got = match hex::decode(h).and_then(|b| Timestamp::decode(&b)) {
            Ok(ts) => {
                assert_eq!(
                    hex::encode(&ts.encode()),
                    h.to_ascii_uppercase(),
                    "re-encoding"
                );
                ts.to_string()
            }
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expect, "{h}");
    }

    #[test]
    fn decodes_and_validates() {
        check("99309251619580", "1999-03-29T15:16:59+02:00");
        check("42106190417021", "2024-01-16T09:14:07+03:00");
        check("42106190417029", "2024-01-16T09:14:07-03:00");
        check("42106190417000", "2024-01-16T09:14:07+00:00");
        check("4210619041703A", "2024-01-16T09:14:07-05:45");
        check(
            "4A106190417021",
            "error: bad timestamp: year octet 0x4A is not decimal",
        );
        check(
            "42316190417021",
            "error: bad timestamp: 2024-13-16T09:14:07+03:00 is out of range",
        );
        check(
            "421061904170A0",
            "error: bad timestamp: time zone octet 0xA0 is not decimal",
        );
        check("421061", "error: PDU ends inside TP-SCTS");
    }
}
