//! The JWT signing secret: from a file, from config or the environment, or —
//! in development only — generated for the run. In production a missing or
//! weak secret refuses start-up. It never logs the secret.

use std::path::{Path, PathBuf};

use crate::config::MIN_SECRET_BYTES;

/// Where the secret came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `auth.jwt_secret` (config file or `CP__AUTH__JWT_SECRET`).
    Value,
    /// `auth.jwt_secret_file`.
    File(PathBuf),
    /// Generated for this run (development).
    Generated,
}

/// Why there is no usable secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("auth.jwt_secret_file {path}: cannot read it: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error(
        "auth.jwt_secret_file {0}: the file is empty; put at least {MIN_SECRET_BYTES} random bytes in it"
    )]
    Empty(PathBuf),
    /// Production without a secret.
    #[error(
        "auth.mode = production needs a JWT secret: set auth.jwt_secret_file (or CP__AUTH__JWT_SECRET) to at least {MIN_SECRET_BYTES} random bytes"
    )]
    Missing,
    /// Production with a weak secret.
    #[error(
        "auth.mode = production refuses a weak JWT secret ({0}); use at least {MIN_SECRET_BYTES} random bytes, e.g. `head -c 48 /dev/urandom | base64`"
    )]
    Weak(String),
    /// No randomness to generate one.
    #[error("cannot generate a JWT secret: {0}")]
    Random(String),
}

fn weakness(secret: &[u8]) -> Option<String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Some(format!(
            "{} bytes, fewer than {MIN_SECRET_BYTES}",
            secret.len()
        ));
    }
    let mut distinct = secret.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    (distinct.len() < 10).then(|| format!("only {} distinct bytes", distinct.len()))
}

/// Resolves the secret: `file` wins over `value`. Returns the secret, its
/// source, and a warning when development accepted a weak one.
pub fn resolve(
    value: &str,
    file: Option<&Path>,
    production: bool,
) -> Result<(Vec<u8>, SecretSource, Option<String>), SecretError> {
    let (secret, source) = if let Some(path) = file {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(SecretError::Empty(path.to_owned()));
        }
        (trimmed.to_vec(), SecretSource::File(path.to_owned()))
    } else if !value.is_empty() {
        (value.as_bytes().to_vec(), SecretSource::Value)
    } else if production {
        return Err(SecretError::Missing);
    } else {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
        return Ok((bytes, SecretSource::Generated, None));
    };
    match (weakness(&secret), production) {
        (Some(why), true) => Err(SecretError::Weak(why)),
        (Some(why), false) => Ok((
            secret,
            source,
            Some(format!(
                "weak JWT secret ({why}); acceptable in development only"
            )),
        )),
        (None, _) => Ok((secret, source, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRONG: &str = "q8ZC1k-3vVx!a9Lm0Pz7Rt2Yb5Nw4Hs6Ju";

    #[test]
    fn production_needs_a_strong_secret() {
        assert!(matches!(resolve("", None, true), Err(SecretError::Missing)));
        assert!(matches!(
            resolve("short", None, true),
            Err(SecretError::Weak(_))
        ));
        assert!(matches!(
            resolve(&"a".repeat(64), None, true),
            Err(SecretError::Weak(_))
        ));
        let (secret, source, warning) = resolve(STRONG, None, true).unwrap();
        assert_eq!(
            (secret.as_slice(), source, warning),
            (STRONG.as_bytes(), SecretSource::Value, None)
        );
    }

    #[test]
    fn development_generates_or_warns() {
        let (secret, source, _) = resolve("", None, false).unwrap();
        assert_eq!((secret.len(), source), (32, SecretSource::Generated));
        let (_, _, warning) = resolve("short", None, false).unwrap();
        assert!(warning.is_some());
    }

    #[test]
    fn files_win_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{STRONG}\n")).unwrap();
        let (secret, source, _) = resolve("ignored", Some(&path), true).unwrap();
        assert_eq!(secret, STRONG.as_bytes());
        assert_eq!(source, SecretSource::File(path.clone()));
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            resolve("", Some(&path), false),
            Err(SecretError::Empty(_))
        ));
        let missing = dir.path().join("missing");
        let err = resolve("", Some(&missing), false).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
