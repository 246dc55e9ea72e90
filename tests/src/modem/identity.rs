//! Who an emulated modem is: IMEI, IMSI, ICCID, its own number, the SMS
//! service centre and the cell it camps on, derived deterministically from a
//! seed and an index so a farm of N modems is the same on every run.
//!
//! Owns the Luhn check digit and the seeded derivation. Never reads a clock
//! or an OS random source.

use super::profile::Profile;

/// The identities one modem reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// 15 digits, the last a Luhn check digit (`AT+CGSN`).
    pub imei: String,
    /// 15 digits, MCC 250 MNC 01 (`AT+CIMI`).
    pub imsi: String,
    /// 19 digits starting `8970`, the last a Luhn check digit, as printed on
    /// the SIM (Huawei's `AT^ICCID?` reports it nibble-swapped).
    pub iccid: String,
    /// The SIM's own number (`AT+CNUM`), when the SIM carries one.
    pub own_number: Option<String>,
    /// The SMS service centre (`AT+CSCA?`).
    pub smsc: String,
    /// Location area code of the serving cell (`AT+CREG?` with `n=2`).
    pub lac: u16,
    /// Cell id of the serving cell.
    pub cell_id: u32,
}

impl Identity {
    /// The identity of modem `index` (0-based) of a farm seeded with `seed`.
    /// Distinct indices under one seed give distinct IMEIs, IMSIs, ICCIDs and
    /// numbers (each is a stride through its digit space, not a hash).
    pub fn from_seed(seed: u64, index: u32, profile: Profile) -> Identity {
        let i = u64::from(index);
        let base = |salt: u64| splitmix64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Strides are primes other than 2 and 5, so coprime with 10^k.
        let serial = (base(1) + i * 7_919) % 1_000_000;
        let imei_payload = format!("{}{serial:06}", profile.tac());
        let msin = (base(2) + i * 1_000_003) % 10_000_000_000;
        let iccid_payload = format!("8970101{:011}", (base(3) + i * 10_007) % 100_000_000_000);
        let subscriber = (base(4) + i * 7_927) % 10_000_000;
        Identity {
            imei: format!("{imei_payload}{}", luhn_check_digit(&imei_payload)),
            imsi: format!("25001{msin:010}"),
            iccid: format!("{iccid_payload}{}", luhn_check_digit(&iccid_payload)),
            own_number: Some(format!("+7916{subscriber:07}")),
            smsc: "+79168999100".to_owned(),
            lac: u16::try_from(base(5) % 0xFFFE + 1).unwrap_or(0x00C3),
            cell_id: u32::try_from(base(6) % 0x0FFF_FFFE + 1).unwrap_or(0x0010),
        }
    }

    /// The ICCID as Huawei's `AT^ICCID?` reports it: padded with `F` to an
    /// even length, each pair of digits swapped (the SIM's raw bytes).
    pub fn iccid_swapped(&self) -> String {
        let mut padded = self.iccid.clone();
        if padded.len() % 2 == 1 {
            padded.push('F');
        }
        let bytes = padded.as_bytes();
        bytes
            .chunks(2)
            .flat_map(|pair| pair.iter().rev().map(|&b| char::from(b)))
            .collect()
    }
}

/// The Luhn check digit for the decimal `payload` (non-digits count as 0).
pub fn luhn_check_digit(payload: &str) -> u8 {
    let sum: u32 = payload
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b.wrapping_sub(b'0').min(9));
            if i % 2 == 0 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    u8::try_from((10 - sum % 10) % 10).unwrap_or(0)
}

/// Whether `digits` passes the Luhn check (its last digit is the check digit).
pub fn luhn_valid(digits: &str) -> bool {
    match digits.len().checked_sub(1) {
        Some(last) if digits.bytes().all(|b| b.is_ascii_digit()) => {
            let (payload, check) = digits.split_at(last);
            check.as_bytes()[0] - b'0' == luhn_check_digit(payload)
        }
        _ => false,
    }
}

/// SplitMix64: a tiny, well-mixed deterministic generator step.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert_eq!(luhn_check_digit("49015420323751"), 8);
        assert!(luhn_valid("490154203237518"));
        assert!(!luhn_valid("490154203237517"));
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn identities_are_valid_distinct_and_stable() {
        let a = Identity::from_seed(7, 0, Profile::HuaweiE1550);
        let b = Identity::from_seed(7, 1, Profile::HuaweiE1550);
        assert_eq!(a, Identity::from_seed(7, 0, Profile::HuaweiE1550));
        assert_ne!(a.imei, b.imei);
        assert_ne!(a.iccid, b.iccid);
        for id in [&a, &b] {
            assert_eq!(id.imei.len(), 15);
            assert!(luhn_valid(&id.imei));
            assert_eq!(id.iccid.len(), 19);
            assert!(luhn_valid(&id.iccid));
            assert_eq!(id.imsi.len(), 15);
            assert!(id.iccid_swapped().starts_with("98"));
            assert_eq!(id.iccid_swapped().len(), 20);
        }
    }
}
