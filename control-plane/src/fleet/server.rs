//! The QUIC endpoint hubs connect to: enrollment (ALPN `vss-enroll/1`, no
//! client certificate) and sync sessions (ALPN `vss-sync/1`, mutual TLS with a
//! certificate this control plane's fleet CA issued).
//!
//! It owns the transport only: the protocol's decisions are
//! `vss_shared::sync`'s sans-IO types, the durable state is the [`Store`]'s.
//! It must never acknowledge an outbox event before the store committed it,
//! and never let one hub's connection touch another hub's rows: every session
//! is bound to the hub its client certificate was issued to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use vss_shared::enroll::{
    ENROLL_ALPN, EnrollRequest, EnrollResponse, MAX_ENROLL_MESSAGE, SYNC_ALPN, fingerprint_hex,
};
use vss_shared::sync::version::SUPPORTED;
use vss_shared::sync::{
    Close, CloseCode, Command, CommandId, CommandOutcome, ConfigOutcome, ConfigPush,
    ControlMessage, FrameConfig, FrameDecoder, HeartbeatAck, HubMessage, Ingest, OutboxEvent,
    accept_hello, encode_frame,
};

use super::ca::{self, FleetCa};
use crate::store::audit::{NewAudit, Outcome};
use crate::store::fleet::Redeemed;
use crate::store::hub_config::{ConfigSlot, HubAnswer};
use crate::store::{Store, now_ms};

/// How long a hub has to open its stream and say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no traffic for this long is dead (hubs heartbeat every 10 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the endpoint looks, with one query each for the whole fleet,
/// for hubs revoked and commands queued through another instance (this
/// instance's own revocations and commands act at once).
const FLEET_POLL: Duration = Duration::from_secs(5);
/// How often heartbeats are written to the store, all hubs in one transaction
/// (well inside the 30 s online window of `GET /api/slots`).
const SEEN_FLUSH: Duration = Duration::from_secs(5);
/// How often queued commands past their TTL are marked expired.
const COMMAND_POLL: Duration = Duration::from_secs(5);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// TLS configuration failed.
    #[error("sync TLS setup: {0}")]
    Tls(String),
    /// The UDP address cannot be bound.
    #[error(
        "sync.listen {addr}: cannot listen: {source}; stop what listens there or set sync.listen"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The fleet CA failed.
    #[error(transparent)]
    Ca(#[from] ca::CaError),
}

/// A running session, so a newer connection or a revocation can end it.
struct Session {
    id: u64,
    end: CancellationToken,
    /// Why it is being ended (read by the session when `end` fires).
    why: Arc<Mutex<Option<Close>>>,
    done: Arc<tokio::sync::Notify>,
    finished: Arc<std::sync::atomic::AtomicBool>,
    /// Woken when a command is queued for the hub.
    commands: Arc<tokio::sync::Notify>,
    /// Woken when the hub's desired configuration changes.
    config: Arc<tokio::sync::Notify>,
}

/// The fleet endpoint's shared state.
pub struct Fleet {
    store: Store,
    ca: Arc<FleetCa>,
    sessions: Mutex<HashMap<String, Session>>,
    next_session: AtomicU64,
    /// Heartbeats since the last flush: hub id → when.
    seen: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// A started endpoint.
pub struct Endpoint {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    /// The shared state (for revocations from the API).
    pub fleet: Arc<Fleet>,
    /// Finishes when the endpoint stopped.
    pub done: tokio::task::JoinHandle<()>,
}

/// HMAC-SHA256 key for QUIC stateless resets, derived from the fleet CA key.
///
/// A restarted control plane (or another instance behind the same address)
/// answers packets of connections it does not know with a stateless reset the
/// hub can verify, so hubs reconnect at once instead of waiting out the idle
/// timeout.
struct ResetKey([u8; 32]);

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        if let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            mac.update(data);
            let tag = mac.finalize().into_bytes();
            let n = signature_out.len().min(tag.len());
            signature_out[..n].copy_from_slice(&tag[..n]);
        }
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .map_err(|_| quinn::crypto::CryptoError)?;
        mac.update(data);
        mac.verify_slice(signature)
            .map_err(|_| quinn::crypto::CryptoError)
    }
}

fn tls_config(ca: &FleetCa, names: &[String]) -> Result<rustls::ServerConfig, FleetError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let identity = ca.server_identity(names, now_ms())?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.cert_der().clone())
        .map_err(|e| FleetError::Tls(e.to_string()))?;
    // Enrollment connects without a certificate; sync sessions require one
    // (checked per connection, by ALPN).
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| FleetError::Tls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| FleetError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| FleetError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![SYNC_ALPN.to_vec(), ENROLL_ALPN.to_vec()];
    Ok(config)
}

/// Binds the endpoint on `listen` and serves until `shutdown`.
pub fn start(
    store: Store,
    ca: Arc<FleetCa>,
    listen: SocketAddr,
    server_names: &[String],
    shutdown: CancellationToken,
) -> Result<Endpoint, FleetError> {
    let tls = tls_config(&ca, server_names)?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| FleetError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .map_err(|_| FleetError::Tls("idle timeout out of range".into()))?,
    ));
    transport.max_concurrent_bidi_streams(4u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    server.transport_config(Arc::new(transport));
    let socket = std::net::UdpSocket::bind(listen).map_err(|source| FleetError::Bind {
        addr: listen,
        source,
    })?;
    let endpoint_config = quinn::EndpointConfig::new(Arc::new(ResetKey(
        ca.derived_secret("quic stateless reset"),
    )));
    let endpoint = quinn::Endpoint::new(
        endpoint_config,
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| FleetError::Bind {
        addr: listen,
        source,
    })?;
    let addr = endpoint.local_addr().map_err(|source| FleetError::Bind {
        addr: listen,
        source,
    })?;
    let fleet = Arc::new(Fleet {
        store,
        ca,
        sessions: Mutex::new(HashMap::new()),
        next_session: AtomicU64::new(1),
        seen: Mutex::new(HashMap::new()),
    });
    let serving = fleet.clone();
    let done = tokio::spawn(async move { serve(endpoint, serving, shutdown).await });
    tracing::info!(%addr, "fleet endpoint listening (QUIC)");
    Ok(Endpoint { addr, fleet, done })
}

async fn serve(endpoint: quinn::Endpoint, fleet: Arc<Fleet>, shutdown: CancellationToken) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut expiry = tokio::time::interval(COMMAND_POLL);
    let mut flush = tokio::time::interval(SEEN_FLUSH);
    let mut poll = tokio::time::interval(FLEET_POLL);
    loop {
        tokio::select! {
            _ = flush.tick() => fleet.flush_seen().await,
            _ = poll.tick() => fleet.poll_fleet().await,
            _ = expiry.tick() => {
                match fleet.store.expire_commands(now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "queued commands expired before delivery"),
                    Err(e) => tracing::warn!(error = %e, "could not expire commands"),
                }
            }
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let fleet = fleet.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move { fleet.connection(incoming, shutdown).await });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = shutdown.cancelled() => break,
        }
    }
    // Sessions see the same token and send their Close; give them a moment.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    fleet.flush_seen().await;
    endpoint.close(0u32.into(), b"control plane shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

fn refused(code: &str, message: impl Into<String>) -> EnrollResponse {
    EnrollResponse::Refused {
        code: code.into(),
        message: message.into(),
    }
}

impl Fleet {
    /// Ends the hub's session, if it has one here (it was revoked).
    pub fn disconnect(&self, hub_id: &str, close: Close) {
        if let Ok(sessions) = self.sessions.lock()
            && let Some(session) = sessions.get(hub_id)
        {
            if let Ok(mut why) = session.why.lock() {
                *why = Some(close);
            }
            session.end.cancel();
        }
    }

    /// A command was queued for `hub_id`: its session (on this instance)
    /// delivers it now; sessions elsewhere find it within `FLEET_POLL`.
    pub fn commands_queued(&self, hub_id: &str) {
        if let Ok(sessions) = self.sessions.lock()
            && let Some(session) = sessions.get(hub_id)
        {
            session.commands.notify_one();
        }
    }

    /// The hub's desired configuration changed: its session (on this
    /// instance) pushes it now; sessions elsewhere find it within `FLEET_POLL`.
    pub fn config_changed(&self, hub_id: &str) {
        if let Ok(sessions) = self.sessions.lock()
            && let Some(session) = sessions.get(hub_id)
        {
            session.config.notify_one();
        }
    }

    /// Ends the sessions of hubs revoked elsewhere and wakes those with
    /// commands queued or a configuration changed elsewhere: three queries
    /// for the whole fleet.
    async fn poll_fleet(&self) {
        let connected: Vec<String> = match self.sessions.lock() {
            Ok(sessions) if !sessions.is_empty() => sessions.keys().cloned().collect(),
            _ => return,
        };
        match self.store.fleet_flags().await {
            Ok((revoked, with_commands)) => {
                for hub in connected {
                    if revoked.contains(&hub) {
                        self.disconnect(&hub, Close::new(CloseCode::Unauthorized, "hub revoked"));
                    } else if with_commands.contains(&hub) {
                        self.commands_queued(&hub);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "fleet poll failed"),
        }
        match self.store.hubs_config_pending().await {
            Ok(pending) => {
                for hub in pending.iter().filter(|h| self.is_connected(h)) {
                    self.config_changed(hub);
                }
            }
            Err(e) => tracing::warn!(error = %e, "fleet poll (configurations) failed"),
        }
    }

    /// Writes the heartbeats gathered since the last flush.
    async fn flush_seen(&self) {
        let seen: Vec<(String, i64)> = match self.seen.lock() {
            Ok(mut seen) => seen.drain().collect(),
            Err(_) => return,
        };
        if let Err(e) = self.store.hubs_seen(&seen).await {
            tracing::warn!(hubs = seen.len(), error = %e, "could not record heartbeats; they are retried with the next flush");
            if let Ok(mut pending) = self.seen.lock() {
                for (hub, at) in seen {
                    let slot = pending.entry(hub).or_insert(at);
                    *slot = (*slot).max(at);
                }
            }
        }
    }

    /// SHA-256 of the fleet CA certificate (what enrollment tokens carry).
    pub fn ca_fingerprint(&self) -> [u8; 32] {
        self.ca.fingerprint()
    }

    /// Whether the hub has a session on this instance.
    pub fn is_connected(&self, hub_id: &str) -> bool {
        self.sessions
            .lock()
            .map(|s| s.contains_key(hub_id))
            .unwrap_or(false)
    }

    async fn connection(self: Arc<Self>, incoming: quinn::Incoming, shutdown: CancellationToken) {
        let remote = incoming.remote_address();
        let connection = match incoming.await {
            Ok(connection) => connection,
            Err(e) => {
                tracing::info!(%remote, error = %e, "fleet connection failed during the handshake");
                return;
            }
        };
        let alpn = connection
            .handshake_data()
            .and_then(|data| data.downcast::<HandshakeData>().ok())
            .and_then(|data| data.protocol);
        match alpn.as_deref() {
            Some(ENROLL_ALPN) => self.enrollment(connection, remote).await,
            Some(SYNC_ALPN) => self.sync(connection, remote, shutdown).await,
            _ => connection.close(1u32.into(), b"unknown ALPN"),
        }
    }

    async fn enrollment(&self, connection: quinn::Connection, remote: SocketAddr) {
        let exchange = async {
            let (mut send, mut recv) = connection.accept_bi().await.ok()?;
            let response = match recv.read_to_end(MAX_ENROLL_MESSAGE).await {
                Ok(bytes) => match serde_json::from_slice::<EnrollRequest>(&bytes) {
                    Ok(request) => self.enroll(request, remote).await,
                    Err(e) => refused(
                        "bad_request",
                        format!("enrollment request is not valid: {e}"),
                    ),
                },
                Err(e) => refused("bad_request", format!("enrollment request unreadable: {e}")),
            };
            let bytes = serde_json::to_vec(&response).ok()?;
            send.write_all(&bytes).await.ok()?;
            send.finish().ok()?;
            Some(())
        };
        let _ = tokio::time::timeout(HELLO_TIMEOUT, exchange).await;
        // Let the hub read the answer and close first.
        let _ = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
    }

    async fn enroll(&self, request: EnrollRequest, remote: SocketAddr) -> EnrollResponse {
        let now = now_ms();
        let mut audit = NewAudit {
            action: "hub.enroll".into(),
            source_addr: Some(remote.ip().to_string()),
            ..NewAudit::default()
        };
        // The CSR is checked before the token is spent, so a bad CSR does not burn it.
        let response = if let Err(e) = self.ca.check_csr(&request.csr_pem) {
            refused("bad_csr", e.to_string())
        } else {
            match self
                .store
                .redeem_enrollment_token(&request.secret, now)
                .await
            {
                Ok(Redeemed::Hub(hub)) => {
                    audit.centre_id = Some(hub.centre_id.clone());
                    audit.target = Some(hub.id.clone());
                    self.issue(&hub.id, &request, now).await
                }
                Ok(Redeemed::Unknown) => {
                    refused("token_invalid", "this enrollment token is not known")
                }
                Ok(Redeemed::Used) => {
                    refused("token_used", "this enrollment token was already used")
                }
                Ok(Redeemed::Expired) => {
                    refused("token_expired", "this enrollment token has expired")
                }
                Ok(Redeemed::Revoked) => refused("hub_revoked", "the hub of this token is revoked"),
                Err(e) => {
                    tracing::error!(error = %e, "enrollment: store failed");
                    refused(
                        "internal",
                        "the control plane could not enroll the hub; try again",
                    )
                }
            }
        };
        match &response {
            EnrollResponse::Issued { .. } => {
                audit.outcome = Some(Outcome::Ok);
                audit.detail = Some(format!("software {}", request.software_version));
            }
            EnrollResponse::Refused { code, .. } => {
                audit.outcome = Some(Outcome::Denied);
                audit.detail = Some(code.clone());
            }
        }
        if let Err(e) = self.store.audit(audit).await {
            tracing::error!(error = %e, "could not write the audit log");
        }
        response
    }

    async fn issue(&self, hub_id: &str, request: &EnrollRequest, now: i64) -> EnrollResponse {
        let Ok(id) = vss_shared::HubId::new(hub_id) else {
            return refused("internal", "the hub id is not valid");
        };
        let (pem, der) = match self.ca.sign_hub_csr(&request.csr_pem, &id, now) {
            Ok(cert) => cert,
            Err(e) => return refused("bad_csr", e.to_string()),
        };
        let fingerprint = fingerprint_hex(&ca::fingerprint(&der));
        let expires = now + ca::HUB_CERT_DAYS * 86_400_000;
        if let Err(e) = self
            .store
            .record_hub_certificate(hub_id, &fingerprint, now, expires)
            .await
        {
            tracing::error!(error = %e, "enrollment: could not record the certificate");
            return refused(
                "internal",
                "the control plane could not record the certificate",
            );
        }
        tracing::info!(hub_id, %fingerprint, "hub enrolled");
        EnrollResponse::Issued {
            hub_id: id,
            certificate_pem: pem,
            ca_pem: self.ca.cert_pem().to_owned(),
        }
    }

    async fn sync(
        self: &Arc<Self>,
        connection: quinn::Connection,
        remote: SocketAddr,
        shutdown: CancellationToken,
    ) {
        let leaf = connection
            .peer_identity()
            .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|chain| chain.first().cloned());
        let Some(leaf) = leaf else {
            connection.close(2u32.into(), b"sync needs the hub's client certificate");
            return;
        };
        let fingerprint = fingerprint_hex(&ca::fingerprint(&leaf));
        let hub = match self.store.hub_by_certificate(&fingerprint).await {
            Ok(Some(hub)) => hub,
            Ok(None) => {
                tracing::warn!(%remote, %fingerprint, "sync refused: certificate not issued here");
                connection.close(2u32.into(), b"certificate not known to this control plane");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "sync: store failed");
                connection.close(3u32.into(), b"control plane store unavailable");
                return;
            }
        };
        if hub.revoked_at_ms.is_some() {
            tracing::warn!(%remote, hub_id = %hub.id, "sync refused: hub revoked");
            connection.close(2u32.into(), b"hub revoked");
            return;
        }
        let outcome = self.session(&connection, &hub.id, shutdown).await;
        if let Err(close) = outcome {
            tracing::info!(hub_id = %hub.id, code = ?close.code, reason = %close.reason, "sync session closed");
        }
    }

    /// Registers a session for `hub_id`, ending (and waiting for) an older one.
    async fn register(&self, hub_id: &str) -> Session {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let session = Session {
            id,
            end: CancellationToken::new(),
            why: Arc::new(Mutex::new(None)),
            done: Arc::new(tokio::sync::Notify::new()),
            finished: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            commands: Arc::new(tokio::sync::Notify::new()),
            config: Arc::new(tokio::sync::Notify::new()),
        };
        let previous = self.sessions.lock().ok().and_then(|mut sessions| {
            sessions.insert(
                hub_id.to_owned(),
                Session {
                    id,
                    end: session.end.clone(),
                    why: session.why.clone(),
                    done: session.done.clone(),
                    finished: session.finished.clone(),
                    commands: session.commands.clone(),
                    config: session.config.clone(),
                },
            )
        });
        if let Some(previous) = previous {
            if let Ok(mut why) = previous.why.lock() {
                *why = Some(Close::new(
                    CloseCode::Superseded,
                    "a newer connection of this hub replaced this one",
                ));
            }
            previous.end.cancel();
            // One ingest per hub: the old session's commits end before ours start.
            let wait = previous.done.notified();
            if !previous.finished.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(Duration::from_secs(30), wait).await;
            }
        }
        session
    }

    fn unregister(&self, hub_id: &str, session: &Session) {
        if let Ok(mut sessions) = self.sessions.lock()
            && sessions.get(hub_id).is_some_and(|s| s.id == session.id)
        {
            sessions.remove(hub_id);
        }
        session.finished.store(true, Ordering::Release);
        session.done.notify_waiters();
    }

    async fn session(
        &self,
        connection: &quinn::Connection,
        hub_id: &str,
        shutdown: CancellationToken,
    ) -> Result<(), Close> {
        let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi())
            .await
            .map_err(|_| Close::new(CloseCode::ProtocolError, "no stream opened in time"))?
            .map_err(|e| Close::new(CloseCode::Normal, format!("connection lost: {e}")))?;
        let frames = FrameConfig::default();
        let mut decoder = FrameDecoder::<HubMessage>::new(frames);
        let mut inbox = Vec::new();
        let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
            loop {
                if !inbox.is_empty() {
                    return Ok(inbox.remove(0));
                }
                match recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(chunk)) => {
                        decoder
                            .decode(&chunk.bytes, &mut inbox)
                            .map_err(|e| e.close())?;
                    }
                    Ok(None) => {
                        return Err(Close::new(CloseCode::Normal, "stream ended before Hello"));
                    }
                    Err(e) => {
                        return Err(Close::new(
                            CloseCode::Normal,
                            format!("connection lost: {e}"),
                        ));
                    }
                }
            }
        })
        .await
        .map_err(|_| Close::new(CloseCode::ProtocolError, "no Hello in time"))?;
        let hello = match hello {
            Ok(HubMessage::Hello(hello)) => hello,
            Ok(_) => {
                return self
                    .refuse(
                        &mut send,
                        connection,
                        Close::new(CloseCode::ProtocolError, "the first message must be Hello"),
                    )
                    .await;
            }
            Err(close) => return self.refuse(&mut send, connection, close).await,
        };
        // Every message is authorised against the certificate's hub.
        if hello.hub_id.as_str() != hub_id {
            tracing::warn!(hub_id, claimed = %hello.hub_id, "sync refused: Hello names another hub");
            return self
                .refuse(
                    &mut send,
                    connection,
                    Close::new(
                        CloseCode::Unauthorized,
                        "Hello names a hub other than the certificate's",
                    ),
                )
                .await;
        }

        let session = self.register(hub_id).await;
        let result = self
            .run(
                connection,
                &mut send,
                &mut recv,
                &mut decoder,
                inbox,
                hub_id,
                &hello,
                &session,
                shutdown,
            )
            .await;
        if let Err(close) = &result {
            let _ = write(&mut send, &ControlMessage::Close(close.clone())).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            connection.close(close.code.to_wire().into(), close.reason.as_bytes());
        }
        if let Err(e) = self.store.hub_disconnected(hub_id).await {
            tracing::warn!(hub_id, error = %e, "could not record the disconnection");
        }
        self.unregister(hub_id, &session);
        result
    }

    async fn refuse(
        &self,
        send: &mut quinn::SendStream,
        connection: &quinn::Connection,
        close: Close,
    ) -> Result<(), Close> {
        let _ = write(send, &ControlMessage::Close(close.clone())).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        connection.close(close.code.to_wire().into(), close.reason.as_bytes());
        Err(close)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        connection: &quinn::Connection,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        decoder: &mut FrameDecoder<HubMessage>,
        inbox: Vec<HubMessage>,
        hub_id: &str,
        hello: &vss_shared::sync::Hello,
        session: &Session,
        shutdown: CancellationToken,
    ) -> Result<(), Close> {
        let store_failed = |e: crate::store::StoreError| {
            Close::new(
                CloseCode::Normal,
                format!("control plane store failed: {e}"),
            )
        };
        let record = self.store.sync_record(hub_id).await.map_err(store_failed)?;
        let accepted =
            accept_hello(hello, record.committed_seq, SUPPORTED, now_ms()).map_err(|e| {
                tracing::error!(hub_id, error = %e, "sync handshake refused");
                e.close()
            })?;
        let mut ingest: Ingest = accepted.ingest;
        if let Some(base) = accepted.new_base {
            self.store
                .ingest_outbox(hub_id, &[], base)
                .await
                .map_err(store_failed)?;
        }
        self.store
            .hub_connected(hub_id, accepted.welcome.version, &hello.software_version)
            .await
            .map_err(store_failed)?;
        write(send, &ControlMessage::Welcome(accepted.welcome))
            .await
            .map_err(|e| Close::new(CloseCode::Normal, e))?;
        tracing::info!(hub_id, version = accepted.welcome.version, committed = accepted.welcome.committed_seq, software = %hello.software_version, "hub connected");

        // Commands already handed to this connection (a reconnect hands them
        // again; the hub's ledger answers a repeat with the stored result).
        let mut delivered = std::collections::HashSet::new();
        self.deliver_commands(send, hub_id, &mut delivered).await?;
        // The newest revision handed to this connection; the hub's Hello says
        // which one it runs, so a revision it applied is not pushed again.
        if let Some(running) = hello.config_revision {
            self.store
                .hub_config_answer(hub_id, running, HubAnswer::Applied)
                .await
                .map_err(store_failed)?;
        }
        let mut pushed = hello.config_revision;
        self.deliver_config(send, hub_id, &mut pushed).await?;
        // At most one commit in flight, in seq order; what arrives meanwhile
        // waits in `pending` and goes in the next one. Every exit waits for
        // the commit in flight: one ingest per hub (see `register`).
        let mut committing: Option<Committing> = None;
        let outcome = self
            .stream(
                connection,
                send,
                recv,
                decoder,
                inbox,
                hub_id,
                session,
                shutdown,
                &mut ingest,
                &mut pushed,
                &mut delivered,
                &mut committing,
            )
            .await;
        if let Some(commit) = committing.take() {
            let (_, result) = commit.await;
            if let Err(e) = result {
                tracing::info!(hub_id, error = %e, "the last commit of a closing session failed");
            }
        }
        outcome
    }

    /// The session's main loop: batches in, commits, acks, commands and
    /// configuration out.
    #[allow(clippy::too_many_arguments)]
    async fn stream(
        &self,
        connection: &quinn::Connection,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        decoder: &mut FrameDecoder<HubMessage>,
        mut inbox: Vec<HubMessage>,
        hub_id: &str,
        session: &Session,
        shutdown: CancellationToken,
        ingest: &mut Ingest,
        pushed: &mut Option<u64>,
        delivered: &mut std::collections::HashSet<String>,
        committing: &mut Option<Committing>,
    ) -> Result<(), Close> {
        let mut pending = Pending::default();
        loop {
            for message in inbox.drain(..) {
                match message {
                    HubMessage::OutboxBatch(batch) => {
                        let received = ingest.receive(batch).map_err(|e| e.close())?;
                        pending.add(received);
                    }
                    other => {
                        // What came before `other` is committed before it is handled.
                        if let Some(commit) = committing.take() {
                            self.committed(send, ingest, commit.await).await?;
                        }
                        self.commit(send, hub_id, ingest, &mut pending).await?;
                        self.handle(send, hub_id, ingest, other).await?;
                    }
                }
            }
            // Consecutive batches are committed in one transaction, while the
            // next ones are received and decoded.
            if committing.is_none() {
                *committing = self.start_commit(hub_id, &mut pending);
            }
            tokio::select! {
                done = async {
                    match committing.as_mut() {
                        Some(commit) => commit.await,
                        None => std::future::pending().await,
                    }
                } => {
                    *committing = None;
                    self.committed(send, ingest, done).await?;
                }
                // Full only while a commit is in flight (else it was just
                // handed to one), so that branch is never blocked by this one.
                chunk = recv.read_chunk(256 * 1024, true), if pending.has_room() => match chunk {
                    Ok(Some(chunk)) => {
                        decoder.decode(&chunk.bytes, &mut inbox).map_err(|e| e.close())?;
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        tracing::info!(hub_id, error = %e, "hub connection ended");
                        return Ok(());
                    }
                },
                () = session.end.cancelled() => {
                    let why = session.why.lock().ok().and_then(|mut w| w.take());
                    return Err(why.unwrap_or_else(|| Close::new(CloseCode::Normal, "session ended")));
                }
                () = shutdown.cancelled() => {
                    return Err(Close::new(CloseCode::Normal, "control plane shutting down"));
                }
                () = session.commands.notified() => {
                    self.deliver_commands(send, hub_id, delivered).await?;
                }
                () = session.config.notified() => {
                    self.deliver_config(send, hub_id, pushed).await?;
                }
                () = async { let _ = connection.closed().await; } => return Ok(()),
            }
        }
    }

    async fn handle(
        &self,
        send: &mut quinn::SendStream,
        hub_id: &str,
        ingest: &mut Ingest,
        message: HubMessage,
    ) -> Result<(), Close> {
        let store_failed = |e: crate::store::StoreError| {
            Close::new(
                CloseCode::Normal,
                format!("control plane store failed: {e}"),
            )
        };
        match message {
            HubMessage::OutboxBatch(batch) => {
                let mut pending = Pending::default();
                pending.add(ingest.receive(batch).map_err(|e| e.close())?);
                self.commit(send, hub_id, ingest, &mut pending).await?;
            }
            HubMessage::Heartbeat(beat) => {
                // Recorded in the next flush (SEEN_FLUSH), with every other hub's.
                if let Ok(mut seen) = self.seen.lock() {
                    seen.insert(hub_id.to_owned(), now_ms());
                }
                let ack = HeartbeatAck {
                    sent_at_ms: beat.sent_at_ms,
                    server_time_ms: now_ms(),
                };
                write(send, &ControlMessage::HeartbeatAck(ack))
                    .await
                    .map_err(|e| Close::new(CloseCode::Normal, e))?;
            }
            HubMessage::ConfigApplied(applied) => {
                // Authorised by the session: only this hub's row is touched.
                let answer = match &applied.outcome {
                    ConfigOutcome::Applied => HubAnswer::Applied,
                    ConfigOutcome::Rejected(why) => HubAnswer::Rejected(why),
                };
                let recorded = self
                    .store
                    .hub_config_answer(hub_id, applied.revision, answer)
                    .await
                    .map_err(store_failed)?;
                match (&applied.outcome, recorded) {
                    (_, false) => tracing::info!(
                        hub_id,
                        revision = applied.revision,
                        "stale configuration report ignored"
                    ),
                    (ConfigOutcome::Applied, true) => tracing::info!(
                        hub_id,
                        revision = applied.revision,
                        "hub applied its configuration"
                    ),
                    (ConfigOutcome::Rejected(why), true) => {
                        tracing::warn!(hub_id, revision = applied.revision, reason = %why, "hub rejected its configuration")
                    }
                }
            }
            HubMessage::CommandResult(result) => {
                let (status, detail) = match &result.outcome {
                    CommandOutcome::Done => ("done", None),
                    CommandOutcome::Failed(why) => ("failed", Some(why.as_str())),
                    CommandOutcome::Expired => {
                        ("expired", Some("the hub received it after its expiry"))
                    }
                    CommandOutcome::Unknown => (
                        "unknown",
                        Some("interrupted by a hub restart; not run again"),
                    ),
                };
                let recorded = self
                    .store
                    .command_finished(hub_id, result.id.as_str(), status, detail)
                    .await
                    .map_err(store_failed)?;
                if recorded {
                    tracing::info!(
                        hub_id,
                        command = result.id.as_str(),
                        status,
                        "command finished"
                    );
                } else {
                    tracing::warn!(
                        hub_id,
                        command = result.id.as_str(),
                        "result for a command that is not this hub's or is already final; ignored"
                    );
                }
            }
            HubMessage::Hello(_) => {
                return Err(Close::new(
                    CloseCode::ProtocolError,
                    "Hello is only the first message",
                ));
            }
        }
        Ok(())
    }
}

/// Received events not yet committed: contiguous, in seq order.
#[derive(Default)]
struct Pending {
    events: Vec<OutboxEvent>,
    /// Payload and kind bytes of `events`.
    bytes: usize,
    first: Option<u64>,
    last: u64,
}

/// While a commit is in flight, the stream is read until this many events or
/// bytes wait behind it (twice the window `hubd` uses), then QUIC flow
/// control holds the hub back: a hub that ignores its window cannot make the
/// control plane buffer without bound.
const PENDING_MAX_EVENTS: usize = 131_072;
const PENDING_MAX_BYTES: usize = 32 * 1024 * 1024;

impl Pending {
    fn add(&mut self, received: vss_shared::sync::Received) {
        if let Some(seqs) = received.seqs() {
            self.first.get_or_insert(*seqs.start());
            self.last = *seqs.end();
            self.bytes += received
                .insert
                .iter()
                .map(|e| e.payload.len() + e.kind.len())
                .sum::<usize>();
            self.events.extend(received.insert);
        }
    }

    /// Whether more may be read while a commit is in flight.
    fn has_room(&self) -> bool {
        self.events.len() < PENDING_MAX_EVENTS && self.bytes < PENDING_MAX_BYTES
    }
}

/// A commit in flight: the seqs it covers and how it ended.
type Committing = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    std::ops::RangeInclusive<u64>,
                    Result<crate::store::ingest::Ingested, crate::store::StoreError>,
                ),
            > + Send,
    >,
>;

impl Fleet {
    /// Starts committing `pending` (emptied) in one transaction; `None` when
    /// it holds nothing.
    fn start_commit(&self, hub_id: &str, pending: &mut Pending) -> Option<Committing> {
        let first = pending.first.take()?;
        let last = pending.last;
        let events = std::mem::take(&mut pending.events);
        pending.bytes = 0;
        let store = self.store.clone();
        let hub_id = hub_id.to_owned();
        Some(Box::pin(async move {
            let result = store.ingest_outbox(&hub_id, &events, last).await;
            (first..=last, result)
        }))
    }

    /// A commit ended: on success, sends the `Ack` it earned.
    async fn committed(
        &self,
        send: &mut quinn::SendStream,
        ingest: &mut Ingest,
        (seqs, result): (
            std::ops::RangeInclusive<u64>,
            Result<crate::store::ingest::Ingested, crate::store::StoreError>,
        ),
    ) -> Result<(), Close> {
        result.map_err(|e| {
            Close::new(
                CloseCode::Normal,
                format!("control plane store failed: {e}"),
            )
        })?;
        if let Some(ack) = ingest.committed(seqs).map_err(|e| e.close())? {
            write(send, &ControlMessage::Ack(ack))
                .await
                .map_err(|e| Close::new(CloseCode::Normal, e))?;
        }
        Ok(())
    }

    /// Commits `pending` in one transaction, then sends the `Ack`.
    async fn commit(
        &self,
        send: &mut quinn::SendStream,
        hub_id: &str,
        ingest: &mut Ingest,
        pending: &mut Pending,
    ) -> Result<(), Close> {
        let Some(first) = pending.first.take() else {
            return Ok(());
        };
        let events = std::mem::take(&mut pending.events);
        pending.bytes = 0;
        self.store
            .ingest_outbox(hub_id, &events, pending.last)
            .await
            .map_err(|e| {
                Close::new(
                    CloseCode::Normal,
                    format!("control plane store failed: {e}"),
                )
            })?;
        if let Some(ack) = ingest
            .committed(first..=pending.last)
            .map_err(|e| e.close())?
        {
            write(send, &ControlMessage::Ack(ack))
                .await
                .map_err(|e| Close::new(CloseCode::Normal, e))?;
        }
        Ok(())
    }

    /// Pushes the hub's desired configuration when it is newer than what the
    /// hub runs and than what this connection already pushed.
    async fn deliver_config(
        &self,
        send: &mut quinn::SendStream,
        hub_id: &str,
        pushed: &mut Option<u64>,
    ) -> Result<(), Close> {
        let desired = self.store.desired_config(hub_id).await.map_err(|e| {
            Close::new(
                CloseCode::Normal,
                format!("control plane store failed: {e}"),
            )
        })?;
        let Some((revision, slots)) = desired else {
            return Ok(());
        };
        if pushed.is_some_and(|p| p >= revision) {
            return Ok(());
        }
        let document = config_document(&slots);
        write(
            send,
            &ControlMessage::ConfigPush(ConfigPush { revision, document }),
        )
        .await
        .map_err(|e| Close::new(CloseCode::Normal, e))?;
        tracing::info!(
            hub_id,
            revision,
            slots = slots.len(),
            "configuration pushed"
        );
        *pushed = Some(revision);
        Ok(())
    }

    /// Sends the hub's pending commands not yet handed to this connection.
    async fn deliver_commands(
        &self,
        send: &mut quinn::SendStream,
        hub_id: &str,
        delivered: &mut std::collections::HashSet<String>,
    ) -> Result<(), Close> {
        let pending = self.store.pending_commands(hub_id).await.map_err(|e| {
            Close::new(
                CloseCode::Normal,
                format!("control plane store failed: {e}"),
            )
        })?;
        for command in pending {
            if delivered.contains(&command.id) {
                continue;
            }
            let Ok(id) = CommandId::new(command.id.clone()) else {
                tracing::error!(hub_id, id = %command.id, "command id not sendable; skipped");
                continue;
            };
            let message = ControlMessage::Command(Command {
                id,
                kind: command.kind.clone(),
                args: command.payload.into_bytes(),
                expires_at_ms: command.expires_at_ms,
            });
            write(send, &message)
                .await
                .map_err(|e| Close::new(CloseCode::Normal, e))?;
            if let Err(e) = self.store.command_sent(hub_id, &command.id).await {
                tracing::warn!(hub_id, id = %command.id, error = %e, "could not record a command as sent");
            }
            tracing::info!(hub_id, id = %command.id, kind = %command.kind, "command sent");
            delivered.insert(command.id);
        }
        Ok(())
    }
}

/// The document of a `ConfigPush`: `{"slots":[…]}`, each slot in the shape
/// of hubd's `[[slots]]` entries plus its `sip_password`.
fn config_document(slots: &[ConfigSlot]) -> Vec<u8> {
    let slots: Vec<serde_json::Value> = slots
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.hub_slot_id,
                "name": s.name,
                "kind": s.kind,
                "sip_number": s.sip_number,
                "sip_password": s.sip_password,
                "enabled": s.enabled,
                "driver": s.driver,
            })
        })
        .collect();
    serde_json::json!({ "slots": slots })
        .to_string()
        .into_bytes()
}

async fn write(send: &mut quinn::SendStream, message: &ControlMessage) -> Result<(), String> {
    let frame = encode_frame(message, &FrameConfig::default()).map_err(|e| e.to_string())?;
    send.write_all(&frame).await.map_err(|e| e.to_string())
}
