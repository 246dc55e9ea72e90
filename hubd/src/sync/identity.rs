//! What enrollment leaves in `DATA_DIR/sync/`, and loading it:
//!
//! | file | what |
//! |---|---|
//! | `hub.key` | the hub's private key (PKCS#8 PEM, 0600), made on this hub |
//! | `hub.pem` | its certificate, signed by the fleet CA |
//! | `ca.pem` | the fleet CA certificate (fingerprint checked against the token) |
//! | `enrollment.json` | hub id and control-plane address |
//!
//! `enrollment.json` is written last: a directory without it is an
//! interrupted enrollment, reported as such and never used.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use vss_shared::HubId;

use super::SyncError;

/// The hub's private key.
pub const KEY_FILE: &str = "hub.key";
/// The hub's certificate.
pub const CERT_FILE: &str = "hub.pem";
/// The fleet CA certificate.
pub const CA_FILE: &str = "ca.pem";
/// Hub id and control-plane address.
pub const ENROLLMENT_FILE: &str = "enrollment.json";

/// The directory under a data dir.
pub fn sync_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("sync")
}

/// `enrollment.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The hub id the certificate names.
    pub hub_id: HubId,
    /// `HOST:PORT` of the control plane's fleet endpoint.
    pub control_plane: String,
    /// When, ms since the Unix epoch.
    pub enrolled_at_ms: i64,
}

/// A loaded enrollment, ready to connect with.
#[derive(Debug)]
pub struct Identity {
    /// Hub id and address.
    pub enrollment: Enrollment,
    /// The hub's certificate.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its key.
    pub key: PrivateKeyDer<'static>,
    /// The fleet CA.
    pub ca: CertificateDer<'static>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SyncError + '_ {
    move |source| SyncError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads the enrollment in `data_dir`, `None` when the hub never enrolled.
pub fn load(data_dir: &Path) -> Result<Option<Identity>, SyncError> {
    let dir = sync_dir(data_dir);
    let enrollment_path = dir.join(ENROLLMENT_FILE);
    if !enrollment_path.exists() {
        if dir.join(KEY_FILE).exists() {
            tracing::warn!(dir = %dir.display(), "an enrollment was interrupted: run `hubd enroll` again after moving the sync directory away");
        }
        return Ok(None);
    }
    let unusable = |why: String| SyncError::Identity {
        path: dir.clone(),
        why,
    };
    let text = std::fs::read_to_string(&enrollment_path).map_err(io(&enrollment_path))?;
    let enrollment: Enrollment =
        serde_json::from_str(&text).map_err(|e| unusable(format!("{ENROLLMENT_FILE}: {e}")))?;
    let cert_path = dir.join(CERT_FILE);
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| unusable(format!("{CERT_FILE}: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(format!("{CERT_FILE}: {e}")))?;
    if chain.is_empty() {
        return Err(unusable(format!("{CERT_FILE} holds no certificate")));
    }
    let key = PrivateKeyDer::from_pem_file(dir.join(KEY_FILE))
        .map_err(|e| unusable(format!("{KEY_FILE}: {e}")))?;
    let ca = CertificateDer::from_pem_file(dir.join(CA_FILE))
        .map_err(|e| unusable(format!("{CA_FILE}: {e}")))?;
    Ok(Some(Identity {
        enrollment,
        chain,
        key,
        ca,
    }))
}

/// Creates `path` (which must not exist) with `mode`, and fsyncs it.
pub(super) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SyncError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))?;
    Ok(())
}
