//! What the fleet endpoint refuses, over real QUIC with mutual TLS: a hub
//! claiming another hub's id, certificates that are self-signed, expired or
//! never issued by this control plane, an expired enrollment token, and
//! oversized or malformed frames — each closing only the offending
//! connection, with a reason, while another hub's session goes on.
//!
//! The control plane runs in this process (`control_plane::app::start`, on
//! SQLite); hubs enroll with the real `hubd::sync::enroll`; the misbehaving
//! clients are written here on quinn and rustls.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use control_plane::config::Config;
use control_plane::fleet::ca::FleetCa;
use control_plane::store::{Scope, Store};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;
use vss_shared::HubId;
use vss_shared::enroll::EnrollmentToken;
use vss_shared::sync::{
    CloseCode, ControlMessage, HubMessage, OutboxBatch, OutboxEvent, OutboxState,
};
use vss_tests::sync_client::{Session, client, connect};

struct Plane {
    sync: SocketAddr,
    fingerprint: [u8; 32],
    store: Store,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

async fn start_plane() -> Plane {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.server.http = SocketAddr::from(([127, 0, 0, 1], 0));
    config.sync.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.database.data_dir = dir.path().to_owned();
    config.auth.jwt_secret = "a-test-secret-that-is-long-enough-for-hs256!".into();
    let shutdown = CancellationToken::new();
    let running = control_plane::app::start(config, shutdown.clone())
        .await
        .expect("the control plane starts");
    let url = format!("sqlite://{}", dir.path().join("control-plane.db").display());
    let store = Store::connect(&url, 2).await.expect("store");
    Plane {
        sync: running.sync_addr.expect("sync enabled"),
        fingerprint: running.ca_fingerprint.expect("a fleet CA"),
        store,
        dir,
        shutdown,
    }
}

impl Plane {
    async fn token(&self, hub: &str, ttl_ms: i64) -> String {
        let token = self
            .store
            .create_enrollment_token(&Scope::All, hub, ttl_ms, None)
            .await
            .expect("token")
            .expect("hub exists");
        EnrollmentToken {
            secret: token.token,
            ca_fingerprint: self.fingerprint,
        }
        .to_text()
    }
}

fn identity(data_dir: &Path) -> hubd::sync::identity::Identity {
    hubd::sync::identity::load(data_dir)
        .expect("enrollment loads")
        .expect("enrolled")
}

fn events(range: std::ops::RangeInclusive<u64>) -> Vec<OutboxEvent> {
    range
        .map(|seq| OutboxEvent {
            seq,
            kind: "alert".into(),
            payload: format!("{{\"n\":{seq}}}").into_bytes(),
            created_at_ms: 0,
        })
        .collect()
}

/// Why a connection attempt was refused: the handshake failed, or the
/// control plane closed the connection right after it (TLS 1.3 clients
/// finish before the server has checked their certificate).
async fn refused(outcome: Result<quinn::Connection, String>) -> String {
    match outcome {
        Err(e) => e,
        Ok(connection) => {
            let reason = closed_reason(&connection).await;
            assert!(
                !reason.contains("still open"),
                "the connection must not be kept"
            );
            reason
        }
    }
}

/// Why the connection was closed, as the client sees it.
async fn closed_reason(connection: &quinn::Connection) -> String {
    tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .map(|e| e.to_string())
        .unwrap_or_else(|_| "still open".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_endpoint_refuses_impostors_bad_certificates_and_bad_frames() {
    let plane = start_plane().await;
    let centre = plane
        .store
        .create_centre(
            "Security",
            &control_plane::store::centres::templates()[0],
            None,
        )
        .await
        .expect("centre")
        .id;
    for hub in ["hub-a", "hub-b", "hub-c"] {
        plane
            .store
            .create_hub(&centre, hub, hub)
            .await
            .expect("hub");
    }
    let sync = plane.sync.to_string();
    let (dir_a, dir_b, dir_c) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let token_a = plane.token("hub-a", 60_000).await;
    let token_b = plane.token("hub-b", 60_000).await;
    hubd::sync::enroll::enroll(dir_a.path(), &sync, &token_a)
        .await
        .expect("a enrolls");
    hubd::sync::enroll::enroll(dir_b.path(), &sync, &token_b)
        .await
        .expect("b enrolls");

    // An expired token enrolls nothing.
    let expired = plane.token("hub-c", -1).await;
    let expired_enroll = hubd::sync::enroll::enroll(dir_c.path(), &sync, &expired).await;
    assert!(
        expired_enroll
            .as_ref()
            .is_err_and(|e| e.to_string().contains("token_expired")),
        "{expired_enroll:?}"
    );
    assert!(
        !dir_c.path().join("sync/hub.key").exists(),
        "nothing written"
    );

    let a = identity(dir_a.path());
    let b = identity(dir_b.path());
    let a_config = || client(&a.ca, a.chain.clone(), Some(a.key.clone_key()));

    // Hub B's session, kept open through everything below.
    let mut b_session = Session::open(
        connect(
            plane.sync,
            client(&b.ca, b.chain.clone(), Some(b.key.clone_key())),
        )
        .await
        .expect("b connects"),
    )
    .await;
    b_session
        .hello("hub-b", OutboxState::new(1, 4).expect("range"))
        .await;
    assert!(
        matches!(b_session.next().await, Some(ControlMessage::Welcome(w)) if w.committed_seq == 0)
    );

    // A's certificate claiming to be B: refused, nothing of B's touched.
    let mut impostor =
        Session::open(connect(plane.sync, a_config()).await.expect("a connects")).await;
    impostor
        .hello("hub-b", OutboxState::new(1, 1).expect("range"))
        .await;
    let reason = impostor.expect_close(CloseCode::Unauthorized).await;
    assert!(reason.contains("other than the certificate's"), "{reason}");

    // A certificate the fleet CA signed but this control plane never issued
    // (never recorded): refused after the handshake.
    let ca = FleetCa::load_or_create(plane.dir.path(), 0).expect("the fleet CA");
    let forged_key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&forged_key)
        .and_then(|c| c.pem())
        .expect("csr");
    let now = control_plane::store::now_ms();
    let (_, unrecorded) = ca
        .sign_hub_csr(&csr, &HubId::new("hub-a").expect("id"), now)
        .expect("signed");
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(forged_key.serialize_der()));
    let connection = connect(plane.sync, client(&a.ca, vec![unrecorded], Some(key())))
        .await
        .expect("the TLS handshake passes: the CA signed it");
    let reason = closed_reason(&connection).await;
    assert!(
        reason.contains("not known to this control plane"),
        "{reason}"
    );

    // Expired (signed long ago) and self-signed certificates fail the handshake.
    let (_, expired_cert) = ca
        .sign_hub_csr(
            &csr,
            &HubId::new("hub-a").expect("id"),
            now - 900 * 86_400_000,
        )
        .expect("signed");
    let reason =
        refused(connect(plane.sync, client(&a.ca, vec![expired_cert], Some(key()))).await).await;
    assert!(
        reason.to_lowercase().contains("expired") || reason.contains("certificate"),
        "{reason}"
    );
    let self_signed = rcgen::CertificateParams::new(vec!["hub-a".into()])
        .expect("params")
        .self_signed(&forged_key)
        .expect("self-signed");
    let reason = refused(
        connect(
            plane.sync,
            client(&a.ca, vec![self_signed.der().clone()], Some(key())),
        )
        .await,
    )
    .await;
    assert!(
        reason.contains("certificate") || reason.contains("issuer") || reason.contains("Unknown"),
        "{reason}"
    );
    // No certificate at all.
    let connection = connect(plane.sync, client(&a.ca, Vec::new(), None))
        .await
        .expect("TLS allows it for enrollment");
    let reason = closed_reason(&connection).await;
    assert!(reason.contains("client certificate"), "{reason}");

    // Oversized and malformed frames close only that connection, with a reason.
    let mut big = Session::open(connect(plane.sync, a_config()).await.expect("a connects")).await;
    big.hello("hub-a", OutboxState::new(1, 1).expect("range"))
        .await;
    assert!(matches!(big.next().await, Some(ControlMessage::Welcome(_))));
    big.raw(&u32::MAX.to_be_bytes()).await;
    big.expect_close(CloseCode::FrameTooLarge).await;
    let mut garbage =
        Session::open(connect(plane.sync, a_config()).await.expect("a connects")).await;
    garbage
        .hello("hub-a", OutboxState::new(1, 1).expect("range"))
        .await;
    assert!(matches!(
        garbage.next().await,
        Some(ControlMessage::Welcome(_))
    ));
    garbage
        .raw(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await;
    garbage.expect_close(CloseCode::MalformedMessage).await;

    // B's session went on through all of it: its events are committed and acked.
    b_session
        .send(&HubMessage::OutboxBatch(OutboxBatch {
            events: events(1..=3),
        }))
        .await;
    match b_session.next().await {
        Some(ControlMessage::Ack(ack)) => assert_eq!(ack.up_to_seq, 3),
        other => panic!("expected an Ack, got {other:?}"),
    }
    assert_eq!(
        plane
            .store
            .hub_events("hub-b", 1, 10)
            .await
            .expect("events")
            .len(),
        3
    );
    assert!(
        plane
            .store
            .hub_events("hub-a", 1, 10)
            .await
            .expect("events")
            .is_empty()
    );
    drop(b_session.connection);
    plane.shutdown.cancel();
}
