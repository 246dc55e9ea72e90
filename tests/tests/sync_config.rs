//! Versioned desired configuration (F-14) between the real control plane and
//! a real `hubd`, over QUIC with mutual TLS: revisions set through the API
//! are pushed, checked by the hub's own rules, stored and applied atomically
//! (slots added, removed, changed; unchanged ones untouched), and the applied
//! revision comes back. A refused revision is reported with its reason and
//! changes nothing. A hub cut off from the control plane keeps working and
//! converges when the link returns: the configuration applied, a command
//! queued meanwhile run once, another expired visibly. Every test runs on
//! SQLite and on Postgres.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use vss_tests::control_plane::{ControlPlane, request};
use vss_tests::udp_proxy::{UdpProxy, seed_from_env};
use vss_tests::{HubProcess, get_json, hubd_bin, wait_for};

enum Backend {
    Sqlite,
    Postgres { admin: String, name: String },
}

impl Backend {
    fn postgres(tag: &str) -> Backend {
        let admin = std::env::var("CP_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("vss_config_{tag}_{}", std::process::id());
        psql(&admin, &format!("DROP DATABASE IF EXISTS {name}"));
        psql(&admin, &format!("CREATE DATABASE {name}"));
        Backend::Postgres { admin, name }
    }

    fn url(&self) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres { admin, name } => {
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                Some(format!("{base}/{name}"))
            }
        }
    }

    /// Runs one statement on the control plane's database (what another
    /// writer, or a bug, could leave there).
    fn execute(&self, cp_dir: &Path, sql: &str) {
        match self.url() {
            None => {
                let db = rusqlite::Connection::open(cp_dir.join("control-plane.db")).expect("db");
                db.busy_timeout(Duration::from_secs(5))
                    .expect("busy timeout");
                db.execute_batch(sql).expect("statement");
            }
            Some(url) => psql(&url, sql),
        }
    }

    /// The one integer `sql` selects from the control plane's database.
    fn query_i64(&self, cp_dir: &Path, sql: &str) -> Option<i64> {
        match self.url() {
            None => {
                let db = rusqlite::Connection::open_with_flags(
                    cp_dir.join("control-plane.db"),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .ok()?;
                db.busy_timeout(Duration::from_secs(5)).ok()?;
                db.query_row(sql, [], |r| r.get(0)).ok()
            }
            Some(url) => {
                let out = Command::new("psql")
                    .args([url.as_str(), "-qAtc", sql])
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout).trim().parse().ok()
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Postgres { admin, name } = self {
            psql(
                admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-qAtc", sql])
        .output()
        .expect("psql runs (Debian postgresql-client)");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The control plane, an admin token and an enrolled hub data dir.
/// Fields drop in order: the control plane stops before its database goes.
struct World {
    cp: ControlPlane,
    /// The UDP proxy between the hub and the control plane, when there is one.
    proxy: Option<UdpProxy>,
    admin: String,
    hub_id: &'static str,
    hub_dir: tempfile::TempDir,
    cp_dir: tempfile::TempDir,
    backend: Backend,
}

/// Starts the control plane, registers `hub_id` and enrolls a hub data dir
/// with it, through a UDP proxy when `proxied`.
fn world(backend: Backend, hub_id: &'static str, proxied: bool) -> World {
    let cp_dir = tempfile::tempdir().expect("temp dir");
    let hub_dir = tempfile::tempdir().expect("temp dir");
    let url = backend.url();
    let extra: Vec<&str> = match &url {
        Some(url) => vec!["--database-url", url],
        None => Vec::new(),
    };
    let cp = ControlPlane::start_with(cp_dir.path(), None, &extra, Stdio::inherit());
    let admin = cp.login(&cp.admin.0, &cp.admin.1);
    let token = cp.hub_with_token(&admin, &format!("Centre {hub_id}"), hub_id);
    let proxy = proxied.then(|| UdpProxy::start(cp.sync, seed_from_env()).expect("proxy"));
    let address = proxy.as_ref().map_or(cp.sync, UdpProxy::addr);
    let out = Command::new(hubd_bin())
        .args([
            "enroll",
            "--control-plane",
            &address.to_string(),
            "--token",
            &token,
            "--data-dir",
            hub_dir.path().to_str().expect("utf-8 path"),
        ])
        .output()
        .expect("hubd enroll runs");
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    World {
        backend,
        cp_dir,
        hub_dir,
        cp,
        admin,
        hub_id,
        proxy,
    }
}

impl World {
    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        request(self.cp.http, method, path, Some(&self.admin), body)
    }

    /// Stores a new desired revision; returns it.
    fn put_config(&self, slots: Value) -> u64 {
        let path = format!("/api/hubs/{}/config", self.hub_id);
        let (status, body) = self.api("PUT", &path, Some(&json!({ "slots": slots })));
        assert_eq!(status, 200, "PUT config: {body}");
        body["revision"].as_u64().expect("revision")
    }

    fn config(&self) -> Value {
        let (status, body) = self.api("GET", &format!("/api/hubs/{}/config", self.hub_id), None);
        assert_eq!(status, 200, "GET config: {body}");
        body
    }

    /// Waits until the hub reported `revision` applied.
    fn wait_applied(&self, revision: u64) {
        wait_for(
            &format!("revision {revision} applied"),
            Duration::from_secs(90),
            || {
                let config = self.config();
                (config["applied"]["applied_revision"] == revision && config["in_sync"] == true)
                    .then_some(())
            },
        );
    }

    /// The control plane's slots of this hub, by hub slot id.
    fn slots(&self) -> Vec<Value> {
        let (status, page) = self.api("GET", "/api/slots?limit=500", None);
        assert_eq!(status, 200, "{page}");
        let mut slots: Vec<Value> = page["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|s| s["hub_id"] == self.hub_id)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        slots.sort_by_key(|s| s["hub_slot_id"].as_i64());
        slots
    }

    fn slot(&self, n: i64) -> Option<Value> {
        self.slots().into_iter().find(|s| s["hub_slot_id"] == n)
    }

    /// The hub, `hubd demo` with 2 simulated AUTO slots, synced: both READY
    /// on the control plane.
    fn start_hub(&self, extra: &[&str]) -> (HubProcess, SocketAddr) {
        let mut args = vec!["--slots", "2"];
        args.extend_from_slice(extra);
        let (hub, api) = HubProcess::demo(self.hub_dir.path(), &args);
        wait_for(
            "the hub's slots on the control plane",
            Duration::from_secs(60),
            || {
                let slots = self.slots();
                (slots.len() >= 2 && slots.iter().all(|s| s["hub_online"] == true)).then_some(())
            },
        );
        (hub, api)
    }
}

/// A simulated slot for a `PUT /api/hubs/{id}/config` body.
fn sim(id: i64, kind: &str, name: &str, driver: Value) -> Value {
    let mut driver = driver;
    driver["type"] = json!("sim");
    driver["latency_ms"] = json!(5);
    json!({ "id": id, "kind": kind, "name": name, "driver": driver })
}

/// `(slot_id, to_state)` of every transition the hub recorded for slot `n`.
fn transitions_of(hub_dir: &Path, n: u32) -> Vec<String> {
    let db = vss_tests::open_store(hub_dir);
    let mut stmt = db
        .prepare("SELECT to_state FROM slot_transitions WHERE slot_id = ?1 ORDER BY id")
        .expect("query");
    stmt.query_map([n], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows decode")
}

fn hub_slot_ids(api: SocketAddr) -> Vec<u64> {
    get_json(api, "/api/slots")
        .as_array()
        .map(|slots| slots.iter().filter_map(|s| s["id"].as_u64()).collect())
        .unwrap_or_default()
}

fn pushes_apply_adds_removes_and_changes_slots_and_a_bad_revision_is_rejected(backend: Backend) {
    let w = world(backend, "hub-cfg", false);
    let (hub, api) = w.start_hub(&[]);

    // Revision 1: the file's two slots become the control plane's, plus an MF slot.
    let one = json!([
        sim(1, "auto", "Modem one", json!({ "seed": 11 })),
        sim(2, "auto", "Modem two", json!({ "seed": 12 })),
        sim(3, "mf", "Phone three", json!({ "seed": 13 })),
    ]);
    assert_eq!(w.put_config(one.clone()), 1);
    w.wait_applied(1);
    wait_for(
        "3 READY slots on the control plane",
        Duration::from_secs(60),
        || {
            let slots = w.slots();
            (slots.len() == 3 && slots.iter().all(|s| s["fsm_state"] == "READY")).then_some(())
        },
    );
    assert_eq!(w.slot(3).expect("slot 3")["internal_sip_number"], "7001");
    assert_eq!(get_json(api, "/health")["config"]["revision"], 1);
    assert_eq!(vss_tests::metric(api, "hubd_config_revision"), Some(1.0));
    let slot1_before = transitions_of(w.hub_dir.path(), 1);
    let slot1_since = get_json(api, "/api/slots/1")["state_since_ms"].clone();

    // Revision 2: slot 1 as it was, slot 2 changed, slot 3 removed, slot 4 added.
    let two = json!([
        one[0].clone(),
        sim(2, "auto", "Modem two (new SIM)", json!({ "seed": 22 })),
        sim(4, "ls", "PC four", json!({ "seed": 14 })),
    ]);
    assert_eq!(w.put_config(two), 2);
    w.wait_applied(2);
    wait_for(
        "revision 2 on the control plane's slots",
        Duration::from_secs(60),
        || {
            let slot2 = w.slot(2)?;
            let slot3 = w.slot(3)?;
            let slot4 = w.slot(4)?;
            (slot2["name"] == "Modem two (new SIM)"
                && slot2["fsm_state"] == "READY"
                && slot3["status"] == "offline"
                && slot4["fsm_state"] == "READY"
                && slot4["internal_sip_number"] == "8001")
                .then_some(())
        },
    );
    assert_eq!(
        hub_slot_ids(api),
        [1, 2, 4],
        "the hub runs the new slot list"
    );
    assert_eq!(
        transitions_of(w.hub_dir.path(), 1),
        slot1_before,
        "the unchanged slot was not touched"
    );
    assert_eq!(get_json(api, "/api/slots/1")["state_since_ms"], slot1_since);
    assert!(
        transitions_of(w.hub_dir.path(), 3).ends_with(&["IDLE".to_owned()]),
        "the removed slot left service"
    );
    assert_eq!(get_json(api, "/health")["config"]["revision"], 2);

    // Revision 3 passes the control plane's checks but not the hub's (a
    // simulated failure rate above 1): rejected with the reason, nothing changes.
    let three = json!([sim(
        1,
        "auto",
        "Modem one",
        json!({ "seed": 11, "failure_rate": 7.5 })
    )]);
    assert_eq!(w.put_config(three), 3);
    let config = wait_for("revision 3 rejected", Duration::from_secs(60), || {
        let config = w.config();
        (config["applied"]["rejected_revision"] == 3).then_some(config)
    });
    let reason = config["applied"]["rejected_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("failure_rate"), "{config}");
    assert_eq!(config["applied"]["applied_revision"], 2, "{config}");
    assert_eq!(config["in_sync"], false);
    assert_eq!(
        get_json(api, "/health")["config"]["last_rejected"]["revision"],
        3
    );

    // Revision 4 written behind the API's back, breaking the numbering plan
    // (an AUTO slot on an MF number): the hub's own rules refuse it.
    w.backend.execute(
        w.cp_dir.path(),
        r#"UPDATE hub_config_slots SET sip_number = '7001', driver = '{"type":"sim","latency_ms":5}'
             WHERE hub_id = 'hub-cfg' AND hub_slot_id = 1;
           UPDATE hub_config SET revision = 4 WHERE hub_id = 'hub-cfg';"#,
    );
    let config = wait_for("revision 4 rejected", Duration::from_secs(60), || {
        let config = w.config();
        (config["applied"]["rejected_revision"] == 4).then_some(config)
    });
    let reason = config["applied"]["rejected_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("slots[0].sip_number"), "{config}");
    assert_eq!(config["applied"]["applied_revision"], 2, "{config}");

    // The hub kept revision 2 throughout, and every slot of it serves.
    assert_eq!(hub_slot_ids(api), [1, 2, 4]);
    for n in [1, 2, 4] {
        let slot = get_json(api, &format!("/api/slots/{n}"));
        assert_eq!(slot["fsm_state"], "READY", "{slot}");
    }
    assert_eq!(get_json(api, "/health")["config"]["revision"], 2);
    let running = get_json(api, "/api/config");
    assert_eq!(running["revision"], 2, "{running}");
    assert_eq!(running["source"], "control_plane", "{running}");
    assert_eq!(
        running["slots"][1]["name"], "Modem two (new SIM)",
        "{running}"
    );
    assert_eq!(running["slots"][1]["driver"]["seed"], 22, "{running}");
    let status = Command::new(hubd_bin())
        .args(["status", "--api", &api.to_string()])
        .output()
        .expect("hubd status runs");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains("Configuration: revision 2 (pushed by the control plane)")
            && text.contains("last rejected: revision 4"),
        "{text}"
    );

    // A restart keeps the applied revision: it wins over the demo's own slots.
    assert!(hub.terminate().success());
    let (_hub, api) = HubProcess::demo(w.hub_dir.path(), &["--slots", "2"]);
    assert_eq!(get_json(api, "/health")["config"]["revision"], 2);
    assert_eq!(hub_slot_ids(api), [1, 2, 4]);
    assert_eq!(get_json(api, "/api/slots/2")["name"], "Modem two (new SIM)");
}

#[test]
fn pushed_revisions_apply_atomically_and_bad_ones_are_rejected_sqlite() {
    pushes_apply_adds_removes_and_changes_slots_and_a_bad_revision_is_rejected(Backend::Sqlite);
}

#[test]
fn pushed_revisions_apply_atomically_and_bad_ones_are_rejected_postgres() {
    pushes_apply_adds_removes_and_changes_slots_and_a_bad_revision_is_rejected(Backend::postgres(
        "push",
    ));
}

/// Command status as the API shows it.
fn command_status(w: &World, id: &str) -> String {
    let (status, body) = w.api("GET", &format!("/api/commands/{id}"), None);
    assert_eq!(status, 200, "{body}");
    body["status"].as_str().unwrap_or_default().to_owned()
}

fn cdr_count(hub_dir: &Path) -> i64 {
    vss_tests::open_store(hub_dir)
        .query_row("SELECT count(*) FROM cdrs", [], |r| r.get(0))
        .expect("count cdrs")
}

fn operator_restarts(api: SocketAddr, slot: u32) -> f64 {
    vss_tests::metric(
        api,
        &format!("hubd_slot_restarts_total{{slot=\"{slot}\",reason=\"operator\"}}"),
    )
    .unwrap_or(-1.0)
}

#[test]
fn a_hub_cut_off_keeps_working_and_converges_when_the_link_returns_sqlite() {
    a_hub_cut_off_keeps_working_and_converges_when_the_link_returns(Backend::Sqlite);
}

#[test]
fn a_hub_cut_off_keeps_working_and_converges_when_the_link_returns_postgres() {
    a_hub_cut_off_keeps_working_and_converges_when_the_link_returns(Backend::postgres("away"));
}

fn a_hub_cut_off_keeps_working_and_converges_when_the_link_returns(backend: Backend) {
    let w = world(backend, "hub-away", true);
    let link = w.proxy.as_ref().expect("a proxy").handle();
    let (_hub, api) = w.start_hub(&[]);

    // Revision 1: two AUTO slots taking short simulated calls.
    let calls = json!({ "call_every_ms": 200, "call_duration_ms": 200 });
    let one = json!([
        sim(1, "auto", "Modem one", calls.clone()),
        sim(2, "auto", "Modem two", calls.clone()),
    ]);
    assert_eq!(w.put_config(one.clone()), 1);
    w.wait_applied(1);
    let connections = get_json(api, "/health")["sync"]["connections"]
        .as_u64()
        .unwrap_or(0);

    // The link goes down; both sides notice.
    link.cut(true);
    wait_for("the hub to notice", Duration::from_secs(90), || {
        (get_json(api, "/health")["sync"]["connected"] == false).then_some(())
    });
    wait_for(
        "the control plane to notice",
        Duration::from_secs(90),
        || {
            w.backend
            .query_i64(
                w.cp_dir.path(),
                "SELECT count(*) FROM hub_sync WHERE hub_id = 'hub-away' AND disconnected_at_ms >= connected_at_ms",
            )
            .filter(|n| *n == 1)
        },
    );

    // Offline, the hub goes on: calls come and go, CDRs are recorded.
    let cdrs = cdr_count(w.hub_dir.path());
    let moves =
        transitions_of(w.hub_dir.path(), 1).len() + transitions_of(w.hub_dir.path(), 2).len();
    wait_for(
        "calls recorded while offline",
        Duration::from_secs(60),
        || {
            let now = transitions_of(w.hub_dir.path(), 1).len()
                + transitions_of(w.hub_dir.path(), 2).len();
            (cdr_count(w.hub_dir.path()) >= cdrs + 4 && now >= moves + 8).then_some(())
        },
    );

    // Meanwhile on the control plane: revision 2 (slot 2 renamed, an MF slot
    // added), a restart of slot 1 that waits for the hub, and a restart of
    // slot 2 whose TTL runs out first.
    let two = json!([
        one[0].clone(),
        sim(2, "auto", "Modem two (renamed)", calls.clone()),
        sim(3, "mf", "Phone three", json!({})),
    ]);
    assert_eq!(w.put_config(two), 2);
    let cp_slot = |n: i64| {
        w.slot(n)
            .and_then(|s| s["id"].as_i64())
            .expect("slot listed")
    };
    let (status, waiting) = w.api(
        "POST",
        &format!("/api/slots/{}/restart", cp_slot(1)),
        Some(&json!({})),
    );
    assert_eq!(status, 202, "{waiting}");
    let waiting = waiting["id"].as_str().expect("id").to_owned();
    let (status, short) = w.api(
        "POST",
        &format!("/api/slots/{}/restart?ttl_s=1", cp_slot(2)),
        Some(&json!({})),
    );
    assert_eq!(status, 202, "{short}");
    let short = short["id"].as_str().expect("id").to_owned();
    wait_for(
        "the short command to expire",
        Duration::from_secs(30),
        || (command_status(&w, &short) == "expired").then_some(()),
    );
    assert_eq!(command_status(&w, &waiting), "queued");
    assert_eq!(
        get_json(api, "/health")["config"]["revision"],
        1,
        "nothing reached the hub"
    );
    assert_eq!(operator_restarts(api, 1), 0.0);

    // The link returns: the hub reconnects and converges.
    link.cut(false);
    w.wait_applied(2);
    wait_for("the waiting command done", Duration::from_secs(60), || {
        (command_status(&w, &waiting) == "done").then_some(())
    });
    assert!(
        get_json(api, "/health")["sync"]["connections"]
            .as_u64()
            .unwrap_or(0)
            > connections,
        "converged over a new connection"
    );
    wait_for("slot 1 restarted once", Duration::from_secs(30), || {
        (operator_restarts(api, 1) == 1.0).then_some(())
    });
    wait_for(
        "revision 2 on the control plane's slots",
        Duration::from_secs(60),
        || {
            let slot2 = w.slot(2)?;
            let slot3 = w.slot(3)?;
            (slot2["name"] == "Modem two (renamed)" && slot3["fsm_state"] == "READY").then_some(())
        },
    );
    assert_eq!(hub_slot_ids(api), [1, 2, 3]);
    assert_eq!(command_status(&w, &short), "expired", "it stays expired");
    // The hub's ledger: the waiting command ran once; the expired one never arrived.
    let ledger: Vec<(String, Option<String>)> = {
        let db = vss_tests::open_store(w.hub_dir.path());
        let mut stmt = db
            .prepare("SELECT id, outcome FROM commands ORDER BY id")
            .expect("query");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("decode")
    };
    assert_eq!(ledger, [(waiting.clone(), Some("done".to_owned()))]);
    assert_eq!(operator_restarts(api, 1), 1.0, "run exactly once");

    // Every CDR recorded offline reached the control plane.
    let hub_cdrs = cdr_count(w.hub_dir.path());
    wait_for(
        "the offline CDRs delivered",
        Duration::from_secs(60),
        || {
            let delivered = w.backend.query_i64(
                w.cp_dir.path(),
                "SELECT count(*) FROM hub_events WHERE hub_id = 'hub-away' AND kind = 'cdr'",
            )?;
            (delivered >= hub_cdrs).then_some(())
        },
    );
}

/// `POST /api/call/start` on the control plane: the command reaches the
/// hub, the slot dials on its device (CALLING on the hub), and the command
/// ends `done`.
#[test]
fn start_call_through_the_control_plane_dials_on_the_slot() {
    let w = world(Backend::Sqlite, "hub-call", false);
    let (_hub, _api) = w.start_hub(&[]);
    let cp_slot = |n: i64| {
        w.slot(n)
            .and_then(|s| s["id"].as_i64())
            .expect("slot listed")
    };
    wait_for("slot 1 free", Duration::from_secs(60), || {
        w.slot(1).filter(|s| s["status"] == "free").map(|_| ())
    });
    let (status, command) = w.api(
        "POST",
        "/api/call/start",
        Some(&json!({ "slot_id": cp_slot(1), "phone_number": "+79161234567" })),
    );
    assert_eq!(status, 202, "{command}");
    let id = command["id"].as_str().expect("command id").to_owned();
    wait_for("start_call done", Duration::from_secs(60), || {
        let status = command_status(&w, &id);
        assert_ne!(status, "failed", "start_call failed");
        (status == "done").then_some(())
    });
    assert!(
        transitions_of(w.hub_dir.path(), 1).contains(&"CALLING".to_owned()),
        "the slot dialled: {:?}",
        transitions_of(w.hub_dir.path(), 1)
    );
}
