//! The hub's SIP endpoint: ONE UDP socket for every slot, a receive task
//! that hands each response to the registration whose transaction it
//! answers (by the top Via's branch) or to the call it belongs to (by
//! Call-ID), hands each request of a call to that call, and answers the
//! rest itself; one small task per slot driving its [`Registration`] core
//! and one per call driving its [`Call`] core with real time.
//!
//! Calls: an INVITE with an unknown Call-ID becomes a [`Call::incoming`]
//! for the slot whose extension is the request-URI user, else the To user
//! (Kamailio rewrites the request-URI to the slot's Contact,
//! `sip:6001@hub`); no such slot listening → `404`. The call's task hands
//! the slot an [`IncomingCall`] (through the [`CallListener`] the slot's
//! session holds) carrying a [`CallHandle`]: the bridge's side of the call
//! (its [`CallEvent`]s in, [`CallAction`]s out). [`SipUa::invite`] places
//! a call (F-03) and returns its handle directly.
//!
//! It owns the IO and nothing else: every protocol decision is in the
//! sans-IO cores. It must never: panic on what arrives (bad datagrams are
//! counted in the log and dropped), leave a request unanswered (OPTIONS gets
//! 200, a request of no call 481, an INVITE for no slot 404, other methods
//! 501), let a slot's task outlive its [`RegistrationHandle`], or let a
//! call outlive its handle (a dropped [`CallHandle`] hangs the call up).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::call::{self, Call, CallConfig, CallEvent, IncomingInvite, OutgoingCall};
use super::message::{self, Message, Request, Response};
use super::registration::{KEEPALIVE, Registration, RegistrationConfig, RegistrationEvent};
use super::transaction::Timers;

/// What the endpoint needs (from `[sip]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaConfig {
    /// The UDP address to bind (port 0: any free port).
    pub listen: SocketAddr,
    /// The address put in Via and Contact; `None`: the bound address, with
    /// the interface that routes to the first registrar when bound to
    /// `0.0.0.0`.
    pub advertised: Option<SocketAddr>,
    /// Registrars in order of preference.
    pub registrars: Vec<SocketAddr>,
    /// The AOR domain.
    pub domain: String,
    /// The expiry asked for, in seconds.
    pub expires: u32,
    /// Transaction timers.
    pub timers: Timers,
    /// Refused credentials in a row before a slot's registration gives up.
    pub max_auth_failures: u32,
    /// While a slot is registered, a keep-alive to its registrar this
    /// often (see [`super::registration::KEEPALIVE`]); `None`: never.
    pub keepalive: Option<Duration>,
    /// Take the address a registrar saw the hub at (Via `received`/`rport`)
    /// as the Contact of registrations and calls.
    pub follow_nat: bool,
}

impl From<&crate::config::SipSection> for UaConfig {
    fn from(section: &crate::config::SipSection) -> UaConfig {
        UaConfig {
            listen: section.listen,
            advertised: section.advertised_address,
            registrars: section.registrars.clone(),
            domain: section.domain(),
            expires: section.expires_s,
            timers: Timers::with_t1(Duration::from_millis(section.t1_ms)),
            max_auth_failures: section.max_auth_failures,
            keepalive: (section.keepalive_s > 0)
                .then(|| Duration::from_secs(u64::from(section.keepalive_s))),
            follow_nat: section.follow_nat,
        }
    }
}

/// Who registers: one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotCredentials {
    /// For reasons shown to operators (`slot 3`).
    pub slot: String,
    /// The SIP number (AOR user and digest username).
    pub user: String,
    /// The digest password, if the slot has one.
    pub password: Option<String>,
}

/// Why the endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    /// The UDP address cannot be bound.
    #[error("cannot bind UDP {addr}: {source}; stop what listens there or set sip.listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

type Routes = HashMap<String, mpsc::UnboundedSender<Response>>;

/// Most incoming calls a slot's [`CallListener`] queues before the endpoint
/// answers further INVITEs for it with `486`.
const LISTENER_QUEUE: usize = 4;

/// What the endpoint hands a call's task.
#[derive(Debug)]
enum CallInput {
    /// A request with the call's Call-ID, and where it came from.
    Request(Request, SocketAddr),
    /// A response with the call's Call-ID.
    Response(Response),
}

/// What the bridge asks of its call (see the [`Call`] method of the same name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    /// [`Call::ringing`]: `180`, or `183` with early media SDP.
    Ringing(Option<Vec<u8>>),
    /// [`Call::answer`]: `200 OK` with our SDP.
    Answer(Vec<u8>),
    /// [`Call::reject`]: a final error response.
    Reject {
        /// 300–699.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// [`Call::hang_up`]: BYE, CANCEL or `480`, whatever fits.
    HangUp,
    /// [`Call::accept_reinvite`].
    AcceptReInvite,
    /// [`Call::refuse_reinvite`].
    RefuseReInvite,
}

/// The bridge's side of one call. Dropping it hangs the call up.
#[derive(Debug)]
pub struct CallHandle {
    call_id: String,
    events: mpsc::UnboundedReceiver<CallEvent>,
    actions: mpsc::UnboundedSender<CallAction>,
}

impl CallHandle {
    /// The call's Call-ID.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The call's next event; `None` once the call is over. Cancel-safe.
    pub async fn next_event(&mut self) -> Option<CallEvent> {
        self.events.recv().await
    }

    /// Asks the call to do `action` (ignored, and logged, when the call is
    /// over or the action does not fit its state).
    pub fn act(&self, action: CallAction) {
        let _ = self.actions.send(action);
    }
}

/// An INVITE for a slot (F-09), for its session to bridge.
#[derive(Debug)]
pub struct IncomingCall {
    /// What the INVITE asks.
    pub invite: IncomingInvite,
    /// The call.
    pub handle: CallHandle,
}

/// A slot's incoming calls; the endpoint stops routing INVITEs to the slot
/// when it is dropped.
#[derive(Debug)]
pub struct CallListener {
    ua: Arc<SipUa>,
    extension: String,
    calls: mpsc::Receiver<IncomingCall>,
}

impl CallListener {
    /// The next INVITE for the slot. Cancel-safe.
    pub async fn next_call(&mut self) -> Option<IncomingCall> {
        self.calls.recv().await
    }
}

impl Drop for CallListener {
    fn drop(&mut self) {
        lock(&self.ua.listeners).remove(&self.extension);
    }
}

/// What the endpoint counts, rendered on `/metrics`. Counting only: nothing
/// here changes what is sent or decided.
#[derive(Debug, Default)]
pub struct SipMetrics {
    /// REGISTER datagrams sent, retransmissions and unregistrations included.
    register_sent: AtomicU64,
    /// 401/407 answers to a REGISTER that carried credentials, and 403s.
    auth_failures: AtomicU64,
    /// REGISTER transactions that got no answer before timer F.
    register_timeouts: AtomicU64,
    /// Keep-alives sent to registrars.
    keepalives_sent: AtomicU64,
    /// Whether each slot's SIP number is registered now, by number.
    registered: Mutex<BTreeMap<String, bool>>,
}

/// Sets a slot's `hubd_sip_registered` to 0 when dropped.
struct RegisteredGauge<'a> {
    metrics: &'a SipMetrics,
    user: &'a str,
}

impl Drop for RegisteredGauge<'_> {
    fn drop(&mut self) {
        self.metrics.set_registered(self.user, false);
    }
}

impl SipMetrics {
    fn set_registered(&self, user: &str, registered: bool) {
        lock(&self.registered).insert(user.to_owned(), registered);
    }

    /// Appends the SIP series to `out` in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        for (name, help, value) in [
            (
                "hubd_sip_register_sent_total",
                "REGISTER requests sent, retransmissions and unregistrations included.",
                &self.register_sent,
            ),
            (
                "hubd_sip_auth_failures_total",
                "Credentials the registrar refused: 401/407 to a REGISTER that carried them, or 403.",
                &self.auth_failures,
            ),
            (
                "hubd_sip_register_timeouts_total",
                "REGISTER transactions the registrar did not answer in time (timer F).",
                &self.register_timeouts,
            ),
            (
                "hubd_sip_keepalives_sent_total",
                "Keep-alives (double CRLF) sent to registrars to hold NAT mappings open.",
                &self.keepalives_sent,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let registered = lock(&self.registered);
        let _ = writeln!(
            out,
            "# HELP hubd_sip_registered Whether a slot's SIP number is registered (1) or not (0), by number.\n# TYPE hubd_sip_registered gauge"
        );
        for (number, registered) in registered.iter() {
            let _ = writeln!(
                out,
                "hubd_sip_registered{{slot=\"{number}\"}} {}",
                u8::from(*registered)
            );
        }
    }
}

/// The hub's SIP user agent (one per hub, shared by every slot).
#[derive(Debug)]
pub struct SipUa {
    socket: UdpSocket,
    advertised: SocketAddr,
    /// By slot extension, the address its registrar saw the hub at, when
    /// it differs from `advertised` (`follow_nat`): its calls' Contact.
    seen: Mutex<HashMap<String, SocketAddr>>,
    config: UaConfig,
    /// Branch of a registration's transaction → that registration's task.
    routes: Mutex<Routes>,
    /// Call-ID → that call's task.
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<CallInput>>>,
    /// A slot's extension → its session's listener.
    listeners: Mutex<HashMap<String, mpsc::Sender<IncomingCall>>>,
    /// Ends the receive task and every call's task.
    stop: CancellationToken,
    metrics: Arc<SipMetrics>,
}

/// One slot's registration, driven by its own task.
#[derive(Debug)]
pub struct RegistrationHandle {
    events: mpsc::UnboundedReceiver<RegistrationEvent>,
    unregister: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SipUa {
    /// Binds the socket and starts answering; `stop` ends the receive task
    /// (cancel it after the slots unregistered).
    pub async fn bind(config: UaConfig, stop: CancellationToken) -> Result<Arc<SipUa>, SipError> {
        Self::bind_with_metrics(config, stop, Arc::default()).await
    }

    /// [`SipUa::bind`], counting into `metrics`.
    pub async fn bind_with_metrics(
        config: UaConfig,
        stop: CancellationToken,
        metrics: Arc<SipMetrics>,
    ) -> Result<Arc<SipUa>, SipError> {
        let bind_error = |source| SipError::Bind {
            addr: config.listen,
            source,
        };
        let socket = UdpSocket::bind(config.listen).await.map_err(bind_error)?;
        let bound = socket.local_addr().map_err(bind_error)?;
        let advertised = match config.advertised {
            Some(addr) => addr,
            None if bound.ip().is_unspecified() => {
                SocketAddr::new(route_to(config.registrars.first()).await, bound.port())
            }
            None => bound,
        };
        tracing::info!(listen = %bound, advertised = %advertised, "SIP endpoint bound");
        let ua = Arc::new(SipUa {
            socket,
            advertised,
            seen: Mutex::new(HashMap::new()),
            config,
            routes: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
            stop: stop.clone(),
            metrics,
        });
        let receiver = ua.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = receiver.receive() => {}
            }
        });
        Ok(ua)
    }

    /// The address in Via and Contact.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertised
    }

    /// The IP the SIP socket is bound to (`0.0.0.0`: every interface), which
    /// RTP sockets bind too.
    pub fn bound_ip(&self) -> std::net::IpAddr {
        self.socket
            .local_addr()
            .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| {
                a.ip()
            })
    }

    /// The address a slot's calls put in Via and Contact: the one its
    /// registrar saw the hub at (NAT, with `follow_nat`), else the
    /// advertised one.
    pub fn contact_addr(&self, extension: &str) -> SocketAddr {
        lock(&self.seen)
            .get(extension)
            .copied()
            .unwrap_or(self.advertised)
    }

    /// The AOR domain (our From host).
    pub fn domain(&self) -> &str {
        &self.config.domain
    }

    /// The preferred registrar: where outgoing calls (F-03) go when the
    /// slot has no registration to follow (a slot follows the registrar
    /// that accepted it).
    pub fn outbound_proxy(&self) -> Option<SocketAddr> {
        self.config.registrars.first().copied()
    }

    /// Starts registering `credentials`; the handle reports what happens.
    pub fn register(self: &Arc<Self>, credentials: SlotCredentials) -> RegistrationHandle {
        let config = RegistrationConfig {
            slot: credentials.slot,
            user: credentials.user,
            domain: self.config.domain.clone(),
            password: credentials.password,
            registrars: self.config.registrars.clone(),
            local: self.advertised,
            expires: self.config.expires,
            timers: self.config.timers,
            max_auth_failures: self.config.max_auth_failures,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            keepalive: self.config.keepalive,
            follow_nat: self.config.follow_nat,
        };
        let seed = getrandom::u64().unwrap_or_else(|_| {
            u64::from(std::process::id()) ^ tokio::time::Instant::now().elapsed().as_nanos() as u64
        });
        let user = config.user.clone();
        self.metrics.set_registered(&user, false);
        let registration = Registration::new(config, seed, std::time::Instant::now());
        let (events_tx, events) = mpsc::unbounded_channel();
        let (unregister_tx, unregister_rx) = oneshot::channel();
        let task = tokio::spawn(
            self.clone()
                .drive(registration, user, events_tx, unregister_rx),
        );
        RegistrationHandle {
            events,
            unregister: Some(unregister_tx),
            task,
        }
    }

    /// Runs one registration until it is over.
    async fn drive(
        self: Arc<Self>,
        mut registration: Registration,
        user: String,
        events: mpsc::UnboundedSender<RegistrationEvent>,
        mut unregister: oneshot::Receiver<()>,
    ) {
        let (responses_tx, mut responses) = mpsc::unbounded_channel();
        let mut branch: Option<String> = None;
        let mut unregistering = false;
        // Whether the REGISTER on the wire carries credentials (counting only).
        let mut with_credentials = false;
        // The slot counts as unregistered once this task ends, even aborted.
        let _registered = RegisteredGauge {
            metrics: &self.metrics,
            user: &user,
        };
        loop {
            while let Some(transmit) = registration.poll_transmit() {
                if branch.as_deref() != Some(transmit.branch.as_str()) {
                    with_credentials = matches!(
                        message::parse(&transmit.bytes),
                        Ok(Message::Request(request))
                            if request.headers.get("Authorization").is_some()
                                || request.headers.get("Proxy-Authorization").is_some()
                    );
                    let mut routes = lock(&self.routes);
                    if let Some(old) = branch.take() {
                        routes.remove(&old);
                    }
                    routes.insert(transmit.branch.clone(), responses_tx.clone());
                    branch = Some(transmit.branch.clone());
                }
                match self.socket.send_to(&transmit.bytes, transmit.to).await {
                    Ok(_) => {
                        self.metrics.register_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!(to = %transmit.to, error = %e, "REGISTER not sent"),
                }
            }
            while let Some(registrar) = registration.poll_keepalive() {
                match self.socket.send_to(KEEPALIVE, registrar).await {
                    Ok(_) => {
                        self.metrics.keepalives_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!(to = %registrar, error = %e, "keep-alive not sent"),
                }
            }
            while let Some(event) = registration.poll_event() {
                if let RegistrationEvent::Mapped { address } = event {
                    // The slot's calls offer what its registrar sees.
                    let mut seen = lock(&self.seen);
                    if address == self.advertised {
                        seen.remove(&user);
                    } else {
                        seen.insert(user.clone(), address);
                    }
                    continue;
                }
                self.metrics
                    .set_registered(&user, matches!(event, RegistrationEvent::Registered { .. }));
                let _ = events.send(event);
            }
            if registration.is_over() {
                break;
            }
            let deadline = registration
                .next_deadline()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    let before = registration.branch().map(str::to_owned);
                    registration.handle_timeout(std::time::Instant::now());
                    // Only timer F ends a transaction on a timeout.
                    if before.is_some() && registration.branch() != before.as_deref() {
                        self.metrics.register_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                }
                response = responses.recv() => {
                    if let Some(response) = response {
                        if (with_credentials && matches!(response.status, 401 | 407))
                            || response.status == 403
                        {
                            self.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
                        }
                        registration.handle_response(std::time::Instant::now(), &response);
                    }
                }
                _ = &mut unregister, if !unregistering => {
                    unregistering = true;
                    registration.unregister(std::time::Instant::now());
                }
            }
        }
        if let Some(old) = branch {
            lock(&self.routes).remove(&old);
        }
        lock(&self.seen).remove(&user);
    }

    /// The receive loop: responses to their registration, requests answered.
    async fn receive(self: &Arc<Self>) {
        let mut buffer = vec![0u8; 65_535];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buffer).await {
                Ok(received) => received,
                Err(e) => {
                    // ICMP errors surface here (connection refused): not fatal.
                    tracing::debug!(error = %e, "SIP socket receive error");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let Some(datagram) = buffer.get(..n) else {
                continue;
            };
            if datagram.iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
                continue; // keep-alive
            }
            match message::parse(datagram) {
                Ok(Message::Response(response)) => self.route(response),
                Ok(Message::Request(request)) => self.request(request, from).await,
                Err(e) => tracing::debug!(%from, error = %e, "unparseable SIP datagram dropped"),
            }
        }
    }

    fn route(&self, response: Response) {
        let Some(branch) = response
            .headers
            .via()
            .and_then(|v| v.branch().map(str::to_owned))
        else {
            return;
        };
        let sender = lock(&self.routes).get(&branch).cloned();
        let call = match (&sender, response.headers.call_id()) {
            (None, Some(call_id)) => lock(&self.calls).get(call_id).cloned(),
            _ => None,
        };
        match (sender, call) {
            (Some(sender), _) => {
                let _ = sender.send(response);
            }
            (None, Some(call)) => {
                let _ = call.send(CallInput::Response(response));
            }
            (None, None) => tracing::debug!(
                branch,
                status = response.status,
                "SIP response for no transaction"
            ),
        }
    }

    /// A request: to its call, a new call for an INVITE, else answered here.
    async fn request(self: &Arc<Self>, request: Request, from: SocketAddr) {
        let call = request
            .headers
            .call_id()
            .and_then(|id| lock(&self.calls).get(id).cloned());
        if let Some(call) = call {
            if let Err(mpsc::error::SendError(CallInput::Request(request, from))) =
                call.send(CallInput::Request(request, from))
            {
                // The call's task just ended: as if it were unknown.
                self.answer(&request, from).await;
            }
            return;
        }
        if request.method == "INVITE" {
            self.incoming(request, from).await;
        } else {
            self.answer(&request, from).await;
        }
    }

    /// The slot an INVITE is for: the request-URI user, else the To user,
    /// when a slot with that extension listens.
    fn slot_of(&self, request: &Request) -> Option<(String, mpsc::Sender<IncomingCall>)> {
        let listeners = lock(&self.listeners);
        let to = request.headers.to().map(|to| to.uri.clone());
        [Some(request.uri.as_str()), to.as_deref()]
            .into_iter()
            .flatten()
            .filter_map(uri_user)
            .find_map(|user| {
                listeners
                    .get(user)
                    .map(|listener| (user.to_owned(), listener.clone()))
            })
    }

    /// An INVITE with an unknown Call-ID (F-09).
    async fn incoming(self: &Arc<Self>, request: Request, from: SocketAddr) {
        let Some((extension, listener)) = self.slot_of(&request) else {
            tracing::info!(uri = %request.uri, %from, "INVITE for no slot: 404");
            if let Some(t) = call::answer_stateless(&request, from, 404, "Not Found") {
                self.send(&t).await;
            }
            return;
        };
        let seed = call::random_seed().unwrap_or_else(|_| fallback_seed());
        let config = self.call_config(extension);
        match Call::incoming(config, from, request, seed, std::time::Instant::now()) {
            Ok(call) => {
                let (handle, task) = self.open_call(call.call_id().to_owned());
                tokio::spawn(
                    self.clone()
                        .drive_call(call, task, Some((handle, listener))),
                );
            }
            Err(refusal) => {
                tracing::info!(%from, reason = refusal.reason, "INVITE refused");
                if let Some(t) = refusal.transmit {
                    self.send(&t).await;
                }
            }
        }
    }

    /// Starts receiving slot `extension`'s incoming calls (one listener per
    /// extension: a second replaces the first).
    pub fn listen(self: &Arc<Self>, extension: &str) -> CallListener {
        let (tx, calls) = mpsc::channel(LISTENER_QUEUE);
        lock(&self.listeners).insert(extension.to_owned(), tx);
        CallListener {
            ua: self.clone(),
            extension: extension.to_owned(),
            calls,
        }
    }

    /// Places a call from slot `extension` (F-03); the INVITE leaves at once.
    pub fn invite(self: &Arc<Self>, extension: &str, outgoing: OutgoingCall) -> CallHandle {
        let seed = call::random_seed().unwrap_or_else(|_| fallback_seed());
        let call = Call::invite(
            self.call_config(extension.to_owned()),
            outgoing,
            seed,
            std::time::Instant::now(),
        );
        let (handle, task) = self.open_call(call.call_id().to_owned());
        tokio::spawn(self.clone().drive_call(call, task, None));
        handle
    }

    fn call_config(&self, extension: String) -> CallConfig {
        CallConfig {
            local: self.contact_addr(&extension),
            extension,
            timers: self.config.timers,
        }
    }

    /// Routes `call_id` to a new call task; returns the bridge's handle and
    /// the task's ends.
    fn open_call(&self, call_id: String) -> (CallHandle, CallTaskEnds) {
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (actions_tx, actions) = mpsc::unbounded_channel();
        lock(&self.calls).insert(call_id.clone(), inputs_tx);
        (
            CallHandle {
                call_id: call_id.clone(),
                events,
                actions: actions_tx,
            },
            CallTaskEnds {
                call_id,
                inputs,
                events: events_tx,
                actions,
            },
        )
    }

    /// Drives one call until it is over. An incoming call's handle goes to
    /// the slot's `listener` with the [`CallEvent::IncomingInvite`]; when the
    /// slot cannot take it, the INVITE gets `486`.
    async fn drive_call(
        self: Arc<Self>,
        mut call: Call,
        mut ends: CallTaskEnds,
        mut pending: Option<(CallHandle, mpsc::Sender<IncomingCall>)>,
    ) {
        // Whether the bridge dropped its handle (the call was hung up then).
        let mut abandoned = false;
        loop {
            while let Some(transmit) = call.poll_transmit() {
                self.send(&transmit).await;
            }
            let now = std::time::Instant::now();
            while let Some(event) = call.poll_event() {
                match (event, pending.take()) {
                    (CallEvent::IncomingInvite(invite), Some((handle, listener))) => {
                        if let Err(e) = listener.try_send(IncomingCall { invite, handle }) {
                            tracing::info!(error = %e, "slot cannot take the call: 486");
                            let _ = call.reject(now, 486, "Busy Here");
                        }
                    }
                    (event, still) => {
                        pending = still;
                        let _ = ends.events.send(event);
                    }
                }
            }
            while let Some(transmit) = call.poll_transmit() {
                self.send(&transmit).await;
            }
            if call.is_over() {
                break;
            }
            let deadline = call.next_deadline().map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    call.handle_timeout(std::time::Instant::now());
                }
                input = ends.inputs.recv() => match input {
                    Some(CallInput::Request(request, from)) => {
                        call.handle_request(std::time::Instant::now(), from, &request);
                    }
                    Some(CallInput::Response(response)) => {
                        call.handle_response(std::time::Instant::now(), &response);
                    }
                    None => break,
                },
                action = ends.actions.recv(), if !abandoned => {
                    let now = std::time::Instant::now();
                    let result = match action {
                        Some(CallAction::Ringing(sdp)) => call.ringing(sdp),
                        Some(CallAction::Answer(sdp)) => call.answer(now, sdp),
                        Some(CallAction::Reject { status, reason }) => call.reject(now, status, &reason),
                        Some(CallAction::HangUp) => call.hang_up(now),
                        Some(CallAction::AcceptReInvite) => call.accept_reinvite(now),
                        Some(CallAction::RefuseReInvite) => call.refuse_reinvite(now),
                        None => {
                            abandoned = true;
                            call.hang_up(now)
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(call_id = %ends.call_id, error = %e, "call action ignored");
                    }
                }
            }
        }
        lock(&self.calls).remove(&ends.call_id);
        tracing::debug!(call_id = %ends.call_id, "call over");
    }

    async fn send(&self, transmit: &call::Transmit) {
        if let Err(e) = self.socket.send_to(&transmit.bytes, transmit.to).await {
            tracing::debug!(to = %transmit.to, error = %e, "SIP datagram not sent");
        }
    }

    /// Answers a request of no call.
    async fn answer(&self, request: &Request, from: SocketAddr) {
        if request.method == "ACK" {
            return;
        }
        let (status, reason) = match request.method.as_str() {
            "OPTIONS" => (200, "OK"),
            "BYE" | "CANCEL" => (481, "Call/Transaction Does Not Exist"),
            _ => (501, "Not Implemented"),
        };
        let mut response = Response::to_request(request, status, reason, "vss-hubd");
        if status == 200 {
            response.headers.push("Allow", "REGISTER, OPTIONS");
        }
        if let Err(e) = self.socket.send_to(&response.to_bytes(), from).await {
            tracing::debug!(%from, error = %e, "SIP answer not sent");
        }
    }
}

/// The call task's ends of the channels of a [`CallHandle`].
#[derive(Debug)]
struct CallTaskEnds {
    call_id: String,
    inputs: mpsc::UnboundedReceiver<CallInput>,
    events: mpsc::UnboundedSender<CallEvent>,
    actions: mpsc::UnboundedReceiver<CallAction>,
}

/// The user part of a `sip:`/`sips:`/`tel:` URI (`sip:6001@hub` → `6001`).
fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("tel:"))?;
    let end = rest.find(['@', ';', '?', '>']).unwrap_or(rest.len());
    let user = rest.get(..end)?;
    let user = user.split(':').next().unwrap_or(user);
    (!user.is_empty() && (rest.contains('@') || uri.starts_with("tel:"))).then_some(user)
}

fn fallback_seed() -> u64 {
    u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
}

/// The local address that routes to `to` (no packet is sent), or loopback.
async fn route_to(to: Option<&SocketAddr>) -> IpAddr {
    let Some(to) = to else {
        return IpAddr::from([127, 0, 0, 1]);
    };
    let any: SocketAddr = if to.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    match UdpSocket::bind(any).await {
        Ok(probe) if probe.connect(to).await.is_ok() => probe
            .local_addr()
            .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip()),
        _ => IpAddr::from([127, 0, 0, 1]),
    }
}

impl RegistrationHandle {
    /// The next event; `None` once the registration is over and every event
    /// was read. Cancel-safe.
    pub async fn next_event(&mut self) -> Option<RegistrationEvent> {
        self.events.recv().await
    }

    /// Unregisters (Expires: 0), waiting at most `within` for the registrar.
    pub async fn unregister(mut self, within: Duration) {
        if let Some(unregister) = self.unregister.take() {
            let _ = unregister.send(());
        }
        if tokio::time::timeout(within, &mut self.task).await.is_err() {
            tracing::warn!("SIP unregistration did not finish in time");
        }
    }
}

impl Drop for RegistrationHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(registrar: SocketAddr) -> UaConfig {
        UaConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            advertised: None,
            registrars: vec![registrar],
            domain: "127.0.0.1".into(),
            expires: 60,
            timers: Timers::with_t1(Duration::from_millis(50)),
            max_auth_failures: 3,
            keepalive: None,
            follow_nat: false,
        }
    }

    async fn receive(socket: &UdpSocket) -> (Message, SocketAddr) {
        let mut buffer = vec![0u8; 65_535];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
            .await
            .expect("a datagram in time")
            .expect("received");
        (message::parse(&buffer[..n]).expect("parses"), from)
    }

    /// Registers slot 6001 (no password) with `registrar`, which answers
    /// 200; the handle, once registered, and the hub's SIP address.
    async fn register_6001(
        ua: &Arc<SipUa>,
        registrar: &UdpSocket,
    ) -> (RegistrationHandle, SocketAddr) {
        let mut handle = ua.register(SlotCredentials {
            slot: "slot 1".into(),
            user: "6001".into(),
            password: None,
        });
        let (Message::Request(register), hub) = receive(registrar).await else {
            panic!("a request");
        };
        assert_eq!(register.method, "REGISTER");
        let ok = Response::to_request(&register, 200, "OK", "x");
        registrar.send_to(&ok.to_bytes(), hub).await.unwrap();
        assert!(matches!(
            handle.next_event().await,
            Some(RegistrationEvent::Registered { .. })
        ));
        (handle, hub)
    }

    #[test]
    fn uri_users() {
        for (uri, user) in [
            ("sip:6001@10.0.0.1:5070", Some("6001")),
            ("sip:6001:pw@h", Some("6001")),
            ("sips:+4930123@h;user=phone", Some("+4930123")),
            ("tel:+4930123", Some("+4930123")),
            ("sip:10.0.0.1", None),
            ("sip:@h", None),
            ("http://x@y", None),
        ] {
            assert_eq!(uri_user(uri), user, "{uri}");
        }
    }

    #[tokio::test]
    async fn routes_an_invite_to_its_slot_and_hangs_up_a_dropped_call() {
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let ua = SipUa::bind(config(peer.local_addr().unwrap()), stop.clone())
            .await
            .unwrap();
        let hub = ua.advertised_addr();
        let mut listener = ua.listen("6001");
        let invite = format!(
            "INVITE sip:6001@{hub} SIP/2.0\r\nVia: SIP/2.0/UDP {peer};branch=z9hG4bKr1\r\n\
             From: <sip:agent@h>;tag=a\r\nTo: <sip:+4930123456@h>\r\nCall-ID: r1\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:agent@{peer}>\r\nMax-Forwards: 70\r\n\r\n",
            peer = peer.local_addr().unwrap()
        );
        peer.send_to(invite.as_bytes(), hub).await.unwrap();
        let (Message::Response(trying), _) = receive(&peer).await else {
            panic!("a response");
        };
        assert_eq!(trying.status, 100);
        let call = tokio::time::timeout(Duration::from_secs(5), listener.next_call())
            .await
            .expect("the call in time")
            .expect("a call");
        assert_eq!(call.invite.target_number, "+4930123456");
        assert_eq!(call.handle.call_id(), "r1");
        // The bridge gives up on the call: 480, and the INVITE is over.
        drop(call);
        let (Message::Response(busy), _) = receive(&peer).await else {
            panic!("a response");
        };
        assert_eq!(busy.status, 480);

        // Another slot's extension: nobody listens.
        drop(listener);
        let other = invite
            .replace("Call-ID: r1", "Call-ID: r2")
            .replace("bKr1", "bKr2");
        peer.send_to(other.as_bytes(), hub).await.unwrap();
        // (The 480 is retransmitted until ACKed: skip those.)
        let not_found = loop {
            if let (Message::Response(response), _) = receive(&peer).await
                && response.headers.call_id() == Some("r2")
            {
                break response;
            }
        };
        assert_eq!(not_found.status, 404);
        stop.cancel();
    }

    #[tokio::test]
    async fn registers_against_a_udp_peer_and_answers_options() {
        let registrar = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let ua = SipUa::bind(config(registrar.local_addr().unwrap()), stop.clone())
            .await
            .unwrap();
        let (handle, hub) = register_6001(&ua, &registrar).await;

        // OPTIONS: 200; INVITE for no listening slot: 404; BYE: 481.
        for (uri, method, status) in [
            ("sip:6001@127.0.0.1", "OPTIONS", 200),
            ("sip:127.0.0.1", "OPTIONS", 200),
            ("sip:+79161234567@127.0.0.1", "INVITE", 404),
            ("sip:6001@127.0.0.1", "BYE", 481),
        ] {
            let request = format!(
                "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKo{status}\r\nFrom: <sip:k@h>;tag=1\r\nTo: <{uri}>\r\nCall-ID: o{status}\r\nCSeq: 1 {method}\r\n\r\n",
                registrar.local_addr().unwrap()
            );
            registrar.send_to(request.as_bytes(), hub).await.unwrap();
            let (Message::Response(answer), _) = receive(&registrar).await else {
                panic!("a response");
            };
            assert_eq!(answer.status, status, "{method} {uri}");
        }

        let unregistering = tokio::spawn(handle.unregister(Duration::from_secs(5)));
        let (Message::Request(bye), _) = receive(&registrar).await else {
            panic!("a request");
        };
        assert_eq!(bye.headers.get("Expires"), Some("0"));
        let ok = Response::to_request(&bye, 200, "OK", "x");
        registrar.send_to(&ok.to_bytes(), hub).await.unwrap();
        unregistering.await.unwrap();
        stop.cancel();
    }

    #[tokio::test]
    async fn a_registered_slot_keeps_the_path_to_its_registrar_open() {
        let registrar = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let metrics = Arc::new(SipMetrics::default());
        let ua = SipUa::bind_with_metrics(
            UaConfig {
                keepalive: Some(Duration::from_millis(200)),
                ..config(registrar.local_addr().unwrap())
            },
            stop.clone(),
            Arc::clone(&metrics),
        )
        .await
        .unwrap();
        let (_registered, hub) = register_6001(&ua, &registrar).await;
        // Keep-alives, from the socket the REGISTER came from (the one a
        // NAT mapped), and nothing else until the refresh at 30 s.
        let mut buffer = [0u8; 2048];
        for _ in 0..3 {
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(5), registrar.recv_from(&mut buffer))
                    .await
                    .expect("a keep-alive in time")
                    .unwrap();
            assert_eq!(&buffer[..n], KEEPALIVE);
            assert_eq!(from, hub);
        }
        // A registrar's keep-alive answer (a CRLF "pong") is ignored; the
        // endpoint still answers requests.
        registrar.send_to(b"\r\n", hub).await.unwrap();
        let options = format!(
            "OPTIONS sip:6001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKka\r\n\
             From: <sip:k@h>;tag=1\r\nTo: <sip:6001@127.0.0.1>\r\nCall-ID: ka\r\nCSeq: 1 OPTIONS\r\n\r\n",
            registrar.local_addr().unwrap()
        );
        registrar.send_to(options.as_bytes(), hub).await.unwrap();
        let answer = loop {
            let (n, _) = registrar.recv_from(&mut buffer).await.unwrap();
            if &buffer[..n] != KEEPALIVE {
                break message::parse(&buffer[..n]).expect("parses");
            }
        };
        let Message::Response(answer) = answer else {
            panic!("a response");
        };
        assert_eq!(answer.status, 200);
        let mut rendered = String::new();
        metrics.render(&mut rendered);
        let sent: u64 = rendered
            .lines()
            .find_map(|l| l.strip_prefix("hubd_sip_keepalives_sent_total "))
            .and_then(|v| v.parse().ok())
            .expect("the keep-alive counter");
        assert!(sent >= 3, "{rendered}");
        stop.cancel();
    }
}
