//! Asterisk's AudioSocket protocol, client side: a call's audio streamed over
//! TCP to an AudioSocket server (the AI call processor), and the server's
//! audio played back into the call.
//!
//! Two layers, as in quinn: a sans-IO codec ([`encode`], [`encode_audio`],
//! [`Decoder`], [`Reframer`]) that turns bytes into [`AudioSocketFrame`]s and
//! back with no socket and no clock, and a thin tokio driver
//! ([`AudioSocketClient`]) that only moves bytes.
//!
//! Framing: `[kind: u8][length: u16 big-endian][payload]`; kinds `0x00`
//! hangup, `0x01` UUID (16 raw bytes, sent first), `0x03` DTMF (one ASCII
//! byte), `0x10` audio (signed 16-bit 8 kHz mono little-endian), `0xFF` error
//! (one code byte). See `docs/media-health-audiosocket.md`.
//!
//! **Invariant:** the decoder never holds more than one frame's header and
//! payload (`3 + max_payload` bytes), whatever the server sends.
//!
//! **Invariant:** audio from the server reaches the call byte for byte, in
//! order; when the call does not keep up the client stops reading the socket
//! (TCP flow control holds the server back) and drops nothing.
//!
//! Never panics on anything the server sends, never touches the device or the
//! SIP leg: the call bridge moves frames between those and this client.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::device::at_modem::voice::{FRAME_BYTES, Frame};

/// Kind byte of a hangup frame.
pub const KIND_HANGUP: u8 = 0x00;
/// Kind byte of the UUID frame.
pub const KIND_UUID: u8 = 0x01;
/// Kind byte of a DTMF frame.
pub const KIND_DTMF: u8 = 0x03;
/// Kind byte of an audio frame.
pub const KIND_AUDIO: u8 = 0x10;
/// Kind byte of an error frame.
pub const KIND_ERROR: u8 = 0xFF;
/// Bytes in a frame header: kind and big-endian length.
pub const HEADER_BYTES: usize = 3;
/// The largest payload the 16-bit length can describe.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// One AudioSocket frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSocketFrame {
    /// The call (or the server) hung up: `00 00 00`.
    Hangup,
    /// The call's identity, 16 raw bytes; the first frame the client sends.
    Uuid([u8; 16]),
    /// One DTMF digit as an ASCII byte (`0`-`9`, `*`, `#`, `A`-`D`).
    Dtmf(u8),
    /// Signed 16-bit little-endian 8 kHz mono samples (never empty).
    Audio(Bytes),
    /// An error code (Asterisk: 0x01 caller hung up, 0x02 frame forwarding
    /// error, 0x04 memory error).
    Error(u8),
}

/// What an error frame's code means, for logs.
pub fn error_code_meaning(code: u8) -> &'static str {
    match code {
        0x00 => "no error",
        0x01 => "caller hung up",
        0x02 => "frame forwarding error",
        0x04 => "memory error",
        _ => "unknown error code",
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Asterisk rejects an audio frame with no samples.
    #[error("an AudioSocket audio frame must carry at least one byte")]
    ZeroLengthAudio,
    /// The payload does not fit the 16-bit length.
    #[error("AudioSocket payload of {len} bytes exceeds the protocol's {MAX_PAYLOAD}")]
    TooLong {
        /// The payload's length.
        len: usize,
    },
}

/// Why the bytes from the server are not an AudioSocket stream. Once a
/// decoder has returned one, framing is lost and it returns the same error
/// for ever.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The kind byte is none of hangup, UUID, DTMF, audio, error.
    #[error("unknown AudioSocket frame kind 0x{kind:02x}")]
    UnknownKind {
        /// The kind byte received.
        kind: u8,
    },
    /// The length is over the decoder's limit.
    #[error("AudioSocket frame kind 0x{kind:02x} announces {len} bytes, over the limit of {max}")]
    Oversized {
        /// The kind byte.
        kind: u8,
        /// The announced length.
        len: usize,
        /// The decoder's limit.
        max: usize,
    },
    /// An audio frame with no samples (Asterisk rejects those too).
    #[error("zero-length AudioSocket audio frame")]
    ZeroLengthAudio,
    /// A UUID frame that is not 16 bytes, a DTMF frame that is not 1 byte,
    /// or an error frame with no code.
    #[error("AudioSocket frame kind 0x{kind:02x} has {len} bytes, expected {expected}")]
    WrongLength {
        /// The kind byte.
        kind: u8,
        /// The announced length.
        len: usize,
        /// What the protocol requires.
        expected: &'static str,
    },
}

fn push_header(kind: u8, len: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let len16 = u16::try_from(len).map_err(|_| EncodeError::TooLong { len })?;
    out.push(kind);
    out.extend_from_slice(&len16.to_be_bytes());
    Ok(())
}

/// Appends one frame's bytes to `out`. Nothing is appended on error.
pub fn encode(frame: &AudioSocketFrame, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match frame {
        AudioSocketFrame::Hangup => push_header(KIND_HANGUP, 0, out),
        AudioSocketFrame::Uuid(uuid) => {
            push_header(KIND_UUID, uuid.len(), out)?;
            out.extend_from_slice(uuid);
            Ok(())
        }
        AudioSocketFrame::Dtmf(digit) => {
            push_header(KIND_DTMF, 1, out)?;
            out.push(*digit);
            Ok(())
        }
        AudioSocketFrame::Audio(samples) => encode_audio(samples, out),
        AudioSocketFrame::Error(code) => {
            push_header(KIND_ERROR, 1, out)?;
            out.push(*code);
            Ok(())
        }
    }
}

/// Appends an audio frame carrying `samples` (s16le bytes) to `out`, without
/// building an [`AudioSocketFrame`]. Nothing is appended on error.
pub fn encode_audio(samples: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if samples.is_empty() {
        return Err(EncodeError::ZeroLengthAudio);
    }
    push_header(KIND_AUDIO, samples.len(), out)?;
    out.extend_from_slice(samples);
    Ok(())
}

#[derive(Debug)]
enum DecodeState {
    Header {
        have: usize,
        bytes: [u8; HEADER_BYTES],
    },
    Payload {
        kind: u8,
        len: usize,
    },
    Failed(DecodeError),
}

/// Incremental decoder of an AudioSocket byte stream: takes bytes in any
/// split (partial headers, partial payloads, several frames at once) and
/// yields whole frames.
#[derive(Debug)]
pub struct Decoder {
    max_payload: usize,
    state: DecodeState,
    payload: BytesMut,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(MAX_PAYLOAD)
    }
}

impl Decoder {
    /// A decoder refusing frames longer than `max_payload` bytes (the
    /// protocol's own bound is 65,535).
    pub fn new(max_payload: usize) -> Self {
        Self {
            max_payload: max_payload.min(MAX_PAYLOAD),
            state: DecodeState::Header {
                have: 0,
                bytes: [0; HEADER_BYTES],
            },
            payload: BytesMut::new(),
        }
    }

    /// Bytes held for the frame in progress (at most `3 + max_payload`).
    pub fn buffered(&self) -> usize {
        match &self.state {
            DecodeState::Header { have, .. } => *have,
            DecodeState::Payload { .. } => HEADER_BYTES + self.payload.len(),
            DecodeState::Failed(_) => 0,
        }
    }

    /// Takes bytes from the front of `input` until one frame is complete
    /// and returns it; `Ok(None)` once `input` is used up mid-frame. Call it
    /// again while `input` is not empty. Only the bytes of the frame being
    /// decoded are consumed.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<AudioSocketFrame>, DecodeError> {
        match self.step(input) {
            Err(error) => {
                self.payload.clear();
                self.state = DecodeState::Failed(error.clone());
                Err(error)
            }
            ok => ok,
        }
    }

    fn step(&mut self, input: &mut &[u8]) -> Result<Option<AudioSocketFrame>, DecodeError> {
        loop {
            match &mut self.state {
                DecodeState::Failed(error) => return Err(error.clone()),
                DecodeState::Header { have, bytes } => {
                    let take = (HEADER_BYTES - *have).min(input.len());
                    let (head, rest) = input.split_at(take);
                    bytes[*have..*have + take].copy_from_slice(head);
                    *have += take;
                    *input = rest;
                    if *have < HEADER_BYTES {
                        return Ok(None);
                    }
                    let kind = bytes[0];
                    let len = usize::from(u16::from_be_bytes([bytes[1], bytes[2]]));
                    self.check_header(kind, len)?;
                    if len == 0 {
                        self.state = DecodeState::Header {
                            have: 0,
                            bytes: [0; HEADER_BYTES],
                        };
                        // Only a hangup may be empty: check_header refused the rest.
                        return Ok(Some(AudioSocketFrame::Hangup));
                    }
                    self.payload.clear();
                    self.payload.reserve(len);
                    self.state = DecodeState::Payload { kind, len };
                }
                DecodeState::Payload { kind, len } => {
                    let (kind, len) = (*kind, *len);
                    let take = (len - self.payload.len()).min(input.len());
                    let (head, rest) = input.split_at(take);
                    self.payload.extend_from_slice(head);
                    *input = rest;
                    if self.payload.len() < len {
                        return Ok(None);
                    }
                    self.state = DecodeState::Header {
                        have: 0,
                        bytes: [0; HEADER_BYTES],
                    };
                    return Ok(Some(self.finish_payload(kind)));
                }
            }
        }
    }

    fn check_header(&self, kind: u8, len: usize) -> Result<(), DecodeError> {
        let wrong = |expected| DecodeError::WrongLength {
            kind,
            len,
            expected,
        };
        match kind {
            KIND_HANGUP | KIND_AUDIO => {}
            KIND_UUID if len != 16 => return Err(wrong("16")),
            KIND_DTMF if len != 1 => return Err(wrong("1")),
            KIND_ERROR if len == 0 => return Err(wrong("at least 1")),
            KIND_UUID | KIND_DTMF | KIND_ERROR => {}
            _ => return Err(DecodeError::UnknownKind { kind }),
        }
        if len > self.max_payload {
            return Err(DecodeError::Oversized {
                kind,
                len,
                max: self.max_payload,
            });
        }
        if kind == KIND_AUDIO && len == 0 {
            return Err(DecodeError::ZeroLengthAudio);
        }
        Ok(())
    }

    fn finish_payload(&mut self, kind: u8) -> AudioSocketFrame {
        let payload = self.payload.split().freeze();
        match kind {
            KIND_UUID => {
                let mut uuid = [0; 16];
                // check_header guaranteed 16 bytes.
                uuid.copy_from_slice(&payload[..16]);
                AudioSocketFrame::Uuid(uuid)
            }
            KIND_DTMF => AudioSocketFrame::Dtmf(payload[0]),
            KIND_ERROR => AudioSocketFrame::Error(payload[0]),
            KIND_AUDIO => AudioSocketFrame::Audio(payload),
            // A hangup with a payload: the payload means nothing, the hangup does.
            _ => AudioSocketFrame::Hangup,
        }
    }
}

/// Cuts a byte stream of audio into 20 ms frames (320 bytes), whatever the
/// sizes it arrives in.
#[derive(Debug)]
pub struct Reframer {
    partial: [u8; FRAME_BYTES],
    len: usize,
}

impl Default for Reframer {
    fn default() -> Self {
        Self {
            partial: [0; FRAME_BYTES],
            len: 0,
        }
    }
}

impl Reframer {
    /// Appends `bytes`; every completed frame is pushed onto `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut VecDeque<Frame>) {
        while !bytes.is_empty() {
            let take = (FRAME_BYTES - self.len).min(bytes.len());
            self.partial[self.len..self.len + take].copy_from_slice(&bytes[..take]);
            self.len += take;
            bytes = &bytes[take..];
            if self.len == FRAME_BYTES {
                out.push_back(Box::new(self.partial));
                self.len = 0;
            }
        }
    }

    /// Bytes waiting for the rest of their frame.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// The incomplete frame, padded with silence; `None` if there is none.
    pub fn flush(&mut self) -> Option<Frame> {
        if self.len == 0 {
            return None;
        }
        let mut frame: Frame = Box::new([0; FRAME_BYTES]);
        frame[..self.len].copy_from_slice(&self.partial[..self.len]);
        self.len = 0;
        Some(frame)
    }
}

/// How an [`AudioSocketClient`] connects and buffers.
#[derive(Debug, Clone)]
pub struct AudioSocketOptions {
    /// Time allowed to connect and send the UUID frame (Asterisk: 2000 ms).
    pub connect_timeout: Duration,
    /// Time allowed, once the call hangs up, to write the audio still queued
    /// and the hangup frame before the socket is closed regardless.
    pub hangup_timeout: Duration,
    /// 20 ms frames from the server queued for the call (default 50, one
    /// second). When full the client stops reading the socket: the server's
    /// writes block, nothing is dropped.
    pub playout_frames: usize,
    /// 20 ms frames from the call queued for the server (default 10, 200 ms).
    /// When full (the server is not reading) new frames are dropped and
    /// counted.
    pub to_server_frames: usize,
    /// Largest frame accepted from the server (default and protocol maximum
    /// 65,535 bytes).
    pub max_payload: usize,
}

impl Default for AudioSocketOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(2000),
            hangup_timeout: Duration::from_millis(500),
            playout_frames: 50,
            to_server_frames: 10,
            max_payload: MAX_PAYLOAD,
        }
    }
}

/// Why connecting to an AudioSocket server failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server did not accept the connection (and take the UUID frame)
    /// within the connect timeout.
    #[error(
        "AudioSocket server {addr} did not accept the connection within {timeout:?}; is it running and reachable?"
    )]
    Timeout {
        /// The address tried.
        addr: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The connection failed: refused, unreachable, unresolvable.
    #[error("could not connect to AudioSocket server {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// Connected, but sending the UUID frame failed.
    #[error("AudioSocket server {addr} accepted but sending the UUID frame failed: {source}")]
    Handshake {
        /// The address tried.
        addr: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

/// Why an AudioSocket stream ended; the call bridge hangs the call up with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The call hung up: the client sent `00 00 00` and closed.
    CallHangup,
    /// The server sent a hangup frame.
    ServerHangup,
    /// The server closed the connection without a hangup frame.
    ServerClosed,
    /// The server sent an error frame with this code.
    ServerError {
        /// The error code (see [`error_code_meaning`]).
        code: u8,
    },
    /// The server sent bytes that are not AudioSocket.
    Protocol(DecodeError),
    /// The server sent a valid frame it must not send (UUID or DTMF).
    UnexpectedFrame {
        /// Its kind byte.
        kind: u8,
    },
    /// Reading or writing the socket failed.
    Io {
        /// What the system said.
        message: String,
    },
    /// The client's task is gone without a reason (the runtime shut down).
    TaskGone,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CallHangup => f.write_str("the call hung up"),
            Self::ServerHangup => f.write_str("the AudioSocket server hung up"),
            Self::ServerClosed => {
                f.write_str("the AudioSocket server closed the connection without a hangup")
            }
            Self::ServerError { code } => write!(
                f,
                "the AudioSocket server sent error 0x{code:02x} ({})",
                error_code_meaning(*code)
            ),
            Self::Protocol(error) => write!(f, "the AudioSocket server sent garbage: {error}"),
            Self::UnexpectedFrame { kind } => write!(
                f,
                "the AudioSocket server sent a frame of kind 0x{kind:02x}, which servers must not send"
            ),
            Self::Io { message } => write!(f, "AudioSocket connection failed: {message}"),
            Self::TaskGone => f.write_str("the AudioSocket client task stopped"),
        }
    }
}

/// Why a frame or digit was not queued for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The stream has ended.
    #[error("the AudioSocket stream has ended")]
    Ended,
    /// The queue to the server is full (the server is not reading); the
    /// frame was dropped and counted.
    #[error("the AudioSocket server is not keeping up; frame dropped")]
    Full,
    /// Not a DTMF digit (`0`-`9`, `*`, `#`, `A`-`D`).
    #[error("0x{0:02x} is not a DTMF digit")]
    InvalidDigit(u8),
}

/// Live counters of one AudioSocket stream.
#[derive(Debug, Default)]
pub struct AudioSocketStats {
    /// Audio frames passed to the socket for the server.
    pub frames_to_server: AtomicU64,
    /// Audio payload bytes passed to the socket for the server.
    pub bytes_to_server: AtomicU64,
    /// Call frames dropped because the server was not reading.
    pub dropped_to_server: AtomicU64,
    /// DTMF digits passed to the socket for the server.
    pub dtmf_to_server: AtomicU64,
    /// Audio frames (any size) received from the server.
    pub frames_from_server: AtomicU64,
    /// Audio payload bytes received from the server.
    pub bytes_from_server: AtomicU64,
    /// 20 ms frames handed to the call.
    pub call_frames_from_server: AtomicU64,
    /// Times the call's queue was full and reading the socket paused (the
    /// server sent faster than real time).
    pub paused_reads: AtomicU64,
    /// Ticks where the call asked for a frame and none was queued (silence
    /// was played).
    pub underruns: AtomicU64,
}

/// A copy of [`AudioSocketStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AudioSocketCounters {
    /// See [`AudioSocketStats::frames_to_server`].
    pub frames_to_server: u64,
    /// See [`AudioSocketStats::bytes_to_server`].
    pub bytes_to_server: u64,
    /// See [`AudioSocketStats::dropped_to_server`].
    pub dropped_to_server: u64,
    /// See [`AudioSocketStats::dtmf_to_server`].
    pub dtmf_to_server: u64,
    /// See [`AudioSocketStats::frames_from_server`].
    pub frames_from_server: u64,
    /// See [`AudioSocketStats::bytes_from_server`].
    pub bytes_from_server: u64,
    /// See [`AudioSocketStats::call_frames_from_server`].
    pub call_frames_from_server: u64,
    /// See [`AudioSocketStats::paused_reads`].
    pub paused_reads: u64,
    /// See [`AudioSocketStats::underruns`].
    pub underruns: u64,
}

impl AudioSocketStats {
    /// The counters now.
    pub fn snapshot(&self) -> AudioSocketCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AudioSocketCounters {
            frames_to_server: get(&self.frames_to_server),
            bytes_to_server: get(&self.bytes_to_server),
            dropped_to_server: get(&self.dropped_to_server),
            dtmf_to_server: get(&self.dtmf_to_server),
            frames_from_server: get(&self.frames_from_server),
            bytes_from_server: get(&self.bytes_from_server),
            call_frames_from_server: get(&self.call_frames_from_server),
            paused_reads: get(&self.paused_reads),
            underruns: get(&self.underruns),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Whether `digit` is a DTMF digit AudioSocket can carry.
pub fn is_dtmf_digit(digit: u8) -> bool {
    matches!(digit, b'0'..=b'9' | b'*' | b'#' | b'A'..=b'D')
}

/// The call's side of the stream to the server; cheap to clone.
#[derive(Debug, Clone)]
pub struct AudioSocketSender {
    audio: mpsc::Sender<Frame>,
    dtmf: mpsc::Sender<u8>,
    stats: Arc<AudioSocketStats>,
}

impl AudioSocketSender {
    /// Queues one 20 ms frame of call audio for the server without waiting;
    /// when the server is not keeping up the frame is dropped and counted.
    pub fn send_audio(&self, frame: Frame) -> Result<(), SendError> {
        match self.audio.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                bump(&self.stats.dropped_to_server, 1);
                Err(SendError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Ended),
        }
    }

    /// Queues a DTMF digit from the call (`0`-`9`, `*`, `#`, `A`-`D`;
    /// lower-case `a`-`d` are taken as upper-case).
    pub fn send_dtmf(&self, digit: u8) -> Result<(), SendError> {
        let digit = digit.to_ascii_uppercase();
        if !is_dtmf_digit(digit) {
            return Err(SendError::InvalidDigit(digit));
        }
        match self.dtmf.try_send(digit) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(SendError::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Ended),
        }
    }
}

/// One call's connection to an AudioSocket server.
///
/// Call audio goes in through [`send_audio`](Self::send_audio) (or a
/// [`sender`](Self::sender)); the server's audio comes out as 20 ms frames
/// through [`recv`](Self::recv) (await, for a bridge that forwards into the
/// voice clock's queue) or [`next_or_silence`](Self::next_or_silence) (for a
/// bridge that ticks every 20 ms). [`closed`](Self::closed) resolves with the
/// [`EndReason`]. Dropping the client hangs up like [`hangup`](Self::hangup).
#[derive(Debug)]
pub struct AudioSocketClient {
    sender: AudioSocketSender,
    from_server: mpsc::Receiver<Frame>,
    hangup: CancellationToken,
    end: watch::Receiver<Option<EndReason>>,
    stats: Arc<AudioSocketStats>,
}

impl Drop for AudioSocketClient {
    fn drop(&mut self) {
        self.hangup.cancel();
    }
}

impl AudioSocketClient {
    /// Connects to `addr` within `options.connect_timeout`, with
    /// TCP_NODELAY, sends the UUID frame, and starts streaming.
    pub async fn connect<A>(
        addr: A,
        call_uuid: [u8; 16],
        options: AudioSocketOptions,
    ) -> Result<Self, ConnectError>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        let addr_text = addr.to_string();
        let handshake = async {
            let stream =
                TcpStream::connect(addr)
                    .await
                    .map_err(|source| ConnectError::Connect {
                        addr: addr_text.clone(),
                        source,
                    })?;
            let handshake_error = |source| ConnectError::Handshake {
                addr: addr_text.clone(),
                source,
            };
            stream.set_nodelay(true).map_err(handshake_error)?;
            let mut hello = Vec::with_capacity(HEADER_BYTES + 16);
            // A 16-byte UUID always encodes.
            let _ = encode(&AudioSocketFrame::Uuid(call_uuid), &mut hello);
            let mut stream = stream;
            tokio::io::AsyncWriteExt::write_all(&mut stream, &hello)
                .await
                .map_err(handshake_error)?;
            Ok::<_, ConnectError>(stream)
        };
        let stream = tokio::time::timeout(options.connect_timeout, handshake)
            .await
            .map_err(|_| ConnectError::Timeout {
                addr: addr_text.clone(),
                timeout: options.connect_timeout,
            })??;

        let stats = Arc::new(AudioSocketStats::default());
        let (audio_tx, audio_rx) = mpsc::channel(options.to_server_frames.max(1));
        let (dtmf_tx, dtmf_rx) = mpsc::channel(32);
        let (play_tx, play_rx) = mpsc::channel(options.playout_frames.max(1));
        let (end_tx, end_rx) = watch::channel(None);
        let hangup = CancellationToken::new();
        let driver = Driver {
            stream,
            audio_rx,
            dtmf_rx,
            play_tx,
            hangup: hangup.clone(),
            stats: Arc::clone(&stats),
            options,
        };
        let span = tracing::info_span!("audiosocket", server = %addr_text);
        tokio::spawn(
            async move {
                let reason = driver.run().await;
                match &reason {
                    EndReason::CallHangup | EndReason::ServerHangup => {
                        tracing::debug!(%reason, "AudioSocket stream ended");
                    }
                    _ => tracing::warn!(%reason, "AudioSocket stream ended"),
                }
                let _ = end_tx.send(Some(reason));
            }
            .instrument(span),
        );
        Ok(Self {
            sender: AudioSocketSender {
                audio: audio_tx,
                dtmf: dtmf_tx,
                stats: Arc::clone(&stats),
            },
            from_server: play_rx,
            hangup,
            end: end_rx,
            stats,
        })
    }

    /// A handle for sending call audio and DTMF from another task.
    pub fn sender(&self) -> AudioSocketSender {
        self.sender.clone()
    }

    /// See [`AudioSocketSender::send_audio`].
    pub fn send_audio(&self, frame: Frame) -> Result<(), SendError> {
        self.sender.send_audio(frame)
    }

    /// See [`AudioSocketSender::send_dtmf`].
    pub fn send_dtmf(&self, digit: u8) -> Result<(), SendError> {
        self.sender.send_dtmf(digit)
    }

    /// The next 20 ms frame from the server, waiting for it; `None` once the
    /// stream has ended and every frame the server sent has been taken.
    pub async fn recv(&mut self) -> Option<Frame> {
        let frame = self.from_server.recv().await;
        if frame.is_some() {
            bump(&self.stats.call_frames_from_server, 1);
        }
        frame
    }

    /// The next 20 ms frame from the server, or silence (counted as an
    /// underrun) when none is queued. For a bridge that ticks every 20 ms.
    pub fn next_or_silence(&mut self) -> Frame {
        match self.from_server.try_recv() {
            Ok(frame) => {
                bump(&self.stats.call_frames_from_server, 1);
                frame
            }
            Err(_) => {
                bump(&self.stats.underruns, 1);
                Box::new([0; FRAME_BYTES])
            }
        }
    }

    /// Why the stream ended, if it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.end.borrow().clone()
    }

    /// Resolves once the stream has ended, with the reason. Frames the
    /// server sent before it ended stay readable with [`recv`](Self::recv).
    pub async fn closed(&self) -> EndReason {
        let mut end = self.end.clone();
        match end.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or(EndReason::TaskGone),
            Err(_) => EndReason::TaskGone,
        }
    }

    /// Hangs up from the call's side: writes the call audio still queued,
    /// then `00 00 00`, closes the socket, and returns how the stream ended
    /// (the server may have ended it first).
    pub async fn hangup(self) -> EndReason {
        self.hangup.cancel();
        self.closed().await
    }

    /// The stream's live counters.
    pub fn stats(&self) -> AudioSocketCounters {
        self.stats.snapshot()
    }
}

/// Most call-audio bytes waiting for the socket before the client stops
/// taking frames from the call's queue (16 frames).
const OUT_HIGH_WATER: usize = 16 * (HEADER_BYTES + FRAME_BYTES);
/// Bytes read from the socket at once.
const READ_CHUNK: usize = 4096;

/// The task that owns the socket.
struct Driver {
    stream: TcpStream,
    audio_rx: mpsc::Receiver<Frame>,
    dtmf_rx: mpsc::Receiver<u8>,
    play_tx: mpsc::Sender<Frame>,
    hangup: CancellationToken,
    stats: Arc<AudioSocketStats>,
    options: AudioSocketOptions,
}

/// What one read from the server led to.
enum ReadOutcome {
    More,
    End(EndReason),
}

impl Driver {
    async fn run(mut self) -> EndReason {
        let mut decoder = Decoder::new(self.options.max_payload);
        let mut reframer = Reframer::default();
        let mut pending: VecDeque<Frame> = VecDeque::new();
        let mut out: Vec<u8> = Vec::with_capacity(OUT_HIGH_WATER + HEADER_BYTES + FRAME_BYTES);
        let mut read_buf = vec![0u8; READ_CHUNK];
        let mut dtmf_open = true;
        let mut call_gone = false;
        let mut paused = false;

        let server_end = loop {
            if call_gone {
                return self.finish_hangup(&mut out).await;
            }
            tokio::select! {
                biased;
                () = self.hangup.cancelled() => call_gone = true,
                permit = self.play_tx.reserve(), if !pending.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(frame) = pending.pop_front() {
                            permit.send(frame);
                        }
                    }
                    // The client is gone: its drop cancelled `hangup` too.
                    Err(_) => call_gone = true,
                },
                ready = self.stream.writable(), if !out.is_empty() => {
                    if let Err(error) = ready.and_then(|()| self.try_write(&mut out)) {
                        break EndReason::Io { message: format!("writing: {error}") };
                    }
                }
                digit = self.dtmf_rx.recv(), if dtmf_open && out.len() < OUT_HIGH_WATER => match digit {
                    Some(digit) => {
                        let _ = encode(&AudioSocketFrame::Dtmf(digit), &mut out);
                        bump(&self.stats.dtmf_to_server, 1);
                    }
                    None => dtmf_open = false,
                },
                frame = self.audio_rx.recv(), if out.len() < OUT_HIGH_WATER => match frame {
                    Some(frame) => {
                        // 320 bytes always encode.
                        let _ = encode_audio(&frame[..], &mut out);
                        bump(&self.stats.frames_to_server, 1);
                        bump(&self.stats.bytes_to_server, FRAME_BYTES as u64);
                    }
                    None => call_gone = true,
                },
                ready = self.stream.readable(), if pending.is_empty() => {
                    let outcome = ready.and_then(|()| {
                        self.read_once(&mut read_buf, &mut decoder, &mut reframer, &mut pending)
                    });
                    match outcome {
                        Ok(ReadOutcome::More) => {}
                        Ok(ReadOutcome::End(reason)) => break reason,
                        Err(error) => break EndReason::Io { message: format!("reading: {error}") },
                    }
                }
            }
            let paused_now = !pending.is_empty() && self.play_tx.capacity() == 0;
            if paused_now && !paused {
                bump(&self.stats.paused_reads, 1);
            }
            paused = paused_now;
        };

        // The server ended the stream: hand the call everything it sent
        // (the last partial frame padded with silence), unless the call
        // hangs up meanwhile.
        pending.extend(reframer.flush());
        for frame in pending {
            tokio::select! {
                biased;
                () = self.hangup.cancelled() => break,
                sent = self.play_tx.send(frame) => if sent.is_err() { break },
            }
        }
        server_end
    }

    /// Writes what the socket takes now.
    fn try_write(&self, out: &mut Vec<u8>) -> io::Result<()> {
        match self.stream.try_write(out) {
            Ok(n) => {
                out.drain(..n);
                Ok(())
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Reads what the socket has now and decodes it.
    fn read_once(
        &self,
        buf: &mut [u8],
        decoder: &mut Decoder,
        reframer: &mut Reframer,
        pending: &mut VecDeque<Frame>,
    ) -> io::Result<ReadOutcome> {
        let n = match self.stream.try_read(buf) {
            Ok(0) => return Ok(ReadOutcome::End(EndReason::ServerClosed)),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                return Ok(ReadOutcome::More);
            }
            Err(error) => return Err(error),
        };
        let mut input = &buf[..n];
        while !input.is_empty() {
            let frame = match decoder.decode(&mut input) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => return Ok(ReadOutcome::End(EndReason::Protocol(error))),
            };
            match frame {
                AudioSocketFrame::Audio(samples) => {
                    bump(&self.stats.frames_from_server, 1);
                    bump(&self.stats.bytes_from_server, samples.len() as u64);
                    reframer.push(&samples, pending);
                }
                AudioSocketFrame::Hangup => return Ok(ReadOutcome::End(EndReason::ServerHangup)),
                AudioSocketFrame::Error(code) => {
                    return Ok(ReadOutcome::End(EndReason::ServerError { code }));
                }
                AudioSocketFrame::Uuid(_) => {
                    return Ok(ReadOutcome::End(EndReason::UnexpectedFrame {
                        kind: KIND_UUID,
                    }));
                }
                AudioSocketFrame::Dtmf(_) => {
                    return Ok(ReadOutcome::End(EndReason::UnexpectedFrame {
                        kind: KIND_DTMF,
                    }));
                }
            }
        }
        Ok(ReadOutcome::More)
    }

    /// The call hung up: write the queued call audio and `00 00 00` within
    /// the hangup timeout, then close.
    async fn finish_hangup(mut self, out: &mut Vec<u8>) -> EndReason {
        while let Ok(frame) = self.audio_rx.try_recv() {
            let _ = encode_audio(&frame[..], out);
            bump(&self.stats.frames_to_server, 1);
            bump(&self.stats.bytes_to_server, FRAME_BYTES as u64);
        }
        let _ = encode(&AudioSocketFrame::Hangup, out);
        let flush = async {
            use tokio::io::AsyncWriteExt as _;
            self.stream.write_all(out).await?;
            self.stream.shutdown().await
        };
        if let Err(error) = tokio::time::timeout(self.options.hangup_timeout, flush)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
        {
            tracing::debug!(%error, "AudioSocket hangup frame not delivered");
        }
        EndReason::CallHangup
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpSocket};

    /// Upper bound on any wait in these tests; never reached when they pass.
    const BOUND: Duration = Duration::from_secs(20);
    const UUID: [u8; 16] = [
        0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae,
        0xaf,
    ];

    // ---- codec ----

    /// Decodes `input` fed whole, byte by byte, and split at every point;
    /// each way must give `frames` and then `error`.
    fn check(input: &[u8], frames: &[AudioSocketFrame], error: Option<DecodeError>) {
        check_with(Decoder::default, input, frames, error);
    }

    fn check_with(
        new: impl Fn() -> Decoder,
        input: &[u8],
        frames: &[AudioSocketFrame],
        error: Option<DecodeError>,
    ) {
        let mut splits: Vec<Vec<&[u8]>> = vec![vec![input], input.chunks(1).collect()];
        for at in 1..input.len() {
            splits.push(vec![&input[..at], &input[at..]]);
        }
        for pieces in splits {
            let mut decoder = new();
            let mut got = Vec::new();
            let mut got_error = None;
            'feed: for piece in &pieces {
                let mut piece: &[u8] = piece;
                while !piece.is_empty() {
                    match decoder.decode(&mut piece) {
                        Ok(Some(frame)) => got.push(frame),
                        Ok(None) => assert!(piece.is_empty(), "Ok(None) with input left"),
                        Err(e) => {
                            got_error = Some(e);
                            break 'feed;
                        }
                    }
                }
            }
            assert_eq!(got, frames, "frames, fed as {} pieces", pieces.len());
            assert_eq!(got_error, error, "error, fed as {} pieces", pieces.len());
            if let Some(error) = &error {
                // Framing is lost for good: the same error again.
                assert_eq!(decoder.decode(&mut &[0u8, 0, 0][..]), Err(error.clone()));
                assert_eq!(decoder.buffered(), 0);
            }
        }
    }

    fn audio(bytes: &[u8]) -> AudioSocketFrame {
        AudioSocketFrame::Audio(Bytes::copy_from_slice(bytes))
    }

    fn encoded(frames: &[AudioSocketFrame]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            encode(frame, &mut out).expect("test frames encode");
        }
        out
    }

    #[test]
    fn decodes_every_kind_in_any_split() {
        check(&[0x00, 0x00, 0x00], &[AudioSocketFrame::Hangup], None);
        let mut uuid = vec![0x01, 0x00, 0x10];
        uuid.extend_from_slice(&UUID);
        check(&uuid, &[AudioSocketFrame::Uuid(UUID)], None);
        check(
            &[0x03, 0x00, 0x01, b'5'],
            &[AudioSocketFrame::Dtmf(b'5')],
            None,
        );
        check(&[0x10, 0x00, 0x03, 1, 2, 3], &[audio(&[1, 2, 3])], None);
        check(
            &[0xff, 0x00, 0x01, 0x04],
            &[AudioSocketFrame::Error(0x04)],
            None,
        );
        // An error frame with more than its code: the first byte is the code.
        check(
            &[0xff, 0x00, 0x02, 0x02, 0x99],
            &[AudioSocketFrame::Error(0x02)],
            None,
        );
        // A hangup with a payload is still a hangup.
        check(&[0x00, 0x00, 0x02, 9, 9], &[AudioSocketFrame::Hangup], None);
        // Several frames in one read.
        let several = [
            audio(&[0x34, 0x12, 0xcd]),
            AudioSocketFrame::Dtmf(b'#'),
            audio(&[7; 320]),
            AudioSocketFrame::Hangup,
        ];
        check(&encoded(&several), &several, None);
        // The largest frame the length can announce.
        let big = [audio(&[0x55; MAX_PAYLOAD])];
        let bytes = encoded(&big);
        let mut decoder = Decoder::default();
        let mut input = &bytes[..];
        assert_eq!(decoder.decode(&mut input), Ok(Some(big[0].clone())));
        assert!(input.is_empty());
    }

    #[test]
    fn refuses_what_is_not_audiosocket_with_a_typed_error() {
        check(
            &[0x02, 0x00, 0x00],
            &[],
            Some(DecodeError::UnknownKind { kind: 0x02 }),
        );
        check(
            b"GET / HTTP/1.1\r\n",
            &[],
            Some(DecodeError::UnknownKind { kind: b'G' }),
        );
        check(&[0x10, 0x00, 0x00], &[], Some(DecodeError::ZeroLengthAudio));
        let wrong = |kind, len, expected| {
            Some(DecodeError::WrongLength {
                kind,
                len,
                expected,
            })
        };
        check(&[0x01, 0x00, 0x0f], &[], wrong(0x01, 15, "16"));
        check(&[0x01, 0x00, 0x11], &[], wrong(0x01, 17, "16"));
        check(&[0x03, 0x00, 0x00], &[], wrong(0x03, 0, "1"));
        check(&[0x03, 0x00, 0x02, b'1', b'2'], &[], wrong(0x03, 2, "1"));
        check(&[0xff, 0x00, 0x00], &[], wrong(0xff, 0, "at least 1"));
        // Frames before the garbage are delivered, then the error.
        let mut bytes = encoded(&[audio(&[1, 2]), AudioSocketFrame::Dtmf(b'1')]);
        bytes.extend_from_slice(&[0x42, 0x00, 0x00]);
        check(
            &bytes,
            &[audio(&[1, 2]), AudioSocketFrame::Dtmf(b'1')],
            Some(DecodeError::UnknownKind { kind: 0x42 }),
        );
        // Over the limit: refused from the header, nothing buffered.
        let small = || Decoder::new(100);
        check_with(small, &[0x10, 0x00, 0x64], &[], None);
        check_with(
            small,
            &[0x10, 0x00, 0x65],
            &[],
            Some(DecodeError::Oversized {
                kind: 0x10,
                len: 101,
                max: 100,
            }),
        );
    }

    #[test]
    fn encodes_the_exact_bytes() {
        assert_eq!(encoded(&[AudioSocketFrame::Hangup]), [0x00, 0x00, 0x00]);
        let mut uuid = vec![0x01, 0x00, 0x10];
        uuid.extend_from_slice(&UUID);
        assert_eq!(encoded(&[AudioSocketFrame::Uuid(UUID)]), uuid);
        assert_eq!(
            encoded(&[AudioSocketFrame::Dtmf(b'5')]),
            [0x03, 0x00, 0x01, b'5']
        );
        assert_eq!(
            encoded(&[AudioSocketFrame::Error(1)]),
            [0xff, 0x00, 0x01, 0x01]
        );
        let samples: Vec<u8> = (0..160i16)
            .flat_map(|s| (s * 200 - 16000).to_le_bytes())
            .collect();
        let mut expected = vec![0x10, 0x01, 0x40];
        expected.extend_from_slice(&samples);
        assert_eq!(encoded(&[audio(&samples)]), expected);

        let mut out = vec![9];
        assert_eq!(
            encode_audio(&[], &mut out),
            Err(EncodeError::ZeroLengthAudio)
        );
        assert_eq!(
            encode_audio(&vec![0; MAX_PAYLOAD + 1], &mut out),
            Err(EncodeError::TooLong {
                len: MAX_PAYLOAD + 1
            })
        );
        assert_eq!(out, [9], "nothing appended on error");
    }

    /// xorshift64: deterministic pseudo-random bytes.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    #[test]
    fn garbage_never_panics_and_buffering_stays_bounded() {
        const MAX: usize = 1024;
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut decoder = Decoder::new(MAX);
        let (mut frames, mut errors) = (0u64, 0u64);
        let mut chunk = Vec::with_capacity(256);
        for _ in 0..100_000 {
            chunk.clear();
            if rng.below(4) == 0 {
                // A plausible header, so payload paths are reached too.
                let kinds = [KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_AUDIO, KIND_ERROR];
                chunk.push(kinds[rng.below(kinds.len() as u64)]);
                let len = match rng.below(3) {
                    0 => rng.below(4) as u16,
                    1 => 16,
                    _ => rng.below(2 * MAX as u64) as u16,
                };
                chunk.extend_from_slice(&len.to_be_bytes());
            }
            for _ in 0..rng.below(200) {
                chunk.push(rng.next() as u8);
            }
            let mut input = &chunk[..];
            while !input.is_empty() {
                match decoder.decode(&mut input) {
                    Ok(Some(_)) => frames += 1,
                    Ok(None) => {}
                    Err(error) => {
                        errors += 1;
                        assert_eq!(decoder.decode(&mut input), Err(error));
                        decoder = Decoder::new(MAX);
                    }
                }
                assert!(decoder.buffered() <= HEADER_BYTES + MAX);
            }
        }
        assert!(
            frames > 1_000 && errors > 1_000,
            "{frames} frames, {errors} errors"
        );
    }

    #[test]
    fn reframer_cuts_any_sizes_into_20ms_frames() {
        let bytes: Vec<u8> = (0..5_000u32).map(|i| (i % 251) as u8).collect();
        let mut reframer = Reframer::default();
        let mut out = VecDeque::new();
        let mut rest = &bytes[..];
        for size in [7, 1000, 1, 319, 320, 321, 2000].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let take = (*size).min(rest.len());
            reframer.push(&rest[..take], &mut out);
            rest = &rest[take..];
        }
        assert_eq!(out.len(), 5_000 / FRAME_BYTES);
        assert_eq!(reframer.pending(), 5_000 % FRAME_BYTES);
        out.extend(reframer.flush());
        assert_eq!(reframer.flush(), None);
        let joined: Vec<u8> = out.iter().flat_map(|f| f.iter().copied()).collect();
        assert_eq!(&joined[..5_000], &bytes[..]);
        assert!(
            joined[5_000..].iter().all(|b| *b == 0),
            "padded with silence"
        );
    }

    // ---- client against a real TCP server ----

    async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
        match tokio::time::timeout(BOUND, future).await {
            Ok(value) => value,
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }

    async fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        (listener, addr)
    }

    /// Connects a client and returns it with the server's socket, whose
    /// UUID frame has been read and checked byte for byte.
    async fn connected(options: AudioSocketOptions) -> (AudioSocketClient, TcpStream) {
        let (listener, addr) = listener().await;
        let (client, accepted) = tokio::join!(
            AudioSocketClient::connect(addr, UUID, options),
            listener.accept()
        );
        let client = client.expect("client connects");
        let (mut server, _) = accepted.expect("server accepts");
        let mut hello = [0u8; 19];
        bounded("the UUID frame", server.read_exact(&mut hello))
            .await
            .expect("read UUID frame");
        let mut expected = vec![0x01, 0x00, 0x10];
        expected.extend_from_slice(&UUID);
        assert_eq!(hello[..], expected[..], "the first frame is the UUID");
        (client, server)
    }

    async fn read_n(server: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        bounded("bytes from the client", server.read_exact(&mut buf))
            .await
            .expect("read from client");
        buf
    }

    fn frame_of(samples: &[i16]) -> Frame {
        let mut frame: Frame = Box::new([0; FRAME_BYTES]);
        for (pair, s) in frame.chunks_exact_mut(2).zip(samples) {
            pair.copy_from_slice(&s.to_le_bytes());
        }
        frame
    }

    #[tokio::test]
    async fn sends_uuid_then_audio_dtmf_and_hangup_in_the_exact_format() {
        let (client, mut server) = connected(AudioSocketOptions::default()).await;

        let samples: Vec<i16> = (0..160).map(|i| 0x1234 - i * 100).collect();
        client.send_audio(frame_of(&samples)).expect("queued");
        let got = read_n(&mut server, 3 + 320).await;
        assert_eq!(got[..3], [0x10, 0x01, 0x40]);
        assert_eq!(got[3..5], [0x34, 0x12], "little-endian samples");
        let expected: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(got[3..], expected[..]);

        client.send_dtmf(b'5').expect("queued");
        assert_eq!(read_n(&mut server, 4).await, [0x03, 0x00, 0x01, b'5']);
        assert_eq!(client.send_dtmf(b'x'), Err(SendError::InvalidDigit(b'X')));

        let stats = client.stats();
        assert_eq!((stats.frames_to_server, stats.bytes_to_server), (1, 320));
        assert_eq!(stats.dtmf_to_server, 1);

        assert_eq!(
            bounded("hangup", client.hangup()).await,
            EndReason::CallHangup
        );
        assert_eq!(read_n(&mut server, 3).await, [0x00, 0x00, 0x00]);
        let mut rest = Vec::new();
        bounded("close", server.read_to_end(&mut rest))
            .await
            .expect("read to end");
        assert!(rest.is_empty(), "nothing after the hangup, then EOF");
    }

    #[tokio::test]
    async fn a_full_queue_drops_call_audio_and_hangup_flushes_the_rest_first() {
        let options = AudioSocketOptions {
            to_server_frames: 3,
            ..AudioSocketOptions::default()
        };
        let (client, mut server) = connected(options).await;
        // The test's runtime has one thread and the client's task cannot run
        // until this test yields: the fourth frame finds the queue full.
        for k in 0..3i16 {
            client.send_audio(frame_of(&[k + 1; 160])).expect("queued");
        }
        assert_eq!(client.send_audio(frame_of(&[9; 160])), Err(SendError::Full));
        assert_eq!(client.stats().dropped_to_server, 1);

        assert_eq!(
            bounded("hangup", client.hangup()).await,
            EndReason::CallHangup
        );
        let mut wire = Vec::new();
        bounded("close", server.read_to_end(&mut wire))
            .await
            .expect("read to end");
        let mut expected = Vec::new();
        for k in 0..3i16 {
            encode_audio(&frame_of(&[k + 1; 160])[..], &mut expected).expect("encodes");
        }
        expected.extend_from_slice(&[0x00, 0x00, 0x00]);
        assert_eq!(
            wire, expected,
            "the queued frames, in order, then the hangup"
        );
    }

    #[tokio::test]
    async fn dropping_the_client_hangs_up() {
        let (client, mut server) = connected(AudioSocketOptions::default()).await;
        let sender = client.sender();
        drop(client);
        assert_eq!(read_n(&mut server, 3).await, [0x00, 0x00, 0x00]);
        let mut rest = Vec::new();
        bounded("close", server.read_to_end(&mut rest))
            .await
            .expect("read to end");
        assert!(rest.is_empty());
        // The stream is over for the senders left behind too.
        let frame: Frame = Box::new([0; FRAME_BYTES]);
        assert_eq!(sender.send_audio(frame), Err(SendError::Ended));
    }

    #[tokio::test]
    async fn server_audio_in_any_sizes_reaches_the_call_as_20ms_frames_in_order() {
        // A tiny queue toward the call, so the 5 s burst has to wait for it
        // (the client stops reading) and still loses nothing.
        let options = AudioSocketOptions {
            playout_frames: 2,
            ..AudioSocketOptions::default()
        };
        let (mut client, mut server) = connected(options).await;

        let total_samples = 8_000 * 6 + 77;
        let stream: Vec<u8> = (0..total_samples)
            .flat_map(|i: i32| (((i * 7) % 65_536) as u16).to_le_bytes())
            .collect();
        // Payload sizes: odd, small, a second, a 5 s burst in big frames, a tail.
        let mut payloads = Vec::new();
        let mut rest = &stream[..];
        for size in [7, 1000, 333, 16_000, 32_000, 32_000, 16_000, 65_535] {
            let take = size.min(rest.len());
            if take == 0 {
                break;
            }
            payloads.push(audio(&rest[..take]));
            rest = &rest[take..];
        }
        if !rest.is_empty() {
            payloads.push(audio(rest));
        }
        payloads.push(AudioSocketFrame::Hangup);
        let wire = encoded(&payloads);
        let writer = tokio::spawn(async move {
            // TCP writes of odd sizes too.
            let mut rest = &wire[..];
            for size in [1, 2, 7, 1000, 4096, 100_000].iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let take = (*size).min(rest.len());
                server.write_all(&rest[..take]).await?;
                rest = &rest[take..];
            }
            // Kept open: the hangup frame, not EOF, must end the stream.
            Ok::<_, io::Error>(server)
        });

        let mut received = Vec::new();
        bounded("all frames", async {
            while let Some(frame) = client.recv().await {
                received.push(frame);
            }
        })
        .await;
        assert_eq!(client.closed().await, EndReason::ServerHangup);
        let _server = writer.await.expect("writer task").expect("writes");

        let expected_frames = stream.len().div_ceil(FRAME_BYTES);
        assert_eq!(received.len(), expected_frames);
        let joined: Vec<u8> = received.iter().flat_map(|f| f.iter().copied()).collect();
        assert_eq!(
            &joined[..stream.len()],
            &stream[..],
            "same samples, in order"
        );
        assert!(joined[stream.len()..].iter().all(|b| *b == 0));

        let stats = client.stats();
        assert_eq!(stats.bytes_from_server, stream.len() as u64);
        assert_eq!(stats.frames_from_server, payloads.len() as u64 - 1);
        assert_eq!(stats.call_frames_from_server, expected_frames as u64);
    }

    #[tokio::test]
    async fn silence_when_the_server_has_nothing() {
        let (mut client, mut server) = connected(AudioSocketOptions::default()).await;
        assert_eq!(client.next_or_silence()[..], [0; FRAME_BYTES]);
        assert_eq!(client.stats().underruns, 1);

        let samples = [1000i16; 160];
        let mut wire = Vec::new();
        encode_audio(&frame_of(&samples)[..], &mut wire).expect("encodes");
        encode(&AudioSocketFrame::Hangup, &mut wire).expect("encodes");
        server.write_all(&wire).await.expect("write");
        // Once ended, everything the server sent is queued for the call.
        assert_eq!(
            bounded("end", client.closed()).await,
            EndReason::ServerHangup
        );
        assert_eq!(client.next_or_silence()[..], frame_of(&samples)[..]);
        assert_eq!(client.next_or_silence()[..], [0; FRAME_BYTES]);
        let stats = client.stats();
        assert_eq!((stats.call_frames_from_server, stats.underruns), (1, 2));
        assert_eq!(bounded("recv", client.recv()).await, None);
    }

    /// The reason the stream ends with after the server sends `bytes`.
    async fn end_after(bytes: &[u8], close: bool) -> (EndReason, AudioSocketClient) {
        let (mut client, mut server) = connected(AudioSocketOptions::default()).await;
        server.write_all(bytes).await.expect("write");
        if close {
            drop(server);
        } else {
            // Held open until the end is seen: the bytes alone must end it.
            let _ = bounded("end", client.closed()).await;
        }
        let reason = bounded("end", client.closed()).await;
        assert_eq!(client.end_reason(), Some(reason.clone()));
        assert_eq!(bounded("recv", client.recv()).await, None);
        (reason, client)
    }

    #[tokio::test]
    async fn the_server_ending_the_stream_gives_the_reason() {
        let (reason, client) = end_after(&[], true).await;
        assert_eq!(reason, EndReason::ServerClosed);
        assert_eq!(
            client.send_audio(Box::new([0; FRAME_BYTES])),
            Err(SendError::Ended)
        );
        assert_eq!(
            end_after(&[0x00, 0x00, 0x00], false).await.0,
            EndReason::ServerHangup
        );
        let (reason, _) = end_after(&[0xff, 0x00, 0x01, 0x02], false).await;
        assert_eq!(reason, EndReason::ServerError { code: 0x02 });
        assert!(
            reason.to_string().contains("frame forwarding error"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn garbage_from_the_server_is_a_typed_error() {
        let (reason, _) = end_after(b"HTTP/1.1 400 Bad Request\r\n\r\n", false).await;
        assert_eq!(
            reason,
            EndReason::Protocol(DecodeError::UnknownKind { kind: b'H' })
        );
        let (reason, _) = end_after(&[0x10, 0x00, 0x00], false).await;
        assert_eq!(reason, EndReason::Protocol(DecodeError::ZeroLengthAudio));
        let mut uuid = vec![0x01, 0x00, 0x10];
        uuid.extend_from_slice(&UUID);
        let (reason, _) = end_after(&uuid, false).await;
        assert_eq!(reason, EndReason::UnexpectedFrame { kind: KIND_UUID });
        // Garbage after some audio: the audio still reaches the call.
        let mut bytes = Vec::new();
        encode_audio(&[5; 640], &mut bytes).expect("encodes");
        bytes.extend_from_slice(&[0x77, 0x12, 0x34]);
        let (mut client, mut server) = connected(AudioSocketOptions::default()).await;
        server.write_all(&bytes).await.expect("write");
        assert_eq!(
            bounded("end", client.closed()).await,
            EndReason::Protocol(DecodeError::UnknownKind { kind: 0x77 })
        );
        for _ in 0..2 {
            let frame = bounded("frame", client.recv()).await.expect("a frame");
            assert_eq!(frame[..], [5; FRAME_BYTES]);
        }
        assert_eq!(bounded("recv", client.recv()).await, None);
    }

    #[tokio::test]
    async fn connecting_to_a_closed_port_fails_clearly() {
        let (listener, addr) = listener().await;
        drop(listener);
        let result = bounded(
            "connect",
            AudioSocketClient::connect(addr, UUID, AudioSocketOptions::default()),
        )
        .await;
        match result {
            Err(ConnectError::Connect { addr: a, source }) => {
                assert_eq!(a, addr.to_string());
                assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused);
            }
            other => panic!("expected a refused connection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_server_that_never_accepts_times_out() {
        // A listener with a backlog of 0 that never accepts: once its accept
        // queue is full, Linux drops further SYNs, so connecting hangs until
        // the client's own timeout.
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = socket.local_addr().expect("local addr");
        let _listener = socket.listen(0).expect("listen");
        let short = Duration::from_millis(200);
        let mut fillers = Vec::new();
        let mut full = false;
        for _ in 0..16 {
            match tokio::time::timeout(short, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => fillers.push(stream),
                Ok(Err(error)) => panic!("filling the backlog failed: {error}"),
                Err(_) => {
                    full = true;
                    break;
                }
            }
        }
        assert!(
            full,
            "the accept queue never filled; the test cannot run here"
        );

        let options = AudioSocketOptions {
            connect_timeout: short,
            ..AudioSocketOptions::default()
        };
        match bounded("connect", AudioSocketClient::connect(addr, UUID, options)).await {
            Err(error @ ConnectError::Timeout { .. }) => {
                assert!(error.to_string().contains(&addr.to_string()), "{error}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
}
