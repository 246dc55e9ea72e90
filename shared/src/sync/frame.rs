//! Framing messages on a byte stream: `[u32 big-endian length][encoded message]`.
//!
//! This module owns cutting an ordered byte stream (a QUIC stream) into
//! messages and back. The decoder takes chunks of any size (half a header,
//! several frames at once) and never buffers more than one frame: a header
//! announcing more than [`FrameConfig::max_frame_bytes`] is an error before a
//! byte of the body is kept. It must never panic on input and never recover
//! after an error: once framing is lost the stream is unusable, so every later
//! call fails too and the transport closes the connection with
//! [`FrameError::close`].

use std::marker::PhantomData;

use thiserror::Error;

use super::codec::{CodecError, WireMessage};
use super::messages::{Close, CloseCode};

/// Bytes in a frame header.
pub const HEADER_BYTES: usize = 4;

/// The default largest frame body: 4 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 4 * 1024 * 1024;

/// Once a frame body larger than this was buffered, the buffer is released
/// rather than kept at that size.
const KEEP_BUFFER_BYTES: usize = 64 * 1024;

/// Framing limits, shared by both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameConfig {
    /// The largest frame body accepted or sent, in bytes.
    pub max_frame_bytes: u32,
}

impl Default for FrameConfig {
    fn default() -> Self {
        FrameConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// Why a stream could not be framed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A header announced a body longer than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced body length.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A header announced an empty body; every message encodes to at least one byte.
    #[error("zero-length frame")]
    Empty,
    /// A frame body is not a valid message.
    #[error("malformed frame: {0}")]
    Decode(#[from] CodecError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes of it received)")]
    Truncated {
        /// Bytes of the unfinished frame (header included) that had arrived.
        buffered: usize,
    },
    /// An earlier error ended this stream; framing cannot be recovered.
    #[error("the stream already failed; close the connection")]
    Failed,
    /// A message to send encodes to more than the maximum frame size.
    #[error("message of {len} bytes exceeds the maximum frame of {max}")]
    MessageTooLarge {
        /// The encoded length.
        len: usize,
        /// The configured maximum.
        max: u32,
    },
}

impl FrameError {
    /// The close code to send for this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::TooLarge { .. } | FrameError::MessageTooLarge { .. } => {
                CloseCode::FrameTooLarge
            }
            FrameError::Empty
            | FrameError::Decode(_)
            | FrameError::Truncated { .. }
            | FrameError::Failed => CloseCode::MalformedMessage,
        }
    }

    /// The `Close` a transport sends for this error.
    pub fn close(&self) -> Close {
        Close::new(self.close_code(), self.to_string())
    }
}

/// Encodes `msg` as one frame.
pub fn encode_frame<M: WireMessage>(msg: &M, config: &FrameConfig) -> Result<Vec<u8>, FrameError> {
    let body = msg.encode();
    let len = u32::try_from(body.len())
        .ok()
        .filter(|len| *len <= config.max_frame_bytes)
        .ok_or(FrameError::MessageTooLarge {
            len: body.len(),
            max: config.max_frame_bytes,
        })?;
    let mut frame = Vec::with_capacity(HEADER_BYTES + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Incremental decoder for one direction of one stream (e.g.
/// `FrameDecoder<HubMessage>` on the control plane).
#[derive(Debug)]
pub struct FrameDecoder<M> {
    max_frame_bytes: u32,
    /// The header, then the body, of the frame in progress.
    buf: Vec<u8>,
    /// The body length once the header is complete.
    body_len: Option<usize>,
    failed: bool,
    _message: PhantomData<fn() -> M>,
}

impl<M: WireMessage> FrameDecoder<M> {
    /// A decoder at the start of a stream.
    pub fn new(config: FrameConfig) -> Self {
        FrameDecoder {
            max_frame_bytes: config.max_frame_bytes,
            buf: Vec::new(),
            body_len: None,
            failed: false,
            _message: PhantomData,
        }
    }

    /// Feeds the next chunk of the stream; appends every message it completes
    /// to `out`, in order, and returns how many it appended.
    ///
    /// On error, the messages completed before the bad frame are in `out` and
    /// the decoder is failed for good.
    pub fn decode(&mut self, chunk: &[u8], out: &mut Vec<M>) -> Result<usize, FrameError> {
        if self.failed {
            return Err(FrameError::Failed);
        }
        let before = out.len();
        match self.decode_inner(chunk, out) {
            Ok(()) => Ok(out.len() - before),
            Err(e) => {
                self.failed = true;
                self.buf = Vec::new();
                self.body_len = None;
                Err(e)
            }
        }
    }

    fn decode_inner(&mut self, mut input: &[u8], out: &mut Vec<M>) -> Result<(), FrameError> {
        loop {
            let body_len = match self.body_len {
                Some(len) => len,
                None => {
                    let take = (HEADER_BYTES - self.buf.len()).min(input.len());
                    self.buf.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let Ok(header) = <[u8; HEADER_BYTES]>::try_from(self.buf.as_slice()) else {
                        return Ok(()); // Header incomplete; wait for more.
                    };
                    self.buf.clear();
                    let len = u32::from_be_bytes(header);
                    if len == 0 {
                        return Err(FrameError::Empty);
                    }
                    if len > self.max_frame_bytes {
                        return Err(FrameError::TooLarge {
                            len,
                            max: self.max_frame_bytes,
                        });
                    }
                    let len = len as usize; // u32 fits in usize on every target we build.
                    self.body_len = Some(len);
                    len
                }
            };
            if self.buf.is_empty() && input.len() >= body_len {
                // The whole body is in this chunk: decode it in place.
                let (body, rest) = input.split_at(body_len);
                input = rest;
                self.body_len = None;
                out.push(M::decode(body)?);
                continue;
            }
            let take = (body_len - self.buf.len()).min(input.len());
            self.buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.buf.len() < body_len {
                return Ok(()); // Body incomplete; wait for more.
            }
            self.body_len = None;
            let msg = M::decode(&self.buf);
            if self.buf.capacity() > KEEP_BUFFER_BYTES {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            out.push(msg?);
        }
    }

    /// Bytes held for the frame in progress (header included); never more
    /// than `HEADER_BYTES + max_frame_bytes`.
    pub fn buffered(&self) -> usize {
        match self.body_len {
            Some(_) => HEADER_BYTES + self.buf.len(),
            None => self.buf.len(),
        }
    }

    /// Called when the stream ends: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.failed {
            return Err(FrameError::Failed);
        }
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }
}
