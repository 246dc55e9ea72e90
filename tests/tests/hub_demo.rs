//! `hubd demo` as a person runs it: 32 simulated slots come up, one slot's
//! driver panics without disturbing the others, operators restart slots
//! through the local API, and bad requests get JSON errors, never a 500.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use vss_tests::{HubProcess, get, get_json, metric, open_store, post, wait_for};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn slots(addr: SocketAddr) -> Vec<Value> {
    get_json(addr, "/api/slots")
        .as_array()
        .cloned()
        .expect("/api/slots is an array")
}

fn states(addr: SocketAddr) -> Vec<(u64, String)> {
    slots(addr)
        .iter()
        .map(|s| {
            (
                s["id"].as_u64().unwrap_or(0),
                s["fsm_state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn all_ready(addr: SocketAddr, n: usize) -> Option<()> {
    let states = states(addr);
    (states.len() == n && states.iter().all(|(_, s)| s == "READY")).then_some(())
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn demo_brings_32_slots_to_ready_with_the_numbering_plan() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, addr) = HubProcess::demo(dir.path(), &["--slots", "32"]);
    wait_for("32 slots READY", READY_TIMEOUT, || all_ready(addr, 32));

    let slots = slots(addr);
    let numbers = |kind: &str| -> Vec<String> {
        slots
            .iter()
            .filter(|s| s["device_type"] == kind)
            .map(|s| s["internal_sip_number"].as_str().unwrap().to_owned())
            .collect()
    };
    let expect =
        |first: u32, n: u32| -> Vec<String> { (first..first + n).map(|x| x.to_string()).collect() };
    assert_eq!(numbers("auto"), expect(6001, 16));
    assert_eq!(numbers("mf"), expect(7001, 8));
    assert_eq!(numbers("ls"), expect(8001, 8));
    for s in &slots {
        assert_eq!(s["status"], "free", "{s}");
        assert!(s["name"].as_str().unwrap().starts_with("Slot "), "{s}");
        assert!(s["fault_reason"].is_null(), "{s}");
    }

    assert_eq!(metric(addr, "hubd_slots{state=\"READY\"}"), Some(32.0));
    assert_eq!(metric(addr, "hubd_ready"), Some(1.0));
    assert!(metric(addr, "hubd_slot_transitions_total{to=\"READY\"}").unwrap() >= 32.0);
    let health = get_json(addr, "/health");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["slots"]["READY"], 32);

    // Every transition is in the store, each with its own outbox entry.
    let db = open_store(dir.path());
    for id in 1..=32u32 {
        let path: Vec<String> = db
            .prepare("SELECT to_state FROM slot_transitions WHERE slot_id = ?1 ORDER BY id")
            .unwrap()
            .query_map([id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(path, ["ASSIGNED", "REGISTERING", "READY"], "slot {id}");
    }
    let outboxed = count(
        &db,
        "SELECT count(DISTINCT t.outbox_seq) FROM slot_transitions t
         JOIN outbox o ON o.seq = t.outbox_seq AND o.kind = 'slot_transition'",
    );
    assert_eq!(count(&db, "SELECT count(*) FROM slot_transitions"), 96);
    assert_eq!(outboxed, 96);

    let status = std::process::Command::new(vss_tests::hubd_bin())
        .args(["status", "--api", &addr.to_string()])
        .output()
        .unwrap();
    assert!(status.status.success());
    let table = String::from_utf8(status.stdout).unwrap();
    assert_eq!(
        table.lines().filter(|l| l.contains("READY")).count(),
        32,
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("8008") && l.contains("LS")),
        "{table}"
    );

    assert!(hub.terminate().success());
}

#[test]
fn a_panicking_driver_faults_only_its_own_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, addr) = HubProcess::demo(
        dir.path(),
        &[
            "--slots",
            "32",
            "--panic-slot",
            "7",
            "--panic-after-ms",
            "300",
        ],
    );
    wait_for("slot 7 restarted after a fault", READY_TIMEOUT, || {
        (metric(
            addr,
            "hubd_slot_restarts_total{slot=\"7\",reason=\"fault\"}",
        )? >= 1.0)
            .then_some(())
    });
    let slot7 = get_json(addr, "/api/slots/7");
    let reason = slot7["last_fault"].as_str().unwrap_or_default();
    assert!(
        reason.contains("driver panicked: simulated driver panic on slot 7"),
        "slot 7: {slot7}"
    );
    // The 31 others stay READY, never restarted.
    wait_for("the other 31 slots READY", READY_TIMEOUT, || {
        states(addr)
            .iter()
            .filter(|(id, _)| *id != 7)
            .all(|(_, s)| s == "READY")
            .then_some(())
    });
    for id in (1..=32).filter(|id| *id != 7) {
        let series = format!("hubd_slot_restarts_total{{slot=\"{id}\",reason=\"fault\"}}");
        assert_eq!(metric(addr, &series), Some(0.0), "{series}");
    }

    // The store holds the fault with the panic message, the recovery, and the alert.
    let db = open_store(dir.path());
    let fault: String = db
        .query_row(
            "SELECT reason FROM slot_transitions
             WHERE slot_id = 7 AND from_state = 'READY' AND to_state = 'FAULT' ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        fault.contains("simulated driver panic on slot 7"),
        "{fault}"
    );
    let recovered = count(
        &db,
        "SELECT count(*) FROM slot_transitions WHERE slot_id = 7 AND from_state = 'FAULT' AND to_state = 'IDLE'",
    );
    assert!(recovered >= 1);
    let alerts = count(
        &db,
        "SELECT count(*) FROM outbox WHERE kind = 'alert' AND payload LIKE '%slot 7 (7002) FAULT%'",
    );
    assert!(alerts >= 1, "an alert for slot 7 is in the outbox");
    let other_faults = count(
        &db,
        "SELECT count(*) FROM slot_transitions WHERE slot_id <> 7 AND to_state = 'FAULT'",
    );
    assert_eq!(other_faults, 0);
    assert!(hub.terminate().success());
}

#[test]
fn operators_restart_slots_and_bad_requests_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, addr) = HubProcess::demo(dir.path(), &["--slots", "4"]);
    wait_for("4 slots READY", READY_TIMEOUT, || all_ready(addr, 4));

    let (status, body) = post(addr, "/api/slots/3/restart");
    assert_eq!(status, 202, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["slot_id"], 3);
    wait_for("slot 3 restarted by the operator", READY_TIMEOUT, || {
        (metric(
            addr,
            "hubd_slot_restarts_total{slot=\"3\",reason=\"operator\"}",
        )? >= 1.0)
            .then_some(())
    });
    wait_for("slot 3 READY again", READY_TIMEOUT, || all_ready(addr, 4));
    let db = open_store(dir.path());
    let path: Vec<(String, String)> = db
        .prepare("SELECT to_state, event FROM slot_transitions WHERE slot_id = 3 ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let to: Vec<&str> = path.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        to,
        [
            "ASSIGNED",
            "REGISTERING",
            "READY",
            "IDLE",
            "ASSIGNED",
            "REGISTERING",
            "READY"
        ]
    );
    assert_eq!(path[3].1, "released");

    let error_of = |(status, body): (u16, String)| -> (u16, String) {
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let code = json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{body}");
        (status, code)
    };
    type Case = ((u16, String), (u16, &'static str));
    let cases: [Case; 7] = [
        (get(addr, "/api/slots/99"), (404, "slot_not_found")),
        (post(addr, "/api/slots/99/restart"), (404, "slot_not_found")),
        (get(addr, "/api/slots/abc"), (400, "invalid_slot_id")),
        (get(addr, "/api/slots/0"), (400, "invalid_slot_id")),
        (
            get(addr, "/api/slots/99999999999"),
            (400, "invalid_slot_id"),
        ),
        (
            post(addr, "/api/slots/-1/restart"),
            (400, "invalid_slot_id"),
        ),
        (get(addr, "/api/nothing-here"), (404, "not_found")),
    ];
    for (got, (status, code)) in cases {
        let (got_status, got_code) = error_of(got);
        assert_eq!((got_status, got_code.as_str()), (status, code));
    }
    assert_eq!(get(addr, "/health/live").0, 200);
    assert!(hub.terminate().success());
}

#[test]
fn failing_devices_fault_and_recover_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, addr) = HubProcess::demo(
        dir.path(),
        &[
            "--slots",
            "8",
            "--failure-rate",
            "0.3",
            "--seed",
            "7",
            "--latency-ms",
            "10",
        ],
    );
    let restarts = || -> f64 {
        (1..=8)
            .filter_map(|id| {
                metric(
                    addr,
                    &format!("hubd_slot_restarts_total{{slot=\"{id}\",reason=\"fault\"}}"),
                )
            })
            .sum()
    };
    wait_for("a device fault and restart", READY_TIMEOUT, || {
        (restarts() >= 1.0).then_some(())
    });
    wait_for("all 8 slots READY after recovery", READY_TIMEOUT, || {
        all_ready(addr, 8)
    });
    let db = open_store(dir.path());
    let faults = count(
        &db,
        "SELECT count(*) FROM slot_transitions WHERE to_state = 'FAULT' AND reason LIKE '%simulated failure%'",
    );
    assert!(faults >= 1);
    assert!(hub.terminate().success());
}

/// Prometheus's own linter accepts what `/metrics` serves.
#[test]
fn metrics_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, addr) = HubProcess::demo(dir.path(), &["--slots", "3"]);
    wait_for("3 slots READY", READY_TIMEOUT, || all_ready(addr, 3));
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; .ci/run installs it)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for series in [
        "hubd_slots{state=\"READY\"} 3",
        "hubd_outbox_depth ",
        "hubd_store_commit_seconds_count ",
        "hubd_slot_restarts_total{slot=\"3\",reason=\"fault\"} 0",
    ] {
        assert!(body.contains(series), "missing {series}");
    }
    assert!(hub.terminate().success());
}

/// `--log-format json`: one JSON object per line, slot lines carry the slot's span.
#[test]
fn json_logs_carry_the_slot_span() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("hubd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let data = dir.path().join("data");
    let (hub, addr) =
        HubProcess::demo_with_stderr(&data, &["--slots", "2", "--log-format", "json"], log);
    wait_for("2 slots READY", READY_TIMEOUT, || all_ready(addr, 2));
    assert!(hub.terminate().success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ready_of_slot_2 = lines.iter().find(|l| {
        l["fields"]["message"] == "slot transition"
            && l["fields"]["to"] == "READY"
            && l["span"]["id"] == 2
    });
    let line = ready_of_slot_2.unwrap_or_else(|| panic!("no READY line for slot 2 in {text}"));
    assert_eq!(line["span"]["number"], "6002");
    assert_eq!(line["span"]["name"], "slot");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "hubd stopped")
    );
}
