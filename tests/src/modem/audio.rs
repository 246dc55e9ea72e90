//! Voice-port audio, sans-IO: the tone generator that fills 20 ms frames
//! (8 kHz, s16le, mono: 320 bytes, `^CVOICE:0,8000,16,20`), the pacer that
//! says how many frames are due at a given instant, the ring buffer that
//! keeps what the driver wrote, and two frequency estimators for tests
//! (Goertzel power at a frequency, zero-crossing rate).
//!
//! Owns sample arithmetic only. Never reads a clock (time is an argument)
//! and never touches a port.

use std::collections::VecDeque;
use std::f64::consts::TAU;
use std::time::{Duration, Instant};

use super::config::Tone;

/// Samples per second on the voice port.
pub const SAMPLE_RATE: u32 = 8_000;
/// One frame's duration.
pub const FRAME: Duration = Duration::from_millis(20);
/// Bytes in one frame: 160 samples of 2 bytes.
pub const FRAME_BYTES: usize = 320;
/// Frames sent at most in one go when the sender fell behind; older ones
/// are skipped, as a real modem drops audio it could not deliver.
const MAX_CATCH_UP: u64 = 5;

/// Generates a continuous sine, or two (or silence), as frames.
#[derive(Debug, Clone, Default)]
pub struct ToneGenerator {
    phase: f64,
    also_phase: f64,
}

impl ToneGenerator {
    /// The next 20 ms frame of `tone` (silence when `None`), phase
    /// continuous across frames.
    pub fn next_frame(&mut self, tone: Option<Tone>) -> [u8; FRAME_BYTES] {
        let mut frame = [0u8; FRAME_BYTES];
        let Some(tone) = tone else {
            return frame;
        };
        let step = TAU * tone.freq_hz / f64::from(SAMPLE_RATE);
        let also_step = tone.also_hz.map(|hz| TAU * hz / f64::from(SAMPLE_RATE));
        for chunk in frame.chunks_exact_mut(2) {
            let mut value = self.phase.sin();
            if let Some(also_step) = also_step {
                value += self.also_phase.sin();
                self.also_phase = (self.also_phase + also_step) % TAU;
            }
            let sample = (value * f64::from(tone.amplitude))
                .round()
                .clamp(-32768.0, 32767.0) as i16;
            chunk.copy_from_slice(&sample.to_le_bytes());
            self.phase = (self.phase + step) % TAU;
        }
        frame
    }
}

/// Real-time pacing of frames: frame `n` is due at `start + n × 20 ms`.
#[derive(Debug, Clone)]
pub struct FramePacer {
    start: Instant,
    sent: u64,
}

impl FramePacer {
    /// Starts pacing at `now` (the first frame is due at once).
    pub fn new(now: Instant) -> FramePacer {
        FramePacer {
            start: now,
            sent: 0,
        }
    }

    /// How many frames to send at `now` (at most 5; when
    /// further behind, the schedule skips ahead) and counts them as sent.
    pub fn due(&mut self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        let should = (elapsed.as_micros() / FRAME.as_micros()) as u64 + 1;
        let behind = should.saturating_sub(self.sent);
        if behind > MAX_CATCH_UP {
            self.sent = should - MAX_CATCH_UP;
        }
        let n = should.saturating_sub(self.sent);
        self.sent += n;
        n
    }

    /// When the next frame is due.
    pub fn next_due(&self) -> Instant {
        let micros = u64::try_from(FRAME.as_micros()).unwrap_or(20_000) * self.sent;
        self.start + Duration::from_micros(micros)
    }
}

/// The last `capacity` bytes the driver wrote to the voice port, and the
/// total.
#[derive(Debug, Clone)]
pub struct AudioRing {
    buf: VecDeque<u8>,
    capacity: usize,
    total: u64,
}

impl AudioRing {
    /// A ring keeping `capacity` bytes (160 000 = 10 s).
    pub fn new(capacity: usize) -> AudioRing {
        AudioRing {
            buf: VecDeque::with_capacity(capacity.min(1 << 20)),
            capacity: capacity.max(1),
            total: 0,
        }
    }

    /// Appends `bytes`, dropping the oldest beyond capacity.
    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        for &b in bytes {
            if self.buf.len() == self.capacity {
                self.buf.pop_front();
            }
            self.buf.push_back(b);
        }
    }

    /// Bytes received since the start.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The bytes kept, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        self.buf.iter().copied().collect()
    }

    /// Forgets the kept bytes (the total stays).
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// s16le bytes as samples (a trailing odd byte is ignored).
pub fn samples(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect()
}

/// Goertzel: the power of `freq_hz` in `samples` at `rate` Hz, normalised
/// so a full-scale sine at exactly that frequency gives about 0.25.
pub fn goertzel_power(samples: &[i16], freq_hz: f64, rate: u32) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let coeff = 2.0 * (TAU * freq_hz / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let n = samples.len() as f64;
    power / (n * n)
}

/// Of `candidates`, the frequency with the most Goertzel power in `samples`.
pub fn strongest_of(samples: &[i16], candidates: &[f64], rate: u32) -> Option<f64> {
    candidates
        .iter()
        .copied()
        .map(|f| (f, goertzel_power(samples, f, rate)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(f, _)| f)
}

/// The frequency of a pure tone from its zero-crossing rate, `None` for
/// silence or fewer than two crossings.
pub fn zero_crossing_hz(samples: &[i16], rate: u32) -> Option<f64> {
    let crossings: Vec<usize> = samples
        .windows(2)
        .enumerate()
        .filter(|(_, w)| (w[0] < 0) != (w[1] < 0))
        .map(|(i, _)| i)
        .collect();
    let (first, last) = (*crossings.first()?, *crossings.last()?);
    if crossings.len() < 2 || last == first {
        return None;
    }
    let half_periods = (crossings.len() - 1) as f64;
    let span = (last - first) as f64 / f64::from(rate);
    Some(half_periods / span / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone_bytes(freq: f64, frames: usize) -> Vec<u8> {
        let mut g = ToneGenerator::default();
        let tone = Some(Tone {
            freq_hz: freq,
            amplitude: 10_000,
            also_hz: None,
        });
        (0..frames).flat_map(|_| g.next_frame(tone)).collect()
    }

    #[test]
    fn estimators_find_the_tone() {
        let s = samples(&tone_bytes(425.0, 10));
        assert_eq!(s.len(), 1600);
        let zc = zero_crossing_hz(&s, SAMPLE_RATE).unwrap_or(0.0);
        assert!((zc - 425.0).abs() < 5.0, "{zc}");
        assert_eq!(
            strongest_of(&s, &[350.0, 425.0, 1000.0], SAMPLE_RATE),
            Some(425.0)
        );
        assert!(
            goertzel_power(&s, 425.0, SAMPLE_RATE) > 10.0 * goertzel_power(&s, 1000.0, SAMPLE_RATE)
        );
        assert_eq!(zero_crossing_hz(&[0; 320], SAMPLE_RATE), None);
        assert_eq!(
            ToneGenerator::default().next_frame(None),
            [0u8; FRAME_BYTES]
        );
    }

    #[test]
    fn pacer_sends_in_real_time_and_skips_when_far_behind() {
        let t0 = Instant::now();
        let mut p = FramePacer::new(t0);
        assert_eq!(p.due(t0), 1);
        assert_eq!(p.due(t0 + Duration::from_millis(19)), 0);
        assert_eq!(p.next_due(), t0 + FRAME);
        assert_eq!(p.due(t0 + Duration::from_millis(60)), 3);
        assert_eq!(p.due(t0 + Duration::from_secs(10)), MAX_CATCH_UP);
    }

    #[test]
    fn ring_keeps_the_newest() {
        let mut r = AudioRing::new(4);
        r.push(&[1, 2, 3]);
        r.push(&[4, 5, 6]);
        assert_eq!(r.contents(), vec![3, 4, 5, 6]);
        assert_eq!(r.total(), 6);
    }
}
