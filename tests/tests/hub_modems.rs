//! AUTO slots end to end: the real `hubd` binary driving emulated GSM
//! modems on ptys (`vss_tests::modem`) through its `at_modem` driver.
//!
//! The hub sees each modem's ports only under names that carry no identity
//! (`<dir>/tty/portN-at`, `portN-voice`, numbered in another order than the
//! slots), so every slot is bound by the IMEI the modem answers with. A
//! renumbering test moves the names around, as a USB re-enumeration does.
//!
//! Waits are for observable states with deadlines; nothing sleeps.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use vss_tests::modem::{
    Callee, EmulatedModem, Garbage, Identity, ModemConfig, ModemPaths, Profile, UssdAnswer, codec,
};
use vss_tests::{HubProcess, get_json, metric, open_store, post_json, wait_for};

const READY_WAIT: Duration = Duration::from_secs(60);

/// Emulated modems, the names the hub sees them by, and the hub.
struct ModemHub {
    modems: Vec<EmulatedModem>,
    tty_dir: PathBuf,
    hub: Option<HubProcess>,
    api: SocketAddr,
    dir: TempDir,
}

/// Points `<tty_dir>/port<n>-at` and `-voice` at `paths`.
fn link(tty_dir: &Path, n: usize, paths: &ModemPaths) {
    for (suffix, target) in [("at", &paths.at), ("voice", &paths.voice)] {
        let link = tty_dir.join(format!("port{n}-{suffix}"));
        let tmp = tty_dir.join(format!(".port{n}-{suffix}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp).expect("symlink");
        std::fs::rename(&tmp, &link).expect("rename link");
    }
}

fn unlink(tty_dir: &Path, n: usize) {
    for suffix in ["at", "voice"] {
        let _ = std::fs::remove_file(tty_dir.join(format!("port{n}-{suffix}")));
    }
}

impl ModemHub {
    /// Starts `profiles.len()` modems (tweaked by `tweak`) and a hub with one
    /// AUTO slot per modem (slot i+1 ↔ modem i), ports named in reverse order.
    fn start(
        seed: u64,
        profiles: &[Profile],
        extra_config: &str,
        slot_extra: impl Fn(usize) -> String,
        tweak: impl Fn(usize, &mut ModemConfig),
    ) -> ModemHub {
        let dir = tempfile::tempdir().expect("temp dir");
        let tty_dir = dir.path().join("tty");
        std::fs::create_dir_all(&tty_dir).expect("tty dir");
        let count = profiles.len();
        let mut modems = Vec::new();
        for (i, profile) in profiles.iter().enumerate() {
            let index = u32::try_from(i).expect("few modems");
            let mut config = ModemConfig::new(*profile, Identity::from_seed(seed, index, *profile));
            tweak(i, &mut config);
            let modem = EmulatedModem::start(config, None).expect("modem starts");
            link(&tty_dir, count - 1 - i, &modem.paths().expect("ports open"));
            modems.push(modem);
        }
        let data = dir.path().join("data");
        let mut toml = format!(
            r#"
[hub]
id = "hub-modems"
name = "Modem test hub"
data_dir = "{data}"

[api]
listen = "127.0.0.1:0"

[supervisor]
health_check_interval_ms = 1000
device_timeout_ms = 15000
wrap_up_ms = 200
restart_backoff_initial_ms = 200
restart_backoff_max_ms = 2000

[modems]
scan = ["{tty}/*-at"]
probe_timeout_ms = 500
poll_interval_ms = 1000
rebind_timeout_ms = 4000
soft_reset_interval_ms = 0
reboot_interval_ms = 0
power_cycle_interval_ms = 0
{extra_config}
"#,
            data = data.display(),
            tty = tty_dir.display(),
        );
        for (i, modem) in modems.iter().enumerate() {
            toml.push_str(&format!(
                r#"
[[slots]]
id = {id}
kind = "auto"
driver = {{ type = "at_modem", imei = "{imei}" {extra} }}
"#,
                id = i + 1,
                imei = modem.imei(),
                extra = slot_extra(i),
            ));
        }
        let config = dir.path().join("hubd.toml");
        std::fs::write(&config, toml).expect("config written");
        let (hub, api) = HubProcess::run_config(&config);
        ModemHub {
            modems,
            tty_dir,
            hub: Some(hub),
            api,
            dir,
        }
    }

    fn slot(&self, id: usize) -> Value {
        get_json(self.api, &format!("/api/slots/{id}"))
    }

    fn state(&self, id: usize) -> String {
        self.slot(id)["fsm_state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn wait_state(&self, id: usize, want: &[&str], timeout: Duration) -> Value {
        wait_for(&format!("slot {id} in {want:?}"), timeout, || {
            let slot = self.slot(id);
            want.contains(&slot["fsm_state"].as_str().unwrap_or_default())
                .then_some(slot)
        })
    }

    fn wait_all_ready(&self) {
        for id in 1..=self.modems.len() {
            self.wait_state(id, &["READY"], READY_WAIT);
        }
    }

    /// Outbox payloads of `kind`, oldest first.
    fn outbox(&self, kind: &str) -> Vec<Value> {
        let db = open_store(&self.dir.path().join("data"));
        let mut stmt = db
            .prepare("SELECT payload FROM outbox WHERE kind = ?1 ORDER BY seq")
            .expect("outbox query");
        stmt.query_map([kind], |row| row.get::<_, String>(0))
            .expect("outbox rows")
            .map(|p| serde_json::from_str(&p.expect("payload")).expect("JSON payload"))
            .collect()
    }

    fn cdrs(&self) -> Vec<Value> {
        self.outbox("cdr")
    }
}

impl Drop for ModemHub {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.take() {
            drop(hub);
        }
    }
}

#[test]
fn eight_modems_bind_by_imei_call_both_ways_sms_and_ussd() {
    let profiles = [
        Profile::HuaweiE1550,
        Profile::HuaweiE173,
        Profile::HuaweiE1550,
        Profile::QuectelEc25,
        Profile::HuaweiE1550,
        Profile::HuaweiE173,
        Profile::HuaweiE1550,
        Profile::QuectelEc25,
    ];
    let h = ModemHub::start(
        11,
        &profiles,
        "",
        |_| String::new(),
        |_, config| {
            config.callee = Callee::Answers {
                after: Duration::from_millis(300),
                hangs_up_after: Some(Duration::from_millis(1500)),
            };
        },
    );
    h.wait_all_ready();

    // Every slot is bound to the modem with its IMEI, though the port names
    // run the other way round.
    for (i, modem) in h.modems.iter().enumerate() {
        let slot = h.slot(i + 1);
        let device = slot["device"].as_str().unwrap_or_default();
        assert!(
            device.contains(modem.imei()),
            "slot {} bound to {device}",
            i + 1
        );
        let port = format!("port{}-at", profiles.len() - 1 - i);
        assert!(
            device.contains(&port),
            "slot {} should be on {port}: {device}",
            i + 1
        );
    }

    // An outgoing call: ATD → ^ORIG → ^CONF → ^CONN → audio → ^CEND.
    let frames_before =
        metric(h.api, "hubd_voice_frames_total{direction=\"from_device\"}").unwrap_or(0.0);
    let (status, body) = post_json(
        h.api,
        "/api/slots/1/dial",
        &json!({ "number": "+79161234567" }),
    );
    assert_eq!(status, 200, "{body}");
    let call_id = serde_json::from_str::<Value>(&body).expect("JSON")["call_id"]
        .as_str()
        .expect("call id")
        .to_owned();
    h.wait_state(1, &["ACTIVE_CALL"], Duration::from_secs(10));
    // Audio flows both ways while the call is up.
    wait_for(
        "audio frames from the modem",
        Duration::from_secs(10),
        || {
            (metric(h.api, "hubd_voice_frames_total{direction=\"from_device\"}").unwrap_or(0.0)
                >= frames_before + 10.0)
                .then_some(())
        },
    );
    wait_for("audio frames to the modem", Duration::from_secs(10), || {
        (h.modems[0].stats().voice_bytes_in >= 10 * 320).then_some(())
    });
    assert_eq!(
        h.modems[0].stats().voice_bytes_in % 320,
        0,
        "whole frames only"
    );
    // The callee hangs up; the CDR carries the modem's end cause.
    h.wait_state(1, &["POSTCALL", "READY"], Duration::from_secs(10));
    let cdr = wait_for("the outgoing call's CDR", Duration::from_secs(10), || {
        h.cdrs()
            .into_iter()
            .find(|c| c["call_id"] == call_id.as_str())
    });
    assert_eq!(cdr["direction"], "outbound");
    assert_eq!(cdr["remote_number"], "+79161234567");
    assert_eq!(cdr["end_cause"], "normal_clearing");
    let answered = cdr["answered_at_ms"].as_i64().expect("answered");
    assert!(cdr["ended_at_ms"].as_i64().expect("ended") >= answered);
    assert!(
        h.modems[0]
            .log()
            .commands
            .iter()
            .any(|c| c == "ATD+79161234567;"),
        "the modem was asked to dial"
    );

    // A busy number: the modem's cause reaches the CDR.
    h.wait_state(1, &["READY"], Duration::from_secs(10));
    h.modems[0].set_callee(Callee::Busy {
        after: Duration::from_millis(200),
    });
    let (status, body) = post_json(
        h.api,
        "/api/slots/1/dial",
        &json!({ "number": "+79160000000" }),
    );
    assert_eq!(status, 200, "{body}");
    let busy = wait_for("the busy call's CDR", Duration::from_secs(10), || {
        h.cdrs()
            .into_iter()
            .find(|c| c["remote_number"] == "+79160000000")
    });
    assert_eq!(busy["end_cause"], "user_busy");
    assert!(busy.get("answered_at_ms").is_none_or(Value::is_null));

    // An incoming call is seen as one, with the caller's number.
    h.modems[2]
        .incoming_call("+74951112233")
        .expect("call rings");
    h.wait_state(3, &["CALLING"], Duration::from_secs(10));
    // The operator answers it; audio flows; DTMF reaches the network.
    let (status, body) = post_json(h.api, "/api/slots/3/answer", &json!({}));
    assert_eq!(status, 200, "{body}");
    h.wait_state(3, &["ACTIVE_CALL"], Duration::from_secs(10));
    wait_for(
        "audio frames to the answered call",
        Duration::from_secs(10),
        || (h.modems[2].stats().voice_bytes_in >= 10 * 320).then_some(()),
    );
    let (status, body) = post_json(h.api, "/api/slots/3/dtmf", &json!({ "digits": "12#" }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.modems[2].log().dtmf, "12#");
    let (status, _) = post_json(h.api, "/api/slots/3/dtmf", &json!({ "digits": "9x" }));
    assert_eq!(status, 502, "a digit DTMF cannot carry is refused");
    assert!(h.modems[2].remote_hangup(), "the caller hangs up");
    let inbound = wait_for("the incoming call's CDR", Duration::from_secs(10), || {
        h.cdrs()
            .into_iter()
            .find(|c| c["slot_id"] == 3 && c["direction"] == "inbound")
    });
    assert_eq!(inbound["remote_number"], "+74951112233");
    assert!(inbound["answered_at_ms"].is_i64(), "answered: {inbound}");
    let (status, _) = post_json(h.api, "/api/slots/3/answer", &json!({}));
    assert_eq!(status, 409, "nothing rings any more");

    // SMS in: Cyrillic text in UCS-2 becomes an outbox event.
    let text_in = "Привет! Ваш код: 4711";
    h.modems[3]
        .incoming_sms_text("+79990001122", text_in)
        .expect("SMS delivered");
    let sms = wait_for(
        "the received SMS in the outbox",
        Duration::from_secs(10),
        || h.outbox("sms").into_iter().find(|s| s["slot_id"] == 4),
    );
    assert_eq!(sms["direction"], "inbound");
    assert_eq!(sms["remote_number"], "+79990001122");
    assert_eq!(sms["text"], text_in);

    // SMS out in UCS-2.
    let text_out = "Добрый день, ждём вас завтра";
    let (status, body) = post_json(
        h.api,
        "/api/slots/5/sms",
        &json!({ "to": "+79161234567", "text": text_out }),
    );
    assert_eq!(status, 200, "{body}");
    let sent = h.modems[4].log().sent_sms;
    assert_eq!(sent.len(), 1, "one part");
    assert!(
        sent[0].pdu.contains(&codec::ucs2_hex(text_out)),
        "the PDU carries the text in UCS-2: {}",
        sent[0].pdu
    );

    // USSD: request and answer.
    h.modems[5].set_ussd_answer(UssdAnswer::ucs2("Баланс: 150,25 р."));
    let (status, body) = post_json(h.api, "/api/slots/6/ussd", &json!({ "request": "*100#" }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["reply"],
        "Баланс: 150,25 р."
    );
    assert_eq!(
        h.modems[5]
            .log()
            .ussd_requests
            .last()
            .and_then(|r| r.decoded.clone())
            .as_deref(),
        Some("*100#")
    );

    // Bad input gets clear answers.
    let (status, _) = post_json(h.api, "/api/slots/2/dial", &json!({ "number": "12;ATZ" }));
    assert_eq!(status, 502, "an unsafe number is refused by the driver");
    let (status, _) = post_json(h.api, "/api/slots/2/dial", &json!({ "nummer": "1" }));
    assert_eq!(status, 400);
    let (status, _) = post_json(h.api, "/api/slots/2/hangup", &json!({}));
    assert_eq!(status, 409, "no call to hang up");
    let (status, _) = post_json(h.api, "/api/slots/99/dial", &json!({ "number": "1" }));
    assert_eq!(status, 404);

    // Every slot is still READY.
    for id in 1..=profiles.len() {
        h.wait_state(id, &["READY"], Duration::from_secs(10));
    }
}

#[test]
fn faults_climb_the_ladder_and_back_while_other_slots_keep_working() {
    let profiles = [Profile::HuaweiE1550; 4];
    let h = ModemHub::start(23, &profiles, "", |_| String::new(), |_, _| {});
    h.wait_all_ready();

    // Garbage on the line: the engine resyncs; the slot stays in service.
    h.modems[0].inject_garbage(Garbage::InvalidUtf8);
    // A modem that stops answering for a while: out of service, resynced, back.
    h.modems[1].set_silent(true);
    h.wait_state(2, &["REGISTERING"], Duration::from_secs(15));
    h.modems[1].set_silent(false);
    h.wait_state(2, &["READY"], Duration::from_secs(20));
    let steps: Vec<Value> = h.outbox("device_recovery");
    assert!(
        steps
            .iter()
            .any(|s| s["slot_id"] == 2 && s["step"] == "resync"),
        "the resync step was recorded: {steps:?}"
    );

    // The modem vanishes and comes back under new tty names.
    let count = profiles.len();
    unlink(&h.tty_dir, count - 1 - 2);
    h.modems[2].vanish().expect("vanish");
    h.wait_state(3, &["REGISTERING"], Duration::from_secs(15));
    let paths = h.modems[2].reappear().expect("reappear");
    link(&h.tty_dir, 40, &paths);
    let slot = h.wait_state(3, &["READY"], Duration::from_secs(30));
    assert!(
        slot["device"]
            .as_str()
            .unwrap_or_default()
            .contains("port40-at"),
        "re-bound under the new name: {slot}"
    );
    assert!(metric(h.api, "hubd_modem_rebinds_total").unwrap_or(0.0) >= 1.0);

    // A modem that stays dead: every step, then FAULT with an alert.
    h.modems[3].set_silent(true);
    let slot = h.wait_state(4, &["FAULT"], Duration::from_secs(60));
    let reason = slot["fault_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("every recovery step") || reason.contains("no USB power control"),
        "{reason}"
    );
    let alerts = h.outbox("alert");
    assert!(
        alerts.iter().any(|a| a["slot_id"] == 4),
        "FAULT raised an alert: {alerts:?}"
    );
    let taken: Vec<String> = h
        .outbox("device_recovery")
        .into_iter()
        .filter(|s| s["slot_id"] == 4)
        .map(|s| s["step"].as_str().unwrap_or_default().to_owned())
        .collect();
    for step in ["resync", "soft_reset", "reboot"] {
        assert!(taken.iter().any(|s| s == step), "{step} in {taken:?}");
    }
    assert!(
        metric(
            h.api,
            "hubd_modem_recovery_steps_total{step=\"soft_reset\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );

    // The others never left service.
    for id in [1, 2, 3] {
        assert_eq!(h.state(id), "READY", "slot {id}");
    }
}

#[test]
fn a_hung_modem_is_power_cycled_with_uhubctl_and_returns() {
    // A fake uhubctl records its arguments; the test plays the USB hub.
    let profiles = [Profile::HuaweiE1550, Profile::HuaweiE173];
    let scripts = tempfile::tempdir().expect("temp dir");
    let record = scripts.path().join("uhubctl.calls");
    let fake = scripts.path().join("uhubctl");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", record.display()),
    )
    .expect("script");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let fake_path = fake.display().to_string();
    let h = ModemHub::start(
        31,
        &profiles,
        "",
        |i| {
            if i == 0 {
                format!(r#", power = {{ location = "1-1.4", port = 3, command = "{fake_path}" }}"#)
            } else {
                String::new()
            }
        },
        |_, _| {},
    );
    h.wait_all_ready();

    // The modem hangs for good (like the E1550 after AT+CHLD): only its
    // power switch brings it back.
    h.modems[0].set_silent(true);
    let calls = wait_for("uhubctl to be run", Duration::from_secs(60), || {
        std::fs::read_to_string(&record)
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert!(
        calls
            .lines()
            .next()
            .unwrap_or_default()
            .contains("-l 1-1.4 -p 3 -a cycle"),
        "uhubctl arguments: {calls}"
    );
    // The hub cut the power: the modem re-enumerates under new names.
    let count = profiles.len();
    unlink(&h.tty_dir, count - 1);
    let paths = h.modems[0].power_cycle().expect("power cycle");
    h.modems[0].set_silent(false);
    link(&h.tty_dir, 77, &paths);
    let slot = h.wait_state(1, &["READY"], Duration::from_secs(30));
    assert!(
        slot["device"]
            .as_str()
            .unwrap_or_default()
            .contains("port77-at"),
        "{slot}"
    );
    let steps: Vec<String> = h
        .outbox("device_recovery")
        .into_iter()
        .filter(|s| s["slot_id"] == 1)
        .map(|s| s["step"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(steps.iter().any(|s| s == "usb_power_cycle"), "{steps:?}");
    assert_eq!(h.state(2), "READY");
}
