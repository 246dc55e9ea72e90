//! One call of a slot's user agent (RFC 3261 §12–§17), sans-IO: requests,
//! responses and time in; datagrams ([`Transmit`]), [`CallEvent`]s for the
//! call bridge and a deadline out — `handle_request`, `handle_response`,
//! `handle_timeout`, `poll_transmit`, `poll_event`, `next_deadline`, as in
//! quinn-proto and [`super::registration`].
//!
//! It owns the INVITE transactions of both sides (UAS for F-09, UAC for
//! F-03), CANCEL, the dialog that follows (BYE either way, in-dialog OPTIONS,
//! INFO DTMF, re-INVITE answered with the same SDP) and the retransmissions
//! UDP needs (timers A/B, G/H/I, D, the 2xx retransmission of the UAS core,
//! E/F through [`ClientTransaction`]).
//!
//! It must never: touch a socket or a clock, panic on what arrives (bad
//! requests get `400` naming the header, unmatched responses are counted
//! and dropped), emit a second [`CallEvent::IncomingInvite`] for a
//! retransmission, or grow without bound (at most [`MAX_RETAINED`]
//! answered requests are kept, each for 64·T1).
//!
//! ## Driving it
//!
//! The driver keeps one [`Call`] per Call-ID. A datagram that parses as a
//! request with a known Call-ID goes to [`Call::handle_request`]; an
//! INVITE with an unknown one to [`Call::incoming`] (its [`Refusal`]
//! carries the stateless answer, e.g. `400`, or `481` for a BYE/CANCEL of
//! no call); responses go to [`Call::handle_response`] by Call-ID. After
//! each input it sends every [`Call::poll_transmit`], hands every
//! [`Call::poll_event`] to the bridge, sleeps until [`Call::next_deadline`]
//! and calls [`Call::handle_timeout`]; it drops the call once
//! [`Call::is_over`].
//!
//! ## Where the number to dial comes from (F-09)
//!
//! [`target_number`], in this order: (a) the `X-VSS-Dial` header when
//! present (a PBX dialplan sets it; when present it is the only source),
//! else (b) the request-URI user part when it is not the slot's extension,
//! else (c) the `To` URI user part when it is not the slot's extension.
//! `tel:` URIs count like a SIP URI's user; `%23`/`%2A` are decoded and the
//! visual separators `-.()` and spaces are dropped. A dialable number is an
//! optional leading `+` and 3–20 of `0-9`, `*`, `#` (`*`/`#` only without
//! `+`, for service codes such as `*100#`). Anything else: `484 Address
//! Incomplete`.
//!
//! Not covered: forked 2xx responses with a second To tag (only the first
//! dialog is kept; others are counted as unmatched), strict routing (every
//! route is treated as loose), offers in ACK (late offer), session refresh
//! and hold (a re-INVITE is answered with the unchanged local SDP or 488),
//! 100rel/PRACK, UPDATE, REFER, and challenges to our BYE.

use super::rng::SplitMix64;
use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::auth::{self, Challenge, ChallengeKind};
use super::message::{self, NameAddr, Request, Response};
use super::transaction::{ClientTransaction, Tick, Timers};

/// The header a PBX may set to carry the number to dial (F-09).
pub const DIAL_HEADER: &str = "X-VSS-Dial";

/// Most answered requests a call keeps for retransmissions (each for 64·T1).
pub const MAX_RETAINED: usize = 32;

/// Timer I's T4 (RFC 3261 §17.1.2.2): how long ACKs are absorbed.
const T4: Duration = Duration::from_secs(5);
/// Timer D: how long the UAC re-ACKs a retransmitted non-2xx final.
const TIMER_D: Duration = Duration::from_secs(32);
/// Authenticated INVITEs sent at most (the second only after `stale=true`).
const MAX_AUTH_ATTEMPTS: u32 = 2;
/// The methods a call answers.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO";
const USER_AGENT: &str = concat!("vss-hubd/", env!("CARGO_PKG_VERSION"));
const SDP: &str = "application/sdp";

/// What every call of a slot shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallConfig {
    /// The slot's SIP number (its extension on the PBX), e.g. `6001`.
    pub extension: String,
    /// Our address as peers must see it (Via sent-by, Contact).
    pub local: SocketAddr,
    /// Transaction timers (T1, T2).
    pub timers: Timers,
}

/// Digest credentials for challenges to our INVITE.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The digest username (the slot's SIP number).
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"…")
            .finish()
    }
}

/// A call the slot places (F-03).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingCall {
    /// The request-URI and To (`sip:queue@pbx`).
    pub target_uri: String,
    /// Our From, a name-addr without tag (`"+4930123" <sip:6001@pbx>`).
    pub from: String,
    /// Where the INVITE goes (the PBX).
    pub proxy: SocketAddr,
    /// Our SDP offer.
    pub local_sdp: Vec<u8>,
    /// Answers to 401/407, if the PBX challenges INVITEs.
    pub credentials: Option<Credentials>,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// The datagram.
    pub bytes: Vec<u8>,
}

/// An INVITE the bridge must act on (F-09).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingInvite {
    /// The Call-ID.
    pub call_id: String,
    /// The number the slot must dial (see the module doc).
    pub target_number: String,
    /// The SDP offer, as received (empty without an offer).
    pub remote_sdp: Vec<u8>,
    /// The caller.
    pub from: NameAddr,
    /// The callee as the caller wrote it.
    pub to: NameAddr,
    /// Where the INVITE came from.
    pub source: SocketAddr,
}

/// What the call bridge learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A new incoming call with a dialable number: answer with
    /// [`Call::ringing`], [`Call::answer`] or [`Call::reject`].
    IncomingInvite(IncomingInvite),
    /// Our INVITE got a provisional response (101–199).
    Progress {
        /// 180, 183 …
        status: u16,
        /// The reason phrase.
        reason: String,
        /// Early media SDP, if any.
        sdp: Option<Vec<u8>>,
    },
    /// Our INVITE was answered; the ACK is sent.
    Answered {
        /// The SDP answer (empty if none).
        sdp: Vec<u8>,
    },
    /// The ACK for our 2xx arrived: the caller has the answer.
    Confirmed,
    /// Our INVITE failed (a final ≥ 300, or 408 on timeout).
    Failed {
        /// The status.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// The caller cancelled before our final response (487 sent).
    Cancelled,
    /// No ACK for our 2xx within 64·T1: a BYE is sent, the call is over.
    AckTimeout,
    /// The peer hung up (BYE answered with 200).
    RemoteHangup,
    /// A re-INVITE in the dialog: answer with [`Call::accept_reinvite`] or
    /// [`Call::refuse_reinvite`].
    ReInvite {
        /// The new offer (empty if none).
        sdp: Vec<u8>,
    },
    /// A DTMF digit sent by SIP INFO (`application/dtmf-relay` or
    /// `application/dtmf`).
    Dtmf {
        /// `0-9`, `*`, `#`, `A-D`.
        digit: char,
        /// The duration, when given.
        duration_ms: Option<u32>,
    },
}

/// Why the bridge's request cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The action does not fit the call's state.
    #[error("cannot {action}: the call {state}")]
    State {
        /// What was asked.
        action: &'static str,
        /// Where the call is.
        state: &'static str,
    },
    /// A status that is not a final error response.
    #[error("status {0} is not a final error response (300–699)")]
    Status(u16),
}

/// A request is missing a header every request needs, or it is garbled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("missing or malformed {header}")]
pub struct BadRequest {
    /// The header.
    pub header: &'static str,
}

impl BadRequest {
    /// The reason phrase of the 400.
    pub fn reason(&self) -> String {
        format!("Bad Request: missing or malformed {}", self.header)
    }
}

/// An INVITE that did not become a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why, for the log.
    pub reason: String,
    /// The stateless answer, when the request can be answered at all.
    pub transmit: Option<Transmit>,
}

/// Why an INVITE carries no number the slot can dial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Request-URI and To both name the slot, and no `X-VSS-Dial`.
    #[error("no number to dial: request-URI and To name the slot and there is no X-VSS-Dial")]
    Missing,
    /// The place that carries the number holds something else.
    #[error("{origin} {value:?} is not a dialable number")]
    NotDialable {
        /// `X-VSS-Dial`, `request-URI` or `To`.
        origin: &'static str,
        /// What it holds.
        value: String,
    },
}

/// Fresh randomness for [`Call::incoming`]/[`Call::invite`] (tags,
/// branches, Call-ID, client nonces).
pub fn random_seed() -> Result<u64, getrandom::Error> {
    getrandom::u64()
}

/// The number an INVITE asks the slot `extension` to dial (module doc).
pub fn target_number(request: &Request, extension: &str) -> Result<String, TargetError> {
    if let Some(value) = request.headers.get(DIAL_HEADER) {
        let raw = uri_number(value).unwrap_or(value.trim());
        return dialable(raw).ok_or_else(|| TargetError::NotDialable {
            origin: DIAL_HEADER,
            value: value.to_owned(),
        });
    }
    let to = request.headers.to();
    let candidates = [
        ("request-URI", uri_number(&request.uri)),
        ("To", to.as_ref().and_then(|t| uri_number(&t.uri))),
    ];
    for (origin, user) in candidates {
        let Some(user) = user else { continue };
        if user == extension {
            continue;
        }
        return dialable(user).ok_or_else(|| TargetError::NotDialable {
            origin,
            value: user.to_owned(),
        });
    }
    Err(TargetError::Missing)
}

/// The user part of a `sip:`/`sips:` URI or the number of a `tel:` URI.
fn uri_number(uri: &str) -> Option<&str> {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    if let Some(rest) = uri.strip_prefix("tel:") {
        let number = rest.split([';', '?']).next().unwrap_or_default();
        return (!number.is_empty()).then_some(number);
    }
    message::uri_user(uri)
}

/// The normalised number, if `raw` is dialable.
fn dialable(raw: &str) -> Option<String> {
    let mut decoded = String::with_capacity(raw.len());
    let mut rest = raw.trim();
    while let Some(c) = rest.chars().next() {
        if let Some(hex) = rest.strip_prefix('%').and_then(|r| r.get(..2)) {
            let byte = u8::from_str_radix(hex, 16).ok()?;
            decoded.push(char::from(byte));
            rest = &rest[3..];
        } else {
            decoded.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let cleaned: String = decoded
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect();
    let (plus, body) = match cleaned.strip_prefix('+') {
        Some(body) => (true, body),
        None => (false, cleaned.as_str()),
    };
    let allowed = |c: char| c.is_ascii_digit() || (!plus && (c == '*' || c == '#'));
    ((3..=20).contains(&body.len()) && body.chars().all(allowed)).then_some(cleaned)
}

/// Checks what every request needs (RFC 3261 §8.1.1): a Via with a branch,
/// From (with a tag), To, Call-ID, a CSeq matching the method, and a Contact
/// on INVITE.
pub fn check_request(request: &Request) -> Result<(), BadRequest> {
    let bad = |header| Err(BadRequest { header });
    let h = &request.headers;
    if h.via().and_then(|v| v.branch().map(str::len)).unwrap_or(0) == 0 {
        return bad("Via");
    }
    let from_ok = h
        .from()
        .is_some_and(|f| valid_addr(&f) && f.tag().is_some_and(|t| !t.is_empty()));
    if !from_ok {
        return bad("From");
    }
    if !h.to().as_ref().is_some_and(valid_addr) {
        return bad("To");
    }
    if h.call_id().is_none_or(|c| c.trim().is_empty()) {
        return bad("Call-ID");
    }
    match h.cseq() {
        Some((_, method)) if method == request.method => {}
        _ => return bad("CSeq"),
    }
    if request.method == "INVITE" && h.contacts().is_empty() {
        return bad("Contact");
    }
    Ok(())
}

/// A From/To with a URI that has a scheme and something after it.
fn valid_addr(addr: &NameAddr) -> bool {
    addr.uri
        .split_once(':')
        .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty())
}

/// Where responses to `request` go (RFC 3261 §18.2.2, RFC 3581): the
/// source address with `rport`, else the source IP and the Via port.
fn reply_address(request: &Request, source: SocketAddr) -> SocketAddr {
    match request.headers.via() {
        Some(via) if via.rport().is_none() => {
            SocketAddr::new(source.ip(), via.port.unwrap_or(5060))
        }
        _ => source,
    }
}

/// A response outside any transaction state (400s, 481 to strays);
/// `None` when the request has no Via to answer along.
pub fn answer_stateless(
    request: &Request,
    source: SocketAddr,
    status: u16,
    reason: &str,
) -> Option<Transmit> {
    request.headers.via()?;
    let mut tag = SplitMix64(u64::from(source.port()) ^ 0x5bd1_e995);
    let mut response = Response::to_request(request, status, reason, &tag.hex());
    response.headers.push("Server", USER_AGENT);
    Some(Transmit {
        to: reply_address(request, source),
        bytes: response.to_bytes(),
    })
}

/// Which side of the call we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We received the INVITE (F-09).
    Uas,
    /// We sent the INVITE (F-03).
    Uac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialogState {
    /// No final response yet.
    Pending,
    /// A 2xx was sent or received.
    Confirmed,
    /// Over (or never established).
    Terminated,
}

/// The UAS side of an INVITE (RFC 3261 §17.2.1 with RFC 6026's Accepted).
#[derive(Debug)]
struct ServerInvite {
    request: Request,
    branch: String,
    cseq: u32,
    reply_to: SocketAddr,
    /// The last response sent, for retransmissions.
    last: Option<Vec<u8>>,
    state: Ist,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ist {
    /// Waiting for the bridge.
    Proceeding,
    /// 2xx sent; retransmitted until the ACK.
    Accepted(Retransmit),
    /// Error final sent; retransmitted (timer G) until the ACK (timer H).
    Completed(Retransmit),
    /// ACK received; further ACKs absorbed until timer I.
    Confirmed { until: Instant },
    /// Over; retransmitted INVITEs are absorbed.
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retransmit {
    at: Instant,
    interval: Duration,
    give_up_at: Instant,
}

impl Retransmit {
    fn start(timers: &Timers, now: Instant) -> Retransmit {
        Retransmit {
            at: now + timers.t1,
            interval: timers.t1,
            give_up_at: now + timers.timeout(),
        }
    }
}

/// The UAC side of our INVITE (RFC 3261 §17.1.1).
#[derive(Debug)]
struct ClientInvite {
    request: Request,
    bytes: Vec<u8>,
    branch: String,
    cseq: u32,
    state: Ict,
    cancel: Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ict {
    /// Timer A retransmits (doubling, no cap), timer B gives up.
    Calling {
        at: Instant,
        interval: Duration,
        timeout_at: Instant,
    },
    /// A provisional came; after a CANCEL, gives up at the instant.
    Proceeding { give_up_at: Option<Instant> },
    /// 2xx received and ACKed; re-ACK retransmissions until the instant.
    Accepted {
        until: Instant,
        ack: Vec<u8>,
        ack_to: SocketAddr,
    },
    /// Over.
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    None,
    /// Asked before any provisional: sent when one arrives (RFC 3261 §9.1).
    Wanted,
    Sent,
}

/// An error final we ACKed; its retransmissions are ACKed again (timer D).
#[derive(Debug)]
struct AckedFinal {
    branch: String,
    ack: Vec<u8>,
    to: SocketAddr,
    until: Instant,
}

/// Our BYE or CANCEL, with timers E/F.
#[derive(Debug)]
struct ClientRequest {
    method: &'static str,
    branch: String,
    bytes: Vec<u8>,
    to: SocketAddr,
    tx: ClientTransaction,
}

/// A non-INVITE request we answered, kept for its retransmissions (timer J).
#[derive(Debug)]
struct Answered {
    branch: String,
    method: String,
    reply_to: SocketAddr,
    bytes: Vec<u8>,
    until: Instant,
}

/// One call: its INVITE transaction(s), its dialog and what is still
/// retransmitted.
#[derive(Debug)]
pub struct Call {
    config: CallConfig,
    rng: SplitMix64,
    role: Role,
    call_id: String,
    /// The UAS's INVITE source, or the UAC's proxy: the fallback next hop.
    peer: SocketAddr,
    local_uri: String,
    remote_uri: String,
    local_tag: String,
    remote_tag: Option<String>,
    remote_target: String,
    /// In the order requests carry them.
    route_set: Vec<String>,
    local_cseq: u32,
    remote_cseq: Option<u32>,
    dialog: DialogState,
    local_sdp: Vec<u8>,
    credentials: Option<Credentials>,
    auth_attempts: u32,
    auth_header: Option<(&'static str, String)>,
    uas: Option<ServerInvite>,
    uac: Option<ClientInvite>,
    reinvite: Option<ServerInvite>,
    acked_finals: Vec<AckedFinal>,
    client: Vec<ClientRequest>,
    answered: VecDeque<Answered>,
    bye_after_ack: bool,
    unmatched_responses: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<CallEvent>,
}

fn without_tag(addr: &NameAddr) -> String {
    let mut out = match &addr.display {
        Some(d) => format!("\"{d}\" <{}>", addr.uri),
        None => format!("<{}>", addr.uri),
    };
    for (name, value) in addr.params.iter().filter(|(n, _)| n != "tag") {
        match value {
            Some(v) => out.push_str(&format!(";{name}={v}")),
            None => out.push_str(&format!(";{name}")),
        }
    }
    out
}

/// The address of a SIP URI whose host is an IP literal.
fn uri_address(uri: &str) -> Option<SocketAddr> {
    let uri = NameAddr::parse(uri).map_or_else(|| uri.to_owned(), |a| a.uri);
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split([';', '?']).next()?;
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let ip: IpAddr = host.parse().ok()?;
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 5060,
    };
    Some(SocketAddr::new(ip, port))
}

/// A DTMF digit and duration from an INFO body.
fn parse_dtmf(content_type: &str, body: &[u8]) -> Option<(char, Option<u32>)> {
    let text = std::str::from_utf8(body).ok()?;
    let digit = |s: &str| -> Option<char> {
        match s.trim() {
            "10" => Some('*'),
            "11" => Some('#'),
            s if s.len() == 1 => s
                .chars()
                .next()
                .map(|c| c.to_ascii_uppercase())
                .filter(|c| c.is_ascii_digit() || "*#ABCD".contains(*c)),
            _ => None,
        }
    };
    if content_type == "application/dtmf" {
        return digit(text).map(|d| (d, None));
    }
    let (mut signal, mut duration) = (None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "signal" => signal = digit(value),
            "duration" => duration = value.trim().parse().ok(),
            _ => {}
        }
    }
    signal.map(|s| (s, duration))
}

fn content_type(request: &Request) -> String {
    request
        .headers
        .get("Content-Type")
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

impl Call {
    fn blank(config: CallConfig, role: Role, seed: u64, peer: SocketAddr) -> Call {
        let mut rng = SplitMix64(seed);
        let local_tag = rng.hex();
        Call {
            config,
            rng,
            role,
            call_id: String::new(),
            peer,
            local_uri: String::new(),
            remote_uri: String::new(),
            local_tag,
            remote_tag: None,
            remote_target: String::new(),
            route_set: Vec::new(),
            local_cseq: 0,
            remote_cseq: None,
            dialog: DialogState::Pending,
            local_sdp: Vec::new(),
            credentials: None,
            auth_attempts: 0,
            auth_header: None,
            uas: None,
            uac: None,
            reinvite: None,
            acked_finals: Vec::new(),
            client: Vec::new(),
            answered: VecDeque::new(),
            bye_after_ack: false,
            unmatched_responses: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// An INVITE outside any dialog arrived from `source` (F-09): `100
    /// Trying` is ready to send, then either [`CallEvent::IncomingInvite`]
    /// or, without a dialable number, `484` (or `415`/`420` for a body or
    /// extension we cannot handle). `seed` (from [`random_seed`]) feeds the
    /// To tag and branches. A request that cannot become a call gets a
    /// stateless answer in the [`Refusal`].
    pub fn incoming(
        config: CallConfig,
        source: SocketAddr,
        request: Request,
        seed: u64,
        now: Instant,
    ) -> Result<Call, Refusal> {
        let refuse = |status, reason: String| Refusal {
            transmit: answer_stateless(&request, source, status, &reason),
            reason,
        };
        if let Err(bad) = check_request(&request) {
            return Err(refuse(400, bad.reason()));
        }
        let h = &request.headers;
        if request.method == "ACK" {
            return Err(Refusal {
                reason: "ACK outside a call".into(),
                transmit: None,
            });
        }
        if request.method != "INVITE" {
            return Err(refuse(481, "Call/Transaction Does Not Exist".into()));
        }
        let (Some(from), Some(to), Some(via), Some((cseq, _)), Some(call_id), Some(contact)) = (
            h.from(),
            h.to(),
            h.via(),
            h.cseq(),
            h.call_id(),
            h.contacts().into_iter().next(),
        ) else {
            return Err(refuse(400, "Bad Request".into()));
        };
        if to.tag().is_some() {
            return Err(refuse(481, "Call/Transaction Does Not Exist".into()));
        }
        let mut call = Call::blank(config, Role::Uas, seed, source);
        call.call_id = call_id.to_owned();
        call.local_uri = without_tag(&to);
        call.remote_uri = without_tag(&from);
        call.remote_tag = from.tag().map(str::to_owned);
        call.remote_target = contact.uri.clone();
        call.route_set = h
            .list("Record-Route")
            .into_iter()
            .map(str::to_owned)
            .collect();
        call.remote_cseq = Some(cseq);
        let reply_to = reply_address(&request, source);
        let branch = via.branch().unwrap_or_default().to_owned();
        let target = target_number(&request, &call.config.extension);
        let body_type = content_type(&request);
        let require = h.get("Require").map(str::to_owned);
        let remote_sdp = request.body.clone();
        call.uas = Some(ServerInvite {
            request,
            branch,
            cseq,
            reply_to,
            last: None,
            state: Ist::Proceeding,
        });
        call.send_invite_response(100, "Trying", None);
        let refusal = if let Some(require) = require {
            Some((420, "Bad Extension", Some(("Unsupported", require))))
        } else if !remote_sdp.is_empty() && body_type != SDP {
            Some((
                415,
                "Unsupported Media Type",
                Some(("Accept", SDP.to_owned())),
            ))
        } else {
            None
        };
        if let Some((status, reason, header)) = refusal {
            call.final_error(now, status, reason, header);
            return Ok(call);
        }
        match target {
            Ok(target_number) => {
                call.events
                    .push_back(CallEvent::IncomingInvite(IncomingInvite {
                        call_id: call.call_id.clone(),
                        target_number,
                        remote_sdp,
                        from,
                        to,
                        source,
                    }));
            }
            Err(e) => {
                tracing::info!(call_id = %call.call_id, error = %e, "INVITE without a dialable number");
                call.final_error(now, 484, "Address Incomplete", None);
            }
        }
        Ok(call)
    }

    /// Places a call (F-03): the INVITE is ready to send to `call.proxy`.
    /// `seed` (from [`random_seed`]) feeds the Call-ID, tags, branches and
    /// client nonces.
    pub fn invite(config: CallConfig, call: OutgoingCall, seed: u64, now: Instant) -> Call {
        let mut c = Call::blank(config, Role::Uac, seed, call.proxy);
        c.call_id = format!("{}{}@vss-hubd", c.rng.hex(), c.rng.hex());
        c.local_uri = NameAddr::parse(&call.from).map_or(call.from.clone(), |a| without_tag(&a));
        c.remote_uri = format!("<{}>", call.target_uri);
        c.remote_target = call.target_uri;
        c.local_sdp = call.local_sdp;
        c.credentials = call.credentials;
        c.send_invite(now);
        c
    }

    /// The Call-ID (the driver's key for routing requests and responses).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Which side we are.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Our tag (To tag as UAS, From tag as UAC).
    pub fn local_tag(&self) -> &str {
        &self.local_tag
    }

    /// Responses that matched no transaction of this call (dropped).
    pub fn unmatched_responses(&self) -> u64 {
        self.unmatched_responses
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the bridge.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// True once nothing more will happen: the dialog is over and nothing
    /// is retransmitted or kept for retransmissions.
    pub fn is_over(&self) -> bool {
        self.dialog == DialogState::Terminated
            && self.next_deadline().is_none()
            && self.transmits.is_empty()
    }

    /// When [`Call::handle_timeout`] must run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let server = |tx: &Option<ServerInvite>| match tx.as_ref().map(|t| t.state) {
            Some(Ist::Accepted(r) | Ist::Completed(r)) => Some(r.at.min(r.give_up_at)),
            Some(Ist::Confirmed { until }) => Some(until),
            _ => None,
        };
        let client = match self.uac.as_ref().map(|t| &t.state) {
            Some(Ict::Calling { at, timeout_at, .. }) => Some((*at).min(*timeout_at)),
            Some(Ict::Proceeding { give_up_at }) => *give_up_at,
            Some(Ict::Accepted { until, .. }) => Some(*until),
            _ => None,
        };
        [server(&self.uas), server(&self.reinvite), client]
            .into_iter()
            .flatten()
            .chain(self.acked_finals.iter().map(|a| a.until))
            .chain(self.client.iter().filter_map(|c| c.tx.deadline()))
            .chain(self.answered.iter().map(|a| a.until))
            .min()
    }

    // ---- the bridge's actions -------------------------------------------

    fn pending_uas(&self, action: &'static str) -> Result<(), CallError> {
        let proceeding = self
            .uas
            .as_ref()
            .is_some_and(|t| t.state == Ist::Proceeding);
        if self.role != Role::Uas {
            return Err(CallError::State {
                action,
                state: "is outgoing",
            });
        }
        if !proceeding || self.dialog != DialogState::Pending {
            return Err(CallError::State {
                action,
                state: "has its final response",
            });
        }
        Ok(())
    }

    /// The device is ringing: `180 Ringing`, or `183 Session Progress` with
    /// early media SDP.
    pub fn ringing(&mut self, early_sdp: Option<Vec<u8>>) -> Result<(), CallError> {
        self.pending_uas("send ringing")?;
        match early_sdp {
            Some(sdp) => self.send_invite_response(183, "Session Progress", Some(&sdp)),
            None => self.send_invite_response(180, "Ringing", None),
        }
        Ok(())
    }

    /// The device answered: `200 OK` with `local_sdp`, retransmitted until
    /// the ACK ([`CallEvent::Confirmed`]) or 64·T1 ([`CallEvent::AckTimeout`]).
    pub fn answer(&mut self, now: Instant, local_sdp: Vec<u8>) -> Result<(), CallError> {
        self.pending_uas("answer")?;
        self.local_sdp = local_sdp;
        let sdp = self.local_sdp.clone();
        self.send_invite_response(200, "OK", Some(&sdp));
        if let Some(tx) = &mut self.uas {
            tx.state = Ist::Accepted(Retransmit::start(&self.config.timers, now));
        }
        self.dialog = DialogState::Confirmed;
        Ok(())
    }

    /// Refuses the call with a final `status` (300–699): 486, 480, 603,
    /// 488 for an unsupported offer, 503 …
    pub fn reject(&mut self, now: Instant, status: u16, reason: &str) -> Result<(), CallError> {
        if !(300..=699).contains(&status) {
            return Err(CallError::Status(status));
        }
        self.pending_uas("reject")?;
        self.final_error(now, status, reason, None);
        Ok(())
    }

    /// Cancels our INVITE before its final response (sent once a
    /// provisional arrived, RFC 3261 §9.1); the 487 that follows is ACKed
    /// and reported as [`CallEvent::Failed`].
    pub fn cancel(&mut self, now: Instant) -> Result<(), CallError> {
        let refuse = |state| {
            Err(CallError::State {
                action: "cancel",
                state,
            })
        };
        let Some(tx) = &mut self.uac else {
            return refuse("is incoming");
        };
        if tx.cancel != Cancel::None {
            return refuse("is already cancelled");
        }
        match tx.state {
            Ict::Proceeding { .. } => self.send_cancel(now),
            Ict::Calling { .. } => tx.cancel = Cancel::Wanted,
            _ => return refuse("has its final response"),
        }
        Ok(())
    }

    /// Ends the call however fits: BYE in a dialog (after the ACK when our
    /// 2xx is not acknowledged yet), CANCEL before our INVITE's final
    /// response, `480` to an incoming INVITE not answered yet; nothing once
    /// over.
    pub fn hang_up(&mut self, now: Instant) -> Result<(), CallError> {
        match self.dialog {
            DialogState::Terminated => Ok(()),
            DialogState::Confirmed => {
                let unacked = self
                    .uas
                    .as_ref()
                    .is_some_and(|t| matches!(t.state, Ist::Accepted(_)));
                if unacked {
                    self.bye_after_ack = true;
                } else {
                    self.send_bye(now);
                }
                Ok(())
            }
            DialogState::Pending => match self.role {
                Role::Uas => self.reject(now, 480, "Temporarily Unavailable"),
                Role::Uac => match self.cancel(now) {
                    Err(CallError::State { .. }) => Ok(()),
                    other => other,
                },
            },
        }
    }

    /// Answers the pending re-INVITE with `200 OK` and the unchanged local SDP.
    pub fn accept_reinvite(&mut self, now: Instant) -> Result<(), CallError> {
        self.pending_reinvite("accept a re-INVITE")?;
        let sdp = self.local_sdp.clone();
        let response = self.reinvite_response(200, "OK", Some(&sdp));
        if let Some(tx) = &mut self.reinvite {
            tx.last = Some(response.clone());
            tx.state = Ist::Accepted(Retransmit::start(&self.config.timers, now));
            self.transmits.push_back(Transmit {
                to: tx.reply_to,
                bytes: response,
            });
        }
        Ok(())
    }

    /// Refuses the pending re-INVITE with `488 Not Acceptable Here`.
    pub fn refuse_reinvite(&mut self, now: Instant) -> Result<(), CallError> {
        self.pending_reinvite("refuse a re-INVITE")?;
        let response = self.reinvite_response(488, "Not Acceptable Here", None);
        if let Some(tx) = &mut self.reinvite {
            tx.last = Some(response.clone());
            tx.state = Ist::Completed(Retransmit::start(&self.config.timers, now));
            self.transmits.push_back(Transmit {
                to: tx.reply_to,
                bytes: response,
            });
        }
        Ok(())
    }

    fn pending_reinvite(&self, action: &'static str) -> Result<(), CallError> {
        let pending = self
            .reinvite
            .as_ref()
            .is_some_and(|t| t.state == Ist::Proceeding);
        if pending && self.dialog == DialogState::Confirmed {
            Ok(())
        } else {
            Err(CallError::State {
                action,
                state: "has no pending re-INVITE",
            })
        }
    }

    // ---- input ----------------------------------------------------------

    /// A request with this call's Call-ID arrived from `source`.
    pub fn handle_request(&mut self, now: Instant, source: SocketAddr, request: &Request) {
        if let Err(bad) = check_request(request) {
            if request.method != "ACK" {
                self.stateless(request, source, 400, &bad.reason());
            }
            return;
        }
        let h = &request.headers;
        let branch = h
            .via()
            .and_then(|v| v.branch().map(str::to_owned))
            .unwrap_or_default();
        if h.call_id() != Some(self.call_id.as_str()) {
            if request.method != "ACK" {
                self.stateless(request, source, 481, "Call/Transaction Does Not Exist");
            }
            return;
        }
        if let Some(done) = self
            .answered
            .iter()
            .find(|a| a.branch == branch && a.method == request.method)
        {
            self.transmits.push_back(Transmit {
                to: done.reply_to,
                bytes: done.bytes.clone(),
            });
            return;
        }
        match request.method.as_str() {
            "ACK" => self.on_ack(now, request, &branch),
            "CANCEL" => self.on_cancel(now, source, request, &branch),
            "INVITE" => self.on_invite(now, source, request, &branch),
            _ => self.on_dialog_request(now, source, request),
        }
    }

    /// A response arrived (the driver routes by Call-ID; anything that
    /// matches no transaction here is counted and dropped).
    pub fn handle_response(&mut self, now: Instant, response: &Response) {
        let h = &response.headers;
        let (Some(branch), Some((_, method))) = (
            h.via().and_then(|v| v.branch().map(str::to_owned)),
            h.cseq(),
        ) else {
            self.unmatched_responses += 1;
            return;
        };
        if method == "INVITE" {
            if response.status >= 300
                && let Some(done) = self.acked_finals.iter().find(|a| a.branch == branch)
            {
                self.transmits.push_back(Transmit {
                    to: done.to,
                    bytes: done.ack.clone(),
                });
                return;
            }
            if self.uac.as_ref().is_some_and(|t| t.branch == branch) {
                self.on_invite_response(now, response);
                return;
            }
        } else if let Some(i) = self
            .client
            .iter()
            .position(|c| c.branch == branch && c.method == method)
        {
            if self.client[i].tx.on_response(response.status) {
                self.client.remove(i);
            }
            return;
        }
        self.unmatched_responses += 1;
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick_server(now, false);
        self.tick_server(now, true);
        self.tick_client_invite(now);
        self.acked_finals.retain(|a| a.until > now);
        self.answered.retain(|a| a.until > now);
        let mut i = 0;
        while i < self.client.len() {
            let c = &mut self.client[i];
            match c.tx.tick(now) {
                Tick::Wait => i += 1,
                Tick::Retransmit => {
                    self.transmits.push_back(Transmit {
                        to: c.to,
                        bytes: c.bytes.clone(),
                    });
                    i += 1;
                }
                Tick::TimedOut => {
                    tracing::debug!(method = c.method, call_id = %self.call_id, "no final response");
                    self.client.remove(i);
                }
            }
        }
    }

    // ---- UAS ------------------------------------------------------------

    fn on_invite(&mut self, now: Instant, source: SocketAddr, request: &Request, branch: &str) {
        for tx in [&self.uas, &self.reinvite].into_iter().flatten() {
            if tx.branch == branch {
                if let Some(last) = &tx.last
                    && matches!(
                        tx.state,
                        Ist::Proceeding | Ist::Accepted(_) | Ist::Completed(_)
                    )
                {
                    self.transmits.push_back(Transmit {
                        to: tx.reply_to,
                        bytes: last.clone(),
                    });
                }
                return;
            }
        }
        let to_tag = request
            .headers
            .to()
            .and_then(|t| t.tag().map(str::to_owned));
        if to_tag.is_none() {
            // Same Call-ID, new branch, no tag: a merged request (§8.2.2.2).
            self.respond(now, source, request, 482, "Loop Detected", |_| {});
            return;
        }
        if !self.in_dialog(request) {
            self.respond(
                now,
                source,
                request,
                481,
                "Call/Transaction Does Not Exist",
                |_| {},
            );
            return;
        }
        let busy =
            self.reinvite
                .as_ref()
                .is_some_and(|t| matches!(t.state, Ist::Proceeding | Ist::Accepted(_)))
                || self.dialog != DialogState::Confirmed
                || self
                    .uas
                    .as_ref()
                    .is_some_and(|t| matches!(t.state, Ist::Accepted(_)))
                || self.uac.as_ref().is_some_and(|t| {
                    matches!(t.state, Ict::Calling { .. } | Ict::Proceeding { .. })
                });
        if busy {
            self.respond(now, source, request, 500, "Server Internal Error", |r| {
                r.headers.push("Retry-After", "1");
            });
            return;
        }
        if !self.accept_cseq(now, source, request) {
            return;
        }
        if let Some(contact) = request.headers.contacts().into_iter().next() {
            self.remote_target = contact.uri;
        }
        let cseq = request.headers.cseq().map_or(0, |(n, _)| n);
        self.reinvite = Some(ServerInvite {
            request: request.clone(),
            branch: branch.to_owned(),
            cseq,
            reply_to: reply_address(request, source),
            last: None,
            state: Ist::Proceeding,
        });
        self.events.push_back(CallEvent::ReInvite {
            sdp: request.body.clone(),
        });
    }

    fn on_ack(&mut self, now: Instant, request: &Request, branch: &str) {
        let cseq = request.headers.cseq().map_or(0, |(n, _)| n);
        let tags_match = self.in_dialog(request);
        let mut confirmed = false;
        for (tx, initial) in [(&mut self.uas, true), (&mut self.reinvite, false)] {
            let Some(tx) = tx else { continue };
            match tx.state {
                Ist::Completed(_) if tx.branch == branch => {
                    tx.state = Ist::Confirmed { until: now + T4 };
                    return;
                }
                Ist::Accepted(_) if tags_match && tx.cseq == cseq => {
                    tx.state = Ist::Terminated;
                    confirmed = initial;
                    break;
                }
                _ => {}
            }
        }
        if confirmed {
            self.events.push_back(CallEvent::Confirmed);
            if std::mem::take(&mut self.bye_after_ack) {
                self.send_bye(now);
            }
        }
    }

    fn on_cancel(&mut self, now: Instant, source: SocketAddr, request: &Request, branch: &str) {
        let initial = self.uas.as_ref().is_some_and(|t| t.branch == branch);
        let re = self.reinvite.as_ref().is_some_and(|t| t.branch == branch);
        if !initial && !re {
            self.respond(
                now,
                source,
                request,
                481,
                "Call/Transaction Does Not Exist",
                |_| {},
            );
            return;
        }
        self.respond(now, source, request, 200, "OK", |_| {});
        if initial
            && self
                .uas
                .as_ref()
                .is_some_and(|t| t.state == Ist::Proceeding)
        {
            self.final_error(now, 487, "Request Terminated", None);
            self.events.push_back(CallEvent::Cancelled);
        } else if re
            && self
                .reinvite
                .as_ref()
                .is_some_and(|t| t.state == Ist::Proceeding)
        {
            let response = self.reinvite_response(487, "Request Terminated", None);
            if let Some(tx) = &mut self.reinvite {
                tx.last = Some(response.clone());
                tx.state = Ist::Completed(Retransmit::start(&self.config.timers, now));
                self.transmits.push_back(Transmit {
                    to: tx.reply_to,
                    bytes: response,
                });
            }
        }
    }

    /// True when the request's tags are this dialog's (in any state but over).
    fn in_dialog(&self, request: &Request) -> bool {
        let h = &request.headers;
        let to_tag = h.to().and_then(|t| t.tag().map(str::to_owned));
        let from_tag = h.from().and_then(|f| f.tag().map(str::to_owned));
        self.dialog != DialogState::Terminated
            && to_tag.as_deref() == Some(self.local_tag.as_str())
            && self.remote_tag.is_some()
            && from_tag == self.remote_tag
    }

    /// Checks and records the remote CSeq; answers 500 when out of order.
    fn accept_cseq(&mut self, now: Instant, source: SocketAddr, request: &Request) -> bool {
        let cseq = request.headers.cseq().map_or(0, |(n, _)| n);
        if self.remote_cseq.is_some_and(|last| cseq <= last) {
            self.respond(
                now,
                source,
                request,
                500,
                "Server Internal Error (CSeq out of order)",
                |_| {},
            );
            return false;
        }
        self.remote_cseq = Some(cseq);
        true
    }

    fn on_dialog_request(&mut self, now: Instant, source: SocketAddr, request: &Request) {
        let outside = request.headers.to().is_some_and(|t| t.tag().is_none());
        if request.method == "OPTIONS" && outside {
            self.respond(now, source, request, 200, "OK", |r| {
                r.headers.push("Allow", ALLOW);
                r.headers.push("Accept", SDP);
            });
            return;
        }
        if !self.in_dialog(request) {
            self.respond(
                now,
                source,
                request,
                481,
                "Call/Transaction Does Not Exist",
                |_| {},
            );
            return;
        }
        if !self.accept_cseq(now, source, request) {
            return;
        }
        match request.method.as_str() {
            "BYE" => {
                self.respond(now, source, request, 200, "OK", |_| {});
                if self
                    .uas
                    .as_ref()
                    .is_some_and(|t| t.state == Ist::Proceeding)
                {
                    // BYE on the early dialog ends the INVITE too.
                    self.final_error(now, 487, "Request Terminated", None);
                }
                for tx in [&mut self.uas, &mut self.reinvite].into_iter().flatten() {
                    if matches!(tx.state, Ist::Accepted(_)) {
                        tx.state = Ist::Terminated;
                    }
                }
                self.dialog = DialogState::Terminated;
                self.bye_after_ack = false;
                self.events.push_back(CallEvent::RemoteHangup);
            }
            "OPTIONS" => self.respond(now, source, request, 200, "OK", |r| {
                r.headers.push("Allow", ALLOW);
                r.headers.push("Accept", SDP);
            }),
            "INFO" => {
                let kind = content_type(request);
                if request.body.is_empty() {
                    self.respond(now, source, request, 200, "OK", |_| {});
                } else if kind == "application/dtmf-relay" || kind == "application/dtmf" {
                    match parse_dtmf(&kind, &request.body) {
                        Some((digit, duration_ms)) => {
                            self.respond(now, source, request, 200, "OK", |_| {});
                            self.events
                                .push_back(CallEvent::Dtmf { digit, duration_ms });
                        }
                        None => self.respond(
                            now,
                            source,
                            request,
                            400,
                            "Bad Request: unreadable DTMF in the INFO body",
                            |_| {},
                        ),
                    }
                } else {
                    self.respond(now, source, request, 415, "Unsupported Media Type", |r| {
                        r.headers
                            .push("Accept", "application/dtmf-relay, application/dtmf");
                    });
                }
            }
            _ => self.respond(now, source, request, 501, "Not Implemented", |r| {
                r.headers.push("Allow", ALLOW);
            }),
        }
    }

    /// Answers a non-INVITE request (or refuses an INVITE) and keeps the
    /// answer for its retransmissions.
    fn respond(
        &mut self,
        now: Instant,
        source: SocketAddr,
        request: &Request,
        status: u16,
        reason: &str,
        extra: impl FnOnce(&mut Response),
    ) {
        let mut response = Response::to_request(request, status, reason, &self.local_tag);
        response.headers.push("Server", USER_AGENT);
        extra(&mut response);
        let bytes = response.to_bytes();
        let reply_to = reply_address(request, source);
        self.transmits.push_back(Transmit {
            to: reply_to,
            bytes: bytes.clone(),
        });
        let branch = request
            .headers
            .via()
            .and_then(|v| v.branch().map(str::to_owned))
            .unwrap_or_default();
        if self.answered.len() >= MAX_RETAINED {
            self.answered.pop_front();
        }
        self.answered.push_back(Answered {
            branch,
            method: request.method.clone(),
            reply_to,
            bytes,
            until: now + self.config.timers.timeout(),
        });
    }

    fn stateless(&mut self, request: &Request, source: SocketAddr, status: u16, reason: &str) {
        if let Some(t) = answer_stateless(request, source, status, reason) {
            self.transmits.push_back(t);
        }
    }

    /// Our Contact.
    fn contact(&self) -> String {
        format!("<sip:{}@{}>", self.config.extension, self.config.local)
    }

    /// A response to `request` (an INVITE) from the UA core: Record-Route
    /// copied and Contact added on dialog-creating responses.
    fn build_invite_response(
        &self,
        request: &Request,
        status: u16,
        reason: &str,
        sdp: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut response = Response::to_request(request, status, reason, &self.local_tag);
        if (101..300).contains(&status) {
            for rr in request.headers.get_all("Record-Route") {
                response.headers.push("Record-Route", rr);
            }
            response.headers.push("Contact", self.contact());
        }
        if (200..300).contains(&status) {
            response.headers.push("Allow", ALLOW);
        }
        response.headers.push("Server", USER_AGENT);
        if let Some(sdp) = sdp {
            response.headers.push("Content-Type", SDP);
            response.body = sdp.to_vec();
        }
        response.to_bytes()
    }

    fn send_invite_response(&mut self, status: u16, reason: &str, sdp: Option<&[u8]>) {
        let Some(tx) = &self.uas else { return };
        let bytes = self.build_invite_response(&tx.request, status, reason, sdp);
        if let Some(tx) = &mut self.uas {
            tx.last = Some(bytes.clone());
            self.transmits.push_back(Transmit {
                to: tx.reply_to,
                bytes,
            });
        }
    }

    fn reinvite_response(&self, status: u16, reason: &str, sdp: Option<&[u8]>) -> Vec<u8> {
        match &self.reinvite {
            Some(tx) => self.build_invite_response(&tx.request, status, reason, sdp),
            None => Vec::new(),
        }
    }

    /// An error final to the initial INVITE; retransmitted until its ACK.
    fn final_error(
        &mut self,
        now: Instant,
        status: u16,
        reason: &str,
        header: Option<(&str, String)>,
    ) {
        let Some(tx) = &self.uas else { return };
        let mut response = Response::to_request(&tx.request, status, reason, &self.local_tag);
        response.headers.push("Server", USER_AGENT);
        if let Some((name, value)) = header {
            response.headers.push(name, value);
        }
        let bytes = response.to_bytes();
        if let Some(tx) = &mut self.uas {
            tx.last = Some(bytes.clone());
            tx.state = Ist::Completed(Retransmit::start(&self.config.timers, now));
            self.transmits.push_back(Transmit {
                to: tx.reply_to,
                bytes,
            });
        }
        self.dialog = DialogState::Terminated;
    }

    fn tick_server(&mut self, now: Instant, reinvite: bool) {
        let t2 = self.config.timers.t2;
        let slot = if reinvite {
            &mut self.reinvite
        } else {
            &mut self.uas
        };
        let Some(tx) = slot else { return };
        let mut ack_timeout = false;
        match &mut tx.state {
            Ist::Accepted(r) | Ist::Completed(r) => {
                if now >= r.give_up_at {
                    ack_timeout = matches!(tx.state, Ist::Accepted(_));
                    tx.state = Ist::Terminated;
                } else if now >= r.at {
                    r.interval = (r.interval * 2).min(t2);
                    r.at = now + r.interval;
                    if let Some(last) = &tx.last {
                        self.transmits.push_back(Transmit {
                            to: tx.reply_to,
                            bytes: last.clone(),
                        });
                    }
                }
            }
            Ist::Confirmed { until } if now >= *until => tx.state = Ist::Terminated,
            _ => {}
        }
        if ack_timeout && self.dialog == DialogState::Confirmed {
            tracing::info!(call_id = %self.call_id, "no ACK for our 2xx; hanging up");
            self.bye_after_ack = false;
            self.events.push_back(CallEvent::AckTimeout);
            self.send_bye(now);
        }
    }

    // ---- UAC ------------------------------------------------------------

    /// Sends (or re-sends after a challenge) our INVITE with the next CSeq
    /// and a new branch.
    fn send_invite(&mut self, now: Instant) {
        self.local_cseq += 1;
        let branch = self.rng.branch();
        let mut request = Request::new("INVITE", &self.remote_target);
        let h = &mut request.headers;
        h.push(
            "Via",
            format!("SIP/2.0/UDP {};branch={branch};rport", self.config.local),
        );
        h.push("Max-Forwards", "70");
        h.push("From", format!("{};tag={}", self.local_uri, self.local_tag));
        h.push("To", self.remote_uri.clone());
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{} INVITE", self.local_cseq));
        h.push("Contact", self.contact());
        h.push("Allow", ALLOW);
        h.push("User-Agent", USER_AGENT);
        if let Some((name, value)) = &self.auth_header {
            h.push(name, value.clone());
        }
        h.push("Content-Type", SDP);
        request.body = self.local_sdp.clone();
        let bytes = request.to_bytes();
        self.transmits.push_back(Transmit {
            to: self.peer,
            bytes: bytes.clone(),
        });
        let timers = self.config.timers;
        let cancel = self.uac.as_ref().map_or(Cancel::None, |t| t.cancel);
        self.uac = Some(ClientInvite {
            request,
            bytes,
            branch,
            cseq: self.local_cseq,
            state: Ict::Calling {
                at: now + timers.t1,
                interval: timers.t1,
                timeout_at: now + timers.timeout(),
            },
            cancel,
        });
    }

    fn send_cancel(&mut self, now: Instant) {
        let Some(tx) = &mut self.uac else { return };
        let mut cancel = Request::new("CANCEL", &tx.request.uri);
        for name in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
            if let Some(value) = tx.request.headers.get(name) {
                cancel.headers.push(name, value);
            }
        }
        for route in tx.request.headers.get_all("Route") {
            cancel.headers.push("Route", route);
        }
        cancel.headers.push("CSeq", format!("{} CANCEL", tx.cseq));
        cancel.headers.push("User-Agent", USER_AGENT);
        tx.cancel = Cancel::Sent;
        if let Ict::Proceeding { give_up_at } = &mut tx.state {
            *give_up_at = Some(now + self.config.timers.timeout());
        }
        let bytes = cancel.to_bytes();
        self.transmits.push_back(Transmit {
            to: self.peer,
            bytes: bytes.clone(),
        });
        self.client.push(ClientRequest {
            method: "CANCEL",
            branch: tx.branch.clone(),
            bytes,
            to: self.peer,
            tx: ClientTransaction::start(self.config.timers, now),
        });
    }

    /// The hop-by-hop ACK of an error final (RFC 3261 §17.1.1.3).
    fn ack_error(&mut self, now: Instant, response: &Response) {
        let Some(tx) = &self.uac else { return };
        let mut ack = Request::new("ACK", &tx.request.uri);
        for name in ["Via", "Max-Forwards", "From", "Call-ID"] {
            if let Some(value) = tx.request.headers.get(name) {
                ack.headers.push(name, value);
            }
        }
        if let Some(to) = response.headers.get("To") {
            ack.headers.push("To", to);
        }
        for route in tx.request.headers.get_all("Route") {
            ack.headers.push("Route", route);
        }
        ack.headers.push("CSeq", format!("{} ACK", tx.cseq));
        ack.headers.push("User-Agent", USER_AGENT);
        let bytes = ack.to_bytes();
        self.transmits.push_back(Transmit {
            to: self.peer,
            bytes: bytes.clone(),
        });
        self.acked_finals.push(AckedFinal {
            branch: tx.branch.clone(),
            ack: bytes,
            to: self.peer,
            until: now + TIMER_D.max(self.config.timers.timeout()),
        });
    }

    fn on_invite_response(&mut self, now: Instant, response: &Response) {
        let Some(tx) = &mut self.uac else { return };
        let status = response.status;
        let to_tag = response
            .headers
            .to()
            .and_then(|t| t.tag().map(str::to_owned));
        match &tx.state {
            Ict::Calling { .. } | Ict::Proceeding { .. } => {}
            Ict::Accepted { ack, ack_to, .. } => {
                if (200..300).contains(&status) && to_tag == self.remote_tag {
                    self.transmits.push_back(Transmit {
                        to: *ack_to,
                        bytes: ack.clone(),
                    });
                } else {
                    self.unmatched_responses += 1;
                }
                return;
            }
            Ict::Terminated => {
                self.unmatched_responses += 1;
                return;
            }
        }
        if status < 200 {
            if let Ict::Calling { .. } = tx.state {
                tx.state = Ict::Proceeding { give_up_at: None };
            }
            let wanted = tx.cancel == Cancel::Wanted;
            if status > 100 {
                let sdp = (!response.body.is_empty()).then(|| response.body.clone());
                self.events.push_back(CallEvent::Progress {
                    status,
                    reason: response.reason.clone(),
                    sdp,
                });
            }
            if wanted {
                self.send_cancel(now);
            }
            return;
        }
        if status < 300 {
            let cancelled = tx.cancel != Cancel::None;
            self.establish_uac_dialog(now, response, to_tag);
            if cancelled {
                // The answer crossed our CANCEL: end the call at once.
                self.send_bye(now);
            } else {
                self.events.push_back(CallEvent::Answered {
                    sdp: response.body.clone(),
                });
            }
            return;
        }
        self.ack_error(now, response);
        let retry_auth = matches!(status, 401 | 407) && self.prepare_auth(response);
        if retry_auth {
            self.send_invite(now);
            return;
        }
        if let Some(tx) = &mut self.uac {
            tx.state = Ict::Terminated;
        }
        self.dialog = DialogState::Terminated;
        self.events.push_back(CallEvent::Failed {
            status,
            reason: response.reason.clone(),
        });
    }

    /// Computes the answer to a 401/407; false when it must not be answered
    /// (no credentials, a second challenge to fresh credentials, a challenge
    /// we cannot read, or a CANCEL already asked).
    fn prepare_auth(&mut self, response: &Response) -> bool {
        let (Some(credentials), Some(tx)) = (&self.credentials, &self.uac) else {
            return false;
        };
        if tx.cancel != Cancel::None {
            return false;
        }
        let kind = if response.status == 401 {
            ChallengeKind::Www
        } else {
            ChallengeKind::Proxy
        };
        let Some(challenge) = response
            .headers
            .get_all(kind.challenge_header())
            .find_map(|v| Challenge::parse(kind, v).ok())
        else {
            return false;
        };
        let again = self.auth_attempts > 0;
        if (again && !challenge.stale) || self.auth_attempts >= MAX_AUTH_ATTEMPTS {
            return false;
        }
        self.auth_attempts += 1;
        let cnonce = self.rng.hex();
        let answer = auth::Answer {
            username: &credentials.username,
            password: &credentials.password,
            method: "INVITE",
            uri: &self.remote_target,
            nc: 1,
            cnonce: &cnonce,
        };
        self.auth_header = Some((
            kind.answer_header(),
            auth::authorization(&challenge, &answer),
        ));
        true
    }

    /// 2xx to our INVITE: the dialog from the response, the end-to-end ACK.
    fn establish_uac_dialog(&mut self, now: Instant, response: &Response, to_tag: Option<String>) {
        let h = &response.headers;
        self.remote_tag = to_tag;
        if let Some(contact) = h.contacts().into_iter().next() {
            self.remote_target = contact.uri;
        }
        let mut routes: Vec<String> = h
            .list("Record-Route")
            .into_iter()
            .map(str::to_owned)
            .collect();
        routes.reverse();
        self.route_set = routes;
        if let Some(to) = h.to() {
            self.remote_uri = without_tag(&to);
        }
        self.dialog = DialogState::Confirmed;
        let cseq = self.uac.as_ref().map_or(self.local_cseq, |t| t.cseq);
        let (mut ack, to) = self.dialog_request("ACK", cseq);
        if let Some((name, value)) = &self.auth_header {
            ack.headers.push(name, value.clone());
        }
        let bytes = ack.to_bytes();
        self.transmits.push_back(Transmit {
            to,
            bytes: bytes.clone(),
        });
        if let Some(tx) = &mut self.uac {
            tx.state = Ict::Accepted {
                until: now + self.config.timers.timeout(),
                ack: bytes,
                ack_to: to,
            };
        }
    }

    fn tick_client_invite(&mut self, now: Instant) {
        let Some(tx) = &mut self.uac else { return };
        let failed = match &mut tx.state {
            Ict::Calling {
                at,
                interval,
                timeout_at,
            } => {
                if now >= *timeout_at {
                    Some((408, "Request Timeout"))
                } else {
                    if now >= *at {
                        *interval *= 2;
                        *at = now + *interval;
                        self.transmits.push_back(Transmit {
                            to: self.peer,
                            bytes: tx.bytes.clone(),
                        });
                    }
                    None
                }
            }
            Ict::Proceeding {
                give_up_at: Some(t),
            } if now >= *t => Some((487, "Request Terminated (no answer after CANCEL)")),
            Ict::Accepted { until, .. } if now >= *until => {
                tx.state = Ict::Terminated;
                None
            }
            _ => None,
        };
        if let Some((status, reason)) = failed {
            tx.state = Ict::Terminated;
            self.dialog = DialogState::Terminated;
            self.events.push_back(CallEvent::Failed {
                status,
                reason: reason.to_owned(),
            });
        }
    }

    // ---- dialog ---------------------------------------------------------

    /// Where in-dialog requests go: the first route (loose routing) or the
    /// remote target when it is an IP address, else the peer.
    fn next_hop(&self) -> SocketAddr {
        let first = self
            .route_set
            .first()
            .map_or(self.remote_target.as_str(), String::as_str);
        uri_address(first).unwrap_or(self.peer)
    }

    /// An in-dialog request (RFC 3261 §12.2.1.1) and where it goes.
    fn dialog_request(&mut self, method: &str, cseq: u32) -> (Request, SocketAddr) {
        let branch = self.rng.branch();
        let mut request = Request::new(method, &self.remote_target);
        let h = &mut request.headers;
        h.push(
            "Via",
            format!("SIP/2.0/UDP {};branch={branch};rport", self.config.local),
        );
        h.push("Max-Forwards", "70");
        for route in &self.route_set {
            h.push("Route", route.clone());
        }
        h.push("From", format!("{};tag={}", self.local_uri, self.local_tag));
        let remote_tag = self.remote_tag.clone().unwrap_or_default();
        h.push("To", format!("{};tag={remote_tag}", self.remote_uri));
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{cseq} {method}"));
        h.push("User-Agent", USER_AGENT);
        (request, self.next_hop())
    }

    fn send_bye(&mut self, now: Instant) {
        self.local_cseq += 1;
        let (bye, to) = self.dialog_request("BYE", self.local_cseq);
        let branch = bye
            .headers
            .via()
            .and_then(|v| v.branch().map(str::to_owned))
            .unwrap_or_default();
        let bytes = bye.to_bytes();
        self.transmits.push_back(Transmit {
            to,
            bytes: bytes.clone(),
        });
        self.client.push(ClientRequest {
            method: "BYE",
            branch,
            bytes,
            to,
            tx: ClientTransaction::start(self.config.timers, now),
        });
        if let Some(tx) = &mut self.reinvite
            && matches!(tx.state, Ist::Accepted(_))
        {
            tx.state = Ist::Terminated;
        }
        self.dialog = DialogState::Terminated;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;

    const SDP_OFFER: &str = "v=0
o=user1 53655765 2353687637 IN IP4 192.0.2.50
s=-
c=IN IP4 192.0.2.50
t=0 0
m=audio 6000 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
";

    const SDP_ANSWER: &str = "v=0
o=vss 1 1 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 40000 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=ptime:20
";

    /// An INVITE from sipp (`uac` scenario) as Kamailio forwards it to the
    /// slot's contact with `record_route()`: the number is in To.
    const KAMAILIO_INVITE: &str = "INVITE sip:6001@192.0.2.10:5070 SIP/2.0
Record-Route: <sip:192.0.2.1;lr;ftag=4711SIPpTag001>
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK7a1c.5e3b4c1f0;rport
Via: SIP/2.0/UDP 192.0.2.50:5061;received=192.0.2.50;rport=5061;branch=z9hG4bK-4711-1-0
Max-Forwards: 69
From: \"sipp\" <sip:agent@192.0.2.50:5061>;tag=4711SIPpTag001
To: <sip:+4930123456@192.0.2.1>
Call-ID: 1-4711@192.0.2.50
CSeq: 1 INVITE
Contact: <sip:agent@192.0.2.50:5061>
Subject: Performance Test
Content-Type: application/sdp";

    /// The same INVITE sent straight by sipp with compact headers: the
    /// number is the request-URI user.
    const COMPACT_INVITE: &str = "INVITE sip:0049301234@192.0.2.10:5070 SIP/2.0
v: SIP/2.0/UDP 192.0.2.50:5061;branch=z9hG4bK-99-1-0
Max-Forwards: 70
f: sipp <sip:agent@192.0.2.50:5061>;tag=99SIPpTag001
t: <sip:6001@192.0.2.10:5070>
i: 1-99@192.0.2.50
CSeq: 1 INVITE
m: sip:agent@192.0.2.50:5061
c: application/sdp";

    fn t0() -> Instant {
        // A fixed base; tests only add durations to it.
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    fn kamailio() -> SocketAddr {
        addr("192.0.2.1:5060")
    }

    fn sipp() -> SocketAddr {
        addr("192.0.2.50:5061")
    }

    fn config() -> CallConfig {
        CallConfig {
            extension: "6001".into(),
            local: addr("192.0.2.10:5070"),
            timers: Timers::default(),
        }
    }

    /// The wire form of `head` (LF lines) and `body`, with Content-Length.
    fn sip(head: &str, body: &str) -> Vec<u8> {
        let mut text = head.trim().replace('\n', "\r\n");
        let body = body.replace('\n', "\r\n");
        text.push_str(&format!("\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
        text.into_bytes()
    }

    fn req(head: &str, body: &str) -> Request {
        match message::parse(&sip(head, body)) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn resp(head: &str, body: &str) -> Response {
        match message::parse(&sip(head, body)) {
            Ok(Message::Response(r)) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    fn drain(call: &mut Call) -> Vec<(SocketAddr, Message)> {
        std::iter::from_fn(|| call.poll_transmit())
            .map(|t| (t.to, message::parse(&t.bytes).expect("we send valid SIP")))
            .collect()
    }

    fn responses(call: &mut Call) -> Vec<(SocketAddr, Response)> {
        drain(call)
            .into_iter()
            .map(|(to, m)| match m {
                Message::Response(r) => (to, r),
                Message::Request(r) => panic!("a request: {r:?}"),
            })
            .collect()
    }

    fn requests(call: &mut Call) -> Vec<(SocketAddr, Request)> {
        drain(call)
            .into_iter()
            .map(|(to, m)| match m {
                Message::Request(r) => (to, r),
                Message::Response(r) => panic!("a response: {r:?}"),
            })
            .collect()
    }

    fn events(call: &mut Call) -> Vec<CallEvent> {
        std::iter::from_fn(|| call.poll_event()).collect()
    }

    fn status(r: &Response) -> (u16, &str) {
        (r.status, r.reason.as_str())
    }

    fn to_tag(headers: &message::Headers) -> Option<String> {
        headers.to().and_then(|t| t.tag().map(str::to_owned))
    }

    fn branch(headers: &message::Headers) -> String {
        headers
            .via()
            .and_then(|v| v.branch().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Runs every deadline up to `end`; what was sent at each, by offset
    /// from `base`.
    fn run_until(
        call: &mut Call,
        base: Instant,
        end: Instant,
    ) -> Vec<(u128, Vec<(SocketAddr, Message)>)> {
        let mut out = Vec::new();
        while let Some(at) = call.next_deadline().filter(|at| *at <= end) {
            call.handle_timeout(at);
            out.push(((at - base).as_millis(), drain(call)));
        }
        out
    }

    /// The request the caller sends in the dialog the slot answered.
    fn in_dialog(method: &str, cseq: u32, branch: &str, local_tag: &str, extra: &str) -> String {
        format!(
            "{method} sip:6001@192.0.2.10:5070 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK{branch}.0;rport
Via: SIP/2.0/UDP 192.0.2.50:5061;received=192.0.2.50;rport=5061;branch=z9hG4bK-{branch}
Route: <sip:192.0.2.1;lr;ftag=4711SIPpTag001>
Max-Forwards: 69
From: \"sipp\" <sip:agent@192.0.2.50:5061>;tag=4711SIPpTag001
To: <sip:+4930123456@192.0.2.1>;tag={local_tag}
Call-ID: 1-4711@192.0.2.50
CSeq: {cseq} {method}
{extra}"
        )
        .trim_end()
        .to_owned()
    }

    fn incoming(invite: &Request, now: Instant) -> Call {
        let mut call =
            Call::incoming(config(), kamailio(), invite.clone(), 7, now).expect("a call");
        let sent = responses(&mut call);
        assert_eq!(sent.len(), 1);
        assert_eq!(status(&sent[0].1), (100, "Trying"));
        assert!(matches!(
            events(&mut call)[..],
            [CallEvent::IncomingInvite(_)]
        ));
        call
    }

    /// An incoming call through Kamailio, answered and ACKed.
    fn answered_call(base: Instant) -> Call {
        let invite = req(KAMAILIO_INVITE, SDP_OFFER);
        let mut call = incoming(&invite, base);
        events(&mut call);
        call.answer(base, SDP_ANSWER.replace('\n', "\r\n").into_bytes())
            .expect("answer");
        drain(&mut call);
        let tag = call.local_tag().to_owned();
        let ack = req(&in_dialog("ACK", 1, "ack1", &tag, ""), "");
        call.handle_request(base + ms(40), kamailio(), &ack);
        assert_eq!(events(&mut call), vec![CallEvent::Confirmed]);
        call
    }

    #[test]
    fn incoming_call_rings_is_answered_and_hung_up_by_the_caller() {
        let base = t0();
        let invite = req(KAMAILIO_INVITE, SDP_OFFER);
        let mut call = Call::incoming(config(), kamailio(), invite.clone(), 7, base).expect("call");
        let sent = responses(&mut call);
        assert_eq!(sent.len(), 1);
        let (to, trying) = &sent[0];
        assert_eq!(*to, kamailio(), "rport: back to the source");
        assert_eq!(status(trying), (100, "Trying"));
        assert_eq!(to_tag(&trying.headers), None, "no tag on 100");
        assert_eq!(trying.headers.list("Via").len(), 2);
        assert_eq!(trying.headers.cseq(), Some((1, "INVITE")));
        let Some(CallEvent::IncomingInvite(incoming)) = call.poll_event() else {
            panic!("no IncomingInvite");
        };
        assert_eq!(incoming.call_id, "1-4711@192.0.2.50");
        assert_eq!(incoming.target_number, "+4930123456");
        assert_eq!(
            incoming.remote_sdp,
            SDP_OFFER.replace('\n', "\r\n").into_bytes()
        );
        assert_eq!(incoming.from.tag(), Some("4711SIPpTag001"));
        assert_eq!(incoming.source, kamailio());
        assert_eq!(call.call_id(), "1-4711@192.0.2.50");
        assert_eq!(call.role(), Role::Uas);

        // A retransmitted INVITE gets the 100 again, never a second event.
        call.handle_request(base + ms(500), kamailio(), &invite);
        let again = responses(&mut call);
        assert_eq!(again.len(), 1);
        assert_eq!(status(&again[0].1), (100, "Trying"));
        assert!(events(&mut call).is_empty());

        call.ringing(None).expect("ringing");
        let ringing = responses(&mut call);
        assert_eq!(status(&ringing[0].1), (180, "Ringing"));
        let tag = to_tag(&ringing[0].1.headers).expect("a To tag on 180");
        assert_eq!(tag, call.local_tag());
        assert_eq!(
            ringing[0].1.headers.get("Record-Route"),
            Some("<sip:192.0.2.1;lr;ftag=4711SIPpTag001>")
        );
        assert_eq!(
            ringing[0].1.headers.get("Contact"),
            Some("<sip:6001@192.0.2.10:5070>")
        );
        call.handle_request(base + ms(700), kamailio(), &invite);
        assert_eq!(status(&responses(&mut call)[0].1), (180, "Ringing"));

        let answered_at = base + ms(1000);
        let sdp = SDP_ANSWER.replace('\n', "\r\n").into_bytes();
        call.answer(answered_at, sdp.clone()).expect("answer");
        let ok = responses(&mut call);
        assert_eq!(status(&ok[0].1), (200, "OK"));
        assert_eq!(to_tag(&ok[0].1.headers).as_deref(), Some(tag.as_str()));
        assert_eq!(ok[0].1.headers.get("Content-Type"), Some("application/sdp"));
        assert_eq!(ok[0].1.body, sdp);
        assert_eq!(ok[0].1.headers.cseq(), Some((1, "INVITE")));
        assert_eq!(
            call.answer(answered_at, sdp.clone()),
            Err(CallError::State {
                action: "answer",
                state: "has its final response"
            })
        );

        // Timer G: the 200 again at +500 ms and +1500 ms; an INVITE
        // retransmission also gets it.
        let sent = run_until(&mut call, answered_at, answered_at + ms(2000));
        assert_eq!(
            sent.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![500, 1500]
        );
        assert!(sent.iter().all(|(_, m)| matches!(
            &m[..],
            [(_, Message::Response(r))] if r.status == 200 && r.body == sdp
        )));
        call.handle_request(answered_at + ms(2100), kamailio(), &invite);
        assert_eq!(status(&responses(&mut call)[0].1), (200, "OK"));

        let ack = req(&in_dialog("ACK", 1, "ack1", &tag, ""), "");
        call.handle_request(answered_at + ms(2200), kamailio(), &ack);
        assert_eq!(events(&mut call), vec![CallEvent::Confirmed]);
        assert!(drain(&mut call).is_empty(), "nothing answers an ACK");
        assert_eq!(call.next_deadline(), None, "no more retransmissions");
        call.handle_request(answered_at + ms(2300), kamailio(), &invite);
        assert!(
            drain(&mut call).is_empty(),
            "a late INVITE copy is absorbed"
        );

        let bye = req(&in_dialog("BYE", 2, "bye1", &tag, ""), "");
        let bye_at = answered_at + ms(60_000);
        call.handle_request(bye_at, kamailio(), &bye);
        let ok = responses(&mut call);
        assert_eq!(ok.len(), 1);
        assert_eq!(status(&ok[0].1), (200, "OK"));
        assert_eq!(ok[0].1.headers.cseq(), Some((2, "BYE")));
        assert_eq!(to_tag(&ok[0].1.headers).as_deref(), Some(tag.as_str()));
        assert_eq!(events(&mut call), vec![CallEvent::RemoteHangup]);
        assert!(!call.is_over(), "kept for BYE retransmissions");

        call.handle_request(bye_at + ms(500), kamailio(), &bye);
        let again = responses(&mut call);
        assert_eq!(status(&again[0].1), (200, "OK"));
        assert!(events(&mut call).is_empty(), "one RemoteHangup");
        assert_eq!(call.hang_up(bye_at + ms(600)), Ok(()), "already over");
        assert!(drain(&mut call).is_empty());
        run_until(&mut call, bye_at, bye_at + ms(40_000));
        assert!(call.is_over());
    }

    fn check_target(ruri: &str, to: &str, dial: Option<&str>, expected: Result<&str, TargetError>) {
        let dial = dial.map_or(String::new(), |d| format!("\nX-VSS-Dial: {d}"));
        let invite = req(
            &format!(
                "INVITE {ruri} SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1
From: <sip:agent@pbx>;tag=1
To: {to}
Call-ID: c
CSeq: 1 INVITE
Contact: <sip:agent@192.0.2.50>{dial}"
            ),
            "",
        );
        assert_eq!(
            target_number(&invite, "6001"),
            expected.map(str::to_owned),
            "{ruri} / {to} / {dial}"
        );
    }

    #[test]
    fn target_number_convention() {
        let not = |origin, value: &str| TargetError::NotDialable {
            origin,
            value: value.into(),
        };
        type Case = (
            &'static str,
            &'static str,
            Option<&'static str>,
            Result<&'static str, TargetError>,
        );
        let cases: &[Case] = &[
            // (a) the header wins, even over a number in the request-URI.
            (
                "sip:6001@hub",
                "<sip:6001@pbx>",
                Some("+79161234567"),
                Ok("+79161234567"),
            ),
            (
                "sip:555123@hub",
                "<sip:6001@pbx>",
                Some("*100#"),
                Ok("*100#"),
            ),
            (
                "sip:555123@hub",
                "<sip:6001@pbx>",
                Some("sip:0049301234@pbx"),
                Ok("0049301234"),
            ),
            (
                "sip:555123@hub",
                "<sip:6001@pbx>",
                Some("12"),
                Err(not(DIAL_HEADER, "12")),
            ),
            // (b) the request-URI user when it is not the extension.
            (
                "sip:0049301234@192.0.2.10:5070",
                "<sip:6001@pbx>",
                None,
                Ok("0049301234"),
            ),
            (
                "sip:+49-30-1234@hub;user=phone",
                "<sip:6001@pbx>",
                None,
                Ok("+49301234"),
            ),
            ("sip:%2A100%23@hub", "<sip:6001@pbx>", None, Ok("*100#")),
            (
                "tel:+4930123456;phone-context=example.com",
                "<sip:6001@pbx>",
                None,
                Ok("+4930123456"),
            ),
            (
                "sip:alice@hub",
                "<sip:6001@pbx>",
                None,
                Err(not("request-URI", "alice")),
            ),
            (
                "sip:+*100@hub",
                "<sip:6001@pbx>",
                None,
                Err(not("request-URI", "+*100")),
            ),
            (
                "sip:123456789012345678901@hub",
                "<sip:6001@pbx>",
                None,
                Err(not("request-URI", "123456789012345678901")),
            ),
            // (c) To when the request-URI names the slot.
            (
                "sip:6001@192.0.2.10:5070",
                "\"Bob\" <sip:+4930123456@pbx>",
                None,
                Ok("+4930123456"),
            ),
            ("sip:6001@hub", "sip:112@pbx", None, Ok("112")),
            (
                "sip:6001@hub",
                "<sip:6001@pbx>",
                None,
                Err(TargetError::Missing),
            ),
            ("sip:hub", "<sip:pbx>", None, Err(TargetError::Missing)),
            ("sip:6001@hub", "<sip:42@pbx>", None, Err(not("To", "42"))),
        ];
        for (ruri, to, dial, expected) in cases {
            check_target(ruri, to, *dial, expected.clone());
        }
    }

    #[test]
    fn no_dialable_number_gets_484_which_waits_for_its_ack() {
        let base = t0();
        let text = KAMAILIO_INVITE.replace("<sip:+4930123456@192.0.2.1>", "<sip:6001@192.0.2.1>");
        let invite = req(&text, SDP_OFFER);
        let mut call = Call::incoming(config(), kamailio(), invite.clone(), 3, base).expect("call");
        let sent = responses(&mut call);
        let lines: Vec<_> = sent.iter().map(|(_, r)| status(r)).collect();
        assert_eq!(lines, vec![(100, "Trying"), (484, "Address Incomplete")]);
        let tag = to_tag(&sent[1].1.headers).expect("tag");
        assert!(events(&mut call).is_empty(), "the bridge never hears of it");
        assert!(call.answer(base, Vec::new()).is_err());

        call.handle_request(base + ms(100), kamailio(), &invite);
        assert_eq!(
            status(&responses(&mut call)[0].1),
            (484, "Address Incomplete")
        );
        let sent = run_until(&mut call, base, base + ms(600));
        assert_eq!(sent.len(), 1, "timer G");
        // The ACK of a non-2xx is hop-by-hop: Kamailio's branch of the INVITE.
        let ack = format!(
            "ACK sip:6001@192.0.2.10:5070 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK7a1c.5e3b4c1f0;rport
From: \"sipp\" <sip:agent@192.0.2.50:5061>;tag=4711SIPpTag001
To: <sip:6001@192.0.2.1>;tag={tag}
Call-ID: 1-4711@192.0.2.50
CSeq: 1 ACK"
        );
        call.handle_request(base + ms(700), kamailio(), &req(&ack, ""));
        call.handle_request(base + ms(800), kamailio(), &req(&ack, ""));
        assert!(drain(&mut call).is_empty());
        assert_eq!(call.next_deadline(), Some(base + ms(700) + T4), "timer I");
        assert!(
            run_until(&mut call, base, base + ms(10_000))
                .iter()
                .all(|s| s.1.is_empty())
        );
        assert!(call.is_over());
    }

    #[test]
    fn cancel_before_the_answer_gets_200_and_487() {
        let base = t0();
        let invite = req(COMPACT_INVITE, SDP_OFFER);
        let mut call = Call::incoming(config(), sipp(), invite.clone(), 11, base).expect("call");
        let sent = responses(&mut call);
        assert_eq!(sent[0].0, addr("192.0.2.50:5061"), "no rport: the Via port");
        let Some(CallEvent::IncomingInvite(i)) = call.poll_event() else {
            panic!("event");
        };
        assert_eq!(i.target_number, "0049301234");
        call.ringing(Some(b"v=0\r\n".to_vec())).expect("183");
        let early = responses(&mut call);
        assert_eq!(status(&early[0].1), (183, "Session Progress"));
        assert_eq!(early[0].1.body, b"v=0\r\n");
        let tag = to_tag(&early[0].1.headers).expect("tag");

        let cancel = |branch: &str| {
            req(
                &format!(
                    "CANCEL sip:0049301234@192.0.2.10:5070 SIP/2.0
v: SIP/2.0/UDP 192.0.2.50:5061;branch={branch}
Max-Forwards: 70
f: sipp <sip:agent@192.0.2.50:5061>;tag=99SIPpTag001
t: <sip:6001@192.0.2.10:5070>
i: 1-99@192.0.2.50
CSeq: 1 CANCEL"
                ),
                "",
            )
        };
        call.handle_request(base + ms(20), sipp(), &cancel("z9hG4bK-other"));
        let unknown = responses(&mut call);
        assert_eq!(
            status(&unknown[0].1),
            (481, "Call/Transaction Does Not Exist")
        );
        assert!(events(&mut call).is_empty());

        call.handle_request(base + ms(30), sipp(), &cancel("z9hG4bK-99-1-0"));
        let sent = responses(&mut call);
        let lines: Vec<_> = sent.iter().map(|(_, r)| status(r)).collect();
        assert_eq!(lines, vec![(200, "OK"), (487, "Request Terminated")]);
        assert_eq!(sent[0].1.headers.cseq(), Some((1, "CANCEL")));
        assert_eq!(sent[1].1.headers.cseq(), Some((1, "INVITE")));
        for (_, r) in &sent {
            assert_eq!(
                to_tag(&r.headers).as_deref(),
                Some(tag.as_str()),
                "one To tag"
            );
            assert_eq!(branch(&r.headers), "z9hG4bK-99-1-0");
        }
        assert_eq!(events(&mut call), vec![CallEvent::Cancelled]);
        assert!(call.answer(base, Vec::new()).is_err());

        // CANCEL retransmitted: 200 again; INVITE retransmitted: 487 again.
        call.handle_request(base + ms(40), sipp(), &cancel("z9hG4bK-99-1-0"));
        call.handle_request(base + ms(41), sipp(), &invite);
        let lines: Vec<_> = responses(&mut call).iter().map(|(_, r)| r.status).collect();
        assert_eq!(lines, vec![200, 487]);
        let ack = format!(
            "ACK sip:0049301234@192.0.2.10:5070 SIP/2.0
v: SIP/2.0/UDP 192.0.2.50:5061;branch=z9hG4bK-99-1-0
f: sipp <sip:agent@192.0.2.50:5061>;tag=99SIPpTag001
t: <sip:6001@192.0.2.10:5070>;tag={tag}
i: 1-99@192.0.2.50
CSeq: 1 ACK"
        );
        call.handle_request(base + ms(50), sipp(), &req(&ack, ""));
        assert!(drain(&mut call).is_empty());
        assert!(events(&mut call).is_empty());
        run_until(&mut call, base, base + ms(40_000));
        assert!(call.is_over());
    }

    #[test]
    fn bye_on_the_early_dialog_and_a_merged_invite() {
        let base = t0();
        let invite = req(KAMAILIO_INVITE, SDP_OFFER);
        let mut call = incoming(&invite, base);
        // The same Call-ID on a new branch without a To tag: merged (§8.2.2.2).
        let merged = req(
            &KAMAILIO_INVITE.replace("z9hG4bK7a1c.5e3b4c1f0", "z9hG4bK7a1c.other"),
            SDP_OFFER,
        );
        call.handle_request(base, kamailio(), &merged);
        assert_eq!(status(&responses(&mut call)[0].1), (482, "Loop Detected"));
        assert!(events(&mut call).is_empty());

        call.ringing(None).expect("ringing");
        drain(&mut call);
        let tag = call.local_tag().to_owned();
        let bye = req(&in_dialog("BYE", 2, "early", &tag, ""), "");
        call.handle_request(base + ms(100), kamailio(), &bye);
        let sent = responses(&mut call);
        let lines: Vec<_> = sent.iter().map(|(_, r)| status(r)).collect();
        assert_eq!(lines, vec![(200, "OK"), (487, "Request Terminated")]);
        assert_eq!(sent[0].1.headers.cseq(), Some((2, "BYE")));
        assert_eq!(sent[1].1.headers.cseq(), Some((1, "INVITE")));
        assert_eq!(events(&mut call), vec![CallEvent::RemoteHangup]);
        assert!(call.answer(base, Vec::new()).is_err());
    }

    #[test]
    fn rejection_is_retransmitted_until_ack_or_timer_h() {
        let base = t0();
        let invite = req(KAMAILIO_INVITE, SDP_OFFER);
        let mut call = incoming(&invite, base);
        assert_eq!(call.reject(base, 200, "OK"), Err(CallError::Status(200)));
        call.reject(base, 486, "Busy Here").expect("reject");
        let sent = responses(&mut call);
        assert_eq!(status(&sent[0].1), (486, "Busy Here"));
        assert!(sent[0].1.headers.get("Contact").is_none());
        call.handle_request(base + ms(200), kamailio(), &invite);
        assert_eq!(status(&responses(&mut call)[0].1), (486, "Busy Here"));
        let sent = run_until(&mut call, base, base + ms(40_000));
        let at: Vec<_> = sent
            .iter()
            .filter(|s| !s.1.is_empty())
            .map(|s| s.0)
            .collect();
        assert_eq!(
            at,
            vec![
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ],
            "timer G doubling to T2, timer H at 32 s"
        );
        assert!(events(&mut call).is_empty());
        assert!(call.is_over());
    }

    #[test]
    fn no_ack_for_the_200_ends_the_call_with_a_bye() {
        let base = t0();
        let invite = req(KAMAILIO_INVITE, SDP_OFFER);
        let mut call = incoming(&invite, base);
        call.answer(base, b"v=0\r\n".to_vec()).expect("answer");
        drain(&mut call);
        let sent = run_until(&mut call, base, base + ms(32_000));
        let resent = sent
            .iter()
            .flat_map(|s| &s.1)
            .filter(|(_, m)| matches!(m, Message::Response(r) if r.status == 200))
            .count();
        assert_eq!(resent, 10);
        assert_eq!(events(&mut call), vec![CallEvent::AckTimeout]);
        let Some((32_000, last)) = sent.last() else {
            panic!("nothing at 32 s: {sent:?}");
        };
        let [(to, Message::Request(bye))] = &last[..] else {
            panic!("not one BYE: {last:?}");
        };
        assert_eq!(*to, kamailio(), "via the record-routed proxy");
        assert_eq!(bye.method, "BYE");
        assert_eq!(bye.uri, "sip:agent@192.0.2.50:5061", "the remote target");
        assert_eq!(
            bye.headers.get("Route"),
            Some("<sip:192.0.2.1;lr;ftag=4711SIPpTag001>")
        );
        assert_eq!(bye.headers.cseq(), Some((1, "BYE")));
        assert_eq!(
            bye.headers
                .from()
                .and_then(|f| f.tag().map(str::to_owned))
                .as_deref(),
            Some(call.local_tag())
        );
        assert_eq!(
            bye.headers.from().map(|f| f.uri),
            Some("sip:+4930123456@192.0.2.1".into())
        );
        assert_eq!(to_tag(&bye.headers).as_deref(), Some("4711SIPpTag001"));
        assert_eq!(bye.headers.call_id(), Some("1-4711@192.0.2.50"));
        assert!(branch(&bye.headers).starts_with("z9hG4bK"));
        let ok = resp(
            &format!(
                "SIP/2.0 200 OK
Via: {}
From: {}
To: {}
Call-ID: 1-4711@192.0.2.50
CSeq: 1 BYE",
                bye.headers.get("Via").unwrap_or_default(),
                bye.headers.get("From").unwrap_or_default(),
                bye.headers.get("To").unwrap_or_default()
            ),
            "",
        );
        call.handle_response(base + ms(32_100), &ok);
        assert_eq!(call.unmatched_responses(), 0);
        call.handle_response(base + ms(32_200), &ok);
        assert_eq!(call.unmatched_responses(), 1, "the transaction is over");
        assert!(call.is_over());
    }

    #[test]
    fn requests_in_the_dialog() {
        let base = t0();
        let mut call = answered_call(base);
        let tag = call.local_tag().to_owned();
        let at = base + ms(1_000);

        let wrong = req(&in_dialog("BYE", 2, "w", "not-our-tag", ""), "");
        call.handle_request(at, kamailio(), &wrong);
        assert_eq!(
            status(&responses(&mut call)[0].1),
            (481, "Call/Transaction Does Not Exist")
        );
        assert!(events(&mut call).is_empty());

        let options = req(
            &in_dialog("OPTIONS", 2, "o", &tag, "Accept: application/sdp"),
            "",
        );
        call.handle_request(at, kamailio(), &options);
        let ok = responses(&mut call);
        assert_eq!(status(&ok[0].1), (200, "OK"));
        assert_eq!(ok[0].1.headers.get("Allow"), Some(ALLOW));

        let info = req(
            &in_dialog(
                "INFO",
                3,
                "i1",
                &tag,
                "Content-Type: application/dtmf-relay",
            ),
            "Signal=5\nDuration=160\n",
        );
        call.handle_request(at, kamailio(), &info);
        assert_eq!(status(&responses(&mut call)[0].1), (200, "OK"));
        let info = req(
            &in_dialog("INFO", 4, "i2", &tag, "c: application/dtmf"),
            "#",
        );
        call.handle_request(at, kamailio(), &info);
        assert_eq!(status(&responses(&mut call)[0].1), (200, "OK"));
        let info = req(&in_dialog("INFO", 5, "i3", &tag, "c: text/plain"), "hello");
        call.handle_request(at, kamailio(), &info);
        assert_eq!(
            status(&responses(&mut call)[0].1),
            (415, "Unsupported Media Type")
        );
        assert_eq!(
            events(&mut call),
            vec![
                CallEvent::Dtmf {
                    digit: '5',
                    duration_ms: Some(160)
                },
                CallEvent::Dtmf {
                    digit: '#',
                    duration_ms: None
                }
            ]
        );

        let stale = req(&in_dialog("OPTIONS", 3, "late", &tag, ""), "");
        call.handle_request(at, kamailio(), &stale);
        assert_eq!(
            status(&responses(&mut call)[0].1).0,
            500,
            "CSeq out of order"
        );
        let message = req(&in_dialog("MESSAGE", 6, "m", &tag, "c: text/plain"), "hi");
        call.handle_request(at, kamailio(), &message);
        assert_eq!(status(&responses(&mut call)[0].1), (501, "Not Implemented"));

        // A re-INVITE (session refresh): the bridge decides; same SDP back.
        let offer = SDP_OFFER.replace("6000", "6002");
        let reinvite = req(
            &in_dialog(
                "INVITE",
                7,
                "re1",
                &tag,
                "Contact: <sip:agent@192.0.2.50:5061>\nc: application/sdp",
            ),
            &offer,
        );
        call.handle_request(at, kamailio(), &reinvite);
        assert!(drain(&mut call).is_empty());
        assert_eq!(
            events(&mut call),
            vec![CallEvent::ReInvite {
                sdp: offer.replace('\n', "\r\n").into_bytes()
            }]
        );
        call.accept_reinvite(at).expect("accept");
        let ok = responses(&mut call);
        assert_eq!(status(&ok[0].1), (200, "OK"));
        assert_eq!(ok[0].1.headers.cseq(), Some((7, "INVITE")));
        assert_eq!(ok[0].1.body, SDP_ANSWER.replace('\n', "\r\n").into_bytes());
        assert!(call.accept_reinvite(at).is_err(), "answered once");
        let resent = run_until(&mut call, at, at + ms(600));
        assert_eq!(resent.len(), 1);
        let ack = req(&in_dialog("ACK", 7, "ack7", &tag, ""), "");
        call.handle_request(at + ms(700), kamailio(), &ack);
        assert!(events(&mut call).is_empty(), "no Confirmed for a re-INVITE");
        let quiet = run_until(&mut call, at + ms(700), at + ms(5_000));
        assert!(
            quiet.iter().all(|s| s.1.is_empty()),
            "the 200 stops: {quiet:?}"
        );

        // A second one is refused with 488; its ACK is hop-by-hop.
        let reinvite = req(
            &in_dialog(
                "INVITE",
                8,
                "re2",
                &tag,
                "Contact: <sip:agent@192.0.2.50:5061>\nc: application/sdp",
            ),
            &offer,
        );
        call.handle_request(at + ms(6_000), kamailio(), &reinvite);
        assert_eq!(events(&mut call).len(), 1);
        call.refuse_reinvite(at + ms(6_000)).expect("refuse");
        assert_eq!(
            status(&responses(&mut call)[0].1),
            (488, "Not Acceptable Here")
        );
        let ack = req(&in_dialog("ACK", 8, "re2", &tag, ""), "");
        call.handle_request(at + ms(6_100), kamailio(), &ack);
        assert!(drain(&mut call).is_empty());
        assert_eq!(call.next_deadline().map(|d| d > at + ms(6_100)), Some(true));

        // The dialog is still up: a BYE ends it.
        let bye = req(&in_dialog("BYE", 9, "bye9", &tag, ""), "");
        call.handle_request(at + ms(7_000), kamailio(), &bye);
        assert_eq!(status(&responses(&mut call)[0].1), (200, "OK"));
        assert_eq!(events(&mut call), vec![CallEvent::RemoteHangup]);
        let after = req(&in_dialog("OPTIONS", 10, "o2", &tag, ""), "");
        call.handle_request(at + ms(7_100), kamailio(), &after);
        assert_eq!(status(&responses(&mut call)[0].1).0, 481);
    }

    #[test]
    fn our_bye_is_retransmitted_by_timer_e_until_answered() {
        let base = t0();
        let mut call = answered_call(base);
        let at = base + ms(10_000);
        call.hang_up(at).expect("hang up");
        let sent = requests(&mut call);
        assert_eq!(sent.len(), 1);
        let (to, bye) = &sent[0];
        assert_eq!(*to, kamailio());
        assert_eq!(bye.method, "BYE");
        let resent = run_until(&mut call, at, at + ms(2_000));
        assert_eq!(
            resent.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![500, 1500]
        );
        let ok = resp(
            &format!(
                "SIP/2.0 200 OK
Via: {}
From: {}
To: {}
Call-ID: 1-4711@192.0.2.50
CSeq: 1 BYE
Server: kamailio",
                bye.headers.get("Via").unwrap_or_default(),
                bye.headers.get("From").unwrap_or_default(),
                bye.headers.get("To").unwrap_or_default()
            ),
            "",
        );
        call.handle_response(at + ms(2_100), &ok);
        assert_eq!(call.next_deadline(), None);
        assert!(call.is_over());
        assert!(events(&mut call).is_empty());

        // Unanswered: timer F ends it after 64·T1.
        let mut call = answered_call(base);
        call.hang_up(at).expect("hang up");
        drain(&mut call);
        let resent = run_until(&mut call, at, at + ms(40_000));
        assert_eq!(resent.last().map(|s| s.0), Some(32_000));
        assert!(call.is_over());
    }

    #[test]
    fn hanging_up_before_the_ack_waits_for_it() {
        let base = t0();
        let invite = req(KAMAILIO_INVITE, SDP_OFFER);
        let mut call = incoming(&invite, base);
        call.answer(base, b"v=0\r\n".to_vec()).expect("answer");
        drain(&mut call);
        call.hang_up(base + ms(100)).expect("hang up");
        assert!(drain(&mut call).is_empty(), "no BYE before the ACK");
        let tag = call.local_tag().to_owned();
        call.handle_request(
            base + ms(200),
            kamailio(),
            &req(&in_dialog("ACK", 1, "a", &tag, ""), ""),
        );
        let sent = requests(&mut call);
        assert_eq!(
            sent.iter()
                .map(|(_, r)| r.method.as_str())
                .collect::<Vec<_>>(),
            vec!["BYE"]
        );
        assert_eq!(events(&mut call), vec![CallEvent::Confirmed]);

        // Before the answer, hanging up refuses the INVITE with 480.
        let mut call = incoming(&invite, base);
        call.hang_up(base).expect("hang up");
        assert_eq!(
            status(&responses(&mut call)[0].1),
            (480, "Temporarily Unavailable")
        );
    }

    #[test]
    fn bad_requests_get_400_naming_the_header() {
        let base = t0();
        let cases = [
            ("CSeq: 1 INVITE\n", "", "CSeq"),
            ("CSeq: 1 INVITE\n", "CSeq: 1 BYE\n", "CSeq"),
            ("CSeq: 1 INVITE\n", "CSeq: one INVITE\n", "CSeq"),
            ("Call-ID: 1-4711@192.0.2.50\n", "", "Call-ID"),
            ("Contact: <sip:agent@192.0.2.50:5061>\n", "", "Contact"),
            ("To: <sip:+4930123456@192.0.2.1>\n", "To: <>garbage\n", "To"),
            (";tag=4711SIPpTag001", "", "From"),
        ];
        for (from, to, header) in cases {
            let text = KAMAILIO_INVITE.replacen(from, to, 1);
            let invite = req(&text, SDP_OFFER);
            let Err(refusal) = Call::incoming(config(), kamailio(), invite, 1, base) else {
                panic!("accepted without a valid {header}");
            };
            let transmit = refusal.transmit.expect("answered");
            let Ok(Message::Response(r)) = message::parse(&transmit.bytes) else {
                panic!("no response");
            };
            assert_eq!(r.status, 400, "{header}");
            assert_eq!(
                r.reason,
                format!("Bad Request: missing or malformed {header}")
            );
        }
        // Without a Via there is nowhere to answer.
        let text = KAMAILIO_INVITE
            .lines()
            .filter(|l| !l.starts_with("Via"))
            .collect::<Vec<_>>()
            .join("\n");
        let refusal = Call::incoming(config(), kamailio(), req(&text, ""), 1, base).err();
        assert_eq!(refusal.map(|r| r.transmit), Some(None));
        // A re-INVITE of a dialog we do not know, and a BYE outside a call.
        let text = KAMAILIO_INVITE.replace("192.0.2.1>", "192.0.2.1>;tag=x");
        let refusal = Call::incoming(config(), kamailio(), req(&text, ""), 1, base).err();
        assert!(refusal.is_some_and(|r| r.reason.starts_with("Call/Transaction")));
        let bye = req(&in_dialog("BYE", 2, "b", "x", ""), "");
        let refusal = Call::incoming(config(), kamailio(), bye, 1, base).err();
        assert!(refusal.is_some_and(|r| r.transmit.is_some()));

        // In a call: a BYE with a garbled CSeq.
        let mut call = answered_call(base);
        let tag = call.local_tag().to_owned();
        let bye = req(
            &in_dialog("BYE", 2, "b", &tag, "").replace("CSeq: 2 BYE", "CSeq: BYE"),
            "",
        );
        call.handle_request(base, kamailio(), &bye);
        assert_eq!(
            status(&responses(&mut call)[0].1),
            (400, "Bad Request: missing or malformed CSeq")
        );
        assert!(events(&mut call).is_empty());
    }

    #[test]
    fn unsupported_bodies_and_extensions_are_refused() {
        let base = t0();
        let text = KAMAILIO_INVITE.replace("application/sdp", "application/json");
        let mut call =
            Call::incoming(config(), kamailio(), req(&text, "{}"), 1, base).expect("call");
        let lines: Vec<_> = responses(&mut call).iter().map(|(_, r)| r.status).collect();
        assert_eq!(lines, vec![100, 415]);
        let text = format!("{KAMAILIO_INVITE}\nRequire: 100rel");
        let mut call =
            Call::incoming(config(), kamailio(), req(&text, SDP_OFFER), 1, base).expect("call");
        let sent = responses(&mut call);
        assert_eq!(status(&sent[1].1), (420, "Bad Extension"));
        assert_eq!(sent[1].1.headers.get("Unsupported"), Some("100rel"));
        assert!(events(&mut call).is_empty());
    }

    // ---- UAC ------------------------------------------------------------

    fn outgoing(credentials: Option<Credentials>) -> OutgoingCall {
        OutgoingCall {
            target_uri: "sip:queue@192.0.2.1".into(),
            from: "\"+4930123456\" <sip:6001@192.0.2.1>".into(),
            proxy: kamailio(),
            local_sdp: SDP_ANSWER.replace('\n', "\r\n").into_bytes(),
            credentials,
        }
    }

    fn sent_invite(call: &mut Call) -> Request {
        let sent = requests(call);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, kamailio());
        assert_eq!(sent[0].1.method, "INVITE");
        sent[0].1.clone()
    }

    /// A response from the queue's UA (a sipp UAS behind Kamailio) to `request`.
    fn answer_to(request: &Request, status_line: &str, extra: &str, body: &str) -> Response {
        let h = &request.headers;
        let cseq = h.get("CSeq").unwrap_or_default();
        resp(
            format!(
                "SIP/2.0 {status_line}
Via: {};received=192.0.2.10
From: {}
To: {};tag=uas-tag-1
Call-ID: {}
CSeq: {cseq}
{extra}",
                h.get("Via").unwrap_or_default(),
                h.get("From").unwrap_or_default(),
                h.get("To").unwrap_or_default(),
                h.call_id().unwrap_or_default(),
            )
            .trim_end(),
            body,
        )
    }

    #[test]
    fn outgoing_invite_retransmits_with_timer_a_and_fails_with_timer_b() {
        let base = t0();
        let mut call = Call::invite(config(), outgoing(None), 5, base);
        let invite = sent_invite(&mut call);
        assert_eq!(call.role(), Role::Uac);
        assert_eq!(invite.uri, "sip:queue@192.0.2.1");
        let via = invite.headers.via().expect("via");
        assert!(
            via.branch()
                .is_some_and(|b| b.starts_with("z9hG4bK") && b.len() > 7)
        );
        assert_eq!(via.rport(), Some(None));
        assert_eq!((via.host.as_str(), via.port), ("192.0.2.10", Some(5070)));
        assert_eq!(invite.headers.get("Max-Forwards"), Some("70"));
        let from = invite.headers.from().expect("from");
        assert_eq!(from.tag(), Some(call.local_tag()));
        assert_eq!(from.display.as_deref(), Some("+4930123456"));
        assert_eq!(to_tag(&invite.headers), None);
        assert_eq!(invite.headers.call_id(), Some(call.call_id()));
        assert_eq!(invite.headers.cseq(), Some((1, "INVITE")));
        assert_eq!(
            invite.headers.get("Contact"),
            Some("<sip:6001@192.0.2.10:5070>")
        );
        assert_eq!(invite.headers.get("Content-Type"), Some("application/sdp"));
        assert_eq!(invite.body, SDP_ANSWER.replace('\n', "\r\n").into_bytes());

        let sent = run_until(&mut call, base, base + ms(40_000));
        let at: Vec<_> = sent
            .iter()
            .filter(|s| !s.1.is_empty())
            .map(|s| s.0)
            .collect();
        assert_eq!(at, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert!(
            sent.iter()
                .flat_map(|s| &s.1)
                .all(|(_, m)| *m == Message::Request(invite.clone()))
        );
        assert_eq!(
            events(&mut call),
            vec![CallEvent::Failed {
                status: 408,
                reason: "Request Timeout".into()
            }]
        );
        assert!(call.is_over());
    }

    #[test]
    fn outgoing_call_is_challenged_then_answered_through_record_routes() {
        let base = t0();
        let credentials = Credentials {
            username: "6001".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{credentials:?}").contains("s3cret"));
        let mut call = Call::invite(config(), outgoing(Some(credentials)), 5, base);
        let first = sent_invite(&mut call);
        let trying = answer_to(&first, "100 Trying", "", "").clone();
        let mut trying = trying;
        trying.headers.remove("To");
        trying
            .headers
            .push("To", first.headers.get("To").unwrap_or_default());
        call.handle_response(base + ms(5), &trying);
        assert!(events(&mut call).is_empty(), "100 is hop-by-hop");
        let challenge = answer_to(
            &first,
            "407 Proxy Authentication Required",
            "Proxy-Authenticate: Digest realm=\"192.0.2.1\", nonce=\"Z2FhYmNkZWY=\", qop=\"auth\"",
            "",
        );
        call.handle_response(base + ms(10), &challenge);
        let sent = requests(&mut call);
        assert_eq!(
            sent.iter()
                .map(|(_, r)| r.method.as_str())
                .collect::<Vec<_>>(),
            vec!["ACK", "INVITE"]
        );
        let (ack, second) = (&sent[0].1, &sent[1].1);
        // ACK of the 407: hop-by-hop, the INVITE's branch and CSeq number.
        assert_eq!(ack.uri, first.uri);
        assert_eq!(branch(&ack.headers), branch(&first.headers));
        assert_eq!(ack.headers.list("Via").len(), 1);
        assert_eq!(ack.headers.cseq(), Some((1, "ACK")));
        assert_eq!(to_tag(&ack.headers).as_deref(), Some("uas-tag-1"));
        assert_eq!(ack.headers.get("From"), first.headers.get("From"));
        // The new INVITE: CSeq + 1, a new branch, the same dialog identifiers.
        assert_eq!(second.headers.cseq(), Some((2, "INVITE")));
        assert_ne!(branch(&second.headers), branch(&first.headers));
        assert_eq!(second.headers.call_id(), first.headers.call_id());
        assert_eq!(second.headers.get("From"), first.headers.get("From"));
        assert_eq!(to_tag(&second.headers), None);
        let authorization = second
            .headers
            .get("Proxy-Authorization")
            .expect("credentials");
        assert!(authorization.starts_with("Digest username=\"6001\", realm=\"192.0.2.1\""));
        assert!(authorization.contains("uri=\"sip:queue@192.0.2.1\""));
        assert!(authorization.contains("qop=auth, nc=00000001"));
        // A retransmitted 407 gets the same ACK again.
        call.handle_response(base + ms(20), &challenge);
        assert_eq!(requests(&mut call), vec![(kamailio(), ack.clone())]);

        let ringing = answer_to(
            second,
            "180 Ringing",
            "Contact: <sip:queue@198.51.100.20:5080>\nc: application/sdp",
            SDP_OFFER,
        );
        call.handle_response(base + ms(30), &ringing);
        assert_eq!(
            events(&mut call),
            vec![CallEvent::Progress {
                status: 180,
                reason: "Ringing".into(),
                sdp: Some(SDP_OFFER.replace('\n', "\r\n").into_bytes())
            }]
        );

        let ok = answer_to(
            second,
            "200 OK",
            "Record-Route: <sip:198.51.100.7;lr>\nRecord-Route: <sip:192.0.2.1;lr;ftag=x>\nContact: <sip:queue@198.51.100.20:5080>\nc: application/sdp",
            SDP_OFFER,
        );
        call.handle_response(base + ms(40), &ok);
        assert_eq!(
            events(&mut call),
            vec![CallEvent::Answered {
                sdp: SDP_OFFER.replace('\n', "\r\n").into_bytes()
            }]
        );
        let sent = requests(&mut call);
        assert_eq!(sent.len(), 1);
        let (to, ack) = &sent[0];
        assert_eq!(*to, kamailio(), "the first route after reversing");
        assert_eq!(ack.method, "ACK");
        assert_eq!(ack.uri, "sip:queue@198.51.100.20:5080", "the remote target");
        assert_eq!(
            ack.headers.get_all("Route").collect::<Vec<_>>(),
            vec!["<sip:192.0.2.1;lr;ftag=x>", "<sip:198.51.100.7;lr>"]
        );
        assert_eq!(ack.headers.cseq(), Some((2, "ACK")));
        assert_ne!(
            branch(&ack.headers),
            branch(&second.headers),
            "2xx ACK: new transaction"
        );
        assert_eq!(to_tag(&ack.headers).as_deref(), Some("uas-tag-1"));
        assert_eq!(ack.headers.get("Proxy-Authorization"), Some(authorization));
        // 2xx retransmissions: the same ACK again.
        call.handle_response(base + ms(540), &ok);
        assert_eq!(requests(&mut call), vec![(kamailio(), ack.clone())]);
        assert!(events(&mut call).is_empty());

        // Our BYE follows the route set, CSeq after the INVITE's.
        call.hang_up(base + ms(60_000)).expect("hang up");
        let sent = requests(&mut call);
        let (to, bye) = &sent[0];
        assert_eq!(*to, kamailio());
        assert_eq!(bye.uri, "sip:queue@198.51.100.20:5080");
        assert_eq!(bye.headers.cseq(), Some((3, "BYE")));
        assert_eq!(bye.headers.get_all("Route").count(), 2);
        assert_eq!(to_tag(&bye.headers).as_deref(), Some("uas-tag-1"));
        let ok = answer_to(bye, "200 OK", "", "");
        call.handle_response(base + ms(60_010), &ok);
        run_until(&mut call, base, base + ms(200_000));
        assert!(call.is_over());
        assert_eq!(call.unmatched_responses(), 0);
    }

    #[test]
    fn the_called_party_hangs_up_an_outgoing_call() {
        let base = t0();
        let mut call = Call::invite(config(), outgoing(None), 21, base);
        let invite = sent_invite(&mut call);
        let ok = answer_to(
            &invite,
            "200 OK",
            "Contact: <sip:queue@198.51.100.20:5080>",
            "v=0",
        );
        call.handle_response(base + ms(10), &ok);
        drain(&mut call);
        events(&mut call);
        let from_tag = call.local_tag().to_owned();
        let call_id = call.call_id().to_owned();
        let bye = |tag: &str, cseq: u32| {
            req(
                &format!(
                    "BYE sip:6001@192.0.2.10:5070 SIP/2.0
v: SIP/2.0/UDP 198.51.100.20:5080;branch=z9hG4bKuas{cseq};rport
f: <sip:queue@192.0.2.1>;tag=uas-tag-1
t: \"+4930123456\" <sip:6001@192.0.2.1>;tag={tag}
i: {}
CSeq: {cseq} BYE
Max-Forwards: 70",
                    call_id
                ),
                "",
            )
        };
        let source = addr("198.51.100.20:5080");
        call.handle_request(base + ms(20), source, &bye("other", 1));
        assert_eq!(responses(&mut call)[0].1.status, 481);
        call.handle_request(base + ms(30), source, &bye(&from_tag, 2));
        let ok = responses(&mut call);
        assert_eq!((ok[0].0, status(&ok[0].1)), (source, (200, "OK")));
        assert_eq!(events(&mut call), vec![CallEvent::RemoteHangup]);
        run_until(&mut call, base, base + ms(40_000));
        assert!(call.is_over());
    }

    #[test]
    fn a_second_challenge_fails_the_call() {
        let base = t0();
        let credentials = Credentials {
            username: "6001".into(),
            password: "wrong".into(),
        };
        let mut call = Call::invite(config(), outgoing(Some(credentials)), 5, base);
        let first = sent_invite(&mut call);
        let challenge = |r: &Request| {
            answer_to(
                r,
                "401 Unauthorized",
                "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"n1\"",
                "",
            )
        };
        call.handle_response(base, &challenge(&first));
        let sent = requests(&mut call);
        let second = &sent[1].1;
        assert!(second.headers.get("Authorization").is_some());
        call.handle_response(base + ms(10), &challenge(second));
        let sent = requests(&mut call);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1.method, "ACK");
        assert_eq!(sent[0].1.headers.cseq(), Some((2, "ACK")));
        assert_eq!(
            events(&mut call),
            vec![CallEvent::Failed {
                status: 401,
                reason: "Unauthorized".into()
            }]
        );
        // Without credentials the first challenge already fails.
        let mut call = Call::invite(config(), outgoing(None), 5, base);
        let first = sent_invite(&mut call);
        call.handle_response(base, &challenge(&first));
        assert_eq!(requests(&mut call).len(), 1, "only the ACK");
        assert!(matches!(
            events(&mut call)[..],
            [CallEvent::Failed { status: 401, .. }]
        ));
    }

    #[test]
    fn refused_outgoing_call_is_acked_and_fails() {
        let base = t0();
        let mut call = Call::invite(config(), outgoing(None), 9, base);
        let invite = sent_invite(&mut call);
        let busy = answer_to(&invite, "486 Busy Here", "", "");
        call.handle_response(base + ms(100), &busy);
        let sent = requests(&mut call);
        assert_eq!(sent.len(), 1);
        let ack = &sent[0].1;
        assert_eq!(ack.method, "ACK");
        assert_eq!(branch(&ack.headers), branch(&invite.headers));
        assert_eq!(ack.headers.cseq(), Some((1, "ACK")));
        assert_eq!(
            events(&mut call),
            vec![CallEvent::Failed {
                status: 486,
                reason: "Busy Here".into()
            }]
        );
        call.handle_response(base + ms(600), &busy);
        assert_eq!(
            requests(&mut call)[0].1,
            *ack,
            "retransmitted final: ACK again"
        );
        assert!(events(&mut call).is_empty());
        let mut stray = answer_to(&invite, "200 OK", "", "");
        stray.headers.remove("Via");
        stray
            .headers
            .push("Via", "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKnotours");
        call.handle_response(base + ms(700), &stray);
        assert_eq!(call.unmatched_responses(), 1);
        assert!(drain(&mut call).is_empty());
        assert!(call.hang_up(base).is_ok());
        run_until(&mut call, base, base + ms(40_000));
        assert!(call.is_over());
    }

    #[test]
    fn outgoing_call_cancelled_after_ringing() {
        let base = t0();
        let mut call = Call::invite(config(), outgoing(None), 13, base);
        let invite = sent_invite(&mut call);
        call.cancel(base + ms(10)).expect("cancel");
        assert!(
            drain(&mut call).is_empty(),
            "no CANCEL before a provisional"
        );
        assert!(call.cancel(base + ms(11)).is_err());
        let mut ringing = answer_to(&invite, "180 Ringing", "", "");
        ringing.headers.remove("To");
        ringing
            .headers
            .push("To", "<sip:queue@192.0.2.1>;tag=uas-tag-1");
        call.handle_response(base + ms(20), &ringing);
        assert!(matches!(
            events(&mut call)[..],
            [CallEvent::Progress {
                status: 180,
                sdp: None,
                ..
            }]
        ));
        let sent = requests(&mut call);
        assert_eq!(sent.len(), 1);
        let cancel = &sent[0].1;
        assert_eq!(cancel.method, "CANCEL");
        assert_eq!(cancel.uri, invite.uri);
        assert_eq!(
            branch(&cancel.headers),
            branch(&invite.headers),
            "CANCEL: the INVITE's branch"
        );
        assert_eq!(cancel.headers.cseq(), Some((1, "CANCEL")));
        assert_eq!(cancel.headers.get("To"), invite.headers.get("To"), "no tag");
        assert_eq!(cancel.headers.get("From"), invite.headers.get("From"));
        assert_eq!(cancel.headers.call_id(), invite.headers.call_id());
        let resent = run_until(&mut call, base + ms(20), base + ms(600));
        assert_eq!(resent.len(), 1, "timer E for the CANCEL");
        call.handle_response(base + ms(700), &answer_to(cancel, "200 OK", "", ""));
        let terminated = answer_to(&invite, "487 Request Terminated", "", "");
        call.handle_response(base + ms(710), &terminated);
        let sent = requests(&mut call);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1.method, "ACK");
        assert_eq!(branch(&sent[0].1.headers), branch(&invite.headers));
        assert_eq!(
            events(&mut call),
            vec![CallEvent::Failed {
                status: 487,
                reason: "Request Terminated".into()
            }]
        );
        run_until(&mut call, base, base + ms(40_000));
        assert!(call.is_over());
        assert_eq!(call.unmatched_responses(), 0);
    }

    #[test]
    fn an_answer_crossing_our_cancel_is_acked_and_hung_up() {
        let base = t0();
        let mut call = Call::invite(config(), outgoing(None), 13, base);
        let invite = sent_invite(&mut call);
        call.cancel(base).expect("cancel");
        let ok = answer_to(&invite, "200 OK", "Contact: <sip:queue@192.0.2.1:5080>", "");
        call.handle_response(base + ms(10), &ok);
        let methods: Vec<_> = requests(&mut call)
            .into_iter()
            .map(|(_, r)| r.method)
            .collect();
        assert_eq!(methods, vec!["ACK", "BYE"]);
        assert!(events(&mut call).is_empty());
    }

    #[test]
    fn answered_requests_are_bounded_and_expire() {
        let base = t0();
        let mut call = answered_call(base);
        let tag = call.local_tag().to_owned();
        for n in 0..200u32 {
            let options = req(&in_dialog("OPTIONS", n + 2, &format!("o{n}"), &tag, ""), "");
            call.handle_request(base + ms(u64::from(n)), kamailio(), &options);
            assert_eq!(responses(&mut call)[0].1.status, 200);
            assert!(call.answered.len() <= MAX_RETAINED);
        }
        run_until(&mut call, base, base + ms(40_000));
        assert!(call.answered.is_empty());
        assert!(!call.is_over(), "the dialog is up");
    }

    #[test]
    fn dtmf_bodies() {
        for (kind, body, expected) in [
            (
                "application/dtmf-relay",
                "Signal=1\r\nDuration=100\r\n",
                Some(('1', Some(100))),
            ),
            (
                "application/dtmf-relay",
                "signal= *\nduration= 250",
                Some(('*', Some(250))),
            ),
            ("application/dtmf-relay", "Signal=11\n", Some(('#', None))),
            ("application/dtmf-relay", "Signal=a\n", Some(('A', None))),
            ("application/dtmf-relay", "Signal=55\n", None),
            ("application/dtmf-relay", "Duration=100", None),
            ("application/dtmf", "9", Some(('9', None))),
            ("application/dtmf", "\u{ff}", None),
        ] {
            assert_eq!(parse_dtmf(kind, body.as_bytes()), expected, "{body:?}");
        }
    }

    /// Mutated peer messages fed to both sides never panic.
    #[test]
    fn garbled_input_never_panics() {
        let base = t0();
        let uas_tag = answered_call(base).local_tag().to_owned();
        let seeds = [
            String::from_utf8_lossy(&sip(KAMAILIO_INVITE, SDP_OFFER)).into_owned(),
            String::from_utf8_lossy(&sip(COMPACT_INVITE, SDP_OFFER)).into_owned(),
            String::from_utf8_lossy(&sip(&in_dialog("BYE", 2, "b", &uas_tag, ""), "")).into_owned(),
            String::from_utf8_lossy(&sip(
                &in_dialog("INFO", 3, "i", &uas_tag, "c: application/dtmf-relay"),
                "Signal=5\nDuration=160",
            ))
            .into_owned(),
        ];
        let alphabet = b"\r\n:;,<>\" \t@=tagz9hG4bK1SIP/2.0 INVITE%";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut uas = answered_call(base);
        let mut uac = Call::invite(config(), outgoing(None), 1, base);
        let invite = sent_invite(&mut uac);
        let response = String::from_utf8_lossy(
            &answer_to(
                &invite,
                "200 OK",
                "Record-Route: <sip:192.0.2.1;lr>\nContact: <sip:q@192.0.2.9>",
                "v=0",
            )
            .to_bytes(),
        )
        .into_owned();
        let mut accepted = 0;
        for round in 0..4_000usize {
            let seed = if round % 5 == 4 {
                &response
            } else {
                &seeds[round % seeds.len()]
            };
            let mut bytes = seed.clone().into_bytes();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % (bytes.len() + 1);
                let byte = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => bytes[at] = byte,
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            let now = base + ms(round as u64);
            match message::parse(&bytes) {
                Ok(Message::Request(r)) => {
                    accepted += 1;
                    if let Ok(mut call) = Call::incoming(config(), kamailio(), r.clone(), 1, now) {
                        let _ = call.answer(now, Vec::new());
                        drain(&mut call);
                    }
                    uas.handle_request(now, kamailio(), &r);
                }
                Ok(Message::Response(r)) => {
                    accepted += 1;
                    uac.handle_response(now, &r);
                }
                Err(_) => {}
            }
            uas.handle_timeout(now);
            uac.handle_timeout(now);
            drain(&mut uas);
            drain(&mut uac);
            events(&mut uas);
            events(&mut uac);
        }
        assert!(
            accepted > 1_000,
            "the mutations keep many messages valid ({accepted})"
        );
    }
}
