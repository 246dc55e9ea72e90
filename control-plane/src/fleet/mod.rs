//! The fleet: the control plane's side of its hubs. The fleet CA and hub
//! enrollment; the QUIC endpoint hubs connect to.

pub mod ca;
pub mod server;
