//! A minimal hub-side sync client for tests and benchmarks: a QUIC client
//! with any certificate (or none), one session stream, raw or framed writes.
//! It exists to misbehave on purpose and to open thousands of sessions from
//! one process; the real client is `hubd::sync::client`. It never retries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use vss_shared::HubId;
use vss_shared::enroll::SYNC_ALPN;
use vss_shared::sync::version::SUPPORTED;
use vss_shared::sync::{
    CloseCode, ControlMessage, FrameConfig, FrameDecoder, Hello, HubMessage, OutboxState,
    encode_frame,
};

/// A QUIC client with `chain`/`key` as its certificate (none when empty),
/// trusting `ca`.
pub fn client(
    ca: &CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: Option<PrivateKeyDer<'static>>,
) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("CA");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let mut tls = match key {
        Some(key) => builder
            .with_client_auth_cert(chain, key)
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![SYNC_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// Connects to the fleet endpoint at `sync` (a fresh client endpoint).
pub async fn connect(
    sync: SocketAddr,
    config: quinn::ClientConfig,
) -> Result<quinn::Connection, String> {
    let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into())
        .map_err(|e| e.to_string())?;
    connect_on(&endpoint, sync, config).await
}

/// Connects through `endpoint` (many connections may share one).
pub async fn connect_on(
    endpoint: &quinn::Endpoint,
    sync: SocketAddr,
    config: quinn::ClientConfig,
) -> Result<quinn::Connection, String> {
    let connecting = endpoint
        .connect_with(config, sync, "127.0.0.1")
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())
}

/// One session's stream, with a decoder for what the control plane says.
pub struct Session {
    /// The connection.
    pub connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: FrameDecoder<ControlMessage>,
    inbox: Vec<ControlMessage>,
}

impl Session {
    /// Opens the session's stream on `connection`.
    pub async fn open(connection: quinn::Connection) -> Session {
        let (send, recv) = connection.open_bi().await.expect("a stream");
        Session {
            connection,
            send,
            recv,
            decoder: FrameDecoder::new(FrameConfig::default()),
            inbox: Vec::new(),
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &HubMessage) {
        let frame = encode_frame(message, &FrameConfig::default()).expect("encodes");
        self.send.write_all(&frame).await.expect("sent");
    }

    /// Sends raw bytes (for malformed frames).
    pub async fn raw(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("sent");
    }

    /// The next message, or `None` when the stream ends first.
    pub async fn next(&mut self) -> Option<ControlMessage> {
        loop {
            if !self.inbox.is_empty() {
                return Some(self.inbox.remove(0));
            }
            let chunk = tokio::time::timeout(
                Duration::from_secs(10),
                self.recv.read_chunk(64 * 1024, true),
            )
            .await
            .expect("an answer within 10 s");
            match chunk {
                Ok(Some(chunk)) => {
                    self.decoder
                        .decode(&chunk.bytes, &mut self.inbox)
                        .expect("the control plane's frames decode");
                }
                _ => return None,
            }
        }
    }

    /// The next message within `timeout`; `None` on timeout, a closed
    /// stream or an undecodable frame (for load tools that count failures).
    pub async fn try_next(&mut self, timeout: Duration) -> Option<ControlMessage> {
        loop {
            if !self.inbox.is_empty() {
                return Some(self.inbox.remove(0));
            }
            let chunk = tokio::time::timeout(timeout, self.recv.read_chunk(64 * 1024, true))
                .await
                .ok()?;
            match chunk {
                Ok(Some(chunk)) => self.decoder.decode(&chunk.bytes, &mut self.inbox).ok()?,
                _ => return None,
            };
        }
    }

    /// Sends `Hello` for `hub` with `outbox`.
    pub async fn hello(&mut self, hub: &str, outbox: OutboxState) {
        self.send(&HubMessage::Hello(Hello {
            hub_id: HubId::new(hub).expect("hub id"),
            versions: SUPPORTED,
            software_version: "test".into(),
            config_revision: None,
            outbox,
        }))
        .await;
    }

    /// Reads until a `Close`; asserts its code and returns its reason.
    pub async fn expect_close(&mut self, code: CloseCode) -> String {
        loop {
            match self.next().await {
                Some(ControlMessage::Close(close)) => {
                    assert_eq!(close.code, code, "{}", close.reason);
                    return close.reason;
                }
                Some(_) => continue,
                None => panic!("the stream ended without a Close {code:?}"),
            }
        }
    }
}
