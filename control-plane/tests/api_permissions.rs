//! The permission matrix (POINT): every endpoint × every role × a row of the
//! actor's own centre or of another centre → the expected status, from a
//! table written here by hand from `docs/permissions.md`, independently of
//! `control_plane::rbac`. Plus: no token → 401 everywhere, the public
//! endpoints need none, every 403 is audited, and what a disabled account's
//! access token can still do. Every test runs on SQLite and on Postgres.

mod api_common;
mod common;

use std::collections::BTreeSet;

use api_common::{PASSWORD, TestApp};
use control_plane::rbac::Role;
use control_plane::store::Scope;
use serde_json::{Value, json};
use vss_shared::SlotState;

/// The roles, in the order of the table's columns.
const ROLES: [&str; 5] = ["admin", "supervisor", "operator", "technician", "viewer"];

/// What each role (admin, supervisor, operator, technician, viewer) gets, each
/// cell `"OWN OTHER"`:
/// - OWN: the status when the request targets a row of the actor's centre (A);
/// - OTHER: the status when it targets a row of another centre (B), or for
///   lists `listed`/`hidden` (whether B's rows appear), or `-` when the
///   endpoint has no row.
///
/// Rules (docs/permissions.md): a missing permission is 403 whatever the row;
/// another centre's row is 404 for everyone but the admin, who sees every
/// centre; success is 200 (reads, revoke, disable, enable, guacamole),
/// 201 (creations, enrollment tokens), 202 (restart, call).
#[rustfmt::skip]
const EXPECTED: &[(&str, [&str; 5])] = &[
    //                                         admin         supervisor    operator      technician    viewer
    ("GET /api/auth/me",                      ["200 -",      "200 -",      "200 -",      "200 -",      "200 -"]),
    ("GET /api/slots",                        ["200 listed", "200 hidden", "200 hidden", "200 hidden", "200 hidden"]),
    ("GET /api/slots/{id}",                   ["200 200",    "200 404",    "200 404",    "200 404",    "200 404"]),
    ("POST /api/slots/{id}/restart",          ["202 202",    "202 404",    "403 403",    "202 404",    "403 403"]),
    ("POST /api/call/start",                  ["202 202",    "202 404",    "202 404",    "403 403",    "403 403"]),
    ("POST /api/guacamole/connect",           ["200 200",    "200 404",    "403 403",    "200 404",    "403 403"]),
    ("GET /api/archonts/centers",             ["200 listed", "200 hidden", "200 hidden", "200 hidden", "200 hidden"]),
    ("GET /api/archonts/templates",           ["200 -",      "200 -",      "200 -",      "200 -",      "200 -"]),
    ("POST /api/archonts/centers",            ["201 -",      "403 -",      "403 -",      "403 -",      "403 -"]),
    ("GET /api/users",                        ["200 listed", "200 hidden", "403 -",      "403 -",      "403 -"]),
    ("GET /api/users/{id}",                   ["200 200",    "200 404",    "403 403",    "403 403",    "403 403"]),
    ("POST /api/users",                       ["201 201",    "201 404",    "403 403",    "403 403",    "403 403"]),
    ("POST /api/users/{id}/disable",          ["200 200",    "200 404",    "403 403",    "403 403",    "403 403"]),
    ("POST /api/users/{id}/enable",           ["200 200",    "200 404",    "403 403",    "403 403",    "403 403"]),
    ("GET /api/roles",                        ["200 -",      "200 -",      "200 -",      "200 -",      "200 -"]),
    ("GET /api/hubs",                         ["200 listed", "200 hidden", "403 -",      "200 hidden", "200 hidden"]),
    ("GET /api/hubs/{id}",                    ["200 200",    "200 404",    "403 403",    "200 404",    "200 404"]),
    ("POST /api/hubs",                        ["201 201",    "201 404",    "403 403",    "201 404",    "403 403"]),
    ("POST /api/hubs/{id}/enrollment-tokens", ["201 201",    "201 404",    "403 403",    "201 404",    "403 403"]),
    ("POST /api/hubs/{id}/revoke",            ["200 200",    "200 404",    "403 403",    "200 404",    "403 403"]),
    ("GET /api/hubs/{id}/config",             ["200 200",    "200 404",    "403 403",    "200 404",    "200 404"]),
    ("PUT /api/hubs/{id}/config",             ["200 200",    "200 404",    "403 403",    "200 404",    "403 403"]),
    ("GET /api/commands/{id}",                ["200 200",    "200 404",    "200 404",    "200 404",    "200 404"]),
    ("GET /api/audit",                        ["200 -",      "403 -",      "403 -",      "403 -",      "403 -"]),
];

/// Endpoints anyone may call without an access token.
const PUBLIC: &[&str] = &[
    "POST /api/auth/login",
    "POST /api/auth/refresh",
    "POST /api/auth/logout",
    "GET /health",
    "GET /health/live",
    "GET /health/ready",
    "GET /metrics",
    "GET /api/openapi.json",
];

/// The rows of one centre that requests target.
struct Side {
    centre: String,
    /// A free (READY) AUTO slot.
    auto_slot: i64,
    /// An LS slot with a remote host.
    ls_slot: i64,
    /// A hub that is never revoked.
    hub: String,
    /// A hub for the revoke requests.
    spare_hub: String,
    /// A viewer who never acts: the target of user reads, disable, enable.
    user: String,
    /// A command queued for the AUTO slot's hub.
    command: String,
}

/// Centres A (where the actors are) and B (another tenant).
struct World {
    a: Side,
    b: Side,
    /// Role name → (user id, access token); the admin has no centre.
    actors: Vec<(&'static str, String, String)>,
}

async fn side(app: &TestApp, name: &str) -> Side {
    let centre = app.seed_centre(&format!("Centre {name}")).await;
    let hub = format!("hub-{name}");
    let spare_hub = format!("hub-{name}-spare");
    app.seed_hub(&centre, &hub).await;
    app.seed_hub(&centre, &spare_hub).await;
    let auto_slot = app.seed_slot(&hub, 1, "auto", SlotState::Ready).await;
    let ls_slot = app.seed_slot(&hub, 2, "ls", SlotState::Ready).await;
    let user = app
        .seed_user(
            Some(&centre),
            &format!("target@{name}.example.com"),
            Role::Viewer,
        )
        .await;
    let (slot, _) = app
        .db
        .store
        .slot(&Scope::All, auto_slot)
        .await
        .expect("read the seeded slot")
        .expect("the seeded slot");
    let command = app
        .db
        .store
        .queue_command(
            &slot,
            "restart_slot",
            &json!({ "hub_slot_id": 1 }),
            600_000,
            None,
        )
        .await
        .expect("seed a command")
        .id;
    Side {
        centre,
        auto_slot,
        ls_slot,
        hub,
        spare_hub,
        user,
        command,
    }
}

async fn world(app: &TestApp) -> World {
    let a = side(app, "a").await;
    let b = side(app, "b").await;
    let session = app.login(&app.admin.email, &app.admin.password).await;
    let mut actors = vec![(
        "admin",
        str_of(&session["user"]["id"]),
        str_of(&session["token"]),
    )];
    for (name, role) in [
        ("supervisor", Role::Supervisor),
        ("operator", Role::Operator),
        ("technician", Role::Technician),
        ("viewer", Role::Viewer),
    ] {
        let email = format!("{name}@a.example.com");
        let id = app.seed_user(Some(&a.centre), &email, role).await;
        actors.push((name, id, app.token(&email).await));
    }
    World { a, b, actors }
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

/// The request that exercises `endpoint` against `side`'s rows; `n` makes
/// created names unique. Bodies are otherwise valid, so only the permission
/// and the tenancy decide.
fn request_for(endpoint: &str, side: &Side, n: usize) -> (&'static str, String, Option<Value>) {
    let get = |path: String| ("GET", path, None);
    let post = |path: String, body: Value| ("POST", path, Some(body));
    match endpoint {
        "GET /api/auth/me" => get("/api/auth/me".into()),
        "GET /api/slots" => get("/api/slots?limit=500".into()),
        "GET /api/slots/{id}" => get(format!("/api/slots/{}", side.auto_slot)),
        "POST /api/slots/{id}/restart" => (
            "POST",
            format!("/api/slots/{}/restart", side.auto_slot),
            None,
        ),
        "POST /api/call/start" => post(
            "/api/call/start".into(),
            json!({ "slot_id": side.auto_slot, "phone_number": "+79991234567" }),
        ),
        "POST /api/guacamole/connect" => post(
            "/api/guacamole/connect".into(),
            json!({ "slot_id": side.ls_slot }),
        ),
        "GET /api/archonts/centers" => get("/api/archonts/centers?limit=500".into()),
        "GET /api/archonts/templates" => get("/api/archonts/templates".into()),
        "POST /api/archonts/centers" => post(
            "/api/archonts/centers".into(),
            json!({ "name": format!("New centre {n}"), "template_id": 1 }),
        ),
        "GET /api/users" => get("/api/users?limit=500".into()),
        "GET /api/users/{id}" => get(format!("/api/users/{}", side.user)),
        "POST /api/users" => post(
            "/api/users".into(),
            json!({
                "email": format!("new{n}@example.com"),
                "password": "a long enough password",
                "role": "operator",
                "centre_id": side.centre,
            }),
        ),
        "POST /api/users/{id}/disable" => {
            ("POST", format!("/api/users/{}/disable", side.user), None)
        }
        "POST /api/users/{id}/enable" => ("POST", format!("/api/users/{}/enable", side.user), None),
        "GET /api/roles" => get("/api/roles".into()),
        "GET /api/hubs" => get("/api/hubs?limit=500".into()),
        "GET /api/hubs/{id}" => get(format!("/api/hubs/{}", side.hub)),
        "POST /api/hubs" => post(
            "/api/hubs".into(),
            json!({ "id": format!("new-hub-{n}"), "name": format!("New hub {n}"), "centre_id": side.centre }),
        ),
        "POST /api/hubs/{id}/enrollment-tokens" => (
            "POST",
            format!("/api/hubs/{}/enrollment-tokens", side.hub),
            None,
        ),
        "POST /api/hubs/{id}/revoke" => {
            ("POST", format!("/api/hubs/{}/revoke", side.spare_hub), None)
        }
        "GET /api/hubs/{id}/config" => get(format!("/api/hubs/{}/config", side.hub)),
        "PUT /api/hubs/{id}/config" => (
            "PUT",
            format!("/api/hubs/{}/config", side.hub),
            Some(json!({ "slots": [{ "id": 1, "kind": "auto", "driver": { "type": "sim" } }] })),
        ),
        "GET /api/commands/{id}" => get(format!("/api/commands/{}", side.command)),
        "GET /api/audit" => get("/api/audit?limit=500".into()),
        other => panic!("no request written for {other}"),
    }
}

/// A side whose rows do not exist at all.
fn nowhere() -> Side {
    Side {
        centre: "no-such-centre".into(),
        auto_slot: 987_654_321,
        ls_slot: 987_654_322,
        hub: "no-such-hub".into(),
        spare_hub: "no-such-spare-hub".into(),
        user: "no-such-user".into(),
        command: "no-such-command".into(),
    }
}

/// The ids a list answer of `endpoint` shows for `side`'s row.
fn listed(endpoint: &str, page: &Value, side: &Side) -> bool {
    let wanted = match endpoint {
        "GET /api/slots" => json!(side.auto_slot),
        "GET /api/archonts/centers" => json!(side.centre),
        "GET /api/users" => json!(side.user),
        "GET /api/hubs" => json!(side.hub),
        other => panic!("{other} is not a list"),
    };
    page["items"]
        .as_array()
        .is_some_and(|items| items.iter().any(|i| i["id"] == wanted))
}

api_tests! {
    async fn the_table_covers_every_endpoint_of_the_openapi_document(app) {
        let doc = app.get("/api/openapi.json", None).await.json();
        let mut served = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in ["get", "post", "put", "patch", "delete"] {
                if item.get(method).is_some() {
                    served.insert(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        // The document does not describe itself.
        served.insert("GET /api/openapi.json".to_owned());
        let mut tabled: BTreeSet<String> = EXPECTED.iter().map(|(e, _)| (*e).to_owned()).collect();
        tabled.extend(PUBLIC.iter().map(|e| (*e).to_owned()));
        assert_eq!(served, tabled, "the permission table and the API disagree on the endpoints");
    }

    async fn every_endpoint_every_role_own_and_other_centre(app) {
        let w = world(&app).await;
        let missing = nowhere();
        let mut n = 0;
        let mut failures = Vec::new();
        let mut denied = Vec::new(); // (actor id, endpoint) of every 403
        for (endpoint, cells) in EXPECTED {
            for (column, ((role, actor_id, token), cell)) in w.actors.iter().zip(cells).enumerate() {
                assert_eq!(ROLES[column], *role);
                let (own, other) = cell.split_once(' ').expect("cell is \"OWN OTHER\"");
                let own: u16 = own.parse().expect("OWN is a status");
                let mut check = |what: &str, answer: &api_common::Answer, want: u16| {
                    if answer.status != want {
                        failures.push(format!(
                            "{role:<10} {endpoint} ({what}): {} instead of {want}: {:.200}",
                            answer.status,
                            answer.text()
                        ));
                    }
                    if answer.status == 403 {
                        denied.push((actor_id.clone(), (*endpoint).to_owned()));
                    }
                };
                n += 1;
                let (method, path, body) = request_for(endpoint, &w.a, n);
                let answer = app.request(method, &path, Some(token), body.as_ref()).await;
                check("own centre", &answer, own);
                match other {
                    "-" => {}
                    "listed" | "hidden" => {
                        if answer.status == 200 {
                            let page = answer.json();
                            if !listed(endpoint, &page, &w.a) {
                                failures.push(format!("{role:<10} {endpoint}: own centre's row missing"));
                            }
                            let shown = listed(endpoint, &page, &w.b);
                            if shown != (other == "listed") {
                                failures.push(format!(
                                    "{role:<10} {endpoint}: other centre's row {}",
                                    if shown { "shown" } else { "missing" }
                                ));
                            }
                        }
                    }
                    status => {
                        let want: u16 = status.parse().expect("OTHER is a status");
                        n += 1;
                        let (method, path, body) = request_for(endpoint, &w.b, n);
                        let answer = app.request(method, &path, Some(token), body.as_ref()).await;
                        check("other centre", &answer, want);
                        if want == 404 {
                            // Exactly like a row that does not exist.
                            n += 1;
                            let (method, path, body) = request_for(endpoint, &missing, n);
                            let absent = app.request(method, &path, Some(token), body.as_ref()).await;
                            if (absent.status, &absent.body) != (answer.status, &answer.body) {
                                failures.push(format!(
                                    "{role:<10} {endpoint}: other centre answers {} {:.100}, a missing row {} {:.100}",
                                    answer.status, answer.text(), absent.status, absent.text()
                                ));
                            }
                        }
                    }
                }
            }
        }
        assert!(failures.is_empty(), "permission matrix:\n{}", failures.join("\n"));

        // Every 403 wrote exactly one auth.permission_denied record.
        let admin = &w.actors[0].2;
        let records = app.audit(admin, "action=auth.permission_denied").await;
        let mut audited: Vec<(String, String)> = records
            .iter()
            .map(|r| {
                assert_eq!(r["outcome"], "denied", "{r}");
                (str_of(&r["actor_id"]), str_of(&r["target"]))
            })
            .collect();
        audited.sort();
        denied.sort();
        assert_eq!(audited, denied, "auth.permission_denied records vs the 403s answered");
    }

    async fn no_token_is_401_on_every_protected_endpoint(app) {
        let w = world(&app).await;
        for (endpoint, _) in EXPECTED {
            let (method, path, body) = request_for(endpoint, &w.a, 0);
            for authorization in [None, Some("Bearer"), Some("Bearer not.a.jwt"), Some("Basic YWRtaW46YWRtaW4=")] {
                let mut headers: Vec<(&str, &str)> =
                    authorization.map(|a| vec![("Authorization", a)]).unwrap_or_default();
                let body = body.as_ref().map(|b| b.to_string()).unwrap_or_default();
                if !body.is_empty() {
                    headers.push(("Content-Type", "application/json"));
                }
                let answer = api_common::send(app.addr, method, &path, &headers, body.as_bytes()).await;
                assert_eq!(answer.status, 401, "{endpoint} with {authorization:?}: {}", answer.text());
                assert_eq!(answer.json()["error"]["code"], "unauthorized", "{endpoint}");
            }
        }
        // Nothing was done: the slot got no command, the user is still enabled.
        let admin = app.admin_token().await;
        let user = app.get(&format!("/api/users/{}", w.a.user), Some(&admin)).await.json();
        assert_eq!(user["disabled"], false);
        let hub = app.get(&format!("/api/hubs/{}", w.a.spare_hub), Some(&admin)).await.json();
        assert_eq!(hub["revoked_at_ms"], Value::Null);
    }

    async fn public_endpoints_need_no_token(app) {
        for path in ["/health", "/health/live", "/health/ready", "/metrics", "/api/openapi.json"] {
            let answer = app.get(path, None).await;
            assert_eq!(answer.status, 200, "GET {path}: {}", answer.text());
        }
        let session = app.login(&app.admin.email, &app.admin.password).await;
        let refreshed = app
            .post("/api/auth/refresh", None, &json!({ "refresh_token": session["refresh_token"] }))
            .await;
        assert_eq!(refreshed.status, 200, "{}", refreshed.text());
        let logout = app
            .post("/api/auth/logout", None, &json!({ "refresh_token": refreshed.json()["refresh_token"] }))
            .await;
        assert_eq!(logout.status, 204, "{}", logout.text());
    }

    async fn a_disabled_accounts_access_token_works_until_it_expires_but_me_refuses_it(app) {
        // docs/permissions.md: disabling revokes refresh tokens at once; the
        // access token expires within auth.access_ttl_s. Only /api/auth/me
        // looks the account up; every other endpoint trusts the token.
        let w = world(&app).await;
        let (_, viewer_id, viewer_token) = &w.actors[4];
        let (_, _, supervisor_token) = &w.actors[1];
        let disabled = app
            .post(&format!("/api/users/{viewer_id}/disable"), Some(supervisor_token), &json!({}))
            .await;
        assert_eq!(disabled.status, 200, "{}", disabled.text());
        assert_eq!(disabled.json()["disabled"], true);
        let me = app.get("/api/auth/me", Some(viewer_token)).await;
        assert_eq!(me.status, 401, "{}", me.text());
        let slots = app.get("/api/slots", Some(viewer_token)).await;
        assert_eq!(slots.status, 200, "the access token outlives the account until exp: {}", slots.text());
        let login = app
            .post("/api/auth/login", None, &json!({ "email": "viewer@a.example.com", "password": PASSWORD }))
            .await;
        assert_eq!(login.status, 401, "{}", login.text());
    }

    async fn supervisors_manage_their_centre_but_not_admins_nor_themselves(app) {
        let w = world(&app).await;
        let (_, supervisor_id, supervisor) = &w.actors[1];
        let admin_id = &w.actors[0].1;
        let admin_token = &w.actors[0].2;
        // Not their own account.
        for action in ["disable", "enable"] {
            let answer = app
                .request("POST", &format!("/api/users/{supervisor_id}/{action}"), Some(supervisor), None)
                .await;
            assert_eq!(answer.status, 409, "{action} self: {}", answer.text());
            let answer = app
                .request("POST", &format!("/api/users/{}/{action}", w.actors[0].1), Some(admin_token), None)
                .await;
            assert_eq!(answer.status, 409, "admin {action} self: {}", answer.text());
        }
        // The administrator belongs to no centre: out of the supervisor's sight.
        for path in [format!("/api/users/{admin_id}/disable"), format!("/api/users/{admin_id}/enable")] {
            let answer = app.request("POST", &path, Some(supervisor), None).await;
            assert_eq!(answer.status, 404, "{path}: {}", answer.text());
        }
        // Any role but admin.
        for role in ["supervisor", "operator", "technician", "viewer"] {
            let answer = app
                .post(
                    "/api/users",
                    Some(supervisor),
                    &json!({
                        "email": format!("{role}.new@a.example.com"),
                        "password": "a long enough password",
                        "role": role,
                    }),
                )
                .await;
            assert_eq!(answer.status, 201, "create {role}: {}", answer.text());
            assert_eq!(answer.json()["centre_id"], json!(w.a.centre));
        }
        let before = app.audit(admin_token, "action=auth.permission_denied").await.len();
        let answer = app
            .post(
                "/api/users",
                Some(supervisor),
                &json!({ "email": "boss@a.example.com", "password": "a long enough password", "role": "admin" }),
            )
            .await;
        assert_eq!(answer.status, 403, "a supervisor creating an admin: {}", answer.text());
        // docs/permissions.md: a 403 is audited as auth.permission_denied.
        let after = app.audit(admin_token, "action=auth.permission_denied").await;
        assert_eq!(
            after.len(),
            before + 1,
            "the 403 for a supervisor creating an admin is not audited as auth.permission_denied"
        );
    }
}
