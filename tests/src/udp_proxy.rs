//! A fault-injecting UDP proxy for cross-process tests: it sits between a
//! QUIC client (the hub) and its server (the control plane) on loopback and
//! drops, delays, reorders, duplicates or cuts datagrams on command.
//!
//! It owns one listening socket (the address the client is given), one
//! upstream socket per client address (so the server's replies route back to
//! the right client), and the fault decisions, which live in a private
//! sans-IO state machine (`Core`: datagrams and time in, datagrams due out)
//! driven by one seeded RNG per direction: the fate of the n-th datagram
//! in a direction depends only on the seed, `n` and the faults in force, so a
//! failing run is replayed from its seed ([`seed_from_env`]).
//!
//! It must never: panic on a socket error (it logs to stderr and carries on),
//! grow without bound (at most [`MAX_QUEUED`] datagrams / [`MAX_QUEUED_BYTES`]
//! waiting and [`MAX_CLIENTS`] clients; beyond that it drops and counts), draw
//! randomness from anywhere but its seed, or outlive the last of its
//! [`UdpProxy`] and [`ProxyHandle`]s (dropping the last one stops its thread
//! and closes its sockets before `drop` returns).
//!
//! **Invariant:** once nothing is queued, per direction
//! `received + duplicated == forwarded + dropped`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{Notify, oneshot};

/// Largest datagram the proxy accepts (bigger ones cannot exist over UDP).
pub const MAX_DATAGRAM: usize = 65_535;
/// Most datagrams waiting at once (delayed or held back); more are dropped.
pub const MAX_QUEUED: usize = 10_000;
/// Most payload bytes waiting at once; more are dropped.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Most distinct client addresses; datagrams from further ones are dropped.
pub const MAX_CLIENTS: usize = 256;
/// The default [`Faults::reorder_hold`].
pub const DEFAULT_REORDER_HOLD: Duration = Duration::from_millis(100);
/// Longest `delay + jitter` applied; larger settings are clamped to it.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Environment variable that fixes the seed of [`seed_from_env`].
pub const SEED_ENV: &str = "UDP_PROXY_SEED";

/// Pause after an unexpected socket error, so a persistent one cannot spin.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Which way a datagram travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client (the hub) to the upstream server (the control plane).
    ToServer,
    /// From the upstream server back to a client.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
}

/// The faults applied to every datagram, independently in each direction.
/// `Default` is no fault at all. Rates are probabilities in `0.0..=1.0`
/// (`1.0` means every datagram; NaN or negative means none).
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Probability that a datagram is dropped.
    pub drop_rate: f64,
    /// Fixed delay added to every datagram.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` for each datagram (and
    /// each duplicate) independently, which reorders datagrams closer
    /// together than the jitter.
    pub jitter: Duration,
    /// Probability that a datagram is held back and released right after the
    /// next one of its flow (or after `reorder_hold` if none comes).
    pub reorder_rate: f64,
    /// How long a held-back datagram waits for the next one before it is
    /// released anyway (on top of its delay); [`DEFAULT_REORDER_HOLD`].
    pub reorder_hold: Duration,
    /// Probability that a datagram is sent twice.
    pub duplicate_rate: f64,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            drop_rate: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder_rate: 0.0,
            reorder_hold: DEFAULT_REORDER_HOLD,
            duplicate_rate: 0.0,
        }
    }
}

impl Faults {
    /// A bad but usable network: 10 % drop, 0–30 ms jitter, 5 % reorder,
    /// 2 % duplicate.
    pub fn hostile() -> Faults {
        Faults {
            drop_rate: 0.10,
            delay: Duration::ZERO,
            jitter: Duration::from_millis(30),
            reorder_rate: 0.05,
            reorder_hold: DEFAULT_REORDER_HOLD,
            duplicate_rate: 0.02,
        }
    }
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that reached the proxy.
    pub received: u64,
    /// Datagrams sent on (duplicates included), counted just before the send
    /// so a receiver never sees one the counter does not.
    pub forwarded: u64,
    /// Datagrams lost: drop rate, cut, full queue, too many clients, or a
    /// failed send.
    pub dropped: u64,
    /// Extra copies made by the duplicate rate.
    pub duplicated: u64,
    /// Datagrams held back and released after a later one.
    pub reordered: u64,
    /// Sends the operating system refused (also counted in `dropped`).
    pub send_errors: u64,
}

/// Counters of a proxy, readable at any time through [`ProxyHandle::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client → server.
    pub to_server: DirectionStats,
    /// Server → client.
    pub to_client: DirectionStats,
    /// Datagrams waiting right now (delayed or held back), both directions.
    pub queued: usize,
}

impl ProxyStats {
    /// The counters of `direction`.
    pub fn direction(&self, direction: Direction) -> &DirectionStats {
        match direction {
            Direction::ToServer => &self.to_server,
            Direction::ToClient => &self.to_client,
        }
    }

    fn direction_mut(&mut self, direction: Direction) -> &mut DirectionStats {
        match direction {
            Direction::ToServer => &mut self.to_server,
            Direction::ToClient => &mut self.to_client,
        }
    }
}

/// A seed for a test's proxy: `$UDP_PROXY_SEED` when set (to replay a failed
/// run), otherwise one taken from the clock. Printed to stderr either way, so
/// a failing test's output says how to replay it.
///
/// # Panics
/// If `$UDP_PROXY_SEED` is set but is not a `u64`: a replay with the wrong
/// seed would be worse than none.
pub fn seed_from_env() -> u64 {
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{SEED_ENV}={text:?} is not a u64 seed ({e})")),
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            // Truncation is fine: any 64 bits of the clock make a seed.
            Rng::new(nanos as u64 ^ u64::from(std::process::id())).next_u64()
        }
    };
    eprintln!("udp proxy seed {seed} (replay with {SEED_ENV}={seed})");
    seed
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, seedable, and good enough to
/// pick faults.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..=max` (modulo bias is irrelevant here).
    fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }

    /// An independent stream for `direction`.
    fn for_direction(seed: u64, direction: Direction) -> Rng {
        let tag = match direction {
            Direction::ToServer => 0x5EED_0000_0000_0001,
            Direction::ToClient => 0x5EED_0000_0000_0002,
        };
        Rng::new(Rng::new(seed ^ tag).next_u64())
    }
}

/// A datagram due to be sent by the driver.
#[derive(Debug, PartialEq, Eq)]
struct Transmit {
    direction: Direction,
    /// The client of the flow: the source for `ToServer`, the destination for
    /// `ToClient`.
    client: SocketAddr,
    data: Vec<u8>,
}

/// A datagram waiting for its deadline; ordered by `(deadline, seq)`.
#[derive(Debug)]
struct Queued {
    deadline: Instant,
    seq: u64,
    transmit: Transmit,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// A datagram held back to be released after the next one of its flow.
#[derive(Debug)]
struct Held {
    release_by: Instant,
    data: Vec<u8>,
    copies: u8,
}

/// The sans-IO heart of the proxy: datagrams and time in, datagrams to send
/// out, every fault decided here.
#[derive(Debug)]
struct Core {
    faults: Faults,
    cut: bool,
    cut_until: Option<Instant>,
    rng: [Rng; 2],
    queue: BinaryHeap<Reverse<Queued>>,
    held: HashMap<(SocketAddr, Direction), Held>,
    queued_bytes: usize,
    seq: u64,
    stats: ProxyStats,
}

impl Core {
    fn new(seed: u64) -> Core {
        Core {
            faults: Faults::default(),
            cut: false,
            cut_until: None,
            rng: [
                Rng::for_direction(seed, Direction::ToServer),
                Rng::for_direction(seed, Direction::ToClient),
            ],
            queue: BinaryHeap::new(),
            held: HashMap::new(),
            queued_bytes: 0,
            seq: 0,
            stats: ProxyStats::default(),
        }
    }

    fn is_cut(&self, now: Instant) -> bool {
        self.cut || self.cut_until.is_some_and(|until| now < until)
    }

    fn stats(&self) -> ProxyStats {
        ProxyStats {
            queued: self.queue.len() + self.held.len(),
            ..self.stats
        }
    }

    /// Counts a datagram lost before it reached the fault logic.
    fn refuse(&mut self, direction: Direction) {
        let stats = self.stats.direction_mut(direction);
        stats.received += 1;
        stats.dropped += 1;
    }

    /// A datagram arrived at `now`. Every datagram draws the same number of
    /// random values whatever happens to it, so the fate of the n-th one in
    /// a direction depends only on the seed, `n` and the faults.
    fn on_datagram(&mut self, now: Instant, direction: Direction, client: SocketAddr, data: &[u8]) {
        let faults = &self.faults;
        let rng = &mut self.rng[direction.index()];
        let lose = rng.next_f64() < faults.drop_rate;
        let duplicate = rng.next_f64() < faults.duplicate_rate;
        let hold = rng.next_f64() < faults.reorder_rate;
        let jitter = u64::try_from(faults.jitter.as_nanos()).unwrap_or(u64::MAX);
        let hold_for = faults.reorder_hold.min(MAX_DELAY);
        let delays = [(); 2].map(|()| {
            faults
                .delay
                .saturating_add(Duration::from_nanos(rng.up_to(jitter)))
                .min(MAX_DELAY)
        });

        self.stats.direction_mut(direction).received += 1;
        if lose || self.is_cut(now) {
            self.stats.direction_mut(direction).dropped += 1;
            return;
        }
        let copies: u8 = if duplicate { 2 } else { 1 };
        if duplicate {
            self.stats.direction_mut(direction).duplicated += 1;
        }

        let key = (client, direction);
        if let Some(held) = self.held.remove(&key) {
            // Release the held one right after this one (and its copy).
            self.queued_bytes -= held.data.len();
            let mut last = now;
            for delay in &delays[..usize::from(copies)] {
                last = last.max(now + *delay);
                self.push(now + *delay, direction, client, data.to_vec());
            }
            for _ in 0..held.copies {
                self.push(last, direction, client, held.data.clone());
            }
            self.stats.direction_mut(direction).reordered += 1;
            return;
        }
        if hold && self.has_room(data.len()) {
            self.queued_bytes += data.len();
            let held = Held {
                release_by: now + delays[0] + hold_for,
                data: data.to_vec(),
                copies,
            };
            self.held.insert(key, held);
            return;
        }
        for delay in &delays[..usize::from(copies)] {
            self.push(now + *delay, direction, client, data.to_vec());
        }
    }

    fn has_room(&self, len: usize) -> bool {
        self.queue.len() + self.held.len() < MAX_QUEUED
            && self.queued_bytes + len <= MAX_QUEUED_BYTES
    }

    fn push(&mut self, deadline: Instant, direction: Direction, client: SocketAddr, data: Vec<u8>) {
        if !self.has_room(data.len()) {
            self.stats.direction_mut(direction).dropped += 1;
            return;
        }
        self.queued_bytes += data.len();
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            deadline,
            seq: self.seq,
            transmit: Transmit {
                direction,
                client,
                data,
            },
        }));
    }

    /// The next datagram due at `now`, if any, counted as forwarded from
    /// here (so whoever receives it finds it counted). A datagram whose time
    /// comes while the link is cut is lost.
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.held.values().any(|h| h.release_by <= now) {
            let due: Vec<_> = self
                .held
                .iter()
                .filter(|(_, h)| h.release_by <= now)
                .map(|(key, _)| *key)
                .collect();
            for key in due {
                if let Some(held) = self.held.remove(&key) {
                    self.queued_bytes -= held.data.len();
                    for _ in 0..held.copies {
                        self.push(held.release_by, key.1, key.0, held.data.clone());
                    }
                }
            }
        }
        loop {
            if self.queue.peek()?.0.deadline > now {
                return None;
            }
            let Reverse(queued) = self.queue.pop()?;
            self.queued_bytes -= queued.transmit.data.len();
            if self.is_cut(now) {
                self.stats.direction_mut(queued.transmit.direction).dropped += 1;
                continue;
            }
            self.stats
                .direction_mut(queued.transmit.direction)
                .forwarded += 1;
            return Some(queued.transmit);
        }
    }

    /// When [`Core::poll_transmit`] next has something to do.
    fn next_deadline(&self) -> Option<Instant> {
        let queued = self.queue.peek().map(|q| q.0.deadline);
        let held = self.held.values().map(|h| h.release_by).min();
        queued.into_iter().chain(held).min()
    }

    /// The driver could not send a datagram [`Core::poll_transmit`] gave it.
    fn send_failed(&mut self, direction: Direction) {
        let stats = self.stats.direction_mut(direction);
        stats.forwarded -= 1;
        stats.dropped += 1;
        stats.send_errors += 1;
    }
}

/// State shared by the proxy's thread and its handles.
struct Shared {
    core: Mutex<Core>,
    upstream: Mutex<SocketAddr>,
    /// Something was queued from outside the main loop.
    wake: Notify,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn upstream(&self) -> SocketAddr {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Owns the thread; stopping it is dropping this (the last handle went).
struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    seed: u64,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("udp proxy {}: its thread panicked", self.addr);
        }
    }
}

/// A running proxy. It stops (thread joined, sockets closed) when it and
/// every [`ProxyHandle`] taken from it are dropped.
pub struct UdpProxy {
    handle: ProxyHandle,
}

/// A cloneable remote control of a running [`UdpProxy`]; it keeps the proxy
/// running while it lives.
#[derive(Clone)]
pub struct ProxyHandle {
    inner: Arc<Inner>,
}

impl UdpProxy {
    /// Starts a proxy on a free loopback port (IPv4 or IPv6 as `upstream`)
    /// forwarding to `upstream`, with no faults, its decisions drawn from
    /// `seed`.
    pub fn start(upstream: SocketAddr, seed: u64) -> io::Result<UdpProxy> {
        let loopback = match upstream.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        let socket = std::net::UdpSocket::bind(SocketAddr::new(loopback, 0))?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let listener = {
            let _context = runtime.enter();
            UdpSocket::from_std(socket)?
        };
        let shared = Arc::new(Shared {
            core: Mutex::new(Core::new(seed)),
            upstream: Mutex::new(upstream),
            wake: Notify::new(),
        });
        let (shutdown, stop) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("udp-proxy-{}", addr.port()))
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    runtime.block_on(async move {
                        tokio::select! {
                            _ = stop => {}
                            () = run(shared, listener) => {}
                        }
                    });
                    // Dropping the runtime here ends the reply tasks and
                    // closes their sockets before the join returns.
                }
            })?;
        eprintln!("udp proxy {addr} -> {upstream}, seed {seed}");
        Ok(UdpProxy {
            handle: ProxyHandle {
                inner: Arc::new(Inner {
                    shared,
                    addr,
                    seed,
                    shutdown: Some(shutdown),
                    thread: Some(thread),
                }),
            },
        })
    }

    /// The address to give the client instead of the server's.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// The seed its fault decisions are drawn from.
    pub fn seed(&self) -> u64 {
        self.handle.seed()
    }

    /// A remote control (it keeps the proxy running while it lives).
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }
}

impl ProxyHandle {
    /// The address to give the client instead of the server's.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The seed its fault decisions are drawn from.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// Applies `faults` to every datagram arriving from now on (the cut is
    /// separate: see [`ProxyHandle::cut`]).
    pub fn set(&self, faults: Faults) {
        self.inner.shared.core().faults = faults;
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.inner.shared.core().faults.clone()
    }

    /// Link down (`true`): every datagram, both ways, is lost until
    /// `cut(false)`, including those already delayed. `cut(false)` also ends
    /// a [`ProxyHandle::cut_for`].
    pub fn cut(&self, down: bool) {
        let mut core = self.inner.shared.core();
        core.cut = down;
        core.cut_until = None;
    }

    /// Link down for `duration` from now, then up again by itself.
    pub fn cut_for(&self, duration: Duration) {
        let now = Instant::now();
        self.inner.shared.core().cut_until =
            Some(now.checked_add(duration).unwrap_or(now + MAX_DELAY));
    }

    /// Whether the link is down now.
    pub fn is_cut(&self) -> bool {
        self.inner.shared.core().is_cut(Instant::now())
    }

    /// Sends client datagrams to `upstream` from now on (a server restarted
    /// on another port); replies from anywhere still reach the client.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self
            .inner
            .shared
            .upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = upstream;
    }

    /// Where client datagrams go.
    pub fn upstream(&self) -> SocketAddr {
        self.inner.shared.upstream()
    }

    /// The counters so far.
    pub fn stats(&self) -> ProxyStats {
        self.inner.shared.core().stats()
    }
}

/// The proxy's main loop: client datagrams in, every due datagram out.
async fn run(shared: Arc<Shared>, listener: UdpSocket) {
    let mut sessions: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let next = flush(&shared, &listener, &sessions).await;
        let timer = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = listener.recv_from(&mut buf) => match received {
                Ok((len, client)) => {
                    if open_session(&shared, &mut sessions, client).await {
                        let now = Instant::now();
                        shared.core().on_datagram(now, Direction::ToServer, client, &buf[..len]);
                    } else {
                        shared.core().refuse(Direction::ToServer);
                    }
                }
                Err(e) => socket_error("receiving from clients", &e).await,
            },
            () = shared.wake.notified() => {}
            () = timer => {}
        }
    }
}

/// Makes sure `client` has its upstream socket and reply task; `false` if it
/// cannot have one.
async fn open_session(
    shared: &Arc<Shared>,
    sessions: &mut HashMap<SocketAddr, Arc<UdpSocket>>,
    client: SocketAddr,
) -> bool {
    if sessions.contains_key(&client) {
        return true;
    }
    if sessions.len() >= MAX_CLIENTS {
        eprintln!("udp proxy: more than {MAX_CLIENTS} clients, dropping {client}");
        return false;
    }
    let upstream = shared.upstream();
    let local = match upstream.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    match UdpSocket::bind(SocketAddr::new(local, 0)).await {
        Ok(socket) => {
            let socket = Arc::new(socket);
            sessions.insert(client, Arc::clone(&socket));
            tokio::spawn(replies(Arc::clone(shared), socket, client));
            true
        }
        Err(e) => {
            eprintln!("udp proxy: cannot bind an upstream socket for {client} on {local}: {e}");
            false
        }
    }
}

/// Feeds the server's replies to `client` into the core.
async fn replies(shared: Arc<Shared>, socket: Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, _server)) => {
                let now = Instant::now();
                shared
                    .core()
                    .on_datagram(now, Direction::ToClient, client, &buf[..len]);
                shared.wake.notify_one();
            }
            Err(e) => socket_error("receiving from the server", &e).await,
        }
    }
}

/// Sends every due datagram; returns when the next one is due.
async fn flush(
    shared: &Shared,
    listener: &UdpSocket,
    sessions: &HashMap<SocketAddr, Arc<UdpSocket>>,
) -> Option<Instant> {
    loop {
        let due: Vec<Transmit> = {
            let mut core = shared.core();
            let now = Instant::now();
            std::iter::from_fn(|| core.poll_transmit(now)).collect()
        };
        if due.is_empty() {
            return shared.core().next_deadline();
        }
        for transmit in due {
            let sent = match transmit.direction {
                Direction::ToServer => match sessions.get(&transmit.client) {
                    Some(socket) => send(socket, &transmit.data, shared.upstream()).await,
                    None => false,
                },
                Direction::ToClient => send(listener, &transmit.data, transmit.client).await,
            };
            if !sent {
                shared.core().send_failed(transmit.direction);
            }
        }
    }
}

async fn send(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> bool {
    // A refusal may be the ICMP error of an earlier datagram reported late
    // (the server was down): try once more.
    for _ in 0..2 {
        match socket.send_to(data, to).await {
            Ok(_) => return true,
            Err(e) if is_refusal(&e) => {}
            Err(e) => {
                eprintln!("udp proxy: sending {} bytes to {to}: {e}", data.len());
                return false;
            }
        }
    }
    false
}

fn is_refusal(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

/// Logs an unexpected receive error and pauses; a refusal (the ICMP error of
/// a datagram sent to a server that is down) is expected and passed over.
async fn socket_error(what: &str, e: &io::Error) {
    if is_refusal(e) {
        return;
    }
    eprintln!("udp proxy: {what}: {e}");
    tokio::time::sleep(ERROR_PAUSE).await;
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket as StdUdpSocket;
    use std::sync::mpsc;

    use super::*;
    use crate::wait_for;

    const PATIENCE: Duration = Duration::from_secs(3);
    const QUIET: Duration = Duration::from_millis(100);
    const STOP: &[u8] = b"\0echo-stop";

    /// A UDP echo server that prefixes replies with `tag` and reports every
    /// datagram it receives, in order.
    struct Echo {
        addr: SocketAddr,
        seen: mpsc::Receiver<Vec<u8>>,
        thread: Option<JoinHandle<()>>,
    }

    impl Echo {
        fn start(tag: &'static [u8]) -> Echo {
            let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = socket.local_addr().unwrap();
            let (tx, seen) = mpsc::channel();
            let thread = std::thread::spawn(move || {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                loop {
                    let (len, from) = match socket.recv_from(&mut buf) {
                        Ok(got) => got,
                        Err(e) if is_refusal(&e) => continue,
                        Err(e) => panic!("echo server: {e}"),
                    };
                    if &buf[..len] == STOP {
                        return;
                    }
                    let _ = tx.send(buf[..len].to_vec());
                    let mut reply = tag.to_vec();
                    reply.extend_from_slice(&buf[..len]);
                    let _ = socket.send_to(&reply, from);
                }
            });
            Echo {
                addr,
                seen,
                thread: Some(thread),
            }
        }

        fn next_seen(&self) -> Vec<u8> {
            self.seen
                .recv_timeout(PATIENCE)
                .expect("the echo server got a datagram")
        }
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
            socket.send_to(STOP, self.addr).unwrap();
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
        }
    }

    fn client() -> StdUdpSocket {
        let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        socket
    }

    fn recv(socket: &StdUdpSocket) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let (len, _) = socket
            .recv_from(&mut buf)
            .expect("a datagram within the timeout");
        buf.truncate(len);
        buf
    }

    fn recv_index(socket: &StdUdpSocket) -> u32 {
        let data = recv(socket);
        u32::from_be_bytes(data.try_into().expect("a 4-byte index"))
    }

    /// Nothing arrives within [`QUIET`]; only called once the counters
    /// already show the datagrams were dropped.
    fn assert_silent(socket: &StdUdpSocket) {
        socket.set_read_timeout(Some(QUIET)).unwrap();
        let mut buf = [0u8; 64];
        let got = socket.recv_from(&mut buf);
        assert!(got.is_err(), "expected nothing, got {got:?}");
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
    }

    fn send_index(socket: &StdUdpSocket, to: SocketAddr, index: u32) {
        socket.send_to(&index.to_be_bytes(), to).unwrap();
    }

    fn wait_stats(
        handle: &ProxyHandle,
        what: &str,
        done: impl Fn(&ProxyStats) -> bool,
    ) -> ProxyStats {
        wait_for(what, PATIENCE, || {
            let stats = handle.stats();
            done(&stats).then_some(stats)
        })
    }

    #[test]
    fn without_faults_every_datagram_is_echoed_in_order() {
        let echo = Echo::start(b"");
        let proxy = UdpProxy::start(echo.addr, 1).unwrap();
        let client = client();
        for i in 0..50 {
            send_index(&client, proxy.addr(), i);
        }
        let got: Vec<u32> = (0..50).map(|_| recv_index(&client)).collect();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        let stats = proxy.handle().stats();
        for direction in [stats.to_server, stats.to_client] {
            assert_eq!(direction.received, 50);
            assert_eq!(direction.forwarded, 50);
            assert_eq!(direction.dropped, 0);
        }
        assert_eq!(stats.queued, 0);
    }

    #[test]
    fn a_datagram_of_the_largest_size_passes_intact() {
        let echo = Echo::start(b"");
        let proxy = UdpProxy::start(echo.addr, 2).unwrap();
        let client = client();
        // The largest UDP payload over IPv4: 65,535 - 20 (IP) - 8 (UDP).
        let big: Vec<u8> = (0..65_507u32).map(|i| (i % 251) as u8).collect();
        client.send_to(&big, proxy.addr()).unwrap();
        assert_eq!(recv(&client), big);
    }

    #[test]
    fn drop_rate_one_lets_nothing_through_and_says_so() {
        let echo = Echo::start(b"");
        let proxy = UdpProxy::start(echo.addr, 3).unwrap();
        let handle = proxy.handle();
        handle.set(Faults {
            drop_rate: 1.0,
            ..Faults::default()
        });
        let client = client();
        for i in 0..20 {
            send_index(&client, proxy.addr(), i);
        }
        let stats = wait_stats(&handle, "20 drops", |s| s.to_server.dropped == 20);
        assert_eq!(stats.to_server.received, 20);
        assert_eq!(stats.to_server.forwarded, 0);
        assert_eq!(stats.to_client, DirectionStats::default());
        assert_silent(&client);
        assert!(echo.seen.try_recv().is_err(), "the server got nothing");
    }

    #[test]
    fn a_cut_drops_everything_until_lifted() {
        let echo = Echo::start(b"");
        let proxy = UdpProxy::start(echo.addr, 4).unwrap();
        let handle = proxy.handle();
        let client = client();

        handle.cut(true);
        assert!(handle.is_cut());
        for i in 0..5 {
            send_index(&client, proxy.addr(), i);
        }
        wait_stats(&handle, "5 drops", |s| s.to_server.dropped == 5);
        assert_silent(&client);

        handle.cut(false);
        send_index(&client, proxy.addr(), 5);
        assert_eq!(recv_index(&client), 5);

        handle.cut_for(Duration::from_millis(250));
        send_index(&client, proxy.addr(), 6);
        wait_stats(&handle, "the 6th drop", |s| s.to_server.dropped == 6);
        wait_for("the cut to heal by itself", PATIENCE, || {
            (!handle.is_cut()).then_some(())
        });
        send_index(&client, proxy.addr(), 7);
        assert_eq!(recv_index(&client), 7);
    }

    #[test]
    fn a_cut_also_loses_datagrams_already_delayed() {
        let echo = Echo::start(b"");
        let proxy = UdpProxy::start(echo.addr, 5).unwrap();
        let handle = proxy.handle();
        handle.set(Faults {
            delay: Duration::from_millis(300),
            ..Faults::default()
        });
        let client = client();
        send_index(&client, proxy.addr(), 0);
        wait_stats(&handle, "the datagram queued", |s| s.queued == 1);
        handle.cut(true);
        wait_stats(&handle, "the queued datagram lost", |s| {
            s.to_server.dropped == 1 && s.queued == 0
        });
        assert_eq!(handle.stats().to_server.forwarded, 0);
    }

    #[test]
    fn duplicates_are_counted_and_observed() {
        let echo = Echo::start(b"");
        let proxy = UdpProxy::start(echo.addr, 6).unwrap();
        let handle = proxy.handle();
        handle.set(Faults {
            duplicate_rate: 1.0,
            ..Faults::default()
        });
        let client = client();
        send_index(&client, proxy.addr(), 9);
        // Doubled on the way there, each echo doubled on the way back.
        let got: Vec<u32> = (0..4).map(|_| recv_index(&client)).collect();
        assert_eq!(got, [9; 4]);
        assert_eq!(echo.next_seen(), 9u32.to_be_bytes());
        assert_eq!(echo.next_seen(), 9u32.to_be_bytes());
        let stats = handle.stats();
        assert_eq!(stats.to_server.duplicated, 1);
        assert_eq!(stats.to_server.forwarded, 2);
        assert_eq!(stats.to_client.duplicated, 2);
        assert_eq!(stats.to_client.forwarded, 4);
        assert_silent(&client);
    }

    #[test]
    fn delayed_datagrams_arrive_late_but_all_arrive() {
        let echo = Echo::start(b"");
        let proxy = UdpProxy::start(echo.addr, 7).unwrap();
        let handle = proxy.handle();
        let client = client();

        handle.set(Faults {
            delay: Duration::from_millis(40),
            ..Faults::default()
        });
        let sent = Instant::now();
        send_index(&client, proxy.addr(), 0);
        assert_eq!(recv_index(&client), 0);
        assert!(
            sent.elapsed() >= Duration::from_millis(80),
            "delayed both ways"
        );

        handle.set(Faults {
            jitter: Duration::from_millis(20),
            ..Faults::default()
        });
        for i in 1..=30 {
            send_index(&client, proxy.addr(), i);
        }
        let mut got: Vec<u32> = (0..30).map(|_| recv_index(&client)).collect();
        got.sort_unstable();
        assert_eq!(got, (1..=30).collect::<Vec<_>>());
    }

    #[test]
    fn reordering_swaps_each_pair() {
        let echo = Echo::start(b"");
        let proxy = UdpProxy::start(echo.addr, 8).unwrap();
        let handle = proxy.handle();
        handle.set(Faults {
            reorder_rate: 1.0,
            // Long enough that no stall of this machine releases one early.
            reorder_hold: PATIENCE,
            ..Faults::default()
        });
        let client = client();
        for i in 0..4 {
            send_index(&client, proxy.addr(), i);
        }
        // Each one is held back until the next passes it.
        let seen: Vec<u32> = (0..4)
            .map(|_| u32::from_be_bytes(echo.next_seen().try_into().unwrap()))
            .collect();
        assert_eq!(seen, [1, 0, 3, 2]);
        // The way back swaps the pairs again.
        let got: Vec<u32> = (0..4).map(|_| recv_index(&client)).collect();
        assert_eq!(got, [0, 1, 2, 3]);
        let stats = handle.stats();
        assert_eq!(stats.to_server.reordered, 2);
        assert_eq!(stats.to_client.reordered, 2);
    }

    #[test]
    fn a_held_datagram_with_no_successor_is_released_after_the_hold() {
        let echo = Echo::start(b"");
        let proxy = UdpProxy::start(echo.addr, 12).unwrap();
        let handle = proxy.handle();
        handle.set(Faults {
            reorder_rate: 1.0,
            reorder_hold: Duration::from_millis(20),
            ..Faults::default()
        });
        let client = client();
        let sent = Instant::now();
        send_index(&client, proxy.addr(), 7);
        assert_eq!(recv_index(&client), 7);
        assert!(
            sent.elapsed() >= Duration::from_millis(40),
            "held both ways"
        );
        let stats = handle.stats();
        assert_eq!(stats.to_server.reordered, 0, "nothing passed it");
        assert_eq!(stats.to_client.forwarded, 1);
    }

    /// Which of 100 datagrams make it there and back at a 30 % drop rate.
    fn survivors(seed: u64) -> Vec<u32> {
        let echo = Echo::start(b"");
        let proxy = UdpProxy::start(echo.addr, seed).unwrap();
        let handle = proxy.handle();
        handle.set(Faults {
            drop_rate: 0.3,
            ..Faults::default()
        });
        let client = client();
        // In batches, so no socket buffer can overflow and lose one for us.
        for batch in 0..10u32 {
            for i in batch * 10..(batch + 1) * 10 {
                send_index(&client, proxy.addr(), i);
            }
            let want = u64::from(batch + 1) * 10;
            wait_stats(&handle, "the batch to arrive", |s| {
                s.to_server.received == want
            });
        }
        let stats = wait_stats(&handle, "every datagram accounted for", |s| {
            s.queued == 0
                && s.to_server.forwarded + s.to_server.dropped == 100
                && s.to_client.received == s.to_server.forwarded
                && s.to_client.forwarded + s.to_client.dropped == s.to_client.received
        });
        (0..stats.to_client.forwarded)
            .map(|_| recv_index(&client))
            .collect()
    }

    #[test]
    fn the_same_seed_drops_the_same_datagrams() {
        let first = survivors(42);
        assert!(!first.is_empty() && first.len() < 100, "{first:?}");
        assert_eq!(survivors(42), first);
        assert_ne!(survivors(43), first);
    }

    #[test]
    fn set_upstream_retargets_new_datagrams() {
        let a = Echo::start(b"a");
        let b = Echo::start(b"b");
        let proxy = UdpProxy::start(a.addr, 9).unwrap();
        let handle = proxy.handle();
        let client = client();
        client.send_to(b"1", proxy.addr()).unwrap();
        assert_eq!(recv(&client), b"a1");
        handle.set_upstream(b.addr);
        assert_eq!(handle.upstream(), b.addr);
        client.send_to(b"2", proxy.addr()).unwrap();
        assert_eq!(recv(&client), b"b2");
    }

    #[test]
    fn the_proxy_runs_while_a_handle_lives_and_stops_with_the_last() {
        let echo = Echo::start(b"");
        let proxy = UdpProxy::start(echo.addr, 10).unwrap();
        let handle = proxy.handle();
        let addr = proxy.addr();
        drop(proxy);
        let client = client();
        send_index(&client, addr, 1);
        assert_eq!(recv_index(&client), 1);
        drop(handle);
        // Its thread is joined and its socket closed: the port is free again.
        StdUdpSocket::bind(addr).expect("the proxy's port is free after it stops");
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut core = Core::new(11);
        core.faults.delay = Duration::from_secs(1);
        let now = Instant::now();
        let client: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for _ in 0..MAX_QUEUED + 5 {
            core.on_datagram(now, Direction::ToServer, client, b"x");
        }
        let stats = core.stats();
        assert_eq!(stats.queued, MAX_QUEUED);
        assert_eq!(stats.to_server.dropped, 5);
        assert_eq!(core.poll_transmit(now), None);
        assert_eq!(core.next_deadline(), Some(now + Duration::from_secs(1)));
    }

    /// Everything the core sends for 2,000 datagrams under hostile faults,
    /// with the time each leaves.
    fn replay(seed: u64) -> Vec<(Duration, Direction, Vec<u8>)> {
        let mut core = Core::new(seed);
        core.faults = Faults::hostile();
        let start = Instant::now();
        let client: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut out = Vec::new();
        for i in 0..2_000u32 {
            let now = start + Duration::from_millis(u64::from(i));
            let direction = if i % 3 == 0 {
                Direction::ToClient
            } else {
                Direction::ToServer
            };
            core.on_datagram(now, direction, client, &i.to_be_bytes());
            while let Some(t) = core.poll_transmit(now) {
                out.push((now - start, t.direction, t.data));
            }
        }
        while let Some(at) = core.next_deadline() {
            while let Some(t) = core.poll_transmit(at) {
                out.push((at - start, t.direction, t.data));
            }
        }
        out
    }

    #[test]
    fn the_core_replays_exactly_from_its_seed() {
        let first = replay(7);
        assert_eq!(replay(7), first);
        assert_ne!(replay(8), first);
        assert!(
            first.len() > 1_500 && first.len() < 2_000,
            "{}",
            first.len()
        );
    }
}
