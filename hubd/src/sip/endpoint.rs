//! The hub's SIP endpoint: ONE UDP socket for every slot, a receive task
//! that hands each response to the registration whose transaction it
//! answers (by the top Via's branch) and answers requests itself, and one
//! small task per slot driving its [`Registration`] core with real time.
//!
//! It owns the IO and nothing else: every protocol decision is in the
//! sans-IO cores. It must never: panic on what arrives (bad datagrams are
//! counted in the log and dropped), leave a request unanswered (OPTIONS gets
//! 200, what is not handled yet gets 481/501), or let a slot's task
//! outlive its [`RegistrationHandle`]. The request-URI user of an incoming
//! request is not a slot's number (F-09 puts the number to dial there), so
//! it never refuses a request for its user.

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

use super::message::{self, Message, Request, Response};
use super::registration::{Registration, RegistrationConfig, RegistrationEvent};
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
    config: UaConfig,
    /// Branch of a registration's transaction → that registration's task.
    routes: Mutex<Routes>,
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
            config,
            routes: Mutex::new(HashMap::new()),
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
            while let Some(event) = registration.poll_event() {
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
    }

    /// The receive loop: responses to their registration, requests answered.
    async fn receive(&self) {
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
                Ok(Message::Request(request)) => self.answer(&request, from).await,
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
        match sender {
            Some(sender) => {
                let _ = sender.send(response);
            }
            None => tracing::debug!(
                branch,
                status = response.status,
                "SIP response for no transaction"
            ),
        }
    }

    /// Answers an incoming request (calls are not handled yet).
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

    #[tokio::test]
    async fn registers_against_a_udp_peer_and_answers_options() {
        let registrar = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let ua = SipUa::bind(config(registrar.local_addr().unwrap()), stop.clone())
            .await
            .unwrap();
        let mut handle = ua.register(SlotCredentials {
            slot: "slot 1".into(),
            user: "6001".into(),
            password: None,
        });
        let (Message::Request(register), hub) = receive(&registrar).await else {
            panic!("a request");
        };
        assert_eq!(register.method, "REGISTER");
        let ok = Response::to_request(&register, 200, "OK", "x");
        registrar.send_to(&ok.to_bytes(), hub).await.unwrap();
        assert!(matches!(
            handle.next_event().await,
            Some(RegistrationEvent::Registered { .. })
        ));

        // OPTIONS: 200; INVITE (calls come later): 501; BYE: 481.
        for (uri, method, status) in [
            ("sip:6001@127.0.0.1", "OPTIONS", 200),
            ("sip:127.0.0.1", "OPTIONS", 200),
            ("sip:+79161234567@127.0.0.1", "INVITE", 501),
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
}
