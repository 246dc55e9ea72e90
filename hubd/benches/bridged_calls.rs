//! Concurrent bridged calls with recording: the CPU one whole call costs the
//! hub (its RTP session on loopback UDP, the tap, the media health meter,
//! the recording on the recorder threads), printed beside Debian's
//! `opusenc` encoding the same audio, in the same run, as a ratio.
//!
//! Targets: at least 100 concurrent recorded calls per core, and a per-call
//! encode cost within 1.5× of opusenc. This is a measurement, not a test: it
//! exits 0 whether or not the targets are met and says "met" / "NOT met". It
//! exits 1 only when it cannot measure (a call's media does not start, a
//! recording is not a finished file).
//!
//! ```text
//! cargo bench -p hubd --bench bridged_calls                 # 100 calls x 20 s of real time
//! cargo bench -p hubd --bench bridged_calls -- --quick      # 10 calls x 3 s (CI smoke)
//! cargo bench -p hubd --bench bridged_calls -- --calls 150 --seconds 60
//! cargo bench -p hubd --bench bridged_calls -- --speech     # call_recording's conversations instead of tones
//! ```
//!
//! Every call is a real `hubd::sip::bridge::CallMedia`: an `RtpSession` on
//! an even port of a `PortRange` on 127.0.0.1 (PCMA), the real tap and
//! health meter, and a recording with the default `RecordingConfig` on the
//! hub's `RecorderPool` into a temporary directory. Its device side is a
//! fake `AudioStream` (the channels the voice clock would feed) and its SIP
//! side a peer UDP socket. One load-generator thread, paced on the real
//! clock, does every call's device and peer each 20 ms: a 440 Hz s16le frame
//! to the device channel, a 1 kHz PCMA RTP packet to the hub, and drains
//! what came back both ways. Two steady tones keep both legs busy all the
//! time, which is dearer to encode than a conversation; `--speech` plays
//! `call_recording`'s speech-like conversations (the legs taking turns)
//! instead. The runtime is tokio's multi-thread one with 2
//! workers, as hubd's.
//!
//! After a 1 s warm-up, over `--seconds` of real time: the process's CPU
//! (`getrusage(RUSAGE_SELF)`, user + sys) minus the load generator thread's
//! own (`RUSAGE_THREAD`, measured in the same run) is the hub's; divided by
//! the wall time it is the cores the calls use, and calls / cores is
//! "recorded calls per core". The recorder threads' CPU (from
//! `/proc/self/task`) per call-second is the per-call encode cost, compared
//! with opusenc encoding the same two legs (the SIP leg as the hub decodes
//! it from PCMA, the device leg as sent) resampled as the recorder does.
//!
//! The recordings go to a temporary directory under `$RECORDING_BENCH_DIR`
//! (default: the system temp dir); put it on the disk hubd would use.

mod common;

use std::f64::consts::PI;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use hubd::device::at_modem::voice::{AudioStream, FRAME_BYTES, Frame};
use hubd::media::g711::{Codec, FRAME_SAMPLES};
use hubd::media::health::HealthConfig;
use hubd::media::recording::{RecorderPool, RecordingConfig, RecordingMeta, Repair, repair};
use hubd::media::rtp::{self, RtpStream, StreamStart};
use hubd::media::rtp_session::{PortRange, RtpConfig, RtpStatsSnapshot};
use hubd::media::sdp::{Direction, Negotiated};
use hubd::sip::bridge::{BridgeConfig, CallMedia};
use tokio::sync::mpsc;
use vss_shared::SlotId;
use vss_shared::slot_fsm::CallDirection;

use common::{CONVERSATIONS, Conversation, LEG_HZ, TICK, offset, rusage, verdict};

/// Target concurrent recorded calls per core.
const TARGET_CALLS_PER_CORE: f64 = 100.0;
/// Target ours / opusenc CPU per call-second.
const TARGET_RATIO: f64 = 1.5;
/// The peer's tone (the SIP leg, left channel).
const SIP_TONE_HZ: f64 = 1_000.0;
/// The device's tone (the device leg, right channel).
const DEVICE_TONE_HZ: f64 = 440.0;
/// Before the measured window: jitter buffers fill, recordings start.
const WARM_UP_TICKS: usize = 50;
/// Frames queued each way between the device and the tap (as the voice
/// clock's).
const DEVICE_QUEUE: usize = 10;
/// Where the hub's RTP ports are leased.
const RTP_PORTS: (u16, u16) = (31_000, 39_998);
/// Seconds of audio opusenc encodes at least (short runs are too short to
/// time it well).
const OPUSENC_MIN_SECONDS: usize = 30;

/// What to run.
#[derive(Debug, Clone)]
struct Config {
    calls: usize,
    seconds: usize,
    audio: AudioKind,
    base_dir: PathBuf,
}

/// What the calls carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AudioKind {
    /// A steady tone each way (1 kHz from the peer, 440 Hz from the
    /// device): both legs busy all the time, the encoder's worst case.
    Tones,
    /// `call_recording`'s speech-like conversations: the legs take turns,
    /// with pauses.
    Speech,
}

impl Config {
    fn from_args(args: impl Iterator<Item = String>) -> anyhow::Result<Config> {
        let mut config = Config {
            calls: 100,
            seconds: 20,
            audio: AudioKind::Tones,
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
                    config.calls = 10;
                    config.seconds = 3;
                }
                "--calls" => config.calls = number("--calls")?,
                "--seconds" => config.seconds = number("--seconds")?,
                "--speech" => config.audio = AudioKind::Speech,
                // `cargo bench` passes `--bench`; a bench-name filter is a bare word.
                "--bench" => {}
                flag if flag.starts_with('-') => {
                    bail!(
                        "unknown option {flag}; options: --quick, --calls N, --seconds S, --speech"
                    )
                }
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
            eprintln!("bridged_calls: {e:#}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&config) {
        eprintln!("bridged_calls: cannot measure: {e:#}");
        std::process::exit(1);
    }
}

fn run(config: &Config) -> anyhow::Result<()> {
    let rec = RecordingConfig::default();
    let pool = RecorderPool::shared();
    println!(
        "bridged_calls: {} calls x {} s of real time (after a 1 s warm-up), audio: {}; each a CallMedia: RtpSession (PCMA on 127.0.0.1), tap, health meter, recording at {} Hz as {:?} Ogg Opus, {} bit/s, complexity {} on {} recorder threads, under {}; tokio runtime with 2 workers; load average {}",
        config.calls,
        config.seconds,
        match config.audio {
            AudioKind::Tones => "a steady tone each way (peer 1 kHz, device 440 Hz)",
            AudioKind::Speech => "call_recording's speech-like conversations (legs taking turns)",
        },
        rec.sample_rate,
        rec.channel_coding,
        rec.bitrate_bps,
        rec.complexity,
        pool.threads(),
        config.base_dir.display(),
        load_average(),
    );
    let dir = common::temp_dir(&config.base_dir, "bridged-calls-")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("hub-runtime")
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let ticks = WARM_UP_TICKS + config.seconds * 50;
    let audio = Arc::new(match config.audio {
        AudioKind::Tones => Audio::tones(),
        AudioKind::Speech => Audio::speech(ticks),
    });

    let (medias, generators) = runtime.block_on(start_calls(config, &rec, dir.path()))?;
    let generator = std::thread::Builder::new()
        .name("load-generator".into())
        .spawn({
            let audio = Arc::clone(&audio);
            move || generate(generators, &audio, ticks)
        })
        .context("spawn the load generator")?;
    let load = generator
        .join()
        .map_err(|_| anyhow!("the load generator panicked"))??;

    // Hang up: every call's media stops, every recording is finished.
    let mut recordings = Vec::with_capacity(medias.len());
    let mut rtp = Vec::with_capacity(medias.len());
    runtime.block_on(async {
        for media in medias {
            let (_, recording, stats) = media.finish().await;
            recordings.push(recording);
            rtp.push(stats);
        }
    });
    drop(runtime);
    check_recordings(&recordings)?;

    let w = &load.window;
    let wall = w.wall.as_secs_f64();
    let process = w.process.as_secs_f64();
    let generators_cpu = w.generator.as_secs_f64();
    let hub = (process - generators_cpu).max(1e-9);
    let call_seconds = (config.calls * config.seconds) as f64;
    // Ticks the recorder threads dropped cost them nothing: count them at
    // the cost of the ticks they did record, so that a machine too busy to
    // record everything does not look cheaper.
    let recorders = w.recorders.as_secs_f64();
    let dropped_seconds = w.dropped_ticks as f64 / 50.0;
    let ours_ms = recorders * 1e3 / (call_seconds - dropped_seconds).max(1e-9);
    let unrecorded = ours_ms / 1e3 * dropped_seconds;
    let cores = (hub + unrecorded) / wall;
    let per_call = 100.0 * cores / config.calls as f64;
    let calls_per_core = config.calls as f64 / cores;
    println!(
        "bridged_calls: window {wall:.2} s wall: process CPU {process:.3} s (user {:.3} s, sys {:.3} s), of which the load generator thread {generators_cpu:.3} s; the hub {hub:.3} s{} = {:.1}% of a core: {per_call:.3}% of a core per call = {calls_per_core:.0} bridged recorded calls per core",
        w.process_user.as_secs_f64(),
        w.process_sys.as_secs_f64(),
        if w.dropped_ticks > 0 {
            format!(
                " + {unrecorded:.3} s for the {} ticks the recorder threads dropped in the window, at their cost per tick",
                w.dropped_ticks
            )
        } else {
            String::new()
        },
        100.0 * cores,
    );
    println!(
        "bridged_calls: of the hub's CPU: recorder threads {recorders:.3} s ({ours_ms:.3} ms per call-second recorded), runtime threads (RTP sessions, taps, health) {:.3} s ({:.3} ms per call-second), the rest {:.3} s",
        w.runtime.as_secs_f64(),
        w.runtime.as_secs_f64() * 1e3 / call_seconds,
        (hub - recorders - w.runtime.as_secs_f64()).max(0.0),
    );
    println!(
        "bridged_calls: peak RSS {:.1} MB (the whole process, load generator included)",
        peak_rss_bytes()? as f64 / 1e6
    );
    let sum = |f: fn(&RtpStatsSnapshot) -> u64| rtp.iter().map(f).sum::<u64>();
    let expected = (config.calls * ticks) as u64;
    println!(
        "bridged_calls: frames over the whole run ({expected} expected each way): device -> hub {} (refused {}), hub -> device {}; peer -> hub RTP {}, hub -> peer RTP {}; dropped: recorder ticks {}, RTP lost {}, jitter underruns {}, device overruns {}",
        load.device_sent,
        load.device_refused,
        load.device_received,
        load.peer_sent,
        load.peer_received,
        pool.dropped_ticks(),
        sum(|s| s.lost),
        sum(|s| s.underruns),
        sum(|s| s.device_overruns),
    );
    println!(
        "bridged_calls: {} recordings finished and complete; load average now {}",
        recordings.len(),
        load_average()
    );

    // opusenc on the same audio: each source's two legs as they are
    // recorded, at least OPUSENC_MIN_SECONDS in all.
    let sources = audio.sip.len();
    let ref_ticks = (ticks).max(OPUSENC_MIN_SECONDS * 50 / sources);
    let legs: Vec<(Vec<i16>, Vec<i16>)> = (0..sources).map(|s| audio.legs(s, ref_ticks)).collect();
    let seconds = (sources * ref_ticks) as f64 / 50.0;
    let ratio = match common::opusenc(
        &rec,
        &config.base_dir,
        legs.iter().map(|(sip, device)| (&sip[..], &device[..])),
    ) {
        Ok(Some(reference)) => {
            let theirs_ms = reference.as_secs_f64() * 1e3 / seconds;
            println!(
                "bridged_calls: opusenc: {seconds:.0} call-seconds (the same two legs as raw s16le {} Hz stereo; --bitrate {} --comp {} --speech, application VOIP) in {:.3} s CPU: {theirs_ms:.3} ms CPU per call-second; ours (recorder threads) {ours_ms:.3}",
                rec.sample_rate,
                f64::from(rec.bitrate_bps) / 1e3,
                rec.complexity,
                reference.as_secs_f64(),
            );
            Some(ours_ms / theirs_ms)
        }
        Ok(None) => {
            println!("bridged_calls: opusenc not found (Debian package opus-tools): no comparison");
            None
        }
        Err(e) => {
            println!("bridged_calls: opusenc failed: {e:#}: no comparison");
            None
        }
    };

    println!(
        "bridged_calls: target >= {TARGET_CALLS_PER_CORE:.0} recorded calls per core (whole bridged calls): {calls_per_core:.0}: {}",
        verdict(calls_per_core >= TARGET_CALLS_PER_CORE)
    );
    match ratio {
        Some(ratio) => println!(
            "bridged_calls: target per-call encode cost ours/opusenc <= {TARGET_RATIO:.2}: {ratio:.2}: {}",
            verdict(ratio <= TARGET_RATIO)
        ),
        None => println!(
            "bridged_calls: target per-call encode cost ours/opusenc <= {TARGET_RATIO:.2}: not measured (no opusenc)"
        ),
    }
    Ok(())
}

/// What the calls say: per source, tick by tick, the peer's PCMA payloads
/// and the device's s16le frames. Call `i` plays source `i` mod the
/// sources, from its own offset.
struct Audio {
    sip: Vec<Vec<[u8; FRAME_SAMPLES]>>,
    device: Vec<Vec<[u8; FRAME_BYTES]>>,
}

impl Audio {
    /// One second of a 1 kHz tone from the peer and 440 Hz from the device.
    fn tones() -> Audio {
        let tone = |hz: f64| -> Vec<i16> {
            (0..50 * TICK)
                .map(|i| {
                    let t = i as f64 / f64::from(LEG_HZ);
                    (8_000.0 * (2.0 * PI * hz * t).sin()).round() as i16
                })
                .collect()
        };
        Audio::from_legs([(tone(SIP_TONE_HZ), tone(DEVICE_TONE_HZ))])
    }

    /// `call_recording`'s speech-like conversations of `ticks` ticks.
    fn speech(ticks: usize) -> Audio {
        Audio::from_legs((0..CONVERSATIONS).map(|i| {
            let call = Conversation::generate(i as u64, ticks);
            (call.sip, call.device)
        }))
    }

    fn from_legs(sources: impl IntoIterator<Item = (Vec<i16>, Vec<i16>)>) -> Audio {
        let mut audio = Audio {
            sip: Vec::new(),
            device: Vec::new(),
        };
        for (sip, device) in sources {
            audio.sip.push(
                sip.chunks_exact(TICK)
                    .map(|tick| {
                        let mut payload = [0u8; FRAME_SAMPLES];
                        for (code, &sample) in payload.iter_mut().zip(tick) {
                            *code = Codec::Pcma.encode(sample);
                        }
                        payload
                    })
                    .collect(),
            );
            audio.device.push(
                device
                    .chunks_exact(TICK)
                    .map(|tick| {
                        let mut frame = [0u8; FRAME_BYTES];
                        for (bytes, sample) in frame.chunks_exact_mut(2).zip(tick) {
                            bytes.copy_from_slice(&sample.to_le_bytes());
                        }
                        frame
                    })
                    .collect(),
            );
        }
        audio
    }

    /// Call `call`'s frames at `tick`: (the peer's payload, the device's frame).
    fn frames(&self, call: usize, tick: usize) -> (&[u8; FRAME_SAMPLES], &[u8; FRAME_BYTES]) {
        let source = call % self.sip.len();
        let len = self.sip[source].len();
        let at = (tick + offset(call, len)) % len;
        (&self.sip[source][at], &self.device[source][at])
    }

    /// `ticks` ticks of source `source`'s two legs as the recorder gets
    /// them: the SIP leg decoded from PCMA, the device leg as sent.
    fn legs(&self, source: usize, ticks: usize) -> (Vec<i16>, Vec<i16>) {
        let (sip_frames, device_frames) = (&self.sip[source], &self.device[source]);
        let mut sip = Vec::with_capacity(ticks * TICK);
        let mut device = Vec::with_capacity(ticks * TICK);
        for tick in 0..ticks {
            sip.extend(
                sip_frames[tick % sip_frames.len()]
                    .iter()
                    .map(|&code| Codec::Pcma.decode(code)),
            );
            device.extend(
                device_frames[tick % device_frames.len()]
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]])),
            );
        }
        (sip, device)
    }
}

/// One call's device and peer, as the load generator drives them.
struct CallEnds {
    /// Frames "the modem sent", to the tap.
    device_tx: mpsc::Sender<Frame>,
    /// Frames the tap sends "the modem".
    device_rx: mpsc::Receiver<Frame>,
    /// The peer's socket.
    peer: UdpSocket,
    /// The hub's RTP address for this call.
    hub: SocketAddr,
    stream: RtpStream,
}

/// Starts every call's media; the calls' device and peer ends.
async fn start_calls(
    config: &Config,
    rec: &RecordingConfig,
    dir: &Path,
) -> anyhow::Result<(Vec<CallMedia>, Vec<CallEnds>)> {
    let ports = PortRange::new(RTP_PORTS.0, RTP_PORTS.1).map_err(|e| anyhow!("{e}"))?;
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut medias = Vec::with_capacity(config.calls);
    let mut ends = Vec::with_capacity(config.calls);
    for i in 0..config.calls {
        let socket = ports
            .bind(localhost)
            .map_err(|e| anyhow!("call {i}: no RTP port: {e}"))?;
        let hub = socket.local_addr();
        let peer = UdpSocket::bind((localhost, 0)).context("peer socket")?;
        peer.set_nonblocking(true).context("peer socket")?;
        let remote = Negotiated {
            media_index: 0,
            remote: peer.local_addr().context("peer socket")?,
            codec: Codec::Pcma,
            payload_type: Codec::Pcma.payload_type(),
            telephone_event: Some(101),
            remote_ptime: Some(20),
            direction: Direction::SendRecv,
        };
        let (device_tx, from_device) = mpsc::channel(DEVICE_QUEUE);
        let (to_device, device_rx) = mpsc::channel(DEVICE_QUEUE);
        let call_id = format!("bench-{i:05}");
        let bridge = BridgeConfig {
            recording: Some((dir.join(format!("{call_id}.opus")), rec.clone())),
            meta: RecordingMeta {
                call_id,
                slot: SlotId::new(1 + (i % 9_999) as u32).context("slot id")?,
                direction: CallDirection::Outbound,
                started_at_ms: 1_795_530_225_000 + i as i64,
            },
            local_ip: localhost,
            bind_ip: localhost,
            ports: Arc::clone(&ports),
            rtp: RtpConfig::default(),
            health: HealthConfig::default(),
        };
        let media = CallMedia::start(
            socket,
            remote,
            AudioStream {
                from_device,
                to_device,
            },
            &bridge,
        )
        .map_err(|e| anyhow!("call {i}: media did not start: {e}"))?;
        medias.push(media);
        ends.push(CallEnds {
            device_tx,
            device_rx,
            peer,
            hub,
            stream: RtpStream::new(StreamStart {
                ssrc: 0x5eed_0000 + i as u32,
                sequence: (i * 1_000) as u16,
                timestamp: (i * 100_000) as u32,
            }),
        });
    }
    Ok((medias, ends))
}

/// CPU times over the measured window.
#[derive(Debug, Default)]
struct Window {
    wall: Duration,
    process: Duration,
    process_user: Duration,
    process_sys: Duration,
    generator: Duration,
    recorders: Duration,
    runtime: Duration,
    /// Ticks the recorder threads dropped (fell behind).
    dropped_ticks: u64,
}

/// What the load generator did and measured.
#[derive(Debug, Default)]
struct Load {
    window: Window,
    device_sent: u64,
    device_refused: u64,
    device_received: u64,
    peer_sent: u64,
    peer_received: u64,
}

/// A snapshot of the clocks the window is measured with.
struct Clocks {
    at: Instant,
    process: (Duration, Duration),
    generator: Duration,
    threads: ThreadsCpu,
    dropped_ticks: u64,
}

impl Clocks {
    fn now() -> anyhow::Result<Clocks> {
        let generator = rusage(libc::RUSAGE_THREAD)?;
        Ok(Clocks {
            at: Instant::now(),
            process: rusage(libc::RUSAGE_SELF)?,
            generator: generator.0 + generator.1,
            threads: threads_cpu()?,
            dropped_ticks: RecorderPool::shared().dropped_ticks(),
        })
    }
}

/// Drives every call's device and peer for `ticks` 20 ms ticks on the real
/// clock (an absolute schedule), on this thread; measures the window after
/// the warm-up.
fn generate(mut calls: Vec<CallEnds>, audio: &Audio, ticks: usize) -> anyhow::Result<Load> {
    let mut load = Load::default();
    let mut packet = [0u8; 2048];
    let mut inbox = [0u8; 2048];
    let start = Instant::now();
    let mut window_start = None;
    for tick in 0..ticks {
        let due = start + Duration::from_millis(20 * tick as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if tick == WARM_UP_TICKS {
            window_start = Some(Clocks::now()?);
        }
        for (i, call) in calls.iter_mut().enumerate() {
            let (sip_payload, device_frame) = audio.frames(i, tick);
            match call.device_tx.try_send(Box::new(*device_frame)) {
                Ok(()) => load.device_sent += 1,
                Err(_) => load.device_refused += 1,
            }
            while call.device_rx.try_recv().is_ok() {
                load.device_received += 1;
            }
            let header = call.stream.next_frame(Codec::Pcma.payload_type());
            let len = rtp::build(&header, sip_payload, &mut packet)
                .map_err(|e| anyhow!("build RTP: {e:?}"))?;
            match call.peer.send_to(&packet[..len], call.hub) {
                Ok(_) => load.peer_sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("peer send"),
            }
            loop {
                match call.peer.recv_from(&mut inbox) {
                    Ok(_) => load.peer_received += 1,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("peer receive"),
                }
            }
        }
    }
    let end = Clocks::now()?;
    let begin = window_start.context("the run is shorter than the warm-up")?;
    load.window = Window {
        wall: end.at - begin.at,
        process: (end.process.0 + end.process.1).saturating_sub(begin.process.0 + begin.process.1),
        process_user: end.process.0.saturating_sub(begin.process.0),
        process_sys: end.process.1.saturating_sub(begin.process.1),
        generator: end.generator.saturating_sub(begin.generator),
        recorders: end
            .threads
            .recorders
            .saturating_sub(begin.threads.recorders),
        runtime: end.threads.runtime.saturating_sub(begin.threads.runtime),
        dropped_ticks: end.dropped_ticks - begin.dropped_ticks,
    };
    Ok(load)
}

/// CPU of the process's recorder and runtime threads, from `/proc`.
#[derive(Debug, Default)]
struct ThreadsCpu {
    recorders: Duration,
    runtime: Duration,
}

/// Reads `/proc/self/task/*/stat`: utime and stime of each thread, by name.
fn threads_cpu() -> anyhow::Result<ThreadsCpu> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut cpu = ThreadsCpu::default();
    for task in std::fs::read_dir("/proc/self/task").context("/proc/self/task")? {
        let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
            continue; // the thread ended
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        // After the name: state (3), ..., utime (14), stime (15).
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
        let (Some(utime), Some(stime)) = (ticks(14), ticks(15)) else {
            continue;
        };
        let time = Duration::from_secs_f64((utime + stime) as f64 / hz);
        if name.starts_with("recorder-") {
            cpu.recorders += time;
        } else if name.starts_with("hub-runtime") {
            cpu.runtime += time;
        }
    }
    Ok(cpu)
}

/// Every call left a finished recording.
fn check_recordings(recordings: &[Option<PathBuf>]) -> anyhow::Result<()> {
    for (i, recording) in recordings.iter().enumerate() {
        let path = recording
            .as_ref()
            .with_context(|| format!("call {i}: no recording"))?;
        let repaired = repair(path)?;
        ensure!(
            repaired == Repair::Complete,
            "{}: not a finished recording ({repaired:?})",
            path.display()
        );
    }
    Ok(())
}

/// The process's peak resident memory (`VmHWM`), bytes.
fn peak_rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok(kb * 1024)
}

/// The 1-minute load average, as `/proc/loadavg` says.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
