//! Access tokens: JWT signed with HS256, and only HS256, written on `hmac` +
//! `sha2` (no JWT crate). Sans-IO: the caller passes the time.
//!
//! **Invariant:** a header naming any algorithm other than exactly `HS256`
//! (`none`, `HS512`, `RS256`, `hs256`) is refused before the signature is
//! looked at, so algorithm-confusion attacks have nothing to confuse; the
//! signature is checked, in constant time, before the claims are parsed.
//! It never logs tokens or the secret, and its errors never contain the secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted, in bytes.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated for `iat`, in seconds.
const SKEW_S: i64 = 60;
/// Longest algorithm name repeated back in [`TokenError::UnsupportedAlgorithm`].
const MAX_ALG_CHARS: usize = 32;
/// The only header this module writes.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// The user's centre; absent for platform administrators.
    pub centre: Option<String>,
    /// Role name.
    pub role: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, seconds since the Unix epoch (invalid from this second on).
    pub exp: i64,
    /// Token id.
    pub jti: String,
}

/// Why a token was refused. The messages are safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts (no padding) of JSON, no `alg`, or too long.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than HS256 (the name, cut to 32
    /// characters).
    #[error("unsupported token algorithm {0:?}: only HS256 is accepted")]
    UnsupportedAlgorithm(String),
    /// The signature does not match the header and claims.
    #[error("bad token signature")]
    BadSignature,
    /// At or past `exp`.
    #[error("token expired")]
    Expired,
    /// `iat` is more than a minute in the future.
    #[error("token not yet valid")]
    NotYetValid,
}

/// The HS256 signing key.
#[derive(Clone)]
pub struct JwtKeys {
    secret: Vec<u8>,
}

/// Never shows the secret.
impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

/// The header fields that matter; others are ignored.
#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
}

impl JwtKeys {
    /// Keys signing and verifying with `secret` (any length; the caller
    /// enforces strength, see [`crate::auth::secret`]).
    pub fn new(secret: &[u8]) -> JwtKeys {
        JwtKeys {
            secret: secret.to_vec(),
        }
    }

    /// HMAC-SHA256 of `signing_input` under the secret.
    fn mac(&self, signing_input: &str) -> HmacSha256 {
        // HMAC takes keys of any length (long ones are hashed), so this
        // cannot fail; no input reaches it.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(signing_input.as_bytes());
        mac
    }

    /// A token carrying `claims`, with the header `{"alg":"HS256","typ":"JWT"}`.
    pub fn sign(&self, claims: &Claims) -> String {
        // Serialising strings and integers cannot fail; if it ever did, the
        // empty payload would make a token that `verify` refuses as Malformed.
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&signing_input).finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// The claims of `token` if it is well formed, HS256, signed with this
    /// key, not expired and not issued in the future at `now_s` (seconds since
    /// the Unix epoch; `iat` may be up to 60 s ahead for clock skew).
    pub fn verify(&self, token: &str, now_s: i64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        if payload.contains('.') {
            return Err(TokenError::Malformed);
        }
        // Strict base64url: no padding, no stray trailing bits, so one token
        // has exactly one spelling.
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenError::Malformed)
        };
        let (header, payload, signature) = (decode(header)?, decode(payload)?, decode(signature)?);

        let header: Header = serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
        match header.alg {
            Some(alg) if alg == "HS256" => {}
            Some(alg) => {
                return Err(TokenError::UnsupportedAlgorithm(
                    alg.chars().take(MAX_ALG_CHARS).collect(),
                ));
            }
            None => return Err(TokenError::Malformed),
        }

        // Constant-time comparison, before anything in the claims is read.
        self.mac(signing_input)
            .verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;

        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if now_s >= claims.exp {
            return Err(TokenError::Expired);
        }
        if claims.iat > now_s.saturating_add(SKEW_S) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(iat: i64, exp: i64) -> Claims {
        Claims {
            sub: "u1".into(),
            centre: Some("c1".into()),
            role: "operator".into(),
            iat,
            exp,
            jti: "j1".into(),
        }
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with any header and payload, correctly HS256-signed with `keys`.
    fn forge(keys: &JwtKeys, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        format!("{input}.{}", b64(keys.mac(&input).finalize().into_bytes()))
    }

    fn parts(token: &str) -> [String; 3] {
        let p: Vec<&str> = token.split('.').collect();
        [p[0].into(), p[1].into(), p[2].into()]
    }

    /// `s` with the character at `i` swapped for another base64url character.
    fn flip(s: &str, i: usize) -> String {
        let mut bytes = s.as_bytes().to_vec();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn round_trip() {
        let keys = JwtKeys::new(SECRET);
        let c = claims(1000, 2000);
        let token = keys.sign(&c);
        assert_eq!(keys.verify(&token, 1500), Ok(c));
        let admin = Claims {
            centre: None,
            ..claims(1000, 2000)
        };
        assert_eq!(keys.verify(&keys.sign(&admin), 1500), Ok(admin));
    }

    #[test]
    fn header_is_exactly_hs256_jwt() {
        let token = JwtKeys::new(SECRET).sign(&claims(1000, 2000));
        let [header, _, _] = parts(&token);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(header).unwrap(),
            br#"{"alg":"HS256","typ":"JWT"}"#
        );
    }

    #[test]
    fn valid_until_exp_and_from_iat_minus_skew() {
        let keys = JwtKeys::new(SECRET);
        let token = keys.sign(&claims(1000, 2000));
        assert!(keys.verify(&token, 1999).is_ok());
        assert_eq!(keys.verify(&token, 2000), Err(TokenError::Expired));
        assert_eq!(keys.verify(&token, 99_999), Err(TokenError::Expired));
        assert!(keys.verify(&token, 940).is_ok());
        assert_eq!(keys.verify(&token, 939), Err(TokenError::NotYetValid));
        let far = keys.sign(&claims(i64::MAX, i64::MAX));
        assert_eq!(
            keys.verify(&far, i64::MAX - 1),
            Ok(claims(i64::MAX, i64::MAX))
        );
    }

    #[test]
    fn tampered_payload_is_a_bad_signature() {
        let keys = JwtKeys::new(SECRET);
        let [h, p, s] = parts(&keys.sign(&claims(1000, 2000)));
        // One character in the middle of the claims.
        let tampered = format!("{h}.{}.{s}", flip(&p, p.len() / 2));
        assert_eq!(keys.verify(&tampered, 1500), Err(TokenError::BadSignature));
        // Whole claims swapped for an administrator's.
        let admin = Claims {
            role: "admin".into(),
            centre: None,
            ..claims(1000, 2000)
        };
        let swapped = format!("{h}.{}.{s}", b64(serde_json::to_vec(&admin).unwrap()));
        assert_eq!(keys.verify(&swapped, 1500), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampered_signature_is_a_bad_signature() {
        let keys = JwtKeys::new(SECRET);
        let [h, p, s] = parts(&keys.sign(&claims(1000, 2000)));
        for i in [0, s.len() / 2] {
            let token = format!("{h}.{p}.{}", flip(&s, i));
            assert_eq!(keys.verify(&token, 1500), Err(TokenError::BadSignature));
        }
        // A signature cut short (to whole base64 quads: 40 of 43 characters),
        // or missing, is as bad.
        assert_eq!(s.len(), 43);
        let short = format!("{h}.{p}.{}", &s[..40]);
        assert_eq!(keys.verify(&short, 1500), Err(TokenError::BadSignature));
        assert_eq!(
            keys.verify(&format!("{h}.{p}."), 1500),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn another_secret_is_a_bad_signature() {
        let token = JwtKeys::new(SECRET).sign(&claims(1000, 2000));
        let other = JwtKeys::new(b"another-secret-another-secret-32");
        assert_eq!(other.verify(&token, 1500), Err(TokenError::BadSignature));
    }

    #[test]
    fn alg_none_is_refused() {
        let keys = JwtKeys::new(SECRET);
        let payload = serde_json::to_string(&claims(1000, 2000)).unwrap();
        for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"none"}"#] {
            let token = format!("{}.{}.", b64(header), b64(&payload));
            assert_eq!(
                keys.verify(&token, 1500),
                Err(TokenError::UnsupportedAlgorithm("none".into()))
            );
        }
    }

    #[test]
    fn other_algorithms_are_refused_even_with_a_valid_hs256_signature() {
        let keys = JwtKeys::new(SECRET);
        let payload = serde_json::to_string(&claims(1000, 2000)).unwrap();
        for alg in ["HS512", "RS256", "ES256", "hs256", "HS256 ", ""] {
            let token = forge(
                &keys,
                &format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#),
                &payload,
            );
            assert_eq!(
                keys.verify(&token, 1500),
                Err(TokenError::UnsupportedAlgorithm(alg.into())),
                "{alg:?}"
            );
        }
        // A long name is not repeated back in full.
        let long = "X".repeat(500);
        let token = forge(&keys, &format!(r#"{{"alg":"{long}"}}"#), &payload);
        assert_eq!(
            keys.verify(&token, 1500),
            Err(TokenError::UnsupportedAlgorithm("X".repeat(32)))
        );
    }

    #[test]
    fn the_same_header_signed_correctly_is_accepted() {
        // The forging helper itself is sound: with HS256 it verifies.
        let keys = JwtKeys::new(SECRET);
        let payload = serde_json::to_string(&claims(1000, 2000)).unwrap();
        let token = forge(&keys, r#"{"typ":"JWT","alg":"HS256","kid":"x"}"#, &payload);
        assert_eq!(keys.verify(&token, 1500), Ok(claims(1000, 2000)));
    }

    #[test]
    fn garbage_is_malformed() {
        let keys = JwtKeys::new(SECRET);
        let valid = keys.sign(&claims(1000, 2000));
        let [h, p, s] = parts(&valid);
        let huge = format!("{h}.{}.{s}", "A".repeat(MAX_TOKEN_BYTES));
        let cases = [
            String::new(),
            ".".into(),
            "..".into(),
            "a.b".into(),
            "a.b.c".into(),
            "a.b.c.d".into(),
            format!("{valid}.{s}"),
            "!!.??.**".into(),
            format!("{h}==.{p}.{s}"),
            format!("{h}.{p}.{s}="),
            format!("{}.{p}.{s}", h.replace('e', "+")),
            format!("{}.{p}.{s}", b64("not json")),
            format!("{}.{p}.{s}", b64("[]")),
            // Empty JSON objects: no alg.
            "e30.e30.e30".into(),
            format!("{}.{p}.{s}", b64(r#"{"alg":256}"#)),
            format!("{}.{p}.{s}", b64(r#"{"alg":"HS256","alg":"HS256"}"#)),
            " ".repeat(100),
            huge.clone(),
        ];
        for token in &cases {
            assert_eq!(
                keys.verify(token, 1500),
                Err(TokenError::Malformed),
                "{token:.60}"
            );
        }
        assert!(huge.len() > MAX_TOKEN_BYTES);
    }

    #[test]
    fn signed_garbage_claims_are_malformed() {
        let keys = JwtKeys::new(SECRET);
        for payload in [
            "",
            "null",
            "{}",
            r#"{"sub":"u1","role":"admin","iat":1000}"#,
            r#"{"sub":"u1","role":"admin","iat":"1","exp":2000,"jti":"j"}"#,
        ] {
            let token = forge(&keys, HEADER, payload);
            assert_eq!(
                keys.verify(&token, 1500),
                Err(TokenError::Malformed),
                "{payload}"
            );
        }
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let keys = JwtKeys::new(SECRET);
        assert_eq!(format!("{keys:?}"), "JwtKeys(..)");
        let secret = String::from_utf8_lossy(SECRET);
        for e in [
            TokenError::Malformed,
            TokenError::UnsupportedAlgorithm("none".into()),
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::NotYetValid,
        ] {
            assert!(!e.to_string().contains(&*secret));
        }
    }
}
