//! The makes and models the emulator can pretend to be, and the facts that
//! differ between them: identification strings, which vendor commands they
//! know, how they report call progress, their access technology.
//!
//! Owns only constant facts. Never keeps state (that is [`super::model`]).

use std::fmt;

/// A modem make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// Huawei: `^ORIG/^CONF/^CONN/^CEND`, audio on the second tty after
    /// `AT^DDSETEX=2`, `AT^DTMF`, packed GSM 7-bit USSD.
    Huawei,
    /// Quectel: no `^` call progress (`NO CARRIER`, `BUSY`), `AT+QPCMV`,
    /// `AT+QHUP`, `AT+VTS`, UCS-2 USSD text.
    Quectel,
}

/// A modem model the emulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Huawei E1550 (3G stick, chan_dongle's classic). Has the
    /// `AT+CHLD=1x`-before-`^CONF` hang.
    HuaweiE1550,
    /// Huawei E173.
    HuaweiE173,
    /// Quectel EC25 (LTE module).
    QuectelEc25,
}

impl Profile {
    /// Every profile, for help texts and loops in tests.
    pub const ALL: [Profile; 3] = [
        Profile::HuaweiE1550,
        Profile::HuaweiE173,
        Profile::QuectelEc25,
    ];

    /// Parses a command-line name: `huawei`/`e1550`, `e173`, `quectel`/`ec25`.
    pub fn parse(name: &str) -> Option<Profile> {
        match name.to_ascii_lowercase().as_str() {
            "huawei" | "e1550" | "huawei-e1550" => Some(Profile::HuaweiE1550),
            "e173" | "huawei-e173" => Some(Profile::HuaweiE173),
            "quectel" | "ec25" | "quectel-ec25" => Some(Profile::QuectelEc25),
            _ => None,
        }
    }

    /// The make.
    pub fn vendor(self) -> Vendor {
        match self {
            Profile::HuaweiE1550 | Profile::HuaweiE173 => Vendor::Huawei,
            Profile::QuectelEc25 => Vendor::Quectel,
        }
    }

    /// Whether this is a Huawei.
    pub fn is_huawei(self) -> bool {
        self.vendor() == Vendor::Huawei
    }

    /// `AT+CGMI`.
    pub fn manufacturer(self) -> &'static str {
        match self.vendor() {
            Vendor::Huawei => "huawei",
            Vendor::Quectel => "Quectel",
        }
    }

    /// `AT+CGMM`.
    pub fn model(self) -> &'static str {
        match self {
            Profile::HuaweiE1550 => "E1550",
            Profile::HuaweiE173 => "E173",
            Profile::QuectelEc25 => "EC25",
        }
    }

    /// `AT+CGMR`.
    pub fn revision(self) -> &'static str {
        match self {
            Profile::HuaweiE1550 => "11.608.12.02.143",
            Profile::HuaweiE173 => "11.126.85.00.209",
            Profile::QuectelEc25 => "EC25EFAR06A03M4G",
        }
    }

    /// The type allocation code the emulator puts at the front of IMEIs
    /// (made up, but of the make's usual form).
    pub fn tac(self) -> &'static str {
        match self {
            Profile::HuaweiE1550 => "35451704",
            Profile::HuaweiE173 => "35712304",
            Profile::QuectelEc25 => "86144703",
        }
    }

    /// The access technology `AT+COPS?` reports (2 UTRAN, 7 E-UTRAN).
    pub fn access_technology(self) -> u8 {
        match self.vendor() {
            Vendor::Huawei => 2,
            Vendor::Quectel => 7,
        }
    }

    /// Whether the real model stops answering after `AT+CHLD=1x` sent
    /// before the call's `^CONF` (field notes: the E1550 trap).
    pub fn has_chld_trap(self) -> bool {
        self == Profile::HuaweiE1550
    }

    /// The short command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::HuaweiE1550 => "e1550",
            Profile::HuaweiE173 => "e173",
            Profile::QuectelEc25 => "ec25",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.manufacturer(), self.model())
    }
}
