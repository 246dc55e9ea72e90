//! Modems' voice ports during calls: 20 ms frames of 8 kHz signed 16-bit
//! little-endian mono (320 bytes) both ways, paced in real time.
//!
//! A modem plays whatever arrives on its voice port and expects exactly one
//! frame per 20 ms: early frames pile up in its buffer (latency grows), late
//! ones make it play silence (clicks). So every call's audio is moved by one
//! hub-wide [`VoiceClock`] thread on an absolute schedule (`start + k × 20 ms`,
//! never "20 ms after the last write", which would drift), slept with the
//! kernel's high-resolution timer rather than the async runtime's 1 ms wheel.
//! At each tick it writes one frame to every call's modem (silence when the
//! bridge had nothing ready), reads whatever each modem sent, cuts it into
//! frames, and measures how late the tick was. One wake-up per 20 ms for the
//! whole hub, not one per call: 30 calls cost 50 wake-ups a second.
//!
//! The bridge to SIP (or anything else) is an [`AudioStream`]: frames from
//! the modem go to its `from_device` side; frames for the modem are taken
//! from its `to_device` side, one per tick.
//!
//! Owns a duplicate of each call's voice-port descriptor while the call
//! lasts, so a modem task that dies mid-call can never leave the clock
//! writing to a closed (or reused) descriptor. Never touches an AT port.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

/// Bytes in one 20 ms frame of 8 kHz, 16-bit mono audio.
pub const FRAME_BYTES: usize = 320;
/// The frame period.
pub const FRAME_PERIOD: Duration = Duration::from_millis(20);

/// One frame of audio.
pub type Frame = Box<[u8; FRAME_BYTES]>;

/// The two directions of a call's audio, as a bridge sees them.
#[derive(Debug)]
pub struct AudioStream {
    /// Frames the modem sent (the remote party speaking).
    pub from_device: mpsc::Receiver<Frame>,
    /// Frames for the modem to play (our side speaking); silence when empty.
    pub to_device: mpsc::Sender<Frame>,
}

/// Histogram bounds of write lateness, in microseconds (fine below 2 ms,
/// where the target is).
const LATENESS_BOUNDS_US: [u64; 12] = [
    250, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 20_000, 50_000, 100_000,
];

/// Voice figures of the whole hub.
#[derive(Debug, Default)]
pub struct VoiceMetrics {
    lateness_buckets: [AtomicU64; 12],
    lateness_count: AtomicU64,
    lateness_sum_us: AtomicU64,
    lateness_max_us: AtomicU64,
    /// Frames written to modems.
    pub frames_to_device: AtomicU64,
    /// Frames read from modems.
    pub frames_from_device: AtomicU64,
    /// Ticks where the bridge had no frame ready and silence was sent.
    pub silence_fills: AtomicU64,
    /// Frames dropped: from a modem because the bridge was not reading, or
    /// to a modem because it was not draining its port.
    pub overruns: AtomicU64,
}

impl VoiceMetrics {
    /// Records how late one write was.
    pub fn observe_lateness(&self, late: Duration) {
        let us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        for (bound, bucket) in LATENESS_BOUNDS_US.iter().zip(&self.lateness_buckets) {
            if us <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.lateness_count.fetch_add(1, Ordering::Relaxed);
        self.lateness_sum_us.fetch_add(us, Ordering::Relaxed);
        self.lateness_max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Appends the voice series in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let name = "hubd_voice_frame_lateness_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} How late each 20 ms frame was written to a modem's voice port, against its absolute schedule.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in LATENESS_BOUNDS_US.iter().zip(&self.lateness_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {}",
                *bound as f64 / 1e6,
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.lateness_count.load(Ordering::Relaxed);
        let sum = self.lateness_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        let max = self.lateness_max_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP hubd_voice_frame_lateness_max_seconds The latest any frame was written since start.\n# TYPE hubd_voice_frame_lateness_max_seconds gauge\nhubd_voice_frame_lateness_max_seconds {max}"
        );
        for (metric, help, value) in [
            (
                "hubd_voice_frames_total{direction=\"to_device\"}",
                "Voice frames written to or read from modems.",
                &self.frames_to_device,
            ),
            (
                "hubd_voice_frames_total{direction=\"from_device\"}",
                "",
                &self.frames_from_device,
            ),
            (
                "hubd_voice_silence_fills_total",
                "Frame ticks where the bridge had nothing ready and silence was sent.",
                &self.silence_fills,
            ),
            (
                "hubd_voice_overruns_total",
                "Frames dropped: the bridge did not read them, or a modem did not drain its port.",
                &self.overruns,
            ),
        ] {
            let base = metric.split('{').next().unwrap_or(metric);
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} counter");
            }
            let _ = writeln!(out, "{metric} {}", value.load(Ordering::Relaxed));
        }
    }
}

/// The far end of an [`AudioStream`], held by the voice task.
#[derive(Debug)]
pub struct DeviceSide {
    /// Where frames from the modem go.
    pub from_device: mpsc::Sender<Frame>,
    /// Where frames for the modem come from.
    pub to_device: mpsc::Receiver<Frame>,
}

/// A connected pair: the bridge's [`AudioStream`] and the voice task's end.
/// Buffers hold 10 frames (200 ms) each way.
pub fn audio_pair() -> (AudioStream, DeviceSide) {
    let (from_tx, from_rx) = mpsc::channel(10);
    let (to_tx, to_rx) = mpsc::channel(10);
    (
        AudioStream {
            from_device: from_rx,
            to_device: to_tx,
        },
        DeviceSide {
            from_device: from_tx,
            to_device: to_rx,
        },
    )
}

/// The hub's voice pacing thread and the calls it carries.
#[derive(Debug, Clone)]
pub struct VoiceClock {
    shared: Arc<ClockShared>,
}

#[derive(Debug)]
struct ClockShared {
    calls: Mutex<Vec<ClockedCall>>,
    wake: Condvar,
    metrics: Arc<VoiceMetrics>,
    started: std::sync::Once,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct ClockedCall {
    id: u64,
    fd: OwnedFd,
    side: DeviceSide,
    pending: Vec<u8>,
    failed: Arc<Mutex<Option<String>>>,
}

/// A call's audio on the clock; dropping it takes the call off the clock.
#[derive(Debug)]
pub struct ClockedHandle {
    clock: VoiceClock,
    id: u64,
    failed: Arc<Mutex<Option<String>>>,
}

impl ClockedHandle {
    /// Why the voice port failed during the call, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for ClockedHandle {
    fn drop(&mut self) {
        let mut calls = self
            .clock
            .shared
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        calls.retain(|c| c.id != self.id);
    }
}

impl VoiceClock {
    /// A clock counting into `metrics`; its thread starts with the first call.
    pub fn new(metrics: Arc<VoiceMetrics>) -> VoiceClock {
        VoiceClock {
            shared: Arc::new(ClockShared {
                calls: Mutex::new(Vec::new()),
                wake: Condvar::new(),
                metrics,
                started: std::sync::Once::new(),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Puts a call on `port` (a voice port from [`super::port::open_raw`])
    /// on the clock, its audio bridged through `side`.
    pub fn attach(&self, port: &impl AsFd, side: DeviceSide) -> std::io::Result<ClockedHandle> {
        // Stale audio from before the call would play first.
        // SAFETY: tcflush on a descriptor the caller owns; failure is harmless.
        unsafe {
            libc::tcflush(port.as_fd().as_raw_fd(), libc::TCIOFLUSH);
        }
        let fd = port.as_fd().try_clone_to_owned()?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let failed = Arc::new(Mutex::new(None));
        let call = ClockedCall {
            id,
            fd,
            side,
            pending: Vec::with_capacity(FRAME_BYTES * 4),
            failed: Arc::clone(&failed),
        };
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
        self.start_thread();
        self.shared.wake.notify_one();
        Ok(ClockedHandle {
            clock: self.clone(),
            id,
            failed,
        })
    }

    fn start_thread(&self) {
        let shared = Arc::clone(&self.shared);
        self.shared.started.call_once(move || {
            let spawned = std::thread::Builder::new()
                .name("voice-clock".into())
                .spawn(move || run_clock(&shared));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the voice clock thread; calls have no audio");
            }
        });
    }
}

/// The clock thread: idle while no call is on it, else one tick per 20 ms.
fn run_clock(shared: &ClockShared) {
    let silence = [0u8; FRAME_BYTES];
    let mut buf = [0u8; 4096];
    loop {
        // Idle until a call arrives; the schedule restarts with it.
        {
            let mut calls = shared.calls.lock().unwrap_or_else(|p| p.into_inner());
            while calls.is_empty() {
                calls = shared.wake.wait(calls).unwrap_or_else(|p| p.into_inner());
            }
        }
        let start = std::time::Instant::now();
        let mut tick: u32 = 0;
        loop {
            let due = start + FRAME_PERIOD * tick;
            let now = std::time::Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let mut calls = shared.calls.lock().unwrap_or_else(|p| p.into_inner());
            if calls.is_empty() {
                break;
            }
            let late = std::time::Instant::now().saturating_duration_since(due);
            for call in calls.iter_mut() {
                shared.metrics.observe_lateness(late);
                tick_call(call, &silence, &mut buf, &shared.metrics);
            }
            // Calls whose port failed leave the clock; their handle reports it.
            calls.retain(|c| c.failed.lock().map(|f| f.is_none()).unwrap_or(false));
            drop(calls);
            // A stall longer than a frame skips the missed ticks instead of
            // bursting them: the modems have played silence for them already.
            let behind = u32::try_from(start.elapsed().as_millis() / FRAME_PERIOD.as_millis())
                .unwrap_or(u32::MAX);
            tick = (tick + 1).max(behind);
        }
    }
}

/// One tick of one call: a frame out, whatever came in.
fn tick_call(
    call: &mut ClockedCall,
    silence: &[u8; FRAME_BYTES],
    buf: &mut [u8],
    metrics: &VoiceMetrics,
) {
    let fail = |call: &ClockedCall, why: String| {
        *call.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    };
    let frame = call.side.to_device.try_recv().ok();
    if frame.is_none() {
        metrics.silence_fills.fetch_add(1, Ordering::Relaxed);
    }
    let bytes: &[u8] = frame.as_deref().map_or(&silence[..], |f| &f[..]);
    // SAFETY: write(2) on a descriptor this call owns, from a live buffer.
    let written = unsafe { libc::write(call.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    if written == FRAME_BYTES as isize {
        metrics.frames_to_device.fetch_add(1, Ordering::Relaxed);
    } else if written < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            // The modem is not draining its port: drop this frame, not the call.
            metrics.overruns.fetch_add(1, Ordering::Relaxed);
        } else {
            fail(call, format!("voice port write failed: {e}"));
            return;
        }
    }
    loop {
        // SAFETY: read(2) into a live buffer on a descriptor this call owns.
        let n = unsafe { libc::read(call.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            let n = usize::try_from(n).unwrap_or(0);
            call.pending.extend_from_slice(&buf[..n]);
            continue;
        }
        if n == 0 {
            fail(call, "the voice port hung up".into());
            return;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::WouldBlock {
            fail(call, format!("voice port read failed: {e}"));
            return;
        }
        break;
    }
    while call.pending.len() >= FRAME_BYTES {
        let mut frame: Frame = Box::new([0; FRAME_BYTES]);
        frame.copy_from_slice(&call.pending[..FRAME_BYTES]);
        call.pending.drain(..FRAME_BYTES);
        metrics.frames_from_device.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::TrySendError::Full(_)) = call.side.from_device.try_send(frame) {
            metrics.overruns.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Never hold more than a few frames of a modem that sends odd sizes.
    if call.pending.len() > FRAME_BYTES * 8 {
        call.pending.clear();
    }
}
