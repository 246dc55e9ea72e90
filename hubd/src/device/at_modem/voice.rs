//! A modem's voice port during a call: 20 ms frames of 8 kHz signed 16-bit
//! little-endian mono (320 bytes) both ways, paced in real time.
//!
//! The modem plays whatever arrives on its voice port and expects exactly
//! one frame per 20 ms: early frames pile up in its buffer (latency grows),
//! late ones make it play silence (clicks). So the writer runs on its own
//! task on an absolute schedule (`start + k × 20 ms`, never "20 ms after
//! the last write", which would drift), sends silence when the far end had
//! nothing ready, and measures how late each write was. Reading is not
//! paced: frames are cut from whatever the port delivers.
//!
//! The bridge to SIP (or anything else) is an [`AudioStream`]: frames from
//! the modem go to its `from_device` sender; frames for the modem are taken
//! from its `to_device` receiver, one per tick.
//!
//! Owns the voice port while its call lasts. Never touches the AT port.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::port::SerialPort;

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
    /// Frames from the modem dropped because the bridge was not reading.
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
                "Frames from modems dropped because the bridge did not read them.",
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

/// Runs one call's audio on `port` until `stop` is cancelled or the port
/// fails; returns the port so the next call reuses it (and the error, if any).
pub async fn run_call(
    port: SerialPort,
    side: DeviceSide,
    metrics: Arc<VoiceMetrics>,
    stop: CancellationToken,
) -> (SerialPort, Option<std::io::Error>) {
    let DeviceSide {
        from_device,
        mut to_device,
    } = side;
    port.flush_stale();
    let silence: Frame = Box::new([0; FRAME_BYTES]);
    let mut pending = Vec::with_capacity(FRAME_BYTES * 4);
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut tick: u32 = 0;
    let error = loop {
        let due = start + FRAME_PERIOD * tick;
        tokio::select! {
            biased;
            () = stop.cancelled() => break None,
            () = tokio::time::sleep_until(due) => {
                let now = Instant::now();
                metrics.observe_lateness(now.saturating_duration_since(due));
                let frame = match to_device.try_recv() {
                    Ok(frame) => frame,
                    Err(_) => {
                        metrics.silence_fills.fetch_add(1, Ordering::Relaxed);
                        silence.clone()
                    }
                };
                if let Err(e) = port.write_all(&frame[..]).await {
                    break Some(e);
                }
                metrics.frames_to_device.fetch_add(1, Ordering::Relaxed);
                // A stall longer than a frame skips the missed ticks instead of
                // bursting them: the modem has played silence for them already.
                let elapsed = Instant::now().saturating_duration_since(start);
                let behind = u32::try_from(elapsed.as_millis() / FRAME_PERIOD.as_millis()).unwrap_or(u32::MAX);
                tick = (tick + 1).max(behind);
            }
            read = port.read(&mut buf) => match read {
                Ok(0) => break Some(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the voice port hung up")),
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    while pending.len() >= FRAME_BYTES {
                        let mut frame: Frame = Box::new([0; FRAME_BYTES]);
                        frame.copy_from_slice(&pending[..FRAME_BYTES]);
                        pending.drain(..FRAME_BYTES);
                        metrics.frames_from_device.fetch_add(1, Ordering::Relaxed);
                        if from_device.try_send(frame).is_err() {
                            metrics.overruns.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(e) => break Some(e),
            },
        }
    };
    (port, error)
}
