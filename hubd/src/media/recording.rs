//! Call recordings: one Ogg Opus file (RFC 7845) per call, two channels,
//! left = the SIP (agent) leg, right = the device (GSM) leg, so QA hears who
//! said what and media health can be measured per leg later.
//!
//! Each 20 ms tick both legs are resampled (rubato, [`LegResampler`]) to the
//! recording rate, interleaved and encoded as one Opus packet (libopus
//! through the `opus` crate, application VOIP). By default each leg is its
//! own mono Opus stream in that packet ([`ChannelCoding::TwoMono`], channel
//! mapping family 1), because a coupled stereo stream lets one leg bleed
//! into the other at speech bitrates. Packets go into Ogg pages
//! ([`PageWriter`]) of [`RecordingConfig::page_duration`] of audio each; a
//! closed page is written to the file at once and the file is `fdatasync`ed
//! every [`RecordingConfig::sync_interval`]. The rate, bitrate and
//! complexity and why are in `docs/recordings.md`.
//!
//! Crash safety: the two header pages are written and synced before
//! [`Recorder::create`] returns, and audio only ever goes out as whole pages,
//! so a `kill -9` leaves the headers, whole pages up to the last write, and
//! at most one page cut short. [`repair`] cuts the file after its last valid
//! page and marks that page end-of-stream; [`repair_dir`] does it at hubd's
//! start for every interrupted recording. A file that cannot be a recording
//! (no valid Opus headers) is renamed `*.broken` and reported, never deleted.
//!
//! Errors on the write side (disk full, unwritable directory) are typed
//! [`RecordingError`]s that stop the recording, never the call.
//!
//! Invariant: a page on disk is never rewritten while recording; only
//! [`repair`] rewrites one page header, the last, after truncating.
//!
//! Owns the recording file while the call lasts. A [`Recorder`] blocks on
//! file I/O (one `write` per page, one `fdatasync` per sync interval): run
//! it on a thread that may block, never on the async runtime or the voice
//! clock's thread. The hub's [`RecorderPool`] is such threads: a call gets a
//! [`RecordingHandle`] that queues its ticks without ever waiting (bounded:
//! ticks beyond the queue are dropped, counted, and recorded as lost
//! packets), and returns the same summary or first error at the end. Never
//! decodes audio and never decides whether a call is recorded (the slot's
//! policy does).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opus::{Application, Bitrate, Channels, Encoder, MSEncoder, Signal};
use tokio::sync::oneshot;
use vss_shared::SlotId;
use vss_shared::slot_fsm::CallDirection;

use crate::device::at_modem::voice::{FRAME_BYTES, Frame};
use crate::media::ogg::{self, PageReader, PageWriter, ReadError};
use crate::media::resample::{LegResampler, ResampleError};

/// File name extension of recordings.
pub const EXTENSION: &str = "opus";
/// Suffix added to a file [`repair`] found unrecoverable.
pub const BROKEN_SUFFIX: &str = ".broken";
/// Ogg Opus granule positions count 48 kHz samples, whatever the coding rate.
const GRANULE_RATE: u32 = 48_000;
/// One packet per 20 ms tick.
const FRAME_MS: u64 = 20;
/// Granule positions per packet.
const GRANULE_PER_FRAME: u64 = GRANULE_RATE as u64 * FRAME_MS / 1_000;
/// Room for one packet: libopus's recommended maximum (two streams of at
/// most 1275 bytes plus self-delimiting framing fit).
const MAX_PACKET: usize = 4_000;
/// Bytes of a page's tail read to check for a clean end.
const TAIL_LEN: u64 = ogg::MAX_PAGE_LEN as u64;

/// How recordings are encoded and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingConfig {
    /// Rate both legs are resampled to and Opus codes at: 8000, 12000,
    /// 16000, 24000 or 48000 Hz.
    pub sample_rate: u32,
    /// Target bitrate of both channels together, bit/s (VBR).
    pub bitrate_bps: i32,
    /// libopus complexity, 0 (cheapest) to 10.
    pub complexity: i32,
    /// How the two legs are coded.
    pub channel_coding: ChannelCoding,
    /// Rate the SIP leg's frames arrive at (8000 for G.711).
    pub sip_leg_hz: u32,
    /// Rate the device leg's frames arrive at (8000 for the modem's frames).
    pub device_leg_hz: u32,
    /// Audio per Ogg page; a page is written to the file when it closes, so
    /// this is what a crash can lose at most (plus the page being built).
    pub page_duration: Duration,
    /// How often written pages are made durable (`fdatasync`), in audio time.
    pub sync_interval: Duration,
}

impl Default for RecordingConfig {
    /// 16 kHz, two mono streams, 24 kbit/s, complexity 1, 8 kHz legs, 1 s
    /// pages, synced every 2 s (`docs/recordings.md` has the measurements
    /// behind them).
    fn default() -> RecordingConfig {
        RecordingConfig {
            sample_rate: 16_000,
            bitrate_bps: 24_000,
            complexity: 1,
            channel_coding: ChannelCoding::TwoMono,
            sip_leg_hz: 8_000,
            device_leg_hz: 8_000,
            page_duration: Duration::from_secs(1),
            sync_interval: Duration::from_secs(2),
        }
    }
}

impl RecordingConfig {
    fn validate(&self) -> Result<(), RecordingError> {
        let bad = |what: String| Err(RecordingError::Config(what));
        if ![8_000, 12_000, 16_000, 24_000, 48_000].contains(&self.sample_rate) {
            return bad(format!(
                "sample_rate {} Hz: Opus codes at 8000, 12000, 16000, 24000 or 48000",
                self.sample_rate
            ));
        }
        if !(6_000..=510_000).contains(&self.bitrate_bps) {
            return bad(format!(
                "bitrate {} bit/s: must be 6000..=510000",
                self.bitrate_bps
            ));
        }
        if !(0..=10).contains(&self.complexity) {
            return bad(format!("complexity {}: must be 0..=10", self.complexity));
        }
        if self.page_duration < Duration::from_millis(FRAME_MS) {
            return bad(format!(
                "page_duration {:?}: at least one 20 ms frame",
                self.page_duration
            ));
        }
        Ok(())
    }

    fn frames(duration: Duration) -> u64 {
        (duration.as_millis() as u64 / FRAME_MS).max(1)
    }
}

/// How the two legs are put into Opus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelCoding {
    /// One stereo stream (channel mapping family 0): the most widely
    /// played, but libopus codes mid/side and lets one leg bleed into the
    /// other at speech bitrates.
    Stereo,
    /// Two mono streams in one packet (channel mapping family 1, no coupled
    /// streams): each leg coded on its own, no bleed.
    TwoMono,
}

/// What a recording is of, written into its OpusTags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingMeta {
    /// The call's id (the CDR's).
    pub call_id: String,
    /// The slot that carried the call.
    pub slot: SlotId,
    /// Which way the call went.
    pub direction: CallDirection,
    /// When the recording started, Unix milliseconds (the hub's clock).
    pub started_at_ms: i64,
}

/// Which leg of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The SIP side (agent, PBX): the left channel.
    Sip,
    /// The device side (GSM): the right channel.
    Device,
}

impl std::fmt::Display for Leg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Leg::Sip => "SIP",
            Leg::Device => "device",
        })
    }
}

/// Why a recording could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The configuration cannot be used.
    #[error("invalid recording configuration: {0}")]
    Config(String),
    /// The file could not be created (directory missing or unwritable, file
    /// exists, disk full while writing the headers); nothing is left behind.
    #[error("cannot create recording {}: {source}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Writing or syncing the file failed (disk full, I/O error); the
    /// recording is stopped and the file keeps what was written before.
    #[error("cannot write recording {}: {source}; recording stopped", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// libopus failed; the recording is stopped.
    #[error("Opus encoder failed for {}: {source}; recording stopped", path.display())]
    Encoder {
        /// The file.
        path: PathBuf,
        /// libopus's reason.
        source: opus::Error,
    },
    /// A leg's frame could not be resampled (wrong length); the frame is
    /// dropped, the recording goes on.
    #[error("{leg} leg: {source}")]
    Leg {
        /// Which leg.
        leg: Leg,
        /// Why.
        source: ResampleError,
    },
    /// An earlier error stopped this recording.
    #[error("recording {} was stopped by an earlier error", path.display())]
    Stopped {
        /// The file.
        path: PathBuf,
    },
}

/// A finished recording, for the CDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    /// The file.
    pub path: PathBuf,
    /// Audio recorded, ms (20 per tick pushed).
    pub duration_ms: u64,
    /// Size of the file.
    pub bytes: u64,
}

/// Where pages go: the file, or a failing stand-in in tests.
trait Sink: Send {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
}

impl Sink for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        Write::write_all(self, bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

/// Records one call. Push one 20 ms tick of both legs at a time, then
/// [`Recorder::finish`]. A recorder dropped without `finish` finishes its
/// file on drop (errors are logged).
pub struct Recorder {
    path: PathBuf,
    sink: Box<dyn Sink>,
    encoder: LegsEncoder,
    sip: LegResampler,
    device: LegResampler,
    /// Interleaved stereo of one tick at the recording rate.
    pcm: Vec<f32>,
    packet: Vec<u8>,
    /// The packet of a tick that never reached the recorder
    /// ([`Recorder::push_lost`]).
    lost_packet: Vec<u8>,
    ogg: PageWriter,
    /// 48 kHz samples the decoder drops at the start: the encoder's
    /// lookahead plus the resampler's delay, so decoded sample 0 is the
    /// first pushed sample.
    pre_skip: u64,
    /// Silent frames encoded at the end to push the delayed audio out.
    tail_frames: u64,
    /// Ticks pushed.
    frames: u64,
    /// Packets encoded (ticks plus the tail).
    packets: u64,
    frames_per_page: u64,
    frames_per_sync: u64,
    on_page: u64,
    since_sync: u64,
    bytes: u64,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Recording,
    Stopped,
    Finished,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .field("frames", &self.frames)
            .field("bytes", &self.bytes)
            .field("state", &self.state)
            .finish()
    }
}

impl Recorder {
    /// Creates the file (it must not exist), writes and syncs the Opus
    /// headers. On error nothing is left at `path`.
    pub fn create(
        path: impl Into<PathBuf>,
        meta: &RecordingMeta,
        config: &RecordingConfig,
    ) -> Result<Recorder, RecordingError> {
        let path = path.into();
        config.validate()?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| RecordingError::Create {
                path: path.clone(),
                source,
            })?;
        match Recorder::start(path.clone(), Box::new(file), meta, config) {
            Ok(recorder) => {
                // The file's name survives a power cut too.
                if let Some(dir) = path.parent()
                    && let Ok(dir) = File::open(if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    })
                {
                    let _ = dir.sync_all();
                }
                Ok(recorder)
            }
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(match e {
                    RecordingError::Write { path, source } => {
                        RecordingError::Create { path, source }
                    }
                    other => other,
                })
            }
        }
    }

    fn start(
        path: PathBuf,
        sink: Box<dyn Sink>,
        meta: &RecordingMeta,
        config: &RecordingConfig,
    ) -> Result<Recorder, RecordingError> {
        config.validate()?;
        let encoder_error = |source| RecordingError::Encoder {
            path: path.clone(),
            source,
        };
        let mut encoder = LegsEncoder::new(config).map_err(encoder_error)?;
        let lookahead = u64::try_from(encoder.lookahead().map_err(encoder_error)?).unwrap_or(0);

        let resampler = |leg, from| {
            LegResampler::new(from, config.sample_rate)
                .map_err(|source| RecordingError::Leg { leg, source })
        };
        let sip = resampler(Leg::Sip, config.sip_leg_hz)?;
        let device = resampler(Leg::Device, config.device_leg_hz)?;
        // Both legs have the same delay when their rates are equal (8 kHz
        // today). With different leg rates the delays differ (at most half
        // a frame) and the larger one is skipped: the legs are then up to
        // 10 ms apart.
        let delay = lookahead + sip.delay().max(device.delay()) as u64;
        let scale = u64::from(GRANULE_RATE / config.sample_rate);
        let pre_skip = delay * scale;
        let frame_len = (config.sample_rate / 50) as usize;
        let tail_frames = delay.div_ceil(frame_len as u64);

        // Calls that start on the same tick (a campaign) should not all
        // write and sync on the same later tick: the first page and sync
        // come after a share of the interval set by the stream's serial.
        let serial = serial_of(meta);
        let frames_per_page = RecordingConfig::frames(config.page_duration);
        let frames_per_sync = RecordingConfig::frames(config.sync_interval);
        let mut recorder = Recorder {
            path,
            sink,
            encoder,
            sip,
            device,
            pcm: vec![0.0; 2 * frame_len],
            packet: vec![0; MAX_PACKET],
            lost_packet: Vec::new(),
            ogg: PageWriter::new(serial),
            pre_skip,
            tail_frames,
            frames: 0,
            packets: 0,
            frames_per_page,
            frames_per_sync,
            on_page: u64::from(serial) % frames_per_page,
            since_sync: u64::from(serial) % frames_per_sync,
            bytes: 0,
            state: State::Recording,
        };
        let input_hz = config.sip_leg_hz.max(config.device_leg_hz);
        let head = opus_head(
            config.channel_coding,
            u16::try_from(pre_skip).unwrap_or(u16::MAX),
            input_hz,
        );
        recorder.lost_packet = silent_packet(&head).unwrap_or_default();
        recorder.ogg.add_packet(&head, 0);
        recorder.ogg.flush_page(false);
        let tags = opus_tags(meta, config);
        recorder.ogg.add_packet(&tags, 0);
        recorder.ogg.flush_page(false);
        recorder.write_pending()?;
        recorder.sync()?;
        recorder.since_sync = u64::from(serial) % frames_per_sync;
        Ok(recorder)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Audio pushed so far, ms.
    pub fn duration_ms(&self) -> u64 {
        self.frames * FRAME_MS
    }

    /// Whether an error stopped the recording.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Records one 20 ms tick: each leg's frame at its rate (160 samples at
    /// 8 kHz), `None` for a leg that had nothing (silence).
    pub fn push(
        &mut self,
        sip_leg: Option<&[i16]>,
        device_leg: Option<&[i16]>,
    ) -> Result<(), RecordingError> {
        self.check_recording()?;
        for (leg, frame, resampler) in [
            (Leg::Sip, sip_leg, &self.sip),
            (Leg::Device, device_leg, &self.device),
        ] {
            if let Some(frame) = frame
                && frame.len() != resampler.input_len()
            {
                return Err(RecordingError::Leg {
                    leg,
                    source: ResampleError::FrameLength {
                        expected: resampler.input_len(),
                        got: frame.len(),
                    },
                });
            }
        }
        self.encode_tick(sip_leg, device_leg, None)?;
        self.frames += 1;
        Ok(())
    }

    /// [`Recorder::push`] for the device's frames (8 kHz legs only).
    pub fn push_frames(
        &mut self,
        sip_leg: Option<&Frame>,
        device_leg: Option<&Frame>,
    ) -> Result<(), RecordingError> {
        let mut sip = [0i16; FRAME_BYTES / 2];
        let mut device = [0i16; FRAME_BYTES / 2];
        let sip = sip_leg.map(|frame| frame_samples(frame, &mut sip) as &[i16]);
        let device = device_leg.map(|frame| frame_samples(frame, &mut device) as &[i16]);
        self.push(sip, device)
    }

    /// Records `ticks` 20 ms ticks that never reached the recorder (the
    /// [`RecorderPool`] fell behind and dropped them) as lost packets: a
    /// TOC byte per stream and no frame data, which decoders conceal. They
    /// cost next to nothing to write and keep the recording as long as the
    /// call.
    pub fn push_lost(&mut self, ticks: u64) -> Result<(), RecordingError> {
        self.check_recording()?;
        for _ in 0..ticks {
            self.add_packet(None, None)?;
            self.frames += 1;
        }
        Ok(())
    }

    /// Ends the recording: encodes the audio still in the resamplers and the
    /// encoder, writes the last page marked end-of-stream with the exact
    /// length, syncs.
    pub fn finish(mut self) -> Result<RecordingSummary, RecordingError> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<RecordingSummary, RecordingError> {
        self.check_recording()?;
        // The last packet's granule position says where the audio ends
        // (RFC 7845 §4.5): the decoder drops what lies beyond it.
        let end = self.pre_skip + self.frames * GRANULE_PER_FRAME;
        for i in 0..self.tail_frames {
            let last = i + 1 == self.tail_frames;
            self.encode_tick(None, None, last.then_some(end))?;
        }
        self.ogg.flush_page(true);
        self.write_pending()?;
        self.sync()?;
        self.state = State::Finished;
        Ok(RecordingSummary {
            path: self.path.clone(),
            duration_ms: self.duration_ms(),
            bytes: self.bytes,
        })
    }

    /// Stops as a `kill -9` would: no last page, no sync.
    #[cfg(test)]
    fn crash(mut self) {
        self.state = State::Finished;
    }

    fn check_recording(&self) -> Result<(), RecordingError> {
        match self.state {
            State::Recording => Ok(()),
            State::Stopped | State::Finished => Err(RecordingError::Stopped {
                path: self.path.clone(),
            }),
        }
    }

    /// Resamples, encodes and pages one tick; `granule` overrides the
    /// packet's granule position (the last packet's).
    fn encode_tick(
        &mut self,
        sip_leg: Option<&[i16]>,
        device_leg: Option<&[i16]>,
        granule: Option<u64>,
    ) -> Result<(), RecordingError> {
        let left = self
            .sip
            .process(sip_leg)
            .map_err(|source| RecordingError::Leg {
                leg: Leg::Sip,
                source,
            })?;
        let right = self
            .device
            .process(device_leg)
            .map_err(|source| RecordingError::Leg {
                leg: Leg::Device,
                source,
            })?;
        for ((pair, &l), &r) in self.pcm.chunks_exact_mut(2).zip(left).zip(right) {
            pair[0] = l;
            pair[1] = r;
        }
        let len = match self.encoder.encode(&self.pcm, &mut self.packet) {
            Ok(len) => len,
            Err(source) => {
                self.state = State::Stopped;
                return Err(RecordingError::Encoder {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        self.add_packet(Some(len), granule)
    }

    /// Puts the packet in `self.packet[..len]` (or, `None`, the lost
    /// packet) on the page, closing the page when it is full.
    fn add_packet(
        &mut self,
        len: Option<usize>,
        granule: Option<u64>,
    ) -> Result<(), RecordingError> {
        self.packets += 1;
        let packet_len = len.unwrap_or(self.lost_packet.len());
        // Whole packets on a page: close it early rather than continue a
        // packet on the next page (the repair cuts after whole pages).
        if self.ogg.buffered_segments() + packet_len / 255 + 1 > 255 {
            self.close_page()?;
        }
        let granule = granule.unwrap_or(self.packets * GRANULE_PER_FRAME);
        let packet = match len {
            Some(len) => &self.packet[..len],
            None => &self.lost_packet[..],
        };
        self.ogg.add_packet(packet, granule);
        self.on_page += 1;
        if self.on_page >= self.frames_per_page {
            self.close_page()?;
        }
        Ok(())
    }

    fn close_page(&mut self) -> Result<(), RecordingError> {
        self.ogg.flush_page(false);
        self.since_sync += self.on_page;
        self.on_page = 0;
        self.write_pending()?;
        if self.since_sync >= self.frames_per_sync {
            self.sync()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), RecordingError> {
        let pending = self.ogg.pending();
        if pending.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.sink.append(pending) {
            self.state = State::Stopped;
            return Err(RecordingError::Write {
                path: self.path.clone(),
                source,
            });
        }
        self.bytes += pending.len() as u64;
        self.ogg.clear_pending();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), RecordingError> {
        self.since_sync = 0;
        self.sink.sync().map_err(|source| {
            self.state = State::Stopped;
            RecordingError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.state == State::Recording
            && let Err(e) = self.finish_inner()
        {
            tracing::warn!(path = %self.path.display(), error = %e, "recording not finished cleanly");
        }
    }
}

// --- The recorder pool: recordings off the async runtime -----------------

/// Ticks one recording may have waiting for its recorder thread, by
/// default: 2 s of audio, one sync interval (about 700 bytes a tick, so at
/// most some 70 kB a call). Beyond it the caller's ticks are dropped and
/// counted, never waited for.
pub const DEFAULT_QUEUE_TICKS: usize = 100;
/// How long a call's end waits for its recording to be finished (the
/// queued ticks, the last page, the sync) before it goes on without the
/// summary; the recorder thread still finishes the file.
pub const FINISH_WAIT: Duration = Duration::from_secs(10);
/// How much lower the recorder threads run than the rest of hubd (a `nice`
/// increment): under CPU contention the voice path goes first and the
/// recordings' queues take up the difference.
const RECORDER_NICE: libc::c_int = 5;

/// The hub's recorder threads: they own every call's [`Recorder`], so the
/// resampling, Opus encoding, page writes and `fdatasync`s (and the file's
/// creation, which syncs too) never run on the async runtime or the voice
/// clock. A call gets a [`RecordingHandle`] from [`RecorderPool::start`]
/// and hands it one tick at a time without blocking.
///
/// Memory stays bounded: each recording may have at most `queue_ticks`
/// ticks waiting for its thread; when the thread falls behind (a disk whose
/// `fdatasync` stalls, a CPU that is short) further ticks are dropped and
/// counted ([`RecordingHandle::dropped_ticks`],
/// [`RecorderPool::dropped_ticks`]), and recorded as lost packets when the
/// thread catches up ([`Recorder::push_lost`]), so the file still lasts as
/// long as the call. One recording stays on one thread, in order.
///
/// The threads end when the pool and every handle are dropped; recordings
/// still open then are finished by [`Recorder`]'s `Drop`.
#[derive(Debug)]
pub struct RecorderPool {
    workers: Vec<std::sync::mpsc::Sender<Job>>,
    next_worker: AtomicUsize,
    next_id: AtomicU64,
    queue_ticks: usize,
    counters: Arc<PoolCounters>,
}

#[derive(Debug, Default)]
struct PoolCounters {
    active: AtomicU64,
    dropped_ticks: AtomicU64,
}

/// What a recording's handle and its thread share.
#[derive(Debug, Default)]
struct HandleState {
    /// Ticks sent and not yet recorded.
    queued: AtomicUsize,
    /// Ticks dropped because `queued` was full.
    dropped: AtomicU64,
    /// An error stopped the recording (or it was never created).
    stopped: AtomicBool,
}

/// What a recorder thread is asked to do.
enum Job {
    Start {
        id: u64,
        path: PathBuf,
        create: CreateRecorder,
        state: Arc<HandleState>,
    },
    Tick {
        id: u64,
        /// Ticks dropped just before this one.
        lost: u64,
        sip: Option<Frame>,
        device: Option<Frame>,
    },
    Finish {
        id: u64,
        lost: u64,
        reply: Option<oneshot::Sender<Result<RecordingSummary, RecordingError>>>,
    },
    /// Blocks the thread until the sender is dropped.
    #[cfg(test)]
    Stall(std::sync::mpsc::Receiver<()>),
}

type CreateRecorder = Box<dyn FnOnce() -> Result<Recorder, RecordingError> + Send>;

/// How a tick handed to [`RecordingHandle::push_frames`] fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the recorder thread.
    Queued,
    /// The recording's queue was full: dropped, counted, recorded as lost.
    Dropped,
    /// The recording was stopped by an error (or never created); nothing
    /// more is recorded. [`RecordingHandle::finish`] tells why.
    Stopped,
}

static SHARED_POOL: OnceLock<Arc<RecorderPool>> = OnceLock::new();

impl RecorderPool {
    /// A pool of `threads` recorder threads (at least one), each
    /// recording allowed `queue_ticks` ticks in waiting (at least one).
    /// Threads that cannot be spawned are logged and left out; with none,
    /// every recording fails to start (a `Create` error at finish).
    pub fn new(threads: usize, queue_ticks: usize) -> Arc<RecorderPool> {
        let counters = Arc::new(PoolCounters::default());
        let mut workers = Vec::with_capacity(threads.max(1));
        for n in 0..threads.max(1) {
            let (jobs, queue) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name(format!("recorder-{n}"))
                .spawn({
                    let counters = Arc::clone(&counters);
                    move || run_recorder_thread(&queue, &counters)
                });
            match spawned {
                Ok(_) => workers.push(jobs),
                Err(e) => tracing::error!(error = %e, "cannot start a recorder thread"),
            }
        }
        Arc::new(RecorderPool {
            workers,
            next_worker: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            queue_ticks: queue_ticks.max(1),
            counters,
        })
    }

    /// The hub's pool, started on first use: one thread per core
    /// (`available_parallelism`), [`DEFAULT_QUEUE_TICKS`] per recording.
    pub fn shared() -> Arc<RecorderPool> {
        Arc::clone(SHARED_POOL.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            RecorderPool::new(cores, DEFAULT_QUEUE_TICKS)
        }))
    }

    /// The hub's pool if a call has started it (for `/metrics`, which must
    /// not start threads).
    pub fn shared_if_started() -> Option<Arc<RecorderPool>> {
        SHARED_POOL.get().map(Arc::clone)
    }

    /// Starts recording a call into `path` ([`Recorder::create`], on a
    /// recorder thread). Never blocks; a file that cannot be created is
    /// logged there and reported by [`RecordingHandle::finish`].
    pub fn start(
        &self,
        path: impl Into<PathBuf>,
        meta: &RecordingMeta,
        config: &RecordingConfig,
    ) -> RecordingHandle {
        let path = path.into();
        let (meta, config, at) = (meta.clone(), config.clone(), path.clone());
        self.start_with(path, Box::new(move || Recorder::create(at, &meta, &config)))
    }

    fn start_with(&self, path: PathBuf, create: CreateRecorder) -> RecordingHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(HandleState::default());
        let jobs = (!self.workers.is_empty()).then(|| {
            let n = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
            self.workers[n].clone()
        });
        let jobs = jobs.filter(|jobs| {
            jobs.send(Job::Start {
                id,
                path: path.clone(),
                create,
                state: Arc::clone(&state),
            })
            .is_ok()
        });
        if jobs.is_some() {
            self.counters.active.fetch_add(1, Ordering::Relaxed);
        } else {
            state.stopped.store(true, Ordering::Relaxed);
            tracing::warn!(path = %path.display(), "call not recorded: no recorder thread");
        }
        RecordingHandle {
            id,
            path,
            jobs,
            state,
            counters: Arc::clone(&self.counters),
            queue_ticks: self.queue_ticks,
            lost: 0,
            done: false,
        }
    }

    /// Recorder threads running.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Recordings started and not yet finished.
    pub fn active(&self) -> u64 {
        self.counters.active.load(Ordering::Relaxed)
    }

    /// Ticks dropped since start, all recordings together, because a
    /// recorder thread fell behind.
    pub fn dropped_ticks(&self) -> u64 {
        self.counters.dropped_ticks.load(Ordering::Relaxed)
    }

    /// Stalls every thread until the returned senders are dropped.
    #[cfg(test)]
    fn stall(&self) -> Vec<std::sync::mpsc::Sender<()>> {
        self.workers
            .iter()
            .map(|jobs| {
                let (release, stalled) = std::sync::mpsc::channel();
                let _ = jobs.send(Job::Stall(stalled));
                release
            })
            .collect()
    }
}

/// One call's recording on a [`RecorderPool`] thread. Hand it each 20 ms
/// tick ([`RecordingHandle::push_frames`], never blocks), then
/// [`RecordingHandle::finish`]. Dropped without `finish`, the thread still
/// finishes the file.
#[derive(Debug)]
pub struct RecordingHandle {
    id: u64,
    path: PathBuf,
    /// The recording's thread; `None` when there is none.
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    state: Arc<HandleState>,
    counters: Arc<PoolCounters>,
    queue_ticks: usize,
    /// Ticks dropped since the last one queued.
    lost: u64,
    done: bool,
}

impl RecordingHandle {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ticks of this recording dropped so far (its thread fell behind).
    pub fn dropped_ticks(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    /// Whether an error stopped the recording (as far as its thread has
    /// got).
    pub fn is_stopped(&self) -> bool {
        self.state.stopped.load(Ordering::Relaxed)
    }

    /// Hands one 20 ms tick ([`Recorder::push_frames`]) to the recording's
    /// thread: copies the frames and queues them, or drops the tick when
    /// the recording already has its queue's worth waiting. Never blocks.
    pub fn push_frames(&mut self, sip_leg: Option<&Frame>, device_leg: Option<&Frame>) -> Pushed {
        let Some(jobs) = &self.jobs else {
            return Pushed::Stopped;
        };
        if self.state.stopped.load(Ordering::Relaxed) {
            return Pushed::Stopped;
        }
        if self.state.queued.load(Ordering::Acquire) >= self.queue_ticks {
            self.lost += 1;
            self.state.dropped.fetch_add(1, Ordering::Relaxed);
            self.counters.dropped_ticks.fetch_add(1, Ordering::Relaxed);
            return Pushed::Dropped;
        }
        self.state.queued.fetch_add(1, Ordering::AcqRel);
        let tick = Job::Tick {
            id: self.id,
            lost: std::mem::take(&mut self.lost),
            sip: sip_leg.cloned(),
            device: device_leg.cloned(),
        };
        if jobs.send(tick).is_err() {
            self.state.stopped.store(true, Ordering::Relaxed);
            return Pushed::Stopped;
        }
        Pushed::Queued
    }

    /// Ends the recording once its thread has recorded every queued tick
    /// ([`Recorder::finish`]). The error that stopped it, if one did (the
    /// first: `Create`, `Write`, `Encoder`); its thread has logged it.
    pub async fn finish(mut self) -> Result<RecordingSummary, RecordingError> {
        match self.send_finish() {
            Ok(reply) => reply.await.unwrap_or_else(|_| Err(self.lost_thread())),
            Err(e) => Err(e),
        }
    }

    /// [`RecordingHandle::finish`] for a thread that may block (not an
    /// async task).
    pub fn finish_blocking(mut self) -> Result<RecordingSummary, RecordingError> {
        match self.send_finish() {
            Ok(reply) => reply
                .blocking_recv()
                .unwrap_or_else(|_| Err(self.lost_thread())),
            Err(e) => Err(e),
        }
    }

    fn send_finish(
        &mut self,
    ) -> Result<oneshot::Receiver<Result<RecordingSummary, RecordingError>>, RecordingError> {
        self.done = true;
        let (reply, answer) = oneshot::channel();
        let Some(jobs) = self.jobs.take() else {
            return Err(RecordingError::Create {
                path: self.path.clone(),
                source: io::Error::other("no recorder thread"),
            });
        };
        let finish = Job::Finish {
            id: self.id,
            lost: std::mem::take(&mut self.lost),
            reply: Some(reply),
        };
        match jobs.send(finish) {
            Ok(()) => Ok(answer),
            Err(_) => Err(self.lost_thread()),
        }
    }

    /// The thread went away (it panicked).
    fn lost_thread(&self) -> RecordingError {
        RecordingError::Stopped {
            path: self.path.clone(),
        }
    }
}

impl Drop for RecordingHandle {
    fn drop(&mut self) {
        if !self.done
            && let Some(jobs) = self.jobs.take()
        {
            let _ = jobs.send(Job::Finish {
                id: self.id,
                lost: std::mem::take(&mut self.lost),
                reply: None,
            });
        }
    }
}

/// A recording on its thread.
struct Entry {
    path: PathBuf,
    recorder: Option<Recorder>,
    /// The error that stopped it, for `finish`.
    error: Option<RecordingError>,
    state: Arc<HandleState>,
}

impl Entry {
    fn stop(&mut self, error: RecordingError) {
        tracing::warn!(path = %self.path.display(), error = %error, "recording stopped; the call goes on");
        self.state.stopped.store(true, Ordering::Relaxed);
        self.recorder = None;
        self.error.get_or_insert(error);
    }
}

/// A recorder thread: runs jobs until every sender is gone.
fn run_recorder_thread(jobs: &std::sync::mpsc::Receiver<Job>, counters: &PoolCounters) {
    lower_priority();
    let mut recordings: HashMap<u64, Entry> = HashMap::new();
    while let Ok(job) = jobs.recv() {
        let id = match &job {
            Job::Start { id, .. } | Job::Tick { id, .. } | Job::Finish { id, .. } => Some(*id),
            #[cfg(test)]
            Job::Stall(_) => None,
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job(job, &mut recordings, counters);
        }));
        if run.is_err()
            && let Some(entry) = id.and_then(|id| recordings.remove(&id))
        {
            // Its handle's finish gets `Stopped`; the file is repaired at
            // next start.
            tracing::error!(path = %entry.path.display(), "recorder panicked; recording stopped");
            entry.state.stopped.store(true, Ordering::Relaxed);
            counters.active.fetch_sub(1, Ordering::Relaxed);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(entry)));
        }
    }
}

fn run_job(job: Job, recordings: &mut HashMap<u64, Entry>, counters: &PoolCounters) {
    match job {
        Job::Start {
            id,
            path,
            create,
            state,
        } => {
            let mut entry = Entry {
                path,
                recorder: None,
                error: None,
                state,
            };
            match create() {
                Ok(recorder) => entry.recorder = Some(recorder),
                Err(e) => {
                    tracing::warn!(path = %entry.path.display(), error = %e, "call not recorded");
                    entry.state.stopped.store(true, Ordering::Relaxed);
                    entry.error = Some(e);
                }
            }
            recordings.insert(id, entry);
        }
        Job::Tick {
            id,
            lost,
            sip,
            device,
        } => {
            let Some(entry) = recordings.get_mut(&id) else {
                return;
            };
            if let Some(recorder) = entry.recorder.as_mut() {
                let pushed = recorder
                    .push_lost(lost)
                    .and_then(|()| recorder.push_frames(sip.as_ref(), device.as_ref()));
                match pushed {
                    Ok(()) => {}
                    // That tick only; the recording goes on.
                    Err(e @ RecordingError::Leg { .. }) => {
                        tracing::debug!(path = %entry.path.display(), error = %e, "tick not recorded");
                    }
                    Err(e) => entry.stop(e),
                }
            }
            entry.state.queued.fetch_sub(1, Ordering::AcqRel);
        }
        Job::Finish { id, lost, reply } => {
            let Some(mut entry) = recordings.remove(&id) else {
                return;
            };
            let result = match entry.recorder.take() {
                Some(mut recorder) => recorder.push_lost(lost).and_then(|()| recorder.finish()),
                None => Err(entry.error.take().unwrap_or(RecordingError::Stopped {
                    path: entry.path.clone(),
                })),
            };
            counters.active.fetch_sub(1, Ordering::Relaxed);
            let dropped = entry.state.dropped.load(Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    path = %entry.path.display(),
                    dropped_ticks = dropped,
                    "recording has lost ticks: its recorder thread fell behind"
                );
            }
            // Nobody waiting (a dropped handle, a caller that gave up):
            // an error not logged yet is logged here.
            let unheard = match reply {
                Some(reply) => reply.send(result).err(),
                None => Some(result),
            };
            if let Some(Err(e)) = unheard
                && entry.error.is_none()
            {
                tracing::warn!(path = %entry.path.display(), error = %e, "recording not finished cleanly");
            }
        }
        #[cfg(test)]
        Job::Stall(until) => {
            let _ = until.recv();
        }
    }
}

/// Lowers the calling thread's priority by [`RECORDER_NICE`] (Linux: the
/// nice value is per thread). Best effort.
fn lower_priority() {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    // SAFETY: plain syscalls on this thread's id; errors are ignored.
    unsafe {
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        if *libc::__errno_location() == 0 {
            libc::setpriority(libc::PRIO_PROCESS, tid, (current + RECORDER_NICE).min(19));
        }
    }
}

impl RecordingError {
    /// Whether the recording's file exists after this error: it does
    /// unless the recording could not be created (`Config`, `Create`).
    pub fn file_kept(&self) -> bool {
        !matches!(
            self,
            RecordingError::Config(_) | RecordingError::Create { .. }
        )
    }
}

/// The 160 samples of a device frame (little-endian `i16`).
fn frame_samples<'a>(
    frame: &Frame,
    out: &'a mut [i16; FRAME_BYTES / 2],
) -> &'a [i16; FRAME_BYTES / 2] {
    for (sample, bytes) in out.iter_mut().zip(frame.chunks_exact(2)) {
        *sample = i16::from_le_bytes([bytes[0], bytes[1]]);
    }
    out
}

/// The Ogg stream serial: a hash of the call id and start time (stable,
/// no randomness needed; one stream per file).
fn serial_of(meta: &RecordingMeta) -> u32 {
    // FNV-1a.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in meta.call_id.bytes().chain(meta.started_at_ms.to_le_bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The identification header (RFC 7845 §5.1): two channels, left = SIP,
/// right = device.
fn opus_head(coding: ChannelCoding, pre_skip: u16, input_hz: u32) -> Vec<u8> {
    let mut head = Vec::with_capacity(23);
    head.extend_from_slice(b"OpusHead");
    head.push(1); // version
    head.push(2); // channels
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&input_hz.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    match coding {
        // Family 0: one stereo stream, left and right.
        ChannelCoding::Stereo => head.push(0),
        // Family 1 (Vorbis order; for two channels: left, right), two
        // streams, none coupled, channel 0 from stream 0, 1 from stream 1.
        ChannelCoding::TwoMono => head.extend_from_slice(&[1, 2, 0, 0, 1]),
    }
    head
}

/// The encoder of both legs.
enum LegsEncoder {
    Stereo(Encoder),
    TwoMono(MSEncoder),
}

impl LegsEncoder {
    fn new(config: &RecordingConfig) -> Result<LegsEncoder, opus::Error> {
        let rate = config.sample_rate;
        let bitrate = Bitrate::Bits(config.bitrate_bps);
        Ok(match config.channel_coding {
            ChannelCoding::Stereo => {
                let mut encoder = Encoder::new(rate, Channels::Stereo, Application::Voip)?;
                encoder.set_bitrate(bitrate)?;
                encoder.set_complexity(config.complexity)?;
                encoder.set_signal(Signal::Voice)?;
                // Never fold the two legs into one channel to save bits.
                encoder.set_force_channels(Some(Channels::Stereo))?;
                // A mono downmix of the file must not cancel.
                encoder.set_phase_inversion_disabled(true)?;
                LegsEncoder::Stereo(encoder)
            }
            ChannelCoding::TwoMono => {
                let mut encoder = MSEncoder::new(rate, 2, 0, &[0, 1], Application::Voip)?;
                encoder.set_bitrate(bitrate)?;
                encoder.set_complexity(config.complexity)?;
                encoder.set_signal(Signal::Voice)?;
                LegsEncoder::TwoMono(encoder)
            }
        })
    }

    fn lookahead(&mut self) -> Result<i32, opus::Error> {
        match self {
            LegsEncoder::Stereo(e) => e.get_lookahead(),
            LegsEncoder::TwoMono(e) => e.get_lookahead(),
        }
    }

    /// Encodes one tick of interleaved left/right samples.
    fn encode(&mut self, pcm: &[f32], packet: &mut [u8]) -> Result<usize, opus::Error> {
        match self {
            LegsEncoder::Stereo(e) => e.encode_float(pcm, packet),
            LegsEncoder::TwoMono(e) => e.encode_float(pcm, packet),
        }
    }
}

/// The comment header (RFC 7845 §5.2).
fn opus_tags(meta: &RecordingMeta, config: &RecordingConfig) -> Vec<u8> {
    let vendor = format!("hubd {} ({})", env!("CARGO_PKG_VERSION"), opus::version());
    let started = rfc3339_utc(meta.started_at_ms);
    let direction = match meta.direction {
        CallDirection::Outbound => "outbound",
        CallDirection::Inbound => "inbound",
    };
    let comments = [
        format!("VSS_CALL_ID={}", meta.call_id),
        format!("VSS_SLOT={}", meta.slot),
        format!("VSS_DIRECTION={direction}"),
        format!("VSS_STARTED={started}"),
        "VSS_LEFT=sip".to_owned(),
        "VSS_RIGHT=device".to_owned(),
        format!(
            "VSS_ENCODING={} Hz, {} bit/s, complexity {}",
            config.sample_rate, config.bitrate_bps, config.complexity
        ),
        format!("DATE={started}"),
    ];
    let mut tags = Vec::with_capacity(256);
    tags.extend_from_slice(b"OpusTags");
    push_string(&mut tags, &vendor);
    tags.extend_from_slice(&(comments.len() as u32).to_le_bytes());
    for comment in &comments {
        push_string(&mut tags, comment);
    }
    tags
}

fn push_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339_utc(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let of_day = ms.rem_euclid(86_400_000);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1_000 % 60,
        of_day % 1_000
    )
}

/// Why a file could not be repaired.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// Reading, truncating or rewriting the file failed; it is left as it was
    /// (or truncated, and a later repair finishes the job).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not an Ogg Opus recording with valid headers; nothing
    /// can be saved from it.
    #[error("{}: not a recoverable Ogg Opus file: {reason}", path.display())]
    NotOpus {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What [`repair`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// The file ends with a whole end-of-stream page: nothing to do.
    Complete,
    /// The file was cut after its last valid page, which was marked
    /// end-of-stream.
    Truncated {
        /// Bytes kept.
        kept_bytes: u64,
        /// Bytes cut off (a page cut short by the crash).
        dropped_bytes: u64,
        /// Audio the file now holds, ms.
        duration_ms: u64,
    },
}

/// Makes an interrupted recording playable: keeps the Opus headers and every
/// whole, CRC-valid audio page up to the first bad or cut-short one, cuts
/// the rest and marks the last kept page end-of-stream. Idempotent: a crash
/// during the repair is repaired again next time.
pub fn repair(path: &Path) -> Result<Repair, RepairError> {
    let io_error = |source| RepairError::Io {
        path: path.to_owned(),
        source,
    };
    let not_opus = |reason: String| RepairError::NotOpus {
        path: path.to_owned(),
        reason,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();

    // Fast path: a finished recording ends with a whole EOS page.
    let tail_start = len.saturating_sub(TAIL_LEN);
    file.seek(SeekFrom::Start(tail_start)).map_err(io_error)?;
    let mut tail = Vec::with_capacity((len - tail_start) as usize);
    (&mut file)
        .take(TAIL_LEN)
        .read_to_end(&mut tail)
        .map_err(io_error)?;
    if let Some((_, page)) = ogg::last_page_ending_at_end(&tail)
        && page.is_eos()
    {
        return Ok(Repair::Complete);
    }

    // Walk the pages from the start.
    file.seek(SeekFrom::Start(0)).map_err(io_error)?;
    let mut reader = PageReader::new(io::BufReader::new(&mut file));
    let mut pre_skip = 0u64;
    let mut serial = 0u32;
    let mut silence = Vec::new();
    let mut tags_sequence = 0u32;
    // (offset, length, granule) of the last page worth keeping.
    let mut keep: Option<(u64, usize, u64)> = None;
    let mut index = 0u64;
    loop {
        let (offset, page) = match reader.next_page() {
            Ok(Some(found)) => found,
            Ok(None) => break,
            Err(ReadError::Io(e)) => return Err(io_error(e)),
            Err(ReadError::Invalid { offset, error }) => {
                if index < 2 {
                    return Err(not_opus(format!(
                        "header page {index} at byte {offset}: {error}"
                    )));
                }
                break;
            }
        };
        match index {
            0 => {
                if !page.is_bos() || page.body.len() < 19 || !page.body.starts_with(b"OpusHead") {
                    return Err(not_opus("first page is not an OpusHead".to_owned()));
                }
                pre_skip = u64::from(u16::from_le_bytes([page.body[10], page.body[11]]));
                serial = page.serial;
                silence = silent_packet(page.body).ok_or_else(|| {
                    not_opus("OpusHead has an unknown channel mapping".to_owned())
                })?;
            }
            1 => {
                if page.serial != serial || !page.body.starts_with(b"OpusTags") {
                    return Err(not_opus("second page is not the OpusTags".to_owned()));
                }
                keep = Some((offset, page.len(), 0));
                tags_sequence = page.sequence;
            }
            _ => {
                if page.serial != serial {
                    break;
                }
                // A page on which no packet ends cannot end a stream.
                if page.granule != ogg::NO_GRANULE {
                    keep = Some((offset, page.len(), page.granule));
                }
                if page.is_eos() {
                    break;
                }
            }
        }
        index += 1;
    }
    drop(reader);
    let Some((offset, page_len, granule)) = keep else {
        return Err(not_opus("no OpusTags page".to_owned()));
    };
    let kept = offset + page_len as u64;

    let mut page = vec![0u8; page_len];
    file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
    file.read_exact(&mut page).map_err(io_error)?;
    if kept == len && ogg::parse_page(&page).is_ok_and(|p| p.is_eos()) {
        return Ok(Repair::Complete);
    }
    file.set_len(kept).map_err(io_error)?;
    let mut granule = granule;
    if granule == 0 {
        // Cut before the first audio page: the headers alone are an empty
        // stream that players reject, so add an EOS page of silent packets
        // covering the pre-skip.
        let mut writer = PageWriter::continuing(serial, tags_sequence.wrapping_add(1));
        let packets = pre_skip.div_ceil(GRANULE_PER_FRAME).max(1);
        for n in 1..=packets {
            writer.add_packet(&silence, n * GRANULE_PER_FRAME);
        }
        writer.flush_page(true);
        granule = packets * GRANULE_PER_FRAME;
        file.seek(SeekFrom::Start(kept)).map_err(io_error)?;
        file.write_all(writer.pending()).map_err(io_error)?;
    } else {
        ogg::mark_eos(&mut page).map_err(|e| not_opus(format!("last page: {e}")))?;
        file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
        file.write_all(&page[..ogg::HEADER_LEN]).map_err(io_error)?;
    }
    file.sync_all().map_err(io_error)?;
    let kept = file.metadata().map_err(io_error)?.len();
    let samples = granule.saturating_sub(pre_skip);
    Ok(Repair::Truncated {
        kept_bytes: kept,
        dropped_bytes: len.saturating_sub(kept),
        duration_ms: samples * 1_000 / u64::from(GRANULE_RATE),
    })
}

/// One 20 ms Opus packet that decodes to silence for the stream `head`
/// (an OpusHead) describes: per stream, a TOC byte for SILK wideband 20 ms
/// (mono or stereo) and no frame data, which a decoder treats as a lost
/// frame (silence at the start of a stream). All but the last stream are
/// self-delimited (RFC 6716 Appendix B), so they carry a zero length byte.
fn silent_packet(head: &[u8]) -> Option<Vec<u8>> {
    const SILK_WB_20MS: u8 = 9 << 3;
    const STEREO: u8 = 1 << 2;
    let (streams, coupled) = match head.get(18)? {
        0 => (1, usize::from(head.get(9)? == &2)),
        _ => (usize::from(*head.get(19)?), usize::from(*head.get(20)?)),
    };
    if streams == 0 || coupled > streams {
        return None;
    }
    let mut packet = Vec::with_capacity(2 * streams);
    for stream in 0..streams {
        let toc = SILK_WB_20MS | if stream < coupled { STEREO } else { 0 };
        packet.push(toc);
        if stream + 1 < streams {
            packet.push(0);
        }
    }
    Some(packet)
}

/// What [`repair_dir`] found for one file.
#[derive(Debug)]
pub enum RepairOutcome {
    /// Finished cleanly; untouched.
    Complete {
        /// The file.
        path: PathBuf,
    },
    /// Interrupted and repaired.
    Repaired {
        /// The file.
        path: PathBuf,
        /// Audio it now holds, ms.
        duration_ms: u64,
        /// Bytes cut off.
        dropped_bytes: u64,
    },
    /// Unrecoverable; renamed to `moved_to` (`*.broken`) so it is kept for
    /// a person to look at and not retried at every start.
    Broken {
        /// Where the file was.
        path: PathBuf,
        /// Where it is now (`path` itself when the rename failed).
        moved_to: PathBuf,
        /// Why it cannot be repaired.
        error: RepairError,
    },
    /// Could not be read or written (permissions, I/O); left in place.
    Failed {
        /// The file.
        path: PathBuf,
        /// Why.
        error: RepairError,
    },
}

/// Repairs every `*.opus` file under `dir` (recursively, symlinks not
/// followed). Call it at hubd's start, before any [`Recorder`] runs: a file
/// being recorded looks interrupted. An unreadable directory gives one
/// `Failed` outcome for it.
pub fn repair_dir(dir: &Path) -> Vec<RepairOutcome> {
    let mut outcomes = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(source) => {
                outcomes.push(RepairOutcome::Failed {
                    path: dir.clone(),
                    error: RepairError::Io { path: dir, source },
                });
                continue;
            }
        };
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == EXTENSION) {
                files.push(path);
            }
        }
        files.sort();
        for path in files {
            outcomes.push(match repair(&path) {
                Ok(Repair::Complete) => RepairOutcome::Complete { path },
                Ok(Repair::Truncated {
                    duration_ms,
                    dropped_bytes,
                    ..
                }) => RepairOutcome::Repaired {
                    path,
                    duration_ms,
                    dropped_bytes,
                },
                Err(error @ RepairError::NotOpus { .. }) => {
                    let mut moved_to = path.clone().into_os_string();
                    moved_to.push(BROKEN_SUFFIX);
                    let moved_to = PathBuf::from(moved_to);
                    let moved_to = match fs::rename(&path, &moved_to) {
                        Ok(()) => moved_to,
                        Err(_) => path.clone(),
                    };
                    RepairOutcome::Broken {
                        path,
                        moved_to,
                        error,
                    }
                }
                Err(error) => RepairOutcome::Failed { path, error },
            });
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;
    use std::process::Command;

    /// Rate the tests decode at.
    const DECODE_HZ: u32 = 16_000;

    fn meta() -> RecordingMeta {
        RecordingMeta {
            call_id: "call-7f3a".to_owned(),
            slot: SlotId::new(6001).expect("slot id"),
            direction: CallDirection::Outbound,
            started_at_ms: 1_795_530_225_123,
        }
    }

    /// Fast pages so the crash tests have several: 200 ms pages, synced
    /// every 400 ms.
    fn config() -> RecordingConfig {
        RecordingConfig {
            page_duration: Duration::from_millis(200),
            sync_interval: Duration::from_millis(400),
            ..RecordingConfig::default()
        }
    }

    /// One leg: tick `tick`'s 160 samples of a sine at `hz` (8 kHz).
    fn tone(hz: f64, tick: usize) -> Vec<i16> {
        (0..160)
            .map(|i| {
                let t = (tick * 160 + i) as f64 / 8_000.0;
                (8_000.0 * (2.0 * PI * hz * t).sin()).round() as i16
            })
            .collect()
    }

    /// Records `ticks` ticks of 1 kHz on the SIP leg and 440 Hz on the
    /// device leg.
    fn record_tones(recorder: &mut Recorder, ticks: usize) {
        for tick in 0..ticks {
            let sip = tone(1_000.0, tick);
            let device = tone(440.0, tick);
            recorder
                .push(Some(&sip), Some(&device))
                .expect("push a tick");
        }
    }

    fn tool(name: &str) -> Command {
        Command::new(name)
    }

    /// Decodes with the real `opusdec` at 16 kHz; (left, right) samples.
    fn opusdec(path: &Path) -> (Vec<f64>, Vec<f64>) {
        let raw = path.with_extension("raw");
        let output = tool("opusdec")
            .args(["--quiet", "--rate", &DECODE_HZ.to_string()])
            .arg(path)
            .arg(&raw)
            .output()
            .expect("run opusdec (Debian package opus-tools)");
        assert!(
            output.status.success(),
            "opusdec {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let bytes = fs::read(&raw).expect("decoded audio");
        let samples: Vec<f64> = bytes
            .chunks_exact(2)
            .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])))
            .collect();
        let left = samples.iter().step_by(2).copied().collect();
        let right = samples.iter().skip(1).step_by(2).copied().collect();
        (left, right)
    }

    /// `opusinfo`'s report; panics when it reports an error or warning.
    fn opusinfo(path: &Path) -> String {
        let output = tool("opusinfo")
            .arg(path)
            .output()
            .expect("run opusinfo (Debian package opus-tools)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "opusinfo failed:\n{text}");
        let lower = text.to_lowercase();
        assert!(
            !lower.contains("warning") && !lower.contains("error"),
            "opusinfo complains:\n{text}"
        );
        text
    }

    /// Amplitude of `samples` at `hz` (Goertzel; a sine of amplitude A gives
    /// about A).
    fn amplitude_at(samples: &[f64], hz: f64) -> f64 {
        let w = 2.0 * PI * hz / f64::from(DECODE_HZ);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in samples {
            let s = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        2.0 * (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0).sqrt() / samples.len() as f64
    }

    /// The strongest frequency in 100..=3900 Hz, to 1 Hz.
    fn dominant_hz(samples: &[f64]) -> f64 {
        let best = |from: i32, to: i32, step: usize| {
            (from..=to)
                .step_by(step)
                .map(f64::from)
                .max_by(|&a, &b| amplitude_at(samples, a).total_cmp(&amplitude_at(samples, b)))
                .unwrap_or(0.0)
        };
        let coarse = best(100, 3_900, 10) as i32;
        best(coarse - 10, coarse + 10, 1)
    }

    /// Checks one channel holds `hz` (within 3 Hz) and hardly any of `other`.
    fn assert_channel(name: &str, samples: &[f64], hz: f64, other: f64) {
        // Skip 100 ms of onset.
        let steady = &samples[(DECODE_HZ / 10) as usize..];
        let found = dominant_hz(steady);
        assert!(
            (found - hz).abs() <= 3.0,
            "{name}: dominant {found} Hz, expected {hz} Hz"
        );
        let own = amplitude_at(steady, hz);
        let leak = amplitude_at(steady, other);
        assert!(own > 4_000.0, "{name}: {hz} Hz at amplitude {own:.0} only");
        assert!(
            leak < own / 30.0,
            "{name}: the other leg's {other} Hz at {leak:.0} vs {own:.0}"
        );
    }

    #[test]
    fn two_legs_decode_with_opusdec_to_their_tones_and_length() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("call.opus");
        let mut recorder = Recorder::create(&path, &meta(), &config()).expect("create");
        record_tones(&mut recorder, 150); // 3 s
        let summary = recorder.finish().expect("finish");
        assert_eq!(summary.duration_ms, 3_000);
        assert_eq!(
            summary.bytes,
            fs::metadata(&path).expect("file").len(),
            "summary bytes"
        );

        let info = opusinfo(&path);
        assert!(info.contains("VSS_CALL_ID=call-7f3a"), "{info}");
        assert!(info.contains("VSS_SLOT=6001"), "{info}");
        assert!(
            info.contains("VSS_STARTED=2026-11-24T14:23:45.123Z"),
            "{info}"
        );
        assert!(info.contains("Channels: 2"), "{info}");

        let (left, right) = opusdec(&path);
        assert_eq!(left.len(), right.len());
        // End trimming and pre-skip make it exact; allow a frame.
        let expected = 3 * DECODE_HZ as usize;
        assert!(
            left.len().abs_diff(expected) <= 320,
            "decoded {} samples, expected {expected}",
            left.len()
        );
        assert_channel("left (SIP)", &left, 1_000.0, 440.0);
        assert_channel("right (device)", &right, 440.0, 1_000.0);
        assert!(repair(&path).expect("repair") == Repair::Complete);
    }

    #[test]
    fn a_missing_leg_is_silence_and_device_frames_are_accepted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("one-leg.opus");
        let mut recorder = Recorder::create(&path, &meta(), &config()).expect("create");
        for tick in 0..100 {
            let mut frame: Frame = Box::new([0; FRAME_BYTES]);
            for (bytes, sample) in frame.chunks_exact_mut(2).zip(tone(440.0, tick)) {
                bytes.copy_from_slice(&sample.to_le_bytes());
            }
            recorder.push_frames(None, Some(&frame)).expect("push");
        }
        // A frame of the wrong length is refused; the recording goes on.
        assert!(matches!(
            recorder.push(Some(&[0; 100]), None),
            Err(RecordingError::Leg { leg: Leg::Sip, .. })
        ));
        recorder.finish().expect("finish");
        opusinfo(&path);
        let (left, right) = opusdec(&path);
        let steady = (DECODE_HZ / 10) as usize;
        let left_peak = left[steady..].iter().fold(0.0f64, |m, s| m.max(s.abs()));
        assert!(left_peak < 300.0, "silent leg peaks at {left_peak}");
        assert_channel("right (device)", &right, 440.0, 1_000.0);
    }

    #[test]
    fn an_empty_recording_is_a_valid_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("empty.opus");
        let recorder = Recorder::create(&path, &meta(), &config()).expect("create");
        let summary = recorder.finish().expect("finish");
        assert_eq!(summary.duration_ms, 0);
        opusinfo(&path);
        let (left, _) = opusdec(&path);
        assert!(left.len() <= 320, "{} samples", left.len());
    }

    /// Where each page of `bytes` ends.
    fn page_ends(bytes: &[u8]) -> Vec<u64> {
        pages(bytes).into_iter().map(|(end, _)| end).collect()
    }

    /// (end, granule position) of each page of `bytes`.
    fn pages(bytes: &[u8]) -> Vec<(u64, u64)> {
        let mut reader = PageReader::new(bytes);
        let mut pages = Vec::new();
        while let Ok(Some((offset, page))) = reader.next_page() {
            pages.push((offset + page.len() as u64, page.granule));
        }
        pages
    }

    #[test]
    fn a_file_cut_by_a_crash_is_repaired_to_its_whole_pages() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("crashed.opus");
        let mut recorder = Recorder::create(&path, &meta(), &config()).expect("create");
        record_tones(&mut recorder, 100); // 2 s: ten 200 ms pages written
        recorder.crash();
        let full = fs::read(&path).expect("file");
        let pages = pages(&full);
        let ends: Vec<u64> = pages.iter().map(|&(end, _)| end).collect();
        assert_eq!(ends.len(), 2 + 10, "headers and ten audio pages");

        // Cut points from a seeded generator, plus the edges: right after
        // the headers and on a page boundary.
        let mut seed = 0x2545_f491_u64;
        let mut cuts = vec![ends[1], ends[5], ends[5] + 1];
        for _ in 0..4 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            cuts.push(ends[1] + 1 + (seed >> 33) % (full.len() as u64 - ends[1] - 1));
        }
        for cut in cuts {
            fs::write(&path, &full[..cut as usize]).expect("write the cut file");
            let whole_audio_pages = ends[2..].iter().filter(|&&end| end <= cut).count() as u64;
            let result = repair(&path).expect("repair");
            let Repair::Truncated {
                kept_bytes,
                duration_ms,
                ..
            } = result
            else {
                panic!("cut at {cut}: {result:?}");
            };
            assert_eq!(kept_bytes, fs::metadata(&path).expect("file").len());
            if whole_audio_pages == 0 {
                // The headers and one page of silence added by the repair.
                let silent_page = kept_bytes - ends[1];
                assert!(
                    (28..64).contains(&silent_page),
                    "cut at {cut}: {silent_page}"
                );
            } else {
                assert_eq!(
                    kept_bytes,
                    ends[1 + whole_audio_pages as usize],
                    "cut at {cut}"
                );
            }
            // Audio up to the end of the last whole page; the pre-skip
            // (~17 ms) comes off it.
            let flushed_ms = match whole_audio_pages {
                0 => 0,
                n => pages[1 + n as usize].1 * 1_000 / 48_000,
            };
            // A cut before the first audio page leaves one silent packet.
            assert!(
                duration_ms <= flushed_ms.max(20) && duration_ms + 20 >= flushed_ms,
                "cut at {cut}: {duration_ms} ms, expected about {flushed_ms}"
            );
            assert_eq!(repair(&path).expect("again"), Repair::Complete);
            opusinfo(&path);
            let (left, right) = opusdec(&path);
            let decoded_ms = left.len() as u64 * 1_000 / u64::from(DECODE_HZ);
            assert!(
                decoded_ms.abs_diff(duration_ms) <= 40,
                "cut at {cut}: decoded {decoded_ms} ms, repair says {duration_ms}"
            );
            if flushed_ms >= 600 {
                assert_channel("left after repair", &left, 1_000.0, 440.0);
                assert_channel("right after repair", &right, 440.0, 1_000.0);
            }
        }
    }

    #[test]
    fn garbage_is_an_error_and_repair_dir_moves_it_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let garbage = dir.path().join("garbage.opus");
        fs::write(
            &garbage,
            b"RIFF\x24\x00\x00\x00WAVEfmt this is not a recording",
        )
        .expect("write");
        assert!(matches!(repair(&garbage), Err(RepairError::NotOpus { .. })));
        let empty = dir.path().join("empty.opus");
        fs::write(&empty, b"").expect("write");
        assert!(matches!(repair(&empty), Err(RepairError::NotOpus { .. })));

        // Cut inside the OpusTags page: the headers are not whole.
        let cut = dir.path().join("sub").join("cut-in-headers.opus");
        fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let mut recorder = Recorder::create(&cut, &meta(), &config()).expect("create");
        record_tones(&mut recorder, 20);
        recorder.crash();
        let bytes = fs::read(&cut).expect("file");
        let ends = page_ends(&bytes);
        fs::write(&cut, &bytes[..ends[0] as usize + 30]).expect("cut");

        // A finished and an interrupted one beside them.
        let done = dir.path().join("done.opus");
        let mut recorder = Recorder::create(&done, &meta(), &config()).expect("create");
        record_tones(&mut recorder, 20);
        recorder.finish().expect("finish");
        let done_bytes = fs::read(&done).expect("file");
        let interrupted = dir.path().join("interrupted.opus");
        let mut recorder = Recorder::create(&interrupted, &meta(), &config()).expect("create");
        record_tones(&mut recorder, 30);
        recorder.crash();
        let other = dir.path().join("notes.txt");
        fs::write(&other, b"not a recording, not touched").expect("write");

        let outcomes = repair_dir(dir.path());
        let mut summary: Vec<String> = outcomes
            .iter()
            .map(|o| match o {
                RepairOutcome::Complete { path } => format!("complete {}", name(path)),
                RepairOutcome::Repaired {
                    path, duration_ms, ..
                } => {
                    // 600 ms pushed, 200 ms pages, the first one shorter.
                    assert!((300..=600).contains(duration_ms), "{duration_ms} ms");
                    format!("repaired {}", name(path))
                }
                RepairOutcome::Broken { path, moved_to, .. } => {
                    format!("broken {} -> {}", name(path), name(moved_to))
                }
                RepairOutcome::Failed { path, error } => format!("failed {} {error}", name(path)),
            })
            .collect();
        summary.sort();
        assert_eq!(
            summary,
            vec![
                "broken cut-in-headers.opus -> cut-in-headers.opus.broken",
                "broken empty.opus -> empty.opus.broken",
                "broken garbage.opus -> garbage.opus.broken",
                "complete done.opus",
                "repaired interrupted.opus",
            ]
        );
        assert_eq!(fs::read(&done).expect("file"), done_bytes, "untouched");
        assert!(dir.path().join("garbage.opus.broken").exists());
        assert!(other.exists());
        // A second pass finds nothing left to do.
        let again = repair_dir(dir.path());
        assert_eq!(again.len(), 2, "{again:?}");
        assert!(
            again
                .iter()
                .all(|o| matches!(o, RepairOutcome::Complete { .. }))
        );
    }

    fn name(path: &Path) -> String {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn an_unwritable_place_is_a_create_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("no-such-dir").join("call.opus");
        assert!(matches!(
            Recorder::create(&missing, &meta(), &config()),
            Err(RecordingError::Create { .. })
        ));
        let file = dir.path().join("a-file");
        fs::write(&file, b"x").expect("write");
        assert!(matches!(
            Recorder::create(file.join("call.opus"), &meta(), &config()),
            Err(RecordingError::Create { .. })
        ));
        // An existing recording is never overwritten.
        let existing = dir.path().join("existing.opus");
        fs::write(&existing, b"keep me").expect("write");
        assert!(matches!(
            Recorder::create(&existing, &meta(), &config()),
            Err(RecordingError::Create { .. })
        ));
        assert_eq!(fs::read(&existing).expect("file"), b"keep me");
        // A read-only directory (root ignores the mode, so only as a user).
        if unsafe { libc::geteuid() } != 0 {
            use std::os::unix::fs::PermissionsExt;
            let ro = dir.path().join("ro");
            fs::create_dir(&ro).expect("mkdir");
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).expect("chmod");
            assert!(matches!(
                Recorder::create(ro.join("call.opus"), &meta(), &config()),
                Err(RecordingError::Create { .. })
            ));
        }
        let bad = RecordingConfig {
            sample_rate: 44_100,
            ..config()
        };
        assert!(matches!(
            Recorder::create(dir.path().join("x.opus"), &meta(), &bad),
            Err(RecordingError::Config(_))
        ));
        assert!(!dir.path().join("x.opus").exists());
    }

    /// A disk that fills up after `room` bytes.
    struct FillingDisk {
        room: usize,
    }

    impl Sink for FillingDisk {
        fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
            if bytes.len() > self.room {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.room -= bytes.len();
            Ok(())
        }

        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_stops_the_recording_with_a_typed_error() {
        let full = OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        assert!(matches!(
            Recorder::start(
                PathBuf::from("/dev/full"),
                Box::new(full),
                &meta(),
                &config()
            ),
            Err(RecordingError::Write { .. })
        ));

        let disk = Box::new(FillingDisk { room: 2_000 });
        let mut recorder = Recorder::start(PathBuf::from("filling.opus"), disk, &meta(), &config())
            .expect("headers fit");
        let mut first_error = None;
        for tick in 0..500 {
            let sip = tone(1_000.0, tick);
            if let Err(e) = recorder.push(Some(&sip), None) {
                first_error = Some(e);
                break;
            }
        }
        assert!(
            matches!(first_error, Some(RecordingError::Write { ref source, .. }) if source.raw_os_error() == Some(libc::ENOSPC)),
            "{first_error:?}"
        );
        assert!(recorder.is_stopped());
        assert!(matches!(
            recorder.push(None, None),
            Err(RecordingError::Stopped { .. })
        ));
        assert!(matches!(
            recorder.finish(),
            Err(RecordingError::Stopped { .. })
        ));
    }

    #[test]
    fn start_times_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_utc(1_795_530_225_123), "2026-11-24T14:23:45.123Z");
    }

    /// `tick`'s frame of a sine at `hz` on an 8 kHz leg.
    fn tone_frame(hz: f64, tick: usize) -> Frame {
        let mut frame: Frame = Box::new([0; FRAME_BYTES]);
        for (bytes, sample) in frame.chunks_exact_mut(2).zip(tone(hz, tick)) {
            bytes.copy_from_slice(&sample.to_le_bytes());
        }
        frame
    }

    /// Pushes `ticks` ticks of 1 kHz (SIP) and 440 Hz (device) from tick
    /// `from` on; how each fared.
    fn push_tones(handle: &mut RecordingHandle, from: usize, ticks: usize) -> Vec<Pushed> {
        (from..from + ticks)
            .map(|tick| {
                handle.push_frames(
                    Some(&tone_frame(1_000.0, tick)),
                    Some(&tone_frame(440.0, tick)),
                )
            })
            .collect()
    }

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_pool_records_ticks_off_the_caller_into_a_file_opusdec_decodes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pooled.opus");
        let pool = RecorderPool::new(2, 200);
        assert_eq!(pool.threads(), 2);
        let mut handle = pool.start(&path, &meta(), &config());
        assert_eq!(handle.path(), path);
        let pushed = push_tones(&mut handle, 0, 150); // 3 s
        assert!(pushed.iter().all(|p| *p == Pushed::Queued), "{pushed:?}");
        assert_eq!(pool.active(), 1);
        let summary = handle.finish_blocking().expect("finish");
        assert_eq!(summary.path, path);
        assert_eq!(summary.duration_ms, 3_000);
        assert_eq!(pool.active(), 0);
        assert_eq!(pool.dropped_ticks(), 0);
        opusinfo(&path);
        let (left, right) = opusdec(&path);
        assert!(
            left.len().abs_diff(3 * DECODE_HZ as usize) <= 320,
            "{} samples",
            left.len()
        );
        assert_channel("left (SIP)", &left, 1_000.0, 440.0);
        assert_channel("right (device)", &right, 440.0, 1_000.0);

        // From an async task too; a handle dropped unfinished is finished
        // by its thread.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let path = dir.path().join("async.opus");
        let mut handle = pool.start(&path, &meta(), &config());
        push_tones(&mut handle, 0, 25);
        let summary = runtime.block_on(handle.finish()).expect("finish");
        assert_eq!(summary.duration_ms, 500);
        let dropped = dir.path().join("dropped.opus");
        let mut handle = pool.start(&dropped, &meta(), &config());
        push_tones(&mut handle, 0, 25);
        drop(handle);
        wait_for("the dropped handle's recording to finish", || {
            pool.active() == 0
        });
        assert_eq!(repair(&dropped).expect("repair"), Repair::Complete);
    }

    #[test]
    fn a_stalled_pool_drops_and_counts_ticks_and_the_file_keeps_the_call_length() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("stalled.opus");
        let pool = RecorderPool::new(1, 10);
        let mut handle = pool.start(&path, &meta(), &config());
        push_tones(&mut handle, 0, 5);
        wait_for("the first ticks to be recorded", || {
            handle.state.queued.load(Ordering::Acquire) == 0
        });
        let stall = pool.stall();
        // The pusher never waits: 10 ticks queue, the other 30 are dropped.
        let started = std::time::Instant::now();
        let pushed = push_tones(&mut handle, 5, 40);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            pushed[..10].iter().all(|p| *p == Pushed::Queued),
            "{pushed:?}"
        );
        assert!(
            pushed[10..].iter().all(|p| *p == Pushed::Dropped),
            "{pushed:?}"
        );
        assert_eq!(handle.dropped_ticks(), 30);
        assert_eq!(pool.dropped_ticks(), 30);
        drop(stall);
        wait_for("the thread to catch up", || {
            handle.state.queued.load(Ordering::Acquire) == 0
        });
        push_tones(&mut handle, 45, 5);
        // Lost ticks are recorded as lost packets: the file lasts the call.
        let summary = handle.finish_blocking().expect("finish");
        assert_eq!(summary.duration_ms, 50 * 20);
        opusinfo(&path);
        let (left, right) = opusdec(&path);
        assert_eq!(left.len(), right.len());
        assert!(
            left.len().abs_diff(DECODE_HZ as usize) <= 320,
            "{} samples",
            left.len()
        );
        assert_eq!(repair(&path).expect("repair"), Repair::Complete);
    }

    #[test]
    fn a_recording_stopped_by_an_error_finishes_with_that_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pool = RecorderPool::new(1, 1_000);

        // Never created: the Create error, no file.
        let missing = dir.path().join("no-such-dir").join("call.opus");
        let mut handle = pool.start(&missing, &meta(), &config());
        wait_for("the create to fail", || handle.is_stopped());
        assert_eq!(push_tones(&mut handle, 0, 1), vec![Pushed::Stopped]);
        let error = handle.finish_blocking().expect_err("not created");
        assert!(matches!(error, RecordingError::Create { .. }), "{error:?}");
        assert!(!error.file_kept());
        assert!(!missing.exists());

        // A disk that fills up mid-call: the first error, ENOSPC, at finish.
        let mut handle = pool.start_with(
            PathBuf::from("filling.opus"),
            Box::new(|| {
                Recorder::start(
                    PathBuf::from("filling.opus"),
                    Box::new(FillingDisk { room: 2_000 }),
                    &meta(),
                    &config(),
                )
            }),
        );
        push_tones(&mut handle, 0, 500);
        wait_for("the disk to fill", || handle.is_stopped());
        assert_eq!(push_tones(&mut handle, 500, 1), vec![Pushed::Stopped]);
        let error = handle.finish_blocking().expect_err("disk full");
        assert!(
            matches!(error, RecordingError::Write { ref source, .. } if source.raw_os_error() == Some(libc::ENOSPC)),
            "{error:?}"
        );
        assert!(error.file_kept());
        assert_eq!(pool.active(), 0);

        // The pool goes on recording other calls.
        let path = dir.path().join("after.opus");
        let mut handle = pool.start(&path, &meta(), &config());
        push_tones(&mut handle, 0, 10);
        assert_eq!(handle.finish_blocking().expect("finish").duration_ms, 200);
    }

    #[test]
    fn lost_ticks_keep_the_timeline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lost.opus");
        let mut recorder = Recorder::create(&path, &meta(), &config()).expect("create");
        record_tones(&mut recorder, 50);
        recorder.push_lost(25).expect("lost");
        record_tones(&mut recorder, 50);
        let summary = recorder.finish().expect("finish");
        assert_eq!(summary.duration_ms, 2_500);
        opusinfo(&path);
        let (left, right) = opusdec(&path);
        assert!(
            left.len().abs_diff(DECODE_HZ as usize * 5 / 2) <= 320,
            "{} samples",
            left.len()
        );
        // The audio after the gap is still each leg's own tone.
        let after = &left[left.len() - DECODE_HZ as usize / 2..];
        assert_channel("left after the gap", after, 1_000.0, 440.0);
        let after = &right[right.len() - DECODE_HZ as usize / 2..];
        assert_channel("right after the gap", after, 440.0, 1_000.0);
    }
}
