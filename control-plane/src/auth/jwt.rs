//! Access tokens: JWT with HS256 only, written on `hmac` + `sha2`.
//!
//! One algorithm, fixed: a header naming any other (`none`, `HS512`, `RS256`)
//! is refused before anything else is looked at, so algorithm-confusion
//! attacks have nothing to confuse. The signature is checked, in constant
//! time, before the claims are parsed. It never logs tokens or the secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated for `iat`.
const SKEW_S: i64 = 60;
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// The user's centre, absent for platform administrators.
    pub centre: Option<String>,
    /// Role name.
    pub role: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: i64,
    /// Token id.
    pub jti: String,
}

/// Why a token was refused; safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than HS256.
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// `iat` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
}

/// The signing key.
#[derive(Clone)]
pub struct JwtKeys {
    secret: Vec<u8>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
}

impl JwtKeys {
    /// Keys from `secret`.
    pub fn new(secret: &[u8]) -> JwtKeys {
        JwtKeys {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }

    /// A signed token carrying `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// The claims of `token`, if it is ours, intact and current at `now_s`.
    pub fn verify(&self, token: &str, now_s: i64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenError::Malformed)
        };
        let header: Header =
            serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
        match header.alg.as_deref() {
            Some("HS256") => {}
            Some(other) => return Err(TokenError::UnsupportedAlgorithm(other.to_owned())),
            None => return Err(TokenError::Malformed),
        }
        let signature = decode(signature)?;
        let signing_input =
            &token[..token.len() - token.rsplit('.').next().map_or(0, str::len) - 1];
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims =
            serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed)?;
        if now_s >= claims.exp {
            return Err(TokenError::Expired);
        }
        if claims.iat > now_s + SKEW_S {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iat: i64, exp: i64) -> Claims {
        Claims {
            sub: "u1".into(),
            centre: Some("c1".into()),
            role: "operator".into(),
            iat,
            exp,
            jti: "j".into(),
        }
    }

    fn forge(keys: &JwtKeys, header: &str, payload: &Claims) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap())
        );
        let mut mac = keys.mac();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn round_trip_and_expiry() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let token = keys.sign(&claims(1000, 2000));
        assert_eq!(keys.verify(&token, 1999).unwrap(), claims(1000, 2000));
        assert_eq!(keys.verify(&token, 2000), Err(TokenError::Expired));
        assert_eq!(keys.verify(&token, 900), Err(TokenError::NotYetValid));
        assert!(keys.verify(&token, 941).is_ok());
    }

    #[test]
    fn tampering_and_wrong_keys_are_refused() {
        let keys = JwtKeys::new(b"secret-one-secret-one-secret-one");
        let token = keys.sign(&claims(1000, 2000));
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload = parts[1].to_owned();
        let last = payload.pop().unwrap();
        payload.push(if last == 'A' { 'B' } else { 'A' });
        let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
        assert!(matches!(
            keys.verify(&tampered, 1500),
            Err(TokenError::BadSignature | TokenError::Malformed)
        ));
        let admin = Claims {
            role: "admin".into(),
            ..claims(1000, 2000)
        };
        let swapped = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin).unwrap()),
            parts[2]
        );
        assert_eq!(keys.verify(&swapped, 1500), Err(TokenError::BadSignature));
        let mut sig = parts[2].to_owned();
        sig.replace_range(0..1, if sig.starts_with('A') { "B" } else { "A" });
        assert_eq!(
            keys.verify(&format!("{}.{}.{sig}", parts[0], parts[1]), 1500),
            Err(TokenError::BadSignature)
        );
        let other = JwtKeys::new(b"secret-two-secret-two-secret-two");
        assert_eq!(other.verify(&token, 1500), Err(TokenError::BadSignature));
    }

    #[test]
    fn other_algorithms_are_refused_even_when_signed() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let c = claims(1000, 2000);
        for alg in ["none", "HS512", "RS256", "hs256"] {
            let token = forge(&keys, &format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), &c);
            assert_eq!(
                keys.verify(&token, 1500),
                Err(TokenError::UnsupportedAlgorithm(alg.into()))
            );
        }
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap())
        );
        assert_eq!(
            keys.verify(&unsigned, 1500),
            Err(TokenError::UnsupportedAlgorithm("none".into()))
        );
        let no_alg = forge(&keys, r#"{"typ":"JWT"}"#, &c);
        assert_eq!(keys.verify(&no_alg, 1500), Err(TokenError::Malformed));
    }

    #[test]
    fn garbage_is_malformed() {
        let keys = JwtKeys::new(b"k");
        let huge = "a".repeat(10_000);
        for token in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.??.**",
            "e30.e30.e30",
            huge.as_str(),
        ] {
            assert!(
                matches!(
                    keys.verify(token, 0),
                    Err(TokenError::Malformed | TokenError::BadSignature)
                ),
                "{token:.20}"
            );
        }
        assert_eq!(keys.verify("", 0), Err(TokenError::Malformed));
        assert_eq!(keys.verify(&huge, 0), Err(TokenError::Malformed));
    }
}
