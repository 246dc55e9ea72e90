//! Calls through a real Kamailio (Debian's package, the repo's
//! `deploy/kamailio/kamailio.cfg`) between real peers, no hubd: a sipp UAC
//! calls 6001, registered by a callee (a sipp UAS, or a small Rust UAS that
//! decodes the RTP it receives); the call is authenticated, relayed,
//! answered and hung up from either side; a call to a user with no binding
//! gets 480, one to a user that does not exist 404; a call cancelled while
//! ringing gets 487. The tone sipp plays is measured on arrival, and its
//! RFC 4733 digit seen. This is the test bed of hubd's call bridge.
//! Every wait is on an observable condition with a deadline.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hubd::media::rtp;
use hubd::media::sdp::{self, Negotiated};
use hubd::sip::message::{self, Message, Request, Response};
use vss_tests::kamailio::{Kamailio, KamailioOptions};
use vss_tests::sipp::{Sipp, SippConfig, Tone};
use vss_tests::tone;

const PASSWORD: &str = "secret";
const CALLER: &str = "6101";
const CALLEE: &str = "6001";

fn kamailio() -> Kamailio {
    Kamailio::start(KamailioOptions {
        qop: true,
        password: PASSWORD.to_owned(),
    })
}

/// A sipp UAS running `scenario`, registered as [`CALLEE`] and listening.
fn sipp_callee(kamailio: &Kamailio, scenario: &str, pause_ms: u64) -> Sipp {
    let uas = Sipp::listen(
        SippConfig {
            service: CALLEE.to_owned(),
            ..SippConfig::uas(scenario)
        }
        .pause_ms(pause_ms),
    );
    Sipp::register(kamailio.addr(), CALLEE, PASSWORD, uas.addr().port(), 60);
    assert_eq!(kamailio.registered_aors(), vec![CALLEE.to_owned()]);
    uas
}

fn caller(scenario: &str, kamailio: &Kamailio, callee: &str) -> SippConfig {
    SippConfig::uac(scenario, kamailio.addr(), callee).auth(CALLER, PASSWORD)
}

#[test]
fn sipp_calls_sipp_through_kamailio_and_the_caller_hangs_up() {
    let kamailio = kamailio();
    let uas = sipp_callee(&kamailio, "uas_answer.xml", 0);
    let uac = Sipp::run(caller("uac_call.xml", &kamailio, CALLEE).tone(Tone::default()));
    uac.assert_succeeded(1, "the caller");
    uas.wait().assert_succeeded(1, "the callee");
    // Authenticated (407 then credentials) and Record-Routed by Kamailio.
    assert!(uac.messages.contains("407 Proxy Authentication Required"));
    assert!(uac.messages.contains("Record-Route:"), "{}", uac.messages);
    // The caller's BYE went through Kamailio (its Route names the proxy).
    let bye = uac
        .messages
        .split("BYE sip:")
        .nth(1)
        .unwrap_or_else(|| panic!("the caller sent no BYE: {}", uac.messages));
    assert!(
        bye.contains(&format!("Route: <sip:{}", kamailio.addr())),
        "{bye}"
    );
}

#[test]
fn sipp_calls_sipp_through_kamailio_and_the_callee_hangs_up() {
    let kamailio = kamailio();
    let uas = sipp_callee(&kamailio, "uas_answer_bye.xml", 1000);
    let uac = Sipp::run(caller("uac_call_remote_bye.xml", &kamailio, CALLEE).tone(Tone::default()));
    uac.assert_succeeded(1, "the caller");
    let uas = uas.wait();
    uas.assert_succeeded(1, "the callee");
    // The callee's BYE went through Kamailio (its Route names the proxy).
    let proxy = kamailio.addr().to_string();
    let bye = uas
        .messages
        .split("BYE sip:")
        .nth(1)
        .unwrap_or_else(|| panic!("the callee sent no BYE: {}", uas.messages));
    assert!(bye.contains(&format!("Route: <sip:{proxy}")), "{bye}");
}

#[test]
fn a_call_to_a_user_without_a_binding_gets_480() {
    let kamailio = kamailio();
    assert!(kamailio.registered_aors().is_empty());
    let uac = Sipp::run(caller("uac_call_refused.xml", &kamailio, "6002"));
    uac.assert_succeeded(1, "the refused caller");
    assert!(uac.messages.contains("480 Temporarily Unavailable"));
}

#[test]
fn a_call_to_a_user_without_a_password_gets_404() {
    // No SIP_PASSWORD: only users with a `pw` entry exist (and no qop).
    let kamailio = Kamailio::start(KamailioOptions {
        qop: false,
        password: String::new(),
    });
    kamailio
        .kamcmd(&["htable.sets", "pw", &format!("s:{CALLER}"), PASSWORD])
        .expect("the caller's password set");
    let uac = Sipp::run(caller("uac_call_refused.xml", &kamailio, "6999"));
    uac.assert_succeeded(1, "the refused caller");
    assert!(uac.messages.contains("404 Not Found"), "{}", uac.messages);
}

#[test]
fn a_call_cancelled_while_ringing_gets_487() {
    let kamailio = kamailio();
    let uas = sipp_callee(&kamailio, "uas_ring.xml", 0);
    let uac = Sipp::run(caller("uac_cancel.xml", &kamailio, CALLEE));
    uac.assert_succeeded(1, "the caller who cancels");
    uas.wait().assert_succeeded(1, "the callee that rang");
    assert!(uac.messages.contains("487 Request Terminated"));
}

#[test]
fn the_tone_sipp_plays_arrives_at_the_callee() {
    let kamailio = kamailio();
    let callee = RustUas::start();
    Sipp::register(kamailio.addr(), CALLEE, PASSWORD, callee.sip_port(), 60);
    let tone = Tone {
        seconds: 2.0,
        ..Tone::default()
    };
    // The call lasts as long as the tone and a little more, so all of it is sent.
    let uac = Sipp::run(
        caller("uac_call.xml", &kamailio, CALLEE)
            .tone(tone)
            .pause_ms(2500),
    );
    uac.assert_succeeded(1, "the caller");
    let call = callee.finish();
    assert!(call.bye, "the callee got no BYE");
    assert!(
        call.invite
            .headers
            .get_all("Record-Route")
            .any(|rr| rr.contains(&kamailio.addr().to_string())),
        "the INVITE did not come through Kamailio: {:?}",
        call.invite
    );
    // Most of the 2 s (16,000 samples) arrived, and it is the 1 kHz tone.
    assert!(
        call.samples.len() >= 12_000,
        "only {} samples arrived",
        call.samples.len()
    );
    let (frequency, _) = tone::dominant_frequency(&call.samples, 8000).expect("not silence");
    let purity = tone::tone_purity(&call.samples, 1000.0, 8000);
    eprintln!(
        "the callee decoded {} samples: dominant {frequency} Hz, purity {purity:.3}",
        call.samples.len()
    );
    assert_eq!(frequency, 1000.0);
    assert!(purity > 0.9);
    // Then the digit 1 as an RFC 4733 telephone-event.
    assert_eq!(call.events, vec![1]);
}

/// What the Rust UAS saw of its one call.
struct CallReport {
    /// The INVITE as it arrived.
    invite: Request,
    /// Whether the call ended with a BYE (answered 200).
    bye: bool,
    /// The audio received, decoded.
    samples: Vec<i16>,
    /// The RFC 4733 events received (their first packet's event code).
    events: Vec<u8>,
}

/// A minimal callee on raw UDP: answers one INVITE (200 with an SDP answer
/// chosen by hubd's negotiator, pointing at its RTP socket; no 180: sent
/// back to back, Kamailio's workers can relay a 180 after the 200, which
/// sipp takes as an unexpected message),
/// decodes the G.711 RTP arriving there, answers the BYE. Built on hubd's
/// public SIP parser and media modules, no dialog layer.
struct RustUas {
    sip_port: u16,
    signalling: JoinHandle<Option<(Request, bool)>>,
    media: JoinHandle<(Vec<i16>, Vec<u8>)>,
    stop: Arc<AtomicBool>,
}

/// How long the Rust UAS waits for its call to end.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl RustUas {
    fn start() -> RustUas {
        let sip = UdpSocket::bind("127.0.0.1:0").expect("a SIP socket");
        let rtp = UdpSocket::bind("127.0.0.1:0").expect("an RTP socket");
        let poll = Some(Duration::from_millis(50));
        sip.set_read_timeout(poll).expect("timeout set");
        rtp.set_read_timeout(poll).expect("timeout set");
        let sip_port = sip.local_addr().expect("bound").port();
        let rtp_addr = rtp.local_addr().expect("bound");
        let stop = Arc::new(AtomicBool::new(false));
        let codec: Arc<Mutex<Option<Negotiated>>> = Arc::new(Mutex::new(None));
        let media = {
            let stop = Arc::clone(&stop);
            let codec = Arc::clone(&codec);
            std::thread::spawn(move || receive_rtp(&rtp, &stop, &codec))
        };
        let signalling = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || answer_one_call(&sip, rtp_addr, &stop, &codec))
        };
        RustUas {
            sip_port,
            signalling,
            media,
            stop,
        }
    }

    fn sip_port(&self) -> u16 {
        self.sip_port
    }

    /// Waits for the call to end (BYE, or [`CALL_TIMEOUT`]) and reports.
    fn finish(self) -> CallReport {
        let signalling = self.signalling.join().expect("signalling thread");
        self.stop.store(true, Ordering::SeqCst);
        let (samples, events) = self.media.join().expect("media thread");
        let (invite, bye) = signalling.expect("the Rust UAS received no INVITE");
        CallReport {
            invite,
            bye,
            samples,
            events,
        }
    }
}

fn send(socket: &UdpSocket, to: SocketAddr, response: &Response) {
    socket
        .send_to(&response.to_bytes(), to)
        .expect("a datagram sent on loopback");
}

/// The SIP side: returns the INVITE and whether a BYE ended the call.
fn answer_one_call(
    socket: &UdpSocket,
    rtp_addr: SocketAddr,
    stop: &AtomicBool,
    codec: &Mutex<Option<Negotiated>>,
) -> Option<(Request, bool)> {
    const TAG: &str = "rustuas1";
    let deadline = Instant::now() + CALL_TIMEOUT;
    let mut invite: Option<Request> = None;
    let mut ok: Option<Response> = None;
    let mut buffer = vec![0u8; 65_536];
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let Ok(Message::Request(request)) = message::parse(&buffer[..n]) else {
            continue;
        };
        match request.method.as_str() {
            "INVITE" => {
                if let Some(ok) = &ok {
                    // A retransmission: the same answer again.
                    send(socket, from, ok);
                    continue;
                }
                let offer = sdp::SessionDescription::parse(&request.body).expect("an SDP offer");
                let chosen = sdp::negotiate(&offer).expect("PCMU or PCMA offered");
                *codec.lock().expect("codec lock") = Some(chosen);
                let local = sdp::LocalMedia {
                    address: rtp_addr.ip(),
                    port: rtp_addr.port(),
                    session_id: 1,
                    session_version: 1,
                };
                let with_routes = |status, reason| {
                    let mut response = Response::to_request(&request, status, reason, TAG);
                    for rr in request.headers.get_all("Record-Route") {
                        response.headers.push("Record-Route", rr);
                    }
                    let contact = format!("<sip:{CALLEE}@{}>", socket.local_addr().expect("bound"));
                    response.headers.push("Contact", contact);
                    response
                };
                let mut answer = with_routes(200, "OK");
                answer.headers.push("Content-Type", "application/sdp");
                answer.body = sdp::answer(&offer, &chosen, &local).into_bytes();
                send(socket, from, &answer);
                ok = Some(answer);
                invite = Some(request);
            }
            "BYE" => {
                send(
                    socket,
                    from,
                    &Response::to_request(&request, 200, "OK", TAG),
                );
                return invite.map(|i| (i, true));
            }
            _ => {} // ACK: nothing to send.
        }
    }
    invite.map(|i| (i, false))
}

/// The media side: decodes every RTP packet of the negotiated codec, and
/// notes the event of each new RFC 4733 event (a new timestamp), until told
/// to stop.
fn receive_rtp(
    socket: &UdpSocket,
    stop: &AtomicBool,
    negotiated: &Mutex<Option<Negotiated>>,
) -> (Vec<i16>, Vec<u8>) {
    let mut samples = Vec::new();
    let mut events = Vec::new();
    let mut last_event_timestamp = None;
    let mut buffer = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let Ok(n) = socket.recv(&mut buffer) else {
            continue;
        };
        let Ok(packet) = rtp::parse(&buffer[..n]) else {
            continue;
        };
        let Some(chosen) = *negotiated.lock().expect("codec lock") else {
            continue;
        };
        let pt = packet.header.payload_type;
        if pt == chosen.payload_type {
            samples.extend(packet.payload.iter().map(|&b| chosen.codec.decode(b)));
        } else if Some(pt) == chosen.telephone_event
            && let Some(&event) = packet.payload.first()
            && last_event_timestamp != Some(packet.header.timestamp)
        {
            last_event_timestamp = Some(packet.header.timestamp);
            events.push(event);
        }
    }
    (samples, events)
}
