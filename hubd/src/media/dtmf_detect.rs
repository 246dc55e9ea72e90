//! In-band DTMF detection on the device's audio: a GSM caller pressing a key
//! reaches the modem as a tone pair in the downlink audio (the network
//! regenerates it), so the bridge finds the digit in the device's frames and
//! sends it on as an RFC 4733 event (SIP leg) or an AudioSocket DTMF frame.
//! The tones themselves stay in the audio.
//!
//! Sans-IO: [`DtmfDetector::push`] takes one 20 ms frame (160 samples of 8 kHz
//! s16le) and returns a digit once, when it starts. Per frame: a Goertzel
//! filter at each of the eight DTMF frequencies (exact frequencies, not DFT
//! bins) and the frame's energy, in floating point, about 1,300 multiply-adds.
//!
//! A frame holds digit `d` when (ITU-T Q.24's spirit, thresholds of common
//! practice):
//! - its level is above [`MIN_LEVEL_DBFS`];
//! - the strongest row and column tones together carry at least
//!   [`MIN_TONE_SHARE`] of the frame's energy (speech and music spread theirs);
//! - each is at least [`MIN_PEAK_RATIO_DB`] above the next tone of its group;
//! - the twist (column over row) is within +[`MAX_REVERSE_TWIST_DB`] /
//!   −[`MAX_NORMAL_TWIST_DB`].
//!
//! A digit starts after [`MIN_FRAMES`] consecutive frames holding it (40 ms,
//! Q.24's minimum duration) and ends at a frame that does not; the same key
//! pressed twice needs a frame between (real pauses are ≥ 40 ms).

use super::telephone_event::Digit;
use crate::device::at_modem::voice::FRAME_BYTES;

/// Sample rate of the frames.
const RATE_HZ: f32 = 8_000.0;
/// Samples per frame.
const SAMPLES: usize = FRAME_BYTES / 2;
/// The row (low) group, Hz.
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// The column (high) group, Hz.
const COLUMNS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// The keypad by (row, column).
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Frames quieter than this (RMS, dBFS) hold no digit.
pub const MIN_LEVEL_DBFS: f32 = -40.0;
/// Share of the frame's energy the two tones must carry.
pub const MIN_TONE_SHARE: f32 = 0.7;
/// How far each tone must stand above the second strongest of its group, dB.
pub const MIN_PEAK_RATIO_DB: f32 = 8.0;
/// Column tone at most this much weaker than the row tone, dB.
pub const MAX_NORMAL_TWIST_DB: f32 = 8.0;
/// Column tone at most this much stronger than the row tone, dB.
pub const MAX_REVERSE_TWIST_DB: f32 = 4.0;
/// Consecutive frames a digit must hold before it counts (40 ms).
pub const MIN_FRAMES: u8 = 2;

/// Finds DTMF digits in a stream of 20 ms frames.
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    rows: [f32; 4],
    columns: [f32; 4],
    /// The digit the last frames held, and for how many frames.
    candidate: Option<(char, u8)>,
    /// The digit reported and still held.
    reported: Option<char>,
}

impl Default for DtmfDetector {
    fn default() -> Self {
        let coefficient = |f: f32| 2.0 * (2.0 * std::f32::consts::PI * f / RATE_HZ).cos();
        DtmfDetector {
            rows: ROWS.map(coefficient),
            columns: COLUMNS.map(coefficient),
            candidate: None,
            reported: None,
        }
    }
}

impl DtmfDetector {
    /// A detector with nothing heard yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next frame; the digit that starts in it, if any.
    pub fn push(&mut self, frame: &[u8; FRAME_BYTES]) -> Option<Digit> {
        let held = self.frame_digit(frame);
        match held {
            None => {
                self.candidate = None;
                self.reported = None;
                None
            }
            Some(key) => {
                let count = match self.candidate {
                    Some((previous, n)) if previous == key => n.saturating_add(1),
                    _ => 1,
                };
                self.candidate = Some((key, count));
                if count >= MIN_FRAMES && self.reported != Some(key) {
                    self.reported = Some(key);
                    return Digit::from_char(key);
                }
                None
            }
        }
    }

    /// The key one frame holds, by the tests in the module's doc.
    fn frame_digit(&self, frame: &[u8; FRAME_BYTES]) -> Option<char> {
        let mut samples = [0f32; SAMPLES];
        let mut energy = 0f32;
        for (sample, pair) in samples.iter_mut().zip(frame.chunks_exact(2)) {
            *sample = f32::from(i16::from_le_bytes([pair[0], pair[1]]));
            energy += *sample * *sample;
        }
        let mean_square = energy / SAMPLES as f32;
        let full_scale = 32768.0f32 * 32768.0;
        if mean_square <= 0.0 || 10.0 * (mean_square / full_scale).log10() < MIN_LEVEL_DBFS {
            return None;
        }
        let rows = self.rows.map(|c| goertzel(&samples, c));
        let columns = self.columns.map(|c| goertzel(&samples, c));
        let (row, row_power, row_second) = strongest(&rows);
        let (column, column_power, column_second) = strongest(&columns);
        // A tone of amplitude A over N samples has Goertzel power (A·N/2)²
        // and energy N·A²/2: power / (energy · N/2) is its share.
        let share = (row_power + column_power) / (energy * SAMPLES as f32 / 2.0);
        if share < MIN_TONE_SHARE {
            return None;
        }
        let ratio = 10f32.powf(MIN_PEAK_RATIO_DB / 10.0);
        if row_power < row_second * ratio || column_power < column_second * ratio {
            return None;
        }
        let twist_db = 10.0 * (column_power / row_power).log10();
        if !(-MAX_NORMAL_TWIST_DB..=MAX_REVERSE_TWIST_DB).contains(&twist_db) {
            return None;
        }
        Some(KEYS[row][column])
    }
}

/// The Goertzel power of `samples` at the frequency whose `coefficient` is
/// 2·cos(2πf/rate).
fn goertzel(samples: &[f32], coefficient: f32) -> f32 {
    let (mut s1, mut s2) = (0f32, 0f32);
    for &x in samples {
        let s0 = x + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coefficient * s1 * s2).max(0.0)
}

/// The index and power of the strongest of four, and the second's power.
fn strongest(powers: &[f32; 4]) -> (usize, f32, f32) {
    let mut best = 0;
    for i in 1..4 {
        if powers[i] > powers[best] {
            best = i;
        }
    }
    let second = powers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != best)
        .map(|(_, p)| *p)
        .fold(0f32, f32::max);
    (best, powers[best], second)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of `tones` (frequency, amplitude) starting at sample `offset`.
    fn frames(tones: &[(f32, f32)], count: usize, offset: usize) -> Vec<[u8; FRAME_BYTES]> {
        (0..count)
            .map(|f| {
                let mut frame = [0u8; FRAME_BYTES];
                for (i, pair) in frame.chunks_exact_mut(2).enumerate() {
                    let t = (offset + f * SAMPLES + i) as f32 / RATE_HZ;
                    let v: f32 = tones
                        .iter()
                        .map(|(freq, amp)| amp * (2.0 * std::f32::consts::PI * freq * t).sin())
                        .sum();
                    pair.copy_from_slice(
                        &(v.round().clamp(-32768.0, 32767.0) as i16).to_le_bytes(),
                    );
                }
                frame
            })
            .collect()
    }

    fn silence(count: usize) -> Vec<[u8; FRAME_BYTES]> {
        vec![[0u8; FRAME_BYTES]; count]
    }

    fn detect(detector: &mut DtmfDetector, frames: &[[u8; FRAME_BYTES]]) -> String {
        frames
            .iter()
            .filter_map(|f| detector.push(f))
            .map(Digit::as_char)
            .collect()
    }

    fn key(row: usize, column: usize, amplitude: f32, count: usize) -> Vec<[u8; FRAME_BYTES]> {
        frames(
            &[(ROWS[row], amplitude), (COLUMNS[column], amplitude)],
            count,
            37,
        )
    }

    #[test]
    fn every_key_is_found_once_per_press() {
        let mut detector = DtmfDetector::new();
        let mut stream = Vec::new();
        let mut expected = String::new();
        for (r, row) in KEYS.iter().enumerate() {
            for (c, k) in row.iter().enumerate() {
                stream.extend(key(r, c, 6_000.0, 5));
                stream.extend(silence(3));
                expected.push(*k);
            }
        }
        assert_eq!(detect(&mut detector, &stream), expected);
    }

    #[test]
    fn the_same_key_twice_needs_a_gap_and_a_long_press_is_one_digit() {
        let mut detector = DtmfDetector::new();
        let mut stream = key(1, 1, 6_000.0, 40); // 800 ms of 5
        stream.extend(silence(2));
        stream.extend(key(1, 1, 6_000.0, 3));
        assert_eq!(detect(&mut detector, &stream), "55");
    }

    #[test]
    fn a_single_frame_blip_is_not_a_digit() {
        let mut detector = DtmfDetector::new();
        let mut stream = key(0, 0, 6_000.0, 1);
        stream.extend(silence(2));
        assert_eq!(detect(&mut detector, &stream), "");
    }

    #[test]
    fn quiet_keys_and_twist_within_limits_pass_beyond_them_fail() {
        // -30 dBFS per tone: still found.
        let quiet = 32768.0 * 10f32.powf(-30.0 / 20.0) * std::f32::consts::SQRT_2;
        let mut detector = DtmfDetector::new();
        assert_eq!(detect(&mut detector, &key(2, 2, quiet, 4)), "9");
        // Column 6 dB under the row (normal twist): found.
        let half = 10f32.powf(-6.0 / 20.0);
        let mut detector = DtmfDetector::new();
        let twisted = frames(&[(ROWS[0], 8_000.0), (COLUMNS[1], 8_000.0 * half)], 4, 0);
        assert_eq!(detect(&mut detector, &twisted), "2");
        // Column 12 dB under: refused.
        let quarter = 10f32.powf(-12.0 / 20.0);
        let mut detector = DtmfDetector::new();
        let too_twisted = frames(&[(ROWS[0], 8_000.0), (COLUMNS[1], 8_000.0 * quarter)], 4, 0);
        assert_eq!(detect(&mut detector, &too_twisted), "");
        // -50 dBFS: below the floor.
        let faint = 32768.0 * 10f32.powf(-50.0 / 20.0);
        let mut detector = DtmfDetector::new();
        assert_eq!(detect(&mut detector, &key(0, 0, faint, 4)), "");
    }

    #[test]
    fn tones_that_are_not_dtmf_are_not_digits() {
        for tones in [
            // The test tones of the call tests, a dial tone, a ringback pair.
            vec![(1_000.0, 8_000.0)],
            vec![(425.0, 8_000.0)],
            vec![(440.0, 6_000.0), (480.0, 6_000.0)],
            // A row tone alone, a column tone alone.
            vec![(ROWS[1], 8_000.0)],
            vec![(COLUMNS[2], 8_000.0)],
            // Two rows at once.
            vec![(ROWS[0], 6_000.0), (ROWS[3], 6_000.0)],
            // A pair well off the grid (1.1 kHz + 1.9 kHz).
            vec![(1_100.0, 6_000.0), (1_900.0, 6_000.0)],
            // A key with a strong third tone on top (speech-like clutter).
            vec![(ROWS[0], 5_000.0), (COLUMNS[0], 5_000.0), (300.0, 6_000.0)],
        ] {
            let mut detector = DtmfDetector::new();
            assert_eq!(
                detect(&mut detector, &frames(&tones, 10, 0)),
                "",
                "{tones:?}"
            );
        }
    }

    #[test]
    fn white_noise_never_holds_a_digit() {
        // A xorshift generator's noise at -20 dBFS for 10 s.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut detector = DtmfDetector::new();
        for _ in 0..500 {
            let mut frame = [0u8; FRAME_BYTES];
            for pair in frame.chunks_exact_mut(2) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = ((state >> 48) as i16) / 10;
                pair.copy_from_slice(&v.to_le_bytes());
            }
            assert_eq!(detector.push(&frame), None);
        }
    }
}
