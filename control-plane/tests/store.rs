//! The store test suite, run on both backends: every test exists twice, as
//! `sqlite::…` and `postgres::…`, against a fresh database each.

mod common;

use control_plane::rbac::Role;
use control_plane::store::audit::{AuditFilter, NewAudit, Outcome};
use control_plane::store::centres::templates;
use control_plane::store::fleet::Redeemed;
use control_plane::store::ingest::Ingested;
use control_plane::store::page::PageRequest;
use control_plane::store::slots::SlotReport;
use control_plane::store::tokens::Rotation;
use control_plane::store::users::NewUser;
use control_plane::store::{Scope, Store, StoreError};
use vss_shared::SlotState;
use vss_shared::sync::OutboxEvent;

fn page(limit: i64) -> PageRequest {
    PageRequest::parse(None, Some(limit)).unwrap()
}

fn next(cursor: &Option<String>, limit: i64) -> PageRequest {
    PageRequest::parse(cursor.as_deref(), Some(limit)).unwrap()
}

async fn centre(store: &Store, name: &str) -> String {
    store
        .create_centre(name, &templates()[0], None)
        .await
        .unwrap()
        .id
}

fn new_user(centre: Option<&str>, email: &str, role: Role) -> NewUser {
    NewUser {
        centre_id: centre.map(str::to_owned),
        email: email.to_owned(),
        role,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
    }
}

fn report(n: i64, state: SlotState) -> SlotReport {
    SlotReport {
        hub_slot_id: n,
        name: format!("Slot {n:02}"),
        kind: "auto".into(),
        sip_number: format!("{}", 6000 + n),
        fsm_state: state,
        fault_reason: None,
        remote_host: None,
    }
}

on_both_backends! {
    async fn migrations_are_idempotent_and_newer_schemas_refused(db) {
        assert_eq!(db.store.migrate().await.unwrap(), Vec::<i64>::new());
        let other = Store::connect(&db.url, 2).await.unwrap();
        assert!(other.ping(std::time::Duration::from_secs(1)).await);
        control_plane::on_pool!(other.pool(), |p| {
            sqlx::query("INSERT INTO schema_migrations (version, applied_at_ms) VALUES (999, 0)")
                .execute(p)
                .await
                .unwrap();
        });
        let err = other.migrate().await.unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 999, .. }), "{err}");
        other.close().await;
    }

    async fn users_are_unique_by_email_and_scoped_by_centre(db) {
        let s = &db.store;
        let a = centre(s, "Alpha").await;
        let b = centre(s, "Beta").await;
        let alice = s.create_user(new_user(Some(&a), "Alice@Example.com", Role::Operator)).await.unwrap();
        assert_eq!(alice.email, "alice@example.com");
        let dup = s.create_user(new_user(Some(&b), "ALICE@example.com", Role::Viewer)).await.unwrap_err();
        assert!(matches!(dup, StoreError::Conflict(_)), "{dup}");
        let found = s.credentials_by_email(" alice@EXAMPLE.com ").await.unwrap().unwrap();
        assert_eq!(found.user, alice);
        assert!(found.password_hash.starts_with("$argon2id$"));
        assert_eq!(s.user(&Scope::Centre(a.clone()), &alice.id).await.unwrap(), Some(alice.clone()));
        assert_eq!(s.user(&Scope::Centre(b.clone()), &alice.id).await.unwrap(), None);
        assert_eq!(s.user(&Scope::All, &alice.id).await.unwrap(), Some(alice.clone()));
        assert!(s.set_user_disabled(&Scope::Centre(a.clone()), &alice.id, true).await.unwrap());
        assert!(!s.set_user_disabled(&Scope::Centre(b), &alice.id, false).await.unwrap());
        assert!(s.user(&Scope::All, &alice.id).await.unwrap().unwrap().disabled);
    }

    async fn user_pages_follow_the_cursor_without_gaps(db) {
        let s = &db.store;
        let a = centre(s, "Alpha").await;
        for i in 0..7 {
            s.create_user(new_user(Some(&a), &format!("u{i}@x.io"), Role::Operator)).await.unwrap();
        }
        s.create_user(new_user(None, "root@x.io", Role::Admin)).await.unwrap();
        let mut seen = Vec::new();
        let mut request = page(3);
        loop {
            let p = s.users(&Scope::Centre(a.clone()), &request).await.unwrap();
            assert!(p.items.len() <= 3);
            seen.extend(p.items.iter().map(|u| u.email.clone()));
            match p.next_cursor {
                Some(_) => request = next(&p.next_cursor, 3),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(seen, (0..7).map(|i| format!("u{i}@x.io")).collect::<Vec<_>>());
        assert_eq!(s.users(&Scope::All, &page(100)).await.unwrap().items.len(), 8);
        assert_eq!(s.count_users().await.unwrap(), 8);
    }

    async fn centres_come_from_templates_and_are_scoped(db) {
        let s = &db.store;
        let t = &templates()[1];
        let c = s.create_centre("  Sales East ", t, Some("creator")).await.unwrap();
        assert_eq!(c.name, "Sales East");
        assert_eq!(c.template, "outbound-sales");
        assert_eq!(c.settings["campaign_defaults"]["max_attempts"], 5);
        let dup = s.create_centre("Sales East", t, None).await.unwrap_err();
        assert!(matches!(dup, StoreError::Conflict(_)));
        let other = centre(s, "Other").await;
        let mine = s.centres(&Scope::Centre(c.id.clone()), &page(10)).await.unwrap();
        assert_eq!(mine.items.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["Sales East"]);
        assert_eq!(s.centres(&Scope::All, &page(10)).await.unwrap().items.len(), 2);
        assert!(s.centre(&Scope::Centre(c.id.clone()), &other).await.unwrap().is_none());
    }

    async fn refresh_tokens_rotate_and_reuse_revokes_the_family(db) {
        let s = &db.store;
        let user = s.create_user(new_user(None, "root@x.io", Role::Admin)).await.unwrap();
        let (first, family) = s.issue_refresh_token(&user.id, 60_000).await.unwrap();
        let Rotation::Rotated { token: second, family_id, user_id } = s.rotate_refresh_token(&first, 60_000).await.unwrap() else {
            panic!("first rotation");
        };
        assert_eq!((family_id.as_str(), user_id.as_str()), (family.as_str(), user.id.as_str()));
        // The old token again: theft. The whole family dies, including `second`.
        assert_eq!(
            s.rotate_refresh_token(&first, 60_000).await.unwrap(),
            Rotation::Reused { user_id: user.id.clone(), family_id: family.clone() }
        );
        // `second` died with its family; refused, without a second alarm.
        assert_eq!(
            s.rotate_refresh_token(&second, 60_000).await.unwrap(),
            Rotation::Revoked { user_id: user.id.clone() }
        );
        assert_eq!(s.rotate_refresh_token("not-a-token", 60_000).await.unwrap(), Rotation::Unknown);
        // Expiry and logout.
        let (short, _) = s.issue_refresh_token(&user.id, -1).await.unwrap();
        assert_eq!(s.rotate_refresh_token(&short, 60_000).await.unwrap(), Rotation::Expired);
        let (live, _) = s.issue_refresh_token(&user.id, 60_000).await.unwrap();
        assert!(s.revoke_refresh_family(&live).await.unwrap());
        // Logged out, never used: refused without a theft alarm.
        assert_eq!(
            s.rotate_refresh_token(&live, 60_000).await.unwrap(),
            Rotation::Revoked { user_id: user.id.clone() }
        );
        assert!(!s.revoke_refresh_family("unknown").await.unwrap());
    }

    async fn audit_log_appends_filters_and_pages_newest_first(db) {
        let s = &db.store;
        let a = centre(s, "Alpha").await;
        for i in 0..5 {
            s.audit(NewAudit {
                centre_id: Some(a.clone()),
                actor_email: Some("a@x.io".into()),
                action: if i % 2 == 0 { "auth.login".into() } else { "POST /api/users".into() },
                outcome: Some(if i == 4 { Outcome::Denied } else { Outcome::Ok }),
                source_addr: Some("127.0.0.1".into()),
                detail: Some(format!("n={i} ' OR 1=1; --")),
                ..NewAudit::default()
            })
            .await
            .unwrap();
        }
        s.audit(NewAudit { action: "auth.login".into(), ..NewAudit::default() }).await.unwrap();
        let all = s.audit_entries(&Scope::All, &AuditFilter::default(), &page(100)).await.unwrap();
        assert_eq!(all.items.len(), 6);
        assert!(all.items.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        let logins = AuditFilter { action: Some("auth.login".into()), ..AuditFilter::default() };
        let mine = s.audit_entries(&Scope::Centre(a.clone()), &logins, &page(2)).await.unwrap();
        assert_eq!(mine.items.len(), 2);
        let rest = s.audit_entries(&Scope::Centre(a.clone()), &logins, &next(&mine.next_cursor, 2)).await.unwrap();
        assert_eq!(rest.items.len(), 1);
        assert_eq!(rest.next_cursor, None);
        let denied = AuditFilter { outcome: Some("denied".into()), ..AuditFilter::default() };
        let d = s.audit_entries(&Scope::All, &denied, &page(10)).await.unwrap();
        assert_eq!(d.items.len(), 1);
        assert_eq!(d.items[0].detail.as_deref(), Some("n=4 ' OR 1=1; --"));
        let bad = PageRequest::parse(Some(&{
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v1:abc")
        }), None).unwrap();
        assert!(matches!(
            s.audit_entries(&Scope::All, &AuditFilter::default(), &bad).await,
            Err(StoreError::Page(_))
        ));
    }

    async fn hubs_enroll_once_and_revoke(db) {
        let s = &db.store;
        let a = centre(s, "Alpha").await;
        let b = centre(s, "Beta").await;
        let hub = s.create_hub(&a, "hub-msk-01", "Moscow 1").await.unwrap();
        assert!(matches!(s.create_hub(&b, "hub-msk-01", "dup").await, Err(StoreError::Conflict(_))));
        let token = s.create_enrollment_token(&Scope::Centre(a.clone()), &hub.id, 60_000, None).await.unwrap().unwrap();
        assert!(token.token.len() >= 40);
        assert!(s.create_enrollment_token(&Scope::Centre(b.clone()), &hub.id, 60_000, None).await.unwrap().is_none());
        assert!(s.hub(&Scope::Centre(b.clone()), &hub.id).await.unwrap().is_none());
        assert!(!s.revoke_hub(&Scope::Centre(b), &hub.id).await.unwrap());
        assert!(s.revoke_hub(&Scope::Centre(a.clone()), &hub.id).await.unwrap());
        assert!(s.hub(&Scope::All, &hub.id).await.unwrap().unwrap().revoked_at_ms.is_some());
        assert!(s.create_enrollment_token(&Scope::All, &hub.id, 60_000, None).await.unwrap().is_none());
    }

    async fn slots_are_reported_by_hubs_and_scoped(db) {
        let s = &db.store;
        let a = centre(s, "Alpha").await;
        let b = centre(s, "Beta").await;
        s.create_hub(&a, "hub-a", "A").await.unwrap();
        s.create_hub(&b, "hub-b", "B").await.unwrap();
        let first = s.upsert_slot_report("hub-a", &report(1, SlotState::Ready)).await.unwrap();
        s.upsert_slot_report("hub-a", &report(2, SlotState::ActiveCall)).await.unwrap();
        s.upsert_slot_report("hub-b", &report(1, SlotState::Fault)).await.unwrap();
        // A second report updates the same row.
        assert_eq!(s.upsert_slot_report("hub-a", &report(1, SlotState::Calling)).await.unwrap(), first);
        let mine = s.slots(&Scope::Centre(a.clone()), &page(10)).await.unwrap();
        let states: Vec<(&str, &str)> = mine.items.iter().map(|s| (s.fsm_state.as_str(), s.status.as_str())).collect();
        assert_eq!(states, [("CALLING", "busy"), ("ACTIVE_CALL", "busy")]);
        assert!(mine.items.iter().all(|s| s.hub_last_seen_ms.is_some()));
        assert_eq!(s.slots(&Scope::All, &page(10)).await.unwrap().items.len(), 3);
        assert!(s.slot(&Scope::Centre(b.clone()), first).await.unwrap().is_none());
        let (slot, _) = s.slot(&Scope::Centre(a.clone()), first).await.unwrap().unwrap();
        let command = s.queue_command(&slot, "restart_slot", &serde_json::json!({}), 60_000, None).await.unwrap();
        assert_eq!((command.status.as_str(), command.hub_id.as_str()), ("queued", "hub-a"));
        // A revoked hub's slots read as offline.
        s.revoke_hub(&Scope::All, "hub-a").await.unwrap();
        let (slot, _) = s.slot(&Scope::All, first).await.unwrap().unwrap();
        assert_eq!(slot.status, "offline");
        assert!(s.upsert_slot_report("no-such-hub", &report(1, SlotState::Ready)).await.is_err());
    }

    async fn outbox_ingest_is_exactly_once_and_applies_slot_transitions_in_order(db) {
        let s = &db.store;
        let a = centre(s, "Alpha").await;
        s.create_hub(&a, "hub-a", "A").await.unwrap();
        s.create_hub(&a, "hub-b", "B").await.unwrap();
        assert_eq!(s.sync_record("hub-a").await.unwrap().committed_seq, None);
        let transition = |seq: u64, to: &str, with_identity: bool| {
            let identity = if with_identity {
                r#","slot":{"kind":"auto","name":"GSM 1","sip_number":"6001"}"#
            } else {
                ""
            };
            OutboxEvent {
                seq,
                kind: "slot_transition".into(),
                payload: format!(
                    r#"{{"slot_id":1,"from":"IDLE","to":"{to}","event":"device_bound","at_ms":{seq}{identity}}}"#
                )
                .into_bytes(),
                created_at_ms: seq as i64,
            }
        };
        let cdr = |seq: u64| OutboxEvent {
            seq,
            kind: "cdr".into(),
            payload: b"{\"call_id\":\"c1\"}".to_vec(),
            created_at_ms: 0,
        };
        // The first batch: a slot appears from its transition.
        let first = vec![transition(1, "ASSIGNED", true), cdr(2), transition(3, "READY", true)];
        let done = s.ingest_outbox("hub-a", &first, 3).await.unwrap();
        assert_eq!((done.inserted, done.slots_changed), (3, 2));
        assert_eq!(s.sync_record("hub-a").await.unwrap().committed_seq, Some(3));
        // The same events again (a resend after a lost ack): nothing twice,
        // and the older transition does not roll the slot back.
        let again = s.ingest_outbox("hub-a", &first[..1], 3).await.unwrap();
        assert_eq!((again.inserted, again.slots_changed), (0, 0));
        let slots = s.slots(&Scope::All, &page(10)).await.unwrap().items;
        assert_eq!(slots.len(), 1);
        assert_eq!(
            (slots[0].fsm_state.as_str(), slots[0].name.as_str(), slots[0].internal_sip_number.as_str(), slots[0].device_type.as_str()),
            ("READY", "GSM 1", "6001", "auto")
        );
        // A transition from an older hub (no identity) updates the listed slot.
        s.ingest_outbox("hub-a", &[transition(4, "CALLING", false)], 4).await.unwrap();
        let slots = s.slots(&Scope::All, &page(10)).await.unwrap().items;
        assert_eq!(slots[0].fsm_state, "CALLING");
        // A committed seq never goes backwards.
        s.ingest_outbox("hub-a", &[], 2).await.unwrap();
        assert_eq!(s.sync_record("hub-a").await.unwrap().committed_seq, Some(4));
        // Another hub's seqs are its own.
        let b = s.ingest_outbox("hub-b", &[cdr(1), cdr(2)], 2).await.unwrap();
        assert_eq!(b.inserted, 2);
        let seqs: Vec<u64> = s.hub_events("hub-a", 1, 100).await.unwrap().iter().map(|e| e.0).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(s.hub_events("hub-b", 1, 100).await.unwrap().len(), 2);
        // A payload that is not a transition's shape is stored, not applied.
        let odd = OutboxEvent { seq: 5, kind: "slot_transition".into(), payload: b"not json".to_vec(), created_at_ms: 0 };
        assert_eq!(s.ingest_outbox("hub-a", &[odd], 5).await.unwrap(), Ingested { inserted: 1, slots_changed: 0 });
    }

    async fn outbox_redelivery_overlapping_committed_rows_is_stored_once(db) {
        let s = &db.store;
        let a = centre(s, "Alpha").await;
        s.create_hub(&a, "hub-a", "A").await.unwrap();
        s.ingest_outbox("hub-a", &[], 0).await.unwrap();
        // Payloads every text encoding must carry as they are, and a batch
        // larger than one streaming chunk (1 MiB) on Postgres's COPY path.
        let body = |seq: u64, tag: &str| {
            format!("{{\"seq\":{seq},\"tag\":\"{tag}\",\"odd\":\"tab\\t nl\\n bs\\\\ \u{e9}\u{1f600} \t|\\N\",\"pad\":\"{}\"}}", "x".repeat(700))
        };
        let events = |seqs: std::ops::RangeInclusive<u64>, tag: &str| -> Vec<OutboxEvent> {
            seqs.map(|seq| OutboxEvent { seq, kind: "cdr".into(), payload: body(seq, tag).into_bytes(), created_at_ms: seq as i64 }).collect()
        };
        let first = s.ingest_outbox("hub-a", &events(1..=2000, "first"), 2000).await.unwrap();
        assert_eq!(first.inserted, 2000);
        // A resend after a lost ack, overlapping the committed rows and going
        // beyond them: only the new rows are stored, the old ones untouched.
        let again = s.ingest_outbox("hub-a", &events(1001..=2500, "again"), 2500).await.unwrap();
        assert_eq!(again.inserted, 500);
        assert_eq!(s.sync_record("hub-a").await.unwrap().committed_seq, Some(2500));
        let stored = s.hub_events("hub-a", 1, 10_000).await.unwrap();
        assert_eq!(stored.len(), 2500);
        for (i, (seq, kind, payload)) in stored.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(kind, "cdr");
            assert_eq!(*payload, body(*seq, if *seq <= 2000 { "first" } else { "again" }));
        }
        // A payload that is not UTF-8 is stored lossily, not refused.
        let odd = OutboxEvent { seq: 2501, kind: "cdr".into(), payload: vec![b'{', 0xff, b'}'], created_at_ms: 0 };
        assert_eq!(s.ingest_outbox("hub-a", &[odd], 2501).await.unwrap().inserted, 1);
        assert_eq!(s.hub_events("hub-a", 2501, 2501).await.unwrap()[0].2, "{\u{fffd}}");
    }

    async fn outbox_rows_already_stored_above_the_committed_seq_are_kept_once(db) {
        // A row above the hub's committed seq can only come from outside the
        // protocol (an operator lowering the record, an older instance): the
        // batch that meets it still stores every other row exactly once.
        let s = &db.store;
        let a = centre(s, "Alpha").await;
        s.create_hub(&a, "hub-a", "A").await.unwrap();
        s.create_hub(&a, "hub-b", "B").await.unwrap();
        let cdr = |seq: u64| OutboxEvent { seq, kind: "cdr".into(), payload: format!("{{\"n\":{seq}}}").into_bytes(), created_at_ms: 0 };
        s.ingest_outbox("hub-a", &[], 0).await.unwrap();
        assert_eq!(s.ingest_outbox("hub-a", &(1..=10).map(cdr).collect::<Vec<_>>(), 10).await.unwrap().inserted, 10);
        control_plane::on_pool!(s.pool(), |p| {
            sqlx::query("INSERT INTO hub_events (hub_id, seq, kind, payload, created_at_ms, received_at_ms) VALUES ('hub-a', 15, 'cdr', 'kept', 0, 0)")
                .execute(p)
                .await
                .unwrap();
        });
        let done = s.ingest_outbox("hub-a", &(11..=20).map(cdr).collect::<Vec<_>>(), 20).await.unwrap();
        assert_eq!(done.inserted, 9);
        assert_eq!(s.sync_record("hub-a").await.unwrap().committed_seq, Some(20));
        let stored = s.hub_events("hub-a", 1, 100).await.unwrap();
        assert_eq!(stored.iter().map(|e| e.0).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
        assert_eq!(stored[14].2, "kept");
        // The same seqs of another hub are that hub's own rows.
        s.ingest_outbox("hub-b", &[], 0).await.unwrap();
        assert_eq!(s.ingest_outbox("hub-b", &(1..=20).map(cdr).collect::<Vec<_>>(), 20).await.unwrap().inserted, 20);
        assert_eq!(s.hub_events("hub-a", 1, 100).await.unwrap().len(), 20);
    }

    async fn enrollment_tokens_are_single_use_and_expire(db) {
        let s = &db.store;
        let a = centre(s, "Alpha").await;
        s.create_hub(&a, "hub-a", "A").await.unwrap();
        let token = s.create_enrollment_token(&Scope::All, "hub-a", 60_000, None).await.unwrap().unwrap();
        let now = control_plane::store::now_ms();
        assert_eq!(s.redeem_enrollment_token("nope", now).await.unwrap(), Redeemed::Unknown);
        assert_eq!(s.redeem_enrollment_token(&token.token, now + 120_000).await.unwrap(), Redeemed::Expired);
        assert!(matches!(s.redeem_enrollment_token(&token.token, now).await.unwrap(), Redeemed::Hub(h) if h.id == "hub-a"));
        assert_eq!(s.redeem_enrollment_token(&token.token, now).await.unwrap(), Redeemed::Used);
        let other = s.create_enrollment_token(&Scope::All, "hub-a", 60_000, None).await.unwrap().unwrap();
        s.record_hub_certificate("hub-a", "ab12", now, now + 1).await.unwrap();
        assert_eq!(s.hub_by_certificate("ab12").await.unwrap().map(|h| h.id), Some("hub-a".into()));
        assert_eq!(s.hub_by_certificate("cd34").await.unwrap(), None);
        s.revoke_hub(&Scope::All, "hub-a").await.unwrap();
        assert_eq!(s.redeem_enrollment_token(&other.token, now).await.unwrap(), Redeemed::Revoked);
    }
}
