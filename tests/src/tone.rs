//! Test tones and how to find them again: a sine generator (s16 samples) and a
//! Goertzel filter that measures the power of one frequency, with which
//! [`dominant_frequency`] picks the strongest of a set of candidates.
//! Tests use it to check that a known tone crossed a call (sipp plays a
//! 1 kHz tone, the far end decodes G.711 and measures it).
//!
//! It must never: allocate per sample in the filter, or assume a sample rate
//! (every function takes it).

/// `seconds` of a sine at `frequency` Hz, `amplitude` (0..=32767) peak, at
/// `rate` samples per second.
pub fn sine(frequency: f64, amplitude: i16, rate: u32, seconds: f64) -> Vec<i16> {
    let count = (f64::from(rate) * seconds).round() as usize;
    (0..count)
        .map(|n| {
            let phase = 2.0 * std::f64::consts::PI * frequency * n as f64 / f64::from(rate);
            (f64::from(amplitude) * phase.sin()).round() as i16
        })
        .collect()
}

/// Little-endian s16 bytes (the voice ports' and recorders' raw format) to
/// samples; an odd trailing byte is ignored.
pub fn samples_from_s16le(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect()
}

/// The power of `frequency` in `samples` (Goertzel), normalised by the
/// number of samples squared so blocks of different lengths compare: a
/// full-scale sine at exactly `frequency` gives about `amplitude² / 4`.
pub fn goertzel_power(samples: &[i16], frequency: f64, rate: u32) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let omega = 2.0 * std::f64::consts::PI * frequency / f64::from(rate);
    let coefficient = 2.0 * omega.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &sample in samples {
        let s0 = f64::from(sample) + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    let n = samples.len() as f64;
    power / (n * n)
}

/// The mean power of `samples` (the square of the RMS).
pub fn mean_power(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64
}

/// Of 100 Hz steps from 200 to 3400 Hz (the telephone band), the frequency
/// whose Goertzel power in `samples` is highest, with that power; `None`
/// for no samples or digital silence.
pub fn dominant_frequency(samples: &[i16], rate: u32) -> Option<(f64, f64)> {
    let mut best: Option<(f64, f64)> = None;
    for step in 2..=34u32 {
        let frequency = f64::from(step * 100);
        let power = goertzel_power(samples, frequency, rate);
        if best.is_none_or(|(_, p)| power > p) {
            best = Some((frequency, power));
        }
    }
    best.filter(|&(_, power)| power > 0.0)
}

/// Of `step` Hz steps from `low` to `high` Hz inclusive, the frequency whose
/// Goertzel power in `samples` is highest, with that power; `None` for no
/// samples, digital silence or an empty range. Finer than
/// [`dominant_frequency`] for tones off its 100 Hz grid (425 Hz).
pub fn dominant_frequency_between(
    samples: &[i16],
    rate: u32,
    low: f64,
    high: f64,
    step: f64,
) -> Option<(f64, f64)> {
    let mut best: Option<(f64, f64)> = None;
    let mut frequency = low;
    while frequency <= high && step > 0.0 {
        let power = goertzel_power(samples, frequency, rate);
        if best.is_none_or(|(_, p)| power > p) {
            best = Some((frequency, power));
        }
        frequency += step;
    }
    best.filter(|&(_, power)| power > 0.0)
}

/// How much of the signal's power `frequency` carries, 0..=1: Goertzel power
/// over half the mean power (a pure sine at `frequency` gives about 1).
pub fn tone_purity(samples: &[i16], frequency: f64, rate: u32) -> f64 {
    let total = mean_power(samples);
    if total == 0.0 {
        return 0.0;
    }
    (goertzel_power(samples, frequency, rate) * 2.0 / total).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_1khz_tone_and_not_another() {
        let tone = sine(1000.0, 8000, 8000, 0.5);
        assert_eq!(
            dominant_frequency(&tone, 8000).map(|(f, _)| f),
            Some(1000.0)
        );
        assert!(tone_purity(&tone, 1000.0, 8000) > 0.95);
        assert!(tone_purity(&tone, 1500.0, 8000) < 0.01);
        let other = sine(1700.0, 8000, 8000, 0.5);
        assert_eq!(
            dominant_frequency(&other, 8000).map(|(f, _)| f),
            Some(1700.0)
        );
        assert_eq!(dominant_frequency(&[0; 400], 8000), None);
        assert_eq!(dominant_frequency(&[], 8000), None);
    }

    #[test]
    fn finds_a_tone_off_the_100_hz_grid() {
        let tone = sine(425.0, 8000, 8000, 1.0);
        let (frequency, _) =
            dominant_frequency_between(&tone, 8000, 200.0, 3400.0, 5.0).expect("a tone");
        assert_eq!(frequency, 425.0);
        assert_eq!(
            dominant_frequency_between(&[0; 400], 8000, 200.0, 3400.0, 5.0),
            None
        );
        assert_eq!(
            dominant_frequency_between(&tone, 8000, 500.0, 400.0, 5.0),
            None
        );
    }

    #[test]
    fn reads_s16le() {
        assert_eq!(samples_from_s16le(&[1, 0, 0xff, 0xff, 7]), vec![1, -1]);
    }
}
