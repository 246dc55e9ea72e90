//! Hub enrollment: the one-time token an operator hands to `hubd enroll`, and
//! the single request/response exchange that turns it into a client
//! certificate.
//!
//! The token carries the SHA-256 fingerprint of the control plane's fleet CA,
//! so the hub verifies the control plane on its very first connection: there
//! is no trust on first use. The exchange runs on its own ALPN
//! ([`ENROLL_ALPN`]) over one QUIC stream: the hub writes an
//! [`EnrollRequest`] as JSON and finishes the stream; the control plane
//! answers an [`EnrollResponse`] as JSON and finishes its side.
//!
//! This module only defines and checks shapes; it never opens a connection,
//! reads a file or keeps a key.

use serde::{Deserialize, Serialize};

use crate::HubId;

/// ALPN of the enrollment exchange.
pub const ENROLL_ALPN: &[u8] = b"vss-enroll/1";
/// ALPN of the sync session (mutual TLS with the enrolled certificate).
pub const SYNC_ALPN: &[u8] = b"vss-sync/1";
/// Largest enrollment request or response, in bytes.
pub const MAX_ENROLL_MESSAGE: usize = 64 * 1024;

const TOKEN_PREFIX: &str = "vss1";

/// What an enrollment token holds: the one-time secret and the fleet CA's
/// fingerprint. Text form: `vss1.<secret>.<sha256 of the CA certificate, hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// The one-time secret (base64url); the control plane stores only its hash.
    pub secret: String,
    /// SHA-256 of the fleet CA certificate (DER).
    pub ca_fingerprint: [u8; 32],
}

/// Why a token's text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// It does not have the `vss1.<secret>.<fingerprint>` shape.
    #[error(
        "not an enrollment token: expected vss1.<secret>.<fingerprint> (from `control-plane hub enroll`)"
    )]
    Shape,
    /// The secret part is empty, too long, or not base64url.
    #[error("the token's secret is malformed")]
    Secret,
    /// The fingerprint is not 64 hex digits.
    #[error("the token's CA fingerprint is not 64 hex digits")]
    Fingerprint,
}

impl EnrollmentToken {
    /// Parses the text form, tolerating surrounding whitespace.
    pub fn parse(text: &str) -> Result<EnrollmentToken, TokenError> {
        let mut parts = text.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(secret), Some(fp), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Shape);
        };
        let secret_ok = (16..=128).contains(&secret.len())
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !secret_ok {
            return Err(TokenError::Secret);
        }
        Ok(EnrollmentToken {
            secret: secret.to_owned(),
            ca_fingerprint: parse_fingerprint(fp).ok_or(TokenError::Fingerprint)?,
        })
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        format!(
            "{TOKEN_PREFIX}.{}.{}",
            self.secret,
            fingerprint_hex(&self.ca_fingerprint)
        )
    }
}

/// A fingerprint as 64 lowercase hex digits.
pub fn fingerprint_hex(fingerprint: &[u8; 32]) -> String {
    fingerprint.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64 hex digits (either case) as a fingerprint.
pub fn parse_fingerprint(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Hub → control plane: redeem a token for a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The token's secret (the fingerprint stays on the hub: it already used it).
    pub secret: String,
    /// PKCS#10 certificate signing request, PEM, for a key made on the hub.
    pub csr_pem: String,
    /// The hub's software version, for the fleet view.
    #[serde(default)]
    pub software_version: String,
}

/// Control plane → hub: the certificate, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EnrollResponse {
    /// Enrolled.
    Issued {
        /// The hub id the certificate names (the token decided it).
        hub_id: HubId,
        /// The hub's client certificate, PEM.
        certificate_pem: String,
        /// The fleet CA certificate, PEM (its fingerprint matches the token's).
        ca_pem: String,
    },
    /// Refused; nothing was issued.
    Refused {
        /// A stable code: `token_invalid`, `token_used`, `token_expired`,
        /// `hub_revoked`, `bad_csr`, `internal`.
        code: String,
        /// One line for the person running `hubd enroll`.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_malformed_ones_are_refused() {
        let token = EnrollmentToken {
            secret: "abcdefghijklmnopqrstuvwxyz012345-_".into(),
            ca_fingerprint: [0xab; 32],
        };
        let text = token.to_text();
        assert!(text.starts_with("vss1.abcdefghijklmnopqrstuvwxyz012345-_.abab"));
        assert_eq!(EnrollmentToken::parse(&format!("  {text}\n")), Ok(token));

        let fp = "ab".repeat(32);
        for (text, why) in [
            ("", TokenError::Shape),
            ("vss2.aaaaaaaaaaaaaaaa.x", TokenError::Shape),
            (
                &format!("vss1.aaaaaaaaaaaaaaaa.{fp}.extra"),
                TokenError::Shape,
            ),
            (&format!("vss1.short.{fp}"), TokenError::Secret),
            (&format!("vss1.aaaaaaaaaaaaaaa!.{fp}"), TokenError::Secret),
            ("vss1.aaaaaaaaaaaaaaaa.abcd", TokenError::Fingerprint),
            (
                &format!("vss1.aaaaaaaaaaaaaaaa.{}", "zz".repeat(32)),
                TokenError::Fingerprint,
            ),
            (
                &format!("vss1.aaaaaaaaaaaaaaaa.{}", "é".repeat(32)),
                TokenError::Fingerprint,
            ),
        ] {
            assert_eq!(EnrollmentToken::parse(text), Err(why), "{text:?}");
        }
    }

    #[test]
    fn responses_are_tagged_json() {
        let refused = EnrollResponse::Refused {
            code: "token_used".into(),
            message: "this token was already used".into(),
        };
        let json = serde_json::to_string(&refused).unwrap_or_default();
        assert!(json.contains(r#""outcome":"refused""#), "{json}");
        assert_eq!(
            serde_json::from_str::<EnrollResponse>(&json).ok(),
            Some(refused)
        );
    }
}
