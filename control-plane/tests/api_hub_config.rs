//! A hub's desired slot configuration through the API (F-14): revisions,
//! optimistic concurrency, validation with precise field errors (400 / 404 /
//! 409 / 422, never 500), SIP passwords never returned, RBAC, audit, and
//! `GET /api/commands/{id}`. Every test runs on SQLite and on Postgres.

mod api_common;
mod common;

use api_common::{Answer, TestApp};
use control_plane::rbac::Role;
use serde_json::{Value, json};
use vss_shared::SlotState;

fn sim(id: i64, kind: &str) -> Value {
    json!({ "id": id, "kind": kind, "driver": { "type": "sim" } })
}

async fn put(
    app: &TestApp,
    token: &str,
    hub: &str,
    body: &Value,
    if_match: Option<&str>,
) -> Answer {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(tag) = if_match {
        headers.push(("If-Match", tag));
    }
    let body = body.to_string();
    api_common::send(
        app.addr,
        "PUT",
        &format!("/api/hubs/{hub}/config"),
        &headers,
        body.as_bytes(),
    )
    .await
}

/// A centre with hub `hub-a`; returns the centre id.
async fn world(app: &TestApp) -> String {
    let centre = app.seed_centre("Centre A").await;
    app.seed_hub(&centre, "hub-a").await;
    centre
}

fn assert_error(answer: &Answer, status: u16, code: &str, message_has: &str) {
    assert_eq!(answer.status, status, "{}", answer.text());
    assert_eq!(answer.error_shape_problem(), None, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(message_has),
        "{message:?} should mention {message_has:?}"
    );
}

api_tests! {
    async fn revisions_grow_numbers_are_allocated_and_passwords_never_shown(app) {
        world(&app).await;
        let admin = app.admin_token().await;
        let empty = app.get("/api/hubs/hub-a/config", Some(&admin)).await;
        assert_eq!(empty.status, 200, "{}", empty.text());
        assert_eq!(empty.header("etag"), Some("\"0\""));
        let body = empty.json();
        assert_eq!(body["revision"], 0);
        assert_eq!(body["in_sync"], true);
        assert_eq!(body["slots"], json!([]));

        let first = json!({ "slots": [
            { "id": 1, "kind": "auto", "name": "Modem 1", "sip_password": "s3cret-one",
              "driver": { "type": "at_modem", "imei": "490154203237518" } },
            { "id": 2, "kind": "auto", "driver": { "type": "sim", "seed": 7 } },
            { "id": 3, "kind": "mf", "sip_number": "7005", "enabled": false, "driver": { "type": "sim" } },
            { "id": 4, "kind": "ls", "driver": { "type": "sim" } },
        ]});
        let stored = put(&app, &admin, "hub-a", &first, Some("\"0\"")).await;
        assert_eq!(stored.status, 200, "{}", stored.text());
        assert_eq!(stored.header("etag"), Some("\"1\""));
        let text = stored.text();
        assert!(!text.contains("s3cret"), "a password leaked: {text}");
        let body = stored.json();
        assert_eq!(body["revision"], 1);
        assert_eq!(body["in_sync"], false, "no hub applied it yet");
        let slots = body["slots"].as_array().expect("slots");
        let numbers: Vec<&str> = slots.iter().map(|s| s["sip_number"].as_str().unwrap_or("")).collect();
        assert_eq!(numbers, ["6001", "6002", "7005", "8001"], "explicit kept, the lowest free allocated");
        assert_eq!(slots[0]["name"], "Modem 1");
        assert_eq!(slots[1]["name"], "Slot 02");
        assert_eq!(slots[2]["enabled"], false);
        assert_eq!(slots[0]["sip_password_set"], true);
        assert_eq!(slots[1]["sip_password_set"], false);
        assert_eq!(slots[0]["driver"]["imei"], "490154203237518");
        assert_eq!(slots[1]["driver"], json!({ "type": "sim", "seed": 7 }));

        // A password left out is kept; the read never shows it.
        let second = json!({ "expected_revision": 1, "slots": [
            { "id": 1, "kind": "auto", "driver": { "type": "at_modem", "imei": "490154203237518" } },
        ]});
        let stored = put(&app, &admin, "hub-a", &second, None).await;
        assert_eq!(stored.status, 200, "{}", stored.text());
        let read = app.get("/api/hubs/hub-a/config", Some(&admin)).await;
        assert_eq!(read.status, 200);
        assert!(!read.text().contains("s3cret"), "{}", read.text());
        let body = read.json();
        assert_eq!(body["revision"], 2);
        assert_eq!(body["slots"].as_array().map(Vec::len), Some(1));
        assert_eq!(body["slots"][0]["sip_password_set"], true, "kept from revision 1");
        let (revision, slots) = app
            .db
            .store
            .desired_config("hub-a")
            .await
            .expect("desired config")
            .expect("a revision");
        assert_eq!(revision, 2);
        assert_eq!(slots[0].sip_password.as_deref(), Some("s3cret-one"));

        // Every change is audited.
        let records = app.audit(&admin, "action=PUT%20/api/hubs/hub-a/config").await;
        assert_eq!(records.len(), 2, "{records:?}");
    }

    async fn stale_revisions_are_409_unknown_hubs_404(app) {
        let centre = world(&app).await;
        let admin = app.admin_token().await;
        let body = json!({ "slots": [sim(1, "auto")] });
        assert_eq!(put(&app, &admin, "hub-a", &body, None).await.status, 200);
        // Two editors read revision 1; the second to write loses.
        let one = json!({ "expected_revision": 1, "slots": [sim(1, "auto"), sim(2, "auto")] });
        assert_eq!(put(&app, &admin, "hub-a", &one, None).await.status, 200);
        let late = put(&app, &admin, "hub-a", &json!({ "slots": [sim(3, "ls")] }), Some("\"1\"")).await;
        assert_error(&late, 409, "revision_conflict", "revision 2");
        let late = put(&app, &admin, "hub-a", &one, None).await;
        assert_error(&late, 409, "revision_conflict", "revision 2");
        let read = app.get("/api/hubs/hub-a/config", Some(&admin)).await.json();
        assert_eq!(read["revision"], 2, "the losers changed nothing");
        assert_eq!(read["slots"].as_array().map(Vec::len), Some(2));

        // Unknown hubs, and hubs of another centre, are 404.
        let missing = put(&app, &admin, "no-such-hub", &body, None).await;
        assert_error(&missing, 404, "not_found", "hub");
        let missing = app.get("/api/hubs/no-such-hub/config", Some(&admin)).await;
        assert_error(&missing, 404, "not_found", "hub");
        let other = app.seed_centre("Centre B").await;
        app.seed_hub(&other, "hub-b").await;
        app.seed_user(Some(&centre), "tech@a.example.com", Role::Technician).await;
        let tech = app.token("tech@a.example.com").await;
        let hidden = put(&app, &tech, "hub-b", &body, None).await;
        assert_error(&hidden, 404, "not_found", "hub");
        assert_eq!(put(&app, &tech, "hub-a", &body, None).await.status, 200);
    }

    async fn bad_input_gets_precise_4xx_never_500(app) {
        world(&app).await;
        let admin = app.admin_token().await;
        let cases: Vec<(Value, Option<&str>, u16, &str, &str)> = vec![
            (json!({ "slots": [sim(1, "auto"), sim(1, "mf")] }), None, 422, "invalid_config", "slots[1].id: duplicate slot id 1"),
            (json!({ "slots": [sim(0, "auto")] }), None, 422, "invalid_config", "slots[0].id"),
            (json!({ "slots": [sim(10000, "auto")] }), None, 422, "invalid_config", "slots[0].id"),
            (json!({ "slots": [sim(-1, "auto")] }), None, 422, "invalid_config", "slots[0].id"),
            (json!({ "slots": [sim(1, "fax")] }), None, 422, "invalid_config", "slots[0].kind"),
            (json!({ "slots": [{ "id": 1, "kind": "mf", "sip_number": "6001", "driver": { "type": "sim" } }] }), None, 422, "invalid_config", "slots[0].sip_number"),
            (json!({ "slots": [{ "id": 1, "kind": "auto", "sip_number": "9001", "driver": { "type": "sim" } }] }), None, 422, "invalid_config", "slots[0].sip_number"),
            (json!({ "slots": [{ "id": 1, "kind": "auto", "sip_number": "60a1", "driver": { "type": "sim" } }] }), None, 422, "invalid_config", "slots[0].sip_number"),
            (json!({ "slots": [{ "id": 1, "kind": "auto", "sip_number": "6000", "driver": { "type": "sim" } }] }), None, 422, "invalid_config", "reserved"),
            (json!({ "slots": [
                { "id": 1, "kind": "auto", "sip_number": "6003", "driver": { "type": "sim" } },
                { "id": 2, "kind": "auto", "sip_number": "6003", "driver": { "type": "sim" } },
            ] }), None, 422, "invalid_config", "slots[1].sip_number"),
            (json!({ "slots": [{ "id": 1, "kind": "mf", "driver": { "type": "at_modem", "imei": "490154203237518" } }] }), None, 422, "invalid_config", "slots[0].driver.type"),
            (json!({ "slots": [{ "id": 1, "kind": "auto", "driver": { "type": "at_modem", "imei": "12345" } }] }), None, 422, "invalid_config", "slots[0].driver.imei"),
            (json!({ "slots": [
                { "id": 1, "kind": "auto", "driver": { "type": "at_modem", "imei": "490154203237518" } },
                { "id": 2, "kind": "auto", "driver": { "type": "at_modem", "imei": "490154203237518" } },
            ] }), None, 422, "invalid_config", "slots[1].driver.imei"),
            (json!({ "slots": [{ "id": 1, "kind": "auto", "driver": { "type": "teleport" } }] }), None, 422, "invalid_config", "slots[0].driver.type"),
            (json!({ "slots": [{ "id": 1, "kind": "auto", "driver": "sim" }] }), None, 422, "invalid_config", "slots[0].driver"),
            (json!({ "slots": [{ "id": 1, "kind": "auto", "name": "", "driver": { "type": "sim" } }] }), None, 422, "invalid_config", "slots[0].name"),
            (json!({ "slots": [{ "id": 1, "kind": "auto", "sip_password": "", "driver": { "type": "sim" } }] }), None, 422, "invalid_config", "slots[0].sip_password"),
            (json!({ "slots": [{ "id": 1, "kind": "auto", "driver": { "type": "sim" }, "color": "red" }] }), None, 422, "", ""),
            (json!({ "slots": "all of them" }), None, 422, "", ""),
            (json!({ "expected_revision": -1, "slots": [] }), None, 422, "invalid_config", "expected_revision"),
            (json!({ "slots": [] }), Some("\"abc\""), 400, "bad_if_match", "If-Match"),
            (json!({ "expected_revision": 3, "slots": [] }), Some("\"4\""), 400, "bad_if_match", "expected_revision"),
        ];
        let mut failures = Vec::new();
        for (body, if_match, status, code, message) in &cases {
            let answer = put(&app, &admin, "hub-a", body, *if_match).await;
            let problem = if answer.status != *status {
                Some(format!("{} instead of {status}", answer.status))
            } else if let Some(shape) = answer.error_shape_problem() {
                Some(shape)
            } else {
                let error = &answer.json()["error"];
                let text = error["message"].as_str().unwrap_or_default();
                (!code.is_empty() && (error["code"] != *code || !text.contains(message)))
                    .then(|| format!("{error}"))
            };
            if let Some(problem) = problem {
                failures.push(format!("{body} (If-Match {if_match:?}): {problem}: {}", answer.text()));
            }
        }
        // Malformed JSON and a body that is not JSON.
        let bearer = format!("Bearer {admin}");
        for (content_type, raw) in [("application/json", "{\"slots\": ["), ("text/plain", "slots")] {
            let answer = api_common::send(
                app.addr,
                "PUT",
                "/api/hubs/hub-a/config",
                &[("Authorization", bearer.as_str()), ("Content-Type", content_type)],
                raw.as_bytes(),
            )
            .await;
            if !(400..500).contains(&answer.status) || answer.error_shape_problem().is_some() {
                failures.push(format!("{content_type} {raw:?}: {} {}", answer.status, answer.text()));
            }
        }
        assert!(failures.is_empty(), "bad input:\n{}", failures.join("\n"));
        let read = app.get("/api/hubs/hub-a/config", Some(&admin)).await.json();
        assert_eq!(read["revision"], 0, "nothing bad was stored");
    }

    async fn roles_without_hubs_configure_get_403_and_change_nothing(app) {
        let centre = world(&app).await;
        let admin = app.admin_token().await;
        let body = json!({ "slots": [sim(1, "auto")] });
        for (email, role) in [("viewer@a.example.com", Role::Viewer), ("operator@a.example.com", Role::Operator)] {
            app.seed_user(Some(&centre), email, role).await;
            let token = app.token(email).await;
            let denied = put(&app, &token, "hub-a", &body, None).await;
            assert_error(&denied, 403, "forbidden", "role");
        }
        app.seed_user(Some(&centre), "boss@a.example.com", Role::Supervisor).await;
        let boss = app.token("boss@a.example.com").await;
        assert_eq!(put(&app, &boss, "hub-a", &body, None).await.status, 200);
        let read = app.get("/api/hubs/hub-a/config", Some(&admin)).await.json();
        assert_eq!(read["revision"], 1);
        let denied = app.audit(&admin, "action=auth.permission_denied").await;
        assert_eq!(denied.len(), 2, "{denied:?}");
    }

    async fn commands_show_their_status_and_a_short_ttl_expires_visibly(app) {
        let centre = world(&app).await;
        let admin = app.admin_token().await;
        let slot = app.seed_slot("hub-a", 1, "auto", SlotState::Ready).await;
        let queued = app
            .post(&format!("/api/slots/{slot}/restart?ttl_s=1"), Some(&admin), &json!({}))
            .await;
        assert_eq!(queued.status, 202, "{}", queued.text());
        let id = queued.json()["id"].as_str().expect("command id").to_owned();
        let read = app.get(&format!("/api/commands/{id}"), Some(&admin)).await;
        assert_eq!(read.status, 200, "{}", read.text());
        let command = read.json();
        assert_eq!(command["status"], "queued");
        assert_eq!(command["kind"], "restart_slot");
        assert_eq!(command["slot_id"], slot);
        assert_eq!(command["hub_id"], "hub-a");
        assert!(command["expires_at_ms"].as_i64() <= Some(command["created_at_ms"].as_i64().unwrap_or(0) + 1000));
        // Past its TTL, the sweep marks it expired (the control plane runs it every 5 s).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let command = app.get(&format!("/api/commands/{id}"), Some(&admin)).await.json();
            if command["status"] == "expired" {
                assert!(command["finished_at_ms"].is_i64(), "{command}");
                assert!(command["result"].as_str().is_some_and(|r| r.contains("expiry")), "{command}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never expired: {command}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        for bad in ["ttl_s=0", "ttl_s=86401", "ttl_s=abc", "ttl=5"] {
            let answer = app.post(&format!("/api/slots/{slot}/restart?{bad}"), Some(&admin), &json!({})).await;
            assert_eq!(answer.status, 400, "{bad}: {}", answer.text());
        }
        let missing = app.get("/api/commands/no-such-command", Some(&admin)).await;
        assert_error(&missing, 404, "not_found", "command");
        // Another centre's command is 404, exactly like a missing one.
        app.seed_user(Some(&centre), "viewer@a.example.com", Role::Viewer).await;
        let other = app.seed_centre("Centre B").await;
        app.seed_hub(&other, "hub-b").await;
        let b_slot = app.seed_slot("hub-b", 1, "auto", SlotState::Ready).await;
        let b_command = app.post(&format!("/api/slots/{b_slot}/restart"), Some(&admin), &json!({})).await;
        let b_id = b_command.json()["id"].as_str().expect("id").to_owned();
        let viewer = app.token("viewer@a.example.com").await;
        assert_eq!(app.get(&format!("/api/commands/{id}"), Some(&viewer)).await.status, 200);
        let hidden = app.get(&format!("/api/commands/{b_id}"), Some(&viewer)).await;
        assert_error(&hidden, 404, "not_found", "command");
    }
}
