//! The GSM modem emulator: what tests (and newcomers) use instead of Huawei
//! E1550/E173 and Quectel EC25 USB sticks. Each emulated modem owns two pty
//! pairs, an AT port and a voice port, whose slave paths (`/dev/pts/N`) a
//! driver opens exactly as it would open `/dev/ttyUSB2` and `/dev/ttyUSB1`.
//!
//! Owns the emulation: AT replies and URCs as the real makes send them, call
//! progress with realistic timing, SMS and USSD, real-time voice frames,
//! scripted faults, USB re-enumeration. Must never depend on the hub's
//! `at_modem` code (it is the second implementation that code is checked
//! against) and never read a clock inside the model.
//!
//! Table of contents, from the core out:
//! - [`profile`], [`identity`], [`config`], [`faults`]: what a modem is and
//!   what a test scripts (plain data).
//! - [`codec`]: hex, UCS-2, GSM 7-bit packing, an SMS-DELIVER builder.
//! - [`model`]: the sans-IO modem, [`ModemModel`]: bytes and time in,
//!   bytes, port actions and deadlines out.
//! - [`audio`]: tone frames, real-time pacing, the receive ring, Goertzel.
//! - [`pty`]: openpty, raw mode, non-blocking masters, stable symlinks.
//! - [`runner`]: the thread per modem that moves bytes, and its
//!   [`ModemHandle`].
//! - [`farm`]: N modems from one seed, [`ModemFarm`].
//! - [`client`]: a minimal AT client for tests, [`PortClient`].
//!
//! The `modem-emulator` binary (`tests/src/bin/modem-emulator.rs`) runs a
//! farm until Ctrl-C so a person can `socat - /dev/pts/N,raw,echo=0`.

pub mod audio;
pub mod client;
pub mod codec;
pub mod config;
pub mod farm;
pub mod faults;
pub mod identity;
pub mod model;
pub mod profile;
pub mod pty;
pub mod runner;

pub use client::{PortClient, PortError};
pub use config::{Callee, ModemConfig, Operator, Timings, Tone, UssdAlphabet, UssdAnswer};
pub use farm::ModemFarm;
pub use faults::{Garbage, InReply, Interleave};
pub use identity::Identity;
pub use model::{InjectError, ModelOutput, ModemLog, ModemModel};
pub use profile::{Profile, Vendor};
pub use runner::{EmulatedModem, ModemHandle, ModemPaths, PortStats};
