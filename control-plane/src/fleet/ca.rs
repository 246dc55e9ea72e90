//! The fleet CA: the control plane's own certificate authority. It signs the
//! control plane's QUIC server certificate and every enrolled hub's client
//! certificate; its fingerprint travels inside enrollment tokens so a hub
//! trusts exactly this CA from its first connection.
//!
//! The key and certificate live in the data directory (`fleet-ca.key`, 0600,
//! and `fleet-ca.pem`), created on first start and never overwritten: several
//! control-plane instances must share the same two files. A file that exists
//! but does not parse is an error, never a reason to make a new CA (that would
//! orphan every hub in the field).

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use vss_shared::HubId;

/// File name of the CA key in the data directory.
pub const KEY_FILE: &str = "fleet-ca.key";
/// File name of the CA certificate in the data directory.
pub const CERT_FILE: &str = "fleet-ca.pem";
/// How long a hub certificate is valid.
pub const HUB_CERT_DAYS: i64 = 825;
/// How long the CA is valid.
const CA_DAYS: i64 = 20 * 365;

/// What can go wrong with the fleet CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file could not be read or written.
    #[error("fleet CA file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// One of the two CA files exists without the other.
    #[error(
        "fleet CA: {present} exists but {missing} does not; restore it from backup (a new CA would orphan every enrolled hub)"
    )]
    HalfPresent {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A CA file does not parse.
    #[error("fleet CA file {path} is not valid: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A certificate signing request was refused.
    #[error("certificate signing request refused: {0}")]
    BadCsr(String),
    /// The system gave no randomness.
    #[error("no randomness for a certificate serial: {0}")]
    Random(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
}

/// The loaded CA.
pub struct FleetCa {
    key: KeyPair,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for FleetCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCa")
            .field(
                "fingerprint",
                &vss_shared::enroll::fingerprint_hex(&self.fingerprint),
            )
            .finish_non_exhaustive()
    }
}

/// A server certificate chain and its key, for the QUIC endpoint.
pub struct ServerIdentity {
    /// Leaf, then the CA.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

fn unix_time(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| CaError::Random(e.to_string()))?;
    bytes[0] &= 0x7f; // a positive INTEGER
    Ok(SerialNumber::from_slice(&bytes))
}

impl FleetCa {
    /// Loads the CA from `dir`, or creates it there when neither file exists.
    /// `now_ms` dates a new CA.
    pub fn load_or_create(dir: &Path, now_ms: i64) -> Result<FleetCa, CaError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        match (key_path.exists(), cert_path.exists()) {
            (true, true) => Self::load(&key_path, &cert_path),
            (false, false) => Self::create(&key_path, &cert_path, now_ms),
            (true, false) => Err(CaError::HalfPresent {
                present: key_path,
                missing: cert_path,
            }),
            (false, true) => Err(CaError::HalfPresent {
                present: cert_path,
                missing: key_path,
            }),
        }
    }

    fn load(key_path: &Path, cert_path: &Path) -> Result<FleetCa, CaError> {
        let key_pem = std::fs::read_to_string(key_path).map_err(io(key_path))?;
        let cert_pem = std::fs::read_to_string(cert_path).map_err(io(cert_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Invalid {
            path: key_path.to_owned(),
            why: e.to_string(),
        })?;
        let cert_der = pem_certificate(&cert_pem).ok_or_else(|| CaError::Invalid {
            path: cert_path.to_owned(),
            why: "no CERTIFICATE block".into(),
        })?;
        // The key must be the certificate's: sign with it through an issuer
        // parsed from the certificate, and compare public keys.
        Issuer::from_ca_cert_der(&cert_der, &key).map_err(|e| CaError::Invalid {
            path: cert_path.to_owned(),
            why: e.to_string(),
        })?;
        if !contains(cert_der.as_ref(), key.public_key_raw()) {
            return Err(CaError::Invalid {
                path: key_path.to_owned(),
                why: format!("this key does not belong to {}", cert_path.display()),
            });
        }
        Ok(Self::from_parts(key, cert_pem, cert_der))
    }

    fn create(key_path: &Path, cert_path: &Path, now_ms: i64) -> Result<FleetCa, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "VSS Demiurge");
        name.push(DnType::CommonName, "VSS Demiurge fleet CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = unix_time(now_ms - 3_600_000);
        params.not_after = unix_time(now_ms + CA_DAYS * 86_400_000);
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        // The key first, created exclusively with 0600; then the certificate.
        write_new(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_new(cert_path, cert_pem.as_bytes(), 0o644)?;
        tracing::info!(path = %cert_path.display(), "fleet CA created");
        Ok(Self::from_parts(key, cert_pem, cert.der().clone()))
    }

    fn from_parts(key: KeyPair, cert_pem: String, cert_der: CertificateDer<'static>) -> FleetCa {
        let fingerprint = fingerprint(&cert_der);
        FleetCa {
            key,
            cert_pem,
            cert_der,
            fingerprint,
        }
    }

    /// SHA-256 of the CA certificate (DER): what enrollment tokens carry.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// A secret derived from the CA key for `purpose`: the same on every
    /// instance and every restart that shares the CA files.
    pub fn derived_secret(&self, purpose: &str) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(b"vss-demiurge fleet-ca derived secret\0");
        hash.update(purpose.as_bytes());
        hash.update([0]);
        hash.update(self.key.serialize_der());
        hash.finalize().into()
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, CaError> {
        Ok(Issuer::from_ca_cert_der(&self.cert_der, &self.key)?)
    }

    /// A fresh server certificate for `names` (DNS names or IP addresses),
    /// valid for a year from `now_ms`, with a new key.
    pub fn server_identity(
        &self,
        names: &[String],
        now_ms: i64,
    ) -> Result<ServerIdentity, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "VSS Demiurge control plane");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = unix_time(now_ms - 3_600_000);
        params.not_after = unix_time(now_ms + 365 * 86_400_000);
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(ServerIdentity {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// Checks that `csr_pem` is a well-formed, correctly self-signed CSR.
    pub fn check_csr(&self, csr_pem: &str) -> Result<(), CaError> {
        CertificateSigningRequestParams::from_pem(csr_pem)
            .map(|_| ())
            .map_err(|e| CaError::BadCsr(e.to_string()))
    }

    /// Signs a hub's CSR. The certificate names `hub_id` (the token decided
    /// it; whatever subject the CSR asks for is ignored) and is good for
    /// client authentication only. Returns the certificate as PEM and DER.
    pub fn sign_hub_csr(
        &self,
        csr_pem: &str,
        hub_id: &HubId,
        now_ms: i64,
    ) -> Result<(String, CertificateDer<'static>), CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "VSS Demiurge hubs");
        name.push(DnType::CommonName, hub_id.as_str());
        params.distinguished_name = name;
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:vss:hub:{hub_id}")
                .try_into()
                .map_err(|e: rcgen::Error| CaError::BadCsr(e.to_string()))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = unix_time(now_ms - 3_600_000);
        params.not_after = unix_time(now_ms + HUB_CERT_DAYS * 86_400_000);
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(&csr.public_key, &self.issuer()?)?;
        Ok((cert.pem(), cert.der().clone()))
    }
}

/// SHA-256 of a certificate's DER.
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

/// The first `CERTIFICATE` block of `pem`, as DER.
pub fn pem_certificate(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Creates `path` with `mode`, failing if it exists, and fsyncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
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
