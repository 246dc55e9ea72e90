//! `hubd enroll`: turns a one-time token into this hub's client certificate.
//!
//! The key is made here and never leaves the hub; the control plane sees only
//! a CSR. The connection trusts exactly the CA whose fingerprint the token
//! carries, and the CA certificate the control plane returns must have that
//! fingerprint too. Files are written key first, `enrollment.json` last (see
//! [`super::identity`]); nothing existing is overwritten.

use std::path::Path;
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use sha2::{Digest, Sha256};
use vss_shared::HubId;
use vss_shared::enroll::{EnrollRequest, EnrollResponse, EnrollmentToken, MAX_ENROLL_MESSAGE};

use super::identity::{self, CA_FILE, CERT_FILE, ENROLLMENT_FILE, Enrollment, KEY_FILE};
use super::{SyncError, client_endpoint, resolve, split_host, tls};

/// How long the whole exchange may take.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(20);

/// Enrolls the hub whose data lives in `data_dir` with the control plane at
/// `control_plane` (`HOST:PORT`), using `token`. Returns the hub id.
pub async fn enroll(data_dir: &Path, control_plane: &str, token: &str) -> Result<HubId, SyncError> {
    let token = EnrollmentToken::parse(token)?;
    let host = split_host(control_plane)?;
    let dir = identity::sync_dir(data_dir);
    for name in [ENROLLMENT_FILE, KEY_FILE, CERT_FILE, CA_FILE] {
        if dir.join(name).exists() {
            return Err(SyncError::AlreadyEnrolled(dir.join(name)));
        }
    }
    let key = KeyPair::generate().map_err(|e| SyncError::Key(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "vss hub (enrolling)");
    params.distinguished_name = name;
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| SyncError::Key(e.to_string()))?;
    let request = EnrollRequest {
        secret: token.secret.clone(),
        csr_pem: csr,
        software_version: env!("CARGO_PKG_VERSION").into(),
    };
    let response = tokio::time::timeout(
        ENROLL_TIMEOUT,
        exchange(control_plane, &host, token.ca_fingerprint, &request),
    )
    .await
    .map_err(|_| {
        SyncError::Connect(format!(
            "{control_plane}: no answer within {} s",
            ENROLL_TIMEOUT.as_secs()
        ))
    })??;
    let (hub_id, certificate_pem, ca_pem) = match response {
        EnrollResponse::Issued {
            hub_id,
            certificate_pem,
            ca_pem,
        } => (hub_id, certificate_pem, ca_pem),
        EnrollResponse::Refused { code, message } => {
            return Err(SyncError::Refused { code, message });
        }
    };
    use rustls::pki_types::pem::PemObject as _;
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| SyncError::Protocol(format!("the CA certificate returned is not PEM: {e}")))?;
    if <[u8; 32]>::from(Sha256::digest(ca.as_ref())) != token.ca_fingerprint {
        return Err(SyncError::Protocol(
            "the CA certificate returned does not match the token's fingerprint".into(),
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|source| SyncError::Io {
        path: dir.clone(),
        source,
    })?;
    identity::write_new(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)?;
    identity::write_new(&dir.join(CERT_FILE), certificate_pem.as_bytes(), 0o644)?;
    identity::write_new(&dir.join(CA_FILE), ca_pem.as_bytes(), 0o644)?;
    let enrollment = Enrollment {
        hub_id: hub_id.clone(),
        control_plane: control_plane.to_owned(),
        enrolled_at_ms: crate::store::now_ms(),
    };
    let json =
        serde_json::to_vec_pretty(&enrollment).map_err(|e| SyncError::Protocol(e.to_string()))?;
    identity::write_new(&dir.join(ENROLLMENT_FILE), &json, 0o644)?;
    Ok(hub_id)
}

async fn exchange(
    control_plane: &str,
    host: &str,
    pin: [u8; 32],
    request: &EnrollRequest,
) -> Result<EnrollResponse, SyncError> {
    let remote = resolve(control_plane).await?;
    let endpoint = client_endpoint(remote)?;
    let connection = endpoint
        .connect_with(tls::enrollment(pin)?, remote, host)
        .map_err(|e| SyncError::Connect(e.to_string()))?
        .await
        .map_err(|e| SyncError::Connect(e.to_string()))?;
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| SyncError::Connect(e.to_string()))?;
    let body = serde_json::to_vec(request).map_err(|e| SyncError::Protocol(e.to_string()))?;
    send.write_all(&body)
        .await
        .map_err(|e| SyncError::Connect(e.to_string()))?;
    send.finish()
        .map_err(|e| SyncError::Connect(e.to_string()))?;
    let answer = recv
        .read_to_end(MAX_ENROLL_MESSAGE)
        .await
        .map_err(|e| SyncError::Connect(e.to_string()))?;
    connection.close(0u32.into(), b"enrolled");
    endpoint.wait_idle().await;
    serde_json::from_slice(&answer)
        .map_err(|e| SyncError::Protocol(format!("the enrollment answer is not valid: {e}")))
}
