//! Concurrent recorded calls: the CPU one call's recording costs (both legs
//! resampled, encoded to stereo Ogg Opus, written and synced by
//! `hubd::media::recording::Recorder`), printed beside Debian's `opusenc`
//! encoding the same audio with the same bitrate and complexity, in the same
//! run, as a ratio.
//!
//! Targets: at least 100 concurrent recorded calls per core, and a per-call
//! encode cost within 1.5× of opusenc. This is a measurement, not a test: it
//! exits 0 whether or not the targets are met and says "met" / "NOT met". It
//! exits 1 only when it cannot measure (a recording fails, a file is not a
//! finished recording).
//!
//! ```text
//! cargo bench -p hubd --bench call_recording                 # 100 calls x 30 s, as fast as possible
//! cargo bench -p hubd --bench call_recording -- --quick      # 20 calls x 5 s (CI smoke, < 10 s)
//! cargo bench -p hubd --bench call_recording -- --calls 200 --seconds 60 --rate 8000 --complexity 3
//! cargo bench -p hubd --bench call_recording -- --paced      # also in real time, one 20 ms tick at a time
//! cargo bench -p hubd --bench call_recording -- --stereo     # one coupled stereo stream instead of two mono
//! ```
//!
//! Every call has two legs of 8 kHz speech-like audio (talk spurts of
//! harmonics on a drifting pitch with syllable envelopes, pauses with
//! background noise, the legs taking turns). All calls are pushed tick by
//! tick on one thread; its CPU time (`getrusage(RUSAGE_THREAD)`, user + sys)
//! divided by the call-seconds recorded gives the cost per call. opusenc
//! gets the same audio of each distinct conversation, resampled to the
//! recording rate as raw s16le stereo, and its CPU is read with
//! `getrusage(RUSAGE_CHILDREN)`.
//!
//! The recordings go to a temporary directory under `$RECORDING_BENCH_DIR`
//! (default: the system temp dir); put it on the disk hubd would use.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hubd::media::recording::{
    ChannelCoding, Recorder, RecordingConfig, RecordingMeta, RecordingSummary, Repair, repair,
};
use hubd::media::resample::LegResampler;
use vss_shared::SlotId;
use vss_shared::slot_fsm::CallDirection;

/// Target concurrent recorded calls per core.
const TARGET_CALLS_PER_CORE: f64 = 100.0;
/// Target ours / opusenc CPU per call-second.
const TARGET_RATIO: f64 = 1.5;
/// Legs arrive at 8 kHz, 160 samples per 20 ms tick.
const LEG_HZ: u32 = 8_000;
const TICK: usize = 160;
/// Distinct conversations generated (calls reuse them at different offsets).
const CONVERSATIONS: usize = 8;

/// What to run.
#[derive(Debug, Clone)]
struct Config {
    calls: usize,
    seconds: usize,
    paced: bool,
    recording: RecordingConfig,
    base_dir: PathBuf,
}

impl Config {
    fn from_args(args: impl Iterator<Item = String>) -> anyhow::Result<Config> {
        let mut config = Config {
            calls: 100,
            seconds: 30,
            paced: false,
            recording: RecordingConfig::default(),
            base_dir: std::env::var_os("RECORDING_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
        };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> anyhow::Result<usize> {
                let value = args
                    .next()
                    .with_context(|| format!("{name} needs a number"))?;
                value
                    .replace('_', "")
                    .parse()
                    .with_context(|| format!("{name} {value}: not a number"))
            };
            match arg.as_str() {
                "--quick" => {
                    config.calls = 20;
                    config.seconds = 5;
                }
                "--calls" => config.calls = number("--calls")?,
                "--seconds" => config.seconds = number("--seconds")?,
                "--rate" => config.recording.sample_rate = number("--rate")? as u32,
                "--bitrate" => config.recording.bitrate_bps = number("--bitrate")? as i32,
                "--complexity" => config.recording.complexity = number("--complexity")? as i32,
                "--paced" => config.paced = true,
                "--stereo" => config.recording.channel_coding = ChannelCoding::Stereo,
                // `cargo bench` passes `--bench`; a bench-name filter is a bare word.
                "--bench" => {}
                flag if flag.starts_with('-') => bail!(
                    "unknown option {flag}; options: --quick, --calls N, --seconds S, --rate HZ, --bitrate BPS, --complexity 0-10, --stereo, --paced"
                ),
                _ => {}
            }
        }
        ensure!(
            config.calls > 0 && config.seconds > 0,
            "--calls and --seconds must be at least 1"
        );
        Ok(config)
    }
}

fn main() {
    let config = match Config::from_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("call_recording: {e:#}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&config) {
        eprintln!("call_recording: cannot measure: {e:#}");
        std::process::exit(1);
    }
}

fn run(config: &Config) -> anyhow::Result<()> {
    let rec = &config.recording;
    println!(
        "call_recording: {} calls x {} s, two {} Hz legs each, recorded at {} Hz as {:?} Ogg Opus, {} bit/s, complexity {}, pages {:?}, fdatasync every {:?}, under {}",
        config.calls,
        config.seconds,
        LEG_HZ,
        rec.sample_rate,
        rec.channel_coding,
        rec.bitrate_bps,
        rec.complexity,
        rec.page_duration,
        rec.sync_interval,
        config.base_dir.display()
    );
    let ticks = config.seconds * 50;
    let pool: Vec<Conversation> = (0..CONVERSATIONS.min(config.calls))
        .map(|i| Conversation::generate(i as u64, ticks))
        .collect();
    let call_seconds = (config.calls * config.seconds) as f64;

    // Ours, as fast as possible.
    let dir = temp_dir(&config.base_dir)?;
    let ours = record_all(config, &pool, dir.path(), ticks, false)?;
    check_files(&ours.summaries, config.seconds)?;
    drop(dir);
    let ours_ms = ours.cpu.as_secs_f64() * 1e3 / call_seconds;
    let calls_per_core = call_seconds / ours.cpu.as_secs_f64().max(1e-9);
    println!(
        "call_recording: ours: {call_seconds:.0} call-seconds in {:.3} s CPU (user {:.3} s, sys {:.3} s; wall {:.3} s): {ours_ms:.3} ms CPU per call-second = {calls_per_core:.0} recorded calls per core; {:.1} kB per call-minute",
        ours.cpu.as_secs_f64(),
        ours.user.as_secs_f64(),
        ours.sys.as_secs_f64(),
        ours.wall.as_secs_f64(),
        ours.summaries.iter().map(|s| s.bytes).sum::<u64>() as f64 / 1e3 / (call_seconds / 60.0),
    );

    // Of which: the two resamplers alone, over the same audio.
    let resample = resample_only(config, &pool, ticks)?;
    println!(
        "call_recording: of which resampling both legs 8000 -> {} Hz (rubato FFT): {:.3} ms CPU per call-second",
        rec.sample_rate,
        resample.as_secs_f64() * 1e3 / call_seconds
    );

    if config.paced {
        let dir = temp_dir(&config.base_dir)?;
        let paced = record_all(config, &pool, dir.path(), ticks, true)?;
        check_files(&paced.summaries, config.seconds)?;
        let times = &paced.tick_times;
        let at = |q: f64| {
            times
                .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let over = times
            .iter()
            .filter(|&&d| d > Duration::from_millis(20))
            .count();
        println!(
            "call_recording: paced in real time: {} calls for {:.1} s wall used {:.1}% of one core; a tick (all calls) took p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {over} of {} ticks over 20 ms",
            config.calls,
            paced.wall.as_secs_f64(),
            100.0 * paced.cpu.as_secs_f64() / paced.wall.as_secs_f64().max(1e-9),
            at(0.5),
            at(0.99),
            at(1.0),
            times.len(),
        );
    }

    // opusenc on the same audio.
    let ratio = match opusenc(config, &pool, ticks) {
        Ok(Some(reference)) => {
            let seconds = (pool.len() * config.seconds) as f64;
            let theirs_ms = reference.as_secs_f64() * 1e3 / seconds;
            println!(
                "call_recording: opusenc: {seconds:.0} call-seconds (the same audio as raw s16le {} Hz stereo; --bitrate {} --comp {} --speech, application VOIP) in {:.3} s CPU: {theirs_ms:.3} ms CPU per call-second = {:.0} calls per core",
                rec.sample_rate,
                f64::from(rec.bitrate_bps) / 1e3,
                rec.complexity,
                reference.as_secs_f64(),
                seconds / reference.as_secs_f64().max(1e-9),
            );
            Some(ours_ms / theirs_ms)
        }
        Ok(None) => {
            println!(
                "call_recording: opusenc not found (Debian package opus-tools): no comparison"
            );
            None
        }
        Err(e) => {
            println!("call_recording: opusenc failed: {e:#}: no comparison");
            None
        }
    };

    println!(
        "call_recording: target >= {TARGET_CALLS_PER_CORE:.0} recorded calls per core: {calls_per_core:.0}: {}",
        verdict(calls_per_core >= TARGET_CALLS_PER_CORE)
    );
    match ratio {
        Some(ratio) => println!(
            "call_recording: target per-call encode cost ours/opusenc <= {TARGET_RATIO:.2}: {ratio:.2}: {}",
            verdict(ratio <= TARGET_RATIO)
        ),
        None => println!(
            "call_recording: target per-call encode cost ours/opusenc <= {TARGET_RATIO:.2}: not measured (no opusenc)"
        ),
    }
    Ok(())
}

/// Two legs of one call, 8 kHz.
struct Conversation {
    sip: Vec<i16>,
    device: Vec<i16>,
}

impl Conversation {
    /// A deterministic conversation of `ticks` ticks: turns of 1 to 4 s,
    /// the talker's leg speech-like with pauses, the other leg background
    /// noise with the odd short "mm".
    fn generate(seed: u64, ticks: usize) -> Conversation {
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

/// One pass over all calls.
struct Pass {
    cpu: Duration,
    user: Duration,
    sys: Duration,
    wall: Duration,
    /// How long each tick took (all calls pushed once), sorted.
    tick_times: Vec<Duration>,
    summaries: Vec<RecordingSummary>,
}

/// Where call `i` starts in its conversation (calls sharing one are offset).
fn offset(i: usize, ticks: usize) -> usize {
    (i / CONVERSATIONS) * 37 % ticks.max(1)
}

/// Records every call tick by tick on this thread; `paced` sleeps to a
/// 20 ms schedule between ticks.
fn record_all(
    config: &Config,
    pool: &[Conversation],
    dir: &Path,
    ticks: usize,
    paced: bool,
) -> anyhow::Result<Pass> {
    let mut recorders = Vec::with_capacity(config.calls);
    for i in 0..config.calls {
        let meta = RecordingMeta {
            call_id: format!("bench-{i:05}"),
            slot: SlotId::new(1 + (i % 9_999) as u32).context("slot id")?,
            direction: CallDirection::Outbound,
            started_at_ms: 1_795_530_225_000 + i as i64,
        };
        let path = dir.join(format!("call-{i:05}.opus"));
        recorders.push(Recorder::create(&path, &meta, &config.recording)?);
    }
    let before = rusage(libc::RUSAGE_THREAD)?;
    let start = Instant::now();
    let mut tick_times = Vec::with_capacity(ticks);
    for tick in 0..ticks {
        if paced {
            let due = start + Duration::from_millis(20 * tick as u64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let tick_start = Instant::now();
        for (i, recorder) in recorders.iter_mut().enumerate() {
            let call = &pool[i % pool.len()];
            let at = (tick + offset(i, ticks)) % ticks * TICK;
            recorder.push(
                Some(&call.sip[at..at + TICK]),
                Some(&call.device[at..at + TICK]),
            )?;
        }
        tick_times.push(tick_start.elapsed());
    }
    let mut summaries = Vec::with_capacity(config.calls);
    for recorder in recorders {
        summaries.push(recorder.finish()?);
    }
    let wall = start.elapsed();
    let after = rusage(libc::RUSAGE_THREAD)?;
    tick_times.sort_unstable();
    let user = after.0.saturating_sub(before.0);
    let sys = after.1.saturating_sub(before.1);
    Ok(Pass {
        cpu: user + sys,
        user,
        sys,
        wall,
        tick_times,
        summaries,
    })
}

/// Every recording has the right length and ends cleanly.
fn check_files(summaries: &[RecordingSummary], seconds: usize) -> anyhow::Result<()> {
    for summary in summaries {
        ensure!(
            summary.duration_ms == seconds as u64 * 1_000,
            "{}: {} ms recorded, expected {} s",
            summary.path.display(),
            summary.duration_ms,
            seconds
        );
        let repaired = repair(&summary.path)?;
        ensure!(
            repaired == Repair::Complete,
            "{}: not a finished recording ({repaired:?})",
            summary.path.display()
        );
    }
    Ok(())
}

/// CPU of the two leg resamplers alone over every call's audio.
fn resample_only(config: &Config, pool: &[Conversation], ticks: usize) -> anyhow::Result<Duration> {
    let rate = config.recording.sample_rate;
    let mut legs = Vec::with_capacity(config.calls);
    for _ in 0..config.calls {
        legs.push((
            LegResampler::new(LEG_HZ, rate)?,
            LegResampler::new(LEG_HZ, rate)?,
        ));
    }
    let before = rusage(libc::RUSAGE_THREAD)?;
    let mut sink = 0.0f32;
    for tick in 0..ticks {
        for (i, (sip, device)) in legs.iter_mut().enumerate() {
            let call = &pool[i % pool.len()];
            let at = (tick + offset(i, ticks)) % ticks * TICK;
            sink += sip.process(Some(&call.sip[at..at + TICK]))?[0];
            sink += device.process(Some(&call.device[at..at + TICK]))?[0];
        }
    }
    let after = rusage(libc::RUSAGE_THREAD)?;
    std::hint::black_box(sink);
    Ok((after.0 + after.1).saturating_sub(before.0 + before.1))
}

/// opusenc's CPU encoding each distinct conversation once, or `None` when
/// it is not installed.
fn opusenc(
    config: &Config,
    pool: &[Conversation],
    ticks: usize,
) -> anyhow::Result<Option<Duration>> {
    if Command::new("opusenc").arg("--version").output().is_err() {
        return Ok(None);
    }
    let rec = &config.recording;
    let dir = temp_dir(&config.base_dir)?;
    let mut total = Duration::ZERO;
    for (n, call) in pool.iter().enumerate() {
        // The same audio the recorder encodes: both legs at the recording
        // rate, interleaved s16le. Prepared before the clock starts.
        let mut sip = LegResampler::new(LEG_HZ, rec.sample_rate)?;
        let mut device = LegResampler::new(LEG_HZ, rec.sample_rate)?;
        let mut raw = Vec::with_capacity(ticks * sip.output_len() * 4);
        let mut left = vec![0i16; sip.output_len()];
        let mut right = vec![0i16; device.output_len()];
        for tick in 0..ticks {
            let at = tick * TICK;
            sip.process_i16(Some(&call.sip[at..at + TICK]), &mut left)?;
            device.process_i16(Some(&call.device[at..at + TICK]), &mut right)?;
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

/// (user, system) CPU time of `who`.
fn rusage(who: libc::c_int) -> anyhow::Result<(Duration, Duration)> {
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

fn temp_dir(base: &Path) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("call-recording-")
        .tempdir_in(base)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {} (set RECORDING_BENCH_DIR)",
                base.display()
            )
        })
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}
