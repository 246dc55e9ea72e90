//! Passwords: argon2id hashing to PHC strings, verification, a dummy
//! verification that makes unknown accounts cost as much as known ones, the
//! strength rules, and random passwords.
//!
//! It never logs, stores or returns a password in clear (except the one
//! [`random_password`] makes for its caller), and never says *why* a password
//! did not match.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{self, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Bytes of salt in a new hash.
const SALT_BYTES: usize = 16;
/// Fewest characters (not bytes) in an acceptable password.
const MIN_CHARS: usize = 12;
/// Most bytes in an acceptable password (the login endpoint refuses longer).
const MAX_BYTES: usize = 1024;
/// Length of a [`random_password`].
const RANDOM_CHARS: usize = 20;
/// Letters and digits without look-alikes: no `0 O o 1 l I`.
const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Why a password could not be hashed or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The operating system gave no randomness.
    #[error("no randomness from the operating system: {0}")]
    Random(getrandom::Error),
    /// The stored hash is not a PHC string argon2 can check against.
    #[error("stored password hash is malformed: {0}")]
    Malformed(password_hash::Error),
    /// argon2 refused to hash.
    #[error("cannot hash the password: {0}")]
    Hash(password_hash::Error),
}

/// Hashes `password` with argon2id (default parameters: m=19456 KiB, t=2,
/// p=1) and a random 16-byte salt; returns the PHC string.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(PasswordError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(PasswordError::Hash)?;
    hash_with_salt(password, &salt)
}

fn hash_with_salt(password: &str, salt: &SaltString) -> Result<String, PasswordError> {
    Argon2::default()
        .hash_password(password.as_bytes(), salt)
        .map(|hash| hash.to_string())
        .map_err(PasswordError::Hash)
}

/// Whether `password` matches the PHC string `phc`: `Ok(false)` on a
/// mismatch, an error only when `phc` is malformed (not a PHC string, no salt
/// or output, an algorithm or parameters argon2 does not take).
pub fn verify_password(password: &str, phc: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(PasswordError::Malformed)?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        // argon2 would report this as a mismatch; it is a broken hash.
        return Err(PasswordError::Malformed(
            password_hash::Error::PhcStringField,
        ));
    }
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::Password) => Ok(false),
        Err(e) => Err(PasswordError::Malformed(e)),
    }
}

/// The hash [`dummy_verify`] checks against: the same parameters as every real
/// hash, a fixed salt, made once.
static DUMMY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    let salt = SaltString::encode_b64(b"vss-dummy-salt!!").ok()?;
    hash_with_salt("no account has this password", &salt).ok()
});

/// Runs one verification against a fixed valid hash, so a login for an
/// unknown account costs the same time as one for a known account (no user
/// enumeration by timing). The result is thrown away.
pub fn dummy_verify(password: &str) {
    if let Some(phc) = DUMMY_HASH.as_deref() {
        let _ = verify_password(password, phc);
    }
}

/// `Ok` when `password` is acceptable: at least 12 characters, at most 1024
/// bytes, not one character repeated. Otherwise a sentence for the user.
pub fn check_strength(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_CHARS {
        return Err(format!(
            "the password must be at least {MIN_CHARS} characters long"
        ));
    }
    if password.len() > MAX_BYTES {
        return Err(format!(
            "the password must be at most {MAX_BYTES} bytes long"
        ));
    }
    let mut chars = password.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err("the password must not be one character repeated".into());
    }
    Ok(())
}

/// A new password of 20 characters from an alphabet without look-alikes
/// (no `0`/`O`/`1`/`l`/`I`), drawn from the operating system's randomness
/// without modulo bias.
pub fn random_password() -> Result<String, PasswordError> {
    password_from(getrandom::fill).map_err(PasswordError::Random)
}

/// A [`RANDOM_CHARS`]-character password from the bytes `fill` gives, by
/// rejection sampling: bytes at or above the largest multiple of the alphabet
/// size are skipped, so every character is equally likely.
fn password_from<E>(mut fill: impl FnMut(&mut [u8]) -> Result<(), E>) -> Result<String, E> {
    let n = ALPHABET.len();
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(RANDOM_CHARS);
    let mut buf = [0u8; 32];
    while out.len() < RANDOM_CHARS {
        fill(&mut buf)?;
        for &b in buf.iter().filter(|&&b| usize::from(b) < limit) {
            if out.len() == RANDOM_CHARS {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(b) % n]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert_eq!(verify_password("correct horse battery", &a), Ok(true));
        assert_eq!(verify_password("correct horse batterY", &a), Ok(false));
        assert_eq!(verify_password("", &a), Ok(false));
    }

    #[test]
    fn malformed_hashes_are_errors_not_mismatches() {
        let good = hash_password("correct horse battery").unwrap();
        let no_output = good.rsplit_once('$').unwrap().0;
        for phc in [
            "",
            "not a phc string",
            "$argon2id$",
            no_output,
            "$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
            "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2g",
        ] {
            assert!(
                matches!(
                    verify_password("correct horse battery", phc),
                    Err(PasswordError::Malformed(_))
                ),
                "{phc:?}"
            );
        }
    }

    #[test]
    fn dummy_hash_is_a_real_hash_with_the_real_parameters() {
        let dummy = DUMMY_HASH.as_deref().unwrap();
        let real = hash_password("x").unwrap();
        let params = |phc: &str| phc.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(params(dummy), params(&real));
        assert_eq!(
            verify_password("no account has this password", dummy),
            Ok(true)
        );
        dummy_verify("anything");
    }

    #[test]
    fn strength_rules() {
        let check = |p: &str| check_strength(p).is_ok();
        assert!(!check(""));
        assert!(!check("elevenchars"));
        assert!(check("twelve chars"));
        // Characters, not bytes: 11 characters in 21 bytes are too few.
        assert!(!check(&format!("{}x", "é".repeat(10))));
        assert!(check(&format!("{}x", "é".repeat(11))));
        assert!(check("пароль-кирил"));
        assert!(!check("aaaaaaaaaaaaaaaa"));
        assert!(!check(&"я".repeat(20)));
        assert!(check(&"ab".repeat(512)));
        assert!(!check(&"ab".repeat(513)));
        let why = check_strength("short").unwrap_err();
        assert!(why.contains("12 characters"), "{why}");
    }

    #[test]
    fn random_passwords_are_long_unambiguous_and_strong() {
        let p = random_password().unwrap();
        assert_eq!(p.chars().count(), RANDOM_CHARS);
        assert!(p.bytes().all(|b| ALPHABET.contains(&b)), "{p}");
        assert_ne!(p, random_password().unwrap());
        assert_eq!(check_strength(&p), Ok(()));
        for look_alike in b"0Oo1lI" {
            assert!(!ALPHABET.contains(look_alike));
        }
    }

    #[test]
    fn rejection_sampling_skips_biased_bytes() {
        // 56 symbols: bytes 224..=255 would favour the first 32; they are skipped.
        assert_eq!(ALPHABET.len(), 56);
        let mut calls = 0;
        let p = password_from(|buf: &mut [u8]| {
            calls += 1;
            for (i, b) in buf.iter_mut().enumerate() {
                // First fill: only rejected bytes; then 0, 57, 114, ... (0, 1, 2, ... mod 56).
                *b = if calls == 1 {
                    224 + (i % 32) as u8
                } else {
                    (i * 57 % 224) as u8
                };
            }
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(calls, 2);
        assert_eq!(p.as_bytes(), &ALPHABET[..RANDOM_CHARS]);
    }

    #[test]
    fn randomness_failure_is_an_error() {
        assert_eq!(
            password_from(|_: &mut [u8]| Err("no entropy")),
            Err("no entropy")
        );
    }
}
