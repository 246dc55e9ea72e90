//! Protocol version negotiation.
//!
//! This module owns the version numbers this release speaks and the rule that
//! picks one at connect: the highest version both ranges contain. It must never
//! guess: no common version is an error naming both ranges, which the control
//! plane turns into `Close { code: UnsupportedVersion }`.
//!
//! A control plane keeps `min` at least one release back, so hubs that upgrade
//! late keep working (design invariant 7).

use std::fmt;

use thiserror::Error;

/// The version this release prefers.
pub const CURRENT: u32 = 1;

/// The versions this release speaks.
pub const SUPPORTED: VersionRange = VersionRange {
    min: 1,
    max: CURRENT,
};

/// An inclusive range of protocol versions. Invariant: `1 <= min <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRange {
    min: u32,
    max: u32,
}

/// Why versions could not be agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VersionError {
    /// A range with `min > max` or `min == 0`.
    #[error("invalid protocol version range {min}..={max}")]
    InvalidRange {
        /// Its lower end.
        min: u32,
        /// Its upper end.
        max: u32,
    },
    /// The two ranges do not overlap.
    #[error("no common protocol version: we speak {ours}, the peer speaks {theirs}")]
    NoCommonVersion {
        /// Our range.
        ours: VersionRange,
        /// The peer's range.
        theirs: VersionRange,
    },
    /// The peer chose a version we did not offer.
    #[error("the peer chose protocol version {chosen}, outside our range {ours}")]
    NotOffered {
        /// The version the peer chose.
        chosen: u32,
        /// Our range.
        ours: VersionRange,
    },
}

impl VersionRange {
    /// Validates a range: `1 <= min <= max`.
    pub fn new(min: u32, max: u32) -> Result<VersionRange, VersionError> {
        if min == 0 || min > max {
            return Err(VersionError::InvalidRange { min, max });
        }
        Ok(VersionRange { min, max })
    }

    /// The lowest version in the range.
    pub fn min(self) -> u32 {
        self.min
    }

    /// The highest version in the range.
    pub fn max(self) -> u32 {
        self.max
    }

    /// Whether `version` is in the range.
    pub fn contains(self, version: u32) -> bool {
        (self.min..=self.max).contains(&version)
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

/// The highest version in both ranges (what the control plane puts in `Welcome`).
pub fn negotiate(ours: VersionRange, theirs: VersionRange) -> Result<u32, VersionError> {
    let high = ours.max.min(theirs.max);
    let low = ours.min.max(theirs.min);
    if low > high {
        return Err(VersionError::NoCommonVersion { ours, theirs });
    }
    Ok(high)
}

/// Checks the version the peer chose (what the hub does with `Welcome`).
pub fn check_chosen(ours: VersionRange, chosen: u32) -> Result<u32, VersionError> {
    if ours.contains(chosen) {
        Ok(chosen)
    } else {
        Err(VersionError::NotOffered { chosen, ours })
    }
}
