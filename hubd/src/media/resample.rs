//! One leg's audio from its rate to another, 20 ms frame by 20 ms frame,
//! with rubato's synchronous FFT resampler (fixed ratio, fixed chunk sizes
//! on both sides).
//!
//! Each 20 ms input frame gives exactly one 20 ms output frame, so a leg
//! stays on the call's 20 ms tick. The delay is half the resampler's FFT
//! block: 10 ms for 8 → 16 kHz ([`LegResampler::delay`]). Every buffer is
//! allocated in [`LegResampler::new`]; [`LegResampler::process`] allocates
//! nothing. When both rates are equal the frame is only converted to `f32`.
//!
//! Owns no I/O and no clock. Never changes the ratio while running (the
//! legs' clocks are the call's tick, not two free-running sound cards).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// Frames per second of a leg: one every 20 ms.
const FRAMES_PER_SECOND: u32 = 50;
/// Scale between `i16` samples and `f32` in [-1, 1).
const I16_SCALE: f32 = 32_768.0;

/// Why a resampler cannot be built or a frame not resampled.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    /// A rate that is zero or does not divide into 20 ms frames.
    #[error(
        "unsupported rates {from_hz} Hz -> {to_hz} Hz: each must be a non-zero multiple of 50 Hz"
    )]
    Rates {
        /// Input rate.
        from_hz: u32,
        /// Output rate.
        to_hz: u32,
    },
    /// rubato refused the configuration.
    #[error("cannot build the resampler {from_hz} Hz -> {to_hz} Hz: {source}")]
    Construction {
        /// Input rate.
        from_hz: u32,
        /// Output rate.
        to_hz: u32,
        /// rubato's reason.
        source: rubato::ResamplerConstructionError,
    },
    /// rubato's chunk sizes are not one 20 ms frame on each side.
    #[error(
        "rubato chunks {input} -> {output} samples, not one 20 ms frame each side ({want_input} -> {want_output})"
    )]
    Chunking {
        /// Input chunk rubato asks for.
        input: usize,
        /// Output chunk rubato gives.
        output: usize,
        /// One 20 ms input frame.
        want_input: usize,
        /// One 20 ms output frame.
        want_output: usize,
    },
    /// A frame of the wrong length.
    #[error("frame of {got} samples, expected {expected} (20 ms)")]
    FrameLength {
        /// Samples in 20 ms at the input rate.
        expected: usize,
        /// Samples given.
        got: usize,
    },
    /// rubato failed while processing (buffer sizes; not expected).
    #[error("resampling failed: {0}")]
    Process(#[from] rubato::ResampleError),
}

/// Resamples one mono leg, 20 ms in, 20 ms out.
pub struct LegResampler {
    from_hz: u32,
    to_hz: u32,
    /// `None` when the rates are equal.
    fft: Option<Fft<f32>>,
    input: Vec<f32>,
    output: Vec<f32>,
}

impl std::fmt::Debug for LegResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegResampler")
            .field("from_hz", &self.from_hz)
            .field("to_hz", &self.to_hz)
            .field("delay", &self.delay())
            .finish()
    }
}

impl LegResampler {
    /// A resampler from `from_hz` to `to_hz`, both multiples of 50 Hz.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<LegResampler, ResampleError> {
        if from_hz == 0
            || to_hz == 0
            || !from_hz.is_multiple_of(FRAMES_PER_SECOND)
            || !to_hz.is_multiple_of(FRAMES_PER_SECOND)
        {
            return Err(ResampleError::Rates { from_hz, to_hz });
        }
        let in_len = (from_hz / FRAMES_PER_SECOND) as usize;
        let out_len = (to_hz / FRAMES_PER_SECOND) as usize;
        let fft = if from_hz == to_hz {
            None
        } else {
            // FixedSync::Both makes the FFT block one 20 ms input frame when
            // the rates allow it (8k/16k/48k do): one FFT per frame, and a
            // delay of half a frame.
            let fft = Fft::<f32>::new(from_hz as usize, to_hz as usize, in_len, 1, FixedSync::Both)
                .map_err(|source| ResampleError::Construction {
                    from_hz,
                    to_hz,
                    source,
                })?;
            if fft.input_frames_next() != in_len || fft.output_frames_next() != out_len {
                return Err(ResampleError::Chunking {
                    input: fft.input_frames_next(),
                    output: fft.output_frames_next(),
                    want_input: in_len,
                    want_output: out_len,
                });
            }
            Some(fft)
        };
        Ok(LegResampler {
            from_hz,
            to_hz,
            fft,
            input: vec![0.0; in_len],
            output: vec![0.0; out_len],
        })
    }

    /// Input rate.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Samples in one 20 ms input frame.
    pub fn input_len(&self) -> usize {
        self.input.len()
    }

    /// Samples in one 20 ms output frame.
    pub fn output_len(&self) -> usize {
        self.output.len()
    }

    /// The delay the resampler adds, in output samples: output sample `k`
    /// corresponds to input time `k - delay`.
    pub fn delay(&self) -> usize {
        self.fft.as_ref().map_or(0, |fft| fft.output_delay())
    }

    /// Resamples one 20 ms frame (`None`: silence) and returns the 20 ms
    /// output frame as `f32` in [-1, 1) (a little outside near full scale).
    pub fn process(&mut self, frame: Option<&[i16]>) -> Result<&[f32], ResampleError> {
        match frame {
            Some(frame) if frame.len() != self.input.len() => {
                return Err(ResampleError::FrameLength {
                    expected: self.input.len(),
                    got: frame.len(),
                });
            }
            Some(frame) => {
                for (to, &from) in self.input.iter_mut().zip(frame) {
                    *to = f32::from(from) / I16_SCALE;
                }
            }
            None => self.input.fill(0.0),
        }
        let Some(fft) = self.fft.as_mut() else {
            return Ok(&self.input);
        };
        let in_len = self.input.len();
        let out_len = self.output.len();
        let input = InterleavedSlice::new(self.input.as_slice(), 1, in_len).map_err(|_| {
            ResampleError::FrameLength {
                expected: in_len,
                got: self.input.len(),
            }
        })?;
        let mut output = InterleavedSlice::new_mut(self.output.as_mut_slice(), 1, out_len)
            .map_err(|_| ResampleError::FrameLength {
                expected: out_len,
                got: out_len,
            })?;
        fft.process_into_buffer(&input, &mut output, None)?;
        Ok(&self.output)
    }

    /// [`LegResampler::process`], the output converted to `i16` (saturating)
    /// into `out`, which must hold one output frame.
    pub fn process_i16(
        &mut self,
        frame: Option<&[i16]>,
        out: &mut [i16],
    ) -> Result<(), ResampleError> {
        let expected = self.output.len();
        if out.len() != expected {
            return Err(ResampleError::FrameLength {
                expected,
                got: out.len(),
            });
        }
        let resampled = self.process(frame)?;
        for (to, &from) in out.iter_mut().zip(resampled) {
            *to = to_i16(from);
        }
        Ok(())
    }
}

/// A sample in [-1, 1) as `i16`, saturating.
pub fn to_i16(sample: f32) -> i16 {
    (sample * I16_SCALE)
        .round()
        .clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// `frames` 20 ms frames of a sine at `hz`, amplitude `amp`, at `rate`.
    fn sine(rate: u32, hz: f64, amp: f64, frames: usize) -> Vec<i16> {
        let n = rate as usize / 50 * frames;
        (0..n)
            .map(|i| (amp * (2.0 * PI * hz * i as f64 / f64::from(rate)).sin()).round() as i16)
            .collect()
    }

    /// Power of `samples` at `hz` (Goertzel), normalised so a full-period
    /// sine of amplitude A gives A.
    fn amplitude_at(samples: &[f64], rate: u32, hz: f64) -> f64 {
        let w = 2.0 * PI * hz / f64::from(rate);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in samples {
            let s = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        2.0 * power.sqrt() / samples.len() as f64
    }

    fn run(from: u32, to: u32, input: &[i16]) -> (LegResampler, Vec<f64>) {
        let mut r = LegResampler::new(from, to).expect("resampler");
        let mut out = Vec::new();
        for frame in input.chunks(r.input_len()) {
            let y = r.process(Some(frame)).expect("process");
            out.extend(y.iter().map(|&s| f64::from(s) * 32_768.0));
        }
        (r, out)
    }

    #[test]
    fn a_tone_keeps_its_frequency_and_amplitude_from_8_to_16_khz() {
        for hz in [440.0, 1_000.0, 3_000.0] {
            let input = sine(8_000, hz, 10_000.0, 50);
            let (r, out) = run(8_000, 16_000, &input);
            assert_eq!(out.len(), 16_000);
            assert_eq!(r.delay(), 160);
            // Skip the start (delay and filter settling); a whole number of
            // periods is not needed with a window this long.
            let steady = &out[1_600..];
            let amp = amplitude_at(steady, 16_000, hz);
            assert!(
                (amp - 10_000.0).abs() < 300.0,
                "{hz} Hz: amplitude {amp:.0}, expected 10000"
            );
            // The frequency: more energy at hz than 15 Hz either side.
            for off in [-15.0, 15.0] {
                let beside = amplitude_at(steady, 16_000, hz + off);
                assert!(beside < amp / 5.0, "{hz} Hz: {beside:.0} at {off:+} Hz");
            }
            // Nothing above the input's Nyquist (no imaging).
            let image = amplitude_at(steady, 16_000, 8_000.0 - hz);
            assert!(image < 100.0, "{hz} Hz: image {image:.0}");
        }
    }

    #[test]
    fn the_delay_is_what_it_says() {
        // A click at input sample 400 (8 kHz) comes out near 800 + delay.
        let mut input = vec![0i16; 160 * 10];
        input[400] = 20_000;
        let (r, out) = run(8_000, 16_000, &input);
        let peak = (0..out.len())
            .max_by(|&a, &b| out[a].abs().total_cmp(&out[b].abs()))
            .expect("samples");
        assert!(
            peak.abs_diff(800 + r.delay()) <= 1,
            "peak at {peak}, expected {}",
            800 + r.delay()
        );
    }

    #[test]
    fn down_equal_and_silence() {
        let input = sine(16_000, 1_000.0, 8_000.0, 25);
        let (_, out) = run(16_000, 8_000, &input);
        assert_eq!(out.len(), 4_000);
        let amp = amplitude_at(&out[800..], 8_000, 1_000.0);
        assert!((amp - 8_000.0).abs() < 300.0, "amplitude {amp:.0}");

        let mut same = LegResampler::new(8_000, 8_000).expect("resampler");
        assert_eq!(same.delay(), 0);
        let mut out = [0i16; 160];
        same.process_i16(Some(&input[..160]), &mut out)
            .expect("same rate");
        assert_eq!(&out[..], &input[..160]);
        same.process_i16(None, &mut out).expect("silence");
        assert!(out.iter().all(|&s| s == 0));
    }

    #[test]
    fn bad_rates_and_lengths_are_errors() {
        assert!(matches!(
            LegResampler::new(0, 16_000),
            Err(ResampleError::Rates { .. })
        ));
        assert!(matches!(
            LegResampler::new(8_000, 16_001),
            Err(ResampleError::Rates { .. })
        ));
        let mut r = LegResampler::new(8_000, 16_000).expect("resampler");
        assert!(matches!(
            r.process(Some(&[0; 159])),
            Err(ResampleError::FrameLength {
                expected: 160,
                got: 159
            })
        ));
        let mut short = [0i16; 319];
        assert!(r.process_i16(None, &mut short).is_err());
    }
}
