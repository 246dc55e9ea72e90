//! A test AudioSocket server (Asterisk's AudioSocket protocol, the AI call
//! processor's side), written from the protocol description and not from
//! hubd's codec, so the two cannot share a misreading:
//!
//! - every frame is `[kind: u8][length: u16 big-endian][payload]`;
//! - kinds: `0x00` hangup (no payload), `0x01` UUID (16 raw bytes, the
//!   first frame a client sends), `0x03` DTMF (one ASCII byte), `0x10`
//!   audio (signed 16-bit little-endian, 8 kHz mono: 320 bytes are 20 ms),
//!   `0xFF` error (a code byte).
//!
//! It accepts one connection, keeps the exact bytes of every frame it
//! receives (in order), plays a tone back in 320-byte audio frames every
//! 20 ms while the connection is up, and can hang up itself (`00 00 00`,
//! then it closes its sending side).
//!
//! It must never: answer a second connection, or block the test: state is
//! read through snapshots ([`AudioSocketServer::received`]) and waited for
//! with [`crate::wait_for`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Kind byte of a hangup frame.
pub const HANGUP: u8 = 0x00;
/// Kind byte of the UUID frame.
pub const UUID: u8 = 0x01;
/// Kind byte of an audio frame.
pub const AUDIO: u8 = 0x10;
/// Bytes of 20 ms of 8 kHz s16le mono audio.
pub const FRAME_BYTES: usize = 320;

/// What the server plays while a call is connected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerTone {
    /// Frequency, Hz.
    pub freq_hz: f64,
    /// Peak amplitude, 0–32767.
    pub amplitude: i16,
}

impl Default for ServerTone {
    /// 1 kHz at about -12 dBFS.
    fn default() -> ServerTone {
        ServerTone {
            freq_hz: 1000.0,
            amplitude: 8_000,
        }
    }
}

/// Everything the server has seen so far.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// A client connected.
    pub connected: bool,
    /// Every frame received, in order, exactly as on the wire (header and
    /// payload).
    pub frames: Vec<Vec<u8>>,
    /// The client closed the connection (EOF), or it failed.
    pub closed: bool,
    /// Bytes received that do not make a whole frame before the end.
    pub trailing: Vec<u8>,
    /// Audio frames the server sent.
    pub frames_sent: u64,
}

impl Received {
    /// The first frame, if any.
    pub fn first(&self) -> Option<&[u8]> {
        self.frames.first().map(Vec::as_slice)
    }

    /// The UUID frame's 16 bytes, when the first frame is one (`01 00 10`).
    pub fn uuid(&self) -> Option<[u8; 16]> {
        let first = self.first()?;
        if first.len() != 19 || first[..3] != [UUID, 0x00, 0x10] {
            return None;
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&first[3..]);
        Some(uuid)
    }

    /// The payloads of the audio frames, in order.
    pub fn audio_payloads(&self) -> Vec<&[u8]> {
        self.frames
            .iter()
            .filter(|f| f.first() == Some(&AUDIO))
            .map(|f| &f[3..])
            .collect()
    }

    /// Whether a hangup frame (`00 00 00`) came.
    pub fn hangup(&self) -> bool {
        self.frames.iter().any(|f| f[..] == [HANGUP, 0x00, 0x00])
    }
}

/// The UUID as text, `8-4-4-4-12` lower-case hex.
pub fn uuid_text(uuid: &[u8; 16]) -> String {
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

struct Shared {
    received: Mutex<Received>,
    /// The test asked the server to hang up.
    hang_up: AtomicBool,
    /// The server is being dropped.
    stop: AtomicBool,
    /// The accepted connection, for dropping.
    stream: Mutex<Option<TcpStream>>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut Received)) {
        f(&mut self.received.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A test AudioSocket server on a loopback port.
pub struct AudioSocketServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl AudioSocketServer {
    /// Listens on a free loopback port; plays `tone` (or silence, `None`)
    /// once a client connects.
    pub fn start(tone: Option<ServerTone>) -> AudioSocketServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            received: Mutex::new(Received::default()),
            hang_up: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            stream: Mutex::new(None),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || serve(listener, shared, tone))
        };
        AudioSocketServer {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// A loopback address where nothing listens (bound, then released).
    pub fn unused_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.local_addr().expect("local address")
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has received so far.
    pub fn received(&self) -> Received {
        self.shared
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends a hangup frame (`00 00 00`) at the next 20 ms tick instead of
    /// audio, then closes its sending side.
    pub fn hang_up(&self) {
        self.shared.hang_up.store(true, Ordering::SeqCst);
    }
}

impl Drop for AudioSocketServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(stream) = self
            .shared
            .stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wakes an accept still waiting.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: TcpListener, shared: Arc<Shared>, tone: Option<ServerTone>) {
    let Ok((stream, _)) = listener.accept() else {
        return;
    };
    drop(listener);
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    let _ = stream.set_nodelay(true);
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    if let Ok(keep) = stream.try_clone() {
        *shared.stream.lock().unwrap_or_else(|p| p.into_inner()) = Some(keep);
    }
    shared.update(|r| r.connected = true);
    let player = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || play(writer, &shared, tone))
    };
    read_frames(stream, &shared);
    shared.update(|r| r.closed = true);
    let _ = player.join();
}

/// Reads frames until EOF or an error, keeping each one's exact bytes.
fn read_frames(mut stream: TcpStream, shared: &Shared) {
    loop {
        let mut header = [0u8; 3];
        if let Err(partial) = read_full(&mut stream, &mut header) {
            shared.update(|r| r.trailing.extend_from_slice(&header[..partial]));
            return;
        }
        let len = usize::from(u16::from_be_bytes([header[1], header[2]]));
        let mut frame = vec![0u8; 3 + len];
        frame[..3].copy_from_slice(&header);
        if let Err(partial) = read_full(&mut stream, &mut frame[3..]) {
            shared.update(|r| r.trailing.extend_from_slice(&frame[..3 + partial]));
            return;
        }
        shared.update(|r| r.frames.push(frame));
    }
}

/// Fills `buf`; on EOF or an error, how many bytes it got.
fn read_full(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), usize> {
    let mut have = 0;
    while have < buf.len() {
        match stream.read(&mut buf[have..]) {
            Ok(0) => return Err(have),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(have),
        }
    }
    Ok(())
}

/// Writes one audio frame per 20 ms (the tone, or silence) until the
/// connection ends or the test asks for a hangup.
fn play(mut stream: TcpStream, shared: &Shared, tone: Option<ServerTone>) {
    let start = Instant::now();
    let mut sample = 0u64;
    for tick in 0u32.. {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if shared.hang_up.load(Ordering::SeqCst) {
            let _ = stream.write_all(&[HANGUP, 0x00, 0x00]);
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
        let mut frame = Vec::with_capacity(3 + FRAME_BYTES);
        frame.push(AUDIO);
        frame.extend_from_slice(&(FRAME_BYTES as u16).to_be_bytes());
        for _ in 0..FRAME_BYTES / 2 {
            let value = tone.map_or(0, |tone| {
                let phase = 2.0 * std::f64::consts::PI * tone.freq_hz * sample as f64 / 8000.0;
                (f64::from(tone.amplitude) * phase.sin()).round() as i16
            });
            frame.extend_from_slice(&value.to_le_bytes());
            sample += 1;
        }
        if stream.write_all(&frame).is_err() {
            return;
        }
        shared.update(|r| r.frames_sent += 1);
        // Real-time pacing of the playback (not a wait for a state).
        let due = start + Duration::from_millis(20) * (tick + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}
