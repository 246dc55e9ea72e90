//! Slots register with a real Kamailio (Debian's package, the repo's
//! `deploy/kamailio/kamailio.cfg`): with and without qop, again after
//! Kamailio restarts, through the secondary registrar when the primary is
//! dead, FAULT on a wrong password without a retry storm, and unregistered
//! when hubd stops. Every wait is on an observable condition with a deadline.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use hubd::sip::message::{self, Message};
use serde_json::Value;
use vss_tests::kamailio::{Kamailio, KamailioOptions};
use vss_tests::{HubProcess, get_json, metric, wait_for};

const WAIT: Duration = Duration::from_secs(40);

/// One `[[slots]]` entry: id, kind, SIP number, password.
type Slot = (u32, &'static str, &'static str, Option<&'static str>);

/// AUTO 6001, MF 7001, LS 8001, all with the right password.
const SLOTS: &[Slot] = &[
    (1, "auto", "6001", Some("secret")),
    (2, "mf", "7001", Some("secret")),
    (3, "ls", "8001", Some("secret")),
];

struct Hub {
    process: Option<HubProcess>,
    api: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Hub {
    fn start(registrars: &[SocketAddr], slots: &[Slot]) -> Hub {
        Hub::with_timing(registrars, slots, "expires_s = 10\n")
    }

    /// With `timing` (`expires_s`, `keepalive_s` lines) in `[sip]`.
    fn with_timing(registrars: &[SocketAddr], slots: &[Slot], timing: &str) -> Hub {
        let dir = tempfile::tempdir().expect("a temp dir");
        let registrars: Vec<String> = registrars.iter().map(|r| format!("\"{r}\"")).collect();
        let mut text = format!(
            "[hub]\nid = \"hub-sip\"\nname = \"SIP test hub\"\ndata_dir = \"{}\"\n\n\
             [api]\nlisten = \"127.0.0.1:0\"\n\n\
             [supervisor]\nrestart_backoff_initial_ms = 600000\nrestart_backoff_max_ms = 600000\n\n\
             [sip]\nregistrars = [{}]\nlisten = \"127.0.0.1:0\"\n{timing}t1_ms = 100\nmax_auth_failures = 3\n",
            dir.path().join("data").display(),
            registrars.join(", ")
        );
        for (id, kind, number, password) in slots {
            text.push_str(&format!(
                "\n[[slots]]\nid = {id}\nkind = \"{kind}\"\nsip_number = \"{number}\"\ndriver = {{ type = \"sim\", latency_ms = 5 }}\n"
            ));
            if let Some(password) = password {
                text.push_str(&format!("sip_password = \"{password}\"\n"));
            }
        }
        let config = dir.path().join("hubd.toml");
        std::fs::write(&config, text).expect("config written");
        let (process, api) = HubProcess::run_config(Path::new(&config));
        Hub {
            process: Some(process),
            api,
            _dir: dir,
        }
    }

    fn slot(&self, id: u32) -> Value {
        get_json(self.api, &format!("/api/slots/{id}"))
    }

    fn state(&self, id: u32) -> String {
        self.slot(id)["fsm_state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn wait_state(&self, id: u32, want: &str) -> Value {
        wait_for(&format!("slot {id} {want}"), WAIT, || {
            let slot = self.slot(id);
            (slot["fsm_state"] == want).then_some(slot)
        })
    }

    fn terminate(&mut self) {
        if let Some(process) = self.process.take() {
            let status = process.terminate();
            assert!(status.success(), "hubd exited with {status}");
        }
    }
}

fn numbers(slots: &[Slot]) -> Vec<String> {
    let mut numbers: Vec<String> = slots.iter().map(|s| s.2.to_owned()).collect();
    numbers.sort();
    numbers
}

/// Waits until every slot is READY, checking on the way that a READY slot's
/// number is always in Kamailio's location table (READY follows SIP).
fn wait_all_ready_and_registered(hub: &Hub, kamailio: &Kamailio, slots: &[Slot]) {
    wait_for("every slot READY and registered", WAIT, || {
        let registered = kamailio.registered_aors();
        let mut all = true;
        for (id, _, number, _) in slots {
            if hub.state(*id) == "READY" {
                // Registered before READY: the AOR was saved before the 200 left.
                let now = kamailio.registered_aors();
                assert!(
                    registered.contains(&(*number).to_owned())
                        || now.contains(&(*number).to_owned()),
                    "slot {id} READY but {number} not in ul.dump: {now:?}"
                );
            } else {
                all = false;
            }
        }
        (all && registered == numbers(slots)).then_some(())
    });
}

/// The challenge Kamailio answers a bare REGISTER with.
fn challenge(kamailio: &Kamailio) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout set");
    let local = socket.local_addr().expect("bound");
    let register = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKprobe;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:9999@127.0.0.1>;tag=p\r\nTo: <sip:9999@127.0.0.1>\r\n\
         Call-ID: probe\r\nCSeq: 1 REGISTER\r\nContact: <sip:9999@{local}>\r\nContent-Length: 0\r\n\r\n"
    );
    socket
        .send_to(register.as_bytes(), kamailio.addr())
        .expect("sent");
    let mut buffer = [0u8; 4096];
    let n = socket.recv(&mut buffer).expect("Kamailio answers");
    let Ok(Message::Response(response)) = message::parse(&buffer[..n]) else {
        panic!(
            "not a SIP response: {:?}",
            String::from_utf8_lossy(&buffer[..n])
        );
    };
    assert_eq!(response.status, 401);
    response
        .headers
        .get("WWW-Authenticate")
        .expect("a challenge")
        .to_owned()
}

fn registers_every_slot(qop: bool) {
    let kamailio = Kamailio::start(KamailioOptions {
        qop,
        ..KamailioOptions::default()
    });
    let challenge = challenge(&kamailio);
    assert_eq!(challenge.contains("qop=\"auth\""), qop, "{challenge}");
    let mut hub = Hub::start(&[kamailio.addr()], SLOTS);
    wait_all_ready_and_registered(&hub, &kamailio, SLOTS);
    let bindings = kamailio.ul_dump();
    assert_eq!(bindings.len(), SLOTS.len(), "{bindings:?}");
    for binding in &bindings {
        assert!(
            binding
                .contact
                .starts_with(&format!("sip:{}@127.0.0.1:", binding.aor)),
            "{binding:?}"
        );
        assert!(binding.expires.is_some_and(|e| e <= 10), "{binding:?}");
    }
    hub.terminate();
}

#[test]
fn every_slot_registers_with_a_qop_challenge() {
    registers_every_slot(true);
}

#[test]
fn every_slot_registers_with_a_challenge_without_qop() {
    registers_every_slot(false);
}

#[test]
fn the_hub_registers_again_after_kamailio_restarts() {
    let mut kamailio = Kamailio::start(KamailioOptions::default());
    let mut hub = Hub::start(&[kamailio.addr()], SLOTS);
    wait_all_ready_and_registered(&hub, &kamailio, SLOTS);
    kamailio.restart();
    assert!(
        kamailio.ul_dump().is_empty(),
        "a restarted Kamailio starts empty"
    );
    // Refreshes come at half of the 10 s expiry.
    wait_for("every slot registered again", WAIT, || {
        (kamailio.registered_aors() == numbers(SLOTS)).then_some(())
    });
    for (id, ..) in SLOTS {
        hub.wait_state(*id, "READY");
    }
    hub.terminate();
}

#[test]
fn a_registered_slot_sends_keepalives_that_kamailio_takes_as_nothing() {
    let kamailio = Kamailio::start(KamailioOptions::default());
    let slots = &SLOTS[..1];
    // Refresh at 30 s, a keep-alive every 5 s in between.
    let mut hub = Hub::with_timing(
        &[kamailio.addr()],
        slots,
        "expires_s = 60\nkeepalive_s = 5\n",
    );
    wait_all_ready_and_registered(&hub, &kamailio, slots);
    let registers = metric(hub.api, "hubd_sip_register_sent_total");
    assert_eq!(
        registers,
        Some(2.0),
        "the bare REGISTER and the answer to the challenge"
    );
    wait_for("two keep-alives sent", WAIT, || {
        metric(hub.api, "hubd_sip_keepalives_sent_total").filter(|sent| *sent >= 2.0)
    });
    // Kamailio took them as nothing: the binding stands, no REGISTER was
    // needed in between, the slot stayed READY.
    assert_eq!(kamailio.registered_aors(), numbers(slots));
    assert_eq!(metric(hub.api, "hubd_sip_register_sent_total"), registers);
    assert_eq!(hub.state(1), "READY");
    hub.terminate();
}

#[test]
fn a_dead_primary_registrar_fails_over_to_the_secondary() {
    let kamailio = Kamailio::start(KamailioOptions::default());
    // A port nobody listens on: bound, then closed.
    let dead = {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a port");
        socket.local_addr().expect("bound")
    };
    let mut hub = Hub::start(&[dead, kamailio.addr()], SLOTS);
    wait_all_ready_and_registered(&hub, &kamailio, SLOTS);
    hub.terminate();
}

#[test]
fn a_wrong_password_faults_that_slot_only_without_a_retry_storm() {
    let kamailio = Kamailio::start(KamailioOptions::default());
    let slots: &[Slot] = &[
        (1, "auto", "6001", Some("secret")),
        (2, "mf", "7001", Some("wrong")),
        (3, "ls", "8001", Some("secret")),
        (4, "ls", "8002", None),
    ];
    let mut hub = Hub::start(&[kamailio.addr()], slots);
    let wrong = hub.wait_state(2, "FAULT");
    let reason = wrong["fault_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("authentication failed 3 times") && reason.contains("7001"),
        "{reason}"
    );
    let none = hub.wait_state(4, "FAULT");
    let reason = none["fault_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no SIP password is configured for slot 4"),
        "{reason}"
    );
    hub.wait_state(1, "READY");
    hub.wait_state(3, "READY");
    // One plain REGISTER and one answer per refused attempt (plus a few
    // retransmissions at most): no tight loop.
    let count = kamailio.register_count("7001");
    assert!((4..=8).contains(&count), "7001 sent {count} REGISTERs");
    assert_eq!(kamailio.registered_aors(), vec!["6001", "8001"]);
    hub.terminate();
}

#[test]
fn sigterm_unregisters_every_slot() {
    let kamailio = Kamailio::start(KamailioOptions::default());
    let mut hub = Hub::start(&[kamailio.addr()], SLOTS);
    wait_all_ready_and_registered(&hub, &kamailio, SLOTS);
    hub.terminate();
    // hubd exits only after its slots unregistered (or gave up waiting).
    let left = kamailio.ul_dump();
    assert!(
        left.is_empty(),
        "still registered after hubd stopped: {left:?}"
    );
}
