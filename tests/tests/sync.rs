//! Hub ↔ control plane over real QUIC with mutual TLS, real processes: the
//! control plane on embedded SQLite, `hubd enroll` with a token, `hubd demo`
//! syncing its outbox. Checks enrollment (single-use token, 0600 key, pinned
//! CA), delivery exactly once across a control-plane SIGKILL while the hub
//! keeps working, slots listed by the control plane, and revocation.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use vss_tests::control_plane::{ControlPlane, request};
use vss_tests::{HubProcess, get_json, hubd_bin, post, wait_for};

fn enroll(data_dir: &Path, sync: SocketAddr, token: &str) -> Output {
    Command::new(hubd_bin())
        .args([
            "enroll",
            "--control-plane",
            &sync.to_string(),
            "--token",
            token,
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
        ])
        .output()
        .expect("hubd enroll runs")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `(seq, kind, payload)` of every event the control plane stored for `hub`.
fn delivered(cp_dir: &Path, hub: &str) -> Vec<(u64, String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        cp_dir.join("control-plane.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("control-plane.db opens");
    let mut stmt = db
        .prepare("SELECT seq, kind, payload FROM hub_events WHERE hub_id = ?1 ORDER BY seq")
        .expect("query");
    stmt.query_map([hub], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("rows decode")
}

/// `(outbox_seq, slot_id, to_state)` of every transition the hub recorded.
fn transitions(hub_dir: &Path) -> Vec<(u64, u32, String)> {
    let db = vss_tests::open_store(hub_dir);
    let mut stmt = db
        .prepare("SELECT outbox_seq, slot_id, to_state FROM slot_transitions ORDER BY outbox_seq")
        .expect("query");
    stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("rows decode")
}

fn health(api: SocketAddr) -> Value {
    get_json(api, "/health")
}

/// Every control-plane event is a distinct seq, 1..=n with no gap, and each
/// of the hub's transitions is there, at its seq, with its slot and state.
fn assert_exactly_once(events: &[(u64, String, String)], hub_transitions: &[(u64, u32, String)]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "control-plane seqs are 1..=n, each once");
    for (seq, slot, to) in hub_transitions {
        let (_, kind, payload) = &events[(*seq - 1) as usize];
        assert_eq!(kind, "slot_transition", "seq {seq}");
        let record: Value = serde_json::from_str(payload).expect("payload is JSON");
        assert_eq!(record["slot_id"], *slot, "seq {seq}: {payload}");
        assert_eq!(
            record["to"].as_str(),
            Some(to.as_str()),
            "seq {seq}: {payload}"
        );
    }
}

#[test]
fn a_hub_enrolls_once_delivers_exactly_once_across_a_control_plane_kill_and_is_revoked() {
    let cp_dir = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let cp = ControlPlane::start(cp_dir.path(), None);
    let admin = cp.login(&cp.admin.0, &cp.admin.1);
    let token = cp.hub_with_token(&admin, "Centre Sync", "hub-sync");
    assert!(token.starts_with("vss1."), "{token}");

    // A token pinned to another CA is refused by TLS, and spends nothing.
    let mut forged: Vec<&str> = token.split('.').collect();
    let other_ca = "00".repeat(32);
    forged[2] = &other_ca;
    let out = enroll(hub_dir.path(), cp.sync, &forged.join("."));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("not the one the enrollment token names"),
        "{}",
        text(&out)
    );

    let out = enroll(hub_dir.path(), cp.sync, &token);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("enrolled as hub hub-sync"),
        "{}",
        text(&out)
    );
    let key = hub_dir.path().join("sync/hub.key");
    let mode = std::fs::metadata(&key)
        .expect("hub.key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "hub.key mode");

    // The token is single-use, and a second enrollment never overwrites.
    let again = tempfile::tempdir().expect("temp dir");
    let out = enroll(again.path(), cp.sync, &token);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("token_used"), "{}", text(&out));
    let fresh = cp.enrollment_token(&admin, "hub-sync");
    let out = enroll(hub_dir.path(), cp.sync, &fresh);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already enrolled"), "{}", text(&out));

    // The hub syncs: its 4 slots reach READY on the control plane.
    let (hub, hub_api) = HubProcess::demo(hub_dir.path(), &["--slots", "4"]);
    wait_for(
        "4 READY slots on the control plane",
        Duration::from_secs(60),
        || {
            let (status, page) = request(cp.http, "GET", "/api/slots", Some(&admin), None);
            let items = page["items"].as_array()?;
            (status == 200
                && items.len() == 4
                && items.iter().all(|s| {
                    s["fsm_state"] == "READY"
                        && s["hub_id"] == "hub-sync"
                        && s["hub_online"] == true
                }))
            .then_some(())
        },
    );
    let settled = transitions(hub_dir.path());
    wait_for(
        "every transition acknowledged",
        Duration::from_secs(30),
        || {
            let acked = health(hub_api)["sync"]["acked_seq"].as_u64()?;
            (acked >= settled.last()?.0).then_some(())
        },
    );

    // SIGKILL the control plane; the hub goes on: an operator restart of a
    // slot is recorded locally while the control plane is down.
    let first_admin = cp.admin.clone();
    let sync_addr = cp.sync;
    cp.process.kill9();
    wait_for("the hub to notice", Duration::from_secs(60), || {
        (health(hub_api)["sync"]["connected"] == false).then_some(())
    });
    let (status, body) = post(hub_api, "/api/slots/2/restart");
    assert_eq!(status, 202, "{body}");
    let before = transitions(hub_dir.path()).len();
    wait_for(
        "slot 2 back to READY on the hub",
        Duration::from_secs(30),
        || {
            let slot = get_json(hub_api, "/api/slots/2");
            (transitions(hub_dir.path()).len() > before && slot["fsm_state"] == "READY")
                .then_some(())
        },
    );

    // The control plane comes back on the same port; the hub reconnects and
    // delivers what it recorded meanwhile, nothing twice.
    let cp = ControlPlane::start(cp_dir.path(), Some(sync_addr));
    // The first admin exists now: the password printed at the first start.
    let admin = cp.login(&first_admin.0, &first_admin.1);
    let all = transitions(hub_dir.path());
    let last = all.last().expect("transitions").0;
    wait_for(
        "the hub to deliver everything",
        Duration::from_secs(60),
        || (health(hub_api)["sync"]["acked_seq"].as_u64()? >= last).then_some(()),
    );
    let events = delivered(cp_dir.path(), "hub-sync");
    assert_exactly_once(&events[..last as usize], &all);
    let (status, slot) = request(cp.http, "GET", "/api/slots?limit=10", Some(&admin), None);
    assert_eq!(status, 200);
    assert!(
        slot["items"].as_array().is_some_and(|s| s.len() == 4),
        "{slot}"
    );

    // Revoked: the session is cut at once and the next connection refused,
    // while the hub keeps serving its slots locally.
    let (status, body) = request(
        cp.http,
        "POST",
        "/api/hubs/hub-sync/revoke",
        Some(&admin),
        Some(&serde_json::json!({})),
    );
    assert_eq!(status, 200, "{body}");
    wait_for("the hub to be cut off", Duration::from_secs(30), || {
        let sync = &health(hub_api)["sync"];
        let error = sync["last_error"].as_str()?;
        (sync["connected"] == false
            && (error.contains("revoked") || error.contains("Unauthorized")))
        .then_some(())
    });
    assert_eq!(health(hub_api)["status"], "ok");
    let (_, page) = request(cp.http, "GET", "/api/slots", Some(&admin), None);
    for slot in page["items"].as_array().expect("items") {
        assert_eq!(slot["status"], "offline", "{slot}");
        assert_eq!(slot["hub_online"], false, "{slot}");
    }
    hub.terminate();
}

/// `(status, result)` of a command in the control plane's database.
fn command_status(cp_dir: &Path, id: &str) -> Option<(String, Option<String>)> {
    let db = rusqlite::Connection::open_with_flags(
        cp_dir.join("control-plane.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    db.query_row(
        "SELECT status, result FROM hub_commands WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ok()
}

/// The control plane's id of the hub's slot `n`.
fn cp_slot_id(cp: &ControlPlane, token: &str, n: i64) -> i64 {
    let (_, page) = request(cp.http, "GET", "/api/slots", Some(token), None);
    page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["hub_slot_id"] == n))
        .and_then(|s| s["id"].as_i64())
        .unwrap_or_else(|| panic!("slot {n} not listed: {page}"))
}

fn operator_restarts(api: SocketAddr, slot: u32) -> f64 {
    vss_tests::metric(
        api,
        &format!("hubd_slot_restarts_total{{slot=\"{slot}\",reason=\"operator\"}}"),
    )
    .unwrap_or(-1.0)
}

#[test]
fn commands_reach_the_slot_once_wait_for_an_offline_hub_or_expire_visibly() {
    let cp_dir = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let cp = ControlPlane::start(cp_dir.path(), None);
    let admin = cp.login(&cp.admin.0, &cp.admin.1);
    let token = cp.hub_with_token(&admin, "Centre Commands", "hub-cmd");
    let out = enroll(hub_dir.path(), cp.sync, &token);
    assert!(out.status.success(), "{}", text(&out));
    let (hub, hub_api) = HubProcess::demo(hub_dir.path(), &["--slots", "2"]);
    wait_for(
        "2 READY slots on the control plane",
        Duration::from_secs(60),
        || {
            let (_, page) = request(cp.http, "GET", "/api/slots", Some(&admin), None);
            let items = page["items"].as_array()?;
            (items.len() == 2 && items.iter().all(|s| s["fsm_state"] == "READY")).then_some(())
        },
    );

    // Online: the restart reaches slot 1 once, and its result comes back.
    let slot1 = cp_slot_id(&cp, &admin, 1);
    let (status, command) = request(
        cp.http,
        "POST",
        &format!("/api/slots/{slot1}/restart"),
        Some(&admin),
        Some(&serde_json::json!({})),
    );
    assert_eq!(status, 202, "{command}");
    let id = command["id"].as_str().expect("command id").to_owned();
    wait_for("the restart command done", Duration::from_secs(30), || {
        (command_status(cp_dir.path(), &id)?.0 == "done").then_some(())
    });
    // `done` means the slot accepted the restart; its supervisor counts it
    // when it carries it out.
    wait_for("slot 1 restarted", Duration::from_secs(30), || {
        (operator_restarts(hub_api, 1) == 1.0).then_some(())
    });
    assert_eq!(operator_restarts(hub_api, 2), 0.0, "slot 2 untouched");

    // Offline: a restart queued while the hub is down waits, and runs once
    // when the hub is back.
    assert!(hub.terminate().success());
    let slot2 = cp_slot_id(&cp, &admin, 2);
    let (status, command) = request(
        cp.http,
        "POST",
        &format!("/api/slots/{slot2}/restart"),
        Some(&admin),
        Some(&serde_json::json!({})),
    );
    assert_eq!(status, 202, "{command}");
    let waiting = command["id"].as_str().expect("command id").to_owned();
    assert_eq!(
        command_status(cp_dir.path(), &waiting).map(|s| s.0),
        Some("queued".into())
    );

    // One more, already past its expiry: the control plane marks it expired
    // and never delivers it.
    {
        let db = rusqlite::Connection::open(cp_dir.path().join("control-plane.db")).expect("db");
        db.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        db.execute(
            "INSERT INTO hub_commands (id, centre_id, hub_id, slot_id, kind, payload, status, created_at_ms, expires_at_ms)
             SELECT 'stale-1', centre_id, hub_id, id, 'restart_slot', '{\"hub_slot_id\": 1}', 'queued', 0, 1 FROM slots WHERE id = ?1",
            [slot1],
        )
        .expect("insert a stale command");
    }
    wait_for("the stale command expired", Duration::from_secs(30), || {
        (command_status(cp_dir.path(), "stale-1")?.0 == "expired").then_some(())
    });

    let (_hub, hub_api) = HubProcess::demo(hub_dir.path(), &["--slots", "2"]);
    wait_for("the queued command done", Duration::from_secs(60), || {
        (command_status(cp_dir.path(), &waiting)?.0 == "done").then_some(())
    });
    wait_for("slot 2 restarted", Duration::from_secs(30), || {
        (operator_restarts(hub_api, 2) == 1.0).then_some(())
    });
    // Both slots back to READY on the control plane: the transitions of the
    // restart came back through the outbox.
    wait_for(
        "both slots READY again on the control plane",
        Duration::from_secs(30),
        || {
            let (_, page) = request(cp.http, "GET", "/api/slots", Some(&admin), None);
            let items = page["items"].as_array()?;
            items
                .iter()
                .all(|s| s["fsm_state"] == "READY")
                .then_some(())
        },
    );
    assert_eq!(
        operator_restarts(hub_api, 1),
        0.0,
        "the expired command never ran"
    );
    let events = delivered(cp_dir.path(), "hub-cmd");
    let released = events
        .iter()
        .filter(|(_, kind, payload)| kind == "slot_transition" && payload.contains("\"released\""))
        .count();
    assert_eq!(
        released, 2,
        "one operator release per restart command reached the control plane"
    );
    assert_eq!(
        command_status(cp_dir.path(), "stale-1").map(|s| s.0),
        Some("expired".into())
    );
}
