//! The hub's side of the sync with the control plane.
//!
//! - [`enroll`]: `hubd enroll`, once: a key made here, a CSR, a certificate
//!   from the control plane's fleet CA, pinned by the fingerprint the token
//!   carries (no trust on first use).
//! - [`identity`]: what enrollment leaves in `DATA_DIR/sync/` and how it is
//!   loaded.
//! - [`client`]: the session: mutual TLS over QUIC, the outbox delivered with
//!   `vss_shared::sync::OutboxSender`, acks recorded in the store, heartbeats,
//!   reconnects with backoff. The hub keeps working without it.
//! - [`commands`]: control-plane commands carried out at most once (the
//!   ledger persisted in the store before acting).
//! - [`config`]: pushed configuration revisions, checked by hubd's rules,
//!   stored in one transaction, then applied to the running slots.
//! - `tls`: rustls configurations (the pinned-CA verifier for enrollment).
//!
//! It must never mark an outbox row acknowledged that the control plane did
//! not acknowledge, and never delete one that is not acknowledged.

pub mod client;
pub mod commands;
pub mod config;
pub mod enroll;
pub mod identity;
mod tls;

/// What can go wrong enrolling or syncing. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A file under the data directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The enrollment token is malformed.
    #[error("--token: {0}")]
    Token(#[from] vss_shared::enroll::TokenError),
    /// The hub is already enrolled.
    #[error(
        "this hub is already enrolled ({0} exists); to enroll again, move the sync directory away first"
    )]
    AlreadyEnrolled(std::path::PathBuf),
    /// The enrollment files are incomplete or unreadable.
    #[error("enrollment in {path} is not usable: {why}")]
    Identity {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        why: String,
    },
    /// The control plane's address does not resolve.
    #[error("control plane {addr}: {why}")]
    Address {
        /// What was given.
        addr: String,
        /// Why.
        why: String,
    },
    /// TLS or QUIC setup or connection failed.
    #[error("connection to the control plane failed: {0}")]
    Connect(String),
    /// The control plane refused the enrollment.
    #[error("enrollment refused ({code}): {message}")]
    Refused {
        /// Its code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The control plane broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Making the key or the CSR failed.
    #[error("key generation failed: {0}")]
    Key(String),
}

/// `HOST:PORT` → (host without brackets, for TLS; the text to resolve).
pub(crate) fn split_host(addr: &str) -> Result<String, SyncError> {
    let bad = |why: &str| SyncError::Address {
        addr: addr.to_owned(),
        why: why.to_owned(),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT"))?;
    port.parse::<u16>()
        .map_err(|_| bad("the port is not a number 1-65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    Ok(host.to_owned())
}

/// Resolves `HOST:PORT` to its first address.
pub(crate) async fn resolve(addr: &str) -> Result<std::net::SocketAddr, SyncError> {
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| SyncError::Address {
            addr: addr.to_owned(),
            why: e.to_string(),
        })?;
    addrs.next().ok_or_else(|| SyncError::Address {
        addr: addr.to_owned(),
        why: "resolves to no address".into(),
    })
}

/// A QUIC client endpoint on an ephemeral port of `remote`'s family.
pub(crate) fn client_endpoint(remote: std::net::SocketAddr) -> Result<quinn::Endpoint, SyncError> {
    let local: std::net::SocketAddr = if remote.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    quinn::Endpoint::client(local).map_err(|e| SyncError::Connect(format!("cannot bind UDP: {e}")))
}
