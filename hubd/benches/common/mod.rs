//! What the recording benchmarks (`call_recording`, `bridged_calls`) share:
//! CPU times, temporary directories, the verdict words, the speech-like
//! test conversations, and `opusenc` (Debian's `opus-tools`) encoding the
//! same audio the recorder encodes, as the reference.

use std::f64::consts::PI;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use hubd::media::recording::RecordingConfig;
use hubd::media::resample::LegResampler;

/// Legs arrive at 8 kHz, 160 samples per 20 ms tick.
pub const LEG_HZ: u32 = 8_000;
/// Samples of one leg per 20 ms tick.
pub const TICK: usize = 160;
/// Distinct conversations generated (calls reuse them at different offsets).
pub const CONVERSATIONS: usize = 8;

/// (user, system) CPU time of `who` (`RUSAGE_SELF`, `RUSAGE_THREAD`,
/// `RUSAGE_CHILDREN`).
pub fn rusage(who: libc::c_int) -> anyhow::Result<(Duration, Duration)> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid rusage.
    let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    ensure!(rc == 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: initialised by zeroed() and filled by getrusage.
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok((time(usage.ru_utime), time(usage.ru_stime)))
}

/// A temporary directory `<prefix>XXXX` under `base`.
pub fn temp_dir(base: &Path, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {} (set RECORDING_BENCH_DIR)",
                base.display()
            )
        })
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// opusenc's CPU encoding each call of `calls` (its SIP and device legs at
/// 8 kHz, whole ticks) once, or `None` when it is not installed.
///
/// It gets the same audio the recorder encodes: both legs resampled to the
/// recording rate with the recorder's resampler, interleaved s16le stereo,
/// written to a file before the clock starts; then `opusenc --raw` with the
/// recording's bitrate and complexity, `--speech` and application VOIP (as
/// ours). Its CPU is `getrusage(RUSAGE_CHILDREN)` around each child.
pub fn opusenc<'a>(
    rec: &RecordingConfig,
    base_dir: &Path,
    calls: impl IntoIterator<Item = (&'a [i16], &'a [i16])>,
) -> anyhow::Result<Option<Duration>> {
    if Command::new("opusenc").arg("--version").output().is_err() {
        return Ok(None);
    }
    let dir = temp_dir(base_dir, "opusenc-")?;
    let mut total = Duration::ZERO;
    for (n, (sip_leg, device_leg)) in calls.into_iter().enumerate() {
        ensure!(
            sip_leg.len() == device_leg.len() && sip_leg.len().is_multiple_of(TICK),
            "legs of whole ticks and equal length"
        );
        let mut sip = LegResampler::new(LEG_HZ, rec.sample_rate)?;
        let mut device = LegResampler::new(LEG_HZ, rec.sample_rate)?;
        let mut raw = Vec::with_capacity(sip_leg.len() / TICK * sip.output_len() * 4);
        let mut left = vec![0i16; sip.output_len()];
        let mut right = vec![0i16; device.output_len()];
        for (sip_tick, device_tick) in sip_leg
            .chunks_exact(TICK)
            .zip(device_leg.chunks_exact(TICK))
        {
            sip.process_i16(Some(sip_tick), &mut left)?;
            device.process_i16(Some(device_tick), &mut right)?;
            for (l, r) in left.iter().zip(&right) {
                raw.extend_from_slice(&l.to_le_bytes());
                raw.extend_from_slice(&r.to_le_bytes());
            }
        }
        let input = dir.path().join(format!("call-{n}.raw"));
        let output = dir.path().join(format!("call-{n}.opus"));
        std::fs::write(&input, &raw).with_context(|| format!("write {}", input.display()))?;

        let before = rusage(libc::RUSAGE_CHILDREN)?;
        let status = Command::new("opusenc")
            .args([
                "--quiet",
                "--raw",
                "--raw-rate",
                &rec.sample_rate.to_string(),
                "--raw-chan",
                "2",
                "--bitrate",
                &format!("{}", f64::from(rec.bitrate_bps) / 1e3),
                "--comp",
                &rec.complexity.to_string(),
                "--speech",
                // OPUS_SET_APPLICATION_REQUEST = OPUS_APPLICATION_VOIP, as ours.
                "--set-ctl-int",
                "4000=2048",
            ])
            .arg(&input)
            .arg(&output)
            .status()
            .context("run opusenc")?;
        let after = rusage(libc::RUSAGE_CHILDREN)?;
        ensure!(status.success(), "opusenc exited with {status}");
        total += (after.0 + after.1).saturating_sub(before.0 + before.1);
    }
    Ok(Some(total))
}

/// Where call `i` starts in its conversation (calls sharing one are offset).
pub fn offset(i: usize, ticks: usize) -> usize {
    (i / CONVERSATIONS) * 37 % ticks.max(1)
}

/// Two legs of one call, 8 kHz.
pub struct Conversation {
    pub sip: Vec<i16>,
    pub device: Vec<i16>,
}

impl Conversation {
    /// A deterministic conversation of `ticks` ticks: turns of 1 to 4 s,
    /// the talker's leg speech-like with pauses, the other leg background
    /// noise with the odd short "mm".
    pub fn generate(seed: u64, ticks: usize) -> Conversation {
        let len = ticks * TICK;
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut sip = vec![0.0f64; len];
        let mut device = vec![0.0f64; len];
        let mut at = 0;
        let mut sip_talks = seed.is_multiple_of(2);
        while at < len {
            let turn = (rng.uniform(1.0, 4.0) * f64::from(LEG_HZ)) as usize;
            let end = (at + turn).min(len);
            let (talker, listener) = if sip_talks {
                (&mut sip, &mut device)
            } else {
                (&mut device, &mut sip)
            };
            let mut t = at;
            while t < end {
                let spurt = (rng.uniform(0.4, 1.5) * f64::from(LEG_HZ)) as usize;
                let spurt_end = (t + spurt).min(end);
                speech(&mut talker[t..spurt_end], &mut rng);
                t = spurt_end + (rng.uniform(0.1, 0.5) * f64::from(LEG_HZ)) as usize;
            }
            if rng.uniform(0.0, 1.0) < 0.3 {
                let mm = at + (rng.uniform(0.2, 0.6) * turn as f64) as usize;
                let mm_end = (mm + (0.3 * f64::from(LEG_HZ)) as usize).min(len);
                if mm < mm_end {
                    speech(&mut listener[mm..mm_end], &mut rng);
                }
            }
            at = end;
            sip_talks = !sip_talks;
        }
        let finish = |leg: Vec<f64>, rng: &mut Rng| -> Vec<i16> {
            leg.into_iter()
                .map(|s| {
                    // Line noise under everything, about -60 dBFS.
                    let noise = rng.uniform(-30.0, 30.0);
                    (s + noise).round().clamp(-32_768.0, 32_767.0) as i16
                })
                .collect()
        };
        Conversation {
            sip: finish(sip, &mut rng),
            device: finish(device, &mut rng),
        }
    }
}

/// Writes a talk spurt into `out`: syllables (4-6 per second) of voiced
/// sound (harmonics of a drifting pitch shaped by three formants) and the
/// odd unvoiced one (noise), peaking near -12 dBFS.
fn speech(out: &mut [f64], rng: &mut Rng) {
    let rate = f64::from(LEG_HZ);
    let mut f0 = rng.uniform(100.0, 220.0);
    let mut phase = 0.0f64;
    let mut i = 0;
    while i < out.len() {
        let syllable = ((rng.uniform(0.15, 0.25)) * rate) as usize;
        let end = (i + syllable).min(out.len());
        let voiced = rng.uniform(0.0, 1.0) < 0.8;
        let formants = [
            rng.uniform(300.0, 800.0),
            rng.uniform(900.0, 2_200.0),
            rng.uniform(2_300.0, 3_200.0),
        ];
        let gains: Vec<f64> = (1..=24)
            .map(|k| {
                let f = f0 * f64::from(k);
                if f > 3_400.0 {
                    return 0.0;
                }
                formants
                    .iter()
                    .map(|&fc| (-((f - fc) / 250.0).powi(2)).exp())
                    .sum::<f64>()
                    / f64::from(k).sqrt()
            })
            .collect();
        let norm: f64 = gains.iter().sum::<f64>().max(1e-9);
        let drift = rng.uniform(-40.0, 40.0) / syllable as f64;
        for (n, sample) in out[i..end].iter_mut().enumerate() {
            let envelope = (PI * n as f64 / syllable as f64).sin();
            let s = if voiced {
                phase += 2.0 * PI * f0 / rate;
                f0 = (f0 + drift).clamp(80.0, 300.0);
                gains
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| **g > 0.0)
                    .map(|(k, g)| g * (phase * (k + 1) as f64).sin())
                    .sum::<f64>()
                    / norm
            } else {
                rng.uniform(-0.5, 0.5)
            };
            *sample += 8_000.0 * envelope * s;
        }
        i = end;
    }
}

/// A small deterministic generator (64-bit LCG, high bits).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lo + (hi - lo) * ((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
}
