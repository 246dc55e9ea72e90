//! Calls bridged by the real `hubd` between SIP/RTP and an emulated GSM
//! modem (issue 6, F-09): Kamailio (the repo's config) as registrar and
//! proxy, hubd with one AUTO slot on a pty modem registered as 6001, and a
//! sipp UAC calling 6001 with `X-VSS-Dial` and an RTP tone. The modem must
//! see `ATD<number>;` and hear the tone on its voice port; the slot goes
//! READY → CALLING → ACTIVE_CALL → POSTCALL and writes a CDR. F-03: a call
//! ringing on the modem reaches a sipp UAS (the agents' queue, 6201) through
//! the slot, and the modem's caller hanging up ends it.
//!
//! Waits are for observable states with deadlines; nothing sleeps.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use vss_tests::kamailio::{Kamailio, KamailioOptions};
use vss_tests::modem::{Callee, EmulatedModem, Identity, ModemConfig, Profile};
use vss_tests::sipp::{Sipp, SippConfig, Tone};
use vss_tests::{HubProcess, get_json, open_store, tone, wait_for};

const PASSWORD: &str = "secret";
const CALLER: &str = "6101";
const SLOT: &str = "6001";
const NUMBER: &str = "+79161234567";
const AGENT: &str = "6201";

/// Kamailio, one emulated modem and a hub whose slot 1 (6001) is on it.
struct Bed {
    kamailio: Kamailio,
    modem: EmulatedModem,
    hub: Option<HubProcess>,
    api: SocketAddr,
    dir: TempDir,
}

impl Bed {
    /// With `destination`, calls ringing on the modem go to that SIP user.
    fn start(callee: Callee, destination: Option<&str>) -> Bed {
        let kamailio = Kamailio::start(KamailioOptions {
            qop: true,
            password: PASSWORD.to_owned(),
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let tty = dir.path().join("tty");
        std::fs::create_dir_all(&tty).expect("tty dir");
        let mut config = ModemConfig::new(
            Profile::HuaweiE1550,
            Identity::from_seed(61, 0, Profile::HuaweiE1550),
        );
        config.callee = callee;
        let modem = EmulatedModem::start(config, None).expect("modem starts");
        let paths = modem.paths().expect("ports open");
        for (suffix, target) in [("at", &paths.at), ("voice", &paths.voice)] {
            std::os::unix::fs::symlink(target, tty.join(format!("port0-{suffix}")))
                .expect("symlink");
        }
        let destination = destination
            .map(|user| format!("incoming_destination = \"sip:{user}@{}\"", kamailio.addr()))
            .unwrap_or_default();
        let toml = format!(
            r#"
[hub]
id = "hub-sip-calls"
name = "SIP calls test hub"
data_dir = "{data}"

[api]
listen = "127.0.0.1:0"

[supervisor]
health_check_interval_ms = 1000
device_timeout_ms = 15000
wrap_up_ms = 200

[modems]
scan = ["{tty}/*-at"]
probe_timeout_ms = 500
poll_interval_ms = 1000
soft_reset_interval_ms = 0
reboot_interval_ms = 0
power_cycle_interval_ms = 0

[sip]
registrars = ["{registrar}"]
listen = "127.0.0.1:0"
expires_s = 60
t1_ms = 100
{destination}

[[slots]]
id = 1
kind = "auto"
sip_password = "{PASSWORD}"
recording = "all"
driver = {{ type = "at_modem", imei = "{imei}" }}
"#,
            data = dir.path().join("data").display(),
            tty = tty.display(),
            registrar = kamailio.addr(),
            imei = modem.imei(),
        );
        let config = dir.path().join("hubd.toml");
        std::fs::write(&config, toml).expect("config written");
        let (hub, api) = HubProcess::run_config(Path::new(&config));
        let bed = Bed {
            kamailio,
            modem,
            hub: Some(hub),
            api,
            dir,
        };
        bed.wait_state(&["READY"], Duration::from_secs(60));
        wait_for("6001 registered", Duration::from_secs(20), || {
            bed.kamailio
                .registered_aors()
                .contains(&SLOT.to_owned())
                .then_some(())
        });
        bed
    }

    fn wait_state(&self, want: &[&str], timeout: Duration) -> Value {
        wait_for(&format!("slot 1 in {want:?}"), timeout, || {
            let slot = get_json(self.api, "/api/slots/1");
            want.contains(&slot["fsm_state"].as_str().unwrap_or_default())
                .then_some(slot)
        })
    }

    fn cdrs(&self) -> Vec<Value> {
        let db = open_store(&self.dir.path().join("data"));
        let mut stmt = db
            .prepare("SELECT payload FROM outbox WHERE kind = 'cdr' ORDER BY seq")
            .expect("outbox query");
        stmt.query_map([], |row| row.get::<_, String>(0))
            .expect("outbox rows")
            .map(|p| serde_json::from_str(&p.expect("payload")).expect("JSON payload"))
            .collect()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        drop(self.hub.take());
    }
}

#[test]
fn sipp_calls_slot_6001_which_dials_on_its_modem_and_the_tone_arrives() {
    let bed = Bed::start(
        Callee::Answers {
            after: Duration::from_millis(300),
            hangs_up_after: None,
        },
        None,
    );
    let uac = Sipp::run(
        SippConfig::uac("uac_call_dial.xml", bed.kamailio.addr(), SLOT)
            .auth(CALLER, PASSWORD)
            .key("dial", NUMBER)
            .tone(Tone::default())
            .pause_ms(2500),
    );
    uac.assert_succeeded(1, "the caller");
    // The slot dialled the number the INVITE carried.
    let dialled = format!("ATD{NUMBER};");
    let commands = bed.modem.log().commands;
    assert!(
        commands.iter().any(|c| c == &dialled),
        "no {dialled} among {commands:?}"
    );
    // sipp's 1 kHz tone reached the modem's voice port.
    let samples = tone::samples_from_s16le(&bed.modem.voice_received());
    let (frequency, _) = tone::dominant_frequency(&samples, 8000)
        .unwrap_or_else(|| panic!("no audio on the voice port ({} samples)", samples.len()));
    assert!(
        (frequency - 1000.0).abs() < 60.0,
        "the voice port heard {frequency} Hz"
    );
    // The caller's BYE hung the modem up; the CDR is written.
    bed.wait_state(&["POSTCALL", "READY"], Duration::from_secs(10));
    let cdr = wait_for("the call's CDR", Duration::from_secs(10), || {
        bed.cdrs().into_iter().next()
    });
    assert_eq!(cdr["remote_number"], NUMBER, "{cdr}");
    assert!(cdr["answered_at_ms"].is_number(), "{cdr}");
}

#[test]
fn a_call_ringing_on_the_modem_reaches_a_sipp_uas_through_the_slot() {
    let bed = Bed::start(Callee::default(), Some(AGENT));
    let uas = Sipp::listen(SippConfig {
        service: AGENT.to_owned(),
        ..SippConfig::uas("uas_answer.xml")
    });
    Sipp::register(bed.kamailio.addr(), AGENT, PASSWORD, uas.addr().port(), 60);
    bed.modem
        .incoming_call("+4930123456")
        .expect("the call rings");
    // The agent answered: the slot answered the modem's call.
    bed.wait_state(&["ACTIVE_CALL"], Duration::from_secs(15));
    // The modem's caller hangs up: the slot's BYE ends the agent's call.
    assert!(bed.modem.remote_hangup(), "a call to hang up");
    uas.wait().assert_succeeded(1, "the agent");
    bed.wait_state(&["POSTCALL", "READY"], Duration::from_secs(10));
}
