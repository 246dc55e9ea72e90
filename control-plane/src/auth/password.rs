//! Password hashing with argon2id (PHC strings), strength rules, and random
//! passwords. It never logs or stores a password in clear.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Why hashing failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The OS gave no randomness.
    #[error("no randomness available: {0}")]
    Random(String),
    /// argon2 refused (a malformed stored hash, or parameters).
    #[error("password hash error: {0}")]
    Hash(String),
}

/// Hashes `password` with argon2id and a random 16-byte salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`; an error only when `phc` is malformed.
pub fn verify_password(password: &str, phc: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

static DUMMY: LazyLock<Option<String>> =
    LazyLock::new(|| hash_password("dummy password for timing").ok());

/// Spends the time of one verification, so an unknown account answers as
/// slowly as a wrong password (no user enumeration by timing).
pub fn dummy_verify(password: &str) {
    if let Some(phc) = DUMMY.as_deref() {
        let _ = verify_password(password, phc);
    }
}

/// Ok when `password` is acceptable; otherwise a sentence for the user.
pub fn check_strength(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < 12 {
        return Err("the password must be at least 12 characters long".into());
    }
    if password.len() > 1024 {
        return Err("the password must be at most 1024 bytes long".into());
    }
    let mut distinct = password.chars().collect::<Vec<_>>();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 2 {
        return Err("the password must not repeat a single character".into());
    }
    Ok(())
}

const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// 20 random characters without look-alikes (no 0/O/1/l/I), no modulo bias.
pub fn random_password() -> Result<String, PasswordError> {
    let limit = 256 - (256 % ALPHABET.len());
    let mut out = String::with_capacity(20);
    while out.len() < 20 {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| PasswordError::Random(e.to_string()))?;
        for b in bytes {
            if usize::from(b) < limit && out.len() < 20 {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(verify_password("correct horse battery", &a).unwrap());
        assert!(!verify_password("correct horse batterY", &a).unwrap());
        assert!(verify_password("x", "not a phc string").is_err());
    }

    #[test]
    fn strength_rules() {
        assert!(check_strength("short").is_err());
        assert!(check_strength("aaaaaaaaaaaaaaaa").is_err());
        assert!(check_strength(&"ab".repeat(600)).is_err());
        assert!(check_strength("twelve chars").is_ok());
        assert!(check_strength("пароль-из-кириллицы").is_ok());
    }

    #[test]
    fn random_passwords_are_long_and_unambiguous() {
        let p = random_password().unwrap();
        assert_eq!(p.len(), 20);
        assert!(p.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(p, random_password().unwrap());
        assert!(check_strength(&p).is_ok());
    }
}
