//! The `GET /api/slots` page cache (`server.list_cache_ms`), through HTTP on
//! both backends: a write through this control plane is visible to the very
//! next request, a write through another instance (here: the test's own
//! `Store`) only once the page is re-read, and one centre never gets another
//! centre's cached page.

mod api_common;
mod common;

use api_common::TestApp;
use control_plane::rbac::Role;
use control_plane::store::slots::SlotReport;
use serde_json::Value;
use vss_shared::SlotState;

/// Long enough that no page expires during a test: what a test sees fresh
/// was made fresh by a write, never by the clock.
fn long_cache(config: &mut control_plane::config::Config) {
    config.server.list_cache_ms = 10_000;
}

/// `(hub_slot_id, status, fsm_state)` of every slot on the first page.
async fn listing(app: &TestApp, token: &str) -> Vec<(i64, String, String)> {
    let answer = app.get("/api/slots", Some(token)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let page = answer.json();
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|s: &Value| {
            (
                s["hub_slot_id"].as_i64().expect("hub_slot_id"),
                s["status"].as_str().expect("status").to_owned(),
                s["fsm_state"].as_str().expect("fsm_state").to_owned(),
            )
        })
        .collect()
}

fn report(n: i64, state: SlotState) -> SlotReport {
    SlotReport {
        hub_slot_id: n,
        name: format!("Slot {n}"),
        kind: "auto".into(),
        sip_number: format!("{}", 6000 + n),
        fsm_state: state,
        fault_reason: None,
        remote_host: None,
    }
}

api_tests! {
    async fn own_writes_show_at_once_other_instances_writes_on_the_next_read(app, long_cache) {
        let centre = app.seed_centre("Centre A").await;
        app.seed_hub(&centre, "hub-a").await;
        app.seed_slot("hub-a", 1, "auto", SlotState::Ready).await;
        let admin = app.admin_token().await;

        let first = listing(&app, &admin).await;
        assert_eq!(first, vec![(1, "free".into(), "READY".into())]);

        // Another instance ingests a report: this instance's cached page is
        // still served (within list_cache_ms) ...
        app.db
            .store
            .upsert_slot_report("hub-a", &report(1, SlotState::ActiveCall))
            .await
            .expect("report");
        assert_eq!(listing(&app, &admin).await, first);

        // ... until a write through this instance outdates it: the revoke is
        // visible to the very next request, and so is the other report.
        let revoked = app
            .post("/api/hubs/hub-a/revoke", Some(&admin), &serde_json::json!({}))
            .await;
        assert!(revoked.status < 300, "revoke: {} {}", revoked.status, revoked.text());
        assert_eq!(
            listing(&app, &admin).await,
            vec![(1, "offline".into(), "ACTIVE_CALL".into())]
        );
    }

    async fn a_cached_page_never_crosses_centres(app, long_cache) {
        let a = app.seed_centre("Centre A").await;
        let b = app.seed_centre("Centre B").await;
        app.seed_hub(&a, "hub-a").await;
        app.seed_hub(&b, "hub-b").await;
        app.seed_slot("hub-a", 1, "auto", SlotState::Ready).await;
        app.seed_slot("hub-b", 2, "auto", SlotState::Fault).await;
        app.seed_user(Some(&a), "sup@a.example.com", Role::Supervisor).await;
        app.seed_user(Some(&b), "sup@b.example.com", Role::Supervisor).await;
        let admin = app.admin_token().await;
        let sup_a = app.token("sup@a.example.com").await;
        let sup_b = app.token("sup@b.example.com").await;

        // Each scope's page is cached in turn; each caller gets only its own.
        for _ in 0..2 {
            assert_eq!(listing(&app, &admin).await.len(), 2);
            assert_eq!(listing(&app, &sup_a).await, vec![(1, "free".into(), "READY".into())]);
            assert_eq!(listing(&app, &sup_b).await, vec![(2, "fault".into(), "FAULT".into())]);
        }
        // The cache sits behind authentication and the permission check.
        assert_eq!(app.get("/api/slots", None).await.status, 401);
        assert_eq!(app.get("/api/slots", Some("not-a-token")).await.status, 401);
    }
}
