//! Identifiers: hub ids, slot ids and slot kinds.
//!
//! This module owns the validation rules for every id a hub, the control plane
//! and the seeds exchange, so that a value of these types is always well formed.
//! It must never accept an id it has not validated, on any path (constructor,
//! `FromStr` or serde), and never does I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest hub id accepted, in characters (the DNS label limit).
const HUB_ID_MAX_LEN: usize = 63;
/// Highest slot number within a hub.
const SLOT_ID_MAX: u32 = 9999;

/// Why a hub id, slot id or slot kind was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The hub id was the empty string.
    #[error("hub id is empty")]
    EmptyHubId,
    /// The hub id contains a character other than `a-z`, `0-9` or `-`.
    #[error(
        "hub id {id:?} contains {ch:?}; only lowercase ASCII letters, digits and '-' are allowed"
    )]
    HubIdBadChar {
        /// The rejected id.
        id: String,
        /// The first offending character.
        ch: char,
    },
    /// The hub id is longer than 63 characters.
    #[error("hub id {id:?} is {len} characters long; at most {HUB_ID_MAX_LEN} are allowed")]
    HubIdTooLong {
        /// The rejected id.
        id: String,
        /// Its length in characters.
        len: usize,
    },
    /// The hub id starts or ends with `-`.
    #[error("hub id {id:?} must not start or end with '-'")]
    HubIdEdgeHyphen {
        /// The rejected id.
        id: String,
    },
    /// The slot id text was empty.
    #[error("slot id is empty")]
    EmptySlotId,
    /// The slot id text contains something other than decimal digits.
    #[error("slot id {input:?} is not a decimal number")]
    SlotIdNotDigits {
        /// The rejected text.
        input: String,
    },
    /// The slot id was 0; slots are numbered from 1.
    #[error("slot id 0 is invalid; slots are numbered 1–{SLOT_ID_MAX}")]
    SlotIdZero,
    /// The slot id is above 9999.
    #[error("slot id {value} is too large; slots are numbered 1–{SLOT_ID_MAX}")]
    SlotIdTooLarge {
        /// The rejected value, as given (it may not fit in a `u32`).
        value: String,
    },
    /// The text names no slot kind.
    #[error("unknown slot kind {input:?}; expected AUTO, MF or LS")]
    UnknownSlotKind {
        /// The rejected text.
        input: String,
    },
}

/// A hub's id: a slug of 1–63 lowercase ASCII letters, digits and `-`, not
/// starting or ending with `-` (e.g. `msk-01`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HubId(String);

impl HubId {
    /// Validates `id` as a hub id.
    pub fn new(id: impl Into<String>) -> Result<HubId, IdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(IdError::EmptyHubId);
        }
        let bad = |c: &char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-');
        if let Some(ch) = id.chars().find(bad) {
            return Err(IdError::HubIdBadChar { id, ch });
        }
        // All ASCII from here on, so bytes are characters.
        if id.len() > HUB_ID_MAX_LEN {
            let len = id.len();
            return Err(IdError::HubIdTooLong { id, len });
        }
        if id.starts_with('-') || id.ends_with('-') {
            return Err(IdError::HubIdEdgeHyphen { id });
        }
        Ok(HubId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HubId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HubId::new(s)
    }
}

impl TryFrom<String> for HubId {
    type Error = IdError;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        HubId::new(id)
    }
}

impl From<HubId> for String {
    fn from(id: HubId) -> Self {
        id.0
    }
}

/// A slot's number within its hub, 1..=9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct SlotId(u32);

impl SlotId {
    /// Validates `n` as a slot number (1..=9999).
    pub fn new(n: u32) -> Result<SlotId, IdError> {
        match n {
            0 => Err(IdError::SlotIdZero),
            1..=SLOT_ID_MAX => Ok(SlotId(n)),
            _ => Err(IdError::SlotIdTooLarge {
                value: n.to_string(),
            }),
        }
    }

    /// The slot number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for SlotId {
    type Err = IdError;

    /// Parses decimal digits only: no sign, no spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdError::EmptySlotId);
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::SlotIdNotDigits {
                input: s.to_owned(),
            });
        }
        // Only digits remain, so the one way `parse` can fail is overflow.
        let n = s.parse::<u32>().map_err(|_| IdError::SlotIdTooLarge {
            value: s.to_owned(),
        })?;
        SlotId::new(n)
    }
}

impl TryFrom<u32> for SlotId {
    type Error = IdError;

    fn try_from(n: u32) -> Result<Self, Self::Error> {
        SlotId::new(n)
    }
}

impl From<SlotId> for u32 {
    fn from(id: SlotId) -> Self {
        id.0
    }
}

/// What kind of device drives a slot. Serialized lowercase (`"auto"`, `"mf"`,
/// `"ls"`): this is the seeds' `device_type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    /// A GSM USB modem driven over AT commands.
    Auto,
    /// An Android phone driven over ADB.
    Mf,
    /// A PC driven over SSH, running scripts.
    Ls,
}

impl SlotKind {
    /// Every slot kind.
    pub const ALL: [SlotKind; 3] = [SlotKind::Auto, SlotKind::Mf, SlotKind::Ls];

    /// The lowercase name, as serialized: `"auto"`, `"mf"` or `"ls"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotKind::Auto => "auto",
            SlotKind::Mf => "mf",
            SlotKind::Ls => "ls",
        }
    }
}

impl fmt::Display for SlotKind {
    /// Prints the operator-facing uppercase name: `AUTO`, `MF` or `LS`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlotKind::Auto => "AUTO",
            SlotKind::Mf => "MF",
            SlotKind::Ls => "LS",
        })
    }
}

impl FromStr for SlotKind {
    type Err = IdError;

    /// Accepts the name in any ASCII case (`auto`, `AUTO`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SlotKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| IdError::UnknownSlotKind {
                input: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_id_accepts_slugs() {
        for ok in ["a", "msk-01", "0", "a-b-c", &"x".repeat(63)] {
            let id = HubId::new(ok).unwrap();
            assert_eq!(id.as_str(), ok);
            assert_eq!(id.to_string(), ok);
            assert_eq!(ok.parse::<HubId>().unwrap(), id);
        }
    }

    #[test]
    fn hub_id_rejects_bad_slugs() {
        let long = "x".repeat(64);
        let cases = [
            ("", IdError::EmptyHubId),
            ("Msk", bad_char("Msk", 'M')),
            ("msk 01", bad_char("msk 01", ' ')),
            ("msk_01", bad_char("msk_01", '_')),
            ("мск", bad_char("мск", 'м')),
            ("-msk", edge("-msk")),
            ("msk-", edge("msk-")),
            ("-", edge("-")),
            (
                long.as_str(),
                IdError::HubIdTooLong {
                    id: long.clone(),
                    len: 64,
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(HubId::new(input), Err(expected), "input {input:?}");
        }
    }

    fn bad_char(id: &str, ch: char) -> IdError {
        IdError::HubIdBadChar {
            id: id.to_owned(),
            ch,
        }
    }

    fn edge(id: &str) -> IdError {
        IdError::HubIdEdgeHyphen { id: id.to_owned() }
    }

    #[test]
    fn hub_id_messages_name_the_value() {
        let err = HubId::new("Msk").unwrap_err();
        assert_eq!(
            err.to_string(),
            "hub id \"Msk\" contains 'M'; only lowercase ASCII letters, digits and '-' are allowed"
        );
    }

    #[test]
    fn hub_id_serde_validates() {
        let id = HubId::new("msk-01").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"msk-01\"");
        assert_eq!(serde_json::from_str::<HubId>("\"msk-01\"").unwrap(), id);
        assert!(serde_json::from_str::<HubId>("\"MSK\"").is_err());
        assert!(serde_json::from_str::<HubId>("\"\"").is_err());
    }

    #[test]
    fn slot_id_range() {
        assert_eq!(SlotId::new(0), Err(IdError::SlotIdZero));
        assert_eq!(SlotId::new(1).unwrap().get(), 1);
        assert_eq!(SlotId::new(9999).unwrap().get(), 9999);
        assert_eq!(
            SlotId::new(10000),
            Err(IdError::SlotIdTooLarge {
                value: "10000".into()
            })
        );
    }

    #[test]
    fn slot_id_from_str() {
        assert_eq!("42".parse::<SlotId>().unwrap().get(), 42);
        assert_eq!(SlotId::new(42).unwrap().to_string(), "42");
        assert_eq!("".parse::<SlotId>(), Err(IdError::EmptySlotId));
        assert_eq!("0".parse::<SlotId>(), Err(IdError::SlotIdZero));
        for bad in ["+1", "-1", " 1", "1 ", "1a", "٣"] {
            assert_eq!(
                bad.parse::<SlotId>(),
                Err(IdError::SlotIdNotDigits { input: bad.into() }),
                "input {bad:?}"
            );
        }
        for big in ["10000", "99999999999999999999"] {
            assert_eq!(
                big.parse::<SlotId>(),
                Err(IdError::SlotIdTooLarge { value: big.into() })
            );
        }
        assert_eq!(
            "10000".parse::<SlotId>().unwrap_err().to_string(),
            "slot id 10000 is too large; slots are numbered 1–9999"
        );
    }

    #[test]
    fn slot_id_serde_validates() {
        let id = SlotId::new(7).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "7");
        assert_eq!(serde_json::from_str::<SlotId>("7").unwrap(), id);
        assert!(serde_json::from_str::<SlotId>("0").is_err());
        assert!(serde_json::from_str::<SlotId>("10000").is_err());
        assert!(serde_json::from_str::<SlotId>("\"7\"").is_err());
    }

    #[test]
    fn slot_kind_names() {
        let names = [
            (SlotKind::Auto, "auto", "AUTO"),
            (SlotKind::Mf, "mf", "MF"),
            (SlotKind::Ls, "ls", "LS"),
        ];
        for (kind, lower, upper) in names {
            assert_eq!(kind.as_str(), lower);
            assert_eq!(kind.to_string(), upper);
            assert_eq!(lower.parse::<SlotKind>().unwrap(), kind);
            assert_eq!(upper.parse::<SlotKind>().unwrap(), kind);
            let json = format!("\"{lower}\"");
            assert_eq!(serde_json::to_string(&kind).unwrap(), json);
            assert_eq!(serde_json::from_str::<SlotKind>(&json).unwrap(), kind);
        }
        assert_eq!(
            "gsm".parse::<SlotKind>(),
            Err(IdError::UnknownSlotKind {
                input: "gsm".into()
            })
        );
        assert!(serde_json::from_str::<SlotKind>("\"AUTO\"").is_err());
    }
}
