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

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hubd::media::recording::{
    ChannelCoding, Recorder, RecordingConfig, RecordingMeta, RecordingSummary, Repair, repair,
};
use hubd::media::resample::LegResampler;
use vss_shared::SlotId;
use vss_shared::slot_fsm::CallDirection;

use common::{CONVERSATIONS, Conversation, LEG_HZ, TICK, offset, rusage, verdict};

/// Target concurrent recorded calls per core.
const TARGET_CALLS_PER_CORE: f64 = 100.0;
/// Target ours / opusenc CPU per call-second.
const TARGET_RATIO: f64 = 1.5;

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
    let dir = common::temp_dir(&config.base_dir, "call-recording-")?;
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
        let dir = common::temp_dir(&config.base_dir, "call-recording-")?;
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
    let len = ticks * TICK;
    common::opusenc(
        &config.recording,
        &config.base_dir,
        pool.iter()
            .map(|call| (&call.sip[..len], &call.device[..len])),
    )
}
