//! `hubd`, the VSS Demiurge hub daemon, as a library: the binary in
//! `main.rs` only parses the command line and calls into [`cli`].
//!
//! Table of contents:
//! - [`config`]: the TOML file, environment overrides, validation.
//! - [`store`]: the local SQLite store and its single group-committing writer.
//! - [`supervisor`]: one supervisor per slot; faults, backoff, restarts.
//! - [`device`]: the driver boundary and the simulated driver.
//! - [`sip`]: each slot's SIP user agent: registration, calls.
//! - [`media`]: RTP, G.711, SDP, recordings, AudioSocket, media health.
//! - [`api`]: the local HTTP API (health, metrics, slots) and its client.
//! - [`health`]: the readiness latch.
//! - [`metrics`]: counters and histograms rendered as Prometheus text.
//! - [`app`]: wiring a hub together and shutting it down in order.
//! - [`cli`]: the subcommands.
//! - [`logging`]: tracing setup.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod device;
pub mod health;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod sip;
pub mod store;
pub mod supervisor;
pub mod sync;
