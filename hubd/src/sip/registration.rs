//! One slot's registration with the PBX (RFC 3261 §10), sans-IO: responses
//! and time in, REGISTER datagrams and [`RegistrationEvent`]s out, in the
//! style of quinn-proto (`poll_transmit`, `poll_event`, `next_deadline`).
//!
//! It owns: REGISTER with `Expires`, answering a digest challenge once per
//! challenge (a second 401/407 to credentials that were just computed is an
//! auth failure, unless the server says `stale=true`), refreshing at half the
//! granted expiry, retrying after a timeout or an error with exponential
//! backoff and jitter while moving to the next registrar of the list (and
//! round to the first again), giving up for good after
//! `max_auth_failures` refused credentials, and unregistering (`Expires: 0`).
//!
//! While registered it also keeps the path from the registrar open: every
//! `keepalive` it asks for a [`KEEPALIVE`] datagram (a double CRLF, RFC 5626
//! §4.4.1's keep-alive, which registrars ignore) from the SIP socket to the
//! registrar, so a NAT or firewall between them does not forget the
//! mapping between refreshes and drop the calls the PBX sends the slot.
//!
//! Behind a NAT, the Contact we offer (`local`) is an address the PBX cannot
//! reach. With `follow_nat`, when the registrar's answer says (top Via
//! `received`/`rport`, RFC 3581) that it saw the REGISTER come from another
//! address, the registration registers again at once with that address as
//! its Contact (unbinding the old one in the same request), reports it
//! ([`RegistrationEvent::Mapped`], so calls put it in their Contact too),
//! and reports `Registered` only once the reachable Contact is bound. At most
//! [`MAX_REWRITES`] such rewrites in a row, counted afresh at each refresh
//! (a NAT that changes its mapping on every packet would otherwise loop;
//! one that settled on a new mapping is still followed); a registrar change
//! starts over from `local` (reported as `Mapped` to `local`).
//!
//! It must never: touch a socket or a clock, send two requests at once,
//! retry without a delay after a failure, or put the password anywhere but
//! into the digest.

use super::rng::SplitMix64;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::auth::{self, Challenge, ChallengeKind};
use super::message::{Request, Response};
use super::transaction::{ClientTransaction, Tick, Timers};

/// How a registration is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// Who this is, for reasons shown to operators (`slot 3`).
    pub slot: String,
    /// The user part of the AOR and the digest username (the SIP number).
    pub user: String,
    /// The AOR's domain (and the Request-URI's host).
    pub domain: String,
    /// The digest password; `None` registers without credentials.
    pub password: Option<String>,
    /// Registrars in order of preference (at least one).
    pub registrars: Vec<SocketAddr>,
    /// Our address as the registrar must see it (Via sent-by, Contact).
    pub local: SocketAddr,
    /// The expiry asked for, in seconds.
    pub expires: u32,
    /// Transaction timers.
    pub timers: Timers,
    /// Refused credentials in a row before giving up.
    pub max_auth_failures: u32,
    /// First delay before retrying after a failure.
    pub retry_initial: Duration,
    /// Longest delay between retries.
    pub retry_max: Duration,
    /// While registered, a [`KEEPALIVE`] to the registrar this often;
    /// `None`: never.
    pub keepalive: Option<Duration>,
    /// Take the address the registrar saw (Via `received`/`rport`) as the
    /// Contact (see the module docs).
    pub follow_nat: bool,
}

/// Contact rewrites in a row before the registration stops following what
/// the registrar sees.
pub const MAX_REWRITES: u32 = 2;

/// The keep-alive datagram: a double CRLF (RFC 5626 §4.4.1), which a SIP
/// server reads as nothing (Kamailio drops it as a probing packet).
pub const KEEPALIVE: &[u8] = b"\r\n\r\n";

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// The transaction's branch (responses carry it back).
    pub branch: String,
    /// The datagram.
    pub bytes: Vec<u8>,
}

/// What the owner of the registration learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationEvent {
    /// The binding is in place (first time, or again after a loss).
    Registered {
        /// The registrar that accepted it.
        registrar: SocketAddr,
        /// The expiry it granted.
        expires: Duration,
    },
    /// The binding can no longer be trusted; retries go on.
    Lost {
        /// Why, for operators.
        reason: String,
    },
    /// The registrar keeps refusing the credentials (or wants some and there
    /// are none): terminal, nothing more is sent.
    AuthFailed {
        /// Why, for operators.
        reason: String,
    },
    /// Unregistered (or given up unregistering): terminal.
    Unregistered,
    /// The Contact is now `address`: what the registrar saw (a NAT), or the
    /// configured address again after a failover. Calls should offer it too.
    Mapped {
        /// The address the registrar saw the REGISTER come from.
        address: SocketAddr,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Register,
    Unregister,
}

#[derive(Debug)]
enum State {
    /// A REGISTER is on the wire.
    Sending {
        tx: ClientTransaction,
        bytes: Vec<u8>,
        branch: String,
        purpose: Purpose,
        with_credentials: bool,
    },
    /// Bound; refresh at the first instant, keep the path open at the
    /// second.
    Registered {
        refresh_at: Instant,
        keepalive_at: Option<Instant>,
    },
    /// After a failure; try again at the instant.
    Waiting { retry_at: Instant },
    /// Terminal.
    Over,
}

/// One slot's registration.
#[derive(Debug)]
pub struct Registration {
    config: RegistrationConfig,
    rng: SplitMix64,
    state: State,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// Index into `config.registrars`.
    registrar: usize,
    expires: u32,
    /// A binding may exist at the registrar.
    bound: bool,
    /// `Registered` was reported and no `Lost` since.
    reported: bool,
    auth_failures: u32,
    challenge: Option<Challenge>,
    nc: u32,
    retry_delay: Duration,
    transmits: VecDeque<Transmit>,
    /// Registrars a [`KEEPALIVE`] is due to.
    keepalives: VecDeque<SocketAddr>,
    /// The address in our Contact: `local`, or what the registrar saw.
    contact: SocketAddr,
    /// A Contact replaced by a NAT rewrite, unbound (`expires=0`) in the
    /// REGISTERs until one is accepted.
    stale_contact: Option<SocketAddr>,
    /// NAT rewrites in a row.
    rewrites: u32,
    events: VecDeque<RegistrationEvent>,
}

impl Registration {
    /// Starts registering at `now`: the first REGISTER is ready to send.
    /// `seed` feeds Call-ID, tags, branches, client nonces and jitter.
    pub fn new(config: RegistrationConfig, seed: u64, now: Instant) -> Registration {
        let mut rng = SplitMix64(seed);
        let call_id = format!("{}{}@vss-hubd", rng.hex(), rng.hex());
        let from_tag = rng.hex();
        let expires = config.expires;
        let retry_delay = config.retry_initial;
        let contact = config.local;
        let mut registration = Registration {
            config,
            rng,
            state: State::Over,
            call_id,
            from_tag,
            cseq: 0,
            registrar: 0,
            expires,
            bound: false,
            reported: false,
            auth_failures: 0,
            challenge: None,
            nc: 0,
            retry_delay,
            transmits: VecDeque::new(),
            keepalives: VecDeque::new(),
            contact,
            stale_contact: None,
            rewrites: 0,
            events: VecDeque::new(),
        };
        if registration.config.registrars.is_empty() {
            registration
                .events
                .push_back(RegistrationEvent::AuthFailed {
                    reason: "no SIP registrar configured".into(),
                });
        } else {
            registration.send(now, Purpose::Register, false);
        }
        registration
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next registrar to send a [`KEEPALIVE`] to (from the socket the
    /// REGISTERs go out of).
    pub fn poll_keepalive(&mut self) -> Option<SocketAddr> {
        self.keepalives.pop_front()
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<RegistrationEvent> {
        self.events.pop_front()
    }

    /// When [`Registration::handle_timeout`] must run next; `None` when over.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Sending { tx, .. } => tx.deadline(),
            State::Registered {
                refresh_at,
                keepalive_at,
            } => Some(keepalive_at.map_or(*refresh_at, |k| k.min(*refresh_at))),
            State::Waiting { retry_at } => Some(*retry_at),
            State::Over => None,
        }
    }

    /// The branch of the REGISTER on the wire, if any: responses with
    /// another branch are not for it.
    pub fn branch(&self) -> Option<&str> {
        match &self.state {
            State::Sending { branch, .. } => Some(branch),
            _ => None,
        }
    }

    /// True once nothing more will happen.
    pub fn is_over(&self) -> bool {
        matches!(self.state, State::Over) && self.transmits.is_empty()
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        enum Due {
            Retransmit(Transmit),
            TimedOut(Purpose),
            Refresh,
            KeepAlive,
            Retry,
        }
        let to = self.current_registrar();
        let due = match &mut self.state {
            State::Sending {
                tx,
                bytes,
                branch,
                purpose,
                ..
            } => match tx.tick(now) {
                Tick::Wait => return,
                Tick::Retransmit => Due::Retransmit(Transmit {
                    to,
                    branch: branch.clone(),
                    bytes: bytes.clone(),
                }),
                Tick::TimedOut => Due::TimedOut(*purpose),
            },
            State::Registered { refresh_at, .. } if now >= *refresh_at => Due::Refresh,
            State::Registered {
                keepalive_at: Some(at),
                ..
            } if now >= *at => Due::KeepAlive,
            State::Waiting { retry_at } if now >= *retry_at => Due::Retry,
            _ => return,
        };
        match due {
            Due::Retransmit(transmit) => self.transmits.push_back(transmit),
            Due::TimedOut(purpose) => {
                let reason = format!(
                    "registrar {to} did not answer REGISTER within {} ms",
                    self.config.timers.timeout().as_millis()
                );
                self.failed(now, purpose, reason);
            }
            Due::Refresh => {
                // Refreshes start without credentials: the nonce may be old.
                self.challenge = None;
                self.rewrites = 0;
                self.send(now, Purpose::Register, false);
            }
            Due::KeepAlive => {
                self.keepalives.push_back(to);
                if let State::Registered { keepalive_at, .. } = &mut self.state {
                    *keepalive_at = self.config.keepalive.map(|every| now + every);
                }
            }
            Due::Retry => {
                let with_credentials = self.challenge.is_some();
                self.send(now, Purpose::Register, with_credentials);
            }
        }
    }

    /// Stops registering: unregisters when a binding may exist, else ends at once.
    pub fn unregister(&mut self, now: Instant) {
        if matches!(self.state, State::Over) {
            if !self.events.contains(&RegistrationEvent::Unregistered) {
                self.events.push_back(RegistrationEvent::Unregistered);
            }
            return;
        }
        let in_flight = matches!(
            self.state,
            State::Sending {
                purpose: Purpose::Register,
                ..
            }
        );
        if self.bound || in_flight {
            self.challenge = None;
            self.send(now, Purpose::Unregister, false);
        } else {
            self.state = State::Over;
            self.events.push_back(RegistrationEvent::Unregistered);
        }
    }

    /// A response arrived (any branch: others are ignored).
    pub fn handle_response(&mut self, now: Instant, response: &Response) {
        let State::Sending {
            tx,
            branch,
            purpose,
            with_credentials,
            ..
        } = &mut self.state
        else {
            return;
        };
        let ours = response
            .headers
            .via()
            .is_some_and(|via| via.branch() == Some(branch.as_str()));
        if !ours || !tx.on_response(response.status) {
            return;
        }
        let (purpose, with_credentials) = (*purpose, *with_credentials);
        let registrar = self.current_registrar();
        let status = format!("{} {}", response.status, response.reason);
        match response.status {
            200..=299 => self.accepted(now, purpose, response),
            401 | 407 => {
                let kind = if response.status == 401 {
                    ChallengeKind::Www
                } else {
                    ChallengeKind::Proxy
                };
                self.challenged(now, purpose, with_credentials, kind, response);
            }
            403 => {
                let reason = format!(
                    "registrar {registrar} refused {} ({status})",
                    self.config.user
                );
                self.auth_failed(now, purpose, reason);
            }
            423 => match response.headers.seconds("Min-Expires") {
                Some(min) if min > self.expires && purpose == Purpose::Register => {
                    self.expires = min;
                    self.send(now, purpose, self.challenge.is_some());
                }
                _ => self.failed(
                    now,
                    purpose,
                    format!("registrar {registrar} answered {status}"),
                ),
            },
            _ => self.failed(
                now,
                purpose,
                format!("registrar {registrar} answered {status}"),
            ),
        }
    }

    fn current_registrar(&self) -> SocketAddr {
        self.config
            .registrars
            .get(self.registrar)
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    fn accepted(&mut self, now: Instant, purpose: Purpose, response: &Response) {
        self.auth_failures = 0;
        self.retry_delay = self.config.retry_initial;
        if purpose == Purpose::Unregister {
            self.bound = false;
            self.state = State::Over;
            self.events.push_back(RegistrationEvent::Unregistered);
            return;
        }
        let contact = self.contact_uri();
        let granted = response
            .headers
            .contacts()
            .iter()
            .find(|c| c.uri.eq_ignore_ascii_case(&contact))
            .and_then(|c| c.expires())
            .or_else(|| response.headers.seconds("Expires"))
            .unwrap_or(self.expires);
        if granted == 0 {
            let reason = format!(
                "registrar {} accepted REGISTER but kept no binding (expires=0)",
                self.current_registrar()
            );
            self.failed(now, purpose, reason);
            return;
        }
        self.bound = true;
        self.stale_contact = None;
        if self.follow_nat(now, response) {
            return;
        }
        let expires = Duration::from_secs(u64::from(granted));
        let refresh = (expires / 2).max(Duration::from_secs(1));
        self.state = State::Registered {
            refresh_at: now + refresh,
            keepalive_at: self.config.keepalive.map(|every| now + every),
        };
        if !self.reported {
            self.reported = true;
            self.events.push_back(RegistrationEvent::Registered {
                registrar: self.current_registrar(),
                expires,
            });
        }
    }

    /// With `follow_nat`, when the registrar saw the REGISTER come from
    /// another address than our Contact: that address becomes the Contact
    /// and is registered at once (true: a REGISTER is on the wire).
    fn follow_nat(&mut self, now: Instant, response: &Response) -> bool {
        if !self.config.follow_nat {
            return false;
        }
        let Some(seen) = response.headers.via().and_then(|via| seen_from(&via)) else {
            return false;
        };
        if seen == self.contact {
            self.rewrites = 0;
            return false;
        }
        if self.rewrites >= MAX_REWRITES {
            tracing::warn!(
                contact = %self.contact,
                %seen,
                "the registrar sees a different address on every REGISTER; keeping the Contact"
            );
            return false;
        }
        self.rewrites += 1;
        tracing::info!(from = %self.contact, to = %seen, "the registrar sees the hub at another address (NAT): Contact follows");
        self.stale_contact = Some(self.contact);
        self.contact = seen;
        self.events
            .push_back(RegistrationEvent::Mapped { address: seen });
        let with_credentials = self.challenge.is_some();
        self.send(now, Purpose::Register, with_credentials);
        true
    }

    fn challenged(
        &mut self,
        now: Instant,
        purpose: Purpose,
        with_credentials: bool,
        kind: ChallengeKind,
        response: &Response,
    ) {
        let registrar = self.current_registrar();
        if self.config.password.is_none() {
            let reason = format!(
                "registrar {registrar} asks {} to authenticate but no SIP password is configured for {}",
                self.config.user, self.config.slot
            );
            self.give_up(purpose, reason);
            return;
        }
        let mut parse_error = None;
        let challenge = response
            .headers
            .get_all(kind.challenge_header())
            .find_map(|value| match Challenge::parse(kind, value) {
                Ok(c) => Some(c),
                Err(e) => {
                    parse_error = Some(e);
                    None
                }
            });
        let Some(challenge) = challenge else {
            let why = parse_error.map_or_else(|| "no challenge".to_owned(), |e| e.to_string());
            let reason = format!("cannot answer the challenge of registrar {registrar}: {why}");
            self.give_up(purpose, reason);
            return;
        };
        let stale = challenge.stale;
        self.challenge = Some(challenge);
        self.nc = 0;
        if with_credentials && !stale {
            let reason = format!(
                "registrar {registrar} refused the SIP credentials of {} ({} {})",
                self.config.user, response.status, response.reason
            );
            self.auth_failed(now, purpose, reason);
        } else {
            self.send(now, purpose, true);
        }
    }

    /// Refused credentials: counted; terminal at the limit, else a delayed retry.
    fn auth_failed(&mut self, now: Instant, purpose: Purpose, reason: String) {
        if purpose == Purpose::Unregister {
            self.give_up(purpose, reason);
            return;
        }
        self.auth_failures += 1;
        if self.auth_failures >= self.config.max_auth_failures {
            let reason = format!(
                "SIP authentication failed {} times: {reason}",
                self.auth_failures
            );
            self.give_up(purpose, reason);
        } else {
            tracing::warn!(
                reason,
                attempt = self.auth_failures,
                "SIP authentication refused"
            );
            self.wait(now);
        }
    }

    /// Terminal failure of registering (or of unregistering).
    fn give_up(&mut self, purpose: Purpose, reason: String) {
        self.state = State::Over;
        self.reported = false;
        self.events.push_back(match purpose {
            Purpose::Register => RegistrationEvent::AuthFailed { reason },
            Purpose::Unregister => RegistrationEvent::Unregistered,
        });
    }

    /// No answer or an error answer: report a loss, move to the next
    /// registrar, retry after the backoff.
    fn failed(&mut self, now: Instant, purpose: Purpose, reason: String) {
        if purpose == Purpose::Unregister {
            self.state = State::Over;
            self.events.push_back(RegistrationEvent::Unregistered);
            return;
        }
        tracing::warn!(reason, "SIP registration failed; retrying");
        if self.reported {
            self.reported = false;
            self.events.push_back(RegistrationEvent::Lost { reason });
        }
        self.registrar = (self.registrar + 1) % self.config.registrars.len().max(1);
        self.challenge = None;
        // Another registrar may see us elsewhere (a symmetric NAT maps each
        // destination apart): start from the configured address.
        if self.contact != self.config.local {
            self.contact = self.config.local;
            self.events.push_back(RegistrationEvent::Mapped {
                address: self.contact,
            });
        }
        self.stale_contact = None;
        self.rewrites = 0;
        self.wait(now);
    }

    fn wait(&mut self, now: Instant) {
        let factor = 0.8 + 0.4 * self.rng.unit();
        let delay = self.retry_delay.mul_f64(factor).min(self.config.retry_max);
        self.retry_delay = (self.retry_delay * 2).min(self.config.retry_max);
        self.state = State::Waiting {
            retry_at: now + delay,
        };
    }

    fn contact_uri(&self) -> String {
        format!("sip:{}@{}", self.config.user, self.contact)
    }

    fn send(&mut self, now: Instant, purpose: Purpose, with_credentials: bool) {
        let config = &self.config;
        let branch = self.rng.branch();
        self.cseq = self.cseq.wrapping_add(1);
        let uri = format!("sip:{}", config.domain);
        let aor = format!("<sip:{}@{}>", config.user, config.domain);
        let expires = match purpose {
            Purpose::Register => self.expires,
            Purpose::Unregister => 0,
        };
        let mut request = Request::new("REGISTER", &uri);
        let h = &mut request.headers;
        h.push(
            "Via",
            format!("SIP/2.0/UDP {};branch={branch};rport", config.local),
        );
        h.push("Max-Forwards", "70");
        h.push("From", format!("{aor};tag={}", self.from_tag));
        h.push("To", aor);
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{} REGISTER", self.cseq));
        h.push(
            "Contact",
            format!("<{}>;expires={expires}", self.contact_uri()),
        );
        if let Some(stale) = self.stale_contact {
            h.push(
                "Contact",
                format!("<sip:{}@{stale}>;expires=0", config.user),
            );
        }
        h.push("Expires", expires.to_string());
        h.push(
            "User-Agent",
            concat!("vss-hubd/", env!("CARGO_PKG_VERSION")),
        );
        let mut sent_credentials = false;
        if with_credentials
            && let (Some(challenge), Some(password)) = (&self.challenge, &config.password)
        {
            self.nc += 1;
            let cnonce = self.rng.hex();
            let answer = auth::Answer {
                username: &config.user,
                password,
                method: "REGISTER",
                uri: &uri,
                nc: self.nc,
                cnonce: &cnonce,
            };
            let value = auth::authorization(challenge, &answer);
            request.headers.push(challenge.kind.answer_header(), value);
            sent_credentials = true;
        }
        let bytes = request.to_bytes();
        self.transmits.push_back(Transmit {
            to: self.current_registrar(),
            branch: branch.clone(),
            bytes: bytes.clone(),
        });
        self.state = State::Sending {
            tx: ClientTransaction::start(config.timers, now),
            bytes,
            branch,
            purpose,
            with_credentials: sent_credentials,
        };
    }
}

/// The address a response's top Via says the server saw the request come
/// from (RFC 3581: `received` and `rport`), when it says so.
fn seen_from(via: &super::message::Via) -> Option<SocketAddr> {
    let port = via.rport().flatten();
    let received = via.received();
    if port.is_none() && received.is_none() {
        return None;
    }
    let ip = received.unwrap_or(&via.host).parse().ok()?;
    Some(SocketAddr::new(ip, port.or(via.port).unwrap_or(5060)))
}

#[cfg(test)]
mod tests {
    use super::super::message::{self, Message};
    use super::*;

    fn config() -> RegistrationConfig {
        RegistrationConfig {
            slot: "slot 1".into(),
            user: "6001".into(),
            domain: "pbx.test".into(),
            password: Some("secret".into()),
            registrars: vec![
                "10.0.0.1:5060".parse().unwrap(),
                "10.0.0.2:5060".parse().unwrap(),
            ],
            local: "10.0.0.9:5070".parse().unwrap(),
            expires: 60,
            timers: Timers::with_t1(Duration::from_millis(100)),
            max_auth_failures: 3,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
            keepalive: None,
            follow_nat: false,
        }
    }

    /// A fake registrar's side: the last request sent, and answers to it.
    struct Harness {
        reg: Registration,
        now: Instant,
        sent: Vec<(SocketAddr, Request)>,
        events: Vec<RegistrationEvent>,
    }

    impl Harness {
        fn new(config: RegistrationConfig) -> Harness {
            let now = Instant::now();
            let mut h = Harness {
                reg: Registration::new(config, 7, now),
                now,
                sent: Vec::new(),
                events: Vec::new(),
            };
            h.drain();
            h
        }

        fn drain(&mut self) {
            while let Some(t) = self.reg.poll_transmit() {
                let Ok(Message::Request(r)) = message::parse(&t.bytes) else {
                    panic!("sent something that is not a request");
                };
                assert_eq!(
                    r.headers.via().and_then(|v| v.branch().map(str::to_owned)),
                    Some(t.branch)
                );
                self.sent.push((t.to, r));
            }
            while let Some(e) = self.reg.poll_event() {
                self.events.push(e);
            }
        }

        fn last(&self) -> &Request {
            &self.sent.last().expect("something was sent").1
        }

        fn answer(&mut self, status: u16, extra: &[(&str, &str)]) {
            let mut response = Response::to_request(self.last(), status, "Reason", "t");
            for (name, value) in extra {
                response.headers.push(name, *value);
            }
            self.reg.handle_response(self.now, &response);
            self.drain();
        }

        /// Advances to the next deadline.
        fn advance(&mut self) {
            let at = self.reg.next_deadline().expect("a deadline");
            self.now = at.max(self.now);
            self.reg.handle_timeout(self.now);
            self.drain();
        }
    }

    impl Harness {
        /// Answers `status` as a registrar that saw the request come from
        /// `seen` (its Via gets `received` and `rport`).
        fn answer_seen(&mut self, status: u16, extra: &[(&str, &str)], seen: &str) {
            let seen: SocketAddr = seen.parse().unwrap();
            let mut response = Response::to_request(self.last(), status, "Reason", "t");
            let via = response.headers.get("Via").unwrap().replace(
                ";rport",
                &format!(";received={};rport={}", seen.ip(), seen.port()),
            );
            response.headers.remove("Via");
            response.headers.push("Via", via);
            for (name, value) in extra {
                response.headers.push(name, *value);
            }
            self.reg.handle_response(self.now, &response);
            self.drain();
        }

        fn contacts(&self) -> Vec<String> {
            self.last()
                .headers
                .get_all("Contact")
                .map(str::to_owned)
                .collect()
        }
    }

    fn behind_nat() -> RegistrationConfig {
        RegistrationConfig {
            follow_nat: true,
            ..config()
        }
    }

    #[test]
    fn behind_a_nat_the_contact_follows_what_the_registrar_saw() {
        let mut h = Harness::new(behind_nat());
        h.answer(401, &[CHALLENGE]);
        let sent = h.sent.len();
        h.answer_seen(200, &[("Expires", "60")], "203.0.113.7:40001");
        // Not READY on an unreachable Contact: registered again at once,
        // the old Contact unbound in the same request, credentials reused.
        assert_eq!(
            h.events,
            vec![RegistrationEvent::Mapped {
                address: "203.0.113.7:40001".parse().unwrap()
            }]
        );
        assert_eq!(h.sent.len(), sent + 1);
        assert_eq!(
            h.contacts(),
            vec![
                "<sip:6001@203.0.113.7:40001>;expires=60",
                "<sip:6001@10.0.0.9:5070>;expires=0"
            ]
        );
        assert!(h.last().headers.get("Authorization").is_some());
        h.answer_seen(
            200,
            &[("Contact", "<sip:6001@203.0.113.7:40001>;expires=60")],
            "203.0.113.7:40001",
        );
        assert_eq!(h.events.len(), 2, "{:?}", h.events);
        assert!(matches!(h.events[1], RegistrationEvent::Registered { .. }));
        // Refreshes keep the mapped Contact, alone.
        h.advance();
        assert_eq!(
            h.contacts(),
            vec!["<sip:6001@203.0.113.7:40001>;expires=60"]
        );
        h.answer_seen(200, &[("Expires", "60")], "203.0.113.7:40001");
        assert_eq!(h.events.len(), 2, "nothing new: {:?}", h.events);
    }

    #[test]
    fn a_mapping_that_changes_every_time_is_followed_at_most_twice() {
        let mut h = Harness::new(behind_nat());
        for port in 40_001..=40_004 {
            h.answer_seen(200, &[("Expires", "60")], &format!("203.0.113.7:{port}"));
        }
        let mapped = h
            .events
            .iter()
            .filter(|e| matches!(e, RegistrationEvent::Mapped { .. }))
            .count();
        assert_eq!(mapped, MAX_REWRITES as usize, "{:?}", h.events);
        assert!(
            matches!(h.events.last(), Some(RegistrationEvent::Registered { .. })),
            "{:?}",
            h.events
        );
        assert_eq!(h.sent.len(), 1 + MAX_REWRITES as usize, "no loop");
    }

    #[test]
    fn the_seen_address_is_ignored_without_follow_nat_or_when_it_matches() {
        let mut h = Harness::new(config());
        h.answer_seen(200, &[("Expires", "60")], "203.0.113.7:40001");
        assert!(matches!(
            h.events[..],
            [RegistrationEvent::Registered { .. }]
        ));
        assert_eq!(h.sent.len(), 1);
        let mut h = Harness::new(behind_nat());
        h.answer_seen(200, &[("Expires", "60")], "10.0.0.9:5070");
        assert!(matches!(
            h.events[..],
            [RegistrationEvent::Registered { .. }]
        ));
        assert_eq!(h.sent.len(), 1);
    }

    #[test]
    fn another_registrar_starts_again_from_the_configured_contact() {
        let mut h = Harness::new(behind_nat());
        h.answer_seen(200, &[("Expires", "60")], "203.0.113.7:40001");
        h.answer_seen(200, &[("Expires", "60")], "203.0.113.7:40001");
        // The refresh is refused: the next registrar gets the configured
        // Contact, not the first one's mapping.
        h.advance();
        h.answer(503, &[]);
        h.advance();
        assert_eq!(h.sent.last().unwrap().0, "10.0.0.2:5060".parse().unwrap());
        assert_eq!(h.contacts(), vec!["<sip:6001@10.0.0.9:5070>;expires=60"]);
        // Calls are told too: their Contact is the configured one again.
        let mapped: Vec<SocketAddr> = h
            .events
            .iter()
            .filter_map(|e| match e {
                RegistrationEvent::Mapped { address } => Some(*address),
                _ => None,
            })
            .collect();
        assert_eq!(
            mapped,
            vec![
                "203.0.113.7:40001".parse().unwrap(),
                "10.0.0.9:5070".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_mapping_that_settles_elsewhere_is_followed_at_the_next_refresh() {
        let mut h = Harness::new(behind_nat());
        // A flapping NAT: followed twice, then left alone.
        for port in 40_001..=40_003 {
            h.answer_seen(200, &[("Expires", "60")], &format!("203.0.113.7:{port}"));
        }
        assert_eq!(h.sent.len(), 3);
        // It settled (the NAT rebooted): the refresh shows the new mapping,
        // which is followed again.
        h.advance();
        h.answer_seen(200, &[("Expires", "60")], "203.0.113.7:50000");
        assert_eq!(
            h.contacts(),
            vec![
                "<sip:6001@203.0.113.7:50000>;expires=60",
                "<sip:6001@203.0.113.7:40002>;expires=0"
            ]
        );
        assert!(matches!(
            h.events.last(),
            Some(RegistrationEvent::Mapped { .. })
        ));
    }

    const CHALLENGE: (&str, &str) = (
        "WWW-Authenticate",
        "Digest realm=\"pbx.test\", nonce=\"n1\", qop=\"auth\"",
    );

    #[test]
    fn registers_with_a_challenge_and_refreshes_at_half_the_granted_expiry() {
        let mut h = Harness::new(config());
        let first = h.last().clone();
        assert_eq!(first.uri, "sip:pbx.test");
        assert_eq!(first.headers.get("Expires"), Some("60"));
        assert!(first.headers.get("Authorization").is_none());
        h.answer(401, &[CHALLENGE]);
        let auth = h
            .last()
            .headers
            .get("Authorization")
            .expect("answers")
            .to_owned();
        assert!(
            auth.contains("username=\"6001\"") && auth.contains("nc=00000001"),
            "{auth}"
        );
        assert_eq!(h.last().headers.cseq(), Some((2, "REGISTER")));
        assert_eq!(h.last().headers.call_id(), first.headers.call_id());
        h.answer(200, &[("Contact", "<sip:6001@10.0.0.9:5070>;expires=40")]);
        assert_eq!(
            h.events,
            vec![RegistrationEvent::Registered {
                registrar: "10.0.0.1:5060".parse().unwrap(),
                expires: Duration::from_secs(40)
            }]
        );
        let registered_at = h.now;
        h.advance();
        assert_eq!(h.now - registered_at, Duration::from_secs(20));
        assert!(
            h.last().headers.get("Authorization").is_none(),
            "refresh starts fresh"
        );
        h.answer(401, &[CHALLENGE]);
        h.answer(200, &[("Expires", "60")]);
        assert_eq!(h.events.len(), 1, "a refresh reports nothing");
        assert_eq!(h.sent.len(), 4);
    }

    #[test]
    fn keepalives_go_to_the_registrar_only_while_registered() {
        let mut h = Harness::new(RegistrationConfig {
            keepalive: Some(Duration::from_secs(10)),
            ..config()
        });
        // Not registered yet: the deadline is the transaction's, and
        // running it out sends retransmissions, never a keep-alive.
        h.advance();
        assert_eq!(h.reg.poll_keepalive(), None);
        h.answer(200, &[("Expires", "60")]);
        let registered_at = h.now;
        // Every 10 s to the registrar that accepted; at 30 s the refresh
        // (due with the third) goes instead.
        for k in 1..=2u32 {
            assert_eq!(
                h.reg.next_deadline(),
                Some(registered_at + 10 * Duration::from_secs(k.into()))
            );
            h.advance();
            assert_eq!(
                h.reg.poll_keepalive(),
                Some("10.0.0.1:5060".parse().unwrap())
            );
            assert_eq!(h.reg.poll_keepalive(), None, "one per period");
        }
        let sent = h.sent.len();
        h.advance();
        assert_eq!(
            h.now - registered_at,
            Duration::from_secs(30),
            "the refresh keeps its time"
        );
        assert_eq!(h.sent.len(), sent + 1, "the refresh REGISTER");
        assert_eq!(
            h.reg.poll_keepalive(),
            None,
            "none while the refresh is on the wire"
        );
        // Refused (no answer is the same): none while waiting to retry.
        h.answer(503, &[]);
        assert!(
            matches!(h.reg.state, State::Waiting { .. }),
            "{:?}",
            h.reg.state
        );
        h.advance();
        assert_eq!(h.reg.poll_keepalive(), None);
        // Registered again at the second registrar: keep-alives go there.
        h.answer(200, &[("Expires", "60")]);
        h.advance();
        assert_eq!(
            h.reg.poll_keepalive(),
            Some("10.0.0.2:5060".parse().unwrap())
        );
        // Unregistered: none, and nothing is left to do.
        h.reg.unregister(h.now);
        h.drain();
        h.answer(200, &[]);
        assert!(h.reg.is_over());
        assert_eq!(h.reg.poll_keepalive(), None);
        assert_eq!(h.reg.next_deadline(), None);
    }

    #[test]
    fn a_second_challenge_to_fresh_credentials_is_an_auth_failure_and_three_are_terminal() {
        let mut h = Harness::new(config());
        h.answer(401, &[CHALLENGE]);
        for failure in 1..=3 {
            h.answer(401, &[CHALLENGE]);
            if failure < 3 {
                assert!(h.events.is_empty());
                let before = h.sent.len();
                let waited_from = h.now;
                h.advance();
                assert!(
                    h.now - waited_from >= Duration::from_millis(800),
                    "no tight loop"
                );
                assert_eq!(h.sent.len(), before + 1);
                assert!(h.last().headers.get("Authorization").is_some());
            }
        }
        let [RegistrationEvent::AuthFailed { reason }] = h.events.as_slice() else {
            panic!("{:?}", h.events);
        };
        assert!(reason.contains("authentication failed 3 times"), "{reason}");
        assert_eq!(h.sent.len(), 4, "one plain REGISTER and three answers");
        assert_eq!(h.reg.next_deadline(), None);
    }

    #[test]
    fn stale_nonce_is_answered_again_without_counting() {
        let mut h = Harness::new(config());
        h.answer(401, &[CHALLENGE]);
        h.answer(
            401,
            &[(
                "WWW-Authenticate",
                "Digest realm=\"pbx.test\", nonce=\"n2\", stale=true",
            )],
        );
        assert!(h.events.is_empty());
        assert!(
            h.last()
                .headers
                .get("Authorization")
                .is_some_and(|a| a.contains("n2"))
        );
        h.answer(200, &[]);
        assert!(matches!(h.events[0], RegistrationEvent::Registered { .. }));
    }

    #[test]
    fn proxy_challenge_gets_proxy_authorization() {
        let mut h = Harness::new(config());
        h.answer(
            407,
            &[("Proxy-Authenticate", "Digest realm=\"p\", nonce=\"x\"")],
        );
        assert!(h.last().headers.get("Proxy-Authorization").is_some());
        assert!(h.last().headers.get("Authorization").is_none());
    }

    #[test]
    fn no_password_and_a_challenge_is_terminal_with_the_reason() {
        let mut h = Harness::new(RegistrationConfig {
            password: None,
            ..config()
        });
        h.answer(401, &[CHALLENGE]);
        let [RegistrationEvent::AuthFailed { reason }] = h.events.as_slice() else {
            panic!("{:?}", h.events);
        };
        assert!(
            reason.contains("no SIP password is configured for slot 1"),
            "{reason}"
        );
    }

    #[test]
    fn timeout_fails_over_to_the_next_registrar_and_back_with_backoff() {
        let mut h = Harness::new(config());
        // Timer F on the first registrar: retransmissions, then a timeout.
        while h.reg.branch().is_some() {
            h.advance();
        }
        assert!(
            h.sent
                .iter()
                .all(|(to, _)| to.port() == 5060 && to.ip().to_string() == "10.0.0.1")
        );
        assert!(h.sent.len() > 5, "retransmitted");
        h.advance();
        assert_eq!(
            h.sent.last().map(|s| s.0.to_string()),
            Some("10.0.0.2:5060".into())
        );
        h.answer(503, &[]);
        h.advance();
        assert_eq!(
            h.sent.last().map(|s| s.0.to_string()),
            Some("10.0.0.1:5060".into())
        );
        h.answer(200, &[]);
        assert!(matches!(
            h.events.as_slice(),
            [RegistrationEvent::Registered { .. }]
        ));
    }

    #[test]
    fn a_failed_refresh_reports_the_loss_and_registers_again() {
        let mut h = Harness::new(config());
        h.answer(200, &[]);
        h.advance(); // refresh
        h.answer(500, &[]);
        assert!(matches!(
            h.events.last(),
            Some(RegistrationEvent::Lost { .. })
        ));
        h.advance();
        h.answer(200, &[]);
        assert!(matches!(
            h.events.last(),
            Some(RegistrationEvent::Registered { .. })
        ));
    }

    #[test]
    fn interval_too_brief_raises_the_expiry() {
        let mut h = Harness::new(config());
        h.answer(423, &[("Min-Expires", "120")]);
        assert_eq!(h.last().headers.get("Expires"), Some("120"));
    }

    #[test]
    fn unregisters_with_expires_zero_and_answers_its_challenge() {
        let mut h = Harness::new(config());
        h.answer(200, &[]);
        h.reg.unregister(h.now);
        h.drain();
        assert_eq!(h.last().headers.get("Expires"), Some("0"));
        assert!(
            h.last()
                .headers
                .get("Contact")
                .is_some_and(|c| c.ends_with(";expires=0"))
        );
        h.answer(401, &[CHALLENGE]);
        h.answer(200, &[]);
        assert_eq!(h.events.last(), Some(&RegistrationEvent::Unregistered));
        assert!(h.reg.is_over());
    }

    #[test]
    fn unregistering_before_any_binding_ends_at_once() {
        let mut h = Harness::new(config());
        h.answer(503, &[]);
        h.reg.unregister(h.now);
        h.drain();
        assert_eq!(h.events, vec![RegistrationEvent::Unregistered]);
        assert_eq!(h.sent.len(), 1);
    }

    #[test]
    fn responses_for_another_branch_are_ignored() {
        let mut h = Harness::new(config());
        let mut response = Response::to_request(h.last(), 200, "OK", "t");
        response.headers.remove("Via");
        response
            .headers
            .push("Via", "SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKother");
        h.reg.handle_response(h.now, &response);
        h.drain();
        assert!(h.events.is_empty());
        assert!(h.reg.branch().is_some());
    }
}
