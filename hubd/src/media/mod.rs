//! Media of bridged calls: G.711 and RTP (RFC 3550), telephone-events
//! (RFC 4733) and in-band DTMF detection, SDP offer/answer, the jitter buffer, Ogg Opus recordings,
//! AudioSocket to AI call processors, and per-call media health.
//!
//! Every call's audio inside hubd is the device's frame: 20 ms of 8 kHz mono
//! signed 16-bit little-endian PCM, 160 samples (320 bytes), as
//! [`crate::device::at_modem::voice::Frame`] carries it.

pub mod audiosocket;
pub mod dtmf_detect;
pub mod g711;
pub mod health;
pub mod jitter;
pub mod ogg;
pub mod recording;
pub mod resample;
pub mod rtp;
pub mod rtp_session;
pub mod sdp;
pub mod telephone_event;
