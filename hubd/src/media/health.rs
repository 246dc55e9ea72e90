//! Per-call media health: the energy and voice activity of each direction of
//! a bridged call, measured frame by frame, and at the end of the call a
//! [`MediaHealth`] summary for the CDR (one-way audio, long silence).
//!
//! The two directions are named from the call bridge's view:
//! [`Direction::SipToDevice`] is the SIP leg's audio played toward the device,
//! [`Direction::DeviceToSip`] is the device's audio sent toward SIP.
//!
//! Sans-IO and cheap: [`HealthMeter::observe`] takes one 20 ms frame (320
//! bytes of s16le 8 kHz), sums its squares in integers and compares them with
//! a precomputed threshold. No allocation, no logarithm, no clock per frame;
//! time is the count of frames. Logarithms are taken once, in
//! [`HealthMeter::summary`].
//!
//! **Invariant:** frame `k` of one direction and frame `k` of the other are
//! the same 20 ms of the call (the bridge moves both on the voice clock, and
//! fills gaps with silence). When one direction stops delivering frames
//! altogether, its missing frames count as silence once the other is more
//! than [`MAX_SKEW_FRAMES`] ahead.
//!
//! Never looks at anything but samples: end causes, SIP and modem state are
//! the CDR writer's to add.

use serde::{Deserialize, Serialize};

use crate::device::at_modem::voice::FRAME_BYTES;

/// Samples in one 20 ms frame.
const FRAME_SAMPLES: usize = FRAME_BYTES / 2;
/// Milliseconds in one frame.
const FRAME_MS: u64 = 20;
/// How far one direction may run ahead of the other, in frames, before the
/// other's missing frames are taken as silence (1.28 s).
pub const MAX_SKEW_FRAMES: u32 = 64;
/// Full scale of a 16-bit sample; 0 dBFS is a frame of RMS 32768.
const FULL_SCALE: f64 = 32768.0;

pub use vss_shared::media::{Direction, LegStats, MediaHealth, OneWay, Verdict};

fn index(direction: Direction) -> usize {
    match direction {
        Direction::SipToDevice => 0,
        Direction::DeviceToSip => 1,
    }
}

fn from_index(index: usize) -> Direction {
    if index == 0 {
        Direction::SipToDevice
    } else {
        Direction::DeviceToSip
    }
}

/// Thresholds of media health; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// A frame whose RMS is below this is silence (default -50 dBFS: line
    /// noise and G.711 comfort noise sit around -60 to -70, speech around
    /// -35 to -15).
    pub silence_threshold_dbfs: f32,
    /// Voice activity stays on this long after the energy drops, so the gaps
    /// between words are not silence (default 200 ms).
    pub hangover_ms: u32,
    /// One-way audio needs at least this much voice activity in one
    /// direction (default 5,000 ms)...
    pub one_way_min_speech_ms: u32,
    /// ...while the other has no more than this (default 500 ms: a click or
    /// two, with their hangover).
    pub one_way_max_other_ms: u32,
    /// Both directions silent at once for at least this long is a long
    /// silence (default 20,000 ms).
    pub long_silence_ms: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            silence_threshold_dbfs: -50.0,
            hangover_ms: 200,
            one_way_min_speech_ms: 5_000,
            one_way_max_other_ms: 500,
            long_silence_ms: 20_000,
        }
    }
}

/// Running figures of one direction.
#[derive(Debug, Default, Clone)]
struct LegMeter {
    frames: u64,
    active_frames: u64,
    /// Frames of voice activity left in the hangover.
    hangover_left: u32,
    /// Sum of squares over every frame.
    energy_total: u128,
    /// Sum of squares over frames above the threshold.
    energy_speech: u128,
    speech_frames: u64,
    peak_energy: u64,
}

impl LegMeter {
    /// Measures one frame; returns whether voice was active in it.
    fn observe(&mut self, frame: &[u8; FRAME_BYTES], threshold: u64, hangover: u32) -> bool {
        let energy = frame_energy(frame);
        self.frames += 1;
        self.energy_total += u128::from(energy);
        self.peak_energy = self.peak_energy.max(energy);
        let active = if energy >= threshold {
            self.energy_speech += u128::from(energy);
            self.speech_frames += 1;
            self.hangover_left = hangover;
            true
        } else if self.hangover_left > 0 {
            self.hangover_left -= 1;
            true
        } else {
            false
        };
        self.active_frames += u64::from(active);
        active
    }

    fn stats(&self) -> LegStats {
        LegStats {
            duration_ms: self.frames * FRAME_MS,
            speech_ms: self.active_frames * FRAME_MS,
            speech_mean_dbfs: dbfs(self.energy_speech, self.speech_frames),
            peak_dbfs: dbfs(u128::from(self.peak_energy), 1),
            mean_dbfs: dbfs(self.energy_total, self.frames),
        }
    }
}

/// Sum of the squares of a frame's samples (at most 160 × 2³⁰).
fn frame_energy(frame: &[u8; FRAME_BYTES]) -> u64 {
    let mut sum: u64 = 0;
    for pair in frame.chunks_exact(2) {
        let sample = i32::from(i16::from_le_bytes([pair[0], pair[1]]));
        // |sample| ≤ 32768, so the square fits u32 and 160 of them fit u64.
        sum += (sample * sample) as u64;
    }
    sum
}

/// The RMS of `frames` frames whose squares sum to `energy`, in dBFS.
fn dbfs(energy: u128, frames: u64) -> Option<f32> {
    if energy == 0 || frames == 0 {
        return None;
    }
    let mean_square = energy as f64 / (frames as f64 * FRAME_SAMPLES as f64);
    Some((10.0 * (mean_square / (FULL_SCALE * FULL_SCALE)).log10()) as f32)
}

/// The frame energy (sum of squares) of a frame whose RMS is `dbfs`.
fn energy_threshold(dbfs: f32) -> u64 {
    let rms = FULL_SCALE * 10f64.powf(f64::from(dbfs) / 20.0);
    let energy = (rms * rms * FRAME_SAMPLES as f64).ceil();
    if energy >= 1.0 {
        // Saturates at u64::MAX for absurd thresholds (never active).
        energy as u64
    } else {
        // -inf dBFS, or NaN: any non-zero frame is active.
        1
    }
}

/// Activity bits of frames one direction delivered that the other has not
/// matched yet (oldest in bit 0).
#[derive(Debug, Default, Clone, Copy)]
struct Unmatched {
    bits: u64,
    len: u32,
}

impl Unmatched {
    fn push(&mut self, active: bool) {
        self.bits |= u64::from(active) << self.len;
        self.len += 1;
    }

    fn pop(&mut self) -> Option<bool> {
        if self.len == 0 {
            return None;
        }
        let active = self.bits & 1 == 1;
        self.bits >>= 1;
        self.len -= 1;
        Some(active)
    }
}

/// Media health of one call, fed frame by frame.
#[derive(Debug, Clone)]
pub struct HealthMeter {
    config: HealthConfig,
    threshold: u64,
    hangover_frames: u32,
    legs: [LegMeter; 2],
    unmatched: [Unmatched; 2],
    /// 20 ms ticks with both directions' activity known.
    ticks: u64,
    silence_run: u64,
    silence_run_start: u64,
    longest_silence: u64,
    longest_silence_start: u64,
}

impl Default for HealthMeter {
    fn default() -> Self {
        Self::new(HealthConfig::default())
    }
}

impl HealthMeter {
    /// A meter with these thresholds, for one call from its answer.
    pub fn new(config: HealthConfig) -> Self {
        Self {
            threshold: energy_threshold(config.silence_threshold_dbfs),
            hangover_frames: config.hangover_ms.div_ceil(FRAME_MS as u32),
            config,
            legs: [LegMeter::default(), LegMeter::default()],
            unmatched: [Unmatched::default(); 2],
            ticks: 0,
            silence_run: 0,
            silence_run_start: 0,
            longest_silence: 0,
            longest_silence_start: 0,
        }
    }

    /// Measures one 20 ms frame of `direction`; returns whether voice was
    /// active in it.
    pub fn observe(&mut self, direction: Direction, frame: &[u8; FRAME_BYTES]) -> bool {
        let this = index(direction);
        let active = self.legs[this].observe(frame, self.threshold, self.hangover_frames);
        self.unmatched[this].push(active);
        while self.unmatched[0].len > 0 && self.unmatched[1].len > 0 {
            let a = self.unmatched[0].pop().unwrap_or(false);
            let b = self.unmatched[1].pop().unwrap_or(false);
            self.tick(a || b);
        }
        if self.unmatched[this].len >= MAX_SKEW_FRAMES {
            // The other direction is not delivering: its frames are silence.
            let active = self.unmatched[this].pop().unwrap_or(false);
            self.tick(active);
        }
        active
    }

    fn tick(&mut self, either_active: bool) {
        if either_active {
            self.silence_run = 0;
        } else {
            if self.silence_run == 0 {
                self.silence_run_start = self.ticks;
            }
            self.silence_run += 1;
            if self.silence_run > self.longest_silence {
                self.longest_silence = self.silence_run;
                self.longest_silence_start = self.silence_run_start;
            }
        }
        self.ticks += 1;
    }

    /// The call's media health so far (call it once at the end, for the
    /// CDR). Frames one direction delivered and the other did not count as
    /// silence on the other side.
    pub fn summary(&self) -> MediaHealth {
        let mut rest = self.clone();
        for index in 0..2 {
            while let Some(active) = rest.unmatched[index].pop() {
                rest.tick(active);
            }
        }
        let sip_to_device = rest.legs[0].stats();
        let device_to_sip = rest.legs[1].stats();
        let longest_silence_ms = rest.longest_silence * FRAME_MS;

        let speech = [sip_to_device.speech_ms, device_to_sip.speech_ms];
        let mut one_way_audio = None;
        for (speaking, silent) in [(0, 1), (1, 0)] {
            if speech[speaking] >= u64::from(self.config.one_way_min_speech_ms)
                && speech[silent] <= u64::from(self.config.one_way_max_other_ms)
            {
                one_way_audio = Some(OneWay {
                    silent: from_index(silent),
                    speech_ms: speech[speaking],
                });
            }
        }
        let verdict = if rest.ticks == 0 {
            Verdict::NoMedia
        } else if one_way_audio.is_some() {
            Verdict::OneWayAudio
        } else if longest_silence_ms >= u64::from(self.config.long_silence_ms) {
            Verdict::LongSilence
        } else if speech == [0, 0] {
            Verdict::NoSpeech
        } else {
            Verdict::Healthy
        };
        MediaHealth {
            sip_to_device,
            device_to_sip,
            one_way_audio,
            longest_silence_ms: u32::try_from(longest_silence_ms).unwrap_or(u32::MAX),
            longest_silence_at_ms: rest.longest_silence_start * FRAME_MS,
            verdict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of 20 ms.
    const SECOND: usize = 50;

    /// Frame `k` of a continuous sine of `freq` Hz whose RMS is `dbfs`.
    fn tone(freq: f64, dbfs: f64, k: usize) -> [u8; FRAME_BYTES] {
        let amplitude = FULL_SCALE * 10f64.powf(dbfs / 20.0) * std::f64::consts::SQRT_2;
        let mut frame = [0; FRAME_BYTES];
        for (i, pair) in frame.chunks_exact_mut(2).enumerate() {
            let t = (k * FRAME_SAMPLES + i) as f64 / 8000.0;
            let s = (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16;
            pair.copy_from_slice(&s.to_le_bytes());
        }
        frame
    }

    const SILENCE: [u8; FRAME_BYTES] = [0; FRAME_BYTES];

    /// xorshift64: deterministic noise.
    struct XorShift(u64);

    impl XorShift {
        /// Uniform in [-1, 1).
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    /// A frame of white noise whose RMS is `dbfs`, passed through `codec`.
    fn noise(rng: &mut XorShift, dbfs: f64, codec: fn(i16) -> i16) -> [u8; FRAME_BYTES] {
        // Uniform noise in [-a, a] has an RMS of a / √3.
        let a = FULL_SCALE * 10f64.powf(dbfs / 20.0) * 3f64.sqrt();
        let mut frame = [0; FRAME_BYTES];
        for pair in frame.chunks_exact_mut(2) {
            let s = codec((a * rng.unit()).round() as i16);
            pair.copy_from_slice(&s.to_le_bytes());
        }
        frame
    }

    fn linear(s: i16) -> i16 {
        s
    }

    /// A G.711 μ-law round trip (encode then decode), as a G.711 leg
    /// delivers low-level noise.
    fn ulaw(sample: i16) -> i16 {
        const BIAS: i32 = 0x84;
        let mut s = i32::from(sample);
        let sign = if s < 0 { 0x80 } else { 0 };
        if s < 0 {
            s = -s;
        }
        s = (s + BIAS).min(32635 + BIAS);
        let exponent = (7 - (s >> 7).leading_zeros().saturating_sub(24) as i32).clamp(0, 7);
        let mantissa = (s >> (exponent + 3)) & 0x0f;
        let code = !(sign | (exponent << 4) | mantissa) as u8;
        // Decode.
        let code = !code;
        let exponent = i32::from((code >> 4) & 0x07);
        let mantissa = i32::from(code & 0x0f);
        let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
        (if code & 0x80 != 0 {
            -magnitude
        } else {
            magnitude
        }) as i16
    }

    /// Feeds `seconds` of the two directions' frames.
    fn feed(
        meter: &mut HealthMeter,
        seconds: usize,
        mut sip_to_device: impl FnMut(usize) -> [u8; FRAME_BYTES],
        mut device_to_sip: impl FnMut(usize) -> [u8; FRAME_BYTES],
    ) {
        for k in 0..seconds * SECOND {
            meter.observe(Direction::SipToDevice, &sip_to_device(k));
            meter.observe(Direction::DeviceToSip, &device_to_sip(k));
        }
    }

    fn close(got: Option<f32>, want: f32) {
        let got = got.expect("a level");
        assert!((got - want).abs() < 0.2, "{got} dBFS, expected {want}");
    }

    #[test]
    fn the_test_signals_have_the_levels_they_claim() {
        let mut rng = XorShift(7);
        let level = |f: [u8; FRAME_BYTES]| dbfs(u128::from(frame_energy(&f)), 1);
        close(level(tone(440.0, -20.0, 3)), -20.0);
        let mut sum = 0u128;
        for _ in 0..500 {
            sum += u128::from(frame_energy(&noise(&mut rng, -60.0, linear)));
        }
        let got = dbfs(sum, 500).expect("level");
        assert!((got + 60.0).abs() < 0.5, "{got}");
        assert_eq!(ulaw(0), 0);
        assert_eq!(ulaw(1000), 988);
        assert_eq!(ulaw(-32768), -32124);
        assert_eq!(energy_threshold(-50.0), 1_717_987); // (32768 × 10^-2.5)² × 160
    }

    #[test]
    fn tone_both_ways_is_healthy() {
        let mut meter = HealthMeter::default();
        feed(
            &mut meter,
            10,
            |k| tone(440.0, -20.0, k),
            |k| tone(1000.0, -26.0, k),
        );
        let health = meter.summary();
        assert_eq!(health.verdict, Verdict::Healthy);
        assert_eq!(health.one_way_audio, None);
        assert_eq!(health.longest_silence_ms, 0);
        for (leg, level) in [
            (&health.sip_to_device, -20.0),
            (&health.device_to_sip, -26.0),
        ] {
            assert_eq!((leg.duration_ms, leg.speech_ms), (10_000, 10_000));
            close(leg.speech_mean_dbfs, level);
            close(leg.peak_dbfs, level);
            close(leg.mean_dbfs, level);
        }
    }

    #[test]
    fn tone_one_way_and_digital_silence_the_other_is_one_way_audio() {
        let mut meter = HealthMeter::default();
        feed(&mut meter, 8, |k| tone(440.0, -20.0, k), |_| SILENCE);
        let health = meter.summary();
        assert_eq!(health.verdict, Verdict::OneWayAudio);
        assert_eq!(
            health.one_way_audio,
            Some(OneWay {
                silent: Direction::DeviceToSip,
                speech_ms: 8_000
            })
        );
        let silent = &health.device_to_sip;
        assert_eq!(
            (silent.speech_ms, silent.peak_dbfs, silent.mean_dbfs),
            (0, None, None)
        );

        let mut meter = HealthMeter::default();
        feed(&mut meter, 8, |_| SILENCE, |k| tone(1000.0, -30.0, k));
        let one_way = meter.summary().one_way_audio.expect("one-way");
        assert_eq!(one_way.silent, Direction::SipToDevice);

        // Under the 5 s minimum it is not called one-way.
        let mut meter = HealthMeter::default();
        feed(&mut meter, 4, |k| tone(440.0, -20.0, k), |_| SILENCE);
        assert_eq!(meter.summary().verdict, Verdict::Healthy);
    }

    #[test]
    fn low_level_noise_counts_as_silence() {
        let mut rng = XorShift(42);
        let mut meter = HealthMeter::default();
        let mut noise_frames = Vec::new();
        for _ in 0..6 * SECOND {
            noise_frames.push(noise(&mut rng, -60.0, linear));
        }
        feed(
            &mut meter,
            6,
            |k| tone(440.0, -20.0, k),
            |k| noise_frames[k],
        );
        let health = meter.summary();
        assert_eq!(health.device_to_sip.speech_ms, 0);
        assert_eq!(health.device_to_sip.speech_mean_dbfs, None);
        let level = health.device_to_sip.mean_dbfs.expect("noise has a level");
        assert!((level + 60.0).abs() < 0.5, "{level}");
        assert_eq!(health.verdict, Verdict::OneWayAudio);
    }

    #[test]
    fn comfort_noise_is_not_speech() {
        // μ-law comfort noise around -55 dBFS, and A-law's idle pattern
        // (0xD5 decodes to +8).
        let mut rng = XorShift(3);
        let mut meter = HealthMeter::default();
        let mut alaw_idle = [0u8; FRAME_BYTES];
        for pair in alaw_idle.chunks_exact_mut(2) {
            pair.copy_from_slice(&8i16.to_le_bytes());
        }
        feed(
            &mut meter,
            25,
            |k| {
                if k.is_multiple_of(2) {
                    noise(&mut rng, -55.0, ulaw)
                } else {
                    alaw_idle
                }
            },
            |k| noise(&mut XorShift(k as u64 + 1), -58.0, ulaw),
        );
        let health = meter.summary();
        assert_eq!(health.sip_to_device.speech_ms, 0);
        assert_eq!(health.device_to_sip.speech_ms, 0);
        assert_eq!(health.longest_silence_ms, 25_000);
        assert_eq!(health.verdict, Verdict::LongSilence);
    }

    #[test]
    fn a_30_second_gap_is_a_long_silence_with_its_length() {
        let mut meter = HealthMeter::default();
        let mut rng = XorShift(9);
        // 5 s of talk, 30 s of nothing (line noise one way), 5 s of talk.
        let talk = |k: usize| !(5 * SECOND..35 * SECOND).contains(&k);
        let mut noise_frames = Vec::new();
        for _ in 0..40 * SECOND {
            noise_frames.push(noise(&mut rng, -62.0, linear));
        }
        feed(
            &mut meter,
            40,
            |k| {
                if talk(k) {
                    tone(440.0, -20.0, k)
                } else {
                    SILENCE
                }
            },
            |k| {
                if talk(k) {
                    tone(700.0, -24.0, k)
                } else {
                    noise_frames[k]
                }
            },
        );
        let health = meter.summary();
        // The hangover keeps the first 200 ms of the gap as activity.
        assert_eq!(health.longest_silence_ms, 30_000 - 200);
        assert_eq!(health.longest_silence_at_ms, 5_000 + 200);
        assert_eq!(health.verdict, Verdict::LongSilence);
        assert_eq!(health.sip_to_device.speech_ms, 10_000 + 200);

        // 19 s is not long.
        let mut meter = HealthMeter::default();
        let talk = |k: usize| !(5 * SECOND..24 * SECOND).contains(&k);
        feed(
            &mut meter,
            30,
            |k| {
                if talk(k) {
                    tone(440.0, -20.0, k)
                } else {
                    SILENCE
                }
            },
            |k| {
                if talk(k) {
                    tone(700.0, -24.0, k)
                } else {
                    SILENCE
                }
            },
        );
        let health = meter.summary();
        assert_eq!(health.longest_silence_ms, 19_000 - 200);
        assert_eq!(health.verdict, Verdict::Healthy);
    }

    #[test]
    fn silence_counts_only_when_both_directions_are_silent() {
        // Each side talks while the other listens: never silent together.
        let mut meter = HealthMeter::default();
        let first = |k: usize| (k / (2 * SECOND)).is_multiple_of(2);
        feed(
            &mut meter,
            60,
            |k| {
                if first(k) {
                    tone(440.0, -20.0, k)
                } else {
                    SILENCE
                }
            },
            |k| {
                if first(k) {
                    SILENCE
                } else {
                    tone(700.0, -24.0, k)
                }
            },
        );
        let health = meter.summary();
        assert_eq!(health.longest_silence_ms, 0);
        assert_eq!(health.verdict, Verdict::Healthy);
        // Pauses shorter than the hangover are part of the speech.
        let mut meter = HealthMeter::default();
        feed(
            &mut meter,
            2,
            |k| {
                if k % 10 < 7 {
                    tone(440.0, -20.0, k)
                } else {
                    SILENCE
                }
            },
            |k| tone(700.0, -24.0, k),
        );
        assert_eq!(meter.summary().sip_to_device.speech_ms, 2_000);
    }

    #[test]
    fn a_direction_that_delivers_nothing_is_silent() {
        let mut meter = HealthMeter::default();
        for k in 0..30 * SECOND {
            meter.observe(Direction::SipToDevice, &tone(440.0, -20.0, k));
        }
        let health = meter.summary();
        assert_eq!(health.device_to_sip.duration_ms, 0);
        assert_eq!(health.verdict, Verdict::OneWayAudio);

        let mut meter = HealthMeter::default();
        for _ in 0..25 * SECOND {
            meter.observe(Direction::DeviceToSip, &SILENCE);
        }
        let health = meter.summary();
        assert_eq!(health.longest_silence_ms, 25_000);
        assert_eq!(health.verdict, Verdict::LongSilence);
    }

    #[test]
    fn short_and_empty_calls() {
        assert_eq!(HealthMeter::default().summary().verdict, Verdict::NoMedia);
        let mut meter = HealthMeter::default();
        feed(&mut meter, 3, |_| SILENCE, |_| SILENCE);
        assert_eq!(meter.summary().verdict, Verdict::NoSpeech);
    }

    #[test]
    fn thresholds_are_configurable() {
        let config = HealthConfig {
            silence_threshold_dbfs: -65.0,
            long_silence_ms: 1_000,
            ..HealthConfig::default()
        };
        let mut rng = XorShift(5);
        let mut meter = HealthMeter::new(config);
        feed(
            &mut meter,
            2,
            |_| noise(&mut rng, -60.0, linear),
            |_| SILENCE,
        );
        assert_eq!(meter.summary().sip_to_device.speech_ms, 2_000);
        let parsed: HealthConfig =
            serde_json::from_str(r#"{"long_silence_ms": 30000}"#).expect("partial config");
        assert_eq!(parsed.long_silence_ms, 30_000);
        assert_eq!(parsed.silence_threshold_dbfs, -50.0);
    }

    #[test]
    fn the_cdr_form_is_plain_json() {
        let mut meter = HealthMeter::default();
        feed(&mut meter, 6, |k| tone(440.0, -20.0, k), |_| SILENCE);
        let health = meter.summary();
        let json = serde_json::to_value(&health).expect("serialises");
        assert_eq!(json["verdict"], "one_way_audio");
        assert_eq!(json["one_way_audio"]["silent"], "device_to_sip");
        assert_eq!(json["device_to_sip"]["peak_dbfs"], serde_json::Value::Null);
        assert_eq!(json["sip_to_device"]["speech_ms"], 6_000);
        let back: MediaHealth = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, health);
    }
}
