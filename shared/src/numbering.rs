//! The internal SIP numbering plan.
//!
//! Extensions are four digits: 1xxx services (1001 is the IVR), 6xxx AUTO
//! slots, 7xxx MF slots, 8xxx LS slots. Each range's x000 number is reserved
//! for the range's group/hunt number. This module owns those rules and the
//! bookkeeping of which number belongs to whom; it must never hand out or
//! accept a number outside the plan, a reserved x000 number, or a number
//! already taken, and never does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::SlotKind;

/// Why a SIP number was rejected, or could not be assigned or allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// The text is not exactly four ASCII digits.
    #[error("SIP number {input:?} must be exactly four digits")]
    NotFourDigits {
        /// The rejected text.
        input: String,
    },
    /// The number is in none of the plan's ranges.
    #[error(
        "SIP number {number:04} is outside the numbering plan \
         (services use 1xxx, AUTO slots 6xxx, MF slots 7xxx, LS slots 8xxx)"
    )]
    OutOfPlan {
        /// The rejected number.
        number: u16,
    },
    /// The number is a range's x000 group/hunt number.
    #[error("SIP number {number:04} is reserved for its range's group/hunt number")]
    Reserved {
        /// The rejected number.
        number: u16,
    },
    /// The number belongs to another class than the one it was assigned for.
    #[error(
        "SIP number {number} is {} {} number, but this is {} {expected} ({expected}s use {})",
        .actual.article(), .actual.short_name(), .expected.article(), .expected.range_text()
    )]
    WrongRange {
        /// The number being assigned.
        number: SipNumber,
        /// The class it was assigned for.
        expected: NumberClass,
        /// The class it actually belongs to.
        actual: NumberClass,
    },
    /// The number is already taken.
    #[error("SIP number {number} is already taken by {owner}")]
    Collision {
        /// The number being assigned.
        number: SipNumber,
        /// Who holds it.
        owner: String,
    },
    /// Every number of the class's range is taken.
    #[error("no free SIP number left for {class}s ({} are all taken)", .class.range_text())]
    Exhausted {
        /// The class that ran out.
        class: NumberClass,
    },
}

/// What a range of the plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NumberClass {
    /// Services such as the IVR: 1001–1999.
    Service,
    /// Slots of one kind: AUTO 6001–6999, MF 7001–7999, LS 8001–8999.
    Slot(SlotKind),
}

impl NumberClass {
    /// Every class, in numbering order.
    pub const ALL: [NumberClass; 4] = [
        NumberClass::Service,
        NumberClass::Slot(SlotKind::Auto),
        NumberClass::Slot(SlotKind::Mf),
        NumberClass::Slot(SlotKind::Ls),
    ];

    /// The class of numbers for slots of `kind`.
    pub fn of(kind: SlotKind) -> NumberClass {
        NumberClass::Slot(kind)
    }

    /// The allocatable numbers of the class (its x000 number excluded),
    /// e.g. `6001..=6999`.
    pub fn range(self) -> RangeInclusive<u16> {
        let base = self.base();
        base + 1..=base + 999
    }

    /// The range's reserved x000 group/hunt number.
    fn base(self) -> u16 {
        match self {
            NumberClass::Service => 1000,
            NumberClass::Slot(SlotKind::Auto) => 6000,
            NumberClass::Slot(SlotKind::Mf) => 7000,
            NumberClass::Slot(SlotKind::Ls) => 8000,
        }
    }

    /// The class whose range holds `value`'s thousands, if any.
    fn containing(value: u16) -> Option<NumberClass> {
        NumberClass::ALL
            .into_iter()
            .find(|class| class.base() / 1000 == value / 1000)
    }

    /// `service`, `AUTO`, `MF` or `LS`, for messages.
    fn short_name(self) -> String {
        match self {
            NumberClass::Service => "service".to_owned(),
            NumberClass::Slot(kind) => kind.to_string(),
        }
    }

    /// The indefinite article that goes before [`Self::short_name`].
    fn article(self) -> &'static str {
        match self {
            NumberClass::Service => "a",
            // AUTO, MF and LS all start with a vowel sound.
            NumberClass::Slot(_) => "an",
        }
    }

    /// The range as an operator reads it, e.g. `6001–6999`.
    fn range_text(self) -> String {
        let range = self.range();
        format!("{}–{}", range.start(), range.end())
    }
}

impl fmt::Display for NumberClass {
    /// Prints `service`, `AUTO slot`, `MF slot` or `LS slot`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumberClass::Service => f.write_str("service"),
            NumberClass::Slot(kind) => write!(f, "{kind} slot"),
        }
    }
}

/// A valid extension of the plan: four digits, in a range, not x000.
/// Serialized as a string, e.g. `"6001"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SipNumber(u16);

impl SipNumber {
    /// Parses exactly four ASCII digits naming a number of the plan.
    pub fn parse(input: &str) -> Result<SipNumber, NumberError> {
        if input.len() != 4 || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NumberError::NotFourDigits {
                input: input.to_owned(),
            });
        }
        let number = input
            .bytes()
            .fold(0, |acc, digit| acc * 10 + u16::from(digit - b'0'));
        SipNumber::new(number)
    }

    /// Validates `number` against the plan.
    pub fn new(number: u16) -> Result<SipNumber, NumberError> {
        if NumberClass::containing(number).is_none() {
            return Err(NumberError::OutOfPlan { number });
        }
        if number.is_multiple_of(1000) {
            return Err(NumberError::Reserved { number });
        }
        Ok(SipNumber(number))
    }

    /// The number.
    pub fn get(self) -> u16 {
        self.0
    }

    /// The class whose range holds the number.
    pub fn class(self) -> NumberClass {
        // `new` admits only numbers some class contains; the fallback is never taken.
        NumberClass::containing(self.0).unwrap_or(NumberClass::Service)
    }
}

impl fmt::Display for SipNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

impl FromStr for SipNumber {
    type Err = NumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SipNumber::parse(s)
    }
}

impl TryFrom<String> for SipNumber {
    type Error = NumberError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        SipNumber::parse(&s)
    }
}

impl From<SipNumber> for String {
    fn from(number: SipNumber) -> Self {
        number.to_string()
    }
}

/// Which numbers of the plan are taken, and by whom (an owner label such as
/// `"slot 3"` or `"IVR"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NumberingPlan {
    taken: BTreeMap<SipNumber, String>,
}

impl NumberingPlan {
    /// An empty plan: every number is free.
    pub fn new() -> NumberingPlan {
        NumberingPlan::default()
    }

    /// Gives `number` to `owner`. The number must belong to `class` and be free.
    pub fn assign(
        &mut self,
        number: SipNumber,
        class: NumberClass,
        owner: impl Into<String>,
    ) -> Result<(), NumberError> {
        let actual = number.class();
        if actual != class {
            return Err(NumberError::WrongRange {
                number,
                expected: class,
                actual,
            });
        }
        if let Some(existing) = self.taken.get(&number) {
            return Err(NumberError::Collision {
                number,
                owner: existing.clone(),
            });
        }
        self.taken.insert(number, owner.into());
        Ok(())
    }

    /// Gives `owner` the lowest free number of `class`.
    pub fn allocate(
        &mut self,
        class: NumberClass,
        owner: impl Into<String>,
    ) -> Result<SipNumber, NumberError> {
        let range = class.range();
        // Walk the taken numbers of the range in order; the first gap is free.
        let mut candidate = *range.start();
        let taken = self
            .taken
            .range(SipNumber(*range.start())..=SipNumber(*range.end()));
        for (number, _) in taken {
            if number.0 != candidate {
                break;
            }
            candidate += 1;
        }
        if !range.contains(&candidate) {
            return Err(NumberError::Exhausted { class });
        }
        let number = SipNumber(candidate);
        self.taken.insert(number, owner.into());
        Ok(number)
    }

    /// Frees `number`; returns whether it was taken.
    pub fn release(&mut self, number: SipNumber) -> bool {
        self.taken.remove(&number).is_some()
    }

    /// Who holds `number`, if anyone.
    pub fn owner(&self, number: SipNumber) -> Option<&str> {
        self.taken.get(&number).map(String::as_str)
    }

    /// How many numbers are taken.
    pub fn len(&self) -> usize {
        self.taken.len()
    }

    /// Whether no number is taken.
    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }

    /// The taken numbers and their owners, in ascending number order.
    pub fn iter(&self) -> impl Iterator<Item = (SipNumber, &str)> {
        self.taken
            .iter()
            .map(|(number, owner)| (*number, owner.as_str()))
    }
}
