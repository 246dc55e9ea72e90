//! HTTP digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760):
//! reading a `WWW-Authenticate`/`Proxy-Authenticate` challenge and
//! computing the matching `Authorization`/`Proxy-Authorization` value.
//!
//! Pure: the client nonce and the nonce count come from the caller. It must
//! never log or return the password, and never panic on a hostile challenge.

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The scheme is not `Digest`.
    #[error("unsupported authentication scheme in {0:?}")]
    Scheme(String),
    /// A required parameter is missing.
    #[error("challenge without {0}")]
    Missing(&'static str),
    /// The algorithm is not MD5 or SHA-256.
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    /// The challenge offers qop values but not `auth`.
    #[error("unsupported qop {0:?} (only auth)")]
    Qop(String),
}

/// The digest's hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (what registrars ask).
    Md5,
    /// SHA-256 (RFC 8760).
    Sha256,
}

/// Where a challenge came from, which decides the header that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// 401 `WWW-Authenticate` → `Authorization`.
    Www,
    /// 407 `Proxy-Authenticate` → `Proxy-Authorization`.
    Proxy,
}

impl ChallengeKind {
    /// The header carrying the challenge.
    pub fn challenge_header(self) -> &'static str {
        match self {
            ChallengeKind::Www => "WWW-Authenticate",
            ChallengeKind::Proxy => "Proxy-Authenticate",
        }
    }

    /// The header carrying the answer.
    pub fn answer_header(self) -> &'static str {
        match self {
            ChallengeKind::Www => "Authorization",
            ChallengeKind::Proxy => "Proxy-Authorization",
        }
    }
}

/// A digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Which header it came in.
    pub kind: ChallengeKind,
    /// The realm.
    pub realm: String,
    /// The server nonce.
    pub nonce: String,
    /// Echoed back verbatim.
    pub opaque: Option<String>,
    /// The hash function.
    pub algorithm: Algorithm,
    /// True when the server offered `qop=auth` (answered with qop, nc, cnonce).
    pub qop_auth: bool,
    /// The previous nonce expired but the credentials were right: answer again.
    pub stale: bool,
}

/// Splits `k=v, k="v, w"` into pairs (names lower-cased).
fn auth_params(s: &str) -> Vec<(String, String)> {
    super::message::split_list(s)
        .into_iter()
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            ))
        })
        .collect()
}

impl Challenge {
    /// Parses a challenge header value of `kind`.
    pub fn parse(kind: ChallengeKind, value: &str) -> Result<Challenge, AuthError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthError::Scheme(scheme.to_owned()));
        }
        let params = auth_params(rest);
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
            Some(a) => return Err(AuthError::Algorithm(a)),
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(q) if q.trim().is_empty() => false,
            Some(q) => {
                if q.split(',').any(|v| v.trim().eq_ignore_ascii_case("auth")) {
                    true
                } else {
                    return Err(AuthError::Qop(q));
                }
            }
        };
        Ok(Challenge {
            kind,
            realm: get("realm").ok_or(AuthError::Missing("realm"))?,
            nonce: get("nonce").ok_or(AuthError::Missing("nonce"))?,
            opaque: get("opaque"),
            algorithm,
            qop_auth,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

/// What the client supplies to answer a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<'a> {
    /// The username.
    pub username: &'a str,
    /// The password.
    pub password: &'a str,
    /// The request's method.
    pub method: &'a str,
    /// The request's Request-URI (the digest-uri).
    pub uri: &'a str,
    /// Nonce count (1 for the first use of a nonce).
    pub nc: u32,
    /// Client nonce (used only with qop).
    pub cnonce: &'a str,
}

fn hex_digest(algorithm: Algorithm, data: &str) -> String {
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    match algorithm {
        Algorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
        Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
    }
}

/// The `response` value of the digest (RFC 2617 §3.2.2.1).
pub fn response(challenge: &Challenge, answer: &Answer<'_>) -> String {
    let alg = challenge.algorithm;
    let ha1 = hex_digest(
        alg,
        &format!(
            "{}:{}:{}",
            answer.username, challenge.realm, answer.password
        ),
    );
    let ha2 = hex_digest(alg, &format!("{}:{}", answer.method, answer.uri));
    if challenge.qop_auth {
        hex_digest(
            alg,
            &format!(
                "{ha1}:{}:{:08x}:{}:auth:{ha2}",
                challenge.nonce, answer.nc, answer.cnonce
            ),
        )
    } else {
        hex_digest(alg, &format!("{ha1}:{}:{ha2}", challenge.nonce))
    }
}

/// The value of the `Authorization`/`Proxy-Authorization` header answering
/// `challenge`.
pub fn authorization(challenge: &Challenge, answer: &Answer<'_>) -> String {
    let digest = response(challenge, answer);
    let algorithm = match challenge.algorithm {
        Algorithm::Md5 => "MD5",
        Algorithm::Sha256 => "SHA-256",
    };
    let mut value = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{digest}\", algorithm={algorithm}",
        answer.username, challenge.realm, challenge.nonce, answer.uri
    );
    if let Some(opaque) = &challenge.opaque {
        value.push_str(&format!(", opaque=\"{opaque}\""));
    }
    if challenge.qop_auth {
        value.push_str(&format!(
            ", qop=auth, nc={:08x}, cnonce=\"{}\"",
            answer.nc, answer.cnonce
        ));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc2617(qop: bool) -> Challenge {
        let qop = if qop { "qop=\"auth,auth-int\", " } else { "" };
        Challenge::parse(
            ChallengeKind::Www,
            &format!(
                "Digest realm=\"testrealm@host.com\", {qop}nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""
            ),
        )
        .expect("parses")
    }

    fn mufasa() -> Answer<'static> {
        Answer {
            username: "Mufasa",
            password: "Circle Of Life",
            method: "GET",
            uri: "/dir/index.html",
            nc: 1,
            cnonce: "0a4f113b",
        }
    }

    #[test]
    fn rfc2617_section_3_5_example() {
        let challenge = rfc2617(true);
        assert!(challenge.qop_auth);
        assert_eq!(
            response(&challenge, &mufasa()),
            "6629fae49393a05397450978507c4ef1"
        );
        let header = authorization(&challenge, &mufasa());
        assert!(
            header.contains("nc=00000001, cnonce=\"0a4f113b\""),
            "{header}"
        );
        assert!(header.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
    }

    #[test]
    fn without_qop_is_rfc2069() {
        // H(H(A1):nonce:H(A2)) with A1, A2 of the RFC 2617 example.
        let challenge = rfc2617(false);
        assert!(!challenge.qop_auth);
        assert_eq!(
            response(&challenge, &mufasa()),
            "670fd8c2df070c60b045671b8b24ff02"
        );
        assert!(!authorization(&challenge, &mufasa()).contains("qop"));
    }

    #[test]
    fn rfc7616_sha256_example() {
        let challenge = Challenge::parse(
            ChallengeKind::Www,
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        )
        .expect("parses");
        let answer = Answer {
            username: "Mufasa",
            password: "Circle of Life",
            method: "GET",
            uri: "/dir/index.html",
            nc: 1,
            cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        };
        assert_eq!(
            response(&challenge, &answer),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn reads_stale_and_refuses_what_it_cannot_answer() {
        let c = Challenge::parse(
            ChallengeKind::Proxy,
            "Digest realm=\"r\", nonce=\"n\", stale=TRUE, algorithm=md5",
        )
        .expect("parses");
        assert!(c.stale);
        assert_eq!(c.kind.answer_header(), "Proxy-Authorization");
        for (value, error) in [
            ("Basic realm=\"r\"", AuthError::Scheme("Basic".into())),
            ("Digest nonce=\"n\"", AuthError::Missing("realm")),
            ("Digest realm=\"r\"", AuthError::Missing("nonce")),
            (
                "Digest realm=r, nonce=n, algorithm=SHA-512-256",
                AuthError::Algorithm("SHA-512-256".into()),
            ),
            (
                "Digest realm=r, nonce=n, qop=\"auth-int\"",
                AuthError::Qop("auth-int".into()),
            ),
        ] {
            assert_eq!(
                Challenge::parse(ChallengeKind::Www, value),
                Err(error),
                "{value}"
            );
        }
    }
}
