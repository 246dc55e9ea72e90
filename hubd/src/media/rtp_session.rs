//! One call leg's RTP: a UDP socket on an even port of the hub's
//! [`PortRange`], and the task that bridges it to the device's
//! [`AudioStream`] (RTP → jitter buffer → G.711 decode → frames to the
//! device; frames from the device → encode → RTP), with RFC 4733 DTMF both
//! ways.
//!
//! Pacing: audio toward the peer is paced by the device — one RTP packet per
//! frame the device sends (the hub's `VoiceClock` delivers one every 20 ms on
//! an absolute schedule), so no timer runs for it. Audio toward the device
//! and outgoing DTMF are paced by a 20 ms `tokio::time::interval` with
//! `MissedTickBehavior::Skip` (a stalled runtime skips ticks instead of
//! bursting them; the jitter buffer then trims the backlog): the peer's
//! packets arrive with network jitter and must be taken out at a steady rate
//! even when the device sends nothing.
//!
//! Symmetric RTP with latching: until a valid packet (RTP, with a payload
//! type we negotiated) arrives from the IP address in the peer's SDP, we
//! send to the SDP's address; after it, to wherever that packet came from,
//! and only packets from exactly that address are accepted. Everything
//! else — another IP before latching, another address after, unknown
//! payload types, malformed packets, RTCP — is dropped and counted, never
//! played. An unspecified SDP address (`0.0.0.0`, hold) is never sent to.
//!
//! A dead peer: when nothing arrives from the peer's address (audio,
//! telephone-events, or packets of another payload type such as comfort
//! noise) for [`RtpConfig::peer_timeout`] while the peer should be sending,
//! or for [`RtpConfig::hold_timeout`] while it is on hold (our direction
//! `sendonly`/`inactive`), the session reports it once through
//! [`RtpSession::peer_silent`]; the bridge ends the call (a PBX that died
//! without a BYE must not leave a GSM call running). A re-negotiation
//! restarts the clock.
//!
//! Owns the socket and its port until the session ends. Never blocks on the
//! device: frames for a device that is not draining are dropped and counted.
//! Stops when its cancellation token is cancelled or its [`RtpSession`]
//! handle is dropped, whichever comes first; the port is free again then.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::device::at_modem::voice::{AudioStream, FRAME_BYTES, FRAME_PERIOD, Frame};
use crate::media::g711::FRAME_SAMPLES;
use crate::media::jitter::{JitterBuffer, JitterConfig, MAX_PAYLOAD, Missing, Playout};
use crate::media::rtp::{self, HEADER_BYTES, RtpStream, StreamStart};
use crate::media::sdp::Negotiated;
use crate::media::telephone_event::{Digit, EventReceiver, EventSender, Received};

/// Digits queued toward the peer or toward the bridge, at most.
const DIGIT_QUEUE: usize = 32;
/// Largest datagram read; longer ones are truncated (and then fail to
/// parse or play as one frame).
const RECV_BUFFER: usize = 2048;

/// Why a port range cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PortRangeError {
    /// The range holds no even port above 0.
    #[error("RTP port range {first}-{last} holds no even port")]
    Empty {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
}

/// Why no RTP socket could be had.
#[derive(Debug, Error)]
pub enum BindError {
    /// Every even port of the range is leased or taken by another process.
    #[error("no free even RTP port in {first}-{last} on {ip} (widen the range or end calls)")]
    Exhausted {
        /// The address bound.
        ip: IpAddr,
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// The socket could not be set up.
    #[error("RTP socket on {addr}: {source}")]
    Io {
        /// The address bound.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// The hub's RTP ports: hands out even ports round-robin (a port just freed
/// is the last to be reused, so late packets of an ended call do not reach
/// the next one), skipping ports another process holds.
#[derive(Debug)]
pub struct PortRange {
    first: u16,
    last: u16,
    state: Mutex<PortState>,
}

#[derive(Debug)]
struct PortState {
    leased: Vec<bool>,
    cursor: usize,
}

impl PortRange {
    /// The even ports in `first..=last`.
    pub fn new(first: u16, last: u16) -> Result<Arc<PortRange>, PortRangeError> {
        let lowest = first.max(2);
        let Some(even_first) = lowest.checked_add(lowest % 2).filter(|f| *f <= last) else {
            return Err(PortRangeError::Empty { first, last });
        };
        let count = usize::from((last - even_first) / 2) + 1;
        Ok(Arc::new(PortRange {
            first: even_first,
            last,
            state: Mutex::new(PortState {
                leased: vec![false; count],
                cursor: 0,
            }),
        }))
    }

    /// Even ports in the range.
    pub fn capacity(&self) -> usize {
        self.lock().leased.len()
    }

    /// Ports leased now.
    pub fn leased(&self) -> usize {
        self.lock().leased.iter().filter(|l| **l).count()
    }

    /// Binds a UDP socket on `ip` and the next free even port. Needs a tokio
    /// runtime.
    pub fn bind(self: &Arc<Self>, ip: IpAddr) -> Result<RtpSocket, BindError> {
        let count = self.capacity();
        for _ in 0..count {
            let Some(port) = self.lease_next() else {
                break;
            };
            let addr = SocketAddr::new(ip, port);
            match std::net::UdpSocket::bind(addr) {
                Ok(std_socket) => {
                    let lease = PortLease {
                        range: Arc::clone(self),
                        port,
                    };
                    let io = |source| BindError::Io { addr, source };
                    std_socket.set_nonblocking(true).map_err(io)?;
                    let socket = UdpSocket::from_std(std_socket).map_err(io)?;
                    let local = socket.local_addr().map_err(io)?;
                    return Ok(RtpSocket {
                        socket,
                        local,
                        _lease: lease,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    // Another process has it: try the next (the cursor has
                    // moved past it).
                    self.release(port);
                }
                Err(source) => {
                    self.release(port);
                    return Err(BindError::Io { addr, source });
                }
            }
        }
        Err(BindError::Exhausted {
            ip,
            first: self.first,
            last: self.last,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PortState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lease_next(&self) -> Option<u16> {
        let mut st = self.lock();
        let n = st.leased.len();
        for step in 0..n {
            let i = (st.cursor + step) % n;
            if !st.leased[i] {
                st.leased[i] = true;
                st.cursor = (i + 1) % n;
                return u16::try_from(i * 2).ok().map(|off| self.first + off);
            }
        }
        None
    }

    fn release(&self, port: u16) {
        let i = usize::from((port - self.first) / 2);
        if let Some(l) = self.lock().leased.get_mut(i) {
            *l = false;
        }
    }
}

#[derive(Debug)]
struct PortLease {
    range: Arc<PortRange>,
    port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.range.release(self.port);
    }
}

/// A bound RTP socket holding its port of the [`PortRange`] until dropped.
#[derive(Debug)]
pub struct RtpSocket {
    socket: UdpSocket,
    local: SocketAddr,
    _lease: PortLease,
}

impl RtpSocket {
    /// The address bound (its port goes into our SDP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Settings of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpConfig {
    /// The jitter buffer's depths.
    pub jitter: JitterConfig,
    /// How long each DTMF digit sent lasts.
    pub dtmf_duration: Duration,
    /// The pause after each DTMF digit sent.
    pub dtmf_gap: Duration,
    /// Nothing from a peer that should be sending for this long → it is
    /// reported dead ([`RtpSession::peer_silent`]); `None`: never.
    pub peer_timeout: Option<Duration>,
    /// The same while the call is on hold (the peer is not meant to send);
    /// `None`: never.
    pub hold_timeout: Option<Duration>,
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            jitter: JitterConfig::default(),
            dtmf_duration: Duration::from_millis(100),
            dtmf_gap: Duration::from_millis(60),
            peer_timeout: Some(Duration::from_secs(60)),
            hold_timeout: Some(Duration::from_secs(900)),
        }
    }
}

/// Counters of a session, updated as it runs.
#[derive(Debug, Default)]
pub struct RtpStats {
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    frames_played: AtomicU64,
    lost: AtomicU64,
    late: AtomicU64,
    duplicates: AtomicU64,
    discarded: AtomicU64,
    underruns: AtomicU64,
    resets: AtomicU64,
    dropped_wrong_source: AtomicU64,
    dropped_wrong_payload_type: AtomicU64,
    dropped_malformed: AtomicU64,
    rtcp_ignored: AtomicU64,
    dtmf_in: AtomicU64,
    dtmf_out: AtomicU64,
    device_overruns: AtomicU64,
    send_errors: AtomicU64,
    latched: Mutex<Option<SocketAddr>>,
}

/// A copy of a session's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpStatsSnapshot {
    /// RTP packets accepted (audio and telephone-events).
    pub packets_in: u64,
    /// RTP packets sent (audio and telephone-events).
    pub packets_out: u64,
    /// The peer's packets played out of the jitter buffer.
    pub frames_played: u64,
    /// Frames due that never arrived.
    pub lost: u64,
    /// Packets that arrived after their turn to play.
    pub late: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Frames the jitter buffer discarded to bound the delay.
    pub discarded: u64,
    /// Ticks where the jitter buffer ran empty.
    pub underruns: u64,
    /// Jitter buffer restarts (new SSRC, sequence jump).
    pub resets: u64,
    /// Packets from an unexpected source, dropped.
    pub dropped_wrong_source: u64,
    /// Packets of a payload type not negotiated, dropped.
    pub dropped_wrong_payload_type: u64,
    /// Datagrams that are not valid RTP, dropped.
    pub dropped_malformed: u64,
    /// RTCP packets received (ignored).
    pub rtcp_ignored: u64,
    /// DTMF digits received.
    pub dtmf_in: u64,
    /// DTMF digits sent.
    pub dtmf_out: u64,
    /// Frames (or digits) dropped because the device side was not draining.
    pub device_overruns: u64,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
    /// The peer address latched on, once it is.
    pub latched: Option<SocketAddr>,
}

impl RtpStatsSnapshot {
    /// The counters a CDR keeps.
    pub fn counters(&self) -> vss_shared::media::RtpCounters {
        vss_shared::media::RtpCounters {
            packets_in: self.packets_in,
            packets_out: self.packets_out,
            lost: self.lost,
            late: self.late,
            dropped_wrong_source: self.dropped_wrong_source,
            dropped_wrong_payload_type: self.dropped_wrong_payload_type,
            dropped_malformed: self.dropped_malformed,
            dtmf_in: self.dtmf_in,
            dtmf_out: self.dtmf_out,
        }
    }
}

impl RtpStats {
    /// The counters now.
    pub fn snapshot(&self) -> RtpStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RtpStatsSnapshot {
            packets_in: g(&self.packets_in),
            packets_out: g(&self.packets_out),
            frames_played: g(&self.frames_played),
            lost: g(&self.lost),
            late: g(&self.late),
            duplicates: g(&self.duplicates),
            discarded: g(&self.discarded),
            underruns: g(&self.underruns),
            resets: g(&self.resets),
            dropped_wrong_source: g(&self.dropped_wrong_source),
            dropped_wrong_payload_type: g(&self.dropped_wrong_payload_type),
            dropped_malformed: g(&self.dropped_malformed),
            rtcp_ignored: g(&self.rtcp_ignored),
            dtmf_in: g(&self.dtmf_in),
            dtmf_out: g(&self.dtmf_out),
            device_overruns: g(&self.device_overruns),
            send_errors: g(&self.send_errors),
            latched: *self.latched.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn sync_jitter(&self, jitter: &JitterBuffer) {
        let s = jitter.stats();
        self.frames_played.store(s.played, Ordering::Relaxed);
        self.lost.store(s.lost, Ordering::Relaxed);
        self.late.store(s.late, Ordering::Relaxed);
        self.duplicates.store(s.duplicates, Ordering::Relaxed);
        self.discarded
            .store(s.discarded + s.out_of_range, Ordering::Relaxed);
        self.underruns.store(s.underruns, Ordering::Relaxed);
        self.resets.store(s.resets, Ordering::Relaxed);
    }
}

/// Why a session could not start or a digit could not be sent.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The random source for the stream's SSRC, sequence and timestamp
    /// failed.
    #[error("no randomness for the RTP stream: {0}")]
    Random(getrandom::Error),
    /// The peer did not negotiate telephone-events.
    #[error("the peer did not negotiate telephone-events; DTMF cannot be sent as RTP events")]
    DtmfNotNegotiated,
    /// Too many digits queued.
    #[error("too many DTMF digits queued")]
    DtmfQueueFull,
    /// The session has ended.
    #[error("the RTP session has ended")]
    Ended,
}

/// A running session, held by the call bridge.
#[derive(Debug)]
pub struct RtpSession {
    /// DTMF digits the peer sent, each once.
    pub received_digits: mpsc::Receiver<Digit>,
    digits_to_send: mpsc::Sender<Digit>,
    /// Fires once when the peer is silent past its timeout.
    silent: Option<oneshot::Receiver<Duration>>,
    remote: watch::Sender<Negotiated>,
    stats: Arc<RtpStats>,
    local: SocketAddr,
    task: JoinHandle<RtpStatsSnapshot>,
}

impl RtpSession {
    /// Starts the session on `socket` toward `remote` (from
    /// [`crate::media::sdp::negotiate`]), bridging `audio`. It runs until
    /// `cancel` is cancelled.
    pub fn spawn(
        socket: RtpSocket,
        remote: Negotiated,
        audio: AudioStream,
        config: RtpConfig,
        cancel: CancellationToken,
    ) -> Result<RtpSession, SessionError> {
        let start = StreamStart::random().map_err(SessionError::Random)?;
        let stats = Arc::new(RtpStats::default());
        let (digits_in_tx, digits_in_rx) = mpsc::channel(DIGIT_QUEUE);
        let (digits_out_tx, digits_out_rx) = mpsc::channel(DIGIT_QUEUE);
        let (remote_tx, remote_rx) = watch::channel(remote);
        let (silent_tx, silent_rx) = oneshot::channel();
        let local = socket.local_addr();
        let span = tracing::info_span!("rtp", local = %local);
        let leg = Leg {
            remote,
            latched: None,
            stream: RtpStream::new(start),
            jitter: JitterBuffer::new(config.jitter),
            events_in: EventReceiver::new(),
            digits_in: digits_in_tx,
            pending_digits: VecDeque::with_capacity(DIGIT_QUEUE),
            event: None,
            gap_ticks: 0,
            carry: [0; MAX_PAYLOAD],
            carry_pos: 0,
            carry_len: 0,
            last_frame: [0; FRAME_SAMPLES],
            repeated: true,
            heard_at: Instant::now(),
            silent: Some(silent_tx),
            config,
            stats: Arc::clone(&stats),
        };
        let task = tokio::spawn(
            leg.run(socket, audio, digits_out_rx, remote_rx, cancel)
                .instrument(span),
        );
        Ok(RtpSession {
            received_digits: digits_in_rx,
            silent: Some(silent_rx),
            digits_to_send: digits_out_tx,
            remote: remote_tx,
            stats,
            local,
            task,
        })
    }

    /// Our RTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Queues `digit` to be sent as an RFC 4733 event.
    pub fn send_digit(&self, digit: Digit) -> Result<(), SessionError> {
        if self.remote.borrow().telephone_event.is_none() {
            return Err(SessionError::DtmfNotNegotiated);
        }
        self.digits_to_send.try_send(digit).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SessionError::DtmfQueueFull,
            mpsc::error::TrySendError::Closed(_) => SessionError::Ended,
        })
    }

    /// A new negotiation (re-INVITE): new codec, address or direction. A
    /// changed address starts latching again.
    pub fn update_remote(&self, remote: Negotiated) {
        self.remote.send_replace(remote);
    }

    /// The counters now.
    pub fn stats(&self) -> RtpStatsSnapshot {
        self.stats.snapshot()
    }

    /// Resolves, once, when nothing has come from the peer for longer than
    /// its timeout (see the module docs), with how long it has been silent.
    /// Pends forever otherwise, also after the session ended.
    pub async fn peer_silent(&mut self) -> Duration {
        silence_of(&mut self.silent).await
    }

    /// The next digit the peer sent (`None`: the session ended) or its
    /// silence, whichever comes first.
    pub async fn next_event(&mut self) -> SessionEvent {
        tokio::select! {
            digit = self.received_digits.recv() => SessionEvent::Digit(digit),
            silence = silence_of(&mut self.silent) => SessionEvent::PeerSilent(silence),
        }
    }

    /// The shared counters (for metrics that outlive the handle).
    pub fn stats_handle(&self) -> Arc<RtpStats> {
        Arc::clone(&self.stats)
    }

    /// Ends the session (if its token has not already) and returns its
    /// final counters.
    pub async fn join(self) -> RtpStatsSnapshot {
        let RtpSession {
            stats,
            task,
            remote,
            ..
        } = self;
        // The task stops when its handle's watch closes.
        drop(remote);
        match task.await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "RTP session task failed");
                stats.snapshot()
            }
        }
    }
}

/// What a session reports to the call it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// A digit the peer sent by RFC 4733; `None`: the session ended.
    Digit(Option<Digit>),
    /// Nothing came from the peer for this long (past its timeout).
    PeerSilent(Duration),
}

/// The peer's silence, once, from the session's report; never after it or
/// when the session ended without one.
async fn silence_of(silent: &mut Option<oneshot::Receiver<Duration>>) -> Duration {
    if let Some(report) = silent.as_mut()
        && let Ok(silence) = report.await
    {
        *silent = None;
        return silence;
    }
    *silent = None;
    std::future::pending().await
}

/// The state of the session task.
struct Leg {
    remote: Negotiated,
    latched: Option<SocketAddr>,
    stream: RtpStream,
    jitter: JitterBuffer,
    events_in: EventReceiver,
    digits_in: mpsc::Sender<Digit>,
    pending_digits: VecDeque<Digit>,
    /// The event being sent and its RTP timestamp.
    event: Option<(EventSender, u32)>,
    gap_ticks: u32,
    /// The rest of the packet being played (packets longer than a frame).
    carry: [u8; MAX_PAYLOAD],
    carry_pos: usize,
    carry_len: usize,
    /// The last frame played, for one repeat over a lost packet.
    last_frame: [u8; FRAME_SAMPLES],
    /// Whether the last tick was such a repeat.
    repeated: bool,
    /// When the peer was last heard from (or the clock last restarted).
    heard_at: Instant,
    /// Taken when the peer's silence is reported.
    silent: Option<oneshot::Sender<Duration>>,
    config: RtpConfig,
    stats: Arc<RtpStats>,
}

impl Leg {
    async fn run(
        mut self,
        socket: RtpSocket,
        mut audio: AudioStream,
        mut digits_out: mpsc::Receiver<Digit>,
        mut remote_rx: watch::Receiver<Negotiated>,
        cancel: CancellationToken,
    ) -> RtpStatsSnapshot {
        let mut tick = tokio::time::interval(FRAME_PERIOD);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut recv_buf = [0u8; RECV_BUFFER];
        let mut send_buf = [0u8; HEADER_BYTES + FRAME_SAMPLES];
        let mut device_open = true;
        let mut digits_open = true;
        let sock = &socket.socket;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                now = tick.tick() => {
                    self.play_tick(&audio.to_device);
                    self.dtmf_tick(sock, &mut send_buf).await;
                    self.check_peer(now);
                }
                frame = audio.from_device.recv(), if device_open => match frame {
                    Some(frame) => self.send_audio(sock, &frame, &mut send_buf).await,
                    None => device_open = false,
                },
                digit = digits_out.recv(), if digits_open => match digit {
                    Some(d) if self.pending_digits.len() < DIGIT_QUEUE => self.pending_digits.push_back(d),
                    Some(_) => RtpStats::bump(&self.stats.device_overruns),
                    None => digits_open = false,
                },
                changed = remote_rx.changed() => match changed {
                    Ok(()) => {
                        let new = *remote_rx.borrow_and_update();
                        self.set_remote(new);
                    }
                    // The handle was dropped: nobody can stop us later.
                    Err(_) => break,
                },
                // Last: a flood on the socket must not starve the rest.
                got = sock.recv_from(&mut recv_buf) => match got {
                    Ok((n, from)) => self.on_datagram(&recv_buf[..n], from),
                    Err(e) => {
                        // UDP receive errors are per datagram (ICMP reports):
                        // nothing to end the call for.
                        tracing::debug!(error = %e, "RTP receive error");
                    }
                },
            }
        }
        self.stats.sync_jitter(&self.jitter);
        self.stats.snapshot()
    }

    fn set_remote(&mut self, new: Negotiated) {
        if new.remote != self.remote.remote {
            self.latched = None;
            *self.stats.latched.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        self.remote = new;
        self.heard_at = Instant::now();
    }

    /// Reports the peer's silence once it outlasts the timeout that applies.
    fn check_peer(&mut self, now: Instant) {
        let limit = if self.remote.direction.receives() {
            self.config.peer_timeout
        } else {
            self.config.hold_timeout
        };
        let Some(limit) = limit else { return };
        let silence = now.saturating_duration_since(self.heard_at);
        if silence <= limit {
            return;
        }
        if let Some(silent) = self.silent.take() {
            tracing::warn!(
                silence_ms = silence.as_millis() as u64,
                direction = self.remote.direction.as_str(),
                "nothing from the RTP peer: reporting it dead"
            );
            // The handle may be gone already; nothing then to report to.
            let _ = silent.send(silence);
        }
    }

    /// Where our packets go now, if anywhere.
    fn destination(&self) -> Option<SocketAddr> {
        if !self.remote.direction.sends() {
            return None;
        }
        let dest = self.latched.unwrap_or(self.remote.remote);
        (!dest.ip().is_unspecified() && dest.port() != 0).then_some(dest)
    }

    async fn send(&self, sock: &UdpSocket, packet: &[u8], dest: SocketAddr) {
        match sock.send_to(packet, dest).await {
            Ok(_) => RtpStats::bump(&self.stats.packets_out),
            Err(e) => {
                RtpStats::bump(&self.stats.send_errors);
                tracing::debug!(error = %e, %dest, "RTP send failed");
            }
        }
    }

    /// One frame from the device: an RTP packet, unless a DTMF event is
    /// being sent in its place.
    async fn send_audio(
        &mut self,
        sock: &UdpSocket,
        frame: &Frame,
        buf: &mut [u8; HEADER_BYTES + FRAME_SAMPLES],
    ) {
        if self.event.is_some() {
            self.stream.skip_frame();
            return;
        }
        let Some(dest) = self.destination() else {
            self.stream.skip_frame();
            return;
        };
        let header = self.stream.next_frame(self.remote.payload_type);
        if rtp::write_header(&header, &mut buf[..]).is_err() {
            return;
        }
        let (_, payload) = buf.split_at_mut(HEADER_BYTES);
        let Ok(payload) = <&mut [u8; FRAME_SAMPLES]>::try_from(payload) else {
            return;
        };
        self.remote.codec.encode_frame(frame, payload);
        self.send(sock, &buf[..], dest).await;
    }

    fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        if rtp::is_rtcp(datagram) {
            RtpStats::bump(&self.stats.rtcp_ignored);
            return;
        }
        let Ok(packet) = rtp::parse(datagram) else {
            RtpStats::bump(&self.stats.dropped_malformed);
            return;
        };
        let expected = match self.latched {
            Some(latched) => from == latched,
            None => from.ip().to_canonical() == self.remote.remote.ip().to_canonical(),
        };
        if !expected {
            RtpStats::bump(&self.stats.dropped_wrong_source);
            return;
        }
        // The peer is alive, whatever it sent (comfort noise included).
        self.heard_at = Instant::now();
        let pt = packet.header.payload_type;
        let is_audio = pt == self.remote.payload_type;
        let is_event = Some(pt) == self.remote.telephone_event;
        if !is_audio && !is_event {
            RtpStats::bump(&self.stats.dropped_wrong_payload_type);
            return;
        }
        if self.latched.is_none() {
            self.latched = Some(from);
            *self.stats.latched.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
            tracing::debug!(peer = %from, "RTP latched");
        }
        RtpStats::bump(&self.stats.packets_in);
        if is_audio {
            self.jitter
                .push(packet.header.ssrc, packet.header.sequence, packet.payload);
            return;
        }
        match self
            .events_in
            .on_packet(packet.header.ssrc, packet.header.timestamp, packet.payload)
        {
            Ok(Some(Received::Digit(d))) => {
                RtpStats::bump(&self.stats.dtmf_in);
                if self.digits_in.try_send(d).is_err() {
                    RtpStats::bump(&self.stats.device_overruns);
                }
            }
            Ok(_) => {}
            Err(_) => RtpStats::bump(&self.stats.dropped_malformed),
        }
    }

    /// One 20 ms tick toward the device: a frame cut from the packets in
    /// the jitter buffer (20 ms packets map one to one; longer ones are
    /// carried over into the next ticks).
    fn play_tick(&mut self, to_device: &mpsc::Sender<Frame>) {
        let mut out = [0u8; FRAME_SAMPLES];
        let mut filled = 0;
        let mut concealed = false;
        while filled < FRAME_SAMPLES {
            if self.carry_pos < self.carry_len {
                let n = (self.carry_len - self.carry_pos).min(FRAME_SAMPLES - filled);
                out[filled..filled + n]
                    .copy_from_slice(&self.carry[self.carry_pos..self.carry_pos + n]);
                self.carry_pos += n;
                filled += n;
                continue;
            }
            match self.jitter.pop() {
                Playout::Frame { payload, .. } => {
                    let len = payload.len().min(MAX_PAYLOAD);
                    self.carry[..len].copy_from_slice(&payload[..len]);
                    (self.carry_pos, self.carry_len) = (0, len);
                    if len == 0 {
                        break;
                    }
                }
                // One lost frame is covered by repeating the last one; after
                // that, and on underrun, the device side plays silence.
                Playout::Missing(Missing::Lost) if filled == 0 && !self.repeated => {
                    out = self.last_frame;
                    filled = FRAME_SAMPLES;
                    concealed = true;
                }
                Playout::Missing(_) => break,
            }
        }
        self.repeated = concealed;
        if filled == 0 {
            self.stats.sync_jitter(&self.jitter);
            return;
        }
        out[filled..].fill(self.remote.codec.silence());
        self.last_frame = out;
        let mut frame: Frame = Box::new([0u8; FRAME_BYTES]);
        self.remote.codec.decode_to_frame(&out, &mut frame);
        if to_device.try_send(frame).is_err() {
            RtpStats::bump(&self.stats.device_overruns);
        }
        // After the frame is out, so whoever sees the count sees the frame.
        self.stats.sync_jitter(&self.jitter);
    }

    /// One 20 ms tick of outgoing DTMF: the next event packet, or the gap
    /// after an event, or the start of the next queued digit.
    async fn dtmf_tick(&mut self, sock: &UdpSocket, buf: &mut [u8; HEADER_BYTES + FRAME_SAMPLES]) {
        if self.event.is_none() {
            if self.gap_ticks > 0 {
                self.gap_ticks -= 1;
                return;
            }
            let Some(digit) = self.pending_digits.pop_front() else {
                return;
            };
            let sender = EventSender::new(digit, self.config.dtmf_duration);
            self.event = Some((sender, self.stream.timestamp()));
            RtpStats::bump(&self.stats.dtmf_out);
        }
        let Some((sender, ts)) = self.event.as_mut() else {
            return;
        };
        let ts = *ts;
        let Some(packet) = sender.next_packet() else {
            self.event = None;
            let gap = self.config.dtmf_gap.as_millis() / FRAME_PERIOD.as_millis().max(1);
            self.gap_ticks = u32::try_from(gap).unwrap_or(u32::MAX);
            return;
        };
        let (Some(dest), Some(pt)) = (self.destination(), self.remote.telephone_event) else {
            return;
        };
        let header = self.stream.next_event_packet(pt, ts, packet.marker);
        let Ok(n) = rtp::build(&header, &packet.payload.to_bytes(), &mut buf[..]) else {
            return;
        };
        self.send(sock, &buf[..n], dest).await;
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use tokio::time::timeout;

    use super::*;
    use crate::device::at_modem::voice::audio_pair;
    use crate::media::g711::Codec;
    use crate::media::rtp::RtpHeader;
    use crate::media::sdp::{Direction, LocalMedia, SessionDescription};

    const BOUND: Duration = Duration::from_secs(10);

    fn localhost() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    fn negotiated(remote: SocketAddr) -> Negotiated {
        Negotiated {
            media_index: 0,
            remote,
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: Some(101),
            remote_ptime: Some(20),
            direction: Direction::SendRecv,
        }
    }

    /// A session's audio and the device's end of it: (to the session from
    /// the device, from the session to the device).
    fn device() -> (AudioStream, mpsc::Sender<Frame>, mpsc::Receiver<Frame>) {
        let (stream, side) = audio_pair();
        (stream, side.from_device, side.to_device)
    }

    /// Waits (bounded) until `cond` holds for the session's counters.
    async fn until(session: &RtpSession, what: &str, cond: impl Fn(&RtpStatsSnapshot) -> bool) {
        let waited = timeout(BOUND, async {
            loop {
                if cond(&session.stats()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "timed out waiting for {what}: {:?}",
            session.stats()
        );
    }

    async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
        match timeout(BOUND, f).await {
            Ok(v) => v,
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }

    fn samples(frame: &[u8; FRAME_BYTES]) -> impl Iterator<Item = i16> + '_ {
        frame
            .chunks_exact(2)
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
    }

    /// Frame `k` of a continuous 1 kHz tone at about −6 dBFS.
    fn tone_frame(k: usize) -> Frame {
        let mut f: Frame = Box::new([0; FRAME_BYTES]);
        for (i, pair) in f.chunks_exact_mut(2).enumerate() {
            let n = (k * FRAME_SAMPLES + i) as f64;
            let s = 16_000.0 * (2.0 * std::f64::consts::PI * 1000.0 * n / 8000.0 + 0.3).sin();
            pair.copy_from_slice(&(s as i16).to_le_bytes());
        }
        f
    }

    /// Frequency of a frame by its upward zero crossings, interpolated.
    fn frequency(frame: &[u8; FRAME_BYTES]) -> Option<f64> {
        let s: Vec<f64> = samples(frame).map(f64::from).collect();
        let mut crossings = s
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
            .map(|(i, w)| i as f64 + -w[0] / (w[1] - w[0]));
        let first = crossings.next()?;
        let (count, last) = crossings.fold((0usize, first), |(c, _), t| (c + 1, t));
        (count > 0).then(|| count as f64 * 8000.0 / (last - first))
    }

    fn loud(frame: &[u8; FRAME_BYTES]) -> bool {
        samples(frame).any(|s| s.unsigned_abs() > 4000)
    }

    #[tokio::test]
    async fn two_sessions_carry_a_tone_and_dtmf() {
        let ports = PortRange::new(41_000, 41_198).unwrap();
        let (sock_a, sock_b) = (
            ports.bind(localhost()).unwrap(),
            ports.bind(localhost()).unwrap(),
        );
        let (addr_a, addr_b) = (sock_a.local_addr(), sock_b.local_addr());
        assert_eq!((addr_a.port() % 2, addr_b.port() % 2), (0, 0));
        let (audio_a, speak_a, _hear_a) = device();
        let (audio_b, _speak_b, mut hear_b) = device();
        let cancel = CancellationToken::new();
        let config = RtpConfig::default();
        let a = RtpSession::spawn(
            sock_a,
            negotiated(addr_b),
            audio_a,
            config,
            cancel.child_token(),
        )
        .unwrap();
        let mut b = RtpSession::spawn(
            sock_b,
            negotiated(addr_a),
            audio_b,
            config,
            cancel.child_token(),
        )
        .unwrap();

        // Device A speaks a tone at the device's pace.
        let speaker = tokio::spawn(async move {
            let mut clock = tokio::time::interval(FRAME_PERIOD);
            for k in 0..250 {
                clock.tick().await;
                if speak_a.send(tone_frame(k)).await.is_err() {
                    break;
                }
            }
        });
        let heard = bounded("40 tone frames at device B", async {
            let mut heard = Vec::new();
            while heard.len() < 40 {
                let Some(frame) = hear_b.recv().await else {
                    break;
                };
                if loud(&frame) {
                    heard.push(frame);
                }
            }
            heard
        })
        .await;
        assert_eq!(heard.len(), 40);
        let freqs: Vec<f64> = heard.iter().filter_map(|f| frequency(f)).collect();
        let mean = freqs.iter().sum::<f64>() / freqs.len() as f64;
        assert!((mean - 1000.0).abs() < 3.0, "measured {mean} Hz");
        assert!(freqs.iter().all(|f| (f - 1000.0).abs() < 10.0), "{freqs:?}");

        // DTMF from A reaches B as exactly these digits, each once.
        for c in "1#9D".chars() {
            a.send_digit(Digit::from_char(c).unwrap()).unwrap();
        }
        let digits = bounded("four digits at B", async {
            let mut s = String::new();
            while s.len() < 4 {
                let Some(d) = b.received_digits.recv().await else {
                    break;
                };
                s.push(d.as_char());
            }
            s
        })
        .await;
        assert_eq!(digits, "1#9D");

        cancel.cancel();
        let (stats_a, stats_b) = (a.join().await, b.join().await);
        speaker.abort();
        assert_eq!(stats_a.dtmf_out, 4);
        assert_eq!(stats_b.dtmf_in, 4);
        assert!(stats_b.packets_in >= 40, "{stats_b:?}");
        assert!(stats_b.frames_played >= 40, "{stats_b:?}");
        assert_eq!(stats_b.latched, Some(addr_a));
        assert_eq!(
            (
                stats_b.dropped_wrong_source,
                stats_b.dropped_wrong_payload_type,
                stats_b.dropped_malformed
            ),
            (0, 0, 0)
        );
        assert_eq!(
            ports.leased(),
            0,
            "ports are released when the sessions end"
        );
    }

    /// An RTP packet of PCMU samples all of value `sample`.
    fn packet(pt: u8, sequence: u16, sample: i16) -> Vec<u8> {
        let header = RtpHeader {
            marker: false,
            payload_type: pt,
            sequence,
            timestamp: u32::from(sequence) * 160,
            ssrc: 0xABCD,
        };
        let mut buf = vec![0u8; HEADER_BYTES + FRAME_SAMPLES];
        let n = rtp::build(
            &header,
            &[Codec::Pcmu.encode(sample); FRAME_SAMPLES],
            &mut buf,
        )
        .unwrap();
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn unexpected_sources_and_payload_types_are_dropped_and_counted() {
        let ports = PortRange::new(41_200, 41_298).unwrap();
        let sock = ports.bind(localhost()).unwrap();
        let session_addr = sock.local_addr();
        let peer = UdpSocket::bind((localhost(), 0)).await.unwrap();
        let peer_addr = peer.local_addr().unwrap();
        let spoofer = UdpSocket::bind((localhost(), 0)).await.unwrap();
        let stranger = UdpSocket::bind((IpAddr::from([127, 0, 0, 2]), 0))
            .await
            .unwrap();
        // The SDP names the peer's IP but another port (a NAT in between):
        // latching must find the real one.
        let sdp = SocketAddr::new(localhost(), 9);
        let (audio, speak, mut hear) = device();
        let cancel = CancellationToken::new();
        let session = RtpSession::spawn(
            sock,
            negotiated(sdp),
            audio,
            RtpConfig::default(),
            cancel.child_token(),
        )
        .unwrap();

        const SPOOF: i16 = 30_000;
        const GOOD: i16 = 1_000;
        // Another IP than the SDP's, before latching.
        for seq in 0..5 {
            stranger
                .send_to(&packet(0, seq, SPOOF), session_addr)
                .await
                .unwrap();
        }
        until(&session, "5 from the stranger", |s| {
            s.dropped_wrong_source == 5
        })
        .await;
        // The right IP, but a payload type not negotiated (18 = G.729),
        // RTCP, and garbage: none of them latches.
        for seq in 0..3 {
            peer.send_to(&packet(18, seq, GOOD), session_addr)
                .await
                .unwrap();
        }
        peer.send_to(&[0x80, 201, 0, 1, 0, 0, 0, 1], session_addr)
            .await
            .unwrap();
        peer.send_to(b"hello", session_addr).await.unwrap();
        until(&session, "wrong PT, RTCP, malformed", |s| {
            s.dropped_wrong_payload_type == 3 && s.rtcp_ignored == 1 && s.dropped_malformed == 1
        })
        .await;
        assert_eq!(session.stats().latched, None);
        // The peer's audio latches; then a spoofer on the same IP is dropped.
        for seq in 100..105 {
            peer.send_to(&packet(0, seq, GOOD), session_addr)
                .await
                .unwrap();
        }
        until(&session, "latching", |s| s.latched == Some(peer_addr)).await;
        for seq in 105..110 {
            spoofer
                .send_to(&packet(0, seq, SPOOF), session_addr)
                .await
                .unwrap();
        }
        until(&session, "5 from the spoofer", |s| {
            s.dropped_wrong_source == 10
        })
        .await;
        until(&session, "the peer's 5 frames played", |s| {
            s.frames_played == 5
        })
        .await;
        let mut played = 0;
        while let Ok(frame) = hear.try_recv() {
            assert!(samples(&frame).all(|s| s != Codec::Pcmu.decode(Codec::Pcmu.encode(SPOOF))));
            if samples(&frame).all(|s| s == Codec::Pcmu.decode(Codec::Pcmu.encode(GOOD))) {
                played += 1;
            }
        }
        assert_eq!(played, 5);
        assert_eq!(session.stats().packets_in, 5);

        // Our audio now goes to where the peer's came from.
        speak.send(tone_frame(0)).await.unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = bounded("our RTP at the peer", peer.recv_from(&mut buf))
            .await
            .unwrap();
        assert_eq!(from, session_addr);
        let got = rtp::parse(&buf[..n]).unwrap();
        assert_eq!(
            (got.header.payload_type, got.payload.len()),
            (0, FRAME_SAMPLES)
        );
        assert!(got.header.marker, "the first packet starts a talkspurt");

        cancel.cancel();
        let stats = session.join().await;
        assert_eq!(stats.packets_out, 1);
        assert_eq!(stats.dropped_wrong_source, 10);
    }

    const SIPP_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="media interop">
  <send retrans="500"><![CDATA[
INVITE sip:6001@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[call_number]
To: <sip:6001@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
]]></send>
  <recv response="200"/>
  <send><![CDATA[
ACK sip:6001@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[call_number]
To: <sip:6001@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/g711a.pcap"/></action></nop>
  <pause milliseconds="7300"/>
  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_1.pcap"/></action></nop>
  <pause milliseconds="400"/>
  <send retrans="500"><![CDATA[
BYE sip:6001@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[call_number]
To: <sip:6001@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"#;

    /// A response to `request` echoing its Via, From, Call-ID and CSeq.
    fn sip_response(request: &str, status: &str, body: &str) -> String {
        let mut out = format!("SIP/2.0 {status}\r\n");
        for line in request.lines() {
            let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
            match name.as_str() {
                "via" | "from" | "call-id" | "cseq" => out.push_str(&format!("{line}\r\n")),
                "to" => out.push_str(&format!("{line};tag=vss1\r\n")),
                _ => {}
            }
        }
        if !body.is_empty() {
            out.push_str("Contact: <sip:6001@127.0.0.1>\r\nContent-Type: application/sdp\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        out
    }

    fn free_udp_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    /// sipp (Debian's sip-tester) as the peer: its offer is negotiated, then
    /// it plays a recorded PCMA call (30 ms packets from another stack) and
    /// an RFC 2833 "1" from its pcaps into the session.
    #[tokio::test]
    async fn sipp_plays_a_recorded_call_and_a_digit_into_a_session() {
        if std::process::Command::new("sipp")
            .arg("-v")
            .output()
            .is_err()
            || !std::path::Path::new("/usr/share/sip-tester/g711a.pcap").exists()
        {
            panic!("sipp and its pcaps are needed: install Debian's sip-tester (.ci/run does)");
        }
        let dir = tempfile::tempdir().unwrap();
        let scenario = dir.path().join("media.xml");
        std::fs::write(&scenario, SIPP_SCENARIO).unwrap();
        let sip = UdpSocket::bind((localhost(), 0)).await.unwrap();
        let sip_addr = sip.local_addr().unwrap();
        let media_port = PortRange::new(42_000, 42_998)
            .unwrap()
            .bind(localhost())
            .unwrap()
            .local_addr()
            .port();
        let mut sipp = tokio::process::Command::new("sipp")
            .arg(sip_addr.to_string())
            .args([
                "-sf",
                scenario.to_str().unwrap(),
                "-m",
                "1",
                "-i",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &free_udp_port().to_string(),
                "-mp",
                &media_port.to_string(),
            ])
            .args(["-timeout", "30s", "-nostdin"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();

        let ports = PortRange::new(42_100, 42_198).unwrap();
        let (audio, _speak, mut hear) = device();
        let mut audio = Some(audio);
        let cancel = CancellationToken::new();
        let mut session: Option<RtpSession> = None;
        let mut answer_sdp = String::new();
        let mut buf = vec![0u8; 65_536];
        let mut heard = Vec::new();
        let mut digits = String::new();
        let bye = bounded("sipp's BYE", async {
            loop {
                tokio::select! {
                    got = sip.recv_from(&mut buf) => {
                        let (n, from) = got.unwrap();
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        if text.starts_with("INVITE") {
                            if session.is_none() {
                                let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
                                let offer = SessionDescription::parse(body.as_bytes()).unwrap();
                                let chosen = crate::media::sdp::negotiate(&offer).unwrap();
                                assert_eq!((chosen.codec, chosen.telephone_event), (Codec::Pcma, Some(101)));
                                assert_eq!(chosen.remote, SocketAddr::new(localhost(), media_port));
                                let sock = ports.bind(localhost()).unwrap();
                                let local = LocalMedia {
                                    address: localhost(),
                                    port: sock.local_addr().port(),
                                    session_id: 1,
                                    session_version: 1,
                                };
                                answer_sdp = crate::media::sdp::answer(&offer, &chosen, &local);
                                let audio = audio.take().unwrap();
                                session = Some(RtpSession::spawn(sock, chosen, audio, RtpConfig::default(), cancel.child_token()).unwrap());
                            }
                            let reply = sip_response(&text, "200 OK", &answer_sdp);
                            sip.send_to(reply.as_bytes(), from).await.unwrap();
                        } else if text.starts_with("BYE") {
                            let reply = sip_response(&text, "200 OK", "");
                            sip.send_to(reply.as_bytes(), from).await.unwrap();
                            return;
                        }
                    }
                    Some(frame) = hear.recv() => heard.push(frame),
                    Some(d) = async { match session.as_mut() { Some(s) => s.received_digits.recv().await, None => std::future::pending().await } } => digits.push(d.as_char()),
                }
            }
        });
        bye.await;
        let _ = bounded("sipp to exit", sipp.wait()).await;
        let session = session.expect("sipp sent an INVITE");
        // Frames still queued at the device side.
        while let Ok(frame) = hear.try_recv() {
            heard.push(frame);
        }
        let stats = session.join().await;
        eprintln!("sipp interop: {} frames heard, {stats:?}", heard.len());
        assert_eq!(digits, "1", "{stats:?}");
        // 236 packets of 30 ms: 7.08 s, 354 frames.
        assert!(stats.packets_in >= 236, "{stats:?}");
        assert_eq!(
            (
                stats.dropped_wrong_source,
                stats.dropped_wrong_payload_type,
                stats.dropped_malformed
            ),
            (0, 0, 0),
            "{stats:?}"
        );
        assert!(heard.len() >= 340, "{} frames, {stats:?}", heard.len());
        assert!(
            heard.iter().filter(|f| loud(f)).count() > 50,
            "the recording is heard"
        );
    }

    /// A peer ignoring our `a=ptime:20`: 30 ms packets become three frames
    /// per two packets, in order, nothing lost.
    #[tokio::test]
    async fn longer_packets_are_cut_into_frames() {
        let ports = PortRange::new(41_500, 41_598).unwrap();
        let sock = ports.bind(localhost()).unwrap();
        let session_addr = sock.local_addr();
        let peer = UdpSocket::bind((localhost(), 0)).await.unwrap();
        let (audio, _speak, mut hear) = device();
        let remote = negotiated(peer.local_addr().unwrap());
        let cancel = CancellationToken::new();
        let session = RtpSession::spawn(
            sock,
            remote,
            audio,
            RtpConfig::default(),
            cancel.child_token(),
        )
        .unwrap();
        let values = [1000i16, -2000, 3000, -4000];
        for (k, v) in values.iter().enumerate() {
            let header = RtpHeader {
                marker: k == 0,
                payload_type: 0,
                sequence: 500 + k as u16,
                timestamp: 240 * k as u32,
                ssrc: 5,
            };
            let mut buf = [0u8; HEADER_BYTES + 240];
            let n = rtp::build(&header, &[Codec::Pcmu.encode(*v); 240], &mut buf).unwrap();
            peer.send_to(&buf[..n], session_addr).await.unwrap();
        }
        let frames = bounded("six frames", async {
            let mut frames = Vec::new();
            while frames.len() < 6 {
                let Some(f) = hear.recv().await else { break };
                frames.push(f);
            }
            frames
        })
        .await;
        let q = |v: i16| Codec::Pcmu.decode(Codec::Pcmu.encode(v));
        let halves: Vec<(i16, i16)> = frames
            .iter()
            .map(|f| {
                let s: Vec<i16> = samples(f).collect();
                (s[0], s[159])
            })
            .collect();
        let [a, b, c, d] = values.map(q);
        assert_eq!(halves, vec![(a, a), (a, b), (b, b), (c, c), (c, d), (d, d)]);
        cancel.cancel();
        let stats = session.join().await;
        assert_eq!((stats.frames_played, stats.lost), (4, 0));
    }

    #[tokio::test]
    async fn dropping_the_handle_ends_the_session_and_frees_the_port() {
        let ports = PortRange::new(41_300, 41_398).unwrap();
        let sock = ports.bind(localhost()).unwrap();
        let (audio, _speak, _hear) = device();
        let remote = negotiated(SocketAddr::new(localhost(), 9));
        let session = RtpSession::spawn(
            sock,
            remote,
            audio,
            RtpConfig::default(),
            CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(ports.leased(), 1);
        drop(session);
        bounded("the port back", async {
            while ports.leased() != 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    #[tokio::test]
    async fn port_range_hands_out_even_ports_and_takes_them_back() {
        assert!(PortRange::new(41_401, 41_401).is_err());
        assert_eq!(PortRange::new(1, 3).unwrap().capacity(), 1);
        let ports = PortRange::new(41_401, 41_406).unwrap();
        assert_eq!(ports.capacity(), 3);
        let held: Vec<RtpSocket> = (0..3).map(|_| ports.bind(localhost()).unwrap()).collect();
        let mut got: Vec<u16> = held.iter().map(|s| s.local_addr().port()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![41_402, 41_404, 41_406]);
        assert!(matches!(
            ports.bind(localhost()),
            Err(BindError::Exhausted { .. })
        ));
        drop(held);
        assert_eq!(ports.leased(), 0);
        assert!(ports.bind(localhost()).is_ok());
    }

    /// A session whose peer is `peer`, with these timeouts and our
    /// `direction`; the device's ends are returned to keep them open.
    fn watched(
        ports: &Arc<PortRange>,
        peer: SocketAddr,
        direction: Direction,
        peer_timeout: Option<Duration>,
        hold_timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> (RtpSession, mpsc::Sender<Frame>, mpsc::Receiver<Frame>) {
        let (audio, speak, hear) = device();
        let config = RtpConfig {
            peer_timeout,
            hold_timeout,
            ..RtpConfig::default()
        };
        let remote = Negotiated {
            direction,
            ..negotiated(peer)
        };
        let sock = ports.bind(localhost()).unwrap();
        let session = RtpSession::spawn(sock, remote, audio, config, cancel.child_token()).unwrap();
        (session, speak, hear)
    }

    #[tokio::test]
    async fn a_silent_peer_is_reported_once_a_talking_one_is_not() {
        let ports = PortRange::new(41_600, 41_698).unwrap();
        let cancel = CancellationToken::new();
        let peer = UdpSocket::bind((localhost(), 0)).await.unwrap();
        let peer_addr = peer.local_addr().unwrap();

        // Nobody ever sends: reported past the timeout, once.
        let limit = Duration::from_millis(300);
        let (mut mute, _s1, _h1) = watched(
            &ports,
            peer_addr,
            Direction::SendRecv,
            Some(limit),
            None,
            &cancel,
        );
        let silence = bounded("the silent peer reported", mute.peer_silent()).await;
        assert!(
            silence > limit,
            "reported after {silence:?}, before the {limit:?} timeout"
        );
        assert!(
            timeout(Duration::from_millis(600), mute.peer_silent())
                .await
                .is_err(),
            "reported twice"
        );

        // A peer sending comfort noise (a payload type we did not
        // negotiate) every 20 ms is alive; once it stops, it is reported.
        let limit = Duration::from_secs(1);
        let (mut alive, _s2, _h2) = watched(
            &ports,
            peer_addr,
            Direction::SendRecv,
            Some(limit),
            None,
            &cancel,
        );
        let target = alive.local_addr();
        let sender = tokio::spawn(async move {
            let mut clock = tokio::time::interval(FRAME_PERIOD);
            for seq in 0u16.. {
                clock.tick().await;
                if peer.send_to(&packet(13, seq, 0), target).await.is_err() {
                    break;
                }
            }
        });
        assert!(
            timeout(Duration::from_secs(3), alive.peer_silent())
                .await
                .is_err(),
            "a peer sending every 20 ms was reported silent: {:?}",
            alive.stats()
        );
        assert!(
            alive.stats().dropped_wrong_payload_type > 0,
            "{:?}",
            alive.stats()
        );
        sender.abort();
        let silence = bounded("the peer reported once it stopped", alive.peer_silent()).await;
        assert!(silence > limit, "{silence:?}");
        cancel.cancel();
    }

    #[tokio::test]
    async fn on_hold_the_hold_timeout_applies_and_a_reinvite_restarts_the_clock() {
        let ports = PortRange::new(41_700, 41_798).unwrap();
        let cancel = CancellationToken::new();
        let peer = UdpSocket::bind((localhost(), 0)).await.unwrap();
        let peer_addr = peer.local_addr().unwrap();
        let limit = Duration::from_millis(200);
        // The peer holds the call (its recvonly: our sendonly) and the hold
        // timeout is off: its silence is not reported...
        let (mut held, _s, _h) = watched(
            &ports,
            peer_addr,
            Direction::SendOnly,
            Some(limit),
            None,
            &cancel,
        );
        assert!(
            timeout(Duration::from_secs(1), held.peer_silent())
                .await
                .is_err(),
            "a held call's silence was reported with no hold timeout"
        );
        // ...until it takes the call back (a re-INVITE with sendrecv).
        held.update_remote(negotiated(peer_addr));
        let resumed_at = Instant::now();
        let silence = bounded("the resumed peer's silence", held.peer_silent()).await;
        // Counted from the re-INVITE (set in the task after our call), not
        // from the start of the hold.
        assert!(
            silence > limit && silence <= resumed_at.elapsed(),
            "{silence:?}: the clock did not restart at the re-INVITE"
        );

        // With a hold timeout, a held call's silence is reported after it.
        let (mut held, _s, _h) = watched(
            &ports,
            peer_addr,
            Direction::Inactive,
            None,
            Some(limit),
            &cancel,
        );
        let silence = bounded("the held peer's silence", held.peer_silent()).await;
        assert!(silence > limit, "{silence:?}");
        cancel.cancel();
    }
}
