//! The thin I/O layer around a [`ModemModel`]: one thread per modem moves
//! bytes between the model and the masters of its two ptys, paces voice
//! frames in real time, and carries out the model's port actions (close the
//! ptys when the USB device vanishes, open new ones when it comes back,
//! keeping the stable symlinks in step). Tests and the binary hold a
//! [`ModemHandle`] to inject events, script faults and observe.
//!
//! Owns the ptys, the wake pipe and the thread. Never decides anything
//! about AT behaviour (that is the model), never blocks on a port (masters
//! are non-blocking and the thread waits in poll(2)).

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::audio::{AudioRing, FRAME_BYTES, FramePacer, ToneGenerator};
use super::codec::{self, SmsTimestamp};
use super::config::{Callee, ModemConfig, Tone, UssdAnswer};
use super::faults::{Garbage, Interleave};
use super::identity::Identity;
use super::model::{InjectError, ModelOutput, ModemLog, ModemModel};
use super::profile::Profile;
use super::pty::{PtyPort, StableLinks};

/// AT output kept while the driver does not read (then the oldest goes).
const MAX_AT_PENDING: usize = 1 << 20;
/// Voice bytes kept while the driver does not read (then frames are dropped).
const MAX_VOICE_PENDING: usize = 4 * FRAME_BYTES;
/// What the voice ring keeps of the driver's audio: 10 s.
const VOICE_RING_BYTES: usize = 160_000;
/// How long port actions requested through a handle may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a modem's ports are now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemPaths {
    /// The AT command port (`/dev/pts/N`).
    pub at: PathBuf,
    /// The voice port.
    pub voice: PathBuf,
}

/// Counters of both ports, since the modem started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Bytes the driver wrote to the AT port and the modem read.
    pub at_bytes_in: u64,
    /// Voice frames handed to the driver.
    pub frames_sent: u64,
    /// Voice frames dropped because the driver did not read.
    pub frames_dropped: u64,
    /// Bytes the driver wrote to the voice port.
    pub voice_bytes_in: u64,
}

/// Both ptys of an attached modem and what waits to be written to them.
struct Ports {
    at: PtyPort,
    voice: PtyPort,
    at_pending: Vec<u8>,
    voice_pending: Vec<u8>,
}

/// Everything the thread and the handles share, behind one mutex.
struct Inner {
    model: ModemModel,
    ports: Option<Ports>,
    generation: u64,
    used_paths: HashSet<PathBuf>,
    pacer: Option<FramePacer>,
    tone: ToneGenerator,
    voice_in: AudioRing,
    stats: PortStats,
    last_error: Option<String>,
    /// Why the last attach failed; cleared by a successful one.
    attach_error: Option<String>,
    stop: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
    wake: OwnedFd,
    identity: Identity,
    profile: Profile,
    links: Option<StableLinks>,
}

/// A running emulated modem; stopping it (drop) closes its ptys and
/// removes its links. Derefs to its [`ModemHandle`].
pub struct EmulatedModem {
    handle: ModemHandle,
    thread: Option<JoinHandle<()>>,
}

/// A cheap, cloneable handle to a running modem.
#[derive(Clone)]
pub struct ModemHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ModemHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModemHandle")
            .field("imei", &self.shared.identity.imei)
            .field("profile", &self.shared.profile)
            .finish()
    }
}

impl std::fmt::Debug for EmulatedModem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.handle.fmt(f)
    }
}

impl EmulatedModem {
    /// Opens the two ptys, installs the links under `link_dir` when given,
    /// and starts the modem's thread.
    pub fn start(config: ModemConfig, link_dir: Option<&Path>) -> io::Result<EmulatedModem> {
        let identity = config.identity.clone();
        let profile = config.profile;
        let links = link_dir.map(|d| StableLinks::new(d, &identity.imei));
        let mut used_paths = HashSet::new();
        let ports = open_ports(&used_paths)?;
        used_paths.insert(ports.at.path().to_owned());
        used_paths.insert(ports.voice.path().to_owned());
        if let Some(links) = &links {
            links.install(ports.at.path(), ports.voice.path())?;
        }
        let (wake_r, wake_w) = wake_pipe()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                model: ModemModel::new(config),
                ports: Some(ports),
                generation: 1,
                used_paths,
                pacer: None,
                tone: ToneGenerator::default(),
                voice_in: AudioRing::new(VOICE_RING_BYTES),
                stats: PortStats::default(),
                last_error: None,
                attach_error: None,
                stop: false,
            }),
            changed: Condvar::new(),
            wake: wake_w,
            identity,
            profile,
            links,
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("modem-{}", shared.identity.imei))
            .spawn(move || run(&thread_shared, &wake_r))?;
        Ok(EmulatedModem {
            handle: ModemHandle { shared },
            thread: Some(thread),
        })
    }

    /// A handle that outlives borrows of this modem.
    pub fn handle(&self) -> ModemHandle {
        self.handle.clone()
    }
}

impl std::ops::Deref for EmulatedModem {
    type Target = ModemHandle;

    fn deref(&self) -> &ModemHandle {
        &self.handle
    }
}

impl Drop for EmulatedModem {
    fn drop(&mut self) {
        self.handle.lock().stop = true;
        self.handle.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl ModemHandle {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wake(&self) {
        let byte = [1u8];
        // SAFETY: write(2) of one byte from a live buffer to the pipe we own;
        // a full pipe (EAGAIN) already guarantees a wake-up.
        unsafe {
            libc::write(self.shared.wake.as_raw_fd(), byte.as_ptr().cast(), 1);
        }
    }

    /// The IMEI.
    pub fn imei(&self) -> &str {
        &self.shared.identity.imei
    }

    /// All identities.
    pub fn identity(&self) -> &Identity {
        &self.shared.identity
    }

    /// The profile it plays.
    pub fn profile(&self) -> Profile {
        self.shared.profile
    }

    /// Where its ports are now; `None` while vanished.
    pub fn paths(&self) -> Option<ModemPaths> {
        self.lock().ports.as_ref().map(|p| ModemPaths {
            at: p.at.path().to_owned(),
            voice: p.voice.path().to_owned(),
        })
    }

    /// The AT port's path now; `None` while vanished.
    pub fn at_path(&self) -> Option<PathBuf> {
        self.paths().map(|p| p.at)
    }

    /// The voice port's path now; `None` while vanished.
    pub fn voice_path(&self) -> Option<PathBuf> {
        self.paths().map(|p| p.voice)
    }

    /// The stable links, when started with a link directory.
    pub fn links(&self) -> Option<&StableLinks> {
        self.shared.links.as_ref()
    }

    /// How many times the ports were opened (1 at start, +1 per reappearance).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The last I/O error of the thread (a failed pty open, a write error).
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Runs `f` on the model at the current instant, then lets the thread
    /// act on what changed.
    pub fn control<T>(&self, f: impl FnOnce(&mut ModemModel, Instant) -> T) -> T {
        let result = {
            let mut inner = self.lock();
            f(&mut inner.model, Instant::now())
        };
        self.wake();
        self.shared.changed.notify_all();
        result
    }

    /// Reads the model.
    pub fn inspect<T>(&self, f: impl FnOnce(&ModemModel) -> T) -> T {
        f(&self.lock().model)
    }

    /// Waits until `probe` returns `Some` (checked after every step of the
    /// modem); panics after `timeout` naming `what`, like [`crate::wait_for`].
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&ModemModel) -> Option<T>,
    ) -> T {
        self.wait_inner(timeout, |inner| probe(&inner.model))
            .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
    }

    fn wait_inner<T>(
        &self,
        timeout: Duration,
        mut probe: impl FnMut(&Inner) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            if let Some(v) = probe(&inner) {
                return Some(v);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            inner = match self.shared.changed.wait_timeout(inner, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// A copy of what the modem saw and did.
    pub fn log(&self) -> ModemLog {
        self.inspect(|m| m.log().clone())
    }

    // ------------------------------------------------------------ network

    /// A call from `number` rings (see [`ModemModel::incoming_call`]).
    pub fn incoming_call(&self, number: &str) -> Result<(), InjectError> {
        self.control(|m, now| m.incoming_call(number, now))
    }

    /// The remote party (or the caller of a ringing call) hangs up.
    pub fn remote_hangup(&self) -> bool {
        self.control(|m, now| m.remote_hangup(now))
    }

    /// An SMS arrives as `pdu_hex` (see [`ModemModel::incoming_sms`]).
    pub fn incoming_sms(&self, pdu_hex: &str) -> Result<Option<u32>, InjectError> {
        self.control(|m, now| m.incoming_sms(pdu_hex, now))
    }

    /// An SMS with `text` (UCS-2, up to 70 characters) from `sender` arrives.
    pub fn incoming_sms_text(&self, sender: &str, text: &str) -> Result<Option<u32>, InjectError> {
        let smsc = self.shared.identity.smsc.clone();
        let (_, pdu) = codec::sms_deliver_pdu(Some(&smsc), sender, text, SmsTimestamp::default())
            .map_err(|e| InjectError::BadPdu(e.to_string()))?;
        self.incoming_sms(&pdu)
    }

    /// How dialled parties behave from now on.
    pub fn set_callee(&self, callee: Callee) {
        self.control(|m, _| m.set_callee(callee));
    }

    /// What USSD requests get from now on.
    pub fn set_ussd_answer(&self, answer: UssdAnswer) {
        self.control(|m, _| m.set_ussd_answer(answer));
    }

    /// What the voice port plays from now on.
    pub fn set_tone(&self, tone: Option<Tone>) {
        self.control(|m, _| m.set_tone(tone));
    }

    // ------------------------------------------------------------ faults

    /// Stops (or resumes) answering anything.
    pub fn set_silent(&self, silent: bool) {
        self.control(|m, _| m.set_silent(silent));
    }

    /// Writes garbage to the AT port now.
    pub fn inject_garbage(&self, garbage: Garbage) {
        self.control(|m, _| m.inject_garbage(&garbage));
    }

    /// Slips bytes into the next matching reply.
    pub fn interleave(&self, interleave: Interleave) {
        self.control(|m, _| m.interleave(interleave));
    }

    /// Enables or disables the `AT+CHLD`-before-`^CONF` hang.
    pub fn set_chld_trap(&self, enabled: bool) {
        self.control(|m, _| m.set_chld_trap(enabled));
    }

    /// Emits `line` every `every`; `None` stops it.
    pub fn set_periodic_urc(&self, urc: Option<(String, Duration)>) {
        self.control(|m, now| m.set_periodic_urc(urc, now));
    }

    /// The USB device vanishes: both ptys close (drivers see EOF/EIO) and
    /// the links go. Returns once the ptys are closed.
    pub fn vanish(&self) -> io::Result<()> {
        self.control(|m, now| m.power_off(now));
        self.wait_inner(ACTION_TIMEOUT, |inner| inner.ports.is_none().then_some(()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "the ptys did not close"))
    }

    /// The USB device comes back under new pty paths, freshly booted, the
    /// links updated. Returns the new paths once open.
    pub fn reappear(&self) -> io::Result<ModemPaths> {
        let before = {
            let mut inner = self.lock();
            inner.attach_error = None;
            inner.generation
        };
        self.control(|m, now| m.power_on(now));
        self.wait_for_generation(before)
    }

    /// [`ModemHandle::vanish`] then [`ModemHandle::reappear`]: the only
    /// cure for the `AT+CHLD` hang.
    pub fn power_cycle(&self) -> io::Result<ModemPaths> {
        self.vanish()?;
        self.reappear()
    }

    /// Waits until the ports were reopened after generation `before`
    /// (after [`ModemHandle::reappear`] or an `AT+CFUN=1,1` reboot).
    pub fn wait_for_generation(&self, before: u64) -> io::Result<ModemPaths> {
        self.wait_inner(ACTION_TIMEOUT, |inner| {
            if let Some(e) = &inner.attach_error {
                return Some(Err(io::Error::other(e.clone())));
            }
            match &inner.ports {
                Some(p) if inner.generation > before => Some(Ok(ModemPaths {
                    at: p.at.path().to_owned(),
                    voice: p.voice.path().to_owned(),
                })),
                _ => None,
            }
        })
        .unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the ptys did not reopen",
            ))
        })
    }

    // ------------------------------------------------------------ voice

    /// The audio the driver wrote to the voice port (the last 10 s).
    pub fn voice_received(&self) -> Vec<u8> {
        self.lock().voice_in.contents()
    }

    /// Forgets the audio received so far (counters stay).
    pub fn clear_voice_received(&self) {
        self.lock().voice_in.clear();
    }

    /// Port counters.
    pub fn stats(&self) -> PortStats {
        let inner = self.lock();
        PortStats {
            voice_bytes_in: inner.voice_in.total(),
            ..inner.stats
        }
    }

    /// Waits until `probe` holds on the port counters and the audio
    /// received (checked after every step of the modem); panics after
    /// `timeout` naming `what`.
    pub fn wait_ports<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(PortStats, &AudioRing) -> Option<T>,
    ) -> T {
        self.wait_inner(timeout, |inner| {
            let stats = PortStats {
                voice_bytes_in: inner.voice_in.total(),
                ..inner.stats
            };
            probe(stats, &inner.voice_in)
        })
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
    }
}

/// Opens an AT and a voice pty whose paths were not used before by this
/// modem (as USB re-enumeration gives new tty names): pairs that reuse an
/// old path are held open while looking, then closed.
fn open_ports(used: &HashSet<PathBuf>) -> io::Result<Ports> {
    let mut held = Vec::new();
    let mut fresh = || -> io::Result<PtyPort> {
        loop {
            let port = PtyPort::open()?;
            if !used.contains(port.path()) || held.len() >= 32 {
                return Ok(port);
            }
            held.push(port);
        }
    };
    let at = fresh()?;
    let voice = fresh()?;
    Ok(Ports {
        at,
        voice,
        at_pending: Vec::new(),
        voice_pending: Vec::new(),
    })
}

fn wake_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into a 2-element array.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded; both descriptors are open and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The modem's thread: wait in poll(2), then one step; until stopped.
fn run(shared: &Shared, wake_r: &OwnedFd) {
    loop {
        let (mut fds, timeout_ms) = {
            let inner = shared
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if inner.stop {
                break;
            }
            poll_set(&inner, wake_r.as_raw_fd())
        };
        // SAFETY: fds is a live array of pollfd of the given length; the
        // descriptors stay open because only this thread closes ports.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                record_error(shared, format!("poll: {e}"));
            }
        }
        drain(wake_r.as_raw_fd());
        {
            let mut inner = shared
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            step(&mut inner, shared.links.as_ref(), Instant::now());
        }
        shared.changed.notify_all();
    }
    let mut inner = shared
        .inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    inner.ports = None;
    if let Some(links) = &shared.links {
        let _ = links.remove();
    }
    drop(inner);
    shared.changed.notify_all();
}

fn record_error(shared: &Shared, error: String) {
    shared
        .inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .last_error = Some(error);
}

fn poll_set(inner: &Inner, wake: RawFd) -> (Vec<libc::pollfd>, libc::c_int) {
    let mut fds = vec![libc::pollfd {
        fd: wake,
        events: libc::POLLIN,
        revents: 0,
    }];
    let mut deadline = inner.model.next_deadline();
    if let Some(ports) = &inner.ports {
        let out = |pending: &[u8]| if pending.is_empty() { 0 } else { libc::POLLOUT };
        fds.push(libc::pollfd {
            fd: ports.at.master_fd(),
            events: libc::POLLIN | out(&ports.at_pending),
            revents: 0,
        });
        fds.push(libc::pollfd {
            fd: ports.voice.master_fd(),
            events: libc::POLLIN | out(&ports.voice_pending),
            revents: 0,
        });
        if inner.model.audio_active() {
            let due = inner
                .pacer
                .as_ref()
                .map_or_else(Instant::now, FramePacer::next_due);
            deadline = Some(deadline.map_or(due, |d| d.min(due)));
        }
    }
    let timeout_ms = match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            // Round up so the thread does not wake just before the deadline.
            let ms = left.as_micros().div_ceil(1000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    };
    (fds, timeout_ms)
}

fn drain(fd: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: read(2) into a live buffer of the given length from our pipe.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Reads whatever `file` has (non-blocking), at most `limit` bytes.
fn read_available(mut file: &std::fs::File, limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < limit {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Writes as much of `pending` as the pty takes now.
fn flush(mut file: &std::fs::File, pending: &mut Vec<u8>) -> io::Result<()> {
    while !pending.is_empty() {
        match file.write(pending) {
            Ok(0) => break,
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One step: read both ports, run the model, act on its output, write.
fn step(inner: &mut Inner, links: Option<&StableLinks>, now: Instant) {
    let mut errors = Vec::new();
    if let Some(ports) = &inner.ports {
        match read_available(ports.at.master(), 1 << 16) {
            Ok(bytes) if !bytes.is_empty() => {
                inner.stats.at_bytes_in += bytes.len() as u64;
                inner.model.handle_input(&bytes, now);
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("reading the AT pty: {e}")),
        }
        match read_available(ports.voice.master(), 1 << 16) {
            Ok(bytes) => inner.voice_in.push(&bytes),
            Err(e) => errors.push(format!("reading the voice pty: {e}")),
        }
    }
    inner.model.handle_timeout(now);
    while let Some(output) = inner.model.poll_output() {
        match output {
            ModelOutput::Bytes(bytes) => {
                if let Some(ports) = inner.ports.as_mut() {
                    ports.at_pending.extend_from_slice(&bytes);
                    if ports.at_pending.len() > MAX_AT_PENDING {
                        let excess = ports.at_pending.len() - MAX_AT_PENDING;
                        ports.at_pending.drain(..excess);
                    }
                }
            }
            ModelOutput::Detach => {
                if let Some(mut ports) = inner.ports.take() {
                    let _ = flush(ports.at.master(), &mut ports.at_pending);
                }
                inner.pacer = None;
                if let Some(links) = links
                    && let Err(e) = links.remove()
                {
                    errors.push(format!("removing links: {e}"));
                }
            }
            ModelOutput::Attach => match open_ports(&inner.used_paths) {
                Ok(ports) => {
                    inner.used_paths.insert(ports.at.path().to_owned());
                    inner.used_paths.insert(ports.voice.path().to_owned());
                    if let Some(links) = links
                        && let Err(e) = links.install(ports.at.path(), ports.voice.path())
                    {
                        errors.push(format!("installing links: {e}"));
                    }
                    inner.ports = Some(ports);
                    inner.generation += 1;
                    inner.attach_error = None;
                }
                Err(e) => {
                    inner.attach_error = Some(e.to_string());
                    errors.push(format!("opening new ptys: {e}"));
                }
            },
        }
    }
    if let Some(ports) = inner.ports.as_mut() {
        if let Err(e) = flush(ports.at.master(), &mut ports.at_pending) {
            errors.push(format!("writing the AT pty: {e}"));
        }
        if inner.model.audio_active() {
            let pacer = inner.pacer.get_or_insert_with(|| FramePacer::new(now));
            for _ in 0..pacer.due(now) {
                let frame = inner.tone.next_frame(inner.model.tone());
                if ports.voice_pending.len() + FRAME_BYTES > MAX_VOICE_PENDING {
                    inner.stats.frames_dropped += 1;
                } else {
                    ports.voice_pending.extend_from_slice(&frame);
                    inner.stats.frames_sent += 1;
                }
            }
        } else {
            inner.pacer = None;
        }
        if let Err(e) = flush(ports.voice.master(), &mut ports.voice_pending) {
            errors.push(format!("writing the voice pty: {e}"));
        }
    }
    if let Some(e) = errors.pop() {
        inner.last_error = Some(e);
    }
}
